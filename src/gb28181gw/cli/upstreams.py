"""The superiors this gateway registers to (cascade), through the admin API of a running gateway."""

from __future__ import annotations

from typing import Any

import click

from gb28181gw.cli.common import (
    ADMIN_OPTION,
    JSON_OPTION,
    Column,
    ago,
    done,
    emit,
    fail,
    main,
    plural,
    request,
    segment,
)


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
    Column("channels shared", "channels_shared"),
    Column("streams", "streams_served"),
    Column("failures", _failures),
    Column("last error", "last_error"),
    Column("holder", lambda r: r.get("holder") or ""),  # several nodes: which one registers upward
)


@main.command("upstreams")
@ADMIN_OPTION
@JSON_OPTION
def upstreams(admin: str, as_json: bool) -> None:
    """List the superiors this gateway registers to ([[upstream]] in the configuration) and how each is doing."""
    rows = request(admin, "GET", "/upstreams")["upstreams"]
    emit(rows, UPSTREAM_COLUMNS, as_json=as_json, title=plural(len(rows), "superior"))


@main.group()
def upstream() -> None:
    """Change what one superior sees: shares and channel overrides."""


def _shares(admin: str, method: str, name: str, as_json: bool, ids: tuple[str, ...] | None = None) -> None:
    """Show or change what superior ``name`` sees, and print what it sees now."""
    data = request(admin, method, f"/upstreams/{segment(name)}/shares", None if ids is None else {"ids": list(ids)})
    done(data, as_json, f"{data['upstream']} now sees: {data['share']}")


@upstream.command("share")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("name")
@click.argument("ids", nargs=-1, required=True)
def upstream_share(admin: str, name: str, ids: tuple[str, ...], as_json: bool) -> None:
    """Share device IDs, channel IDs or ID prefixes (340202: a district) with superior NAME.

    It is sent the channels that become visible (catalog NOTIFY ADD) when it subscribes or has
    catalog_push on; the change is stored and outlasts a restart.
    """
    _shares(admin, "POST", name, as_json, ids)


@upstream.command("unshare")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("name")
@click.argument("ids", nargs=-1, required=True)
def upstream_unshare(admin: str, name: str, ids: tuple[str, ...], as_json: bool) -> None:
    """Take device IDs, channel IDs or ID prefixes back from superior NAME (it is told: catalog NOTIFY DEL)."""
    _shares(admin, "DELETE", name, as_json, ids)


@upstream.command("shares")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("name")
def upstream_shares(admin: str, name: str, as_json: bool) -> None:
    """What superior NAME may see: the configured share with every share and unshare applied."""
    _shares(admin, "GET", name, as_json)


OVERRIDE_COLUMNS = (
    Column("channel", "channel_id", is_id=True),
    Column("name", "name"),
    Column("civil code", "civil_code"),
    Column("parent", "parent_id", is_id=True),
)


@upstream.command("override")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("name")
@click.argument("channel_id")
@click.option("--name", "channel_name", default="", help="The channel's name toward this superior.")
@click.option("--civil-code", default="", help="Its civil code (2, 4, 6 or 8 digits) toward this superior.")
@click.option("--parent", default="", help="Its ParentID toward this superior (a group, virtual org or our ID).")
@click.option("--clear", is_flag=True, help="Remove the override: the superior sees what the device reported.")
def upstream_override(
    admin: str, name: str, channel_id: str, channel_name: str, civil_code: str, parent: str, clear: bool, as_json: bool
) -> None:
    """Tell superior NAME another name, civil code or parent for CHANNEL_ID (never another ID).

    Options left out are not overridden. It is sent the change (catalog NOTIFY UPDATE).
    """
    path = f"/upstreams/{segment(name)}/overrides/{segment(channel_id)}"
    if clear:
        if channel_name or civil_code or parent:
            fail("--clear takes no --name, --civil-code or --parent", "clear it, then set what you want")
        data = request(admin, "DELETE", path)
        done(data, as_json, f"{name} sees {channel_id} as its device reports it again")
        return
    if not (channel_name or civil_code or parent):
        fail("nothing to override", "give --name, --civil-code or --parent (or --clear)")
    data = request(admin, "PUT", path, {"name": channel_name, "civil_code": civil_code, "parent_id": parent})
    done(data, as_json, f"{name} sees {channel_id} overridden")


@upstream.command("overrides")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("name")
def upstream_overrides(admin: str, name: str, as_json: bool) -> None:
    """The channel overrides of superior NAME."""
    rows = request(admin, "GET", f"/upstreams/{segment(name)}/overrides")["overrides"]
    emit(rows, OVERRIDE_COLUMNS, as_json=as_json, title=plural(len(rows), "override"))
