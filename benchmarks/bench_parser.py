"""SIP codec throughput on one core: parse and serialize typical GB/T 28181 messages.

Prints messages per second (best of several rounds, and the median), CPU time and
RSS. "parse" is :func:`parse_message` (start line, header split, mandatory headers,
CSeq, Content-Length, Max-Forwards checked; typed headers left for first use);
"parse + top Via" adds what the endpoint always does next.

    python benchmarks/bench_parser.py
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import MESSAGE, REGISTER  # noqa: E402

from gb28181gw.sip.message import parse_message  # noqa: E402

MESSAGES = {"REGISTER": REGISTER, "MESSAGE (keepalive)": MESSAGE}


def rate(fn: Callable[[], object], n: int, rounds: int) -> tuple[float, float]:
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        results.append(n / (time.perf_counter() - t0))
    return max(results), statistics.median(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="messages per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cpu", type=int, default=0, help="pin to this CPU (-1: do not pin)")
    args = ap.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    gc.collect()
    gc.freeze()
    cpu0 = time.process_time()
    print(f"{'message':<22} {'operation':<18} {'best msg/s':>12} {'median msg/s':>13} {'µs/msg':>8}")
    for name, data in MESSAGES.items():
        msg = parse_message(data)
        cases = {
            "parse": lambda data=data: parse_message(data),
            "parse + top Via": lambda data=data: parse_message(data).top_via,
            "serialize": msg.serialize,
        }
        for op, fn in cases.items():
            best, median = rate(fn, args.n, args.rounds)
            print(f"{name:<22} {op:<18} {best:>12,.0f} {median:>13,.0f} {1e6 / best:>8.2f}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"CPU time {time.process_time() - cpu0:.1f} s, max RSS {usage.ru_maxrss / 1024:.0f} MiB, Python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
