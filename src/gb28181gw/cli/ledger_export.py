"""``ledger forms``, ``ledger check`` and ``ledger export``: the camera ledger in the authorities' forms.

The running gateway fills the forms (``/api/v1/ledger/forms``, ``/check``, ``/export``); these
commands list them, say which rows would fail, and write the file. ``export`` writes nothing
over an existing file without ``--force``, lists every failing row on the terminal (they are
marked in the file: a last column 校验问题, red in XLSX), and with ``--strict`` writes nothing
at all while any row fails (exit 1).
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

import click

from gb28181gw.cli.common import (
    ADMIN_OPTION,
    JSON_OPTION,
    Column,
    call_file,
    emit,
    fail,
    plural,
    print_json,
    request,
    warn,
)
from gb28181gw.cli.ledger import ledger_group
from gb28181gw.errors import AdminApiError

FORMATS = ("xlsx", "csv")

_PROBLEM_COLUMNS = [
    Column("sheet", "sheet"),
    Column("row", "row"),
    Column("id", "id", is_id=True),
    Column("column", "column"),
    Column("reason", "reason"),
]


def _query(**values: str) -> str:
    return urllib.parse.urlencode({k: v for k, v in values.items() if v})


def _show_problems(problems: list[dict[str, Any]]) -> None:
    emit(problems, _PROBLEM_COLUMNS, title=f"{plural(len(problems), 'problem')}")


@ledger_group.command("forms")
@JSON_OPTION
@ADMIN_OPTION
def forms_command(as_json: bool, admin: str) -> None:
    """List the forms the ledger is exported in (shipped and [ledger] forms), broken ones with why."""
    answer = request(admin, "GET", "/ledger/forms")
    rows = answer["forms"]
    for f in rows:
        f["sheet_names"] = ", ".join(f"{s['name']} ({s['rows']})" for s in f["sheets"])
        f["state"] = f"broken: {f['error']}" if f["broken"] else "ok"
    columns = [
        Column("name", "name"),
        Column("title", "title"),
        Column("sheets", "sheet_names"),
        Column("source", "source"),
        Column("state", "state"),
    ]
    emit(rows, columns, as_json=as_json, json_rows=answer)


@ledger_group.command("check")
@click.option("--form", "form", required=True, help="The form (see `gb28181gw ledger forms`).")
@click.option("--sheet", default="", help="Only this sheet (its name or number).")
@JSON_OPTION
@ADMIN_OPTION
def check_command(form: str, sheet: str, as_json: bool, admin: str) -> None:
    """Say which rows of a form fail the checks before export (exit 1 if any)."""
    answer = request(admin, "GET", "/ledger/check?" + _query(form=form, sheet=sheet))
    problems = answer["problems"]
    rows = sum(s["rows"] for s in answer["sheets"])
    if as_json:
        print_json(answer)
    elif problems:
        _show_problems(problems)
    else:
        click.echo(f"{answer['form']}: {plural(rows, 'row')}, no problems")
    if problems:
        raise SystemExit(1)


@ledger_group.command("export")
@click.option("--form", "form", required=True, help="The form (see `gb28181gw ledger forms`).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The file to write."
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="xlsx or csv (default: from the -o suffix).")
@click.option("--sheet", default="", help="One sheet (its name or number); a CSV holds one, the cameras by default.")
@click.option("--strict", is_flag=True, help="Write nothing while any row fails the checks (exit 1).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@ADMIN_OPTION
def export_command(form: str, output: Path, fmt: str | None, sheet: str, strict: bool, force: bool, admin: str) -> None:
    """Export the ledger in an authority's form (XLSX or CSV with a BOM); failing rows are marked and listed."""
    fmt = fmt or output.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise click.BadParameter(f"{output.name}: say --format xlsx or csv (or name the file .xlsx or .csv)")
    if output.exists() and not force:
        fail(f"{output} exists", "--force overwrites it")
    path = "/ledger/export?" + _query(form=form, format=fmt, sheet=sheet, strict="1" if strict else "")
    try:
        data, headers = call_file(admin, path)
    except AdminApiError as exc:
        problems = (exc.answer or {}).get("problems")
        if exc.status == 422 and isinstance(problems, list):
            _show_problems(problems)
            fail(f"{output} not written: {plural(len(problems), 'problem')} (--strict)", exc.hint)
        fail(exc.message, exc.hint)
    _write(output, data)
    count = int(headers.get("x-ledger-problems", "0") or 0)
    if count:
        # the sheets the file holds (a CSV: one, the cameras unless --sheet said)
        sheets = [urllib.parse.unquote(s) for s in headers.get("x-ledger-sheets", "").split(",") if s]
        one = sheets[0] if len(sheets) == 1 else sheet
        answer = request(admin, "GET", "/ledger/check?" + _query(form=form, sheet=one))
        _show_problems(answer["problems"])
        warn(f"{plural(count, 'problem')}: the rows are marked in {output} (column 校验问题)")
    click.echo(f"wrote {output} ({form}, {fmt}, {len(data)} bytes)")


def _write(output: Path, data: bytes) -> None:
    """Write the file whole or not at all (a half-written form is worse than none)."""
    partial = output.with_name(f".{output.name}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"cannot write {output}: {exc.strerror or exc}")
