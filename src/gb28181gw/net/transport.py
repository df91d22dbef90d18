"""What a SIP transport needs from the stack above it: a small callback interface.

The UDP and TCP transports hand up whole messages and report broken connections;
they do not know :class:`~gb28181gw.net.stack.SipStack` (which builds them), so the
stack imports its transports and nothing imports back.
"""

from __future__ import annotations

from typing import Protocol

from gb28181gw.sip.peer import Peer


class MessageSink(Protocol):
    """The receiving side of a SIP transport (implemented by ``SipStack``)."""

    def feed(self, data: bytes, peer: Peer, now: float | None = None) -> None:
        """One whole message received from ``peer``; :meth:`pump` follows after a batch."""

    def pump(self) -> None:
        """Process what was fed (once per batch of messages)."""

    def transport_failed(self, peer: Peer, reason: str) -> None:
        """The connection to ``peer`` broke or could not be opened."""
