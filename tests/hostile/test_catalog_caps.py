"""No device can make the gateway hold without bound (issue 10, defect 6)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request

from gb28181gw.app import Gateway
from tests.hostile.conftest import start_gateway
from tests.hostile.test_hijack import DEVICE, Peer
from tests.hostile.test_persistence import register
from tests.shell.test_registrar import _message


def _answer_ok(request: bytes) -> bytes:
    lines = []
    for line in request.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "from", "call-id", "cseq"):
            lines.append(line)
        elif name == "to":
            lines.append(line + ";tag=d1")
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def _part(sn: int, first: int, count: int, sum_num: int) -> bytes:
    items = "".join(
        f"<Item><DeviceID>340200000013100{n:05d}</DeviceID><Name>ch{n}</Name><Status>ON</Status></Item>"
        for n in range(first, first + count)
    )
    return (
        f'<?xml version="1.0"?><Response><CmdType>Catalog</CmdType><SN>{sn}</SN><DeviceID>{DEVICE}</DeviceID>'
        f'<SumNum>{sum_num}</SumNum><DeviceList Num="{count}">{items}</DeviceList></Response>'
    ).encode()


def play_flooding_device(camera: Peer, port: int, *, parts: int, per_part: int, pause: float) -> None:
    """Answer the gateway's Catalog query with ``parts`` messages of fresh items, ``pause`` apart."""
    while b"<CmdType>Catalog</CmdType>" not in (query := camera.sock.recv(65535)):
        pass
    camera.sock.sendto(_answer_ok(query), ("127.0.0.1", port))
    sn = int(re.search(rb"<SN>(\d+)</SN>", query).group(1))  # type: ignore[union-attr]
    for p in range(parts):
        message = _message(DEVICE, _part(sn, p * per_part, per_part, 10**6), f"z9hG4bKcat{p}")
        camera.sock.sendto(message, ("127.0.0.1", port))
        while not camera.sock.recv(65535).startswith(b"SIP/2.0 "):
            pass
        time.sleep(pause)


async def _registered_camera(gw: Gateway) -> Peer:
    camera = Peer("127.0.0.1")
    assert (await asyncio.to_thread(camera.exchange, gw.stack.port, register(DEVICE, 1))).startswith(b"SIP/2.0 200")
    return camera


async def test_a_catalog_past_max_channels_is_cut_there() -> None:
    gw = await start_gateway(**{"devices.max_channels": "50"})
    camera = await _registered_camera(gw)
    try:
        device = asyncio.create_task(
            asyncio.to_thread(play_flooding_device, camera, gw.stack.port, parts=20, per_part=10, pause=0.0)
        )
        result = await gw.devices.catalog(DEVICE)
        await device
        assert len(result.items) == 50 and result.refused == 150 and not result.complete
        assert len(gw.devices.channels[DEVICE]) == 50
        assert len(await gw.store.load_channels(DEVICE)) == 50
    finally:
        camera.close()
        await gw.stop()


async def test_parts_that_keep_coming_cannot_extend_the_answer_past_its_total_timeout() -> None:
    gw = await start_gateway(**{"devices.catalog_total_timeout": "1.5", "devices.catalog_idle_timeout": "1"})
    camera = await _registered_camera(gw)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        device = asyncio.create_task(
            asyncio.to_thread(play_flooding_device, camera, gw.stack.port, parts=12, per_part=1, pause=0.25)
        )
        result = await gw.devices.catalog(DEVICE)
        assert loop.time() - started < 2.5 and not result.complete  # every part would have extended it by 1 s
        await device
    finally:
        camera.close()
        await gw.stop()


async def test_a_large_listing_is_streamed_while_the_gateway_keeps_serving(gateway: Gateway) -> None:
    from gb28181gw.gb.model import Channel

    gateway.devices.channels["34020000001320000009"] = {
        f"340200000013100{n:05d}": Channel(f"340200000013100{n:05d}", "34020000001320000009", f"ch{n}", "ON")
        for n in range(100_000)
    }
    assert gateway.admin is not None
    url = f"http://127.0.0.1:{gateway.admin.port}/api/v1/channels"
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def ticker() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.005)
            gaps.append(loop.time() - last)
            last = loop.time()

    tick = asyncio.create_task(ticker())
    try:
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read())
    finally:
        tick.cancel()
    data = json.loads(body)
    assert len(data["channels"]) == 100_000 and data["channels"][0]["channel_id"] == "34020000001310000000"
    # the loop was never held for the whole listing at once: 100,000 rows are written 1,000 at a time
    assert gaps and max(gaps) < 0.25, max(gaps)  # one response in one go held it about 0.45 s here
