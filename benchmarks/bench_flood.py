"""A flooding address banned while 1,000 well-behaved devices keep their registrations (issue 15).

The gateway (`gb28181gw serve` on CPU 0, a digest password, the [flood] defaults but no
exempt network) serves 1,000 devices played by bench_register's generator on CPU 1, on 64
sockets from as many source addresses (127.0.1.1-64: loopback has every 127.x.y.z). A flooder
process, also on CPU 1, sends from its own address (127.0.0.2, .3, .4: one per flood, as a
ban outlasts the run) at --flood-rate datagrams/s for --seconds. Three floods:

  garbage   random bytes
  register  REGISTERs with random device IDs and Call-IDs
  invite    INVITEs from a stranger to random channels, with an SDP offer

For each, in the same run, the devices re-register (a storm at --rate) and send keepalives
(--keepalive-rate/s for --seconds) first without a flood, then during it; printed: the flood
rate sent, the packets it took to be banned, the packets dropped unread, the devices'
registration and keepalive success and latency percentiles, and the gateway's CPU.

    python benchmarks/bench_flood.py
    python benchmarks/bench_flood.py --flood-rate 20000 --seconds 5
    python benchmarks/bench_flood.py --unprotected    # the same floods with flood.enabled=false
    python benchmarks/bench_flood.py --guard          # the check alone, under 1,000,000 spoofed addresses
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import socket
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_options import cpu_seconds, free_port, start_server  # noqa: E402
from bench_register import KEEPALIVE_BODY, MESSAGE, PASSWORD, SOCKETS, URI, Devices, _field, device_id, storm  # noqa: E402

KINDS = ("garbage", "register", "invite")
DEVICE_HOSTS = tuple(f"127.0.1.{i}" for i in range(1, 65))

_SDP = (
    "v=0\r\no=34020000002000000001 0 0 IN IP4 {host}\r\ns=Play\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
    "m=video 30000 RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny=0100000001\r\n"
)


def flood_datagram(kind: str, i: int, host: str, port: int, rng: random.Random) -> bytes:
    """The ``i``-th datagram of flood ``kind`` from ``host``:``port``."""
    if kind == "garbage":
        return rng.randbytes(200)
    dev = f"3402000000132{rng.randrange(10**7):07d}"
    if kind == "register":
        return (
            f"REGISTER {URI} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK-f{i}\r\n"
            f"From: <sip:{dev}@3402000000>;tag=f{i}\r\nTo: <sip:{dev}@3402000000>\r\n"
            f"Call-ID: flood-{i}-{rng.random()}@{host}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{dev}@{host}:{port}>\r\n"
            "Max-Forwards: 70\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    sdp = _SDP.format(host=host)
    channel = f"3402000000131{rng.randrange(10**7):07d}"
    return (
        f"INVITE sip:{channel}@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK-i{i}\r\n"
        f"From: <sip:34020000002000000099@3402000000>;tag=i{i}\r\nTo: <sip:{channel}@3402000000>\r\n"
        f"Call-ID: invite-{i}-{rng.random()}@{host}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:34020000002000000099@{host}:{port}>\r\nSubject: {channel}:0,{dev}:0\r\n"
        f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def flood(kind: str, host: str, port: int, rate: float, seconds: float) -> int:
    """Send flood ``kind`` from ``host`` to 127.0.0.1:``port``, paced at ``rate``/s; return how many were sent."""
    rng = random.Random(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        lport = s.getsockname()[1]
        total = int(rate * seconds)
        sent = 0
        t0 = time.perf_counter()
        while sent < total:
            due = min(total, int((time.perf_counter() - t0) * rate) + 1)
            while sent < due:
                s.sendto(flood_datagram(kind, sent, host, lport, rng), ("127.0.0.1", port))
                sent += 1
            time.sleep(0.0005)
    return sent


def _flood_process(kind: str, host: str, port: int, rate: float, seconds: float, out: multiprocessing.Queue) -> None:
    os.sched_setaffinity(0, {1})
    out.put(flood(kind, host, port, rate, seconds))


def keepalive_latencies(devs: Devices, port: int, count: int, rate: float, seconds: float) -> dict[str, float]:
    """Keepalives from devices 0..count-1 (round robin) at ``rate``/s: success and latency percentiles."""
    dest = ("127.0.0.1", port)
    total = int(rate * seconds)
    started = [0.0] * total
    done = [0.0] * total
    sent = 0
    t0 = time.perf_counter()

    def collect(timeout: float) -> None:
        for data in devs.recv_all(timeout):
            if data.startswith(b"SIP/2.0 200") and b"branch=z9hG4bK-k-" in data:
                n = int(_field(data, b"branch=z9hG4bK-k-", b"-"))
                if n < total and not done[n]:
                    done[n] = time.perf_counter()

    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            d = sent % count
            dev = device_id(d)
            body = KEEPALIVE_BODY.format(sn=sent, dev=dev)
            msg = MESSAGE.format(uri=URI, lport=devs.ports[d % SOCKETS], n=sent, dev=dev, length=len(body), body=body)
            started[sent] = time.perf_counter()
            try:
                devs.socks[d % SOCKETS].sendto(msg.encode(), dest)
            except BlockingIOError:
                pass
            sent += 1
        collect(0)
    end = time.perf_counter() + 3
    while not all(done) and time.perf_counter() < end:
        collect(0.05)
    latencies = sorted((d - s) * 1000 for d, s in zip(done, started, strict=True) if d)
    ok = len(latencies)
    return {
        "ok_pct": 100.0 * ok / total,
        "p50_ms": latencies[ok // 2] if ok else float("nan"),
        "p99_ms": latencies[int(ok * 0.99)] if ok else float("nan"),
    }


def scrape(admin_port: int) -> dict[str, float]:
    """The flood families and the online count from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for name in (
        "gb28181gw_sip_flood_dropped_total",
        "gb28181gw_sip_flood_bans_total",
        "gb28181gw_sip_parse_errors_total",
    ):
        out[name] = sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))
    m = re.search(r'^gb28181gw_devices\{state="online"\} (\S+)$', text, re.M)
    out["online"] = float(m.group(1)) if m else 0.0
    return out


def phase(
    devs: Devices, pid: int, port: int, n: int, step: int, args: argparse.Namespace
) -> tuple[dict[str, float], dict[str, float], float]:
    """Re-register every device, then keepalives: (registration figures, keepalive figures, gateway CPU %)."""
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    reg = storm(devs, port, 0, n, args.rate, step=step)
    ka = keepalive_latencies(devs, port, n, args.keepalive_rate, args.seconds)
    cpu = 100.0 * (cpu_seconds(pid) - c0) / (time.perf_counter() - t0)
    return reg, ka, cpu


def guard_cost(spoofed: int = 1_000_000) -> None:
    """The check alone (no sockets), in one run: ns per datagram from one address under its limit
    (the baseline), from ``spoofed`` addresses one datagram each (past the table's cap, each pushes
    out the oldest), from a banned address; then the time to end 16,384 bans at once, and the
    memory the guard holds (tracemalloc) after ``spoofed`` addresses each got themselves banned."""
    import tracemalloc

    from gb28181gw.sip.flood import MAX_BANS, FloodGuard

    def new(limit: int = 100) -> FloodGuard:
        return FloodGuard(window=2.0, limit=limit, known_limit=2000, ban=300.0)

    hosts = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(spoofed)]

    def per_datagram(g: FloodGuard, sources: list[str]) -> float:
        t0 = time.perf_counter()
        for i, h in enumerate(sources):
            g.admit(h, i * 1e-6)
        return (time.perf_counter() - t0) / len(sources) * 1e9

    one = ["192.0.2.1"] * spoofed
    g = new()
    g.window = 1e-4  # a new window every 100 datagrams: the address stays under its limit
    print(f"one address under its limit: {per_datagram(g, one):.0f} ns/datagram (baseline)")
    print(f"{spoofed:,} spoofed addresses, one datagram each: {per_datagram(new(), hosts):.0f} ns/datagram")
    g = new(limit=1)
    g.admit("192.0.2.1", 0.0), g.admit("192.0.2.1", 0.0)
    print(f"a banned address: {per_datagram(g, one):.0f} ns/datagram")
    g = new(limit=1)
    for h in hosts[:MAX_BANS]:
        g.admit(h, 0.0), g.admit(h, 0.0)
    g.take_events()
    t0 = time.perf_counter()
    g.expire(301.0)
    print(f"ending {MAX_BANS:,} bans at once: {(time.perf_counter() - t0) * 1e3:.1f} ms")
    for limit, what in ((100, "counted"), (1, "banned")):
        tracemalloc.start()
        g = new(limit)
        for h in hosts:
            g.admit(h, 0.0), g.admit(h, 0.0)
            g.take_events()  # as the stack does after each batch
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        print(
            f"{spoofed:,} spoofed addresses {what}: {g.banned_count:,} bans, {g.tracked:,} counted, {held / 1e6:.1f} MB"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=500, help="registrations/s of the devices' storm")
    ap.add_argument("--keepalive-rate", type=float, default=500)
    ap.add_argument("--flood-rate", type=float, default=10_000, help="flood datagrams/s")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--unprotected", action="store_true", help="flood.enabled=false: what the limits spare")
    ap.add_argument("--guard", action="store_true", help="time the per-datagram check alone (no gateway)")
    args = ap.parse_args()
    if args.guard:
        guard_cost()
        return
    os.sched_setaffinity(0, {1})
    sip_port, admin_port = free_port(socket.SOCK_DGRAM), free_port()
    quiet = ("--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=")
    proc = start_server(
        sip_port,
        admin_port,
        0,
        "--set",
        f"registrar.password={PASSWORD}",
        "--set",
        "flood.exempt=",
        "--set",
        f"flood.enabled={'false' if args.unprotected else 'true'}",
        *quiet,
    )
    pid = proc.pid
    devs = Devices(DEVICE_HOSTS)
    n = args.devices
    try:
        first = storm(devs, sip_port, 0, n, args.rate, step=0)
        print(
            f"{first['completed']:.0f} of {n} devices registered from {len(DEVICE_HOSTS)} addresses; gateway on CPU 0"
        )
        print(
            f"{'flood':>8} {'phase':>8} {'sent/s':>7} {'to ban':>6} {'dropped':>8} {'reg ok %':>8} {'reg p50':>7} "
            f"{'reg p99':>7} {'ka ok %':>7} {'ka p50':>6} {'ka p99':>6} {'CPU %':>5} {'online':>6}"
        )
        step = 1
        for k, kind in enumerate(args.kinds.split(",")):
            reg, ka, cpu = phase(devs, pid, sip_port, n, step, args)
            print(f"{kind:>8} {'quiet':>8} {'':>7} {'':>6} {'':>8} {100 - reg['failure_pct']:>8.2f} {reg['p50_ms']:>7.1f} "
                  f"{reg['p99_ms']:>7.1f} {ka['ok_pct']:>7.2f} {ka['p50_ms']:>6.1f} {ka['p99_ms']:>6.1f} {cpu:>5.0f} "
                  f"{scrape(admin_port)['online']:>6.0f}")  # fmt: skip
            before = scrape(admin_port)
            out: multiprocessing.Queue = multiprocessing.Queue()
            flooder = multiprocessing.Process(
                target=_flood_process, args=(kind, f"127.0.0.{2 + k}", sip_port, args.flood_rate, args.seconds, out)
            )
            t0 = time.perf_counter()
            flooder.start()
            time.sleep(0.2)  # the flood is under way
            reg, ka, cpu = phase(devs, pid, sip_port, n, step + 1, args)
            sent = out.get()
            flooder.join()
            span = time.perf_counter() - t0
            after = scrape(admin_port)
            dropped = after["gb28181gw_sip_flood_dropped_total"] - before["gb28181gw_sip_flood_dropped_total"]
            print(f"{kind:>8} {'flooded':>8} {sent / min(span, args.seconds):>7.0f} {sent - dropped:>6.0f} {dropped:>8.0f} "
                  f"{100 - reg['failure_pct']:>8.2f} {reg['p50_ms']:>7.1f} {reg['p99_ms']:>7.1f} {ka['ok_pct']:>7.2f} "
                  f"{ka['p50_ms']:>6.1f} {ka['p99_ms']:>6.1f} {cpu:>5.0f} {after['online']:>6.0f}")  # fmt: skip
            step += 2
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/api/v1/bans", timeout=5) as r:
            banned = sorted(b["address"] for b in json.load(r)["flood"])
        of_devices = [a for a in banned if a in DEVICE_HOSTS]
        print(f"flood bans: {len(banned)} ({', '.join(banned)}); of the devices' addresses: {len(of_devices)}")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
