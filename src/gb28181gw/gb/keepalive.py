"""Device liveness (GB/T 28181 §9.6, PROTOCOL.md §4): deadlines for every device in one structure.

A device is offline when neither a keepalive nor a REGISTER refresh arrived within
``min(registration left, interval × count)``. Each device has at most one live
deadline in a :class:`~gb28181gw.deadlines.TimerQueue`; touching it cancels the old
entry (lazily) and schedules a new one. 10,000 cameras are ~170 keepalives/s: a
few microseconds each, and no task or timer per device.

:func:`decide` is the keepalive procedure beside :meth:`gb28181gw.gb.registrar.Registrar.handle`:
a device MESSAGE in, the status to answer and the transition to apply out.
:func:`liveness_timeout` and :func:`deadline_event` say when a device's deadline is
and what it means when it passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gb28181gw.deadlines import Deadline, TimerQueue
from gb28181gw.errors import ManscdpError
from gb28181gw.manscdp.codec import Element, child_text, parse_xml
from gb28181gw.sip.endpoint import Peer

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
    """What a device MESSAGE was (the ``result`` label of the keepalives metric)."""

    OK = "ok"  # a keepalive from a registered device
    UNREGISTERED = "unregistered"  # 404: the sender holds no registration
    WRONG_ADDRESS = "wrong-address"  # 404: not from where the device registered (it must register again)
    BAD_BODY = "bad-body"  # 400: the body is no MANSCDP XML
    OTHER = "other"  # 200, another CmdType: for the MANSCDP handlers


@dataclass(frozen=True, slots=True)
class MessageDecision:
    """The answer to one MESSAGE from a device (PROTOCOL.md §4.1).

    Attributes:
        status: the SIP status to answer: 200, 404 (not registered, K4) or 400 (bad body).
        result: what it was.
        warning: the ``Warning`` text of a 4xx, empty for 200.
        root: the parsed body, for MANSCDP other than a keepalive; ``None`` otherwise.
        event: :attr:`DeviceEvent.KEEPALIVE` to apply to the device (moving its address to
            ``peer`` and bringing it back online), or ``None``.
        peer: where the MESSAGE came from.
    """

    status: int
    result: MessageResult
    warning: str = ""
    root: Element | None = None
    event: DeviceEvent | None = None
    peer: Peer | None = None


def decide(
    device: Device | None, device_id: str, body: bytes, peer: Peer, epoch: float, *, accept_port_change: bool
) -> MessageDecision:
    """Decide the answer to a MESSAGE from ``device_id`` (GB/T 28181 §9.6, PROTOCOL.md §4.1).

    Args:
        device: its record, or ``None`` if unknown.
        device_id: the From user (for the Warning).
        body: the MESSAGE body.
        peer: where it came from. Only the address the device registered from is believed:
            anyone can put a device's ID in a MESSAGE, and a keepalive that moved the device
            would send its next query or INVITE to a stranger. From another address it is 404,
            which real devices answer by registering again, with digest, from where they are.
        epoch: wall-clock epoch seconds.
        accept_port_change: a new port on the registered IP moves the device there (K5, NAT rebinding).
    """
    if device is None or not device.registered or device.expires_at <= epoch:
        # K4: never 200 to an unregistered device, or it believes it is registered;
        # 404 makes real devices register again
        return MessageDecision(
            404, MessageResult.UNREGISTERED, f"device {device_id or '(no ID)'} is not registered here"
        )
    if peer.host != device.host or (peer.port != device.port and not accept_port_change):
        return MessageDecision(
            404,
            MessageResult.WRONG_ADDRESS,
            f"device {device_id} is registered from {device.host}:{device.port}; register again from here",
        )
    try:
        root = parse_xml(body)
    except ManscdpError as exc:
        return MessageDecision(400, MessageResult.BAD_BODY, str(exc))
    cmd = child_text(root, "CmdType") or ""
    if cmd.lower() != "keepalive":
        return MessageDecision(200, MessageResult.OTHER, root=root)
    return MessageDecision(200, MessageResult.OK, event=DeviceEvent.KEEPALIVE, peer=peer)


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
