"""SIP over UDP: one non-blocking socket per listen address, read with ``recvfrom_into``.

asyncio's datagram transport reads every datagram into a fresh 256 KiB buffer
(an mmap/munmap per packet); reading into one preallocated 64 KiB buffer and
copying out only the datagram's bytes is several times cheaper, and draining
up to a batch of datagrams per wake-up lets the stack pump once per batch. Whether more than
one waits is asked of the kernel (``FIONREAD``) rather than learnt from an empty read.

A socket bound to a wildcard (``0.0.0.0``, ``::``) reads with ``recvmsg_into`` instead, to
learn the address each peer sent to (``IP_PKTINFO``): that is the address we advertise to
the peer and send to it from (see :mod:`.addresses`). It costs about a microsecond per
datagram; the per-peer entry is rewritten only when that address changes.

A datagram from a flood-banned address (:class:`~gb28181gw.sip.flood.FloodGuard`) is
dropped right after ``recvfrom``: not copied, not parsed, only counted.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import socket
import termios
from typing import Any

from gb28181gw.config import is_wildcard
from gb28181gw.metrics import SipCounters
from gb28181gw.sip.flood import FloodGuard
from gb28181gw.sip.peer import Peer

from .addresses import PKTINFO_SPACE, bind_error, enable_pktinfo, pktinfo_local
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

    def __init__(
        self, stack: MessageSink, sock: socket.socket, counters: SipCounters, flood: FloodGuard | None = None
    ) -> None:
        self._stack = stack
        self._counters = counters
        self._admit = flood.admit if flood is not None else None
        self._sock = sock
        self.family = sock.family
        self.host: str = sock.getsockname()[0]
        self.port: int = sock.getsockname()[1]
        #: bound to a wildcard: each peer's local address is learned from its datagrams
        self.wildcard = is_wildcard(self.host)
        self._buf = bytearray(MAX_DATAGRAM)
        self._fd = sock.fileno()
        self._pending = bytearray(4)  # FIONREAD's answer (see _queued)
        self._bufs = [self._buf]
        self._view = memoryview(self._buf)
        self._loop = asyncio.get_running_loop()
        # source address (a 4-tuple for IPv6) -> (its Peer, the pktinfo its last datagram carried)
        self._peers: dict[tuple[Any, ...], tuple[Peer, bytes]] = {}
        # (host, port) -> (the local address it sends to, the sendmsg ancillary data to answer from it)
        self._local: dict[tuple[str, int], tuple[str, list[tuple[int, int, bytes]]]] = {}
        if self.wildcard:
            enable_pktinfo(sock)
            self._loop.add_reader(sock.fileno(), self._readable_learning)
        else:
            self._loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    def bind(
        cls,
        stack: MessageSink,
        host: str,
        port: int,
        *,
        receive_buffer: int,
        counters: SipCounters,
        flood: FloodGuard | None = None,
    ) -> UdpTransport:
        """Bind ``host``:``port`` (IPv6 when ``host`` has a colon).

        No ``SO_REUSEADDR``: on Linux it lets a second process bind the same UDP port and take
        the devices' datagrams from the first (issue 11), and UDP has no TIME_WAIT to need it.
        Sharing a port between processes, if ever wanted, must be an explicit option.

        Raises:
            OSError: the port is taken or the address is not ours (see :func:`.addresses.bind_error`).
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _set_receive_buffer(sock, receive_buffer)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise bind_error(exc, "UDP", host, port) from None
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        log.info("listening", extra={"transport": "UDP", "address": f"{host}:{sock.getsockname()[1]}"})
        return cls(stack, sock, counters, flood)

    def local_host(self, peer: Peer) -> str | None:
        """The local address ``peer`` sent its last datagram to (``None``: not heard from)."""
        if not self.wildcard:
            return self.host
        known = self._local.get((peer.host, peer.port))
        return known[0] if known is not None else None

    def knows(self, peer: Peer) -> bool:
        """Whether ``peer`` sent to this socket lately (it is in the source-address cache)."""
        key = (peer.host, peer.port) if self.family == socket.AF_INET else (peer.host, peer.port, 0, 0)
        return key in self._peers

    def _readable(self) -> None:
        sock = self._sock
        view = self._view
        stack = self._stack
        peers = self._peers
        admit = self._admit
        got = False
        banned = 0
        now = self._loop.time()
        for i in range(BATCH):
            if i == 1 and not self._queued():
                break  # the usual wake-up: one datagram (see _queued)
            try:
                n, addr = sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # ICMP errors surface here on Linux (e.g. port unreachable for an earlier send)
                log.debug("UDP receive error: %s", exc)
                continue
            got = True
            if admit is not None and not admit(addr[0], now):
                banned += 1
                continue
            entry = peers.get(addr)
            if entry is None:
                if len(peers) >= MAX_PEER_CACHE:
                    peers.clear()
                entry = peers[addr] = (Peer("UDP", addr[0], addr[1]), b"")
            stack.feed(bytes(view[:n]), entry[0], now)
        if banned:
            self._counters.flood_dropped["UDP"] += banned
        if got:
            stack.pump()

    def _readable_learning(self) -> None:
        # _readable, with each datagram's destination address (see the module docstring)
        sock = self._sock
        bufs = self._bufs
        view = self._view
        stack = self._stack
        peers = self._peers
        admit = self._admit
        got = False
        banned = 0
        now = self._loop.time()
        for i in range(BATCH):
            if i == 1 and not self._queued():
                break
            try:
                n, ancillary, _flags, addr = sock.recvmsg_into(bufs, PKTINFO_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("UDP receive error: %s", exc)
                continue
            got = True
            if admit is not None and not admit(addr[0], now):
                banned += 1
                continue
            pktinfo = ancillary[0][2] if ancillary else b""
            entry = peers.get(addr)
            if entry is None or entry[1] != pktinfo:
                entry = self._learn(addr, pktinfo)
            stack.feed(bytes(view[:n]), entry[0], now)
        if banned:
            self._counters.flood_dropped["UDP"] += banned
        if got:
            stack.pump()

    def _queued(self) -> bool:
        """Whether another datagram waits (``FIONREAD``: the size of the next one).

        Asked once, after the first datagram of a wake-up: most wake-ups bring one datagram,
        and reading on until the socket says EAGAIN cost an empty ``recvfrom_into`` and a
        Python exception each time (1.5 µs; this asks in 0.6). A waiting datagram of zero bytes
        reads as none: it is read on the next wake-up (the reader is level-triggered).
        """
        try:
            fcntl.ioctl(self._fd, termios.FIONREAD, self._pending)
        except OSError:
            return True  # read on, as before
        return self._pending != b"\0\0\0\0"

    def _learn(self, addr: tuple[Any, ...], pktinfo: bytes) -> tuple[Peer, bytes]:
        """A new source address, or one that now sends to another of our addresses."""
        peers = self._peers
        entry = peers.get(addr)
        if entry is None and len(peers) >= MAX_PEER_CACHE:
            peers.clear()
            self._local.clear()
        peer = entry[0] if entry is not None else Peer("UDP", addr[0], addr[1])
        local = pktinfo_local(self.family, pktinfo)
        if local is not None:
            self._local[addr[0], addr[1]] = local
        entry = peers[addr] = (peer, pktinfo)
        return entry

    def send(self, data: bytes, peer: Peer) -> None:
        """Send one datagram; a full socket buffer drops it (SIP retransmits over UDP).

        From a wildcard socket it leaves from the address the peer last sent to, so answers
        come from where the request went.
        """
        dest = (peer.host, peer.port)
        try:
            local = self._local.get(dest) if self.wildcard else None
            if local is None:
                self._sock.sendto(data, dest)
            else:
                try:
                    self._sock.sendmsg([data], local[1], 0, dest)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.EADDRNOTAVAIL):
                        raise
                    # the address is ours no more (an interface went down): let routing choose
                    self._local.pop(dest, None)
                    self._sock.sendto(data, dest)
        except (BlockingIOError, InterruptedError):
            self._counters.dropped["udp-send-full"] += 1
        except OSError as exc:
            self._counters.dropped["udp-send-error"] += 1
            log.info("UDP send failed", extra={"peer": str(peer), "error": str(exc)})

    def close(self) -> None:
        """Stop reading and close the socket."""
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
