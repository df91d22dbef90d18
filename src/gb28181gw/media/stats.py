"""Per-stream RTP statistics (RFC 3550 §6.4.1 and Appendix A.1), sans-I/O.

Counts packets and bytes, sequence gaps (loss), late and duplicate packets, keeps the
bitrate over a sliding second and the time of the last packet (media timeout).
"""

from __future__ import annotations

from dataclasses import dataclass

_WINDOW = 128
_WINDOW_MASK = (1 << _WINDOW) - 1


@dataclass(slots=True)
class StreamStats:
    """Feed :meth:`packet` with each RTP packet's sequence number, size and arrival time."""

    packets: int = 0
    bytes: int = 0
    lost: int = 0
    reordered: int = 0
    duplicates: int = 0
    last_packet_at: float = 0.0
    highest_seq: int = -1
    cycles: int = 0
    _seen: int = 0  # bit i: highest_seq - i arrived (the last 128 sequence numbers)
    _window_start: float = 0.0
    _window_bytes: int = 0
    bitrate: float = 0.0  # bits per second over the last full second

    def packet(self, seq: int, size: int, now: float) -> None:
        """Account for one packet."""
        self.packets += 1
        self.bytes += size
        self.last_packet_at = now
        if now - self._window_start >= 1.0:
            self._roll(now)
        self._window_bytes += size
        if self.highest_seq < 0:
            self.highest_seq = seq
            self._seen = 1
            return
        delta = (seq - self.highest_seq) & 0xFFFF
        if delta == 0:
            self.duplicates += 1
        elif delta < 0x8000:
            if seq < self.highest_seq:
                self.cycles += 1  # wrapped past 65535
            self.lost += delta - 1
            self.highest_seq = seq
            self._seen = ((self._seen << delta) | 1) & _WINDOW_MASK
        else:
            back = 0x10000 - delta  # how far behind the highest
            if back < _WINDOW and self._seen >> back & 1:
                self.duplicates += 1
                return
            # a late packet fills a gap that was counted as lost
            self.reordered += 1
            if back < _WINDOW:
                self._seen |= 1 << back
            if self.lost:
                self.lost -= 1

    def in_order(self, count: int, size: int, now: float) -> None:
        """Account for ``count`` packets of ``size`` bytes in all, arrived at ``now``, each one
        sequence number past the one before, the first one past :attr:`highest_seq` (which a packet
        has set): what ``count`` calls of :meth:`packet` would do, at once (the relay's batches).
        ``count`` stays below 2**15."""
        self.packets += count
        self.bytes += size
        self.last_packet_at = now
        if now - self._window_start >= 1.0:
            self._roll(now)
        self._window_bytes += size
        highest = self.highest_seq + count
        if highest > 0xFFFF:
            self.cycles += 1  # wrapped past 65535
            highest &= 0xFFFF
        self.highest_seq = highest
        self._seen = ((self._seen << count) | ((1 << count) - 1)) & _WINDOW_MASK

    def _roll(self, now: float) -> None:
        # a new one-second window: the bitrate of the one that ends
        elapsed = now - self._window_start if self._window_start else 1.0
        self.bitrate = self._window_bytes * 8 / max(elapsed, 1.0) if self._window_start else 0.0
        self._window_start = now
        self._window_bytes = 0

    def idle(self, now: float) -> float:
        """Seconds since the last packet (0 before the first)."""
        return now - self.last_packet_at if self.packets else 0.0
