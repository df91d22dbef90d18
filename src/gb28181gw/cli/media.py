"""Live streams: play, snapshot, list and stop.

``play`` and ``snapshot`` make this process a consumer of a channel's stream (:class:`_Consumer`):
the gateway relays the stream to a local socket (``POST /streams``), the consumer's lease is
renewed while we run (``PATCH``; a killed CLI is dropped by the gateway when it runs out), the
stream is polled so that its end is noticed and told in words (the gateway answers 410 with
the reason of a stream that ended), and the consumer leaves (``DELETE``) when we are done.
Ctrl-C and SIGTERM do not kill the pull: they stop it at the next check (:class:`_StopOnSignal`),
so the file is finalised and the gateway told before we exit.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click

from gb28181gw.cli.common import (
    ADMIN_OPTION,
    JSON_OPTION,
    Column,
    call,
    done,
    duration,
    emit,
    fail,
    main,
    plural,
    print_json,
    rate_text,
    request,
    segment,
)
from gb28181gw.errors import AdminApiError

#: Seconds the gateway keeps sending to us without hearing from us (it drops a killed CLI).
LEASE = 30.0
#: Seconds between lease renewals, stream polls, and progress-line updates.
RENEW_EVERY = 10.0
POLL_EVERY = 1.0
PROGRESS_EVERY = 0.5
#: Seconds one poll or renewal may take before it is skipped (the next one tries again).
POLL_TIMEOUT = 3.0
#: Most batches read from the socket once the stream ended (bounded: the gateway sends no more).
_DRAIN_ROUNDS = 100


def _local_address_toward(admin: str) -> str:
    """The address the gateway reaches us at: loopback for a local gateway, else our address toward it."""
    host = urllib.parse.urlparse(admin).hostname or "127.0.0.1"
    if host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # no packet is sent: this only picks the route
        return str(probe.getsockname()[0])


def _call(admin: str, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    """An admin API call made while a pull runs, which must not end it: (HTTP status, JSON answer).

    Status 0 means nothing answers at the gateway's address, -1 that it did not answer within
    :data:`POLL_TIMEOUT`; an error answer is ``{"error": its words}``.
    """
    try:
        answer = call(admin, method, path, body, timeout=POLL_TIMEOUT)
    except AdminApiError as exc:
        if exc.status is None:
            return (0 if exc.unreachable else -1), {"error": exc.message}
        return exc.status, {**exc.answer, "error": exc.message}
    return 200, answer if isinstance(answer, dict) else {}


class _Consumer:
    """This process as a consumer of a stream on the gateway (see the module docstring).

    Attributes:
        opened: the gateway's answer when we became a consumer (the stream's JSON).
        gone: the gateway's 410 answer once the stream ended (its ``reason``, ``cause``, and for
            a playback or download ``complete`` and ``position``); empty before.
        seen: the stream's JSON at the last poll (a playback's ``position`` after a seek); ``opened`` before.
    """

    def __init__(self, admin: str, opened: dict[str, Any]) -> None:
        self.admin = admin
        self.stream_id: str = opened["id"]
        self.consumer_id: str = opened["consumer"]["id"]
        self.opened = opened
        self.gone: dict[str, Any] = {}
        self.seen = opened
        now = time.monotonic()
        self._next_poll = now + POLL_EVERY
        self._next_renew = now + RENEW_EVERY
        self._left = False

    @classmethod
    def open(
        cls,
        admin: str,
        path: str,
        body: dict[str, Any],
        transport: str,
        host: str | None,
        port: int,
        *,
        hint: str | None = None,
    ) -> _Consumer:
        """Ask the gateway to relay a stream to us: ``POST path`` with ``body`` and us as its ``consumer``
        (``/streams``: a channel's live stream, opened or joined; ``/playbacks``: a span of a recording).
        A refusal ends the command in the gateway's words, with ``hint`` when it gives none."""
        consumer = {
            "transport": transport,
            "host": host or _local_address_toward(admin),
            "port": port,
            "ttl": LEASE,
            "label": "cli",
        }
        # a live INVITE is bounded by the gateway's SIP timers; a playback's waits on the device as
        # a query does (the gateway bounds it and says why)
        try:
            opened = call(
                admin, "POST", path, {**body, "consumer": consumer}, timeout=60 if path == "/streams" else None
            )
        except AdminApiError as exc:
            fail(exc.message, exc.hint or hint)
        click.echo(
            f"stream {opened['id']} ({opened['mode']}, worker {opened['worker']}): receiving as "
            f"{opened['consumer']['id']} with SSRC {opened['consumer']['ssrc']}",
            err=True,
        )
        return cls(admin, opened)

    def check(self, now: float, *, now_please: bool = False) -> str | None:
        """Renew the lease and poll the stream when due; why the stream ended for us, or ``None``."""
        path = f"/streams/{self.stream_id}"
        if now >= self._next_renew:
            self._next_renew = now + RENEW_EVERY
            _call(self.admin, "PATCH", f"{path}/consumers/{self.consumer_id}", {"ttl": LEASE})
        if not now_please and now < self._next_poll:
            return None
        self._next_poll = now + POLL_EVERY
        status, answer = _call(self.admin, "GET", path)
        if status == 200:
            self.seen = answer
            if any(c.get("id") == self.consumer_id for c in answer.get("consumers", [])):
                return None
            return f"the gateway stopped sending stream {self.stream_id} to us (consumer {self.consumer_id} dropped)"
        if status == 410:
            self.gone = answer
            return str(answer.get("error") or f"stream {self.stream_id} ended")
        if status == 404:
            return f"stream {self.stream_id} is no longer on the gateway (was the gateway restarted?)"
        if status == 0:
            return f"the gateway at {self.admin} stopped answering (was it stopped?)"
        if status == 503 and answer.get("node"):
            # several nodes: the node sending the stream is gone (it sends nothing more)
            return str(answer.get("error") or f"node {answer['node']}, which sent stream {self.stream_id}, is gone")
        return None  # slow or unsure: ask again at the next poll

    def leave(self) -> None:
        """Tell the gateway to stop sending to us (the stream lingers, then closes, if we were the last)."""
        if not self._left:
            self._left = True
            _call(self.admin, "DELETE", f"/streams/{self.stream_id}/consumers/{self.consumer_id}")


class _StopOnSignal:
    """Ctrl-C (SIGINT) and SIGTERM ask the pull to stop instead of killing it; a second Ctrl-C interrupts.

    Attributes:
        signal: the name of the signal that came, or ``None``.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        self.signal = "Ctrl-C" if number == signal.SIGINT else signal.Signals(number).name
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *_exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


@dataclass
class _Pull:
    """How a pull went: why it stopped and what came."""

    elapsed: float = 0.0
    stopped: str = ""  # "time", "done", "ended", or the signal's name
    ended: str | None = None  # why the stream ended for us, in words


@contextmanager
def _consuming(
    admin: str, transport: str, host: str | None, path: str, body: dict[str, Any], *, hint: str | None = None
) -> Iterator[tuple[Any, _Consumer]]:
    """A receiver socket, and this process as a consumer sending to it (:meth:`_Consumer.open`); left and
    closed at exit."""
    from gb28181gw.pull import Receiver

    receiver = Receiver(transport)
    try:
        consumer = _Consumer.open(admin, path, body, transport, host, receiver.port, hint=hint)
        try:
            yield receiver, consumer
        finally:
            consumer.leave()
    finally:
        receiver.close()


def _pull(
    receiver: Any,
    consumer: _Consumer,
    stop: _StopOnSignal,
    pulled: Any,
    on_payload: Callable[[bytes], bool],
    *,
    seconds: float | None,
    tick: Callable[[float], None] = lambda _elapsed: None,
) -> _Pull:
    """Receive until ``seconds`` run out, a signal, ``on_payload`` returns True, or the stream ends."""
    start = time.monotonic()
    deadline = start + seconds if seconds is not None else None
    next_tick = start
    out = _Pull()
    while True:
        now = time.monotonic()
        out.elapsed = now - start
        if stop.signal is not None:
            out.stopped = stop.signal
            break
        if deadline is not None and now >= deadline:
            out.stopped = "time"
            break
        wait = min(0.25, deadline - now) if deadline is not None else 0.25
        done = False
        for data in receiver.wait(wait):
            payload = pulled.rtp(data, time.monotonic())
            if payload is not None and on_payload(payload):
                done = True
                break
        if done:
            out.stopped = "done"
            break
        now = time.monotonic()
        ended = consumer.check(now, now_please=receiver.closed)
        if ended is None and receiver.closed:
            ended = "the gateway closed the media connection"
        if ended is not None:
            out.stopped, out.ended = "ended", ended
            # what the gateway sent before it closed may still wait in our socket: a download's last frames
            for _ in range(_DRAIN_ROUNDS):
                batch = receiver.wait(0.05)
                if not batch:
                    break
                for data in batch:
                    payload = pulled.rtp(data, time.monotonic())
                    if payload is not None:
                        on_payload(payload)
            break
        if now >= next_tick:
            next_tick = now + PROGRESS_EVERY
            tick(now - start)
    out.elapsed = time.monotonic() - start
    return out


@dataclass
class _Recorded:
    """A stream written to a file (:func:`_record`): the file, what came, how the pull ended."""

    recording: Any
    pulled: Any
    outcome: _Pull
    consumer: _Consumer


def _record(
    output: Path,
    admin: str,
    transport: str,
    host: str | None,
    path: str,
    body: dict[str, Any],
    *,
    seconds: float | None,
    progress: Callable[[float, Any, Any], str] | None,
    terminal: bool,
    on_open: Callable[[_Consumer], None] = lambda _consumer: None,
    refused_hint: str | None = None,
) -> _Recorded:
    """Write the stream the gateway relays to us (``POST path`` with ``body``) to ``output`` as it comes,
    until ``seconds`` run out, Ctrl-C or its end; the file is finalised before we leave the stream.

    ``progress(elapsed, recording, pulled)`` is shown twice a second when given: in place on a
    ``terminal``, else a line each time. ``on_open`` sees the consumer once the gateway answered;
    ``refused_hint`` follows a refusal the gateway gave no hint for.
    """
    from gb28181gw.pull import Pulled, UnsupportedCodec, open_recording

    try:
        recording = open_recording(output)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    pulled = Pulled()
    unsupported: str | None = None

    def feed(payload: bytes) -> bool:
        nonlocal unsupported
        try:
            recording.feed(payload)
        except UnsupportedCodec as exc:
            unsupported = str(exc)
            return True
        return False

    def tick(elapsed: float) -> None:
        recording.flush()
        if progress is not None:
            text = progress(elapsed, recording, pulled)
            click.echo("\r\x1b[K" + text if terminal else text, nl=not terminal, err=True)

    with _StopOnSignal() as stop:
        try:
            with _consuming(admin, transport, host, path, body, hint=refused_hint) as (receiver, consumer):
                on_open(consumer)
                if stop.signal is not None:  # Ctrl-C while the stream was being opened
                    outcome = _Pull(stopped=stop.signal)
                else:
                    outcome = _pull(receiver, consumer, stop, pulled, feed, seconds=seconds, tick=tick)
                if progress is not None and terminal:
                    click.echo("\r\x1b[K", nl=False, err=True)
                recording.close()  # before leaving: the file is what matters most
        finally:
            recording.close()
    if unsupported is not None:
        fail(
            f"channel {body.get('channel_id')} sends {unsupported} video, which an .mp4 cannot hold",
            f"record it as it comes with -o {output.with_suffix('.ps').name}",
        )
    return _Recorded(recording, pulled, outcome, consumer)


# --- play ------------------------------------------------------------------------------------


def _check_output(_ctx: click.Context, _param: click.Parameter, value: Path) -> Path:
    from gb28181gw.pull import RECORDING_FORMATS

    if value.suffix.lower() not in RECORDING_FORMATS:
        kinds = " or ".join(f"{suffix} ({what})" for suffix, what in RECORDING_FORMATS.items())
        raise click.BadParameter(f"{value.name}: the file name must end in {kinds}")
    if value.exists():
        # a file is opened before the stream is asked for and removed when nothing came: an
        # earlier recording of that name would be lost to a refused or empty attempt
        raise click.BadParameter(f"{value} exists: remove it or choose another name")
    return value


def _check_seconds(_ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not value > 0:  # also NaN
        unlimited = ", or leave it out to go on until Ctrl-C" if param.default is None else ""
        raise click.BadParameter(f"{value:g} is not a number of seconds more than 0{unlimited}")
    return value


def _progress_line(elapsed: float, frames: int, pulled: Any, size: int) -> str:
    clock = f"{int(elapsed) // 3600}:{int(elapsed) % 3600 // 60:02d}:{int(elapsed) % 60:02d}"
    if not pulled.packets:
        return f"{clock}  waiting for video…  (Ctrl-C stops)"
    idle = time.monotonic() - pulled.stats.last_packet_at
    rate = "no RTP for " + duration(idle) if idle >= 2 else rate_text(pulled.stats.bitrate)
    return f"{clock}  {plural(frames, 'frame')}  {rate}  {pulled.stats.lost} lost  {size / 1e6:.1f} MB  (Ctrl-C stops)"


def output_option(help: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``-o FILE``, its extension one of :data:`~gb28181gw.pull.RECORDING_FORMATS`."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        required=True,
        callback=_check_output,
        help=help,
    )


@main.command()
@ADMIN_OPTION
@click.argument("channel_id")
@output_option(
    "File written as the stream arrives: .ps exactly as the device sent it (video and audio), "
    ".mp4 the video remuxed without re-encoding (plays anywhere)."
)
@click.option(
    "--seconds",
    type=float,
    default=None,
    callback=_check_seconds,
    help="Stop after this many seconds.  [default: record until Ctrl-C or until the stream ends]",
)
@click.option("--transport", type=click.Choice(["udp", "tcp"]), default="udp", show_default=True)
@click.option("--host", default=None, help="Address the gateway sends to (default: ours toward the gateway).")
@JSON_OPTION
def play(
    admin: str, channel_id: str, seconds: float | None, output: Path, transport: str, host: str | None, as_json: bool
) -> None:
    """Record CHANNEL_ID's live stream to a file, written to disk as it arrives.

    The gateway opens the stream (or joins the one already open) and relays it here. Ctrl-C
    (or --seconds running out) stops: the file is finalised and plays at once, and the
    gateway stops sending. A progress line shows while recording on a terminal; a summary
    follows.

    Exit status: 0 when stopped by Ctrl-C or --seconds; 1 when the stream ended first (the
    reason is printed: the device hung up, sent no video, the gateway stopped it …) or no
    video came; what did come is in the file either way. Even a killed play leaves an .mp4
    that plays up to its last second, and the gateway stops sending within 30 s.
    """
    live = sys.stderr.isatty()

    def progress(elapsed: float, recording: Any, pulled: Any) -> str:
        return _progress_line(elapsed, recording.frames, pulled, recording.size())

    got = _record(
        output,
        admin,
        transport,
        host,
        "/streams",
        {"channel_id": channel_id},
        seconds=seconds,
        progress=progress if live else None,
        terminal=True,
    )
    pulled, outcome = got.pulled, got.outcome
    if not pulled.packets:
        fail(
            outcome.ended or f"no video came in {duration(outcome.elapsed)}",
            "see the stream's figures in `gb28181gw streams` while it runs, and the gateway's log",
        )
    _summary(got, output, as_json)
    if outcome.ended is not None:
        fail(f"{outcome.ended}, {duration(outcome.elapsed)} into the recording", f"what came before is in {output}")


def summary_json(got: _Recorded, output: Path) -> dict[str, Any]:
    """The ``--json`` summary of a stream written to a file (``play``, ``playback``, ``download``)."""
    recording, pulled, outcome, consumer = got.recording, got.pulled, got.outcome, got.consumer
    s = pulled.stats
    return {
        "output": str(output),
        "stream_id": consumer.stream_id,
        "consumer_id": consumer.consumer_id,
        "codec": recording.codec,
        "frames": recording.frames,
        "seconds": round(outcome.elapsed, 3),
        "bytes_written": recording.size(),
        "packets": pulled.packets,
        "bytes": pulled.bytes,
        "lost": s.lost,
        "reordered": s.reordered,
        "duplicates": s.duplicates,
        "not_rtp": pulled.bad,
        "stopped": outcome.stopped,
        "ended": outcome.ended,
    }


def _summary(got: _Recorded, output: Path, as_json: bool) -> None:
    recording, pulled, outcome = got.recording, got.pulled, got.outcome
    s = pulled.stats
    rate = pulled.bytes * 8 / outcome.elapsed if outcome.elapsed > 0 else 0.0
    if as_json:
        print_json(summary_json(got, output))
        return
    codec = f" ({recording.codec})" if recording.codec else ""
    click.echo(
        f"{output}: {plural(recording.frames, 'frame')}{codec} in {outcome.elapsed:.1f} s, {rate_text(rate)}; "
        f"{plural(pulled.packets, 'packet')}, {s.lost} lost, {s.reordered} reordered"
    )


# --- snapshot --------------------------------------------------------------------------------


@main.command()
@ADMIN_OPTION
@click.argument("channel_id")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JPEG file to write."
)
@click.option(
    "--timeout",
    "seconds",
    type=float,
    callback=_check_seconds,
    default=15.0,
    show_default=True,
    help="Seconds to wait for a key frame.",
)
@click.option("--transport", type=click.Choice(["udp", "tcp"]), default="udp", show_default=True)
@click.option("--host", default=None, help="Address the gateway sends to (default: ours toward the gateway).")
@JSON_OPTION
def snapshot(
    admin: str, channel_id: str, output: Path, seconds: float, transport: str, host: str | None, as_json: bool
) -> None:
    """Save the first key frame of CHANNEL_ID's live stream as a JPEG."""
    from gb28181gw.media.ps import Frame, PsDemuxer
    from gb28181gw.pull import Pulled, jpeg_of

    pulled = Pulled()
    demuxer = PsDemuxer()
    key: list[Frame] = []

    def feed(payload: bytes) -> bool:
        key.extend(frame for frame in demuxer.feed(payload) if frame.key)
        return bool(key)

    with (
        _StopOnSignal() as stop,
        _consuming(admin, transport, host, "/streams", {"channel_id": channel_id}) as (receiver, consumer),
    ):
        outcome = _pull(receiver, consumer, stop, pulled, feed, seconds=seconds)
    if not key:
        got = f"{plural(pulled.packets, 'packet')} received"
        if outcome.ended is not None:
            fail(f"{outcome.ended}, before a key frame came ({got})")
        if outcome.stopped not in ("time", "done"):
            fail(f"stopped ({outcome.stopped}) before a key frame came ({got})")
        fail(
            f"no key frame in {duration(seconds)} ({got})",
            "a camera sends one every GOP (often 2-4 s, some 10 s or more): try a longer --timeout",
        )
    try:
        data = jpeg_of(key[0])
        output.write_bytes(data)
    except ValueError as exc:
        fail(f"the key frame of {channel_id} ({key[0].codec}) did not decode: {exc}")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    if as_json:
        print_json(
            {
                "output": str(output),
                "stream_id": consumer.stream_id,
                "codec": key[0].codec,
                "bytes": len(data),
                "packets": pulled.packets,
                "seconds": round(outcome.elapsed, 3),
            }
        )
        return
    click.echo(f"{output}: key frame ({key[0].codec}) after {plural(pulled.packets, 'packet')}")


# --- streams, stream stop --------------------------------------------------------------------


def _consumer_text(c: dict[str, Any]) -> str:
    if c["transport"] == "tcp-passive":  # it connects to us: the port it must connect to is what matters
        host = c["address"].rsplit(":", 1)[0]
        where = f"{host} connects to port {c['local_port']}" if c.get("local_port") else host
    else:
        where = c["address"]
    return f"{c['id']} {c['transport']} {where}" + (" (paused)" if c.get("paused") else "")


def _consumers_text(row: dict[str, Any]) -> str:
    return ", ".join(map(_consumer_text, row.get("consumers", []))) or "-"


def clock(seconds: float) -> str:
    """``03:12``, ``1:03:12``: a position in a recording."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def _position_text(row: dict[str, Any]) -> str:
    """A playback's or download's ``position/span`` (``03:12/10:00``); ``-`` for a live stream."""
    span = row.get("span")
    if not span or row.get("position") is None:
        return "-"
    return f"{clock(row['position'])}/{clock(span['seconds'])}"


def _speed_text(row: dict[str, Any]) -> str:
    """A playback's Scale (``x2``, ``paused``) or a download's a=downloadspeed (``x4``); ``-`` for live."""
    if row.get("kind") == "download":
        return f"x{row.get('download_speed') or 1}"
    if row.get("kind") == "playback":
        return "paused" if row.get("paused") else f"x{row.get('scale', 1):g}"
    return "-"


STREAM_COLUMNS = [
    Column("stream", "id", is_id=True),
    Column("channel", "channel_id", is_id=True),
    Column("kind", lambda r: "live" if r.get("kind", "play") == "play" else r["kind"]),
    Column("position", _position_text),
    Column("speed", _speed_text),
    Column("state", "state"),
    Column("mode", "mode"),
    Column("worker", "worker"),
    Column("consumers", _consumers_text),
    Column("bitrate", lambda r: rate_text(r.get("relay", {}).get("bitrate", 0.0))),
    Column("packets", lambda r: r.get("relay", {}).get("packets", 0)),
    Column("lost", lambda r: r.get("relay", {}).get("lost", 0)),
    Column("codec", lambda r: r.get("relay", {}).get("ps", {}).get("video_codec")),
    Column("age", lambda r: duration(r.get("age"))),
]


@main.command()
@ADMIN_OPTION
@JSON_OPTION
def streams(admin: str, as_json: bool) -> None:
    """List streams: live ones, playbacks and downloads (position in the span, speed), with
    channel, mode, consumers, bitrate, loss, age; with several nodes, every live node's and its node."""
    answer = request(admin, "GET", "/streams")
    rows = answer["streams"]
    # several nodes on Redis: the node each stream is at (its stream ID is asked for there)
    columns = [*STREAM_COLUMNS, Column("node", "node")] if any("node" in r for r in rows) else STREAM_COLUMNS
    emit(rows, columns, as_json=as_json, title=plural(len(rows), "stream"))
    for missing in answer.get("unanswered", []):  # on stderr: the JSON on stdout stays the rows
        click.echo(f"node {missing.get('node')} did not list its streams: {missing.get('error')}", err=True)


@main.group()
def stream() -> None:
    """One stream: stop it; pause, resume, seek or change the speed of a playback."""


@stream.command("stop")
@ADMIN_OPTION
@click.argument("stream_id")
@JSON_OPTION
def stream_stop(admin: str, stream_id: str, as_json: bool) -> None:
    """Close STREAM_ID now (BYE to the device), whoever consumes it."""
    answer = request(admin, "DELETE", f"/streams/{segment(stream_id)}")
    done(answer, as_json, f"stopped {stream_id}")
