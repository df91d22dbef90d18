"""Two gateway processes chained end to end (issue 12, "Done when"): site A registers to district B.

A SIPp device registers on A and answers its Catalog; B reads A's catalog (A's tree: its
platform, then the device's channel, IDs unchanged) and lists the channel with
``gb28181gw channels``; ``gb28181gw play`` on B pulls the channel's live stream — B INVITEs
A, A INVITEs the device (one INVITE each), the test sends real H.264 in PS over RTP to the
port A opened, and the file B's player writes decodes; ``gb28181gw ptz`` on B reaches the
device behind A with the PTZCmd bytes unchanged (SIPp checks them). Then B is killed and
started again: A, never restarted, registers again and serves B's next INVITE.

Every command is the real binary; every message crosses a real socket.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import av
import pytest

from gb28181gw.manscdp.ptz import move
from tests.helpers import media_port
from tests.media import gb_ps, packetize, packs

from .conftest import require_sipp, sipp_scenario
from .test_cascade_processes import DISTRICT, PASSWORD, SITE, cli, site_config, until
from .test_devices import CH1, NVR, catalog_body, device_scenario, free_udp_port, response_message
from .test_streams import INVITE_CHECKS, WE_BYE, answer

pytestmark = pytest.mark.sipp


class Node:
    """A gateway process whose log goes to a file (a pipe nobody reads would fill and stall it)."""

    def __init__(self, tmp: Path, name: str, sip: int, admin: int, *args: str) -> None:
        self.name, self.sip, self.admin = name, sip, admin
        self.url = f"http://127.0.0.1:{admin}"
        self.args = args
        self.log_path = tmp / f"{name}.log"
        self.store = str(tmp / f"{name}.db")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gb28181gw", "serve", "--set", f"store.path={self.store}",
             "--listen", "127.0.0.1", "--port", str(self.sip), "--admin-port", str(self.admin),
             "--set", "sip.t1=0.05", "--set", "devices.subscribe=", "--set", "media.workers=0",
             "--set", "media.linger=0", *self.args],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, self.log()
            try:
                cli(self.url, "status")
                return
            except AssertionError:
                assert time.monotonic() < deadline, self.log()
                time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()


@contextmanager
def device(tmp: Path, port: int, name: str, scenario: str) -> Iterator[subprocess.Popen[str]]:
    """A SIPp server playing the device on ``port`` for one exchange; must end well."""
    sipp = require_sipp()
    path = tmp / f"{name}.xml"
    path.write_text(scenario)
    proc = subprocess.Popen(
        [sipp, "-sf", str(path), "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-timeout", "30s",
         "-timeout_error", "-nostdin", "-trace_msg", "-message_file", str(tmp / f"{name}.msg")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp,
    )  # fmt: skip
    time.sleep(0.3)  # let it bind
    try:
        yield proc
        out = proc.communicate(timeout=40)[0]
        assert proc.returncode == 0, out[-3000:] + (tmp / f"{name}.msg").read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def register_device(tmp: Path, a: Node, port: int) -> None:
    sipp = require_sipp()
    path = tmp / "register.xml"
    path.write_text(sipp_scenario("register_uac.xml", device=NVR, expires=3600))
    done = subprocess.run(
        [sipp, "-sf", str(path), "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-timeout", "15s",
         "-timeout_error", "-nostdin", f"127.0.0.1:{a.sip}"],
        capture_output=True, text=True, timeout=30, cwd=tmp,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]


def stream_of(a: Node) -> dict[str, Any] | None:
    streams = cli(a.url, "streams")
    return next((s for s in streams if s["channel_id"] == CH1 and s["state"] == "live"), None)


def send_ps(a: Node, seconds: float) -> None:
    """Send real H.264 in PS over RTP to the stream A opened, at 25 frames a second."""
    until(lambda: stream_of(a) is not None, 15, "A's stream of the channel to be live")
    st = stream_of(a)
    assert st is not None
    ssrc, port = int(st["ssrc"]), int(st["port"])
    ps = gb_ps(int(seconds * 25), 25)
    seq = 1000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for pack in packs(ps):
            for packet in packetize(pack, ssrc, seq=seq):
                sock.sendto(packet, ("127.0.0.1", port))
                seq += 1
            time.sleep(0.04)


def play_through_b(tmp: Path, a: Node, b: Node, dev_port: int, name: str) -> int:
    """``gb28181gw play`` on B; the device behind A answers A's INVITE; frames decoded from B's file."""
    checks = INVITE_CHECKS.format(ch=CH1, proto="RTP/AVP", offer_check="")
    scenario = sipp_scenario(
        "invite_uas.xml", checks=checks, ch=CH1, answer=answer(), then=WE_BYE, refs="gwfrom,subject,m,all,y"
    )
    out = tmp / f"{name}.mp4"
    with device(tmp, dev_port, f"{name}-device", scenario):
        player = subprocess.Popen(
            [sys.executable, "-m", "gb28181gw", "play", CH1, "-o", str(out), "--seconds", "5", "--admin", b.url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "GB28181GW_TIME_ZONE": "UTC+8"},
        )  # fmt: skip
        try:
            send_ps(a, 3.0)
            assert cli(a.url, "upstreams")[0]["streams_served"] == 1  # B is one consumer of A's stream
            text = player.communicate(timeout=30)[0]
        finally:
            if player.poll() is None:
                player.kill()
                player.communicate()
        assert player.returncode == 0, text + a.log() + b.log()
    until(lambda: cli(a.url, "upstreams")[0]["streams_served"] == 0, 10, "B's BYE to end what A serves it")
    with av.open(str(out)) as container:
        return sum(1 for _ in container.decode(video=0))


def site_and_district(tmp: Path, media: int) -> tuple[Node, Node]:
    """Site A (registering to B) and district B (taking lower platforms), not started; media ports
    from ``media`` (B: 100 ports, A: the next 100)."""
    from tests.process import free_port

    b = Node(
        tmp, "district", free_port(), free_port(),
        "--id", DISTRICT, "--set", "registrar.accept_platforms=true", "--set", f"registrar.password={PASSWORD}",
        "--set", "devices.catalog_on_register=true",
        "--set", f"media.port_min={media}", "--set", f"media.port_max={media + 99}",
    )  # fmt: skip
    a = Node(
        tmp, "site", free_port(), free_port(),
        "-c", str(site_config(tmp, b.sip)), "--id", SITE, "--set", "devices.catalog_on_register=false",
        "--set", f"media.port_min={media + 100}", "--set", f"media.port_max={media + 199}",
    )  # fmt: skip
    return a, b


def device_behind_the_site(tmp: Path, a: Node, b: Node) -> int:
    """Once A registered with B: a SIPp device registers on A with one channel in its catalog, and B
    reads A's catalog; the device's SIP port."""
    until(lambda: cli(a.url, "upstreams")[0]["state"] == "registered", 20, "A registered with B")
    dev_port = free_udp_port()
    register_device(tmp, a, dev_port)
    body = catalog_body("GB2312", "[$sn]", CH1, "大门口").replace("<SumNum>2</SumNum>", "<SumNum>1</SumNum>")
    with device(tmp, dev_port, "catalog", device_scenario([response_message(1, body)])):
        cli(a.url, "catalog", "refresh", NVR)
    cli(b.url, "catalog", "refresh", SITE)
    return dev_port


def test_district_lists_plays_and_moves_a_device_behind_the_site_and_again_after_a_restart(tmp_path: Path) -> None:
    a, b = site_and_district(tmp_path, media_port(1000))
    try:
        b.start()
        a.start()
        dev_port = device_behind_the_site(tmp_path, a, b)

        # B has read A's catalog: the channel arrives with its own ID, under A
        channels = cli(b.url, "channels")
        (row,) = [c for c in channels if c["channel_id"] == CH1]
        assert row["device_id"] == SITE

        # B plays it: B → A → device, and back
        frames = play_through_b(tmp_path, a, b, dev_port, "first")
        assert frames >= 25

        # PTZ from B reaches the device behind A, bytes unchanged
        expected = str(move("left"))
        check = f"&lt;PTZCmd&gt;{expected}&lt;/PTZCmd&gt;"
        with device(tmp_path, dev_port, "ptz", device_scenario([], check=check)):
            cli(b.url, "ptz", CH1, "left")

        # B dies and comes back: A registers again by itself and serves B's next INVITE
        b.kill()
        until(lambda: cli(a.url, "upstreams")[0]["state"] != "registered", 20, "A to notice B is gone")
        b.start()
        until(lambda: cli(a.url, "upstreams")[0]["state"] == "registered", 30, "A registered with the new B")
        until(lambda: any(d["device_id"] == SITE and d.get("online") for d in cli(b.url, "devices")), 10, "B sees A")
        assert play_through_b(tmp_path, a, b, dev_port, "second") >= 25
        assert a.proc is not None and a.proc.poll() is None  # the same site process all along
    finally:
        a.stop()
        b.stop()
