"""Suite-wide guard: a test that hangs fails CI with the stacks of its asyncio tasks, not a stalled run.

A hung asyncio test shows only its loop idle in epoll in the threads' stacks; what it waits for is in
its tasks. So a watchdog thread, a little before the test's limit (`timeout` in pyproject.toml),
prints every unfinished task and where its coroutine is suspended, then cancels those tasks: the test
fails with CancelledError and its fixtures are torn down, and the run goes on. A test that the
cancelling lets end as if nothing happened (a close() that took the cancellation for a task's it
awaits, and returned) fails all the same: its run was hung, and a hang that passes is seen by nobody.
If that does not end it either, pytest-timeout (thread method) ends the worker at the limit. That is the last resort only:
xdist (`--dist loadfile`) gives a crashed worker's file, the hung test included, to a new worker, and
does so up to eight times.

Second guard: no process an asyncio test starts outlives it. A SIPp device left running by a test
that failed before its ``finally`` reached it was garbage-collected during a later test of the same
worker, and that test failed with the ResourceWarnings of a stranger's process (CI, 2026-12-03). So
every asyncio test records the processes it starts (``asyncio.create_subprocess_exec``); those still
running at its end are killed, their pipes drained and closed, and named on stderr.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import threading
from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest

# The suite tests the .py sources, whatever `gb28181gw accelerate` built on this machine (tests that
# replace a method on an instance cannot on a compiled class); tests/test_compiled.py runs the
# quick path's tests against a build of its own. GB28181GW_COMPILED=on runs any test file compiled.
os.environ.setdefault("GB28181GW_COMPILED", "off")

from gb28181gw.stopping import where  # noqa: E402

DUMP_AHEAD = 30.0  # seconds before pytest-timeout's own dump and exit
_HUNG = pytest.StashKey[str]()  # set by the watchdog: why the phase running then fails


def _limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    if marker is not None and "timeout" in marker.kwargs:
        return float(marker.kwargs["timeout"])
    return float(item.config.getini("timeout") or 0)


def _unfinished_tasks() -> list[asyncio.Task[Any]]:
    # Read from this thread while the loop may run: the WeakSet can change under iteration, so retry.
    for _ in range(10):
        try:
            return [task for task in list(asyncio.tasks._all_tasks) if not task.done()]  # type: ignore[attr-defined]
        except RuntimeError:
            continue
    return []


def _dump_tasks(item: pytest.Item, limit: float) -> None:
    nodeid = item.nodeid
    item.stash[_HUNG] = (
        f"{nodeid} hung: still running after {limit - DUMP_AHEAD:.0f} s, its asyncio tasks were cancelled by "
        "tests/conftest.py's watchdog (their stacks are in the captured stderr)"
    )
    out = sys.__stderr__
    if out is None:
        return
    tasks = _unfinished_tasks()
    print(
        f"\n+++ {nodeid} still running after {limit - DUMP_AHEAD:.0f} s: {len(tasks)} unfinished asyncio tasks",
        file=out,
    )
    for task in tasks:
        print(f"--- {task!r}", file=out)
        try:
            task.print_stack(limit=20, file=out)
            # print_stack shows the task's outermost coroutine only: the awaits below it too
            print(f"    awaiting: {where(task)}", file=out)
        except Exception as exc:  # a task finishing while it is printed
            print(f"    (stack unavailable: {exc!r})", file=out)
    out.flush()
    for loop in {task.get_loop() for task in tasks}:
        if not loop.is_closed():
            loop.call_soon_threadsafe(_cancel_all, loop, nodeid)


def _cancel_all(loop: asyncio.AbstractEventLoop, nodeid: str) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel(f"{nodeid} hung: cancelled by tests/conftest.py's watchdog")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    limit = _limit(item)
    timer = None
    if limit > DUMP_AHEAD:
        timer = threading.Timer(limit - DUMP_AHEAD, _dump_tasks, args=(item, limit))
        timer.daemon = True
        timer.start()
    try:
        return (yield)
    finally:
        if timer is not None:
            timer.cancel()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    hung = item.stash.get(_HUNG, "")
    if hung and isinstance(report, pytest.TestReport):
        del item.stash[_HUNG]  # the phase that hung fails; the next ones are told as they are
        if report.passed:
            report.outcome = "failed"
            report.longrepr = hung
    return report


_REAPER = "_no_process_outlives_its_test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # asyncio tests only: the fixture needs the test's own loop, which a plain test does not have
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "function", None)) and isinstance(item, pytest.Function):
            item.fixturenames.insert(0, _REAPER)


@pytest.fixture(name=_REAPER)
async def _no_process_outlives_its_test(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    started: list[tuple[asyncio.subprocess.Process, tuple[object, ...]]] = []
    original = asyncio.create_subprocess_exec

    async def recording(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await original(*args, **kwargs)
        started.append((proc, args))
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    yield
    for proc, args in started:
        if proc.returncode is not None:
            continue
        print(f"\n+++ {request.node.nodeid} left {' '.join(map(str, args))[:200]} running: killed", file=sys.stderr)
        proc.kill()
        try:
            await asyncio.wait_for(proc.communicate(), 10)
        except (TimeoutError, ProcessLookupError, ValueError):
            pass  # a pipe already read by the test (ValueError) or a process that will not die: it was told
