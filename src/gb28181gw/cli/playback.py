"""Recordings: ``playback`` and ``download`` of a span, and the controls of a playback.

``playback`` and ``download`` ask the gateway for a span of a channel's recordings
(``POST /playbacks``: an INVITE of its own with ``s=Playback`` or ``s=Download``, PROTOCOL.md
§7.8) and consume the stream as ``play`` does (:mod:`.media`: the lease, the polls, Ctrl-C, the
file written as it comes). How far it got is read off the recording's own clock, the PS
timestamps of the frames written (:attr:`~gb28181gw.pull.Recording.seconds`), against the
span's length: at 4x the wall clock says nothing about it. An ``.mp4`` takes those timestamps
too, so a download sent at any speed plays at normal speed.

A session is complete only when the gateway says so as it ends it (its 410 of the stream has
``"complete": true``: the device's MediaStatus 121, or media up to the span's end). Any other
end — the device's BYE, no media, the gateway stopping it, Ctrl-C — is reported INCOMPLETE with
how far it got, never as done.

``stream pause|resume|seek|speed`` send MANSRTSP over INFO in the device's dialog (§7.9,
``POST /streams/{id}/control``); a device's refusal is printed in its words and exits 1.
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gb28181gw.cli.common import (
    ADMIN_OPTION,
    JSON_OPTION,
    TIME_FORMS,
    TimeParam,
    call,
    display_zone,
    fail,
    main,
    parse_time,
    plural,
    print_json,
    rate_text,
    segment,
    warn,
)
from gb28181gw.cli.media import _record, _Recorded, clock, output_option, stream, summary_json
from gb28181gw.errors import AdminApiError

#: The speeds (MANSRTSP Scale) every device is asked to honour (§7.9); others are passed on as they are.
SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0)
#: Exit status of a playback or download stopped by Ctrl-C before its end (128 + SIGINT).
STOPPED_EXIT = 130
#: Exit status of one stopped by SIGTERM (128 + SIGTERM).
TERMINATED_EXIT = 143
#: Width of the progress bar, in characters.
_BAR = 24
_LOCAL = "%Y-%m-%dT%H:%M:%S"

_EPILOG = (
    f"TIME is {TIME_FORMS}, in the site's time zone (gateway.time_zone, Beijing by default): devices "
    "keep their recordings in local time. Exit status: 0 when the whole span came (the device's "
    "MediaStatus 121, or media up to the span's end); 1 when it stopped early (the device hung up, "
    f"sent no video, the gateway stopped it: INCOMPLETE is said, with how far it got); {STOPPED_EXIT} "
    f"after Ctrl-C, {TERMINATED_EXIT} after SIGTERM (also INCOMPLETE). What came is in the file either way."
)


def _check_playback_speed(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    if value is None:
        return None
    if not value > 0:  # also NaN
        raise click.BadParameter(f"{value:g} is not a speed: 0.25, 0.5, 1, 2 or 4 (more than 0)")
    if value not in SPEEDS:
        warn(f"speed {value:g} is not one of 0.25, 0.5, 1, 2, 4: it is passed on; the device may refuse it")
    return value


def _recorded_command(speed: Callable[[Any], Any]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The arguments and options ``playback`` and ``download`` share, with the ``--speed`` each takes."""
    options = [
        ADMIN_OPTION,
        click.argument("channel_id"),
        click.option("--from", "start", required=True, type=TimeParam(), help="Start of the span."),
        click.option("--to", "end", required=True, type=TimeParam(), help="End of the span."),
        speed,
        output_option(
            "File written as the span arrives: .ps exactly as the device sent it, .mp4 the video remuxed "
            "without re-encoding, timed by the recording's own clock (plays at normal speed whatever "
            "speed it came at)."
        ),
        click.option("--transport", type=click.Choice(["udp", "tcp"]), default="udp", show_default=True),
        click.option("--host", default=None, help="Address the gateway sends to (default: ours toward it)."),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Progress lines on stderr (percent of the span, pace, rate, ETA).  [default: on a terminal]",
        ),
        JSON_OPTION,
    ]

    def wrap(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            command = option(command)
        return command

    return wrap


_PLAYBACK_SPEED = click.option(
    "--speed",
    type=float,
    default=None,
    callback=_check_playback_speed,
    help="Play at this speed (MANSRTSP Scale: 0.25, 0.5, 1, 2, 4).  [default: 1]",
)
_DOWNLOAD_SPEED = click.option(
    "--speed",
    type=click.IntRange(min=1),
    default=None,
    help="a=downloadspeed asked of the device (a whole number, 1 = real time).  [default: playback.download_speed]",
)


@main.command(epilog=_EPILOG)
@_recorded_command(_PLAYBACK_SPEED)
def playback(**options: Any) -> None:
    """Play back a span of CHANNEL_ID's recordings into a file (s=Playback: the device sends it at
    the speed asked, and can be paused, sought and sped up meanwhile with `gb28181gw stream`)."""
    _recorded("playback", **options)


@main.command(epilog=_EPILOG)
@_recorded_command(_DOWNLOAD_SPEED)
def download(**options: Any) -> None:
    """Download a span of CHANNEL_ID's recordings into a file (s=Download: the device sends it as fast
    as a=downloadspeed says and tells when it is whole)."""
    _recorded("download", **options)


#: Seconds by which the gateway's position must differ from ours (beyond its lag) to be a seek.
SEEK_SEEN = 3.0


class _Progress:
    """Where a playback or download is, for the progress line: the recording's seconds against the span.

    A seek (``gb28181gw stream seek`` from another terminal, or a superior's own) moves a playback
    without this process knowing: the position the gateway follows, polled once a second
    (:attr:`_Consumer.seen`), is taken when it strays from ours by more than its own lag could
    explain (it is read from the RTP timestamps once a second, so it trails by a second or two
    of media at the playback's speed), and the seconds written after it are added to it. A
    download takes no seek: its line is the seconds written.
    """

    def __init__(self, span_seconds: float, *, follow_seeks: bool) -> None:
        self.span = span_seconds
        self.follow_seeks = follow_seeks
        self.consumer: Any = None
        self._offset = 0.0  # the gateway's position minus ours, at the last seek seen

    def follow(self, consumer: Any) -> None:
        """Take the gateway's position from ``consumer``'s polls."""
        self.consumer = consumer

    def where(self, recording: Any) -> float:
        """Seconds into the span."""
        ours = float(recording.seconds)
        seen = self.consumer.seen if self.follow_seeks and self.consumer is not None else {}
        position, scale = seen.get("position"), seen.get("scale")
        if isinstance(position, int | float) and not isinstance(position, bool):
            speed = float(scale) if isinstance(scale, int | float) and not isinstance(scale, bool) else 1.0
            if abs(position - (ours + self._offset)) > SEEK_SEEN + 2.5 * max(1.0, abs(speed)):
                self._offset = position - ours
        return ours + self._offset

    def line(self, _elapsed: float, recording: Any, pulled: Any) -> str:
        done = max(0.0, min(self.where(recording), self.span))
        fraction = done / self.span if self.span > 0 else 0.0
        filled = int(fraction * _BAR)
        head = f"[{'#' * filled}{'.' * (_BAR - filled)}] {fraction * 100:3.0f}%  {clock(done)}/{clock(self.span)}"
        if not recording.frames:
            return f"{head}  waiting for video…  (Ctrl-C stops)"
        if self.consumer is not None and self.consumer.seen.get("paused") is True:
            return f"{head}  paused (gb28181gw stream resume {self.consumer.stream_id})  (Ctrl-C stops)"
        took = time.monotonic() - pulled.first_packet_at
        pace = recording.seconds / took if took > 0 else 0.0
        eta = f"ETA {clock((self.span - done) / pace)}" if pace > 0 else "ETA -"
        return (
            f"{head}  x{pace:.1f}  {rate_text(pulled.stats.bitrate)}  {eta}  {pulled.stats.lost} lost  (Ctrl-C stops)"
        )


def _recorded(
    kind: str,
    *,
    admin: str,
    channel_id: str,
    start: str,
    end: str,
    speed: float | None,
    output: Path,
    transport: str,
    host: str | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    zone = display_zone(admin)
    now = _dt.datetime.now(zone).replace(tzinfo=None, microsecond=0)
    since, until = parse_time(start, now=now), parse_time(end, now=now, end_of_day=True)
    if until != parse_time(end, now=now):
        # a bare day: its last second included, so the span ends at the next midnight (t= END is
        # where the recording stops, not its last second)
        until += _dt.timedelta(seconds=1)
    if until <= since:
        raise click.BadParameter(
            f"{until.strftime(_LOCAL)} is not after --from {since.strftime(_LOCAL)}", param_hint="'--to'"
        )
    if since > now:
        raise click.BadParameter(
            f"{since.strftime(_LOCAL)} is in the future (it is {now.strftime(_LOCAL)} in {zone}): nothing is "
            "recorded yet",
            param_hint="'--from'",
        )
    if until > now:
        # `--to today` means "so far": nothing after now is recorded, and a span past it would
        # never be whole (no MediaStatus, no media up to its end)
        warn(f"--to {until.strftime(_LOCAL)} is in the future: the span ends now, {now.strftime(_LOCAL)}")
        until = now
        if until <= since:
            raise click.BadParameter(f"{since.strftime(_LOCAL)} is now: nothing is recorded yet", param_hint="'--from'")
    # with the zone's offset, so that the gateway takes the times the operator meant whatever its
    # own gateway.time_zone; the span's length in real seconds (a DST change is not 1 h of video)
    first, last = since.replace(tzinfo=zone), until.replace(tzinfo=zone)
    span_seconds = last.timestamp() - first.timestamp()
    body: dict[str, Any] = {
        "channel_id": channel_id,
        "kind": kind,
        "start": first.isoformat(),
        "end": last.isoformat(),
    }
    if speed is not None:
        body["speed"] = speed
    terminal = sys.stderr.isatty()
    shown = terminal if progress is None else progress
    progressing = _Progress(span_seconds, follow_seeks=kind == "playback")

    def opened(consumer: Any) -> None:
        progressing.follow(consumer)
        _said_speed(kind, speed, consumer.opened)

    got = _record(
        output,
        admin,
        transport,
        host,
        "/playbacks",
        body,
        seconds=None,
        progress=progressing.line if shown else None,
        terminal=terminal,
        on_open=opened,
        refused_hint=f"is anything recorded then? gb28181gw records {channel_id} --from {since.strftime(_LOCAL)} "
        f"--to {until.strftime(_LOCAL)}",
    )
    recording, pulled, outcome, gone = got.recording, got.pulled, got.outcome, got.consumer.gone
    # no video is never a whole span, whatever ended the session (a seek past its end is "span-end")
    complete = outcome.stopped == "ended" and gone.get("complete") is True and recording.frames > 0
    position = gone["position"] if isinstance(gone.get("position"), int | float) else recording.seconds
    _summary(kind, got, output, span_seconds, complete, position, as_json)
    if complete:
        return
    where = f"at {clock(position)} of {clock(span_seconds)}"
    kept = f"what came is in {output}" if pulled.packets and recording.frames else None
    if outcome.stopped == "ended":
        fail(f"INCOMPLETE {kind}: {outcome.ended}, {where}", kept)
    # 128 + the signal, as a shell says a process it stopped (timeout(1), systemd tell the two apart)
    code = TERMINATED_EXIT if outcome.stopped == "SIGTERM" else STOPPED_EXIT
    fail(f"INCOMPLETE {kind}: stopped by {outcome.stopped} {where}", kept, code=code)


def _said_speed(kind: str, speed: float | None, opened: dict[str, Any]) -> None:
    """Warn when a playback's device did not take the speed asked (the gateway asks it after the INVITE)."""
    if kind == "playback" and speed is not None and speed != 1 and opened.get("scale") != speed:
        warn(
            f"the device did not take speed {speed:g}: it plays at x{opened.get('scale', 1):g} (see the gateway's log)"
        )


def _summary(
    kind: str, got: _Recorded, output: Path, span_seconds: float, complete: bool, position: float, as_json: bool
) -> None:
    recording, pulled, outcome, opened = got.recording, got.pulled, got.outcome, got.consumer.opened
    if as_json:
        print_json(
            {
                **summary_json(got, output),
                "kind": kind,
                "complete": complete,
                "position": round(position, 3),
                "span_seconds": span_seconds,
                "recorded_seconds": round(recording.seconds, 3),
                "progress": round(min(1.0, recording.seconds / span_seconds), 4) if span_seconds else None,
                "cause": got.consumer.gone.get("cause"),
                "scale": opened.get("scale"),
                "download_speed": opened.get("download_speed"),
                "file_size": opened.get("file_size"),
            }
        )
        return
    rate = pulled.bytes * 8 / outcome.elapsed if outcome.elapsed > 0 else 0.0
    codec = f" ({recording.codec})" if recording.codec else ""
    state = "complete" if complete else "INCOMPLETE"
    click.echo(
        f"{output}: {state} {kind}, {clock(recording.seconds)} of {clock(span_seconds)} recorded, "
        f"{plural(recording.frames, 'frame')}{codec} in {outcome.elapsed:.1f} s, {rate_text(rate)}; "
        f"{plural(pulled.packets, 'packet')}, {pulled.stats.lost} lost"
    )


# --- stream pause, resume, seek, speed -----------------------------------------------------------

_POSITION_RE = re.compile(r"(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d+)?)")


class PositionParam(click.ParamType[float, Any]):
    """A position in a span: seconds (``90``) or ``MM:SS`` / ``H:MM:SS`` (``1:30``)."""

    name = "POSITION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        m = _POSITION_RE.fullmatch(str(value).strip())
        if m is None:
            self.fail(f"{value!r} is not a position: seconds from the span's start (90) or MM:SS / H:MM:SS", param, ctx)
        parts = [float(x) for x in m.groups() if x is not None]
        if any(part >= 60 for part in parts[1:]):
            self.fail(f"{value!r} is not a position: minutes and seconds after a colon are below 60", param, ctx)
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + part
        return seconds


def _control(admin: str, stream_id: str, body: dict[str, Any], as_json: bool, said: str) -> None:
    """``POST /streams/{id}/control``; a device's refusal (502) is said with its status and exits 1."""
    try:
        answer = call(admin, "POST", f"/streams/{segment(stream_id)}/control", body, timeout=None)
    except AdminApiError as exc:
        if as_json and exc.answer:
            print_json(exc.answer)
        fail(exc.message, exc.hint)
    if as_json:
        print_json(answer)
        return
    row = answer.get("stream") or {}
    where = f" at {clock(row['position'])}/{clock(row['span']['seconds'])}" if row.get("span") else ""
    device = f"{answer.get('device_status')} {answer.get('device_reason') or ''}".strip()
    click.echo(f"{stream_id}: {said}{where} (device: {device})")


@stream.command("pause")
@ADMIN_OPTION
@click.argument("stream_id")
@JSON_OPTION
def stream_pause(admin: str, stream_id: str, as_json: bool) -> None:
    """Pause playback STREAM_ID (PAUSE; the stream and its consumers stay)."""
    _control(admin, stream_id, {"action": "pause"}, as_json, "paused")


@stream.command("resume")
@ADMIN_OPTION
@click.argument("stream_id")
@JSON_OPTION
def stream_resume(admin: str, stream_id: str, as_json: bool) -> None:
    """Resume playback STREAM_ID where it paused (PLAY, Range: npt=now-)."""
    _control(admin, stream_id, {"action": "resume"}, as_json, "playing")


@stream.command("seek")
@ADMIN_OPTION
@click.argument("stream_id")
@click.argument("position", type=PositionParam())
@JSON_OPTION
def stream_seek(admin: str, stream_id: str, position: float, as_json: bool) -> None:
    """Play STREAM_ID from POSITION in its span: seconds from its start, or MM:SS (PLAY, Range: npt=POSITION-)."""
    _control(admin, stream_id, {"action": "seek", "position": position}, as_json, f"playing from {clock(position)}")


@stream.command("speed")
@ADMIN_OPTION
@click.argument("stream_id")
@click.argument("scale", type=float, callback=_check_playback_speed)
@JSON_OPTION
def stream_speed(admin: str, stream_id: str, scale: float, as_json: bool) -> None:
    """Play STREAM_ID at SCALE: 0.25, 0.5, 1, 2 or 4 (PLAY, Scale: SCALE)."""
    _control(admin, stream_id, {"action": "speed", "scale": scale}, as_json, f"playing at x{scale:g}")
