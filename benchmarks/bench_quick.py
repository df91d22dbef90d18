"""The quick path alone, in one process: µs of Python per REGISTER and per keepalive, and where they go.

A real :class:`~gb28181gw.app.Gateway` (SQLite store in a temporary directory, digest password,
127.0.0.1, port 0) is started, its UDP socket replaced by a sink that keeps what would be sent,
and the datagrams a storm would bring are fed straight into ``SipStack.feed`` + ``pump`` (what the
UDP transport does per datagram): for each of ``--devices`` devices a REGISTER, its 401, the
authenticated REGISTER and its 200; then ``--rounds`` keepalive MESSAGEs from each. Every request is
timed on its own (``perf_counter_ns``); the generator's own work (building messages, the MD5 answer
to a challenge) is outside the clock. No socket calls, no event-loop wake-ups: what this prints is
the quick path's own Python, the part of each request the work on issue 16 can cut.

Beside it, in the same run and on the same messages, the bare responder's per-request Python
(:class:`benchmarks/bare_responder.Responder.datagram_received`, its ``sendto`` a sink too): the
same-run baseline of the end-to-end benchmark, without its system calls.

``--stages`` times the steps again with a wrapper around each (a pass of its own: the wrappers
cost ~0.2 µs each), nested steps indented. ``--profile register|keepalive`` prints cProfile's
top functions for that phase instead.

``--compiled off|on|both`` runs the measurement from the ``.py`` sources (``GB28181GW_COMPILED=off``),
with the modules ``gb28181gw accelerate`` compiled (refused if that build is not used), or both, each
in a process of its own (a process imports a module once), then prints the two and the bare
responder side by side; the default, ``as-is``, measures whatever the environment gives, and the
first line says which. ``--stages`` needs the pure modules (it wraps methods, which a compiled class
refuses); cProfile sees a compiled function only as part of its Python caller.

    python benchmarks/bench_quick.py
    python benchmarks/bench_quick.py --stages
    python benchmarks/bench_quick.py --profile register
    python benchmarks/bench_quick.py --compiled both
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import hashlib
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop  # noqa: E402

from bare_responder import Responder  # noqa: E402
from gb28181gw import compiled  # noqa: E402
from gb28181gw.app import Gateway, tune_gc  # noqa: E402
from gb28181gw.config import load_config  # noqa: E402
from gb28181gw.sip.peer import Peer  # noqa: E402

PASSWORD = "12345678"
REALM = "3402000000"
URI = "sip:34020000002000000001@3402000000"
#: Source ports the devices share (the end-to-end generator's 64 sockets).
PORTS = 64

REGISTER = (
    "REGISTER {uri} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{lport};rport;branch=z9hG4bK-r-{n}-{k}\r\n"
    "From: <sip:{dev}@3402000000>;tag=t{n}\r\n"
    "To: <sip:{dev}@3402000000>\r\n"
    "Call-ID: reg-{n}@127.0.0.1\r\n"
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
    "Via: SIP/2.0/UDP 127.0.0.1:{lport};rport;branch=z9hG4bK-k-{n}-{r}\r\n"
    "From: <sip:{dev}@3402000000>;tag=k{n}\r\n"
    "To: <sip:34020000002000000001@3402000000>\r\n"
    "Call-ID: ka-{n}-{r}@127.0.0.1\r\n"
    "CSeq: 20 MESSAGE\r\n"
    "Content-Type: Application/MANSCDP+xml\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: {length}\r\n\r\n{body}"
)


def device_id(n: int) -> str:
    return f"3402000000132{n:07d}"


def register(n: int, k: int, auth: str = "") -> bytes:
    lport = 20000 + n % PORTS
    return REGISTER.format(uri=URI, lport=lport, n=n, k=k, dev=device_id(n), auth=auth).encode()


def keepalive(n: int, r: int) -> bytes:
    body = KEEPALIVE_BODY.format(sn=r + 1, dev=device_id(n))
    lport = 20000 + n % PORTS
    return MESSAGE.format(uri=URI, lport=lport, n=n, r=r, dev=device_id(n), length=len(body), body=body).encode()


def authorization(n: int, challenge: bytes) -> str:
    """The generator's answer to a 401 (outside the clock)."""
    nonce = challenge.split(b'nonce="', 1)[1].split(b'"', 1)[0].decode()
    ha1 = hashlib.md5(f"{device_id(n)}:{REALM}:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{URI}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    return (
        f'Authorization: Digest username="{device_id(n)}",realm="{REALM}",nonce="{nonce}",uri="{URI}",'
        f'response="{response}",algorithm=MD5\r\n'
    )


class Sink:
    """Stands in for the UDP transport (and the bare responder's): keeps the last datagram sent."""

    family = 2
    host = "127.0.0.1"

    def __init__(self) -> None:
        self.last = b""
        self.sent = 0

    def send(self, data: bytes, peer: Peer) -> None:
        self.last = data
        self.sent += 1

    def sendto(self, data: bytes, addr: object) -> None:
        self.last = data
        self.sent += 1

    def local_host(self, peer: Peer) -> str:
        return self.host

    def knows(self, peer: Peer) -> bool:
        return True

    def close(self) -> None:
        pass


def summary(name: str, ns: list[int]) -> str:
    us = sorted(x / 1000 for x in ns)
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    return (
        f"{name:<34} {statistics.fmean(us):7.2f} µs mean  {statistics.median(us):7.2f} p50  {p99:7.2f} p99"
        f"  ({len(us):,} requests)"
    )


class Stages:
    """Wrappers that add each call's time to a named stage (``--stages``)."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.depth: dict[str, int] = {}
        self._undo: list[tuple[object, str, Any]] = []
        self._items: list[tuple[dict[str, Any], str, Any]] = []

    def wrap(self, owner: object, attr: str, name: str, depth: int = 0) -> None:
        original = getattr(owner, attr)
        if isinstance(owner, type) and isinstance(owner.__dict__.get(attr), classmethod):
            raw = owner.__dict__[attr]
            self._undo.append((owner, attr, raw))
            fn = original

            @functools.wraps(fn)
            def timed_cls(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter_ns()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.ns[name] += time.perf_counter_ns() - t0
                    self.calls[name] += 1

            setattr(owner, attr, staticmethod(timed_cls))
        else:
            self._undo.append((owner, attr, owner.__dict__.get(attr) if hasattr(owner, "__dict__") else original))

            @functools.wraps(original)
            def timed(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter_ns()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.ns[name] += time.perf_counter_ns() - t0
                    self.calls[name] += 1

            setattr(owner, attr, timed)
        self.depth[name] = depth

    def wrap_item(self, mapping: dict[str, Any], key: str, name: str, depth: int = 0) -> None:
        """Time ``mapping[key]`` (a handler registered before the wrappers: the stack's quick handlers)."""
        original = mapping[key]

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return original(*args, **kwargs)
            finally:
                self.ns[name] += time.perf_counter_ns() - t0
                self.calls[name] += 1

        mapping[key] = timed
        self._items.append((mapping, key, original))
        self.depth[name] = depth

    def report(self, requests: int) -> list[str]:
        return [
            f"  {'  ' * self.depth[name]}{name:<{40 - 2 * self.depth[name]}} {self.ns[name] / requests / 1000:6.2f} µs"
            f" per request ({self.calls[name]:,} calls)"
            for name in self.ns
        ]

    def undo(self) -> None:
        for owner, attr, value in reversed(self._undo):
            if value is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, value)
        self._undo.clear()
        for mapping, key, original in self._items:
            mapping[key] = original
        self._items.clear()


async def start_gateway(tmp: str, quick: bool, extra: dict[str, str] | None = None) -> Gateway:
    """A gateway as this benchmark measures it (``extra``: more settings, for the benchmarks that reuse it)."""
    settings = {
        "store.path": f"{tmp}/gw.db",
        "sip.listen": "127.0.0.1",
        "sip.port": "0",
        "admin.port": "0",
        "registrar.password": PASSWORD,
        "registrar.quick_path": "true" if quick else "false",
        "devices.catalog_on_register": "false",
        "devices.subscribe": "",
        "media.workers": "0",
        **(extra or {}),
    }
    gw = Gateway(load_config(None, env={}, overrides=settings))
    await gw.start()
    sink = Sink()
    stack = gw.stack
    for t in stack._udp:
        t.close()
    stack._udp = [sink]  # type: ignore[list-item]
    stack._udp4 = sink  # type: ignore[assignment]
    return gw


def storm(gw: Gateway, devices: range, times: dict[str, list[int]]) -> None:
    """Each device: REGISTER → 401 → authenticated REGISTER → 200, each request timed."""
    stack = gw.stack
    sink: Sink = stack._udp4  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    peers = [Peer("UDP", "127.0.0.1", 20000 + p) for p in range(PORTS)]
    clock = time.perf_counter_ns
    challenge_ns, auth_ns = times["challenge"], times["auth"]
    for n in devices:
        peer = peers[n % PORTS]
        data = register(n, 1)
        t0 = clock()
        stack.feed(data, peer, loop.time())
        stack.pump()
        challenge_ns.append(clock() - t0)
        answer = sink.last
        if not answer.startswith(b"SIP/2.0 401"):
            raise SystemExit(f"device {n}: expected a 401, got {answer[:40]!r}")
        data = register(n, 2, authorization(n, answer))
        t0 = clock()
        stack.feed(data, peer, loop.time())
        stack.pump()
        auth_ns.append(clock() - t0)
        if not sink.last.startswith(b"SIP/2.0 200"):
            raise SystemExit(f"device {n}: expected a 200, got {sink.last[:40]!r}")


def keepalives(gw: Gateway, devices: range, rounds: range, times: list[int]) -> None:
    stack = gw.stack
    sink: Sink = stack._udp4  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    peers = [Peer("UDP", "127.0.0.1", 20000 + p) for p in range(PORTS)]
    clock = time.perf_counter_ns
    for r in rounds:
        batch = [keepalive(n, r) for n in devices]
        for n, data in zip(devices, batch, strict=True):
            t0 = clock()
            stack.feed(data, peers[n % PORTS], loop.time())
            stack.pump()
            times.append(clock() - t0)
        if not sink.last.startswith(b"SIP/2.0 200"):
            raise SystemExit(f"keepalive: expected a 200, got {sink.last[:40]!r}")


def bare(devices: range, rounds: int) -> dict[str, list[int]]:
    """The bare responder's per-request Python on the same messages."""
    r = Responder(PASSWORD)
    sink = Sink()
    r.transport = sink  # type: ignore[assignment]
    clock = time.perf_counter_ns
    times: dict[str, list[int]] = {"challenge": [], "auth": [], "keepalive": []}
    for n in devices:
        addr = ("127.0.0.1", 20000 + n % PORTS)
        data = register(n, 1)
        t0 = clock()
        r.datagram_received(data, addr)
        times["challenge"].append(clock() - t0)
        data = register(n, 2, authorization(n, sink.last))
        t0 = clock()
        r.datagram_received(data, addr)
        times["auth"].append(clock() - t0)
        if not sink.last.startswith(b"SIP/2.0 200"):
            raise SystemExit(f"bare: expected a 200, got {sink.last[:40]!r}")
    for k in range(rounds):
        batch = [keepalive(n, k) for n in devices]
        for n, data in zip(devices, batch, strict=True):
            t0 = clock()
            r.datagram_received(data, ("127.0.0.1", 20000 + n % PORTS))
            times["keepalive"].append(clock() - t0)
    return times


def stage_wrappers(gw: Gateway) -> Stages:
    from gb28181gw.gb import quick as gb_quick
    from gb28181gw.gb.registrar import Registrar
    from gb28181gw.manscdp import codec
    from gb28181gw.services import registrar as service
    from gb28181gw.sip import auth
    from gb28181gw.sip.endpoint import SipEndpoint
    from gb28181gw.sip.quick import QuickRequest

    s = Stages()
    s.wrap(QuickRequest, "scan", "QuickRequest.scan (reader)")
    s.wrap(SipEndpoint, "known", "endpoint.known (retransmission?)")
    s.wrap_item(gw.stack._quick, "REGISTER", "registrar._quick_register")
    s.wrap(service, "quick_register", "gb.quick.quick_register", 1)
    s.wrap(Registrar, "_admit", "Registrar._admit (policy)", 2)
    s.wrap(auth.NonceStore, "challenge", "NonceStore.challenge", 2)
    s.wrap(auth.Credentials, "parse", "Credentials.parse", 2)
    s.wrap(auth.NonceStore, "verify", "NonceStore.verify (digest)", 2)
    s.wrap(Registrar, "accept", "Registrar.accept (record)", 2)
    s.wrap(QuickRequest, "answer", "QuickRequest.answer (bytes)", 2)
    s.wrap(service.RegistrarService, "_registered", "registrar._registered (state)", 1)
    s.wrap_item(gw.stack._quick, "MESSAGE", "registrar._quick_message")
    s.wrap(service, "is_keepalive", "is_keepalive (body)", 1)
    s.wrap(gw.stack.router, "role_of", "router.role_of (sender)", 1)
    s.wrap(service.RegistrarService, "_kept_alive", "registrar._kept_alive (state)", 1)
    s.wrap(SipEndpoint, "complete", "endpoint.complete (Timer J)")
    s.wrap(gw.stack, "pump", "stack.pump (send)")
    del gb_quick, codec
    return s


async def run(args: argparse.Namespace) -> None:
    tune_gc()
    n = args.devices
    rounds = args.rounds
    with tempfile.TemporaryDirectory(prefix="bench-quick-") as tmp:
        gw = await start_gateway(tmp, quick=not args.general)
        label = compiled.label()  # the gateway has imported every module it serves with
        print(f"modules compiled by mypyc: {label}")
        if args.compiled == "on" and label == "none":
            raise SystemExit(f"--compiled on: no compiled module in use ({compiled.state().get('why')})")
        if args.stages and label != "none":
            raise SystemExit("--stages wraps methods, which a compiled class refuses: add --compiled off")
        try:
            times: dict[str, list[int]] = {"challenge": [], "auth": [], "keepalive": []}
            if args.profile:
                prof = cProfile.Profile()
                if args.profile == "register":
                    prof.enable()
                storm(gw, range(n), times)
                if args.profile == "register":
                    prof.disable()
                else:
                    prof.enable()
                    keepalives(gw, range(n), range(rounds), times["keepalive"])
                    prof.disable()
                stats = pstats.Stats(prof)
                stats.sort_stats("tottime").print_stats(args.top)
                return
            gc.collect()
            storm(gw, range(n), times)
            await asyncio.sleep(0)  # the write-behind and listeners get their turn, as between wake-ups
            keepalives(gw, range(n), range(rounds), times["keepalive"])
            stage_lines: list[str] = []
            if args.stages:
                s = stage_wrappers(gw)
                try:
                    storm(gw, range(n, 2 * n), {"challenge": [], "auth": []})
                    reg = s.report(2 * n)
                    s.ns.clear()
                    s.calls.clear()
                    keepalives(gw, range(n), range(rounds, 2 * rounds), [])
                    ka = s.report(n * rounds)
                finally:
                    s.undo()
                stage_lines = ["", "stages, REGISTER (per request: challenges and authenticated alike):", *reg]
                stage_lines += ["", "stages, keepalive:", *ka]
        finally:
            await gw.stop()
    base = bare(range(n), rounds)
    path = "general path (registrar.quick_path = false)" if args.general else "quick path"
    print(f"gb28181gw {path}, {n:,} devices, {rounds} keepalive rounds, in process (no sockets)")
    reg_ns = [a + b for a, b in zip(times["challenge"], times["auth"], strict=True)]
    base_reg = [a + b for a, b in zip(base["challenge"], base["auth"], strict=True)]
    print(summary("REGISTER 1 (challenged)", times["challenge"]))
    print(summary("REGISTER 2 (authenticated)", times["auth"]))
    print(summary("registration (both)", reg_ns))
    print(summary("keepalive", times["keepalive"]))
    print("bare responder, same run, same messages (its Python only):")
    print(summary("REGISTER 1 (challenged)", base["challenge"]))
    print(summary("REGISTER 2 (authenticated)", base["auth"]))
    print(summary("registration (both)", base_reg))
    print(summary("keepalive", base["keepalive"]))
    ratio_reg = statistics.median(base_reg) / statistics.median(reg_ns)
    ratio_ka = statistics.median(base["keepalive"]) / statistics.median(times["keepalive"])
    print(f"gateway / bare (p50 cost ratio, bare ÷ gateway): registration {ratio_reg:.2f}×, keepalive {ratio_ka:.2f}×")
    for line in stage_lines:
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3, help="keepalives per device")
    ap.add_argument("--stages", action="store_true", help="time each step too (a second pass)")
    ap.add_argument("--profile", choices=["register", "keepalive"], help="cProfile one phase instead")
    ap.add_argument("--top", type=int, default=30, help="functions --profile prints")
    ap.add_argument("--general", action="store_true", help="registrar.quick_path = false, for comparison")
    ap.add_argument(
        "--compiled",
        choices=["as-is", "off", "on", "both"],
        default="as-is",
        help="the .py sources (off), the build of `gb28181gw accelerate` (on), or both, each in its own process",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compiled == "as-is" or args.child:
        uvloop.run(run(args))
    else:
        compare(args, ["off", "on"] if args.compiled == "both" else [args.compiled])


def compare(args: argparse.Namespace, modes: list[str]) -> None:
    """Run the measurement once per mode, each in a child process, and print the p50s side by side."""
    p50: dict[str, dict[str, float]] = {}
    argv = [a for a in sys.argv[1:] if not a.startswith("--compiled")]
    if "--compiled" in sys.argv:
        i = sys.argv.index("--compiled")
        argv = sys.argv[1:i] + sys.argv[i + 2 :]
    for mode in modes:
        env = {**os.environ, "GB28181GW_COMPILED": mode}
        out = subprocess.run(
            [sys.executable, __file__, *argv, "--compiled", mode, "--child"],
            env=env,
            capture_output=True,
            text=True,
        )
        name = {"off": "pure", "on": "compiled"}[mode]
        print(f"==== {name} (GB28181GW_COMPILED={mode})")
        print(out.stdout, end="")
        if out.returncode != 0:
            raise SystemExit(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
        seen: dict[str, int] = {}
        for line in out.stdout.splitlines():
            for phase in ("registration (both)", "keepalive"):
                if line.startswith(phase + " "):
                    # first the gateway's line, then the bare responder's
                    who = name if seen.get(phase, 0) == 0 else f"bare ({name} run)"
                    seen[phase] = seen.get(phase, 0) + 1
                    p50.setdefault(who, {})[phase] = float(line.split("mean")[1].split()[0])
    if args.stages or args.profile:
        return
    print("==== p50 µs, same run")
    for who, phases in p50.items():
        print(f"{who:24} registration {phases['registration (both)']:7.2f}   keepalive {phases['keepalive']:6.2f}")
    if "pure" in p50 and "compiled" in p50:
        pure, comp = p50["pure"], p50["compiled"]
        print(
            f"compiled ÷ pure cost: registration {comp['registration (both)'] / pure['registration (both)']:.2f} "
            f"({pure['registration (both)'] / comp['registration (both)']:.2f}x faster), keepalive "
            f"{comp['keepalive'] / pure['keepalive']:.2f} ({pure['keepalive'] / comp['keepalive']:.2f}x faster)"
        )


if __name__ == "__main__":
    main()
