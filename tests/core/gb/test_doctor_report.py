"""The doctor's reports (gb/doctor_report.py): the HTML page a person hands in, and the JSON file."""

from __future__ import annotations

import datetime as dt
import json
from html.parser import HTMLParser

import lxml.html
import pytest

from gb28181gw.gb.doctor import CHECKS, CheckResult, DoctorReport, Outcome
from gb28181gw.gb.doctor_report import (
    JSON_KIND,
    TITLE,
    TITLE_EN,
    TITLES_ZH,
    NotRun,
    ReportFormat,
    SiteReport,
    read_json,
    render_html,
    render_json,
    stamp,
)

BEIJING = dt.timezone(dt.timedelta(hours=8))
# 2026-12-02 08:00:00 UTC: 16:00 in Beijing
AT = dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.UTC).timestamp()
GATEWAY = {"id": "34020000002000000001", "version": "1.4.0"}
HOSTILE = "<script>alert('x')</script>大门 NVR"


def _results(failed: dict[str, str]) -> tuple[CheckResult, ...]:
    return tuple(
        CheckResult(c.key, Outcome.FAIL, f"seen by {c.key}", reason, 0.25)
        if (reason := failed.get(c.key))
        else CheckResult(c.key, Outcome.SKIP if c.key == "ptz" else Outcome.PASS, f"seen by {c.key}", "", 1.5)
        for c in CHECKS
    )


def _report(device_id: str, name: str, failed: dict[str, str]) -> DoctorReport:
    device = {
        "name": name,
        "manufacturer": "海康威视",
        "model": "DS-7808N",
        "firmware": "V4.1",
        "address": "udp 10.0.0.9:5060",
    }
    return DoctorReport(device_id, device, AT, AT + 42, _results(failed), GATEWAY)


GOOD = _report("34020000001180000001", "一号 NVR", {})
BAD = _report(
    "34020000001180000002",
    HOSTILE,
    {
        "catalog": "SumNum 13 but 12 channels came; 3402000000132000000X is not an ID",
        "live_udp": "no RTP within 10 s <after 200 OK & ACK>",
    },
)
SITE = SiteReport(
    (GOOD, BAD), (NotRun("34020000001180000003", "went offline before its turn", {"name": "三号"}),), GATEWAY, AT
)


class _Balance(HTMLParser):
    """Every element closed, in order (void elements aside): the page's structure is sound."""

    VOID = {"meta", "br", "hr", "img", "link", "input", "col", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problems: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts += 1
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()


def _page(site: SiteReport = SITE) -> str:
    return render_html(site, BEIJING)


def test_a_hostile_device_name_is_text_never_markup() -> None:
    page = _page()
    checker = _Balance()
    checker.feed(page)
    assert checker.scripts == 0  # the <script> a device calls itself is not an element
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;大门 NVR" in page
    assert "<after 200 OK & ACK>" not in page and "&lt;after 200 OK &amp; ACK&gt;" in page
    tree = lxml.html.fromstring(page.encode("utf-8"))
    assert HOSTILE in tree.text_content()  # and a reader sees exactly what the device said


def test_the_page_is_well_formed_html() -> None:
    checker = _Balance()
    checker.feed(_page())
    checker.close()
    assert checker.problems == [] and checker.open == []
    tree = lxml.html.fromstring(_page().encode("utf-8"))
    assert tree.tag == "html" and tree.get("lang") == "zh-CN"
    assert tree.find(".//head/meta").get("charset") == "utf-8"
    assert [s.get("id") for s in tree.findall(".//section")] == ["device-1", "device-2", "not-run"]
    # the summary links to each device's section
    assert [a.get("href") for a in tree.findall(".//table[@class='summary']//a")] == ["#device-1", "#device-2"]


def test_every_check_its_clause_and_every_reason_are_in_the_page() -> None:
    tree = lxml.html.fromstring(_page().encode("utf-8"))
    bad = tree.get_element_by_id("device-2")
    rows = bad.findall(".//table[@class='checks']/tbody/tr")
    assert len(rows) == len(CHECKS)
    for row, check in zip(rows, CHECKS, strict=True):
        cells = [td.text_content() for td in row.findall("td")]
        assert TITLES_ZH[check.key] in cells[1] and check.title in cells[1]
        assert cells[2] == check.standard
        assert cells[4] == f"seen by {check.key}"
    by_key = {c.key: [td.text_content() for td in r.findall("td")] for c, r in zip(CHECKS, rows, strict=True)}
    assert "不通过" in by_key["catalog"][3] and "Fail" in by_key["catalog"][3]
    assert by_key["catalog"][5] == BAD.failures[0].reason
    assert by_key["live_udp"][5] == "no RTP within 10 s <after 200 OK & ACK>"
    assert "不适用" in by_key["ptz"][3] and "通过" in by_key["register"][3]
    assert "通过 8，不通过 2，注意 0，不适用 1" in bad.text_content()  # a skipped check is not counted as passed


def test_the_header_summary_and_identity_say_who_when_and_what() -> None:
    tree = lxml.html.fromstring(_page().encode("utf-8"))
    text = tree.text_content()
    assert tree.findtext(".//title") == f"{TITLE} – {TITLE_EN}"
    assert TITLE in tree.findtext(".//h1") and TITLE_EN in tree.find(".//h1").text_content()
    assert "34020000002000000001" in text and "gb28181gw 1.4.0" in text
    assert "2026-12-02 16:00:00 +08:00" in text  # the site's zone, with its offset
    summary = [
        [td.text_content() for td in tr.findall("td")] for tr in tree.findall(".//table[@class='summary']/tbody/tr")
    ]
    assert [r[1] for r in summary] == ["34020000001180000001", "34020000001180000002", "34020000001180000003"]
    assert "通过" in summary[0][4] and summary[0][5] == "-"
    assert "不通过" in summary[1][4] and summary[1][5] == f"{TITLES_ZH['catalog']}、{TITLES_ZH['live_udp']}"
    assert "未检测" in summary[2][4] and summary[2][5] == "went offline before its turn"
    assert "共 3 台设备：通过 1，不通过 1，未检测 1" in text
    identity = {
        tr.find("th").text_content(): tr.find("td").text_content()
        for tr in tree.get_element_by_id("device-1").findall(".//table[@class='identity']//tr")
    }
    assert identity["设备编码 Device ID"] == "34020000001180000001"
    assert identity["生产厂商 Manufacturer"] == "海康威视" and identity["固件版本 Firmware"] == "V4.1"
    assert identity["地址 Address"] == "udp 10.0.0.9:5060"
    assert identity["检测时间 Tested"] == "2026-12-02 16:00:00 +08:00 – 2026-12-02 16:00:42 +08:00"


def test_the_page_prints_and_is_utf8_chinese() -> None:
    page = _page()
    assert "@media print" in page and "break-before: page" in page
    data = page.encode("utf-8")
    assert "国标设备联网一致性检测报告".encode() in data  # UTF-8 bytes, not entities
    assert "&#" not in page.replace("&#x27;", "")  # Chinese is never escaped as numeric references


def test_text_html_cannot_carry_is_replaced_not_written() -> None:
    # a GB2312 name undecodable as UTF-8 arrives as lone surrogates; an ESC from a stranger
    odd = DoctorReport(
        "34020000001180000009", {"name": "\udcb4\udcf3门\x1b[2J", "model": "X\x00"}, AT, AT, _results({})
    )
    page = render_html(SiteReport((odd,), (), GATEWAY, AT), BEIJING)
    page.encode("utf-8")  # writable as UTF-8 (lone surrogates would raise)
    assert "\x1b" not in page and "\x00" not in page
    assert "\ufffd\ufffd门\ufffd[2J" in page


def test_an_empty_run_and_no_results_still_make_a_page() -> None:
    tree = lxml.html.fromstring(render_html(SiteReport((), (), GATEWAY, AT), BEIJING).encode())
    assert "No devices." in tree.text_content()
    empty = DoctorReport("34020000001180000001", {}, AT, AT, ())
    tree = lxml.html.fromstring(render_html(SiteReport((empty,), (), {}, AT), BEIJING).encode())
    assert "No check ran." in tree.text_content()


def test_json_round_trip() -> None:
    text = render_json(SITE, BEIJING)
    data = json.loads(text)
    assert data["report"] == JSON_KIND and data["title"] == TITLE
    assert data["generated"] == "2026-12-02 16:00:00 +08:00" and data["gateway"] == GATEWAY
    assert data["summary"] == {"devices": 3, "passed": 1, "failed": 1, "not_run": 1} and data["passed"] is False
    assert [DoctorReport.from_json(r) for r in data["reports"]] == [GOOD, BAD]
    assert HOSTILE in text  # JSON keeps Chinese (and the device's words) as they are
    assert read_json(text) == SITE


def test_json_keeps_undecodable_bytes_as_escapes() -> None:
    odd = DoctorReport("34020000001180000009", {"name": "\udcb4\udcf3"}, AT, AT, _results({}))
    text = render_json(SiteReport((odd,), (), GATEWAY, AT), BEIJING)
    text.encode("utf-8")
    assert read_json(text).reports[0].device["name"] == "\udcb4\udcf3"


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"report": "something else"}',
        '{"report": "gb28181gw doctor", "reports": [{"results": []}]}',
        '{"report": "gb28181gw doctor", "not_run": [{"device_id": "1"}]}',
        '{"report": "gb28181gw doctor", "reports": 5}',
        "not json",
    ],
)
def test_what_is_not_a_report_file_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        read_json(text)


def test_a_run_passes_only_when_every_device_was_checked_and_passed() -> None:
    assert SiteReport((GOOD,), (), GATEWAY, AT).passed
    assert not SiteReport((GOOD, BAD), (), GATEWAY, AT).passed
    assert not SiteReport((GOOD,), (NotRun("34020000001180000003", "offline"),), GATEWAY, AT).passed
    assert not SiteReport((), (), GATEWAY, AT).passed  # nothing checked proves nothing


@pytest.mark.parametrize(
    ("name", "kind"),
    [("report.html", ReportFormat.HTML), ("R.HTM", ReportFormat.HTML), ("a.b.json", ReportFormat.JSON)],
)
def test_the_suffix_picks_the_format(name: str, kind: ReportFormat) -> None:
    assert ReportFormat.of(name) is kind


@pytest.mark.parametrize("name", ["report.pdf", "report", "report.html.bak", ".json.txt"])
def test_another_suffix_is_refused_naming_the_ones_accepted(name: str) -> None:
    with pytest.raises(ValueError, match=r"\.html .* or \.json"):
        ReportFormat.of(name)


def test_stamps_are_in_the_zone_given() -> None:
    assert stamp(AT, dt.UTC) == "2026-12-02 08:00:00 +00:00"
    assert stamp(AT, dt.timezone(dt.timedelta(hours=5, minutes=45))) == "2026-12-02 13:45:00 +05:45"
    assert stamp(0, BEIJING) == "-"
