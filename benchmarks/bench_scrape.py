"""How long a metrics scrape holds the event loop, by the number of registered devices.

A real :class:`~gb28181gw.app.Gateway` in this process (SQLite in a temporary directory, its UDP
socket replaced by a sink, as ``bench_quick.py`` does) registers each count of devices in turn
(fed to ``SipStack.feed``), then renders ``/metrics`` (``Metrics.render``, what the admin
endpoint answers) ``--scrapes`` times and prints the shortest, median and longest, beside the
part the device counts take (``gb28181gw_devices`` and ``gb28181gw_devices_owned``). The whole
render runs on the event loop: everything else waits for it.

    python benchmarks/bench_scrape.py --devices 10000,100000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop  # noqa: E402

import bench_quick as bq  # noqa: E402
from gb28181gw.services.registrar import RegistrarService  # noqa: E402


def _ms(work: object, times: int) -> list[float]:
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        work()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def run(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.devices.split(",")]
    print(f"{'devices':>8} {'scrape min ms':>13} {'median':>7} {'max':>7} {'device counts ms':>16}")
    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        gw = await bq.start_gateway(tmp, True)
        try:
            registrar = next(s for s in vars(gw).values() if isinstance(s, RegistrarService))
            done = 0
            for n in counts:
                bq.storm(gw, range(done, n), {"challenge": [], "auth": []})
                done = n
                online = registrar.counts()["online"]
                scrapes = _ms(gw.metrics.render, args.scrapes)
                # what the two device families cost alone (the rest of a scrape does not grow with devices)
                counting = _ms(lambda: (registrar._states(), registrar._owned()), args.scrapes)
                print(f"{online:>8,} {min(scrapes):>13.2f} {statistics.median(scrapes):>7.2f} {max(scrapes):>7.2f} "
                      f"{statistics.median(counting):>16.3f}")  # fmt: skip
        finally:
            await gw.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="10000,100000", help="registered devices at each measurement, rising")
    ap.add_argument("--scrapes", type=int, default=21)
    uvloop.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
