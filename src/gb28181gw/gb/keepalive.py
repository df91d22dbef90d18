"""Device liveness (GB/T 28181 §9.6, PROTOCOL.md §4): deadlines for every device in one structure.

A device is offline when neither a keepalive nor a REGISTER refresh arrived within
``min(registration left, interval × count)``. Each device has at most one live
entry in one queue; a keepalive moves its deadline without touching the queue
(see :class:`Liveness`). No task or timer per device.

:func:`check_sender` is the keepalive procedure beside :meth:`gb28181gw.gb.registrar.Registrar.handle`:
whether a MESSAGE naming a device may be served — by what the router makes of the answer
(404 to anyone but the registered device at its address) — and the device then takes
:attr:`~gb28181gw.gb.devices.DeviceEvent.KEEPALIVE` through its transition table.
:func:`liveness_timeout` and :func:`deadline_event` say when a device's deadline is
and what it means when it passes.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum

from gb28181gw.sip.peer import Peer

from .devices import DeviceEvent
from .model import Device, DeviceState

#: PROTOCOL.md §4.1 defaults.
DEFAULT_INTERVAL = 60
DEFAULT_COUNT = 3


def keepalive_timeout(interval: int, count: int) -> float:
    """Seconds without a heartbeat before a device is offline; unknown or zero values use 60 × 3 (K3)."""
    return float((interval if interval > 0 else DEFAULT_INTERVAL) * (count if count > 0 else DEFAULT_COUNT))


#: A deadline this close to the registration's end is the registration's end (timer and clock jitter).
EXPIRY_SLACK = 0.5


def liveness_timeout(
    device: Device, epoch: float, *, interval: int = DEFAULT_INTERVAL, count: int = DEFAULT_COUNT
) -> float:
    """Seconds from ``epoch`` until ``device``'s deadline.

    Online: ``min(registration left, interval × count)`` with its own heartbeat settings when
    known, else ``interval`` / ``count``. Offline but registered: the registration's end.
    """
    left = max(device.expires_at - epoch, 0.0)
    if device.state is not DeviceState.ONLINE:
        return left
    return min(left, keepalive_timeout(device.keepalive_interval or interval, device.keepalive_count or count))


def deadline_event(device: Device, epoch: float) -> DeviceEvent | None:
    """What a passed deadline means: EXPIRED, TIMED_OUT, or ``None`` (not yet: watch it again, or not watched)."""
    if device.state is DeviceState.UNREGISTERED:
        return None
    if device.expires_at <= epoch + EXPIRY_SLACK:
        return DeviceEvent.EXPIRED
    return DeviceEvent.TIMED_OUT if device.state is DeviceState.ONLINE else None


class MessageResult(StrEnum):
    """What became of a MESSAGE claiming a device's ID (the ``result`` label of the keepalives metric)."""

    OK = "ok"  # from the registered device: served (a keepalive is answered 200)
    UNREGISTERED = "unregistered"  # 404: the sender holds no registration
    WRONG_ADDRESS = "wrong-address"  # 404: not from where the device registered (it must register again)
    BAD_BODY = "bad-body"  # 400: the body is no MANSCDP XML


def check_sender(device: Device | None, peer: Peer, epoch: float, *, accept_port_change: bool) -> MessageResult:
    """Whether a MESSAGE naming ``device`` in its From may be served (GB/T 28181 §9.6, PROTOCOL.md §4.1).

    Args:
        device: the record of the From user's ID, or ``None`` if unknown.
        peer: where the MESSAGE came from. Only the address the device registered from is
            believed: anyone can put a device's ID in a MESSAGE, and a keepalive that moved
            the device would send its next query or INVITE to a stranger.
        epoch: wall-clock epoch seconds.
        accept_port_change: a new port on the registered IP is the device (K5, NAT rebinding);
            a keepalive then moves it there.

    Returns:
        :attr:`MessageResult.OK`; :attr:`~MessageResult.UNREGISTERED` (K4: never 200 to an
        unregistered device, or it believes it is registered; 404 makes real devices register
        again); or :attr:`~MessageResult.WRONG_ADDRESS` (404 too: a real device registers
        again, with its password, from where it now is; a stranger cannot).
    """
    if device is None or not device.registered or device.expires_at <= epoch:
        return MessageResult.UNREGISTERED
    if peer.host != device.host or (peer.port != device.port and not accept_port_change):
        return MessageResult.WRONG_ADDRESS
    return MessageResult.OK


class Liveness:
    """One deadline per device; :meth:`due` says whose passed.

    A keepalive moves its device's deadline later, thousands of times a second at a large
    site. Rescheduling a queue entry each time cost an allocation, a cancelled entry left in
    the queue for the whole keepalive window (millions of them under load, each walked by the
    garbage collector) and a new earliest-deadline search. So a keepalive only notes the
    wanted deadline when the queued entry fires no later than it: that entry fires, :meth:`due`
    finds the device heard from since and queues it again for the rest of its time, once per
    window rather than once per keepalive. A deadline moved earlier (a registration about to
    end) is queued at once. What :meth:`due` reports, and when, is what exact rescheduling gave.

    Held per device: its wanted deadline and the deadline of its one live queued entry (two
    dict entries sharing one float until a keepalive moves the wanted one), and the entry
    itself as a device ID and that float in two FIFOs per delay (sixteen bytes). The queue
    was a :class:`~gb28181gw.deadlines.TimerQueue` of :class:`~gb28181gw.deadlines.Deadline`
    objects, a third dict of them and a float each besides: ~70 bytes more per registered
    device, and one more object per device for the garbage collector to walk (issue 16: ≤ 1 KiB
    per device). An entry is live while its deadline is the one :attr:`_queued` holds for its
    device; any other (the device forgotten, or queued again earlier) is dropped when reached.
    """

    def __init__(self) -> None:
        # delay rounded to the second → (device IDs, their deadlines): FIFOs of entries alike in delay,
        # so a device may go offline up to a second after its deadline (minutes long), as in
        # deadlines.TimerQueue, with a few hundred buckets rather than one per remainder
        self._buckets: dict[float, tuple[deque[str], deque[float]]] = {}
        self._queued: dict[str, float] = {}  # device → deadline of its live queued entry
        self._wanted: dict[str, float] = {}  # device → when it goes offline unless touched
        self._next: float | None = None
        self._stale = False  # the queue changed since _next was read from it

    def _queue(self, device_id: str, now: float, when: float) -> None:
        key = float(round(when - now))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = (deque(), deque())
        bucket[0].append(device_id)
        bucket[1].append(when)
        self._queued[device_id] = when
        self._stale = True

    def touch(self, device_id: str, now: float, timeout: float) -> float:
        """(Re)start ``device_id``'s deadline at ``now + timeout``; return it."""
        when = now + max(timeout, 0.0)
        self._wanted[device_id] = when
        queued = self._queued.get(device_id)
        if queued is not None and queued <= when:
            return when  # the queued entry fires first and queues the rest (see the class)
        self._queue(device_id, now, when)  # an earlier entry, if any, is no longer live
        return when

    def forget(self, device_id: str) -> None:
        """Stop watching ``device_id``."""
        self._wanted.pop(device_id, None)
        if self._queued.pop(device_id, None) is not None:
            self._stale = True

    def deadline(self, device_id: str) -> float | None:
        """When ``device_id`` goes offline unless touched, or ``None``."""
        return self._wanted.get(device_id)

    def next_deadline(self) -> float | None:
        """The earliest queued entry, for the shell's one timer: no later than the earliest
        deadline (earlier when that entry only queues the rest of a device's time)."""
        if self._stale:
            self._next = self._earliest()
            self._stale = False
        return self._next

    def _earliest(self) -> float | None:
        queued = self._queued
        best: float | None = None
        empty: list[float] = []
        for key, (ids, whens) in self._buckets.items():
            while ids and queued.get(ids[0]) != whens[0]:
                ids.popleft()  # not live (see the class)
                whens.popleft()
            if not ids:
                empty.append(key)
                continue
            when = whens[0]
            if best is None or when < best:
                best = when
        for key in empty:
            del self._buckets[key]
        return best

    def due(self, now: float, most: int | None = None) -> list[str]:
        """Devices whose deadline passed, the ``most`` earliest of them if given; they are no
        longer watched. Those left due stay queued: :meth:`next_deadline` is then ``now`` or
        earlier, and the next call takes them."""
        out: list[str] = []
        if most is not None and most <= 0:
            return out
        queued = self._queued
        while True:
            # the earliest live head due by now (of equal ones, the last bucket's)
            best: tuple[deque[str], deque[float]] | None = None
            best_when = now
            for bucket in self._buckets.values():
                ids, whens = bucket
                while ids and queued.get(ids[0]) != whens[0]:
                    ids.popleft()
                    whens.popleft()
                if ids and whens[0] <= best_when:
                    best_when = whens[0]
                    best = bucket
            if best is None:
                break
            device_id = best[0].popleft()
            best[1].popleft()
            del queued[device_id]
            self._stale = True
            wanted = self._wanted.get(device_id, now)
            if wanted > now:
                # heard from since this entry was queued: watch it for the rest of its time
                self._queue(device_id, now, wanted)
                continue
            self._wanted.pop(device_id, None)
            out.append(device_id)
            if len(out) == most:
                break
        return out

    def queued(self) -> int:
        """Entries in the queue, those no longer live but not yet dropped included."""
        return sum(len(ids) for ids, _ in self._buckets.values())

    def __len__(self) -> int:
        return len(self._queued)
