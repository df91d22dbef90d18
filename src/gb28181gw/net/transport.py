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


class DatagramTransport(Protocol):
    """What the stack calls on a UDP socket of its own (:class:`~gb28181gw.net.sip_udp.UdpTransport`).

    The stack holds its sockets by this rather than by their class: when both are compiled by
    mypyc an attribute typed with a compiled class accepts nothing else, and the benchmarks put
    a sink in a socket's place (``benchmarks/bench_quick.py``).
    """

    @property
    def family(self) -> int:
        """The socket's address family."""

    @property
    def host(self) -> str:
        """The address it is bound to."""

    def send(self, data: bytes, peer: Peer) -> None:
        """Send one datagram to ``peer``."""

    def knows(self, peer: Peer) -> bool:
        """Whether ``peer`` sent to this socket lately."""

    def local_host(self, peer: Peer) -> str | None:
        """The local address ``peer`` sent its last datagram to."""

    def close(self) -> None:
        """Stop reading and close the socket."""
