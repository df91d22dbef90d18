"""The audit trail: who did what, recorded without ever making the action wait for the store.

Services call :meth:`AuditService.record` where an action is carried out (or refused); the actor
comes from :data:`ACTOR`, a context variable the admin API sets for each request from its token
(:func:`acting`), the cascade services set for a superior's request, and which otherwise names
the gateway itself. Records are queued and written in order by one task, batched; a record the
store could not take stays queued (up to :data:`MAX_UNWRITTEN`) and is written when it can be.
The store numbers and chains them (``gb28181gw.audit``), so one writer per store keeps the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from gb28181gw.audit import (
    GATEWAY,
    Action,
    Actor,
    Anchor,
    AuditEntry,
    AuditQuery,
    AuditRecord,
    ChainProblem,
    Result,
    redact,
    storable,
    verify,
)
from gb28181gw.errors import RequestRefused, StoreError, StoreRecordError
from gb28181gw.metrics import AUDIT_RECORDS, AUDIT_UNWRITTEN, Metrics
from gb28181gw.stopping import check_cancelled, stop_task
from gb28181gw.store.base import Store

__all__ = ["ACTOR", "MAX_UNWRITTEN", "AuditService", "ChainReport", "acting", "audited", "result_of"]

log = logging.getLogger("gb28181gw.audit")

#: Who the current task acts for (set per admin API request, per superior's request).
ACTOR: ContextVar[Actor] = ContextVar("gb28181gw_actor", default=GATEWAY)
#: Records held while the store cannot take them; past it the oldest are dropped, counted and logged.
MAX_UNWRITTEN = 100_000
#: Seconds between retention sweeps.
_SWEEP_INTERVAL = 3600.0
_DAY = 86_400.0
#: Records read per page while verifying: the loop is held while a page is hashed (SIP waits),
#: 14 ms at most at 1,000 against 35-41 ms at 10,000, for a check 30 % slower (bench_audit.py).
_PAGE = 1_000


@contextlib.contextmanager
def acting(actor: Actor) -> Iterator[None]:
    """Run the block (and the tasks it starts) on behalf of ``actor``."""
    token = ACTOR.set(actor)
    try:
        yield
    finally:
        ACTOR.reset(token)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of checking the whole stored chain.

    Attributes:
        records: how many records were checked.
        anchor: where the stored chain starts (records before it were removed by retention).
        head_seq, head_hash: the last record's number and hash as the gateway stored them when it
            wrote it: copy them elsewhere to detect a rollback.
        problems: every break found, empty if the chain is whole.
    """

    records: int
    anchor: Anchor
    head_seq: int
    head_hash: str
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "anchor": {"seq": self.anchor.seq, "hash": self.anchor.hash},
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "problems": [{"seq": p.seq, "problem": p.problem} for p in self.problems],
        }


class AuditService:
    """Records actions in the store's audit trail, lists them and checks the chain.

    Args:
        store: where records are kept.
        metrics: counts records by action and result, and the unwritten ones.
        retention_days: records older than this are removed (a daily sweep).
        clock: wall-clock epoch seconds (tests pass a fake one).
    """

    def __init__(
        self,
        store: Store,
        metrics: Metrics | None = None,
        *,
        retention_days: int = 366,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.retention = retention_days * _DAY
        self._clock = clock
        self._pending: deque[AuditEntry] = deque()
        self._wake = asyncio.Event()
        # flush() waits for the records queued before it, not for an empty queue (a busy gateway
        # may never have one): records queued in all, and of those written, dropped or left out
        self._queued = 0
        self._settled = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failing = False  # the store refused the last write: flush() does not wait for it
        self._tasks: list[asyncio.Task[None]] = []
        self._writing = False  # the writer is waiting for the store to take a batch
        self._stopping = False
        self.dropped = 0
        self.unstorable = 0  # records the store refused (the store itself fine): left out, logged
        self._counts = metrics.counter(AUDIT_RECORDS) if metrics else None
        if metrics is not None:
            metrics.gauge(AUDIT_UNWRITTEN, lambda: len(self._pending))

    @property
    def unwritten(self) -> int:
        """Records queued that the store has not taken yet."""
        return len(self._pending)

    # --- recording ----------------------------------------------------------------------

    def record(
        self,
        action: Action,
        target: str = "",
        params: Mapping[str, Any] | None = None,
        *,
        result: Result = Result.OK,
        detail: str = "",
        actor: Actor | None = None,
    ) -> AuditEntry:
        """Queue one record (never blocks); the actor is :data:`ACTOR` unless given."""
        who = actor or ACTOR.get()
        entry = AuditEntry(
            self._clock(),
            storable(who.name),
            storable(who.source),
            action,
            storable(target[:1000]),
            redact(params or {}),
            result,
            storable(detail[:1000]),
        )
        if len(self._pending) >= MAX_UNWRITTEN:
            self._pending.popleft()
            self.dropped += 1
            self._settle(1)
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("audit records dropped: the store has not taken them", extra={"dropped": self.dropped})
        self._pending.append(entry)
        self._queued += 1
        if self._counts is not None:
            self._counts[str(action), str(result)] += 1
        self._wake.set()
        return entry

    async def start(self) -> None:
        """Start the writer and the retention sweep."""
        self._tasks = [
            asyncio.create_task(self._writer(), name="audit-writer"),
            asyncio.create_task(self._sweeper(), name="audit-retention"),
        ]

    async def stop(self) -> None:
        """Write what is queued (as far as the store takes it) and stop."""
        self._stopping = True
        self._wake.set()
        # a writer in the middle of a batch finishes it and the rest, then ends by itself:
        # cancelled, its batch would stay queued though the store has it
        finishing = [t for t in self._tasks if t.get_name() == "audit-writer" and self._writing]
        stopping = [t for t in self._tasks if t not in finishing]
        for task in stopping:
            task.cancel()  # before the writer, woken above, can start a batch
        for task in stopping:
            # not just awaited: a sweep cancelled as its command is sent runs on (stopping.py)
            await stop_task(task, what=task.get_name())
        for task in finishing:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        try:
            await self._write_pending()
        except Exception as exc:  # a defect too: the services stopped after this one must still stop
            log.error(
                "audit records left unwritten at shutdown",
                extra={"records": len(self._pending), "error": str(exc) or type(exc).__name__},
                exc_info=not isinstance(exc, StoreError),
            )
        finally:
            self._release(self._queued)

    async def flush(self) -> None:
        """Wait until everything recorded so far is written (or the store refused it)."""
        if self._tasks:
            if self._settled < self._queued and not self._failing:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append((self._queued, waiter))
                await waiter
        else:
            await self._write_pending()

    async def _writer(self) -> None:
        backoff = 0.5
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._write_pending()
                backoff, self._failing = 0.5, False
            except Exception as exc:
                # the store refusing, or a defect: either way the writer lives on (dead, it would
                # leave every later record unwritten and every audit query waiting in flush())
                self._failing = True
                if self._stopping:
                    return
                if isinstance(exc, StoreError):
                    log.warning(
                        "audit records not written yet", extra={"records": len(self._pending), "error": str(exc)}
                    )
                else:
                    log.exception("audit writer failed; its records stay queued", extra={"records": len(self._pending)})
                self._release(self._queued)  # flush() must not hang on a broken store
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                self._wake.set()
            if self._stopping:
                return

    async def _write_pending(self) -> None:
        while self._pending:
            batch = list(itertools.islice(self._pending, 1000))
            dropped = self.dropped
            self._writing = True  # stop() does not cancel the writer now: the batch would be written twice
            try:
                try:
                    await self.store.append_audit(batch)
                except StoreRecordError:
                    await self._write_one_by_one(batch)
            finally:
                self._writing = False
            # records dropped from a full queue meanwhile came from this batch's front (and were written)
            written = max(0, len(batch) - (self.dropped - dropped))
            for _ in range(written):
                self._pending.popleft()
            self._settle(written)

    def _settle(self, count: int) -> None:
        self._settled += count
        self._release(self._settled)

    def _release(self, upto: int) -> None:
        """Let the flushes waiting for records up to ``upto`` go on."""
        waiting = []
        for target, waiter in self._waiters:
            if target > upto:
                waiting.append((target, waiter))
            elif not waiter.done():
                waiter.set_result(None)
        self._waiters = waiting

    async def _write_one_by_one(self, batch: list[AuditEntry]) -> None:
        # a record the store refuses (the store itself is fine) must not hold back every later one
        for entry in batch:
            try:
                await self.store.append_audit([entry])
            except StoreRecordError as exc:
                self.unstorable += 1
                log.error(
                    "an audit record the store cannot hold was left out",
                    extra={"action": str(entry.action), "target": entry.target, "error": str(exc)},
                )

    # --- reading ------------------------------------------------------------------------

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        """The records ``query`` selects, including every one recorded before this call."""
        await self.flush()
        return await self.store.load_audit(query)

    async def verify(self) -> ChainReport:
        """Check the whole stored chain, page by page."""
        await self.flush()
        anchor, head = await self.store.audit_ends()
        problems: list[ChainProblem] = []
        first = await self.store.audit_chain(0, 1)
        if first and first[0].seq <= anchor.seq:
            # retention deletes what it anchors past: records left behind the anchor were put out
            # of the check's reach, free to be altered
            kept = (
                f"record {anchor.seq} is"
                if first[0].seq == anchor.seq
                else f"records {first[0].seq} to {anchor.seq} are"
            )
            problems.append(
                ChainProblem(
                    first[0].seq,
                    f"{kept} kept behind the chain's anchor (record {anchor.seq}): the anchor was moved by hand",
                )
            )
        checked, after, previous = 0, anchor.seq, anchor
        while True:
            page = await self.store.audit_chain(after, _PAGE)
            if not page:
                break
            problems += verify(page, previous)
            checked += len(page)
            after = page[-1].seq
            previous = Anchor(page[-1].seq, page[-1].hash)
        if head.seq > after:
            missing = f"record {after + 1}" if head.seq == after + 1 else f"records {after + 1} to {head.seq}"
            problems.append(ChainProblem(after + 1, f"{missing} missing from the end"))
        elif head.seq < after:
            added = f"record {head.seq + 1} was" if after == head.seq + 1 else f"records {head.seq + 1} to {after} were"
            problems.append(ChainProblem(head.seq + 1, f"{added} added outside the gateway"))
        elif previous.hash != head.hash:
            # the records agree with each other but not with the head the gateway wrote: they were
            # rewritten and re-hashed by hand (or the head was edited)
            problems.append(
                ChainProblem(head.seq, f"record {head.seq} does not match the stored head's hash: rewritten")
            )
        return ChainReport(checked, anchor, head.seq, head.hash, problems)

    # --- retention ----------------------------------------------------------------------

    async def prune(self) -> int:
        """Remove records past the retention now; the removal is itself recorded."""
        await self.flush()
        removed = await self.store.prune_audit(self._clock() - self.retention)
        if removed:
            self.record(
                Action.AUDIT_PRUNE,
                params={"removed": removed, "retention_days": round(self.retention / _DAY)},
                actor=GATEWAY,
            )
            log.info("audit records past their retention removed", extra={"removed": removed})
        return removed

    async def _sweeper(self) -> None:
        while True:
            check_cancelled()
            try:
                await self.prune()
            except StoreError as exc:
                log.warning("audit retention sweep failed", extra={"error": str(exc)})
            await asyncio.sleep(_SWEEP_INTERVAL)


#: Statuses of a refusal (the request could not be carried out as asked: nothing was done),
#: as opposed to a failure of the device or the gateway.
_REFUSED_STATUSES = frozenset({400, 401, 403, 404, 409, 480})


def result_of(exc: BaseException) -> Result:
    """Whether ``exc`` refused an action (nothing was done) or the action failed."""
    if isinstance(exc, RequestRefused):
        return Result.REFUSED
    status = getattr(exc, "status", None)
    return Result.REFUSED if status in _REFUSED_STATUSES else Result.FAILED


#: Actions that are upkeep when the gateway does them on its own (see :func:`audited`).
_UPKEEP = frozenset({Action.DEVICE_QUERY, Action.DEVICE_CONTROL})


@contextlib.contextmanager
def audited(
    audit: AuditService | None, action: Action, target: str = "", params: Mapping[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """Record ``action`` once the block ends: ok, or refused / failed with the exception's words
    (re-raised). The block may add what came of it to the yielded parameters.

    The gateway's own upkeep is not recorded: the catalog query after each registration, the
    keyframe asked for when a viewer joins a stream. A site of 10,000 cameras would otherwise
    write tens of thousands of records a day that no one asked for, burying the ones someone did.
    """
    if action in _UPKEEP and ACTOR.get() is GATEWAY:
        audit = None
    kept = dict(params or {})
    try:
        yield kept
    except Exception as exc:
        if audit is not None:
            audit.record(action, target, kept, result=result_of(exc), detail=str(exc))
        raise
    if audit is not None:
        audit.record(action, target, kept)
