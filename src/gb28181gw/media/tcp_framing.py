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


class Rfc4571Reader:
    """Feed TCP bytes, get RTP packets.

    Attributes:
        resyncs: times the stream was corrupted and the reader scanned for the next header.
        skipped: bytes thrown away while resynchronising.
    """

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self.resyncs = 0
        self.skipped = 0
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the whole packets now available."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            if buf[pos] == 0x24 and n - pos >= 4 and self._plausible(buf, pos + 4, (buf[pos + 2] << 8) | buf[pos + 3]):
                header, length = 4, (buf[pos + 2] << 8) | buf[pos + 3]  # '$' interleaved
            else:
                header, length = 2, (buf[pos] << 8) | buf[pos + 1]
                if not self._plausible(buf, pos + 2, length):
                    # corrupted: skip one byte and look for the next plausible frame
                    if n - pos < 3:
                        break
                    if not self._skipping:
                        self._skipping = True
                        self.resyncs += 1
                    pos += 1
                    self.skipped += 1
                    continue
            if n - pos < header + length:
                break
            self._skipping = False
            out.append(bytes(buf[pos + header : pos + header + length]))
            pos += header + length
        if pos:
            del buf[:pos]
        return out

    def _plausible(self, buf: bytearray, start: int, length: int) -> bool:
        # an RTP (or RTCP) packet: version 2, at least a header, not absurdly long
        if length < 12 or length > self._max:
            return False
        return start >= len(buf) or buf[start] >> 6 == 2

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of a frame."""
        return len(self._buf)
