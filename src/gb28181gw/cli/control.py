"""PTZ, presets, recordings search and DeviceControl."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import click

from gb28181gw.cli.common import (
    ADMIN_OPTION,
    JSON_OPTION,
    TIME_FORMS,
    Column,
    TimeParam,
    display_zone,
    done,
    emit,
    main,
    parse_time,
    plural,
    request,
    segment,
    warn,
)

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


def _sent(answer: dict[str, Any], as_json: bool) -> None:
    done(answer, as_json, f"sent PTZCmd {answer['sent']}")


@main.command()
@ADMIN_OPTION
@JSON_OPTION
@click.argument("channel_id")
@click.argument("action", type=click.Choice(PTZ_ACTIONS, case_sensitive=False))
@click.option("--speed", type=click.IntRange(0, 255), default=0x80, show_default=True, help="Pan/tilt speed.")
@click.option("--zoom-speed", type=click.IntRange(0, 15), default=5, show_default=True)
def ptz(admin: str, channel_id: str, action: str, speed: int, zoom_speed: int, as_json: bool) -> None:
    """Move a PTZ camera (send `stop` to stop it)."""
    body = {"kind": "move", "channel_id": channel_id, "action": action, "speed": speed, "zoom_speed": zoom_speed}
    _sent(request(admin, "POST", "/ptz", body, timeout=None), as_json)


@main.command()
@ADMIN_OPTION
@JSON_OPTION
@click.argument("channel_id")
@click.argument("action", type=click.Choice(["set", "call", "delete"], case_sensitive=False))
@click.argument("number", type=click.IntRange(1, 255))
def preset(admin: str, channel_id: str, action: str, number: int, as_json: bool) -> None:
    """Set, call or delete preset NUMBER of a PTZ camera."""
    body = {"kind": "preset", "channel_id": channel_id, "action": action, "number": number}
    _sent(request(admin, "POST", "/ptz", body, timeout=None), as_json)


def _size(text: Any) -> str:
    """A FileSize (bytes, as the device wrote it) in MiB/GiB; anything else as it came."""
    try:
        n = int(str(text))
    except ValueError:
        return str(text or "")
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


RECORD_COLUMNS = (
    Column("start", "StartTime"),
    Column("end", "EndTime"),
    Column("type", "Type"),
    Column("size", lambda r: _size(r.get("FileSize", ""))),
    Column("file", "FilePath"),
)
GB_TIME = "%Y-%m-%dT%H:%M:%S"


@main.command(
    epilog=f"TIME is {TIME_FORMS}, in the site's time zone (gateway.time_zone, Beijing by default): "
    "devices keep their recordings in local time. A bare day in --to means its end: "
    "--from 2024-05-06 --to 2024-05-06 is that whole day."
)
@ADMIN_OPTION
@JSON_OPTION
@click.argument("channel_id")
@click.option("--from", "start", required=True, type=TimeParam(), help="Start of the search.")
@click.option("--to", "end", default="now", show_default=True, type=TimeParam(), help="End of the search.")
@click.option(
    "--type",
    "record_type",
    type=click.Choice(["all", "time", "alarm", "manual"], case_sensitive=False),
    default="all",
    show_default=True,
)
def records(admin: str, channel_id: str, start: str, end: str, record_type: str, as_json: bool) -> None:
    """Search the recordings of CHANNEL_ID (RecordInfo).

    Waits as long as the gateway does (devices.query_timeout for the first answer).
    """
    now = _dt.datetime.now(display_zone(admin)).replace(tzinfo=None, microsecond=0)
    since, until = parse_time(start, now=now), parse_time(end, now=now, end_of_day=True)
    if since >= until:
        raise click.BadParameter(
            f"{since.strftime(GB_TIME)} is not before --to {until.strftime(GB_TIME)}", param_hint="'--from'"
        )
    query = f"?from={since.strftime(GB_TIME)}&to={until.strftime(GB_TIME)}&type={record_type.lower()}"
    data = request(admin, "GET", f"/channels/{segment(channel_id)}/records{query}", timeout=None)
    rows = data["records"]
    emit(
        rows,
        RECORD_COLUMNS,
        as_json=as_json,
        title=f"{plural(len(rows), 'recording')} of {channel_id}",
        json_rows=data,
    )
    if not data["complete"] and not as_json:
        warn(f"partial: the device announced {data['sum_num']} and went quiet after {len(rows)}")


CONTROL_COMMANDS = {
    "reboot": ("TeleBoot", "Boot", False),
    "record-start": ("RecordCmd", "Record", True),
    "record-stop": ("RecordCmd", "StopRecord", True),
    "guard": ("GuardCmd", "SetGuard", True),
    "unguard": ("GuardCmd", "ResetGuard", True),
    "alarm-reset": ("AlarmCmd", "ResetAlarm", True),
    "iframe": ("IFameCmd", "Send", False),
}


@main.command("control")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("target")
@click.argument("command", type=click.Choice(list(CONTROL_COMMANDS), case_sensitive=False))
def control_cmd(admin: str, target: str, command: str, as_json: bool) -> None:
    """Send a DeviceControl command to a device or channel and print its result."""
    name, value, wait = CONTROL_COMMANDS[command]
    body = {"target": target, "name": name, "value": value, "wait": wait}
    result = request(admin, "POST", "/control", body, timeout=None)
    done(result, as_json, f"{command}: {result.get('Result', 'sent')}")
