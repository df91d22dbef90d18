"""Fixed memory: the RSS of an idle `gb28181gw serve` and of each process it starts.

    python benchmarks/bench_idle.py [--workers N] [--settle 5]

A real `gb28181gw serve` on 127.0.0.1 (ports from the kernel, a fresh SQLite store, default settings
but ``media.workers`` if given), left alone for ``--settle`` seconds after its /readyz answers; then
the RSS of the gateway and of each child (the relay workers, multiprocessing's resource tracker) from
/proc. The README's sizing table takes its fixed memory from here: without a command of its own the
figure ("`ps -o rss` of an idle gateway") could not be checked against the code of the day.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_options import free_port, rss_mib, start_server  # noqa: E402


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def name(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:70]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=None, help="media.workers (default: the gateway's own default)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle before reading RSS")
    args = ap.parse_args()
    extra = ("--set", f"media.workers={args.workers}") if args.workers is not None else ()
    proc = start_server(free_port(socket.SOCK_DGRAM), free_port(), {0, 1}, *extra)
    try:
        time.sleep(args.settle)
        gateway = rss_mib(proc.pid)
        kids = [(pid, rss_mib(pid), name(pid)) for pid in children(proc.pid)]
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"gateway (gb28181gw serve) idle RSS {gateway:.1f} MiB")
    for pid, rss, cmd in kids:
        print(f"  child {pid}: {rss:.1f} MiB  {cmd}")
    print(f"total {gateway + sum(rss for _, rss, _ in kids):.1f} MiB ({len(kids)} children)")


if __name__ == "__main__":
    main()
