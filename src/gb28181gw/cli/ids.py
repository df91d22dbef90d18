"""``id decode`` and ``id check``: 20-digit IDs, offline.

``id check`` reads the ledgers integrators are handed: one ID per line, or a CSV column, in
UTF-8 (with or without BOM), GBK/GB18030 (what Excel writes on Chinese Windows) or UTF-16
(Excel's "Unicode text"): :func:`decode_user_text` tells them apart, so nobody has to say.
"""

from __future__ import annotations

import codecs
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from gb28181gw.cli.common import (
    JSON_OPTION,
    Column,
    emit,
    err_console,
    fail,
    main,
    plural,
    print_json,
    printable,
    warn,
)
from gb28181gw.errors import IdError
from gb28181gw.ids import GbId, spreadsheet_mangled


@main.group("id")
def id_group() -> None:
    """Decode and check 20-digit GB/T 28181 IDs."""


@id_group.command("decode")
@click.argument("value")
@click.option("--strict", is_flag=True, help="Treat structural oddities as errors.")
@JSON_OPTION
def id_decode(value: str, strict: bool, as_json: bool) -> None:
    """Show what each part of an ID means."""
    try:
        gid = GbId.parse(value, strict=strict, allow_civil=True)
    except IdError as exc:
        fail(f"invalid ID: {exc}")
    fields = gid.describe()
    emit(
        fields,
        [Column("positions", lambda r: r[0]), Column("digits", lambda r: r[1]), Column("meaning", lambda r: r[2])],
        as_json=as_json,
        title=f"{gid.value} ({gid.kind.value})",
        json_rows={
            "id": gid.value,
            "kind": gid.kind.value,
            "fields": [{"positions": p, "digits": d, "meaning": m} for p, d, m in fields],
            "warnings": list(gid.warnings),
        },
    )
    if not as_json:
        for w in gid.warnings:
            warn(w)


# --- reading what spreadsheets write ---------------------------------------------------------

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_ZIP_MAGIC = b"PK\x03\x04"  # .xlsx (and .ods) are zip archives
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # old .xls


def decode_user_text(data: bytes, name: str) -> tuple[str, str]:
    """Decode a text file a person or a spreadsheet wrote; return ``(text, encoding)``.

    A BOM decides (UTF-8, UTF-16); else strict UTF-8 if the bytes are UTF-8, else GB18030,
    the superset of GBK and GB2312 that Excel on Chinese Windows writes. A Chinese GBK text
    is practically never valid UTF-8, so the order is safe. Bytes that are neither end the
    command with :func:`fail`, as does a spreadsheet workbook given instead of its CSV.
    """
    if data.startswith((_ZIP_MAGIC, _OLE_MAGIC)):
        fail(f"{name} is a spreadsheet workbook, not text", "in Excel: File → Save As → CSV (comma delimited)")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError as exc:  # a UTF-16 file cut short, or binary behind a BOM
                fail(
                    f"{name} starts as {encoding.upper()} text but is not ({exc.reason} at offset {exc.start})",
                    "save it again as CSV or as plain text",
                )
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030"), "gb18030"
    except UnicodeDecodeError as exc:
        fail(
            f"{name} is neither UTF-8 nor GBK/GB18030 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            "save it as CSV (UTF-8 or the Chinese default) or as plain text",
        )


# --- checking --------------------------------------------------------------------------------


def _id_like(cell: str) -> bool:
    """Whether a first row's cell reads as an ID (to check) rather than a column title (to skip)."""
    text = cell.strip()
    return not text or sum(ch.isdigit() for ch in text) * 2 >= len(text)


@dataclass(frozen=True, slots=True)
class IdProblem:
    """Something wrong with one row of the checked file.

    Attributes:
        line: the row (1-based; a CSV record, or a line of a plain list).
        value: the cell as read.
        kind: ``invalid`` (not an ID), ``duplicate`` (seen on ``first_line``) or ``warning``
            (an oddity that ``--strict`` would reject).
        message: in words.
        first_line: for a duplicate, the row where the ID first appears.
    """

    line: int
    value: str
    kind: str
    message: str
    first_line: int | None = None


def check_rows(rows: list[tuple[int, str]], *, strict: bool, allow_civil: bool) -> list[IdProblem]:
    """Every problem of ``rows`` (``(line, value)``) in the order of the file."""
    problems: list[IdProblem] = []
    seen: dict[str, int] = {}
    for line, value in rows:
        mangled = spreadsheet_mangled(value)
        if mangled:
            problems.append(IdProblem(line, value, "invalid", mangled))
            continue
        try:
            gid = GbId.parse(value, strict=strict, allow_civil=allow_civil)
        except IdError as exc:
            problems.append(IdProblem(line, value, "invalid", str(exc)))
            continue
        for w in gid.warnings:
            problems.append(IdProblem(line, value, "warning", f"{value}: warning: {w}"))
        if value in seen:
            first = seen[value]
            problems.append(IdProblem(line, value, "duplicate", f"{value}: duplicate of line {first}", first))
        else:
            seen[value] = line
    return problems


def _records(text: str, name: str) -> list[list[str]]:
    first_line = text.split("\n", 1)[0]
    # Excel's "Unicode text" is tab-separated; its CSV is comma-separated
    delimiter = "\t" if "\t" in first_line and "," not in first_line else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        return list(reader)
    except csv.Error as exc:  # a cell of more than 128 KiB: not a ledger
        fail(f"{name} is not a CSV file: line {reader.line_num}: {exc}", "give one ID per line, or a CSV column")


@id_group.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--column", default=None, help="CSV column (name or 1-based number); default: one ID per line.")
@click.option("--strict", is_flag=True, help="Treat structural oddities as errors.")
@click.option("--allow-civil", is_flag=True, help="Also accept 2/4/6/8-digit civil codes.")
@JSON_OPTION
def id_check(file: str, column: str | None, strict: bool, allow_civil: bool, as_json: bool) -> None:
    """Validate every ID in FILE; list each bad or repeated row; exit 1 if any.

    FILE may be UTF-8, GBK/GB18030 (Excel on Chinese Windows) or UTF-16: the encoding is
    detected. With a column number (or no --column), a first row that is not ID-like (a
    column title such as 设备编码) is skipped.
    """
    name = "standard input" if file == "-" else file
    data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    text, encoding = decode_user_text(data, name)
    rows: list[tuple[int, str]] = []
    header: tuple[int, str] | None = None
    if column is None:
        rows = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    else:
        records = _records(text, name)
        first = 1
        if column.isdigit():
            index = int(column) - 1
            if index < 0:
                raise click.BadParameter("columns are numbered from 1", param_hint="--column")
        else:
            titles = [cell.strip() for cell in records[0]] if records else []
            if column not in titles:
                raise click.BadParameter(
                    f"no column named {column!r} (columns: {', '.join(titles)})", param_hint="--column"
                )
            index = titles.index(column)
            header = (1, column)
            records = records[1:]
            first = 2
        widest = max(map(len, records), default=0)
        if index >= widest:
            raise click.BadParameter(f"no column {index + 1}: the widest row has {widest}", param_hint="--column")
        for n, record in enumerate(records, first):
            if not any(cell.strip() for cell in record):
                continue
            rows.append((n, record[index].strip() if index < len(record) else ""))
    skipped = header is None and bool(rows) and not _id_like(rows[0][1])
    if skipped:
        # a column title where the IDs start: skipped, and said so, never reported as an invalid ID
        header = rows[0]
        rows = rows[1:]
    problems = check_rows(rows, strict=strict, allow_civil=allow_civil)
    counts = {kind: sum(p.kind == kind for p in problems) for kind in ("invalid", "duplicate", "warning")}
    failed = counts["invalid"] or counts["duplicate"]
    if as_json:
        print_json(
            {
                "file": name,
                "encoding": encoding,
                "header": {"line": header[0], "text": header[1]} if header else None,
                "checked": len(rows),
                "invalid": counts["invalid"],
                "duplicates": counts["duplicate"],
                "warnings": counts["warning"],
                "problems": [
                    {"line": p.line, "value": p.value, "kind": p.kind, "message": p.message, "first_line": p.first_line}
                    for p in problems
                ],
            }
        )
        sys.exit(1 if failed else 0)
    if encoding not in ("utf-8", "utf-8-sig"):
        err_console.print(f"reading {name} as {encoding.upper()}", highlight=False, markup=False, soft_wrap=True)
    if skipped and header is not None:
        click.echo(f"line {header[0]}: skipped as a header: {printable(header[1])}")
    colour = {"invalid": "red", "duplicate": "red", "warning": "yellow"}
    for p in problems:
        # click drops the colour when stdout is not a terminal; one problem is one line, never wrapped
        click.echo(f"line {p.line}: " + click.style(p.message, fg=colour[p.kind]))
    click.echo(
        f"{plural(len(rows), 'ID')} checked, {counts['invalid']} invalid, "
        f"{plural(counts['duplicate'], 'duplicate')}, {plural(counts['warning'], 'warning')}"
    )
    sys.exit(1 if failed else 0)
