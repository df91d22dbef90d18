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

``storm``: whole registrations through the director, across 1, 2 and 3 nodes. Redis, the
director and the nodes may run on either CPU (the machine has two), the generator on CPU 1.
Each device REGISTERs at the director, follows the 302 to its node, answers the node's 401 with
an MD5 digest and gets 200 (four requests). Per step: registrations/s completed, failures, p50/p99
from the first REGISTER to the 200, and CPU per registration of all of them (director, nodes and
redis-server, read from /proc), with Redis's and the director's shares.

    python benchmarks/bench_director.py storm
    python benchmarks/bench_director.py storm --rates 500,1000,1500,2000 --devices 3000
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
from bench_register import PASSWORD, REGISTER, SOCKETS, URI, Devices, _field, device_id, storm  # noqa: E402


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


def start_redis(binary: str, tmp: Path, cpus: set[int]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    redis = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp), "--logfile", str(tmp / "redis.log")],
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )  # fmt: skip
    time.sleep(0.5)
    return redis, f"redis://127.0.0.1:{port}/0"


def storm_through(binary: str, count: int, rates: list[float], devices: int) -> None:
    """Registrations through a director to ``count`` nodes; one table row per offered rate."""
    tmp = Path(tempfile.mkdtemp(prefix="gb28181gw-bench-director-storm-"))
    both = {0, 1}
    redis, url = start_redis(binary, tmp, both)
    common = ("--set", "store.backend=redis", "--set", f"store.url={url}", "--set", "media.workers=0",
              "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=",
              "--set", f"registrar.password={PASSWORD}")  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    devs = Devices()
    try:
        for i in range(count):
            procs.append(start_server(free_port(), free_port(), both, *common, "--set", f"node.id=n{i + 1}"))
        sip = free_port()
        director = start_server(sip, free_port(), both, *common, "--set", "node.id=d", "--set", "node.director=true")
        procs.append(director)
        time.sleep(2.0)  # the director's view holds every node (read every second)
        for step, rate in enumerate(rates):
            c0 = {p.pid: cpu_seconds(p.pid) for p in (*procs, redis)}
            r = storm(devs, sip, 1_000_000 * count + step * devices, devices, rate, step=step)
            spent = {pid: cpu_seconds(pid) - c for pid, c in c0.items()}
            each = 1e6 / max(r["completed"], 1)
            print(f"{count:>5} {rate:>13.0f} {r['completed']:>9.0f} {r['failure_pct']:>7.2f} "
                  f"{r['registrations_per_s']:>8.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                  f"{sum(spent.values()) * each:>10.0f} {spent[redis.pid] * each:>8.0f} "
                  f"{spent[director.pid] * each:>11.0f} {r['generator_cpu_pct']:>9.0f}")  # fmt: skip
            if r["failure_pct"] >= 1.0:
                break
            time.sleep(2)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)
        redis.terminate()
        redis.wait(timeout=10)
        for sock in devs.socks:
            sock.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", choices=["redirect", "storm"], default="redirect")
    ap.add_argument("--rates", default=None)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--devices", type=int, default=3000, help="storm: distinct devices per step")
    ap.add_argument("--nodes", default="1,2,3", help="storm: node counts, one after the other")
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (apt-get install redis-server)")
    if args.mode == "storm":
        rates = [float(r) for r in (args.rates or "500,1000,1500,2000,3000").split(",")]
        print("registration storm through the director: 302, then 401 and digest at the node, then 200")
        print(f"{'nodes':>5} {'offered reg/s':>13} {'completed':>9} {'fail %':>7} {'reg/s':>8} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'CPU µs/reg':>10} {'redis µs':>8} {'director µs':>11} {'gen CPU %':>9}")  # fmt: skip
        for count in (int(n) for n in args.nodes.split(",")):
            storm_through(binary, count, rates, args.devices)
        return
    rates = [float(r) for r in (args.rates or "1000,2000,4000,6000").split(",")]
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
