"""What holds the event loop under a keepalive load: each candidate timed alone, in one process.

A real :class:`~gb28181gw.app.Gateway` (SQLite in a temporary directory, digest password, its UDP
socket replaced by a sink, as ``bench_quick.py`` does) registers ``--devices`` devices and takes
``--rounds`` keepalives from each (fed to ``SipStack.feed``), with the garbage collector tuned
as ``gb28181gw serve`` tunes it. Then, each on its own:

- the garbage collections those keepalives caused (``gc.callbacks``): count, longest, total;
- the write of every device's keepalive time (``RegistrarService.flush``, what the registrar
  does every 30 s), with a task beside it that only yields (``await asyncio.sleep(0)``): the
  longest gap between two of its turns is the longest the loop was held;
- a full collection;
- the expiry of every completed transaction kept for Timer J as the stack's timer does it when
  all are due (a burst's, or a late loop): each ``handle_timer`` call timed, until none is due
  (one call before issue 16's slices; now at most ``EXPIRE_STEP`` entries a call);
- every device's keepalive window over at once (the liveness timer's calls, each timed);
- a metrics scrape (``Metrics.render``; the device counts are kept as states change, no longer a walk of
  every device: ``bench_scrape.py`` times a scrape at rising device counts);
- the Timer J table alone at a steady ``--steady-rate`` for 40 s of simulated time (32 s kept,
  adds and expiries balancing, expired every 10 ms as the stack does): the longest single
  ``add`` (a dict of every key is rebuilt whole when its deleted slots run out) and the longest
  ``expire`` call, with the collector off (its pauses are the first item's).

    python benchmarks/bench_stalls.py --devices 10000 --rounds 4
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import sys
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop  # noqa: E402

import bench_quick as bq  # noqa: E402
from gb28181gw.app import freeze_started, tune_gc  # noqa: E402
from gb28181gw.services.registrar import RegistrarService  # noqa: E402
from gb28181gw.sip.completed import CompletedResponses  # noqa: E402
from gb28181gw.sip.peer import Peer  # noqa: E402


async def longest_gap(work: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(ms ``work`` took, the longest ms a task that only yields waited for its turn meanwhile)."""
    gaps: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    await work()
    took = time.perf_counter() - t0
    stop = True
    await task
    return took * 1000, max(gaps) * 1000


async def run(args: argparse.Namespace) -> None:
    tune_gc()
    n = args.devices
    with tempfile.TemporaryDirectory(prefix="bench-stalls-") as tmp:
        gw = await bq.start_gateway(tmp, True)
        try:
            freeze_started()
            registrar = next(s for s in vars(gw).values() if isinstance(s, RegistrarService))
            bq.storm(gw, range(n), {"challenge": [], "auth": []})
            await registrar.flush()
            pauses: list[tuple[int, float]] = []
            started = [0.0]

            def timed(phase: str, info: dict[str, int]) -> None:
                if phase == "start":
                    started[0] = time.perf_counter()
                else:
                    pauses.append((info["generation"], (time.perf_counter() - started[0]) * 1000))

            gc.callbacks.append(timed)
            c0 = time.process_time()
            bq.keepalives(gw, range(n), range(args.rounds), [])
            cpu = time.process_time() - c0
            gc.callbacks.remove(timed)
            count = n * args.rounds
            kept = len(gw.stack.endpoint._completed)
            print(f"{count:,} keepalives from {n:,} devices in process: {cpu / count * 1e6:.1f} µs CPU each;")
            print(f"completed transactions kept for Timer J: {kept:,}")
            for generation in range(3):
                ms = [p for g, p in pauses if g == generation]
                if ms:
                    print(
                        f"  GC generation {generation}: {len(ms)} collections, longest {max(ms):.2f} ms, total {sum(ms):.1f} ms"
                    )
            pending = len(registrar._heartbeats)
            pauses.clear()
            gc.callbacks.append(timed)
            try:
                took, gap = await longest_gap(lambda: registrar.flush(heartbeats=True))
            finally:
                gc.callbacks.remove(timed)
            during = ", ".join(f"gen {g} {ms:.1f} ms" for g, ms in pauses) or "none"
            print(
                f"keepalive times of {pending:,} devices written: {took:.0f} ms, the loop held at most {gap:.1f} ms "
                f"(collections meanwhile: {during})"
            )
            t0 = time.perf_counter()
            gc.collect()
            print(f"a full collection: {(time.perf_counter() - t0) * 1000:.1f} ms")
            t0 = time.perf_counter()
            size = len(gw.metrics.render())
            print(f"a metrics scrape ({size:,} bytes): {(time.perf_counter() - t0) * 1000:.1f} ms")
            endpoint = gw.stack.endpoint
            when = asyncio.get_running_loop().time() + 33
            calls: list[float] = []
            while (due := endpoint.get_timer()) is not None and due <= when:
                t0 = time.perf_counter()
                endpoint.handle_timer(when)
                calls.append((time.perf_counter() - t0) * 1000)
            print(
                f"every kept transaction due at once: {len(calls)} timer calls, longest {max(calls, default=0):.1f} ms, "
                f"in all {sum(calls):.1f} ms"
            )
            sweep(registrar, n)
        finally:
            await gw.stop()
    steady(args.steady_rate)


class _Later:
    """The loop's clock, ``ahead`` seconds on (what the registrar's liveness timer reads)."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def time(self) -> float:
        return asyncio.get_running_loop().time() + self.ahead


def sweep(registrar: RegistrarService, n: int) -> None:
    """Every device's keepalive window over at once (a site losing power): the registrar's liveness
    timer callback timed per call, until none is due."""
    ahead = 200.0  # past the keepalive window (180 s by default), within the registration (3,600 s)
    loop, clock = registrar._loop, registrar._clock
    registrar._loop = _Later(ahead)  # type: ignore[assignment]
    registrar._clock = lambda: clock() + ahead
    calls: list[float] = []
    try:
        now = asyncio.get_running_loop().time() + ahead
        while (due := registrar.liveness.next_deadline()) is not None and due <= now:
            t0 = time.perf_counter()
            registrar._on_deadline()
            calls.append((time.perf_counter() - t0) * 1000)
    finally:
        registrar._loop, registrar._clock = loop, clock
    offline = sum(not d.online for d in registrar.devices.values())
    print(
        f"{offline:,} of {n:,} devices offline after their window ended at once: {len(calls)} timer calls, "
        f"longest {max(calls, default=0):.1f} ms, in all {sum(calls):.1f} ms"
    )


def steady(rate: int) -> None:
    """The Timer J table alone under a steady load (see the module docstring)."""
    table = CompletedResponses()
    answer = b"SIP/2.0 200 OK\r\n" + b"x" * 300
    peer = Peer("UDP", "127.0.0.1", 5060)
    per_tick = rate // 100
    gc.disable()  # the table's own work: collections are timed above
    try:
        _steady_ticks(table, answer, peer, per_tick, rate)
    finally:
        gc.enable()


def _steady_ticks(table: CompletedResponses, answer: bytes, peer: Peer, per_tick: int, rate: int) -> None:
    longest_expire = 0.0
    adds = array("d")
    clock = time.perf_counter
    n = 0
    for tick in range(40 * 100):
        now = tick / 100
        for _ in range(per_tick):
            key = (f"z9hG4bK{n:x}-{n * 7919:x}", "127.0.0.1:5060", "MESSAGE")
            t0 = clock()
            table.add(key, answer, peer, now + 32.0)
            adds.append(clock() - t0)
            n += 1
        t0 = clock()
        table.expire(now)
        took = clock() - t0
        if took > longest_expire:
            longest_expire = took
    top = ", ".join(f"{t * 1000:.2f}" for t in heapq.nlargest(3, adds))
    over = sum(1 for t in adds if t > 0.001)
    print(
        f"Timer J table at {rate:,}/s for 40 s ({len(table):,} kept at the end): longest adds {top} ms "
        f"({over} over 1 ms), longest expiry tick {longest_expire * 1000:.2f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=4, help="keepalives per device")
    ap.add_argument("--steady-rate", type=int, default=20_000, help="the Timer J table alone: adds per second")
    uvloop.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
