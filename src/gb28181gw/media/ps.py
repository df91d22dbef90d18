"""Incremental MPEG-2 Program Stream demultiplexer (ISO/IEC 13818-1, GB/T 28181 Annex C, PROTOCOL.md §8.2-8.5).

Feed it the payloads of consecutive RTP packets; it returns the video access units it
completes, each with its PTS and whether it is a key frame. It learns the codec from the
PSM (stream_type, remembered between key frames since only key-frame packs carry a PSM)
or, without one, from the NAL units. It never changes the bytes it is given — the
relay forwards the RTP packets untouched; this is for statistics and clean file output.
Garbage is skipped up to the next start code and counted, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: PSM stream types (PROTOCOL.md §8.7).
STREAM_TYPES = {
    0x10: "MPEG4",
    0x1B: "H264",
    0x24: "H265",
    0x80: "SVAC",
    0x90: "PCMA",
    0x91: "PCMU",
    0x92: "G7221",
    0x93: "G7231",
    0x99: "G729",
    0x9B: "SVACA",
    0x0F: "AAC",
}

PACK = 0xBA
SYSTEM_HEADER = 0xBB
PSM = 0xBC
END = 0xB9
_PACK_START = b"\x00\x00\x01\xba"
_SKIPPED_WITH_LENGTH = {0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF}  # padding, private 2, ECM/EMM/DSMCC …


@dataclass(slots=True)
class Frame:
    """One video access unit.

    Attributes:
        data: the elementary-stream bytes (Annex B start codes included).
        pts: its PTS in 90 kHz units, or ``None``.
        key: whether it holds an IDR (H.264 type 5) / IRAP (H.265 types 16-21) picture.
        codec: ``H264``, ``H265`` … as far as known.
    """

    data: bytes
    pts: int | None
    key: bool
    codec: str


@dataclass(slots=True)
class PsStats:
    """What the demuxer has seen."""

    packs: int = 0
    frames: int = 0
    key_frames: int = 0
    errors: int = 0
    skipped_bytes: int = 0
    video_codec: str = ""
    audio_codec: str = ""
    stream_types: dict[int, int] = field(default_factory=dict)
    last_key_frame_index: int = -1
    key_frame_interval: int = 0  # frames between the last two key frames


class PsDemuxer:
    """See the module docstring. ``max_buffer`` bounds what is held waiting for the rest of a unit."""

    def __init__(self, *, max_buffer: int = 4 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_buffer
        self._es = bytearray()
        self._au: list[bytes] = []
        self._au_vcl = False
        self._au_pts: int | None = None
        self._ready: list[Frame] = []
        self._pts: int | None = None
        self.stats = PsStats()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add bytes (any buffer: compiled, a narrower annotation would refuse a bytearray or a
        memoryview with TypeError); return the video frames now complete."""
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            if buf[pos] != 0 or buf[pos + 1] != 0 or buf[pos + 2] != 1:
                nxt = buf.find(b"\x00\x00\x01", pos + 1)
                skip = (nxt if nxt >= 0 else n - 2) - pos
                self.stats.skipped_bytes += skip
                self.stats.errors += 1
                pos += skip
                continue
            code = buf[pos + 3]
            if code == PACK:
                if n - pos < 5:
                    break
                if buf[pos + 4] >> 6 == 1:  # MPEG-2: 14 bytes + stuffing
                    if n - pos < 14:
                        break
                    size = 14 + (buf[pos + 13] & 0x07)
                else:  # MPEG-1 pack header
                    size = 12
                if n - pos < size:
                    break
                self.stats.packs += 1
                pos += size
            elif code == END:
                pos += 4
            elif (
                code == PSM
                or code == SYSTEM_HEADER
                or code in _SKIPPED_WITH_LENGTH
                or 0xC0 <= code <= 0xEF
                or code == 0xBD
            ):
                if n - pos < 6:
                    break
                length = (buf[pos + 4] << 8) | buf[pos + 5]
                if n - pos < 6 + length:
                    break
                body = bytes(buf[pos + 6 : pos + 6 + length])
                pos += 6 + length
                if code == PSM:
                    self._psm(body)
                elif 0xE0 <= code <= 0xEF:
                    self._video_pes(body)
                    if self._ready:
                        out += self._ready
                        self._ready = []
                elif 0xC0 <= code <= 0xDF and not self.stats.audio_codec:
                    self.stats.audio_codec = "audio"
            else:
                # a start code that is not a PS unit (an ES start code outside PES: corrupted)
                self.stats.errors += 1
                self.stats.skipped_bytes += 3
                pos += 3
        if pos:
            del buf[:pos]
        if len(buf) > self._max:
            self.stats.errors += 1
            self.stats.skipped_bytes += len(buf)
            buf.clear()
        return out

    def flush(self) -> list[Frame]:
        """The frames still being gathered (end of stream)."""
        self._split(final=True)
        last = self._finish()
        out, self._ready = self._ready, []
        return out + ([last] if last is not None else [])

    def _psm(self, body: bytes) -> None:
        mapping = parse_psm(body)
        if mapping is None:
            self.stats.errors += 1
            return
        _learn(self.stats, mapping)

    def _video_pes(self, body: bytes) -> Frame | None:
        if len(body) < 3 or body[0] >> 6 != 2:
            self.stats.errors += 1  # MPEG-1 style or corrupt PES header
            return None
        flags, header_len = body[1], body[2]
        if len(body) < 3 + header_len:
            self.stats.errors += 1
            return None
        if flags & 0x80 and header_len >= 5:
            p = body[3:8]
            self._pts = ((p[0] >> 1) & 0x07) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1
        self._es += body[3 + header_len :]
        self._split()
        return None

    def _split(self, final: bool = False) -> None:
        # Access units are delimited by the NAL units themselves (a PES may hold part of a
        # frame or several frames): a new one starts at an AUD, at parameter sets/SEI after a
        # picture, or at the first slice of a new picture (first_mb_in_slice == 0).
        es = self._es
        start = es.find(b"\x00\x00\x01")
        if start < 0:
            return
        while True:
            nxt = es.find(b"\x00\x00\x01", start + 3)
            if nxt < 0:
                if not final:
                    break
                nxt = len(es)
            nal = bytes(es[start:nxt])
            done = self._nal(nal)
            if done is not None:
                self._ready.append(done)
            if nxt >= len(es):
                start = nxt
                break
            start = nxt
        del es[:start]

    def _nal(self, nal: bytes) -> Frame | None:
        if len(nal) < 5:
            self._au.append(nal)
            return None
        codec = self.stats.video_codec or _guess_codec(nal) or "H264"
        if codec == "H265":
            t = (nal[3] >> 1) & 0x3F
            vcl = t < 32
            first_slice = vcl and bool(nal[5] & 0x80) if len(nal) > 5 else False
            prefix = t in (32, 33, 34, 35, 39)
        else:
            t = nal[3] & 0x1F
            vcl = t in (1, 5)
            first_slice = vcl and bool(nal[4] & 0x80)
            prefix = t in (6, 7, 8, 9)
        done = None
        if self._au_vcl and (prefix or first_slice):
            done = self._finish()
        if not self._au:
            self._au_pts = self._pts
        self._au.append(nal)
        self._au_vcl = self._au_vcl or vcl
        return done

    def _finish(self) -> Frame | None:
        if not self._au:
            return None
        data = b"".join(self._au)
        self._au = []
        self._au_vcl = False
        codec = self.stats.video_codec or _guess_codec(data)
        if not self.stats.video_codec and codec:
            self.stats.video_codec = codec
        key = _is_key(data, codec)
        s = self.stats
        if key:
            if s.last_key_frame_index >= 0:
                s.key_frame_interval = s.frames - s.last_key_frame_index
            s.last_key_frame_index = s.frames
            s.key_frames += 1
        s.frames += 1
        return Frame(data, self._au_pts, key, codec)


def parse_psm(body: bytes | bytearray) -> dict[int, int] | None:
    """elementary_stream_id → stream_type from a PSM body (after its 6-byte start), or ``None`` if truncated."""
    if len(body) < 6:
        return None
    info_len = (body[2] << 8) | body[3]
    pos = 4 + info_len
    if len(body) < pos + 2:
        return None
    map_len = (body[pos] << 8) | body[pos + 1]
    pos += 2
    end = min(len(body), pos + map_len)
    mapping = {}
    while pos + 4 <= end:
        mapping[body[pos + 1]] = body[pos]
        pos += 4 + ((body[pos + 2] << 8) | body[pos + 3])
    return mapping


def _learn(stats: PsStats, mapping: dict[int, int]) -> None:
    for stream_id, stream_type in mapping.items():
        stats.stream_types[stream_id] = stream_type
        name = STREAM_TYPES.get(stream_type, f"0x{stream_type:02x}")
        if 0xE0 <= stream_id <= 0xEF:
            stats.video_codec = name
        elif 0xC0 <= stream_id <= 0xDF:
            stats.audio_codec = name


_KEY_NALS = {"H264": frozenset({5, 7}), "H265": frozenset({16, 17, 18, 19, 20, 21, 32, 33})}


class PsInspector:
    """What the relay learns from a PS stream without demultiplexing it (the hot path).

    The relay calls :meth:`inspect` with the payload that opens a frame (the first RTP payload of
    a new timestamp, or one that starts a PS pack): it checks the pack header, learns the codec
    from a PSM, tells video from audio packs by their first PES, and finds key frames by the first
    NAL types of the video (SPS/IDR, VPS/SPS/IRAP; both editions put SPS+PPS before every I frame,
    F.2.2), so the relay knows where to start the packets it keeps for joining consumers. When
    the payload ends before that (a pack header, system header and PSM sent alone, a pack header
    cut short, parameter sets with the picture in the next packet), it says so (``None``) and the
    relay calls it again with the frame's bytes so far. Nothing is copied but a PSM; nothing is
    changed. A frame that does not begin with a pack header is counted in ``stats.errors``
    (garbage or truncated PS: still relayed as it is).
    """

    __slots__ = ("stats", "units")

    def __init__(self) -> None:
        self.stats = PsStats()
        self.units = False

    def frame_start(self, buf: bytes | bytearray, start: int, end: int) -> bool:
        """Whether the frame whose bytes from its start are ``buf[start:end]`` is a key frame,
        deciding with them (no more of it will be inspected)."""
        return bool(self.inspect(buf, start, end, final=True))

    def inspect(self, buf: bytes | bytearray, start: int, end: int, *, final: bool = False) -> bool | None:
        """Like :meth:`frame_start`, but ``None`` while the bytes end before its video's first NAL
        units tell (unless ``final``): then call again with more of the same frame's bytes. The
        figures count each frame once, when told; :attr:`units` is false when a pack header was
        followed by no PS unit (nothing in this pack to follow)."""
        # one method, not a chain of them: it runs once a frame on the relay's hot path
        verdict: bool | None = False
        video = sps = told = False  # told: by a picture
        self.units = True
        size = end - start
        if size < 14 and (size < 4 or buf.startswith(_PACK_START, start)):
            # a pack header cut short, the rest in the next packet (or garbage)
            if size >= 4 or _PACK_START.startswith(bytes(buf[start:end])):
                verdict = None
        elif buf.startswith(_PACK_START, start):
            pos = start + (14 + (buf[start + 13] & 0x07) if buf[start + 4] >> 6 == 1 else 12)
            self.units = False
            while True:
                if pos + 6 > end:
                    # the payload ends before a picture: a pack header, system header and PSM sent
                    # alone, or parameter sets with the picture in the next packet
                    if pos + 4 > end or buf.startswith(b"\x00\x00\x01", pos):
                        self.units = True
                        verdict = None
                    break
                if buf[pos] != 0 or buf[pos + 1] != 0 or buf[pos + 2] != 1:
                    break
                self.units = True
                code = buf[pos + 3]
                length = (buf[pos + 4] << 8) | buf[pos + 5]
                if code == PSM:
                    if pos + 6 + length <= end:  # a PSM cut short is read once the rest has come
                        mapping = parse_psm(bytes(buf[pos + 6 : pos + 6 + length]))
                        if mapping is None:
                            self.stats.errors += 1
                        else:
                            _learn(self.stats, mapping)
                elif 0xE0 <= code <= 0xEF:
                    video = True
                    if pos + 9 > end:
                        verdict = None
                        break
                    pes_end = pos + 6 + length
                    found = self._video(buf, pos + 9 + buf[pos + 8], min(end, pes_end))
                    if found is _PICTURE or found is _KEY_PICTURE:
                        verdict, told = found is _KEY_PICTURE, True
                        break
                    sps = sps or found is _PARAMETER_SETS
                    if pes_end > end:
                        verdict = None  # the picture is later in this PES
                        break
                elif code != SYSTEM_HEADER and code != 0xBD and code not in _SKIPPED_WITH_LENGTH:
                    break  # audio first: not a video frame (private data and padding may precede the video)
                pos += 6 + length
        if verdict is None:
            if not final:
                return None
            verdict = sps  # all there is: parameter sets of a key frame are taken for one
        elif not told:
            verdict = sps
        s = self.stats
        if size < 5 or not buf.startswith(_PACK_START, start) or size < (14 if buf[start + 4] >> 6 == 1 else 12):
            s.errors += 1  # garbage, or a pack header cut short
            return False
        s.packs += 1
        if video:
            s.frames += 1
        if verdict:
            if s.last_key_frame_index >= 0:
                s.key_frame_interval = s.frames - 1 - s.last_key_frame_index
            s.last_key_frame_index = s.frames - 1
            s.key_frames += 1
        return verdict

    def _video(self, buf: bytes | bytearray, pos: int, end: int) -> object:
        # what the first NAL units of buf[pos:end] say: a key picture, another picture, the
        # parameter sets of a key frame (its picture further on), or nothing yet
        s = self.stats
        codec = s.video_codec or _codec_of(buf, pos, end) or "H264"
        h265 = codec == "H265"
        key_types = _KEY_NALS.get(codec, _KEY_NALS["H264"])
        pos = buf.find(b"\x00\x00\x01", pos, end)
        found = _NOTHING
        while 0 <= pos < end - 3:
            b = buf[pos + 3]
            t = (b >> 1) & 0x3F if h265 else b & 0x1F
            if t in key_types:
                if (t < 32) if h265 else t == 5:
                    return _KEY_PICTURE  # the IDR/IRAP picture itself
                found = _PARAMETER_SETS
            elif (t < 32) if h265 else t == 1:
                return _PICTURE  # a picture that is not a key frame (some encoders send SPS+PPS before every one)
            pos = buf.find(b"\x00\x00\x01", pos + 3, end)
        return found


_KEY_PICTURE, _PICTURE, _PARAMETER_SETS, _NOTHING = object(), object(), object(), object()


def _codec_of(buf: bytes | bytearray, pos: int, end: int) -> str:
    # No PSM seen: an H.265 VPS/SPS/PPS header byte (0x40/0x42/0x44; as H.264 these are types
    # 0, 2 and 4, which cameras never send) says H.265; read as H.264 its IRAP pictures never
    # look like key frames. Checked only while no PSM has named the codec.
    pos = buf.find(b"\x00\x00\x01", pos, end)
    while 0 <= pos < end - 3:
        b = buf[pos + 3]
        if b in (0x40, 0x42, 0x44):
            return "H265"
        if b & 0x1F in (1, 5, 7, 8, 9):
            return "H264"
        pos = buf.find(b"\x00\x00\x01", pos + 3, end)
    return ""


def _nal_types(data: bytes, h265: bool) -> list[int]:
    types = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0 and pos + 3 < len(data):
        b = data[pos + 3]
        types.append((b >> 1) & 0x3F if h265 else b & 0x1F)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return types


def _guess_codec(data: bytes) -> str:
    types = _nal_types(data, h265=False)
    if any(t in (1, 5, 7, 8, 9) for t in types):
        return "H264"
    if any(t in (32, 33, 34) for t in _nal_types(data, h265=True)):
        return "H265"
    return ""


def _is_key(data: bytes, codec: str) -> bool:
    if codec == "H265":
        return any(16 <= t <= 21 for t in _nal_types(data, h265=True))
    return 5 in _nal_types(data, h265=False)
