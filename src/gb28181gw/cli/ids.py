"""``id decode`` and ``id check``: 20-digit IDs, offline."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import click
from rich.table import Table

from gb28181gw.cli.common import console, err_console, main
from gb28181gw.errors import IdError
from gb28181gw.ids import GbId


@main.group("id")
def id_group() -> None:
    """Decode and check 20-digit GB/T 28181 IDs."""


@id_group.command("decode")
@click.argument("value")
@click.option("--strict", is_flag=True, help="Treat structural oddities as errors.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def id_decode(value: str, strict: bool, as_json: bool) -> None:
    """Show what each part of an ID means."""
    try:
        gid = GbId.parse(value, strict=strict, allow_civil=True)
    except IdError as exc:
        err_console.print(f"[red]invalid ID: {exc}[/red]", highlight=False)
        sys.exit(1)
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "id": gid.value,
                    "kind": gid.kind.value,
                    "fields": [{"positions": p, "digits": d, "meaning": m} for p, d, m in gid.describe()],
                    "warnings": list(gid.warnings),
                },
                ensure_ascii=False,
            )
        )
        return
    table = Table("positions", "digits", "meaning", title=f"{gid.value} ({gid.kind.value})")
    for row in gid.describe():
        table.add_row(*row)
    console.print(table)
    for w in gid.warnings:
        console.print(f"[yellow]warning: {w}[/yellow]", highlight=False)


@id_group.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--column", default=None, help="CSV column (name or 1-based number); default: one ID per line.")
@click.option("--strict", is_flag=True, help="Treat structural oddities as errors.")
@click.option("--allow-civil", is_flag=True, help="Also accept 2/4/6/8-digit civil codes.")
def id_check(file: str, column: str | None, strict: bool, allow_civil: bool) -> None:
    """Validate every ID in FILE; list each bad row with its reason; exit 1 if any."""
    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8-sig", errors="replace")
    rows: list[tuple[int, str]] = []
    if column is None:
        rows = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    else:
        records = list(csv.reader(io.StringIO(text)))
        first = 1
        if column.isdigit():
            # a column number means there is no header row
            index = int(column) - 1
        else:
            header = records[0] if records else []
            if column not in header:
                err_console.print(f"[red]no column named {column!r} (columns: {', '.join(header)})[/red]")
                sys.exit(2)
            index = header.index(column)
            records = records[1:]
            first = 2
        for n, record in enumerate(records, first):
            if not any(cell.strip() for cell in record):
                continue
            rows.append((n, record[index].strip() if index < len(record) else ""))
    bad = 0
    warned = 0
    for line_no, value in rows:
        try:
            gid = GbId.parse(value, strict=strict, allow_civil=allow_civil)
        except IdError as exc:
            bad += 1
            console.print(f"line {line_no}: [red]{exc}[/red]", highlight=False)
            continue
        for w in gid.warnings:
            warned += 1
            console.print(f"line {line_no}: [yellow]{value}: warning: {w}[/yellow]", highlight=False)
    console.print(f"{len(rows)} IDs checked, {bad} invalid, {warned} warnings", highlight=False)
    sys.exit(1 if bad else 0)
