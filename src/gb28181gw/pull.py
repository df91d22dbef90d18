"""Pulling a stream into the operator's terminal: the consumer side of ``gb28181gw play``, ``snapshot``,
``playback`` and ``download``.

The CLI opens a socket (UDP, or a TCP listener the gateway connects to), asks the running
gateway to add it as a consumer of the channel, and receives RTP. What arrives goes to disk
as it arrives, so memory stays flat however long a recording runs and an interrupted one
keeps everything received:

- ``.ps`` is the PS carried in the packets, in arrival order, exactly as the device sent it
  (video and audio), appended to the file packet by packet.
- ``.mp4`` is the video remuxed without re-encoding: our own demuxer
  (:class:`~gb28181gw.media.ps.PsDemuxer`) cuts the PS into access units and ``av`` muxes each
  one as it completes into a *fragmented* MP4 (a fragment per key frame or second). The
  muxer then holds at most one fragment, never an index of the whole recording, and a file
  whose writer was killed still plays up to its last fragment; :meth:`Mp4Recording.close`
  writes the last fragment and the trailer. Audio (G.711 in most cameras) stays in ``.ps``.

Either way the frames' PS timestamps are followed (:class:`Timeline`): they are the recording's
own clock, so :attr:`Recording.seconds` says how much of a span has come however fast it was
sent, and an ``.mp4`` of a download sent at 4x plays at normal speed (its timestamps are those).

A snapshot is the first key frame decoded and encoded as JPEG (:func:`jpeg_of`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

from gb28181gw.errors import RtpError
from gb28181gw.media.ps import Frame, PsDemuxer
from gb28181gw.media.rtp import RtpPacket
from gb28181gw.media.stats import StreamStats
from gb28181gw.media.tcp_framing import Rfc4571Reader

#: What ``play -o`` writes, by file extension.
RECORDING_FORMATS = {
    ".ps": "exactly as the device sent it, video and audio",
    ".mp4": "the video, remuxed without re-encoding; plays anywhere",
}
#: PTS clock of PS and RTP video (ISO/IEC 13818-1 §2.4.3.7).
PTS_HZ = 90_000
#: Most datagrams taken from the socket in one :meth:`Receiver.wait` (the caller gets control back between).
_BATCH = 256
#: A PTS step larger than this (90 kHz ticks, 10 s) is a device restart or a jump, not time passing.
_MAX_PTS_STEP = 10 * PTS_HZ
#: A new MP4 fragment at each key frame, or after this many microseconds without one.
_FRAGMENT_US = 1_000_000


_Bytes = bytes  # Pulled has a field named bytes


@dataclass
class Pulled:
    """What a pull received (RTP figures, RFC 3550 §6.4.1)."""

    packets: int = 0
    bytes: int = 0
    stats: StreamStats = field(default_factory=StreamStats)
    ssrcs: set[int] = field(default_factory=set)
    bad: int = 0
    first_packet_at: float = 0.0

    def rtp(self, data: _Bytes, now: float) -> _Bytes | None:
        """Account for one datagram; its payload, or ``None`` if it is not RTP."""
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.bad += 1
            return None
        if not self.packets:
            self.first_packet_at = now
        self.packets += 1
        self.bytes += len(data)
        self.ssrcs.add(packet.ssrc)
        self.stats.packet(packet.sequence, len(data), now)
        return packet.payload


class Receiver:
    """A consumer socket: UDP, or a TCP listener the gateway connects to (RFC 4571 frames).

    Attributes:
        port: the local port the gateway is told to send to.
        closed: the gateway closed the TCP connection (the stream, or our part of it, ended).
    """

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
        self.closed = False
        self._conn: socket.socket | None = None
        self._reader = Rfc4571Reader()

    def wait(self, timeout: float) -> list[bytes]:
        """The packets that came within ``timeout`` seconds: returns as soon as there are some."""
        if self.closed:
            return []
        timeout = max(timeout, 0.001)
        if self.transport == "udp":
            self.sock.settimeout(timeout)
            try:
                packets = [self.sock.recv(65536)]
            except TimeoutError:
                return []
            self.sock.setblocking(False)
            try:
                while len(packets) < _BATCH:
                    packets.append(self.sock.recv(65536))
            except BlockingIOError:
                pass
            return packets
        if self._conn is None:
            self.sock.settimeout(timeout)
            try:
                self._conn, _ = self.sock.accept()
            except TimeoutError:
                return []
        self._conn.settimeout(timeout)
        try:
            chunk = self._conn.recv(256 * 1024)
        except TimeoutError:
            return []
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return []
        return self._reader.feed(chunk)

    def close(self) -> None:
        """Close the sockets."""
        if self._conn is not None:
            self._conn.close()
        self.sock.close()


class Recording:
    """A file a stream is written to as it arrives; :func:`open_recording` picks the kind by extension.

    Attributes:
        path: the file.
        frames: video frames written so far.
        codec: the video codec seen (``H264``, ``H265`` …), ``""`` before the first frame.
        timeline: the frames' PS PTS made increasing from 0 (:class:`Timeline`): the recording's
            own clock, whatever speed it was sent at.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frames = 0
        self.codec = ""
        self.demuxer = PsDemuxer()
        self.timeline = Timeline()

    @property
    def seconds(self) -> float:
        """Seconds of video written, by the recording's clock (its PTS), not by the wall clock."""
        return self.timeline.duration / PTS_HZ

    def feed(self, payload: bytes) -> None:
        """Write one RTP payload's worth of PS."""
        raise NotImplementedError

    def flush(self) -> None:
        """Push what is buffered to the file (called about twice a second)."""

    def close(self) -> None:
        """Finalise the file so that it plays (delete it if nothing came); safe to call twice."""
        raise NotImplementedError

    def size(self) -> int:
        """Bytes on disk so far."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0


class PsRecording(Recording):
    """``.ps``: the payloads appended as they come (the demuxer only counts frames)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._file: IO[bytes] | None = path.open("wb")
        self._written = 0

    def feed(self, payload: bytes) -> None:
        if self._file is None:
            return
        self._file.write(payload)
        self._written += len(payload)
        for frame in self.demuxer.feed(payload):
            self._count(frame)

    def _count(self, frame: Frame) -> None:
        self.frames += 1
        self.codec = self.codec or frame.codec
        self.timeline.next(frame.pts)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is None:
            return
        for frame in self.demuxer.flush():
            self._count(frame)
        self._file.close()
        self._file = None
        if not self._written:
            self.path.unlink(missing_ok=True)  # leave no empty file behind


class Mp4Recording(Recording):
    """``.mp4``: each access unit muxed as it completes into a fragmented MP4 (see the module docstring).

    Frames before the first key frame are skipped (nothing decodes without it); the codec's
    parameter sets are taken from that key frame. PTS are made strictly increasing
    (:class:`Timeline`); devices under GB/T 28181 send no B-frames, so DTS = PTS.

    Raises:
        UnsupportedCodec (from :meth:`feed`): the video is neither H.264 nor H.265.
    """

    def __init__(self, path: Path) -> None:
        import av

        super().__init__(path)
        self.skipped = 0
        # av opens the file only at the first packet: create it now, so that an unwritable
        # path fails before the stream is asked for
        path.open("wb").close()
        self._out: Any = av.open(
            str(path),
            "w",
            format="mp4",
            options={
                "movflags": "frag_keyframe+empty_moov+default_base_moof",
                "frag_duration": str(_FRAGMENT_US),
                "flush_packets": "1",  # each fragment reaches the file when it is cut
            },
        )
        self._stream: Any = None
        self._closed = False

    def feed(self, payload: bytes) -> None:
        if self._closed:
            return
        for frame in self.demuxer.feed(payload):
            self._mux(frame)

    def _mux(self, frame: Frame) -> None:
        import av

        if self._stream is None:
            if not frame.key:
                self.skipped += 1
                return
            self._start(frame)
        packet = av.Packet(frame.data)
        packet.pts = packet.dts = self.timeline.next(frame.pts)
        packet.time_base = Fraction(1, PTS_HZ)
        packet.is_keyframe = frame.key
        packet.stream = self._stream
        self._out.mux(packet)
        self.frames += 1

    def _start(self, key: Frame) -> None:
        codec = {"H264": "h264", "H265": "hevc"}.get(key.codec)
        if codec is None:
            raise UnsupportedCodec(key.codec or "not H.264/H.265")
        width, height = _picture_size(key, codec)
        stream = self._out.add_stream(codec)
        stream.time_base = Fraction(1, PTS_HZ)
        stream.width, stream.height = width, height
        # Annex B parameter sets: the muxer builds avcC/hvcC from them and converts each packet
        stream.codec_context.extradata = parameter_sets(key.data, h265=codec == "hevc")
        self._stream = stream
        self.codec = key.codec

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            for frame in self.demuxer.flush():
                self._mux(frame)
            self._out.close()  # the last fragment and the trailer
            return
        # nothing to mux: no header was written, leave no half file behind
        self._out.close()
        self.path.unlink(missing_ok=True)


class UnsupportedCodec(Exception):
    """The device's video cannot go into an MP4 (the message names the codec)."""


def open_recording(path: Path) -> Recording:
    """The :class:`Recording` for ``path``'s extension (one of :data:`RECORDING_FORMATS`).

    Raises:
        OSError: the file cannot be created.
        ValueError: the extension is not one of :data:`RECORDING_FORMATS`.
    """
    suffix = path.suffix.lower()
    if suffix == ".ps":
        return PsRecording(path)
    if suffix == ".mp4":
        return Mp4Recording(path)
    raise ValueError(f"cannot write {suffix or 'a file without an extension'}: use {' or '.join(RECORDING_FORMATS)}")


class Timeline:
    """PTS (90 kHz) made strictly increasing from 0, as MP4 needs.

    A 33-bit wrap is unwrapped; a missing PTS, one that goes back or one that jumps by more
    than 10 s (a device restart) continues one frame interval after the last.
    """

    def __init__(self) -> None:
        self.last = -1
        self._raw: int | None = None
        self._step = PTS_HZ // 25

    def next(self, pts: int | None) -> int:
        """The output PTS of a frame whose PS PTS is ``pts``."""
        if self._raw is None or pts is None:
            out = self.last + (self._step if self.last >= 0 else 1)
        else:
            delta = (pts - self._raw) % (1 << 33)
            if 0 < delta <= _MAX_PTS_STEP:
                out = self.last + delta
                self._step = delta
            else:
                out = self.last + self._step
        if pts is not None:
            self._raw = pts
        elif self._raw is not None:
            self._raw += self._step
        self.last = out
        return out

    @property
    def duration(self) -> int:
        """90 kHz ticks the frames so far cover: up to the last one's PTS, and one frame interval more."""
        return self.last + self._step if self.last >= 0 else 0


def parameter_sets(data: bytes, *, h265: bool = False) -> bytes:
    """The VPS/SPS/PPS NAL units of an Annex B access unit, Annex B again (H.264 types 7, 8; H.265 32-34)."""
    wanted = (32, 33, 34) if h265 else (7, 8)
    out = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        nxt = data.find(b"\x00\x00\x01", pos + 3)
        nal = data[pos + 3 : nxt if nxt >= 0 else len(data)]
        if nxt >= 0 and nal.endswith(b"\x00"):
            nal = nal[:-1]  # the zero_byte of the next four-byte start code
        if nal and ((nal[0] >> 1) & 0x3F if h265 else nal[0] & 0x1F) in wanted:
            out.append(b"\x00\x00\x00\x01" + nal)
        pos = nxt
    return b"".join(out)


def picture_size(key: Frame) -> tuple[int, int]:
    """Decode one key frame (H.264, or H.265 when its codec says so); its width and height.

    Raises:
        ValueError: it does not decode.
    """
    return _picture_size(key, "hevc" if key.codec == "H265" else "h264")


def _picture_size(key: Frame, codec: str) -> tuple[int, int]:
    picture = _decode(key.data, codec)
    return picture.width, picture.height


def _decode(data: bytes, codec: str) -> Any:
    import av

    context: Any = av.CodecContext.create(codec, "r")
    pictures = []
    for packet in [*context.parse(data), *context.parse(b"")]:  # b"" flushes the parser's last unit
        pictures += context.decode(packet)
    pictures += context.decode(None)
    if not pictures:
        raise ValueError("the key frame did not decode")
    return pictures[0]


def jpeg_of(frame: Frame) -> bytes:
    """Decode one key frame and encode it as JPEG.

    Raises:
        ValueError: it does not decode.
    """
    import av

    picture = _decode(frame.data, "hevc" if frame.codec == "H265" else "h264").reformat(format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = picture.width, picture.height, "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    data = b"".join(bytes(p) for p in encoder.encode(picture))
    data += b"".join(bytes(p) for p in encoder.encode(None))
    return data
