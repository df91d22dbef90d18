"""The ledger edited by hand and imported from files (issue 14 items 1, 2 and "Bad input"): the real
``gb28181gw ledger`` commands as processes against a gateway whose NVR SIPp registered and whose
channels came in a GB2312 Catalog."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from gb28181gw.app import Gateway
from gb28181gw.cli.ledger import cell_text
from gb28181gw.gb.model import Channel

from .conftest import start_gateway
from .test_cascade_catalog import cli
from .test_devices import (
    CH1,
    CH2,
    NVR,
    catalog_body,
    device_scenario,
    finished,
    free_udp_port,
    play_device,
    register,
    response_message,
)

pytestmark = pytest.mark.sipp

UNKNOWN = "34020000001310000099"


async def run(gw: Gateway, *args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
    done = await asyncio.to_thread(cli, gw, *args)
    if code is not None:
        assert done.returncode == code, (done.stdout, done.stderr)
    return done


def post(gw: Gateway, path: str, body: bytes) -> tuple[int, Any]:
    assert gw.admin is not None
    req = urllib.request.Request(
        f"http://127.0.0.1:{gw.admin.port}/api/v1{path}", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def stored(gw: Gateway) -> dict[str, dict[str, str]]:
    """The ledger as the store holds it (not the service's memory)."""
    return {e.id: dict(e.values) for e in await gw.store.load_ledger()}


async def start_site(tmp_path: Path) -> Gateway:
    """A gateway with the NVR registered by SIPp and its two channels from a GB2312 Catalog."""
    gw = await start_gateway(**{"store.path": str(tmp_path / "gw.db")})
    try:
        port = free_udp_port()
        await register(gw, tmp_path, port)
        parts = [
            response_message(31, catalog_body("GB2312", "[$sn]", CH1, "大门口")),
            response_message(32, catalog_body("GB2312", "[$sn]", CH2, "停车场入口")),
        ]
        proc = await play_device(device_scenario(parts).encode("gb2312"), port, tmp_path, "catalog")
        assert (await gw.devices.catalog(NVR)).complete
        await finished(proc)
    except BaseException:
        await gw.stop()
        raise
    return gw


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = await start_site(tmp_path)
    try:
        yield gw
    finally:
        await gw.stop()


class TestImportFiles:
    async def test_csv_in_every_encoding_excel_writes(self, site: Gateway, tmp_path: Path) -> None:
        cases = [
            ("utf-8", ",", "UTF-8", "北门岗亭"),
            ("utf-8-sig", ",", "UTF-8 with BOM", "南门岗亭"),
            ("gbk", ",", "GB18030", "东门岗亭"),
            ("gb18030", "\t", "GB18030", "西门岗亭"),
            ("utf-16", "\t", "UTF-16", "中门岗亭"),
        ]
        previous = "(empty)"
        for encoding, sep, said, place in cases:
            f = tmp_path / f"ledger-{encoding}.csv"
            text = sep.join(["序号", "国标编码", "安装位置", "所属派出所", "建设时间"]) + "\r\n"
            text += sep.join(["1", CH1, place, "城东派出所", "2020.03"]) + "\r\n"
            f.write_bytes(text.encode(encoding))
            done = await run(site, "ledger", "import", str(f))
            assert f"({'CSV, ' + said}" in done.stderr and ("tab" if sep == "\t" else "comma") in done.stderr
            assert f"location: {previous} → {place}" in done.stdout  # 序号 is known: no problem
            assert done.stdout.splitlines()[-1].startswith("1 row read, 0 problems;")
            previous = place
            entry = (await stored(site))[CH1]
            assert entry["location"] == place and entry["police_station"] == "城东派出所"
            assert entry["built"] == "2020-03"

    async def test_xlsx_dates_numbers_and_the_sheet_with_the_ids(self, site: Gateway, tmp_path: Path) -> None:
        book = openpyxl.Workbook()
        notes = book.active
        assert notes is not None
        notes.title = "说明"
        notes["A1"] = "填表说明：经度纬度保留6位小数"
        ws = book.create_sheet("摄像机")
        ws["A1"] = "XX市视频监控整合接入清单"
        ws.merge_cells("A1:F1")  # a merged title row above the header is no problem
        ws.append(["20位编码", "名称", "经度", "纬度", "建设时间", "是否以租代建"])
        ws.append([CH1, "北门", 118.376451, 31.123457, dt.datetime(2020, 3, 1), True])
        ws.append([CH2, "南门", 118.37645, 31.123456, dt.datetime(2021, 5, 17), False])
        ws.append([3.4020000001310003e19, "丢了位数", None, None, None, None])
        ws["E3"].number_format = "yyyy.mm"  # shows 2020.03: the day was never given
        ws["C4"].number_format = "0.000000"  # shows 118.376450: a padded 6th decimal
        path = tmp_path / "ledger.xlsx"
        book.save(path)
        done = await run(site, "ledger", "import", str(path), code=1)
        assert "XLSX, sheet 摄像机" in done.stderr and "header on line 2" in done.stderr
        assert done.stdout.splitlines()[:2] == [
            "line 4, column C (经度): longitude 118.376450: its 6th decimal is 0 (padded); give the position to the metre",
            "line 5, column A (20位编码): '3.402000000131E+19': a spreadsheet turned this ID into a number and "
            "lost its digits; format the column as Text and enter the IDs again",
        ]
        entry = (await stored(site))[CH1]
        assert entry == {
            "name": "北门", "longitude": "118.376451", "latitude": "31.123457", "built": "2020-03", "leased": "yes",
        }  # fmt: skip
        assert CH2 not in await stored(site)  # its bad longitude left the whole row out
        # the first sheet has no ID column; --sheet names one that has none: nothing to read
        done = await run(site, "ledger", "import", str(path), "--sheet", "说明", code=1)
        assert "no ID column in the first 10 rows" in done.stdout
        done = await run(site, "ledger", "import", str(path), "--sheet", "没有", code=2)
        assert "没有" in done.stderr and "说明, 摄像机" in done.stderr

    async def test_xlsx_with_merged_header_cells_is_refused_naming_them(self, site: Gateway, tmp_path: Path) -> None:
        book = openpyxl.Workbook()
        ws = book.active
        assert ws is not None
        ws.append(["20位编码", "位置", None, "品牌"])
        ws.append([None, "安装位置", "所属派出所", None])
        ws.append([CH1, "北门", "城东派出所", "海康"])
        ws.merge_cells("B1:C1")
        ws.merge_cells("A1:A2")
        path = tmp_path / "merged.xlsx"
        book.save(path)
        done = await run(site, "ledger", "import", str(path), code=1)
        assert "the header (row 1) has merged cells A1:A2, B1:C1" in done.stderr and "unmerge" in done.stderr
        assert await stored(site) == {}

    async def test_not_a_ledger_file(self, site: Gateway, tmp_path: Path) -> None:
        xls = tmp_path / "old.xls"
        xls.write_bytes(b"\xd0\xcf\x11\xe0" + bytes(100))
        assert ".xls" in (await run(site, "ledger", "import", str(xls), code=1)).stderr
        junk = tmp_path / "junk.csv"
        junk.write_bytes(b"20\xe4\xbd,\x81\x20\xff")
        assert "neither UTF-8 nor GBK" in (await run(site, "ledger", "import", str(junk), code=1)).stderr


BAD_FILE = "\r\n".join(
    [
        "单位：XX小区,,,,,,",
        "20位编码,名称,经度,纬度,建设时间,状态,颜色",
        f"{CH1},北门,118.376451,31.123457,2020.03,在用,红",  # 3: good (颜色 reported once, on the header)
        ",北门二,118.376451,31.123457,2020.03,在用,",  # 4: no ID
        f"{UNKNOWN},不存在,118.376451,31.123457,2020.03,在用,",  # 5: not in the gateway
        f"{CH2},南门,118.37645,31.123457,2020.03,在用,",  # 6: 5 decimals
        ",,,,,,",  # 7: blank, skipped
        f"{CH2},南门,118.376451,31.123450,2020.03,在用,",  # 8: … but CH2 is line 6 already: neither is read
        f"{NVR},录像机,118.37645,,2020.13,在用,",  # 9: 5 decimals, a month that does not exist
        "3.402E+19,丢了,,,,,",  # 10: Excel's number
        f"{NVR},录像机,,,,在用,,多余",  # 11: more cells than the header (and NVR on line 9)
    ]
)


class TestBadInput:
    async def test_every_bad_row_is_reported_with_its_line_and_the_good_ones_applied(
        self, site: Gateway, tmp_path: Path
    ) -> None:
        f = tmp_path / "bad.csv"
        f.write_text(BAD_FILE, encoding="gbk")
        done = await run(site, "ledger", "import", str(f), code=1)
        lines = done.stdout.splitlines()
        assert lines[:8] == [
            "line 2, column G (颜色): column G (颜色) names no ledger field and is not imported: rename it "
            "(`gb28181gw ledger set --help` lists the fields) or delete it",
            "line 4, column A (20位编码): no ID: the ID column is empty on this row",
            f"line 5: {UNKNOWN} is not a channel or device of this gateway",
            f"line 8, column A (20位编码): {CH2} is also on line 6: which row is meant cannot be told; neither is "
            "applied",
            "line 9, column C (经度): longitude 118.37645 has 5 decimals; at least 6 are required",
            "line 9, column E (建设时间): '2020.13': month 13 does not exist",
            "line 10, column A (20位编码): '3.402E+19': a spreadsheet turned this ID into a number and lost its "
            "digits; format the column as Text and enter the IDs again",
            "line 11, column H: column H holds '多余' but has no title in the header (line 2); give the column a "
            "title or delete the value",
        ]
        # rows read: those sent to the gateway (3, 5, 9); it found 5 and 9 wrong
        assert lines[-1] == "3 rows read, 8 problems; 5 fields of 1 entry changed"
        # only the good row: nothing of a bad row, not even its good values (NVR's state)
        assert await stored(site) == {
            CH1: {"name": "北门", "longitude": "118.376451", "latitude": "31.123457", "built": "2020-03",
                  "state": "active"},
        }  # fmt: skip

    async def test_strict_applies_nothing(self, site: Gateway, tmp_path: Path) -> None:
        f = tmp_path / "bad.csv"
        f.write_text(BAD_FILE, encoding="utf-8")
        done = await run(site, "ledger", "import", str(f), "--strict", code=1)
        assert done.stdout.splitlines()[-1].endswith("8 problems; --strict: nothing applied")
        assert "would change:" in done.stdout  # what the good row would have done
        assert await stored(site) == {} and site.ledger.entries == {}
        # a file whose only problem is an unknown column is refused whole too
        f.write_text(f"20位编码,颜色,安装位置\r\n{CH1},红,北门\r\n", encoding="utf-8")
        done = await run(site, "ledger", "import", str(f), "--strict", code=1)
        assert "颜色" in done.stdout and await stored(site) == {}
        # the gateway's own problems under strict: 422 with the problems, nothing applied
        f.write_text(f"20位编码,安装位置\r\n{CH1},北门\r\n{UNKNOWN},南门\r\n", encoding="utf-8")
        done = await run(site, "ledger", "import", str(f), "--strict", "--json", code=1)
        answer = json.loads(done.stdout)
        assert answer["applied"] is False and [p["line"] for p in answer["problems"]] == [3]
        assert answer["changes"] == [{"id": CH1, "field": "location", "old": "", "new": "北门"}]
        assert await stored(site) == {}

    async def test_missing_id_column(self, site: Gateway, tmp_path: Path) -> None:
        f = tmp_path / "noid.csv"
        f.write_text("名称,安装位置\r\n北门,北门岗亭\r\n", encoding="utf-8")
        done = await run(site, "ledger", "import", str(f), code=1)
        assert done.stdout.startswith("line 1: no ID column in the first 10 rows")
        assert "0 rows read, 1 problem; nothing changed" in done.stdout

    async def test_dry_run_changes_nothing(self, site: Gateway, tmp_path: Path) -> None:
        await run(site, "ledger", "set", CH1, "--location", "旧位置")
        before = await stored(site)
        f = tmp_path / "ledger.csv"
        f.write_text(f"20位编码,安装位置,备注\r\n{CH1},新位置,（清空）\r\n{CH2},南门,有遮挡\r\n", encoding="utf-8")
        done = await run(site, "ledger", "import", str(f), "--dry-run")
        assert done.stdout.splitlines() == [
            "would change:",
            f"  {CH1}  location: 旧位置 → 新位置",
            f"  {CH2}  location: (empty) → 南门",
            f"  {CH2}  remarks: (empty) → 有遮挡",
            "2 rows read, 0 problems; dry run: 3 fields of 2 entries would change",
        ]
        assert await stored(site) == before and site.ledger.entry(CH1).values == before[CH1]
        done = await run(site, "ledger", "import", str(f))
        assert (await stored(site))[CH1] == {"location": "新位置"}  # （清空） of an empty remark: no change
        again = await run(site, "ledger", "import", str(f))
        assert again.stdout.splitlines()[-1] == "2 rows read, 0 problems; nothing changed"

    async def test_the_api_refuses_malformed_bodies(self, site: Gateway) -> None:
        for body, says in [
            (b"[]", "the body must be JSON"),
            (b'{"rows": 1}', '"rows" must be a list'),
            (b'{"rows": [{"id": 5}]}', "rows[0] is not"),
            (b'{"rows": [{"id": "x", "values": {"name": 1}}]}', "rows[0] is not"),
            (b'{"rows": [{"id": "x", "line": -1}]}', "rows[0] is not"),
            (b'{"rows": [], "strict": "yes"}', '"strict" must be true or false'),
        ]:
            status, answer = await asyncio.to_thread(post, site, "/ledger/import", body)
            assert status == 400 and says in answer["error"], answer
        status, answer = await asyncio.to_thread(
            post, site, "/ledger/import", json.dumps({"rows": [{"id": UNKNOWN, "values": {}}], "strict": True}).encode()
        )
        assert status == 422 and answer["applied"] is False and "nothing was applied" in answer["error"]
        assert answer["problems"] == [
            {"line": 0, "id": UNKNOWN, "field": "", "reason": f"{UNKNOWN} is not a channel or device of this gateway"}
        ]


class TestEditByHand:
    async def test_set_show_list_round_trip(self, site: Gateway) -> None:
        done = await run(
            site, "ledger", "set", CH1, "--location", "北门岗亭", "--built", "2020/3", "--police-station",
            "城东派出所", "--leased", "是", "--state", "在用",
        )  # fmt: skip
        assert done.stdout.splitlines() == [
            "location: (empty) → 北门岗亭",
            "police_station: (empty) → 城东派出所",
            "built: (empty) → 2020-03",
            "leased: (empty) → 是",
            "state: (empty) → 在用",
            f"{CH1}: 5 fields changed",
        ]
        shown = json.loads((await run(site, "ledger", "show", CH1, "--json")).stdout)
        assert shown["fields"]["leased"] == "yes" and shown["row"]["name"] == "大门口"  # the device's own name
        table = {
            r.split("\t")[0]: r.split("\t")[1:] for r in (await run(site, "ledger", "show", CH1)).stdout.splitlines()
        }
        assert table["location"] == ["安装位置", "北门岗亭", "ledger"]
        assert table["name"] == ["名称", "大门口", "device"] and table["brand"] == ["品牌", "Vendor", "device"]
        assert table["leased"] == ["是否以租代建", "是", "ledger"] and table["remarks"] == ["备注", "-", "-"]
        listed = (await run(site, "ledger", "list")).stdout.splitlines()
        assert listed[0].split("\t")[:3] == ["ID", "name", "location"]
        assert [row.split("\t")[:3] for row in listed[1:]] == [[CH1, "大门口", "北门岗亭"], [CH2, "停车场入口", "-"]]
        devices = json.loads((await run(site, "ledger", "list", "--kind", "all", "--json")).stdout)
        assert [(e["id"], e["kind"]) for e in devices] == [
            (site.config.gateway.id, "platform"), (NVR, "device"), (CH1, "channel"), (CH2, "channel"),
        ]  # fmt: skip
        one = json.loads((await run(site, "ledger", "list", "--device", NVR, "--json")).stdout)
        assert [e["id"] for e in one] == [CH1, CH2]
        await run(site, "ledger", "list", "--device", UNKNOWN, code=1)
        done = await run(site, "ledger", "set", CH1, "--clear", "安装位置", "--clear", "police_station")
        assert done.stdout.splitlines()[-1] == f"{CH1}: 2 fields changed"
        assert (await stored(site))[CH1] == {"built": "2020-03", "leased": "yes", "state": "active"}

    async def test_set_refuses_what_it_cannot_read(self, site: Gateway) -> None:
        done = await run(site, "ledger", "set", CH1, "--longitude", "118.37645", code=1)
        assert "5 decimals" in done.stderr
        assert (await run(site, "ledger", "set", CH1, code=2)).stderr.count("nothing to set") == 1
        assert "is not a ledger field" in (await run(site, "ledger", "set", CH1, "--clear", "颜色", code=2)).stderr
        assert (
            "both set and cleared"
            in (await run(site, "ledger", "set", CH1, "--brand", "x", "--clear", "brand", code=2)).stderr
        )
        assert (
            "is not a channel or device" in (await run(site, "ledger", "set", UNKNOWN, "--brand", "x", code=1)).stderr
        )
        assert await stored(site) == {}

    async def test_the_ledger_survives_a_restart(self, tmp_path: Path) -> None:
        f = tmp_path / "ledger.csv"
        f.write_text(f"通道编码,安装位置,经度\r\n{CH2},停车场,118.376451\r\n", encoding="utf-8-sig")
        site = await start_site(tmp_path)
        try:
            await run(site, "ledger", "import", str(f))
        finally:
            await site.stop()
        again = await start_gateway(**{"store.path": str(tmp_path / "gw.db")})
        try:
            assert again.ledger.entry(CH2).values == {"location": "停车场", "longitude": "118.376451"}
            shown = json.loads((await run(again, "ledger", "show", CH2, "--json")).stdout)
            assert shown["row"]["location"] == "停车场" and shown["row"]["name"] == "停车场入口"
        finally:
            await again.stop()


async def test_an_entry_whose_channel_is_gone_is_kept_listed_as_orphaned_and_removable(site: Gateway) -> None:
    # an NVR renumbers its channels when a camera is re-added (PROTOCOL.md §11.4 C11): the integrator's
    # entry of the old ID is not lost with the channel, and can be found and forgotten
    await run(site, "ledger", "set", CH2, "--location", "停车场", "--police-station", "城东派出所")
    site.devices.channels[NVR].pop(CH2)  # as a catalog refresh without it leaves them
    listed = json.loads((await run(site, "ledger", "list", "--kind", "orphaned", "--json")).stdout)
    assert (
        [e["id"] for e in listed] == [CH2] and listed[0]["kind"] == "" and listed[0]["fields"]["location"] == "停车场"
    )
    done = await run(site, "ledger", "remove", CH2)
    assert done.stdout.strip() == f"ledger entry of {CH2} removed (2 fields)"
    assert CH2 not in await stored(site)
    assert "no ledger entry" in (await run(site, "ledger", "remove", CH2, code=1)).stderr
    assert json.loads((await run(site, "ledger", "list", "--kind", "orphaned", "--json")).stdout) == []


async def test_ten_thousand_rows(tmp_path: Path) -> None:
    """A large site's file in one import (the request is far beyond the admin API's usual body limit)."""
    store = str(tmp_path / "gw.db")
    gw = await start_gateway(**{"store.path": store})
    ids = [f"3402000000131{n:07d}" for n in range(10_000)]
    try:
        await gw.registrar.provision(NVR)
        await gw.store.replace_channels(NVR, [Channel(i, NVR, f"通道{n}") for n, i in enumerate(ids)])
    finally:
        await gw.stop()
    gw = await start_gateway(**{"store.path": store})
    try:
        f = tmp_path / "big.csv"
        rows = ["20位编码,安装位置,所属派出所,经度,纬度,建设时间,备注"]
        rows += [f"{i},位置{n},城东派出所,118.376451,31.123457,2020.03,{'很长的备注' * 20}" for n, i in enumerate(ids)]
        f.write_text("\r\n".join(rows), encoding="gbk")
        assert f.stat().st_size > 64 * 1024 * 20
        started = time.monotonic()
        done = await run(gw, "ledger", "import", str(f), "--json")
        answer = json.loads(done.stdout)
        assert answer["applied"] and len(answer["changes"]) == 60_000 and answer["problems"] == []
        assert time.monotonic() - started < 60
        assert len(await stored(gw)) == 10_000
        listed = json.loads((await run(gw, "ledger", "list", "--json")).stdout)
        assert len(listed) == 10_000 and listed[-1]["row"]["location"] == "位置9999"
    finally:
        await gw.stop()


async def test_an_import_over_the_limit_says_the_limit(site: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    from gb28181gw.admin import ledger as routes

    monkeypatch.setattr(routes, "MAX_IMPORT_BODY", 4096)
    body = json.dumps({"rows": [{"id": CH1, "values": {"remarks": "x" * 5000}}]}).encode()
    status, answer = await asyncio.to_thread(post, site, "/ledger/import", body)
    assert status == 413 and answer["error"] == "the import is larger than 4,096 bytes"
    # other routes keep the admin API's own limit
    status, answer = await asyncio.to_thread(post, site, "/devices", b'{"device_id": "' + b"1" * 70_000 + b'"}')
    assert status == 413 and "65536 bytes" in answer["error"]


@pytest.mark.parametrize(
    ("value", "number_format", "text"),
    [
        (118.376451, "General", "118.376451"),
        (118.37645100000001, "General", "118.376451"),  # a double's noise is not a decimal anyone typed
        (118.37645, "0.000000", "118.376450"),  # shown with a 6th 0: read so, and reported so
        (31.5, "0.00", "31.50"),
        (5.0, "General", "5"),
        (12, "General", "12"),
        (34020000001310000001, "General", "34020000001310000001"),  # an integer in the file: exact
        (3.4020000001310003e19, "General", "3.402000000131E+19"),  # what Excel stored: shown as Excel shows it
        (3.4020000001310003e19, "0", "3.402000000131E+19"),
        (dt.datetime(2020, 3, 1), "yyyy.mm", "2020-03"),
        (dt.datetime(2020, 3, 15), "yyyy/m/d", "2020-03-15"),
        (dt.datetime(2020, 3, 15, 0, 0), "General", "2020-03-15"),
        (dt.date(2021, 5, 1), 'yyyy"年"m"月"', "2021-05"),
        (True, "General", "是"),
        (None, "General", ""),
        ("北门", "@", "北门"),
    ],
)
def test_cells_read_as_people_see_them(value: object, number_format: str, text: str) -> None:
    assert cell_text(value, number_format) == text
