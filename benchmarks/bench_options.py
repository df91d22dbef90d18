"""End-to-end OPTIONS load through the whole stack (parse, transaction, router, response).

Starts ``gb28181gw serve`` pinned to CPU 0, offers OPTIONS over UDP at rising rates
from CPU 1, and prints for each step the failures, answered rate, latency and the
server's CPU; then the highest rate sustained with < 1 % failures and the server's RSS.

Generators:
  loadgen (default)  benchmarks/loadgen.py in this process, paced, no retransmissions.
  sipp               N SIPp processes sharing CPU 1 (SIPp is CPU-bound near 11-12k calls/s
                     in total on this machine, so it shows SIPp's limit, not ours).

    python benchmarks/bench_options.py                  # the README figures
    python benchmarks/bench_options.py --generator sipp --rates 5000,10000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "tests" / "shell" / "sipp" / "options_uac.xml"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    user, kernel = cpu_split(pid)
    return user + kernel


def cpu_split(pid: int) -> tuple[float, float]:
    """Seconds of CPU ``pid`` has used so far: (in user space, in the kernel on its behalf)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(
    sip_port: int, admin_port: int, cpu: int | set[int], *extra: str, listen: str = "127.0.0.1"
) -> subprocess.Popen[bytes]:
    """``gb28181gw serve`` on ``listen`` pinned to ``cpu`` (or a set of CPUs), once its /readyz says so."""
    cpus = {cpu} if isinstance(cpu, int) else cpu
    store = Path(tempfile.mkdtemp(prefix="gb28181gw-bench-")) / "bench.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gb28181gw", "serve", "--listen", listen, "--port", str(sip_port),
         "--admin-port", str(admin_port), "--log-level", "warning", "--set", f"store.path={store}", *extra],
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("gateway did not start")


def offer_sipp(port: int, rate: float, seconds: float, processes: int, cpu: int) -> dict[str, float]:
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp not found (apt-get install sip-tester)")
    per = rate / processes
    calls = int(per * seconds)
    procs = []
    tmp = Path(tempfile.mkdtemp())
    for _ in range(processes):
        procs.append(
            subprocess.Popen(
                [
                    sipp,
                    "-sf",
                    str(SCENARIO),
                    f"127.0.0.1:{port}",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    "0",
                    "-r",
                    str(int(per)),
                    "-rp",
                    "1000",
                    "-m",
                    str(calls),
                    "-l",
                    str(calls),
                    "-timeout",
                    f"{int(seconds * 4)}s",
                    "-nostdin",
                    "-recv_timeout",
                    "5000",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
            )  # fmt: skip
        )
    ok = failed = 0
    rates = 0.0
    for p in procs:
        out = p.communicate()[0].decode(errors="replace")
        m = re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out)
        ok += int(m.group(1)) if m else 0
        m = re.search(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out)
        failed += int(m.group(1)) if m else 0
        m = re.search(r"Call Rate\s*\|[^|]*\|\s*([\d.]+) cps", out)
        rates += float(m.group(1)) if m else 0.0
    sent = calls * processes
    return {
        "sent": sent,
        "failures": sent - ok,
        "failure_pct": 100.0 * (sent - ok) / sent if sent else 0.0,
        "achieved_rate": rates,
        "p50_ms": float("nan"),
        "p99_ms": float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="5000,10000,15000,18000,19000,20000,21000,22000,23000,24000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--generator", choices=["loadgen", "sipp"], default="loadgen")
    ap.add_argument("--sipp-processes", type=int, default=3)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    ap.add_argument(
        "--listen",
        default="127.0.0.1",
        help="the gateway's sip.listen: 0.0.0.0 measures the wildcard path (destination address per datagram)",
    )
    args = ap.parse_args()

    sip_port, admin_port = free_port(socket.SOCK_DGRAM), free_port()
    server = start_server(sip_port, admin_port, args.server_cpu, listen=args.listen)
    os.sched_setaffinity(0, {args.client_cpu})
    rows = []
    best = 0.0
    try:
        print(f"gateway pid {server.pid} on CPU {args.server_cpu}; {args.generator} on CPU {args.client_cpu}")
        print(
            f"{'offered/s':>10} {'answered/s':>11} {'fail %':>7} {'p50 ms':>8} {'p99 ms':>8} {'server CPU %':>13} {'µs CPU/req':>11}"
        )
        for rate in [float(r) for r in args.rates.split(",")]:
            c0, t0 = cpu_seconds(server.pid), time.monotonic()
            if args.generator == "sipp":
                r = offer_sipp(sip_port, rate, args.seconds, args.sipp_processes, args.client_cpu)
            else:
                r = loadgen.run("127.0.0.1", sip_port, rate, args.seconds).__dict__
            c1, t1 = cpu_seconds(server.pid), time.monotonic()
            cpu_pct = 100 * (c1 - c0) / (t1 - t0)
            answered = r["sent"] - r["failures"]
            per_req = 1e6 * (c1 - c0) / answered if answered else float("nan")
            row = {"offered": rate, **r, "server_cpu_pct": cpu_pct, "cpu_us_per_request": per_req}
            rows.append(row)
            print(
                f"{rate:>10.0f} {r['achieved_rate']:>11.0f} {r['failure_pct']:>7.2f} {r['p50_ms']:>8.1f} "
                f"{r['p99_ms']:>8.1f} {cpu_pct:>13.0f} {per_req:>11.1f}"
            )
            if r["failure_pct"] < 1.0:
                best = max(best, r["achieved_rate"])
            else:
                break
            time.sleep(1.0)
        rss = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(15)
    print(f"highest sustained rate with < 1 % failures: {best:.0f} OPTIONS/s")
    print(
        f"server RSS at the end: {rss:.0f} MiB (completed transactions are kept 64*T1 = 32 s to absorb retransmissions)"
    )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
