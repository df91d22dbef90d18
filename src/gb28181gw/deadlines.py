"""One structure for every deadline: a timer queue with O(1) scheduling.

Most deadlines in a SIP/GB28181 stack share a handful of durations (RFC 3261
timers derived from T1/T2/T4, keepalive timeouts, registration expiries of a
few common values). Entries with the same delay expire in the order they were
scheduled, so each delay gets a FIFO queue and the earliest deadline is the
smallest head of a few queues — no heap of millions of entries, no task or
timer per object. Cancellation is lazy: a cancelled entry is skipped when it
reaches the head.

Time is passed in (``now``, monotonic seconds); this module reads no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Deadline(Generic[T]):
    """A scheduled deadline; :meth:`cancel` it to stop it from firing."""

    __slots__ = ("when", "item", "alive")

    def __init__(self, when: float, item: T) -> None:
        self.when = when
        self.item = item
        self.alive = True

    def cancel(self) -> None:
        """Stop this deadline from firing (it is dropped when reached)."""
        self.alive = False

    def __repr__(self) -> str:
        return f"<Deadline {self.when:.3f} {self.item!r}{'' if self.alive else ' cancelled'}>"


class TimerQueue(Generic[T]):
    """Deadlines bucketed by delay; each bucket is a FIFO.

    An entry never fires before its time, and at most ``resolution`` after it: a bucket holds
    delays within a resolution of each other in the order they were scheduled, so an entry may
    wait behind an earlier-scheduled one due up to that much later (tests/core/test_deadlines.py).

    Args:
        resolution: delays are rounded to this many seconds to pick a bucket, so that float
            noise does not create a bucket per entry (each earliest-deadline search walks every
            bucket); also the bound on how late an entry may fire.
    """

    def __init__(self, *, resolution: float = 0.001) -> None:
        self._buckets: dict[float, deque[Deadline[T]]] = {}
        self._resolution = resolution

    def schedule(self, now: float, delay: float, item: T) -> Deadline[T]:
        """Schedule ``item`` to be due at ``now + delay``."""
        key = round(delay / self._resolution) * self._resolution
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = deque()
        entry = Deadline(now + delay, item)
        bucket.append(entry)
        return entry

    def next_deadline(self) -> float | None:
        """When the earliest live entry is due, or ``None`` if nothing is scheduled."""
        best: float | None = None
        empty: list[float] = []
        for key, bucket in self._buckets.items():
            while bucket and not bucket[0].alive:
                bucket.popleft()
            if not bucket:
                empty.append(key)
                continue
            when = bucket[0].when
            if best is None or when < best:
                best = when
        for key in empty:
            del self._buckets[key]
        return best

    def pop_due(self, now: float) -> Iterator[T]:
        """Yield and remove every live item due at or before ``now``, earliest bucket heads first.

        Items scheduled while iterating are seen if they are already due.
        """
        while True:
            best_bucket: deque[Deadline[T]] | None = None
            best_when = now
            for bucket in self._buckets.values():
                while bucket and not bucket[0].alive:
                    bucket.popleft()
                if bucket and bucket[0].when <= best_when:
                    best_when = bucket[0].when
                    best_bucket = bucket
            if best_bucket is None:
                return
            entry = best_bucket.popleft()
            entry.alive = False
            yield entry.item

    def __len__(self) -> int:
        """Entries held, cancelled ones not yet dropped included."""
        return sum(len(b) for b in self._buckets.values())
