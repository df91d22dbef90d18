"""The records the gateway keeps (what :mod:`gb28181gw.store` persists).

Times are wall-clock epoch seconds (floats), since they must survive a restart;
the shell converts them to the event loop's monotonic clock for deadlines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from gb28181gw.sdp import StreamMode

__all__ = [
    "BAN_FIELDS",
    "DEVICE_FIELDS",
    "Alarm",
    "Ban",
    "Channel",
    "Device",
    "DeviceState",
    "Override",
    "ShareEntry",
    "StreamMode",
    "Transport",
]


class Transport(StrEnum):
    """SIP transport a device uses (GB/T 28181-2022 §4.3.2)."""

    UDP = "UDP"
    TCP = "TCP"


class DeviceState(StrEnum):
    """Where a device stands; changed only by :func:`gb28181gw.gb.devices.transition` (the values are stored)."""

    UNREGISTERED = "unregistered"  # known, holding no registration
    ONLINE = "online"  # registered and heart-beating
    OFFLINE = "offline"  # registered, but its keepalives stopped or its TCP connection closed


@dataclass(slots=True, init=False)
class Device:
    """A device (IPC, NVR, lower platform) that registers to us.

    Attributes:
        device_id: its 20-digit ID, exactly as it registered.
        name: the operator's name for it (``device add --name``); the device never changes it.
        reported_name: the name the device gives itself (DeviceInfo ``DeviceName``).
        manufacturer / model / firmware: from DeviceInfo.
        transport, host, port: where it really is (source address after received/rport);
            every request to it goes there (PROTOCOL.md §3.4, R3).
        local_host, local_port: our address it registered to (answers must come from it).
        charset: the charset to encode MANSCDP bodies for it (GB2312 by default).
        stream_mode: how to ask it for media; ``None`` = the gateway's media.stream_mode.
        password: its own digest password; empty uses the global one.
        provisioned: created by an operator rather than by registering.
        state: its :class:`DeviceState`; :attr:`registered` and :attr:`online` are read from it.
        expires: the registration period granted, in seconds.
        registered_at / expires_at / last_keepalive: wall-clock epoch seconds (0 = never).
        keepalive_interval / keepalive_count: its heartbeat settings when known (0 = defaults).
        user_agent / gb_version: from its REGISTER (``User-Agent``, ``X-GB-ver``).
        call_id: Call-ID of its last REGISTER, to recognise refreshes.
        offline_reason: why it last went offline.
        path: the Path header values of its last REGISTER (RFC 3327), comma-joined as received,
            "" when it registered directly: a proxy in front (a dispatcher hashing devices over
            several nodes) that asked to stay on the way to it. Requests to the device carry
            them as Route headers, so they reach the proxy and it forwards them to the device.
    """

    device_id: str
    name: str = ""
    reported_name: str = ""
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    transport: Transport = Transport.UDP
    host: str = ""
    port: int = 0
    local_host: str = ""
    local_port: int = 0
    charset: str = "GB2312"
    stream_mode: StreamMode | None = None
    password: str = ""
    provisioned: bool = False
    state: DeviceState = DeviceState.UNREGISTERED
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
    path: str = ""

    # Written out, not left to dataclasses (init=False): mypyc compiles the methods a class's source
    # has, while the __init__ dataclasses generates stays interpreted Python, called through the type
    # with *args/**kwargs: ~1 µs of every REGISTER and refresh (issue 16). The same parameters, in the
    # field order and with the fields' defaults (a test holds the two to each other).
    def __init__(
        self,
        device_id: str,
        name: str = "",
        reported_name: str = "",
        manufacturer: str = "",
        model: str = "",
        firmware: str = "",
        transport: Transport = Transport.UDP,
        host: str = "",
        port: int = 0,
        local_host: str = "",
        local_port: int = 0,
        charset: str = "GB2312",
        stream_mode: StreamMode | None = None,
        password: str = "",
        provisioned: bool = False,
        state: DeviceState = DeviceState.UNREGISTERED,
        expires: int = 0,
        registered_at: float = 0.0,
        expires_at: float = 0.0,
        last_keepalive: float = 0.0,
        keepalive_interval: int = 0,
        keepalive_count: int = 0,
        user_agent: str = "",
        gb_version: str = "",
        call_id: str = "",
        offline_reason: str = "",
        created_at: float = 0.0,
        updated_at: float = 0.0,
        path: str = "",
    ) -> None:
        self.device_id = device_id
        self.name = name
        self.reported_name = reported_name
        self.manufacturer = manufacturer
        self.model = model
        self.firmware = firmware
        self.transport = transport
        self.host = host
        self.port = port
        self.local_host = local_host
        self.local_port = local_port
        self.charset = charset
        self.stream_mode = stream_mode
        self.password = password
        self.provisioned = provisioned
        self.state = state
        self.expires = expires
        self.registered_at = registered_at
        self.expires_at = expires_at
        self.last_keepalive = last_keepalive
        self.keepalive_interval = keepalive_interval
        self.keepalive_count = keepalive_count
        self.user_agent = user_agent
        self.gb_version = gb_version
        self.call_id = call_id
        self.offline_reason = offline_reason
        self.created_at = created_at
        self.updated_at = updated_at
        self.path = path

    @property
    def display_name(self) -> str:
        """The operator's name, else the one the device reported ("" if neither)."""
        return self.name or self.reported_name

    @property
    def last_seen(self) -> float:
        """When it was last heard from (a REGISTER or keepalive; wall-clock epoch seconds, 0 = never).

        ``last_keepalive`` is stamped by every REGISTER and keepalive (see
        :func:`gb28181gw.gb.devices.transition`); ``registered_at`` covers records written before that.
        """
        return max(self.last_keepalive, self.registered_at)

    @property
    def registered(self) -> bool:
        """Holds a registration (until Expires passes or it unregisters): online or offline."""
        return self.state is not DeviceState.UNREGISTERED

    @property
    def online(self) -> bool:
        """Registered and heart-beating."""
        return self.state is DeviceState.ONLINE

    def copy(self) -> Device:
        """A shallow copy (fields are immutable values).

        Every field passed to ``__init__`` by position, written out: once per refreshed registration
        (an hourly storm of them at a large site). 0.4 µs from the ``.py``, against 0.6 for the
        fields read by one ``attrgetter`` call and spread into the call, and 1.5 for a ``setattr``
        per field; compiled, a direct call of the compiled ``__init__`` with every field read from
        the instance's struct. (A test holds it to every field.)"""
        return Device(
            self.device_id, self.name, self.reported_name, self.manufacturer, self.model, self.firmware,
            self.transport, self.host, self.port, self.local_host, self.local_port, self.charset,
            self.stream_mode, self.password, self.provisioned, self.state, self.expires, self.registered_at,
            self.expires_at, self.last_keepalive, self.keepalive_interval, self.keepalive_count,
            self.user_agent, self.gb_version, self.call_id, self.offline_reason, self.created_at,
            self.updated_at, self.path,
        )  # fmt: skip

    def row(self) -> tuple[Any, ...]:
        """Every field's value, in declaration order, as plain values (what a store writes).

        Enums are written as their ``str`` values and an unset ``stream_mode`` as ``""``: a tuple
        of plain strings and numbers only, which the garbage collector stops tracking the first
        time it sees it. With enum members in it (objects the collector tracks) each row stayed
        tracked, and the 10,000 rows of the registrar's 30 s write were walked again by the
        middle generation's collection: 10-17 ms of a stall under a keepalive load (issue 16).

        Every field written out, as in :meth:`copy`: once per registration the write-behind
        stores, and compiled each is read from the instance's struct, where one ``attrgetter`` of
        every field took a generic attribute lookup each (~7,000 instructions a row, 2 % of a
        registration's). A test holds it to :data:`DEVICE_FIELDS`.
        """
        mode = self.stream_mode
        return (
            self.device_id, self.name, self.reported_name, self.manufacturer, self.model, self.firmware,
            str(self.transport), self.host, self.port, self.local_host, self.local_port, self.charset,
            "" if mode is None else str(mode), self.password, self.provisioned, str(self.state), self.expires,
            self.registered_at, self.expires_at, self.last_keepalive, self.keepalive_interval,
            self.keepalive_count, self.user_agent, self.gb_version, self.call_id, self.offline_reason,
            self.created_at, self.updated_at, self.path,
        )  # fmt: skip

    @classmethod
    def from_row(cls, values: dict[str, Any]) -> Device:
        """The record a store wrote with :meth:`row`, by field name.

        Raises:
            ValueError: a state, transport or stream mode that is not one of ours.
        """
        values = dict(values)
        values["state"] = DeviceState(values.get("state") or DeviceState.UNREGISTERED)
        values["transport"] = Transport(values.get("transport") or Transport.UDP)
        mode = values.get("stream_mode")
        values["stream_mode"] = StreamMode(mode) if mode else None
        values["provisioned"] = bool(values.get("provisioned"))
        return cls(**values)

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """A JSON-friendly dict; the password is shown only as set/unset unless ``secrets``.

        Besides every field it has ``registered`` and ``online`` (read from ``state``), and
        an unset ``stream_mode`` is ``""``, as in the JSON before the state enum.
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["registered"] = self.registered
        out["online"] = self.online
        if self.stream_mode is None:
            out["stream_mode"] = ""
        if not secrets:
            out["password"] = bool(self.password)
        return out


DEVICE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Device))


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


@dataclass(slots=True)
class Ban:
    """A ban after repeated failed digest authentication (PROTOCOL.md §3.3).

    Kept by :class:`gb28181gw.gb.bans.BanList`; persisted only when ``registrar.persist_bans`` is on.

    Attributes:
        key: what is banned: ``ip:<address>`` (every REGISTER from that address) or
            ``id:<device ID>@<address>`` (that ID from that address).
        address: the source address it applies to.
        device_id: the banned ID; for an address ban, the ID whose failure completed it.
        since / until: wall-clock epoch seconds it began and ends.
        reason: why, in words.
        failures: the failed authentications that led to it.
        attempts: REGISTERs refused because of it since it began.
    """

    key: str
    address: str
    device_id: str = ""
    since: float = 0.0
    until: float = 0.0
    reason: str = ""
    failures: int = 0
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of every field."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_row(cls, values: Sequence[Any]) -> Ban:
        """The ban a store wrote, its values in :data:`BAN_FIELDS` order.

        Raises:
            ValueError: a value of the wrong kind (a hand-edited or damaged row).
        """
        key, address, device_id, since, until, reason, failures, attempts = values
        begun, ends = float(since), float(until)
        if not (math.isfinite(begun) and math.isfinite(ends)) or not isinstance(key, str) or not key:
            raise ValueError(f"not a ban: {tuple(values)!r}")
        return cls(key, str(address), str(device_id), begun, ends, str(reason), int(failures), int(attempts))


BAN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Ban))


@dataclass(frozen=True, slots=True)
class ShareEntry:
    """An operator's ``gb28181gw upstream share|unshare`` for one superior (cascade, PROTOCOL.md §9.3).

    Applied over the configured ``share`` of that ``[[upstream]]`` (:class:`gb28181gw.gb.share.ShareRule`);
    the last word on an entry is the one kept.

    Attributes:
        upstream: the superior's name (``[[upstream]] name``).
        entry: a device ID, channel ID or ID prefix.
        shared: shared (``True``) or taken back (``False``).
    """

    upstream: str
    entry: str
    shared: bool


@dataclass(frozen=True, slots=True)
class Override:
    """What one superior is told of a channel instead of what its device reported (PROTOCOL.md §9.3).

    Never its ID (§9.9): only its name, civil code and parent. An empty field is not overridden.

    Attributes:
        upstream: the superior's name.
        channel_id: the channel.
        name / civil_code / parent_id: the values that superior sees.
    """

    upstream: str
    channel_id: str
    name: str = ""
    civil_code: str = ""
    parent_id: str = ""

    def to_dict(self) -> dict[str, str]:
        """A JSON-friendly dict of every field."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
