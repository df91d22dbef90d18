"""``ledger``: the camera ledger (一机一档) — shown, edited, imported from and exported in the authorities' forms.

``ledger import`` reads the file here, not in the gateway: CSV in UTF-8 (with or without BOM),
GBK/GB18030 or UTF-16 (:func:`~gb28181gw.cli.ids.decode_user_text` tells them apart), comma- or
tab-separated, or an XLSX workbook (openpyxl). Cells become text as a person sees them: dates
in ISO (to the month when the cell shows no day), numbers with the decimals the cell shows (a
longitude typed 118.376451 keeps all six), an ID Excel stored as a number as the 3.402E+19 it
shows (reported: its digits are gone). ``gb/ledger_file.py`` makes rows of them; the gateway
applies them (``POST /api/v1/ledger/import``) and says what changed and what it could not read.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import re
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from gb28181gw.cli.common import (
    ADMIN_OPTION,
    JSON_OPTION,
    Column,
    call,
    done,
    emit,
    err_console,
    fail,
    main,
    plural,
    print_json,
    printable,
    request,
    segment,
    warn,
)
from gb28181gw.cli.ids import decode_user_text
from gb28181gw.errors import AdminApiError
from gb28181gw.gb.ledger import FIELD_BY_KEY, FIELDS, field_named
from gb28181gw.gb.ledger_file import HEADER_SEARCH_ROWS, LedgerTable, column_letter, read_table

#: How long the gateway may take to check and store a large import (seconds).
IMPORT_HTTP_TIMEOUT = 300.0


@main.group("ledger")
def ledger_group() -> None:
    """The camera ledger (一机一档): what the authorities' forms ask of each camera."""


def _shown(key: str, value: str) -> str:
    f = FIELD_BY_KEY.get(key)
    return f.display(value) if f is not None and value else value


# --- show and list --------------------------------------------------------------------------


@ledger_group.command("show")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("channel")
def ledger_show(admin: str, channel: str, as_json: bool) -> None:
    """Every ledger field of CHANNEL (a channel, device or the gateway's own ID) and where its value comes from.

    "ledger" is a value written with `ledger set` or `ledger import`; "device" is what the device
    reports (or, for the area, what its civil code names), shown while the ledger is silent.
    """
    data = request(admin, "GET", f"/ledger/{segment(channel)}")
    fields, row = data["fields"], data["row"]
    rows = [
        {
            "field": f.key,
            "label": f.label,
            "value": _shown(f.key, fields.get(f.key) or row.get(f.key, "")),
            "from": "ledger" if f.key in fields else ("device" if row.get(f.key) else ""),
        }
        for f in FIELDS
    ]
    columns = [Column("field", "field"), Column("label", "label"), Column("value", "value"), Column("from", "from")]
    title = f"{data['id']} ({data['kind']}): {row.get('name') or '-'}"
    emit(rows, columns, as_json=as_json, title=title, json_rows=data)


LIST_COLUMNS = [
    Column("ID", "id", is_id=True),
    Column("name", lambda e: e["row"].get("name")),
    Column("location", lambda e: e["row"].get("location")),
    Column("police station", lambda e: e["row"].get("police_station")),
    Column("longitude", lambda e: e["row"].get("longitude")),
    Column("latitude", lambda e: e["row"].get("latitude")),
    Column("built", lambda e: e["row"].get("built")),
    Column("state", lambda e: _shown("state", e["row"].get("state", ""))),
    Column("set", lambda e: len(e["fields"]) or ""),
]


@ledger_group.command("list")
@ADMIN_OPTION
@JSON_OPTION
@click.option("--device", default=None, help="Only this device's channels (or, with --kind device, the device).")
@click.option(
    "--kind",
    type=click.Choice(["channel", "device", "platform", "all", "orphaned"]),
    default="channel",
    show_default=True,
    help="Channels (a form's camera rows), devices, the gateway itself (the platform sheet), all, or orphaned: "
    "entries of IDs the gateway no longer has (channels renumbered, devices removed).",
)
def ledger_list(admin: str, device: str | None, kind: str, as_json: bool) -> None:
    """One line per channel: its ledger's key fields ("set": how many the ledger holds itself)."""
    path = f"/ledger?kind={kind}" + (f"&device={segment(device)}" if device else "")
    entries = request(admin, "GET", path)["entries"]
    emit(entries, LIST_COLUMNS, as_json=as_json, title=plural(len(entries), "entry", "entries"))


# --- set ------------------------------------------------------------------------------------


def _clear_callback(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    keys = []
    for title in value:
        f = field_named(title)
        if f is None:
            raise click.BadParameter(f"{title!r} is not a ledger field (fields: {', '.join(FIELD_BY_KEY)})")
        keys.append(f.key)
    return keys


def _field_options(command: Callable[..., None]) -> Callable[..., None]:
    """One ``--police-station``-style option per ledger field, from :data:`~gb28181gw.gb.ledger.FIELDS`."""
    for f in reversed(FIELDS):
        option = click.option(f"--{f.key.replace('_', '-')}", f.key, default=None, help=f"{f.label}: {f.english}.")
        command = option(command)
    return command


@ledger_group.command("remove")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("id_", metavar="ID")
def ledger_remove(admin: str, id_: str, as_json: bool) -> None:
    """Forget the ledger entry of ID: a channel's, or one the gateway no longer has (`ledger list --kind orphaned`)."""
    answer = request(admin, "DELETE", f"/ledger/{segment(id_)}")
    done(answer, as_json, f"ledger entry of {id_} removed ({plural(len(answer['fields']), 'field')})")


@ledger_group.command("set")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("channel")
@click.option(
    "--clear",
    multiple=True,
    callback=_clear_callback,
    metavar="FIELD",
    help="Clear a field (its key or Chinese title; repeatable): the row shows what the device reports again.",
)
@_field_options
def ledger_set(admin: str, channel: str, clear: list[str], as_json: bool, **values: str | None) -> None:
    """Write ledger fields of CHANNEL (a channel, device or the gateway's own ID); print what changed.

    Values are read as the forms write them: dates 2020.03, 2020-03-15 or 2020/3; yes/no as 是/否;
    the state 在用/停用; the plan 保留/拆除/迁移; coordinates with at least 6 decimals.
    """
    given = {f.key: values[f.key] for f in FIELDS if values.get(f.key) is not None}  # in the forms' order
    both = sorted(set(given) & set(clear))
    if both:
        raise click.UsageError(f"--{both[0].replace('_', '-')} is both set and cleared")
    if not given and not clear:
        raise click.UsageError("nothing to set: give at least one field (see --help) or --clear FIELD")
    data = request(admin, "PATCH", f"/ledger/{segment(channel)}", {"fields": {**given, **dict.fromkeys(clear, "")}})
    if as_json:
        print_json(data)
        return
    for line in _change_lines(data["changes"]):
        click.echo(line)
    click.echo(f"{channel}: {plural(len(data['changes']), 'field')} changed")


def _change_lines(changes: Sequence[dict[str, str]], *, with_id: bool = False) -> Iterator[str]:
    for c in changes:
        old, new = _shown(c["field"], c["old"]) or "(empty)", _shown(c["field"], c["new"]) or "(cleared)"
        yield printable(f"{c['id'] + '  ' if with_id else ''}{c['field']}: {old} → {new}")


# --- reading files --------------------------------------------------------------------------

_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # the old binary .xls
_ZIP_MAGIC = b"PK\x03\x04"
#: The rows a sheet or CSV may hold before it is refused as not a ledger.
MAX_FILE_ROWS = 200_000
#: The most an XLSX may unpack to (bytes), checked before openpyxl loads it: a loaded sheet takes
#: about ten times its XML in memory, and a zip bomb or a million formatted empty rows unpack to
#: hundreds of MB from a small file. 50,000 rows of every field are about 80 MB.
MAX_XLSX_UNPACKED = 128 * 1024 * 1024
_DECIMALS = re.compile(r"0\.(0+)")
_FORMAT_WORDS = re.compile(r'\[[^\]]*\]|"[^"]*"')  # a number format's [modifiers] and "literal text"


@dataclass(frozen=True, slots=True)
class LedgerFile:
    """A file read for import.

    Attributes:
        table: what ``gb/ledger_file.py`` made of it.
        how: how it was read, for the operator (``CSV, GB18030, comma-separated``; ``XLSX, sheet 清单``).
        encoding: a CSV's encoding ("" for XLSX).
        sheet: the XLSX sheet read ("" for CSV).
    """

    table: LedgerTable
    how: str
    encoding: str = ""
    sheet: str = ""


def read_ledger_file(
    path: Path, *, sheet: str | None = None, extra_titles: Mapping[str, str | None] | None = None
) -> LedgerFile:
    """Read a CSV or XLSX ledger (see the module docstring); ends in :func:`fail` if it cannot be read at all.

    ``extra_titles`` are passed to :func:`~gb28181gw.gb.ledger_file.read_table` (a form's own titles).
    """
    data = path.read_bytes()
    if data.startswith(_OLE_MAGIC):
        fail(f"{path} is an old Excel .xls workbook", "in Excel: File → Save As → Excel Workbook (.xlsx) or CSV")
    if data.startswith(_ZIP_MAGIC):
        return _read_xlsx(data, path, sheet, extra_titles)
    if sheet is not None:
        raise click.BadParameter(f"{path} is a CSV file, which has no sheets", param_hint="--sheet")
    return _read_csv(data, path, extra_titles)


def _read_csv(data: bytes, path: Path, extra_titles: Mapping[str, str | None] | None) -> LedgerFile:
    text, encoding = decode_user_text(data, str(path))
    head = text.split("\n", 10)[:10]
    # Excel's "Unicode text" is tab-separated, its CSV comma-separated; a title row may have neither
    tabs, commas = sum(line.count("\t") for line in head), sum(line.count(",") for line in head)
    delimiter = "\t" if tabs > commas else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    try:
        # numbered by record, which is the spreadsheet's row even where a cell holds a line break
        for number, record in enumerate(reader, 1):
            rows.append((number, record))
            if number > MAX_FILE_ROWS:
                fail(f"{path} has more than {MAX_FILE_ROWS} rows: not a ledger", "split it")
    except csv.Error as exc:
        fail(f"{path} is not a CSV file: line {reader.line_num}: {exc}", "save it from the spreadsheet as CSV")
    name = {"\t": "tab-separated", ",": "comma-separated"}[delimiter]
    how = f"CSV, {encoding.upper().removesuffix('-SIG')}{' with BOM' if encoding == 'utf-8-sig' else ''}, {name}"
    return LedgerFile(read_table(rows, extra_titles=extra_titles), how, encoding=encoding)


def cell_text(value: Any, number_format: str = "General") -> str:
    """An XLSX cell's value as a person sees it (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, _dt.datetime | _dt.date):
        day = value.date() if isinstance(value, _dt.datetime) else value
        # a cell showing 2020.03 (yyyy.mm) holds 2020-03-01: the day was never given
        # ([DBNum1], [Red] and "quoted text" are not a day: 二〇二〇年三月 is [DBNum1]yyyy"年"m"月")
        shows_day = "d" in _FORMAT_WORDS.sub("", number_format).lower() or number_format == "General"
        return day.isoformat() if shows_day else day.isoformat()[:7]
    if isinstance(value, int):
        return str(value)  # an integer literal in the file: its digits are all there
    if isinstance(value, float):
        if abs(value) >= 1e15:
            # an ID Excel stored as a number: shown, as Excel shows it, so the ID check says why
            return f"{value:.15G}"
        m = _DECIMALS.search(number_format)
        if m and "e" not in number_format.lower():
            return f"{value:.{len(m[1])}f}"  # 0.000000: the decimals the cell shows, a 6th 0 too
        return f"{value:.15g}"  # the 15 digits a spreadsheet keeps, not a double's noise
    if isinstance(value, _dt.time):
        return value.isoformat()
    return str(value)


def _read_xlsx(data: bytes, path: Path, sheet: str | None, extra_titles: Mapping[str, str | None] | None) -> LedgerFile:
    import openpyxl  # only an import of an XLSX pays for loading it
    from openpyxl.utils.exceptions import InvalidFileException

    unreadable = "save it again from the spreadsheet"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(item.file_size for item in archive.infolist())  # read capped at these sizes
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        fail(f"{path} is not an XLSX workbook (a damaged or cut-off zip file: {exc})", unreadable)
    if unpacked > MAX_XLSX_UNPACKED:
        fail(
            f"{path} unpacks to {unpacked / 1e6:.1f} MB, more than a ledger (at most {MAX_XLSX_UNPACKED / 1e6:.1f} MB)",
            "if a sheet has formatted empty rows, delete the empty rows below the table (select them → Delete) and "
            "save again; or save the ledger's sheet as CSV",
        )
    try:
        # not read-only: merged cells are only known to a fully loaded sheet; cached formula values
        book = openpyxl.load_workbook(io.BytesIO(data), data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        fail(f"{path} is not an XLSX workbook openpyxl can read: {exc}", unreadable)
    if sheet is not None and sheet not in book.sheetnames:
        raise click.BadParameter(f"{path} has no sheet {sheet!r} (sheets: {', '.join(book.sheetnames)})")
    chosen: tuple[Any, LedgerTable] | None = None
    first: tuple[Any, LedgerTable] | None = None
    for each in [book[sheet]] if sheet is not None else book.worksheets:
        if each.max_row > MAX_FILE_ROWS:
            fail(f"sheet {each.title} of {path} has {each.max_row} rows: not a ledger", "split it")
        found = read_table(sorted(_sheet_rows(each).items()), extra_titles=extra_titles)
        first = first or (each, found)
        if found.header_line:
            chosen = (each, found)
            break
    picked = chosen or first
    if picked is None:
        fail(f"{path} has no sheets")
    ws, table = picked
    if table.header_line:
        merged = sorted(str(r) for r in ws.merged_cells.ranges if r.min_row <= table.header_line <= r.max_row)
        if merged:
            fail(
                f"sheet {ws.title} of {path}: the header (row {table.header_line}) has merged cells {', '.join(merged)}",
                "unmerge them so each column has its own title in one row (Home → Merge & Center → Unmerge Cells)",
            )
        below = [r for r in ws.merged_cells.ranges if r.min_row > table.header_line and r.max_row > r.min_row]
        if below:
            table = read_table(_filled_down(ws, below), extra_titles=extra_titles)
    if chosen is not None and sheet is None:
        # a bureau's workbook with one sheet per street or station: the others must not pass unnoticed
        rest = book.worksheets[book.worksheets.index(ws) + 1 :]
        also = [s.title for s in rest if read_table(_head_rows(s), extra_titles=extra_titles).header_line]
        if also:
            warn(
                f"{path}: only sheet {ws.title} is read; {', '.join(also)} also "
                f"{'has' if len(also) == 1 else 'have'} an ID column: import each with --sheet NAME"
            )
    return LedgerFile(table, f"XLSX, sheet {ws.title}", sheet=ws.title)


def _head_rows(ws: Any) -> list[tuple[int, list[str]]]:
    """The top of ``ws``, where a header would be."""
    rows = ws.iter_rows(max_row=HEADER_SEARCH_ROWS * 5)
    return [(row[0].row, [cell_text(c.value, c.number_format) for c in row]) for row in rows if row]


def _sheet_rows(ws: Any) -> dict[int, list[str]]:
    """Each row of ``ws`` by its number: its cells as text."""
    return {
        row[0].row: [cell_text(c.value, c.number_format) for c in row]
        for row in ws.iter_rows()
        if row and isinstance(row[0].row, int)
    }


def _filled_down(ws: Any, ranges: Sequence[Any]) -> list[tuple[int, list[str]]]:
    """``ws``'s rows with each range merged down a column read in every row it spans.

    A bureau merges 所属派出所 over the cameras of one station: each of them has it, as a person
    sees it. Only the range's first column is filled: a value merged across belongs to that column.
    """
    rows = _sheet_rows(ws)
    for r in ranges:
        top = rows.get(r.min_row, [])
        text = top[r.min_col - 1] if r.min_col - 1 < len(top) else ""
        for n in range(r.min_row + 1, r.max_row + 1):
            cells = rows.get(n)
            if cells is not None and r.min_col - 1 < len(cells):
                cells[r.min_col - 1] = text
    return sorted(rows.items())


# --- import ---------------------------------------------------------------------------------


def _column(table: LedgerTable, key: str) -> str:
    """The column (``H (经度)``) that field ``key`` was read from, for a problem the gateway found in it."""
    col = table.column_of(key) if key else None
    return col.where if col is not None else ""


def _where(problem: dict[str, Any]) -> str:
    """``line 5, column H (经度)``: where a problem is."""
    column = problem.get("column") or ""
    where = f"line {problem['line']}" if problem.get("line") else "file"
    return f"{where}, column {column}" if column else where


@ledger_group.command("import")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Apply nothing if any row or column has a problem.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--sheet", default=None, help="The XLSX sheet (default: the first whose header has an ID column).")
def ledger_import(admin: str, file: Path, strict: bool, dry_run: bool, sheet: str | None, as_json: bool) -> None:
    """Write ledger fields from FILE (CSV or XLSX), matched by 20-digit ID; print every problem, then the changes.

    The header is the first row (of the first 10) with an ID column (20位编码, 国标编码, 设备编码 …);
    other columns are matched to fields by title (`ledger set --help` lists them). An empty cell
    (or -, /) leaves its field as it is; write （清空） to clear one. A row with any problem (an
    ID the gateway does not know, a duplicate, a value that cannot be read) is left out whole;
    with --strict nothing is applied if any row has one. Exit status 1 if there was any problem.
    """
    # the gateway's forms (its city's own among them) say what their columns mean read back: a form
    # exported and filled in imports without its derived columns (所在市、县（区）、乡镇（街道）) in the way
    titles = request(admin, "GET", "/ledger/forms").get("import_titles") or {}
    read = read_ledger_file(file, sheet=sheet, extra_titles=titles)
    table = read.table
    local = [
        {"line": p.line, "id": p.id, "field": p.field, "column": p.column, "reason": p.reason} for p in table.problems
    ]
    body = {
        "rows": [{"line": r.line, "id": r.id, "values": r.values} for r in table.rows],
        "strict": strict,
        # under --strict a problem found here already refuses the file: the gateway only checks the rest
        "dry_run": dry_run or (strict and bool(local)),
        "source": file.name,
    }
    answer: dict[str, Any] = {"changes": [], "problems": [], "applied": False}
    if table.rows:
        try:
            answer = call(admin, "POST", "/ledger/import", body, timeout=IMPORT_HTTP_TIMEOUT)
        except AdminApiError as exc:
            if exc.status != 422 or not exc.answer:
                fail(exc.message, exc.hint)
            answer = dict(exc.answer)
    found = [{**p, "column": _column(table, p.get("field", ""))} for p in answer["problems"]]
    problems = sorted(local + found, key=lambda p: p.get("line") or 0)
    changes = answer["changes"]
    if as_json:
        print_json(
            {
                "file": str(file),
                "read_as": read.how,
                "encoding": read.encoding or None,
                "sheet": read.sheet or None,
                "header_line": table.header_line,
                "columns": [
                    {"column": column_letter(c.index), "title": c.title, "field": c.field} for c in table.columns
                ],
                "rows": len(table.rows),
                "changes": changes,
                "problems": problems,
                "applied": answer["applied"],
                "dry_run": dry_run,
            }
        )
        sys.exit(1 if problems else 0)
    err_console.print(
        f"reading {file} ({read.how})" + (f": header on line {table.header_line}" if table.header_line else ""),
        highlight=False,
        markup=False,
        soft_wrap=True,  # a file's path broken across lines cannot be copied
    )
    for p in problems:
        click.echo(printable(f"{_where(p)}: {p['reason']}"))
    if changes:
        click.echo("would change:" if not answer["applied"] else "changed:")
        for line in _change_lines(changes, with_id=True):
            click.echo("  " + line)
    entries = len({c["id"] for c in changes})
    if answer["applied"]:
        outcome = f"{plural(len(changes), 'field')} of {plural(entries, 'entry', 'entries')} changed"
    elif dry_run:
        outcome = f"dry run: {plural(len(changes), 'field')} of {plural(entries, 'entry', 'entries')} would change"
    elif strict and problems:
        outcome = "--strict: nothing applied"
    else:
        outcome = "nothing changed"
    click.echo(f"{plural(len(table.rows), 'row')} read, {plural(len(problems), 'problem')}; {outcome}")
    sys.exit(1 if problems else 0)
