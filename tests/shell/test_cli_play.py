"""``gb28181gw play`` as a real process against a gateway with a SIPp device sending real H.264 in
PS over RTP (issue 11, defect 4): the file is written as the stream arrives and stays playable
after Ctrl-C or the time limit, the consumer is released, an early end is said in words, memory
stays flat, bad arguments are refused before any INVITE, and a terminal gets a progress line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
from pathlib import Path

import av
import pytest

from gb28181gw.app import Gateway
from gb28181gw.services.streams import Consumer, Stream
from tests.helpers import media_port
from tests.media import decode_h264, gb_ps, packetize, packs, send_udp, wait_for

from .conftest import sipp_scenario
from .test_cli_streams import cli, output
from .test_devices import finished, free_udp_port, register
from .test_streams import CH, NVR, answer, gateway_with_device, scenario

pytestmark = pytest.mark.sipp


async def consumed(gw: Gateway) -> Stream:
    """The stream, once the CLI is its consumer."""
    await wait_for(lambda: any(st.consumers for st in gw.streams.streams.values()), 15)
    return next(iter(gw.streams.streams.values()))


async def send_live(ps: bytes, st: Stream, *, fps: float) -> None:
    """``ps`` as a device sends it live: one pack (frame) of RTP packets every 1/``fps`` s."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    seq = 1000
    try:
        for i, pack in enumerate(packs(ps)):
            pieces = packetize(pack, int(st.session.ssrc), seq=seq)
            seq += len(pieces)
            await send_udp(pieces, st.port, sock=sock)
            await asyncio.sleep(1 / fps)
            del i
    finally:
        sock.close()


def mp4_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        return sum(1 for _ in container.decode(video=0))


def summary_frames(text: str, out: Path) -> int:
    line = next(line for line in text.splitlines() if line.startswith(f"{out}: "))
    return int(line.split(": ")[1].split(" frame")[0])


@pytest.mark.parametrize("suffix", ["ps", "mp4"])
async def test_ctrl_c_leaves_a_playable_file_written_as_it_came_and_releases_the_stream(
    tmp_path: Path, suffix: str
) -> None:
    ps = gb_ps(250, 10)
    gw, device = await gateway_with_device(tmp_path, scenario(answer()))
    try:
        out = tmp_path / f"out.{suffix}"
        proc = await cli(gw, "play", CH, "-o", str(out))  # no --seconds: until Ctrl-C
        st = await consumed(gw)
        sender = asyncio.create_task(send_live(ps, st, fps=50))
        # the file grows while the stream comes, not at the end
        await wait_for(lambda: out.exists() and out.stat().st_size > 20_000, 10)
        sizes = []
        for _ in range(4):
            sizes.append(out.stat().st_size)
            await asyncio.sleep(0.5)
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0], sizes
        assert not sender.done()  # still streaming when Ctrl-C comes
        proc.send_signal(signal.SIGINT)
        text = await output(proc)  # exit 0: Ctrl-C is how an open-ended recording stops
        sender.cancel()
        # the consumer was released before the CLI exited: with linger 0 the stream closed at once
        assert not gw.streams.streams and gw.streams.closes[("no-consumers",)] == 1
        await finished(device)  # BYE
        assert "0 lost" in text
        frames = summary_frames(text, out)
        assert 40 < frames < 250
        if suffix == "ps":
            data = out.read_bytes()
            assert ps.startswith(data)  # as received, nothing lost or reordered on loopback
            assert decode_h264(data) >= frames - 1  # the last frame may be cut short
        else:
            assert mp4_frames(out) >= frames - 1
    finally:
        await gw.stop()


async def test_the_device_hanging_up_is_said_in_words_and_the_file_kept(tmp_path: Path) -> None:
    ps = gb_ps(500, 10)
    hang_up = sipp_scenario("parts/bye_from_device.xml", ch=CH, pause=2500)
    gw, device = await gateway_with_device(tmp_path, scenario(answer(), tail=hang_up))
    try:
        out = tmp_path / "out.mp4"
        proc = await cli(gw, "play", CH, "--seconds", "60", "-o", str(out))
        st = await consumed(gw)
        sender = asyncio.create_task(send_live(ps, st, fps=50))
        raw, _ = await asyncio.wait_for(proc.communicate(), 15)  # long before --seconds
        sender.cancel()
        text = raw.decode()
        assert proc.returncode == 1, text
        assert f"error: stream {st.id} ended: the device ended the stream (BYE)" in text
        assert f"what came before is in {out}" in text
        await finished(device)
        assert mp4_frames(out) >= summary_frames(text, out) - 1 > 0
        # the gateway still knows why for a while: stream stop says it too
        stop = await cli(gw, "stream", "stop", st.id)
        said, _ = await stop.communicate()
        assert stop.returncode == 1 and "ended: the device ended the stream (BYE)" in said.decode()
    finally:
        await gw.stop()


async def test_bad_arguments_are_refused_before_any_invite(tmp_path: Path) -> None:
    gw = await start_with_device(tmp_path)
    device_port = gw.registrar.devices[NVR].port
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", device_port))  # the device: any INVITE would land here
    listener.setblocking(False)
    try:
        refused = [
            (["--seconds", "0", "-o", str(tmp_path / "a.mp4")], "--seconds"),
            (["--seconds", "-3", "-o", str(tmp_path / "a.ps")], "--seconds"),
            (["-o", str(tmp_path / "a.avi")], "the file name must end in .ps"),
            (["-o", str(tmp_path / "noextension")], "the file name must end in .ps"),
        ]
        for args, said in refused:
            proc = await cli(gw, "play", CH, *args)
            raw, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 2 and said in raw.decode(), raw.decode()
        with pytest.raises(BlockingIOError):
            listener.recv(65536)
        assert not gw.streams.streams and not gw.streams.ended and not gw.streams.results
        assert not list(tmp_path.glob("a.*"))
    finally:
        listener.close()
        await gw.stop()


async def start_with_device(tmp_path: Path) -> Gateway:
    from gb28181gw.gb.model import Channel

    from .conftest import start_gateway

    gw = await start_gateway(
        **{"media.port_min": str(media_port(0)), "media.port_max": str(media_port(99)), "media.linger": "0"}
    )
    await register(gw, tmp_path, free_udp_port())
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
    return gw


def padded(ps: bytes, pad: int) -> bytes:
    """``ps`` with a padding packet (ISO/IEC 13818-1 stream 0xBE) of ``pad`` bytes after each pack."""
    filler = b"\x00\x00\x01\xbe" + struct.pack("!H", pad) + b"\xff" * pad
    return b"".join(pack + filler for pack in packs(ps))


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_memory_stays_flat_however_much_comes(tmp_path: Path) -> None:
    big = padded(gb_ps(100, 10), 60_000) * 5  # 30 MB of PS
    gw, device = await gateway_with_device(tmp_path, scenario(answer()))
    try:
        out = tmp_path / "out.ps"
        proc = await cli(gw, "play", CH, "-o", str(out))
        st = await consumed(gw)
        sender = asyncio.create_task(send_udp(packetize(big, int(st.session.ssrc)), st.port))
        baseline = peak = 0
        while not sender.done():
            size = out.stat().st_size if out.exists() else 0
            if size >= 3_000_000:
                memory = rss(proc.pid)
                baseline = baseline or memory
                peak = max(peak, memory)
            await asyncio.sleep(0.05)
        await wait_for(lambda: out.stat().st_size >= 20_000_000, 10)
        peak = max(peak, rss(proc.pid))
        proc.send_signal(signal.SIGINT)
        await output(proc)
        assert baseline, "nothing reached the file while the stream came"
        assert out.stat().st_size >= 20_000_000
        assert peak - baseline < 8_000_000, (baseline, peak)  # flat: not the 20+ MB written
        await finished(device)
    finally:
        await gw.stop()


async def test_a_terminal_gets_a_progress_line_and_the_time_limit_finalises(tmp_path: Path) -> None:
    ps = gb_ps(250, 10)
    gw, device = await gateway_with_device(tmp_path, scenario(answer()))
    master, slave = os.openpty()
    try:
        out = tmp_path / "out.mp4"
        assert gw.admin is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gb28181gw", "play", CH, "--seconds", "3", "-o", str(out), "--json",
            "--admin", f"127.0.0.1:{gw.admin.port}",
            stdout=asyncio.subprocess.PIPE, stderr=slave,
        )  # fmt: skip
        os.close(slave)
        st = await consumed(gw)
        sender = asyncio.create_task(send_live(ps, st, fps=50))
        terminal = asyncio.create_task(asyncio.to_thread(read_all, master))
        stdout, _ = await asyncio.wait_for(proc.communicate(), 20)
        sender.cancel()
        assert proc.returncode == 0
        shown = (await asyncio.wait_for(terminal, 5)).decode(errors="replace")
        lines = [part for part in shown.split("\r") if "frames" in part]
        assert len(lines) >= 3, shown  # updated in place, twice a second
        assert all("kbit/s" in line and " lost" in line for line in lines), shown
        summary = json.loads(stdout)
        assert summary["stopped"] == "time" and summary["ended"] is None and summary["lost"] == 0
        assert summary["stream_id"] == st.id and summary["codec"] == "H264"
        assert mp4_frames(out) >= summary["frames"] - 1 > 0
        await finished(device)
    finally:
        os.close(master)
        await gw.stop()


def read_all(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side closed
            return data
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize(
    ("ending", "transport", "said"),
    [("operator", "tcp", "ended: stopped by operator"), ("media-timeout", "udp", "ended: no RTP for ")],
)
async def test_the_gateway_ending_the_stream_is_said_in_words(
    tmp_path: Path, ending: str, transport: str, said: str
) -> None:
    ps = gb_ps(50, 10)
    gw, device = await gateway_with_device(tmp_path, scenario(answer()), **{"media.rtp_timeout": "2"})
    try:
        out = tmp_path / "out.ps"
        proc = await cli(gw, "play", CH, "-o", str(out), "--transport", transport)
        st = await consumed(gw)
        await send_live(ps, st, fps=100)  # then the device falls silent
        if ending == "operator":
            await output(await cli(gw, "stream", "stop", st.id))
        raw, _ = await asyncio.wait_for(proc.communicate(), 15)
        text = raw.decode()
        assert proc.returncode == 1, text
        assert f"error: stream {st.id} {said}" in text
        assert out.read_bytes() == ps
        await finished(device)
    finally:
        await gw.stop()


async def test_the_cli_renews_its_lease_and_hears_the_end(tmp_path: Path) -> None:
    from gb28181gw.cli.media import LEASE, _Consumer

    from .test_stream_states import I, new_stream

    gw = await start_with_device(tmp_path)
    try:
        assert gw.admin is not None
        service = gw.streams
        st = new_stream(service)
        service._apply(st, I.ESTABLISHED)
        lease = service.loop.time() + 5
        st.consumers["c1"] = Consumer("c1", "udp", "127.0.0.1", 9, ssrc=1, label="cli", expires_at=lease)
        consumer = _Consumer(f"127.0.0.1:{gw.admin.port}", {"id": st.id, "consumer": {"id": "c1"}})
        consumer._next_renew = 0  # due
        assert await asyncio.to_thread(consumer.check, 1e9) is None  # polled: still ours
        assert (st.consumers["c1"].expires_at or 0) > service.loop.time() + LEASE - 5  # renewed
        service._close(st, "device offline: keepalive missed 3 times", "device-offline")
        heard = await asyncio.to_thread(consumer.check, 0.0, now_please=True)
        assert heard == f"stream {st.id} ended: device offline: keepalive missed 3 times"
    finally:
        await gw.stop()


async def test_even_a_killed_play_leaves_an_mp4_that_plays(tmp_path: Path) -> None:
    ps = gb_ps(250, 10)
    gw, device = await gateway_with_device(tmp_path, scenario(answer()))
    try:
        out = tmp_path / "out.mp4"
        proc = await cli(gw, "play", CH, "-o", str(out))
        st = await consumed(gw)
        sender = asyncio.create_task(send_live(ps, st, fps=50))
        await wait_for(lambda: out.exists() and out.stat().st_size > 50_000, 10)
        proc.kill()  # no trailer, no goodbye: the fragments written so far still play
        await proc.wait()
        sender.cancel()
        assert mp4_frames(out) >= 20
        assert st.consumers  # not released: its lease (30 s) will drop it; here the shutdown does
    finally:
        await gw.stop()
    await finished(device)
