"""Background work a service starts and must be able to cancel when it stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

log = logging.getLogger("gb28181gw.tasks")


class TaskSet:
    """Holds the tasks it spawns until they finish (the loop keeps only weak references)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run ``coro`` in the background."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # nobody awaits these tasks: an error they end with is told here or never
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error(
                "background task failed",
                exc_info=exc,
                extra={"task": getattr(task.get_coro(), "__qualname__", task.get_name())},
            )

    def cancel(self) -> None:
        """Cancel every task still running."""
        for task in list(self._tasks):
            task.cancel()

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the running tasks (and any they spawn) to finish."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._tasks), timeout=left)

    def __len__(self) -> int:
        return len(self._tasks)
