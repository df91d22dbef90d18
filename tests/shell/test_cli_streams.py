"""The operator's stream commands as real processes against a gateway with a SIPp device:
``play -o out.ps`` / ``-o out.mp4``, ``snapshot``, ``streams`` and ``stream stop``."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import av
import pytest

from gb28181gw.app import Gateway
from tests.media import decode_h264, gb_ps, packetize, send_udp, wait_for

from .test_devices import finished
from .test_streams import CH, FRAMES, answer, gateway_with_device, scenario

pytestmark = pytest.mark.sipp


async def cli(gw: Gateway, *args: str) -> asyncio.subprocess.Process:
    assert gw.admin is not None
    return await cli_at(gw.admin.port, *args)


async def cli_at(admin: int, *args: str) -> asyncio.subprocess.Process:
    """``python -m gb28181gw <args>`` against the admin API at 127.0.0.1:``admin``, its output piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gb28181gw", *args, "--admin", f"http://127.0.0.1:{admin}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip


async def output(proc: asyncio.subprocess.Process) -> str:
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


async def stream_media_when_consumed(gw: Gateway, ps: bytes) -> None:
    await wait_for(lambda: any(st.consumers for st in gw.streams.streams.values()), 15)
    st = next(iter(gw.streams.streams.values()))
    await send_udp(packetize(ps, int(st.session.ssrc)), st.port)


@pytest.mark.parametrize("suffix", ["ps", "mp4"])
async def test_play_records_the_stream(tmp_path: Path, suffix: str) -> None:
    ps = gb_ps(FRAMES, 10)
    gw, device = await gateway_with_device(tmp_path, scenario(answer()))
    try:
        out = tmp_path / f"out.{suffix}"
        proc = await cli(gw, "play", CH, "--seconds", "2.5", "-o", str(out))
        await stream_media_when_consumed(gw, ps)
        listing = await output(await cli(gw, "streams"))
        header, *rows = listing.splitlines()  # piped: plain tab-separated rows (issue 11)
        assert header.startswith("stream\tchannel\t") and len(rows) == 1
        assert f"\t{CH}\t" in rows[0] and "udp" in rows[0]
        text = await output(proc)
        assert "0 lost" in text
        if suffix == "ps":
            assert out.read_bytes() == ps and decode_h264(out.read_bytes()) == FRAMES
        else:
            with av.open(str(out)) as container:
                assert container.streams.video[0].codec_context.name == "h264"
                assert sum(1 for _ in container.decode(video=0)) == FRAMES
        await finished(device)  # the CLI left, linger 0: BYE
    finally:
        await gw.stop()


async def test_snapshot_over_tcp_then_stream_stop(tmp_path: Path) -> None:
    ps = gb_ps(FRAMES, 10)
    gw, device = await gateway_with_device(tmp_path, scenario(answer()), **{"media.linger": "30"})
    try:
        jpg = tmp_path / "frame.jpg"
        proc = await cli(gw, "snapshot", CH, "-o", str(jpg), "--transport", "tcp")
        await stream_media_when_consumed(gw, ps)
        assert "key frame (H264)" in await output(proc)
        with av.open(str(jpg)) as container:
            picture = next(container.decode(video=0))
            assert (picture.width, picture.height) == (320, 240)
        st = next(iter(gw.streams.streams.values()))
        assert not st.consumers  # the CLI left; the stream lingers
        assert f"stopped {st.id}" in await output(await cli(gw, "stream", "stop", st.id))
        await finished(device)
        missing = await cli(gw, "stream", "stop", st.id)
        await missing.communicate()
        assert missing.returncode == 1
    finally:
        await gw.stop()
