"""Live streams: play, snapshot, list and stop."""

from __future__ import annotations

import json
import socket
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from gb28181gw.cli.common import ADMIN_OPTION, _api, _api_send, _rate, console, err_console, main


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
