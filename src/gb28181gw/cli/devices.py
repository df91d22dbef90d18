"""Devices, their channels and catalogs, through the admin API of a running gateway."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.markup import escape
from rich.progress import Progress
from rich.tree import Tree

from gb28181gw.cli.common import (
    ADMIN_OPTION,
    JSON_OPTION,
    Column,
    ago,
    call,
    console,
    done,
    emit,
    emit_fields,
    fail,
    is_terminal,
    main,
    plural,
    print_json,
    printable,
    request,
    segment,
    warn,
)
from gb28181gw.errors import AdminApiError


@main.command()
@ADMIN_OPTION
@JSON_OPTION
def status(admin: str, as_json: bool) -> None:
    """Show the running gateway's status."""
    emit_fields(request(admin, "GET", "/status"), as_json=as_json, title="gateway")


def _state(d: dict[str, Any]) -> str:
    state = "online" if d.get("online") else f"offline {d.get('offline_reason') or ''}".strip()
    # several nodes: a device another node serves is shown as this node last knew it
    return f"last known {state}" if d.get("here") is False else state


def _state_style(d: dict[str, Any]) -> str:
    if d.get("here") is False:
        return f"[dim]{escape(_state(d))}[/dim]"
    return "[green]online[/green]" if d.get("online") else f"[red]offline[/red] {escape(d.get('offline_reason') or '')}"


def _expires(d: dict[str, Any]) -> str:
    return ago(d.get("expires_at")) if d.get("registered") and d.get("expires_at") else "-"


DEVICE_COLUMNS = (
    Column("ID", "device_id", is_id=True),
    # the operator's name, else the one the device reports for itself
    Column("name", lambda d: d.get("name") or d.get("reported_name", "")),
    Column("address", lambda d: f"{d.get('transport', '')} {d['host']}:{d['port']}" if d.get("host") else ""),
    Column("online", _state, style=_state_style),
    Column("keepalive", lambda d: ago(d.get("last_keepalive"))),
    Column("expires", _expires),
)
#: Shown with a Redis store: the node of each device (``?`` when Redis did not answer).
NODE_COLUMN = Column("node", lambda d: "?" if d.get("node") is None else d["node"])


@main.group(invoke_without_command=True)
@ADMIN_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--online/--offline", "online", default=None, help="Only online (or offline) devices.")
def devices(admin: str, as_json: bool, online: bool | None) -> None:
    """List the devices the gateway knows."""
    if click.get_current_context().invoked_subcommand is not None:
        return  # devices prune / refused (cli/housekeeping.py)
    query = "" if online is None else f"?state={'online' if online else 'offline'}"
    rows = request(admin, "GET", f"/devices{query}")["devices"]
    # several nodes on Redis: which one each device registered at
    columns = DEVICE_COLUMNS + (NODE_COLUMN,) if any("node" in r for r in rows) else DEVICE_COLUMNS
    emit(rows, columns, as_json=as_json, title=plural(len(rows), "device"))


@main.group()
def device() -> None:
    """Show, add or remove one device."""


@device.command("show")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("device_id")
def device_show(admin: str, device_id: str, as_json: bool) -> None:
    """Everything the gateway knows about DEVICE_ID."""
    data = request(admin, "GET", f"/devices/{segment(device_id)}")
    shown = dict(data)
    # the few fields whose name does not say how to read them (the rest: common.field_text)
    if shown.get("stream_mode") == "":
        shown["stream_mode"] = "default (media.stream_mode)"
    if isinstance(shown.get("password"), bool):
        shown["password"] = "set" if shown["password"] else "not set (registrar.password applies)"
    if isinstance(shown.get("expires"), int) and shown["expires"]:
        shown["expires"] = f"{shown['expires']} s"
    emit_fields(shown, as_json=as_json, title=device_id, json_data=data)


STREAM_MODES = ["udp", "tcp-passive", "tcp-active", "default"]


@device.command("add")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("device_id")
@click.option("--password", default="", help="Its own digest password (overrides registrar.password).")
@click.option("--name", default="", help="A name for it.")
@click.option(
    "--charset",
    type=click.Choice(["GB2312", "GB18030", "UTF-8"], case_sensitive=False),
    default=None,
    help="Charset of its MANSCDP bodies.",
)
@click.option(
    "--stream-mode",
    type=click.Choice(STREAM_MODES, case_sensitive=False),
    default=None,
    help="How it sends media: UDP, TCP to us (passive) or TCP from us (active); "
    "`default` follows media.stream_mode again.",
)
def device_add(
    admin: str,
    device_id: str,
    password: str,
    name: str,
    charset: str | None,
    stream_mode: str | None,
    as_json: bool,
) -> None:
    """Provision DEVICE_ID (needed when registrar.require_provisioned is on), or change its settings.

    Options left out keep what the device had.
    """
    body = {
        "device_id": device_id,
        "password": password,
        "name": name,
        "charset": charset or "",
        "stream_mode": stream_mode or "",
    }
    data = request(admin, "POST", "/devices", body)
    done(data, as_json, f"{'added' if data.get('created', True) else 'updated'} {data['device_id']}")


@device.command("remove")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("device_id")
def device_remove(admin: str, device_id: str, as_json: bool) -> None:
    """Forget DEVICE_ID; it has to register again."""
    data = request(admin, "DELETE", f"/devices/{segment(device_id)}")
    done(data, as_json, f"removed {device_id}")


@device.command("info")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("device_id")
def device_info(admin: str, device_id: str, as_json: bool) -> None:
    """Ask DEVICE_ID for its DeviceInfo (waits as long as the gateway does: devices.query_timeout)."""
    emit_fields(
        request(admin, "GET", f"/devices/{segment(device_id)}/info", timeout=None), as_json=as_json, title=device_id
    )


@device.command("status")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("device_id")
def device_status(admin: str, device_id: str, as_json: bool) -> None:
    """Ask DEVICE_ID for its DeviceStatus (waits as long as the gateway does: devices.query_timeout)."""
    emit_fields(
        request(admin, "GET", f"/devices/{segment(device_id)}/status", timeout=None), as_json=as_json, title=device_id
    )


CHANNEL_COLUMNS = (
    Column("channel", "channel_id", is_id=True),
    Column("name", "name"),
    Column("device", "device_id", is_id=True),
    Column("status", "status"),
    Column("parent", "parent_id", is_id=True),
    Column("PTZ", "PTZType"),
    Column("address", "Address"),
)


@main.command()
@ADMIN_OPTION
@click.argument("device_id", required=False)
@JSON_OPTION
@click.option("--status", type=click.Choice(["ON", "OFF"], case_sensitive=False), help="Only channels in this status.")
@click.option("--tree", is_flag=True, help="Show the catalog tree (ParentID / BusinessGroupID).")
def channels(admin: str, device_id: str | None, as_json: bool, status: str | None, tree: bool) -> None:
    """List catalog channels (of one device, or all)."""
    data = request(admin, "GET", "/channels" + (f"?device={segment(device_id)}" if device_id else ""))
    rows = [c for c in data["channels"] if status is None or str(c["status"]).upper() == status.upper()]
    if as_json:
        print_json(rows)
    elif tree:
        console.print(_channel_tree(rows), highlight=False, crop=False, soft_wrap=True)
    else:
        emit(rows, CHANNEL_COLUMNS, title=plural(len(rows), "channel"))
    if data["partial"]:
        warn(f"partial catalogs (the device went quiet before SumNum): {', '.join(data['partial'])}")


@main.group()
def catalog() -> None:
    """Catalog of devices."""


def _catalog_line(r: dict[str, Any]) -> str:
    note = "" if r["complete"] else f" (partial: the device announced {r['sum_num']})"
    return f"{r['device_id']}: {plural(r['channels'], 'channel')} in {plural(r['messages'], 'message')}{note}"


@catalog.command("refresh")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("device_id", required=False)
@click.option("--all", "all_devices", is_flag=True, help="Every online device, one after the other.")
def catalog_refresh(admin: str, device_id: str | None, all_devices: bool, as_json: bool) -> None:
    """Ask DEVICE_ID (or --all online devices) for its catalog and store it.

    Waits as long as the gateway does (devices.catalog_first_timeout, catalog_total_timeout).
    With --all, a device that fails is reported and the others are still asked; the exit
    status is 1 if any failed.
    """
    if all_devices == bool(device_id):
        raise click.UsageError("give a DEVICE_ID or --all")
    if device_id:
        r = request(admin, "POST", f"/devices/{segment(device_id)}/catalog", {}, timeout=None)
        if as_json:
            print_json(r)
        else:
            click.echo(_catalog_line(r))
        return
    targets = [d["device_id"] for d in request(admin, "GET", "/devices?state=online")["devices"]]
    results: list[dict[str, Any]] = []
    failed = 0
    live = is_terminal() and not as_json
    with Progress(console=console, transient=True, disable=not live) as progress:
        task = progress.add_task("catalog", total=len(targets))
        for i, target in enumerate(targets, 1):
            step = f"[{i}/{len(targets)}]"
            progress.update(task, description=f"{step} catalog of {target}")
            try:
                r = call(admin, "POST", f"/devices/{segment(target)}/catalog", {}, timeout=None)
            except AdminApiError as exc:
                if exc.status is None:  # the gateway itself is gone: the others would fail the same way
                    fail(exc.message, exc.hint)
                failed += 1
                results.append({"device_id": target, "error": exc.message})
                if live:  # above the progress bar, which owns the terminal
                    progress.console.print(f"{step} [red]error:[/red] {escape(exc.message)}", highlight=False)
                elif not as_json:
                    click.echo(f"{step} error: {exc.message}", err=True)
            else:
                results.append(r)
                if live:
                    progress.console.print(f"{step} {escape(_catalog_line(r))}", highlight=False, crop=False)
                elif not as_json:
                    click.echo(f"{step} {_catalog_line(r)}")
            progress.advance(task)
    if as_json:
        print_json(results)
    else:
        done = len(targets) - failed
        click.echo(
            f"{plural(done, 'catalog')} refreshed, {failed} failed"
            if targets
            else "no device is online: nothing to refresh"
        )
    sys.exit(1 if failed else 0)


def _channel_tree(rows: list[dict[str, Any]]) -> Tree:
    """Channels under their parents (ParentID, else BusinessGroupID, else the device)."""
    ids = {r["channel_id"] for r in rows}
    children: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        parent = r.get("parent_id") or r.get("BusinessGroupID") or r["device_id"]
        if parent not in ids and parent != r["device_id"]:
            parent = r["device_id"]  # a parent we do not know (often our own ID, C4): hang it under its device
        children.setdefault(parent, []).append(r)
    root = Tree(plural(len(rows), "channel"))

    def add(node: Tree, key: str, seen: set[str]) -> None:
        for r in sorted(children.get(key, []), key=lambda r: r["channel_id"]):
            if r["channel_id"] in seen:
                continue
            colour = "green" if r["status"] == "ON" else "red"
            name, status = escape(printable(str(r["name"]))), escape(printable(str(r["status"])))
            branch = node.add(f"{r['channel_id']} {name} [{colour}]{status}[/{colour}]")
            add(branch, r["channel_id"], seen | {r["channel_id"]})

    for device in sorted({r["device_id"] for r in rows}):
        add(root.add(f"[bold]{device}[/bold]"), device, set())
    return root
