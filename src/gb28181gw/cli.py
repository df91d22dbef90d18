"""The ``gb28181gw`` command line.

``serve`` runs the gateway; the other commands either work offline (``id``,
``config``) or talk to a running gateway through its admin API (``status``).
The CLI stays thin: it builds a Config and calls :mod:`gb28181gw.app`, or makes
HTTP requests.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import socket
import sys
import time as _time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.tree import Tree

from gb28181gw import __version__
from gb28181gw.config import describe_options, load_config
from gb28181gw.errors import ConfigError, IdError
from gb28181gw.ids import GbId

console = Console()
err_console = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gb28181gw")
def main() -> None:
    """gb28181gw: GB/T 28181 signalling gateway and device registrar."""


def _overrides(pairs: tuple[str, ...], **shorthands: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise click.BadParameter(f"{pair!r}: expected section.key=value", param_hint="--set")
        out[key.strip()] = value
    for key, value in shorthands.items():
        if value is not None:
            out[key] = ",".join(value) if isinstance(value, tuple) else str(value)
    return out


@main.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting, e.g. sip.port=5070.")
@click.option("--listen", multiple=True, help="SIP listen address (repeat for several). [sip.listen]")
@click.option("--port", type=int, help="SIP port for UDP and TCP. [sip.port]")
@click.option("--admin-port", type=int, help="Admin API port. [admin.port]")
@click.option("--id", "gateway_id", help="Our 20-digit platform ID. [gateway.id]")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="[log.level]")
@click.option("--wire", is_flag=True, default=None, help="Log every SIP message (debug). [log.wire]")
def serve(
    config_path: str | None,
    sets: tuple[str, ...],
    listen: tuple[str, ...],
    port: int | None,
    admin_port: int | None,
    gateway_id: str | None,
    log_level: str | None,
    wire: bool | None,
) -> None:
    """Run the gateway (defaults: SIP on 0.0.0.0:5060 UDP+TCP, admin API on 127.0.0.1:8028)."""
    from gb28181gw.app import STARTUP_FAILURE, run
    from gb28181gw.logs import setup_logging

    try:
        config = load_config(
            config_path,
            overrides=_overrides(
                sets,
                **{
                    "sip.listen": listen or None,
                    "sip.port": port,
                    "admin.port": admin_port,
                    "gateway.id": gateway_id,
                    "log.level": log_level,
                    "log.wire": wire,
                },
            ),
        )
    except ConfigError as exc:
        err_console.print(f"[red]{exc}[/red]", highlight=False)
        sys.exit(STARTUP_FAILURE)
    setup_logging(config.log.level, config.log.format, wire=config.log.wire)
    sys.exit(run(config))


@main.command("config")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="Check this TOML file.")
def config_cmd(config_path: str | None) -> None:
    """Check a configuration (file + environment) and print every effective option."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        err_console.print(f"[red]{exc}[/red]", highlight=False)
        sys.exit(1)
    table = Table("key", "value", "meaning")
    for key, _default, help_text in describe_options():
        section, _, name = key.partition(".")
        table.add_row(key, repr(getattr(getattr(config, section), name)), help_text)
    console.print(table)


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


def _api(ctx_admin: str, path: str) -> Any:
    url = ctx_admin.rstrip("/") + "/api/v1" + path
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        err_console.print(f"[red]{url}: HTTP {exc.code} {exc.reason}[/red]")
    except (urllib.error.URLError, OSError) as exc:
        err_console.print(f"[red]cannot reach the gateway at {ctx_admin}: {exc}. Is `gb28181gw serve` running?[/red]")
    sys.exit(1)


ADMIN_OPTION = click.option(
    "--admin",
    envvar="GB28181GW_ADMIN_URL",
    default="http://127.0.0.1:8028",
    show_default=True,
    help="Admin API of the running gateway.",
)


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


def _api_send(admin: str, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 10.0) -> Any:
    url = admin.rstrip("/") + "/api/v1" + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read().decode("utf-8")).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        err_console.print(f"[red]{message}[/red]", highlight=False)
    except (urllib.error.URLError, OSError) as exc:
        err_console.print(f"[red]cannot reach the gateway at {admin}: {exc}. Is `gb28181gw serve` running?[/red]")
    sys.exit(1)


def _ago(epoch: float) -> str:
    if not epoch:
        return "never"
    seconds = max(0, int(_time.time() - epoch))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


@main.command()
@ADMIN_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--online/--offline", "online", default=None, help="Only online (or offline) devices.")
def devices(admin: str, as_json: bool, online: bool | None) -> None:
    """List the devices the gateway knows."""
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


def _print_fields(title: str, data: dict[str, Any]) -> None:
    table = Table("field", "value", show_header=False, title=title)
    for key, value in data.items():
        table.add_row(key, str(value))
    console.print(table)


PTZ_ACTIONS = [
    "left",
    "right",
    "up",
    "down",
    "up-left",
    "up-right",
    "down-left",
    "down-right",
    "zoom-in",
    "zoom-out",
    "stop",
]


@main.command()
@ADMIN_OPTION
@click.argument("channel_id")
@click.argument("action", type=click.Choice(PTZ_ACTIONS))
@click.option("--speed", type=click.IntRange(0, 255), default=0x80, show_default=True, help="Pan/tilt speed.")
@click.option("--zoom-speed", type=click.IntRange(0, 15), default=5, show_default=True)
def ptz(admin: str, channel_id: str, action: str, speed: int, zoom_speed: int) -> None:
    """Move a PTZ camera (send `stop` to stop it)."""
    r = _api_send(
        admin,
        "POST",
        "/ptz",
        {"kind": "move", "channel_id": channel_id, "action": action, "speed": speed, "zoom_speed": zoom_speed},
    )
    console.print(f"sent PTZCmd {r['sent']}", highlight=False)


@main.command()
@ADMIN_OPTION
@click.argument("channel_id")
@click.argument("action", type=click.Choice(["set", "call", "delete"]))
@click.argument("number", type=click.IntRange(1, 255))
def preset(admin: str, channel_id: str, action: str, number: int) -> None:
    """Set, call or delete preset NUMBER of a PTZ camera."""
    r = _api_send(
        admin, "POST", "/ptz", {"kind": "preset", "channel_id": channel_id, "action": action, "number": number}
    )
    console.print(f"sent PTZCmd {r['sent']}", highlight=False)


@main.command()
@ADMIN_OPTION
@click.argument("channel_id")
@click.option("--from", "start", required=True, help="Start, YYYY-MM-DDTHH:MM:SS (local time).")
@click.option("--to", "end", required=True, help="End, YYYY-MM-DDTHH:MM:SS.")
@click.option(
    "--type", "record_type", type=click.Choice(["all", "time", "alarm", "manual"]), default="all", show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def records(admin: str, channel_id: str, start: str, end: str, record_type: str, as_json: bool) -> None:
    """Search the recordings of CHANNEL_ID (RecordInfo)."""
    data = _api(admin, f"/channels/{channel_id}/records?from={start}&to={end}&type={record_type}")
    if as_json:
        console.print_json(json.dumps(data, ensure_ascii=False))
        return
    table = Table("start", "end", "type", "size", "file", title=f"{len(data['records'])} recordings of {channel_id}")
    for r in data["records"]:
        table.add_row(
            r.get("StartTime", ""),
            r.get("EndTime", ""),
            r.get("Type", ""),
            r.get("FileSize", ""),
            r.get("FilePath", ""),
        )
    console.print(table)
    if not data["complete"]:
        console.print(f"[yellow]partial: the device said {data['sum_num']} and went quiet[/yellow]")


@main.command("control")
@ADMIN_OPTION
@click.argument("target")
@click.argument(
    "command", type=click.Choice(["reboot", "record-start", "record-stop", "guard", "unguard", "alarm-reset", "iframe"])
)
def control_cmd(admin: str, target: str, command: str) -> None:
    """Send a DeviceControl command to a device or channel and print its result."""
    name, value, wait = {
        "reboot": ("TeleBoot", "Boot", False),
        "record-start": ("RecordCmd", "Record", True),
        "record-stop": ("RecordCmd", "StopRecord", True),
        "guard": ("GuardCmd", "SetGuard", True),
        "unguard": ("GuardCmd", "ResetGuard", True),
        "alarm-reset": ("AlarmCmd", "ResetAlarm", True),
        "iframe": ("IFameCmd", "Send", False),
    }[command]
    result = _api_send(admin, "POST", "/control", {"target": target, "name": name, "value": value, "wait": wait})
    console.print(f"{command}: {result.get('Result', 'sent')}", highlight=False)


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


# --- live streams ------------------------------------------------------------------------


def _local_address_toward(admin: str) -> str:
    """The address the gateway reaches us at: loopback for a local gateway, else our address toward it."""
    host = urllib.parse.urlparse(admin).hostname or "127.0.0.1"
    if host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # no packet is sent: this only picks the route
        return str(probe.getsockname()[0])


def _pull(
    admin: str, channel_id: str, transport: str, host: str | None, seconds: float, *, until_key_frame: bool = False
) -> tuple[Any, Any, dict[str, Any]]:
    from gb28181gw.pull import Receiver, collect

    receiver = Receiver(transport)
    try:
        opened = _api_send(
            admin,
            "POST",
            "/streams",
            {
                "channel_id": channel_id,
                "consumer": {
                    "transport": transport,
                    "host": host or _local_address_toward(admin),
                    "port": receiver.port,
                    "ttl": seconds + 30,  # the gateway drops us by itself if we die
                    "label": "cli",
                },
            },
            timeout=60,
        )
        err_console.print(
            f"stream {opened['id']} ({opened['mode']}, worker {opened['worker']}): receiving as "
            f"{opened['consumer']['id']} with SSRC {opened['consumer']['ssrc']}",
            highlight=False,
        )
        try:
            pulled, key = collect(receiver, seconds, until_key_frame=until_key_frame)
        finally:
            try:
                _api_send(admin, "DELETE", f"/streams/{opened['id']}/consumers/{opened['consumer']['id']}")
            except SystemExit:
                pass  # the stream ended on the gateway's side already
    finally:
        receiver.close()
    return pulled, key, opened


@main.command()
@ADMIN_OPTION
@click.argument("channel_id")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="How long to record.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    required=True,
    help="File to write: .ps as received, .mp4 remuxed.",
)
@click.option("--transport", type=click.Choice(["udp", "tcp"]), default="udp", show_default=True)
@click.option("--host", default=None, help="Address the gateway sends to (default: ours toward the gateway).")
def play(admin: str, channel_id: str, seconds: float, output: str, transport: str, host: str | None) -> None:
    """Record CHANNEL_ID's live stream: the gateway opens it (or joins the open one) and relays it here."""
    pulled, _, _ = _pull(admin, channel_id, transport, host, seconds)
    path = Path(output)
    if not pulled.packets:
        err_console.print(f"[red]no RTP received in {seconds:g} s[/red]")
        sys.exit(1)
    if path.suffix.lower() == ".mp4":
        from gb28181gw.pull import remux_mp4

        try:
            frames = remux_mp4(bytes(pulled.ps), path)
        except Exception as exc:  # av reports broken input in many ways; say what and keep the PS
            fallback = path.with_suffix(".ps")
            fallback.write_bytes(pulled.ps)
            err_console.print(f"[red]cannot remux to MP4 ({exc}); the PS is in {fallback}[/red]", highlight=False)
            sys.exit(1)
        what = f"{frames} video frames"
    else:
        path.write_bytes(pulled.ps)
        what = f"{len(pulled.ps)} bytes of PS"
    s = pulled.stats
    console.print(
        f"{path}: {what}; {pulled.packets} packets, {pulled.bytes} bytes, {s.lost} lost, {s.reordered} reordered",
        highlight=False,
    )


@main.command()
@ADMIN_OPTION
@click.argument("channel_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="JPEG file to write.")
@click.option(
    "--timeout", "seconds", type=float, default=15.0, show_default=True, help="Seconds to wait for a key frame."
)
@click.option("--transport", type=click.Choice(["udp", "tcp"]), default="udp", show_default=True)
@click.option("--host", default=None, help="Address the gateway sends to (default: ours toward the gateway).")
def snapshot(admin: str, channel_id: str, output: str, seconds: float, transport: str, host: str | None) -> None:
    """Save the first key frame of CHANNEL_ID's live stream as a JPEG."""
    from gb28181gw.pull import jpeg_of

    pulled, key, _ = _pull(admin, channel_id, transport, host, seconds, until_key_frame=True)
    if key is None:
        err_console.print(f"[red]no key frame in {seconds:g} s ({pulled.packets} packets received)[/red]")
        sys.exit(1)
    try:
        Path(output).write_bytes(jpeg_of(key))
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/red]")
        sys.exit(1)
    console.print(f"{output}: key frame ({key.codec}) after {pulled.packets} packets", highlight=False)


def _rate(bits_per_second: float) -> str:
    if bits_per_second >= 1e6:
        return f"{bits_per_second / 1e6:.1f} Mbit/s"
    return f"{bits_per_second / 1e3:.0f} kbit/s"


@main.command()
@ADMIN_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def streams(admin: str, as_json: bool) -> None:
    """List live streams: channel, mode, consumers, bitrate, loss, age."""
    rows = _api(admin, "/streams")["streams"]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("id", "channel", "state", "mode", "worker", "consumers", "bitrate", "packets", "lost", "codec", "age")
    for r in rows:
        relay = r.get("relay", {})
        ps = relay.get("ps", {})
        table.add_row(
            r["id"],
            r["channel_id"],
            r["state"],
            r["mode"],
            str(r["worker"]),
            ", ".join(f"{c['id']} {c['transport']} {c['address']}" for c in r["consumers"]) or "-",
            _rate(relay.get("bitrate", 0.0)),
            str(relay.get("packets", 0)),
            str(relay.get("lost", 0)),
            ps.get("video_codec") or "-",
            f"{r['age']:.0f} s",
        )
    console.print(table)
    console.print(f"{len(rows)} streams", highlight=False)


@main.group()
def stream() -> None:
    """One live stream."""


@stream.command("stop")
@ADMIN_OPTION
@click.argument("stream_id")
def stream_stop(admin: str, stream_id: str) -> None:
    """Close STREAM_ID now (BYE to the device), whoever consumes it."""
    _api_send(admin, "DELETE", f"/streams/{stream_id}")
    console.print(f"stopped {stream_id}", highlight=False)
