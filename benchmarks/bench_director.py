"""What a director's 302 costs: REGISTERs answered with redirects, against the same gateway's 401s.

Starts a redis-server, three idle nodes (n1-n3, only their claims matter) and the gateway under
test pinned to CPU 0: first as the director (``node.director = true``: every device REGISTER takes
the general path and is answered 302 naming the node its ID hashes to), then as a plain node
(its REGISTERs answered 401 by the quick path: the first half of every registration). A generator
on CPU 1 sends first REGISTERs of distinct devices over UDP at rising rates, no retransmission, and
counts the answers. Prints, per step: answers/s completed, failures, p50/p99 latency and the
gateway's CPU per REGISTER (from /proc).

    python benchmarks/bench_director.py
    python benchmarks/bench_director.py --rates 1000,2000,4000 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_options import cpu_seconds, free_port, start_server  # noqa: E402
from bench_register import REGISTER, SOCKETS, URI, Devices, _field, device_id  # noqa: E402


def offer(devs: Devices, port: int, first: int, rate: float, seconds: float, expect: bytes) -> dict[str, float]:
    """Send ``rate * seconds`` first REGISTERs of distinct devices; count the answers starting ``expect``."""
    dest = ("127.0.0.1", port)
    total = int(rate * seconds)
    messages = [
        REGISTER.format(
            uri=URI, lport=devs.ports[n % SOCKETS], step=first, n=n, dev=device_id(first + n), k=1, auth=""
        ).encode()
        for n in range(total)
    ]
    sent_at = [0.0] * total
    answered = [0.0] * total
    ok = other = sent = 0
    tag = b"branch=z9hG4bK-r" + str(first).encode() + b"-"

    def take(datagrams: list[bytes]) -> None:
        nonlocal ok, other
        now = time.perf_counter()
        for data in datagrams:
            n = int(_field(data, tag, b"-") or -1)
            if not 0 <= n < total or answered[n]:
                continue
            answered[n] = now
            if data.startswith(expect):
                ok += 1
            else:
                other += 1

    t0 = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            sent_at[sent] = time.perf_counter()
            try:
                devs.socks[sent % SOCKETS].sendto(messages[sent], dest)
            except BlockingIOError:
                pass
            sent += 1
        take(devs.recv_all(max(0.0, t0 + sent / rate - time.perf_counter())))
    span = time.perf_counter() - t0
    end = time.perf_counter() + 2
    while ok + other < total and time.perf_counter() < end:
        take(devs.recv_all(0.05))
    latencies = sorted((a - s) * 1000 for a, s in zip(answered, sent_at, strict=True) if a)
    nan = float("nan")
    return {
        "offered": rate,
        "answered_per_s": ok / span,
        "failure_pct": 100.0 * (total - ok) / total,
        "other": other,
        "p50_ms": latencies[len(latencies) // 2] if latencies else nan,
        "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else nan,
    }


def run(
    label: str, proc: subprocess.Popen[bytes], port: int, rates: list[float], seconds: float, expect: bytes
) -> None:
    devs = Devices()
    print(f"\n{label}")
    print("offered/s  answered/s  fail %  p50 ms  p99 ms  CPU us/REGISTER")
    first = 1
    for rate in rates:
        cpu0 = cpu_seconds(proc.pid)
        r = offer(devs, port, first, rate, seconds, expect)
        cpu = cpu_seconds(proc.pid) - cpu0
        n = int(rate * seconds)
        print(
            f"{rate:9.0f}  {r['answered_per_s']:10.0f}  {r['failure_pct']:6.2f}  {r['p50_ms']:6.2f}  "
            f"{r['p99_ms']:6.2f}  {cpu / n * 1e6:8.1f}" + (f"  ({r['other']:.0f} other answers)" if r["other"] else "")
        )
        first += n
        time.sleep(1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,2000,4000,6000")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    os.sched_setaffinity(0, {1})
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (apt-get install redis-server)")
    tmp = Path(tempfile.mkdtemp(prefix="gb28181gw-bench-director-"))
    redis_port = free_port()
    redis = subprocess.Popen(
        [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp), "--logfile", str(tmp / "redis.log")],
        preexec_fn=lambda: os.sched_setaffinity(0, {1}),
    )  # fmt: skip
    url = f"redis://127.0.0.1:{redis_port}/0"
    store = ("--set", "store.backend=redis", "--set", f"store.url={url}", "--set", "media.workers=0")
    quiet = ("--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        time.sleep(0.5)
        for name in ("n1", "n2", "n3"):
            procs.append(start_server(free_port(), free_port(), 1, *store, "--set", f"node.id={name}"))
        for director in (True, False):
            sip, admin = free_port(), free_port()
            role = ("--set", f"node.director={'true' if director else 'false'}")
            gw = start_server(sip, admin, 0, *store, *quiet, "--set", "node.id=gw", "--set",
                              "registrar.password=12345678", *role)  # fmt: skip
            try:
                time.sleep(2.0)  # the director's view holds the three nodes (read every second)
                label = "director: 302 (general path)" if director else "plain node: 401 (quick path)"
                run(label, gw, sip, rates, args.seconds, b"SIP/2.0 302" if director else b"SIP/2.0 401")
            finally:
                gw.terminate()
                gw.wait(timeout=20)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)
        redis.terminate()
        redis.wait(timeout=10)


if __name__ == "__main__":
    main()
