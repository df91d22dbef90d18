"""RTP over TCP (RFC 4571, GB/T 28181-2022 Annex D): a 2-byte length before each packet.

The reader also accepts the RTSP-interleaved form (``$`` + channel + 2-byte length) some
devices and platforms send (PROTOCOL.md §8.6), checks that each frame holds RTP version
2 with a plausible length, and after a corrupted frame scans forward to the next
plausible header instead of giving up on the connection.
"""

from __future__ import annotations

import struct

#: Longest RTP packet accepted in a TCP frame; longer is taken as a corrupted stream.
MAX_FRAME = 65535


def frame(packet: bytes) -> bytes:
    """Prefix ``packet`` with its RFC 4571 length."""
    if len(packet) > MAX_FRAME:
        raise ValueError("an RFC 4571 frame holds at most 65,535 bytes")
    return struct.pack("!H", len(packet)) + packet


class FrameScanner:
    """Finds RFC 4571 (and ``$``-interleaved) frames in a caller's buffer without copying them.

    :meth:`scan` returns where each whole packet lies; the relay forwards straight from the
    buffer it received into, and the bytes just before each packet (its length prefix) are
    free for the relay to rewrite as the prefix of an outgoing TCP frame.

    Attributes:
        resyncs: times the stream was corrupted and the scanner looked for the next header.
        skipped: bytes thrown away while resynchronising.
    """

    __slots__ = ("_max", "resyncs", "skipped", "_skipping")

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        self._max = max_frame
        self.resyncs = 0
        self.skipped = 0
        self._skipping = False

    def scan(self, buf: bytes | bytearray, pos: int, end: int, out: list[tuple[int, int]]) -> int:
        """Append (offset, length) of each whole packet in ``buf[pos:end]`` to ``out``; return where the rest starts."""
        while end - pos >= 2:
            if (
                buf[pos] == 0x24
                and end - pos >= 4
                and self._plausible(buf, pos + 4, end, (buf[pos + 2] << 8) | buf[pos + 3])
            ):
                header, length = 4, (buf[pos + 2] << 8) | buf[pos + 3]  # '$' interleaved
            else:
                header, length = 2, (buf[pos] << 8) | buf[pos + 1]
                if not self._plausible(buf, pos + 2, end, length):
                    # corrupted: skip one byte and look for the next plausible frame
                    if end - pos < 3:
                        break
                    if not self._skipping:
                        self._skipping = True
                        self.resyncs += 1
                    pos += 1
                    self.skipped += 1
                    continue
            if end - pos < header + length:
                break
            self._skipping = False
            out.append((pos + header, length))
            pos += header + length
        return pos

    def _plausible(self, buf: bytes | bytearray, start: int, end: int, length: int) -> bool:
        # an RTP (or RTCP) packet: version 2, at least a header, not absurdly long
        if length < 12 or length > self._max:
            return False
        return start >= end or buf[start] >> 6 == 2


class Rfc4571Reader:
    """Feed TCP bytes, get RTP packets (as copies; the relay uses :class:`FrameScanner` directly).

    Attributes:
        scanner: its scanner (``resyncs`` and ``skipped`` count corruption).
    """

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.scanner = FrameScanner(max_frame=max_frame)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the whole packets now available."""
        buf = self._buf
        buf += data
        spans: list[tuple[int, int]] = []
        pos = self.scanner.scan(buf, 0, len(buf), spans)
        out = [bytes(buf[start : start + length]) for start, length in spans]
        if pos:
            del buf[:pos]
        return out

    @property
    def resyncs(self) -> int:
        """Times the stream was corrupted."""
        return self.scanner.resyncs

    @property
    def skipped(self) -> int:
        """Bytes skipped while resynchronising."""
        return self.scanner.skipped

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of a frame."""
        return len(self._buf)
