"""SipStack: the asyncio shell around :class:`~gb28181gw.sip.endpoint.SipEndpoint`.

It owns the transports, pumps the endpoint (feed input → drain events → send
output → re-arm the one timer), hands requests to its :class:`~gb28181gw.net.router.Router`
(dialogs by ID, other requests through consumer chains, MESSAGE by sender role and
CmdType), and offers ``await request(...)`` for our own requests. It makes no protocol
decisions: those are the endpoint's.

Handlers take a :class:`RequestReceived` and may return ``None`` (answered
synchronously through :meth:`SipStack.respond`) or an awaitable, which runs as
a task; a handler that raises gets its request answered 500 and logged, and
everyone else is served on.

Its :class:`~gb28181gw.sip.flood.FloodGuard` (``flood``), if any, is asked by the
transports before a datagram or TCP message is even copied: a flood-banned address is
dropped unread. Bans are logged once as they begin and once as they end (with what they
dropped); malformed input is counted always and logged at most once per kind per
``log_interval`` (:class:`~gb28181gw.logs.Throttle`), with a line summing up the rest.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import math
import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast

from gb28181gw.config import SipSection, is_wildcard
from gb28181gw.errors import LocalProtocolError, RouteConflict, SipTimeoutError, SipTransportError
from gb28181gw.logs import WIRE, Throttle, log_wire
from gb28181gw.metrics import OTHER, SipCounters
from gb28181gw.sip.endpoint import SipEndpoint, warning_header
from gb28181gw.sip.events import (
    DropReason,
    MessageDropped,
    RequestCancelled,
    RequestReceived,
    ResponseReceived,
    TransactionFailed,
    TransactionTimedOut,
)
from gb28181gw.sip.flood import FloodBanEnded, FloodBanned, FloodGuard, FloodThrottled
from gb28181gw.sip.message import Request, Response, make_response
from gb28181gw.sip.peer import Peer
from gb28181gw.sip.quick import QUICK_METHODS, QuickRequest
from gb28181gw.sip.transaction import Kind, Transaction

from .addresses import RouteCache
from .router import PASS, Router
from .sip_tcp import TcpTransport
from .sip_udp import UdpTransport
from .timer import EarliestTimer
from .transport import DatagramTransport

log = logging.getLogger("gb28181gw.sip")
#: The request counter's key of each quick method, built once (a tuple per request otherwise).
_QUICK_IN = {method: ("in", "UDP", method) for method in QUICK_METHODS}

#: Request methods counted by name in gb28181gw_sip_requests_total (RFC 3261, 3262, 3265, 3311,
#: 3428, 3515, 3903, 6086, 6665); any other counts as "other".
_METHOD_LABELS = {
    m: m
    for m in ("ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS", "PRACK", "PUBLISH",
              "REFER", "REGISTER", "SUBSCRIBE", "UPDATE")
}  # fmt: skip

#: Sets of sockets tried when port 0 lets the kernel choose (see :meth:`SipStack.listen`).
_PORT_ATTEMPTS = 20
#: Seconds between ending the flood bans that ran out and summing up held-back log lines.
CHORE_INTERVAL = 1.0
#: The endpoint's timers fire on ticks of this many seconds, up to one tick late. Every request
#: leaves a completed transaction whose Timer J ends 32 s later, so under a steady load a timer
#: armed to the exact earliest deadline woke the loop once per request received 32 s before, to
#: expire one entry (at 10,000 keepalives/s, 10,000 wake-ups a second); on ticks one wake-up
#: expires all that fell due within the tick. 10 ms is nothing beside SIP's timers (T1 = 500 ms).
TIMER_TICK = 0.01
#: Seconds between lines about flood bans (of each: begun, ended); the rest are summed up.
BAN_LINE_INTERVAL = 1.0

#: A quick-path handler (:meth:`SipStack.on_quick`): ``(status, response bytes)``, or ``None`` to decline.
QuickHandler = Callable[[QuickRequest, Peer], tuple[int, bytes] | None]

__all__ = ["QuickHandler", "SipStack", "SipTimeoutError", "SipTransportError"]  # the errors: re-exported from errors.py


class SipStack:
    """SIP transports + endpoint + router.

    Args:
        endpoint: the sans-I/O core to drive.
        counters: metric counters to update.
        flood: the per-address request limits (``None``: none).
        log_interval: seconds between log lines about one kind of malformed input.
        tcp_per_address: TCP connections open at once from one address (0: no cap; the
            flood guard's exempt networks are not capped).

    Attributes:
        router: where services register what they answer (see :mod:`gb28181gw.net.router`).
        flood: the flood guard: its bans (``flood.bans()``) are what an admin listing shows.
    """

    def __init__(
        self,
        endpoint: SipEndpoint,
        *,
        counters: SipCounters | None = None,
        flood: FloodGuard | None = None,
        log_interval: float = 60.0,
        tcp_per_address: int = 0,
    ) -> None:
        self.endpoint = endpoint
        self.counters = counters or SipCounters()
        self.flood = flood
        self.quiet = Throttle(log_interval)
        #: lines about flood bans begun and ended: each ban's own, unless more than one a second
        self.ban_lines = Throttle(BAN_LINE_INTERVAL)
        self.tcp_per_address = tcp_per_address
        self._chores: asyncio.Task[None] | None = None
        self.router = Router(respond=self.respond, new_tag=endpoint.new_tag, run=self._run)
        self._cancel_handler: Callable[[RequestCancelled], None] | None = None
        self._cancel_owner = ""
        self._connection_listeners: list[Callable[[Peer, str], None]] = []
        self._udp: list[DatagramTransport] = []
        self._udp4: DatagramTransport | None = None
        self._udp6: DatagramTransport | None = None
        self._several_udp = False  # more than one UDP socket of a family (see _udp_for)
        self._tcp: TcpTransport | None = None
        self.port = 0
        self._advertised = ""
        self._fixed: dict[bool, str] = {}  # the first specific listen address per family (True: IPv6)
        self._single = ""  # sip.listen when it is one specific address
        self._routes = RouteCache()
        self._timer = EarliestTimer(self._on_timer)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pumping = False
        self.wire = WIRE.isEnabledFor(logging.DEBUG)
        self._quick: dict[str, QuickHandler] = {}
        self._quick_needs: dict[str, bytes] = {}

    # --- wiring ----------------------------------------------------------------------

    def on_cancel(self, handler: Callable[[RequestCancelled], None], *, owner: str = "") -> None:
        """Be told when a pending INVITE was cancelled (already answered 487).

        One owner, like the INVITEs it serves: a second would silently take the first one's
        cancellations, so it raises :class:`~gb28181gw.errors.RouteConflict` instead.
        """
        if self._cancel_handler is not None:
            raise RouteConflict("CANCEL of pending INVITEs", self._cancel_owner, owner or repr(handler))
        self._cancel_handler = handler
        self._cancel_owner = owner or repr(handler)

    @property
    def allowed_methods(self) -> list[str]:
        """What we answer to (the router's Allow)."""
        return self.router.allowed_methods

    async def listen(self, sip: SipSection) -> None:
        """Bind UDP sockets and TCP listeners as the ``[sip]`` section says.

        That is ``sip.listen``:``sip.port`` for each of ``sip.transports``, with the
        socket limits of the section. What goes into our Via and Contact toward each peer
        is then :meth:`local_address`. With port 0 the kernel picks one port for the first
        socket and the others reuse it, so UDP and TCP share a number (what devices expect).

        Raises:
            OSError: a socket cannot be bound; the message names transport and address.
        """
        port = sip.port
        self._loop = asyncio.get_running_loop()
        # with port 0 the number the kernel gave the first socket may be taken for the others
        # (an outgoing connection's ephemeral port): then the whole set is bound again
        for attempt in range(1 if port else _PORT_ATTEMPTS):
            try:
                bound_port = await self._bind(sip, port)
                break
            except OSError as exc:
                await self._unbind()
                if port or exc.errno != errno.EADDRINUSE or attempt == _PORT_ATTEMPTS - 1:
                    raise
        self.port = bound_port
        self._advertised = sip.advertised_address
        for host in sip.listen:
            if not is_wildcard(host):
                self._fixed.setdefault(":" in host, host)
        if len(sip.listen) == 1 and self._fixed:
            self._single = sip.listen[0]
        static = self.advertised
        if static:
            for transport in ("UDP", "TCP"):
                self.endpoint.set_local_address(transport, static, bound_port)
        log.info(
            "advertising",
            extra={"address": static or "per device: the local address each device reaches us at"},
        )
        self._chores = self._loop.create_task(self._chore_loop())

    def contact(self, user: str, peer: Peer) -> str:
        """Our Contact URI toward ``peer``: ``sip:<user>@<local_address(peer)>`` (IPv6 bracketed)."""
        host, port = self.local_address(peer)
        return f"sip:{user}@[{host}]:{port}" if ":" in host else f"sip:{user}@{host}:{port}"

    @property
    def advertised(self) -> str:
        """The one address every peer is told, or ``""`` when each is told its own (:meth:`local_address`):
        ``sip.advertised_address``, else ``sip.listen`` when it is one specific address."""
        return self._advertised or self._single

    def local_address(self, peer: Peer) -> tuple[str, int]:
        """The address and port to tell ``peer`` (Via sent-by, Contact, SDP): the one convention.

        ``sip.advertised_address`` if set, else the listen address if it is not a wildcard,
        else the local address ``peer`` last reached us at (its UDP datagrams' destination,
        its TCP connection's local end), else the source address routing picks toward it
        (see :mod:`gb28181gw.net.addresses`).
        """
        host = self._advertised
        if not host:
            v6 = ":" in peer.host
            learned: str | None = None
            if peer.transport == "UDP":
                udp = self._udp_for(peer)
                learned = udp.local_host(peer) if udp is not None else None
            elif self._tcp is not None:
                learned = self._tcp.local_host(peer)
            host = (
                learned
                or self._fixed.get(v6)
                or self._routes.source_for(peer.host, peer.port)
                or ("::1" if v6 else "127.0.0.1")
            )
        return host, self.port

    def _udp_for(self, peer: Peer) -> DatagramTransport | None:
        """The UDP socket ``peer`` is served on: with several specific listen addresses of its
        family, the one it sent to (else the one routing picks toward it), so that answers and
        requests leave from the address it knows us at."""
        v6 = ":" in peer.host
        first = self._udp6 if v6 else self._udp4
        if not self._several_udp or first is None:
            return first
        family = socket.AF_INET6 if v6 else socket.AF_INET
        candidates = [t for t in self._udp if t.family == family]
        for t in candidates:
            if t.knows(peer):
                return t
        source = self._routes.source_for(peer.host, peer.port)
        return next((t for t in candidates if t.host == source), first)

    async def _bind(self, sip: SipSection, port: int) -> int:
        hosts, bound_port = sip.listen, port
        for host in hosts:
            if "udp" in sip.transports:
                t = UdpTransport.bind(
                    self,
                    host,
                    bound_port,
                    receive_buffer=sip.udp_receive_buffer,
                    counters=self.counters,
                    flood=self.flood,
                )
                bound_port = t.port
                self._udp.append(t)
                if t.family == socket.AF_INET6:
                    self._several_udp |= self._udp6 is not None
                    self._udp6 = self._udp6 or t
                else:
                    self._several_udp |= self._udp4 is not None
                    self._udp4 = self._udp4 or t
        if "tcp" in sip.transports:
            self._tcp = TcpTransport(
                self,
                limits=self.endpoint.limits,
                counters=self.counters,
                idle_timeout=sip.tcp_idle_timeout,
                max_connections=sip.tcp_max_connections,
                message_timeout=sip.tcp_message_timeout,
                partial_budget=sip.tcp_partial_budget,
                flood=self.flood,
                per_address=self.tcp_per_address,
                quiet=self.quiet,
            )
            for host in hosts:
                bound_port = await self._tcp.listen(host, bound_port)
        return bound_port

    async def _unbind(self) -> None:
        for t in self._udp:
            t.close()
        self._udp.clear()
        self._udp4 = self._udp6 = None
        self._several_udp = False
        if self._tcp is not None:
            await self._tcp.close()
            self._tcp = None

    @property
    def tcp_connections(self) -> int:
        """Open TCP connections."""
        return self._tcp.count if self._tcp else 0

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, close connections, and wait for handler tasks up to ``timeout``."""
        if self._chores is not None:
            self._chores.cancel()
            self._chores = None
            self.chores((self._loop or asyncio.get_running_loop()).time(), final=True)
        await self._unbind()
        if self._tasks:
            done, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("cancelled %d SIP handler tasks still running at shutdown", len(pending))
        self._timer.cancel()

    # --- input -----------------------------------------------------------------------

    def on_quick(self, method: str, handler: QuickHandler, *, needs: bytes = b"") -> None:
        """Serve ``method`` (REGISTER or MESSAGE) over UDP on the quick path too (see :mod:`gb28181gw.sip.quick`).

        ``handler(request, peer)`` answers a :class:`~gb28181gw.sip.quick.QuickRequest` that is no
        retransmission with ``(status, response bytes)``, having done all the general path's handler
        would, or declines with ``None``: the request then goes the general way, unchanged.

        ``needs``: bytes that every request the handler could answer contains (a keepalive's
        ``<CmdType>Keepalive</CmdType>``): a datagram without them goes the general way unread, so
        that a Catalog response is not read here first only to be declined and parsed again.
        """
        self._quick[method] = handler
        self._quick_needs[method] = needs

    def feed(self, data: bytes, peer: Peer, now: float | None = None) -> None:
        """Hand one received message to the endpoint (the caller pumps afterwards)."""
        if self.wire:
            log_wire("<", peer, data)
        if now is None:
            now = (self._loop or asyncio.get_running_loop()).time()
        try:
            if self._quick and peer.transport == "UDP" and self._feed_quick(data, peer, now):
                return
            self.endpoint.receive(data, peer, now)
        except Exception:
            # a bug, not the peer's fault; it must not stop service for everyone else
            self.counters.dropped["internal-error"] += 1
            log.exception("internal error handling SIP input", extra={"peer": str(peer)})

    def _feed_quick(self, data: bytes, peer: Peer, now: float) -> bool:
        """The quick path: whether ``data`` was answered on it (else the endpoint takes it)."""
        if data.startswith(b"MESSAGE "):
            needs = self._quick_needs.get("MESSAGE")
            # searched from the end: the mark of a keepalive is in its body, after the headers
            if needs and data.rfind(needs) < 0:
                return False  # not what the handler takes (see on_quick): no reading twice
        elif not data.startswith(b"REGISTER "):
            return False
        if self.wire:
            return False
        q = QuickRequest.scan(data, peer, self.endpoint.limits)
        if q is None:
            return False
        handler = self._quick.get(q.method)
        endpoint = self.endpoint
        if handler is None or endpoint.known(q.key):
            return False  # a retransmission: the endpoint's transaction answers it again
        if endpoint.has_events:
            self.pump()  # what came before is handled first, as the general path would
        try:
            answer = handler(q, peer)
        except Exception:
            # as the general path's runner does (_run, _internal_error): logged, answered 500 and
            # kept for Timer J; neither dropped unanswered nor handed on to be handled twice
            log.exception("SIP handler failed", extra={"method": q.method, "peer": str(peer)})
            warning = [("Warning", warning_header("internal error"))]
            answer = 500, q.answer(500, endpoint.new_tag(), warning, endpoint.user_agent)
        if answer is None:
            return False
        status, out = answer
        self.counters.requests[_QUICK_IN[q.method]] += 1
        if status < 300 or status == 500:
            # kept for Timer J like any completed transaction's answer; rejections (a challenge)
            # are stateless, as the general path sends them
            # (from ``now``, when it arrived, as the endpoint times the general path's transactions)
            endpoint.complete(q.key, out, peer, now)
        # sent with the rest of the batch's answers when the transport pumps, as the general path's
        # are: sending each at once woke the peer once per answer, which cost both sides more
        endpoint.send_stateless(out, peer)
        return True

    def transport_failed(self, peer: Peer, reason: str) -> None:
        """A connection to ``peer`` broke or could not be opened."""
        loop = self._loop or asyncio.get_running_loop()
        self.endpoint.transport_error(peer, reason, loop.time())
        self.pump()
        for listener in self._connection_listeners:
            try:
                listener(peer, reason)
            except Exception:
                log.exception("connection listener failed", extra={"peer": str(peer)})

    def on_connection_lost(self, listener: Callable[[Peer, str], None]) -> None:
        """Be told when a TCP connection closes or fails (a device on TCP is offline then)."""
        self._connection_listeners.append(listener)

    # --- the pump --------------------------------------------------------------------

    def pump(self) -> None:
        """Drain events, send what is queued and re-arm the timer."""
        if self._pumping:
            return
        if self.flood is not None and self.flood.has_events:
            self._flood_events()
        self._pumping = True
        try:
            endpoint = self.endpoint
            while True:
                event = endpoint.next_event()
                if event is None:
                    out = endpoint.datagrams_to_send()
                    if not out:
                        break
                    self._send(out)
                    continue
                self._dispatch(event)
        finally:
            self._pumping = False
        self._arm_timer()

    def _dispatch(self, event: object) -> None:
        counters = self.counters
        if isinstance(event, RequestReceived):
            req = event.request
            # a method is any token: only the ones SIP defines are labels (a peer inventing
            # methods must not make a time series per name)
            counters.requests["in", event.peer.transport, _METHOD_LABELS.get(req.method, OTHER)] += 1
            self.router.dispatch(event)
        elif isinstance(event, ResponseReceived):
            counters.responses["in", event.peer.transport, str(event.response.status)] += 1
            fut = event.transaction.user_data
            if event.response.status >= 200 and isinstance(fut, asyncio.Future) and not fut.done():
                fut.set_result(event.response)
        elif isinstance(event, TransactionTimedOut):
            self._fail(
                event.transaction,
                SipTimeoutError(f"no answer to {event.transaction.method} from {event.transaction.peer}"),
            )
        elif isinstance(event, TransactionFailed):
            self._fail(event.transaction, SipTransportError(f"{event.transaction.peer}: {event.reason}"))
        elif isinstance(event, RequestCancelled):
            if self._cancel_handler is not None:
                self._cancel_handler(event)
        elif isinstance(event, MessageDropped):
            if event.reason is DropReason.PARSE:
                counters.parse_errors[event.peer.transport, str(event.status) if event.status else "dropped"] += 1
            else:
                counters.dropped[event.reason.value] += 1
            # counted always; described once per kind per log_interval (a flood of garbage is one line)
            held = self.quiet.allow(event.reason.value, (self._loop or asyncio.get_running_loop()).time())
            if held is not None:
                log.info(
                    "dropped SIP input",
                    extra={
                        "peer": str(event.peer),
                        "reason": f"{event.reason.value}: {event.detail}",
                        "answered": event.status,
                        "held_back": held,
                    },
                )

    # --- flood bans and held-back log lines ---------------------------------------------

    async def _chore_loop(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CHORE_INTERVAL)
            self.chores(loop.time())

    def chores(self, now: float, *, final: bool = False) -> None:
        """End the flood bans that ran out and sum up the log lines held back (every second;
        ``final``: at shutdown, every count held back)."""
        if self.flood is not None:
            self.flood.expire(now)
            self._flood_events()
        for throttle in (self.quiet, self.ban_lines):
            for kind, held in throttle.summaries(now, everything=final):
                log.info(
                    "SIP input dropped meanwhile",
                    extra={"kind": kind, "lines_held_back": held, "interval": throttle.interval},
                )

    def _flood_events(self) -> None:
        assert self.flood is not None
        for event in self.flood.take_events():
            # a spoofer can have an address banned per ~limit datagrams: lines about bans are bounded too
            now = (self._loop or asyncio.get_running_loop()).time()
            if isinstance(event, FloodBanned):
                ban = event.ban
                held = self.ban_lines.allow("flood-banned", now)
                if held is None:
                    continue
                log.warning(
                    "flood: address banned",
                    extra={"address": ban.host, "kind": ban.kind.value, "sent": ban.sent,
                           "window": self.flood.window, "limit": event.limit, "seconds": self.flood.ban_seconds,
                           "held_back": held},
                )  # fmt: skip
            elif isinstance(event, FloodThrottled):
                # once per window at most per address, and a spoofer may vary the address: bounded like garbage
                held = self.quiet.allow("flood-throttled", now)
                if held is not None:
                    log.warning(
                        "flood: known address over its limit; the rest of its window dropped, not banned",
                        extra={"address": event.host, "window": self.flood.window, "limit": event.limit,
                               "held_back": held},
                    )  # fmt: skip
            elif isinstance(event, FloodBanEnded):
                held = self.ban_lines.allow("flood-ban-ended", now)
                if held is not None:
                    log.warning(
                        "flood: ban forgotten (too many bans at once)" if event.forgotten else "flood: ban ended",
                        extra={"address": event.ban.host, "kind": event.ban.kind.value, "dropped": event.ban.dropped,
                               "held_back": held},
                    )  # fmt: skip

    def _fail(self, tx: Transaction, exc: Exception) -> None:
        fut = tx.user_data
        if isinstance(fut, asyncio.Future) and not fut.done():
            fut.set_exception(exc)
        elif not tx.client:
            log.info(
                "server transaction ended without ACK or delivery", extra={"method": tx.method, "peer": str(tx.peer)}
            )

    def _run(self, handler: Callable[[Any], object], arg: Any, event: RequestReceived) -> object:
        # the router's Runner: handler(arg) with a failure answered 500, an awaitable run as a task
        try:
            result = handler(arg)
        except Exception:
            log.exception("SIP handler failed", extra={"method": event.request.method, "peer": str(event.peer)})
            self._internal_error(event)
            return None
        if result is not None and result is not PASS:
            task = asyncio.ensure_future(cast(Awaitable[Any], result))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._task_done, event=event))
        return result

    def _task_done(self, task: asyncio.Task[Any], event: RequestReceived) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error(
                "SIP handler failed",
                exc_info=task.exception(),
                extra={"method": event.request.method, "peer": str(event.peer)},
            )
            self._internal_error(event)

    def _internal_error(self, event: RequestReceived) -> None:
        tx = event.transaction
        if tx is not None and tx.last_status < 200:
            response = make_response(event.request, 500, to_tag=self.endpoint.new_tag())
            response.headers.add("Warning", warning_header("internal error"))
            try:
                self.respond(tx, response)
            except LocalProtocolError:
                pass

    # --- output ----------------------------------------------------------------------

    def respond(self, tx: Transaction, response: Response, *, stateless: bool = False) -> None:
        """Send ``response`` in server transaction ``tx`` (from a handler or a task).

        ``stateless``: a rejection sent once and forgotten (see :meth:`SipEndpoint.respond`).
        """
        loop = self._loop or asyncio.get_running_loop()
        self.endpoint.respond(tx, response, loop.time(), stateless=stateless)
        self.pump()

    async def request(
        self,
        request: Request,
        peer: Peer,
        *,
        timeout: float | None = None,
        gate: Callable[[float], bool] | None = None,
    ) -> Response:
        """Send ``request`` to ``peer`` and return its final response (``gate``: see
        :meth:`SipEndpoint.send_request <gb28181gw.sip.endpoint.SipEndpoint.send_request>`).

        Raises:
            SipTimeoutError: Timer B/F fired (or ``timeout`` passed).
            SipTransportError: the request could not be delivered.
        """
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[Response] = loop.create_future()
        tx = self.endpoint.send_request(request, peer, loop.time(), local=self.local_address(peer), gate=gate)
        tx.user_data = fut
        self.pump()
        try:
            return await asyncio.wait_for(fut, timeout) if timeout else await fut
        except TimeoutError as exc:
            if tx.kind is Kind.INVITE_CLIENT:
                self.endpoint.cancel(tx, loop.time())
                self.pump()
            raise SipTimeoutError(f"no final answer to {request.method} from {peer} in {timeout} s") from exc

    def send_ack(self, ack: Request, peer: Peer, response: Response) -> None:
        """ACK the 2xx ``response`` to our INVITE, and again for each retransmission of it."""
        self.endpoint.send_ack(ack, peer, self.endpoint.client_transaction(response), local=self.local_address(peer))
        self.pump()

    def _send(self, out: list[tuple[bytes, Peer]]) -> None:
        counters = self.counters
        wire = self.wire
        for data, peer in out:
            if wire:
                log_wire(">", peer, data)
            if data.startswith(b"SIP/2.0 "):
                counters.responses_out[peer.transport, data[8:11]] += 1
            else:
                counters.requests_out[peer.transport, data[: data.find(b" ")]] += 1
            if peer.transport == "UDP":
                t = self._udp_for(peer) if self._several_udp else self._udp6 if ":" in peer.host else self._udp4
                if t is not None:
                    t.send(data, peer)
                else:
                    counters.dropped["no-transport"] += 1
            elif self._tcp is not None:
                self._tcp.send(data, peer)
            else:
                counters.dropped["no-transport"] += 1

    def _arm_timer(self) -> None:
        new = self.endpoint.earliest_new_deadline()
        if self._timer.armed and (new is None or self._timer.when <= new):
            return  # the armed timer fires first and re-arms when it does
        self._timer.cancel()
        when = self.endpoint.get_timer()
        if when is not None:
            # on the next tick of TIMER_TICK: see there
            when = math.ceil(when / TIMER_TICK) * TIMER_TICK
        self._timer.arm(when)

    def _on_timer(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self.endpoint.handle_timer(loop.time())
        self.pump()
