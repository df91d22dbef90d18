"""Reading a ledger table (CSV or XLSX, as people fill it in) into edits of the camera ledger.

The shell reads a file into rows of cell text, each with its line (its row in the spreadsheet);
:func:`read_table` finds the header, maps each column title to a ledger field, and turns every
row below into a :class:`FileRow` (an ID and the values given) or a :class:`FileProblem` saying
which line, which column and why. Values stay text: the ledger service reads and checks them
(``gb/ledger.py`` :func:`~gb28181gw.gb.ledger.normalise`), since only it knows which IDs exist.

Rules, chosen for tables made by hand in Excel:

- **The header** is the first of the first :data:`HEADER_SEARCH_ROWS` non-blank rows that holds an
  ID column title (20位编码, 国标编码, 设备编码, 通道编码, 编码, ID …; any title ending in 编码 or
  ID that names no other field). Rows above it are a form's title rows and are skipped.
- **Columns** are mapped by :func:`~gb28181gw.gb.ledger.field_named` (key, Chinese label, alias;
  a note in brackets, 安装位置（必填）, is ignored when the whole title names nothing),
  after the caller's ``extra_titles`` (a shipped form's own titles; ``None`` for a column known
  but not imported, such as a form's derived area column) and :data:`NOT_IMPORTED` (序号). A
  title that names nothing is reported, never silently dropped; two columns naming one field are
  reported and neither is read (which one is meant cannot be told).
- **Empty cells give no value**: a blank cell (or a filler: ``-``, ``/``, ``—``) leaves the field
  as it is. Forms are handed in with blanks and dashes in columns nobody fills, and an export read
  back must change nothing, so neither can mean "clear". To clear a field write
  :data:`CLEAR_MARK` (``（清空）``, ASCII parentheses too): a word nobody types by accident.
  A ``'`` before ``=``, ``+``, ``-`` or ``@`` is dropped: it is what a CSV export puts there so that
  Excel keeps the cell text, not part of the value.
- **Rows**: blank rows are skipped; a row whose ID cell is not a 20-digit ID (Excel's
  ``3.402E+19`` included), repeats an earlier row's ID (both are left out), or holds a value in a column without a
  title (more cells than the header) is reported and left out whole: never half a row.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from gb28181gw.errors import IdError
from gb28181gw.gb.ledger import FIELD_BY_KEY, field_named, title_key
from gb28181gw.ids import GbId, spreadsheet_mangled

#: How many non-blank rows from the top are searched for the header (a form's title rows come first).
HEADER_SEARCH_ROWS = 10
#: The ``extra_titles`` value (and :attr:`FileColumn.field`) of the ID column.
ID = "id"
#: A cell that clears its field (ASCII ``(清空)`` is read the same).
CLEAR_MARK = "（清空）"
_CLEAR = frozenset({title_key(CLEAR_MARK), "[清空]", "<清空>"})
#: Cells that give no value, as a blank does: what people put in a column they do not fill.
FILLERS = frozenset({"-", "--", "—", "——", "－", "/", "／", "\\"})

#: ID column titles, best first: a header holding two picks the better.
ID_TITLES: tuple[str, ...] = tuple(
    title_key(t)
    for t in (
        "20位编码", "20位国标编码", "国标编码", "通道国标编码", "通道编码", "摄像机编码", "点位编码",
        "国标ID", "通道ID", "设备国标编码", "设备编码", "设备ID", "编码", "ID", "DeviceID", "ChannelID",
    )
)  # fmt: skip
#: Titles every table may have that are known and not imported (a row's number).
NOT_IMPORTED: tuple[str, ...] = ("序号", "行号", "No.", "#")
_REMARK = re.compile(r"\([^)]*\)|\[[^\]]*\]")  # 20位编码（必填） is an ID title too
_ID_TITLE_MAX = 12  # characters
#: A cell a CSV export kept from becoming a formula ('=…, '-…): the ' is not part of the value.
_GUARDED = re.compile(r"'[=+\-@]")
_WIDE_DIGITS = {0xFF10 + d: ord("0") + d for d in range(10)}
_NOT_ID = ("区划", "行政", "邮政", "序号")  # 行政区划编码 is a civil code, not an ID


def column_letter(index: int) -> str:
    """A spreadsheet's name of the 0-based column ``index``: A … Z, AA …"""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


@dataclass(frozen=True, slots=True)
class FileColumn:
    """One column of the header.

    Attributes:
        index: 0-based.
        title: as written.
        field: the ledger field key it fills, :data:`ID` for the ID column, ``None`` if not read.
        known: ``False`` for a title that names nothing (reported).
    """

    index: int
    title: str
    field: str | None
    known: bool = True

    @property
    def where(self) -> str:
        """``C (品牌)``: how a problem names it."""
        return f"{column_letter(self.index)} ({self.title})" if self.title else column_letter(self.index)


@dataclass(frozen=True, slots=True)
class FileProblem:
    """Something wrong in the file.

    Attributes:
        line: the row of the file (the header's for a column problem; 0 if the file has none).
        reason: in words.
        id: the row's ID, if it has a readable one.
        column: the column at fault (``C (品牌)``), if one is.
        field: the ledger field at fault, if one is.
    """

    line: int
    reason: str
    id: str = ""
    column: str = ""
    field: str = ""


@dataclass(frozen=True, slots=True)
class FileRow:
    """One row to apply: the values given for an ID (``""`` clears a field, see :data:`CLEAR_MARK`).

    Attributes:
        line: its row in the file.
        id: the 20-digit ID.
        values: field key → text as written.
    """

    line: int
    id: str
    values: dict[str, str]


@dataclass(frozen=True, slots=True)
class LedgerTable:
    """What :func:`read_table` made of a table.

    Attributes:
        header_line: the header's row (0: none found, then there are no rows).
        columns: the header's columns, in order.
        rows: the rows that can be applied.
        problems: every problem, in the order of the file.
        blank: how many blank rows under the header were skipped.
    """

    header_line: int
    columns: tuple[FileColumn, ...]
    rows: list[FileRow] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    blank: int = 0

    def column_of(self, key: str) -> FileColumn | None:
        """The column read into field ``key``, if one is."""
        return next((c for c in self.columns if c.field == key), None)


def _id_rank(title: str, extra: Mapping[str, str | None]) -> int | None:
    """How well ``title`` names the ID column (lower is better), or ``None`` if it does not."""
    key = title_key(title)
    if key in extra:
        return -1 if extra[key] == ID else None
    if not key or field_named(title) is not None or any(word in key for word in _NOT_ID):
        return None
    bare = _REMARK.sub("", key)
    for rank, known in enumerate(ID_TITLES):
        if bare == known:
            return rank
    # a short title only: a form's note row (国标编码须填写20位数字) is not a header
    if len(bare) <= _ID_TITLE_MAX and (bare.endswith(("编码", "id")) or "国标" in bare):
        return len(ID_TITLES)
    return None


def _clean_id(cell: str) -> str:
    """An ID cell without what people add to keep Excel from making it a number (``'``, ``="…"``), in ASCII digits."""
    text = cell.strip()
    if text.startswith('="') and text.endswith('"'):
        text = text[2:-1]
    # a Chinese IME in full-width mode types ３４０２…: the same digits (only digits: nothing else is folded)
    return text.lstrip("'").strip().translate(_WIDE_DIGITS)


def read_table(
    rows: Iterable[tuple[int, Sequence[str]]], *, extra_titles: Mapping[str, str | None] | None = None
) -> LedgerTable:
    """Read a ledger table (see the module docstring).

    Args:
        rows: ``(line, cells)`` in the order of the file; cells as text (the shell writes dates as
            ISO text and numbers with their decimals).
        extra_titles: column title → field key (:data:`ID` for the ID column), or ``None`` for a
            known column that is not imported (序号, a form's derived 所在市、县（区）、乡镇（街道）).
    """
    extra: dict[str, str | None] = dict.fromkeys(map(title_key, NOT_IMPORTED), None)
    extra.update((title_key(t), k) for t, k in (extra_titles or {}).items())
    rows = iter(rows)
    seen: list[tuple[int, Sequence[str]]] = []
    header: tuple[int, Sequence[str]] | None = None
    for line, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        seen.append((line, cells))
        if any(_id_rank(c, extra) is not None for c in cells):
            header = (line, cells)
            break
        if len(seen) >= HEADER_SEARCH_ROWS:
            break
    if header is None:
        first = seen[0][0] if seen else 0
        reason = (
            f"no ID column in the first {HEADER_SEARCH_ROWS} rows: the header must have a column titled "
            "20位编码, 国标编码, 设备编码 or 通道编码 holding the 20-digit IDs"
        )
        return LedgerTable(0, (), problems=[FileProblem(first, reason)])
    header_line, titles = header
    table = _header(header_line, titles, extra)
    read, problems, blank = _read_rows(table, rows)
    return replace(table, rows=read, problems=table.problems + problems, blank=blank)


def _header(line: int, titles: Sequence[str], extra: Mapping[str, str | None]) -> LedgerTable:
    ranks = {i: r for i, t in enumerate(titles) if (r := _id_rank(t.strip(), extra)) is not None}
    id_index = min(ranks, key=lambda i: (ranks[i], i))
    problems: list[FileProblem] = []
    columns: list[FileColumn] = []
    for i, cell in enumerate(titles):
        title = " ".join(cell.split())
        key = title_key(title)
        if i == id_index:
            columns.append(FileColumn(i, title, ID))
        elif not title:
            columns.append(FileColumn(i, "", None))  # a value under it is a row's problem
        elif i in ranks:
            col = FileColumn(i, title, None, known=False)
            columns.append(col)
            problems.append(
                FileProblem(line, f"column {col.where}: a second ID column, not read (the IDs are taken from "
                            f"column {column_letter(id_index)} ({titles[id_index].strip()}))", column=col.where)
            )  # fmt: skip
        elif key in extra:
            # a form's column filled from what the gateway knows (名称 of the device …) is not read back
            given = extra[key]
            columns.append(FileColumn(i, title, given if given in FIELD_BY_KEY else None))
        elif (f := field_named(title) or field_named(_REMARK.sub("", key))) is not None:
            # 安装位置（必填）, 经度(WGS-84): a template's note on the title does not change the field
            columns.append(FileColumn(i, title, f.key))
        else:
            col = FileColumn(i, title, None, known=False)
            columns.append(col)
            problems.append(
                FileProblem(line, f"column {col.where} names no ledger field and is not imported: rename it "
                            "(`gb28181gw ledger set --help` lists the fields) or delete it", column=col.where)
            )  # fmt: skip
    by_field: dict[str, list[FileColumn]] = {}
    for col in columns:
        if col.field is not None:
            by_field.setdefault(col.field, []).append(col)
    for key, cols in by_field.items():
        if len(cols) > 1:
            names = " and ".join(c.where for c in cols)
            problems.append(
                FileProblem(line, f"columns {names} both give {key}: neither is imported; keep one",
                            column=cols[1].where, field=key)
            )  # fmt: skip
            columns = [FileColumn(c.index, c.title, None) if c in cols else c for c in columns]
    return LedgerTable(line, tuple(columns), problems=problems)


def _read_rows(
    table: LedgerTable, rows: Iterable[tuple[int, Sequence[str]]]
) -> tuple[list[FileRow], list[FileProblem], int]:
    """The rows under ``table``'s header: those to apply, the problems, how many were blank."""
    columns = table.columns
    id_col = table.column_of(ID)
    assert id_col is not None
    first: dict[str, int] = {}
    read: list[FileRow] = []
    problems: list[FileProblem] = []
    blank = 0
    for line, cells in rows:
        if not any(c.strip() for c in cells):
            blank += 1
            continue
        stray = [
            (i, c)
            for i, c in enumerate(cells)
            if c.strip() and c.strip() not in FILLERS and (i >= len(columns) or not columns[i].title)
        ]
        value = _clean_id(cells[id_col.index]) if id_col.index < len(cells) else ""
        problem = _id_problem(value)
        gid = "" if problem else value
        if stray:
            i, text = stray[0]
            where = column_letter(i)
            reason = (
                f"column {where} holds {text.strip()[:40]!r} but has no title in the header (line "
                f"{table.header_line}); give the column a title or delete the value"
            )
            problems.append(FileProblem(line, reason, gid, where))
        elif problem:
            problems.append(FileProblem(line, problem, "", id_col.where))
        elif value in first:
            reason = f"{value} is also on line {first[value]}: which row is meant cannot be told; neither is applied"
            problems.append(FileProblem(line, reason, value, id_col.where))
            read = [r for r in read if r.id != value]  # the earlier row may be the stale one
        if problem or stray or value in first:
            continue
        first[value] = line
        values: dict[str, str] = {}
        for col in columns:
            if col.field is None or col.field == ID or col.index >= len(cells):
                continue
            text = cells[col.index].strip()
            if not text or text in FILLERS:
                continue
            if _GUARDED.match(text):
                text = text[1:]  # '-1F停车场: the CSV export's guard against Excel reading a formula
            values[col.field] = "" if title_key(text) in _CLEAR else text
        read.append(FileRow(line, value, values))
    return read, problems, blank


def _id_problem(value: str) -> str | None:
    if not value:
        return "no ID: the ID column is empty on this row"
    mangled = spreadsheet_mangled(value)
    if mangled:
        return mangled
    try:
        GbId.parse(value)
    except IdError as exc:
        return f"{value!r} is not a 20-digit ID: {exc}"
    return None
