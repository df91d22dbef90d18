"""The authorities' forms the camera ledger (一机一档) is handed in as, and the checks a row must pass first.

A form is a small declarative TOML file, so an integrator adds their own city's form without code::

    name = "integration-list"            # what `gb28181gw ledger export --form` takes
    title = "整合接入清单"
    description = "..."
    date_format = "YYYY年MM月DD日"        # how {date} is written in title rows (optional)

    [[sheets]]
    name = "摄像机"                       # the sheet's name in the workbook (and --sheet)
    rows = "cameras"                      # cameras | devices | platforms
    titles = ["{site}视频监控整合接入清单", "填报日期：{date}"]   # title rows above the header (optional)

    [[sheets.columns]]
    title = "20位编码"                    # the header cell, exactly as the form prints it
    value = "id"                          # a ledger field key, a reported key, or row_number
    width = 24                            # in characters (optional)
    required = true                       # an empty cell is a problem (optional)

    [[sheets.columns]]
    title = "所在市、县（区）、乡镇（街道）"
    value = ["city", "district", "township"]   # several values joined (by `separator`, default "")

    [[sheets.columns]]
    title = "建设时间"
    value = "built"
    format = "YYYY.MM"                    # dates only; the default is YYYY.MM

    [[sheets.columns]]
    title = "管理员密码"
    text = ""                             # a fixed text instead of a value

What a sheet lists (``rows``):

- ``cameras``: every 20-digit channel of every device except directory nodes (business groups
  215 and virtual organisations 216 group channels, they are not equipment). A channel whose type
  code is not a camera's is listed and *flagged*, not left out: a camera its NVR numbered wrongly
  must show up on the form with the reason, or nobody would notice it is missing. ``types``
  lists the type codes a sheet accepts (default 131, 132).
- ``devices``: every registered device (NVRs, IPCs that register themselves, lower platforms).
- ``platforms``: the gateway's own entry (its ID: set its name and the platform fields with
  ``gb28181gw ledger set``) and every registered lower platform (type code 200-299).

Values are shown as people read them: yes/no and choices in Chinese (是, 在用, 保留 …),
dates in the column's ``format``, coordinates exactly as kept. Title placeholders: ``{date}``
(the day of the export), ``{site}`` (the name on the gateway's own entry), ``{form}`` (its title),
``{sheet}``, ``{count}`` (rows).

A file that cannot be used raises :class:`~gb28181gw.errors.FormError` naming the file and the key
(``survey.toml: sheets[1].columns[4].value: no field "polestation" (did you mean pole_number?)``;
indexes count from 0, as in the file's arrays).

:func:`build` lays one sheet out (title rows, header, cells) and :func:`check_rows` says why each
row cannot be handed in as it is (:class:`RowProblem`). Pure: no I/O, no clock (the date is passed in).
"""

from __future__ import annotations

import difflib
import re
import string
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gb28181gw.errors import FormError
from gb28181gw.gb.ledger import (
    CAMERA_TYPES,
    FIELD_BY_KEY,
    REPORTED,
    Kind,
    LedgerField,
    check_coordinate,
    check_id,
    field_named,
    format_date,
    parse_date,
)

#: What a sheet may list.
ROW_KINDS = ("cameras", "devices", "platforms")
#: Type codes each kind of row accepts unless the sheet says otherwise (PROTOCOL.md §1.4).
DEFAULT_TYPES: dict[str, frozenset[int]] = {
    "cameras": CAMERA_TYPES,
    # DVR/NVR/encoder …, an IPC registering by itself, and a lower platform registered as a device
    "devices": frozenset({*range(111, 133), *range(200, 215), *range(217, 300)}),
    "platforms": frozenset({*range(200, 215), *range(217, 300)}),
}
#: Type codes of directory nodes in a catalog: never a row.
DIRECTORY_TYPES = frozenset({215, 216})
#: The value that numbers rows (序号).
ROW_NUMBER = "row_number"
#: Title placeholders.
PLACEHOLDERS = ("date", "site", "form", "sheet", "count")
#: How a date column is written unless it says otherwise: the forms ask to the month.
DEFAULT_DATE_FORMAT = "YYYY.MM"
#: The title of the column a failing row's reasons are written in, after the form's own columns.
PROBLEM_COLUMN = "校验问题"
#: A form file larger than this is not a form.
MAX_FORM_BYTES = 256 * 1024
#: More than these is not a form either (a few KB of TOML can ask thousands of columns of each of
#: 5,000 rows: cells by the hundred million, in the gateway's memory).
MAX_SHEETS = 16
MAX_COLUMNS = 256
MAX_TITLES = 16
#: Excel allows at most 31 characters in a sheet name, and none of these.
_SHEET_NAME_FORBIDDEN = set("[]:*?/\\")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_DATE_STYLE = re.compile(r"[YMD.\-/年月日 ]+")

_FORM_KEYS = {"name", "title", "description", "date_format", "sheets"}
_SHEET_KEYS = {"name", "rows", "titles", "types", "check_site", "columns"}
_COLUMN_KEYS = {"title", "value", "text", "separator", "format", "width", "required", "note"}


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a sheet.

    Attributes:
        title: the header cell.
        values: the keys whose values it shows (joined by ``separator``); empty with ``text``.
        text: a fixed text (``None``: the column shows ``values``).
        separator: between joined values.
        format: for a date column, its style (``YYYY.MM`` …); "" otherwise.
        width: in characters (0: from the title).
        required: an empty cell is a problem.
        note: a remark for whoever fills the form (an XLSX header comment).
    """

    title: str
    values: tuple[str, ...] = ()
    text: str | None = None
    separator: str = ""
    format: str = ""
    width: float = 0
    required: bool = False
    note: str = ""

    @property
    def is_id(self) -> bool:
        """Whether it shows an ID (a cell that must stay text: Excel turns 20 digits into 3.4E+19)."""
        return self.values in (("id",), ("device_id",))

    def cell(self, row: Mapping[str, str], number: int) -> str:
        """What this column shows for ``row`` (the ``number``-th of its sheet, from 1)."""
        if self.text is not None:
            return self.text
        return self.separator.join(
            part for part in (_shown(key, row, number, self.format) for key in self.values) if part
        )


def _shown(key: str, row: Mapping[str, str], number: int, style: str) -> str:
    if key == ROW_NUMBER:
        return str(number)
    value = row.get(key, "")
    f = FIELD_BY_KEY.get(key)
    if not value or f is None:
        return value
    if f.kind is Kind.DATE:
        try:
            return format_date(parse_date(value), style or DEFAULT_DATE_FORMAT)
        except ValueError:
            return value  # shown as it is; check_rows says why
    return f.display(value)


@dataclass(frozen=True, slots=True)
class Sheet:
    """One sheet of a form.

    Attributes:
        name: its name in the workbook.
        rows: what it lists (:data:`ROW_KINDS`).
        titles: title rows above the header (with placeholders).
        columns: its columns, in order.
        types: the ID type codes its rows may have.
        check_site: whether IDs are checked against the site's industry and network codes (the
            rules ask it of cameras: the codes reflect the camera's real ownership).
    """

    name: str
    rows: str
    columns: tuple[Column, ...]
    titles: tuple[str, ...] = ()
    types: frozenset[int] = CAMERA_TYPES
    check_site: bool = True

    @property
    def header(self) -> list[str]:
        return [c.title for c in self.columns]


@dataclass(frozen=True, slots=True)
class Form:
    """A form: see the module docstring.

    Attributes:
        name: the key it is chosen by (``integration-list``).
        title: what it is called (整合接入清单).
        description: a sentence on what it is for.
        sheets: its sheets, in order.
        date_format: how ``{date}`` is written.
    """

    name: str
    title: str
    sheets: tuple[Sheet, ...]
    description: str = ""
    date_format: str = "YYYY年MM月DD日"

    def sheet(self, which: str = "") -> Sheet:
        """The sheet named ``which`` (or numbered, from 1); by default the first camera sheet, else the first.

        Raises:
            FormError: no such sheet (the message lists them).
        """
        if not which:
            return next((s for s in self.sheets if s.rows == "cameras"), self.sheets[0])
        for i, s in enumerate(self.sheets, 1):
            if which in (s.name, str(i)):
                return s
        names = ", ".join(s.name for s in self.sheets)
        raise FormError(f"form {self.name} has no sheet {which!r} (its sheets: {names})")


# --- reading a form file ----------------------------------------------------------------------


def parse_form(text: str, source: str) -> Form:
    """The form in ``text`` (a TOML file's content); ``source`` names it in errors.

    Raises:
        FormError: naming ``source`` and the key at fault.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FormError(f"{source}: not TOML: {exc}") from None
    except RecursionError:
        # tomllib recurses per nested array or inline table: a few KB of [[[[… exhaust the stack
        raise FormError(f"{source}: nested too deeply to be a form") from None
    return _Reader(source).form(data)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, reason: str) -> FormError:
        return FormError(f"{self.source}: {key}: {reason}", hint="see the shipped forms (gb28181gw ledger forms)")

    def text(self, data: Mapping[str, Any], key: str, where: str, *, default: str | None = None) -> str:
        value = data.get(key, default)
        if value is None:
            raise self.fail(f"{where}{key}", "missing")
        if not isinstance(value, str):
            raise self.fail(f"{where}{key}", f"must be text, not {_toml_type(value)}")
        return value

    def flag(self, data: Mapping[str, Any], key: str, where: str, *, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{where}{key}", f"must be true or false, not {_toml_type(value)}")
        return value

    def unique(self, names: list[str], key: str, what: str) -> None:
        """Refuse the second of two equal ``names`` (``key`` formatted with its index)."""
        for i, n in enumerate(names):
            if n in names[:i]:
                raise self.fail(key.format(i), f"{n!r} is the {what}")

    def unknown(self, data: Mapping[str, Any], known: set[str], where: str) -> None:
        for key in data:
            if key not in known:
                raise self.fail(f"{where}{key}", f"unknown key (keys: {', '.join(sorted(known))})")

    def form(self, data: Mapping[str, Any]) -> Form:
        self.unknown(data, _FORM_KEYS, "")
        name = self.text(data, "name", "")
        if not _NAME.fullmatch(name):
            raise self.fail("name", f"{name!r} must be lower-case letters, digits, - and _ (e.g. integration-list)")
        title = self.text(data, "title", "")
        date_format = self.text(data, "date_format", "", default="YYYY年MM月DD日")
        if not _DATE_STYLE.fullmatch(date_format) or "YYYY" not in date_format:
            raise self.fail("date_format", f"{date_format!r} is not a date style (YYYY, MM, DD and separators)")
        sheets = data.get("sheets")
        if not isinstance(sheets, list) or not sheets:
            raise self.fail("sheets", "a form needs at least one [[sheets]]")
        if len(sheets) > MAX_SHEETS:
            raise self.fail("sheets", f"{len(sheets)} sheets; a form has at most {MAX_SHEETS}")
        parsed = tuple(self.sheet(s, f"sheets[{i}].") for i, s in enumerate(sheets))
        self.unique([s.name for s in parsed], "sheets[{}].name", "name of another sheet")
        return Form(name, title, parsed, self.text(data, "description", "", default=""), date_format)

    def sheet(self, data: Any, where: str) -> Sheet:
        if not isinstance(data, dict):
            raise self.fail(where.rstrip("."), "must be a table ([[sheets]])")
        self.unknown(data, _SHEET_KEYS, where)
        name = self.text(data, "name", where)
        if not name or len(name) > 31 or _SHEET_NAME_FORBIDDEN & set(name):
            raise self.fail(f"{where}name", f"{name!r}: a sheet name is 1-31 characters, none of [ ] : * ? / \\")
        rows = self.text(data, "rows", where)
        if rows not in ROW_KINDS:
            raise self.fail(f"{where}rows", f"{rows!r} is not one of {', '.join(ROW_KINDS)}")
        titles = data.get("titles", [])
        if not isinstance(titles, list) or not all(isinstance(t, str) for t in titles):
            raise self.fail(f"{where}titles", "must be a list of texts")
        if len(titles) > MAX_TITLES:
            raise self.fail(f"{where}titles", f"{len(titles)} title rows; at most {MAX_TITLES}")
        for i, t in enumerate(titles):
            self.placeholders(t, f"{where}titles[{i}]")
        types = data.get("types", sorted(DEFAULT_TYPES[rows]))
        if not isinstance(types, list) or not types or not all(isinstance(t, int) and 0 <= t <= 999 for t in types):
            raise self.fail(f"{where}types", "must be a list of type codes (0-999), e.g. [131, 132]")
        check_site = self.flag(data, "check_site", where, default=rows == "cameras")
        columns = data.get("columns")
        if not isinstance(columns, list) or not columns:
            raise self.fail(f"{where}columns", "a sheet needs at least one [[sheets.columns]]")
        if len(columns) > MAX_COLUMNS:
            raise self.fail(f"{where}columns", f"{len(columns)} columns; a sheet has at most {MAX_COLUMNS}")
        parsed = tuple(self.column(c, f"{where}columns[{i}].") for i, c in enumerate(columns))
        self.unique([c.title for c in parsed], where + "columns[{}].title", "title of another column")
        if PROBLEM_COLUMN in (c.title for c in parsed):
            raise self.fail(f"{where}columns", f"{PROBLEM_COLUMN} is the column the export adds for failing rows")
        return Sheet(name, rows, parsed, tuple(titles), frozenset(types), check_site)

    def placeholders(self, text: str, where: str) -> None:
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        except ValueError as exc:
            raise self.fail(where, f"{exc} (write a literal brace as {{{{ or }}}})") from None
        for n in names:
            if n not in PLACEHOLDERS:
                raise self.fail(where, f"no placeholder {{{n}}} (placeholders: {', '.join(PLACEHOLDERS)})")

    def column(self, data: Any, where: str) -> Column:
        if not isinstance(data, dict):
            raise self.fail(where.rstrip("."), "must be a table ([[sheets.columns]])")
        self.unknown(data, _COLUMN_KEYS, where)
        title = self.text(data, "title", where).strip()
        if not title:
            raise self.fail(f"{where}title", "empty")
        has_value, has_text = "value" in data, "text" in data
        if has_value == has_text:
            raise self.fail(where.rstrip("."), "a column has either a value or a fixed text")
        text = self.text(data, "text", where) if has_text else None
        raw = data.get("value", [])
        keys = [raw] if isinstance(raw, str) else raw
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or (has_value and not keys):
            raise self.fail(f"{where}value", "must be a field key or a list of them")
        for k in keys:
            self.known(k, f"{where}value")
        style = self.text(data, "format", where, default="")
        if style:
            dates = [k for k in keys if k in FIELD_BY_KEY and FIELD_BY_KEY[k].kind is Kind.DATE]
            if not dates:
                raise self.fail(f"{where}format", "only a date column has a format")
            if not _DATE_STYLE.fullmatch(style) or "YYYY" not in style:
                raise self.fail(f"{where}format", f"{style!r} is not a date style (YYYY.MM, YYYY-MM-DD, YYYY年MM月 …)")
        width = data.get("width", 0)
        if isinstance(width, bool) or not isinstance(width, int | float) or not 0 <= width <= 255:
            raise self.fail(f"{where}width", "must be a number of characters, 0-255")
        required = self.flag(data, "required", where, default=False)
        if required and has_text:
            raise self.fail(f"{where}required", "a fixed text is never missing")
        return Column(
            title,
            tuple(keys),
            text,
            self.text(data, "separator", where, default=""),
            style,
            float(width),
            required,
            self.text(data, "note", where, default=""),
        )

    def known(self, key: str, where: str) -> None:
        if key in FIELD_BY_KEY or key in REPORTED or key == ROW_NUMBER:
            return
        by_title = field_named(key)
        if by_title is not None:
            raise self.fail(where, f'no field "{key}" (did you mean {by_title.key}? values are keys, titles are free)')
        keys = [*FIELD_BY_KEY, *REPORTED, ROW_NUMBER]
        # pole_number for polestation: the word people remember first, then the nearest spelling
        close = [k for k in keys if "_" in k and key.startswith(k.partition("_")[0])][:1]
        close = close or difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
        suggestion = f" (did you mean {close[0]}?)" if close else " (gb28181gw ledger set --help lists the fields)"
        raise self.fail(where, f'no field "{key}"{suggestion}')


def _toml_type(value: object) -> str:
    return {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def import_titles(forms: Iterable[Form]) -> dict[str, str | None]:
    """What each column title of ``forms`` means when a filled-in form is read back (an import).

    A column showing one ledger field (or the ID) gives that key; one that is derived or fixed
    (序号, a joined 所在市、县（区）、乡镇（街道）, a reported value, the empty password column) and
    :data:`PROBLEM_COLUMN` give ``None``: known, not imported. A title two forms use for different
    things is left out (the import's own title matching decides).
    """
    found: dict[str, str | None] = {PROBLEM_COLUMN: None}
    clashes: set[str] = set()
    for form in forms:
        for sheet in form.sheets:
            for c in sheet.columns:
                key = c.values[0] if len(c.values) == 1 and c.text is None else None
                meaning = key if key == "id" or key in FIELD_BY_KEY else None
                if c.title in found and found[c.title] != meaning:
                    clashes.add(c.title)
                found.setdefault(c.title, meaning)
    return {t: m for t, m in found.items() if t not in clashes}


# --- laying a sheet out and checking its rows -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why one row of a sheet cannot be handed in as it is.

    Attributes:
        sheet: the sheet's name.
        row: the row's number on its sheet (its 序号, from 1).
        id: the row's ID.
        column: the title of the column at fault ("" for the row as a whole).
        reason: in words.
    """

    sheet: str
    row: int
    id: str
    column: str
    reason: str


@dataclass(frozen=True, slots=True)
class Table:
    """One sheet laid out: what a file shows.

    Attributes:
        sheet: the sheet.
        titles: its title rows, placeholders filled.
        header: its header cells.
        rows: each row's cells, in the header's order.
        ids: each row's ID.
        problems: every row's problems, in row order.
    """

    sheet: Sheet
    titles: list[str]
    header: list[str]
    rows: list[list[str]]
    ids: list[str]
    problems: list[RowProblem]

    def reasons(self, number: int) -> str:
        """The problems of row ``number`` (from 1) as one cell's text ("" when it has none)."""
        return self.every_reason().get(number, "")

    def every_reason(self) -> dict[int, str]:
        """:meth:`reasons` of every failing row, by row number: in one pass (a file asks for each of
        thousands of rows, and searching every problem for each was quadratic)."""
        by_row: dict[int, list[str]] = {}
        for p in self.problems:
            by_row.setdefault(p.row, []).append(f"{p.column}: {p.reason}" if p.column else p.reason)
        return {row: "；".join(texts) for row, texts in by_row.items()}


@dataclass(frozen=True, slots=True)
class Site:
    """What a form is filled with besides the rows.

    Attributes:
        date: the day of the export (``YYYY-MM-DD``).
        name: the name on the gateway's own entry ({site}).
        industry / network: the site's codes (``[ledger]``), "" when not set.
    """

    date: str
    name: str = ""
    industry: str = ""
    network: str = ""


def build(form: Form, sheet: Sheet, rows: Sequence[Mapping[str, str]], site: Site) -> Table:
    """Lay ``rows`` (as :meth:`LedgerService.row` gives them) out on ``sheet`` and check them."""
    values = {
        "date": format_date(site.date, form.date_format),
        "site": site.name,
        "form": form.title,
        "sheet": sheet.name,
        "count": str(len(rows)),
    }
    return Table(
        sheet,
        [t.format_map(values) for t in sheet.titles],
        sheet.header,
        [[c.cell(row, n) for c in sheet.columns] for n, row in enumerate(rows, 1)],
        [row.get("id", "") for row in rows],
        check_rows(sheet, rows, industry=site.industry, network=site.network),
    )


def check_rows(
    sheet: Sheet, rows: Sequence[Mapping[str, str]], *, industry: str = "", network: str = ""
) -> list[RowProblem]:
    """Every reason a row of ``sheet`` cannot be handed in (PROTOCOL.md §1: the ID's rules).

    The ID is well-formed with one of the sheet's type codes and, on a sheet that checks the site,
    the site's industry and network codes; coordinates have 6 decimals, the 6th not 0, inside
    China; dates parse; required columns are filled; no ID is on two rows.
    """
    problems: list[RowProblem] = []
    id_title = next((c.title for c in sheet.columns if c.is_id), "")
    first: dict[str, int] = {}
    for number, row in enumerate(rows, 1):
        id_ = row.get("id", "")

        def add(column: str, reason: str, number: int = number, id_: str = id_) -> None:
            problems.append(RowProblem(sheet.name, number, id_, column, reason))

        if id_ in first:
            add(id_title, f"{id_} is also on row {first[id_]}")
        first.setdefault(id_, number)
        site = {"industry": industry, "network": network} if sheet.check_site else {}
        for reason in check_id(id_, types=sheet.types, **site):
            add(id_title, reason)
        for c in sheet.columns:
            if c.text is not None:
                continue
            if c.required and not c.cell(row, number).strip():  # a name of blanks is no name
                add(c.title, "required, but empty")
            for key in c.values:
                f = FIELD_BY_KEY.get(key)
                value = row.get(key, "")
                if f is None or not value:
                    continue
                why = _value_problem(f, value)
                if why:
                    add(c.title, why)
    return problems


def _value_problem(f: LedgerField, value: str) -> str | None:
    if f.kind in (Kind.LONGITUDE, Kind.LATITUDE):
        return check_coordinate(f.kind, value)
    if f.kind is Kind.DATE:
        try:
            parse_date(value)
        except ValueError as exc:
            return str(exc)
    return None
