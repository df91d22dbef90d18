"""A stranger spraying the media port range cannot win a live stream (issue 10, defect 3).

The attack as it was run: RTP at every port of the range from another address, before and
while a real device's stream is set up. Ports and SSRCs were handed out in sequence and the
relay took the first source with the right SSRC, so the stranger won and the viewer got 0
frames. Here the stranger (127.0.0.2) even knows the stream's SSRC once it exists (as if it
had sniffed the SDP) and also sends a foreign SSRC more often than the relay's M1 threshold;
the device (SIPp on 127.0.0.1, media from 127.0.0.1) must still reach the viewer frame for frame.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest

from gb28181gw.admin.streams import stream_json
from gb28181gw.app import Gateway
from gb28181gw.relay.forwarder import SSRC_LATCH_PACKETS
from tests.helpers import media_port
from tests.media import UdpConsumer, decode_h264, gb_ps, packetize, send_tcp, send_udp, wait_for
from tests.shell.test_devices import finished
from tests.shell.test_streams import CH, answer, gateway_with_device, scenario

pytestmark = pytest.mark.sipp

FIRST, LAST = media_port(1000), media_port(1019)  # 20 ports: 10 streams' worth
STRANGER = "127.0.0.2"
FRAMES, GOP = 30, 10
ROUNDS = 300  # at most ~3 s of spraying: the loop ends by itself


async def spray(gw: Gateway, stop: asyncio.Event, sent: list[int]) -> None:
    """RTP at every port of the range from the stranger's address, a few packets per port and SSRC per round."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((STRANGER, 0))
    sock.setblocking(False)
    junk = packetize(gb_ps(2, 2), 0, seq=60000)[:3]
    guesses = [200000001, 200000002, 0x5EED]  # what sequential allocation handed out first, and a foreign SSRC
    try:
        for _ in range(ROUNDS):
            if stop.is_set():
                return
            st = gw.streams.by_channel.get(CH)
            ssrcs = guesses + ([int(st.id)] if st is not None else [])
            for port in range(FIRST, LAST + 1):
                for ssrc in ssrcs:
                    for p in junk:
                        try:
                            sock.sendto(p[:8] + struct.pack("!I", ssrc) + p[12:], ("127.0.0.1", port))
                            sent[0] += 1
                        except (BlockingIOError, ConnectionRefusedError):
                            pass  # nobody on that port (ICMP), or a full buffer: go on
            await asyncio.sleep(0.01)
    finally:
        sock.close()


async def connect_all(stop: asyncio.Event, refused: list[int]) -> None:
    """TCP connections to every port of the range from the stranger's address, until stopped."""
    loop = asyncio.get_running_loop()
    held: list[socket.socket] = []
    try:
        for _ in range(ROUNDS):
            if stop.is_set():
                return
            for port in range(FIRST, LAST + 1, 2):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((STRANGER, 0))
                s.setblocking(False)
                try:
                    await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", port)), 0.5)
                except (OSError, TimeoutError):
                    s.close()
                    continue
                held.append(s)
                refused[0] += 1
            await asyncio.sleep(0.02)
    finally:
        for s in held:
            s.close()


@pytest.mark.parametrize("workers", ["0", "1"], ids=["in-process", "worker-process"])
async def test_a_sprayed_port_range_does_not_win_a_udp_stream(tmp_path: Path, workers: str) -> None:
    ps = gb_ps(FRAMES, GOP)
    gw, device = await gateway_with_device(
        tmp_path,
        scenario(answer()),
        **{"media.workers": workers, "media.port_min": str(FIRST), "media.port_max": str(LAST)},
    )
    viewer = await UdpConsumer.start()
    stop, sent = asyncio.Event(), [0]
    sprayer = asyncio.create_task(spray(gw, stop, sent))
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    try:
        await asyncio.sleep(0.1)  # the range is being sprayed before the stream exists
        st, consumer = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=viewer.port)
        await asyncio.sleep(0.2)  # and while it waits for the device's first packet
        assert not sprayer.done()
        packets = packetize(ps, int(st.session.ssrc))
        assert len(packets) < SSRC_LATCH_PACKETS * 10
        await send_udp(packets, st.port, sock=media)
        await wait_for(lambda: len(viewer.got.packets) >= len(packets))
        stop.set()
        await sprayer
        await asyncio.sleep(0.2)
        assert len(viewer.got.packets) == len(packets)
        assert viewer.got.ssrcs == {consumer.ssrc}
        assert viewer.got.payload() == ps  # nothing of the stranger's
        assert decode_h264(viewer.got.payload()) == FRAMES  # every frame of the real device
        await wait_for(lambda: stream_json(gw.streams, st)["relay"].get("packets") == len(packets), 3)
        figures = stream_json(gw.streams, st)["relay"]
        assert figures["source"] == list(media.getsockname())
        assert figures["wrong_source"] > SSRC_LATCH_PACKETS and not figures["ssrc_latched"]
        assert sent[0] > figures["wrong_source"]  # the rest hit the range's other ports
        await gw.streams.stop_stream(st.id)
        await finished(device)
    finally:
        stop.set()
        await sprayer
        media.close()
        viewer.close()
        await gw.stop()


async def test_a_stranger_connecting_to_every_port_does_not_win_a_tcp_passive_stream(tmp_path: Path) -> None:
    ps = gb_ps(FRAMES, GOP)
    sdp = answer(proto="TCP/RTP/AVP", setup="active")
    gw, device = await gateway_with_device(
        tmp_path,
        scenario(sdp, proto="TCP/RTP/AVP", offer_setup="passive"),
        **{"media.stream_mode": "tcp-passive", "media.port_min": str(FIRST), "media.port_max": str(LAST)},
    )
    viewer = await UdpConsumer.start()
    stop, sent, tried = asyncio.Event(), [0], [0]
    attackers = [asyncio.create_task(spray(gw, stop, sent)), asyncio.create_task(connect_all(stop, tried))]
    try:
        st, consumer = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=viewer.port)
        await wait_for(lambda: stream_json(gw.streams, st)["relay"].get("refused_connections", 0) > 0, 3)
        packets = packetize(ps, int(st.session.ssrc))
        _, writer = await asyncio.open_connection("127.0.0.1", st.port, local_addr=("127.0.0.1", 0))
        await send_tcp(packets, writer)
        await wait_for(lambda: len(viewer.got.packets) >= len(packets))
        stop.set()
        await asyncio.gather(*attackers)
        assert len(viewer.got.packets) == len(packets)
        assert viewer.got.payload() == ps
        assert decode_h264(viewer.got.payload()) == FRAMES
        await wait_for(lambda: stream_json(gw.streams, st)["relay"].get("packets") == len(packets), 3)
        figures = stream_json(gw.streams, st)["relay"]
        assert figures["refused_connections"] > 0 and figures["wrong_source"] > 0
        assert figures["source"] == list(writer.get_extra_info("sockname"))
        writer.close()
        await finished(device)  # the device closing its media connection ends the stream: BYE
    finally:
        stop.set()
        await asyncio.gather(*attackers)
        viewer.close()
        await gw.stop()
