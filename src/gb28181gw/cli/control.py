"""PTZ, presets, recordings search and DeviceControl."""

from __future__ import annotations

import json

import click
from rich.table import Table

from gb28181gw.cli.common import ADMIN_OPTION, _api, _api_send, console, main

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
