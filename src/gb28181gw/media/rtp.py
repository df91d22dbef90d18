"""RTP packets (RFC 3550 §5.1) and the helpers a relay needs.

:meth:`RtpPacket.parse` checks every length before slicing; :func:`set_ssrc` rewrites
the SSRC of a packet in place in a caller's buffer (the relay's zero-copy path); the
``uint16``/``uint32`` helpers do sequence and timestamp arithmetic with wraparound.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gb28181gw.errors import RtpError

HEADER_LENGTH = 12
_HEADER = struct.Struct("!BBHII")


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet.

    Attributes:
        payload_type: 7-bit PT (96 for PS).
        sequence: 16-bit sequence number.
        timestamp: 32-bit timestamp (90 kHz for video and PS).
        ssrc: 32-bit SSRC (the integer value of the GB ``y=`` string).
        marker: the M bit (end of a frame on most devices: a hint only, §8.1).
        payload: the payload, padding removed.
        csrc: contributing sources.
        extension: (profile, data) of a header extension, or ``None``.
        padding: padding bytes that were removed (0 if none).
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool = False
    payload: bytes = b""
    csrc: list[int] = field(default_factory=list)
    extension: tuple[int, bytes] | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes | memoryview) -> RtpPacket:
        """Parse one packet.

        Raises:
            RtpError: shorter than a header, version not 2, truncated CSRC/extension, bad padding.
        """
        data = bytes(data)
        if len(data) < HEADER_LENGTH:
            raise RtpError(f"RTP packet of {len(data)} bytes is shorter than its header")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != 2:
            raise RtpError(f"RTP version {b0 >> 6}, expected 2")
        pos = HEADER_LENGTH
        cc = b0 & 0x0F
        if len(data) < pos + 4 * cc:
            raise RtpError("RTP packet has a truncated CSRC list")
        csrc = list(struct.unpack_from(f"!{cc}I", data, pos)) if cc else []
        pos += 4 * cc
        extension = None
        if b0 & 0x10:
            if len(data) < pos + 4:
                raise RtpError("RTP packet has a truncated extension header")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise RtpError("RTP packet has a truncated extension")
            extension = (profile, data[pos : pos + 4 * words])
            pos += 4 * words
        end = len(data)
        padding = 0
        if b0 & 0x20:
            padding = data[-1] if end > pos else 0
            if padding == 0 or padding > end - pos:
                raise RtpError("RTP packet has invalid padding")
            end -= padding
        return cls(b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), data[pos:end], csrc, extension, padding)

    def serialize(self) -> bytes:
        """The packet as bytes (padding is not re-added)."""
        b0 = 0x80 | (0x10 if self.extension is not None else 0) | len(self.csrc)
        out = [
            _HEADER.pack(b0, (0x80 if self.marker else 0) | self.payload_type, self.sequence, self.timestamp, self.ssrc)
        ]
        if self.csrc:
            out.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise ValueError("an RTP header extension is a whole number of 32-bit words")
            out.append(struct.pack("!HH", profile, len(data) // 4) + data)
        out.append(self.payload)
        return b"".join(out)

    __bytes__ = serialize

    def __repr__(self) -> str:
        return (
            f"RtpPacket(pt={self.payload_type}, seq={self.sequence}, ts={self.timestamp}, "
            f"ssrc={self.ssrc:#010x}, marker={self.marker}, payload={len(self.payload)} bytes)"
        )


def set_ssrc(buf: bytearray | memoryview, ssrc: int, offset: int = 0) -> None:
    """Rewrite the SSRC of the RTP packet at ``buf[offset:]`` in place (each consumer has its own)."""
    struct.pack_into("!I", buf, offset + 8, ssrc)


def read_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int, int, int, bool]:
    """(payload type, sequence, timestamp, ssrc, marker) without copying the packet.

    Raises:
        RtpError: too short or not version 2.
    """
    if len(buf) - offset < HEADER_LENGTH:
        raise RtpError("RTP packet shorter than its header")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(buf, offset)
    if b0 >> 6 != 2:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    return b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80)


def uint16_add(a: int, b: int) -> int:
    """``a + b`` modulo 2**16."""
    return (a + b) & 0xFFFF


def uint16_gt(a: int, b: int) -> bool:
    """Whether sequence ``a`` is after ``b`` (RFC 1982 serial arithmetic)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


def uint16_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in sequence space (-32768..32767)."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def uint32_gt(a: int, b: int) -> bool:
    """Whether timestamp ``a`` is after ``b`` (serial arithmetic on 32 bits)."""
    return a != b and ((a - b) & 0xFFFFFFFF) < 0x80000000
