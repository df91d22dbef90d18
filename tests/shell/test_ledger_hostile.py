"""Hostile review of the ledger's storage, editing and import (issue 14 items 1, 2, "Bad input"):
edits racing each other, merged cells below the header, a duplicate ID, digits that are not ASCII."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.error
import urllib.request
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openpyxl
import pytest

from gb28181gw.cli import ledger as ledger_cli
from gb28181gw.cli.ledger import read_ledger_file
from gb28181gw.config import Config
from gb28181gw.errors import StoreError
from gb28181gw.gb.ledger_file import read_table
from gb28181gw.gb.model import Channel, Device
from gb28181gw.services import forms as forms_service
from gb28181gw.services.ledger import Edit, LedgerService
from gb28181gw.store.sqlite import SqliteStore

from .conftest import start_gateway

NVR = "34020000001110000001"
CH1, CH2, CH3 = (f"3402000000131000000{n}" for n in (1, 2, 3))


class SlowStore(SqliteStore):
    """A real store whose writes take a while, so edits overlap as they do under load."""

    async def save_ledger(self, entries: Any) -> None:
        await asyncio.sleep(0.05)
        await super().save_ledger(entries)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    store = SlowStore(tmp_path / "gw.db")
    await store.open()
    channels = {c: Channel(c, NVR, name=f"camera {c[-1]}") for c in (CH1, CH2, CH3)}
    registrar: Any = SimpleNamespace(devices={NVR: Device(device_id=NVR)})
    devices: Any = SimpleNamespace(
        channels={NVR: channels}, owner_of=lambda i: NVR if i == NVR or i in channels else None
    )
    service = LedgerService(Config(), registrar, devices, store)
    await service.start()
    try:
        yield service
    finally:
        await service.store.close()


async def test_two_edits_of_one_camera_at_once_both_stay(ledger: LedgerService) -> None:
    # an operator's `ledger set` while an import runs: each writes a different field of one camera
    await asyncio.gather(ledger.edit(CH1, {"location": "北门岗亭"}), ledger.edit(CH1, {"police_station": "城东派出所"}))
    want = {"location": "北门岗亭", "police_station": "城东派出所"}
    assert dict(ledger.entry(CH1).values) == want
    assert {e.id: dict(e.values) for e in await ledger.store.load_ledger()} == {CH1: want}


async def test_an_import_racing_an_edit_loses_neither(ledger: LedgerService) -> None:
    rows = [Edit(c, {"brand": "海康威视"}, n) for n, c in enumerate((CH1, CH2, CH3), 2)]
    await asyncio.gather(ledger.apply(rows), ledger.edit(CH2, {"remarks": "新装"}))
    stored = {e.id: dict(e.values) for e in await ledger.store.load_ledger()}
    assert stored[CH2] == {"brand": "海康威视", "remarks": "新装"}
    assert {k: dict(v.values) for k, v in ledger.entries.items()} == stored


def test_a_cell_merged_down_a_column_fills_every_row_it_spans(tmp_path: Path) -> None:
    # police bureaus merge 所属派出所 over the cameras of one station: every one of them has it, as seen
    book = openpyxl.Workbook()
    ws = book.active
    assert ws is not None
    ws.append(["XX区视频监控点位调研表"])
    ws.merge_cells("A1:D1")
    ws.append(["20位编码", "所属派出所", "备注", "品牌"])
    ws.append([CH1, "城东派出所", "同一立杆", None])
    ws.append([CH2, None, None, None])
    ws.append([CH3, None, None, None])
    ws.merge_cells("B3:B5")
    ws.merge_cells("C3:D4")  # across and down: the value is the first column's, not 品牌's
    book.save(tmp_path / "merged.xlsx")
    rows = read_ledger_file(tmp_path / "merged.xlsx").table.rows
    assert [(r.id, r.values) for r in rows] == [
        (CH1, {"police_station": "城东派出所", "remarks": "同一立杆"}),
        (CH2, {"police_station": "城东派出所", "remarks": "同一立杆"}),
        (CH3, {"police_station": "城东派出所"}),
    ]


def test_an_xlsx_that_unpacks_to_more_than_a_ledger_is_refused_before_it_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a zip bomb, or a sheet with a million formatted empty rows: openpyxl would build every cell in
    # memory (a 28 MB file took more than 3 GB) before any row count could refuse it
    book = openpyxl.Workbook()
    ws = book.active
    assert ws is not None
    ws.append(["20位编码", "安装位置"])
    ws.append([CH1, "北门"])
    book.save(tmp_path / "small.xlsx")
    assert read_ledger_file(tmp_path / "small.xlsx").table.rows  # a ledger is read
    with zipfile.ZipFile(tmp_path / "small.xlsx") as z, zipfile.ZipFile(tmp_path / "bomb.xlsx", "w") as out:
        for item in z.infolist():
            data = z.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"</sheetData>", b" " * 3_000_000 + b"</sheetData>")
            out.writestr(item.filename, data, zipfile.ZIP_DEFLATED)
    assert (tmp_path / "bomb.xlsx").stat().st_size < 100_000
    monkeypatch.setattr(ledger_cli, "MAX_XLSX_UNPACKED", 2_000_000)
    loaded: list[object] = []
    monkeypatch.setattr(openpyxl, "load_workbook", lambda *a, **k: loaded.append(a))
    with pytest.raises(SystemExit) as exit_:
        read_ledger_file(tmp_path / "bomb.xlsx")
    assert exit_.value.code == 1 and loaded == []
    err = " ".join(capsys.readouterr().err.split())
    assert "bomb.xlsx unpacks to 3.0 MB, more than a ledger (at most 2.0 MB)" in err
    assert "delete the empty rows below the table" in err


def test_a_cut_off_xlsx_is_an_error_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # half a download, a mail attachment cut short: it starts as a zip and is not one
    book = openpyxl.Workbook()
    book.save(tmp_path / "whole.xlsx")
    (tmp_path / "cut.xlsx").write_bytes((tmp_path / "whole.xlsx").read_bytes()[:3000])
    with pytest.raises(SystemExit) as exit_:
        read_ledger_file(tmp_path / "cut.xlsx")
    assert exit_.value.code == 1
    assert "cut.xlsx is not an XLSX workbook (a damaged or cut-off zip file" in " ".join(
        capsys.readouterr().err.split()
    )


@pytest.mark.parametrize("value", ["-1F停车场", "=HYPERLINK(1)", "+86 0551 1234567", "@北门"])
def test_a_value_the_csv_export_guarded_against_excel_reads_back_as_it_was(value: str) -> None:
    # the CSV export writes '-1F停车场 so Excel keeps it text; reading the file back must not keep the '
    exported = forms_service._csv_cell(value)
    assert exported == "'" + value
    t = read_table([(1, ["20位编码", "安装位置"]), (2, [CH1, exported])])
    assert [r.values for r in t.rows] == [{"location": value}]


async def test_a_store_failing_mid_import_leaves_memory_as_the_disk_is(
    ledger: LedgerService, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await ledger.edit(CH1, {"location": "北门岗亭"})

    async def disk_full(entries: Any) -> None:
        raise StoreError("database or disk is full")

    monkeypatch.setattr(ledger.store, "save_ledger", disk_full)
    rows = [Edit(CH1, {"location": "南门"}, 2), Edit(CH2, {"brand": "大华"}, 3)]
    with pytest.raises(StoreError):
        await ledger.apply(rows)
    monkeypatch.undo()
    assert {k: dict(v.values) for k, v in ledger.entries.items()} == {CH1: {"location": "北门岗亭"}}
    # and a gateway started again on that file finds the same
    await ledger.store.close()
    again = SqliteStore(tmp_path / "gw.db")
    await again.open()
    try:
        assert {e.id: dict(e.values) for e in await again.load_ledger()} == {CH1: {"location": "北门岗亭"}}
    finally:
        await again.close()
    ledger.store = SlowStore(tmp_path / "gw.db")
    await ledger.store.open()


def test_a_second_sheet_with_ids_is_named_not_silently_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = openpyxl.Workbook()
    first = book.active
    assert first is not None
    first.title = "说明"
    first.append(["填表说明：每路摄像机一行"])
    for name, camera in (("城东", CH1), ("城西", CH2), ("城南", CH3)):
        ws = book.create_sheet(name)
        ws.append(["20位编码", "安装位置"])
        ws.append([camera, f"{name}路口"])
    book.save(tmp_path / "streets.xlsx")
    read = read_ledger_file(tmp_path / "streets.xlsx")
    assert read.sheet == "城东" and [r.id for r in read.table.rows] == [CH1]
    err = " ".join(capsys.readouterr().err.split())
    assert "only sheet 城东 is read; 城西, 城南 also have an ID column: import each with --sheet NAME" in err
    read_ledger_file(tmp_path / "streets.xlsx", sheet="城西")
    assert capsys.readouterr().err == ""  # the sheet asked for: nothing to warn of


async def test_a_store_that_cannot_be_written_is_said_so_not_called_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await start_gateway(**{"store.path": str(tmp_path / "gw.db")})
    try:
        own = gw.ledger.platform_id

        async def disk_full(entries: Any) -> None:
            raise StoreError("writing 1 ledger entries: database or disk is full")

        monkeypatch.setattr(gw.store, "save_ledger", disk_full)
        body = {"rows": [{"line": 2, "id": own, "values": {"vendor": "某厂"}}]}
        for method, path, sent in (
            ("PATCH", f"/ledger/{own}", {"fields": {"vendor": "某厂"}}),
            ("POST", "/ledger/import", body),
        ):
            status, answer = await asyncio.to_thread(admin_call, gw, method, path, sent)
            assert status == 503, answer
            assert "database or disk is full" in answer["error"] and "nothing was changed" in answer["error"]
        assert gw.ledger.entries == {}
    finally:
        await gw.stop()


def admin_call(gw: Any, method: str, path: str, body: object) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{gw.admin.port}/api/v1{path}",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_a_large_import_does_not_hold_the_event_loop(tmp_path: Path) -> None:
    # keepalives, registrations and relayed media share the loop: 20,000 rows held it over a second in one piece
    ids = [f"3402000000131{n:07d}" for n in range(20_000)]
    channels = {i: Channel(i, NVR, f"通道{n}") for n, i in enumerate(ids)}
    registrar: Any = SimpleNamespace(devices={NVR: Device(device_id=NVR)})
    devices: Any = SimpleNamespace(channels={NVR: channels}, owner_of=lambda i: NVR if i in channels else None)
    store = SqliteStore(tmp_path / "gw.db")
    await store.open()
    try:
        ledger = LedgerService(Config(), registrar, devices, store)
        edits = [
            Edit(i, {"location": f"位置{n}", "built": "2020.03", "longitude": "118.376451"}, n + 2)
            for n, i in enumerate(ids)
        ]
        turns = 0

        async def probe() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        prober = asyncio.create_task(probe())
        await asyncio.sleep(0)
        result = await ledger.apply(edits)
        prober.cancel()
        assert result.applied and len(result.changes) == 60_000
        # let run at least once every 500 rows (how long it waits is benchmarks/bench_ledger.py's to measure)
        assert turns >= len(edits) // 500, turns
    finally:
        await store.close()


@pytest.mark.parametrize(
    "number_format",
    ['[DBNum1][$-804]yyyy"年"m"月"', "[$-zh-CN]yyyy.mm;[Red]@", '"date: "yyyy.mm', "yyyy-mm"],
)
def test_a_date_shown_to_the_month_is_read_to_the_month_whatever_its_format_says_besides(number_format: str) -> None:
    # WPS's Chinese-numeral month (二〇二〇年三月) is [DBNum1]: its d is not a day
    assert ledger_cli.cell_text(dt.datetime(2020, 3, 1), number_format) == "2020-03"
