"""Media only from the device's host (issue 10, defect 3), over real sockets.

The device sends from 127.0.0.1 and a stranger from 127.0.0.2 (Linux answers on all of 127/8):
the stranger's packets are dropped and counted as ``wrong_source`` whatever SSRC they carry,
its TCP connections are closed at once, and the viewer gets every frame of the device.
"""

from __future__ import annotations

import asyncio
import socket

from gb28181gw.relay.forwarder import SSRC_LATCH_PACKETS, Forwarder, RelaySettings
from gb28181gw.relay.records import MediaConnected, RelayEvent
from gb28181gw.sdp import StreamMode
from tests.media import UdpConsumer, decode_h264, frame, gb_ps, packetize, send_udp, wait_for

from .test_devices import free_even_udp_port

DEVICE, STRANGER = "127.0.0.1", "127.0.0.2"
SSRC = 200000123
FRAMES = 20


def _forwarder(events: list[RelayEvent] | None = None) -> Forwarder:
    settings = RelaySettings(
        host="127.0.0.1", tcp_queue_limit=1 << 20, udp_receive_buffer=1 << 20, stats_interval=1.0, gop_cache=1 << 20
    )
    return Forwarder(settings, on_event=(events.append if events is not None else None))


def _socket(host: str, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    s = socket.socket(socket.AF_INET, kind)
    s.bind((host, 0))
    return s


async def test_a_stranger_with_the_right_ssrc_first_is_dropped_and_counted() -> None:
    forwarder = _forwarder()
    port = free_even_udp_port()
    forwarder.open("s1", port, StreamMode.UDP, SSRC, source=DEVICE)
    viewer = await UdpConsumer.start()
    stranger, device = _socket(STRANGER), _socket(DEVICE)
    try:
        forwarder.add_consumer("s1", "v", "udp", "127.0.0.1", viewer.port, 1)
        junk = packetize(gb_ps(5, 5), SSRC, seq=50000)  # the negotiated SSRC, sprayed first
        await send_udp(junk, port, sock=stranger)
        real = packetize(gb_ps(FRAMES, 10), SSRC)
        await send_udp(real, port, sock=device)
        await send_udp(junk, port, sock=stranger)  # and again once the stream runs
        await wait_for(lambda: len(viewer.got.packets) >= len(real))
        await asyncio.sleep(0.1)
        figures = forwarder.snapshot().streams["s1"]
        assert len(viewer.got.packets) == len(real)
        assert figures.wrong_source == 2 * len(junk) == forwarder.totals().wrong_source
        assert figures.source == device.getsockname()
        assert decode_h264(viewer.got.payload()) == FRAMES
    finally:
        stranger.close()
        device.close()
        viewer.close()
        forwarder.close_all()


async def test_a_stranger_with_a_new_ssrc_cannot_make_the_stream_follow_it() -> None:
    forwarder = _forwarder()
    port = free_even_udp_port()
    forwarder.open("s1", port, StreamMode.UDP, SSRC, source=DEVICE)
    viewer = await UdpConsumer.start()
    stranger, device = _socket(STRANGER), _socket(DEVICE)
    try:
        forwarder.add_consumer("s1", "v", "udp", "127.0.0.1", viewer.port, 1)
        # more than the latch threshold of one foreign SSRC, before the device's first packet
        junk = packetize(gb_ps(80, 5), 0x7777, seq=50000)
        assert len(junk) > SSRC_LATCH_PACKETS
        await send_udp(junk, port, sock=stranger)
        real = packetize(gb_ps(FRAMES, 10), SSRC)
        await send_udp(real, port, sock=device)
        await wait_for(lambda: len(viewer.got.packets) >= len(real))
        await send_udp(junk, port, sock=stranger)
        await asyncio.sleep(0.1)
        figures = forwarder.snapshot().streams["s1"]
        assert not figures.ssrc_latched and figures.ssrc == SSRC
        assert figures.wrong_source == 2 * len(junk) and figures.wrong_ssrc == 0
        assert len(viewer.got.packets) == len(real)
        assert decode_h264(viewer.got.payload()) == FRAMES
    finally:
        stranger.close()
        device.close()
        viewer.close()
        forwarder.close_all()


async def test_the_device_itself_may_still_send_its_own_ssrc() -> None:
    # PROTOCOL.md §11.5 M1 stays: a device that sends another SSRC than negotiated is followed
    forwarder = _forwarder()
    port = free_even_udp_port()
    forwarder.open("s1", port, StreamMode.UDP, SSRC, source=DEVICE)
    viewer = await UdpConsumer.start()
    stranger, device = _socket(STRANGER), _socket(DEVICE)
    try:
        forwarder.add_consumer("s1", "v", "udp", "127.0.0.1", viewer.port, 1)
        await send_udp(packetize(gb_ps(30, 5), SSRC, seq=50000), port, sock=stranger)
        real = packetize(gb_ps(60, 10), 0x1234)
        await send_udp(real, port, sock=device)
        await wait_for(lambda: len(viewer.got.packets) >= len(real) - SSRC_LATCH_PACKETS + 1)
        figures = forwarder.snapshot().streams["s1"]
        assert figures.ssrc_latched and figures.ssrc == 0x1234
        assert figures.source == device.getsockname()
    finally:
        stranger.close()
        device.close()
        viewer.close()
        forwarder.close_all()


async def test_the_answers_address_replaces_the_sip_host() -> None:
    # opened with the device's SIP host, then its answer names another: only that one counts
    forwarder = _forwarder()
    port = free_even_udp_port()
    forwarder.open("s1", port, StreamMode.UDP, SSRC, source=STRANGER)
    viewer = await UdpConsumer.start()
    sip_host, media_host = _socket(STRANGER), _socket(DEVICE)
    try:
        forwarder.add_consumer("s1", "v", "udp", "127.0.0.1", viewer.port, 1)
        early = packetize(gb_ps(2, 2), SSRC, seq=40000)
        await send_udp(early, port, sock=sip_host)
        await wait_for(lambda: len(viewer.got.packets) == len(early))
        forwarder.expect("s1", SSRC, source=DEVICE)
        real = packetize(gb_ps(FRAMES, 10), SSRC)
        await send_udp(real, port, sock=media_host)
        await send_udp(early, port, sock=sip_host)
        await wait_for(lambda: len(viewer.got.packets) >= len(early) + len(real))
        await asyncio.sleep(0.1)
        figures = forwarder.snapshot().streams["s1"]
        assert figures.source == media_host.getsockname()
        assert figures.wrong_source == len(early)
        assert len(viewer.got.packets) == len(early) + len(real)
    finally:
        sip_host.close()
        media_host.close()
        viewer.close()
        forwarder.close_all()


async def test_tcp_passive_refuses_a_strangers_connection() -> None:
    events: list[RelayEvent] = []
    forwarder = _forwarder(events)
    port = free_even_udp_port()
    forwarder.open("s1", port, StreamMode.TCP_PASSIVE, SSRC, source=DEVICE)
    viewer = await UdpConsumer.start()
    loop = asyncio.get_running_loop()
    stranger, device = _socket(STRANGER, socket.SOCK_STREAM), _socket(DEVICE, socket.SOCK_STREAM)
    stranger.setblocking(False)
    device.setblocking(False)
    try:
        forwarder.add_consumer("s1", "v", "udp", "127.0.0.1", viewer.port, 1)
        await loop.sock_connect(stranger, ("127.0.0.1", port))
        # closed at once: the stranger reads EOF (or a reset) without sending anything
        try:
            eof = await asyncio.wait_for(loop.sock_recv(stranger, 10), 2.0)
        except ConnectionResetError:
            eof = b""
        assert eof == b""
        assert forwarder.snapshot().streams["s1"].refused_connections == 1
        assert not any(isinstance(e, MediaConnected) for e in events)
        await loop.sock_connect(device, ("127.0.0.1", port))
        await wait_for(lambda: any(isinstance(e, MediaConnected) for e in events))
        real = packetize(gb_ps(FRAMES, 10), SSRC)
        await loop.sock_sendall(device, b"".join(frame(p) for p in real))
        await wait_for(lambda: len(viewer.got.packets) >= len(real))
        figures = forwarder.snapshot().streams["s1"]
        assert figures.source == device.getsockname() and figures.connected
        assert decode_h264(viewer.got.payload()) == FRAMES
    finally:
        stranger.close()
        device.close()
        viewer.close()
        forwarder.close_all()
