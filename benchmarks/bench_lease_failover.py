"""Superior failover between two gateway nodes on one Redis (issue 17 benchmark).

Two ``gb28181gw serve`` nodes (``store.backend = "redis"``, ``node.lease_seconds = --lease``)
share one ``[[upstream]]``; a bare UDP superior answers everything 200 and notes when each
REGISTER arrives and from which node. Each round ends the node that registered (``--mode kill``:
SIGKILL, no goodbye; ``term``: SIGTERM, it unregisters and releases its lease) and times the
other node's REGISTER (a new Call-ID), then starts the ended node again for the next round.
Prints p50 and the worst of the failover times over ``--rounds`` rounds, against the lease's
time to live (the bound for ``kill``: the survivor takes over when the lease expires, at most
the TTL after the last renewal).

  python benchmarks/bench_lease_failover.py --lease 2 --rounds 10 --mode kill
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(1, str(ROOT))
sys.path.insert(2, str(Path(__file__).resolve().parent))
from tests.redis_server import RedisServer  # noqa: E402

from bench_options import free_port, start_server  # noqa: E402

SUPERIOR = "34010000002000000001"
OURS = "34020000002000000001"


class Superior(threading.Thread):
    """A UDP superior answering 200 to everything; remembers each REGISTER (time, sender port, Call-ID, Expires)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.registers: list[tuple[float, int, str, str]] = []

    def run(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except OSError:
                return
            head, _, _ = data.partition(b"\r\n\r\n")
            lines = head.decode(errors="replace").split("\r\n")
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            if lines[0].startswith("REGISTER"):
                self.registers.append((time.monotonic(), addr[1], fields.get("call-id", ""), fields.get("expires", "")))
            if lines[0].startswith("SIP/2.0"):
                continue
            answer = ["SIP/2.0 200 OK"] + [
                f"{k}: {fields[k.lower()]}" for k in ("Via", "From", "To", "Call-ID", "CSeq") if k.lower() in fields
            ]
            if "contact" in fields:
                answer += [f"Contact: {fields['contact']}", "Expires: 3600"]
            self.sock.sendto(("\r\n".join(answer) + "\r\nContent-Length: 0\r\n\r\n").encode(), addr)


def start_node(name: str, sip: int, admin: int, redis: RedisServer, lease: float, cfg: Path) -> subprocess.Popen[bytes]:
    """Node ``name``, pinned to a CPU of its own, once ready."""
    return start_server(
        sip, admin, 0 if name == "n1" else 1, "-c", str(cfg), "--id", OURS,
        "--set", "store.backend=redis", "--set", f"store.url={redis.url}", "--set", f"node.id={name}",
        "--set", f"node.lease_seconds={lease}", "--set", "media.workers=0",
        "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=",
    )  # fmt: skip


def wait_register(
    sup: Superior, after: int, port: int | None = None, timeout: float = 30.0
) -> tuple[float, int, str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for reg in sup.registers[after:]:
            if reg[3] != "0" and (port is None or reg[1] == port):
                return reg
        time.sleep(0.005)
    raise SystemExit("no REGISTER reached the superior")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lease", type=float, default=2.0, help="node.lease_seconds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--mode", choices=("kill", "term"), default="kill")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gb28181gw-bench-lease-"))
    redis = RedisServer(work / "redis")
    redis.start()
    sup = Superior()
    sup.start()
    cfg = work / "gw.toml"
    cfg.write_text(
        f'[[upstream]]\nname = "district"\nid = "{SUPERIOR}"\nhost = "127.0.0.1"\nport = {sup.port}\n'
        'password = "p"\nkeepalive_interval = 1\nretry_interval = 1.0\nretry_max = 2.0\n'
    )
    names = {"n1": (free_port(), free_port()), "n2": (free_port(), free_port())}
    procs = {n: start_node(n, sip, adm, redis, args.lease, cfg) for n, (sip, adm) in names.items()}
    times: list[float] = []
    try:
        reg = wait_register(sup, 0)
        for _ in range(args.rounds):
            holder = next(n for n, (sip, _) in names.items() if sip == reg[1])
            other = next(n for n in names if n != holder)
            seen = len(sup.registers)
            ended = time.monotonic()
            if args.mode == "kill":
                procs[holder].kill()
            else:
                procs[holder].send_signal(signal.SIGTERM)
            new = wait_register(sup, seen, names[other][0])
            assert new[2] != reg[2], "the survivor must register with a new Call-ID"
            times.append(new[0] - ended)
            procs[holder].wait(timeout=30)
            procs[holder] = start_node(holder, *names[holder], redis, args.lease, cfg)
            reg = new
            time.sleep(args.lease / 3)  # the restarted node is standing by
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        redis.stop()
    times.sort()
    worst = times[-1]
    print(f"load: {os.getloadavg()[0]:.2f}")
    print(f"lease TTL {args.lease:.1f} s, mode {args.mode}, {len(times)} rounds")
    print(f"failover (end of the holder -> the other node's REGISTER): p50 {statistics.median(times):.2f} s, "
          f"worst {worst:.2f} s = {worst / args.lease:.2f} x TTL")  # fmt: skip


if __name__ == "__main__":
    main()
