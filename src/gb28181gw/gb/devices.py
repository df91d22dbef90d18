"""The device table: one owner for every :class:`~gb28181gw.gb.model.Device`, named states, one transition table.

A device is in one :class:`DeviceState`:

- ``UNREGISTERED``: known (provisioned, or registered once) but holding no registration;
- ``ONLINE``: registered and heart-beating (GB/T 28181 §9.1, §9.6);
- ``OFFLINE``: still registered, but silent: its keepalives stopped (PROTOCOL.md §4.1 K3) or
  its TCP connection closed (GB/T 28181-2022 §9.1.1 f). A keepalive or a REGISTER brings it
  back; when its registration runs out it is ``UNREGISTERED``.

Every change is a :class:`DeviceEvent` looked up in :data:`TRANSITIONS`, one
``dict[(state, event)] -> (state, outputs)`` in the style of
:mod:`gb28181gw.sip.transaction`. A pair the table does not list is a bug in the
caller (a keepalive from a device without a registration must be answered 404 by
:func:`gb28181gw.gb.keepalive.decide`, never applied) and raises
:class:`~gb28181gw.errors.LocalProtocolError` naming the state.

The :class:`Output` of a transition says what the shell must do — persist now or
lazily, (re)start or stop the liveness deadline, tell the offline or registration
listeners, delete the record — and every transition returns a :class:`Change`
saying what happened (went online, went offline and why, moved to another address).

Bans (failed digest authentication, PROTOCOL.md §3.6) are not a device state: they
belong to a source address or an ID for a few minutes, whether or not a record
exists, and are kept by :class:`gb28181gw.gb.bans.BanList`.

:func:`render_table` prints the table as a Graphviz graph.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, ValuesView
from dataclasses import dataclass
from enum import IntEnum, auto

from gb28181gw.errors import LocalProtocolError
from gb28181gw.sdp import StreamMode
from gb28181gw.sip.endpoint import Peer
from gb28181gw.sip.transaction import render_digraph

from .model import Device, DeviceState, Transport
from .model import DeviceState as S  # an import, not an assignment: see below

__all__ = [
    "TRANSITIONS",
    "Change",
    "DeviceEvent",
    "DeviceState",
    "DeviceTable",
    "KEEPALIVE_IN_PLACE",
    "KEEPALIVE_OUTPUTS",
    "Output",
    "render_table",
    "transition",
]


class DeviceEvent(IntEnum):
    """What can happen to a device."""

    REGISTERED = auto()  # a REGISTER gave it a new registration (§9.1.2)
    REFRESHED = auto()  # a REGISTER renewed a registration it held
    KEEPALIVE = auto()  # a Keepalive MESSAGE from a registered device (§9.6)
    TIMED_OUT = auto()  # no keepalive for interval × count (K3)
    EXPIRED = auto()  # its registration ran out without a refresh
    CONNECTION_LOST = auto()  # the TCP connection it registered over closed (2022 §9.1.1 f)
    UNREGISTERED = auto()  # REGISTER with Expires: 0 (§9.1.2.2)
    PROVISIONED = auto()  # an operator added it or changed its settings
    REMOVED = auto()  # an operator deleted it


class Output(IntEnum):
    """What the shell does after a transition."""

    SAVE = auto()  # write the record with the next batch
    HEARTBEAT = auto()  # only a newer keepalive time: write it lazily
    WATCH = auto()  # (re)start its liveness deadline (see keepalive.liveness_timeout)
    UNWATCH = auto()  # stop its liveness deadline
    ANNOUNCE = auto()  # tell the registration listeners (time to ask for its catalog)
    RELEASE = auto()  # tell the offline listeners: streams, subscriptions, channel status go
    DELETE = auto()  # delete the record from the store


# S is imported under that name above: compiled, a name bound by an import is the class itself and
# S.ONLINE a constant, where an alias assigned here is a module global and S.ONLINE a generic
# attribute lookup through the enum's metaclass (~65 ns, measured 2026-12-04; asked per keepalive)
E = DeviceEvent
O = Output  # noqa: E741

Table = dict[tuple[DeviceState, DeviceEvent], tuple[DeviceState, tuple[Output, ...]]]

_NEW_REGISTRATION = (S.ONLINE, (O.WATCH, O.SAVE, O.ANNOUNCE))
_UNREGISTER = (S.UNREGISTERED, (O.UNWATCH, O.SAVE, O.RELEASE))

#: Every legal (state, event) pair. A keepalive from an ONLINE device only moves its
#: deadline and is written lazily; one that moved address is saved at once (see :func:`transition`).
TRANSITIONS: Table = {
    (S.UNREGISTERED, E.REGISTERED): _NEW_REGISTRATION,
    # Expires: 0 from a device we do not count as registered: still released, since a
    # registration that lapsed while we were down may have left its channels ON
    (S.UNREGISTERED, E.UNREGISTERED): _UNREGISTER,
    (S.UNREGISTERED, E.PROVISIONED): (S.UNREGISTERED, (O.SAVE,)),
    (S.UNREGISTERED, E.REMOVED): (S.UNREGISTERED, (O.UNWATCH, O.DELETE)),
    # a registration that lapsed before the deadline fired is a new one
    (S.ONLINE, E.REGISTERED): _NEW_REGISTRATION,
    (S.ONLINE, E.REFRESHED): (S.ONLINE, (O.WATCH, O.SAVE)),
    (S.ONLINE, E.KEEPALIVE): (S.ONLINE, (O.WATCH, O.HEARTBEAT)),
    # offline but registered: watched again until the registration runs out
    (S.ONLINE, E.TIMED_OUT): (S.OFFLINE, (O.WATCH, O.SAVE, O.RELEASE)),
    (S.ONLINE, E.CONNECTION_LOST): (S.OFFLINE, (O.WATCH, O.SAVE, O.RELEASE)),
    (S.ONLINE, E.EXPIRED): (S.UNREGISTERED, (O.SAVE, O.RELEASE)),
    (S.ONLINE, E.UNREGISTERED): _UNREGISTER,
    (S.ONLINE, E.PROVISIONED): (S.ONLINE, (O.SAVE,)),
    (S.ONLINE, E.REMOVED): (S.UNREGISTERED, (O.UNWATCH, O.DELETE, O.RELEASE)),
    (S.OFFLINE, E.REGISTERED): _NEW_REGISTRATION,
    (S.OFFLINE, E.REFRESHED): (S.ONLINE, (O.WATCH, O.SAVE)),
    (S.OFFLINE, E.KEEPALIVE): (S.ONLINE, (O.WATCH, O.SAVE)),  # back online (K5)
    (S.OFFLINE, E.EXPIRED): (S.UNREGISTERED, (O.SAVE,)),  # released when it went offline
    (S.OFFLINE, E.UNREGISTERED): _UNREGISTER,
    (S.OFFLINE, E.PROVISIONED): (S.OFFLINE, (O.SAVE,)),
    (S.OFFLINE, E.REMOVED): (S.UNREGISTERED, (O.UNWATCH, O.DELETE)),
}

#: What a keepalive from an ONLINE device at its address does: :meth:`DeviceTable.keepalive` makes
#: this one transition without the table walk (tests hold the two to it).
KEEPALIVE_IN_PLACE = (S.ONLINE, E.KEEPALIVE)
#: Its outputs: the shell's fast path carries out exactly these.
KEEPALIVE_OUTPUTS = TRANSITIONS[KEEPALIVE_IN_PLACE][1]

_TRANSPORTS = {t.value: t for t in Transport}
_MOVING_EVENTS = frozenset({E.REGISTERED, E.REFRESHED, E.KEEPALIVE})
_HEARD_FROM = _MOVING_EVENTS


@dataclass(frozen=True, slots=True, init=False)
class Change:
    """What one transition did to a device.

    Attributes:
        device_id: the device.
        event: what happened.
        old / new: its state before and after.
        outputs: what the shell must do (:class:`Output`).
        reason: why it is no longer online (also its ``offline_reason``); empty otherwise.
        moved_from: where it was before, when the event came from another address
            (NAT rebinding, or two devices sharing one ID); ``None`` if it did not move.
    """

    device_id: str
    event: DeviceEvent
    old: DeviceState
    new: DeviceState
    outputs: tuple[Output, ...]
    reason: str = ""
    moved_from: Peer | None = None

    # Written out for mypyc, as Device's (gb/model.py says why): one per REGISTER. object.__setattr__
    # because the class is frozen, as in the __init__ dataclasses writes; mypyc compiles each into a
    # plain store of the field, and assignment from outside still raises FrozenInstanceError.
    def __init__(
        self,
        device_id: str,
        event: DeviceEvent,
        old: DeviceState,
        new: DeviceState,
        outputs: tuple[Output, ...],
        reason: str = "",
        moved_from: Peer | None = None,
    ) -> None:
        object.__setattr__(self, "device_id", device_id)
        object.__setattr__(self, "event", event)
        object.__setattr__(self, "old", old)
        object.__setattr__(self, "new", new)
        object.__setattr__(self, "outputs", outputs)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "moved_from", moved_from)

    @property
    def went_online(self) -> bool:
        """It was not online and now is."""
        return self.new is S.ONLINE and self.old is not S.ONLINE

    @property
    def went_offline(self) -> bool:
        """It was online and now is not."""
        return self.old is S.ONLINE and self.new is not S.ONLINE

    @property
    def nothing(self) -> bool:
        """Neither its state nor its address changed (a plain keepalive or refresh)."""
        return self.old is self.new and self.moved_from is None


def transition(
    device: Device, event: DeviceEvent, *, epoch: float, reason: str = "", peer: Peer | None = None
) -> Change:
    """Apply ``event`` to ``device`` in place and say what changed.

    Args:
        device: the record to change (the table's own, or a copy the registrar proposes).
        event: what happened.
        epoch: wall-clock epoch seconds (``updated_at``, ``last_keepalive``).
        reason: why it leaves the online state (stored as ``offline_reason``).
        peer: where a REGISTER or keepalive came from: the device's address from now on
            (PROTOCOL.md §3.4 R3, K5).

    Raises:
        LocalProtocolError: the table has no ``(device.state, event)``.
    """
    old = device.state
    try:
        new, outputs = TRANSITIONS[old, event]
    except KeyError:
        raise LocalProtocolError(
            f"device {device.device_id}: {event.name} is not allowed in state {old.name}"
        ) from None
    moved_from = None
    if peer is not None and event in _MOVING_EVENTS:
        if device.host and (device.host, device.port, device.transport) != (peer.host, peer.port, peer.transport):
            moved_from = Peer(device.transport, device.host, device.port)
            if O.HEARTBEAT in outputs:
                # a new address must reach the store, not wait for the lazy heartbeat write
                outputs = tuple(O.SAVE if o is O.HEARTBEAT else o for o in outputs)
        transport = _TRANSPORTS.get(peer.transport)
        device.transport = transport if transport is not None else Transport(peer.transport)
        device.host = sys.intern(peer.host)  # thousands of devices share a few NAT addresses
        device.port = peer.port
    if event in _HEARD_FROM:
        device.last_keepalive = epoch
    device.state = new
    if new is S.ONLINE:
        device.offline_reason = ""
    elif reason:
        device.offline_reason = reason
    device.updated_at = epoch
    return Change(device.device_id, event, old, new, outputs, reason if new is not S.ONLINE else "", moved_from)


def _connection(device: Device) -> tuple[str, int] | None:
    """The TCP connection a device is reached over, or ``None`` (UDP)."""
    return (device.host, device.port) if device.transport == Transport.TCP else None


class DeviceTable(Mapping[str, Device]):
    """Every device record, by ID; the only code that changes them.

    It reads as a mapping (``table[id]``, ``table.get(id)``, ``in``, iteration over IDs):
    services read records freely and change them only through these methods.

    How many devices are in each state is kept as they change (:meth:`counts`): every metrics
    scrape and ``gb28181gw status`` asks, and counting walked every record, 4 ms at 10,000
    devices and 25 ms at 100,000 that the event loop stood still (issue 16).
    """

    def __init__(self) -> None:
        self._devices: dict[str, Device] = {}
        # devices on each TCP connection (host, port): a connection that closes finds its
        # devices at once instead of walking every record
        self._by_connection: dict[tuple[str, int], set[str]] = {}
        self._counts: dict[DeviceState, int] = dict.fromkeys(DeviceState, 0)

    def _count(self, old: DeviceState | None, new: DeviceState | None) -> None:
        """A record went from ``old`` to ``new`` (``None``: not in the table)."""
        if old is not new:
            counts = self._counts
            if old is not None:
                counts[old] -= 1
            if new is not None:
                counts[new] += 1

    def _move(self, device_id: str, old: tuple[str, int] | None, new: tuple[str, int] | None) -> None:
        if old == new:
            return
        if old is not None and (ids := self._by_connection.get(old)) is not None:
            ids.discard(device_id)
            if not ids:
                del self._by_connection[old]
        if new is not None:
            self._by_connection.setdefault(new, set()).add(device_id)

    def __getitem__(self, device_id: str) -> Device:
        return self._devices[device_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def values(self) -> ValuesView[Device]:
        """Every record (the underlying dict's view: iterating it costs no lookups)."""
        return self._devices.values()

    def get(self, device_id: str, default: Device | None = None) -> Device | None:  # type: ignore[override]
        """The record of ``device_id``, or ``default``."""
        return self._devices.get(device_id, default)

    def load(self, devices: Iterable[Device], *, epoch: float) -> list[Change]:
        """Take the stored records at start-up; registrations that ran out while we were down expire."""
        changes = []
        for device in devices:
            old = self._devices.get(device.device_id)
            self._count(old.state if old is not None else None, device.state)
            self._devices[device.device_id] = device
            self._move(device.device_id, None, _connection(device))
            if device.state is not S.UNREGISTERED and device.expires_at <= epoch:
                before = device.state
                changes.append(
                    transition(device, E.EXPIRED, epoch=epoch, reason="registration expired while the gateway was down")
                )
                self._count(before, device.state)
        return changes

    def adopt(self, device: Device) -> None:
        """Keep ``device`` (the registrar's updated copy, already transitioned) as the record of its ID."""
        old = self._devices.get(device.device_id)
        self._devices[device.device_id] = device
        self._count(old.state if old is not None else None, device.state)
        self._move(device.device_id, _connection(old) if old is not None else None, _connection(device))

    def apply(
        self, device_id: str, event: DeviceEvent, *, epoch: float, reason: str = "", peer: Peer | None = None
    ) -> Change:
        """Apply ``event`` to the record of ``device_id`` (see :func:`transition`).

        Raises:
            KeyError: no such device.
            LocalProtocolError: the event is not allowed in its state.
        """
        device = self._devices[device_id]
        before = _connection(device)
        change = transition(device, event, epoch=epoch, reason=reason, peer=peer)
        self._count(change.old, change.new)
        self._move(device_id, before, _connection(device))
        return change

    def keepalive(self, device_id: str, peer: Peer, *, epoch: float) -> Device | None:
        """A keepalive from ``device_id``, done in place when it changes nothing but two times.

        The common case — an ONLINE device heard from the address it is known at — is the
        :data:`KEEPALIVE_IN_PLACE` transition: it stays ONLINE, its last keepalive and update
        times move, its address and connection stay, and the shell does :data:`KEEPALIVE_OUTPUTS`.
        Tens of thousands of these a second make the table walk, the :class:`Change` and the
        connection-index bookkeeping of :meth:`apply` worth skipping; the record ends the same.
        Returns the device then, else ``None`` without touching anything (another state, another
        address): :meth:`apply` it.

        Raises:
            KeyError: no such device.
        """
        device = self._devices[device_id]
        if (
            device.state is not S.ONLINE
            or device.port != peer.port
            or device.host != peer.host
            or device.transport != peer.transport
        ):
            return None
        device.last_keepalive = epoch
        device.updated_at = epoch
        if device.offline_reason:
            device.offline_reason = ""
        return device

    def provision(
        self,
        device_id: str,
        *,
        epoch: float,
        password: str = "",
        name: str = "",
        charset: str = "",
        stream_mode: StreamMode | None = None,
    ) -> Change:
        """Add a device by hand, or change its settings; empty values keep what it had."""
        device = self._devices.get(device_id)
        if device is None:
            device = self._devices[device_id] = Device(device_id=device_id, created_at=epoch)
            self._count(None, device.state)
        device.provisioned = True
        if password:
            device.password = password
        if name:
            device.name = name
        if charset:
            device.charset = charset
        if stream_mode is not None:
            device.stream_mode = stream_mode
        change = transition(device, E.PROVISIONED, epoch=epoch)
        self._count(change.old, change.new)
        return change

    def remove(self, device_id: str, *, epoch: float) -> tuple[Device, Change] | None:
        """Forget ``device_id``; its last record and the change, or ``None`` if unknown."""
        device = self._devices.pop(device_id, None)
        if device is None:
            return None
        self._count(device.state, None)
        self._move(device_id, _connection(device), None)
        return device, transition(device, E.REMOVED, epoch=epoch, reason="removed by operator")

    def describe(
        self,
        device_id: str,
        *,
        epoch: float,
        reported_name: str = "",
        manufacturer: str = "",
        model: str = "",
        firmware: str = "",
    ) -> bool:
        """Learn what DeviceInfo (§9.5.3) said; empty values keep what it had. Whether the device is known.

        The device's own name goes to ``reported_name``: ``name`` is the operator's and only
        :meth:`provision` changes it.
        """
        device = self._devices.get(device_id)
        if device is None:
            return False
        device.reported_name = reported_name or device.reported_name
        device.manufacturer = manufacturer or device.manufacturer
        device.model = model or device.model
        device.firmware = firmware or device.firmware
        device.updated_at = epoch
        return True

    def set_heartbeat(self, device_id: str, *, epoch: float, interval: int = 0, count: int = 0) -> bool:
        """Learn the device's own heartbeat settings (BasicParam, §9.5.6); 0 keeps what it had."""
        device = self._devices.get(device_id)
        if device is None:
            return False
        if interval > 0:
            device.keepalive_interval = interval
        if count > 0:
            device.keepalive_count = count
        device.updated_at = epoch
        return True

    def on_connection(self, peer: Peer) -> list[str]:
        """IDs of the online devices registered over ``peer``'s TCP connection."""
        ids = self._by_connection.get((peer.host, peer.port), ()) if peer.transport == Transport.TCP else ()
        return [
            i
            for i in ids
            if (d := self._devices.get(i)) is not None and d.state is S.ONLINE and d.transport == peer.transport
        ]

    def stale(self, *, before: float, provisioned: bool = False) -> list[Device]:
        """The devices not heard from since ``before`` (wall-clock epoch seconds), by ID: what pruning removes.

        "Heard from" is the last REGISTER or keepalive (:attr:`Device.last_seen`); a device never
        heard from counts from when its record was made, so a device added yesterday is not stale.
        A device holding a registration (online or offline) is never stale, whatever its times say,
        and one an operator added is stale only with ``provisioned``.
        """
        out = []
        for d in self._devices.values():
            if d.state is not S.UNREGISTERED or (d.provisioned and not provisioned):
                continue
            if (d.last_seen or d.created_at) < before:
                out.append(d)
        out.sort(key=lambda d: d.device_id)
        return out

    def counts(self) -> dict[DeviceState, int]:
        """How many devices are in each state (kept as they change: no walk)."""
        return dict(self._counts)

    def count_all(self) -> dict[DeviceState, int]:
        """:meth:`counts` by walking every record: what the kept counts must equal."""
        out = dict.fromkeys(DeviceState, 0)
        for d in self._devices.values():
            out[d.state] += 1
        return out


def render_table() -> str:
    """:data:`TRANSITIONS` as a Graphviz ``digraph`` (for docs and reviews)."""
    return render_digraph("devices", TRANSITIONS)
