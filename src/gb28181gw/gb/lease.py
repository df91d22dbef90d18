"""A renewable lease on a shared name: which one of several gateway nodes acts for it (issue 17).

Used for superior registrations (PROTOCOL.md §9.2): with several nodes sharing a Redis store,
exactly one of them registers upward to each superior, the one holding ``lease:upstream:<name>``.
Two registrations of one platform ID with one superior (each node's Call-ID its own) make the
superior flap between them, so the lease must never be held by two nodes *as they see it*.

The lease lives in Redis with a time to live; its holder renews it. Redis expires it on its own
clock, measured from when it ran our command, which is after we sent it. So the holder counts
its lease from the moment it *sent* the last renewal that was confirmed (``valid_from``): Redis
cannot have expired the lease before ``valid_from + ttl``. The holder **fences itself** (stops
every request upward) when ``now + margin`` reaches that instant without a newer confirmation:
Redis unreachable, slow, or the process itself stopped (SIGSTOP, a long GC, a VM pause). A
process that was paused must look at the clock before it sends anything after resuming: the
shell asks :meth:`Lease.may_send` before every request upward, which runs an overdue fence
first. The margin covers the time from that check to the datagram leaving.

Like the other machines of the core this one is sans-I/O: the shell sends what
:meth:`Lease.requests_to_send` returns (take, renew, release: Redis scripts comparing on our
take's token), reports each answer with the time (:meth:`Lease.taken`, :meth:`Lease.busy`,
:meth:`Lease.vacant`, :meth:`Lease.renewed`, :meth:`Lease.gone`, :meth:`Lease.missing`,
:meth:`Lease.failed`, :meth:`Lease.released`), runs
:meth:`Lease.handle_timer` at :meth:`Lease.get_timer`, and drains :meth:`Lease.next_event`.
States and inputs meet in one table, :data:`TRANSITIONS`; a pair it does not list raises
:class:`~gb28181gw.errors.LocalProtocolError` naming the state, except a timer input (armed in
an earlier state: ignored). An answer to a request the machine no longer waits for is ignored.

What the states mean:

- ``STANDBY``: another node holds it, or Redis could not be asked: we try to take it when its
  holder's time may run out (at most every ``retry`` seconds). Never taken while Redis is down;
  not taken for a while when Redis lost it (see below: the holder goes first).
- ``ACQUIRING``: a take is out (``SET`` if absent, with a new epoch from a counter).
- ``HELD`` / ``RENEWING``: ours; upward requests may go until the fence time.
- ``RETAKING``: a renewal found *no* value (Redis restarted empty, or the key expired while
  Redis could not be reached): a take is out at once. Still ours until the fence time, like
  ``RENEWING``. Taken: held again, :class:`Retaken`, *not* :class:`Gained` (the superior saw
  nothing change, so the registration, its dialogs and streams carry on); found another
  node's value (it won the take in the window): lost.
- ``FENCED``: no confirmation in time: nothing goes upward; renewals go on (compare on our
  token). Confirmed again, or re-taken after a renewal found no value: held again, and the
  superior is registered with afresh (:class:`Gained`); answered "not yours" (it expired,
  another node took it): standby.
- ``RELEASING`` / ``RELEASED``: shutting down: the lease is deleted if it is still ours, so
  that another node takes over at once rather than after the time to live.

**A fenced holder never resumes.** Once fenced, the node has stopped its registration (no
Expires: 0) and the rest of the gateway has let the superior go; when it holds the lease again
it registers afresh with a new Call-ID. It cannot tell reliably whether another node held the
lease and registered upward in between: the epoch would say so (a take in between makes ours
larger by more than one), but an empty Redis loses the counter along with the value, and only
the epochs the nodes remember carry it over. Resuming a registration the superior may have
replaced with another node's would make it flap between two Call-IDs, so the one safe rule is
a fresh registration. A renewal that finds no value *before* the fence is a different case: the
lease was ours, unbroken, until that instant, nobody can have registered upward meanwhile
(they would need the lease, and the re-take finds it if they took it), so we keep everything.

**Epochs across an empty Redis.** ``lease:<name>:epoch`` starts again from nothing when Redis
loses its data. Every take carries the largest epoch this node has seen (its own takes, the
values other holders showed it), and the take script counts from ``max(stored, known) + 1``,
so epochs keep growing across the restart as far as any node remembers.

**Who re-takes after an empty Redis.** The holder and the standbys all find the key missing, at
whichever of their timers comes first; the holder should win, since the superior already knows
its registration. A standby's take that finds no value *and* a counter below the epoch it has
seen (the sign that Redis lost its data, rather than that a holder died and its lease ran out)
restores the counter but does not take: it waits the lease's time to live
(:attr:`LeaseSettings.grace`), in which a live holder re-takes or fences itself; a dead one does
not, and the next try takes it (the counter no longer looks lost), as late as the dead holder's
lease would have run out anyway.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum, auto

from gb28181gw.sip.transaction import look_up, render_digraph

__all__ = [
    "MARGIN_FRACTION",
    "RENEW_FRACTION",
    "TRANSITIONS",
    "Fenced",
    "Gained",
    "Lease",
    "LeaseEvent",
    "LeaseInput",
    "LeaseLost",
    "LeaseOp",
    "LeaseRequest",
    "LeaseSettings",
    "LeaseState",
    "Released",
    "Retaken",
    "epoch_of",
    "holder_of",
    "render_table",
    "transition",
]

#: Share of the time to live after which the holder renews (three tries before it fences).
RENEW_FRACTION = 1 / 3
#: Share of the time to live kept as a safety margin: the holder fences itself this long before
#: the lease can have expired at Redis (scheduling delay between the check and the send).
MARGIN_FRACTION = 0.2


class LeaseState(IntEnum):
    """Where this node stands with one lease."""

    STANDBY = auto()  # not ours; a take is due later
    ACQUIRING = auto()  # a take is out
    HELD = auto()  # ours, confirmed in time
    RENEWING = auto()  # ours, a renewal is out
    RETAKING = auto()  # ours until the fence; a renewal found no value, a take is out
    FENCED = auto()  # perhaps no longer ours: nothing goes upward
    RELEASING = auto()  # shutting down: a release is out
    RELEASED = auto()  # done


class LeaseInput(IntEnum):
    """What can happen to a lease."""

    START = auto()  # the shell starts it
    ACQUIRE_DUE = auto()  # timer: try to take it
    TAKEN = auto()  # the take succeeded: ours, with a new epoch
    BUSY = auto()  # the take found another holder
    VACANT = auto()  # the take found no holder, but Redis lost its data: the holder may re-take
    FAILED = auto()  # Redis did not answer (or refused the command)
    RENEW_DUE = auto()  # timer: renew
    RENEWED = auto()  # the renewal found our value and extended it
    GONE = auto()  # the renewal found another node's value: not ours any more
    RENEW_FOUND_NONE = auto()  # the renewal found no value at all: Redis lost it, take it again
    FENCE_DUE = auto()  # timer: the lease may expire within the margin, unconfirmed
    STOP = auto()  # the shell shuts down
    RELEASE_DONE = auto()  # the release was answered (or failed: the lease then expires by itself)


class Action(IntEnum):
    """What the machine does on a transition (run by :class:`Lease` itself)."""

    SEND_ACQUIRE = auto()
    SEND_RENEW = auto()
    SEND_RETAKE = auto()
    SEND_RELEASE = auto()
    ARM_ACQUIRE = auto()  # next take when the holder's time may be out, at most ``retry`` away
    ARM_GRACE = auto()  # next take after ``grace``: a live holder re-takes first
    ARM_RENEW = auto()  # next renewal at RENEW_FRACTION of the time to live after the confirmed one
    ARM_RETRY = auto()  # a renewal failed: try again after ``retry``
    CONFIRM = auto()  # valid_from = when the confirmed request was sent; fence time follows
    DISARM = auto()  # forget every timer
    ANNOUNCE_GAINED = auto()
    ANNOUNCE_RETAKEN = auto()
    ANNOUNCE_FENCED = auto()
    ANNOUNCE_LOST = auto()
    ANNOUNCE_RELEASED = auto()


class LeaseOp(StrEnum):
    """A request to the lease's keeper (Redis)."""

    ACQUIRE = "acquire"  # take it if nobody holds it: its value becomes ``<node> <epoch> <token>``
    RETAKE = "retake"  # the holder's take after its renewal found no value (never deferred)
    RENEW = "renew"  # extend it if its value still ends in our token
    RELEASE = "release"  # delete it if its value still ends in our token


S = LeaseState
I = LeaseInput  # noqa: E741
A = Action

Table = dict[tuple[LeaseState, LeaseInput], tuple[LeaseState, tuple[Action, ...]]]

_GAIN = (S.HELD, (A.CONFIRM, A.ARM_RENEW, A.ANNOUNCE_GAINED))
_KEEP = (S.HELD, (A.CONFIRM, A.ARM_RENEW))
_RETAKEN = (S.HELD, (A.CONFIRM, A.ARM_RENEW, A.ANNOUNCE_RETAKEN))
_LOSE = (S.STANDBY, (A.DISARM, A.ANNOUNCE_LOST, A.ARM_ACQUIRE))
_RELEASE = (S.RELEASING, (A.DISARM, A.SEND_RELEASE))

#: Every legal (state, input) pair.
TRANSITIONS: Table = {
    (S.STANDBY, I.START): (S.ACQUIRING, (A.SEND_ACQUIRE,)),
    (S.STANDBY, I.ACQUIRE_DUE): (S.ACQUIRING, (A.SEND_ACQUIRE,)),
    (S.STANDBY, I.STOP): (S.RELEASED, (A.DISARM, A.ANNOUNCE_RELEASED)),
    (S.ACQUIRING, I.TAKEN): _GAIN,
    (S.ACQUIRING, I.BUSY): (S.STANDBY, (A.ARM_ACQUIRE,)),
    (S.ACQUIRING, I.VACANT): (S.STANDBY, (A.ARM_GRACE,)),
    # Redis away: no new lease is taken while it is (issue 17)
    (S.ACQUIRING, I.FAILED): (S.STANDBY, (A.ARM_ACQUIRE,)),
    # the take may still land: a release comparing on its value undoes it if it did
    (S.ACQUIRING, I.STOP): _RELEASE,
    (S.HELD, I.RENEW_DUE): (S.RENEWING, (A.SEND_RENEW,)),
    (S.HELD, I.FENCE_DUE): (S.FENCED, (A.ANNOUNCE_FENCED, A.SEND_RENEW)),
    (S.HELD, I.STOP): _RELEASE,
    (S.RENEWING, I.RENEWED): _KEEP,
    (S.RENEWING, I.FAILED): (S.HELD, (A.ARM_RETRY,)),
    (S.RENEWING, I.GONE): _LOSE,
    # Redis lost the value (restarted empty): ours until now, take it again at once
    (S.RENEWING, I.RENEW_FOUND_NONE): (S.RETAKING, (A.SEND_RETAKE,)),
    (S.RENEWING, I.FENCE_DUE): (S.FENCED, (A.ANNOUNCE_FENCED,)),  # the renewal stays out
    (S.RENEWING, I.STOP): _RELEASE,
    (S.RETAKING, I.TAKEN): _RETAKEN,  # the superior saw nothing change: everything carries on
    (S.RETAKING, I.BUSY): _LOSE,  # another node won the take in the window
    (S.RETAKING, I.FAILED): (S.HELD, (A.ARM_RETRY,)),  # the renewal that follows finds out
    (S.RETAKING, I.FENCE_DUE): (S.FENCED, (A.ANNOUNCE_FENCED,)),  # the take stays out
    (S.RETAKING, I.STOP): _RELEASE,
    (S.FENCED, I.RENEW_DUE): (S.FENCED, (A.SEND_RENEW,)),
    # still ours at Redis: nobody else can have registered; register afresh
    (S.FENCED, I.RENEWED): _GAIN,
    (S.FENCED, I.FAILED): (S.FENCED, (A.ARM_RETRY,)),
    (S.FENCED, I.GONE): _LOSE,
    # a fenced holder never resumes (module docstring): taken again, it registers afresh
    (S.FENCED, I.RENEW_FOUND_NONE): (S.FENCED, (A.SEND_RETAKE,)),
    (S.FENCED, I.TAKEN): _GAIN,
    (S.FENCED, I.BUSY): _LOSE,
    (S.FENCED, I.STOP): _RELEASE,
    (S.RELEASING, I.RELEASE_DONE): (S.RELEASED, (A.ANNOUNCE_RELEASED,)),
    (S.RELEASING, I.STOP): (S.RELEASING, ()),
    (S.RELEASED, I.STOP): (S.RELEASED, ()),
}

_TIMER_INPUTS = frozenset({I.ACQUIRE_DUE, I.RENEW_DUE, I.FENCE_DUE})
#: States in which requests may go out in the lease's name (until the fence time).
_HOLDING = frozenset({S.HELD, S.RENEWING, S.RETAKING})


def transition(state: LeaseState, inp: LeaseInput) -> tuple[LeaseState, tuple[Action, ...]]:
    """Look ``(state, inp)`` up in :data:`TRANSITIONS`.

    Raises:
        LocalProtocolError: the pair is not in the table (a bug of the caller), naming the state.
    """
    return look_up("lease", TRANSITIONS, state, inp)


def render_table() -> str:
    """:data:`TRANSITIONS` as a Graphviz ``digraph``."""
    return render_digraph("lease", TRANSITIONS)


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """One lease.

    Attributes:
        name: what it is for (``upstream:<name>``: the Redis key is ``lease:<name>``).
        node: this node's ``node.id`` (written in the lease's value: who holds it).
        ttl: its time to live at Redis (s).
        retry: seconds between takes while another node holds it, and after a failed renewal
            (``None``: RENEW_FRACTION of ``ttl``).
    """

    name: str
    node: str
    ttl: float
    retry: float | None = None

    @property
    def renew_every(self) -> float:
        """Seconds from one confirmed renewal to the next."""
        return self.ttl * RENEW_FRACTION

    @property
    def margin(self) -> float:
        """Seconds before the lease can have expired at which the holder fences itself."""
        return self.ttl * MARGIN_FRACTION

    @property
    def retry_every(self) -> float:
        return self.retry if self.retry is not None else self.renew_every

    @property
    def grace(self) -> float:
        """Seconds a standby leaves a lease that Redis lost to its holder: the lease's whole life.
        The holder's last confirmation came before the loss, so by then a live holder has either
        re-taken it (at its next renewal, or the retry after a failed one) or fenced itself and
        stopped sending upward; a dead one is replaced as late as if its lease had run out."""
        return self.ttl


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """A request for the shell to send to Redis, and to report the answer of by ``ref``.

    Attributes:
        ref: quote it when reporting the answer.
        op: what to do.
        name: the lease (``upstream:<name>``).
        node: this node's ID (written in the value by ACQUIRE).
        token: the random token of our take: written by ACQUIRE, compared on by RENEW and RELEASE
            (a take whose answer was lost can still be released).
        ttl: the time to live to set (s).
        known_epoch: the largest epoch this node has seen (ACQUIRE, RETAKE): a take counts from
            ``max(stored, known_epoch) + 1``, so epochs grow across an empty Redis.
        defer: (ACQUIRE) found no value and a counter below ``known_epoch`` (Redis lost its
            data): restore the counter but do not take; the holder may still be alive.
    """

    ref: int
    op: LeaseOp
    name: str
    node: str
    token: str
    ttl: float
    known_epoch: int = 0
    defer: bool = False


@dataclass(frozen=True, slots=True)
class Gained:
    """The lease is ours (taken, or confirmed again after a fence): start acting for it afresh.

    Attributes:
        name: the lease.
        epoch: how many times it has been taken, by any node (a larger one is newer).
    """

    name: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Retaken:
    """A renewal found no value (Redis lost it) and our take at once made it ours again: carry
    on as holder, the superior's registration, dialogs and streams untouched.

    Attributes:
        name: the lease.
        epoch: the epoch of the new take.
    """

    name: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Fenced:
    """The lease may be about to expire, unconfirmed: nothing must go out in its name any more.

    Attributes:
        name: the lease.
        unconfirmed_for: seconds since the last confirmed renewal was sent.
    """

    name: str
    unconfirmed_for: float


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """A renewal found the lease not ours (expired, taken by another node).

    Attributes:
        name: the lease.
        holder: the node now holding it (``""``: nobody).
    """

    name: str
    holder: str


@dataclass(frozen=True, slots=True)
class Released:
    """The machine stopped (the lease deleted if it was still ours).

    Attributes:
        name: the lease.
    """

    name: str


LeaseEvent = Gained | Retaken | Fenced | LeaseLost | Released


def holder_of(value: str) -> str:
    """The node named in a lease's value (``<node> <epoch> <token>``)."""
    return value.split(" ", 1)[0]


def epoch_of(value: str) -> int:
    """The epoch in a lease's value (``<node> <epoch> <token>``); 0 when it names none."""
    parts = value.split(" ")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0


class Lease:
    """This node's side of one lease (see the module docstring).

    Args:
        settings: the lease.
        token: random source ``token(nbytes) -> hex`` for the token of each take.

    Attributes:
        state: where it stands.
        token: the token of our take while it may be ours (``""`` otherwise).
        epoch: the epoch of our last take (0: never).
        seen_epoch: the largest epoch seen, ours or another holder's (passed to every take).
        holder: the node holding it as last seen (ours while held; ``""``: unknown or nobody).
        valid_from: when the last confirmed take or renewal was sent (monotonic s), or ``None``.
    """

    def __init__(self, settings: LeaseSettings, *, token: Callable[[int], str]) -> None:
        self.settings = settings
        self._token = token
        self.state = LeaseState.STANDBY
        self.token = ""
        self.epoch = 0
        self.seen_epoch = 0
        self.holder = ""
        self.valid_from: float | None = None
        self._ref = 0
        self._out: tuple[int, float] | None = None  # (ref, sent at) of the request waited for
        self._confirming: float | None = None  # sent-at of the request being confirmed
        self._retry_wait: float | None = None  # from a BUSY answer: the holder's time left
        self._acquire_at: float | None = None
        self._renew_at: float | None = None
        self._fence_at: float | None = None
        self._requests: list[LeaseRequest] = []
        self._events: deque[LeaseEvent] = deque()

    # --- shell interface ----------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: the first take is queued."""
        self._apply(I.START, now)

    def stop(self, now: float) -> None:
        """Shut down: a lease that may be ours is released; :class:`Released` follows."""
        self._apply(I.STOP, now)

    @property
    def held(self) -> bool:
        """Whether requests may go out in the lease's name (as of the last :meth:`handle_timer`)."""
        return self.state in _HOLDING

    def may_send(self, now: float) -> bool:
        """Whether a request may go out in the lease's name at ``now``: the check before each send.

        An overdue fence runs first (a process resumed after a pause must not send on a lease
        that may have expired meanwhile).
        """
        self.handle_timer(now)
        return self.held and self._fence_at is not None and now < self._fence_at

    def requests_to_send(self) -> list[LeaseRequest]:
        """The requests queued since the last call."""
        out, self._requests = self._requests, []
        return out

    def next_event(self) -> LeaseEvent | None:
        """The next thing that happened, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called (monotonic seconds), or ``None``."""
        times = [t for t in (self._acquire_at, self._renew_at, self._fence_at) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``; the fence first (after a pause all may be due at once)."""
        if self._fence_at is not None and self._fence_at <= now and self.state in _HOLDING:
            self._apply(I.FENCE_DUE, now)
        if self._acquire_at is not None and self._acquire_at <= now:
            self._acquire_at = None
            self._apply(I.ACQUIRE_DUE, now)
        if self._renew_at is not None and self._renew_at <= now:
            self._renew_at = None
            if self._out is None:  # a renewal already out is waited for
                self._apply(I.RENEW_DUE, now)

    def taken(self, ref: int, epoch: int, now: float) -> None:
        """The take ``ref`` made the lease ours, as its ``epoch``-th holder."""
        if (sent := self._answer(ref)) is None:
            return
        self.epoch, self.holder = epoch, self.settings.node
        self.seen_epoch = max(self.seen_epoch, epoch)
        self._confirm(I.TAKEN, sent, now)

    def busy(self, ref: int, holder: str, remaining: float | None, now: float, *, epoch: int = 0) -> None:
        """The take ``ref`` found ``holder`` (a node ID) holding it, as its ``epoch``-th holder
        (0: not known), for ``remaining`` more seconds if known."""
        if self._answer(ref) is None:
            return
        self.holder = holder
        self.seen_epoch = max(self.seen_epoch, epoch)
        self._retry_wait = remaining
        self._apply(I.BUSY, now)

    def vacant(self, ref: int, now: float) -> None:
        """The take ``ref`` found no holder, but a counter showing Redis lost its data: not taken."""
        if self._answer(ref) is None:
            return
        self.holder = ""
        self._apply(I.VACANT, now)

    def renewed(self, ref: int, now: float) -> None:
        """The renewal ``ref`` found our value and extended the lease."""
        if (sent := self._answer(ref)) is None:
            return
        self._confirm(I.RENEWED, sent, now)

    def gone(self, ref: int, holder: str, now: float) -> None:
        """The renewal ``ref`` found the lease not ours: ``holder`` holds it (``""``: nobody,
        the same as :meth:`missing`)."""
        if not holder:
            self.missing(ref, now)
            return
        if self._answer(ref) is None:
            return
        self.token, self.holder = "", holder
        self._apply(I.GONE, now)

    def missing(self, ref: int, now: float) -> None:
        """The renewal ``ref`` found no value at all (Redis lost it): a take goes out at once."""
        if self._answer(ref) is None:
            return
        self._apply(I.RENEW_FOUND_NONE, now)

    def failed(self, ref: int, now: float) -> None:
        """The request ``ref`` got no answer (or an error) from Redis."""
        if self._answer(ref) is None:
            return
        if self.state is S.RELEASING:
            self._apply(I.RELEASE_DONE, now)  # it expires by itself
            return
        self._apply(I.FAILED, now)

    def released(self, ref: int, now: float) -> None:
        """The release ``ref`` was answered."""
        if self._answer(ref) is None:
            return
        self._apply(I.RELEASE_DONE, now)

    # --- internals ----------------------------------------------------------------------

    def _answer(self, ref: int) -> float | None:
        if self._out is None or self._out[0] != ref:
            return None
        sent = self._out[1]
        self._out = None
        return sent

    def _confirm(self, inp: LeaseInput, sent: float, now: float) -> None:
        s = self.settings
        if sent + s.ttl - s.margin <= now:
            # answered so late (a pause between send and answer) that the lease it confirms may
            # be expiring already: as good as no answer; a fence that is due follows
            self._apply(I.FAILED, now)
            self.handle_timer(now)
            return
        self._confirming = sent
        self._apply(inp, now)

    def _send(self, op: LeaseOp, now: float) -> None:
        self._ref += 1
        s = self.settings
        if op is LeaseOp.ACQUIRE:
            self.token = self._token(8)
        # a re-take keeps our token: if its answer is lost, the renewal that follows finds it ours
        self._out = (self._ref, now)
        self._requests.append(
            LeaseRequest(
                self._ref, op, s.name, s.node, self.token, s.ttl,
                known_epoch=self.seen_epoch, defer=op is LeaseOp.ACQUIRE,
            )
        )  # fmt: skip

    def _apply(self, inp: LeaseInput, now: float) -> None:
        if inp in _TIMER_INPUTS and (self.state, inp) not in TRANSITIONS:
            return  # armed in an earlier state
        s = self.settings
        self.state, actions = transition(self.state, inp)
        for action in actions:
            if action is A.SEND_ACQUIRE:
                self._send(LeaseOp.ACQUIRE, now)
            elif action is A.SEND_RENEW:
                self._send(LeaseOp.RENEW, now)
            elif action is A.SEND_RETAKE:
                self._send(LeaseOp.RETAKE, now)
            elif action is A.SEND_RELEASE:
                if self.token:
                    self._send(LeaseOp.RELEASE, now)
                else:
                    self._apply(I.RELEASE_DONE, now)  # nothing of ours to delete
            elif action is A.CONFIRM:
                assert self._confirming is not None
                self.valid_from = self._confirming
                self._fence_at = self.valid_from + s.ttl - s.margin
            elif action is A.ARM_RENEW:
                assert self.valid_from is not None
                self._renew_at = max(self.valid_from + s.renew_every, now)
            elif action is A.ARM_RETRY:
                self._renew_at = now + min(s.retry_every, s.renew_every)
            elif action is A.ARM_ACQUIRE:
                wait = s.retry_every
                if self._retry_wait is not None:
                    wait = min(wait, max(self._retry_wait, 0.0))
                    self._retry_wait = None
                self._acquire_at = now + wait
            elif action is A.ARM_GRACE:
                self._acquire_at = now + s.grace
            elif action is A.DISARM:
                self._acquire_at = self._renew_at = self._fence_at = None
            elif action is A.ANNOUNCE_GAINED:
                self._events.append(Gained(s.name, self.epoch))
            elif action is A.ANNOUNCE_RETAKEN:
                self._events.append(Retaken(s.name, self.epoch))
            elif action is A.ANNOUNCE_FENCED:
                self._fence_at = None
                since = now - self.valid_from if self.valid_from is not None else 0.0
                self._events.append(Fenced(s.name, since))
            elif action is A.ANNOUNCE_LOST:
                self.valid_from = None
                self.token = ""
                self._events.append(LeaseLost(s.name, self.holder))
            elif action is A.ANNOUNCE_RELEASED:
                self.token = ""
                self._events.append(Released(s.name))
