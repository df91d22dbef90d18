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
    args = ap.parse_args()

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


#: Seconds to keep reading after the last expected event.
JANITOR_SETTLE = 5.0


if __name__ == "__main__":
    main()
