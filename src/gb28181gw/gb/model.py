"""The records the gateway keeps (what :mod:`gb28181gw.store` persists).

Times are wall-clock epoch seconds (floats), since they must survive a restart;
the shell converts them to the event loop's monotonic clock for deadlines.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from operator import attrgetter
from typing import Any

from gb28181gw.sdp import StreamMode

__all__ = ["DEVICE_FIELDS", "Alarm", "Channel", "Device", "StreamMode", "Transport"]


class Transport(StrEnum):
    """SIP transport a device uses (GB/T 28181-2022 §4.3.2)."""

    UDP = "UDP"
    TCP = "TCP"


@dataclass(slots=True)
class Device:
    """A device (IPC, NVR, lower platform) that registers to us.

    Attributes:
        device_id: its 20-digit ID, exactly as it registered.
        name / manufacturer / model / firmware: from DeviceInfo (later) or provisioning.
        transport, host, port: where it really is (source address after received/rport);
            every request to it goes there (PROTOCOL.md §3.4, R3).
        local_host, local_port: our address it registered to (answers must come from it).
        charset: the charset to encode MANSCDP bodies for it (GB2312 by default).
        stream_mode: how to ask it for media (a :class:`StreamMode`; empty = the gateway's media.stream_mode).
        password: its own digest password; empty uses the global one.
        provisioned: created by an operator rather than by registering.
        registered: holds a registration (until Expires passes or it unregisters).
        online: registered and heart-beating.
        expires: the registration period granted, in seconds.
        registered_at / expires_at / last_keepalive: wall-clock epoch seconds (0 = never).
        keepalive_interval / keepalive_count: its heartbeat settings when known (0 = defaults).
        user_agent / gb_version: from its REGISTER (``User-Agent``, ``X-GB-ver``).
        call_id: Call-ID of its last REGISTER, to recognise refreshes.
        offline_reason: why it last went offline.
    """

    device_id: str
    name: str = ""
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    transport: str = Transport.UDP
    host: str = ""
    port: int = 0
    local_host: str = ""
    local_port: int = 0
    charset: str = "GB2312"
    stream_mode: str = ""
    password: str = ""
    provisioned: bool = False
    registered: bool = False
    online: bool = False
    expires: int = 0
    registered_at: float = 0.0
    expires_at: float = 0.0
    last_keepalive: float = 0.0
    keepalive_interval: int = 0
    keepalive_count: int = 0
    user_agent: str = ""
    gb_version: str = ""
    call_id: str = ""
    offline_reason: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    def copy(self) -> Device:
        """A shallow copy (fields are immutable values)."""
        new = Device.__new__(Device)
        for name in _DEVICE_SLOTS:
            setattr(new, name, getattr(self, name))
        return new

    def row(self) -> tuple[Any, ...]:
        """Every field's value, in declaration order (what a store writes)."""
        return _device_row(self)

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """A JSON-friendly dict; the password is shown only as set/unset unless ``secrets``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if not secrets:
            out["password"] = bool(self.password)
        return out


DEVICE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Device))
_DEVICE_SLOTS = DEVICE_FIELDS
_device_row = attrgetter(*DEVICE_FIELDS)


@dataclass(slots=True)
class Channel:
    """A catalog item of a device (filled by the Catalog procedures of a later issue).

    Attributes:
        channel_id: the item's ID (20 digits, or a 2-8 digit civil code).
        device_id: the device that reported it.
        name: its name.
        status: ON/OFF as last reported.
        parent_id: its ParentID (tree).
        extra: every other catalog field, as reported.
    """

    channel_id: str
    device_id: str
    name: str = ""
    status: str = ""
    parent_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Alarm:
    """An alarm a device reported (GB/T 28181 §9.4, PROTOCOL.md §5.7.1).

    Attributes:
        device_id: the alarm source (channel or device ID, as sent).
        reported_by: the registered device the MESSAGE or NOTIFY came from.
        priority / method / alarm_type: AlarmPriority, AlarmMethod, Info/AlarmType (text as sent).
        alarm_time: AlarmTime as sent (device local time).
        description: AlarmDescription.
        received_at: wall-clock epoch seconds when it arrived.
        extra: every other field.
    """

    device_id: str
    reported_by: str
    priority: str = ""
    method: str = ""
    alarm_type: str = ""
    alarm_time: str = ""
    description: str = ""
    received_at: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)
