"""The conformance doctor's reports as a person hands them in: an HTML page and a JSON file.

A site's acceptance documents include proof that its devices speak GB/T 28181. One run of
``gb28181gw doctor`` (one device, or ``--all``) becomes a :class:`SiteReport`: a
:class:`~gb28181gw.gb.doctor.DoctorReport` per device checked, the devices that could not be
checked (gone offline by their turn) and why, who ran it and when. :func:`render_html` writes a
self-contained, printable page with Chinese and English labels; :func:`render_json` the same as
data (:func:`read_json` reads it back).

Everything a device says of itself (its name, model, what it answered) is hostile text: every
value is HTML-escaped, and characters HTML cannot carry (control characters, the lone surrogates
that stand for bytes a device sent undecodable) are replaced, never written.

Pure: times come in as epoch seconds and the site's zone as a ``tzinfo``; nothing here reads a
clock or writes a file.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gb28181gw.gb.doctor import CHECK_BY_KEY, CheckResult, DoctorReport, Outcome

TITLE = "国标设备联网一致性检测报告"
TITLE_EN = "GB/T 28181 conformance report"
#: What the JSON file says it is (``report``), and the version of its layout (``format``).
JSON_KIND = "gb28181gw doctor"
JSON_FORMAT = 1

#: The checks' titles in Chinese (:data:`~gb28181gw.gb.doctor.CHECKS` has the English ones).
TITLES_ZH: dict[str, str] = {
    "register": "注册（摘要认证、有效期）",
    "keepalive": "心跳保活（按其间隔）",
    "time": "校时（Date 头域）",
    "device_info": "设备信息查询",
    "catalog": "目录查询（数量、SumNum、编码、字符集）",
    "device_status": "设备状态查询",
    "config_download": "设备配置查询",
    "live_udp": "实时视频点播（UDP）",
    "live_tcp": "实时视频点播（TCP 被动）",
    "ptz": "云台控制（停止指令）",
    "record_info": "录像文件检索",
}

#: How each outcome is marked: a sign that survives a black-and-white printer, then the words.
MARKS: dict[Outcome, tuple[str, str, str]] = {
    Outcome.PASS: ("✔", "通过", "Pass"),
    Outcome.FAIL: ("✘", "不通过", "Fail"),
    Outcome.WARN: ("!", "注意", "Warning"),
    Outcome.SKIP: ("–", "不适用", "Skipped"),
}


class ReportFormat(StrEnum):
    """What a report file is written as, chosen by its name's suffix."""

    HTML = "html"
    JSON = "json"

    @classmethod
    def of(cls, filename: str) -> ReportFormat:
        """The format a file name asks for (``.html``/``.htm`` or ``.json``, any case).

        Raises:
            ValueError: any other name, saying which are accepted.
        """
        suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if suffix in ("html", "htm"):
            return cls.HTML
        if suffix == "json":
            return cls.JSON
        raise ValueError(f"{filename}: a report's name must end in .html (a page to print) or .json (data)")


@dataclass(frozen=True, slots=True)
class NotRun:
    """A device the doctor could not check.

    Attributes:
        device_id: the device.
        reason: why (gone offline by its turn, the run refused or broken off), in words.
        device: what was known of it (name, model …) when the run began.
    """

    device_id: str
    reason: str
    device: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "reason": self.reason, "device": dict(self.device)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NotRun:
        """Read :meth:`to_json`'s output.

        Raises:
            ValueError: not a device left unchecked.
        """
        try:
            return cls(str(data["device_id"]), str(data["reason"]), _strings(data.get("device")))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a device left unchecked: {exc}") from None


@dataclass(frozen=True, slots=True)
class SiteReport:
    """One run of the doctor, as handed in.

    Attributes:
        reports: one per device checked, in the order they ran.
        not_run: the devices that could not be checked.
        gateway: who ran it: ``id`` and ``version``.
        generated_at: when, in wall-clock epoch seconds.
    """

    reports: tuple[DoctorReport, ...] = ()
    not_run: tuple[NotRun, ...] = ()
    gateway: Mapping[str, str] = field(default_factory=dict)
    generated_at: float = 0.0

    @property
    def passed(self) -> bool:
        """Every device was checked and passed (and there was at least one)."""
        return bool(self.reports) and not self.not_run and all(r.passed for r in self.reports)

    def summary(self) -> dict[str, int]:
        failed = sum(not r.passed for r in self.reports)
        return {
            "devices": len(self.reports) + len(self.not_run),
            "passed": len(self.reports) - failed,
            "failed": failed,
            "not_run": len(self.not_run),
        }

    def to_json(self, zone: _dt.tzinfo) -> dict[str, Any]:
        """The JSON file: a header, then :meth:`DoctorReport.to_json` of each device."""
        return {
            "report": JSON_KIND,
            "format": JSON_FORMAT,
            "title": TITLE,
            "title_en": TITLE_EN,
            "gateway": dict(self.gateway),
            "generated_at": self.generated_at,
            "generated": stamp(self.generated_at, zone),
            "passed": self.passed,
            "summary": self.summary(),
            "reports": [r.to_json() for r in self.reports],
            "not_run": [n.to_json() for n in self.not_run],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SiteReport:
        """Read :meth:`to_json`'s output.

        Raises:
            ValueError: not a doctor's report file.
        """
        if not isinstance(data, Mapping) or data.get("report") != JSON_KIND:
            raise ValueError(f'not a doctor\'s report: no "report": "{JSON_KIND}"')
        try:
            return cls(
                tuple(DoctorReport.from_json(r) for r in data.get("reports") or ()),
                tuple(NotRun.from_json(n) for n in data.get("not_run") or ()),
                _strings(data.get("gateway")),
                float(data.get("generated_at", 0.0)),
            )
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"not a doctor's report: {exc}") from None


def _strings(data: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(data or {}).items()}


def stamp(epoch: float, zone: _dt.tzinfo) -> str:
    """``2026-12-02 16:00:00 +08:00`` in the site's zone; ``-`` when unset."""
    if not epoch:
        return "-"
    moment = _dt.datetime.fromtimestamp(epoch, zone)
    offset = moment.strftime("%z")
    return moment.strftime("%Y-%m-%d %H:%M:%S ") + offset[:3] + ":" + offset[3:5]


def render_json(site: SiteReport, zone: _dt.tzinfo) -> str:
    """The JSON file (UTF-8 text, Chinese kept readable; bytes a device sent undecodable as ``\\u`` escapes)."""
    data = site.to_json(zone)
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if _SURROGATES.search(text):
        text = json.dumps(data, indent=2)
    return text + "\n"


def read_json(text: str) -> SiteReport:
    """Read a file :func:`render_json` wrote.

    Raises:
        ValueError: not JSON, or not a doctor's report.
    """
    return SiteReport.from_json(json.loads(text))


# --- HTML ------------------------------------------------------------------------------------

_SURROGATES = re.compile("[\ud800-\udfff]")
# what HTML cannot carry: C0 controls but tab and newline, DEL, C1 controls, lone surrogates
_UNWRITABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _h(value: object) -> str:
    """``value`` as HTML text: escaped, and what HTML cannot carry replaced by U+FFFD."""
    text = "" if value is None else str(value)
    return html.escape(_UNWRITABLE.sub("\ufffd", text), quote=True)


def _label(zh: str, en: str) -> str:
    return f'{_h(zh)} <span class="en">{_h(en)}</span>'


_STYLE = """
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "PingFang SC", sans-serif;
       margin: 2em auto; max-width: 70em; padding: 0 1em; color: #111; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0; }
h1 .en, h2 .en, th .en, td .en { font-weight: normal; color: #555; }
h1 .en { display: block; font-size: 0.6em; }
h2 { font-size: 1.25em; border-bottom: 2px solid #333; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; width: 100%; margin: 0.6em 0; }
th, td { border: 1px solid #999; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; }
th .en, td .en { font-size: 0.85em; }
table.identity th { width: 12em; }
.id, .num { font-family: monospace; white-space: nowrap; }
.pass { color: #176f2c; } .fail { color: #b00020; font-weight: bold; } .warn { color: #8a5a00; } .skip { color: #666; }
p.verdict { font-size: 1.15em; font-weight: bold; }
.signatures td { height: 2.5em; width: 25%; }
footer { margin-top: 2em; color: #555; font-size: 0.85em; }
@page { size: A4; margin: 15mm; }
@media print {
  body { margin: 0; max-width: none; padding: 0; font-size: 10pt; }
  section.device { break-before: page; }
  tr, .identity { break-inside: avoid; }
  thead { display: table-header-group; }
  a { color: inherit; text-decoration: none; }
  th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def _mark(outcome: Outcome) -> str:
    sign, zh, en = MARKS[outcome]
    return f'<span class="{outcome.value}">{_h(sign)} {_label(zh, en)}</span>'


def _verdict(passed: bool) -> str:
    return _mark(Outcome.PASS) if passed else _mark(Outcome.FAIL)


def _row(cells: Sequence[str], *, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _table(head: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """A table whose columns are titled (Chinese, English) by ``head``."""
    attr = f' class="{cls}"' if cls else ""
    body = "\n".join(_row(r) for r in rows)
    titles = [_label(zh, en) for zh, en in head]
    return f"<table{attr}>\n<thead>{_row(titles, header=True)}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _address(device: Mapping[str, str]) -> str:
    if device.get("address"):
        return device["address"]
    host, port = device.get("host", ""), device.get("port", "")
    where = f"{host}:{port}" if host and port and port != "0" else host
    transport = device.get("transport", "")
    return f"{transport} {where}".strip() if where else ""


def _check_title(result: CheckResult) -> str:
    zh = TITLES_ZH.get(result.key)
    return _label(zh, result.title) if zh else _h(result.title)


def _device_section(number: int, report: DoctorReport, zone: _dt.tzinfo) -> str:
    d = report.device
    identity = [
        (_label("设备编码", "Device ID"), f'<span class="id">{_h(report.device_id)}</span>'),
        (_label("设备名称", "Name"), _h(d.get("name", ""))),
        (_label("生产厂商", "Manufacturer"), _h(d.get("manufacturer", ""))),
        (_label("型号", "Model"), _h(d.get("model", ""))),
        (_label("固件版本", "Firmware"), _h(d.get("firmware", ""))),
        (_label("地址", "Address"), _h(_address(d))),
        (_label("检测时间", "Tested"), _h(f"{stamp(report.started_at, zone)} – {stamp(report.finished_at, zone)}")),
        (_label("结论", "Verdict"), _verdict(report.passed)),
    ]
    rows = [
        [
            f'<span class="num">{i}</span>',
            _check_title(r),
            _h(CHECK_BY_KEY[r.key].standard if r.key in CHECK_BY_KEY else ""),
            _mark(r.outcome),
            _h(r.detail),
            _h(r.reason),
            f'<span class="num">{r.seconds:.1f}</span>',
        ]
        for i, r in enumerate(report.results, 1)
    ]
    head = [
        ("序号", "No."),
        ("检测项", "Check"),
        ("标准条款", "Clause (GB/T 28181-2022)"),
        ("结果", "Result"),
        ("检测所见", "Observed"),
        ("原因", "Reason"),
        ("用时（秒）", "Seconds"),
    ]
    counts = {o: sum(r.outcome is o for r in report.results) for o in Outcome}
    tally = "，".join(f"{MARKS[o][1]} {counts[o]}" for o in MARKS) + (
        ' <span class="en">('
        + ", ".join(f"{counts[o]} {MARKS[o][2].lower()}" for o in MARKS)
        + f" of {len(report.results)} checks)</span>"
    )
    return "\n".join(
        [
            f'<section class="device" id="device-{number}">',
            f'<h2>{number}. {_label("设备", "Device")} <span class="id">{_h(report.device_id)}</span></h2>',
            _identity_table(identity),
            f"<p>{tally}</p>",
            _table(head, rows, "checks") if rows else f"<p>{_label('未运行任何检测项', 'No check ran.')}</p>",
            "</section>",
        ]
    )


def _identity_table(pairs: Sequence[tuple[str, str]]) -> str:
    body = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="identity">\n<tbody>\n{body}\n</tbody>\n</table>'


def _failed_checks(report: DoctorReport) -> str:
    return "、".join(_h(TITLES_ZH.get(r.key, r.title)) for r in report.failures) or "-"


def _summary(site: SiteReport) -> str:
    counts = site.summary()
    rows = [
        [
            f'<span class="num">{i}</span>',
            f'<a href="#device-{i}" class="id">{_h(r.device_id)}</a>',
            _h(r.device.get("name", "")),
            _h(r.device.get("model", "")),
            _verdict(r.passed),
            _failed_checks(r),
        ]
        for i, r in enumerate(site.reports, 1)
    ]
    rows += [
        [
            f'<span class="num">{len(site.reports) + i}</span>',
            f'<span class="id">{_h(n.device_id)}</span>',
            _h(n.device.get("name", "")),
            _h(n.device.get("model", "")),
            f'<span class="fail">{_label("未检测", "Not checked")}</span>',
            _h(n.reason),
        ]
        for i, n in enumerate(site.not_run, 1)
    ]
    head = [
        ("序号", "No."),
        ("设备编码", "Device ID"),
        ("设备名称", "Name"),
        ("型号", "Model"),
        ("结论", "Verdict"),
        ("不通过项 / 原因", "Failed checks / reason"),
    ]
    overall = (
        _label("全部设备检测通过", "Every device passed")
        if site.passed
        else _label("存在未通过或未检测的设备", "Some devices failed or were not checked")
    )
    tally = (
        f"共 {counts['devices']} 台设备：通过 {counts['passed']}，不通过 {counts['failed']}，未检测 {counts['not_run']}"
        f' <span class="en">({counts["devices"]} devices: {counts["passed"]} passed, {counts["failed"]} failed,'
        f" {counts['not_run']} not checked)</span>"
    )
    return "\n".join(
        [
            f"<h2>{_label('检测结论', 'Summary')}</h2>",
            f'<p class="verdict {"pass" if site.passed else "fail"}">{overall}</p>',
            f"<p>{tally}</p>",
            _table(head, rows, "summary") if rows else f"<p>{_label('没有设备', 'No devices.')}</p>",
        ]
    )


def render_html(site: SiteReport, zone: _dt.tzinfo) -> str:
    """A self-contained page (no scripts, no external files) to print or hand in."""
    gateway = site.gateway
    product = f"gb28181gw {gateway.get('version', '')}".strip()
    header = [
        (_label("检测平台编码", "Gateway ID"), f'<span class="id">{_h(gateway.get("id", ""))}</span>'),
        (_label("软件版本", "Version"), _h(product)),
        (_label("报告时间", "Date and time"), _h(stamp(site.generated_at, zone))),
        (_label("依据标准", "Standard"), _h("GB/T 28181-2022 公共安全视频监控联网系统信息传输、交换、控制技术要求")),
    ]
    signatures = (
        '<table class="signatures"><tbody><tr>'
        f"<th>{_label('检测人', 'Tested by')}</th><td></td>"
        f"<th>{_label('复核人', 'Checked by')}</th><td></td>"
        "</tr><tr>"
        f"<th>{_label('建设单位', 'Owner')}</th><td></td>"
        f"<th>{_label('日期', 'Date')}</th><td></td>"
        "</tr></tbody></table>"
    )
    not_run = ""
    if site.not_run:
        not_run = "\n".join(
            [
                f'<section id="not-run"><h2>{_label("未检测设备", "Devices not checked")}</h2>',
                _table(
                    [("设备编码", "Device ID"), ("设备名称", "Name"), ("原因", "Reason")],
                    [
                        [f'<span class="id">{_h(n.device_id)}</span>', _h(n.device.get("name", "")), _h(n.reason)]
                        for n in site.not_run
                    ],
                ),
                "</section>",
            ]
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(TITLE)} – {_h(TITLE_EN)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f'<h1>{_h(TITLE)}<span class="en">{_h(TITLE_EN)}</span></h1>',
        _identity_table(header),
        _summary(site),
        signatures,
        *(_device_section(i, r, zone) for i, r in enumerate(site.reports, 1)),
        not_run,
        f"<footer>{_h(product)} · {_h(stamp(site.generated_at, zone))}</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
