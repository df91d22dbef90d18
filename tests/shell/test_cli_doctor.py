"""``gb28181gw doctor`` (cli/doctor.py): the real binary against a small admin API that streams the
doctor's events (gb/doctor.py) as the gateway does: progress, the table, exit status, reports,
and every way a run can end without one (a refusal, an error event, a cut connection, a line
that is not an event, Ctrl-C).

The fake answers ``POST /api/v1/devices/{id}/doctor`` by a script per device ID, so that the
command is proven before the real server lands; the end-to-end tests against a gateway with
SIPp devices come with it.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from aiohttp import web

from gb28181gw.gb.doctor import CHECKS, CheckResult, DoctorReport, Outcome, event
from gb28181gw.gb.doctor_report import read_json
from tests.process import free_port, on_terminal

BIN = str(Path(sys.executable).parent / "gb28181gw")

GOOD = "34020000001180000001"  # every check passes (one warns, PTZ is skipped)
BAD = "34020000001180000002"  # Catalog fails
GONE = "34020000001180000003"  # listed online, offline by its turn (409)
CUT = "34020000001180000004"  # the connection is cut after one check
JUNK = "34020000001180000005"  # a line that is not an event
SLOW = "34020000001180000006"  # waits until the client leaves (Ctrl-C)
ERROR = "34020000001180000007"  # the gateway gives up with an error event
SILENT_END = "34020000001180000008"  # the answer ends cleanly, without a report
ODD_RESULT = "34020000001180000010"  # an event that is JSON but not a check result
DOWN = "34020000001180000012"  # the gateway stops during its run (cut, then nothing listens)
UNKNOWN = "34020000001189999999"
GATEWAY_ID = "34020000002000000001"
CATALOG_REASON = "SumNum 13 in every message but 12 channels came"
HOSTILE = "<script>alert(1)</script>大门"


def _result(key: str, device_id: str) -> CheckResult:
    if device_id == BAD and key == "catalog":
        return CheckResult(key, Outcome.FAIL, "12 channels in 3 messages", CATALOG_REASON, 2.0, {"channels": 12})
    if key == "ptz":
        return CheckResult(key, Outcome.SKIP, "", "no PTZ camera among its channels", 0.0)
    if key == "keepalive":
        return CheckResult(key, Outcome.WARN, "every 60 s", "the interval is longer than the 30 s asked", 0.1)
    return CheckResult(key, Outcome.PASS, f"{key} answered", "", 0.2, {"n": 1})


@dataclass
class FakeGateway:
    """The admin API, as far as ``doctor`` uses it, in a thread of its own."""

    port: int = field(default_factory=free_port)
    listed: list[str] = field(default_factory=lambda: [GOOD])
    pace: float = 0.0  # seconds between events
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    left: threading.Event = field(default_factory=threading.Event)  # the client of a SLOW run went away
    running: threading.Event = field(default_factory=threading.Event)  # a SLOW run is under way
    site: web.TCPSite | None = None

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def device(self, device_id: str) -> dict[str, str]:
        name = HOSTILE if device_id == BAD else f"设备 {device_id[-1]}"
        return {"name": name, "manufacturer": "Hikvision", "model": f"DS-{device_id[-2:]}", "firmware": "V5"}

    async def doctor(self, request: web.Request) -> web.StreamResponse:
        device_id = request.match_info["id"]
        body = await request.json()
        self.posts.append((device_id, body))
        if device_id == UNKNOWN:
            return web.json_response({"error": f"no device {device_id}", "hint": "gb28181gw devices"}, status=404)
        if device_id == GONE:
            return web.json_response({"error": f"device {device_id} is not registered (offline)"}, status=409)
        keys = body.get("checks") or [c.key for c in CHECKS]
        checks = [{"key": c.key, "title": c.title} for c in CHECKS if c.key in keys]
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(event("start", device_id=device_id, checks=checks))
        started = time.time()
        results = []
        for check in checks:
            await response.write(event("running", key=check["key"]))
            await asyncio.sleep(self.pace)
            if device_id == JUNK:
                await response.write(b"<html>502 Bad Gateway</html>\n")
                return response
            if device_id == ODD_RESULT:
                await response.write(event("start", checks=5))  # ignored: the bar counts no checks
                await response.write(event("result", result={"key": check["key"], "outcome": "great"}))
                return response
            if device_id == SLOW:
                self.running.set()
                await self._until_gone(request)
                return response
            if device_id == ERROR:
                await response.write(
                    event("error", message="the device went offline during the run", hint="see its log")
                )
                return response
            result = _result(check["key"], device_id)
            results.append(result)
            await response.write(event("result", result=result.to_json()))
            if device_id == DOWN:
                assert self.site is not None and request.transport is not None
                asyncio.get_running_loop().create_task(self.site.stop())  # a restart: the port is closed
                request.transport.close()
                return response
            if device_id == CUT:
                assert request.transport is not None
                request.transport.close()  # no last chunk: the answer is cut short
                return response
        if device_id != SILENT_END:
            report = DoctorReport(
                device_id, self.device(device_id), started, time.time(), tuple(results), {"id": GATEWAY_ID}
            )
            await response.write(event("done", report=report.to_json()))
        await response.write_eof()
        return response

    async def _until_gone(self, request: web.Request) -> None:
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                if request.transport is None or request.transport.is_closing():
                    break
                await asyncio.sleep(0.02)
        finally:
            self.left.set()

    async def devices(self, request: web.Request) -> web.Response:
        rows = [{"device_id": d, "online": True, **self.device(d)} for d in self.listed]
        return web.json_response({"devices": rows})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response({"gateway_id": GATEWAY_ID, "version": "9.9.9", "time_zone": "Asia/Shanghai"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def serve(self) -> Iterator[FakeGateway]:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/api/v1/status", self.status)
        app.router.add_get("/api/v1/devices", self.devices)
        app.router.add_post("/api/v1/devices/{id}/doctor", self.doctor)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        self.site = web.TCPSite(runner, "127.0.0.1", self.port)
        loop.run_until_complete(self.site.start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


@pytest.fixture
def gw() -> Iterator[FakeGateway]:
    yield from FakeGateway().serve()


@dataclass
class Run:
    code: int
    out: str
    err: str


def cli(gw: FakeGateway, *args: str, cwd: Path | None = None) -> Run:
    """The binary with stdout and stderr piped (not a terminal)."""
    done = subprocess.run(
        [BIN, "doctor", *args, "--admin", gw.admin], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    return Run(done.returncode, done.stdout, done.stderr)


def tty(gw: FakeGateway, *args: str, columns: int = 160) -> tuple[int, str]:
    """The binary on a pseudo-terminal: its exit status and what it showed, a line per redraw."""
    code, shown = on_terminal([BIN, "doctor", *args, "--admin", gw.admin], columns=columns)
    return code, shown.replace("\r", "\n")


def _rows(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines() if "\t" in line]


# --- one device ------------------------------------------------------------------------------


def test_progress_names_each_check_then_the_table_and_exit_0(gw: FakeGateway) -> None:
    gw.pace = 0.25
    code, shown = tty(gw, GOOD, "--check", "register", "--check", "catalog", "--check", "ptz")
    assert code == 0, shown
    # the bar named the check running, with how far it got
    assert re.search(r"\[1/3\] Registration \(digest, expiry\)", shown), shown
    assert re.search(r"\[2/3\] Catalog \(count, SumNum, IDs, charset\)", shown), shown
    table = shown[shown.index("┏") :]  # the table came after the bar
    assert "Registration (digest, expiry)" in table and "PTZ stop accepted" in table and "skip" in table
    assert f"{GOOD}: all 3 checks passed (1 skipped)" in shown
    assert gw.posts == [(GOOD, {"checks": ["register", "catalog", "ptz"]})]


def test_a_failure_is_shown_with_its_reason_and_exit_1(gw: FakeGateway) -> None:
    r = cli(gw, BAD)
    assert r.code == 1, r.err
    rows = {row[0]: row for row in _rows(r.out)}
    assert rows["Catalog (count, SumNum, IDs, charset)"][1:4] == ["fail", "12 channels in 3 messages", CATALOG_REASON]
    assert rows["Keepalive at its interval"][1] == "warn"  # shown, but no failure
    assert rows["DeviceInfo answered"][1:3] == ["pass", "device_info answered"]
    assert len(rows) == len(CHECKS) + 1  # a header and a row per check
    assert f"{BAD}: 1 of 11 checks failed: catalog (1 warning, 1 skipped)" in r.out
    assert r.out.startswith(f"{BAD} {HOSTILE} (Hikvision DS-02), ")


def test_warnings_and_skips_do_not_fail_a_device(gw: FakeGateway) -> None:
    r = cli(gw, GOOD)
    assert r.code == 0 and "all 11 checks passed (1 warning, 1 skipped)" in r.out


def test_json_prints_the_report_and_no_bar(gw: FakeGateway) -> None:
    r = cli(gw, BAD, "--json", "--channel", "34020000001310000001")
    assert r.code == 1
    report = DoctorReport.from_json(json.loads(r.out))
    assert report.device_id == BAD and report.device["name"] == HOSTILE
    assert [x.key for x in report.failures] == ["catalog"]
    assert gw.posts == [(BAD, {"channel": "34020000001310000001"})]
    code, shown = tty(gw, GOOD, "--json")
    assert code == 0 and "━" not in shown and DoctorReport.from_json(json.loads(shown)).passed


@pytest.mark.parametrize(
    ("device", "says"),
    [
        (UNKNOWN, f"error: no device {UNKNOWN}\nhint: gb28181gw devices"),
        (GONE, f"error: device {GONE} is not registered (offline)"),
        (ERROR, "error: the device went offline during the run\nhint: see its log"),
    ],
)
def test_a_refused_or_abandoned_run_is_the_gateways_words_and_exit_1(gw: FakeGateway, device: str, says: str) -> None:
    r = cli(gw, device)
    assert r.code == 1 and says in r.err, r.err
    assert "Traceback" not in r.err


def test_the_connection_cut_mid_run_is_a_clear_error_and_exit_1(gw: FakeGateway) -> None:
    r = cli(gw, CUT)
    assert r.code == 1, r.err
    assert f"error: the gateway at {gw.admin} broke off POST /devices/{CUT}/doctor" in r.err
    assert "(after 1 check)" in r.err and "Traceback" not in r.err
    assert _rows(r.out)[1][:2] == ["Registration (digest, expiry)", "pass"]  # what was seen before it broke


def test_an_answer_that_ends_without_a_report_is_an_error(gw: FakeGateway) -> None:
    r = cli(gw, SILENT_END, "--check", "register")
    assert r.code == 1
    assert f"error: the gateway ended the doctor's run of {SILENT_END} before its report (after 1 check)" in r.err


def test_a_line_that_is_not_an_event_is_named_not_a_traceback(gw: FakeGateway) -> None:
    r = cli(gw, JUNK)
    assert r.code == 1
    assert "error: the gateway's answer cannot be read: line 3 of the doctor's answer for" in r.err
    assert "is not JSON" in r.err and "502 Bad Gateway" in r.err and "Traceback" not in r.err


def test_an_event_whose_result_is_not_a_check_result_is_named(gw: FakeGateway) -> None:
    r = cli(gw, ODD_RESULT)
    assert r.code == 1
    assert "error: the gateway's answer cannot be read: not a doctor check result" in r.err, r.err
    assert "'great' is not a valid Outcome" in r.err and "Traceback" not in r.err


def test_ctrl_c_stops_with_130_and_closes_the_request(gw: FakeGateway) -> None:
    proc = subprocess.Popen(
        [BIN, "doctor", SLOW, "--admin", gw.admin], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert gw.running.wait(20), "the run never began"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "stopped: the doctor's run was cancelled" in err and "Traceback" not in err
    assert gw.left.wait(10)  # the gateway saw its client go (and cancels the run)


def test_usage_errors_come_before_any_request(gw: FakeGateway, tmp_path: Path) -> None:
    for args, says in [
        ([], "give a DEVICE_ID or --all"),
        ([GOOD, "--all"], "give a DEVICE_ID or --all"),
        (["--all", "--channel", "34020000001310000001"], "--channel names one device's camera"),
        ([GOOD, "--check", "everything"], "'everything' is not one of"),
        ([GOOD, "-o", str(tmp_path / "report.pdf")], "must end in .html (a page to print) or .json"),
        ([GOOD, "-o", str(tmp_path / "nowhere" / "report.html")], "no directory"),
    ]:
        r = cli(gw, *args)
        assert r.code == 2 and says in r.err, (args, r.err)
    assert gw.posts == []


# --- reports ---------------------------------------------------------------------------------


def test_an_existing_report_is_refused_before_the_run_unless_forced(gw: FakeGateway, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("the acceptance engineer's own notes")
    r = cli(gw, GOOD, "-o", str(target))
    assert r.code == 2 and f"{target} exists: --force overwrites it" in r.err
    assert gw.posts == [] and target.read_text() == "the acceptance engineer's own notes"
    r = cli(gw, GOOD, "-o", str(target), "--force")
    assert r.code == 0 and f"report written to {target}" in r.out
    assert "国标设备联网一致性检测报告" in target.read_text(encoding="utf-8")


def test_the_html_report_of_a_failing_device(gw: FakeGateway, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    r = cli(gw, BAD, "-o", str(target))
    assert r.code == 1 and target.exists()  # a failing device's report is written all the same
    page = target.read_bytes().decode("utf-8")
    assert "<script>" not in page
    tree = lxml.html.fromstring(page.encode())
    text = tree.text_content()
    assert HOSTILE in text and CATALOG_REASON in text and GATEWAY_ID in text and "gb28181gw 9.9.9" in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+08:00", text)  # the gateway's zone (Asia/Shanghai)
    assert len(tree.findall(".//table[@class='checks']/tbody/tr")) == len(CHECKS)


def test_a_json_report_with_json_output_keeps_stdout_json(gw: FakeGateway, tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    r = cli(gw, GOOD, "--json", "-o", str(target))
    assert r.code == 0 and json.loads(r.out)["device_id"] == GOOD
    assert f"report written to {target}" in r.err
    site = read_json(target.read_text(encoding="utf-8"))
    assert [x.device_id for x in site.reports] == [GOOD] and site.passed
    assert site.gateway == {"id": GATEWAY_ID, "version": "9.9.9"}


# --- every device ----------------------------------------------------------------------------


def test_all_reports_each_device_a_failure_and_one_gone_offline(gw: FakeGateway, tmp_path: Path) -> None:
    gw.listed = [GOOD, BAD, GONE]
    target = tmp_path / "site.json"
    r = cli(gw, "--all", "-o", str(target))
    assert r.code == 1, r.err
    rows = {row[0]: row for row in _rows(r.out)}
    assert rows["device"] == ["device", "name", "model", "result", "failed checks / reason"]
    assert rows[GOOD][1:] == ["设备 1", "DS-01", "passed", "-"]
    assert rows[BAD][1:] == [HOSTILE, "DS-02", "failed", "catalog"]
    assert rows[GONE][1:] == ["设备 3", "DS-03", "not checked", f"device {GONE} is not registered (offline)"]
    assert "1 passed, 1 failed, 1 not checked" in r.out
    assert f"[3/3] {GONE}: not checked: device {GONE} is not registered (offline)" in r.err  # progress, piped
    assert [d for d, _ in gw.posts] == [GOOD, BAD, GONE]  # one after the other, all asked
    site = read_json(target.read_text(encoding="utf-8"))
    assert [x.device_id for x in site.reports] == [GOOD, BAD] and [n.device_id for n in site.not_run] == [GONE]
    assert site.not_run[0].device["model"] == "DS-03"


def test_all_passing_devices_exit_0_with_a_bar_per_device(gw: FakeGateway) -> None:
    gw.listed = [GOOD, "34020000001180000011"]
    gw.pace = 0.1
    code, shown = tty(gw, "--all", "--check", "register", "--check", "time")
    assert code == 0, shown
    assert "device 1 of 2: 34020000001180000001" in shown and "device 2 of 2: 34020000001180000011" in shown
    assert "[2/2] 34020000001180000011 [1/2] Registration" in shown  # the device, then its check
    assert "2 passed, 0 failed, 0 not checked" in shown


def test_all_json_is_the_report_file_and_no_device_online_fails(gw: FakeGateway) -> None:
    gw.listed = [GOOD, ERROR]
    r = cli(gw, "--all", "--json")
    assert r.code == 1
    data = json.loads(r.out)
    assert data["summary"] == {"devices": 2, "passed": 1, "failed": 0, "not_run": 1}
    assert data["not_run"][0]["reason"] == "the device went offline during the run"
    gw.listed = []
    r = cli(gw, "--all")
    assert r.code == 1 and "no device is online: nothing to check" in r.out


def test_all_stops_when_the_gateway_is_gone(tmp_path: Path) -> None:
    gone = FakeGateway()  # never served: nothing listens on its port
    r = cli(gone, "--all")
    assert r.code == 1 and f"error: cannot reach the gateway at {gone.admin}" in r.err


def test_all_keeps_what_it_checked_when_the_gateway_goes_away_mid_way(gw: FakeGateway, tmp_path: Path) -> None:
    # two hours into 200 devices the gateway restarts: the devices checked are not thrown away
    gw.listed = [GOOD, DOWN, BAD]
    target = tmp_path / "site.json"
    r = cli(gw, "--all", "-o", str(target))
    assert r.code == 1, r.err
    rows = {row[0]: row for row in _rows(r.out)}
    assert rows[GOOD][3] == "passed"
    assert rows[DOWN][3] == rows[BAD][3] == "not checked"
    assert "cannot reach the gateway" in rows[BAD][4], rows[BAD]
    assert "1 passed, 0 failed, 2 not checked" in r.out
    site = read_json(target.read_text(encoding="utf-8"))
    assert [x.device_id for x in site.reports] == [GOOD] and [n.device_id for n in site.not_run] == [DOWN, BAD]
