"""A node's death and its devices marked offline by a janitor (issue 17 benchmark).

Two ``gb28181gw serve`` nodes (a, b) on one redis-server. Each round registers ``--devices``
devices at node a (the registration storm of ``bench_register.py``, no keepalives after it),
kills a (SIGKILL: no goodbye) at once, and reads the ``events`` stream until every device has its
offline event from b's janitor; then starts a again for the next round. Prints, over all devices
of all rounds, the time from the kill to each device's offline event (p50, p99, worst), and
checks that each device got exactly one offline event per round. The bound is the node key's
life (NODE_TTL, 15 s, renewed every 5 s: gone 10-15 s after the kill), plus the janitor's grace
(DEAD_GRACE, 7 s) and its round (JANITOR_INTERVAL, 2 s).

  python benchmarks/bench_device_failover.py --devices 1000 --rounds 3

``--director``: kill -9 -> the device online again at a survivor. A director and three nodes
(a, b, c); each round registers ``--devices`` devices through the director (they follow its
302), kills a, and has a's devices register at the director again every ``--retry`` seconds
until each gets its 200 from a survivor (a device re-registering because its node stopped
answering: how soon a real one notices is its own keepalive or re-registration timer, added to
what is printed). The director keeps naming a until a's claim runs out (``node.claim_seconds``,
15 s), so that is most of the figure. Prints kill -> 200 at a survivor, p50/p99/worst.

  python benchmarks/bench_device_failover.py --director --devices 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(1, str(ROOT))
sys.path.insert(2, str(Path(__file__).resolve().parent))
from tests.redis_server import RedisServer  # noqa: E402

from bench_options import free_port, start_server  # noqa: E402
from bench_register import PASSWORD, Devices, storm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=2000.0, help="registrations/s of each round's storm")
    ap.add_argument("--director", action="store_true", help="kill -9 -> online at a survivor through a director")
    ap.add_argument("--retry", type=float, default=1.0, help="--director: seconds between a device's attempts")
    args = ap.parse_args()
    if args.director:
        through_director(args.devices, args.rounds, args.rate, args.retry)
        return

    import redis as redis_py

    server = RedisServer(Path(tempfile.mkdtemp(prefix="gb28181gw-failover-")))
    server.start()
    r = redis_py.Redis.from_url(server.url)
    ports = {name: (free_port(), free_port()) for name in ("a", "b")}
    extra = ("--set", "store.backend=redis", "--set", f"store.url={server.url}",
             "--set", f"registrar.password={PASSWORD}", "--set", "registrar.keepalive_interval=2",
             "--set", "registrar.keepalive_count=1", "--set", "media.workers=0",
             "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=")  # fmt: skip

    def start(name: str) -> object:
        sip, admin = ports[name]
        return start_server(sip, admin, 0 if name == "a" else 1, *extra, "--set", f"node.id={name}")

    b = start("b")
    delays: list[float] = []
    duplicates = 0
    try:
        for rnd in range(args.rounds):
            a = start("a")
            devs = Devices()
            reg = storm(devs, ports["a"][0], 0, args.devices, args.rate, step=rnd)
            assert reg["completed"] == args.devices, reg
            time.sleep(1.0)  # a's write-behind (0.5 s) has claimed them all
            last = r.xrevrange("gbgw:events", count=1)
            start_id = last[0][0] if last else b"0-0"
            a.kill()  # type: ignore[attr-defined]
            killed = time.time()
            a.wait()  # type: ignore[attr-defined]
            seen: dict[str, int] = {}
            deadline = time.monotonic() + 90
            while len(seen) < args.devices and time.monotonic() < deadline:
                for _stream, entries in r.xread({"gbgw:events": start_id}, block=1000) or []:
                    for entry_id, fields in entries:
                        start_id = entry_id
                        f = {k.decode(): v.decode() for k, v in fields.items()}
                        if f["event"] == "offline" and f["node"] == "a" and f.get("janitor") == "b":
                            seen[f["device"]] = seen.get(f["device"], 0) + 1
                            delays.append(float(f["at"]) - killed)
            time.sleep(JANITOR_SETTLE)  # any second mark would come within a janitor round or two
            for _stream, entries in r.xread({"gbgw:events": start_id}, block=100) or []:
                for _entry_id, fields in entries:
                    f = {k.decode(): v.decode() for k, v in fields.items()}
                    if f["event"] == "offline" and f["node"] == "a":
                        seen[f["device"]] = seen.get(f["device"], 0) + 1
            duplicates += sum(n - 1 for n in seen.values())
            print(f"round {rnd + 1}: {len(seen)} of {args.devices} devices marked offline by b's janitor, "
                  f"{sum(n - 1 for n in seen.values())} twice; first {min(delays[-len(seen):]):.2f} s, "
                  f"last {max(delays[-len(seen):]):.2f} s after the kill")  # fmt: skip
    finally:
        b.kill()  # type: ignore[attr-defined]
        b.wait()  # type: ignore[attr-defined]
        r.close()
        server.stop()
    delays.sort()
    print(
        f"kill -9 -> offline event, {len(delays)} devices over {args.rounds} rounds: "
        f"p50 {statistics.median(delays):.2f} s, p99 {delays[int(len(delays) * 0.99)]:.2f} s, "
        f"worst {delays[-1]:.2f} s; duplicate offline events: {duplicates}"
    )


def through_director(devices: int, rounds: int, rate: float, retry: float) -> None:
    import redis as redis_py

    server = RedisServer(Path(tempfile.mkdtemp(prefix="gb28181gw-failover-director-")))
    server.start()
    r = redis_py.Redis.from_url(server.url)
    extra = ("--set", "store.backend=redis", "--set", f"store.url={server.url}",
             "--set", f"registrar.password={PASSWORD}", "--set", "media.workers=0",
             "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=")  # fmt: skip
    ports = {name: (free_port(), free_port()) for name in ("d", "a", "b", "c")}

    def start(name: str, *more: str) -> object:
        sip, admin = ports[name]
        return start_server(sip, admin, {0, 1}, *extra, "--set", f"node.id={name}", *more)

    def live() -> int:
        return sum(1 for n in ("a", "b", "c") if r.exists(f"gbgw:node:{n}"))

    procs = {name: start(name) for name in ("b", "c")}
    procs["d"] = start("d", "--set", "node.director=true")
    delays: list[float] = []
    failed = 0
    ids = [f"3402000000132{n:07d}" for n in range(1, devices + 1)]
    try:
        for rnd in range(rounds):
            procs["a"] = start("a")
            while live() < 3:
                time.sleep(0.1)
            time.sleep(1.5)  # the director reads the live nodes every second
            devs = Devices()
            reg = storm(devs, ports["d"][0], 0, devices, rate, step=1000 * rnd, ids=ids)
            assert reg["completed"] == devices, reg
            time.sleep(1.0)  # the nodes' write-behind has claimed them all
            owners = {k.decode(): v.decode() for k, v in r.hgetall("gbgw:owner").items()}
            orphans = [d for d in ids if owners.get(d, "").endswith(" a")]
            procs["a"].kill()  # type: ignore[attr-defined]
            killed = time.perf_counter()
            procs["a"].wait()  # type: ignore[attr-defined]
            left, attempt = list(orphans), 0
            while left and time.perf_counter() - killed < 120:
                attempt += 1
                began = time.perf_counter()
                done: list[float] = []
                storm(devs, ports["d"][0], 0, len(left), rate, step=1000 * rnd + attempt, wait=retry,
                      ids=left, completed_at=done)  # fmt: skip
                delays += [t - killed for t in done if t]
                left = [d for d, t in zip(left, done, strict=True) if not t]
                time.sleep(max(0.0, began + retry - time.perf_counter()))
            failed += len(left)
            moved = {k.decode(): v.decode() for k, v in r.hgetall("gbgw:owner").items()}
            assert all(not moved[d].endswith(" a") for d in orphans if d not in left)
            print(f"round {rnd + 1}: {len(orphans) - len(left)} of a's {len(orphans)} devices online at b or c, "
                  f"{attempt} attempts; last {max(delays[-len(orphans):] or [0]):.2f} s after the kill")  # fmt: skip
            for sock in devs.socks:
                sock.close()
    finally:
        for proc in procs.values():
            if proc.poll() is None:  # type: ignore[attr-defined]
                proc.kill()  # type: ignore[attr-defined]
            proc.wait()  # type: ignore[attr-defined]
        r.close()
        server.stop()
    delays.sort()
    print(
        f"kill -9 -> 200 at a survivor through the director, {len(delays)} devices over {rounds} rounds "
        f"(retry every {retry:g} s): p50 {statistics.median(delays):.2f} s, p99 {delays[int(len(delays) * 0.99)]:.2f} s, "
        f"worst {delays[-1]:.2f} s; never re-homed: {failed}"
    )


#: Seconds to keep reading after the last expected event.
JANITOR_SETTLE = 5.0


if __name__ == "__main__":
    main()
