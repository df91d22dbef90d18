"""Sans-I/O SIP core (RFC 3261): messages, framing, transactions, dialogs, digest auth.

Bytes and ``now`` go in; events and bytes come out. Nothing here touches a socket,
the event loop or a clock.
"""
