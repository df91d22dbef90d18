"""SIP over TCP: one framed connection per peer, reused both ways (RFC 3261 §18).

Responses go back on the connection the request came in on; requests to a
peer reuse its open connection (a device behind NAT that registered over TCP is
only reachable that way, GB/T 28181-2022 §9.1.1 f) and otherwise open one.
Idle connections are closed by a periodic sweep, not a timer each.

Unfinished messages are memory a peer makes us hold: each connection may hold up to
``max_message_size`` bytes of one, and a slowloris peer trickles bytes to keep it held for
ever. A message begun must therefore be finished within ``tcp_message_timeout``, and all
unfinished messages together stay under ``tcp_partial_budget`` bytes; past it the
connections whose messages have waited longest are closed first. Connections with an
unfinished message are kept in the order their message began, so both checks look only
at the oldest few.

A stranger opening connection after connection is held to ``per_address`` open at once
(``flood.tcp_per_address``; exempt and known addresses are not: a site's router may carry
hundreds of cameras' connections; past it refused at accept, counted, logged once per
``log_interval``), besides the global ``max_connections``. A flood-banned address is
refused at accept, and a connection whose address gets banned is closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from gb28181gw.errors import SipParseError
from gb28181gw.logs import Throttle
from gb28181gw.metrics import SipCounters
from gb28181gw.sip.flood import FloodGuard
from gb28181gw.sip.framing import PING, PONG, StreamFramer
from gb28181gw.sip.message import Limits
from gb28181gw.sip.peer import Peer

from .addresses import bind_error
from .tasks import TaskSet
from .transport import MessageSink

log = logging.getLogger("gb28181gw.sip")

#: Bytes queued to one connection beyond which it is dropped as a slow reader.
MAX_WRITE_BUFFER = 4 * 1024 * 1024
CONNECT_TIMEOUT = 5.0


class SipConnection(asyncio.Protocol):
    """One TCP connection carrying SIP."""

    def __init__(self, manager: TcpTransport) -> None:
        self._manager = manager
        self._framer = StreamFramer(manager.limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.last_activity = 0.0
        self.closing = False
        self.partial_bytes = 0  # of an unfinished message
        self.partial_since = 0.0  # when that message began
        self.local_host = ""  # our end of the connection: the address the peer reached us at
        self.counted = False  # in the transport's connections per address

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence the cast
        self.transport = cast(asyncio.Transport, transport)
        addr = transport.get_extra_info("peername")
        self.peer = Peer("TCP", addr[0], addr[1])
        sockname = transport.get_extra_info("sockname")
        if sockname:
            self.local_host = str(sockname[0])
        self.last_activity = self._manager.loop.time()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._manager.register(self):
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        manager = self._manager
        stack = manager.stack
        now = self.last_activity = manager.loop.time()
        try:
            messages = self._framer.feed(data)
        except SipParseError as exc:
            # framing is lost: nothing after this point can be trusted
            manager.counters.parse_errors["TCP", "dropped"] += 1
            held = manager.quiet.allow("tcp-framing", now)
            if held is not None:
                log.info("closing TCP connection: %s", exc.reason, extra={"peer": str(self.peer), "held_back": held})
            self.close()
            return
        assert self.peer is not None
        buffered = self._framer.buffered
        if buffered != self.partial_bytes or (buffered and messages):
            self._manager.partial(self, buffered, new=bool(messages))
        admit = manager.admit
        for i, message in enumerate(messages):
            if message is PING or message == PING:
                self.write(PONG)
            elif admit is not None and not admit(self.peer.host, now):
                assert manager.flood is not None
                if not manager.flood.banned(self.peer.host, now):
                    manager.counters.flood_dropped["TCP"] += 1  # a known address throttled: this one only
                    continue
                # banned (and logged so) by now: what is left of this read goes unread, with the connection
                manager.counters.flood_dropped["TCP"] += len(messages) - i
                self.closing = True
                if self.transport is not None:
                    self.transport.abort()
                break
            else:
                stack.feed(message, self.peer)
        if messages:
            stack.pump()

    def write(self, data: bytes) -> None:
        """Queue ``data``; a peer that stops reading is disconnected."""
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("TCP peer is not reading; closing", extra={"peer": str(self.peer)})
            self.transport.abort()

    def close(self) -> None:
        """Close gracefully."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._manager.unregister(self)
        if self.peer is not None:
            self._manager.stack.transport_failed(self.peer, f"connection closed{': ' + str(exc) if exc else ''}")


class TcpTransport:
    """TCP listeners and the connection table, feeding a :class:`~gb28181gw.net.transport.MessageSink`."""

    def __init__(
        self,
        stack: MessageSink,
        *,
        limits: Limits,
        counters: SipCounters,
        idle_timeout: float,
        max_connections: int,
        message_timeout: float,
        partial_budget: int,
        flood: FloodGuard | None = None,
        per_address: int = 0,
        quiet: Throttle | None = None,
    ) -> None:
        self.stack = stack
        self.flood = flood
        self.admit = flood.admit if flood is not None else None
        self.per_address = per_address
        self.quiet = quiet or Throttle(60.0)
        self._per_host: dict[str, int] = {}
        self.limits = limits
        self.counters = counters
        self.loop = asyncio.get_running_loop()
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.message_timeout = message_timeout
        self.partial_budget = partial_budget
        self.partial_total = 0
        self._partial: dict[SipConnection, None] = {}  # connections with an unfinished message, oldest first
        self._servers: list[asyncio.Server] = []
        self._conns: dict[tuple[str, int], SipConnection] = {}
        self._connecting: dict[tuple[str, int], list[bytes]] = {}
        self._connects = TaskSet()  # the loop holds tasks weakly; an unheld connect could vanish mid-way
        self._sweeper = self.loop.create_task(self._sweep())

    @property
    def count(self) -> int:
        """Open connections."""
        return len(self._conns)

    async def listen(self, host: str, port: int) -> int:
        """Listen on ``host``:``port``; return the bound port.

        Raises:
            OSError: the port is taken or the address is not ours (see :func:`.addresses.bind_error`).
        """
        try:
            # SO_REUSEADDR so that a restart can listen again while the last run's connections
            # are in TIME_WAIT; on TCP it never lets a second listener share the port (unlike UDP)
            server = await self.loop.create_server(
                lambda: SipConnection(self), host, port, reuse_address=True, backlog=1024
            )
        except OSError as exc:
            raise bind_error(exc, "TCP", host, port) from None
        self._servers.append(server)
        bound = int(server.sockets[0].getsockname()[1])
        log.info("listening", extra={"transport": "TCP", "address": f"{host}:{bound}"})
        return bound

    def local_host(self, peer: Peer) -> str | None:
        """Our address on ``peer``'s open connection (``None``: no connection)."""
        conn = self._conns.get((peer.host, peer.port))
        return conn.local_host or None if conn is not None else None

    def register(self, conn: SipConnection) -> bool:
        assert conn.peer is not None
        host = conn.peer.host
        now = self.loop.time()
        if self.flood is not None and self.flood.banned(host, now):
            self.counters.flood_dropped["TCP"] += 1  # the ban was logged as it began
            return False
        if len(self._conns) >= self.max_connections:
            self._refuse(conn, "tcp-connection-limit", "TCP connection limit reached; refusing", now)
            return False
        open_here = self._per_host.get(host, 0)
        if (
            self.per_address
            and open_here >= self.per_address
            and not (self.flood is not None and self.flood.trusted(host))
        ):
            self._refuse(conn, "tcp-address-limit", "TCP connections from one address over the cap; refusing", now)
            return False
        self._conns[host, conn.peer.port] = conn
        self._per_host[host] = open_here + 1
        conn.counted = True
        return True

    def _refuse(self, conn: SipConnection, reason: str, why: str, now: float) -> None:
        self.counters.dropped[reason] += 1
        held = self.quiet.allow(reason, now)
        if held is not None:
            log.warning(why, extra={"peer": str(conn.peer), "held_back": held})

    def connections_from(self, host: str) -> int:
        """Connections open from ``host``."""
        return self._per_host.get(host, 0)

    def unregister(self, conn: SipConnection) -> None:
        self._forget_partial(conn)
        if conn.counted and conn.peer is not None:
            conn.counted = False
            left = self._per_host[conn.peer.host] - 1
            if left:
                self._per_host[conn.peer.host] = left
            else:
                del self._per_host[conn.peer.host]
        if conn.peer is not None and self._conns.get((conn.peer.host, conn.peer.port)) is conn:
            del self._conns[conn.peer.host, conn.peer.port]

    def partial(self, conn: SipConnection, buffered: int, *, new: bool) -> None:
        """``conn`` now holds ``buffered`` bytes of an unfinished message (0: none); ``new``: a message
        was finished, so these bytes begin another."""
        self.partial_total += buffered - conn.partial_bytes
        conn.partial_bytes = buffered
        if new or not buffered:
            self._partial.pop(conn, None)
            if not buffered:
                return
        if conn not in self._partial:
            conn.partial_since = self.loop.time()
            self._partial[conn] = None
        while self.partial_total > self.partial_budget and self._partial:
            self._drop_slowest(
                next(iter(self._partial)), "tcp-partial-budget", "unfinished messages over tcp_partial_budget"
            )

    def _forget_partial(self, conn: SipConnection) -> None:
        self.partial_total -= conn.partial_bytes
        conn.partial_bytes = 0
        self._partial.pop(conn, None)

    def _drop_slowest(self, conn: SipConnection, reason: str, why: str) -> None:
        self.counters.dropped[reason] += 1
        log.warning("closing TCP connection: %s", why, extra={"peer": str(conn.peer), "bytes": conn.partial_bytes})
        self._forget_partial(conn)
        conn.closing = True
        if conn.transport is not None:
            conn.transport.abort()

    def _reap_slow(self, now: float) -> None:
        deadline = now - self.message_timeout
        while self._partial:
            conn = next(iter(self._partial))
            if conn.partial_since > deadline:
                break
            self._drop_slowest(conn, "tcp-message-timeout", "a message not finished within tcp_message_timeout")

    def send(self, data: bytes, peer: Peer) -> None:
        """Send on the peer's connection, opening one if there is none."""
        key = (peer.host, peer.port)
        conn = self._conns.get(key)
        if conn is not None:
            conn.last_activity = self.loop.time()
            conn.write(data)
            return
        pending = self._connecting.get(key)
        if pending is not None:
            pending.append(data)
            return
        self._connecting[key] = [data]
        self._connects.spawn(self._connect(peer))

    async def _connect(self, peer: Peer) -> None:
        key = (peer.host, peer.port)
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: SipConnection(self), peer.host, peer.port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            self._connecting.pop(key, None)
            log.info("TCP connect failed", extra={"peer": str(peer), "error": str(exc) or type(exc).__name__})
            self.stack.transport_failed(peer, f"connect failed: {exc or type(exc).__name__}")
            return
        for data in self._connecting.pop(key, []):
            conn.write(data)

    async def _sweep(self) -> None:
        interval = max(1.0, min(30.0, self.idle_timeout / 4))
        tick = min(1.0, self.message_timeout / 4)
        next_idle_sweep = self.loop.time() + interval
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            self._reap_slow(now)
            if now < next_idle_sweep:
                continue
            next_idle_sweep = now + interval
            deadline = now - self.idle_timeout
            for conn in [c for c in self._conns.values() if c.last_activity < deadline]:
                log.info("closing idle TCP connection", extra={"peer": str(conn.peer)})
                conn.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        self._sweeper.cancel()
        self._connects.cancel()
        for server in self._servers:
            server.close()
        for conn in list(self._conns.values()):
            conn.close()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except TimeoutError:  # pragma: no cover - a connection that will not close
                pass
        self._servers.clear()
