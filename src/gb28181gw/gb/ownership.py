"""Device ownership among several gateway nodes on one Redis store (issue 17): the rules, sans I/O.

Every REGISTER a node accepts (a refresh too) **claims** the device: Redis's ``owner`` hash then
says ``"<epoch> <node>"``, the epoch one more than the value it replaces. The node remembers the
epoch it got; its writes of the device (its row, its liveness deadline, its offline mark and
event) go through only while ``owner`` still says exactly that, compared in the same Lua script
as the write. A refused write means another node has claimed the device since: this node stops
watching it and writes nothing more for it. A stale node can never overwrite a newer owner's row.

The claim travels with the registrar's write-behind batch (one script per flush, no round trip
per REGISTER), so it reaches Redis up to ``store.flush_interval`` after the REGISTER — or much
later, when Redis was away. Two claims may therefore arrive in the other order than their
REGISTERs: the device registered at A, then at B (re-homed by the director), and A's batch was
slower. Each claim carries the wall-clock time of its REGISTER, and Redis keeps the time of the
claim that made the current epoch (``owner:at``); a claim older than that **loses**
(:func:`claim_wins`): it changes nothing and its node treats the device as another's, exactly as
after a refused write. The shell puts that time in Redis's clock (the node's wall clock plus its
measured offset from Redis's ``TIME``), so nodes whose clocks disagree, by minutes even, still
order claims by when their REGISTERs came.

A write finds one of (:func:`judge_write`):

- ``OURS``: the owner is still our epoch and node;
- ``RESTORE``: no owner, or our node with an older epoch: Redis lost it (restarted empty, or
  from an older dump) and the device is ours in memory: our value is put back, nothing dropped;
- ``ADOPT``: our node with a newer epoch: a claim of ours whose answer was lost; ours, at that epoch;
- ``LOST``: another node: it claimed the device after us.

Per device a node is in one :class:`Holding` state, changed by :data:`TRANSITIONS` (the style of
:mod:`gb28181gw.sip.transaction`): ``FOREIGN`` (another node's, or nobody's here), ``CLAIMING`` (a
claim is queued or on its way) and ``OWNED``. A refusal that arrives while a newer claim is queued
changes nothing: that claim, carrying the newer REGISTER, decides.

Liveness of nodes (:class:`NodeWatch`): a node is live while its ``node:<id>`` key exists. A key
that vanished may come back (Redis restarted empty and the node claims its name again within a
third of NODE_TTL), so a node counts as dead only once its key has been seen missing for
``grace`` seconds; its devices are then adopted by one janitor (:func:`sweep_verdict`).

Learning what other nodes do (:func:`follow_verdict`): every node keeps a cursor in the shared
``events`` stream and reads on from it every second, taking the rows of the devices other nodes
(or their janitors) wrote about; that is how a node's own view (its device listing, what it tells
a superior) learns of devices registered, moved or gone offline elsewhere while it runs. The
stream is a log that can lose entries: trimmed to its length limit, emptied by a Redis restart,
or set back by a restore from an older dump. Whenever entries past the cursor may be gone the
node reads every device row instead (a reconcile) and goes on from the stream's end as it was
before that read; nothing missed can then stay missed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, StrEnum, auto

from gb28181gw.sip.transaction import look_up, render_digraph

__all__ = [
    "TRANSITIONS",
    "Holding",
    "HoldingAction",
    "HoldingInput",
    "NodeWatch",
    "Follow",
    "Owner",
    "Ownership",
    "StreamId",
    "Sweep",
    "WriteVerdict",
    "claim_wins",
    "follow_verdict",
    "judge_write",
    "parse_stream_id",
    "render_table",
    "sweep_verdict",
]


@dataclass(frozen=True, slots=True)
class Owner:
    """A value of the ``owner`` hash: which node claimed a device last, and the claim's epoch.

    Attributes:
        epoch: how many claims the device has seen (1 for the first).
        node: the ``node.id`` of the claiming gateway.
    """

    epoch: int
    node: str

    @classmethod
    def parse(cls, value: str) -> Owner:
        """``"<epoch> <node>"`` as stored.

        Raises:
            ValueError: anything else.
        """
        epoch, sep, node = value.partition(" ")
        if not sep or not node or not epoch.isdigit():
            raise ValueError(f'not an owner value ("<epoch> <node>"): {value!r}')
        return cls(int(epoch), node)

    def __str__(self) -> str:
        return f"{self.epoch} {self.node}"


def claim_wins(stored_at: float | None, at: float) -> bool:
    """Whether a claim made by a REGISTER at wall time ``at`` replaces the current owner.

    ``stored_at`` is the REGISTER time of the claim that made the current epoch (``None``: no
    claim known). A later REGISTER wins; an equal time wins too (the same REGISTER's claim sent
    again after its answer was lost), so that a retry is never refused by itself.
    """
    return stored_at is None or at >= stored_at


class WriteVerdict(StrEnum):
    """What a fenced write finds in ``owner`` (see the module docstring)."""

    OURS = "ours"
    RESTORE = "restore"
    ADOPT = "adopt"
    LOST = "lost"


def judge_write(stored: Owner | None, mine: Owner) -> WriteVerdict:
    """Whether a write by ``mine`` (this node, the epoch it remembers) goes through, given ``stored``."""
    if stored is None:
        return WriteVerdict.RESTORE
    if stored.node != mine.node:
        return WriteVerdict.LOST
    if stored.epoch == mine.epoch:
        return WriteVerdict.OURS
    return WriteVerdict.RESTORE if stored.epoch < mine.epoch else WriteVerdict.ADOPT


class Sweep(StrEnum):
    """What the janitor of a dead node does with one device of its sorted set."""

    OFFLINE = "offline"  # still the dead node's and its deadline has passed: mark it offline, once
    WAIT = "wait"  # still the dead node's, its deadline not yet passed
    LEAVE = "leave"  # another node claimed it since: not the dead node's to mark


def sweep_verdict(owner: Owner | None, dead: str, deadline: float, now: float) -> Sweep:
    """The janitor's decision for a device of dead node ``dead`` whose liveness deadline is ``deadline``."""
    if owner is None or owner.node != dead:
        return Sweep.LEAVE
    return Sweep.OFFLINE if deadline <= now else Sweep.WAIT


class Holding(IntEnum):
    """Where this node stands with one device."""

    FOREIGN = auto()  # not ours: another node's, or never registered here
    CLAIMING = auto()  # a REGISTER was accepted here; its claim is queued or on its way
    OWNED = auto()  # ours, at a known epoch


class HoldingInput(IntEnum):
    """What can happen to this node's hold on a device."""

    REGISTERED = auto()  # a REGISTER accepted here: queue a claim
    LOADED_OURS = auto()  # at start-up, ``owner`` names this node
    CLAIM_WON = auto()  # the claim made the new epoch
    CLAIM_LOST = auto()  # a claim of a later REGISTER was there first
    WRITE_REFUSED = auto()  # a write found another node's claim
    WRITE_ACCEPTED = auto()  # a write found ours (or restored it)


class HoldingAction(IntEnum):
    """What the shell does after a transition."""

    QUEUE_CLAIM = auto()  # with the next batch
    KEEP_EPOCH = auto()  # remember the epoch the answer named
    FORGET = auto()  # stop watching it, drop what is queued for it, count and log it once


H, I, A = Holding, HoldingInput, HoldingAction  # noqa: E741

#: Every legal (state, input) pair.
TRANSITIONS: dict[tuple[Holding, HoldingInput], tuple[Holding, tuple[HoldingAction, ...]]] = {
    (H.FOREIGN, I.REGISTERED): (H.CLAIMING, (A.QUEUE_CLAIM,)),
    (H.FOREIGN, I.LOADED_OURS): (H.OWNED, (A.KEEP_EPOCH,)),
    # an answer about a device forgotten already (two batches were out): nothing more to do
    (H.FOREIGN, I.WRITE_REFUSED): (H.FOREIGN, ()),
    (H.FOREIGN, I.CLAIM_LOST): (H.FOREIGN, ()),
    (H.CLAIMING, I.REGISTERED): (H.CLAIMING, (A.QUEUE_CLAIM,)),
    (H.CLAIMING, I.CLAIM_WON): (H.OWNED, (A.KEEP_EPOCH,)),
    (H.CLAIMING, I.CLAIM_LOST): (H.FOREIGN, (A.FORGET,)),
    # the queued claim, of a newer REGISTER than what was refused, decides
    (H.CLAIMING, I.WRITE_REFUSED): (H.CLAIMING, ()),
    (H.CLAIMING, I.WRITE_ACCEPTED): (H.CLAIMING, ()),
    (H.OWNED, I.REGISTERED): (H.CLAIMING, (A.QUEUE_CLAIM,)),
    (H.OWNED, I.WRITE_ACCEPTED): (H.OWNED, (A.KEEP_EPOCH,)),
    (H.OWNED, I.WRITE_REFUSED): (H.FOREIGN, (A.FORGET,)),
}


def transition(state: Holding, inp: HoldingInput) -> tuple[Holding, tuple[HoldingAction, ...]]:
    """``TRANSITIONS[state, inp]``.

    Raises:
        LocalProtocolError: the pair is not in the table.
    """
    return look_up("device ownership", TRANSITIONS, state, inp)


def render_table() -> str:
    """:data:`TRANSITIONS` as a Graphviz ``digraph``."""
    return render_digraph("ownership", TRANSITIONS)


class Ownership:
    """This node's hold on every device: claims to send, epochs, what to forget.

    Args:
        node: this node's ``node.id``.

    The shell calls :meth:`registered` for every accepted REGISTER, takes the queued claims with
    :meth:`take_claims` when it builds a batch, reports the batch's answers (:meth:`claimed`,
    :meth:`refused`, :meth:`accepted`) or its failure (:meth:`unsent`), and forgets the devices
    :meth:`take_forgotten` returns.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self._state: dict[str, Holding] = {}
        self._epoch: dict[str, int] = {}
        self._claims: dict[str, float] = {}  # device -> REGISTER wall time, not yet sent
        self._forgotten: list[str] = []
        #: claims lost and writes refused: devices another node took from this one
        self.lost = 0

    def state(self, device_id: str) -> Holding:
        """This node's hold on ``device_id``."""
        return self._state.get(device_id, H.FOREIGN)

    def owns(self, device_id: str) -> bool:
        """Whether this node serves ``device_id`` (owned, or its claim is under way)."""
        return self._state.get(device_id, H.FOREIGN) is not H.FOREIGN

    def epoch(self, device_id: str) -> int | None:
        """The epoch of this node's last confirmed claim of ``device_id``, if any."""
        return self._epoch.get(device_id)

    @property
    def pending(self) -> bool:
        """Whether claims wait for the next batch."""
        return bool(self._claims)

    def owned(self) -> int:
        """How many devices this node holds (owned or claiming)."""
        return sum(1 for s in self._state.values() if s is not H.FOREIGN)

    def _feed(self, device_id: str, inp: HoldingInput, epoch: int | None = None, at: float | None = None) -> None:
        new, actions = transition(self.state(device_id), inp)
        for action in actions:
            if action is A.QUEUE_CLAIM:
                assert at is not None
                self._claims[device_id] = at
            elif action is A.KEEP_EPOCH:
                if epoch is not None:
                    self._epoch[device_id] = epoch
            elif action is A.FORGET:
                self._epoch.pop(device_id, None)
                self._claims.pop(device_id, None)
                self._forgotten.append(device_id)
                self.lost += 1
        if new is H.FOREIGN:
            self._state.pop(device_id, None)
        else:
            self._state[device_id] = new

    def load(self, owners: Iterable[tuple[str, Owner]]) -> None:
        """At start-up: the ``owner`` values of the stored devices; those naming this node are ours."""
        for device_id, owner in owners:
            if owner.node == self.node:
                self._feed(device_id, I.LOADED_OURS, owner.epoch)

    def registered(self, device_id: str, at: float) -> None:
        """A REGISTER of ``device_id`` was accepted here at wall time ``at``: claim it with the next batch."""
        self._feed(device_id, I.REGISTERED, at=at)

    def take_claims(self) -> dict[str, float]:
        """The claims to send with this batch (they leave the queue)."""
        claims, self._claims = self._claims, {}
        return claims

    def unsent(self, claims: dict[str, float]) -> None:
        """A batch failed: its claims go back to the queue, unless a newer REGISTER queued one since."""
        for device_id, at in claims.items():
            if self.state(device_id) is H.CLAIMING:
                self._claims.setdefault(device_id, at)

    def claimed(self, device_id: str, epoch: int) -> None:
        """A claim made ``epoch``."""
        if self.state(device_id) is H.CLAIMING and device_id in self._claims:
            # a newer REGISTER's claim is queued: ours now, and that one moves the epoch again
            self._epoch[device_id] = epoch
            return
        if self.state(device_id) is H.OWNED:
            self._epoch[device_id] = epoch  # a second claim of ours in one batch
            return
        self._feed(device_id, I.CLAIM_WON, epoch)

    def claim_lost(self, device_id: str) -> None:
        """A claim found a later REGISTER's claim there first."""
        if device_id in self._claims:
            return  # a newer claim is queued: it decides
        self._feed(device_id, I.CLAIM_LOST)

    def refused(self, device_id: str) -> None:
        """A write found another node's claim."""
        self._feed(device_id, I.WRITE_REFUSED)

    def accepted(self, device_id: str, epoch: int) -> None:
        """A write went through at ``epoch`` (ours, restored or adopted)."""
        state = self.state(device_id)
        if state is not H.FOREIGN:
            self._feed(device_id, I.WRITE_ACCEPTED, epoch)

    def take_forgotten(self) -> list[str]:
        """Devices this node has just lost to another node (each once)."""
        out, self._forgotten = self._forgotten, []
        return out


class NodeWatch:
    """Which nodes are dead: their ``node:<id>`` key seen missing for at least ``grace`` seconds.

    Args:
        grace: seconds a key must stay missing. A live node takes its key again within a third of
            its time to live when Redis lost it (restarted), so this exceeds that.
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._missing_since: dict[str, float] = {}

    def observe(self, present: dict[str, bool], now: float) -> list[str]:
        """Record which nodes' keys exist at monotonic ``now``; the nodes dead as of now, sorted."""
        for node, here in present.items():
            if here:
                self._missing_since.pop(node, None)
            else:
                self._missing_since.setdefault(node, now)
        for node in list(self._missing_since):
            if node not in present:
                del self._missing_since[node]  # gone from the set: swept by someone
        return sorted(n for n, since in self._missing_since.items() if now - since >= self.grace)


#: A Redis stream entry ID, ``<milliseconds>-<sequence>``, as a pair that orders as Redis does.
StreamId = tuple[int, int]


def parse_stream_id(text: str) -> StreamId:
    """``"1700000000000-3"`` as ``(1700000000000, 3)``.

    Raises:
        ValueError: not a stream entry ID.
    """
    ms, sep, seq = text.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f'not a stream entry ID ("<ms>-<seq>"): {text!r}')
    return int(ms), int(seq)


class Follow(StrEnum):
    """What a node does with the ``events`` stream on its next read."""

    READ = "read"  # read on from the cursor: nothing past it can have been lost
    RECONCILE = "reconcile"  # entries past the cursor may be gone: read every device row again


def follow_verdict(
    cursor: StreamId | None,
    *,
    boot_changed: bool,
    last: StreamId,
    deleted: StreamId | None,
    first: StreamId | None,
) -> Follow:
    """Whether a node whose cursor is ``cursor`` can read on in the stream, or must reconcile.

    Args:
        cursor: the last entry this node has read (``None``: nothing read yet, just started).
        boot_changed: Redis's ``boot`` token is not the one this node last saw (it lost its data).
        last: the stream's last generated ID (``(0, 0)`` for a stream that does not exist).
        deleted: the greatest ID deleted from it one by one (``XDEL``; ``None`` where Redis does
            not say, before 7.0). Trimming does not move it: ``first`` tells of that.
        first: its oldest entry, if any.
    """
    if cursor is None or boot_changed:
        return Follow.RECONCILE
    if last < cursor:
        # the stream went back: Redis restored an older dump, or the stream was made anew
        return Follow.RECONCILE
    if last == cursor:
        return Follow.READ  # nothing added since: nothing to miss, whatever was trimmed
    if deleted is not None and deleted > cursor:
        return Follow.RECONCILE
    # entries came after the cursor; if the oldest left is past it, some may have been trimmed
    # unread (or only the cursor's own entry went: a reconcile too many, never one too few; with
    # a stream thousands of entries long and read every second, that takes a flood)
    return Follow.RECONCILE if first is None or first > cursor else Follow.READ
