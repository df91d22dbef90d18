"""What holds the event loop under a keepalive load: each candidate timed alone, in one process.

A real :class:`~gb28181gw.app.Gateway` (SQLite in a temporary directory, digest password, its UDP
socket replaced by a sink, as ``bench_quick.py`` does) registers ``--devices`` devices and takes
``--rounds`` keepalives from each (fed to ``SipStack.feed``), with the garbage collector tuned
as ``gb28181gw serve`` tunes it. Then, each on its own:

- the garbage collections those keepalives caused (``gc.callbacks``): count, longest, total;
- the write of every device's keepalive time (``RegistrarService.flush``, what the registrar
  does every 30 s), with a task beside it that only yields (``await asyncio.sleep(0)``): the
  longest gap between two of its turns is the longest the loop was held;
- a full collection and the expiry of every completed transaction kept for Timer J at once
  (the stack's timer expires them every 10 ms, a few hundred at a time, under load).

    python benchmarks/bench_stalls.py --devices 10000 --rounds 4
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop  # noqa: E402

import bench_quick as bq  # noqa: E402
from gb28181gw.app import freeze_started, tune_gc  # noqa: E402
from gb28181gw.services.registrar import RegistrarService  # noqa: E402


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
            took, gap = await longest_gap(lambda: registrar.flush(heartbeats=True))
            print(f"keepalive times of {pending:,} devices written: {took:.0f} ms, the loop held at most {gap:.1f} ms")
            t0 = time.perf_counter()
            gc.collect()
            print(f"a full collection: {(time.perf_counter() - t0) * 1000:.1f} ms")
            endpoint = gw.stack.endpoint
            t0 = time.perf_counter()
            endpoint.handle_timer(asyncio.get_running_loop().time() + 33)
            print(f"every kept transaction expired at once: {(time.perf_counter() - t0) * 1000:.1f} ms")
        finally:
            await gw.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=4, help="keepalives per device")
    uvloop.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
