"""Names of China's administrative divisions (GB/T 2260), for civil codes and the first digits of IDs.

A 20-digit ID begins with its centre's civil code (PROTOCOL.md §1.1): province (2 digits),
prefecture-level city (4), county or district (6), grassroots unit (8). The names come from
``data/divisions.csv`` (its header says where from and when); the grassroots unit (digits 7-8:
a police station or access unit) has no national name table, so it is never named here.

The table is read once, on first use. It is data shipped with the package, like a time-zone
database: the core stays free of I/O in the sense that matters (no sockets, no clocks).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

#: Entries at city level that name no city: the districts of a municipality ("市辖区"), its counties
#: ("县"), or counties ruled directly by the province ("省直辖县级行政区划"). An area shows no city then.
NO_CITY = frozenset({"市辖区", "县", "省直辖县级行政区划", "自治区直辖县级行政区划"})


@functools.cache
def _table() -> dict[str, str]:
    text = resources.files("gb28181gw").joinpath("data/divisions.csv").read_text(encoding="utf-8")
    table: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line == "code,name":
            continue
        code, _, name = line.partition(",")
        table[code] = name
    return table


@dataclass(frozen=True, slots=True)
class Area:
    """The named divisions a civil code lies in ("" where a level is not named or not known).

    Attributes:
        code: the civil code looked up (2, 4, 6 or 8 digits; longer input is cut to 6).
        province: 省级, e.g. 安徽省.
        city: 地级, e.g. 芜湖市 ("" for a municipality's districts).
        district: 县级, e.g. 镜湖区.
        unknown: the leading digits that were given but name no division (e.g. "3499").
    """

    code: str
    province: str = ""
    city: str = ""
    district: str = ""
    unknown: str = ""

    @property
    def names(self) -> list[str]:
        """The known names, province first."""
        return [n for n in (self.province, self.city, self.district) if n]

    def __str__(self) -> str:
        return " ".join(self.names)


def area_of(code: str) -> Area:
    """The divisions of ``code`` (a civil code, or an ID whose first 6 digits are one).

    Zero pairs mean "this level and below not given" (``340000`` is the province only).
    """
    digits = code[:6] if code.isascii() and code.isdigit() else ""
    table = _table()
    names = ["", "", ""]
    unknown = ""
    for level, size in enumerate((2, 4, 6)):
        part = digits[:size]
        if len(part) < size or part.endswith("00"):
            break
        name = table.get(part)
        if name is None:
            unknown = part
            break
        names[level] = "" if level == 1 and name in NO_CITY else name
    return Area(digits, names[0], names[1], names[2], unknown)


def division_name(code: str) -> str | None:
    """The name of exactly this 2, 4 or 6-digit division, or ``None``."""
    return _table().get(code)
