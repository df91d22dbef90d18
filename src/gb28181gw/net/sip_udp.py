"""SIP over UDP: one non-blocking socket per listen address, read with ``recvfrom_into``.

asyncio's datagram transport reads every datagram into a fresh 256 KiB buffer
(an mmap/munmap per packet); reading into one preallocated 64 KiB buffer and
copying out only the datagram's bytes is several times cheaper, and draining
up to a batch of datagrams per wake-up lets the stack pump once per batch.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from gb28181gw.metrics import SipCounters
from gb28181gw.sip.peer import Peer

from .transport import MessageSink

log = logging.getLogger("gb28181gw.sip")

#: Largest UDP payload (GB devices send 2-8 KB MESSAGEs over UDP, IP-fragmented: PROTOCOL.md §2.2).
MAX_DATAGRAM = 65535
#: Datagrams read per wake-up before yielding to other work.
BATCH = 128
#: Source addresses remembered to reuse their Peer object (cleared when full).
MAX_PEER_CACHE = 100_000


def _set_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a ``size`` byte receive buffer; bursts beyond it are dropped by the kernel.

    SO_RCVBUF is capped by ``net.core.rmem_max`` (often 208 KiB: a few hundred datagrams);
    SO_RCVBUFFORCE passes the cap when we have CAP_NET_ADMIN. Otherwise say how to raise it.
    """
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    try:
        if force is None:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:  # pragma: no cover - not fatal
            pass
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux reports double
    if got < size:
        log.warning(
            "UDP receive buffer is %d bytes, not the %d configured: bursts may be dropped; "
            "raise net.core.rmem_max (sysctl) to at least %d",
            got,
            size,
            size,
        )


class UdpTransport:
    """A bound UDP socket feeding a :class:`~gb28181gw.net.transport.MessageSink` (the stack)."""

    def __init__(self, stack: MessageSink, sock: socket.socket, counters: SipCounters) -> None:
        self._stack = stack
        self._counters = counters
        self._sock = sock
        self.family = sock.family
        self.port: int = sock.getsockname()[1]
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._loop = asyncio.get_running_loop()
        self._peers: dict[tuple[str, int], Peer] = {}
        self._loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    def bind(
        cls, stack: MessageSink, host: str, port: int, *, receive_buffer: int, counters: SipCounters
    ) -> UdpTransport:
        """Bind ``host``:``port`` (IPv6 when ``host`` has a colon)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _set_receive_buffer(sock, receive_buffer)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        log.info("listening", extra={"transport": "UDP", "address": f"{host}:{sock.getsockname()[1]}"})
        return cls(stack, sock, counters)

    def _readable(self) -> None:
        sock = self._sock
        view = self._view
        stack = self._stack
        got = False
        now = self._loop.time()
        for _ in range(BATCH):
            try:
                n, addr = sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # ICMP errors surface here on Linux (e.g. port unreachable for an earlier send)
                log.debug("UDP receive error: %s", exc)
                continue
            got = True
            peer = self._peers.get(addr)
            if peer is None:
                if len(self._peers) >= MAX_PEER_CACHE:
                    self._peers.clear()
                peer = self._peers[addr] = Peer("UDP", addr[0], addr[1])
            stack.feed(bytes(view[:n]), peer, now)
        if got:
            stack.pump()

    def send(self, data: bytes, peer: Peer) -> None:
        """Send one datagram; a full socket buffer drops it (SIP retransmits over UDP)."""
        try:
            self._sock.sendto(data, (peer.host, peer.port))
        except (BlockingIOError, InterruptedError):
            self._counters.dropped["udp-send-full"] += 1
        except OSError as exc:
            self._counters.dropped["udp-send-error"] += 1
            log.info("UDP send failed", extra={"peer": str(peer), "error": str(exc)})

    def close(self) -> None:
        """Stop reading and close the socket."""
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
