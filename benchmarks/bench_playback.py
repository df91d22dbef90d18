"""Concurrent downloads into MP4 files, and INVITE → first packet for playback (issue 13).

A real ``gb28181gw serve`` (``media.workers=0``: the relay runs in the gateway's own process)
pinned to CPU 0. This process, pinned to CPU 1, plays the devices: each registers over UDP
(its own socket; an IPC is its own channel), answers INVITE at once (``y=`` and ``t=`` echoed),
and from the ACK on sends a recorded span as RTP: real H.264 in PS (``tests/media.py`` gb_ps,
1280×720 at about 3 Mbit/s, a key frame every 2 s), one pack per frame cut into 1,400-byte
payloads, paced at ``--speed`` times real time. After the last packet it sends MediaStatus 121
in the dialog and answers the gateway's BYE. The writer is a second process on CPU 1 that does
what the CLI does with a download into an ``.mp4``: :class:`gb28181gw.pull.Receiver`
(UDP), :class:`gb28181gw.pull.Pulled` (RTP figures: loss from sequence numbers) and
:class:`gb28181gw.pull.Mp4Recording`.

downloads  for each N of ``--devices``: N downloads at once (``POST /api/v1/playbacks`` kind
           download, speed 4). A download is "clean" when the writer saw every packet the
           device sent, no sequence gap, the MP4 holds every frame sent (counted by av) and
           the gateway calls it complete (410 with ``complete: true``). CPU per Mbit/s of
           video written, for the gateway and for the writer, and RSS. Baselines in the same
           run with the same devices and writer: ``direct`` (the devices send straight to the
           writer: what writing MP4 alone costs) and ``bare`` (through a bare uvloop UDP
           forwarder on CPU 0, ``bench_relay.BARE``: what forwarding alone costs).
latency    ``--sessions`` playbacks, one after the other and then ``--concurrency`` at a time:
           from the ``POST`` to the first RTP packet at the consumer, and the gateway's own
           INVITE sent → first RTP in (``setup_seconds``); live streams (``POST /api/v1/streams``)
           measured the same way in the same run as the baseline.

    python benchmarks/bench_playback.py
    python benchmarks/bench_playback.py --devices 1,4,16,32,64 --span 20 --sessions 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "src")]
from bench_options import cpu_seconds, free_port, rss_mib, start_server  # noqa: E402
from bench_relay import BARE  # noqa: E402
from gb28181gw.media.rtp import RtpPacket  # noqa: E402
from gb28181gw.pull import Mp4Recording, Pulled, Receiver  # noqa: E402
from gb28181gw.sdp import SessionDescription  # noqa: E402
from gb28181gw.sip.message import Request, make_response, parse_message  # noqa: E402

OURS, DOMAIN = "34020000002000000001", "3402000000"
FPS = 25
#: The writer's sockets (and the bare forwarder's) on fixed ports, so the bare forwarder can map them;
#: these and the gateway's media ports below the kernel's ephemeral range (32768-) and above the ranges
#: the tests use (12000-17999 for four pytest workers, tests/helpers.py media_port), so that nothing
#: else running on the machine holds one.
WRITER_BASE, BARE_BASE = 23000, 25000
MEDIA_RANGE = (18000, 22999)  # 2,500 even ports: a run opens ~1,000 streams, and a closed one cools down


def device_id(n: int) -> str:
    return f"{DOMAIN}132{n:07d}"


# --- the recording every device sends ---------------------------------------------------------


@dataclass
class Recording:
    """The span's RTP packets, grouped per frame (one pack per frame, as devices send it)."""

    frames: list[list[bytes]]
    bytes: int

    @classmethod
    def make(cls, seconds: int, bit_rate: int) -> Recording:
        from tests.media import gb_ps, packetize

        cache = Path(tempfile.gettempdir()) / f"gb28181gw-bench-{seconds}s-{bit_rate}.ps"
        if not cache.exists():
            cache.write_bytes(gb_ps(seconds * FPS, 2 * FPS, (1280, 720), bit_rate=bit_rate))
        frames: dict[int, list[bytes]] = {}
        for packet in packetize(cache.read_bytes(), 0, seq=0):
            frames.setdefault(RtpPacket.parse(packet).timestamp, []).append(packet)
        packets = [frames[ts] for ts in sorted(frames)]
        return cls(packets, sum(len(p) for frame in packets for p in frame))

    @property
    def packets(self) -> int:
        return sum(len(frame) for frame in self.frames)


# --- the devices ------------------------------------------------------------------------------


@dataclass
class Session:
    """One INVITE a device answered."""

    call_id: str
    kind: str
    target: tuple[str, int]
    ssrc: int
    invite: Request | None
    to_tag: str
    acked_at: float = 0.0
    sent_packets: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = None


class Device(asyncio.DatagramProtocol):
    """Registers; answers INVITE at once; from the ACK sends the recording (all of it for a
    Download, then MediaStatus 121; the first frame for a Playback or Play); answers BYE."""

    def __init__(self, n: int, gateway: tuple[str, int], recording: Recording, speed: float) -> None:
        self.id = device_id(n)
        self.gateway = gateway
        self.recording = recording
        self.speed = speed
        self.transport: asyncio.DatagramTransport | None = None
        self.registered = asyncio.Event()
        self.sessions: dict[str, Session] = {}
        self.media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.media.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.cseq = 100
        #: a Download's media goes here instead of where the offer said (the baselines)
        self.redirect: tuple[str, int] | None = None

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    @classmethod
    async def start(cls, n: int, gateway: tuple[str, int], recording: Recording, speed: float) -> Device:
        """Device ``n`` on a socket of its own."""
        transport, device = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: cls(n, gateway, recording, speed), local_addr=("127.0.0.1", 0)
        )
        device.transport = transport
        return device

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.gateway)

    def register(self) -> None:
        self.send(
            (
                f"REGISTER sip:{OURS}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK-r{self.id}\r\n"
                f"From: <sip:{self.id}@{DOMAIN}>;tag=r1\r\nTo: <sip:{self.id}@{DOMAIN}>\r\nCall-ID: reg-{self.id}\r\n"
                f"CSeq: 1 REGISTER\r\nContact: <sip:{self.id}@127.0.0.1:{self.port}>\r\nExpires: 3600\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        if isinstance(msg, Request):
            {"INVITE": self._answer, "ACK": self._start, "BYE": self._end}.get(msg.method, self._ok)(msg)
        elif msg.cseq.method == "REGISTER" and msg.status == 200:
            self.registered.set()

    def _ok(self, request: Request) -> None:
        self.send(bytes(make_response(request, 200)))

    def _start(self, ack: Request) -> None:
        s = self.sessions.get(ack.call_id)
        if s is not None and s.pump is None:
            s.acked_at = time.perf_counter()
            s.pump = asyncio.ensure_future(self._pump(s))

    def _end(self, bye: Request) -> None:
        self._ok(bye)
        s = self.sessions.pop(bye.call_id, None)
        if s is not None:
            if s.pump is not None:
                s.pump.cancel()
            s.ended.set()

    def _answer(self, invite: Request) -> None:
        offer = SessionDescription.parse(invite.body)
        video = offer.video()
        assert video is not None and offer.ssrc
        kind = next((line[2:] for line in invite.body.decode().splitlines() if line.startswith("s=")), "Play")
        times = next((line for line in invite.body.decode().splitlines() if line.startswith("t=")), "t=0 0")
        s = Session(
            invite.call_id,
            kind,
            (offer.media_address(video) or "127.0.0.1", video.port),
            int(offer.ssrc),
            invite,
            f"dev{len(self.sessions)}-{invite.call_id[-6:]}",
        )
        self.sessions[invite.call_id] = s
        resp = make_response(invite, 200, to_tag=s.to_tag)
        resp.headers.add("Contact", f"<sip:{self.id}@127.0.0.1:{self.port}>")
        resp.headers.add("Content-Type", "application/sdp")
        size = f"a=filesize:{self.recording.bytes}\r\n" if kind == "Download" else ""
        resp.body = (
            f"v=0\r\no={self.id} 0 0 IN IP4 127.0.0.1\r\ns={kind}\r\nc=IN IP4 127.0.0.1\r\n{times}\r\n"
            f"m=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\n{size}y={offer.ssrc}\r\nf=\r\n"
        ).encode()
        self.send(bytes(resp))

    async def _pump(self, s: Session) -> None:
        frames = self.recording.frames if s.kind == "Download" else self.recording.frames[:1]
        target = self.redirect or s.target
        await stream(frames, s.ssrc, target, self.media, self.speed, s)
        if s.kind == "Download":
            await asyncio.sleep(0.05)  # the last packets are on their way to the writer
            self.media_status(s)

    def media_status(self, s: Session) -> None:
        """MediaStatus 121 in the session's dialog (PROTOCOL.md §5.7.2)."""
        self.cseq += 1
        body = (
            f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>MediaStatus</CmdType>\r\n'
            f"<SN>{self.cseq}</SN>\r\n<DeviceID>{self.id}</DeviceID>\r\n<NotifyType>121</NotifyType>\r\n</Notify>\r\n"
        ).encode()
        assert s.invite is not None
        gateway_from = s.invite.headers.get("from") or ""
        head = (
            f"MESSAGE sip:{OURS}@127.0.0.1:{self.gateway[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK-ms{self.cseq}{self.id}\r\n"
            f"From: <sip:{self.id}@{DOMAIN}>;tag={s.to_tag}\r\nTo: {gateway_from}\r\nCall-ID: {s.call_id}\r\n"
            f"CSeq: {self.cseq} MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\nMax-Forwards: 70\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.send(head.encode() + body)


async def stream(
    frames: list[list[bytes]], ssrc: int, target: tuple[str, int], sock: socket.socket, speed: float, s: Session
) -> None:
    """Send ``frames`` with ``ssrc`` to ``target``, frame ``k`` due ``k / (FPS × speed)`` s after the start."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    ssrc_bytes = ssrc.to_bytes(4, "big")
    interval = 1 / (FPS * speed)
    for k, frame in enumerate(frames):
        delay = start + k * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        for packet in frame:
            try:
                sock.sendto(packet[:8] + ssrc_bytes + packet[12:], target)
            except BlockingIOError:
                continue  # a full buffer drops, as a device's would; the writer counts the gap
            s.sent_packets += 1


# --- the writer (its own process) -------------------------------------------------------------


def writer_main() -> None:
    """Commands on stdin, one JSON line each: ``open N`` (N receivers on WRITER_BASE + 2i, an MP4
    each), ``end I`` (drain stream I, close its MP4, print its figures), ``cpu`` (print CPU
    seconds and RSS). Each stream is received and written as the CLI does it."""
    sel = selectors.DefaultSelector()
    commands: TextIO = sys.stdin
    sel.register(commands, selectors.EVENT_READ)
    streams: dict[int, tuple[Receiver, Pulled, Mp4Recording]] = {}
    out_dir = Path(sys.argv[2])

    def take(pulled: Pulled, rec: Mp4Recording, packets: list[bytes]) -> None:
        now = time.monotonic()
        for data in packets:
            payload = pulled.rtp(data, now)
            if payload is not None:
                rec.feed(payload)

    def reply(obj: object) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while True:
        for key, _ in sel.select(1.0):
            if key.fileobj is not commands:
                if key.data in streams:  # not ended by a command earlier in this batch
                    r, pulled, rec = streams[key.data]
                    take(pulled, rec, r.wait(0))
                continue
            words = commands.readline().split()
            if not words:
                return
            if words[0] == "open":
                for i in range(int(words[1])):
                    r = fixed_receiver(WRITER_BASE + 2 * i)
                    streams[i] = (r, Pulled(), Mp4Recording(out_dir / f"{i}.mp4"))
                    sel.register(r.sock, selectors.EVENT_READ, i)
                reply({"ports": [streams[i][0].port for i in range(int(words[1]))]})
            elif words[0] == "end":
                i = int(words[1])
                r, pulled, rec = streams.pop(i)
                sel.unregister(r.sock)
                while packets := r.wait(0.05):
                    take(pulled, rec, packets)
                r.close()
                rec.close()
                reply(
                    {
                        "packets": pulled.packets,
                        "bytes": pulled.bytes,
                        "lost": pulled.stats.lost,
                        "ssrcs": len(pulled.ssrcs),
                        "frames": rec.frames,
                        "skipped": rec.skipped,
                        "mp4": str(rec.path),
                    }
                )
            elif words[0] == "cpu":
                u = resource.getrusage(resource.RUSAGE_SELF)
                reply({"cpu": u.ru_utime + u.ru_stime, "rss": rss_mib(os.getpid()), "maxrss": u.ru_maxrss / 1024})


def fixed_receiver(port: int) -> Receiver:
    """The CLI's UDP receiver, on ``port`` of 127.0.0.1 rather than any free one: the bare
    forwarder (``bench_relay.BARE``) sends flow ``i`` to ``WRITER_BASE + 2i``."""
    r = Receiver("udp", "127.0.0.1")
    fixed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fixed.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)  # as Receiver's own
    fixed.bind(("127.0.0.1", port))
    r.sock.close()
    r.sock, r.port = fixed, port
    return r


class Writer:
    """The writer process, driven line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, out_dir: Path, cpu: int) -> Writer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--writer", str(out_dir),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )  # fmt: skip
        return cls(proc)

    async def ask(self, line: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return json.loads(await self.proc.stdout.readline())

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


def mp4_frames(path: str) -> int:
    """Video frames in an MP4 file (packets demuxed, not decoded)."""
    import av

    try:
        with av.open(path) as f:
            return sum(1 for p in f.demux(video=0) if p.size)
    except (OSError, av.error.FFmpegError):
        return 0


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Bench:
    gateway: subprocess.Popen[bytes]
    admin: str
    devices: list[Device]
    recording: Recording
    span: tuple[int, int]
    speed: float
    http: Any  # aiohttp.ClientSession
    gateway_cpu: int
    client_cpu: int
    out_dir: Path

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(f"{self.admin}/api/v1{path}", json=body) as resp:
            answer: dict[str, Any] = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"POST {path}: {resp.status} {answer}")
            return answer

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(f"{self.admin}/api/v1{path}") as resp:
            return resp.status, await resp.json()

    async def rtp_packets(self) -> tuple[float, float]:
        """The gateway's RTP packets in (from devices) and out (to consumers) so far (its /metrics)."""
        async with self.http.get(f"{self.admin}/metrics") as resp:
            text = await resp.text()
        found = {"in": 0.0, "out": 0.0}
        for line in text.splitlines():
            if line.startswith("gb28181gw_rtp_packets") and not line.startswith("#"):
                direction = line.split('direction="', 1)[1].split('"', 1)[0]
                found[direction] = float(line.rsplit(" ", 1)[1])
        return found["in"], found["out"]

    async def delete(self, path: str) -> None:
        async with self.http.delete(f"{self.admin}/api/v1{path}") as resp:
            await resp.read()


def figures(results: list[dict[str, Any]], rec: Recording, sent: list[int]) -> tuple[int, int, float, int]:
    """(clean downloads, MP4 frames written, Mbit of video received, packets lost) of one phase."""
    clean = frames = lost = 0
    bits = 0.0
    for r, s in zip(results, sent, strict=True):
        got = mp4_frames(r["mp4"])
        frames += got
        lost += s - r["packets"]
        bits += r["bytes"] * 8 / 1e6
        if r["packets"] == s == rec.packets and not r["lost"] and got == len(rec.frames) and r.get("complete", True):
            clean += 1
        Path(r["mp4"]).unlink(missing_ok=True)
    return clean, frames, bits, lost


async def downloads(b: Bench, n: int, how: str) -> dict[str, Any]:
    """N downloads at once: ``how`` is ``gateway`` (through gb28181gw), ``direct`` or ``bare``.
    A writer process of its own, so that its peak RSS is this run's."""
    writer = await Writer.start(b.out_dir, b.client_cpu)
    await writer.ask(f"open {n}")
    devices = b.devices[:n]
    bare: asyncio.subprocess.Process | None = None
    duration = len(b.recording.frames) / (FPS * b.speed)
    if how == "bare":
        bare = await asyncio.create_subprocess_exec(
            sys.executable, "-c", BARE, str(BARE_BASE), str(n), str(WRITER_BASE), str(int(duration + 3)),
            stdout=subprocess.PIPE, preexec_fn=lambda: os.sched_setaffinity(0, {b.gateway_cpu}),
        )  # fmt: skip
        assert bare.stdout is not None
        await bare.stdout.readline()
    for i, d in enumerate(devices):
        d.redirect = None if how == "gateway" else ("127.0.0.1", (BARE_BASE if how == "bare" else WRITER_BASE) + 2 * i)
    w0 = await writer.ask("cpu")
    g0 = cpu_seconds(b.gateway.pid)
    in0, out0 = await b.rtp_packets()
    rss_peak = rss_before = rss_mib(b.gateway.pid)
    t0 = time.perf_counter()
    sessions: list[Session] = []
    stream_ids: list[str] = []
    if how == "gateway":
        opened = await asyncio.gather(
            *(
                b.post(
                    "/playbacks",
                    {
                        "channel_id": d.id, "kind": "download", "start": b.span[0], "end": b.span[1],
                        "speed": int(b.speed), "consumer": {"transport": "udp", "host": "127.0.0.1", "port": WRITER_BASE + 2 * i},
                    },
                )
                for i, d in enumerate(devices)
            )
        )  # fmt: skip
        stream_ids = [o["id"] for o in opened]
        sessions = [next(s for s in d.sessions.values() if s.kind == "Download") for d in devices]
    else:  # the same pacing, no SIP: a session per device made up here
        sessions = [Session(f"direct-{i}", "Download", ("127.0.0.1", 0), 100_000_000 + i, None, "") for i in range(n)]
        for d, s in zip(devices, sessions, strict=True):
            s.pump = asyncio.ensure_future(
                stream(b.recording.frames, s.ssrc, d.redirect or s.target, d.media, b.speed, s)
            )

    async def sample() -> None:
        nonlocal rss_peak
        while True:
            rss_peak = max(rss_peak, rss_mib(b.gateway.pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.ensure_future(sample())
    if how == "gateway":
        await asyncio.wait_for(asyncio.gather(*(s.ended.wait() for s in sessions)), duration + 30)
    else:
        await asyncio.gather(*(s.pump for s in sessions if s.pump is not None))
        await asyncio.sleep(0.55)  # as the gateway's BYE comes 0.5 s after MediaStatus
    wall = time.perf_counter() - t0
    sampler.cancel()
    g1 = cpu_seconds(b.gateway.pid)
    in1, out1 = await b.rtp_packets()
    results = [await writer.ask(f"end {i}") for i in range(n)]
    w1 = await writer.ask("cpu")
    await writer.stop()
    forward_cpu = None
    if bare is not None:
        out, _ = await bare.communicate()
        forward_cpu = float(out.split()[-1])
    for i, sid in enumerate(stream_ids):
        status, ended = await b.get(f"/streams/{sid}")
        results[i]["complete"] = status == 410 and ended.get("complete") is True
    clean, frames, mbit, lost = figures(results, b.recording, [s.sent_packets for s in sessions])
    gateway_cpu = g1 - g0 if how == "gateway" else forward_cpu
    return {
        "how": how, "n": n, "clean": clean, "frames": frames, "frames_sent": n * len(b.recording.frames),
        "lost": lost, "mbit": mbit, "wall": wall, "mbit_s": mbit / wall,
        "gateway_cpu_per_mbit": (gateway_cpu / mbit * 1000) if gateway_cpu is not None and mbit else None,
        "writer_cpu_per_mbit": (w1["cpu"] - w0["cpu"]) / mbit * 1000 if mbit else None,
        "gateway_rss": (rss_before, rss_peak) if how == "gateway" else None, "writer_rss": w1["maxrss"],
        "gaps": sum(r["lost"] for r in results),
        "missing_before": sum(s.sent_packets for s in sessions) - (in1 - in0) if how == "gateway" else None,
        "missing_after": (out1 - out0) - sum(r["packets"] for r in results) if how == "gateway" else None,
    }  # fmt: skip


class FirstPacket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.first: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.first.done():
            self.first.set_result(time.perf_counter())


async def setup_once(b: Bench, d: Device, kind: str) -> tuple[float, float]:
    """(POST sent → first RTP at the consumer, the gateway's INVITE sent → first RTP in) of one session."""
    loop = asyncio.get_running_loop()
    transport, consumer = await loop.create_datagram_endpoint(FirstPacket, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    body: dict[str, Any] = {"channel_id": d.id, "consumer": {"transport": "udp", "host": "127.0.0.1", "port": port}}
    if kind == "playback":
        body.update(kind="playback", start=b.span[0], end=b.span[1])
    try:
        t0 = time.perf_counter()
        opened = await b.post("/playbacks" if kind == "playback" else "/streams", body)
        first = await asyncio.wait_for(consumer.first, 10)
        for _ in range(20):  # the relay's first-packet event may trail the packet itself
            _, shown = await b.get(f"/streams/{opened['id']}")
            if shown.get("setup_seconds") is not None:
                break
            await asyncio.sleep(0.005)
        await b.delete(f"/streams/{opened['id']}")
    finally:
        transport.close()
    return first - t0, float(shown.get("setup_seconds") or "nan")


async def latency(b: Bench, kind: str, sessions: int, concurrency: int) -> tuple[list[float], list[float]]:
    totals, setups = [], []
    for _ in range(sessions // concurrency):
        for total, setup in await asyncio.gather(*(setup_once(b, d, kind) for d in b.devices[:concurrency])):
            totals.append(total)
            setups.append(setup)
    return totals, setups


def pct(values: list[float], q: float) -> float:
    ordered = sorted(v for v in values if v == v)  # NaN: the gateway never showed it
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(args: argparse.Namespace) -> None:
    import aiohttp

    counts = [int(x) for x in args.devices.split(",")]
    recording = Recording.make(args.span, args.bit_rate)
    rate = recording.bytes * 8 / args.span / 1e6
    print(
        f"bench_playback: {os.cpu_count()} cores; gateway (media.workers=0) on CPU {args.gateway_cpu}, devices and "
        f"writer on CPU {args.client_cpu}; span {args.span} s of 1280x720 H.264 in PS, {rate:.2f} Mbit/s recorded "
        f"({len(recording.frames)} frames, {recording.packets} RTP packets), downloads at {args.speed:g}x"
    )
    os.sched_setaffinity(0, {args.client_cpu})
    sip_port, admin_port = free_port(socket.SOCK_DGRAM), free_port()
    quiet = ["--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=", "--set", "media.linger=0"]
    media = ["--set", "media.workers=0", "--set", f"media.port_min={MEDIA_RANGE[0]}", "--set", f"media.port_max={MEDIA_RANGE[1]}"]  # fmt: skip
    gateway = start_server(sip_port, admin_port, args.gateway_cpu, *quiet, *media)
    devices: list[Device] = []
    now = int(time.time())
    span = (now - 86400, now - 86400 + args.span)
    try:
        for n in range(1, max(counts) + 1):
            dev = await Device.start(n, ("127.0.0.1", sip_port), recording, args.speed)
            devices.append(dev)
            dev.register()
        await asyncio.wait_for(asyncio.gather(*(d.registered.wait() for d in devices)), 10)
        with tempfile.TemporaryDirectory(prefix="gb28181gw-bench-") as tmp:
            async with aiohttp.ClientSession() as http:
                b = Bench(
                    gateway, f"http://127.0.0.1:{admin_port}", devices, recording, span, args.speed, http,
                    args.gateway_cpu, args.client_cpu, Path(tmp),
                )  # fmt: skip
                if "downloads" in args.only:
                    await downloads_table(b, counts)
                if "latency" in args.only:
                    await latency_table(b, args.sessions, args.concurrency)
    finally:
        for d in devices:
            d.media.close()
            if d.transport is not None:
                d.transport.close()
        gateway.terminate()
        gateway.wait(15)
        store = next(str(a) for a in gateway.args if str(a).startswith("store.path="))  # type: ignore[union-attr]
        shutil.rmtree(Path(store.split("=", 1)[1]).parent, ignore_errors=True)  # start_server's own temp dir


async def downloads_table(b: Bench, counts: list[int]) -> None:
    print(
        f"\n{'N':>3} {'path':<8} {'clean':>7} {'frames in MP4':>15} {'missing':>8} {'(->gw':>6} {'gw->)':>6} "
        f"{'gaps':>6} {'Mbit/s':>7} {'fwd CPU ms/Mbit':>15} {'writer CPU ms/Mbit':>18} {'gateway RSS MiB':>16} "
        f"{'writer RSS':>10}"
    )
    for n in counts:
        for how in ("direct", "bare", "gateway"):
            m = await downloads(b, n, how)
            g = m["gateway_cpu_per_mbit"]
            rss = f"{m['gateway_rss'][0]:.0f} -> {m['gateway_rss'][1]:.0f}" if m["gateway_rss"] else ""
            before, after = (
                (f"{m['missing_before']:.0f}", f"{m['missing_after']:.0f}")
                if m["missing_before"] is not None
                else ("", "")
            )
            print(
                f"{n:>3} {how:<8} {m['clean']:>3}/{n:<3} {m['frames']:>7}/{m['frames_sent']:<7} {m['lost']:>8} "
                f"{before:>6} {after:>6} {m['gaps']:>6} {m['mbit_s']:>7.1f} {(f'{g:.2f}' if g is not None else '-'):>15} "
                f"{m['writer_cpu_per_mbit']:>18.2f} {rss:>16} {m['writer_rss']:>10.0f}"
            )
            await asyncio.sleep(0.5)
    print(
        "  direct: devices -> writer; bare: devices -> bare uvloop forwarder (CPU 0) -> writer; gateway: devices ->\n"
        "  gb28181gw (CPU 0, SIP + admin API + relay) -> writer. clean: every packet sent arrived, no sequence gap,\n"
        "  every frame in the MP4 (av), and (gateway) the stream ended complete. missing: packets sent but not\n"
        "  received by the writer, (of which lost before the gateway's relay, after it: its /metrics); gaps:\n"
        "  sequence gaps the writer saw. Mbit/s: video received by the writer over the run's wall time (setup and\n"
        "  the 0.5 s between MediaStatus and BYE included). fwd CPU: the gateway's (or the bare forwarder's) CPU\n"
        "  seconds per Mbit of video, in ms; writer CPU: the writer process's (receive, RTP figures, PS demux,\n"
        "  MP4 mux and write). RSS: the gateway before -> peak (sampled every 0.2 s), the writer's peak (a new\n"
        "  writer process each run)."
    )


async def latency_table(b: Bench, sessions: int, concurrency: int) -> None:
    print(
        f"\nPOST /api/v1/playbacks (or /streams for live) -> first RTP at the consumer, {sessions} sessions each;\n"
        "in brackets the gateway's own INVITE sent -> first RTP in (setup_seconds, 1 ms resolution):"
    )
    for label, conc in (("one at a time", 1), (f"{concurrency} at a time", concurrency)):
        for kind in ("live", "playback"):
            totals, setups = await latency(b, kind, sessions, conc)
            print(
                f"  {kind:<9} {label:<14} p50 {pct(totals, 0.5):6.2f} ms  p99 {pct(totals, 0.99):6.2f} ms   "
                f"(INVITE -> first RTP p50 {pct(setups, 0.5):5.2f} ms  p99 {pct(setups, 0.99):5.2f} ms)"
            )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer_main()
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="1,4,16,32,64", help="concurrent downloads, one run each")
    ap.add_argument("--span", type=int, default=20, help="seconds of recording each device sends")
    ap.add_argument("--bit-rate", type=int, default=3_000_000, help="the recording's bits/s")
    ap.add_argument("--speed", type=float, default=4.0, help="a=downloadspeed: how much faster than real time")
    ap.add_argument("--sessions", type=int, default=200, help="latency: sessions per kind and concurrency")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--only", default="downloads,latency")
    ap.add_argument("--gateway-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
