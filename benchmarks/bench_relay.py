"""Relay throughput, fan-out, worker scaling and INVITE setup latency on loopback.

    python benchmarks/bench_relay.py [--seconds 4] [--only blast,paced,fanout,workers,setup] [--keyframes]
                                     [--compiled as-is|off|on|both] [--pin cross|none] [--repeat 1]

The load comes from ``rtpgen`` (benchmarks/rtpgen.c, built here with gcc: sendmmsg and
recvmmsg, so the generator costs far less CPU than what it measures). The relay is the
gateway's own relay worker process (``WorkerRelay``: the forwarder on uvloop), driven as
the stream service drives it; its CPU time comes from the worker itself (getrusage). A
bare relay loop (uvloop, ``recvfrom_into`` into one buffer, ``sendto``; no statistics,
no SSRC check or rewrite, no PS inspection) runs under the same load in the same run.
Packets are 1,400 bytes; with ``--keyframes`` every packet that starts a timestamp opens a
key frame (an SPS), so the relay also keeps a copy of every packet for consumers that join
(``media.gop_cache``), its costliest case. "0 loss" means the sink saw every packet the sender handed to
the kernel. CPU µs per packet = relay CPU seconds / packets relayed.

--compiled: ``off`` runs the relay worker from its ``.py`` sources (``GB28181GW_COMPILED=off``),
``on`` with the modules ``gb28181gw accelerate`` compiled (the forwarder and the stream statistics
among them; refused if that build is not used), ``both`` the gateway's rows twice, pure then
compiled, in the same run as the bare loops and the C relay; ``as-is`` (the default) whatever the
environment gives. Each row names the build it ran.

--pin: ``cross`` (the default) runs every relay (ours, the bare loops, the C relay) on CPU 0 and the
generator and the sink on CPU 1, as ``bench_register.py`` pins the gateway and its generator: each
relay then meets the same placement, where the scheduler would put each run's three processes anew
(the C relay alone ranged 1.3–2.4 µs a packet between runs of one day unpinned). ``none``: unpinned.
--repeat N runs each blast and paced step N times and ends it with the medians, and the median of
the runs' ratios to the C relay.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src")]  # this checkout's gateway, not an installed one

from gb28181gw.relay.forwarder import RelaySettings  # noqa: E402
from gb28181gw.relay.workers import WorkerRelay  # noqa: E402
from gb28181gw.sdp import StreamMode  # noqa: E402

SIZE = 1400
#: "key" makes rtpgen send key frames (--keyframes), "" plain pack headers.
KEY = ""
#: Below the kernel's range for automatically assigned ports (32768-60999 on Linux), where
#: another program's ephemeral socket could hold one of ours; clear of the media range default
#: (30000-31999) and of bench_playback's 23000/25000.
STREAM_BASE, SINK_BASE = 26000, 27000
PPS_4MBIT = 4_000_000 / 8 / SIZE  # ≈ 357 packets/s per 4 Mbit/s stream
#: The builds the gateway's rows run with (--compiled): a label and GB28181GW_COMPILED's value
#: (None: as the environment has it). The relay workers are spawned processes: they inherit it.
BUILDS: list[tuple[str, str | None]] = [("", None)]
#: --pin: the CPUs of each role ("relay", "load"); empty, unpinned.
PIN: dict[str, set[int]] = {}


def pinned(role: str) -> dict[str, Any]:
    """The keyword a subprocess of ``role`` is started with to run on its CPUs (none unpinned)."""
    cpus = PIN.get(role)
    return {} if cpus is None else {"preexec_fn": lambda: os.sched_setaffinity(0, cpus)}


#: How both bare loops end: ready, serve for ``seconds``, print their CPU seconds.
_SERVE = r"""
    print("ready", flush=True)
    await asyncio.sleep(seconds)
    u = resource.getrusage(resource.RUSAGE_SELF)
    print(u.ru_utime + u.ru_stime, flush=True)
uvloop.run(main())
"""

BARE = (
    r"""
import resource, socket, sys, time, uvloop, asyncio
first, n, sink, seconds = map(int, sys.argv[1:5])
async def main():
    loop = asyncio.get_running_loop()
    buf = bytearray(2048); view = memoryview(buf)
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20); s.bind(("127.0.0.1", first + 2 * i))
        dst = ("127.0.0.1", sink + 2 * i)
        def on_read(s=s, dst=dst):
            recv, send = s.recvfrom_into, s.sendto
            for _ in range(256):
                try:
                    k, _a = recv(buf)
                except BlockingIOError:
                    return
                send(view[:k], dst)
        loop.add_reader(s.fileno(), on_read)
"""
    + _SERVE
)

#: The bare loop batched: recvmmsg of up to 32 packets into fixed slots and one sendmmsg of them
#: to the flow's sink, through ctypes (what the relay's batched path costs at the least).
BARE_MMSG = (
    r"""
import ctypes, resource, socket, sys, uvloop, asyncio
first, n, sink, seconds = map(int, sys.argv[1:5])
V, SLOT = 32, 2048
class Iov(ctypes.Structure): _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class Msg(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int)]
class Hdr(ctypes.Structure): _fields_ = [("m", Msg), ("len", ctypes.c_uint)]
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
buf = (ctypes.c_char * (V * SLOT))()
riov, siov, rh, sh = (Iov * V)(), (Iov * V)(), (Hdr * V)(), (Hdr * V)()
for j in range(V):
    riov[j].base = siov[j].base = ctypes.addressof(buf) + j * SLOT; riov[j].len = SLOT
    rh[j].m.iov, rh[j].m.iovlen = ctypes.addressof(riov[j]), 1
    sh[j].m.iov, sh[j].m.iovlen = ctypes.addressof(siov[j]), 1
fresh = bytes(rh)
lens = memoryview(rh).cast("B").cast("I"); stride = ctypes.sizeof(Hdr) // 4; at = Hdr.len.offset // 4
slen = memoryview(siov).cast("B").cast("Q")
sq, sl = memoryview(sh).cast("B").cast("Q"), memoryview(sh).cast("B").cast("I")
recvmmsg, sendmmsg, memmove = libc.recvmmsg, libc.sendmmsg, ctypes.memmove
async def main():
    loop = asyncio.get_running_loop()
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20); s.bind(("127.0.0.1", first + 2 * i))
        dst = ctypes.create_string_buffer(socket.AF_INET.to_bytes(2, sys.byteorder) + (sink + 2 * i).to_bytes(2, "big") + socket.inet_aton("127.0.0.1") + bytes(8), 16)
        dst = (dst, ctypes.addressof(dst))
        def on_read(fd=s.fileno(), dst=dst[1], keep=(dst, s)):
            for _ in range(8):
                memmove(rh, fresh, len(fresh))
                k = recvmmsg(fd, rh, V, socket.MSG_DONTWAIT, None)
                if k <= 0:
                    return
                for j in range(k):
                    slen[2 * j + 1] = lens[at + stride * j]
                    sq[8 * j] = dst; sl[stride * j + 2] = 16
                sendmmsg(fd, sh, k, socket.MSG_DONTWAIT)
                if k < V:
                    return
        loop.add_reader(s.fileno(), on_read)
"""
    + _SERVE
)


def use_build(value: str | None) -> str:
    """Set GB28181GW_COMPILED for the relay workers started next; the compiled modules a process
    started so would use (what ``gb28181gw_build_info`` says), from a probe started the same way."""
    if value is not None:
        os.environ["GB28181GW_COMPILED"] = value
    probe = (
        "import gb28181gw.relay.forwarder, gb28181gw.media.stats\n"
        "from gb28181gw import compiled\nprint(compiled.label())"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent / "src"), os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def build_rtpgen() -> str:
    src = HERE / "rtpgen.c"
    # named by its source: checkouts with another rtpgen.c on the same machine do not share a binary
    out = Path(tempfile.gettempdir()) / f"gb28181gw-rtpgen-{hashlib.sha1(src.read_bytes()).hexdigest()[:10]}"
    if not out.exists():
        subprocess.run(["gcc", "-O2", "-o", f"{out}.tmp", str(src)], check=True)
        os.replace(f"{out}.tmp", out)
    return str(out)


async def run_load(
    rtpgen: str, flows: int, pps: float, seconds: float, sinks: int | None = None, oneport: bool = False
) -> tuple[int, int, int]:
    """(sent, received, gaps): the sink listens on ``sinks`` ports (default: one per flow); ``oneport``:
    every flow is sent to STREAM_BASE (the shared port), told apart by its SSRC."""
    sink = await asyncio.create_subprocess_exec(
        rtpgen, "sink", str(SINK_BASE), str(sinks or flows), str(seconds + 1.5), stdout=subprocess.PIPE,
        **pinned("load"),
    )  # fmt: skip
    assert sink.stdout is not None
    await sink.stdout.readline()  # ready
    sender = await asyncio.create_subprocess_exec(
        rtpgen, "send", str(STREAM_BASE), str(flows), str(pps), str(seconds), str(SIZE), KEY or "-",
        *(["oneport"] if oneport else []), stdout=subprocess.PIPE, **pinned("load"),
    )  # fmt: skip
    sent_out, _ = await sender.communicate()
    sink_out, _ = await sink.communicate()
    received, _bytes, gaps = map(int, sink_out.split())
    return int(sent_out), received, gaps


async def relay_with(
    flows: int, consumers_per_flow: int = 1, workers: int = 1, batch: bool = True, shared: bool = False
) -> list[WorkerRelay]:
    settings = RelaySettings(
        host="127.0.0.1", tcp_queue_limit=1 << 20, udp_receive_buffer=4 << 20, stats_interval=1.0,
        gop_cache=4 << 20, gop_cache_total=512 << 20, batch=batch,
    )  # fmt: skip
    relays = [WorkerRelay(i, settings) for i in range(workers)]
    await asyncio.gather(*(r.start() for r in relays))
    if "relay" in PIN:
        for r in relays:
            os.sched_setaffinity(r.pid, PIN["relay"])
    for i in range(flows):
        relay = relays[i % workers]
        port = STREAM_BASE + 2 * i  # the flow's SSRC too
        # the device-source check on; shared: every stream on the one port (one worker)
        await relay.open(
            f"s{i}", STREAM_BASE if shared else port, StreamMode.UDP, port, source="127.0.0.1", shared=shared
        )
        for c in range(consumers_per_flow):
            sink = SINK_BASE + 2 * (i * consumers_per_flow + c)
            await relay.add_consumer(f"s{i}", f"c{c}", "udp", "127.0.0.1", sink, 0x0BEBC201)
    return relays


async def cpu_of(relays: list[WorkerRelay]) -> float:
    snaps = [await r.fresh_snapshot() for r in relays]
    return float(sum(snap.cpu_seconds for snap in snaps))


async def measure_ours(
    rtpgen: str,
    flows: int,
    pps: float,
    seconds: float,
    *,
    fanout: int = 1,
    workers: int = 1,
    batch: bool = True,
    shared: bool = False,
) -> dict[str, float]:
    relays = await relay_with(flows, fanout, workers, batch, shared)
    try:
        cpu0 = await cpu_of(relays)
        sent, received, gaps = await run_load(rtpgen, flows, pps, seconds, flows * fanout, oneport=shared)
        cpu = await cpu_of(relays) - cpu0
        totals = [(await r.fresh_snapshot()).totals for r in relays]
    finally:
        await asyncio.gather(*(r.stop() for r in relays))
    relayed_in = sum(t.packets_in for t in totals)
    return {
        "in_pps": relayed_in / seconds,
        "dropped": sum(t.slow_consumer + t.send_errors for t in totals),
        "offered_pps": sent / seconds,
        "out_pps": received / seconds,
        "loss_pct": 100.0 * (1 - received / max(1, sent * fanout)),
        "cpu_us_per_packet": 1e6 * cpu / max(1, relayed_in),
    }


async def measure_bare(rtpgen: str, flows: int, pps: float, seconds: float, how: str = "loop") -> dict[str, float]:
    """A bare relay under the same load: ``loop`` (uvloop, recvfrom_into/sendto), ``mmsg`` (the same
    batched with recvmmsg/sendmmsg through ctypes) or ``c`` (rtpgen's relay: the C anchor)."""
    args = [str(STREAM_BASE), str(flows), str(SINK_BASE), str(int(seconds + 3))]
    if how == "c":
        command = [rtpgen, "relay", *args]
    else:
        command = [sys.executable, "-c", BARE_MMSG if how == "mmsg" else BARE, *args]
    proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE, **pinned("relay"))
    assert proc.stdout is not None
    await proc.stdout.readline()
    sent, received, gaps = await run_load(rtpgen, flows, pps, seconds)
    out, _ = await proc.communicate()
    cpu = float(out.split()[-1])
    return {
        "offered_pps": sent / seconds,
        "out_pps": received / seconds,
        "loss_pct": 100.0 * (1 - received / max(1, sent)),
        "cpu_us_per_packet": 1e6 * cpu / max(1, received),
    }


def rates(text: str) -> list[int]:
    return [int(r) for r in text.split(",") if r]


async def compare(
    rtpgen: str, flows: int, pps: int, seconds: float, target: str, *, shared: bool = False
) -> tuple[dict[str, float], dict[str, float] | None, dict[str, float]]:
    """The same load through the C relay, the two bare Python loops and ours both ways (same run);
    ``shared``: ours on one shared port too (``media.shared_port``), the second of the two returned.
    The third: each row's CPU µs per packet by its label, for the medians of --repeat."""
    figures: dict[str, float] = {}

    def show(label: str, m: dict[str, float]) -> None:
        figures[label] = m["cpu_us_per_packet"]
        print(row(f"{label} @ {pps:,}/s", m))

    c = await measure_bare(rtpgen, flows, pps, seconds, "c")
    show("C relay (recvmmsg/sendmmsg)", c)
    show("bare loop (recvfrom_into)", await measure_bare(rtpgen, flows, pps, seconds))
    show("bare loop (ctypes mmsg)", await measure_bare(rtpgen, flows, pps, seconds, "mmsg"))
    ours: dict[str, float] = {}
    one: dict[str, float] | None = None
    for label, value in BUILDS:
        use_build(value)
        plain = await measure_ours(rtpgen, flows, pps, seconds, batch=False)
        show(f"gb28181gw{label}, recvfrom_into", plain)
        ours = await measure_ours(rtpgen, flows, pps, seconds)
        show(f"gb28181gw{label}, recvmmsg", ours)
        ratio = ours["cpu_us_per_packet"] / c["cpu_us_per_packet"]
        print(
            f"  → gb28181gw{label} {plain['cpu_us_per_packet']:.2f} → {ours['cpu_us_per_packet']:.2f} µs/packet; "
            f"its CPU per packet {ratio:.2f} × the C relay's, its packets per CPU second {1 / ratio:.2f} × "
            f"(target {target})"
        )
        if not shared:
            continue
        one = await measure_ours(rtpgen, flows, pps, seconds, shared=True)
        show(f"gb28181gw{label}, shared port", one)
        ratio = one["cpu_us_per_packet"] / c["cpu_us_per_packet"]
        print(
            f"  → shared port (media.shared_port = true){label}: {one['cpu_us_per_packet']:.2f} µs/packet, "
            f"{ratio:.2f} × the C relay's CPU per packet (target {target})"
        )
    return ours, one, figures


async def repeated(
    repeat: int, rtpgen: str, flows: int, pps: int, seconds: float, target: str
) -> tuple[dict[str, float], dict[str, float] | None]:
    """:func:`compare` ``repeat`` times; past one, the medians of each row and of the runs' ratios to
    the C relay (each run's own: the C relay and ours under the same conditions)."""
    runs = []
    for _ in range(repeat):
        ours, one, figures = await compare(rtpgen, flows, pps, seconds, target, shared=True)
        runs.append(figures)
    if repeat > 1:
        c = "C relay (recvmmsg/sendmmsg)"
        print(
            f"  medians of {repeat} runs @ {pps:,}/s (CPU µs a packet; × the C relay's, the median of the runs' ratios):"
        )
        for label in runs[0]:
            each = [r[label] for r in runs]
            ratios = [r[label] / r[c] for r in runs]
            print(
                f"    {label:<40} {statistics.median(each):5.2f} µs ({min(each):.2f}–{max(each):.2f})  "
                f"{statistics.median(ratios):.2f} × ({min(ratios):.2f}–{max(ratios):.2f})"
            )
    return ours, one


def row(label: str, m: dict[str, float]) -> str:
    gbit = m["out_pps"] * SIZE * 8 / 1e9
    return (
        f"  {label:<40} offered {m['offered_pps']:>9,.0f}/s  relayed {m['out_pps']:>9,.0f}/s ({gbit:.2f} Gbit/s)  "
        f"loss {m['loss_pct']:5.2f} %  CPU {m['cpu_us_per_packet']:5.2f} µs/packet in"
        + (f"  (taken in {m['in_pps']:,.0f}/s, not sent {m['dropped']:,.0f})" if "in_pps" in m else "")
    )


async def bench_setup(count: int) -> list[float]:
    """INVITE sent → first RTP packet relayed, through the whole gateway (SIP + stream service + relay)."""
    from gb28181gw.app import Gateway
    from gb28181gw.config import load_config
    from gb28181gw.gb.model import Channel
    from gb28181gw.sdp import SessionDescription
    from gb28181gw.sip.message import Request, make_response, parse_message

    store = Path(tempfile.mkdtemp()) / "gw.db"
    gw = Gateway(
        load_config(
            env={},
            overrides={
                "store.path": str(store), "sip.listen": "127.0.0.1", "sip.port": "0", "admin.enabled": "false",
                "devices.catalog_on_register": "false", "devices.subscribe": "", "media.workers": "1",
                "media.linger": "0", "media.port_min": "28000", "media.port_max": "28999",
            },
        )
    )  # fmt: skip
    await gw.start()
    device, channel = "34020000001320000001", "34020000001310000001"
    loop = asyncio.get_running_loop()
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    class Device(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.offers: dict[str, tuple[int, int]] = {}

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            msg = parse_message(data)
            if not isinstance(msg, Request):
                return
            if msg.method == "INVITE":
                offer = SessionDescription.parse(msg.body)
                video = offer.video()
                assert video is not None and offer.ssrc
                self.offers[msg.call_id] = (video.port, int(offer.ssrc))
                resp = make_response(msg, 200, to_tag="d")
                resp.headers.add("Contact", f"<sip:{channel}@127.0.0.1:{port}>")
                resp.headers.add("Content-Type", "application/sdp")
                sdp = f"v=0\r\no={channel} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                sdp += f"m=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny={offer.ssrc}\r\nf=\r\n"
                resp.body = sdp.encode()
                self.t.sendto(resp.serialize(), addr)  # type: ignore[attr-defined]
            elif msg.method == "ACK" and msg.call_id in self.offers:
                media_port, ssrc = self.offers.pop(msg.call_id)
                media.sendto(
                    bytes([0x80, 96, 0, 1, 0, 0, 0, 0]) + ssrc.to_bytes(4, "big") + bytes(SIZE - 12),
                    ("127.0.0.1", media_port),
                )
            elif msg.method in ("BYE", "REGISTER"):
                self.t.sendto(make_response(msg, 200).serialize(), addr)  # type: ignore[attr-defined]

    transport, _ = await loop.create_datagram_endpoint(Device, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    register = (
        f"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKr1\r\n"
        f"From: <sip:{device}@3402000000>;tag=r\r\nTo: <sip:{device}@3402000000>\r\nCall-ID: reg1\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{device}@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    transport.sendto(register.encode(), ("127.0.0.1", gw.stack.port))
    while device not in gw.registrar.devices or not gw.registrar.devices[device].registered:
        await asyncio.sleep(0.01)
    gw.devices.channels.setdefault(device, {})[channel] = Channel(channel, device)
    latencies = []
    try:
        for _ in range(count):
            st, consumer = await gw.streams.play(channel, transport="udp", host="127.0.0.1", port=9)
            while not st.first_packet_at:
                await asyncio.sleep(0.0005)
            latencies.append(st.first_packet_at - st.invite_at)
            await gw.streams.remove_consumer(st.id, consumer.id)
    finally:
        transport.close()
        media.close()
        await gw.stop()
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--only", default="blast,paced,fanout,workers,setup")
    parser.add_argument("--blast-rates", default="100000,150000,200000", help="offered packets/s of the blast rows")
    parser.add_argument("--paced-rates", default="40000,80000,120000", help="offered packets/s of the paced rows")
    parser.add_argument("--keyframes", action="store_true", help="every frame a key frame: the GOP cache copies all")
    parser.add_argument(
        "--compiled",
        choices=["as-is", "off", "on", "both"],
        default="as-is",
        help="the relay worker from its .py sources (off), compiled by `gb28181gw accelerate` (on), or both in turn",
    )
    parser.add_argument(
        "--pin",
        choices=["cross", "none"],
        default="cross",
        help="cross: every relay on CPU 0, the generator and sink on CPU 1 (as bench_register.py); none: unpinned",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each blast and paced step, then medians")
    args = parser.parse_args()
    if args.pin == "cross" and len(os.sched_getaffinity(0)) >= 2:
        first, second = sorted(os.sched_getaffinity(0))[:2]
        PIN.update(relay={first}, load={second})
    wanted = {"as-is": [None], "off": ["off"], "on": ["on"], "both": ["off", "on"]}[args.compiled]
    BUILDS[:] = []
    for value in wanted:
        label = use_build(value)
        if value == "on" and label == "none":
            raise SystemExit(
                "--compiled on: the relay runs no compiled module (`gb28181gw accelerate --check` says why)"
            )
        BUILDS.append((f" [{'pure' if label == 'none' else 'compiled'}]" if args.compiled == "both" else "", value))
        print(f"relay worker's modules compiled by mypyc{f' ({value})' if value else ''}: {label}")
    global KEY
    KEY = "key" if args.keyframes else ""
    only = set(args.only.split(","))
    rtpgen = build_rtpgen()
    s = args.seconds
    where = f"relays on CPU {min(PIN['relay'])}, generator and sink on CPU {min(PIN['load'])}" if PIN else "unpinned"
    print(
        f"bench_relay: {os.cpu_count()} cores ({where}), {SIZE}-byte RTP packets, {s:g} s per run"
        f"{', key frames' * bool(KEY)}"
    )
    if "blast" in only:
        print("one blasting flow, one consumer:")
        for pps in rates(args.blast_rates):
            await repeated(
                args.repeat, rtpgen, 1, pps, s, "≤ 3.2 µs/packet, ≥ 0.75 × the C relay's packets per CPU second"
            )
    if "paced" in only:
        print("100 paced flows, one consumer each:")
        for pps in rates(args.paced_rates):
            m, one = await repeated(
                args.repeat, rtpgen, 100, pps, s, "≤ 7 µs/packet, ≤ 1.5 × the C relay's CPU per packet"
            )
        for label, f in (("per-stream ports", m), ("shared port", one)):
            assert f is not None
            print(
                f"  → {label}: one core at 100 % relays ≈ {1e6 / f['cpu_us_per_packet']:,.0f} packets/s "
                f"≈ {1e6 / f['cpu_us_per_packet'] / PPS_4MBIT:,.0f} streams of 4 Mbit/s"
            )
    if "fanout" in only:
        print("one flow to 10 consumers:")
        for pps in (10_000, 15_000, 20_000):
            m = await measure_ours(rtpgen, 1, pps, s, fanout=10)
            print(row(f"gb28181gw relay 1→10 @ {pps:,}/s in", m))
    if "workers" in only:
        print("200 flows over 1 and 2 relay worker processes (the generator and sink share the same 2 cores):")
        pins = dict(PIN)
        PIN.clear()  # unpinned: two workers need both cores
        for workers in (1, 2):
            m = await measure_ours(rtpgen, 200, 240_000, s, workers=workers)
            print(row(f"{workers} worker(s) @ 240,000/s", m))
        PIN.update(pins)
    if "setup" in only:
        latencies = sorted(await bench_setup(300))
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
        print(
            f"INVITE sent → first RTP relayed, {len(latencies)} setups: p50 {p(0.5):.2f} ms  p99 {p(0.99):.2f} ms  "
            f"max {latencies[-1] * 1000:.2f} ms  mean {statistics.mean(latencies) * 1000:.2f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
