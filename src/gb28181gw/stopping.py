"""Stopping a background task within a bounded time, although it may lose its cancellation.

``task.cancel()`` followed by ``await task`` waits for as long as the task runs on, and a task can
run on after ``cancel()``: on Python 3.11 ``asyncio.wait_for`` returns its inner result when it is
cancelled just as that result is ready, the cancellation lost (gh-86296, fixed by 3.12's rewrite),
and redis-py sends every command through ``wait_for`` (``Connection.send_packed_command`` with a
``socket_timeout``). A loop cancelled in that instant (a node claim's heartbeat renewing, a janitor
round) goes on as if nothing had happened, sleeps, renews again, and whoever awaits it after the
cancel waits for ever: how two CI runs hung, each in a test's shutdown (``RedisStore.close``).

Two halves, both needed: a loop calls :func:`check_cancelled` every round, so that a lost
cancellation ends it at its next round rather than never (``Task.cancelling()`` still counts the
request that was lost); :func:`stop_task` cancels again while the task runs on, and gives up after a
deadline, logging where the task is, so that shutting down always goes on.
It is a shell helper (asyncio), kept apart so that ``store`` and ``services`` both may use it.

:func:`stop_reading` and :func:`stop_writing` end a file descriptor's watch by the loop, for the
modules ``gb28181gw accelerate`` compiles: typeshed says ``remove_reader`` returns a ``bool``, uvloop
returns ``None``, and mypyc's code for a call on a loop typed ``AbstractEventLoop | None`` (narrowed)
checks the result against that type, even a result nobody reads: the compiled relay's ``close_all``
raised ``TypeError`` under uvloop. Called here, interpreted, the result is never looked at.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("gb28181gw.tasks")

#: Seconds :func:`stop_task` waits for a task, in all, by default.
STOP_TIMEOUT = 3.0
#: Times :func:`stop_task` cancels a task that runs on (its wait split evenly between them).
ROUNDS = 3


def stop_reading(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """``loop.remove_reader(fd)``, whatever the loop returns (see the module)."""
    loop.remove_reader(fd)


def stop_writing(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """``loop.remove_writer(fd)``, whatever the loop returns (see the module)."""
    loop.remove_writer(fd)


async def stop_task(task: asyncio.Task[Any], *, timeout: float = STOP_TIMEOUT, what: str = "") -> bool:
    """Cancel ``task`` and wait until it ends, at most ``timeout`` seconds; whether it ended.

    It is cancelled again at each of :data:`ROUNDS` rounds it is still running: one cancellation
    lost (see the module) is made good by the next, at the task's next await. A task that ends
    with an error has it logged (its owner stops it: nobody else would see it); one still running
    at the end is logged with where it is and left, and the caller goes on.
    """
    name = what or task.get_name()
    for _ in range(ROUNDS):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=timeout / ROUNDS)
    if not task.done():
        log.warning(
            "task still running after being cancelled; left behind",
            extra={"task": name, "timeout": timeout, "where": where(task)},
        )
        return False
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("task failed before it was stopped", exc_info=exc, extra={"task": name})
    return True


def check_cancelled() -> None:
    """Raise :class:`asyncio.CancelledError` in a task whose cancellation was requested and lost.

    A loop calls it every round: once a cancellation has been delivered, the task either ended or
    someone caught it, and only an uncancel() (asyncio's own timeouts make theirs) takes the request
    back; a request still counted is one dropped on the way (see the module).

    Raises:
        asyncio.CancelledError: this task was cancelled and runs on.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError(f"{task.get_name()} was cancelled; the cancellation had been lost")


def where(task: asyncio.Task[Any]) -> str:
    """Where ``task`` is suspended: each coroutine of its await chain, outermost first (``Task.get_stack``
    gives only the outermost)."""
    places = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            places.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " -> ".join(places) if places else repr(task)
