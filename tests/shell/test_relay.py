"""The forwarder on its own over real sockets: a slow TCP consumer never stalls the others."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

from gb28181gw.relay.forwarder import Forwarder, RelaySettings
from gb28181gw.relay.records import RelayEvent
from gb28181gw.sdp import StreamMode
from tests.media import UdpConsumer, gb_ps, packetize, wait_for

from .test_devices import free_udp_port


async def test_slow_tcp_consumer_gets_a_bounded_queue_and_drops() -> None:
    events: list[RelayEvent] = []
    settings = RelaySettings(host="127.0.0.1", tcp_queue_limit=65536, udp_receive_buffer=1 << 20, stats_interval=1.0)
    forwarder = Forwarder(settings, on_event=events.append)
    port = free_udp_port() & ~1
    forwarder.open("s1", port, StreamMode.UDP, 1234)
    # a consumer that accepts the connection and never reads, with a small receive buffer
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    fast = await UdpConsumer.start()
    try:
        await forwarder.add_tcp_consumer("s1", "slow", "127.0.0.1", listener.getsockname()[1], 1)
        forwarder.add_consumer("s1", "fast", "udp", "127.0.0.1", fast.port, 2)
        packets = packetize(gb_ps(200, 25), 1234, mtu=1400) * 150  # ~15 MB: more than the kernel buffers
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i, p in enumerate(packets):
            sender.sendto(p, ("127.0.0.1", port))
            if i % 16 == 15:
                await asyncio.sleep(0.001)
        sender.close()
        await wait_for(lambda: len(fast.got.packets) == len(packets))
        figures = {k: dataclasses.asdict(v) for k, v in forwarder.snapshot().streams["s1"].consumers.items()}
        assert figures["fast"]["packets"] == len(packets) and figures["fast"]["dropped"] == 0
        assert figures["slow"]["dropped"] > 0  # beyond its 64 KiB queue
        assert figures["slow"]["packets"] + figures["slow"]["dropped"] == len(packets)
        assert forwarder.snapshot().totals.slow_consumer == figures["slow"]["dropped"]
    finally:
        fast.close()
        forwarder.close_all()
        listener.close()
    assert not forwarder.streams
