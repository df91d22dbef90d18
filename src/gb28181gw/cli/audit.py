"""``gb28181gw audit``: who did what, from the gateway's audit trail; ``audit verify`` checks its chain.

Both go through the admin API (``/api/v1/audit``), like every command that reads the running gateway.
Times are shown, and ``--since``/``--until`` read, in the site's zone (see :mod:`.common`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import sys
import urllib.parse
from typing import Any

import click

from gb28181gw.cli.common import (
    ADMIN_OPTION,
    JSON_OPTION,
    TIME_FORMS,
    Column,
    TimeParam,
    display_zone,
    emit,
    parse_time,
    plural,
    print_json,
    printable,
    request,
    when,
)
from gb28181gw.cli.common import main as root

#: Most records the API gives in one page.
_PAGE = 10_000


def _params(row: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}" for k, v in row["params"].items()
    )


AUDIT_COLUMNS = (
    Column("#", "seq"),
    Column("time", lambda r: when(r["time"], relative=False)),
    Column("actor", "actor"),
    Column("from", "source"),
    Column("action", "action"),
    Column("target", "target", is_id=True),
    Column("result", "result", style=lambda r: _result_style(r["result"])),
    Column("parameters", _params),
    Column("detail", "detail"),
)
CSV_FIELDS = ("seq", "time", "actor", "source", "action", "target", "result", "params", "detail", "hash")


def _result_style(result: str) -> str:
    colour = {"ok": "green", "refused": "yellow", "failed": "red"}.get(result, "")
    return f"[{colour}]{result}[/{colour}]" if colour else printable(result)


@root.group(invoke_without_command=True)
@click.option("--since", type=TimeParam(), help=f"Records from this time on ({TIME_FORMS}).")
@click.option("--until", type=TimeParam(), help="Records up to this time.")
@click.option("--actor", default="", help="Who: token:NAME, local, superior:ID, gateway; or a prefix ending in ':'.")
@click.option("--target", default="", help="On what: a device or channel ID (a prefix ending in '*'), a stream.")
@click.option("--action", default="", help="What: e.g. ptz, stream.open; or a family ending in '.' (stream.).")
@click.option("--result", type=click.Choice(["ok", "refused", "failed"]), help="Only records with this result.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 1_000_000), help="Most records shown.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (UTF-8, a header first, parameters as JSON).")
@ADMIN_OPTION
@JSON_OPTION
@click.pass_context
def audit(
    ctx: click.Context,
    since: str | None,
    until: str | None,
    actor: str,
    target: str,
    action: str,
    result: str | None,
    limit: int,
    as_csv: bool,
    admin: str,
    as_json: bool,
) -> None:
    """List the audit trail, oldest first: every stream, control, PTZ, query that reached a camera,
    device, ban, ledger, share and override change, and each refusal, with who did it.

    `audit verify` checks that no record was altered, removed or inserted.
    """
    if ctx.invoked_subcommand is not None:
        return
    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot both be given")
    query: dict[str, str] = {k: v for k, v in (("actor", actor), ("target", target), ("action", action)) if v}
    if result:
        query["result"] = result
    if since or until:
        zone = display_zone(admin)
        now = _dt.datetime.now(zone).replace(tzinfo=None, microsecond=0)
        if since:
            query["since"] = parse_time(since, now=now).replace(tzinfo=zone).isoformat()
        if until:
            query["until"] = parse_time(until, now=now, end_of_day=True).replace(tzinfo=zone).isoformat()
    records: list[dict[str, Any]] = []
    more, after = True, 0
    while more and len(records) < limit:
        page = {**query, "after": str(after), "limit": str(min(_PAGE, limit - len(records)))}
        answer = request(admin, "GET", "/audit?" + urllib.parse.urlencode(page))
        records += answer["records"]
        more = bool(answer["more"]) and bool(answer["records"])
        after = records[-1]["seq"] if records else after
    if as_csv:
        _write_csv(records)
        return
    title = plural(len(records), "record") + (" (more: raise --limit or narrow the filters)" if more else "")
    emit(records, AUDIT_COLUMNS, as_json=as_json, title=title, json_rows={"records": records, "more": more})


def _write_csv(records: list[dict[str, Any]]) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(CSV_FIELDS)
    for r in records:
        stamp = _dt.datetime.fromtimestamp(r["time"], display_zone()).isoformat()
        params = json.dumps(r["params"], ensure_ascii=False, sort_keys=True)
        text = [_cell(r[k]) for k in ("actor", "source", "action", "target", "result")]
        out.writerow([r["seq"], stamp, *text, params, _cell(r["detail"]), r["hash"]])


#: What a spreadsheet takes for the start of a formula. Targets, details and names can come from
#: devices and superiors: a cell such as =HYPERLINK(...) would run when the export is opened.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """``text`` for a CSV cell: a leading ' keeps a spreadsheet from reading it as a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


@audit.command("verify")
@ADMIN_OPTION
@JSON_OPTION
def verify(admin: str, as_json: bool) -> None:
    """Check the audit trail's hash chain: exit status 1 when a record was altered, removed or inserted.

    Prints the head (the last record's number and hash): copy it elsewhere, so that a later check
    can tell the database was not rolled back to an older copy.
    """
    # a year of records takes a while to hash (about 20 s a million): the query timeout would
    # end a check that is going well, with the same exit status as a broken chain
    report = request(admin, "GET", "/audit/verify", timeout=None)
    if as_json:
        print_json(report)
    else:
        anchor, head = report["anchor"], report["head"]
        state = (
            "the chain is whole"
            if report["ok"]
            else f"the chain is BROKEN ({plural(len(report['problems']), 'problem')})"
        )
        click.echo(f"{plural(report['records'], 'record')} checked: {state}")
        if anchor["seq"]:
            click.echo(
                f"anchor: records up to {anchor['seq']} removed by retention, the last with hash {anchor['hash']}"
            )
        else:
            click.echo("anchor: the first record (none removed)")
        click.echo(f"head: record {head['seq']}, hash {head['hash']} (copy it elsewhere to detect a rollback)")
        for p in report["problems"]:
            click.echo(printable(f"problem at record {p['seq']}: {p['problem']}"))
    if not report["ok"]:
        sys.exit(1)
