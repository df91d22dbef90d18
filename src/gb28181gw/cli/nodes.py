"""The gateway nodes sharing one Redis store (issue 17), through the admin API of any of them."""

from __future__ import annotations

from typing import Any

import click

from gb28181gw.cli.common import ADMIN_OPTION, JSON_OPTION, Column, emit, main, plural, request


def _role(row: dict[str, Any]) -> str:
    if row.get("director"):
        return "director, serves devices" if row.get("serves") else "director"
    return "node"


def _live_style(row: dict[str, Any]) -> str:
    return "[green]live[/green]" if row.get("live") else "[red]gone[/red]"


def _age(row: dict[str, Any]) -> str:
    age = row.get("heartbeat_age")
    return "" if age is None else f"{age:.1f} s ago"


NODE_COLUMNS = (
    Column("node", lambda r: f"{r['node']} (this)" if r.get("this") else r["node"]),
    Column("address", "advertised"),
    Column("role", _role),
    Column("state", lambda r: "live" if r.get("live") else "gone", style=_live_style),
    Column("devices", "devices"),
    Column("superiors", lambda r: ", ".join(r.get("superiors") or [])),
    Column("heartbeat", _age),
)


@main.command("nodes")
@ADMIN_OPTION
@JSON_OPTION
def nodes(admin: str, as_json: bool) -> None:
    """List the gateway nodes sharing this gateway's Redis store: address, role, devices owned,
    superiors held and when each last renewed its claim (a gone node stays listed until it is cleared)."""
    data = request(admin, "GET", "/nodes")
    rows = data["nodes"]
    if data.get("store") != "redis" and not as_json:
        click.echo("one node: this gateway's store is SQLite (store.backend = redis lets several nodes share one)")
        return
    emit(rows, NODE_COLUMNS, as_json=as_json, title=plural(len(rows), "node"))
