"""Unfinished TCP messages cannot pin memory or connections (issue 10, defect 5)."""

from __future__ import annotations

import asyncio

from gb28181gw.app import Gateway
from tests.hostile.conftest import start_gateway
from tests.hostile.test_persistence import register

HEAD = b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5061;branch=z9hG4bK"


async def _connect(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gw.stack.port)


async def test_a_message_trickled_slower_than_tcp_message_timeout_is_cut_off() -> None:
    gw = await start_gateway(**{"sip.tcp_message_timeout": "1"})
    try:
        reader, writer = await _connect(gw)
        writer.write(HEAD)  # and then a byte now and then, for ever
        loop = asyncio.get_running_loop()
        started = loop.time()
        closed = False
        while loop.time() - started < 4:
            try:
                writer.write(b"x")
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            try:
                if await asyncio.wait_for(reader.read(65536), 0.2) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed and loop.time() - started < 3
        assert gw.stack.tcp_connections == 0 and gw.stack._tcp is not None and gw.stack._tcp.partial_total == 0
        assert gw.metrics.sip.dropped["tcp-message-timeout"] == 1
        writer.close()
        # an honest peer finishing its message in time is served on the same listener
        reader, writer = await _connect(gw)
        writer.write(register("34020000001320000001", 1).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"SIP/2.0 200")
        writer.close()
    finally:
        await gw.stop()


async def test_past_the_partial_budget_the_oldest_unfinished_messages_go_first() -> None:
    gw = await start_gateway(**{"sip.tcp_partial_budget": "1048576"})  # 1 MiB
    try:
        peers = []
        for n in range(12):  # 12 x 100 KiB of headers that never end
            reader, writer = await _connect(gw)
            writer.write(HEAD + b"%d\r\nX-Pad: " % n + b"a" * 100_000)
            await writer.drain()
            peers.append((reader, writer))
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        tcp = gw.stack._tcp
        assert tcp is not None and tcp.partial_total <= 1_048_576
        # the first ones (oldest) were closed; the newest are still held
        firsts = [await _eof(r) for r, _ in peers[:2]]
        assert all(firsts)
        assert not await _eof(peers[-1][0])
        assert gw.metrics.sip.dropped["tcp-partial-budget"] >= 2
        for _, w in peers:
            w.close()
    finally:
        await gw.stop()


async def _eof(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(65536), 0.3) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True
