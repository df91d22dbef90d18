"""The address of a remote SIP party (RFC 3261 §18): transport, host and port.

It has a module of its own because everything in :mod:`gb28181gw.sip` names peers
(events, transactions, dialogs, the endpoint) while the endpoint imports all of
those: with :class:`Peer` here nothing has to import the endpoint back.
"""

from __future__ import annotations

from typing import NamedTuple

#: Transports on which SIP does not retransmit (RFC 3261 §17.1.1.2, §18).
RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "WS", "WSS"})


class Peer(NamedTuple):
    """A remote SIP address: transport (``UDP``/``TCP``), host and port.

    For TCP it also names the connection: answers go back on the connection
    the request came in on.
    """

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport} {host}:{self.port}"
