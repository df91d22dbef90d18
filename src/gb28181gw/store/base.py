"""The store interface every backend implements, and the contract tests check.

The gateway keeps its working state in memory (the hot paths — keepalives,
registrations — never wait for storage) and writes through this interface
behind itself, batched. A backend therefore needs bulk upserts and loads more
than clever queries.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gb28181gw.access import Token
from gb28181gw.audit import Anchor, AuditEntry, AuditQuery, AuditRecord
from gb28181gw.gb.ledger import LedgerEntry
from gb28181gw.gb.model import Alarm, Ban, Channel, Device, Override, ShareEntry


def params_json(entry: AuditEntry) -> str:
    """How every backend stores an audit entry's parameters: JSON with sorted keys, text kept as text."""
    return json.dumps(dict(entry.params), ensure_ascii=False, sort_keys=True, default=str)


def stored_audit(seq: int, fields: Sequence[Any], digest: str) -> AuditRecord:
    """The record a backend stored: ``fields`` are time, actor, source, action, target, the
    parameters as :func:`params_json` wrote them, result and detail."""
    time, actor, source, action, target, params, result, detail = fields
    try:
        values = json.loads(params)
        if not isinstance(values, dict):
            raise ValueError("parameters are not an object")
    except ValueError as exc:
        # shown, not hidden: verify reports the record as altered, since its hash cannot match
        values = {"unreadable": f"{exc}: {str(params)[:200]}"}
    return AuditRecord(seq, AuditEntry(time, actor, source, action, target, values, result, detail), digest)


class Store(Protocol):
    """Async persistence of devices, channels, alarms, bans, superiors' shares and overrides, and the ledger.

    Attributes:
        location: where it is, for people (the SQLite file; the Redis URL without its password).
        writable: whether the last write reached the store (``/readyz`` fails while it is false).
        last_error: what the last failed write said ("" if none failed).
        write_failures: failed writes by kind: ``store`` (the store could not be written) or
            ``record`` (one batch held a value the store refuses, :class:`~gb28181gw.errors.StoreRecordError`).
    """

    location: str
    writable: bool
    last_error: str
    write_failures: Counter[str]

    async def open(self) -> None:
        """Open (creating and migrating if needed); raise StoreError with advice if it cannot."""

    async def close(self) -> None:
        """Finish pending writes and release the store."""

    async def load_devices(self) -> list[Device]:
        """Every device, for start-up."""

    async def get_device(self, device_id: str) -> Device | None:
        """One device, or ``None``."""

    async def save_devices(self, devices: Sequence[Device]) -> None:
        """Insert or replace these devices, atomically as one batch.

        It reads the devices before it first awaits: the caller goes on changing them.
        """

    async def delete_device(self, device_id: str) -> bool:
        """Remove a device and its channels; whether it existed."""

    async def count_devices(self) -> int:
        """How many devices are stored."""

    async def replace_channels(self, device_id: str, channels: Sequence[Channel]) -> None:
        """Make ``channels`` the device's whole channel list."""

    async def update_channels(self, device_id: str, upserts: Sequence[Channel], deletes: Sequence[str] = ()) -> None:
        """Insert or replace ``upserts`` and remove the channels ``deletes`` names, atomically.

        What a catalog event changes, without rewriting the device's other channels.
        """

    async def load_channels(self, device_id: str | None = None) -> list[Channel]:
        """Channels of one device, or of all."""

    async def save_alarms(self, alarms: Sequence[Alarm]) -> None:
        """Keep these alarms (the oldest beyond the backend's limit may be dropped)."""

    async def load_alarms(self, limit: int = 100, device_id: str | None = None) -> list[Alarm]:
        """The newest ``limit`` alarms, newest first, of all, or of one device: raised by it
        (its ``device_id``) or reported by it (``reported_by``: an NVR for its channels)."""

    async def save_bans(self, bans: Sequence[Ban], *, ended_before: float = 0.0) -> None:
        """Insert or replace these bans (by key), and delete every stored ban that ended before
        ``ended_before`` (wall-clock epoch seconds): the table never holds more than the active bans
        and the ones ended since the last write."""

    async def load_bans(self) -> list[Ban]:
        """Every stored ban, the one ending first first (ended ones too: the caller knows the time)."""

    async def delete_bans(self, keys: Sequence[str]) -> None:
        """Remove the bans with these keys (lifted by an operator); unknown keys are no error."""

    async def save_shares(self, entries: Sequence[ShareEntry]) -> None:
        """Keep these share/unshare entries; one for the same (upstream, entry) replaces it."""

    async def load_shares(self) -> list[ShareEntry]:
        """Every share/unshare entry of every superior, by superior and entry."""

    async def save_override(self, override: Override) -> None:
        """Insert or replace the override of (its upstream, its channel)."""

    async def delete_override(self, upstream: str, channel_id: str) -> bool:
        """Remove the override of ``channel_id`` for ``upstream``; whether there was one."""

    async def load_overrides(self) -> list[Override]:
        """Every override of every superior, by superior and channel."""

    async def save_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        """Insert or replace these ledger entries (by ID), atomically as one batch: an import is
        applied whole or not at all."""

    async def delete_ledger(self, ids: Sequence[str]) -> None:
        """Remove the ledger entries of these IDs; unknown IDs are no error."""

    async def load_ledger(self) -> list[LedgerEntry]:
        """Every ledger entry, by ID. Fields a newer gb28181gw wrote are kept as they are."""

    async def save_token(self, token: Token) -> None:
        """Insert or replace the token of ``token.name`` (a revocation is a save with ``revoked`` set)."""

    async def load_tokens(self) -> list[Token]:
        """Every token, revoked ones too, by name."""

    async def append_audit(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Append ``entries`` in order, numbered after the last record and chained to it
        (:func:`~gb28181gw.audit.chain_hash`), atomically: all of them or none."""

    async def load_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """The records ``query`` selects (:meth:`~gb28181gw.audit.AuditQuery.matches`), oldest first."""

    async def audit_chain(self, after: int = 0, limit: int = 10_000) -> list[AuditRecord]:
        """Up to ``limit`` records numbered above ``after``, in order: the chain read page by page."""

    async def audit_ends(self) -> tuple[Anchor, Anchor]:
        """Where the stored chain starts (the last record retention removed) and ends (the number
        and hash of the last record written)."""

    async def prune_audit(self, before: float) -> int:
        """Remove the records older than ``before`` (epoch seconds) from the front of the chain,
        keeping the last removed one as the anchor; how many were removed."""


# --- device ownership among nodes (issue 17) ---------------------------------------------


#: Numbers every notice this process makes, in the order made (see :attr:`DeviceNotice.seq`).
_notice_numbers = itertools.count(1)


@dataclass(frozen=True, slots=True)
class DeviceNotice:
    """A device going online or offline, for the ``events`` stream of several nodes.

    Attributes:
        device_id: the device.
        kind: ``online`` or ``offline``.
        reason: why it went offline ("" when online).
        seq: this process's number for the notice, rising in the order notices are made: a batch
            sent again (its answer lost, or some of its scripts run before a failure) carries the
            same numbers, and the store appends a notice only once (see ``store.ownership``).
    """

    device_id: str
    kind: str
    reason: str = ""
    seq: int = field(default_factory=_notice_numbers.__next__, compare=False)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a :meth:`Cluster.write` found.

    Attributes:
        lost: devices another node owns now: this node stops watching them and writes nothing more for them.
        resync: the shared store lost what this node had written (restarted empty, or this node could
            not write for a while): every device this node owns should be written again.
        back: devices online here that had been marked offline behind this node's back (a janitor's
            while this node could not reach Redis or was stopped): their online event is appended,
            and their rows should be written again.
    """

    lost: list[str] = field(default_factory=list)
    resync: bool = False
    back: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Learnt:
    """What other nodes changed since a node last asked (:meth:`Cluster.news`).

    Attributes:
        devices: the rows, as the shared store holds them now, of the devices other nodes (or
            their janitors) wrote about; with ``whole``, every stored device.
        whole: events may have been missed (the stream was trimmed past this node, Redis lost or
            set back its data, or the node just started): ``devices`` is every row there is.
        more: the read stopped at its limit of entries: more wait, to be asked for at once.
        removed: devices whose rows were deleted (a ``removed`` entry, and no row now): to drop.
        exact: with ``whole``, Redis kept its data all along (as far as this node saw): a device
            missing from ``devices`` was deleted. Not so once Redis lost data (restarted empty,
            set back to an older copy) while this node ran: rows no node writes again (a device
            provisioned but never registered) never come back, and are no delete.
    """

    devices: list[Device] = field(default_factory=list)
    whole: bool = False
    more: bool = False
    removed: list[str] = field(default_factory=list)
    exact: bool = False


class Cluster(Protocol):
    """Which devices this node serves, and the fenced write of their rows, deadlines and events.

    The registrar writes its devices through this rather than :meth:`Store.save_devices`. With one
    gateway on its store (:class:`SingleNode`, SQLite's case) every device is this node's and the
    rows go straight to the store; with several nodes on Redis (``store.ownership.RedisCluster``)
    every write is fenced by the device's ownership epoch (see :mod:`gb28181gw.gb.ownership`).

    Attributes:
        shared: several nodes may share the store: liveness deadlines and online/offline events
            are worth sending (False: only rows are written, and nothing else is kept for it).
        lost: devices another node took from this one.
        adoptions: devices of dead nodes this node's janitor handled, by result.
        errors: failed operations on the shared store, by operation.
    """

    shared: bool
    adoptions: Counter[tuple[str, ...]]
    errors: Counter[tuple[str, ...]]

    async def start(self, devices: Sequence[Device]) -> None:
        """Learn which of the loaded ``devices`` this node owns (and its background work)."""

    async def stop(self) -> None:
        """End background work."""

    @property
    def lost(self) -> int:
        """Devices another node took from this one."""
        ...

    def owns(self, device_id: str) -> bool:
        """Whether this node serves ``device_id`` (called for every MESSAGE: a dict lookup)."""
        ...

    def registered(self, device_id: str, at: float) -> None:
        """A REGISTER of ``device_id`` was accepted here at wall time ``at``: claim it with the next write."""

    @property
    def pending(self) -> bool:
        """Whether claims are waiting for the next write."""
        ...

    async def news(self) -> Learnt:
        """The rows of devices other nodes changed since the last call (the first call: every row).

        Raises:
            StoreError: the shared store could not be read (the next call goes on from the same place).
        """
        ...

    async def write(
        self, devices: Sequence[Device], deadlines: dict[str, float | None], notices: Sequence[DeviceNotice]
    ) -> WriteResult:
        """Write ``devices``' rows, this node's liveness ``deadlines`` (wall seconds; ``None``: not
        watched any more) and ``notices``, with the claims queued, in one batch.

        Raises:
            StoreError: the store could not be written: nothing of it counts as written (the
                caller keeps it all for the next attempt; the claims stay queued here).
            StoreRecordError: a row the store refuses (single node: the caller writes one by one).
        """
        ...


class SingleNode:
    """The :class:`Cluster` of a gateway alone on its store: every device is its own; rows only."""

    shared = False
    lost = 0  # nobody else to take a device

    def __init__(self, store: Store) -> None:
        self.store = store
        self.adoptions: Counter[tuple[str, ...]] = Counter()
        self.errors: Counter[tuple[str, ...]] = Counter()

    async def start(self, devices: Sequence[Device]) -> None:
        pass

    async def stop(self) -> None:
        pass

    def owns(self, device_id: str) -> bool:
        return True

    def registered(self, device_id: str, at: float) -> None:
        pass

    @property
    def pending(self) -> bool:
        return False

    async def news(self) -> Learnt:
        return Learnt()  # nobody else writes

    async def write(
        self, devices: Sequence[Device], deadlines: dict[str, float | None], notices: Sequence[DeviceNotice]
    ) -> WriteResult:
        await self.store.save_devices(devices)
        return WriteResult()


#: What :meth:`~gb28181gw.store.leases.RedisLeases.acquire` returns as the epoch of a take it
#: deferred (here, not in store.leases: importing that imports redis-py, ~4 MiB a process).
LEASE_DEFERRED = -1

_In = TypeVar("_In")
_Out = TypeVar("_Out")

#: Device rows :func:`device_rows` takes before giving the event loop a turn.
ROWS_PER_STEP = 1_000


async def device_rows(devices: Sequence[Device]) -> list[tuple[Any, ...]]:
    """``[d.row() for d in devices]``, taken on the event loop in steps of :data:`ROWS_PER_STEP`,
    everything else getting a turn between two steps.

    Why: the registrar writes every device's keepalive time every 30 s, and taking 10,000 rows in
    one go held the loop 25 ms (the records are spread over a large heap: a cache miss each), a
    stall every keepalive behind it waited out (p99 latency under load). Each row is its device
    as it was when its step ran; one changed since its row was taken is marked for the next batch
    by its owner, as it always was when it changed after the rows were taken.
    """
    return await in_steps(devices, Device.row)


async def in_steps(items: Sequence[_In], each: Callable[[_In], _Out | None]) -> list[_Out]:
    """``each`` of ``items``, its ``None`` answers left out, :data:`ROWS_PER_STEP` items between two
    turns of the event loop (what :func:`device_rows`, the registrar's record lookups and the Redis
    store's decoding of every device row share: thousands of devices in one go hold the loop)."""
    out: list[_Out] = []
    for start in range(0, len(items), ROWS_PER_STEP):
        if start:
            await asyncio.sleep(0)
        out.extend([x for x in map(each, items[start : start + ROWS_PER_STEP]) if x is not None])
    return out
