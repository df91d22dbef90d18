"""The superiors this gateway registers to (cascade), through the admin API of a running gateway."""

from __future__ import annotations

from typing import Any

from gb28181gw.cli.common import ADMIN_OPTION, JSON_OPTION, Column, ago, emit, main, plural, request


def _offset(row: dict[str, Any]) -> str:
    offset = row.get("clock_offset")
    return "" if offset is None else f"{offset:+.3f} s"


def _failures(row: dict[str, Any]) -> str:
    return f"{row.get('register_failures', 0)} register, {row.get('keepalive_failures', 0)} keepalive"


def _state_style(row: dict[str, Any]) -> str:
    state = str(row.get("state", ""))
    colour = "green" if state == "registered" else "red" if state == "backing-off" else "yellow"
    return f"[{colour}]{state}[/{colour}]"


UPSTREAM_COLUMNS = (
    Column("name", "name", is_id=True),
    Column("ID", "id", is_id=True),
    Column("address", "address"),
    Column("state", "state", style=_state_style),
    Column("last register", lambda r: ago(r.get("last_register"))),
    Column("last keepalive", lambda r: ago(r.get("last_keepalive"))),
    Column("clock offset", _offset),
    Column("failures", _failures),
    Column("last error", "last_error"),
)


@main.command("upstreams")
@ADMIN_OPTION
@JSON_OPTION
def upstreams(admin: str, as_json: bool) -> None:
    """List the superiors this gateway registers to ([[upstream]] in the configuration) and how each is doing."""
    rows = request(admin, "GET", "/upstreams")["upstreams"]
    emit(rows, UPSTREAM_COLUMNS, as_json=as_json, title=plural(len(rows), "superior"))
