"""The sans-I/O SIP endpoint: transaction layer and message matching (RFC 3261 §17, §18).

Drive it like aioquic's ``QuicConnection``:

- :meth:`SipEndpoint.receive` a whole message with the peer it came from and ``now``;
- :meth:`SipEndpoint.next_event` until ``None``; answer with :meth:`SipEndpoint.respond`,
  start requests with :meth:`SipEndpoint.send_request`;
- :meth:`SipEndpoint.datagrams_to_send` and put the bytes on the wire;
- :meth:`SipEndpoint.get_timer`, and call :meth:`SipEndpoint.handle_timer` when it is due.

The endpoint absorbs retransmitted requests (its server transaction resends the
last response), retransmits over UDP only, answers CANCEL, ACKs non-2xx final
responses, and answers unparseable requests statelessly when they can be
addressed. It never reads a clock: ``now`` is monotonic seconds from the caller.
"""

from __future__ import annotations

import random
import re
import secrets
from collections import deque
from collections.abc import Callable

from gb28181gw.deadlines import TimerQueue
from gb28181gw.errors import LocalProtocolError, SipParseError

from .completed import EXPIRE_STEP, CompletedResponses
from .events import (
    DropReason,
    Event,
    MessageDropped,
    RequestCancelled,
    RequestReceived,
    ResponseReceived,
    TransactionFailed,
    TransactionTimedOut,
)
from .headers import Headers, NameAddr, Via, canonical_name
from .message import DEFAULT_LIMITS, Limits, Request, Response, make_response, parse_message
from .peer import RELIABLE_TRANSPORTS, Peer
from .quick import stamp_plain_via
from .timers import TimerConfig
from .transaction import (
    MAGIC_COOKIE,
    TABLES,
    TU_INPUTS,
    Action,
    Input,
    Kind,
    State,
    Transaction,
    TxKey,
    client_key,
    server_key,
)

_RPORT_RE = re.compile(r";\s*rport(?:\s*=\s*[^;,\s]*)?(?=\s*(?:;|$))", re.IGNORECASE)
_RECEIVED_RE = re.compile(r";\s*received\s*=\s*[^;,\s]*", re.IGNORECASE)

__all__ = ["RELIABLE_TRANSPORTS", "Peer", "SipEndpoint", "fast_token", "warning_header"]  # Peer: re-exported

_WARN_OK = frozenset(" !#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~")


def warning_header(text: str, agent: str = "gb28181gw") -> str:
    """A Warning value (RFC 3261 §20.43) with code 399 and ``text`` made safe to quote."""
    safe = "".join(ch if ch in _WARN_OK else "?" for ch in text[:200])
    return f'399 {agent} "{safe}"'


def fast_token() -> Callable[[int], str]:
    """A ``token(nbytes) -> hex`` for tags, branches and Call-IDs.

    These need uniqueness and enough randomness not to collide (RFC 3261 §8.1.1.7, §19.3),
    not secrecy, and a system call per message for ``secrets`` costs more than parsing a
    header; so a PRNG seeded from the OS once per endpoint. Digest nonces, which must be
    unpredictable, use :mod:`secrets` (see :class:`~gb28181gw.sip.auth.NonceStore`).
    """
    rng = random.Random(secrets.randbits(128))
    # the bytes' hex rather than a formatted number: "%012x" % n cost 0.2 µs a tag against 0.12
    # (a nested f-string format spec, before that, 0.48; a tag per request answered). And the bytes
    # as Random.randbytes makes them (the same bytes for the same state), without calling it: it
    # is a Python function in 3.11, a frame of the interpreter per tag (a compiled keepalive
    # executes 850 instructions fewer of its 86,000 without it: benchmarks/bench_instructions.py)
    getrandbits = rng.getrandbits

    def token(nbytes: int) -> str:
        return getrandbits(nbytes * 8).to_bytes(nbytes, "little").hex()

    return token


class SipEndpoint:
    """Transactions and message matching for one SIP stack, without I/O.

    Args:
        timers: RFC 3261 T1/T2/T4.
        limits: parser limits.
        token: random source, ``token(nbytes) -> hex str``, for branches, tags and Call-IDs
            (default: :func:`fast_token`).
        user_agent: ``User-Agent``/``Server`` text added to what we send, or ``None``.
    """

    def __init__(
        self,
        *,
        timers: TimerConfig | None = None,
        limits: Limits = DEFAULT_LIMITS,
        token: Callable[[int], str] | None = None,
        user_agent: str | None = None,
    ) -> None:
        self.timers = timers or TimerConfig()
        self._timer_j = self.timers.j(False)  # the quick path's completed answers: one per request
        self.limits = limits
        self._token = token or fast_token()
        self.user_agent = user_agent
        self._server: dict[TxKey, Transaction] = {}
        self._client: dict[TxKey, Transaction] = {}
        # transactions over each reliable connection, for transport_error
        self._on_connection: dict[Peer, set[Transaction]] = {}
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Peer]] = []
        self._queue: TimerQueue[tuple[Transaction, Input]] = TimerQueue()
        self._local: dict[str, tuple[str, int]] = {}
        self._actions: dict[Action, Callable[[Transaction, float, Response | None], None]] = {
            Action.SEND_RESPONSE: self._act_send_response,
            Action.RESEND_RESPONSE: self._act_resend_response,
            Action.RETRANSMIT: self._act_retransmit,
            Action.PASS_RESPONSE: self._act_pass_response,
            Action.SEND_ACK: self._act_send_ack,
            Action.REPORT_TIMEOUT: self._act_report_timeout,
            Action.REPORT_TRANSPORT_ERROR: self._act_report_failure,
            Action.DELETE: self._act_delete,
            Action.RESTART_G: self._act_restart_g,
        }
        t = self.timers
        # (timer input, delay for (reliable) -> seconds, only over unreliable transports)
        self._starts: dict[Action, tuple[Input, Callable[[bool], float], bool]] = {
            Action.START_A: (Input.TIMER_A, lambda r: t.a, True),
            Action.START_B: (Input.TIMER_B, lambda r: t.b, False),
            Action.START_D: (Input.TIMER_D, t.d, False),
            Action.START_E: (Input.TIMER_E, lambda r: t.e, True),
            Action.START_F: (Input.TIMER_F, lambda r: t.f, False),
            Action.START_G: (Input.TIMER_G, lambda r: t.g, True),
            Action.START_H: (Input.TIMER_H, lambda r: t.h, False),
            Action.START_I: (Input.TIMER_I, t.i, False),
            Action.START_J: (Input.TIMER_J, t.j, False),
            Action.START_K: (Input.TIMER_K, t.k, False),
            Action.START_L: (Input.TIMER_L, lambda r: t.l, False),
            Action.START_M: (Input.TIMER_M, lambda r: t.m, False),
        }
        self._failure_reason = ""
        # Completed non-INVITE server transactions only absorb retransmissions (§17.2.2) until
        # Timer J. They are by far the most numerous (every keepalive MESSAGE, REGISTER, OPTIONS
        # lives 32 s in this state over UDP), so only (key, answer, peer) is kept, in memory maps
        # that are given back once Timer J passed (see .completed): no object per transaction for
        # the garbage collector to walk, and no high-water mark left on the heap.
        self._completed = CompletedResponses()
        self._new_deadline: float | None = None

    # --- configuration ---------------------------------------------------------------

    def set_local_address(self, transport: str, host: str, port: int) -> None:
        """Tell the endpoint the default sent-by (address and port) for our Via over ``transport``.

        It is used when :meth:`send_request` is not given the ``local`` address of the peer
        (the shell passes the address each peer reached us on: ``SipStack.local_address``, see
        ``net/addresses.py``).
        """
        self._local[transport.upper()] = (host, port)

    def local_address(self, transport: str) -> tuple[str, int]:
        """Our default sent-by for ``transport`` (``0.0.0.0:5060`` until told)."""
        return self._local.get(transport.upper(), ("0.0.0.0", 5060))

    def new_tag(self) -> str:
        """A fresh From/To tag (RFC 3261 §19.3: at least 32 bits of randomness)."""
        return self._token(6)

    def new_call_id(self) -> str:
        """A fresh Call-ID."""
        return self._token(12)

    @property
    def transactions_in_flight(self) -> int:
        """Live client and server transactions."""
        return len(self._server) + len(self._client) + len(self._completed)

    # --- input -----------------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        """Take one whole SIP message received from ``peer`` at ``now``."""
        try:
            msg = parse_message(data, self.limits)
        except SipParseError as exc:
            self._reject(exc, peer)
            return
        try:
            via = msg.top_via
        except SipParseError as exc:
            exc.partial = msg if isinstance(msg, Request) else None
            self._reject(exc, peer)
            return
        if isinstance(msg, Request):
            self._receive_request(msg, via, peer, now)
        else:
            self._receive_response(msg, via, peer, now)

    def _reject(self, exc: SipParseError, peer: Peer) -> None:
        partial = exc.partial
        if (
            isinstance(partial, Request)
            and partial.method != "ACK"
            and all(k in partial.headers._keys for k in ("via", "from", "to", "call-id", "cseq"))
        ):
            response = make_response(partial, exc.status, to_tag=self.new_tag())
            response.headers.add("Warning", warning_header(exc.reason))
            self._out.append((response.serialize(), peer))
            self._events.append(MessageDropped(peer, DropReason.PARSE, exc.status, exc.reason))
        else:
            self._events.append(MessageDropped(peer, DropReason.PARSE, 0, exc.reason))

    def _receive_request(self, request: Request, via: Via, peer: Peer, now: float) -> None:
        params = via.params
        # RFC 3261 §18.2.1 and RFC 3581 §4: record where the request really came from, so
        # that answers reach NATed devices.
        if "rport" in params or via.host_no_brackets != peer.host:
            self._stamp_via(request, via, peer)
        try:
            # From and To are needed by every TU; a malformed one is the sender's error (RFC 4475 §3.1.2)
            h = request.headers
            for name in ("from", "to"):
                value = h._values[h._keys.index(name)]
                if '"' in value or value.count("<") != value.count(">") or ":" not in value or value.count("<") > 1:
                    NameAddr.parse(value)  # the cheap check had a doubt: parse it, raising if malformed
            key = server_key(request)
        except SipParseError as exc:
            exc.partial = request
            self._reject(exc, peer)
            return
        done = self._completed.get(key)
        if done is not None:
            if request.method != "ACK":
                self._out.append(done)
            return
        tx = self._server.get(key)
        method = request.method
        if tx is not None:
            self._fire(tx, Input.ACK if method == "ACK" else Input.REQUEST, now, None)
            return
        if method == "ACK":
            # an ACK to a 2xx is its own transaction-less request for the TU (§17.2.1)
            self._events.append(RequestReceived(request, peer, None))
            return
        reliable = peer.transport in RELIABLE_TRANSPORTS
        if method == "CANCEL":
            self._receive_cancel(request, key, peer, reliable, now)
            return
        kind = Kind.INVITE_SERVER if method == "INVITE" else Kind.NON_INVITE_SERVER
        tx = Transaction(kind, key, request, peer, reliable)
        self._server[key] = tx
        if reliable:
            self._on_connection.setdefault(peer, set()).add(tx)
        if kind is Kind.INVITE_SERVER:
            # §17.2.1: answer 100 Trying at once so the client stops retransmitting; GB/T 28181
            # superiors time out if it takes longer than ~200 ms.
            self._fire(tx, Input.TU_1XX, now, make_response(request, 100))
        self._events.append(RequestReceived(request, peer, tx))

    @staticmethod
    def _stamp_via(request: Request, via: Via, peer: Peer) -> None:
        params = via.params
        had_rport = "rport" in params
        params["received"] = peer.host
        if had_rport:
            params["rport"] = str(peer.port)
        headers = request.headers
        i = headers._keys.index("via")
        raw = headers._values[i]
        # the common shapes, edited with plain string operations (as the quick path does)
        stamped = stamp_plain_via(raw, peer.host, peer.port, had_rport)
        if stamped is not None:
            headers._values[i] = stamped
            return
        first, comma, rest = raw.partition(",")
        # edit the text rather than re-serializing, so the rest of the value stays as sent
        stamped = first.rstrip()
        if had_rport:
            if stamped.endswith(";rport"):
                stamped = f"{stamped}={peer.port}"
            elif ";rport;" in stamped:
                stamped = stamped.replace(";rport;", f";rport={peer.port};", 1)
            else:
                stamped, n = _RPORT_RE.subn(f";rport={peer.port}", stamped, count=1)
                if not n:
                    stamped = f"{stamped};rport={peer.port}"
        if "received" in stamped.lower():
            stamped = _RECEIVED_RE.sub("", stamped)
        headers._values[i] = f"{stamped};received={peer.host}{comma}{rest}"

    def _receive_cancel(self, cancel: Request, key: TxKey, peer: Peer, reliable: bool, now: float) -> None:
        tx = Transaction(Kind.NON_INVITE_SERVER, key, cancel, peer, reliable)
        self._server[key] = tx
        if reliable:
            self._on_connection.setdefault(peer, set()).add(tx)
        invite = self._server.get((*key[:-1], "INVITE"))
        if invite is None:
            self._fire(tx, Input.TU_FINAL, now, make_response(cancel, 481, to_tag=self.new_tag()))
            return
        self._fire(tx, Input.TU_2XX, now, make_response(cancel, 200, to_tag=self.new_tag()))
        if invite.state is State.PROCEEDING and invite.request is not None:
            # §9.2: the INVITE is answered 487 and the TU told; a CANCEL after the final
            # response has no effect
            self._fire(invite, Input.TU_FINAL, now, make_response(invite.request, 487, to_tag=self.new_tag()))
            self._events.append(RequestCancelled(invite, cancel))

    def _receive_response(self, response: Response, via: Via, peer: Peer, now: float) -> None:
        branch = via.params.get("branch") or ""
        try:
            method = response.cseq.method
        except SipParseError as exc:  # pragma: no cover - parse_message validated CSeq
            self._events.append(MessageDropped(peer, DropReason.PARSE, 0, exc.reason))
            return
        tx = self._client.get(client_key(branch, method))
        if tx is None:
            detail = f"{response.status} {method} matches nothing"
            self._events.append(MessageDropped(peer, DropReason.STRAY_RESPONSE, 0, detail))
            return
        status = response.status
        if status < 200:
            inp = Input.R_1XX
            if tx.cancel_pending:
                tx.cancel_pending = False
                self._send_cancel(tx, now)
        elif status < 300:
            inp = Input.R_2XX
        else:
            inp = Input.R_FINAL
        self._fire(tx, inp, now, response)

    def transport_error(self, peer: Peer, reason: str, now: float) -> None:
        """The transport to ``peer`` failed (connection lost, send refused): fail its transactions."""
        self._failure_reason = reason
        if peer.transport in RELIABLE_TRANSPORTS:
            # a connection's own transactions, found at once: thousands of connections closing
            # must not each walk every transaction (it stalled the loop for seconds)
            affected = list(self._on_connection.pop(peer, ()))
        else:
            affected = [t for table in (self._client, self._server) for t in table.values() if t.peer == peer]
        for tx in affected:
            self._fire(tx, Input.TRANSPORT_ERROR, now, None)

    def _forget_connection(self, tx: Transaction) -> None:
        txs = self._on_connection.get(tx.peer)
        if txs is not None:
            txs.discard(tx)
            if not txs:
                del self._on_connection[tx.peer]

    # --- the quick path (see .quick) ------------------------------------------------

    def known(self, key: TxKey) -> bool:
        """Whether a server transaction, live or completed, has ``key``: a request with it is a
        retransmission (or an ACK) that :meth:`receive` absorbs, never new work for the quick path."""
        return key in self._server or key in self._completed

    @property
    def has_events(self) -> bool:
        """Whether events wait for :meth:`next_event` (input received before, not yet handed on)."""
        return bool(self._events)

    def complete(self, key: TxKey, data: bytes, peer: Peer, now: float) -> None:
        """Keep ``data``, the final answer the shell's quick path sent to the request ``key`` from
        ``peer`` over UDP, until Timer J, exactly as a completed non-INVITE server transaction keeps
        its answer (§17.2.2): a retransmission is answered these bytes again by :meth:`receive`."""
        when = now + self._timer_j
        self._completed.add(key, data, peer, when)
        if self._new_deadline is None or when < self._new_deadline:  # _note_deadline, inlined: per request
            self._new_deadline = when

    # --- output ----------------------------------------------------------------------

    def respond(self, tx: Transaction, response: Response, now: float, *, stateless: bool = False) -> None:
        """Send ``response`` in server transaction ``tx``.

        With ``stateless``, a 300-699 is sent once and the transaction forgotten at once
        (RFC 3261 §8.2.7): for rejections that answering again would repeat (405, a 404 to a
        stranger, 481), so that a flood of them holds no state for Timer J's or H's 32 s.
        A retransmitted request is then simply answered again.

        Raises:
            LocalProtocolError: if the transaction cannot send it in its state
                (a second final response, a response after termination).
        """
        if tx.client:
            raise LocalProtocolError(f"respond() on client transaction {tx!r}")
        if self.user_agent and "server" not in response.headers._keys:
            response.headers.add("Server", self.user_agent)
        status = response.status
        if status < 200:
            inp = Input.TU_1XX
        elif status < 300:
            inp = Input.TU_2XX
        else:
            inp = Input.TU_REJECT if stateless else Input.TU_FINAL
        self._fire(tx, inp, now, response)

    def send_request(
        self,
        request: Request,
        peer: Peer,
        now: float,
        *,
        local: tuple[str, int] | None = None,
        gate: Callable[[float], bool] | None = None,
    ) -> Transaction:
        """Start a client transaction for ``request`` toward ``peer``.

        A Via with a fresh branch is put on top, its sent-by ``local`` (the address and port
        ``peer`` reaches us at, RFC 3261 §18.1.1) or else the default of
        :meth:`set_local_address`; Max-Forwards is added if missing.
        ACK is not sent this way: use :meth:`send_ack`.

        ``gate``: asked ``gate(now)`` before each retransmission; once it says no, nothing more
        is sent (a request that may go out only while a lease is held: a process resumed from a
        pause must not retransmit before the lease is looked at, whichever timer runs first).
        """
        if request.method == "ACK":
            raise LocalProtocolError("ACK has no client transaction: use send_ack()")
        branch = self._add_via(request, peer, local)
        reliable = peer.transport in RELIABLE_TRANSPORTS
        kind = Kind.INVITE_CLIENT if request.method == "INVITE" else Kind.NON_INVITE_CLIENT
        key = client_key(branch, request.method)
        tx = Transaction(kind, key, request, peer, reliable)
        tx.wire = request.serialize()
        tx.gate = gate
        self._client[key] = tx
        if tx.reliable:
            self._on_connection.setdefault(peer, set()).add(tx)
        self._out.append((tx.wire, peer))
        if kind is Kind.INVITE_CLIENT:
            self._start(tx, Action.START_A, now)
            self._start(tx, Action.START_B, now)
        else:
            self._start(tx, Action.START_E, now)
            self._start(tx, Action.START_F, now)
        return tx

    def send_ack(
        self, ack: Request, peer: Peer, tx: Transaction | None = None, *, local: tuple[str, int] | None = None
    ) -> None:
        """Send an ACK for a 2xx: no transaction, a fresh branch (RFC 3261 §13.2.2.4, §17.1.1.3).

        Given the INVITE's client transaction ``tx``, the same ACK is sent again for every
        retransmission of the 2xx while the transaction is Accepted (RFC 6026 §8.4): the
        device retransmits its 200 until an ACK reaches it, and a lost ACK must not end the call.
        ``local``: the Via sent-by, as for :meth:`send_request`.
        """
        self._add_via(ack, peer, local)
        wire = ack.serialize()
        if tx is not None and tx.client:
            tx.ack = wire
        self._out.append((wire, peer))

    def client_transaction(self, response: Response) -> Transaction | None:
        """The client transaction ``response`` belongs to, while it is still kept."""
        try:
            branch = response.top_via.params.get("branch") or ""
            return self._client.get(client_key(branch, response.cseq.method))
        except SipParseError:
            return None

    def cancel(self, tx: Transaction, now: float) -> None:
        """CANCEL the INVITE of client transaction ``tx`` (RFC 3261 §9.1).

        If no provisional response arrived yet the CANCEL waits for one, as §9.1
        requires; after a final response it does nothing.
        """
        if tx.kind is not Kind.INVITE_CLIENT:
            raise LocalProtocolError(f"cancel() on {tx!r}")
        if tx.state is State.CALLING:
            tx.cancel_pending = True
        elif tx.state is State.PROCEEDING:
            self._send_cancel(tx, now)

    def _send_cancel(self, tx: Transaction, now: float) -> None:
        invite = tx.request
        if invite is None:  # pragma: no cover - an INVITE client keeps its request
            return
        h = invite.headers
        headers = Headers()
        headers.add("Via", h.get_all("via")[0])
        for name in ("max-forwards", "from", "to", "call-id"):
            value = h.get(name)
            if value is not None:
                headers.add(canonical_name(name), value)
        for route in h.get_all("route"):
            headers.add("Route", route)
        headers.add("CSeq", f"{invite.cseq.number} CANCEL")
        cancel = Request("CANCEL", invite.uri, headers)
        key = client_key(tx.key[0], "CANCEL")
        ctx = Transaction(Kind.NON_INVITE_CLIENT, key, cancel, tx.peer, tx.reliable)
        ctx.wire = cancel.serialize()
        self._client[key] = ctx
        if ctx.reliable:
            self._on_connection.setdefault(ctx.peer, set()).add(ctx)
        self._out.append((ctx.wire, tx.peer))
        self._start(ctx, Action.START_E, now)
        self._start(ctx, Action.START_F, now)

    def _add_via(self, request: Request, peer: Peer, local: tuple[str, int] | None) -> str:
        host, port = local or self.local_address(peer.transport)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        branch = MAGIC_COOKIE + self._token(10)
        request.headers.prepend("Via", f"SIP/2.0/{peer.transport} {host}:{port};rport;branch={branch}")
        request.invalidate_via()
        if "max-forwards" not in request.headers._keys:
            request.headers.add("Max-Forwards", "70")
        if self.user_agent and "user-agent" not in request.headers._keys:
            request.headers.add("User-Agent", self.user_agent)
        return branch

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when there is none."""
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        """Messages to send, each with its destination; the list is handed over."""
        out = self._out
        self._out = []
        return out

    def send_stateless(self, data: bytes, peer: Peer) -> None:
        """Queue bytes that belong to no transaction (e.g. a CRLF keep-alive answer)."""
        self._out.append((data, peer))

    # --- timers ----------------------------------------------------------------------

    def earliest_new_deadline(self) -> float | None:
        """The earliest deadline scheduled since the last call (``None`` if none): lets the
        shell skip recomputing :meth:`get_timer` when its armed timer is already earlier."""
        when = self._new_deadline
        self._new_deadline = None
        return when

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called, or ``None``."""
        when = self._queue.next_deadline()
        head = self._completed.next_deadline()
        if head is not None and (when is None or head < when):
            return head
        return when

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        # Timer J: the completed transactions terminate, a slice at a time (sip.completed says
        # why); get_timer is then due at once for the rest
        self._completed.expire(now, EXPIRE_STEP)
        for tx, inp in self._queue.pop_due(now):
            self._fire(tx, inp, now, None)

    # --- the machine -----------------------------------------------------------------

    def _fire(self, tx: Transaction, inp: Input, now: float, response: Response | None) -> None:
        transition = TABLES[tx.kind].get((tx.state, inp))
        if transition is None:
            if inp in TU_INPUTS:
                raise LocalProtocolError(f"{tx.kind.name} transaction in state {tx.state.name} cannot take {inp.name}")
            # a stale timer, or network input the state ignores (§17: absorbed)
            return
        tx.state, actions = transition
        for action in actions:
            handler = self._actions.get(action)
            if handler is None:
                self._start(tx, action, now)
            else:
                handler(tx, now, response)

    def _start(self, tx: Transaction, action: Action, now: float) -> None:
        inp, delay_of, unreliable_only = self._starts[action]
        if unreliable_only:
            if tx.reliable:
                return
            tx.interval = delay_of(False)
        delay = delay_of(tx.reliable)
        if delay <= 0:
            self._fire(tx, inp, now, None)
            return
        if action is Action.START_J and tx.last_response is not None and self._server.get(tx.key) is tx:
            # hand over to the table of completed transactions (see __init__); the TU's
            # reference stays in COMPLETED, so a second answer is still refused
            del self._server[tx.key]
            self._forget_connection(tx)
            when = now + delay
            self._completed.add(tx.key, tx.last_response, tx.peer, when)
            if self._new_deadline is None or when < self._new_deadline:
                self._new_deadline = when
            tx.request = None
            tx.last_response = None
            return
        deadlines = tx.deadlines
        if len(deadlines) > 4:
            tx.deadlines = deadlines = [d for d in deadlines if d.alive]
        deadlines.append(self._queue.schedule(now, delay, (tx, inp)))
        self._note_deadline(now + delay)

    def _note_deadline(self, when: float) -> None:
        if self._new_deadline is None or when < self._new_deadline:
            self._new_deadline = when

    def _act_send_response(self, tx: Transaction, now: float, response: Response | None) -> None:
        assert response is not None
        data = response.serialize()
        tx.last_response = data
        tx.last_status = response.status
        self._out.append((data, tx.peer))

    def _act_resend_response(self, tx: Transaction, now: float, response: Response | None) -> None:
        if tx.last_response is not None:
            self._out.append((tx.last_response, tx.peer))

    def _act_retransmit(self, tx: Transaction, now: float, response: Response | None) -> None:
        if tx.gate is not None and not tx.gate(now):
            tx.wire = None  # never again, even if the gate opens later: Timer B/F ends it
            return
        if tx.wire is not None:
            self._out.append((tx.wire, tx.peer))
        if tx.kind is Kind.INVITE_CLIENT:
            tx.interval *= 2  # Timer A doubles without a cap (§17.1.1.2)
            inp = Input.TIMER_A
        else:
            # Timer E doubles up to T2 while Trying and is T2 while Proceeding (§17.1.2.2)
            tx.interval = self.timers.t2 if tx.state is State.PROCEEDING else min(tx.interval * 2, self.timers.t2)
            inp = Input.TIMER_E
        tx.deadlines.append(self._queue.schedule(now, tx.interval, (tx, inp)))
        self._note_deadline(now + tx.interval)

    def _act_restart_g(self, tx: Transaction, now: float, response: Response | None) -> None:
        tx.interval = min(tx.interval * 2, self.timers.t2)
        tx.deadlines.append(self._queue.schedule(now, tx.interval, (tx, Input.TIMER_G)))
        self._note_deadline(now + tx.interval)

    def _act_pass_response(self, tx: Transaction, now: float, response: Response | None) -> None:
        assert response is not None
        if tx.ack is not None and 200 <= response.status < 300:
            self._out.append((tx.ack, tx.peer))  # a retransmitted 2xx we already acknowledged
            return
        tx.response = response
        self._events.append(ResponseReceived(response, tx.peer, tx))

    def _act_send_ack(self, tx: Transaction, now: float, response: Response | None) -> None:
        # §17.1.1.3: the ACK for a non-2xx final response is built from the INVITE
        invite = tx.request
        if invite is None or response is None:  # pragma: no cover - INVITE clients keep their request
            return
        h = invite.headers
        headers = Headers()
        headers.add("Via", h.get_all("via")[0])
        for name in ("max-forwards", "from"):
            value = h.get(name)
            if value is not None:
                headers.add(canonical_name(name), value)
        headers.add("To", response.headers.get("to") or h.get("to") or "")
        headers.add("Call-ID", invite.call_id)
        headers.add("CSeq", f"{invite.cseq.number} ACK")
        for route in h.get_all("route"):
            headers.add("Route", route)
        self._out.append((Request("ACK", invite.uri, headers).serialize(), tx.peer))

    def _act_report_timeout(self, tx: Transaction, now: float, response: Response | None) -> None:
        self._events.append(TransactionTimedOut(tx))

    def _act_report_failure(self, tx: Transaction, now: float, response: Response | None) -> None:
        self._events.append(TransactionFailed(tx, self._failure_reason or "transport error"))

    def _act_delete(self, tx: Transaction, now: float, response: Response | None) -> None:
        table = self._client if tx.client else self._server
        if table.get(tx.key) is tx:
            del table[tx.key]
        if tx.reliable:
            self._forget_connection(tx)
        for deadline in tx.deadlines:
            deadline.cancel()
        tx.deadlines = []
        tx.wire = None
        tx.ack = None
        tx.last_response = None
