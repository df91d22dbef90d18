"""Real media for the tests: H.264 in MPEG-2 PS made with av, cut into RTP as devices do, and decoded back."""

from __future__ import annotations

import asyncio
import io
import random
import socket
import struct
from dataclasses import dataclass, field
from fractions import Fraction

import av

from gb28181gw.media.ps import PsDemuxer
from gb28181gw.media.rtp import RtpPacket
from gb28181gw.media.tcp_framing import Rfc4571Reader, frame


def h264_ps(frames: int = 50, gop: int = 10, size: tuple[int, int] = (320, 240)) -> bytes:
    """``frames`` frames of H.264 (a key frame every ``gop``) in a PS stream (libx264 + FFmpeg's vob muxer)."""
    width, height = size
    out = io.BytesIO()
    with av.open(out, "w", format="vob") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "keyint_min": str(gop),
            "sc_threshold": "0",
        }
        for i in range(frames):
            frame_ = av.VideoFrame(width, height, "yuv420p")
            for plane_index, plane in enumerate(frame_.planes):
                plane.update(bytes([(i * 7 + plane_index * 40) % 256]) * plane.buffer_size)
            frame_.pts = i
            frame_.time_base = Fraction(1, 25)
            for packet in stream.encode(frame_):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def h264_frames(
    frames: int = 50, gop: int = 10, size: tuple[int, int] = (320, 240), *, bit_rate: int | None = None
) -> list[tuple[bytes, bool]]:
    """(Annex B access unit, key frame?) for each of ``frames`` pictures, SPS/PPS in-band before each IDR.

    ``bit_rate`` (bits/s at 25 frames/s): a textured picture that moves, coded at about that rate
    (a camera's recording, for the benchmarks); else flat pictures, as small as H.264 makes them.
    """
    width, height = size
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.framerate = Fraction(25, 1)
    ctx.gop_size = gop
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "keyint_min": str(gop), "sc_threshold": "0"}
    texture = random.Random(gop).randbytes(width * height) if bit_rate else b""
    if bit_rate:  # a camera's CBR: a one-second VBV buffer keeps every second near the rate
        ctx.bit_rate = bit_rate
        ctx.options = {**ctx.options, "x264-params": f"vbv-maxrate={bit_rate // 1000}:vbv-bufsize={bit_rate // 1000}"}
    out = []
    for i in range(frames):
        picture = av.VideoFrame(width, height, "yuv420p")
        for plane_index, plane in enumerate(picture.planes):
            if texture:  # the texture slides 2 pixels a frame: P-frames predict it, as a panning camera
                shift = (2 * i) % plane.buffer_size
                plane.update((texture[shift:] + texture[:shift])[: plane.buffer_size])
            else:
                plane.update(bytes([(i * 7 + plane_index * 40) % 256]) * plane.buffer_size)
        picture.pts = i
        out += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(picture)]
    out += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(None)]
    return out


def _timestamp(prefix: int, t: int) -> bytes:
    return bytes(
        [
            (prefix << 4) | (((t >> 30) & 0x07) << 1) | 1,
            (t >> 22) & 0xFF,
            (((t >> 15) & 0x7F) << 1) | 1,
            (t >> 7) & 0xFF,
            ((t & 0x7F) << 1) | 1,
        ]
    )


def gb_ps(frames: int = 50, gop: int = 10, size: tuple[int, int] = (320, 240), *, bit_rate: int | None = None) -> bytes:
    """H.264 in PS the way GB devices send it (Annex C): one pack per frame; key-frame packs carry a
    system header and a PSM (stream_type 0x1B); PES of at most 65,535 bytes with a PTS.
    ``size`` and ``bit_rate`` as for :func:`h264_frames`."""
    out = bytearray()
    for i, (au, key) in enumerate(h264_frames(frames, gop, size, bit_rate=bit_rate)):
        pts = 3600 * i
        scr = pts
        out += b"\x00\x00\x01\xba" + bytes(
            [
                0x44 | ((scr >> 27) & 0x38) | ((scr >> 28) & 0x03),
                (scr >> 20) & 0xFF,
                (((scr >> 12) & 0xF8) | 0x04 | ((scr >> 13) & 0x03)),
                (scr >> 5) & 0xFF,
                ((scr << 3) & 0xF8) | 0x04,
                0x01,
                0x01, 0x89, 0xC3, 0xF8,
            ]
        )  # fmt: skip
        if key:
            system = bytes([0x80, 0x01, 0x01, 0x04, 0xE1, 0xFF, 0xE0, 0xE0, 0x80])
            out += b"\x00\x00\x01\xbb" + struct.pack("!H", len(system)) + system
            body = bytes([0xE0, 0xFF, 0x00, 0x00, 0x00, 0x04, 0x1B, 0xE0, 0x00, 0x00]) + b"\x00" * 4
            out += b"\x00\x00\x01\xbc" + struct.pack("!H", len(body)) + body
        for j in range(0, len(au), 65000):
            piece = au[j : j + 65000]
            header = bytes([0x80, 0x80, 5]) + _timestamp(0x2, pts)
            out += b"\x00\x00\x01\xe0" + struct.pack("!H", len(header) + len(piece)) + header + piece
    return bytes(out)


def packs(ps: bytes) -> list[bytes]:
    """The PS cut at each pack header: one pack per frame, as GB devices send it (§8.2)."""
    starts = []
    pos = ps.find(b"\x00\x00\x01\xba")
    while pos >= 0:
        starts.append(pos)
        pos = ps.find(b"\x00\x00\x01\xba", pos + 4)
    starts.append(len(ps))
    return [ps[a:b] for a, b in zip(starts, starts[1:], strict=False) if b > a]


def packetize(ps: bytes, ssrc: int, *, mtu: int = 1400, seq: int = 1000, pt: int = 96) -> list[bytes]:
    """RTP packets of ``ps``: each pack split into ≤ ``mtu``-byte payloads sharing one timestamp, M on the last."""
    out = []
    for i, pack in enumerate(packs(ps)):
        pieces = [pack[j : j + mtu] for j in range(0, len(pack), mtu)]
        for k, piece in enumerate(pieces):
            out.append(RtpPacket(pt, seq & 0xFFFF, 3600 * i, ssrc, k == len(pieces) - 1, piece).serialize())
            seq += 1
    return out


def decode_h264(ps: bytes) -> int:
    """How many pictures av decodes from the video of ``ps`` (through our demuxer)."""
    demuxer = PsDemuxer()
    return decode_units([f.data for f in demuxer.feed(ps)] + [f.data for f in demuxer.flush()])


def decode_units(units: list[bytes]) -> int:
    """How many pictures av decodes from H.264 access units."""
    codec = av.CodecContext.create("h264", "r")
    decoded = 0
    for data in units:
        for packet in codec.parse(data):
            decoded += len(codec.decode(packet))
    for packet in codec.parse(b""):
        decoded += len(codec.decode(packet))
    decoded += len(codec.decode(None))
    return decoded


@dataclass
class Received:
    """What a consumer got."""

    packets: list[bytes] = field(default_factory=list)

    @property
    def ssrcs(self) -> set[int]:
        return {struct.unpack_from("!I", p, 8)[0] for p in self.packets}

    def payload(self) -> bytes:
        """The payloads in sequence order (loopback does not reorder, but be safe across a wrap)."""
        parsed = [RtpPacket.parse(p) for p in self.packets]
        return b"".join(p.payload for p in parsed)


class UdpConsumer(asyncio.DatagramProtocol):
    """A consumer that receives over UDP on 127.0.0.1."""

    def __init__(self) -> None:
        self.got = Received()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def start(cls) -> UdpConsumer:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.packets.append(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpConsumer:
    """A consumer that listens on TCP; the gateway connects and sends RFC 4571 frames."""

    def __init__(self) -> None:
        self.got = Received()
        self.server: asyncio.Server | None = None
        self.reader = Rfc4571Reader()
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()

    @classmethod
    async def start(cls) -> TcpConsumer:
        self = cls()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        while data := await reader.read(65536):
            self.got.packets += self.reader.feed(data)
        writer.close()
        self.closed.set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def send_udp(packets: list[bytes], port: int, *, sock: socket.socket | None = None) -> None:
    """Send ``packets`` to 127.0.0.1:``port``, paced so loopback buffers never overflow."""
    own = sock is None
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i, p in enumerate(packets):
            s.sendto(p, ("127.0.0.1", port))
            if i % 16 == 15:
                await asyncio.sleep(0.002)
    finally:
        if own:
            s.close()


async def send_tcp(packets: list[bytes], writer: asyncio.StreamWriter) -> None:
    """Send ``packets`` as RFC 4571 frames."""
    for i, p in enumerate(packets):
        writer.write(frame(p))
        if i % 16 == 15:
            await writer.drain()
            await asyncio.sleep(0.002)
    await writer.drain()


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    """Poll ``predicate()`` until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
