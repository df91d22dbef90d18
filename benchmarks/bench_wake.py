"""What a request costs right after the CPU was idle, against right after it was busy.

Why: on some machines the work done after an idle spell runs much slower than the same work
done back to back. A virtual machine whose CPU halts when idle (``cpuidle-haltpoll`` with
``guest_halt_poll_ns`` 0, as on the machine of 2026-12-04) hands the physical core back to
the host, and the next request finds its caches and TLB cold. So the CPU per request that
``benchmarks/bench_register.py`` prints depends on the load, not only on the code: a gateway
saturated never idles, one at 80 % of its maximum idles between wake-ups and pays for each.
This prints the size of that effect on the machine at hand, for the gateway's own requests
and, beside them, for the bare responder's (``benchmarks/bare_responder.py``) on the same
messages, so the figures of the other benchmarks can be read against it.

A real :class:`~gb28181gw.app.Gateway` in process (as ``benchmarks/bench_quick.py`` starts it:
SQLite in a temporary directory, digest password, its UDP socket replaced by a sink) registers
``--devices`` devices; then, for each gap, ``--requests`` keepalives are fed one at a time
(``SipStack.feed`` + ``pump``), each after the thread either slept for the gap
(``time.sleep``: the CPU may go idle) or spun for it (the CPU stays busy). Each request is
timed alone; the p50s are printed with their ratio. The bare responder's
``datagram_received`` gets the same treatment. Run it pinned to one CPU, the others quiet:

    taskset -c 0 python benchmarks/bench_wake.py
    taskset -c 0 python benchmarks/bench_wake.py --gaps 0,20,50,200,1000 --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop  # noqa: E402

import bench_quick as bq  # noqa: E402
from bare_responder import Responder  # noqa: E402
from gb28181gw import compiled  # noqa: E402
from gb28181gw.app import tune_gc  # noqa: E402
from gb28181gw.sip.peer import Peer  # noqa: E402


def machine() -> str:
    """The settings that decide what an idle CPU costs here, as the kernel reports them."""
    facts = []
    for label, path in (
        ("cpuidle driver", "/sys/devices/system/cpu/cpuidle/current_driver"),
        ("guest_halt_poll_ns", "/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
        ("transparent huge pages", "/sys/kernel/mm/transparent_hugepage/enabled"),
    ):
        try:
            facts.append(f"{label}: {Path(path).read_text().strip()}")
        except OSError:
            facts.append(f"{label}: -")
    return "; ".join(facts)


#: Requests a handler takes in a row before the next one's turn (see :func:`timed`).
BLOCK = 50


def timed(handlers: list[Callable[[int], None]], count: int, gap_s: float) -> tuple[list[float], float]:
    """p50 µs of each handler's calls, ``count`` of them, each after a gap: slept before the odd
    handlers' (index 1, 3 …), spun before the even ones'. The handlers take turns, :data:`BLOCK`
    requests at a time, so that whatever else the machine does meanwhile falls on all of them
    alike (one at a time, the first measured could be minutes from the last); in a block of spun
    gaps only its first request follows a sleep. Also the slept gaps' mean µs, as they came (a
    sleep lasts longer than asked)."""
    clock = time.perf_counter_ns
    costs: list[list[int]] = [[] for _ in handlers]
    slept = 0
    spin_ns = int(gap_s * 1e9)
    for first in range(0, count, BLOCK):
        for k, handle in enumerate(handlers):
            for i in range(first, min(first + BLOCK, count)):
                start = clock()
                if gap_s > 0:
                    if k % 2:
                        time.sleep(gap_s)
                    else:
                        while clock() - start < spin_ns:
                            pass
                t0 = clock()
                if k % 2:
                    slept += t0 - start
                handle(i)
                costs[k].append(clock() - t0)
    return [statistics.median(c) / 1000 for c in costs], slept / (count * (len(handlers) // 2)) / 1000


async def run(args: argparse.Namespace) -> None:
    tune_gc()
    gaps = [float(g) for g in args.gaps.split(",")]
    n = args.devices
    peers = [Peer("UDP", "127.0.0.1", 20000 + p) for p in range(bq.PORTS)]
    rows: list[tuple[float, ...]] = []
    with tempfile.TemporaryDirectory(prefix="bench-wake-") as tmp:
        gw = await bq.start_gateway(tmp, quick=True)
        label = compiled.label()
        try:
            bq.storm(gw, range(n), {"challenge": [], "auth": []})
            await asyncio.sleep(0)
            stack = gw.stack
            loop = asyncio.get_running_loop()
            round_no = 0

            def gateway(r: int) -> Callable[[int], None]:
                msgs = [bq.keepalive(i % n, r) for i in range(args.requests)]

                def handle(i: int) -> None:
                    stack.feed(msgs[i], peers[i % n % bq.PORTS], loop.time())
                    stack.pump()

                return handle

            responder = Responder(bq.PASSWORD)
            responder.transport = bq.Sink()  # type: ignore[assignment]

            def bare(r: int) -> Callable[[int], None]:
                msgs = [bq.keepalive(i % n, r) for i in range(args.requests)]

                def handle(i: int) -> None:
                    responder.datagram_received(msgs[i], ("127.0.0.1", 20000 + i % n % bq.PORTS))

                return handle

            for gap in gaps:
                # gateway spun, gateway slept, bare spun, bare slept (see timed); a fresh round of
                # keepalives each for the gateway: a repeated one is a retransmission
                handlers = [gateway(round_no + 1), gateway(round_no + 2), bare(0), bare(0)]
                round_no += 2
                figures, slept = timed(handlers, args.requests, gap / 1e6)
                rows.append((gap, slept, *figures))
        finally:
            await gw.stop()
    print(f"modules compiled by mypyc: {label}")
    print(f"machine: {machine()}")
    print(f"a keepalive, p50 µs of {args.requests:,} each, {n:,} devices registered (in process, no sockets):")
    print(
        f"{'gap µs':>7} {'slept µs':>9} | {'gateway busy':>12} {'idle':>7} {'× ':>6} | {'bare busy':>9} {'idle':>7} {'× ':>6}"
    )
    for gap, waited, gw_busy, gw_idle, bare_busy, bare_idle in rows:
        print(
            f"{gap:>7.0f} {waited:>9.0f} | {gw_busy:>12.2f} {gw_idle:>7.2f} {gw_idle / gw_busy:>5.2f}x "
            f"| {bare_busy:>9.2f} {bare_idle:>7.2f} {bare_idle / bare_busy:>5.2f}x"
        )
    print("(busy: the gap spun, the CPU never idle; idle: the gap slept; x: idle ÷ busy)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=3_000, help="keepalives per gap and mode")
    ap.add_argument("--gaps", default="0,20,50,200,1000", help="µs between two requests, comma-separated")
    uvloop.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
