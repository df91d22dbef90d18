"""The camera ledger (一机一档): what the authorities' forms ask of each camera besides what it reports.

Before a site joins the police network its integrator hands in a table of every camera in the
form the city prescribes (整合接入清单, 调研表, 联网设备信息登记表 …). Most columns are things no
device reports: where it hangs, which police station it belongs to, when it was built, whether it is
leased, what becomes of it. This module names those fields (:data:`FIELDS`), reads what people
write into them (:func:`normalise`: 是/否, 2020.03, 113.123456 …) and checks what the rules ask of
a row before it is handed in (:func:`check_id`, :func:`check_coordinate`).

A ledger entry (:class:`LedgerEntry`) belongs to one 20-digit ID: a channel, a device, or the
gateway itself (the platform sheet of the integration list). Values are kept as normalised text:
dates as ``2020-03`` or ``2020-03-15`` (the precision given), yes/no and the choices as their
keys (``yes``, ``active``, ``keep``), coordinates exactly as written (their decimals are what the
rules check). What a form prints is decided by the form (see ``gb/forms.py``).

Pure: no I/O, no clock (``updated_at`` is passed in).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from gb28181gw.errors import IdError, LedgerValueError
from gb28181gw.ids import GbId, IdKind


class Kind(Enum):
    """How a field's value is read and kept."""

    TEXT = "text"
    DATE = "date"  # year and month, or a full date: 2020-03 / 2020-03-15
    LONGITUDE = "longitude"
    LATITUDE = "latitude"
    YES_NO = "yes/no"
    CHOICE = "choice"
    NUMBER = "number"  # a decimal ≥ 0 (metres, money)
    INTEGER = "integer"  # a whole number ≥ 0 (arms, port)
    IP = "ip"


@dataclass(frozen=True, slots=True)
class LedgerField:
    """One field of the ledger.

    Attributes:
        key: its name in the API, the CLI (``--police-station``) and form files.
        label: its title in the authorities' forms.
        english: what it is, in English.
        kind: how values are read.
        aliases: other titles it goes by in real tables (matched on import).
        choices: for :attr:`Kind.CHOICE`, each kept key and the words read as it (first = label).
    """

    key: str
    label: str
    english: str
    kind: Kind = Kind.TEXT
    aliases: tuple[str, ...] = ()
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def display(self, value: str) -> str:
        """The Chinese word for a kept value (是/否, 在用 …); other kinds unchanged."""
        if self.kind is Kind.YES_NO:
            return {"yes": "是", "no": "否"}.get(value, value)
        if self.kind is Kind.CHOICE and value in self.choices:
            return self.choices[value][0]
        return value


_YES = ("是", "yes", "y", "true", "1", "√", "✓", "有")
_NO = ("否", "no", "n", "false", "0", "×", "✗", "无")

FIELDS: tuple[LedgerField, ...] = (
    LedgerField("name", "名称", "name on the ledger (default: the name the device reports)",
                aliases=("设备名称", "摄像机名称", "点位名称", "联网设备名称", "平台名称")),
    LedgerField("location", "安装位置", "where it is installed", aliases=("位置名称", "安装地点", "安装地址", "位置")),
    LedgerField("province", "省", "province (default: from the civil code)", aliases=("所在省", "省份")),
    LedgerField("city", "市", "city (default: from the civil code)", aliases=("所在市", "地市")),
    LedgerField("district", "县（区）", "county or district (default: from the civil code)",
                aliases=("区县", "县区", "所在县（区）", "区")),
    LedgerField("township", "乡镇（街道）", "township or street", aliases=("乡镇", "街道", "所在乡镇（街道）")),
    LedgerField("police_station", "所属派出所", "police station", aliases=("派出所",)),
    LedgerField("longitude", "经度", "longitude (WGS-84, at least 6 decimals)", Kind.LONGITUDE),
    LedgerField("latitude", "纬度", "latitude (WGS-84, at least 6 decimals)", Kind.LATITUDE),
    LedgerField("brand", "品牌", "brand (default: the manufacturer the device reports)", aliases=("厂商", "设备厂商")),
    LedgerField("model", "型号", "model (default: what the device reports)", aliases=("设备型号", "规格型号")),
    LedgerField("ip", "IP地址", "IP address (default: where the device registers from)", Kind.IP,
                aliases=("IP", "ip地址", "设备IP")),
    LedgerField("port", "端口号", "port (default: the device's SIP port)", Kind.INTEGER, aliases=("端口",)),
    LedgerField("built", "建设时间", "construction date (2020.03, 2020-03-15 …)", Kind.DATE,
                aliases=("建设日期", "安装时间")),
    LedgerField("leased", "是否以租代建", "leased instead of built", Kind.YES_NO, aliases=("以租代建",)),
    LedgerField("state", "状态", "in use or not", Kind.CHOICE, aliases=("使用状态", "设备状态"),
                choices={"active": ("在用", "使用", "启用", "active", "in use"),
                         "inactive": ("停用", "未用", "inactive", "out of use")}),
    LedgerField("plan", "计划整合方式", "planned integration", Kind.CHOICE, aliases=("整合方式", "计划整合"),
                choices={"keep": ("保留", "keep"), "remove": ("拆除", "remove"), "move": ("迁移", "move")}),
    LedgerField("platform", "管理平台名称", "name of the platform managing it", aliases=("管理平台", "所属平台")),
    LedgerField("requester", "建设需求提出单位", "unit that asked for it to be built", aliases=("需求单位",)),
    LedgerField("sharing", "授权共享单位", "units authorised to share it", aliases=("共享单位",)),
    LedgerField("osd", "视频图像命名及视频图像文字标注", "OSD naming and text",
                aliases=("视频图像命名及文字标注", "OSD", "文字标注")),
    LedgerField("pole_number", "立杆编号", "pole number", aliases=("杆号", "杆件编号")),
    LedgerField("pole_height", "立杆高度（米）", "pole height in metres", Kind.NUMBER, aliases=("立杆高度", "杆高")),
    LedgerField("pole_arms", "横臂数量", "pole arms", Kind.INTEGER, aliases=("横臂数", "臂数")),
    LedgerField("pole_condition", "立杆状况", "pole condition", aliases=("立杆情况", "杆件状况")),
    # the platform sheet of the integration list (an entry for the gateway's own ID, or a lower platform's)
    LedgerField("vendor", "平台厂商", "platform vendor", aliases=("厂家",)),
    LedgerField("conforms", "是否符合GB/T 28181", "conforms to GB/T 28181", Kind.YES_NO,
                aliases=("是否符合GB/T28181", "是否符合28181", "符合GB/T 28181")),
    LedgerField("network_type", "网络类型", "network it is on (视频专网, 互联网 …)"),
    LedgerField("description", "平台描述", "description"),
    LedgerField("xueliang", "是否已对接本级雪亮平台", "connected to this level's Xueliang platform", Kind.YES_NO,
                aliases=("是否已对接雪亮平台", "已对接雪亮平台")),
    LedgerField("cost", "建设费用（万元）", "construction cost, 10,000 yuan", Kind.NUMBER, aliases=("建设费用",)),
    LedgerField("upkeep", "运维费（万元/年）", "yearly upkeep, 10,000 yuan", Kind.NUMBER, aliases=("运维费", "运维费用")),
    LedgerField("remarks", "备注", "remarks", aliases=("说明",)),
)  # fmt: skip

FIELD_BY_KEY: dict[str, LedgerField] = {f.key: f for f in FIELDS}

#: Longest text kept in a field: a ledger cell, not a document.
MAX_TEXT = 500

#: China's extent (WGS-84): Heilongjiang's Mohe to Zengmu Ansha, the Pamirs to the Wusuli.
LONGITUDE_RANGE = (73.4, 135.1)
LATITUDE_RANGE = (3.8, 53.6)
#: The rules ask coordinates to the metre: 6 decimals, and a sixth that is not a padding 0.
COORDINATE_DECIMALS = 6


def _folded(text: str) -> str:
    """A title as compared: no spaces, ASCII parentheses and slashes, lower case."""
    table = str.maketrans({"（": "(", "）": ")", "／": "/", "　": None, " ": None, "\n": None, "\t": None})
    return text.translate(table).lower().strip("*")


_BY_TITLE: dict[str, LedgerField] = {}
for _f in FIELDS:
    for _title in (_f.key, _f.label, _f.english, *_f.aliases):
        _BY_TITLE.setdefault(_folded(_title), _f)


def field_named(title: str) -> LedgerField | None:
    """The field a column title or key names (its key, Chinese label, or a known alias), if any."""
    return _BY_TITLE.get(_folded(title))


def title_key(title: str) -> str:
    """A column title as :func:`field_named` compares it (spaces and full-width forms folded), for other title tables."""
    return _folded(title)


# --- reading values -------------------------------------------------------------------------

_DATE = re.compile(
    r"(?P<y>\d{4})\s*(?:[.\-/年]\s*(?P<m>\d{1,2})\s*(?:[.\-/月]\s*(?:(?P<d>\d{1,2})\s*日?)?|月)?)?"
    r"|(?P<y8>\d{4})(?P<m8>\d{2})(?P<d8>\d{2})?"
)
_SERIAL_EPOCH = _dt.date(1899, 12, 30)  # Excel's day 0 (as its 1900 leap-year bug has it)
_MIDNIGHT = re.compile(r"(?:\s+|T)0?0:00(?::00)?$")
_DECIMAL = re.compile(r"[+-]?\d+(?:\.\d+)?", re.ASCII)  # ٣٢ is a digit to Python, not to a form


def parse_date(text: str) -> str:
    """A construction date as kept: ``YYYY-MM`` or ``YYYY-MM-DD`` (or ``YYYY`` alone).

    Reads 2020.03, 2020-03, 2020-03-15, 2020/3, 2020/3/15, 2020年3月15日, 202003, 20200315, and
    a spreadsheet's date-time at midnight (2020-03-15 00:00:00, 2020/3/15 0:00).

    Raises:
        ValueError: saying what is accepted.
    """
    # a date cell as a spreadsheet writes it with its (zero) time: 2020-03-15 00:00:00, 2020/3/15 0:00
    text = _MIDNIGHT.sub("", text.strip()).removesuffix("年")
    m = _DATE.fullmatch(text)
    if not m and text.isascii() and text.isdigit() and 20_000 <= int(text) <= 80_000:
        # not read as that day: a number in a date column may be anything, the day is the person's to say
        serial = _SERIAL_EPOCH + _dt.timedelta(days=int(text))
        raise ValueError(
            f"{text!r} is a spreadsheet's date number ({serial.isoformat()}?): format the column as a date and save "
            "again, or write 2020.03"
        )
    if not m:
        raise ValueError(f"{text!r} is not a date: write 2020.03, 2020-03 or 2020-03-15")
    year = int(m["y"] or m["y8"])
    month_text, day_text = m["m"] or m["m8"], m["d"] or m["d8"]
    if not 1900 <= year <= 2100:
        raise ValueError(f"{text!r}: year {year} is out of range")
    if month_text is None:
        return f"{year:04d}"
    month = int(month_text)
    if not 1 <= month <= 12:
        raise ValueError(f"{text!r}: month {month} does not exist")
    if day_text is None:
        return f"{year:04d}-{month:02d}"
    day = int(day_text)
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    if not 1 <= day <= days:
        raise ValueError(f"{text!r}: {year:04d}-{month:02d} has no day {day}")
    return f"{year:04d}-{month:02d}-{day:02d}"


_STYLE_TOKEN = re.compile(r"YYYY|MM|M|DD|D|[^YMD]+|[YMD]")
_UNITS = re.compile(r"^.*[年月日]")  # 年 after the year, 月 after the month: they go with it


def format_date(kept: str, style: str) -> str:
    """A kept date written in a form's ``style``: ``YYYY.MM``, ``YYYY-MM-DD``, ``YYYY年MM月`` …

    The style's ``YYYY``, ``MM`` and ``DD`` are replaced (``M``/``D`` without padding). A style
    asking for a part the kept date does not have drops it with what belongs to it: its unit
    (年, 月, 日 after it) and a separator next to it (2020-03 in ``YYYY年MM月DD日`` is 2020年03月,
    in ``DD.MM.YYYY`` 03.2020).
    """
    parts = kept.split("-")
    year, month, day = parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""
    values = {"YYYY": year, "MM": month, "M": str(int(month)) if month else "", "DD": day}
    values["D"] = str(int(day)) if day else ""
    # the style as [value, text after it]: a unit goes with the value before it
    pieces: list[tuple[str, str]] = [("", "")]  # text before the first value
    for token in _STYLE_TOKEN.findall(style):
        if token in values:
            pieces.append((token, ""))
        else:
            pieces[-1] = (pieces[-1][0], pieces[-1][1] + token)
    out: list[str] = []
    shown = [not key or bool(values[key]) for key, _ in pieces]
    for n, (key, text) in enumerate(pieces):
        if not shown[n]:
            continue
        unit = _UNITS.match(text) if key else None
        own, between = (unit.group(), text[unit.end() :]) if unit else ("", text)
        later = next((shown[m] for m in range(n + 1, len(pieces))), None)
        # a separator stays between two values shown (and at either end, beside one shown)
        out.append(values[key] if key else "")
        out.append(own + (between if later is not False else ""))
    return "".join(out)


def check_coordinate(kind: Kind, text: str) -> str | None:
    """Why ``text`` is not an acceptable longitude or latitude, or ``None``.

    At least :data:`COORDINATE_DECIMALS` decimals whose sixth is not 0 (a value padded to six places
    is as vague as five), and inside China (:data:`LONGITUDE_RANGE`, :data:`LATITUDE_RANGE`).
    """
    what = "longitude" if kind is Kind.LONGITUDE else "latitude"
    value = text.strip()
    if not _DECIMAL.fullmatch(value):
        return f"{what} {value!r} is not a decimal number (degrees, e.g. 118.376451)"
    decimals = value.partition(".")[2]
    if len(decimals) < COORDINATE_DECIMALS:
        return f"{what} {value} has {len(decimals)} decimals; at least {COORDINATE_DECIMALS} are required"
    if decimals[COORDINATE_DECIMALS - 1] == "0":
        return f"{what} {value}: its 6th decimal is 0 (padded); give the position to the metre"
    low, high = LONGITUDE_RANGE if kind is Kind.LONGITUDE else LATITUDE_RANGE
    if not low <= float(value) <= high:
        return f"{what} {value} is outside China ({low}–{high})"
    return None


def normalise(f: LedgerField, text: str) -> str:
    """The value kept for ``text`` written in field ``f``; ``""`` clears the field.

    Raises:
        LedgerValueError: naming the field and why.
    """
    value = text.strip().replace("\r\n", "\n").replace("\r", "\n")  # a line break as Windows writes it
    if not value:
        return ""
    if len(value) > MAX_TEXT:
        raise LedgerValueError(f.key, f"{len(value)} characters; at most {MAX_TEXT}")
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
        raise LedgerValueError(f.key, "holds control characters")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):  # JSON's "\ud800" alone: no character at all
        raise LedgerValueError(f.key, "holds a lone surrogate (\\ud800-\\udfff), which is no character")
    if f.kind is not Kind.TEXT:
        # a Chinese IME types full-width digits and points (１１８．１２３４５６): the same number, kept in ASCII
        value = unicodedata.normalize("NFKC", value)
    try:
        return _read(f, value)
    except ValueError as exc:
        raise LedgerValueError(f.key, str(exc)) from None


def _read(f: LedgerField, value: str) -> str:
    if f.kind is Kind.TEXT:
        return value
    if f.kind is Kind.DATE:
        return parse_date(value)
    if f.kind in (Kind.LONGITUDE, Kind.LATITUDE):
        reason = check_coordinate(f.kind, value)
        if reason:
            raise ValueError(reason)
        return value
    if f.kind is Kind.YES_NO:
        word = value.lower()
        if word in _YES:
            return "yes"
        if word in _NO:
            return "no"
        raise ValueError(f"{value!r} is not 是/否 (yes/no)")
    if f.kind is Kind.CHOICE:
        word = value.lower()
        for key, words in f.choices.items():
            if word == key or word in (w.lower() for w in words):
                return key
        allowed = "/".join(words[0] for words in f.choices.values())
        raise ValueError(f"{value!r} is not one of {allowed} ({'/'.join(f.choices)})")
    if f.kind is Kind.NUMBER:
        if not _DECIMAL.fullmatch(value) or value.startswith("-"):
            raise ValueError(f"{value!r} is not a number ≥ 0")
        return value.lstrip("+")
    if f.kind is Kind.INTEGER:
        if not (value.isascii() and value.isdigit()):
            raise ValueError(f"{value!r} is not a whole number ≥ 0")
        if f.key == "port" and not 1 <= int(value) <= 65535:
            raise ValueError(f"port {value} is not 1-65535")
        return str(int(value))
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def normalise_all(values: Mapping[str, str]) -> dict[str, str]:
    """:func:`normalise` each of ``values`` (by field key); unknown keys are errors.

    Raises:
        LedgerValueError: for the first key or value that fails (its ``.field`` names it).
    """
    out: dict[str, str] = {}
    for key, text in values.items():
        f = FIELD_BY_KEY.get(key)
        if f is None:
            raise LedgerValueError(key, f"no such ledger field (fields: {', '.join(FIELD_BY_KEY)})")
        out[key] = normalise(f, text)
    return out


# --- the ID's rules -------------------------------------------------------------------------

#: Type codes of a camera (a video channel): 131 camera, 132 IPC (PROTOCOL.md §1.4); the doctor plays only these.
CAMERA_TYPES = frozenset({131, 132})


def codes_text(codes: frozenset[int]) -> str:
    """Type codes as people read them: ``131/132``, ``111-132/200-214/217-299`` (runs of 3 or more as ranges)."""
    runs: list[list[int]] = []
    for code in sorted(codes):
        if runs and code == runs[-1][-1] + 1:
            runs[-1].append(code)
        else:
            runs.append([code])
    return "/".join(f"{r[0]:03d}-{r[-1]:03d}" if len(r) > 2 else "/".join(f"{c:03d}" for c in r) for r in runs)


def _reserved_industry(code: str) -> bool:
    """Whether an industry code is reserved in both editions (PROTOCOL.md §1.3: 15-39, 60-89), so no valid code."""
    n = int(code)
    return 15 <= n <= 39 or 60 <= n <= 89


def check_id(
    value: str, *, types: frozenset[int] | None = CAMERA_TYPES, industry: str = "", network: str = ""
) -> list[str]:
    """Why ``value`` cannot stand in a ledger row, or ``[]``.

    The ID is 20 digits; its type code is one of ``types`` (``None``: any); its industry and network
    codes are not reserved (codes no edition assigns: the rules ask valid codes); positions 9-10 equal
    ``industry`` and position 14 equals ``network`` when those are given (the site's expectation:
    the rules say both reflect the camera's real ownership and never change once assigned).
    """
    try:
        gid = GbId.parse(value)
    except IdError as exc:
        return [str(exc)]
    reasons: list[str] = []
    if types is not None and gid.type_code not in types:
        reasons.append(f"type code {gid.type_code:03d} ({gid.kind.value}) is not {codes_text(types)}")
    if gid.kind is IdKind.UNDEFINED and types is None:
        reasons.append(f"type code {gid.type_code:03d} is not defined")
    if _reserved_industry(gid.industry):
        reasons.append(f"industry code (positions 9-10) {gid.industry} is reserved")
    if gid.network == "9":
        reasons.append("network code (position 14) 9 is reserved")
    if industry and gid.industry != industry:
        reasons.append(f"industry code (positions 9-10) is {gid.industry}, the site's is {industry}")
    if network and gid.network != network:
        reasons.append(f"network code (position 14) is {gid.network}, the site's is {network}")
    return reasons


# --- entries --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the ledger holds for one ID.

    Attributes:
        id: the 20-digit ID (channel, device, or the gateway itself).
        values: field key → kept value (only fields that were set).
        updated_at: wall-clock epoch seconds of the last change.
    """

    id: str
    values: Mapping[str, str] = field(default_factory=dict)
    updated_at: float = 0.0

    def changed(self, changes: Mapping[str, str], now: float) -> LedgerEntry:
        """This entry with kept ``changes`` applied (``""`` removes a field)."""
        values = {**self.values, **changes}
        return LedgerEntry(self.id, {k: v for k, v in values.items() if v}, now)


@dataclass(frozen=True, slots=True)
class Change:
    """One field that a ledger edit or import changes.

    Attributes:
        id: the entry.
        field: the field's key.
        old / new: the kept values before and after (``""``: not set).
    """

    id: str
    field: str
    old: str
    new: str


def diff(entry: LedgerEntry, changes: Mapping[str, str]) -> list[Change]:
    """The :class:`Change` records that applying kept ``changes`` to ``entry`` makes (no-ops left out)."""
    return [
        Change(entry.id, key, entry.values.get(key, ""), new)
        for key, new in changes.items()
        if entry.values.get(key, "") != new
    ]


# --- what a form prints: the ledger over what the device reports ----------------------------------

#: Values that come from the gateway rather than the ledger, by the name a form uses for them.
REPORTED: dict[str, str] = {
    "id": "the 20-digit ID",
    "kind": "channel, device or platform (the gateway itself)",
    "device_id": "the device a channel belongs to (its own ID for a device)",
    "device_name": "that device's name (the operator's, else its own)",
    "status": "ON/OFF as last reported (a channel), online/offline (a device)",
    "civil_code": "the CivilCode the catalog gives, else the ID's first 6 digits",
    "area": "province, city, district and township joined (所在市、县（区）、乡镇（街道）)",
    "type": "what the type code (positions 11-13) names",
    "reported_name": "the name the device reports",
    "manufacturer": "the manufacturer the device reports",
    "reported_model": "the model the device reports",
    "address": "the catalog's Address",
    "reported_ip": "the address the device registers from, or the catalog's IPAddress",
    "reported_port": "the device's SIP port, or the catalog's Port",
    "reported_longitude": "the catalog's Longitude (dropped when invalid)",
    "reported_latitude": "the catalog's Latitude (dropped when invalid)",
}

#: A ledger field left empty shows what the gateway knows instead.
FALLBACKS: dict[str, str] = {
    "name": "reported_name",
    "location": "address",
    "brand": "manufacturer",
    "model": "reported_model",
    "ip": "reported_ip",
    "port": "reported_port",
    "longitude": "reported_longitude",
    "latitude": "reported_latitude",
}


def merge(values: Mapping[str, str], reported: Mapping[str, str], area: tuple[str, str, str]) -> dict[str, str]:
    """One row as forms see it: every ledger field (set, or its fallback) and every reported value.

    Args:
        values: the entry's kept values.
        reported: :data:`REPORTED` values the gateway knows (missing ones are "").
        area: province, city and district named from the civil code, used where the ledger is silent.
    """
    row = {key: reported.get(key, "") for key in REPORTED}
    for f in FIELDS:
        row[f.key] = values.get(f.key) or reported.get(FALLBACKS.get(f.key, ""), "")
    for key, name in zip(("province", "city", "district"), area, strict=True):
        row[key] = row[key] or name
    row["area"] = " ".join(row[k] for k in ("province", "city", "district", "township") if row[k])
    return row


def same_value(key: str, new: str, kept: str, shown: str) -> bool:
    """Whether writing kept value ``new`` into field ``key`` changes nothing.

    ``kept`` is what the ledger holds ("" if nothing), ``shown`` what the row shows (the ledger, or
    the device's own value it falls back to). A value equal to what is shown is no change, and
    neither is a date given less precisely than the one kept (2020-03 where 2020-03-15 is kept):
    forms print dates to the month, and a file exported and read back must change nothing.
    """
    if new == kept:
        return True
    if not new:
        return False  # clearing a kept value is a change
    current = kept or shown
    if new == current:
        return True
    f = FIELD_BY_KEY.get(key)
    if f is not None and f.kind is Kind.DATE and kept:
        return kept.startswith(new + "-")
    if f is not None and shown and not kept:
        try:
            return normalise(f, shown) == new
        except LedgerValueError:
            return False
    return False
