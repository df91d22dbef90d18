"""Devices, their channels and catalogs, through the admin API of a running gateway."""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time as _time
import urllib.error
import urllib.request
from typing import Any

import click
from rich.progress import Progress
from rich.table import Table
from rich.tree import Tree

from gb28181gw.cli.common import ADMIN_OPTION, _ago, _api, _api_send, _print_fields, console, main


@main.command()
@ADMIN_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(admin: str, as_json: bool) -> None:
    """Show the running gateway's status."""
    data = _api(admin, "/status")
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table("key", "value", show_header=False)
    for key, value in data.items():
        if isinstance(value, dict):
            for k, v in value.items():
                table.add_row(f"{key}.{k}", str(v))
        else:
            table.add_row(key, str(value))
    console.print(table)


@main.group(invoke_without_command=True)
@ADMIN_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--online/--offline", "online", default=None, help="Only online (or offline) devices.")
def devices(admin: str, as_json: bool, online: bool | None) -> None:
    """List the devices the gateway knows."""
    if click.get_current_context().invoked_subcommand is not None:
        return  # devices prune / refused (cli/housekeeping.py)
    query = "" if online is None else f"?state={'online' if online else 'offline'}"
    data = _api(admin, f"/devices{query}")["devices"]
    if as_json:
        console.print_json(json.dumps(data, ensure_ascii=False))
        return
    table = Table(
        "ID", "name", "address", "transport", "online", "last keepalive", "expires", title=f"{len(data)} devices"
    )
    for d in data:
        address = f"{d['host']}:{d['port']}" if d["host"] else "-"
        state = "[green]online[/green]" if d["online"] else f"[red]offline[/red] {d['offline_reason']}".strip()
        expires = "-"
        if d["registered"] and d["expires_at"]:
            expires = f"in {max(0, int(d['expires_at'] - _time.time()))} s"
        table.add_row(d["device_id"], d["name"], address, d["transport"], state, _ago(d["last_keepalive"]), expires)
    console.print(table)


@main.group()
def device() -> None:
    """Show, add or remove one device."""


@device.command("show")
@ADMIN_OPTION
@click.argument("device_id")
def device_show(admin: str, device_id: str) -> None:
    """Everything the gateway knows about DEVICE_ID."""
    data = _api(admin, f"/devices/{device_id}")
    table = Table("field", "value", show_header=False, title=device_id)
    for key, value in data.items():
        if key in ("registered_at", "expires_at", "last_keepalive", "created_at", "updated_at") and value:
            value = f"{_dt.datetime.fromtimestamp(value).isoformat(timespec='seconds')} ({_ago(value)})"
        table.add_row(key, str(value))
    console.print(table)


@device.command("add")
@ADMIN_OPTION
@click.argument("device_id")
@click.option("--password", default="", help="Its own digest password (overrides registrar.password).")
@click.option("--name", default="", help="A name for it.")
@click.option(
    "--charset", type=click.Choice(["GB2312", "GB18030", "UTF-8"]), default=None, help="Charset of its MANSCDP bodies."
)
@click.option(
    "--stream-mode",
    type=click.Choice(["udp", "tcp-passive", "tcp-active"]),
    default=None,
    help="How it sends media: UDP, TCP to us (passive) or TCP from us (active). Default: media.stream_mode.",
)
def device_add(
    admin: str, device_id: str, password: str, name: str, charset: str | None, stream_mode: str | None
) -> None:
    """Provision DEVICE_ID (needed when registrar.require_provisioned is on), or change its settings."""
    data = _api_send(
        admin,
        "POST",
        "/devices",
        {
            "device_id": device_id,
            "password": password,
            "name": name,
            "charset": charset or "",
            "stream_mode": stream_mode or "",
        },
    )
    console.print(f"added {data['device_id']}", highlight=False)


@device.command("remove")
@ADMIN_OPTION
@click.argument("device_id")
def device_remove(admin: str, device_id: str) -> None:
    """Forget DEVICE_ID; it has to register again."""
    _api_send(admin, "DELETE", f"/devices/{device_id}")
    console.print(f"removed {device_id}", highlight=False)


@main.command()
@ADMIN_OPTION
@click.argument("device_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--status", type=click.Choice(["ON", "OFF"]), help="Only channels in this status.")
@click.option("--tree", is_flag=True, help="Show the catalog tree (ParentID / BusinessGroupID).")
def channels(admin: str, device_id: str | None, as_json: bool, status: str | None, tree: bool) -> None:
    """List catalog channels (of one device, or all)."""
    data = _api(admin, "/channels" + (f"?device={device_id}" if device_id else ""))
    rows = [c for c in data["channels"] if status is None or c["status"].upper() == status]
    if as_json:
        console.print_json(json.dumps(rows, ensure_ascii=False))
        return
    if tree:
        console.print(_channel_tree(rows))
        return
    table = Table("channel", "name", "device", "status", "parent", "PTZ", "address", title=f"{len(rows)} channels")
    for c in rows:
        table.add_row(
            c["channel_id"],
            c["name"],
            c["device_id"],
            c["status"],
            c["parent_id"],
            c.get("PTZType", ""),
            c.get("Address", ""),
        )
    console.print(table)
    if data["partial"]:
        console.print(
            f"[yellow]partial catalogs (device went quiet before SumNum): {', '.join(data['partial'])}[/yellow]"
        )


@main.group()
def catalog() -> None:
    """Catalog of devices."""


@catalog.command("refresh")
@ADMIN_OPTION
@click.argument("device_id", required=False)
@click.option("--all", "all_devices", is_flag=True, help="Every online device.")
def catalog_refresh(admin: str, device_id: str | None, all_devices: bool) -> None:
    """Ask DEVICE_ID (or --all online devices) for its catalog and store it."""
    if all_devices == bool(device_id):
        raise click.UsageError("give a DEVICE_ID or --all")
    targets = [device_id] if device_id else [d["device_id"] for d in _api(admin, "/devices?state=online")["devices"]]
    failed = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("catalog", total=len(targets))
        for target in targets:
            progress.update(task, description=f"catalog {target}")
            url = admin.rstrip("/") + f"/api/v1/devices/{target}/catalog"
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(url, method="POST", headers={"Content-Type": "application/json"}),
                    timeout=300,
                ) as resp:
                    r = json.loads(resp.read())
                note = "" if r["complete"] else f" [yellow](partial: SumNum {r['sum_num']})[/yellow]"
                console.print(f"{target}: {r['channels']} channels in {r['messages']} messages{note}", highlight=False)
            except urllib.error.HTTPError as exc:
                failed += 1
                console.print(
                    f"[red]{target}: {json.loads(exc.read() or b'{}').get('error', exc.reason)}[/red]", highlight=False
                )
            progress.advance(task)
    sys.exit(1 if failed else 0)


@device.command("info")
@ADMIN_OPTION
@click.argument("device_id")
def device_info(admin: str, device_id: str) -> None:
    """Ask DEVICE_ID for its DeviceInfo."""
    _print_fields(device_id, _api(admin, f"/devices/{device_id}/info"))


@device.command("status")
@ADMIN_OPTION
@click.argument("device_id")
def device_status(admin: str, device_id: str) -> None:
    """Ask DEVICE_ID for its DeviceStatus."""
    _print_fields(device_id, _api(admin, f"/devices/{device_id}/status"))


def _channel_tree(rows: list[dict[str, Any]]) -> Tree:
    """Channels under their parents (ParentID, else BusinessGroupID, else the device)."""
    ids = {r["channel_id"] for r in rows}
    children: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        parent = r.get("parent_id") or r.get("BusinessGroupID") or r["device_id"]
        if parent not in ids and parent != r["device_id"]:
            parent = r["device_id"]  # a parent we do not know (often our own ID, C4): hang it under its device
        children.setdefault(parent, []).append(r)
    root = Tree(f"{len(rows)} channels")

    def add(node: Tree, key: str, seen: set[str]) -> None:
        for r in sorted(children.get(key, []), key=lambda r: r["channel_id"]):
            if r["channel_id"] in seen:
                continue
            colour = "green" if r["status"] == "ON" else "red"
            branch = node.add(f"{r['channel_id']} {r['name']} [{colour}]{r['status']}[/{colour}]")
            add(branch, r["channel_id"], seen | {r["channel_id"]})

    for device in sorted({r["device_id"] for r in rows}):
        add(root.add(f"[bold]{device}[/bold]"), device, set())
    return root
