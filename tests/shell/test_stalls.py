"""The event-loop stall probes (``gb28181gw_event_loop_lag_seconds``, ``gb28181gw_gc_pause_seconds``)."""

from __future__ import annotations

import asyncio
import gc
import time

from gb28181gw.app import GcTimer
from gb28181gw.net.timer import LagProbe
from tests.shell.conftest import start_gateway


async def test_the_lag_probe_sees_a_handler_that_blocks_the_loop() -> None:
    seen: list[float] = []
    probe = LagProbe(0.01, seen.append)
    probe.start()
    try:
        await asyncio.sleep(0.03)  # a few ticks on time
        time.sleep(0.1)  # a handler that blocks: the next tick runs at least ~90 ms late
        await asyncio.sleep(0.03)
    finally:
        probe.stop()
    assert seen and min(seen) >= 0.0
    assert max(seen) >= 0.05
    ticks = len(seen)
    await asyncio.sleep(0.03)
    assert len(seen) == ticks  # stopped


def test_the_gc_timer_times_each_collection_and_can_be_removed() -> None:
    seen: list[float] = []
    timer = GcTimer(seen.append)
    timer.install()
    timer.install()  # once only
    try:
        gc.collect()
        assert len(seen) == 1 and seen[0] >= 0.0
    finally:
        timer.remove()
    gc.collect()
    assert len(seen) == 1
    assert timer not in gc.callbacks


async def test_a_gateway_exports_its_stalls_and_stops_probing_when_stopped() -> None:
    gateway = await start_gateway()
    await asyncio.sleep(0.05)
    gc.collect()
    text = gateway.metrics.render().decode()
    lag = next(line for line in text.splitlines() if line.startswith("gb28181gw_event_loop_lag_seconds_count "))
    assert float(lag.split()[1]) >= 1
    pauses = next(line for line in text.splitlines() if line.startswith("gb28181gw_gc_pause_seconds_count "))
    assert float(pauses.split()[1]) >= 1
    assert gateway.gc_timer in gc.callbacks
    await gateway.stop()
    assert gateway.gc_timer not in gc.callbacks
