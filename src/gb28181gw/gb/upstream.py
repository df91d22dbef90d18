"""Upward registration: our gateway as a client of a superior platform (GB/T 28181 §9.1, §9.6; PROTOCOL.md §9.2).

One :class:`Upstream` per configured superior. It is sans-I/O like the transaction
machines: the shell feeds it what happened — responses to the requests it asked for
(:meth:`Upstream.receive_response`), requests that got no answer
(:meth:`Upstream.receive_failure`), timers (:meth:`Upstream.handle_timer`) — with the
time as an argument, and drains what to send (:meth:`Upstream.requests_to_send`) and what
happened (:meth:`Upstream.next_event`). It never reads a clock; tags, Call-IDs and cnonces
come from ``token`` and the back-off jitter from ``random``, both passed in.

States (:class:`UpstreamState`) and inputs (:class:`UpstreamInput`) meet in one table,
:data:`TRANSITIONS`: ``(state, input) -> (state, outputs)``, as in
:mod:`gb28181gw.sip.transaction` and :mod:`gb28181gw.gb.devices`. A pair it does not list
is a bug of the caller and raises :class:`~gb28181gw.errors.LocalProtocolError` naming the
state, except a timer input, which is a timer armed in an earlier state and is ignored.

What the procedure does, and why:

- **REGISTER with digest** (RFC 3261 §10, §22; GB/T 28181 §9.1.2.1). A 401 (or a 407: the
  answer then goes in Proxy-Authorization) is answered once; a second challenge after we
  answered means the credentials were refused, unless it says ``stale=true`` (the nonce ran
  out: answer again, a bounded number of times). qop=auth, MD5 and SHA-256 come from
  :mod:`gb28181gw.sip.auth`.
- **Refresh** at :data:`REFRESH_FRACTION` of the granted Expires (PROTOCOL.md §9.2: not cut
  close); the refresh is challenged like the first registration.
- **Back-off**: a REGISTER refused (403, 404, anything final that is not a success, a
  challenge or a usable redirect) or unanswered waits ``retry_interval × 2^(n-1)``, at most
  ``retry_max``, lengthened by up to :data:`JITTER` at random so that gateways cut off
  together do not come back together (GB/T 28181-2022 §7.1 c "random delay"). Never a tight
  loop, and never sooner than ``retry_interval`` (GB/T 28181 §9.1.1 c: normally ≥ 60 s).
- **Keepalive** (§9.6, PROTOCOL.md §4.1): a ``Keepalive`` Notify every ``keepalive_interval``
  while registered. ``keepalive_misses`` consecutive failures (no answer, or a final answer
  that is not 2xx) mean the superior is lost; a 403 or 404 means it forgot us, lost at once.
  Lost: :class:`Lost` is reported (the streams served to it go) and we register again.
- **Shutdown** (:meth:`Upstream.stop`): a registered machine unregisters (Expires: 0, §9.1.2.2),
  challenged like a registration; any other just stops.
- **Date**: the superior's 200 may carry a GB/T 28181 ``Date`` (local time, no zone,
  PROTOCOL.md §3.5) or an RFC 1123 one; our clock's offset from it is reported in
  :class:`Registered`. We never set our clock from it (a platform runs NTP).
- **Redirect** (GB/T 28181-2022 §9.1.2.3, PROTOCOL.md §3.7): a 302 with a Contact sends the
  REGISTER to that server; at most :data:`MAX_REDIRECTS` hops, never back to a server of the
  same attempt (a loop). When the registration fails or is lost we go back to the
  configured superior.

:func:`render_table` prints the table as a Graphviz graph.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum, auto

from gb28181gw.errors import SipParseError
from gb28181gw.manscdp.messages import CONTENT_TYPE, CmdType, Root, encode
from gb28181gw.sip.auth import Challenge, authorization_for, choose_challenge, credentials_header
from gb28181gw.sip.headers import NameAddr
from gb28181gw.sip.message import Request, Response, make_request
from gb28181gw.sip.peer import Peer
from gb28181gw.sip.transaction import look_up, render_digraph

__all__ = [
    "JITTER",
    "MAX_REDIRECTS",
    "REFRESH_FRACTION",
    "TRANSITIONS",
    "Failure",
    "KeepaliveAnswered",
    "KeepaliveMissed",
    "Lost",
    "Outgoing",
    "Output",
    "Purpose",
    "Redirected",
    "RegisterFailed",
    "Registered",
    "Stopped",
    "Upstream",
    "UpstreamEvent",
    "UpstreamInput",
    "UpstreamSettings",
    "UpstreamState",
    "backoff_delay",
    "clock_offset",
    "render_table",
    "transition",
]

#: Share of the granted Expires after which we refresh (PROTOCOL.md §9.2: 70–80 %).
REFRESH_FRACTION = 0.8
#: Largest share of a back-off delay the jitter adds.
JITTER = 0.2
#: 302 hops followed in one registration attempt (GB/T 28181-2022 §9.1.2.3).
MAX_REDIRECTS = 3
#: ``stale=true`` challenges answered in a row before we call the credentials refused.
MAX_STALE = 3
#: Expires asked for when none is configured (GB/T 28181-2022 §9.1.1 d says not below 3600).
DEFAULT_EXPIRES = 3600


class UpstreamState(IntEnum):
    """Where the registration toward one superior stands."""

    IDLE = auto()  # not started
    REGISTERING = auto()  # a REGISTER is out and we are not registered
    REGISTERED = auto()  # registered; keepalives going
    REFRESHING = auto()  # registered, and a refresh REGISTER is out
    BACKOFF = auto()  # refused or unreachable: waiting to try again
    UNREGISTERING = auto()  # shutting down: REGISTER with Expires: 0 is out
    STOPPED = auto()  # done


class UpstreamInput(IntEnum):
    """What can happen to a registration (responses are classified by the machine)."""

    START = auto()  # the shell starts it
    OK = auto()  # a 2xx to our REGISTER
    CHALLENGED = auto()  # a 401/407 we can answer
    REDIRECTED = auto()  # a usable 302 (hops left, no loop)
    REJECTED = auto()  # any other final answer to our REGISTER (see Failure)
    TIMED_OUT = auto()  # our REGISTER got no answer or could not be sent
    REFRESH_DUE = auto()  # timer: time to refresh
    RETRY_DUE = auto()  # timer: the back-off is over
    KEEPALIVE_DUE = auto()  # timer: time for a keepalive
    KEEPALIVE_OK = auto()  # a 2xx to a keepalive
    KEEPALIVE_MISSED = auto()  # a keepalive failed, fewer than keepalive_misses in a row
    LOST = auto()  # keepalive_misses failures in a row, or a 403/404 to a keepalive
    STOP = auto()  # the shell shuts down
    ABANDON = auto()  # another node acts for this superior now (its lease is gone): stop without a word


class Output(IntEnum):
    """What the machine does on a transition (run by :class:`Upstream` itself)."""

    SEND_REGISTER = auto()  # queue a REGISTER (with an answer to the challenge held, if any)
    SEND_UNREGISTER = auto()  # queue a REGISTER with Expires: 0
    SEND_KEEPALIVE = auto()  # queue a Keepalive MESSAGE
    ARM_REFRESH = auto()  # refresh at REFRESH_FRACTION of the granted Expires
    ARM_KEEPALIVE = auto()  # next keepalive in keepalive_interval
    ARM_RETRY = auto()  # count a failure and wait the back-off
    DISARM = auto()  # cancel refresh and keepalive timers, forget pending keepalives
    GO_HOME = auto()  # forget redirects and challenges: the next attempt goes to the configured superior
    ANNOUNCE_REGISTERED = auto()  # report Registered (and reset the failure count)
    ANNOUNCE_LOST = auto()  # report Lost: the streams served to it go
    ANNOUNCE_STOPPED = auto()  # report Stopped


class Failure(StrEnum):
    """Why a REGISTER failed (the ``reason`` label of the register-failures metric)."""

    TIMEOUT = "timeout"  # no answer (or the request could not be delivered)
    FORBIDDEN = "forbidden"  # 403: wrong password, or we are not provisioned there
    NOT_FOUND = "not-found"  # 404: the superior knows no such platform (its ID differs from ours?)
    AUTH = "auth"  # a challenge we cannot answer, or a second challenge after our answer
    REDIRECT = "redirect"  # a 302 without a usable Contact, too many hops, or a loop
    REJECTED = "rejected"  # any other final status


class Purpose(StrEnum):
    """What a request we send is for."""

    REGISTER = "register"
    UNREGISTER = "unregister"
    KEEPALIVE = "keepalive"


S = UpstreamState
I = UpstreamInput  # noqa: E741
O = Output  # noqa: E741

Table = dict[tuple[UpstreamState, UpstreamInput], tuple[UpstreamState, tuple[Output, ...]]]

_FAIL = (S.BACKOFF, (O.DISARM, O.GO_HOME, O.ARM_RETRY))
_FAIL_LOST = (S.BACKOFF, (O.DISARM, O.GO_HOME, O.ANNOUNCE_LOST, O.ARM_RETRY))
_LOST = (S.REGISTERING, (O.DISARM, O.GO_HOME, O.ANNOUNCE_LOST, O.SEND_REGISTER))
_REGISTERED = (S.REGISTERED, (O.ARM_REFRESH, O.ARM_KEEPALIVE, O.ANNOUNCE_REGISTERED))
_ABANDON = (S.STOPPED, (O.DISARM, O.ANNOUNCE_STOPPED))
_ABANDON_LOST = (S.STOPPED, (O.DISARM, O.ANNOUNCE_LOST, O.ANNOUNCE_STOPPED))

#: Every legal (state, input) pair.
TRANSITIONS: Table = {
    (S.IDLE, I.START): (S.REGISTERING, (O.SEND_REGISTER,)),
    (S.IDLE, I.STOP): (S.STOPPED, (O.ANNOUNCE_STOPPED,)),
    (S.REGISTERING, I.OK): _REGISTERED,
    (S.REGISTERING, I.CHALLENGED): (S.REGISTERING, (O.SEND_REGISTER,)),
    (S.REGISTERING, I.REDIRECTED): (S.REGISTERING, (O.SEND_REGISTER,)),
    (S.REGISTERING, I.REJECTED): _FAIL,
    (S.REGISTERING, I.TIMED_OUT): _FAIL,
    # not registered: nothing to take back (a REGISTER still out may register us until it expires)
    (S.REGISTERING, I.STOP): (S.STOPPED, (O.DISARM, O.ANNOUNCE_STOPPED)),
    (S.REGISTERED, I.REFRESH_DUE): (S.REFRESHING, (O.SEND_REGISTER,)),
    (S.REGISTERED, I.KEEPALIVE_DUE): (S.REGISTERED, (O.SEND_KEEPALIVE, O.ARM_KEEPALIVE)),
    (S.REGISTERED, I.KEEPALIVE_OK): (S.REGISTERED, ()),
    (S.REGISTERED, I.KEEPALIVE_MISSED): (S.REGISTERED, ()),
    (S.REGISTERED, I.LOST): _LOST,
    (S.REGISTERED, I.STOP): (S.UNREGISTERING, (O.DISARM, O.ANNOUNCE_LOST, O.SEND_UNREGISTER)),
    (S.REFRESHING, I.OK): (S.REGISTERED, (O.ARM_REFRESH, O.ANNOUNCE_REGISTERED)),
    (S.REFRESHING, I.CHALLENGED): (S.REFRESHING, (O.SEND_REGISTER,)),
    # moved to another server: we are no longer registered where the streams go
    (S.REFRESHING, I.REDIRECTED): (S.REGISTERING, (O.DISARM, O.ANNOUNCE_LOST, O.SEND_REGISTER)),
    # PROTOCOL.md §3.6: a failed refresh means the superior is offline
    (S.REFRESHING, I.REJECTED): _FAIL_LOST,
    (S.REFRESHING, I.TIMED_OUT): _FAIL_LOST,
    (S.REFRESHING, I.KEEPALIVE_DUE): (S.REFRESHING, (O.SEND_KEEPALIVE, O.ARM_KEEPALIVE)),
    (S.REFRESHING, I.KEEPALIVE_OK): (S.REFRESHING, ()),
    (S.REFRESHING, I.KEEPALIVE_MISSED): (S.REFRESHING, ()),
    (S.REFRESHING, I.LOST): _LOST,
    (S.REFRESHING, I.STOP): (S.UNREGISTERING, (O.DISARM, O.ANNOUNCE_LOST, O.SEND_UNREGISTER)),
    (S.BACKOFF, I.RETRY_DUE): (S.REGISTERING, (O.SEND_REGISTER,)),
    (S.BACKOFF, I.STOP): (S.STOPPED, (O.DISARM, O.ANNOUNCE_STOPPED)),
    (S.UNREGISTERING, I.OK): (S.STOPPED, (O.ANNOUNCE_STOPPED,)),
    (S.UNREGISTERING, I.CHALLENGED): (S.UNREGISTERING, (O.SEND_UNREGISTER,)),
    (S.UNREGISTERING, I.REDIRECTED): (S.STOPPED, (O.ANNOUNCE_STOPPED,)),
    (S.UNREGISTERING, I.REJECTED): (S.STOPPED, (O.ANNOUNCE_STOPPED,)),
    (S.UNREGISTERING, I.TIMED_OUT): (S.STOPPED, (O.ANNOUNCE_STOPPED,)),
    (S.UNREGISTERING, I.STOP): (S.UNREGISTERING, ()),
    (S.STOPPED, I.STOP): (S.STOPPED, ()),
    # issue 17: the node holding the superior's lease registers anew (its own Call-ID); an
    # Expires: 0 from us would take that registration away, and nothing more may go upward
    (S.IDLE, I.ABANDON): _ABANDON,
    (S.REGISTERING, I.ABANDON): _ABANDON,
    (S.REGISTERED, I.ABANDON): _ABANDON_LOST,
    (S.REFRESHING, I.ABANDON): _ABANDON_LOST,
    (S.BACKOFF, I.ABANDON): _ABANDON,
    (S.UNREGISTERING, I.ABANDON): _ABANDON,
    (S.STOPPED, I.ABANDON): (S.STOPPED, ()),
}

_TIMER_INPUTS = frozenset({I.REFRESH_DUE, I.RETRY_DUE, I.KEEPALIVE_DUE})


def transition(state: UpstreamState, inp: UpstreamInput) -> tuple[UpstreamState, tuple[Output, ...]]:
    """Look ``(state, inp)`` up in :data:`TRANSITIONS`.

    Raises:
        LocalProtocolError: the pair is not in the table (a bug of the caller), naming the state.
    """
    return look_up("upstream registration", TRANSITIONS, state, inp)


def render_table() -> str:
    """:data:`TRANSITIONS` as a Graphviz ``digraph``."""
    return render_digraph("upstream", TRANSITIONS)


def backoff_delay(failures: int, *, base: float, cap: float, random: float) -> float:
    """Seconds to wait after ``failures`` failures in a row (1 for the first).

    ``base × 2^(failures-1)``, at most ``cap``, plus up to :data:`JITTER` of it as ``random``
    (in [0, 1)) says: never below ``base``, never above ``cap × (1 + JITTER)``.
    """
    exponent = min(max(failures, 1) - 1, 32)  # 2**32 × any sane base is past any cap
    return min(cap, base * 2.0**exponent) * (1.0 + JITTER * random)


_GB_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?")


def clock_offset(date: str, wall: float, zone: _dt.tzinfo) -> float | None:
    """Seconds the superior's clock is ahead of ours (negative: behind), from its ``Date``.

    ``date`` is GB/T 28181 local time without a zone (``2024-05-06T12:34:56.789``, read in
    ``zone``, PROTOCOL.md §3.5) or RFC 1123 (``Mon, 06 May 2024 04:34:56 GMT``); ``wall``
    is our epoch time when the answer came. ``None`` for a Date we cannot read.
    """
    text = date.strip()
    m = _GB_DATE.fullmatch(text)
    try:
        if m is not None:
            micro = int((m[7] or "0").ljust(6, "0"))
            when = _dt.datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]), micro, zone)
        else:
            when = email.utils.parsedate_to_datetime(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=_dt.UTC)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    return when.timestamp() - wall


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """One superior, as the machine needs it (the ``[[upstream]]`` entry of the configuration).

    Attributes:
        name: the operator's handle (logs, metrics, CLI).
        server_id: the superior's 20-digit platform ID.
        domain: its SIP domain (the Request-URI host; usually also its digest realm).
        peer: where it listens: transport (``UDP``/``TCP``), host, port.
        local_id: our ID toward it.
        local_domain: our SIP domain toward it (From/To host).
        username / password: digest credentials.
        expires: the registration period asked for (s).
        keepalive_interval: seconds between keepalives.
        keepalive_misses: consecutive keepalive failures that mean it is lost.
        retry_interval / retry_max: back-off after the first failure, and its cap (s).
        charset: the keepalive body's encoding (GB2312 or UTF-8).
        gb_version: the ``X-GB-ver`` value sent (``""``: none; ``2.0`` is 2016, ``3.0`` is 2022).
        user_agent: the User-Agent header.
    """

    name: str
    server_id: str
    domain: str
    peer: Peer
    local_id: str
    local_domain: str
    username: str
    password: str
    expires: int = DEFAULT_EXPIRES
    keepalive_interval: float = 60.0
    keepalive_misses: int = 3
    retry_interval: float = 60.0
    retry_max: float = 600.0
    charset: str = "GB2312"
    gb_version: str = ""
    user_agent: str = "gb28181gw"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request for the shell to send, and to report the outcome of by ``ref``.

    Attributes:
        ref: quote it to :meth:`Upstream.receive_response` / :meth:`Upstream.receive_failure`.
        purpose: what it is for.
        request: the request (the shell's endpoint adds Via and Max-Forwards).
        peer: where it goes.
    """

    ref: int
    purpose: Purpose
    request: Request
    peer: Peer


@dataclass(frozen=True, slots=True)
class Registered:
    """The superior accepted our REGISTER (the first one, or a refresh).

    Attributes:
        name: the superior.
        at: when (monotonic seconds).
        expires: the period it granted (s).
        refreshed: a refresh of a registration we held, not a new one.
        clock_offset: seconds its clock (its 200's Date) is ahead of ours; ``None`` without a readable Date.
        peer: the server that accepted us (another than configured after a redirect).
    """

    name: str
    at: float
    expires: int
    refreshed: bool
    clock_offset: float | None
    peer: Peer


@dataclass(frozen=True, slots=True)
class RegisterFailed:
    """A registration attempt failed; the next one comes after ``retry_in``.

    Attributes:
        name: the superior.
        reason: the kind of failure (a metric label).
        status: the final status, or ``None`` without one (timeout).
        detail: in words, for the log (what to check).
        failures: failures in a row, this one included.
        retry_in: seconds until the next attempt.
    """

    name: str
    reason: Failure
    status: int | None
    detail: str
    failures: int
    retry_in: float


@dataclass(frozen=True, slots=True)
class Redirected:
    """A 302 sent our REGISTER elsewhere (GB/T 28181-2022 §9.1.2.3).

    Attributes:
        name: the superior.
        peer: the server we now register with.
        server_id: its ID (the Contact's user part, else the configured one).
    """

    name: str
    peer: Peer
    server_id: str


@dataclass(frozen=True, slots=True)
class KeepaliveAnswered:
    """A keepalive got its 2xx.

    Attributes:
        name: the superior.
        at: when (monotonic seconds).
    """

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class KeepaliveMissed:
    """A keepalive failed (no answer, or not a 2xx).

    Attributes:
        name: the superior.
        misses: failures in a row, this one included.
        detail: what happened.
    """

    name: str
    misses: int
    detail: str


@dataclass(frozen=True, slots=True)
class Lost:
    """We are no longer registered with the superior: everything served to it must go.

    Attributes:
        name: the superior.
        reason: why (keepalives unanswered, a refresh refused, shutdown …).
    """

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """The machine stopped (after unregistering, when it was registered).

    Attributes:
        name: the superior.
        unregistered: the superior confirmed the Expires: 0.
    """

    name: str
    unregistered: bool


UpstreamEvent = Registered | RegisterFailed | Redirected | KeepaliveAnswered | KeepaliveMissed | Lost | Stopped


class Upstream:
    """The registration toward one superior (see the module docstring).

    Args:
        settings: the superior and our identity toward it.
        token: random source ``token(nbytes) -> hex`` for Call-IDs, tags and cnonces.
        random: random source in [0, 1) for the back-off jitter.
        zone: the time zone a GB/T 28181 Date without zone is read in (the site's).

    Attributes:
        state: where it stands.
        failures: registration failures in a row.
        misses: keepalive failures in a row.
        peer / server_id: the server registered with (the configured one unless redirected).
        last_register / last_keepalive: monotonic time of the last 2xx to a REGISTER / a keepalive (``None``: never).
        granted: the Expires last granted.
        clock_offset: from the last 200 with a readable Date.
        last_failure: the last :class:`RegisterFailed` (``None`` once registered again).
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        token: Callable[[int], str],
        random: Callable[[], float],
        zone: _dt.tzinfo = _dt.UTC,
    ) -> None:
        self.settings = settings
        self._token = token
        self._random = random
        self._zone = zone
        self.state = UpstreamState.IDLE
        self.failures = 0
        self.misses = 0
        self.peer = settings.peer
        self.server_id = settings.server_id
        self._home_uri = f"sip:{settings.server_id}@{settings.domain}"
        self._uri = self._home_uri
        self._visited: set[Peer] = {settings.peer}
        self._redirects = 0
        self.last_register: float | None = None
        self.last_keepalive: float | None = None
        self.granted = 0
        self.clock_offset: float | None = None
        self.last_failure: RegisterFailed | None = None
        self._local = ("127.0.0.1", 5060)
        self._call_id = f"{token(8)}@upstream"
        self._from_tag = token(4)
        self._cseq = 0
        self._ka_sn = 0
        self._ref = 0
        self._register_ref: int | None = None
        self._keepalive_refs: set[int] = set()
        self._challenge: Challenge | None = None
        self._challenge_status = 401
        self._answered = 0  # challenges answered in this attempt (a second one without stale: refused)
        self._stale = 0
        self._nc = 0
        self._refresh_at: float | None = None
        self._keepalive_at: float | None = None
        self._retry_at: float | None = None
        self._registered_once = False
        self._requests: list[Outgoing] = []
        self._events: deque[UpstreamEvent] = deque()

    # --- shell interface ----------------------------------------------------------------

    def set_local_address(self, host: str, port: int) -> None:
        """Where the superior reaches us (our Contact): set before :meth:`start` and after a redirect."""
        self._local = (host, port)

    def start(self, now: float) -> None:
        """Begin: the first REGISTER is queued."""
        self._apply(I.START, now)

    def stop(self, now: float) -> None:
        """Shut down: unregister if registered (Expires: 0), else stop at once; :class:`Stopped` follows."""
        if self.registered:
            self._challenge = None  # the Expires: 0 is challenged afresh
            self._answered = self._stale = 0
        self._apply(I.STOP, now)

    def abandon(self, now: float) -> None:
        """Stop at once without unregistering: another node registers with the superior now (issue 17).

        What is queued and not yet sent is dropped; :class:`Lost` (when registered) and
        :class:`Stopped` follow.
        """
        self._requests.clear()
        self._apply(I.ABANDON, now, lost="another gateway node holds this superior's lease")

    def requests_to_send(self) -> list[Outgoing]:
        """The requests queued since the last call (send each and report its outcome by ``ref``)."""
        out, self._requests = self._requests, []
        return out

    def next_event(self) -> UpstreamEvent | None:
        """The next thing that happened, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called (monotonic seconds), or ``None``."""
        times = [t for t in (self._refresh_at, self._keepalive_at, self._retry_at) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``."""
        if self._retry_at is not None and self._retry_at <= now:
            self._retry_at = None
            self._apply(I.RETRY_DUE, now)
        if self._refresh_at is not None and self._refresh_at <= now:
            self._refresh_at = None
            self._apply(I.REFRESH_DUE, now)
        if self._keepalive_at is not None and self._keepalive_at <= now:
            self._keepalive_at = None
            self._apply(I.KEEPALIVE_DUE, now)

    @property
    def registered(self) -> bool:
        """Whether we hold a registration with the superior."""
        return self.state in (S.REGISTERED, S.REFRESHING)

    def receive_response(self, ref: int, response: Response, now: float, *, wall: float | None = None) -> None:
        """The final response to the request ``ref``; ``wall`` (epoch seconds) dates a 200's Date.

        A response to a request this machine no longer waits for (a keepalive sent before
        we lost the superior, a REGISTER overtaken by a newer one) is ignored.
        """
        if ref in self._keepalive_refs:
            self._keepalive_refs.discard(ref)
            self._keepalive_outcome(response.status, f"{response.status} {response.reason}".strip(), now)
            return
        if ref != self._register_ref:
            return
        self._register_ref = None
        status = response.status
        if 200 <= status < 300:
            self._on_ok(response, now, wall)
        elif status in (401, 407):
            self._on_challenge(response, now)
        elif 300 <= status < 400:
            self._on_redirect(response, now)
        else:
            reason = {403: Failure.FORBIDDEN, 404: Failure.NOT_FOUND}.get(status, Failure.REJECTED)
            self._fail(reason, status, self._rejection_detail(response), now)

    def receive_failure(self, ref: int, detail: str, now: float) -> None:
        """The request ``ref`` got no final answer (timeout) or could not be sent."""
        if ref in self._keepalive_refs:
            self._keepalive_refs.discard(ref)
            self._keepalive_outcome(None, detail, now)
            return
        if ref != self._register_ref:
            return
        self._register_ref = None
        self._fail(Failure.TIMEOUT, None, f"no answer from {self.peer}: {detail}", now)

    # --- classification -----------------------------------------------------------------

    def _on_ok(self, response: Response, now: float, wall: float | None) -> None:
        if self.state is S.UNREGISTERING:
            self._apply(I.OK, now, unregistered=True)
            return
        self.granted = self._granted(response)
        date = response.headers.get("date")
        if date and wall is not None:
            self.clock_offset = clock_offset(date, wall, self._zone)
        self.last_register = now
        # the refresh starts without credentials: a nonce used once is stale for most registrars
        self._challenge = None
        self._answered = self._stale = 0
        self._apply(I.OK, now)

    def _granted(self, response: Response) -> int:
        # RFC 3261 §10.2.4: the Contact's expires, else the Expires header, else what we asked
        asked = self.settings.expires
        for value in response.headers.get_all("contact"):
            try:
                contact = NameAddr.parse(value)
            except SipParseError:
                continue
            expires = contact.params.get("expires")
            if expires and expires.strip().isdigit() and self._local[0] in contact.uri:
                return int(expires)
        header = (response.headers.get("expires") or "").strip()
        return int(header) if header.isdigit() else asked

    def _on_challenge(self, response: Response, now: float) -> None:
        status = response.status
        challenge_header, _ = credentials_header(status)
        challenge = choose_challenge(response.headers.get_all(challenge_header))
        if challenge is None:
            offered = "; ".join(response.headers.get_all(challenge_header))[:120] or "no challenge at all"
            self._fail(Failure.AUTH, status, f"{status} with a challenge we cannot answer ({offered})", now)
            return
        if self._answered:
            if not challenge.stale:
                self._fail(
                    Failure.AUTH,
                    status,
                    f"{status}: our credentials were refused (check password and username for realm "
                    f"{challenge.realm!r})",
                    now,
                )
                return
            self._stale += 1
            if self._stale > MAX_STALE:
                self._fail(Failure.AUTH, status, f"{status}: stale nonce {self._stale} times in a row", now)
                return
        self._challenge = challenge
        self._challenge_status = status
        self._nc = 0
        self._answered += 1
        self._apply(I.CHALLENGED, now)

    def _on_redirect(self, response: Response, now: float) -> None:
        status = response.status
        contact = response.headers.get("contact")
        target: tuple[Peer, str, str] | None = None
        if status in (301, 302) and contact:
            try:
                uri = NameAddr.parse(contact.split(",")[0]).sip_uri
                transport = (uri.params.get("transport") or self.peer.transport).upper()
                host = uri.host.strip("[]")
                port = uri.port or 5060
                server_id = uri.user or self.server_id
                target = (Peer(transport, host, port), server_id, f"sip:{server_id}@{uri.host}:{port}")
            except SipParseError:
                target = None
        if target is None:
            self._fail(Failure.REDIRECT, status, f"{status} {response.reason} without a Contact we can use", now)
            return
        peer, server_id, uri_text = target
        if peer in self._visited:
            self._fail(Failure.REDIRECT, status, f"redirect loop: {peer} was already tried in this attempt", now)
            return
        if self._redirects >= MAX_REDIRECTS:
            self._fail(Failure.REDIRECT, status, f"more than {MAX_REDIRECTS} redirects in one attempt", now)
            return
        self._redirects += 1
        self._visited.add(peer)
        self.peer, self.server_id, self._uri = peer, server_id, uri_text
        self._challenge = None
        self._answered = self._stale = 0
        self._events.append(Redirected(self.settings.name, peer, server_id))
        self._apply(I.REDIRECTED, now)

    def _fail(self, reason: Failure, status: int | None, detail: str, now: float) -> None:
        self._apply(I.TIMED_OUT if reason is Failure.TIMEOUT else I.REJECTED, now, failure=(reason, status, detail))

    def _rejection_detail(self, response: Response) -> str:
        status = response.status
        head = f"{status} {response.reason}".strip()
        warning = response.headers.get("warning")
        extra = f" ({warning[:120]})" if warning else ""
        if status == 403:
            return f"{head}{extra}: wrong password, or {self.settings.local_id} is not provisioned on {self.server_id}"
        if status == 404:
            return f"{head}{extra}: the superior does not know us; check its ID ({self.server_id}) and domain"
        return head + extra

    def _keepalive_outcome(self, status: int | None, detail: str, now: float) -> None:
        if status is not None and 200 <= status < 300:
            self.misses = 0
            self.last_keepalive = now
            self._events.append(KeepaliveAnswered(self.settings.name, now))
            self._apply(I.KEEPALIVE_OK, now)
            return
        self.misses += 1
        self._events.append(KeepaliveMissed(self.settings.name, self.misses, detail))
        if status in (403, 404):
            # PROTOCOL.md §9.2: the superior forgot us; register again at once
            self._apply(I.LOST, now, lost=f"keepalive answered {detail}: the superior forgot us")
        elif self.misses >= self.settings.keepalive_misses:
            self._apply(I.LOST, now, lost=f"{self.misses} keepalives in a row unanswered")
        else:
            self._apply(I.KEEPALIVE_MISSED, now)

    # --- the table and its outputs ------------------------------------------------------

    def _apply(
        self,
        inp: UpstreamInput,
        now: float,
        *,
        failure: tuple[Failure, int | None, str] | None = None,
        lost: str = "",
        unregistered: bool = False,
    ) -> None:
        if inp in _TIMER_INPUTS and (self.state, inp) not in TRANSITIONS:
            return  # armed in an earlier state
        was = self.state
        self.state, outputs = transition(self.state, inp)
        for out in outputs:
            if out is O.SEND_REGISTER:
                self._send_register(self.settings.expires)
            elif out is O.SEND_UNREGISTER:
                self._send_register(0)
            elif out is O.SEND_KEEPALIVE:
                self._send_keepalive()
            elif out is O.ARM_REFRESH:
                self._refresh_at = now + max(self.granted * REFRESH_FRACTION, 1.0)
            elif out is O.ARM_KEEPALIVE:
                self._keepalive_at = now + self.settings.keepalive_interval
            elif out is O.ARM_RETRY:
                self.failures += 1
                s = self.settings
                delay = backoff_delay(self.failures, base=s.retry_interval, cap=s.retry_max, random=self._random())
                self._retry_at = now + delay
                reason, status, detail = failure or (Failure.REJECTED, None, "")
                self.last_failure = RegisterFailed(s.name, reason, status, detail, self.failures, delay)
                self._events.append(self.last_failure)
            elif out is O.DISARM:
                self._refresh_at = self._keepalive_at = self._retry_at = None
                self._keepalive_refs.clear()
                self._register_ref = None  # an answer to a REGISTER still out no longer matters
                self.misses = 0
            elif out is O.GO_HOME:
                self.peer, self.server_id, self._uri = self.settings.peer, self.settings.server_id, self._home_uri
                self._visited = {self.settings.peer}
                self._redirects = 0
                self._challenge = None
                self._answered = self._stale = 0
            elif out is O.ANNOUNCE_REGISTERED:
                self.failures = 0
                self.last_failure = None
                self._events.append(
                    Registered(self.settings.name, now, self.granted, was is S.REFRESHING, self.clock_offset, self.peer)
                )
            elif out is O.ANNOUNCE_LOST:
                why = (
                    lost or (failure[2] if failure else "") or ("shutting down" if inp is I.STOP else inp.name.lower())
                )
                self._events.append(Lost(self.settings.name, why))
            elif out is O.ANNOUNCE_STOPPED:
                self._events.append(Stopped(self.settings.name, unregistered))

    # --- building requests --------------------------------------------------------------

    def _next_ref(self) -> int:
        self._ref += 1
        return self._ref

    def _local_uri(self) -> str:
        return f"sip:{self.settings.local_id}@{self.settings.local_domain}"

    def _contact(self) -> str:
        host, port = self._local
        host = f"[{host}]" if ":" in host else host
        return f"sip:{self.settings.local_id}@{host}:{port}"

    def _send_register(self, expires: int) -> None:
        s = self.settings
        self._cseq += 1
        extra: list[tuple[str, str]] = []
        if self._challenge is not None:
            self._nc += 1
            credentials = authorization_for(
                self._challenge,
                method="REGISTER",
                uri=self._uri,
                username=s.username,
                password=s.password,
                nc=self._nc,
                token=self._token,
            )
            extra.append((credentials_header(self._challenge_status)[1], credentials.serialize()))
        extra.append(("Expires", str(expires)))
        extra.append(("User-Agent", s.user_agent))
        if s.gb_version:
            extra.append(("X-GB-ver", s.gb_version))
        request = make_request(
            "REGISTER",
            self._uri,
            from_addr=self._local_uri(),
            to_addr=self._local_uri(),
            call_id=self._call_id,
            cseq=self._cseq,
            from_tag=self._from_tag,
            contact=self._contact(),
            extra=extra,
        )
        ref = self._register_ref = self._next_ref()
        purpose = Purpose.UNREGISTER if expires == 0 else Purpose.REGISTER
        self._requests.append(Outgoing(ref, purpose, request, self.peer))

    def message(self, body: bytes) -> Request:
        """A MANSCDP MESSAGE to the superior (out of dialog, fresh Call-ID and tag): send it to :attr:`peer`.

        Keepalives, and the shell's catalog answers and notifications, all go this way.
        """
        s = self.settings
        target = f"sip:{self.server_id}@{self.settings.domain}" if self.peer == s.peer else self._uri
        extra = [("User-Agent", s.user_agent)]
        if s.gb_version:
            extra.append(("X-GB-ver", s.gb_version))
        return make_request(
            "MESSAGE",
            target,
            from_addr=self._local_uri(),
            to_addr=target,
            call_id=f"{self._token(8)}@upstream",
            cseq=1,
            from_tag=self._token(4),
            extra=extra,
            body=body,
            content_type=CONTENT_TYPE,
        )

    def _send_keepalive(self) -> None:
        s = self.settings
        self._ka_sn += 1
        body = encode(Root.NOTIFY, CmdType.KEEPALIVE, self._ka_sn, s.local_id, [("Status", "OK")], charset=s.charset)
        request = self.message(body)
        ref = self._next_ref()
        self._keepalive_refs.add(ref)
        self._requests.append(Outgoing(ref, Purpose.KEEPALIVE, request, self.peer))
