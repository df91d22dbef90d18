"""Stopping background tasks ends within a bound, even when a task lost its cancellation (stopping.py).

Two CI runs hung in the shutdown of tests on the Redis store: ``RedisStore.close`` cancelled the
node claim's heartbeat and awaited it, and the heartbeat never ended. On Python 3.11 redis-py sends
a command through ``asyncio.wait_for``, which, cancelled once its inner send is done but before it
has resumed, returns the result and drops the cancellation: the heartbeat went on renewing and
``close()`` waited for ever. The tests here put a real loop (a real redis-server) in exactly that
instant, found by stepping the event loop one turn at a time, and close then; before the fix the
close never returned.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from gb28181gw.stopping import check_cancelled, stop_task, where
from tests.redis_server import RedisServer, module_server

#: Seconds a close may take here before the test calls it hung (it takes milliseconds; a lost
#: cancellation used to make it endless).
HUNG = 20.0
#: Turns of the event loop to look for the instant, at most.
TURNS = 200_000


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from module_server(tmp_path_factory)


def _sent_not_resumed(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` is suspended in an ``asyncio.wait_for`` whose inner future is done but which
    has not resumed yet: the instant a cancellation is lost on Python 3.11."""
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None)
        if frame is not None and frame.f_code.co_name == "wait_for" and "asyncio" in frame.f_code.co_filename:
            inner = frame.f_locals.get("fut")
            return isinstance(inner, asyncio.Future) and inner.done()
        coro = getattr(coro, "cr_await", None)
    return False


async def _run_for_a_while(closing: Any) -> asyncio.Task[None]:
    """``closing`` (a close or stop coroutine) run as a task, given :data:`HUNG` seconds to end. Not
    ``wait_for``: a timed-out wait_for cancels it, and the old close() took that cancellation for
    its heartbeat's and returned as if it had ended."""
    task: asyncio.Task[None] = asyncio.get_running_loop().create_task(closing)
    await asyncio.wait({task}, timeout=HUNG)
    return task


async def _unhang(loop_task: asyncio.Task[Any], closing: asyncio.Task[None] | None) -> None:
    """After a hang (before the fix): end the loop task, so that the close waiting for it ends too."""
    if not loop_task.done():
        loop_task.cancel()
    if closing is not None:
        await asyncio.wait({closing}, timeout=HUNG)


async def _until_sent_not_resumed(task: asyncio.Task[Any]) -> None:
    """Step the loop one turn at a time until ``task`` is in the instant above (skip where Python's
    wait_for has none: 3.12 and later do not lose a cancellation there)."""
    for _ in range(TURNS):
        await asyncio.sleep(0)
        if _sent_not_resumed(task):
            return
        assert not task.done(), task
    if sys.version_info >= (3, 12):
        pytest.skip("this Python's asyncio.wait_for does not lose a cancellation")
    pytest.fail(f"{task!r} never was between its command's send and its wait_for's return")


async def test_a_store_closed_as_its_claim_renewal_sends_ends(redis: RedisServer) -> None:
    from gb28181gw.store.redis import RedisStore

    redis.flush()
    # renewed every 10 ms: a renewal's command is sent soon
    store = RedisStore(redis.url, node="n1", claim_ttl=0.03)
    await store.open()
    heartbeat = store._heartbeat
    assert heartbeat is not None
    closing = None
    try:
        await _until_sent_not_resumed(heartbeat)
        closing = await _run_for_a_while(store.close())
        assert closing.done(), f"close() hung: the heartbeat runs on, {where(heartbeat)}"
        closing.result()
        assert heartbeat.done()
        assert redis.command(b"EXISTS", b"gbgw:node:n1") == b":0"  # released, not renewed after close
    finally:
        await _unhang(heartbeat, closing)
        if closing is None:
            await store.close()


async def test_a_cluster_stopped_as_its_janitor_sends_ends(redis: RedisServer) -> None:
    from gb28181gw.store.ownership import RedisCluster
    from gb28181gw.store.redis import RedisStore

    redis.flush()
    store = RedisStore(redis.url, node="n1")
    await store.open()
    cluster = RedisCluster(store, "n1", janitor_interval=0.001)  # a round (two commands) every ms
    try:
        await cluster.start([])
        janitor = cluster._janitor
        assert janitor is not None
        stopping = None
        try:
            await _until_sent_not_resumed(janitor)
            stopping = await _run_for_a_while(cluster.stop())
            assert stopping.done(), f"stop() hung: the janitor runs on, {where(janitor)}"
            stopping.result()
            assert janitor.done()
        finally:
            await _unhang(janitor, stopping)
    finally:
        await store.close()


# --- stop_task itself, on tasks that lose or ignore their cancellation ------------------------


async def _loses_one_cancellation(rounds: list[int]) -> None:
    lost = False
    while True:
        try:
            await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True  # as wait_for does on 3.11: the cancellation is gone, the loop goes on
        rounds.append(1)


async def test_a_task_that_lost_its_cancellation_is_cancelled_again_and_ends() -> None:
    rounds: list[int] = []
    task = asyncio.get_running_loop().create_task(_loses_one_cancellation(rounds))
    while not rounds:
        await asyncio.sleep(0.001)
    assert await stop_task(task, timeout=3.0)
    assert task.cancelled()


async def _checks_each_round(rounds: list[int]) -> None:
    lost = False
    while True:
        check_cancelled()
        try:
            await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True
        rounds.append(1)


async def test_a_loop_that_checks_each_round_ends_after_one_lost_cancellation() -> None:
    rounds: list[int] = []
    task = asyncio.get_running_loop().create_task(_checks_each_round(rounds))
    while not rounds:
        await asyncio.sleep(0.001)
    task.cancel()  # once: lost, then seen at the top of the next round
    await asyncio.wait({task}, timeout=HUNG)
    assert task.cancelled()


async def _ignores_cancellation(stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            continue


async def test_a_task_that_will_not_end_is_left_behind_with_a_warning_and_stopping_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(_ignores_cancellation(stop))
    await asyncio.sleep(0)
    try:
        with caplog.at_level(logging.WARNING, logger="gb28181gw.tasks"):
            assert not await stop_task(task, timeout=0.3, what="the stubborn one")
        (warning,) = [r for r in caplog.records if r.name == "gb28181gw.tasks"]
        assert getattr(warning, "task", None) == "the stubborn one"
        assert "_ignores_cancellation" in getattr(warning, "where", "")  # where it was: to find the culprit
    finally:
        stop.set()
        await task


async def test_a_task_that_failed_is_logged_and_counts_as_stopped(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("broken")

    task = asyncio.get_running_loop().create_task(fails())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="gb28181gw.tasks"):
        assert await stop_task(task, what="the broken one")
    (error,) = [r for r in caplog.records if r.name == "gb28181gw.tasks"]
    assert error.exc_info is not None and "broken" in str(error.exc_info[1])


async def test_where_names_each_coroutine_a_task_waits_in() -> None:
    async def inner() -> None:
        await asyncio.sleep(3600)

    async def outer() -> None:
        await inner()

    task = asyncio.get_running_loop().create_task(outer())
    await asyncio.sleep(0)
    try:
        names = [place.rsplit(" ", 1)[1] for place in where(task).split(" -> ")]
        assert names == ["outer", "inner", "sleep"]
    finally:
        assert await stop_task(task)


@pytest.mark.parametrize("holder", ["doctor run", "cascade catalog's shared-catalog refresh"])
async def test_a_gateway_stops_though_one_of_its_tasks_lost_its_cancellation(holder: str) -> None:
    # DoctorService.stop gathered its runs, CascadeCatalogService.stop cancelled its refresh without
    # waiting: one run that lost its cancellation held the gateway's stop for ever, and a refresh
    # cancelled that way went on reading a store being closed
    from .conftest import start_gateway

    gw = await start_gateway()
    rounds: list[int] = []
    task = asyncio.get_running_loop().create_task(_loses_one_cancellation(rounds))
    if holder == "doctor run":
        gw.doctor.running["34020000001320000001"] = task
    else:
        gw.cascade_catalog._others_task = task
    while not rounds:
        await asyncio.sleep(0.001)
    await asyncio.wait_for(gw.stop(), HUNG)
    assert task.cancelled()
