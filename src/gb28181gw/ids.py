"""GB/T 28181 unified IDs (统一编码): the 20-digit code and civil-code catalog nodes.

Layout (GB/T 28181-2016 Annex D, 2022 Annex E)::

    positions 1-2 province | 3-4 city | 5-6 district | 7-8 grassroots   (1-8: centre code)
              9-10 industry | 11-13 type | 14 network | 15-20 serial

Civil-code nodes of a catalog tree are 2, 4, 6 or 8 digits (province, city,
district, grassroots unit).

Two modes:

* **lenient** (default): a value is valid if it is 20 ASCII digits (or a 2/4/6/8
  digit civil code where those are allowed). Anything odd — an unknown province,
  a type code outside the defined ranges, a reserved network digit, a non-zero
  district under a zero city — becomes a *warning* on the parsed :class:`GbId`.
  This is what real deployments need: factory-default IDs and the placeholder
  domain ``3402000000`` are everywhere (PROTOCOL.md §1.7).
* **strict**: those warnings are errors, except the network digit, which is
  never a reason to reject (§1.1).

Errors (:class:`gb28181gw.errors.IdError`) name the wrong positions and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from gb28181gw.divisions import NO_CITY, division_name
from gb28181gw.errors import IdError

PROVINCES: dict[str, str] = {
    "11": "北京", "12": "天津", "13": "河北", "14": "山西", "15": "内蒙古", "21": "辽宁", "22": "吉林",
    "23": "黑龙江", "31": "上海", "32": "江苏", "33": "浙江", "34": "安徽", "35": "福建", "36": "江西",
    "37": "山东", "41": "河南", "42": "湖北", "43": "湖南", "44": "广东", "45": "广西", "46": "海南",
    "50": "重庆", "51": "四川", "52": "贵州", "53": "云南", "54": "西藏", "61": "陕西", "62": "甘肃",
    "63": "青海", "64": "宁夏", "65": "新疆", "71": "台湾", "81": "香港", "82": "澳门",
}  # fmt: skip

#: Industry codes as GB/T 28181-2022 Table E.2 names them. Codes 43-59 changed meaning
#: between editions, so the code is described, never acted upon (PROTOCOL.md §1.3).
INDUSTRIES: dict[str, str] = {
    "00": "社会治安路面接入 (public security, road)",
    "01": "社会治安社区接入 (public security, community)",
    "02": "社会治安内部接入 (public security, internal)",
    "03": "社会治安其他接入 (public security, other)",
    "04": "交通路面接入 (traffic, road)",
    "05": "交通卡口接入 (traffic, checkpoint)",
    "06": "交通内部接入 (traffic, internal)",
    "07": "交通其他接入 (traffic, other)",
    "08": "城市管理接入 (city management)",
    "09": "卫生环保接入 (health, environment)",
    "10": "商检海关接入 (inspection, customs)",
    "11": "教育部门接入 (education)",
    "12": "民航接入 (civil aviation, 2022)",
    "13": "铁路接入 (railway, 2022)",
    "14": "航运接入 (shipping, 2022)",
}


def industry_name(code: str) -> str:
    """A description of an industry code (positions 9-10)."""
    name = INDUSTRIES.get(code)
    if name is not None:
        return name
    n = int(code)
    if 15 <= n <= 39:
        return "预留 (reserved, government)"
    if 40 <= n <= 59:
        return "行业接入 (enterprise / GB/T 4754 sector; meaning differs between 2016 and 2022)"
    if 60 <= n <= 89:
        return "预留 (reserved)"
    return "自定义 (custom, 2022) / reserved (2016)"


TYPE_NAMES: dict[int, str] = {
    111: "DVR", 112: "视频服务器 (video server)", 113: "编码器 (encoder)", 114: "解码器 (decoder)",
    115: "视频切换矩阵 (video matrix)", 116: "音频切换矩阵 (audio matrix)", 117: "报警控制器 (alarm controller)",
    118: "NVR", 120: "在线视频图像信息采集系统 (2022)", 121: "视频卡口 (video checkpoint, 2022)",
    122: "多目设备 (multi-sensor device, 2022)", 123: "停车场出入口控制设备 (2022)",
    124: "人员出入口控制设备 (2022)", 125: "安检设备 (2022)", 130: "HVR",
    131: "摄像机 (camera)", 132: "网络摄像机 (IPC)", 133: "显示器 (display)",
    134: "报警输入设备 (alarm input)", 135: "报警输出设备 (alarm output)", 136: "语音输入设备 (audio input)",
    137: "语音输出设备 (audio output)", 138: "移动传输设备 (mobile transmission)", 139: "其他外围设备 (other peripheral)",
    140: "报警输出设备 (relay alarm output, 2022)", 141: "道闸 (barrier gate, 2022)", 142: "智能门 (smart door, 2022)",
    143: "凭证识别单元 (credential reader, 2022)",
    200: "中心信令控制服务器 (SIP server / platform)", 201: "Web应用服务器 (web application server)",
    202: "媒体分发服务器 (media distribution server)", 203: "代理服务器 (proxy server)",
    204: "安全服务器 (security server)", 205: "报警服务器 (alarm server)", 206: "数据库服务器 (database server)",
    207: "GIS服务器 (GIS server)", 208: "管理服务器 (management server)", 209: "接入网关 (access gateway)",
    210: "媒体存储服务器 (media storage server)", 211: "信令安全路由网关 (signalling security gateway)",
    215: "业务分组 (business group)", 216: "虚拟组织 (virtual organisation)",
    300: "中心用户 (centre user)", 400: "终端用户 (terminal user)",
    500: "视频图像信息综合应用平台 (integrated application platform)", 501: "运维管理平台 (O&M platform)",
    502: "视频分析系统 (video analysis system, 2022)", 503: "视频图像数据库 (video image database, 2022)",
    505: "视频分析设备 (video analysis device, 2022)",
}  # fmt: skip

NETWORKS_2022: dict[str, str] = {
    "0": "公安视频传输网", "1": "公安视频传输网", "2": "行业专网", "3": "政法信息网", "4": "公安移动信息网",
    "5": "公安信息网", "6": "电子政务外网", "7": "互联网等公共网络", "8": "专线", "9": "预留 (reserved)",
}  # fmt: skip
NETWORKS_2016: dict[str, str] = {
    "0": "监控报警专网", "1": "监控报警专网", "2": "监控报警专网", "3": "监控报警专网", "4": "监控报警专网",
    "5": "公安信息网", "6": "政务网", "7": "Internet", "8": "社会资源接入网", "9": "预留 (reserved)",
}  # fmt: skip


class IdKind(Enum):
    """What an ID denotes, from its length and type code (PROTOCOL.md §1.6)."""

    DEVICE = "device"  # 111-130: front-end main devices (DVR, NVR, encoder …)
    CHANNEL = "channel"  # 131-199: peripherals, normally catalog channels
    PLATFORM = "platform"  # 200-214, 217-299: platform devices (SIP server, gateways …)
    BUSINESS_GROUP = "business-group"  # 215
    VIRTUAL_ORG = "virtual-organisation"  # 216
    USER = "user"  # 300-499
    EXTERNAL_SERVER = "external-server"  # 500-599
    EXTENSION = "extension"  # 600-999
    UNDEFINED = "undefined"  # 000-110: no meaning in either edition
    CIVIL_CODE = "civil-code"  # 2/4/6/8 digits


def type_kind(code: int) -> IdKind:
    """The kind of a 3-digit type code (positions 11-13)."""
    if 111 <= code <= 130:
        return IdKind.DEVICE
    if 131 <= code <= 199:
        return IdKind.CHANNEL
    if code == 215:
        return IdKind.BUSINESS_GROUP
    if code == 216:
        return IdKind.VIRTUAL_ORG
    if 200 <= code <= 299:
        return IdKind.PLATFORM
    if 300 <= code <= 499:
        return IdKind.USER
    if 500 <= code <= 599:
        return IdKind.EXTERNAL_SERVER
    if 600 <= code <= 999:
        return IdKind.EXTENSION
    return IdKind.UNDEFINED


def type_name(code: int) -> str:
    """A description of a type code."""
    name = TYPE_NAMES.get(code)
    if name is not None:
        return name
    kind = type_kind(code)
    return {
        IdKind.DEVICE: "前端主设备扩展 (front-end main device, extension)",
        IdKind.CHANNEL: "前端外围设备扩展 (front-end peripheral, extension)",
        IdKind.PLATFORM: "平台设备扩展 (platform device, extension)",
        IdKind.USER: "用户 (user role)",
        IdKind.EXTERNAL_SERVER: "平台外接服务器扩展 (external server, extension)",
        IdKind.EXTENSION: "扩展类型 (extension type)",
    }.get(kind, "未定义 (undefined)")


CIVIL_LEVELS = {2: "province", 4: "city", 6: "district", 8: "grassroots unit"}


@dataclass(frozen=True, slots=True, init=False)
class GbId:
    """A validated GB/T 28181 ID (20 digits) or civil code (2/4/6/8 digits).

    Build with :meth:`parse`. The text is kept exactly: IDs are never rewritten
    (PROTOCOL.md §9.9).

    Attributes:
        value: the ID text.
        warnings: oddities found in lenient mode (empty when clean).
    """

    value: str
    warnings: tuple[str, ...] = field(default=(), compare=False)

    # Written out, not left to dataclasses (init=False), as Credentials' is: the generated __init__
    # stays interpreted under mypyc (~3,700 instructions), one per device ID a registrar first sees
    def __init__(self, value: str, warnings: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "warnings", warnings)

    @classmethod
    def parse(cls, text: str, *, strict: bool = False, allow_civil: bool = False) -> GbId:
        """Validate ``text``.

        Args:
            text: the ID; surrounding white space is an error, not trimmed, since
                IDs must round-trip unchanged.
            strict: turn structural oddities into errors (see module docstring).
            allow_civil: also accept 2/4/6/8-digit civil codes (catalog nodes,
                ``CivilCode`` fields).

        Raises:
            IdError: naming the wrong positions and why.
        """
        if not isinstance(text, str):
            raise IdError(repr(text), "an ID must be text")
        if not (text.isdigit() and text.isascii()):
            for i, ch in enumerate(text, 1):
                if not ("0" <= ch <= "9"):
                    raise IdError(text, f"{ch!r} is not a digit", (i, i))
        n = len(text)
        if n in CIVIL_LEVELS:
            if not allow_civil:
                raise IdError(text, f"has {n} digits: a civil code, but a 20-digit ID is required here")
            warnings = _check_centre(text.ljust(8, "0"), strict, n)
            return cls(text, tuple(warnings))
        if n != 20:
            allowed = "20 digits, or 2/4/6/8 for a civil code" if allow_civil else "20 digits"
            raise IdError(text, f"has {n} digits; expected {allowed}")
        # a site's IDs share a handful of centre codes: each is judged once (_centre_warnings)
        warnings = list(_centre_warnings(text[:8], strict))
        code = int(text[10:13])
        if type_kind(code) is IdKind.UNDEFINED:
            msg = f"type code {text[10:13]} is not defined (types start at 111)"
            if strict:
                raise IdError(text, msg, (11, 13))
            warnings.append(f"positions 11-13: {msg}")
        if text[13] == "9":
            warnings.append("position 14: network identifier 9 is reserved")
        return cls(text, tuple(warnings))

    @classmethod
    def is_valid(cls, text: str, *, strict: bool = False, allow_civil: bool = False) -> bool:
        """Whether :meth:`parse` accepts ``text``."""
        try:
            cls.parse(text, strict=strict, allow_civil=allow_civil)
        except IdError:
            return False
        return True

    def __str__(self) -> str:
        return self.value

    @property
    def is_civil_code(self) -> bool:
        """A 2/4/6/8-digit civil-code catalog node."""
        return len(self.value) != 20

    @property
    def centre_code(self) -> str:
        """Positions 1-8 (padded with zeros for a civil code)."""
        return self.value[:8].ljust(8, "0")

    @property
    def domain(self) -> str:
        """Positions 1-10: the SIP domain by convention (GB/T 28181-2022 §6.1.2)."""
        return self.value[:10]

    @property
    def industry(self) -> str:
        """Positions 9-10."""
        return self.value[8:10]

    @property
    def type_code(self) -> int:
        """Positions 11-13 as a number (0 for a civil code)."""
        return int(self.value[10:13]) if len(self.value) == 20 else 0

    @property
    def network(self) -> str:
        """Position 14."""
        return self.value[13:14]

    @property
    def serial(self) -> str:
        """Positions 15-20."""
        return self.value[14:20]

    @property
    def kind(self) -> IdKind:
        """What the ID denotes; never derive behaviour from it alone (PROTOCOL.md §1.7 rule 5)."""
        if self.is_civil_code:
            return IdKind.CIVIL_CODE
        return type_kind(self.type_code)

    def describe(self) -> list[tuple[str, str, str]]:
        """Rows of (positions, digits, meaning) explaining every field; divisions named (GB/T 2260)."""
        v = self.value
        centre = v[:8]
        province = division_name(v[:2]) or PROVINCES.get(v[:2])
        rows = [("1-2", v[:2], f"province {province or '(unknown code)'}")]
        levels = (("3-4", 4, "city", "provincial centre"), ("5-6", 6, "district/county", "city-level centre"))
        for positions, size, level, none in levels:
            if len(centre) < size:
                break
            digits = centre[size - 2 : size]
            if digits == "00":
                rows.append((positions, digits, f"{level}: none ({none})"))
                continue
            name = division_name(centre[:size])
            if name in NO_CITY:  # a municipality's districts, or counties the province rules itself
                name = f"{name} (no city between: ruled by the province)"
            rows.append((positions, digits, f"{level} {name}" if name else f"{level} (not in GB/T 2260)"))
        if len(centre) == 8:
            base = centre[6:8]
            rows.append(("7-8", base, "grassroots unit" if base != "00" else "grassroots unit: none"))
        if self.is_civil_code:
            rows.append(("kind", str(len(v)), f"civil-code node ({CIVIL_LEVELS[len(v)]} level)"))
            return rows
        return [
            *rows,
            ("9-10", v[8:10], f"industry {industry_name(v[8:10])}"),
            ("11-13", v[10:13], f"type {type_name(self.type_code)} [{self.kind.value}]"),
            ("14", v[13], f"network {NETWORKS_2022[v[13]]} (2016: {NETWORKS_2016[v[13]]})"),
            ("15-20", v[14:20], "serial"),
        ]


#: Warnings of the 8-digit centre codes judged by :func:`_centre_warnings` (cleared when full).
_CENTRE_WARNINGS: dict[tuple[str, bool], tuple[str, ...]] = {}
_CENTRE_KEPT = 4096


def _centre_warnings(centre: str, strict: bool) -> tuple[str, ...]:
    """``_check_centre(centre, strict, 8)``, remembered per centre code.

    Why: a registration storm parses every camera's new 20-digit ID once, and the cameras of a
    site share a few centre codes (positions 1-8), so the same check ran thousands of times a
    second with the same answer (~1.5 µs each). It is a pure function of its arguments; a centre
    it refuses (``strict``) raises each time and is not remembered.
    """
    key = (centre, strict)
    found = _CENTRE_WARNINGS.get(key)
    if found is None:
        found = tuple(_check_centre(centre, strict, 8))
        if len(_CENTRE_WARNINGS) >= _CENTRE_KEPT:
            _CENTRE_WARNINGS.clear()
        _CENTRE_WARNINGS[key] = found
    return found


def _check_centre(centre: str, strict: bool, significant: int) -> list[str]:
    """Check positions 1-8: province known, unused tail levels zero-padded (§1.1)."""
    warnings: list[str] = []

    def flag(positions: tuple[int, int], reason: str) -> None:
        if strict:
            raise IdError(centre if significant == 8 else centre[:significant], reason, positions)
        first, last = positions
        warnings.append(f"positions {first}-{last}: {reason}")

    if centre[:2] not in PROVINCES:
        flag((1, 2), f"province code {centre[:2]} is not a GB/T 2260 province")
    levels = [centre[2:4], centre[4:6], centre[6:8]]
    for i in range(2):
        if levels[i] == "00":
            for j in range(i + 1, 3):
                if levels[j] != "00":
                    first = 3 + 2 * j
                    flag((first, first + 1), f"{levels[j]} under an empty higher level must be 00")
                    break
            break
    return warnings


def is_id_prefix(text: str) -> bool:
    """Whether ``text`` can begin an ID: 1-20 ASCII digits (a whole ID, or a region such as 340202).

    What ID filters and a superior's shares accept.
    """
    return 1 <= len(text) <= 20 and text.isascii() and text.isdigit()


# what Excel makes of a 20-digit ID in a General-format cell: 3.402E+19 (the digits are gone)
_SCIENTIFIC = re.compile(r"\d(?:\.\d+)?[eE]\+\d+")


def spreadsheet_mangled(text: str) -> str | None:
    """Why ``text`` is an ID a spreadsheet turned into a number (``3.402E+19``), or ``None``.

    A 20-digit ID typed into a General-format cell is kept as a floating-point number: it shows
    in scientific notation and keeps 15 significant digits, so the ID cannot be read back.
    """
    if not _SCIENTIFIC.fullmatch(text):
        return None
    return (
        f"{text!r}: a spreadsheet turned this ID into a number and lost its digits; "
        "format the column as Text and enter the IDs again"
    )


def parse_id(text: str, *, strict: bool = False) -> GbId:
    """Shorthand for ``GbId.parse(text, strict=strict)`` (20 digits only)."""
    return GbId.parse(text, strict=strict)
