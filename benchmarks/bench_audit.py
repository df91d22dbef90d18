"""What the audit trail and admin tokens cost (issue 15).

append   ``--records`` audit records through :class:`AuditService` into a SQLite store, recorded in
         bursts of 10,000 and flushed (the writer's 1,000-record batches, each hashed into the
         chain): records/s and CPU per record. Baseline in the same run: the same rows inserted
         with plain ``sqlite3`` ``executemany`` into a table of the same columns and indexes, no
         chain, 1,000 rows a transaction (what storing them costs at least).
verify   ``AuditService.verify`` over the whole trail: seconds, records/s, resident memory
         growth (sampled every 5 ms) and how long the event loop was held at once (a 5 ms
         ticker's worst lateness: the admin API and SIP wait that long).
query    ``load_audit`` on the full trail: the last 100 records of one target, of one actor
         family, of one action family; the first page of a day; median and worst of 20 each.
auth     ``AccessService.authenticate`` per call beside ``hashlib.sha256`` of the secret alone
         (the irreducible part); then a real ``gb28181gw serve`` on CPU 0 answering
         ``GET /api/v1/devices`` from this process on CPU 1, ``--requests`` each as the local
         token-less caller and with a bearer token, interleaved in rounds: latency and the
         gateway's CPU per request.

    python benchmarks/bench_audit.py                      # the README figures
    python benchmarks/bench_audit.py --records 100000 --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]
from bench_options import cpu_seconds, free_port, start_server  # noqa: E402
from gb28181gw.access import Role  # noqa: E402
from gb28181gw.audit import Action, Actor, AuditQuery  # noqa: E402
from gb28181gw.services.access import AccessService  # noqa: E402
from gb28181gw.services.audit import AuditService  # noqa: E402
from gb28181gw.store.sqlite import SqliteStore  # noqa: E402

BURST = 10_000
DAY = 86_400.0
FIRST = 1_790_000_000.0  # 2026-09, epoch seconds


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(i: int) -> tuple[float, str, str, Action, str, dict[str, object]]:
    """Record ``i`` of a plausible year: PTZ, streams and queries by a few operators and a superior."""
    actions = (Action.DEVICE_CONTROL, Action.STREAM_OPEN, Action.STREAM_CLOSE, Action.DEVICE_QUERY)
    actor = "superior:44010000002000000001" if i % 3 == 0 else f"token:ops{i % 7}"
    target = f"3402000000132{i % 10_000:07d}"
    params: dict[str, object] = (
        {"ptz": "A50F01", "speed": 5} if i % 4 == 0 else {"kind": "live", "to": "udp 10.1.2.3:30000"}
    )
    return FIRST + i * 30.0, actor, "10.0.0.5", actions[i % 4], target, params


async def bench_append(path: Path, records: int) -> AuditService:
    store = SqliteStore(path)
    await store.open()
    clock = [FIRST]
    audit = AuditService(store, clock=lambda: clock[0], retention_days=36_500)
    wall, cpu = time.perf_counter(), time.process_time()
    for base in range(0, records, BURST):
        for i in range(base, min(records, base + BURST)):
            when, actor, source, action, target, params = row(i)
            clock[0] = when
            audit.record(action, target, params, actor=Actor(actor, source))
        await audit.flush()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    bare = sqlite3.connect(path.with_name("bare.db"), isolation_level=None)
    bare.execute("PRAGMA journal_mode=WAL")
    bare.execute("PRAGMA synchronous=NORMAL")
    bare.execute(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, time REAL, actor TEXT, source TEXT, action TEXT,"
        " target TEXT, params TEXT, result TEXT, detail TEXT)"
    )
    bare.execute("CREATE INDEX audit_time ON audit (time)")
    bare.execute("CREATE INDEX audit_target ON audit (target)")
    b_wall, b_cpu = time.perf_counter(), time.process_time()
    for base in range(0, records, 1000):
        rows = []
        for i in range(base, min(records, base + 1000)):
            when, actor, source, action, target, params = row(i)
            rows.append((when, actor, source, str(action), target, json.dumps(params), "ok", ""))
        bare.execute("BEGIN")
        bare.executemany(
            "INSERT INTO audit (time, actor, source, action, target, params, result, detail) VALUES (?,?,?,?,?,?,?,?)",
            rows,
        )
        bare.execute("COMMIT")
    b_wall, b_cpu = time.perf_counter() - b_wall, time.process_time() - b_cpu
    bare.close()
    print(f"\nappend {records:,} records (bursts of {BURST:,}, flushed)")
    print(f"  gb28181gw AuditService: {records / wall:>9,.0f} records/s  {cpu / records * 1e6:6.1f} µs CPU each")
    print(f"  bare sqlite3 insert:    {records / b_wall:>9,.0f} records/s  {b_cpu / records * 1e6:6.1f} µs CPU each")
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "-*"))
    print(f"  store file: {size / records:.0f} bytes a record")
    return audit


def rss() -> float:
    """This process's resident memory now, MiB (tracemalloc would slow the check it measures 3-4 times)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def ticker(worst: list[float], peak: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.005)
        worst[0] = max(worst[0], loop.time() - t - 0.005)
        peak[0] = max(peak[0], rss())


async def bench_verify(audit: AuditService, records: int) -> None:
    worst, peak, stop = [0.0], [0.0], asyncio.Event()
    tick = asyncio.create_task(ticker(worst, peak, stop))
    await asyncio.sleep(0.05)
    before = rss()
    worst[0], peak[0] = 0.0, before
    wall, cpu = time.perf_counter(), time.process_time()
    report = await audit.verify()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    await tick
    assert report.ok and report.records == records, report
    print(f"\nverify {records:,} records")
    print(f"  {wall:.1f} s ({records / wall:,.0f} records/s, {cpu / records * 1e6:.1f} µs CPU each)")
    print(
        f"  resident memory +{peak[0] - before:.1f} MiB at most; event loop held at most {worst[0] * 1e3:.0f} ms at once"
    )


async def bench_query(audit: AuditService, records: int) -> None:
    queries = {
        "one camera, first 100": AuditQuery(target="34020000001320004242", limit=100),
        "a superior's, first 100": AuditQuery(actor="superior:", limit=100),
        "PTZ and controls, first 100": AuditQuery(action="device.", limit=100),
        "one day, first 1,000": AuditQuery(
            since=FIRST + records * 15.0, until=FIRST + records * 15.0 + DAY, limit=1000
        ),
    }
    print(f"\nquery ({records:,} records; 20 each)")
    for label, query in queries.items():
        times = []
        for _ in range(20):
            t = time.perf_counter()
            found = await audit.store.load_audit(query)
            times.append(time.perf_counter() - t)
        print(
            f"  {label:<28} {len(found):>5} found  median {statistics.median(times) * 1e3:6.1f} ms  worst {max(times) * 1e3:6.1f} ms"
        )


async def bench_authenticate(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    access = AccessService(store)
    await access.start()
    for n in range(200):  # a large site's tokens
        await access.create(f"t{n}", Role.VIEWER)
    _, secret = await access.create("bench", Role.OPERATOR)
    header = "Bearer " + secret
    n = 200_000
    t = time.perf_counter()
    for _ in range(n):
        access.authenticate(header)
    ours = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for _ in range(n):
        hashlib.sha256(secret.encode()).hexdigest()
    bare = (time.perf_counter() - t) / n
    await store.close()
    print("\nauthenticate (201 tokens)")
    print(f"  AccessService.authenticate {ours * 1e6:.2f} µs a call; sha256 of the secret alone {bare * 1e6:.2f} µs")


def http_rounds(admin_port: int, secret: str, requests: int, pid: int) -> None:
    url = f"http://127.0.0.1:{admin_port}/api/v1/devices"
    kinds = {"local, no token": {}, "bearer token": {"Authorization": "Bearer " + secret}}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, float] = dict.fromkeys(kinds, 0.0)
    rounds = 10
    for _ in range(rounds):
        for label, headers in kinds.items():
            before = cpu_seconds(pid)
            for _ in range(requests // rounds):
                t = time.perf_counter()
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
                    resp.read()
                    assert resp.status == 200
                times[label].append(time.perf_counter() - t)
            cpu[label] += cpu_seconds(pid) - before
    print(f"\nadmin API, GET /api/v1/devices, {requests:,} requests each (gateway on CPU 0)")
    for label, values in times.items():
        print(
            f"  {label:<16} p50 {pct(values, 0.5) * 1e3:5.2f} ms  p99 {pct(values, 0.99) * 1e3:5.2f} ms"
            f"  gateway CPU {cpu[label] / len(values) * 1e6:5.0f} µs a request"
        )


def bench_http(requests: int) -> None:
    os.sched_setaffinity(0, {1})
    admin_port = free_port()
    proc = start_server(free_port(), admin_port, 0, "--set", "media.workers=0")
    try:
        made = subprocess.run(
            [sys.executable, "-m", "gb28181gw", "token", "create", "bench", "--role", "viewer", "--json",
             "--admin", f"http://127.0.0.1:{admin_port}"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        http_rounds(admin_port, json.loads(made.stdout)["token"], requests, proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    print(f"bench_audit {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="gb28181gw-bench-audit-") as tmp:
        audit = await bench_append(Path(tmp) / "audit.db", args.records)
        await bench_verify(audit, args.records)
        await bench_query(audit, args.records)
        await audit.store.close()
        await bench_authenticate(Path(tmp) / "tokens.db")
    await asyncio.to_thread(bench_http, args.requests)


if __name__ == "__main__":
    asyncio.run(main())
