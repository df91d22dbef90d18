"""The audit trail over real sockets (issue 15 item 2, Done-when): a SIPp device is moved with PTZ
and streamed through the admin API, a SIPp superior plays the same channel; ``gb28181gw audit``
shows each action with its actor, ``audit verify`` passes, then fails naming the record once a row
was altered in the database by hand while the gateway was stopped.

One gateway (in-process, as the cascade tests run it, restarted once on the same store); the
service-level cases after it need no SIPp.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import socket
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gb28181gw.access import Role
from gb28181gw.app import Gateway
from gb28181gw.audit import GATEWAY, Action, Actor, AuditEntry, AuditQuery, Result
from gb28181gw.errors import DeviceError, StoreError, StoreRecordError
from gb28181gw.gb.ledger import LedgerEntry
from gb28181gw.gb.model import Channel
from gb28181gw.metrics import Metrics
from gb28181gw.services.audit import AuditService, ChainReport, acting, audited
from gb28181gw.services.ledger import Edit
from gb28181gw.store.sqlite import SqliteStore
from tests.media import UdpConsumer, gb_ps, packetize, wait_for

from .conftest import sipp_scenario, start_gateway
from .test_cascade_catalog import cli
from .test_cascade_invite import CH, NVR, OK_REFS, SUPERIOR, cascade_gateway, content, offer, ok, superior, superior_bye
from .test_devices import finished, free_udp_port, play_device, register
from .test_streams import CH as CH_JOIN
from .test_streams import answer, scenario

UNKNOWN = "34020000001310009999"


def find(records: list[dict[str, Any]], action: str, **fields: Any) -> dict[str, Any]:
    """The one record of ``action`` whose fields (and parameters) are those given."""
    hits = [
        r
        for r in records
        if r["action"] == action and all(r.get(k, r["params"].get(k)) == v for k, v in fields.items())
    ]
    assert len(hits) == 1, (action, fields, [(r["action"], r["actor"], r["target"], r["params"]) for r in records])
    return hits[0]


@pytest.mark.sipp
async def test_each_action_has_its_actor_and_verify_finds_a_row_altered_by_hand(tmp_path: Path) -> None:
    gw = await cascade_gateway(tmp_path, {"media.linger": "0.3"})  # the gateway closes it when no one watches
    assert gw.admin is not None
    store_path = gw.config.store.path
    try:
        port = free_udp_port()
        await register(gw, tmp_path, port)
        gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)  # as its catalog would have it
        api = f"http://127.0.0.1:{gw.admin.port}/api/v1"
        _, secret = await gw.access.create("ops", Role.OPERATOR)
        ops = {"Authorization": f"Bearer {secret}"}  # the operator's actions; the rest as "local" on loopback
        async with aiohttp.ClientSession() as http:
            ptz = sipp_scenario("message_uas.xml", check="", parts="", refs="all,sn").encode()
            device = await play_device(ptz, port, tmp_path, "ptz")
            async with http.post(f"{api}/ptz", json={"channel_id": CH, "action": "left"}, headers=ops) as r:
                assert r.status == 200, await r.text()
            await finished(device)
            async with http.post(f"{api}/ptz", json={"channel_id": UNKNOWN, "action": "left"}, headers=ops) as r:
                assert r.status == 404  # refused, and recorded so

            device = await play_device(scenario(answer()), port, tmp_path, "device")
            viewer, upper = await UdpConsumer.start(), await UdpConsumer.start()
            try:
                body = {"channel_id": CH, "consumer": {"transport": "udp", "host": "127.0.0.1", "port": viewer.port}}
                async with http.post(f"{api}/streams", json=body, headers=ops) as r:
                    assert r.status == 201, await r.text()
                    opened_json = await r.json()
                    stream_id, consumer_id = opened_json["id"], opened_json["consumer"]["id"]
                # the superior joins the live stream, then hangs up
                result = await superior(
                    gw, tmp_path, content(offer(upper.port)), ok(), then=superior_bye(500), refs=OK_REFS
                )
                assert result.ok, result.stdout + result.messages
                await wait_for(lambda: len(gw.streams.streams[stream_id].consumers) == 1, 5)
                async with http.delete(f"{api}/streams/{stream_id}/consumers/{consumer_id}") as r:
                    assert r.status == 200, await r.text()
                await finished(device)  # the linger ran out: it got our BYE
            finally:
                viewer.close()
                upper.close()
            async with http.get(f"{api}/audit", params={"action": "nothing.", "since": "x"}) as r:
                assert r.status == 400 and "since" in (await r.json())["error"]

        listing = await asyncio.to_thread(cli, gw, "audit", "--json")
        assert listing.returncode == 0, listing.stderr
        records = json.loads(listing.stdout)["records"]
        assert find(records, "ptz", target=CH)["actor"] == "token:ops"
        assert find(records, "ptz", target=CH)["params"]["ptz"].startswith("A50F")
        refused = find(records, "ptz", target=UNKNOWN)
        assert refused["result"] == "refused" and UNKNOWN in refused["detail"]
        opened = find(records, "stream.open", label=None)  # the viewer's (the superior's has a label)
        assert opened["actor"] == "token:ops" and opened["params"]["stream"] == stream_id
        assert opened["params"]["kind"] == "live" and opened["params"]["to"].startswith("udp 127.0.0.1:")
        theirs = find(records, "stream.open", label="upstream:district")
        assert theirs["actor"] == f"superior:{SUPERIOR}" and theirs["source"].startswith("127.0.0.1:")
        left = find(records, "stream.close", consumer=theirs["params"]["consumer"])
        assert left["actor"] == f"superior:{SUPERIOR}"  # its BYE
        gone = find(records, "stream.close", consumer=consumer_id)
        assert gone["actor"] == "local" and gone["source"].startswith("127.0.0.1") and gone["target"] == stream_id
        closed = find(records, "stream.close", cause="no-consumers")  # the linger's end: the gateway's doing
        assert closed["actor"] == "gateway" and closed["params"]["stream"] == stream_id
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1))

        superiors = await asyncio.to_thread(cli, gw, "audit", "--csv", "--actor", "superior:")
        rows = list(csv.DictReader(io.StringIO(superiors.stdout)))
        assert {(r["actor"], r["action"]) for r in rows} == {
            (f"superior:{SUPERIOR}", a) for a in ("stream.open", "stream.close")
        }
        assert json.loads(rows[0]["params"])["label"] == "upstream:district" and rows[0]["time"].endswith("+08:00")

        check = await asyncio.to_thread(cli, gw, "audit", "verify")
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"{len(records)} records checked: the chain is whole" in check.stdout
        assert f"head: record {len(records)}, hash {records[-1]['hash']}" in check.stdout
    finally:
        await gw.stop()

    victim = find(records, "ptz", target=UNKNOWN)["seq"]
    with sqlite3.connect(store_path) as db:  # someone hides the refusal
        db.execute("UPDATE audit SET result = 'ok', detail = '' WHERE seq = ?", (victim,))
    db.close()

    gw = await start_gateway(**{"store.path": store_path})
    try:
        assert gw.admin is not None
        check = await asyncio.to_thread(cli, gw, "audit", "verify")
        assert check.returncode == 1, check.stdout + check.stderr
        assert "BROKEN" in check.stdout
        assert f"problem at record {victim}: record {victim} does not match its hash: altered" in check.stdout
        as_json = json.loads((await asyncio.to_thread(cli, gw, "audit", "verify", "--json")).stdout)
        assert not as_json["ok"] and [p["seq"] for p in as_json["problems"]] == [victim]
    finally:
        await gw.stop()


# --- service level: no SIPp -----------------------------------------------------------------


async def recorded(gw: Gateway, **query: Any) -> list[AuditEntry]:
    return [r.entry for r in await gw.audit.query(AuditQuery(**query))]


async def test_a_refused_control_is_recorded_refused() -> None:
    gw = await start_gateway()
    try:
        with acting(Actor.token("ops", "10.0.0.5")), pytest.raises(DeviceError):
            await gw.devices.command(UNKNOWN, "TeleBoot", "Boot", wait=False)
        (e,) = await recorded(gw, action="device.control")
        assert (e.actor, e.source, e.target, e.result) == ("token:ops", "10.0.0.5", UNKNOWN, Result.REFUSED)
        assert e.params == {"command": "TeleBoot", "value": "Boot"} and UNKNOWN in e.detail
    finally:
        await gw.stop()


async def test_each_pruned_device_is_found_by_its_id() -> None:
    # one summary listed 50 IDs at most, with target "": `audit --target ID` found no removal
    gw = await start_gateway()
    try:
        ids = [f"3402000000132{n:07d}" for n in range(60)]
        for id_ in ids:
            await gw.registrar.provision(id_)
        with acting(Actor.token("ops", "10.0.0.5")):
            pruned = await gw.registrar.prune(-1.0, provisioned=True)
        assert len(pruned) == 60
        (last,) = await recorded(gw, target=ids[-1], action="device.remove")
        assert (last.actor, last.result, last.params) == ("token:ops", Result.OK, {"pruned": True})
        assert len(await recorded(gw, action="device.remove")) == 60
        (summary,) = await recorded(gw, action="device.prune")
        assert summary.params["removed"] == 60 and summary.actor == "token:ops"
    finally:
        await gw.stop()


async def test_a_ledger_import_is_one_record_with_counts() -> None:
    gw = await start_gateway()
    try:
        gw.registrar.devices  # noqa: B018
        ids = [f"3402000000132{n:07d}" for n in range(1, 4)]
        for id_ in ids:
            gw.devices.channels.setdefault(NVR, {})[id_] = Channel(id_, NVR)
        edits = [Edit(id_, {"location": f"北门 {n}"}, line=n + 2) for n, id_ in enumerate(ids)]
        edits.append(Edit(UNKNOWN, {"location": "nowhere"}, line=9))
        with acting(Actor.token("clerk", "10.0.0.7")):
            result = await gw.ledger.apply(edits)
        assert result.applied
        (e,) = await recorded(gw, action="ledger.")
        assert e.action == Action.LEDGER_IMPORT and e.actor == "token:clerk" and e.result == Result.OK
        assert e.params == {"rows": 4, "entries": 3, "fields": 3, "problems": 1, "strict": False}
        assert isinstance(gw.ledger.entries[ids[0]], LedgerEntry)
    finally:
        await gw.stop()


@contextlib.asynccontextmanager
async def trail(store: SqliteStore, *, start: bool = True) -> AsyncIterator[AuditService]:
    """``store`` opened with an audit service on it (its writer started unless ``start`` is false)."""
    await store.open()
    audit = AuditService(store, Metrics())
    if start:
        await audit.start()
    try:
        yield audit
    finally:
        await audit.stop()  # whether started here or by the test
        await store.close()


async def reopened(path: Path) -> ChainReport:
    """The chain of the store at ``path`` checked, as a restarted gateway would."""
    async with trail(SqliteStore(str(path)), start=False) as audit:
        return await audit.verify()


class FlakyStore(SqliteStore):
    """A store whose audit writes fail until told otherwise."""

    failing = True

    async def append_audit(self, entries: Any) -> Any:
        if self.failing:
            raise StoreError("disk full")
        return await super().append_audit(entries)


async def test_records_the_store_refused_stay_queued_and_are_written_later(tmp_path: Path) -> None:
    store = FlakyStore(str(tmp_path / "gw.db"))
    await store.open()
    audit = AuditService(store, Metrics())
    await audit.start()
    try:
        audit.record(Action.DEVICE_REMOVE, NVR, actor=Actor("local", "127.0.0.1"))
        audit.record(Action.DEVICE_BAN, "10.0.0.9", {"ban": "ip:10.0.0.9"}, actor=GATEWAY)
        await audit.flush()  # returns although the store refused them
        assert audit.unwritten == 2
        store.failing = False
        await wait_for(lambda: audit.unwritten == 0, 10)
        records = await audit.query(AuditQuery())
        assert [(r.seq, r.entry.action) for r in records] == [(1, "device.remove"), (2, "device.ban")]
        assert (await audit.verify()).ok
    finally:
        await audit.stop()
        await store.close()


class BrokenStore(SqliteStore):
    """A store whose audit writes fail with an error no store should raise (a defect)."""

    failing = True

    async def append_audit(self, entries: Any) -> Any:
        if self.failing:
            raise KeyError("a defect, not a refusal")
        return await super().append_audit(entries)


async def test_a_writer_failing_with_a_defect_lives_on_and_queries_do_not_hang(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BrokenStore(str(tmp_path / "gw.db"))
    async with trail(store) as audit:
        audit.record(Action.DEVICE_REMOVE, NVR, actor=Actor("local", "127.0.0.1"))
        await asyncio.wait_for(audit.flush(), 10)  # the writer died on the old code: for ever
        assert audit.unwritten == 1
        assert any(r.getMessage() == "audit writer failed; its records stay queued" for r in caplog.records)
        store.failing = False
        audit.record(Action.DEVICE_BAN, "10.0.0.9", {"ban": "ip:10.0.0.9"}, actor=GATEWAY)
        await wait_for(lambda: audit.unwritten == 0, 10)
        records = await asyncio.wait_for(audit.query(AuditQuery()), 10)
        assert [(r.seq, r.entry.action) for r in records] == [(1, "device.remove"), (2, "device.ban")]
        store.failing = True
        audit.record(Action.DEVICE_REMOVE, NVR, actor=GATEWAY)
    # stop() at the end of trail() met the defect too: logged, not raised (the stop went on)
    assert any(r.getMessage() == "audit records left unwritten at shutdown" for r in caplog.records)


async def test_retention_removes_old_records_daily_and_keeps_the_chain_checkable(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "gw.db"))
    await store.open()
    now = [1_700_000_000.0]
    audit = AuditService(store, Metrics(), retention_days=30, clock=lambda: now[0])
    try:
        for n in range(3):
            audit.record(Action.PTZ, f"3402000000131000000{n}", actor=GATEWAY)
        await audit.flush()
        now[0] += 29 * 86_400
        assert await audit.prune() == 0
        audit.record(Action.PTZ, CH, actor=GATEWAY)
        now[0] += 2 * 86_400  # the first three are 31 days old, the last 2 days
        assert await audit.prune() == 3
        records = await audit.query(AuditQuery())
        assert [r.entry.action for r in records] == ["ptz", "audit.prune"]
        assert records[-1].entry.params == {"removed": 3, "retention_days": 30}
        report = await audit.verify()
        assert report.ok and report.anchor.seq == 3 and report.records == 2
    finally:
        await audit.stop()
        await store.close()


async def test_the_gateway_s_own_upkeep_is_not_recorded(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "gw.db")
    await store.open()
    audit = AuditService(store)
    try:
        with audited(audit, Action.DEVICE_QUERY, CH, {"query": "Catalog"}):  # after a registration
            pass
        with audited(audit, Action.DEVICE_CONTROL, CH, {"control": "IFrameCmd"}):
            pass
        with acting(Actor("local", "127.0.0.1")), audited(audit, Action.DEVICE_QUERY, CH, {"query": "Catalog"}):
            pass
        with audited(audit, Action.STREAM_CLOSE, "s1", {"cause": "no-rtp"}):  # the gateway's doing, recorded
            pass
        records = await audit.query(AuditQuery())
        assert [(r.entry.actor, r.entry.action) for r in records] == [
            ("local", "device.query"),
            ("gateway", "stream.close"),
        ]
    finally:
        await store.close()


class SlowStore(SqliteStore):
    """A store whose writes, once committed, wait on its thread until told to go on."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.writing = threading.Event()
        self.go_on = threading.Event()

    def _in_transaction(self, work: Any, what: str) -> Any:
        result = super()._in_transaction(work, what)
        self.writing.set()
        self.go_on.wait(10)
        return result


async def test_stop_while_a_batch_is_being_written_writes_it_once(tmp_path: Path) -> None:
    # the writer cancelled mid-write must not leave its batch queued for stop() to write again
    store = SlowStore(str(tmp_path / "gw.db"))
    async with trail(store, start=False) as audit:
        await audit.start()
        audit.record(Action.DEVICE_REMOVE, NVR, actor=GATEWAY)
        await asyncio.to_thread(store.writing.wait, 10)
        stopping = asyncio.ensure_future(audit.stop())
        await asyncio.sleep(0)
        store.go_on.set()
        await stopping
        assert [r.seq for r in await store.audit_chain()] == [1]
        assert audit.unwritten == 0


async def test_verify_compares_the_stored_head_hash(tmp_path: Path) -> None:
    # the last record rewritten with a hash recomputed for it: only the stored head can tell
    path = tmp_path / "gw.db"
    async with trail(SqliteStore(str(path)), start=False) as audit:
        audit.record(Action.PTZ, CH, {"ptz": "left"}, actor=GATEWAY)
        audit.record(Action.PTZ, CH, {"ptz": "right"}, actor=GATEWAY)
        await audit.flush()
        (first, last) = await audit.store.audit_chain()
    forged = AuditEntry(last.entry.time, last.entry.actor, "", "ptz", CH, {"ptz": "up"})
    from gb28181gw.audit import chain_hash

    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE audit SET params = ?, hash = ? WHERE seq = 2", ('{"ptz": "up"}', chain_hash(first.hash, 2, forged))
        )
    report = await reopened(path)
    assert [p.seq for p in report.problems] == [2] and "head" in report.problems[0].problem
    assert report.head_hash == last.hash  # the head as stored, not as the records now say


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from gb28181gw.cli.audit import _write_csv

    row = {
        "seq": 1, "time": 1_700_000_000.0, "actor": "superior:34020000002000000001", "source": "10.0.0.1:5060",
        "action": "ptz", "target": "=HYPERLINK(\"http://x\")", "result": "failed", "params": {"名": "左,转\n"},
        "detail": "@SUM(1+1)", "hash": "ab",
    }  # fmt: skip
    _write_csv([row, {**row, "target": "+1", "detail": "-2"}, {**row, "target": "\tx", "detail": "ok"}])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["target"], r["detail"]) for r in rows] == [
        ("'=HYPERLINK(\"http://x\")", "'@SUM(1+1)"), ("'+1", "'-2"), ("'\tx", "ok")
    ]  # fmt: skip
    assert json.loads(rows[0]["params"]) == {"名": "左,转\n"}


def test_verify_waits_for_the_whole_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import gb28181gw.cli.audit as cli_audit
    from gb28181gw.cli.common import main

    asked: list[Any] = []
    report = {
        "ok": True,
        "records": 0,
        "anchor": {"seq": 0, "hash": "0"},
        "head": {"seq": 0, "hash": "0"},
        "problems": [],
    }

    def request(admin: str, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        asked.append(kw)
        return report

    monkeypatch.setattr(cli_audit, "request", request)
    result = CliRunner().invoke(main, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert asked == [{"timeout": None}]  # not the 30 s query timeout: a million records take longer


@pytest.mark.sipp
async def test_a_key_frame_asked_for_a_joining_viewer_is_not_recorded_in_anyone_s_name(tmp_path: Path) -> None:
    # the gateway's upkeep, though a viewer's join (in the viewer's context) set it off: recorded as
    # that viewer's device control it would put words in their mouth and bury what they did ask
    from .test_relay_join import FRAMES, GOP, feed, gateway

    data = gb_ps(FRAMES, GOP)
    gw, device = await gateway(tmp_path, **{"media.workers": "0", "media.gop_cache": "0"})
    sent: list[object] = []

    async def control(device_id: str, target: str, fields: object) -> None:  # the SIPp device does not answer
        sent.append(fields)

    gw.devices.control = control  # type: ignore[method-assign]
    udp = await UdpConsumer.start()
    device_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with acting(Actor.token("alice", "10.0.0.5")):
            st, _ = await gw.streams.play(CH_JOIN, transport="udp", host="127.0.0.1", port=udp.port)
        await feed(st, packetize(data, int(st.session.ssrc))[:30], device_media)
        await wait_for(lambda: len(udp.got.packets) == 30)
        with acting(Actor.token("bob", "10.0.0.6")):
            await gw.streams.play(CH_JOIN, transport="udp", host="127.0.0.1", port=udp.port)
        await wait_for(lambda: sent != [])
        await asyncio.sleep(0)  # the control's record is made as it returns
        entries = await recorded(gw)
        assert [(e.actor, e.action) for e in entries] == [("token:alice", "stream.open"), ("token:bob", "stream.open")]
    finally:
        device_media.close()
        udp.close()
        await gw.stop()
        await finished(device)


async def test_verify_finds_the_anchor_moved_over_records_still_there(tmp_path: Path) -> None:
    # the anchor moved by hand onto record 2 would leave records 1 and 2 unchecked: free to alter
    path = tmp_path / "gw.db"
    async with trail(SqliteStore(str(path)), start=False) as audit:
        for n in range(4):
            audit.record(Action.PTZ, CH, {"n": n}, actor=GATEWAY)
        await audit.flush()
        second = (await audit.store.audit_chain())[1]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE audit_chain SET anchor_seq = 2, anchor_hash = ?", (second.hash,))
        db.execute("""UPDATE audit SET params = '{"n": 9}' WHERE seq = 1""")
    report = await reopened(path)
    assert [(p.seq, p.problem) for p in report.problems] == [
        (1, "records 1 to 2 are kept behind the chain's anchor (record 2): the anchor was moved by hand")
    ]


async def test_text_the_store_cannot_hold_does_not_block_the_trail(tmp_path: Path) -> None:
    # a lone surrogate that is no device byte (JSON's "\ud800" in an admin API body) cannot be
    # stored: retried forever, it held every later record back until they were dropped
    path = tmp_path / "gw.db"
    async with trail(SqliteStore(str(path))) as audit:
        with acting(Actor.token("ops\ud800", "10.0.0.5")):
            audit.record(
                Action.LEDGER_EDIT, CH + "\udfff", {"name\ud800": "门\ud800", "raw": "\udcff"}, detail="x\ud800"
            )
        audit.record(Action.PTZ, CH, actor=GATEWAY)
        await audit.flush()
        assert audit.unwritten == 0
        first, second = await audit.query(AuditQuery())
        assert (first.entry.actor, first.entry.target, first.entry.detail) == (
            "token:ops\ufffd",
            CH + "\ufffd",
            "x\ufffd",
        )
        assert first.entry.params == {"name\ufffd": "门\ufffd", "raw": "\udcff"}  # a device's byte is kept as it is
        assert second.entry.action == "ptz"
    assert (await reopened(path)).ok


class PickyStore(SqliteStore):
    """A store that refuses one record (not for its text: a value of a kind it cannot hold)."""

    async def append_audit(self, entries: Any) -> Any:
        if any(e.target == "refused" for e in entries):
            raise StoreRecordError("cannot hold it")
        return await super().append_audit(entries)


async def test_a_record_the_store_refuses_is_left_out_and_the_rest_written(tmp_path: Path) -> None:
    async with trail(PickyStore(str(tmp_path / "gw.db"))) as audit:
        for target in ("a", "refused", "b"):
            audit.record(Action.PTZ, target, actor=GATEWAY)
        await audit.flush()
        assert [r.entry.target for r in await audit.query(AuditQuery())] == ["a", "b"]
        assert audit.unwritten == 0 and audit.unstorable == 1


@pytest.mark.sipp
async def test_a_stream_closed_by_the_gateway_names_the_gateway(tmp_path: Path) -> None:
    # opened and left by alice; its linger ends it: the gateway's doing, not the last one to leave
    from .test_relay_join import gateway

    gw, device = await gateway(tmp_path, **{"media.workers": "0", "media.linger": "0.05"})
    udp = await UdpConsumer.start()
    try:
        with acting(Actor.token("alice", "10.0.0.5")):
            st, consumer = await gw.streams.play(CH_JOIN, transport="udp", host="127.0.0.1", port=udp.port)
            await gw.streams.remove_consumer(st.id, consumer.id)
        await wait_for(lambda: st.id not in gw.streams.streams)
        entries = await recorded(gw, action="stream.")
        assert [(e.actor, e.action, e.params.get("cause")) for e in entries] == [
            ("token:alice", "stream.open", None),
            ("token:alice", "stream.close", None),  # her consumer
            ("gateway", "stream.close", "no-consumers"),
        ]
    finally:
        udp.close()
        await gw.stop()
        await finished(device)


class BusyStore(SqliteStore):
    """A store during whose every write another action is recorded (a gateway under load)."""

    audit: AuditService
    writes = 0

    async def append_audit(self, entries: Any) -> Any:
        self.writes += 1
        if self.writes < 200:
            self.audit.record(Action.DEVICE_QUERY, CH, {"n": self.writes}, actor=Actor("superior:x"))
        return await super().append_audit(entries)


async def test_a_listing_waits_for_what_was_recorded_before_it_not_for_a_quiet_moment(tmp_path: Path) -> None:
    # flush() waited for an empty queue: under a steady flow of records, GET /audit waited on and on
    store = BusyStore(str(tmp_path / "gw.db"))
    async with trail(store, start=False) as audit:
        store.audit = audit
        await audit.start()
        audit.record(Action.PTZ, CH, actor=GATEWAY)
        records = await audit.query(AuditQuery())
        assert records[0].entry.action == "ptz"
        assert store.writes < 10  # not the 200 writes it took the flow to stop
