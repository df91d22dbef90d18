"""The camera ledger (一机一档) exported in the authorities' forms: XLSX a person opens, CSV a program reads.

Forms are the shipped ones (``src/gb28181gw/forms/*.toml``) and those in ``[ledger] forms`` (a
directory). They are read again at each use, so an integrator who fixes a form file needs no
restart, and a form that cannot be read never stops the gateway: the listing shows it broken,
with the reason (``gb/forms.py`` names the file and key), and only exporting it is refused. A
configured form with a shipped form's name takes its place (a city adapting the shipped one).

A file holds every row: rows that fail the checks (``gb/forms.py`` :func:`check_rows`) are
marked, with their reasons in a last column 校验问题 (XLSX: the row filled light red), unless
the export is strict, which writes nothing while any row fails.

XLSX: the form's title rows merged across its columns, a bold header, the form's column widths,
the pane frozen below the header, ID columns formatted as text (Excel turns 20 digits typed into
a General cell into 3.4E+19). CSV: one sheet (``sheet``: by default the camera sheet), UTF-8 with
a BOM so Excel reads the Chinese, the header first and no title rows, so the file reads back in
(``gb28181gw ledger import`` finds the header by its titles).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as _dt
import io
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from gb28181gw.config import Config, parse_time_zone
from gb28181gw.errors import FormError, LedgerError
from gb28181gw.gb.forms import (
    DEFAULT_TYPES,
    DIRECTORY_TYPES,
    MAX_FORM_BYTES,
    PROBLEM_COLUMN,
    Form,
    RowProblem,
    Sheet,
    Site,
    Table,
    build,
    import_titles,
    parse_form,
)
from gb28181gw.services.ledger import LedgerService

log = logging.getLogger("gb28181gw.ledger")

FORMATS = ("xlsx", "csv")
CONTENT_TYPES = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
}
#: A failing row's fill (Excel's own "bad" red) and the header's.
_BAD_FILL = PatternFill("solid", start_color="FFC7CE", end_color="FFC7CE")
_HEADER_FILL = PatternFill("solid", start_color="D9D9D9", end_color="D9D9D9")
#: Type codes of a platform (PROTOCOL.md §1.4): a lower platform registered as a device.
PLATFORM_TYPES = DEFAULT_TYPES["platforms"]
# what XML 1.0 cannot hold besides C0 controls (openpyxl's ILLEGAL_CHARACTERS_RE): lone surrogates
# (undecodable bytes a device sent) and the non-characters U+FFFE/U+FFFF, which fail the whole file
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")
# a cell a spreadsheet would run as a formula (=, +, -, @ first; -12.5 is a number): kept as text
_FORMULA = re.compile(r"[=+\-@\t\r]")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
#: Rows read from the ledger between two turns of the loop.
_ROWS_PER_SLICE = 200


@dataclass(frozen=True, slots=True)
class FormFile:
    """A form file as found.

    Attributes:
        name: the form's name (the file's stem when it cannot be read).
        source: where it came from (``shipped/integration-list.toml`` or the file's path).
        form: the form, or ``None`` when the file is broken.
        error: why it is broken ("" when it is not).
    """

    name: str
    source: str
    form: Form | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Export:
    """A form filled in.

    Attributes:
        form: the form.
        tables: each sheet laid out (one for CSV).
        format: ``xlsx`` or ``csv``.
        data: the file's bytes (``b""`` when strict refused it).
        filename: what to call it.
    """

    form: Form
    tables: list[Table]
    format: str
    data: bytes
    filename: str

    @property
    def problems(self) -> list[RowProblem]:
        return [p for t in self.tables for p in t.problems]

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def load_forms(directory: str) -> list[FormFile]:
    """The shipped forms and those in ``directory`` ("" for none), sorted by name; broken ones included."""
    found: dict[str, FormFile] = {}
    shipped = resources.files("gb28181gw") / "forms"
    for entry in sorted(shipped.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            f = _read(entry.name.removesuffix(".toml"), f"shipped/{entry.name}", entry.read_bytes())
            found[f.name] = f
    if directory:
        where = Path(directory)
        if not where.is_dir():
            found[str(where)] = FormFile(where.name, str(where), None, f"[ledger] forms: {where} is not a directory")
        else:
            mine: dict[str, str] = {}
            try:
                # not glob(): it reads a directory it may not list as an empty one, and says nothing
                paths = sorted(p for p in where.iterdir() if p.suffix == ".toml")
            except OSError as exc:
                paths = []
                found[str(where)] = FormFile(
                    where.name, str(where), None, f"[ledger] forms: {where} cannot be read: {exc.strerror or exc}"
                )
            for path in paths:
                try:
                    f = _read_file(path)
                except OSError as exc:
                    f = _broken(path, f"cannot be read: {exc.strerror or exc}")
                if f.form is not None and f.name in mine:
                    f = _broken(path, f"has the name {f.name!r} of {mine[f.name]}")
                if f.form is not None:
                    mine[f.name] = str(path)
                found[f.name if f.form is not None else str(path)] = f
    return sorted(found.values(), key=lambda f: (f.name, f.source))


def _read_file(path: Path) -> FormFile:
    """A form file of the directory; never more than a form's bytes, never a FIFO or device that blocks or never ends."""
    if not path.is_file():
        return _broken(path, "not a regular file")
    with path.open("rb") as file:
        data = file.read(MAX_FORM_BYTES + 1)
    if len(data) > MAX_FORM_BYTES:
        return _broken(path, "larger than a form")
    return _read(path.stem, str(path), data)


def _broken(path: Path, reason: str) -> FormFile:
    return FormFile(path.stem, str(path), None, f"{path.name}: {reason}")


def _read(stem: str, source: str, data: bytes) -> FormFile:
    label = source.rpartition("/")[2]
    try:
        form = parse_form(data.decode("utf-8-sig"), label)
    except UnicodeDecodeError:
        return FormFile(stem, source, None, f"{label}: not UTF-8 text")
    except FormError as exc:
        return FormFile(stem, source, None, str(exc))
    return FormFile(form.name, source, form)


class FormService:
    """Fills the forms from the ledger; see the module docstring.

    Args:
        config: the gateway's configuration (``[ledger]``; the site's zone says what day it is).
        ledger: the ledger and what the gateway knows of every ID.
        clock: wall-clock epoch seconds.
    """

    def __init__(self, config: Config, ledger: LedgerService, *, clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.ledger = ledger
        self._clock = clock
        self._zone = parse_time_zone(config.gateway.time_zone)

    def start(self) -> None:
        """Say which forms cannot be used (the gateway starts all the same)."""
        for f in self.forms():
            if f.form is None:
                log.warning("ledger form cannot be used", extra={"source": f.source, "error": f.error})

    def forms(self) -> list[FormFile]:
        """Every form (read now: see the module docstring)."""
        return load_forms(self.config.ledger.forms)

    def import_titles(self) -> dict[str, str | None]:
        """Every usable form's column titles and what each means read back (for the import's ``extra_titles``)."""
        return import_titles(f.form for f in self.forms() if f.form is not None)

    def form(self, name: str) -> Form:
        """The form called ``name``.

        Raises:
            LedgerError: no such form (404), or its file is broken (a FormError, 400, saying why).
        """
        files = self.forms()
        for f in files:
            if f.name == name:
                if f.form is None:
                    raise FormError(f.error, hint="fix the form file; `gb28181gw ledger forms` shows what is wrong")
                return f.form
        names = ", ".join(f.name for f in files if f.form is not None)
        raise LedgerError(
            f"no form {name!r} (forms: {names})", LedgerError.NOT_FOUND, "`gb28181gw ledger forms` lists them"
        )

    def ids(self, kind: str) -> Iterator[str]:
        """The IDs a sheet listing ``kind`` rows shows, in order (see ``gb/forms.py``)."""
        if kind == "cameras":
            for ch in self.ledger.channels():
                if _type_code(ch.channel_id) not in DIRECTORY_TYPES:
                    yield ch.channel_id
        elif kind == "devices":
            yield from sorted(self.ledger.registrar.devices)
        else:  # the gateway itself, then every lower platform registered with it
            yield self.ledger.platform_id
            for id_ in sorted(self.ledger.registrar.devices):
                if id_ != self.ledger.platform_id and _type_code(id_) in PLATFORM_TYPES:
                    yield id_

    def site(self) -> Site:
        now = self._clock() if self._clock is not None else None
        day = _dt.datetime.fromtimestamp(now, self._zone) if now is not None else _dt.datetime.now(self._zone)
        ledger = self.config.ledger
        name = self.ledger.row(self.ledger.platform_id).get("name", "")
        return Site(day.date().isoformat(), name, ledger.industry, ledger.network)

    async def table(self, form: Form, sheet: Sheet, site: Site | None = None) -> Table:
        """One sheet of ``form`` laid out from the ledger, its rows checked.

        The rows are read on the loop (the ledger and the devices change there), a slice at a time
        so that SIP runs between slices; they are laid out and checked in a thread.
        """
        site = site or self.site()
        ids = list(self.ids(sheet.rows))
        rows: list[dict[str, str]] = []
        for start in range(0, len(ids), _ROWS_PER_SLICE):
            if start:
                await asyncio.sleep(0)
            rows.extend(self.ledger.row(id_) for id_ in ids[start : start + _ROWS_PER_SLICE])
        return await asyncio.to_thread(build, form, sheet, rows, site)

    async def check(self, name: str, sheet: str = "") -> tuple[Form, list[Table]]:
        """Every sheet of form ``name`` (or the one named) laid out and checked.

        Raises:
            LedgerError: see :meth:`form`; FormError for a sheet it does not have.
        """
        form = self.form(name)
        return form, await self._tables(form, sheet)

    async def _tables(self, form: Form, sheet: str) -> list[Table]:
        site = self.site()
        return [await self.table(form, s, site) for s in ([form.sheet(sheet)] if sheet else form.sheets)]

    async def export(self, name: str, fmt: str, *, sheet: str = "", strict: bool = False) -> Export:
        """Form ``name`` filled in as ``fmt`` (``xlsx``: every sheet, or the one named; ``csv``: one sheet).

        The rows are read on the loop (the ledger and the devices change on it), laid out, checked
        and written in a thread, so a site of thousands of cameras does not hold up SIP meanwhile.
        Under ``strict`` a form with any failing row is not written (:attr:`Export.data` is empty).

        Raises:
            LedgerError: see :meth:`check`; an unknown format (400).
        """
        if fmt not in FORMATS:
            raise LedgerError(f"no format {fmt!r}: xlsx or csv")
        form = self.form(name)
        if fmt == "csv" and not sheet:
            sheet = form.sheet().name  # one sheet in a CSV: the cameras by default
        tables = await self._tables(form, sheet)
        filename = f"{form.name}-{self.site().date}.{fmt}"
        if strict and any(t.problems for t in tables):
            return Export(form, tables, fmt, b"", filename)
        if fmt == "xlsx":
            data = await asyncio.to_thread(workbook_bytes, form, tables)
        else:
            data = await asyncio.to_thread(csv_bytes, tables[0])
        return Export(form, tables, fmt, data, filename)


# --- files ------------------------------------------------------------------------------------


def _type_code(id_: str) -> int:
    return int(id_[10:13]) if len(id_) == 20 and id_.isdigit() else -1


def _clean(text: str) -> str:
    """What a file may hold: no control characters (XLSX refuses them), no undecodable bytes a device sent."""
    return _NOT_XML.sub("\ufffd", ILLEGAL_CHARACTERS_RE.sub("", text))


def csv_bytes(table: Table) -> bytes:
    """One sheet as CSV: UTF-8 with a BOM, the header first, failing rows with their reasons last."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    marked = bool(table.problems)
    reasons = table.every_reason()
    writer.writerow(table.header + ([PROBLEM_COLUMN] if marked else []))
    for number, cells in enumerate(table.rows, 1):
        row = [_csv_cell(c) for c in cells]
        writer.writerow(row + ([_clean(reasons.get(number, ""))] if marked else []))
    return b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")


def _csv_cell(text: str) -> str:
    text = _clean(text)
    if len(text) >= 12 and text.isascii() and text.isdigit():
        # a 20-digit ID: Excel (which the BOM is for) shows a bare one as 3.402E+19 and keeps 15 digits,
        # and a file saved back has lost them; ="…" is text to Excel and WPS, and the import reads it
        return f'="{text}"'
    # a name a device reports (=HYPERLINK(…)) must not become a formula in the operator's Excel
    return "'" + text if _FORMULA.match(text) and not _NUMBER.fullmatch(text) else text


def workbook_bytes(form: Form, tables: list[Table]) -> bytes:
    """The sheets as an XLSX workbook (see the module docstring)."""
    wb = Workbook()
    assert wb.active is not None
    wb.remove(wb.active)
    for table in tables:
        _write_sheet(wb.create_sheet(table.sheet.name), table)
    wb.properties.title = form.title
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _write_sheet(ws: Worksheet, table: Table) -> None:
    columns = table.sheet.columns
    marked = bool(table.problems)
    every_reason = table.every_reason()
    width = len(columns) + marked
    row = 0
    for i, title in enumerate(table.titles):
        row += 1
        cell = ws.cell(row, 1, _clean(title))
        cell.data_type = "s"  # {site} is an operator's text: "=…" there is no formula either
        cell.font = Font(bold=i == 0, size=14 if i == 0 else 11)
        cell.alignment = Alignment(horizontal="center" if i == 0 else "left", vertical="center")
        if width > 1:
            ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=width)
    row += 1
    header = row
    for col, title in enumerate(table.header + ([PROBLEM_COLUMN] if marked else []), 1):
        cell = ws.cell(row, col, title)
        cell.font = Font(bold=True)
        cell.fill = _HEADER_FILL
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        if col <= len(columns) and columns[col - 1].note:
            cell.comment = Comment(columns[col - 1].note, "gb28181gw")
    for number, cells in enumerate(table.rows, 1):
        row += 1
        reasons = every_reason.get(number, "")
        for col, text in enumerate(cells + ([reasons] if marked else []), 1):
            data = ws.cell(row, col)
            data.value = _clean(text)
            data.data_type = "s"  # text, always: never a formula, never a number Excel rounds
            if col <= len(columns) and columns[col - 1].is_id:
                data.number_format = "@"
            if reasons:
                data.fill = _BAD_FILL
    for col, c in enumerate(columns, 1):
        ws.column_dimensions[get_column_letter(col)].width = c.width or _width(c.title)
    if marked:
        ws.column_dimensions[get_column_letter(width)].width = 60
    ws.freeze_panes = f"A{header + 1}"


def _width(text: str) -> float:
    """A column wide enough for ``text``: a Chinese character takes two."""
    return max(6.0, sum(2 if ord(ch) > 0x2E7F else 1 for ch in text) + 2.0)
