"""Playback and download through two gateway processes (issue 13 item 5): site A registers to district B.

A SIPp device behind A; on B the operator runs ``gb28181gw playback`` and ``gb28181gw download``
for a span of the device's channel. B INVITEs A (``s=Playback`` / ``Download`` with the span), A
opens a device session of its own for the same span (SIPp checks ``s=``, ``u=``, ``t=``, the
history ``y=``, ``a=downloadspeed``), the test sends real H.264 in PS to the port A opened, and:

- B's ``stream pause`` / ``stream resume`` reach the device as MANSRTSP INFOs in the device's own
  dialog, numbered there (SIPp checks the bodies);
- the device's MediaStatus 121 reaches B as A's MESSAGE in B's dialog, so B's CLI ends
  *complete*, exit 0, with an MP4 that decodes whole at the recording's own pace.

Every command is the real binary; every message crosses a real socket.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import pytest

from gb28181gw.gb.playback import Span
from tests.helpers import media_port
from tests.media import gb_ps, packetize, packs

from .conftest import sipp_scenario
from .test_cascade_chain import Node, device, device_behind_the_site, site_and_district
from .test_cascade_processes import SITE, cli, until
from .test_devices import CH1
from .test_playback_service import info_part

pytestmark = pytest.mark.sipp

BEIJING = dt.timezone(dt.timedelta(hours=8))
FROM, TO = "2024-05-06T08:00:00", "2024-05-06T08:00:04"
SPAN = Span.from_local(dt.datetime.fromisoformat(FROM), dt.datetime.fromisoformat(TO), BEIJING)
FRAMES = 100  # 4 s at 25 fps: the whole span
# How long the device waits before its MediaStatus says the span is all sent: the test sends the
# span itself once it has seen both sides' sessions through the CLI (a process per look, slow on a
# loaded machine), so the MediaStatus must not overtake it; 1.5 s did once with two suites running.
SPAN_SENT = 6000


def device_side(kind: str, then: str, refs: str, extra_check: str = "") -> str:
    """The device answering A's INVITE for the span (A's own session: s=, u=, t=, y=1…), then ``then``."""
    checks = f"""<ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="gwfrom"/>
      <ereg regexp="s={kind}" search_in="body" check_it="true" assign_to="s"/>
      <ereg regexp="u={CH1}:0" search_in="body" check_it="true" assign_to="u"/>
      <ereg regexp="t={SPAN.start} {SPAN.end}" search_in="body" check_it="true" assign_to="t"/>
      <ereg regexp="y=(1[0-9]{{9}})" search_in="body" check_it="true" assign_to="all,y"/>{extra_check}"""
    lines = ["v=0", f"o={CH1} 0 0 IN IP4 [local_ip]", f"s={kind}", "c=IN IP4 [local_ip]", f"t={SPAN.start} {SPAN.end}"]
    lines += ["m=video 15060 RTP/AVP 96", "a=sendonly", "a=rtpmap:96 PS/90000"]
    lines += ["a=filesize:-1"] if kind == "Download" else []
    lines += ["y=[$y]", "f="]
    return sipp_scenario(
        "invite_uas.xml",
        checks=checks,
        ch=CH1,
        answer="\r\n".join(lines) + "\r\n",
        then=then,
        refs="gwfrom,s,u,t,all,y" + (f",{refs}" if refs else ""),
    )


def media_status(pause: int) -> str:
    return sipp_scenario("parts/media_status.xml", pause=pause, sender=CH1, from_tag="[pid]dev")


def a_stream(a: Node) -> dict[str, Any] | None:
    return next((s for s in cli(a.url, "streams") if s["channel_id"] == CH1 and s["state"] == "live"), None)


def send_span(a: Node) -> None:
    """The whole span, as fast as the socket takes it (a device sending a download ahead of time)."""
    until(lambda: a_stream(a) is not None, 15, "A's device session to be live")
    st = a_stream(a)
    assert st is not None and st["kind"] in ("playback", "download") and st["ssrc"].startswith("1")
    seq = 1000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for pack in packs(gb_ps(FRAMES, 25)):
            for packet in packetize(pack, int(st["ssrc"]), seq=seq):
                sock.sendto(packet, ("127.0.0.1", int(st["port"])))
                seq += 1


def b_cli(b: Node, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gb28181gw", *args, "--admin", b.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "GB28181GW_GATEWAY_TIME_ZONE": "Asia/Shanghai"},
    )  # fmt: skip


def b_stream(b: Node) -> dict[str, Any] | None:
    return next((s for s in cli(b.url, "streams") if s["channel_id"] == CH1), None)


def decoded(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        seconds = float(stream.duration * stream.time_base) if stream.duration else 0.0
    return frames, seconds


def test_district_plays_back_and_downloads_a_span_of_a_device_behind_the_site(tmp_path: Path) -> None:
    a, b = site_and_district(tmp_path, media_port(1200))
    try:
        b.start()
        a.start()
        dev_port = device_behind_the_site(tmp_path, a, b)
        assert any(c["channel_id"] == CH1 for c in cli(b.url, "channels"))

        # playback on B, paused and resumed from B: the INFOs reach the device in its own dialog,
        # numbered 1 and 2 there; then the device's MediaStatus ends it complete on B
        then = (
            info_part("^PAUSE RTSP/1.0..CSeq: 1..PauseTime: now..$", name="p1")
            + info_part("^PLAY RTSP/1.0..CSeq: 2..Range: npt=now-..$", name="p2")
            + media_status(SPAN_SENT)
        )
        out = tmp_path / "playback.mp4"
        with device(tmp_path, dev_port, "playback-device", device_side("Playback", then, "p1,p2")):
            player = b_cli(b, "playback", CH1, "--from", FROM, "--to", TO, "-o", str(out), "--json")
            until(lambda: (b_stream(b) or {}).get("state") == "live", 15, "B's playback to be live")
            st = b_stream(b)
            assert st is not None and st["kind"] == "playback" and st["device_id"] == SITE
            for action in ("pause", "resume"):
                said = b_cli(b, "stream", action, st["id"])
                text = said.communicate(timeout=30)
                assert said.returncode == 0, text
            send_span(a)
            summary_text, err = player.communicate(timeout=40)
        assert player.returncode == 0, err + a.log() + b.log()
        summary = json.loads(summary_text)
        assert summary["complete"] is True and summary["kind"] == "playback"
        assert decoded(out) == (FRAMES, pytest.approx(4.0, abs=0.05))
        until(lambda: not cli(a.url, "streams") and not cli(b.url, "streams"), 10, "both sides to close")

        # a download at 4x: a=downloadspeed goes down unchanged, the device's a=filesize:-1 comes up
        # (unknown size), its MediaStatus ends it complete on B, the MP4 plays at the recording's pace
        out = tmp_path / "download.mp4"
        speed = '\n      <ereg regexp="a=downloadspeed:4" search_in="body" check_it="true" assign_to="ds"/>'
        with device(
            tmp_path, dev_port, "download-device", device_side("Download", media_status(SPAN_SENT), "ds", speed)
        ):
            loader = b_cli(b, "download", CH1, "--from", FROM, "--to", TO, "--speed", "4", "-o", str(out), "--json")
            until(lambda: (b_stream(b) or {}).get("state") == "live", 15, "B's download to be live")
            st = b_stream(b)
            assert st is not None and st["kind"] == "download" and st["download_speed"] == 4
            assert st["file_size"] is None  # -1 from the device: unknown, passed up as it was
            send_span(a)
            summary_text, err = loader.communicate(timeout=40)
        assert loader.returncode == 0, err + a.log() + b.log()
        summary = json.loads(summary_text)
        assert summary["complete"] is True and summary["kind"] == "download"
        assert decoded(out) == (FRAMES, pytest.approx(4.0, abs=0.05))
        until(lambda: not cli(a.url, "streams") and not cli(b.url, "streams"), 10, "both sides to close")
        assert cli(a.url, "upstreams")[0]["streams_served"] == 0
    finally:
        a.stop()
        b.stop()
