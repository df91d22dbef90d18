"""Registration storm, keepalive load and memory per device, against a real `gb28181gw serve`.

The gateway runs pinned to CPU 0 with a digest password; a generator on CPU 1 plays
N distinct devices over UDP (64 sockets), paced, without retransmissions (a lost
answer is a failure):

  storm      each device sends REGISTER, answers the 401 with an MD5 digest, gets 200:
             two requests per registration. Prints registrations/s completed with
             < 1 % failures at rising offered rates, and the seconds until all N are online.
  keepalive  N registered devices send keepalive MESSAGEs at rising rates.
  memory     registers --devices devices (default 100,000), waits for Timer J to empty the
             completed-transaction table, and prints the gateway's RSS per device.

--target (storm, keepalive): ``gateway``, ``bare`` (benchmarks/bare_responder.py: uvloop, MD5
digest challenge and check, 200 to MESSAGE; nothing else) or ``both`` (the default: the gateway's
steps, then the bare responder's with the same generator, pinning and rates, and the two best
steps side by side). ``gen CPU %`` is the generator's own share of CPU 1: near 100 it is the limit.
``kernel``: the part of the CPU per item the kernel spent for the server (its socket calls,
and on loopback the delivery of each answer to the generator's socket), the rest being its own code.

--compiled (storm, keepalive, memory): ``off`` runs the gateway from its ``.py`` sources
(``GB28181GW_COMPILED=off``), ``on`` with the modules ``gb28181gw accelerate`` compiled (refused
if that build is not used: see its start-up line), ``both`` the gateway twice, pure then compiled,
before the bare responder; ``as-is`` (the default) whatever the environment gives. Each gateway's
header line says which it ran, from its ``gb28181gw_build_info{compiled=...}``.

--repeat R (storm, keepalive): the targets take turns R times (gateway, bare, gateway, bare ...), each
repetition's fastest steps side by side, then the medians and the median of the repetitions' ratios.
On a machine whose speed drifts within the hour (the machine of 2026-12-04: the same build's storm
from 15,400/s to 11,600/s in forty minutes), a ratio is only as good as the conditions its two sides
shared; the issue's own measurements took three repetitions and their medians.

    python benchmarks/bench_register.py storm
    python benchmarks/bench_register.py keepalive
    python benchmarks/bench_register.py memory --devices 100000
    python benchmarks/bench_register.py storm --compiled both
    python benchmarks/bench_register.py keepalive --compiled on --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import selectors
import socket
import subprocess
import sys
import time
import urllib.request
from array import array
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_options import cpu_split, free_port, rss_mib, start_server  # noqa: E402

PASSWORD = "12345678"
REALM = "3402000000"
URI = "sip:34020000002000000001@3402000000"
SOCKETS = 64
EXTRA: list[str] = os.environ.get("BENCH_SERVE_ARGS", "").split()

REGISTER = (
    "REGISTER {uri} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{lport};rport;branch=z9hG4bK-r{step}-{n}-{k}\r\n"
    "From: <sip:{dev}@3402000000>;tag=t{n}\r\n"
    "To: <sip:{dev}@3402000000>\r\n"
    "Call-ID: reg-{step}-{n}@127.0.0.1\r\n"
    "CSeq: {k} REGISTER\r\n"
    "Contact: <sip:{dev}@127.0.0.1:{lport}>\r\n"
    "{auth}"
    "Max-Forwards: 70\r\n"
    "User-Agent: IP Camera\r\n"
    "Expires: 3600\r\n"
    "Content-Length: 0\r\n\r\n"
)
KEEPALIVE_BODY = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>{sn}</SN>\r\n'
    "<DeviceID>{dev}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
)
MESSAGE = (
    "MESSAGE {uri} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{lport};rport;branch=z9hG4bK-k-{n}-\r\n"
    "From: <sip:{dev}@3402000000>;tag=k{n}\r\n"
    "To: <sip:34020000002000000001@3402000000>\r\n"
    "Call-ID: ka-{n}@127.0.0.1\r\n"
    "CSeq: 20 MESSAGE\r\n"
    "Content-Type: Application/MANSCDP+xml\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: {length}\r\n\r\n{body}"
)


def device_id(n: int) -> str:
    return f"3402000000132{n:07d}"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


HA2 = md5(f"REGISTER:{URI}")


class Devices:
    """The generator's sockets, bound to ``hosts`` in turn (loopback has every 127.x.y.z: several
    source addresses play devices behind as many NATs, each under a per-address flood limit)."""

    def __init__(self, hosts: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.sel = selectors.DefaultSelector()
        self.socks = []
        for i in range(SOCKETS):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            s.bind((hosts[i % len(hosts)], 0))
            s.setblocking(False)
            self.socks.append(s)
            self.sel.register(s, selectors.EVENT_READ)
        self.ports = [s.getsockname()[1] for s in self.socks]

    def recv_all(self, timeout: float) -> list[bytes]:
        out = []
        for key, _ in self.sel.select(timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            while True:
                try:
                    out.append(sock.recv(65535))
                except BlockingIOError:
                    break
        return out


def _field(data: bytes, start: bytes, end: bytes) -> bytes:
    i = data.find(start)
    if i < 0:
        return b""
    i += len(start)
    return data[i : data.find(end, i)]


def storm(
    devs: Devices,
    port: int,
    first: int,
    count: int,
    rate: float,
    *,
    step: int,
    wait: float = 3.0,
    ids: list[str] | None = None,
    completed_at: list[float] | None = None,
) -> dict[str, float]:
    """Register devices first..first+count-1 at ``rate`` registrations/s; return the figures.

    Every message is built before the clock starts but for the digest (the nonce comes with the
    401): the generator must not be what limits a run (``generator_cpu_pct`` tells). A device
    answered ``302`` (a registration director, GB/T 28181-2022 §9.1.2.3) sends its first REGISTER
    again to the port the Contact names and goes on there, as devices following a redirect do.
    ``ids`` (``count`` of them) instead of devices first..: whichever devices; ``completed_at``
    gets each one's ``time.perf_counter()`` at its 200 (0.0: none came).
    """
    dest = ("127.0.0.1", port)
    dests = [dest] * count
    started = [0.0] * count
    done = [0.0] * count
    completed = 0
    sent = 0
    socks = devs.socks
    # the first REGISTER of each device, and its second split where the Authorization goes
    firsts: list[bytes] = []
    seconds: list[tuple[bytes, bytes]] = []
    auth_heads: list[bytes] = []
    for n in range(count):
        dev = ids[n] if ids else device_id(first + n)
        fields = {"uri": URI, "lport": devs.ports[n % SOCKETS], "step": step, "n": n, "dev": dev}
        firsts.append(REGISTER.format(k=1, auth="", **fields).encode())
        head, tail = REGISTER.format(k=2, auth="\0", **fields).encode().split(b"\0")
        seconds.append((head, tail))
        ha1 = md5(f"{dev}:{REALM}:{PASSWORD}").encode()
        auth_heads.append(ha1)
    prefix = f'Authorization: Digest username="{{}}",realm="{REALM}",nonce="'
    suffix = f'",uri="{URI}",response="'.encode()
    tag = b"branch=z9hG4bK-r" + str(step).encode() + b"-"
    ha2 = b":" + HA2.encode()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    last_activity = t0

    def send(n: int, data: bytes) -> None:
        try:
            socks[n % SOCKETS].sendto(data, dests[n])
        except BlockingIOError:
            pass

    while True:
        now = time.perf_counter()
        due = min(count, int((now - t0) * rate) + 1)
        while sent < due:
            started[sent] = now
            send(sent, firsts[sent])
            sent += 1
        # wait for answers until the next send is due (not a busy loop: the generator's CPU
        # then tells what its work costs; epoll rounds up to 1 ms, so sends go in 1 ms bursts)
        timeout = max(0.0, t0 + sent / rate - time.perf_counter()) if sent < count else 0.05
        for data in devs.recv_all(timeout):
            last_activity = time.perf_counter()
            if not data.startswith(b"SIP/2.0 "):
                continue  # a request from the gateway (these devices answer nothing)
            n = int(_field(data, tag, b"-"))
            if data.startswith(b"SIP/2.0 401"):
                nonce = _field(data, b'nonce="', b'"')
                response = hashlib.md5(auth_heads[n] + b":" + nonce + ha2).hexdigest().encode()
                head, tail = seconds[n]
                auth = prefix.format(ids[n] if ids else device_id(first + n)).encode() + nonce + suffix + response
                send(n, head + auth + b'",algorithm=MD5\r\n' + tail)
            elif data.startswith(b"SIP/2.0 302"):
                contact = _field(data, b"\r\nContact: <sip:", b">")
                dests[n] = ("127.0.0.1", int(contact.rsplit(b":", 1)[1]))
                send(n, firsts[n])
            elif data.startswith(b"SIP/2.0 200") and not done[n]:
                done[n] = last_activity
                completed += 1
        if sent >= count and (completed >= count or time.perf_counter() - last_activity > wait):
            break
    if completed_at is not None:
        completed_at[:] = done
    finished = [d for d in done if d]
    span = (max(finished) - t0) if finished else float("nan")
    latencies = sorted((d - s) * 1000 for d, s in zip(done, started, strict=True) if d)
    return {
        "offered": rate,
        "devices": count,
        "completed": completed,
        "failure_pct": 100.0 * (count - completed) / count,
        "registrations_per_s": completed / span if finished else 0.0,
        "all_online_s": span,
        "p50_ms": latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
        "generator_cpu_pct": 100.0 * (time.process_time() - cpu0) / (time.perf_counter() - t0),
    }


def _count_answers(
    datagrams: list[bytes], answered: bytearray, sent_at: array, latencies: list[float], base: int
) -> int:
    """Mark 200s to keepalives by their request number, noting each one's latency; return how many were new."""
    new = 0
    now = time.perf_counter()
    for data in datagrams:
        if data.startswith(b"SIP/2.0 200"):
            n = int(_field(data, b"branch=z9hG4bK-k-", b"-")) - base
            if 0 <= n < len(answered) and not answered[n]:
                answered[n] = 1
                latencies.append(now - sent_at[n])
                new += 1
    return new


def keepalives(
    devs: Devices, port: int, first: int, count: int, rate: float, seconds: float, *, base: int = 0
) -> dict[str, float]:
    """Send keepalives from devices first..first+count-1 (round robin) at ``rate``/s.

    Request ``i`` is number ``base + i`` (its branch and Call-ID): each step needs a ``base`` of its
    own, or its keepalives are retransmissions of the previous step's, which the gateway absorbs
    (it answers again from its completed transactions, for 32 s) without handling them.
    Latency is from the send to the 200's arrival, per keepalive (answered ones only)."""
    dest = ("127.0.0.1", port)
    total = int(rate * seconds)
    answered = bytearray(total)
    sent_at = array("d", bytes(8 * total))
    latencies: list[float] = []
    ok = 0
    sent = 0
    t0 = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            d = sent % count
            dev = device_id(first + d)
            body = KEEPALIVE_BODY.format(sn=sent, dev=dev)
            msg = MESSAGE.format(
                uri=URI, lport=devs.ports[d % SOCKETS], n=base + sent, dev=dev, length=len(body), body=body
            )
            sent_at[sent] = time.perf_counter()
            try:
                devs.socks[d % SOCKETS].sendto(msg.encode(), dest)
            except BlockingIOError:
                pass
            sent += 1
        ok += _count_answers(devs.recv_all(0), answered, sent_at, latencies, base)
    span = time.perf_counter() - t0
    end = time.perf_counter() + 3
    while ok < total and time.perf_counter() < end:
        ok += _count_answers(devs.recv_all(0.05), answered, sent_at, latencies, base)
    latencies.sort()
    nan = float("nan")
    return {
        "offered": rate,
        "sent": total,
        "answered": ok,
        "failure_pct": 100.0 * (total - ok) / total,
        "keepalives_per_s": ok / span,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else nan,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else nan,
        "max_ms": latencies[-1] * 1000 if latencies else nan,
    }


COMPILED_ENV = {"gateway (pure)": "off", "gateway (compiled)": "on"}


def compiled_label(admin_port: int) -> str:
    """The modules compiled by mypyc the gateway runs (``gb28181gw_build_info{compiled=...}``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("gb28181gw_build_info{"):
                return line.split('compiled="', 1)[1].split('"', 1)[0]
    return "?"


def start_target(target: str, sip_port: int, admin_port: int) -> subprocess.Popen[bytes]:
    """The gateway (``gb28181gw serve``) or the bare responder, pinned to CPU 0 alike."""
    if target in COMPILED_ENV:  # the child inherits it (bench_options.start_server)
        os.environ["GB28181GW_COMPILED"] = COMPILED_ENV[target]
    if target == "bare":
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve().parent / "bare_responder.py"),
             "--port", str(sip_port), "--password", PASSWORD],
            preexec_fn=lambda: os.sched_setaffinity(0, {0}),
        )  # fmt: skip
        time.sleep(1.0)  # uvloop and a bound socket: up well within a second
        return proc
    # the registrar alone: no catalog queries or subscriptions toward the generator's devices
    quiet = ("--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=")
    proc = start_server(sip_port, admin_port, 0, "--set", f"registrar.password={PASSWORD}", *quiet, *EXTRA)
    label = compiled_label(admin_port)
    print(f"gateway modules compiled by mypyc: {label}")
    if target == "gateway (compiled)" and label == "none":
        proc.kill()
        raise SystemExit("--compiled on: the gateway runs no compiled module (`gb28181gw accelerate --check` says why)")
    return proc


def histograms(admin_port: int, *names: str) -> dict[str, list[tuple[float, float]]]:
    """Cumulative buckets (upper bound, count) of the gateway's histograms ``names``, from /metrics,
    sorted; the first item is (-1, the sum of the observations)."""
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            for name in names:
                if line.startswith(name + '_bucket{le="'):
                    le = line[len(name) + 12 : line.index('"', len(name) + 12)]
                    out[name].append((float(le), float(line.rsplit(" ", 1)[1])))
                elif line.startswith(name + "_sum "):
                    out[name].append((-1.0, float(line.rsplit(" ", 1)[1])))
    return {name: sorted(buckets) for name, buckets in out.items()}


def worst(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> str:
    """The bucket of the longest observation between two scrapes of a histogram, in ms ("-" if none)."""
    diff = [(le, a - b) for (le, a), (_, b) in zip(after[1:], before[1:], strict=True)]
    if not diff or diff[-1][1] == 0:
        return "-"
    lower = 0.0
    for le, n in diff:
        if n == diff[-1][1]:
            return f"{lower * 1000:g}-{le * 1000:g}" if le != float("inf") else f">{lower * 1000:g}"
        lower = le
    return "-"  # pragma: no cover - the +Inf bucket holds every observation


def total_ms(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float:
    """Milliseconds observed by a histogram between two scrapes (its sum's growth)."""
    return (after[0][1] - before[0][1]) * 1000 if after else float("nan")


LAG, GC = "gb28181gw_event_loop_lag_seconds", "gb28181gw_gc_pause_seconds"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["storm", "keepalive", "memory"])
    ap.add_argument("--devices", type=int, default=None)
    ap.add_argument("--rates", default=None)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=3000, help="memory: registrations/s while filling")
    ap.add_argument(
        "--target",
        choices=["gateway", "bare", "both"],
        default="both",
        help="storm, keepalive: the gateway, benchmarks/bare_responder.py, or both one after the other",
    )
    ap.add_argument(
        "--compiled",
        choices=["as-is", "off", "on", "both"],
        default="as-is",
        help="the gateway from its .py sources (off), compiled by `gb28181gw accelerate` (on), or both in turn",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the targets in turn this many times (gateway, bare, gateway, bare ...) and print the medians",
    )
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat: at least 1")
    os.sched_setaffinity(0, {1})
    gateways = {"as-is": ["gateway"], "off": ["gateway (pure)"], "on": ["gateway (compiled)"]}.get(
        args.compiled, ["gateway (pure)", "gateway (compiled)"]
    )
    if args.mode == "memory":
        targets = gateways  # the bare responder keeps no devices
    else:
        targets = gateways + ["bare"] if args.target == "both" else gateways if args.target == "gateway" else ["bare"]
    # the targets take turns, repetition after repetition: on a machine whose speed drifts within
    # the hour, one target's steps all run before the other's were measured under other conditions
    results: dict[str, list[tuple[float, float]]] = {target: [] for target in targets}
    for k in range(args.repeat):
        if args.repeat > 1:
            print(f"==== repetition {k + 1} of {args.repeat}")
        for target in targets:
            results[target].append(run_target(args, target))
        summarize({target: runs[-1] for target, runs in results.items()}, gateways)
    if args.repeat > 1 and "bare" in results:
        print(f"==== medians of {args.repeat} repetitions (the ratio: the median of each repetition's)")
        bare_runs = results["bare"]
        for name in gateways:
            if name in results:
                runs = results[name]
                ratios = [gw[0] / bare[0] for gw, bare in zip(runs, bare_runs, strict=True) if bare[0]]
                print(f"{name} {median([r[0] for r in runs]):,.0f}/s at {median([r[1] for r in runs]):.1f} µs CPU each, "
                      f"bare responder {median([r[0] for r in bare_runs]):,.0f}/s at "
                      f"{median([r[1] for r in bare_runs]):.1f} µs: {median(ratios) if ratios else 0.0:.2f}x "
                      f"(each: {', '.join(f'{x:.2f}' for x in ratios)})")  # fmt: skip


def summarize(best: dict[str, tuple[float, float]], gateways: list[str]) -> None:
    """One repetition's fastest steps with < 1 % failures, each gateway's beside the bare responder's."""
    if "bare" in best and best["bare"][0]:
        bare, bare_cpu = best["bare"]
        for name in gateways:
            if name in best:
                gw, gw_cpu = best[name]
                print(f"fastest step with < 1 % failures: {name} {gw:,.0f}/s at {gw_cpu:.1f} µs CPU each, "
                      f"bare responder {bare:,.0f}/s at {bare_cpu:.1f} µs: {gw / bare:.2f}x")  # fmt: skip


def run_target(args: argparse.Namespace, target: str) -> tuple[float, float]:
    """Run ``args.mode`` against ``target``; return the fastest step's rate (< 1 % failures) and its CPU µs per item."""
    sip_port, admin_port = free_port(socket.SOCK_DGRAM), free_port()
    proc = start_target(target, sip_port, admin_port)
    pid = proc.pid
    devs = Devices()
    best = (0.0, 0.0)
    print(f"== {target}")
    try:
        if args.mode == "storm":
            n = args.devices or 10_000
            print(
                f"registration storm: {n} distinct devices per step, digest MD5, {target} on CPU 0, generator on CPU 1"
            )
            print(
                f"{'offered reg/s':>13} {'completed':>9} {'fail %':>7} {'reg/s':>8} {'all online s':>13} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/reg':>10} {'kernel':>6} {'gen CPU %':>9}"
            )
            for step, rate in enumerate(
                float(r) for r in (args.rates or "5000,10000,15000,20000,25000,30000").split(",")
            ):
                u0, k0 = cpu_split(pid)
                r = storm(devs, sip_port, step * n, n, rate, step=step)
                u1, k1 = cpu_split(pid)
                cpu = (u1 + k1 - u0 - k0) / max(r["completed"], 1) * 1e6
                kernel = (k1 - k0) / max(r["completed"], 1) * 1e6
                print(f"{rate:>13.0f} {r['completed']:>9.0f} {r['failure_pct']:>7.2f} {r['registrations_per_s']:>8.0f} "
                      f"{r['all_online_s']:>13.2f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {cpu:>10.0f} {kernel:>6.0f} "
                      f"{r['generator_cpu_pct']:>9.0f}")  # fmt: skip
                if r["failure_pct"] >= 1.0:
                    break
                if r["registrations_per_s"] > best[0]:
                    best = (r["registrations_per_s"], cpu)
                time.sleep(2)
        elif args.mode == "keepalive":
            n = args.devices or 10_000
            r = storm(devs, sip_port, 0, n, 2000, step=0)
            print(f"{r['completed']:.0f} of {n} devices registered; keepalives from them, round robin:")
            print("(loop stall, GC pause: the bucket of the longest, in ms, from the gateway's own histograms;")
            print(" GC ms: the time it spent collecting garbage during the step)")
            print(f"{'offered/s':>10} {'answered':>9} {'fail %':>7} {'keepalives/s':>13} {'CPU µs/each':>12} "
                  f"{'kernel':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'loop stall':>10} {'GC pause':>9} {'GC ms':>6}")  # fmt: skip
            rates = [float(x) for x in (args.rates or "5000,10000,15000,18000,20000,22000").split(",")]
            for step, rate in enumerate(rates):
                # the bare responder has no /metrics: its stall columns stay "-"
                h0 = histograms(admin_port, LAG, GC) if target != "bare" else {LAG: [], GC: []}
                u0, k0 = cpu_split(pid)
                k = keepalives(devs, sip_port, 0, n, rate, args.seconds, base=step * 100_000_000)
                u1, k1 = cpu_split(pid)
                cpu = (u1 + k1 - u0 - k0) / max(k["answered"], 1) * 1e6
                kernel = (k1 - k0) / max(k["answered"], 1) * 1e6
                h1 = histograms(admin_port, LAG, GC) if target != "bare" else h0
                print(f"{rate:>10.0f} {k['answered']:>9.0f} {k['failure_pct']:>7.2f} {k['keepalives_per_s']:>13.0f} "
                      f"{cpu:>12.1f} {kernel:>6.1f} {k['p50_ms']:>7.2f} {k['p99_ms']:>7.2f} {k['max_ms']:>7.1f} "
                      f"{worst(h0[LAG], h1[LAG]):>10} {worst(h0[GC], h1[GC]):>9} {total_ms(h0[GC], h1[GC]):>6.0f}")  # fmt: skip
                if k["failure_pct"] >= 1.0:
                    break
                if k["keepalives_per_s"] > best[0]:
                    best = (k["keepalives_per_s"], cpu)
                time.sleep(1)
        else:
            n = args.devices or 100_000
            time.sleep(1)
            base = rss_mib(pid)
            r = storm(devs, sip_port, 0, n, args.rate, step=0)
            print(
                f"registered {r['completed']:.0f} of {n} devices in {r['all_online_s']:.1f} s; RSS {rss_mib(pid):.0f} MiB"
            )
            print("waiting 40 s for Timer J (32 s) to retire the completed transactions ...")
            time.sleep(40)
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
                online = [
                    line
                    for line in resp.read().decode().splitlines()
                    if line.startswith('gb28181gw_devices{state="online"}')
                ]
            rss = rss_mib(pid)
            print(f"{online[0] if online else ''}")
            print(
                f"RSS before {base:.0f} MiB, after {rss:.0f} MiB: {(rss - base) * 1024 / max(r['completed'], 1):.2f} KiB per registered device"
            )
    finally:
        proc.terminate()
        proc.wait(30)
        for sock in devs.socks:
            sock.close()
    return best


if __name__ == "__main__":
    main()
