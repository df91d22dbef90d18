"""One event-loop timer re-armed to the earliest deadline of a sans-I/O core.

Cores keep many deadlines in one :class:`~gb28181gw.deadlines.TimerQueue`; the shell
needs just one ``call_at`` at the earliest of them. It is moved only when a new
deadline is earlier than the armed one: when it fires, the callback handles what is
due and arms it again.

:class:`LagProbe` measures how long the loop stalls (a metric: ``gb28181gw_event_loop_lag_seconds``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class EarliestTimer:
    """Calls ``callback`` at the earliest time it was asked to, once."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self.when = 0.0

    @property
    def armed(self) -> bool:
        """Whether a call is pending."""
        return self._handle is not None

    def arm(self, when: float | None) -> None:
        """Make sure the callback runs no later than ``when`` (``None``: nothing to do)."""
        if when is None or (self._handle is not None and self.when <= when):
            return
        if self._handle is not None:
            self._handle.cancel()
        self.when = when
        self._handle = asyncio.get_running_loop().call_at(when, self._fire)

    def cancel(self) -> None:
        """Drop the pending call."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._callback()


class LagProbe:
    """Measures the event loop's stalls: how late a callback due every ``interval`` runs.

    A handler that blocks the loop (a garbage collection, a long sweep, a synchronous write)
    delays every datagram behind it; this is the one number that shows it from inside.
    ``observe`` gets each lateness in seconds (0 when on time). The lateness is read with
    ``time.perf_counter`` against the previous run: uvloop's ``loop.time()`` is cached per
    loop iteration in whole milliseconds, so it cannot see the iteration that stalled.
    """

    def __init__(self, interval: float, observe: Callable[[float], None]) -> None:
        self.interval = interval
        self._observe = observe
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        """Start probing on the running loop."""
        self.stop()
        self._due = time.perf_counter() + self.interval
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def stop(self) -> None:
        """Stop probing."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = time.perf_counter()
        # a timer may run up to a millisecond early (uvloop rounds): early is on time
        self._observe(max(now - self._due, 0.0))
        self._due = now + self.interval
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)
