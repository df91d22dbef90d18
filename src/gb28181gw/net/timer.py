"""One event-loop timer re-armed to the earliest deadline of a sans-I/O core.

Cores keep many deadlines in one :class:`~gb28181gw.deadlines.TimerQueue`; the shell
needs just one ``call_at`` at the earliest of them. It is moved only when a new
deadline is earlier than the armed one: when it fires, the callback handles what is
due and arms it again.
"""

from __future__ import annotations

import asyncio
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
