"""Device states and transitions (GB/T 28181 §9.1, §9.6; PROTOCOL.md §3-§4), as a table."""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable

import pytest

from gb28181gw.errors import LocalProtocolError
from gb28181gw.gb.devices import (
    KEEPALIVE_IN_PLACE,
    KEEPALIVE_OUTPUTS,
    TRANSITIONS,
    Change,
    DeviceEvent,
    DeviceState,
    DeviceTable,
    Output,
    render_table,
    transition,
)
from gb28181gw.gb.model import Device, StreamMode, Transport
from gb28181gw.sip.endpoint import Peer

S, E, O = DeviceState, DeviceEvent, Output  # noqa: E741
ID = "34020000001320000001"
EPOCH = 1_714_970_000.0
HERE = Peer("UDP", "10.0.0.5", 5060)
THERE = Peer("TCP", "10.9.9.9", 40000)

#: The whole machine, written out independently of the module: (state, event) -> (state, outputs).
EXPECTED: dict[tuple[DeviceState, DeviceEvent], tuple[DeviceState, tuple[Output, ...]]] = {
    (S.UNREGISTERED, E.REGISTERED): (S.ONLINE, (O.WATCH, O.SAVE, O.ANNOUNCE)),
    (S.UNREGISTERED, E.UNREGISTERED): (S.UNREGISTERED, (O.UNWATCH, O.SAVE, O.RELEASE)),
    (S.UNREGISTERED, E.PROVISIONED): (S.UNREGISTERED, (O.SAVE,)),
    (S.UNREGISTERED, E.REMOVED): (S.UNREGISTERED, (O.UNWATCH, O.DELETE)),
    (S.ONLINE, E.REGISTERED): (S.ONLINE, (O.WATCH, O.SAVE, O.ANNOUNCE)),
    (S.ONLINE, E.REFRESHED): (S.ONLINE, (O.WATCH, O.SAVE)),
    (S.ONLINE, E.KEEPALIVE): (S.ONLINE, (O.WATCH, O.HEARTBEAT)),
    (S.ONLINE, E.TIMED_OUT): (S.OFFLINE, (O.WATCH, O.SAVE, O.RELEASE)),
    (S.ONLINE, E.CONNECTION_LOST): (S.OFFLINE, (O.WATCH, O.SAVE, O.RELEASE)),
    (S.ONLINE, E.EXPIRED): (S.UNREGISTERED, (O.SAVE, O.RELEASE)),
    (S.ONLINE, E.UNREGISTERED): (S.UNREGISTERED, (O.UNWATCH, O.SAVE, O.RELEASE)),
    (S.ONLINE, E.PROVISIONED): (S.ONLINE, (O.SAVE,)),
    (S.ONLINE, E.REMOVED): (S.UNREGISTERED, (O.UNWATCH, O.DELETE, O.RELEASE)),
    (S.OFFLINE, E.REGISTERED): (S.ONLINE, (O.WATCH, O.SAVE, O.ANNOUNCE)),
    (S.OFFLINE, E.REFRESHED): (S.ONLINE, (O.WATCH, O.SAVE)),
    (S.OFFLINE, E.KEEPALIVE): (S.ONLINE, (O.WATCH, O.SAVE)),
    (S.OFFLINE, E.EXPIRED): (S.UNREGISTERED, (O.SAVE,)),
    (S.OFFLINE, E.UNREGISTERED): (S.UNREGISTERED, (O.UNWATCH, O.SAVE, O.RELEASE)),
    (S.OFFLINE, E.PROVISIONED): (S.OFFLINE, (O.SAVE,)),
    (S.OFFLINE, E.REMOVED): (S.UNREGISTERED, (O.UNWATCH, O.DELETE)),
}


def transition_copy(d: Device) -> Device:
    """``d`` registered (a copy, as the registrar proposes it)."""
    new = d.copy()
    transition(new, E.REGISTERED, epoch=EPOCH, peer=HERE)
    return new


def device(state: DeviceState = S.UNREGISTERED, peer: Peer | None = HERE, **kw: object) -> Device:
    d = Device(ID, state=state, **kw)  # type: ignore[arg-type]
    if peer is not None:
        d.transport, d.host, d.port = Transport(peer.transport), peer.host, peer.port
    return d


class TestTable:
    """State × event → state, outputs, for every pair."""

    def test_module_table_is_the_expected_table(self) -> None:
        assert TRANSITIONS == EXPECTED

    @pytest.mark.parametrize(("state", "event"), sorted(EXPECTED, key=lambda k: (k[0].value, k[1])))
    def test_transition(self, state: DeviceState, event: DeviceEvent) -> None:
        new, outputs = EXPECTED[state, event]
        d = device(state)
        change = transition(d, event, epoch=EPOCH, reason="why", peer=HERE)
        assert (change.old, change.new, change.outputs) == (state, new, outputs)
        assert d.state is new
        assert change.event is event and change.device_id == ID
        assert d.updated_at == EPOCH
        assert change.went_online == (new is S.ONLINE and state is not S.ONLINE)
        assert change.went_offline == (state is S.ONLINE and new is not S.ONLINE)
        assert d.registered == (new is not S.UNREGISTERED) and d.online == (new is S.ONLINE)
        if new is S.ONLINE:
            assert d.offline_reason == "" and change.reason == ""
        else:
            assert d.offline_reason == "why" and change.reason == "why"

    @pytest.mark.parametrize(
        ("state", "event"), [p for p in itertools.product(DeviceState, DeviceEvent) if p not in EXPECTED]
    )
    def test_unlisted_pair_is_a_local_error_naming_the_state(self, state: DeviceState, event: DeviceEvent) -> None:
        d = device(state)
        with pytest.raises(LocalProtocolError, match=f"{event.name} is not allowed in state {state.name}"):
            transition(d, event, epoch=EPOCH)
        assert d.state is state and d.updated_at == 0.0  # untouched

    def test_render_table_draws_every_edge(self) -> None:
        dot = render_table()
        assert dot.startswith("digraph devices {") and dot.endswith("}")
        assert dot.count("->") == len(EXPECTED)
        assert '"OFFLINE" -> "ONLINE" [label="KEEPALIVE\\nWATCH, SAVE"]' in dot


class TestAddress:
    """PROTOCOL.md §3.4 R3, K5: requests go where the device really is."""

    def test_keepalive_from_the_same_address_is_nothing(self) -> None:
        d = device(S.ONLINE)
        change = transition(d, E.KEEPALIVE, epoch=EPOCH, peer=HERE)
        assert change.nothing and change.moved_from is None
        assert d.last_keepalive == EPOCH

    def test_keepalive_from_another_address_moves_and_is_saved_at_once(self) -> None:
        d = device(S.ONLINE)
        change = transition(d, E.KEEPALIVE, epoch=EPOCH, peer=THERE)
        assert change.moved_from == HERE and not change.nothing
        assert change.outputs == (O.WATCH, O.SAVE)  # not the lazy heartbeat write
        assert (d.transport, d.host, d.port) == (Transport.TCP, "10.9.9.9", 40000)
        assert d.transport is Transport.TCP

    def test_first_registration_is_not_a_move(self) -> None:
        d = device(peer=None)
        change = transition(d, E.REGISTERED, epoch=EPOCH, peer=HERE)
        assert change.moved_from is None and (d.host, d.port) == ("10.0.0.5", 5060)

    def test_events_without_a_peer_keep_the_address(self) -> None:
        d = device(S.ONLINE)
        transition(d, E.TIMED_OUT, epoch=EPOCH, reason="no keepalive for 180 s")
        assert (d.host, d.port) == (HERE.host, HERE.port) and d.last_keepalive == 0.0

    def test_reason_is_kept_when_an_event_gives_none(self) -> None:
        d = device(S.ONLINE)
        transition(d, E.TIMED_OUT, epoch=EPOCH, reason="no keepalive for 180 s")
        transition(d, E.PROVISIONED, epoch=EPOCH + 1)
        assert d.offline_reason == "no keepalive for 180 s"


class TestDeviceTable:
    def test_reads_as_a_mapping(self) -> None:
        table = DeviceTable()
        table.adopt(device(S.ONLINE))
        assert ID in table and table[ID].online and table.get("x") is None and list(table) == [ID]
        assert len(table) == 1 and [d.device_id for d in table.values()] == [ID]
        assert table.counts() == {S.UNREGISTERED: 0, S.ONLINE: 1, S.OFFLINE: 0}

    def test_load_expires_lapsed_registrations(self) -> None:
        lapsed = device(S.ONLINE, expires_at=EPOCH - 1)
        lapsed.device_id = "34020000001320000002"
        live = device(S.OFFLINE, expires_at=EPOCH + 100)
        table = DeviceTable()
        changes = table.load([lapsed, live, device(S.UNREGISTERED, expires_at=0.0)], epoch=EPOCH)
        assert [(c.device_id, c.event, c.new) for c in changes] == [("34020000001320000002", E.EXPIRED, S.UNREGISTERED)]
        assert lapsed.offline_reason == "registration expired while the gateway was down"
        assert table[ID].state is S.UNREGISTERED  # the third record replaced the second (same ID)

    @pytest.mark.parametrize("state", list(S))
    @pytest.mark.parametrize(
        "peer",
        [HERE, THERE, Peer("UDP", "10.0.0.5", 5061), Peer("UDP", "10.0.0.6", 5060), Peer("TCP", "10.0.0.5", 5060)],
    )
    @pytest.mark.parametrize("reason", ["", "no keepalive for 180 s"])
    @pytest.mark.parametrize("known_at", [HERE, None])
    def test_keepalive_in_place_is_the_tables_transition(
        self, state: DeviceState, peer: Peer, reason: str, known_at: Peer | None
    ) -> None:
        # the fast path either declines, changing nothing, or leaves the record exactly as the
        # table's KEEPALIVE does, with that transition's outputs and nothing that Change would report
        fast, slow = DeviceTable(), DeviceTable()
        for table in (fast, slow):
            table.adopt(device(state, peer=known_at, offline_reason=reason, expires_at=EPOCH + 3600))
        before = fast[ID].copy()
        done = fast.keepalive(ID, peer, epoch=EPOCH + 5)
        if done is None:
            assert fast[ID] == before
            assert not (state is S.ONLINE and known_at == peer)
            return
        assert done is fast[ID] and state is S.ONLINE and known_at == peer
        change = slow.apply(ID, E.KEEPALIVE, epoch=EPOCH + 5, peer=peer)
        assert fast[ID] == slow[ID]
        assert change.nothing and change.outputs == KEEPALIVE_OUTPUTS
        assert (change.old, change.event) == KEEPALIVE_IN_PLACE
        assert fast.on_connection(peer) == slow.on_connection(peer)

    def test_keepalive_of_an_unknown_device_is_a_key_error(self) -> None:
        with pytest.raises(KeyError):
            DeviceTable().keepalive(ID, HERE, epoch=EPOCH)

    def test_apply_unknown_device_is_a_key_error(self) -> None:
        with pytest.raises(KeyError):
            DeviceTable().apply(ID, E.KEEPALIVE, epoch=EPOCH)

    def test_provision_creates_then_updates(self) -> None:
        table = DeviceTable()
        change = table.provision(ID, epoch=EPOCH, password="p", name="gate", stream_mode=StreamMode.TCP_ACTIVE)
        assert change == Change(ID, E.PROVISIONED, S.UNREGISTERED, S.UNREGISTERED, (O.SAVE,))
        d = table[ID]
        assert d.provisioned and d.password == "p" and d.created_at == EPOCH
        assert d.stream_mode is StreamMode.TCP_ACTIVE
        table.provision(ID, epoch=EPOCH + 1, charset="UTF-8")
        assert (d.password, d.name, d.charset, d.stream_mode) == ("p", "gate", "UTF-8", StreamMode.TCP_ACTIVE)

    def test_remove_online_device_releases(self) -> None:
        table = DeviceTable()
        table.adopt(device(S.ONLINE))
        removed = table.remove(ID, epoch=EPOCH)
        assert removed is not None
        record, change = removed
        assert O.RELEASE in change.outputs and O.DELETE in change.outputs and change.reason == "removed by operator"
        assert ID not in table and table.remove(ID, epoch=EPOCH) is None

    def test_describe_and_heartbeat_keep_unknown_values(self) -> None:
        table = DeviceTable()
        table.adopt(device(S.ONLINE, name="old", keepalive_interval=30))
        assert table.describe(ID, epoch=EPOCH, manufacturer="Hikvision")
        assert table.set_heartbeat(ID, epoch=EPOCH, count=5)
        d = table[ID]
        assert (d.name, d.manufacturer, d.keepalive_interval, d.keepalive_count) == ("old", "Hikvision", 30, 5)
        assert not table.describe("x", epoch=EPOCH) and not table.set_heartbeat("x", epoch=EPOCH, interval=1)

    def test_the_operators_name_and_the_reported_name_are_kept_apart(self) -> None:
        # issue 11 defect 6: DeviceInfo used to overwrite the name the operator gave
        table = DeviceTable()
        table.provision(ID, epoch=EPOCH, name="南门")
        table.adopt(transition_copy(table[ID]))
        assert table.describe(ID, epoch=EPOCH, reported_name="IPC-7A2F")
        d = table[ID]
        assert (d.name, d.reported_name, d.display_name) == ("南门", "IPC-7A2F", "南门")
        table.provision(ID, epoch=EPOCH, password="p")  # no name given: the operator's stays
        assert table.describe(ID, epoch=EPOCH, manufacturer="Hikvision")  # no name reported: kept
        assert (table[ID].name, table[ID].reported_name) == ("南门", "IPC-7A2F")
        unnamed = Device("34020000001320000002", reported_name="IPC-1")
        assert unnamed.display_name == "IPC-1"

    def test_stale_is_not_heard_from_never_registered_now_and_not_provisioned_unless_asked(self) -> None:
        day = 86400.0
        now = EPOCH + 100 * day
        table = DeviceTable()

        def add(n: int, state: DeviceState = S.UNREGISTERED, **kw: object) -> None:
            d = Device(f"340200000013200000{n:02d}", state=state, **kw)  # type: ignore[arg-type]
            table.adopt(d)

        add(1, last_keepalive=now - 31 * day, created_at=EPOCH)  # silent 31 days: stale
        add(2, last_keepalive=now - 29 * day, created_at=EPOCH)  # 29 days: not yet
        add(3, registered_at=now - 40 * day, created_at=EPOCH)  # an old record's only time
        add(4, created_at=now - 40 * day)  # never heard from, made 40 days ago
        add(5, created_at=now - day)  # never heard from, made yesterday
        add(6, S.OFFLINE, last_keepalive=now - 60 * day)  # still registered: never
        add(7, S.ONLINE, last_keepalive=now - 60 * day)  # online: never
        add(8, provisioned=True, last_keepalive=now - 60 * day)  # an operator's: only if asked
        stale = [d.device_id[-2:] for d in table.stale(before=now - 30 * day)]
        assert stale == ["01", "03", "04"]
        with_provisioned = [d.device_id[-2:] for d in table.stale(before=now - 30 * day, provisioned=True)]
        assert with_provisioned == ["01", "03", "04", "08"]

    def test_on_connection_finds_online_devices_of_that_connection(self) -> None:
        table = DeviceTable()
        table.adopt(device(S.ONLINE, peer=THERE))
        other = device(S.OFFLINE, peer=THERE)
        other.device_id = "34020000001320000002"
        table.adopt(other)
        assert table.on_connection(THERE) == [ID]
        assert table.on_connection(Peer("TCP", "10.9.9.9", 40001)) == []

    def test_the_connection_index_follows_every_move(self) -> None:
        # issue 10, defect 9: a closing connection finds its devices by index, not by walking them all
        table = DeviceTable()
        table.adopt(device(S.ONLINE, peer=THERE))
        udp = device(S.ONLINE, peer=Peer("UDP", THERE.host, THERE.port))
        udp.device_id = "34020000001320000002"
        table.adopt(udp)
        assert table.on_connection(THERE) == [ID]  # a UDP device at the same host:port is not on it
        moved = Peer("TCP", "10.0.0.8", 40002)
        table.apply(ID, E.KEEPALIVE, epoch=EPOCH, peer=moved)
        assert table.on_connection(THERE) == [] and table.on_connection(moved) == [ID]
        again = device(S.ONLINE, peer=THERE)  # the registrar's copy after a REGISTER from the old connection
        table.adopt(again)
        assert table.on_connection(moved) == [] and table.on_connection(THERE) == [ID]
        table.remove(ID, epoch=EPOCH)
        assert table.on_connection(THERE) == [] and table._by_connection == {}
        loaded = DeviceTable()
        loaded.load([device(S.ONLINE, peer=THERE, expires_at=EPOCH + 60)], epoch=EPOCH)
        assert loaded.on_connection(THERE) == [ID]


class TestKeptCounts:
    """:meth:`DeviceTable.counts` is kept as records change (a metrics scrape walked every record)."""

    def test_load_counts_what_it_keeps_after_expiring(self) -> None:
        lapsed = device(S.ONLINE, expires_at=EPOCH - 1)
        lapsed.device_id = "34020000001320000002"
        table = DeviceTable()
        table.load(
            [lapsed, device(S.OFFLINE, expires_at=EPOCH + 100), device(S.ONLINE, expires_at=EPOCH + 9)], epoch=EPOCH
        )
        assert table.counts() == table.count_all() == {S.UNREGISTERED: 1, S.ONLINE: 1, S.OFFLINE: 0}

    @pytest.mark.parametrize("seed", range(10))
    def test_every_change_keeps_the_counts_equal_to_a_walk(self, seed: int) -> None:
        rng = random.Random(seed)
        table = DeviceTable()
        ids = [f"340200000013200000{n:02d}" for n in range(12)]
        events = list(DeviceEvent)
        for step in range(2000):
            device_id = rng.choice(ids)
            op = rng.random()
            known = table.get(device_id)
            epoch = EPOCH + step
            if op < 0.25:
                # the registrar's copy, transitioned, then adopted (REGISTER)
                record = known.copy() if known is not None else Device(device_id, created_at=epoch)
                event = E.REFRESHED if record.registered else E.REGISTERED
                transition(record, event, epoch=epoch, peer=rng.choice((HERE, THERE)))
                table.adopt(record)
            elif op < 0.6 and known is not None:
                try:
                    table.apply(device_id, rng.choice(events), epoch=epoch, peer=rng.choice((HERE, THERE, None)))
                except LocalProtocolError:
                    pass  # not allowed in its state: nothing changed
            elif op < 0.7 and known is not None:
                table.keepalive(device_id, rng.choice((HERE, THERE)), epoch=epoch)
            elif op < 0.8:
                table.provision(device_id, epoch=epoch, name="cam")
            elif op < 0.88:
                table.remove(device_id, epoch=epoch)
            else:
                stored = device(rng.choice(list(DeviceState)), expires_at=epoch + rng.choice((-5.0, 50.0)))
                stored.device_id = device_id
                table.load([stored], epoch=epoch)
            assert table.counts() == table.count_all()
            assert sum(table.counts().values()) == len(table)


class TestDeviceRecord:
    def test_to_dict_keeps_registered_and_online(self) -> None:
        out = device(S.OFFLINE, password="secret").to_dict()
        assert out["state"] == "offline" and out["registered"] is True and out["online"] is False
        assert out["stream_mode"] == "" and out["password"] is True and out["transport"] == "UDP"

    def test_row_round_trip(self) -> None:
        from gb28181gw.gb.model import DEVICE_FIELDS

        for d in (device(S.ONLINE), device(S.OFFLINE, stream_mode=StreamMode.UDP, provisioned=True)):
            row = d.row()
            assert None not in row  # every column is NOT NULL
            assert Device.from_row(dict(zip(DEVICE_FIELDS, row, strict=True))) == d

    def test_a_row_is_plain_values_the_collector_stops_tracking(self) -> None:
        # the registrar writes 10,000 rows every 30 s: rows holding enum members stayed tracked and
        # were walked again by the middle generation's collection (a stall under load)
        import gc

        for d in (device(S.ONLINE), device(S.OFFLINE, stream_mode=StreamMode.UDP)):
            row = d.row()
            assert all(type(v) in (str, int, float, bool) for v in row), [type(v) for v in row]
            gc.collect()
            assert not gc.is_tracked(row)

    def test_from_row_rejects_unknown_values(self) -> None:
        with pytest.raises(ValueError):
            Device.from_row({"device_id": ID, "state": "banned"})


def test_a_device_copy_and_row_have_every_field_and_the_copy_is_its_own() -> None:
    """Device.copy (the registrar's proposed record) and Device.row (what a store writes): every
    field, the copy changed apart from the original."""
    import dataclasses

    from gb28181gw.gb.model import DEVICE_FIELDS, DeviceState

    original = Device(device_id="34020000001320000001", created_at=1.0)
    for n, name in enumerate(DEVICE_FIELDS[2:], 2):
        kind = type(getattr(original, name))
        if kind is str:
            setattr(original, name, f"v{n}")
        elif kind is int:
            setattr(original, name, n)
        elif kind is float:
            setattr(original, name, n + 0.5)
        elif kind is bool:
            setattr(original, name, True)
    original.state, original.transport, original.stream_mode = DeviceState.ONLINE, Transport.TCP, StreamMode.TCP_PASSIVE
    copy = original.copy()
    assert copy == original and copy is not original
    # row() too is written out field by field: each in its place, the enums as their values
    plain = {"state": "online", "transport": "TCP", "stream_mode": "tcp-passive"}
    assert original.row() == tuple(plain.get(name, getattr(original, name)) for name in DEVICE_FIELDS)
    assert Device(device_id="34020000001320000001").row()[DEVICE_FIELDS.index("stream_mode")] == ""
    assert dataclasses.astuple(copy) == dataclasses.astuple(original)
    copy.host, copy.state = "10.0.0.9", DeviceState.OFFLINE
    assert original.host == "v" + str(DEVICE_FIELDS.index("host")) and original.state is DeviceState.ONLINE


def _records() -> list[tuple[type, dict[str, object]]]:
    """Each record whose ``__init__`` is written out for mypyc, with a value unlike its default for every field."""
    from gb28181gw.gb.model import DEVICE_FIELDS, DeviceState
    from gb28181gw.gb.registrar import Accepted, Outcome, RegisterResult
    from gb28181gw.sip.auth import Credentials
    from gb28181gw.sip.message import Response

    rng = random.Random(16)
    device: dict[str, object] = {}
    for name in DEVICE_FIELDS:
        default = getattr(Device("x"), name)
        kind = type(default)
        device[name] = (
            f"{name}-{rng.randrange(10**6)}" if kind is str
            else True if kind is bool
            else rng.randrange(1, 10**6) if kind is int
            else rng.randrange(1, 10**6) + 0.25 if kind is float
            else None
        )  # fmt: skip
    device.update(transport=Transport.TCP, stream_mode=StreamMode.TCP_ACTIVE, state=DeviceState.OFFLINE)
    d = Device(**device)  # type: ignore[arg-type]
    change = {
        "device_id": ID, "event": E.REFRESHED, "old": S.OFFLINE, "new": S.ONLINE, "outputs": (O.WATCH, O.SAVE),
        "reason": f"r{rng.randrange(10**6)}", "moved_from": THERE,
    }  # fmt: skip
    c = Change(**change)  # type: ignore[arg-type]
    accepted = {"device": d, "change": c, "outcome": Outcome.REFRESHED, "detail": "refreshed", "address_changed": True}
    result = {
        "response": Response(200), "outcome": Outcome.REGISTERED, "reason": "ok", "device": d,
        "detail": "registered", "address_changed": True, "change": c,
    }  # fmt: skip
    creds = {name: f"{name}-{rng.randrange(10**6)}" for name in ("username", "realm", "nonce", "uri", "response")}
    creds.update(algorithm="SHA-256", qop="auth", nc="00000001", cnonce="0a4f113b", opaque="5ccc069c")
    return [(Device, device), (Change, change), (Accepted, accepted), (RegisterResult, result), (Credentials, creds)]


@pytest.mark.parametrize(("cls", "values"), _records(), ids=lambda v: getattr(v, "__name__", ""))
def test_a_record_with_its_own_init_is_built_as_dataclasses_would(cls: type, values: dict[str, object]) -> None:
    """Device, Change, Accepted, RegisterResult and Credentials write their ``__init__`` out (mypyc compiles
    it; the one dataclasses generates stays interpreted): it takes the fields by name and in their order,
    with their defaults, and keeps equality, hashing and frozenness as they were."""
    import dataclasses

    fields = dataclasses.fields(cls)
    assert list(values) == [f.name for f in fields]  # a field added: give it a value here
    by_name = cls(**values)
    assert all(getattr(by_name, name) == value for name, value in values.items())
    assert cls(*values.values()) == by_name
    required = {f.name: values[f.name] for f in fields if f.default is dataclasses.MISSING}
    bare = cls(**required)
    for f in fields:
        if f.default is not dataclasses.MISSING:
            assert getattr(bare, f.name) == f.default, f.name
    last = fields[-1].name
    other = dataclasses.replace(by_name, **{last: getattr(bare, last)})
    assert other == cls(**{**values, last: getattr(bare, last)})
    assert repr(by_name) == repr(cls(**values)) and repr(by_name).startswith(f"{cls.__name__}({fields[0].name}=")
    if cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(by_name, last, getattr(bare, last))
        if all(isinstance(v, Hashable) for v in values.values()):
            assert hash(by_name) == hash(cls(**values))
