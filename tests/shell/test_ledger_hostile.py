"""Hostile review of the ledger's storage, editing and import (issue 14 items 1, 2, "Bad input"):
edits racing each other, merged cells below the header, a duplicate ID, digits that are not ASCII."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openpyxl
import pytest

from gb28181gw.cli.ledger import read_ledger_file
from gb28181gw.config import Config
from gb28181gw.gb.model import Channel, Device
from gb28181gw.services.ledger import Edit, LedgerService
from gb28181gw.store.sqlite import SqliteStore

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
        await store.close()


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
