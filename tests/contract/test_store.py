"""The store contract: every backend passes the same suite (SQLite, and Redis on a real redis-server)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gb28181gw.access import Role, Token, digest_of, new_secret
from gb28181gw.audit import Action, Anchor, AuditEntry, AuditQuery, Result, verify
from gb28181gw.errors import StoreError, StoreRecordError
from gb28181gw.gb.ledger import LedgerEntry
from gb28181gw.gb.model import Alarm, Ban, Channel, Device, DeviceState, Override, ShareEntry, StreamMode, Transport
from gb28181gw.store.base import ROWS_PER_STEP, Store, device_rows
from gb28181gw.store.sqlite import MIGRATIONS, SqliteStore
from tests.redis_server import RedisServer, module_server, require_redis_py


def _redis_store(url: str) -> Store:
    from gb28181gw.store.redis import RedisStore  # redis-py is needed only for this backend

    return RedisStore(url)


#: Each backend made from a temporary directory and, for Redis, a server's URL (emptied for each test).
BACKENDS: dict[str, Callable[[Path, str], Store]] = {
    "sqlite": lambda tmp, url: SqliteStore(tmp / "gw.db"),
    "redis": lambda tmp, url: _redis_store(url),
}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from module_server(tmp_path_factory)


@pytest.fixture(params=sorted(BACKENDS))
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    url = ""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        url = server.url
    return lambda: BACKENDS[request.param](tmp_path, url)


@pytest.fixture
async def store(factory: Callable[[], Store]) -> AsyncIterator[Store]:
    s = factory()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def device(n: int, **kw: object) -> Device:
    return Device(device_id=f"340200000013200{n:05d}", **kw)  # type: ignore[arg-type]


async def test_empty(store: Store) -> None:
    assert await store.load_devices() == []
    assert await store.count_devices() == 0
    assert await store.get_device("34020000001320000001") is None


async def test_save_load_every_field(store: Store) -> None:
    d = device(
        1,
        name="南门 IPC",
        reported_name="IPC-7A2F",
        manufacturer="Hikvision",
        transport="TCP",
        host="10.0.0.5",
        port=5060,
        password="p@ss",
        provisioned=True,
        state=DeviceState.ONLINE,
        expires=3600,
        registered_at=1.5,
        expires_at=3601.5,
        last_keepalive=60.25,
        user_agent="IP Camera",
        gb_version="3.0",
        path="<sip:10.0.0.9:5060;lr;received=sip:192.168.1.20:5061>",  # registered through a front (RFC 3327)
    )
    await store.save_devices([d])
    assert await store.load_devices() == [d]
    assert await store.get_device(d.device_id) == d


async def test_upsert_updates_in_place(store: Store) -> None:
    await store.save_devices([device(1, name="a"), device(2)])
    await store.save_devices([device(1, name="b", state=DeviceState.ONLINE)])
    got = await store.get_device(device(1).device_id)
    assert got is not None and got.name == "b" and got.online
    assert await store.count_devices() == 2


async def test_delete_removes_channels_too(store: Store) -> None:
    await store.save_devices([device(1), device(2)])
    await store.replace_channels(device(1).device_id, [Channel("34020000001310000001", device(1).device_id, "c1")])
    assert await store.delete_device(device(1).device_id)
    assert not await store.delete_device(device(1).device_id)
    assert await store.load_channels() == []
    assert [d.device_id for d in await store.load_devices()] == [device(2).device_id]


async def test_channels_replace(store: Store) -> None:
    did = device(1).device_id
    await store.save_devices([device(1)])
    chans = [Channel(f"3402000000131000000{i}", did, f"通道{i}", "ON", did, {"PTZType": "1"}) for i in range(3)]
    await store.replace_channels(did, chans)
    assert await store.load_channels(did) == chans
    await store.replace_channels(did, chans[:1])
    assert await store.load_channels() == chans[:1]


async def test_alarms_newest_first_and_by_device(store: Store) -> None:
    alarms = [
        Alarm(
            f"3402000000131000000{i % 2}",
            "34020000001180000001",
            "4",
            "5",
            "2",
            f"2024-05-06T12:40:0{i}",
            "移动侦测",
            float(i),
            {"Longitude": "118.3"},
        )
        for i in range(5)
    ]
    await store.save_alarms(alarms)
    got = await store.load_alarms(3)
    assert [a.alarm_time for a in got] == ["2024-05-06T12:40:04", "2024-05-06T12:40:03", "2024-05-06T12:40:02"]
    assert got[0] == alarms[4]
    assert len(await store.load_alarms(10, "34020000001310000001")) == 2


async def test_enums_round_trip(store: Store) -> None:
    default, chosen = device(1, state=DeviceState.OFFLINE), device(2, stream_mode=StreamMode.TCP_PASSIVE)
    chosen.transport = Transport.TCP
    await store.save_devices([default, chosen])
    got = {d.device_id: d for d in await store.load_devices()}
    assert got[default.device_id].stream_mode is None and got[default.device_id].state is DeviceState.OFFLINE
    assert got[chosen.device_id].stream_mode is StreamMode.TCP_PASSIVE
    assert got[chosen.device_id].transport is Transport.TCP


async def test_bulk(store: Store) -> None:
    await store.save_devices([device(i) for i in range(5000)])
    assert await store.count_devices() == 5000


async def test_a_batch_of_several_steps_is_written_whole(store: Store) -> None:
    """Rows are taken in steps (store.base.device_rows) and plain-ASCII rows skip conversion: a batch
    of several steps, its device with undecodable text in the last one, is written whole, and a
    record refused in a later step leaves nothing of its batch written."""
    n = 2 * ROWS_PER_STEP + 5
    batch = [device(i) for i in range(n - 1)] + [device(n - 1, user_agent=GB2312_TEXT)]
    await store.save_devices(batch)
    loaded = {d.device_id: d for d in await store.load_devices()}
    assert len(loaded) == n
    assert loaded[device(n - 1).device_id].user_agent == GB2312_TEXT
    assert loaded[device(0).device_id] == device(0)
    with pytest.raises(StoreRecordError):
        await store.save_devices([device(n + i) for i in range(n)] + [device(3 * n, name="\ud800")])
    assert await store.count_devices() == n


async def test_device_rows_give_the_loop_turns() -> None:
    """Between two steps of rows everything else on the loop gets a turn (the point of the steps)."""
    turns = 0
    stop = False

    async def other() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(other())
    await asyncio.sleep(0)
    before = turns
    devices = [device(i) for i in range(3 * ROWS_PER_STEP)]
    rows = await device_rows(devices)
    stop = True
    await task
    assert rows == [d.row() for d in devices]
    assert turns - before >= 2


async def test_survives_reopen(factory: Callable[[], Store]) -> None:
    s = factory()
    await s.open()
    await s.save_devices([device(i, state=DeviceState.OFFLINE) for i in range(10)])
    await s.close()
    s = factory()
    await s.open()
    try:
        loaded = await s.load_devices()
        assert len(loaded) == 10 and all(d.registered for d in loaded)
    finally:
        await s.close()


async def test_alarms_of_a_device_are_those_it_raised_or_reported(store: Store) -> None:
    nvr, channel = "34020000001110000001", "34020000001310000001"
    await store.save_alarms(
        [Alarm(channel, nvr, description="channel"), Alarm(nvr, nvr, description="nvr"),
         Alarm("34020000001310000009", "34020000001110000009", description="other")]
    )  # fmt: skip
    assert [a.description for a in await store.load_alarms(10, nvr)] == ["nvr", "channel"]
    assert [a.description for a in await store.load_alarms(10, channel)] == ["channel"]
    assert [a.description for a in await store.load_alarms(1, nvr)] == ["nvr"]


# --- bans (issue 11 defect 5: kept across restarts when registrar.persist_bans is on) ------


def ban(n: int, until: float, **kw: object) -> Ban:
    return Ban(f"ip:10.0.0.{n}", f"10.0.0.{n}", until=until, **kw)  # type: ignore[arg-type]


async def test_bans_round_trip_every_field_in_order_of_ending(store: Store) -> None:
    assert await store.load_bans() == []
    b1 = Ban("id:34020000001320000001@10.0.0.5", "10.0.0.5", "34020000001320000001", 100.5, 700.5,
             "5 wrong passwords within 300 s", 5, 2)  # fmt: skip
    b2 = ban(2, 650.0, reason="密码错误")
    await store.save_bans([b1, b2])
    assert await store.load_bans() == [b2, b1]


async def test_bans_are_replaced_by_key_and_deleted_by_key(store: Store) -> None:
    await store.save_bans([ban(1, 100.0), ban(2, 200.0)])
    await store.save_bans([ban(1, 300.0, failures=7)])
    assert [(b.key, b.until, b.failures) for b in await store.load_bans()] == [
        ("ip:10.0.0.2", 200.0, 0),
        ("ip:10.0.0.1", 300.0, 7),
    ]
    await store.delete_bans(["ip:10.0.0.1", "ip:10.9.9.9"])  # an unknown key is no error
    assert [b.key for b in await store.load_bans()] == ["ip:10.0.0.2"]
    await store.delete_bans([])


async def test_a_write_deletes_the_bans_that_ended(store: Store) -> None:
    # the stored table never holds more than the active bans and the ones ended since the last write
    await store.save_bans([ban(n, float(n * 100)) for n in range(1, 6)])
    await store.save_bans([ban(9, 1000.0)], ended_before=300.0)
    assert [b.key for b in await store.load_bans()] == ["ip:10.0.0.3", "ip:10.0.0.4", "ip:10.0.0.5", "ip:10.0.0.9"]
    await store.save_bans([], ended_before=2000.0)
    assert await store.load_bans() == []


async def test_bans_survive_reopen(factory: Callable[[], Store]) -> None:
    s = factory()
    await s.open()
    await s.save_bans([ban(1, 100.0, device_id="34020000001320000001")])
    await s.close()
    s = factory()
    await s.open()
    try:
        assert await s.load_bans() == [ban(1, 100.0, device_id="34020000001320000001")]
    finally:
        await s.close()


def previous_schema(path: Path) -> sqlite3.Connection:
    """A SQLite file at ``path`` as the release before the last migration left it, open."""
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:-1]:
        conn.executescript(migration)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    return conn


class TestSqliteFile:
    async def test_a_large_write_hands_the_gil_back_between_steps(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Binding rows holds the GIL: the writer thread sleeps between steps of WRITE_STEP rows, so
        the event loop's thread is not held a switch interval at a time for the whole write (counted,
        not timed); the write is still one transaction, all of it or nothing."""
        import types

        from gb28181gw.store import sqlite as sqlite_store

        slept: list[float] = []
        monkeypatch.setattr(sqlite_store, "time", types.SimpleNamespace(sleep=slept.append))
        store = SqliteStore(tmp_path / "gw.db")
        await store.open()
        try:
            n = 2 * sqlite_store.WRITE_STEP + 5
            await store.save_devices([device(i) for i in range(n)])
            assert slept == [sqlite_store.WRITE_PAUSE] * 2
            assert await store.count_devices() == n
            with pytest.raises(StoreRecordError):
                await store.save_devices([device(n + i) for i in range(n)] + [device(3 * n, name="\ud800")])
            assert await store.count_devices() == n
        finally:
            await store.close()

    async def test_second_opener_is_refused(self, tmp_path: Path) -> None:
        first = SqliteStore(tmp_path / "gw.db")
        await first.open()
        try:
            with pytest.raises(StoreError, match="in use by another gb28181gw"):
                await SqliteStore(tmp_path / "gw.db").open()
        finally:
            await first.close()

    async def test_corrupt_file_is_a_clear_error_and_left_untouched(self, tmp_path: Path) -> None:
        path = tmp_path / "gw.db"
        junk = b"this is not a database" * 100
        path.write_bytes(junk)
        with pytest.raises(StoreError, match="corrupt or not a gb28181gw database"):
            await SqliteStore(path).open()
        assert path.read_bytes() == junk

    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "gw.db"
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
        with pytest.raises(StoreError, match="newer than this gb28181gw"):
            await SqliteStore(path).open()

    async def test_unwritable_directory(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(StoreError, match="cannot"):
            await SqliteStore(blocker / "sub" / "gw.db").open()

    async def test_schema_2_file_migrates_registered_and_online_to_state(self, tmp_path: Path) -> None:
        # a store written before the state enum: registered and online columns
        path = tmp_path / "gw.db"
        conn = sqlite3.connect(path, isolation_level=None)
        for migration in MIGRATIONS[:2]:
            conn.executescript(migration)
        conn.execute("PRAGMA user_version = 2")
        rows = [("34020000001320000001", 1, 1, "udp"), ("34020000001320000002", 1, 0, ""),
                ("34020000001320000003", 0, 0, "tcp-active")]  # fmt: skip
        conn.executemany(
            "INSERT INTO devices (device_id, registered, online, stream_mode, transport) VALUES (?, ?, ?, ?, 'TCP')",
            rows,
        )
        conn.close()
        store = SqliteStore(path)
        await store.open()
        try:
            got = await store.load_devices()
        finally:
            await store.close()
        assert [(d.state, d.registered, d.online) for d in got] == [
            (DeviceState.ONLINE, True, True),
            (DeviceState.OFFLINE, True, False),
            (DeviceState.UNREGISTERED, False, False),
        ]
        assert [d.stream_mode for d in got] == [StreamMode.UDP, None, StreamMode.TCP_ACTIVE]
        assert all(d.transport is Transport.TCP for d in got)
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(devices)")}
        conn.close()
        assert "state" in columns and not columns & {"registered", "online"}

    async def test_schema_4_file_splits_device_names(self, tmp_path: Path) -> None:
        # issue 11 defect 6: before, one name column held the operator's name or, once DeviceInfo
        # had overwritten it, the device's. A device that registered by itself never had an
        # operator's name; a provisioned one keeps its name as the operator's
        path = tmp_path / "gw.db"
        conn = sqlite3.connect(path, isolation_level=None)
        for migration in MIGRATIONS[:4]:
            conn.executescript(migration)
        conn.execute("PRAGMA user_version = 4")
        conn.executemany(
            "INSERT INTO devices (device_id, name, provisioned) VALUES (?, ?, ?)",
            [("34020000001320000001", "南门", 1), ("34020000001320000002", "IPC-7A2F", 0)],
        )
        conn.close()
        store = SqliteStore(path)
        await store.open()
        try:
            got = [(d.name, d.reported_name) for d in await store.load_devices()]
        finally:
            await store.close()
        assert got == [("南门", ""), ("", "IPC-7A2F")]

    async def test_a_file_from_before_the_path_upgrades_with_every_device_registered_directly(
        self, tmp_path: Path
    ) -> None:
        # the path column (RFC 3327, a dispatcher front) arrives by migration: old rows read with none
        path = tmp_path / "gw.db"
        conn = previous_schema(path)
        conn.execute(
            "INSERT INTO devices (device_id, host, port, state) VALUES ('34020000001320000001', '10.0.0.5', 5060, 'online')"
        )
        conn.close()
        store = SqliteStore(path)
        await store.open()
        try:
            (d,) = await store.load_devices()
            assert (d.host, d.port, d.state, d.path) == ("10.0.0.5", 5060, DeviceState.ONLINE, "")
            d.path = "<sip:10.0.0.9;lr>"
            await store.save_devices([d])
            assert await store.load_devices() == [d]
        finally:
            await store.close()

    async def test_a_store_of_the_last_release_upgrades_in_place_and_keeps_its_data(self, tmp_path: Path) -> None:
        # issue 14: the ledger table arrives by migration; the devices, channels and overrides of a
        # gateway that ran the previous schema are all still there after it
        path = tmp_path / "gw.db"
        conn = previous_schema(path)
        conn.execute(
            "INSERT INTO devices (device_id, name, state) VALUES ('34020000001180000001', '北门NVR', 'online')"
        )
        conn.execute(
            "INSERT INTO channels (channel_id, device_id, name) VALUES ('34020000001310000001', '34020000001180000001', '大门')"
        )
        conn.execute(
            "INSERT INTO upstream_overrides (upstream, channel_id, name) VALUES ('city', '34020000001310000001', '东门')"
        )
        conn.close()
        store = SqliteStore(path)
        await store.open()
        try:
            assert [d.name for d in await store.load_devices()] == ["北门NVR"]
            assert [c.name for c in await store.load_channels()] == ["大门"]
            assert [o.name for o in await store.load_overrides()] == ["东门"]
            assert await store.load_ledger() == []
            await store.save_ledger([LedgerEntry("34020000001310000001", {"location": "北门岗亭"}, 1.0)])
        finally:
            await store.close()
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        conn.close()

    async def test_a_damaged_ledger_entry_is_a_clear_error(self, tmp_path: Path) -> None:
        store = SqliteStore(tmp_path / "gw.db")
        await store.open()
        await store.close()
        conn = sqlite3.connect(tmp_path / "gw.db", isolation_level=None)
        conn.execute("INSERT INTO ledger (id, fields) VALUES ('34020000001310000001', '[1, 2')")
        conn.close()
        store = SqliteStore(tmp_path / "gw.db")
        await store.open()
        try:
            with pytest.raises(StoreError, match="ledger entry 34020000001310000001"):
                await store.load_ledger()
        finally:
            await store.close()

    async def test_unknown_state_is_a_clear_error(self, tmp_path: Path) -> None:
        store = SqliteStore(tmp_path / "gw.db")
        await store.open()
        await store.close()
        conn = sqlite3.connect(tmp_path / "gw.db", isolation_level=None)
        conn.execute("INSERT INTO devices (device_id, state) VALUES ('34020000001320000001', 'banned')")
        conn.close()
        store = SqliteStore(tmp_path / "gw.db")
        await store.open()
        try:
            with pytest.raises(StoreError, match="device 34020000001320000001 .* cannot be read"):
                await store.load_devices()
        finally:
            await store.close()


# --- what devices send is stored as sent (hostile input, issue 10 defect 1) -------------

#: "海康" in GB2312, as Chinese firmware puts it in User-Agent; the SIP layer keeps it as lone surrogates.
GB2312_TEXT = "IPC 海康 V5".encode("gb2312").decode("utf-8", "surrogateescape")


async def test_undecodable_device_text_round_trips(factory: Callable[[], Store]) -> None:
    s = factory()
    await s.open()
    try:
        await s.save_devices([device(1, user_agent=GB2312_TEXT, name=GB2312_TEXT), device(2, user_agent="plain")])
        await s.replace_channels(
            device(1).device_id, [Channel("34020000001310000001", device(1).device_id, GB2312_TEXT)]
        )
        await s.save_alarms(
            [Alarm(device(1).device_id, device(1).device_id, description=GB2312_TEXT, extra={"x": GB2312_TEXT})]
        )
    finally:
        await s.close()
    s = factory()
    await s.open()
    try:
        loaded = {d.device_id: d for d in await s.load_devices()}
        assert loaded[device(1).device_id].user_agent == GB2312_TEXT
        assert loaded[device(1).device_id].user_agent.encode("utf-8", "surrogateescape") == "IPC 海康 V5".encode(
            "gb2312"
        )
        assert loaded[device(1).device_id].name == GB2312_TEXT
        assert loaded[device(2).device_id].user_agent == "plain"
        assert (await s.get_device(device(1).device_id)).user_agent == GB2312_TEXT  # type: ignore[union-attr]
        assert [c.name for c in await s.load_channels()] == [GB2312_TEXT]
        (alarm,) = await s.load_alarms()
        assert alarm.description == GB2312_TEXT and alarm.extra == {"x": GB2312_TEXT}
        assert s.writable and not s.write_failures
    finally:
        await s.close()


async def test_a_record_the_store_refuses_leaves_it_working(store: Store) -> None:
    # a lone surrogate that stands for no device byte cannot be stored in any form
    with pytest.raises(StoreRecordError):
        await store.save_devices([device(1), device(2, name="\ud800")])
    with pytest.raises(StoreRecordError):
        await store.save_devices([device(3, port=2**70)])  # more than SQLite's 64-bit integers
    assert await store.count_devices() == 0  # nothing of either batch was half-written
    await store.save_devices([device(1), device(3)])  # no transaction was left open
    assert await store.count_devices() == 2
    assert store.writable and store.write_failures["record"] == 2


async def test_update_channels_touches_only_what_it_names(store: Store) -> None:
    dev = device(1).device_id
    await store.save_devices([device(1)])
    chans = [Channel(f"340200000013100{n:05d}", dev, f"ch{n}", "ON") for n in range(5)]
    await store.replace_channels(dev, chans)
    await store.update_channels(
        dev, [Channel(chans[1].channel_id, dev, "renamed", "OFF"), Channel("34020000001310099999", dev, "new")],
        deletes=[chans[3].channel_id, "34020000001310088888"],  # an unknown ID is no error
    )  # fmt: skip
    got = {c.channel_id: (c.name, c.status) for c in await store.load_channels(dev)}
    assert got == {
        chans[0].channel_id: ("ch0", "ON"), chans[1].channel_id: ("renamed", "OFF"),
        chans[2].channel_id: ("ch2", "ON"), chans[4].channel_id: ("ch4", "ON"), "34020000001310099999": ("new", ""),
    }  # fmt: skip


async def test_a_damaged_stored_ban_is_dropped_not_a_failed_start(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "gw.db")
    await s.open()
    await s.save_bans([ban(1, 100.0), ban(2, 200.0), ban(3, 300.0)])
    await s.close()
    db = sqlite3.connect(tmp_path / "gw.db")
    db.execute("UPDATE bans SET until = 'garbage' WHERE key = 'ip:10.0.0.1'")
    db.execute("UPDATE bans SET failures = 'x' WHERE key = 'ip:10.0.0.2'")
    db.commit()
    db.close()
    s = SqliteStore(tmp_path / "gw.db")
    await s.open()
    try:
        assert await s.load_bans() == [ban(3, 300.0)]
    finally:
        await s.close()


async def test_share_entries_keep_the_last_word_per_superior_and_entry(store: Store) -> None:
    await store.save_shares([ShareEntry("district", "3402", True), ShareEntry("city", "3402", False)])
    await store.save_shares(
        [ShareEntry("district", "3402", False), ShareEntry("district", "34020000001310000001", True)]
    )
    assert await store.load_shares() == [
        ShareEntry("city", "3402", False),
        ShareEntry("district", "3402", False),
        ShareEntry("district", "34020000001310000001", True),
    ]


async def test_overrides_are_replaced_by_superior_and_channel_and_deleted(store: Store) -> None:
    first = Override("district", "34020000001310000001", name="南门", civil_code="340202")
    await store.save_override(first)
    await store.save_override(Override("city", "34020000001310000001", parent_id="34020000002160000001"))
    changed = Override("district", "34020000001310000001", name="北门")
    await store.save_override(changed)
    assert await store.load_overrides() == [
        Override("city", "34020000001310000001", parent_id="34020000002160000001"),
        changed,
    ]
    assert await store.delete_override("district", "34020000001310000001") is True
    assert await store.delete_override("district", "34020000001310000001") is False
    assert [o.upstream for o in await store.load_overrides()] == ["city"]


async def test_shares_and_overrides_survive_reopen(factory: Callable[[], Store]) -> None:
    s = factory()
    await s.open()
    await s.save_shares([ShareEntry("district", "340202", True)])
    await s.save_override(Override("district", "34020000001310000001", name="大门"))
    await s.close()
    s = factory()
    await s.open()
    try:
        assert await s.load_shares() == [ShareEntry("district", "340202", True)]
        assert (await s.load_overrides())[0].name == "大门"
    finally:
        await s.close()


async def test_ledger_entries_are_replaced_by_id_and_deleted(store: Store) -> None:
    a = LedgerEntry("34020000001310000001", {"location": "北门岗亭", "built": "2020-03", "leased": "no"}, 10.0)
    b = LedgerEntry("34020000001310000002", {"police_station": "镜湖派出所"}, 11.0)
    await store.save_ledger([a, b])
    assert await store.load_ledger() == [a, b]
    changed = LedgerEntry(a.id, {"location": "南门"}, 12.0)
    await store.save_ledger([changed])
    assert await store.load_ledger() == [changed, b]
    await store.delete_ledger([b.id, "34020000001310000099"])
    assert await store.load_ledger() == [changed]


async def test_the_ledger_survives_a_catalog_refresh_and_the_device_s_removal(store: Store) -> None:
    # the ledger is the integrator's work: a device re-sending its catalog (or being re-added) must not lose it
    await store.save_devices([device(1)])
    await store.replace_channels(device(1).device_id, [Channel("34020000001310000001", device(1).device_id)])
    entry = LedgerEntry("34020000001310000001", {"location": "北门岗亭"}, 1.0)
    await store.save_ledger([entry])
    await store.replace_channels(device(1).device_id, [])
    await store.delete_device(device(1).device_id)
    assert await store.load_ledger() == [entry]


async def test_ledger_survives_reopen(factory: Callable[[], Store]) -> None:
    s = factory()
    await s.open()
    entry = LedgerEntry("34020000001310000001", {"osd": "镜湖区-北门-01", "longitude": "118.376451"}, 5.5)
    await s.save_ledger([entry])
    await s.close()
    s = factory()
    await s.open()
    try:
        assert await s.load_ledger() == [entry]
    finally:
        await s.close()


# --- tokens and the audit trail (issue 15) ---------------------------------------------------


async def test_tokens_are_replaced_by_name_and_survive_reopen(factory: Callable[[], Store]) -> None:
    s = factory()
    await s.open()
    t = Token("ops", Role.OPERATOR, digest_of(new_secret()), 10.0)
    await s.save_token(t)
    await s.save_token(Token("grafana", Role.VIEWER, digest_of(new_secret()), 11.0))
    await s.save_token(replace(t, revoked=20.0, last_used=15.0))
    await s.close()
    s = factory()
    await s.open()
    try:
        tokens = await s.load_tokens()
        assert [x.name for x in tokens] == ["grafana", "ops"]
        assert tokens[1] == replace(t, revoked=20.0, last_used=15.0) and not tokens[1].active
    finally:
        await s.close()


def _entry(n: int, **kw: Any) -> AuditEntry:
    base: dict[str, Any] = dict(
        time=1000.0 + n, actor="token:ops", source="127.0.0.1", action=Action.PTZ, target=f"340200000013200{n:05d}"
    )
    return AuditEntry(**(base | kw))


async def test_audit_records_are_numbered_chained_and_survive_reopen(factory: Callable[[], Store]) -> None:
    s = factory()
    await s.open()
    first = await s.append_audit([_entry(1, params={"command": "左转", "speed": 5}), _entry(2)])
    second = await s.append_audit([_entry(3, result=Result.REFUSED, detail="role")])
    await s.close()
    s = factory()
    await s.open()
    try:
        assert [r.seq for r in first + second] == [1, 2, 3]
        stored = await s.audit_chain()
        assert stored == first + second
        assert verify(stored) == []
        assert stored[0].entry.params == {"command": "左转", "speed": 5}
        assert await s.audit_ends() == (Anchor(), Anchor(3, stored[-1].hash))
    finally:
        await s.close()


async def test_audit_listing_filters(store: Store) -> None:
    await store.append_audit(
        [
            _entry(1),
            _entry(2, actor="superior:34020000002000000002", action=Action.STREAM_OPEN),
            _entry(3, action=Action.STREAM_CLOSE, result=Result.FAILED),
            _entry(4, actor="local", target="34020000001310000009"),
        ]
    )

    async def seqs(**kw: Any) -> list[int]:
        return [r.seq for r in await store.load_audit(AuditQuery(**kw))]

    assert await seqs() == [1, 2, 3, 4]
    assert await seqs(actor="token:") == [1, 3]
    assert await seqs(actor="local") == [4]
    assert await seqs(action="stream.") == [2, 3]
    assert await seqs(action="stream.close") == [3]
    assert await seqs(target="3402000000131000*") == [4]
    assert await seqs(since=1002.0, until=1003.0) == [2, 3]
    assert await seqs(result="failed") == [3]
    assert await seqs(after=2, limit=1) == [3]
    for query in (AuditQuery(actor="token:"), AuditQuery(action="stream."), AuditQuery(target="3402000000131000*")):
        every = await store.load_audit(AuditQuery())
        assert await store.load_audit(query) == [r for r in every if query.matches(r)]


async def test_audit_retention_removes_from_the_front_and_keeps_the_chain_checkable(store: Store) -> None:
    await store.append_audit([_entry(n) for n in range(1, 6)])
    assert await store.prune_audit(before=1003.0) == 2  # records at 1001, 1002
    anchor, head = await store.audit_ends()
    remaining = await store.audit_chain()
    assert anchor.seq == 2 and head == Anchor(5, remaining[-1].hash) and [r.seq for r in remaining] == [3, 4, 5]
    assert verify(remaining, anchor) == []
    assert await store.prune_audit(before=0.0) == 0
    await store.append_audit([_entry(6)])
    assert verify(await store.audit_chain(), anchor) == []


async def test_channels_of_a_device_not_stored_are_refused(store: Store) -> None:
    # the device row comes first (the registrar flushes it before a catalog's channels)
    with pytest.raises(StoreRecordError):
        await store.replace_channels(device(1).device_id, [Channel("34020000001310000001", device(1).device_id)])
    await store.replace_channels(device(1).device_id, [])  # nothing to add: nothing refused
    assert await store.load_channels() == [] and store.writable


async def test_alarms_beyond_the_limit_are_dropped_oldest_first(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import gb28181gw.store.sqlite

    monkeypatch.setattr(gb28181gw.store.sqlite, "MAX_ALARMS", 3)
    if not isinstance(store, SqliteStore):
        monkeypatch.setattr(type(store).__module__ + ".MAX_ALARMS", 3)
    nvr = "34020000001110000001"
    await store.save_alarms([Alarm(f"3402000000131000000{i}", nvr, description=str(i)) for i in range(4)])
    await store.save_alarms([Alarm("34020000001310000009", "34020000001110000009", description="4")])
    assert [a.description for a in await store.load_alarms(10)] == ["4", "3", "2"]
    assert [a.description for a in await store.load_alarms(10, nvr)] == ["3", "2"]
    assert await store.load_alarms(10, "34020000001310000000") == []


# --- Redis: what only a server can do (a real redis-server, restarted and shared by two writers) ----


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


class TestRedis:
    def test_the_stored_device_layout_is_every_device_field_in_order(self) -> None:
        # a field added to Device needs a migration of the stored arrays (store/redis.py: DEVICE_LAYOUT)
        require_redis_py()
        from gb28181gw.gb.model import DEVICE_FIELDS
        from gb28181gw.store.redis import DEVICE_LAYOUT

        assert DEVICE_LAYOUT == DEVICE_FIELDS

    async def test_a_device_array_written_before_the_path_reads_with_none(self, redis_url: str) -> None:
        # path (RFC 3327) was appended to the layout; arrays stored before it are read as they are
        import json as json_

        from gb28181gw.store.redis import DEVICE_LAYOUT, RedisStore

        s = RedisStore(redis_url)
        await s.open()
        try:
            d = device(1, host="10.0.0.5", port=5060, state=DeviceState.ONLINE)
            old = list(d.row())[: DEVICE_LAYOUT.index("path")]
            assert s._redis is not None
            await s._redis.hset(s._k("devices"), d.device_id, json_.dumps(old))
            assert await s.load_devices() == [d] and d.path == ""
            d.path = "<sip:10.0.0.9;lr>"
            await s.save_devices([d])
            assert await s.get_device(d.device_id) == d
        finally:
            await s.close()

    async def test_a_device_array_with_fields_a_newer_node_appended_reads_as_its_known_fields(
        self, redis_url: str
    ) -> None:
        # a rolling upgrade: an upgraded node writes a longer array; this node reads what it knows
        # of it rather than calling the device unreadable; a short or mangled array still is
        import json as json_

        from gb28181gw.store.redis import RedisStore

        s = RedisStore(redis_url)
        await s.open()
        try:
            d = device(1, host="10.0.0.5", port=5060, state=DeviceState.ONLINE, path="<sip:10.0.0.9;lr>")
            assert s._redis is not None
            await s._redis.hset(s._k("devices"), d.device_id, json_.dumps([*d.row(), "later", 7]))
            assert await s.load_devices() == [d]
            assert await s.get_device(d.device_id) == d
            await s._redis.hset(s._k("devices"), d.device_id, json_.dumps(list(d.row())[:-2]))
            with pytest.raises(StoreError, match="cannot be read"):
                await s.get_device(d.device_id)
        finally:
            await s.close()

    async def test_a_large_batch_is_encoded_off_the_loop_and_refused_whole_all_the_same(self, redis_url: str) -> None:
        from gb28181gw.store.redis import ENCODE_ON_LOOP, RedisStore

        s = RedisStore(redis_url)
        await s.open()
        try:
            batch = [device(i) for i in range(ENCODE_ON_LOOP + 1)]
            batch[-1].port = 2**64
            with pytest.raises(StoreRecordError):
                await s.save_devices(batch)
            batch[-1].port = 5060
            await s.save_devices(batch)
            assert await s.load_devices() == batch
        finally:
            await s.close()

    async def test_an_unreachable_server_is_a_clear_error_naming_the_url(self) -> None:
        require_redis_py()
        from gb28181gw.store.redis import RedisStore

        with pytest.raises(StoreError, match=r"cannot reach the Redis store at redis://127\.0\.0\.1:1/0"):
            await RedisStore("redis://127.0.0.1:1/0").open()
        with pytest.raises(StoreError, match="cannot be used"):
            await RedisStore("http://127.0.0.1/").open()

    async def test_a_password_is_never_shown(self) -> None:
        require_redis_py()
        from gb28181gw.store.redis import RedisStore

        store = RedisStore("redis://:s3cret@127.0.0.1:1/0")
        assert "s3cret" not in store.location
        with pytest.raises(StoreError) as caught:
            await store.open()
        assert "s3cret" not in str(caught.value)

    async def test_newer_schema_or_keys_without_one_are_refused_and_left_alone(
        self, redis_server: RedisServer, redis_url: str
    ) -> None:
        from gb28181gw.store.redis import RedisStore

        assert redis_server.command(b"SET", b"gbgw:schema", b"99") == b"+OK"
        with pytest.raises(StoreError, match="newer than this gb28181gw"):
            await RedisStore(redis_url).open()
        redis_server.flush()
        assert redis_server.command(b"HSET", b"gbgw:devices", b"34020000001320000001", b"{}") == b":1"
        with pytest.raises(StoreError, match="no gbgw:schema"):
            await RedisStore(redis_url).open()
        assert redis_server.command(b"HLEN", b"gbgw:devices") == b":1"

    async def test_damaged_records(self, redis_server: RedisServer, redis_url: str) -> None:
        from gb28181gw.store.redis import RedisStore

        s = RedisStore(redis_url)
        await s.open()
        try:
            await s.save_bans([ban(1, 100.0), ban(2, 200.0), ban(3, 300.0)])
            redis_server.command(b"HSET", b"gbgw:bans", b"ip:10.0.0.1", b"garbage")
            redis_server.command(b"HSET", b"gbgw:bans", b"ip:10.0.0.2", b'["ip:10.0.0.2","",0,0,"x"]')
            assert await s.load_bans() == [ban(3, 300.0)]  # dropped, not a failed start
            redis_server.command(
                b"HSET", b"gbgw:devices", b"34020000001320000001", b'{"device_id":"x","state":"banned"}'
            )
            with pytest.raises(StoreError, match="device 34020000001320000001 .* cannot be read"):
                await s.load_devices()
        finally:
            await s.close()

    async def test_two_writers_cannot_fork_the_audit_chain(self, redis_url: str) -> None:
        from gb28181gw.store.redis import RedisStore

        a, b = RedisStore(redis_url), RedisStore(redis_url)
        await a.open()
        await b.open()
        try:
            # each writer's idea of the head goes stale at every turn of the other
            for n in range(0, 40, 4):
                await asyncio.gather(
                    a.append_audit([_entry(n), _entry(n + 1)]), b.append_audit([_entry(n + 2), _entry(n + 3)])
                )
            chain = await a.audit_chain()
            assert [r.seq for r in chain] == list(range(1, 41)) and verify(chain) == []
            assert (await b.audit_ends())[1] == Anchor(40, chain[-1].hash)
        finally:
            await a.close()
            await b.close()

    async def test_an_append_whose_answer_was_lost_is_not_written_twice(self, redis_url: str) -> None:
        from gb28181gw.audit import GENESIS
        from gb28181gw.store.redis import RedisStore

        s = RedisStore(redis_url)
        await s.open()
        try:
            entries = [_entry(1), _entry(2)]
            written = await s.append_audit(entries)
            s._audit_head = (0, GENESIS)  # as if the reply was lost and the same batch is tried again
            assert await s.append_audit(entries) == written
            assert await s.audit_chain() == written
        finally:
            await s.close()

    async def test_retention_in_chunks_keeps_the_anchor(self, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        import gb28181gw.store.redis
        from gb28181gw.store.redis import RedisStore

        monkeypatch.setattr(gb28181gw.store.redis, "PRUNE_CHUNK", 2)
        s = RedisStore(redis_url)
        await s.open()
        try:
            records = await s.append_audit([_entry(n) for n in range(1, 8)])
            assert await s.prune_audit(before=1006.0) == 5
            anchor, _ = await s.audit_ends()
            assert anchor == Anchor(5, records[4].hash)
            assert verify(await s.audit_chain(), anchor) == []
        finally:
            await s.close()

    async def test_a_server_gone_and_back_loses_nothing_written(self, tmp_path: Path) -> None:
        # the store says it cannot write (the gateway's write-behind keeps the batch and retries,
        # tests/shell/test_store_redis.py); once the server is back, writes go through again
        require_redis_py()
        from gb28181gw.store.redis import RedisStore

        server = RedisServer(tmp_path / "redis", persistent=True)
        server.start()
        s = RedisStore(server.url)
        try:
            await s.open()
            await s.save_devices([device(1)])
            await s.append_audit([_entry(1)])
            server.stop(kill=True)
            with pytest.raises(StoreError, match="writing 1 devices in redis://127.0.0.1:.* failed"):
                await s.save_devices([device(2)])
            assert not s.writable and s.write_failures["store"] == 1
            server.start()
            await s.save_devices([device(2)])
            await s.append_audit([_entry(2)])
            assert s.writable
            assert [d.device_id for d in await s.load_devices()] == [device(1).device_id, device(2).device_id]
            assert verify(await s.audit_chain()) == []
        finally:
            await s.close()
            server.stop()


class TestRedisNode:
    """``node:<id>``: one running gateway per node.id, as SQLite's lock allows one per file."""

    async def test_a_second_gateway_with_the_same_node_id_is_refused_until_the_first_closes(
        self, redis_server: RedisServer, redis_url: str
    ) -> None:
        from gb28181gw.store.redis import RedisStore

        first = RedisStore(redis_url, node="n1")
        await first.open()
        try:
            with pytest.raises(
                StoreError, match=rf"node.id n1 is in use by a running gb28181gw \(pid {os.getpid()} on "
            ):
                await RedisStore(redis_url, node="n1").open()
            other = RedisStore(redis_url, node="n2")  # another name is another node
            await other.open()
            await other.close()
        finally:
            await first.close()
        assert redis_server.command(b"EXISTS", b"gbgw:node:n1") == b":0"
        again = RedisStore(redis_url, node="n1")
        await again.open()
        await again.close()

    async def test_the_claim_of_a_gateway_gone_from_this_host_is_taken_over(
        self, redis_server: RedisServer, redis_url: str
    ) -> None:
        from gb28181gw.store.redis import RedisStore

        gone = subprocess.Popen(["true"])
        gone.wait()  # a pid no process has now: the gateway that held n1 was killed
        claim = json.dumps({"pid": gone.pid, "host": socket.gethostname(), "token": "x"}).encode()
        assert redis_server.command(b"SET", b"gbgw:node:n1", claim, b"PX", b"60000") == b"+OK"
        s = RedisStore(redis_url, node="n1")
        await s.open()
        try:
            assert str(os.getpid()).encode() in (redis_server.command(b"GET", b"gbgw:node:n1") or b"")
        finally:
            await s.close()

    async def test_a_lapsed_claim_is_taken_again(
        self, redis_server: RedisServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import gb28181gw.store.redis
        from gb28181gw.store.redis import RedisStore

        monkeypatch.setattr(gb28181gw.store.redis, "NODE_TTL", 0.3)  # renewed every 0.1 s
        s = RedisStore(redis_url, node="n1")
        await s.open()
        try:
            redis_server.flush()  # as after a Redis restart without persistence
            for _ in range(200):
                if redis_server.command(b"EXISTS", b"gbgw:node:n1") == b":1":
                    break
                await asyncio.sleep(0.05)
            assert redis_server.command(b"EXISTS", b"gbgw:node:n1") == b":1"
        finally:
            await s.close()
