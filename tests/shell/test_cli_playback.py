"""``gb28181gw playback``, ``download`` and ``stream pause|resume|seek|speed`` as real processes against
a gateway with a SIPp device (issue 13): SIPp checks the Playback/Download INVITE (s=, u=, t=, a
history y=) and the MANSRTSP bodies of the controls, the test sends real H.264 in PS over RTP as
the device's media, and the file written decodes whole, timed by the recording's own clock. A
download that stops early is said INCOMPLETE and exits 1; bad spans never reach the device.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import av
import click
import pytest

from gb28181gw.app import Gateway
from gb28181gw.cli.playback import PositionParam
from gb28181gw.gb.model import Channel
from gb28181gw.gb.playback import Span
from gb28181gw.media.rtp import RtpPacket
from gb28181gw.services.streams import Stream
from tests.media import gb_ps, packetize, send_udp, wait_for

from .conftest import sipp_scenario, start_gateway
from .test_cli_play import consumed, read_all, start_with_device
from .test_cli_streams import cli, output
from .test_devices import finished, free_udp_port, register
from .test_playback_service import info_part, recorded_answer, recorded_checks
from .test_streams import CH, NVR, WE_BYE, gateway_with_device

pytestmark = pytest.mark.sipp

#: 2024-05-06 08:00:00-08:00:08 Beijing time: 8 s of recording, 200 frames at 25 fps.
FROM, TO = "2024-05-06T08:00:00", "2024-05-06T08:00:08"
SPAN = Span.from_local(dt.datetime(2024, 5, 6, 8), dt.datetime(2024, 5, 6, 8, 0, 8), dt.timezone(dt.timedelta(hours=8)))
FRAMES, FPS = 200, 25
#: Health checks (which follow a playback's position) five times a second, and no RTP for 2 s ends it.
FAST = {"media.stats_interval": "0.2", "media.rtp_timeout": "2"}


def device(kind: str, then: str, refs: str = "", *, extra_check: str = "") -> bytes:
    """A SIPp device answering a ``kind`` INVITE for :data:`SPAN`, checking it, then doing ``then``."""
    return sipp_scenario(
        "invite_uas.xml",
        checks=recorded_checks(kind, SPAN) + extra_check,
        ch=CH,
        answer=recorded_answer(kind, SPAN),
        then=then,
        refs="gwfrom,subject,s,u,t,all,y" + (f",{refs}" if refs else ""),
    ).encode()


def frames_of(ps: bytes, ssrc: int) -> list[list[bytes]]:
    """The RTP packets of ``ps``, grouped by frame (one RTP timestamp each), in order."""
    groups: dict[int, list[bytes]] = {}
    for packet in packetize(ps, ssrc):
        groups.setdefault(RtpPacket.parse(packet).timestamp, []).append(packet)
    return list(groups.values())


async def send_frames(frames: list[list[bytes]], port: int, *, fps: float, sock: socket.socket) -> None:
    """Frames as a device sends a recording: one every 1/``fps`` s (``fps`` 100 is 4x real time), all from
    ``sock`` (the gateway takes a stream's media from one source address only)."""
    for group in frames:
        await send_udp(group, port, sock=sock)
        await asyncio.sleep(1 / fps)


async def download_some(
    gw: Gateway, out: Path, frames: int, media: socket.socket
) -> tuple[asyncio.subprocess.Process, Stream]:
    """``gb28181gw download --json`` of :data:`SPAN` into ``out``, and the first ``frames`` frames sent at 4x."""
    proc = await run(gw, "download", CH, "--from", FROM, "--to", TO, "-o", str(out), "--json")
    st = await consumed(gw)
    await send_frames(frames_of(gb_ps(FRAMES, 10), int(st.session.ssrc))[:frames], st.port, fps=4 * FPS, sock=media)
    return proc, st


async def run(gw: Gateway, *args: str) -> asyncio.subprocess.Process:
    """The CLI with stdout (the --json summary) and stderr (progress, errors) apart."""
    assert gw.admin is not None
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gb28181gw", *args, "--admin", f"http://127.0.0.1:{gw.admin.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip


async def ended(proc: asyncio.subprocess.Process, timeout: float = 30) -> tuple[int, dict[str, object], str]:
    """Exit status, the JSON summary and stderr of a ``--json`` run."""
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert out, err.decode()
    return proc.returncode or 0, json.loads(out), err.decode(errors="replace")


def progress_percents(stderr: str) -> list[int]:
    """The percentages of the progress lines the CLI printed."""
    return [int(m[1]) for m in re.finditer(r"\] +(\d+)%  \d\d:\d\d/00:08", stderr)]


def mp4_video(path: Path) -> tuple[int, float]:
    """Frames av decodes from the MP4, and its duration by its own timestamps (seconds)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        pictures = list(container.decode(video=0))
        last = max(p.pts for p in pictures if p.pts is not None)
        assert video.time_base is not None
        return len(pictures), float(last * video.time_base) + 1 / FPS


def info_bodies(trace: Path) -> list[bytes]:
    """The bodies of the INFO requests in SIPp's message trace, as they were on the wire."""
    data = trace.read_bytes()
    bodies = []
    for m in re.finditer(rb"INFO sip:[^\r\n]* SIP/2\.0\r\n(.*?)\r\n\r\n", data, re.S):
        length = int(re.search(rb"Content-Length: *(\d+)", m[1], re.I)[1])  # type: ignore[index]
        bodies.append(data[m.end() : m.end() + length])
    return bodies


async def test_playback_paused_sought_and_sped_up_into_an_mp4_that_decodes_whole(tmp_path: Path) -> None:
    then = (
        info_part("^PAUSE RTSP/1.0..CSeq: 1..PauseTime: now..$", name="p1")
        + info_part("^PLAY RTSP/1.0..CSeq: 2..Range: npt=4-..$", name="p2")
        + info_part("^PLAY RTSP/1.0..CSeq: 3..Scale: 2.0..$", name="p3")
        + WE_BYE
    )
    gw, sipp = await gateway_with_device(tmp_path, device("Playback", then, "p1,p2,p3"), **FAST)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out = tmp_path / "out.mp4"
        proc = await run(gw, "playback", CH, "--from", FROM, "--to", TO, "-o", str(out), "--json", "--progress")
        st = await consumed(gw)
        assert st.kind.word == "playback" and st.span == SPAN
        frames = frames_of(gb_ps(FRAMES, 10), int(st.session.ssrc))
        # the operator pauses while the first 4 s play (at 1x); what the device sent meanwhile still comes
        pause = await cli(gw, "stream", "pause", st.id)
        await send_frames(frames[:100], st.port, fps=FPS, sock=media)
        said = await output(pause)
        assert f"{st.id}: paused at " in said and "(device: 200 OK)" in said
        said = await output(await cli(gw, "stream", "seek", st.id, "0:04"))
        assert f"{st.id}: playing from 00:04 at 00:04/00:08" in said
        rest = asyncio.create_task(
            send_frames(frames[100:], st.port, fps=FPS, sock=media)
        )  # it plays again: media comes
        said = await output(await cli(gw, "stream", "speed", st.id, "2"))
        assert f"{st.id}: playing at x2" in said
        listing = await output(await cli(gw, "streams"))
        row = next(line for line in listing.splitlines() if st.id in line)
        assert re.search(r"playback\s+00:0\d/00:08\s+x2\s", row), row
        assert not rest.done()
        await rest  # then 2 s without RTP: the span has been sent
        code, summary, stderr = await ended(proc)
        assert code == 0, stderr
        assert summary["complete"] is True and summary["cause"] == "span-end" and summary["kind"] == "playback"
        assert summary["frames"] == FRAMES and summary["recorded_seconds"] == 8.0 and summary["span_seconds"] == 8
        percents = progress_percents(stderr)
        assert percents and percents == sorted(percents) and percents[-1] == 100, stderr
        assert mp4_video(out) == (FRAMES, pytest.approx(8.0, abs=0.05))
        await finished(sipp)  # it checked the INVITE and the three INFO bodies, then had our BYE
        assert info_bodies(tmp_path / "device.msg") == [
            b"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n",
            b"PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=4-\r\n",
            b"PLAY RTSP/1.0\r\nCSeq: 3\r\nScale: 2.0\r\n",
        ]
        await wait_for(lambda: not gw.streams.streams and gw.streams.pools[0].in_use == 0)
    finally:
        media.close()
        await gw.stop()


async def test_download_faster_than_real_time_completes_at_normal_speed(tmp_path: Path) -> None:
    then = sipp_scenario("parts/media_status.xml", pause=3500, sender=CH, from_tag="[pid]dev")
    speed = '<ereg regexp="a=downloadspeed:4" search_in="body" check_it="true" assign_to="ds"/>'
    gw, sipp = await gateway_with_device(tmp_path, device("Download", then, "ds", extra_check=speed), **FAST)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out = tmp_path / "out.mp4"
        proc = await run(
            gw, "download", CH, "--from", FROM, "--to", TO, "--speed", "4", "-o", str(out), "--json", "--progress"
        )
        st = await consumed(gw)
        assert st.kind.word == "download" and st.session.download_speed == 4
        await send_frames(frames_of(gb_ps(FRAMES, 10), int(st.session.ssrc)), st.port, fps=4 * FPS, sock=media)
        code, summary, stderr = await ended(proc)
        assert code == 0, stderr
        assert summary["complete"] is True and summary["cause"] == "complete" and summary["download_speed"] == 4
        assert summary["frames"] == FRAMES and summary["recorded_seconds"] == 8.0
        assert summary["seconds"] < 7  # sent faster than real time …
        pictures, seconds = mp4_video(out)
        assert pictures == FRAMES and seconds == pytest.approx(8.0, abs=0.05)  # … and plays at normal speed
        percents = progress_percents(stderr)
        assert len(percents) >= 3 and percents == sorted(percents) and percents[-1] == 100, stderr
        assert re.search(r"x[3-5]\.\d  ", stderr), stderr  # the pace: about 4x
        await finished(sipp)  # MediaStatus 121 answered, then our BYE
        await wait_for(lambda: not gw.streams.streams and gw.streams.ssrcs.active == 0)
    finally:
        media.close()
        await gw.stop()


async def test_the_device_hanging_up_halfway_is_an_incomplete_download(tmp_path: Path) -> None:
    hang_up = sipp_scenario("parts/bye_from_device.xml", ch=CH, pause=2500)
    gw, sipp = await gateway_with_device(tmp_path, device("Download", hang_up), **FAST)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out = tmp_path / "out.ps"
        proc, st = await download_some(gw, out, 100, media)
        code, summary, stderr = await ended(proc)
        assert code == 1, stderr
        assert summary["complete"] is False and summary["cause"] == "device-bye"
        assert summary["frames"] == 100 and summary["recorded_seconds"] == 4.0
        assert f"error: INCOMPLETE download: stream {st.id} ended: the device ended the stream (BYE), at 00:0" in stderr
        assert f"what came is in {out}" in stderr and "complete" not in stderr.replace("INCOMPLETE", "")
        assert out.stat().st_size > 0
        await finished(sipp)
    finally:
        media.close()
        await gw.stop()


async def test_a_refused_invite_is_a_clear_error_and_leaves_nothing_open(tmp_path: Path) -> None:
    refused = sipp_scenario("invite_refused_uas.xml", status=404, reason="Not Found").encode()
    gw, sipp = await gateway_with_device(tmp_path, refused, **FAST)
    try:
        out = tmp_path / "out.mp4"
        proc = await cli(gw, "playback", CH, "--from", FROM, "--to", TO, "-o", str(out))
        raw, _ = await asyncio.wait_for(proc.communicate(), 30)
        text = raw.decode()
        assert proc.returncode == 1, text
        assert "error: device 34020000001180000001 answered the INVITE 404 Not Found" in text, text
        assert f"hint: is anything recorded then? gb28181gw records {CH} --from {FROM} --to {TO}" in text
        await finished(sipp)
        assert not gw.streams.streams and not gw.streams.by_call_id
        assert gw.streams.pools[0].in_use == 0 and gw.streams.ssrcs.active == 0
        assert not out.exists()  # nothing came: no empty file left behind
    finally:
        await gw.stop()


async def test_bad_spans_and_speeds_are_refused_before_any_invite(tmp_path: Path) -> None:
    gw = await start_with_device(tmp_path)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", gw.registrar.devices[NVR].port))  # the device: any INVITE would land here
    listener.setblocking(False)
    future = (dt.datetime.now(dt.timezone(dt.timedelta(hours=8))) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    try:
        refused = [
            ("playback", ["--from", TO, "--to", FROM], 2, f"Invalid value for '--to': {FROM} is not after --from {TO}"),
            ("download", ["--from", FROM, "--to", FROM], 2, "is not after --from"),
            ("playback", ["--from", future, "--to", future + ":30"], 2, "is in the future"),
            ("download", ["--from", FROM, "--to", TO, "--speed", "0"], 2, "0 is not in the range x>=1"),
            ("download", ["--from", FROM, "--to", TO, "--speed", "1.5"], 2, "'1.5' is not a valid integer"),
            ("playback", ["--from", FROM, "--to", TO, "--speed", "-1"], 2, "-1 is not a speed"),
            ("playback", ["--from", "yesterday-ish", "--to", TO], 2, "is not a time"),
            # the gateway's bound: its words
            ("download", ["--from", "2024-05-01", "--to", TO], 1, "more than playback.max_span (24 h)"),
        ]
        for command, args, status, said in refused:
            proc = await cli(gw, command, CH, *args, "-o", str(tmp_path / "a.mp4"))
            raw, _ = await asyncio.wait_for(proc.communicate(), 30)
            text = " ".join(raw.decode().split())
            assert proc.returncode == status and said in text, (args, text)
        with pytest.raises(BlockingIOError):
            listener.recv(65536)
        assert not gw.streams.streams and not gw.streams.ended
        assert not list(tmp_path.glob("a.*"))
    finally:
        listener.close()
        await gw.stop()


async def test_a_refused_control_shows_the_devices_answer(tmp_path: Path) -> None:
    then = info_part("^PLAY RTSP/1.0..CSeq: 1..Scale: 4.0..$", status="400 Bad Request", name="p1") + WE_BYE
    gw, sipp = await gateway_with_device(tmp_path, device("Playback", then, "p1"), **FAST)
    try:
        proc = await run(gw, "playback", CH, "--from", FROM, "--to", TO, "-o", str(tmp_path / "out.ps"))
        st: Stream = await consumed(gw)
        said = await cli(gw, "stream", "speed", st.id, "4")
        raw, _ = await asyncio.wait_for(said.communicate(), 30)
        text = raw.decode()
        assert said.returncode == 1 and "error: device answered PLAY" in text and "400 Bad Request" in text, text
        assert st.id in gw.streams.streams  # the session goes on
        await output(await cli(gw, "stream", "stop", st.id))
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        stderr = err.decode()
        assert proc.returncode == 1 and "INCOMPLETE playback" in stderr and "stopped by operator" in stderr, stderr
        await finished(sipp)
    finally:
        await gw.stop()


async def test_ctrl_c_is_an_incomplete_download_with_a_playable_file(tmp_path: Path) -> None:
    gw, sipp = await gateway_with_device(tmp_path, device("Download", WE_BYE), **FAST)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out = tmp_path / "out.mp4"
        proc, _ = await download_some(gw, out, 60, media)
        await wait_for(lambda: out.stat().st_size > 10_000, 10)
        proc.send_signal(signal.SIGINT)
        code, summary, stderr = await ended(proc)
        assert code == 130, stderr
        assert summary["complete"] is False and summary["stopped"] == "Ctrl-C" and summary["recorded_seconds"] < 8
        assert "error: INCOMPLETE download: stopped by Ctrl-C at 00:02 of 00:08" in stderr, stderr
        assert mp4_video(out)[0] == summary["frames"] > 0
        await finished(sipp)  # our BYE: the CLI left, the download was not left running
        await wait_for(lambda: not gw.streams.streams)
        assert gw.streams.downloads[("incomplete",)] == 1
    finally:
        media.close()
        await gw.stop()


async def test_a_terminal_gets_the_progress_bar_in_place(tmp_path: Path) -> None:
    then = sipp_scenario("parts/media_status.xml", pause=3000, sender=CH, from_tag="[pid]dev")
    gw, sipp = await gateway_with_device(tmp_path, device("Download", then), **FAST)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    master, slave = os.openpty()
    try:
        assert gw.admin is not None
        out = tmp_path / "out.ps"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gb28181gw", "download", CH, "--from", FROM, "--to", TO, "-o", str(out), "--json",
            "--admin", f"127.0.0.1:{gw.admin.port}", stdout=asyncio.subprocess.PIPE, stderr=slave,
        )  # fmt: skip
        os.close(slave)
        terminal = asyncio.create_task(asyncio.to_thread(read_all, master))
        st = await consumed(gw)
        await send_frames(frames_of(gb_ps(FRAMES, 10), int(st.session.ssrc)), st.port, fps=4 * FPS, sock=media)
        stdout, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0 and json.loads(stdout)["complete"] is True
        shown = (await asyncio.wait_for(terminal, 5)).decode(errors="replace")
        bars = [part for part in shown.split("\r\x1b[K") if re.match(r"\[[#.]{24}\] +\d+%", part)]
        assert len(bars) >= 3 and all("\n" not in bar for bar in bars), shown  # redrawn in place
        assert "ETA " in bars[-1] and "x" in bars[-1] and "100%" in bars[-1], shown
        await finished(sipp)
    finally:
        os.close(master)
        media.close()
        await gw.stop()


def test_an_existing_output_is_neither_overwritten_nor_lost(tmp_path: Path) -> None:
    # the file is opened before the stream is asked for and removed when nothing came: re-running a
    # download into the same name (with a span the gateway refuses, or no gateway at all) lost the
    # earlier recording
    earlier = tmp_path / "cam1.mp4"
    earlier.write_bytes(b"yesterday's download")
    done = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "download", CH, "--from", FROM, "--to", TO, "-o", str(earlier),
         "--admin", "http://127.0.0.1:1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and f"{earlier} exists: remove it or choose another name" in done.stderr, done.stderr
    assert earlier.read_bytes() == b"yesterday's download"


async def invite_span(tmp_path: Path, *args: str, zone: str, env: dict[str, str]) -> Span:
    """The span of the INVITE a ``playback`` CLI run with ``args`` makes a gateway in ``zone`` send, read
    off the wire where the device would be."""
    gw = await start_gateway(**{"gateway.time_zone": zone})
    port = free_udp_port()
    await register(gw, tmp_path, port)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", port))
    listener.setblocking(False)
    assert gw.admin is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gb28181gw", "playback", CH, *args, "-o", str(tmp_path / "out.ps"),
        "--admin", f"http://127.0.0.1:{gw.admin.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **env},
    )  # fmt: skip
    try:
        invite = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(listener, 65536), 30)
        m = re.search(rb"\r\nt=(\d+) (\d+)\r\n", invite)
        assert m is not None, invite
        return Span(int(m[1]), int(m[2]))
    finally:
        proc.kill()
        await proc.communicate()
        listener.close()
        await gw.stop()


async def test_times_are_read_in_the_zone_the_cli_says_whatever_the_gateways(tmp_path: Path) -> None:
    # the CLI reads --from/--to in GB28181GW_GATEWAY_TIME_ZONE when set (and says so in its help); a
    # gateway started with another gateway.time_zone took the same words as its own local time
    span = await invite_span(
        tmp_path, "--from", FROM, "--to", TO, zone="UTC", env={"GB28181GW_GATEWAY_TIME_ZONE": "Asia/Shanghai"}
    )
    assert span == SPAN


async def test_a_bare_day_is_the_whole_day_to_the_next_midnight(tmp_path: Path) -> None:
    # `--from D --to D`: the day's 86,400 seconds, t= ending at the next midnight (not 23:59:59,
    # which left the day's last second out)
    span = await invite_span(tmp_path, "--from", "2024-05-06", "--to", "2024-05-06", zone="Asia/Shanghai", env={})
    day = Span.from_local(dt.datetime(2024, 5, 6), dt.datetime(2024, 5, 7), dt.timezone(dt.timedelta(hours=8)))
    assert span == day and span.seconds == 86400


async def test_a_span_ending_in_the_future_ends_now(tmp_path: Path) -> None:
    # `--to today` is "so far": a span past now is never whole (no MediaStatus, no media to its end),
    # so a download of it could only end INCOMPLETE
    span = await invite_span(tmp_path, "--from", "-1h", "--to", "today", zone="Asia/Shanghai", env={})
    now = dt.datetime.now(dt.UTC).timestamp()
    assert span.seconds == pytest.approx(3600, abs=5) and span.end == pytest.approx(now, abs=10)


async def test_sigterm_is_an_incomplete_download_exiting_143(tmp_path: Path) -> None:
    # 130 is Ctrl-C's; a supervisor's SIGTERM said 130 too, so timeout(1) or systemd could not tell
    # a stop they asked for from an operator's
    gw, sipp = await gateway_with_device(tmp_path, device("Download", WE_BYE), **FAST)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out = tmp_path / "out.ps"
        proc, _ = await download_some(gw, out, 60, media)
        await wait_for(lambda: out.exists() and out.stat().st_size > 10_000, 10)
        proc.send_signal(signal.SIGTERM)
        code, summary, stderr = await ended(proc)
        assert code == 143 and summary["stopped"] == "SIGTERM" and summary["complete"] is False, stderr
        assert "error: INCOMPLETE download: stopped by SIGTERM at 00:0" in stderr, stderr
        await finished(sipp)
    finally:
        media.close()
        await gw.stop()


async def test_progress_after_a_seek_back_follows_the_position(tmp_path: Path) -> None:
    then = info_part("^PLAY RTSP/1.0..CSeq: 1..Range: npt=0-..$", name="p1") + WE_BYE
    gw, sipp = await gateway_with_device(tmp_path, device("Playback", then, "p1"), **FAST)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        proc = await run(gw, "playback", CH, "--from", FROM, "--to", TO, "-o", str(tmp_path / "out.mp4"), "--progress")
        st = await consumed(gw)
        frames = frames_of(gb_ps(FRAMES, 10), int(st.session.ssrc))
        await send_frames(frames[:150], st.port, fps=4 * FPS, sock=media)  # 6 s of the 8
        await wait_for(lambda: st.position is not None and st.position >= 5, 10)
        said = await output(await cli(gw, "stream", "seek", st.id, "0"))
        assert "playing from 00:00" in said
        await send_frames(frames[:50], st.port, fps=4 * FPS, sock=media)  # the first 2 s again
        await wait_for(lambda: st.position is not None and 1.5 <= st.position < 3, 10)
        await asyncio.sleep(1.5)  # progress lines after the seek (twice a second)
        await output(await cli(gw, "stream", "stop", st.id))
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        stderr = err.decode()
        assert proc.returncode == 1 and "INCOMPLETE playback" in stderr, stderr
        percents = progress_percents(stderr)
        assert percents and percents[-1] < 50, stderr  # at 00:02 of 00:08, not 100%
        await finished(sipp)
    finally:
        media.close()
        await gw.stop()


async def test_a_ps_download_is_byte_for_byte_what_the_device_sent(tmp_path: Path) -> None:
    then = sipp_scenario("parts/media_status.xml", pause=3500, sender=CH, from_tag="[pid]dev")
    gw, sipp = await gateway_with_device(tmp_path, device("Download", then), **FAST)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out = tmp_path / "out.ps"
        proc = await run(gw, "download", CH, "--from", FROM, "--to", TO, "-o", str(out), "--json")
        st = await consumed(gw)
        ps = gb_ps(FRAMES, 10)
        await send_frames(frames_of(ps, int(st.session.ssrc)), st.port, fps=4 * FPS, sock=media)
        code, summary, stderr = await ended(proc)
        assert code == 0 and summary["complete"] is True, stderr
        assert out.read_bytes() == ps and summary["bytes_written"] == len(ps)
        await finished(sipp)
    finally:
        media.close()
        await gw.stop()


async def test_a_seek_past_the_spans_end_is_refused_and_the_playback_goes_on(tmp_path: Path) -> None:
    # refused by the gateway before any INFO (SIPp would see an unexpected INFO): the CLI names the
    # span's length and fails; the playback is untouched and ends when its CLI stops (our BYE)
    gw, sipp = await gateway_with_device(tmp_path, device("Playback", WE_BYE), **FAST)
    try:
        proc = await run(gw, "playback", CH, "--from", FROM, "--to", TO, "-o", str(tmp_path / "out.ps"))
        st = await consumed(gw)
        said = await cli(gw, "stream", "seek", st.id, "99")
        raw, _ = await asyncio.wait_for(said.communicate(), 30)
        assert said.returncode == 1 and "the span is 8 s long" in raw.decode(), raw.decode()
        assert st.id in gw.streams.streams and st.control is not None and st.control.cseq == 0  # nothing sent
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), 30)
        await finished(sipp)
    finally:
        await gw.stop()


async def test_a_playback_that_got_no_video_is_never_complete(tmp_path: Path) -> None:
    # the device says it has sent the span (MediaStatus 121) but no video came: the gateway calls the
    # session complete, the CLI must not ("complete playback, 0 frames" with exit 0 before)
    then = sipp_scenario("parts/media_status.xml", pause=1500, sender=CH, from_tag="[pid]dev")
    gw, sipp = await gateway_with_device(tmp_path, device("Playback", then), **FAST)
    try:
        proc = await run(gw, "playback", CH, "--from", FROM, "--to", TO, "-o", str(tmp_path / "out.ps"))
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        await finished(sipp)
        assert proc.returncode == 1 and "INCOMPLETE playback" in err.decode(), err.decode()
    finally:
        await gw.stop()


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("1:30", 90.0), ("1:00:05", 3605.0), ("2.5", 2.5)])
def test_a_position_is_seconds_or_clock_time(text: str, seconds: float) -> None:
    assert PositionParam().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["90:99", "1:60:00", "1:2:3:4", "-5", "soon"])
def test_a_position_that_is_no_clock_time_is_refused(text: str) -> None:
    with pytest.raises(click.BadParameter):
        PositionParam().convert(text, None, None)
