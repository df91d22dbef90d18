"""Device liveness (GB/T 28181 §9.6, PROTOCOL.md §4): deadlines for every device in one structure.

A device is offline when neither a keepalive nor a REGISTER refresh arrived within
``min(registration left, interval × count)``. Each device has at most one live
deadline in a :class:`~gb28181gw.deadlines.TimerQueue`; touching it cancels the old
entry (lazily) and schedules a new one. 10,000 cameras are ~170 keepalives/s: a
few microseconds each, and no task or timer per device.
"""

from __future__ import annotations

from gb28181gw.deadlines import Deadline, TimerQueue

#: PROTOCOL.md §4.1 defaults.
DEFAULT_INTERVAL = 60
DEFAULT_COUNT = 3


def keepalive_timeout(interval: int, count: int) -> float:
    """Seconds without a heartbeat before a device is offline; unknown or zero values use 60 × 3 (K3)."""
    return float((interval if interval > 0 else DEFAULT_INTERVAL) * (count if count > 0 else DEFAULT_COUNT))


class Liveness:
    """One deadline per device; :meth:`due` says whose passed."""

    def __init__(self) -> None:
        self._queue: TimerQueue[str] = TimerQueue(resolution=1.0)
        self._entries: dict[str, Deadline[str]] = {}

    def touch(self, device_id: str, now: float, timeout: float) -> float:
        """(Re)start ``device_id``'s deadline at ``now + timeout``; return it."""
        old = self._entries.get(device_id)
        if old is not None:
            old.cancel()
        entry = self._queue.schedule(now, max(timeout, 0.0), device_id)
        self._entries[device_id] = entry
        return entry.when

    def forget(self, device_id: str) -> None:
        """Stop watching ``device_id``."""
        entry = self._entries.pop(device_id, None)
        if entry is not None:
            entry.cancel()

    def deadline(self, device_id: str) -> float | None:
        """When ``device_id`` goes offline unless touched, or ``None``."""
        entry = self._entries.get(device_id)
        return entry.when if entry is not None else None

    def next_deadline(self) -> float | None:
        """The earliest deadline, for the shell's one timer."""
        return self._queue.next_deadline()

    def due(self, now: float) -> list[str]:
        """Devices whose deadline passed; they are no longer watched."""
        out = []
        for device_id in self._queue.pop_due(now):
            self._entries.pop(device_id, None)
            out.append(device_id)
        return out

    def __len__(self) -> int:
        return len(self._entries)
