"""Shutdown is clean: a normal stop logs no error, even when SIGTERM reaches the relay workers
too (a service manager or `timeout` signals the whole process group); a worker that really
dies while the gateway runs is still an error, and its streams are closed (BYE)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from gb28181gw.errors import StreamError
from tests.helpers import media_port
from tests.media import UdpConsumer, wait_for

from .conftest import start_gateway
from .test_devices import finished
from .test_streams import CH, answer, gateway_with_device, scenario


async def serve(tmp_path: Path) -> asyncio.subprocess.Process:
    """``gb28181gw serve`` with one relay worker, in a process group of its own, once started."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gb28181gw", "serve", "--listen", "127.0.0.1", "--port", "0", "--admin-port", "0",
        "--set", f"store.path={tmp_path / 'gw.db'}", "--set", "media.workers=1",
        "--set", f"media.port_min={media_port(400)}", "--set", f"media.port_max={media_port(499)}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = b""
    while b"gateway started" not in seen:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, seen.decode(errors="replace")
        seen += line
    return proc


@pytest.mark.parametrize("whom", ["process-group", "gateway-only"])
async def test_sigterm_stops_the_gateway_without_an_error(tmp_path: Path, whom: str) -> None:
    proc = await serve(tmp_path)
    if whom == "process-group":
        os.killpg(proc.pid, signal.SIGTERM)  # the relay worker gets it as well
    else:
        proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "gateway stopped" in text
    assert " ERROR " not in text and "is gone" not in text, text


async def test_stopping_a_gateway_with_a_worker_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    gw = await start_gateway(
        **{"media.workers": "1", "media.port_min": str(media_port(500)), "media.port_max": str(media_port(599))}
    )
    worker = gw.streams.relays[0].pid
    await gw.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)  # and the worker is gone


@pytest.mark.sipp
async def test_a_worker_killed_while_running_is_an_error_and_its_streams_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw, device = await gateway_with_device(tmp_path, scenario(answer()), **{"media.workers": "1"})
    udp = await UdpConsumer.start()
    try:
        st, _ = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        os.kill(st.relay.pid, signal.SIGKILL)
        await wait_for(lambda: not gw.streams.streams, 10)
        assert gw.streams.closes[("worker-lost",)] == 1
        await finished(device)  # the device got its BYE
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == ["relay worker 0 is gone: 0 bytes read on a total of 4 expected bytes"]
        with pytest.raises(StreamError) as info:  # no relay left to carry a new stream
            await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        assert info.value.status == 502
    finally:
        udp.close()
        await gw.stop()
