"""Pulling a live stream into the operator's terminal: the consumer side of ``gb28181gw play`` and ``snapshot``.

The CLI opens a socket (UDP, or a TCP listener the gateway connects to), asks the running
gateway to add it as a consumer of the channel, and receives RTP. What it writes is the
PS carried in those packets, in sequence order, exactly as the device sent it; ``.mp4``
is a remux of that PS with ``av`` (no re-encoding), and a snapshot is the first key
frame decoded and encoded as JPEG.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from gb28181gw.errors import RtpError
from gb28181gw.media.ps import Frame, PsDemuxer
from gb28181gw.media.rtp import RtpPacket
from gb28181gw.media.stats import StreamStats
from gb28181gw.media.tcp_framing import Rfc4571Reader


@dataclass
class Pulled:
    """What a pull received."""

    packets: int = 0
    bytes: int = 0
    stats: StreamStats = field(default_factory=StreamStats)
    ssrcs: set[int] = field(default_factory=set)
    ps: bytearray = field(default_factory=bytearray)
    bad: int = 0


class Receiver:
    """A consumer socket: UDP, or a TCP listener the gateway connects to (RFC 4571 frames)."""

    def __init__(self, transport: str, bind_host: str = "0.0.0.0") -> None:
        self.transport = transport
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        if transport == "udp":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind((bind_host, 0))
        if transport == "tcp":
            self.sock.listen(1)
        self.port: int = self.sock.getsockname()[1]
        self._conn: socket.socket | None = None
        self._reader = Rfc4571Reader()

    def receive(self, deadline: float, on_packet: Callable[[bytes], bool]) -> None:
        """Hand each packet to ``on_packet`` until ``deadline`` (monotonic) or until it returns True."""
        while (left := deadline - time.monotonic()) > 0:
            if self.transport == "udp":
                self.sock.settimeout(min(left, 0.5))
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    continue
                if on_packet(data):
                    return
                continue
            if self._conn is None:
                self.sock.settimeout(min(left, 0.5))
                try:
                    self._conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
            self._conn.settimeout(min(left, 0.5))
            try:
                chunk = self._conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return  # the gateway closed the connection: the stream ended
            for packet in self._reader.feed(chunk):
                if on_packet(packet):
                    return

    def close(self) -> None:
        """Close the sockets."""
        if self._conn is not None:
            self._conn.close()
        self.sock.close()


def collect(receiver: Receiver, seconds: float, *, until_key_frame: bool = False) -> tuple[Pulled, Frame | None]:
    """Receive for ``seconds`` (or until the first key frame); return what came and that frame."""
    pulled = Pulled()
    demuxer = PsDemuxer() if until_key_frame else None
    key: list[Frame] = []

    def on_packet(data: bytes) -> bool:
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            pulled.bad += 1
            return False
        pulled.packets += 1
        pulled.bytes += len(data)
        pulled.ssrcs.add(packet.ssrc)
        pulled.stats.packet(packet.sequence, len(data), time.monotonic())
        pulled.ps += packet.payload
        if demuxer is not None:
            for frame in demuxer.feed(packet.payload):
                if frame.key:
                    key.append(frame)
                    return True
        return False

    receiver.receive(time.monotonic() + seconds, on_packet)
    return pulled, (key[0] if key else None)


def remux_mp4(ps: bytes, path: Path) -> int:
    """Write the video (and audio) of ``ps`` to an MP4 without re-encoding; return the video packets written."""
    import av

    written = 0
    with av.open(io.BytesIO(ps), mode="r", format="mpeg") as source, av.open(str(path), "w", format="mp4") as target:
        mapping = {}
        for stream in source.streams:
            if stream.type in ("video", "audio"):
                mapping[stream.index] = target.add_stream_from_template(stream)
        for packet in source.demux():
            out = mapping.get(packet.stream.index)
            if out is None or packet.dts is None:
                continue
            packet.stream = out
            target.mux(packet)
            if out.type == "video":
                written += 1
    return written


def jpeg_of(frame: Frame) -> bytes:
    """Decode one key frame and encode it as JPEG."""
    import av

    codec = av.CodecContext.create("hevc" if frame.codec == "H265" else "h264", "r")
    pictures = []
    for packet in [*codec.parse(frame.data), *codec.parse(b"")]:  # b"" flushes the parser's last unit
        pictures += codec.decode(packet)
    pictures += codec.decode(None)
    if not pictures:
        raise ValueError("the key frame did not decode")
    picture = pictures[0].reformat(format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = picture.width, picture.height, "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    data = b"".join(bytes(p) for p in encoder.encode(picture))
    data += b"".join(bytes(p) for p in encoder.encode(None))
    return data
