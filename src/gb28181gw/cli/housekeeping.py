"""Housekeeping through the admin API: bans, refused devices, pruning old devices, stored alarms.

- ``gb28181gw bans`` lists the active bans, ``bans lift KEY`` lifts one, and
  ``device unban DEVICE_ID`` lifts every ban of a device, from every address.
- ``gb28181gw devices refused``: the IDs and addresses the gateway keeps refusing.
- ``gb28181gw devices prune --older-than 30d``: forget devices not heard from for that long.
- ``gb28181gw alarms [DEVICE_ID]``: the alarms devices reported, newest first.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import click

from gb28181gw.cli.common import (
    ADMIN_OPTION,
    JSON_OPTION,
    Column,
    ago,
    done,
    duration,
    emit,
    main,
    plural,
    print_json,
    request,
    segment,
    warn,
    when,
)
from gb28181gw.cli.devices import device, devices
from gb28181gw.errors import IdError
from gb28181gw.ids import GbId

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

#: AlarmMethod codes (GB/T 28181-2016 §A.2.1, PROTOCOL.md §5.7.1).
ALARM_METHODS = {
    "1": "telephone",
    "2": "device",
    "3": "SMS",
    "4": "GPS",
    "5": "video",
    "6": "device fault",
    "7": "other",
}


class Age(click.ParamType[float, Any]):
    """A span of time typed by an operator: ``30d``, ``12h``, ``90m``, ``2w``, ``3600`` (seconds)."""

    name = "AGE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            m = _AGE.fullmatch(str(value).strip())
            if m is None:
                self.fail(f"{value!r} is not an age: use e.g. 30d, 12h, 90m, 2w or seconds", param, ctx)
            seconds = float(m[1]) * _AGE_UNITS[(m[2] or "s").lower()]
        if seconds <= 0:
            self.fail(f"{value!r} must be longer than 0", param, ctx)
        return seconds


def _device_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        GbId.parse(value)
    except IdError as exc:
        raise click.BadParameter(f"{value} is not a device ID: {exc}") from None
    return value


# --- bans ----------------------------------------------------------------------------------

BAN_COLUMNS = (
    Column("key", "key", is_id=True),
    Column("address", "address"),
    Column("device ID", "device_id", is_id=True),
    Column("since", lambda b: when(b.get("since"))),
    Column("until", lambda b: when(b.get("until"))),
    Column("reason", "reason"),
    Column("failures", "failures"),
    Column("refused since", "attempts"),
)

FLOOD_COLUMNS = (
    Column("key", "key"),
    Column("known", lambda b: "yes" if b.get("kind") == "known" else "no"),
    Column("ends in", lambda b: duration(b.get("seconds_left"))),
    Column("sent", "sent"),
    Column("dropped", "dropped"),
)


@main.group(invoke_without_command=True)
@ADMIN_OPTION
@JSON_OPTION
@click.pass_context
def bans(ctx: click.Context, admin: str, as_json: bool) -> None:
    """List the active bans (after registrar.max_auth_failures wrong passwords), and the addresses
    banned for sending SIP requests too fast (flood.limit, flood.known_limit).

    An address ban (ip:ADDRESS) refuses every REGISTER from that address; an ID ban
    (id:DEVICE_ID@ADDRESS) refuses that ID from that address. `bans lift KEY` lifts one,
    `device unban DEVICE_ID` every ban of a device; a new password (`device add --password`)
    lifts them too. A flood ban (flood:ADDRESS) drops everything from that address until it ends.
    """
    if ctx.invoked_subcommand is not None:
        return
    data = request(admin, "GET", "/bans")
    if as_json:  # one list: every ban has a key and an address, a flood ban a kind instead of a reason
        print_json(data["bans"] + data.get("flood", []))
        return
    rows = data["bans"]
    emit(rows, BAN_COLUMNS, as_json=False, title=plural(len(rows), "ban"))
    if rows and not data.get("persisted"):
        warn("bans end when the gateway restarts (registrar.persist_bans = false)")
    flooders = data.get("flood", [])
    if flooders:
        emit(flooders, FLOOD_COLUMNS, as_json=False, title=plural(len(flooders), "address") + " banned for flooding")


@bans.command("lift")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("key")
def bans_lift(admin: str, as_json: bool, key: str) -> None:
    """Lift the ban KEY (ip:ADDRESS, id:DEVICE_ID@ADDRESS or flood:ADDRESS, as `gb28181gw bans` lists it)."""
    data = request(admin, "DELETE", "/bans/" + urllib.parse.quote(key, safe=":@"))
    done(data, as_json, f"lifted {key}")


@device.command("unban")
@ADMIN_OPTION
@JSON_OPTION
@click.argument("device_id", callback=_device_id)
def device_unban(admin: str, as_json: bool, device_id: str) -> None:
    """Lift every ban of DEVICE_ID, from every address (and the address bans its failures made)."""
    data = request(admin, "DELETE", f"/devices/{segment(device_id)}/bans")
    if as_json:
        print_json(data)
        return
    lifted = data["lifted"]
    if not lifted:
        click.echo(f"{device_id} was not banned")
        return
    click.echo(f"lifted {plural(len(lifted), 'ban')} of {device_id}: {', '.join(b['key'] for b in lifted)}")


# --- refused devices -----------------------------------------------------------------------

REFUSED_COLUMNS = (
    Column("ID", lambda r: r.get("device_id") or "(none)", is_id=True),
    Column("address", "address"),
    Column("reason", "reason"),
    Column("count", "count"),
    Column("first seen", lambda r: ago(r.get("first_seen"))),
    Column("last seen", lambda r: ago(r.get("last_seen"))),
    Column("detail", "detail"),
)


@devices.command("refused")
@ADMIN_OPTION
@JSON_OPTION
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the N refused most recently.")
def devices_refused(admin: str, as_json: bool, limit: int | None) -> None:
    """IDs and addresses the gateway keeps refusing, the latest first.

    A REGISTER refused (wrong password, not provisioned, invalid or denied ID, banned …) or a
    MESSAGE from a device that is not registered (it believes it is, or it registered elsewhere).
    An ID that registers from that address leaves the list.
    """
    data = request(admin, "GET", "/refused")
    rows = data["refused"][:limit]
    emit(rows, REFUSED_COLUMNS, as_json=as_json, title=plural(len(rows), "refused device"))
    if data.get("forgotten") and not as_json:
        warn(
            f"{plural(data['forgotten'], 'older entry', 'older entries')} forgotten (at most {data['limit']} are kept)"
        )


# --- pruning -------------------------------------------------------------------------------

PRUNE_COLUMNS = (
    Column("ID", "device_id", is_id=True),
    Column("name", lambda d: d.get("name") or d.get("reported_name") or ""),
    Column("last seen", lambda d: when(max(d.get("last_keepalive") or 0, d.get("registered_at") or 0))),
    Column("provisioned", lambda d: "yes" if d.get("provisioned") else "no"),
)


@devices.command("prune")
@ADMIN_OPTION
@JSON_OPTION
@click.option(
    "--older-than", "older_than", type=Age(), required=True, help="Not heard from for this long: 30d, 12h, 2w …"
)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--provisioned", is_flag=True, help="Devices added with `device add` too (their settings go).")
def devices_prune(admin: str, as_json: bool, older_than: float, dry_run: bool, provisioned: bool) -> None:
    """Remove devices not heard from (no REGISTER, no keepalive) for --older-than.

    A device that holds a registration is never removed, nor, without --provisioned, one an
    operator added. A device never heard from counts from when it was added. Removed devices
    lose their channels; one that comes back registers as new.
    """
    data = request(
        admin,
        "POST",
        "/devices/prune",
        {"older_than": older_than, "dry_run": dry_run, "provisioned": provisioned},
        timeout=None,  # a store deletes tens of thousands of devices one by one: as long as it takes
    )
    rows = data["devices"]
    verb = "would remove" if dry_run else "removed"
    emit(rows, PRUNE_COLUMNS, as_json=as_json, title=f"{verb} {plural(len(rows), 'device')}", json_rows=data)


# --- alarms --------------------------------------------------------------------------------


def _method(a: dict[str, Any]) -> str:
    code = str(a.get("method") or "")
    name = ALARM_METHODS.get(code)
    return f"{code} ({name})" if name else code


ALARM_COLUMNS = (
    Column("received", lambda a: when(a.get("received_at"))),
    Column("source", "device_id", is_id=True),
    Column("reported by", "reported_by", is_id=True),
    Column("priority", "priority"),
    Column("method", _method),
    Column("type", "alarm_type"),
    Column("alarm time", "alarm_time"),
    Column("description", "description"),
)


@main.command()
@ADMIN_OPTION
@JSON_OPTION
@click.argument("device_id", required=False, callback=_device_id)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="The newest N.")
def alarms(admin: str, as_json: bool, device_id: str | None, limit: int) -> None:
    """The alarms devices reported, newest first (of DEVICE_ID: raised or reported by it)."""
    query = {"limit": str(limit)}
    if device_id:
        query["device"] = device_id
    rows = request(admin, "GET", "/alarms?" + urllib.parse.urlencode(query))["alarms"]
    emit(rows, ALARM_COLUMNS, as_json=as_json, title=plural(len(rows), "alarm"))
