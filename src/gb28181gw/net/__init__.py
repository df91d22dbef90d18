"""The asyncio shell's network layer: SIP over UDP and TCP, and the SipStack that drives the core."""
