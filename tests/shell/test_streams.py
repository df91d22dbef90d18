"""Live streams end to end over real sockets: SIPp plays the device's SIP side, the test sends
real H.264 in PS over RTP as the device's media, and consumers decode what the gateway relays.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest

from gb28181gw.admin.streams import stream_json
from gb28181gw.app import Gateway
from gb28181gw.gb.model import Channel
from gb28181gw.services.streams import StreamError
from tests.helpers import media_port
from tests.media import (
    TcpConsumer,
    UdpConsumer,
    decode_h264,
    gb_ps,
    packetize,
    send_tcp,
    send_udp,
    wait_for,
)

from .conftest import sipp_scenario, start_gateway
from .test_devices import finished, free_udp_port, play_device, register, register_expires_zero

pytestmark = pytest.mark.sipp

NVR = "34020000001180000001"
CH = "34020000001310000001"
FRAMES, GOP = 50, 10
DEVICE_SSRC = 200000042  # the device answers with an SSRC of its own (M1)

#: What SIPp checks in the gateway's INVITE (GB/T 28181 §9.2.2: Subject, the offer's m= line and y=).
INVITE_CHECKS = """<ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="gwfrom"/>
      <ereg regexp="Subject: {ch}:0[0-9]{{9}},34020000002000000001:0" search_in="msg" check_it="true" assign_to="subject"/>
      <ereg regexp="m=video [0-9]+ {proto} 96 98 97" search_in="body" check_it="true" assign_to="m"/>
      <ereg regexp="y=(0[0-9]{{9}})" search_in="body" check_it="true" assign_to="all,y"/>
      {offer_check}"""
WE_BYE = sipp_scenario("parts/bye_from_gateway.xml")
DEVICE_BYE = sipp_scenario("parts/bye_from_device.xml", ch=CH, pause=1500)


def answer(*, proto: str = "RTP/AVP", port: int = 15060, setup: str = "", ssrc: str = "[$y]", extra: str = "") -> str:
    lines = ["v=0", f"o={CH} 0 0 IN IP4 [local_ip]", "s=Play", "c=IN IP4 [local_ip]", "t=0 0"]
    lines += [f"m=video {port} {proto} 96", "a=sendonly", "a=rtpmap:96 PS/90000"]
    if setup:
        lines += [f"a=setup:{setup}", "a=connection:new"]
    if extra:
        lines.append(extra)
    if ssrc:
        lines.append(f"y={ssrc}")
    lines.append("f=")
    return "\r\n".join(lines) + "\r\n"


def scenario(answer_sdp: str, *, proto: str = "RTP/AVP", offer_setup: str = "", tail: str = WE_BYE) -> bytes:
    check = (
        f'<ereg regexp="a=setup:{offer_setup}" search_in="body" check_it="true" assign_to="setup"/>'
        if offer_setup
        else ""
    )
    checks = INVITE_CHECKS.format(ch=CH, proto=proto, offer_check=check)
    refs = ("setup," if offer_setup else "") + "gwfrom,subject,m,all,y"
    return sipp_scenario("invite_uas.xml", checks=checks, ch=CH, answer=answer_sdp, then=tail, refs=refs).encode()


@pytest.fixture(scope="module")
def ps() -> bytes:
    return gb_ps(FRAMES, GOP)


async def gateway_with_device(
    tmp_path: Path, scenario_bytes: bytes, *, calls: int = 1, **overrides: str
) -> tuple[Gateway, asyncio.subprocess.Process]:
    settings = {"media.port_min": str(media_port(0)), "media.port_max": str(media_port(99)), "media.linger": "0"}
    settings.update(overrides)
    gw = await start_gateway(**settings)
    port = free_udp_port()
    await register(gw, tmp_path, port)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)  # as its catalog would have it
    proc = await play_device(scenario_bytes, port, tmp_path, "device", calls=calls)
    return gw, proc


async def consumers() -> tuple[UdpConsumer, TcpConsumer]:
    return await UdpConsumer.start(), await TcpConsumer.start()


def check_received(got_payload: bytes, ps: bytes) -> None:
    assert got_payload == ps  # relayed byte for byte
    assert decode_h264(got_payload) == FRAMES  # and every frame decodes


@pytest.mark.parametrize("workers", ["0", "1"], ids=["in-process", "worker-process"])
async def test_udp_device_two_consumers_one_invite(tmp_path: Path, ps: bytes, workers: str) -> None:
    # the device answers with its own SSRC; one consumer over UDP, one over TCP; garbage,
    # strangers' packets and packets with another SSRC arrive too and are not relayed
    gw, device = await gateway_with_device(
        tmp_path, scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")), **{"media.workers": workers}
    )
    udp, tcp = await consumers()
    try:
        st, a = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        st2, b = await gw.streams.play(CH, transport="tcp", host="127.0.0.1", port=tcp.port)
        assert st is st2 and len(gw.streams.streams) == 1  # one stream, one INVITE (SIPp takes only one)
        assert st.session.ssrc == f"{DEVICE_SSRC:010d}" and a.ssrc != b.ssrc
        packets = packetize(ps, DEVICE_SSRC, mtu=400)
        device_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await send_udp(packets[:5], st.port, sock=device_media)
        stranger.sendto(packets[5], ("127.0.0.1", st.port))  # right SSRC, wrong source
        device_media.sendto(packets[5][:8] + struct.pack("!I", 7) + packets[5][12:], ("127.0.0.1", st.port))
        device_media.sendto(b"\x00" * 40, ("127.0.0.1", st.port))  # not RTP
        await send_udp(packets[5:], st.port, sock=device_media)
        device_media.close()
        stranger.close()
        await wait_for(lambda: len(udp.got.packets) == len(packets) and len(tcp.got.packets) == len(packets))
        assert udp.got.ssrcs == {a.ssrc} and tcp.got.ssrcs == {b.ssrc}
        check_received(udp.got.payload(), ps)
        check_received(tcp.got.payload(), ps)
        await wait_for(lambda: stream_json(gw.streams, st)["relay"].get("packets") == len(packets), 3)
        figures = stream_json(gw.streams, st)["relay"]
        assert (figures["wrong_source"], figures["wrong_ssrc"], figures["malformed"]) == (1, 1, 1)
        assert figures["lost"] == 0 and figures["ps"]["video_codec"] == "H264"
        assert figures["ps"]["key_frames"] == FRAMES // GOP and figures["ps"]["key_frame_interval"] == GOP
        assert gw.streams.setup_seconds.count == 1
        await gw.streams.remove_consumer(st.id, a.id)
        assert gw.streams.streams  # still has a consumer
        await gw.streams.remove_consumer(st.id, b.id)  # the last one: linger 0 → BYE
        await finished(device)  # SIPp saw one INVITE, our ACK and our BYE
        await wait_for(lambda: gw.streams.pools[0].in_use == 0 and gw.streams.ssrcs.active == 0)
    finally:
        udp.close()
        tcp.close()
        await gw.stop()


async def test_tcp_passive_device_connects_to_us(tmp_path: Path, ps: bytes) -> None:
    sdp = answer(proto="TCP/RTP/AVP", setup="active")
    gw, device = await gateway_with_device(
        tmp_path, scenario(sdp, proto="TCP/RTP/AVP", offer_setup="passive"), **{"media.stream_mode": "tcp-passive"}
    )
    udp, tcp = await consumers()
    try:
        st, a = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        _, b = await gw.streams.play(CH, transport="tcp", host="127.0.0.1", port=tcp.port)
        ssrc = int(st.session.ssrc)  # the device echoed ours
        packets = packetize(ps, ssrc, mtu=1400)
        reader, writer = await asyncio.open_connection("127.0.0.1", st.port)
        # a second connection to the same port is not the device's: refused
        _, intruder = await asyncio.open_connection("127.0.0.1", st.port)
        # half the stream in the '$'-interleaved framing some devices use
        half = len(packets) // 2
        for p in packets[:half]:
            writer.write(b"$\x00" + struct.pack("!H", len(p)) + p)
        await send_tcp(packets[half:], writer)
        await wait_for(lambda: len(udp.got.packets) == len(packets) and len(tcp.got.packets) == len(packets))
        check_received(udp.got.payload(), ps)
        check_received(tcp.got.payload(), ps)
        assert udp.got.ssrcs == {a.ssrc} and tcp.got.ssrcs == {b.ssrc}
        assert stream_json(gw.streams, st)["relay"]["refused_connections"] == 1
        writer.close()
        intruder.close()
        # the device closing its media connection ends the stream: BYE to SIPp
        await finished(device)
        assert not gw.streams.streams
        assert gw.streams.closes[("media-lost",)] == 1
    finally:
        udp.close()
        tcp.close()
        await gw.stop()


async def test_tcp_active_we_connect_to_the_device(tmp_path: Path, ps: bytes) -> None:
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    media_server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    media_port = media_server.sockets[0].getsockname()[1]
    sdp = answer(proto="TCP/RTP/AVP", setup="passive", port=media_port)
    gw, device = await gateway_with_device(
        tmp_path, scenario(sdp, proto="TCP/RTP/AVP", offer_setup="active"), **{"media.stream_mode": "tcp-active"}
    )
    udp, tcp = await consumers()
    try:
        st, a = await gw.streams.play(CH, transport="tcp", host="127.0.0.1", port=tcp.port)
        _, b = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        writer = await asyncio.wait_for(accepted.get(), 5)  # the gateway connected after the ACK
        await send_tcp(packetize(ps, int(st.session.ssrc)), writer)
        n = len(packetize(ps, 1))
        await wait_for(lambda: len(udp.got.packets) == n and len(tcp.got.packets) == n)
        check_received(udp.got.payload(), ps)
        check_received(tcp.got.payload(), ps)
        assert tcp.got.ssrcs == {a.ssrc} and udp.got.ssrcs == {b.ssrc}
        await gw.streams.stop_stream(st.id)  # operator's stop: BYE, sockets closed
        await finished(device)
        await asyncio.wait_for(tcp.closed.wait(), 3)  # the TCP consumer's connection was closed
        writer.close()
    finally:
        media_server.close()
        udp.close()
        tcp.close()
        await gw.stop()


async def test_device_bye_tears_everything_down(tmp_path: Path) -> None:
    gw, device = await gateway_with_device(tmp_path, scenario(answer(), tail=DEVICE_BYE))
    udp = await UdpConsumer.start()
    try:
        st, _ = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        await finished(device)  # it sent BYE and got our 200
        assert not gw.streams.streams and gw.streams.closes[("device-bye",)] == 1
        await wait_for(lambda: gw.streams.pools[0].in_use == 0 and gw.streams.ssrcs.active == 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("0.0.0.0", st.port))  # the media port was closed: it binds again
    finally:
        udp.close()
        await gw.stop()


async def test_media_timeout_sends_bye(tmp_path: Path) -> None:
    gw, device = await gateway_with_device(tmp_path, scenario(answer()), **{"media.rtp_timeout": "1"})
    udp = await UdpConsumer.start()
    try:
        await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        await finished(device)  # no RTP at all for 1 s: BYE
        assert gw.streams.closes[("media-timeout",)] == 1
    finally:
        udp.close()
        await gw.stop()


async def test_device_unregister_releases_its_streams(tmp_path: Path) -> None:
    gw, device = await gateway_with_device(tmp_path, scenario(answer()))
    udp = await UdpConsumer.start()
    try:
        await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        await register_expires_zero(gw, tmp_path, free_udp_port())
        await finished(device)  # BYE reached the device
        assert not gw.streams.streams and gw.streams.closes[("device-offline",)] == 1
    finally:
        udp.close()
        await gw.stop()


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        ("", "200 with no SDP"),
        (answer(port=0), r"refused the video stream \(port 0\)"),
        (answer().replace("PS/90000", "HIKVISION/90000"), "not a GB/T 28181 stream"),
    ],
    ids=["no-sdp", "port-0", "proprietary"],
)
async def test_unusable_answers_are_acked_then_ended(tmp_path: Path, sdp: str, message: str) -> None:
    gw, device = await gateway_with_device(tmp_path, scenario(sdp))
    try:
        with pytest.raises(StreamError, match=message) as info:
            await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=9)
        assert info.value.status == 488
        await finished(device)  # ACK, then BYE
        await wait_for(lambda: not gw.streams.streams and gw.streams.pools[0].in_use == 0)
    finally:
        await gw.stop()


async def test_answer_without_y_keeps_our_ssrc(tmp_path: Path, ps: bytes) -> None:
    gw, device = await gateway_with_device(tmp_path, scenario(answer(ssrc="")))
    udp = await UdpConsumer.start()
    try:
        st, _ = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        assert st.session.ssrc == st.id
        packets = packetize(ps, int(st.id))
        await send_udp(packets, st.port)
        await wait_for(lambda: len(udp.got.packets) == len(packets))
        check_received(udp.got.payload(), ps)
    finally:
        udp.close()
        await gw.stop()
        await finished(device)


async def test_unreachable_tcp_active_port(tmp_path: Path) -> None:
    closed = free_udp_port()  # nothing listens on TCP there
    sdp = answer(proto="TCP/RTP/AVP", setup="passive", port=closed)
    gw, device = await gateway_with_device(
        tmp_path,
        scenario(sdp, proto="TCP/RTP/AVP", offer_setup="active"),
        **{"media.stream_mode": "tcp-active", "media.tcp_connect_interval": "0.1"},
    )
    try:
        with pytest.raises(StreamError, match=r"cannot connect to the device's media port .*\(3 attempts\)"):
            await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=9)
        await finished(device)
        assert gw.streams.results[("relay-failed",)] == 1
    finally:
        await gw.stop()


async def test_port_range_exhausted_is_a_503_and_the_device_sees_no_invite(tmp_path: Path) -> None:
    gw, device = await gateway_with_device(tmp_path, scenario(answer()), **{"media.port_max": str(media_port(1))})
    gw.devices.channels.setdefault(NVR, {})["34020000001310000002"] = Channel("34020000001310000002", NVR)
    udp = await UdpConsumer.start()
    try:
        await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        with pytest.raises(StreamError, match=f"no free media port in {media_port(0)}-{media_port(1)}") as info:
            await gw.streams.play("34020000001310000002", transport="udp", host="127.0.0.1", port=udp.port)
        assert info.value.status == 503
        with pytest.raises(StreamError, match="no device or channel") as unknown:
            await gw.streams.play("34020000001310000777", transport="udp", host="127.0.0.1", port=udp.port)
        assert unknown.value.status == 404
    finally:
        udp.close()
        await gw.stop()  # BYE for the open stream
        await finished(device)


class FastDevice(asyncio.DatagramProtocol):
    """A device's SIP side for the leak test, quick enough for 10,000 calls: answers INVITE
    (200 with SDP, 486, or 200 without SDP by the Call-ID's turn) and BYE."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.invites = 0
        self.byes = 0
        self.answered: dict[tuple[str, str], bytes] = {}  # a retransmitted request gets the same answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        from gb28181gw.sdp import SessionDescription
        from gb28181gw.sip.message import Request, make_response, parse_message

        msg = parse_message(data)
        if not isinstance(msg, Request) or self.transport is None:
            return
        key = (msg.call_id, msg.method)
        if key in self.answered:
            self.transport.sendto(self.answered[key], addr)
            return
        if msg.method == "INVITE":
            self.invites += 1
            turn = self.invites % 4
            if turn == 2:
                resp = make_response(msg, 486, to_tag="busy")
            else:
                resp = make_response(msg, 200, to_tag=f"d{self.invites}")
                resp.headers.add("Contact", f"<sip:{CH}@127.0.0.1:{self.transport.get_extra_info('sockname')[1]}>")
                if turn != 3:
                    offer = SessionDescription.parse(msg.body)
                    resp.headers.add("Content-Type", "application/sdp")
                    resp.body = answer(ssrc=offer.ssrc or "").replace("[local_ip]", "127.0.0.1").encode()
        elif msg.method == "BYE":
            self.byes += 1
            resp = make_response(msg, 200)
        else:
            return
        self.answered[key] = resp.serialize()
        self.transport.sendto(self.answered[key], addr)


async def test_ten_thousand_streams_leak_nothing(tmp_path: Path) -> None:
    import os

    gw = await start_gateway(
        **{
            "media.port_min": str(media_port(100)),
            "media.port_max": str(media_port(199)),
            "media.linger": "0",
            "media.port_quarantine": "0",
            "media.ssrc_quarantine": "0",
        }
    )
    port = free_udp_port()
    await register(gw, tmp_path, port)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
    loop = asyncio.get_running_loop()
    transport, device = await loop.create_datagram_endpoint(FastDevice, local_addr=("127.0.0.1", port))
    fds = len(os.listdir("/proc/self/fd"))
    tasks = len(asyncio.all_tasks())
    streams = gw.streams
    forwarder = streams.relays[0].forwarder  # type: ignore[attr-defined]
    try:
        for i in range(10_000):
            try:
                st, consumer = await streams.play(CH, transport="udp", host="127.0.0.1", port=9)
            except StreamError as exc:
                assert exc.status in (486, 488), exc
                continue
            if i % 2:
                await streams.remove_consumer(st.id, consumer.id)
            else:
                await streams.stop_stream(st.id)
            if i % 500 == 0:
                await streams._tasks.wait(5)
        await streams._tasks.wait(5)
        await wait_for(lambda: device.byes == device.invites // 4 * 3 and not streams._tasks, 10)
        assert device.invites == 10_000, (device.invites, device.byes)
        assert not streams.streams and not streams.by_channel and not forwarder.streams
        assert streams.pools[0].in_use == 0 and streams.ssrcs.active == 0
        assert len(os.listdir("/proc/self/fd")) == fds  # every socket closed
        assert len(asyncio.all_tasks()) == tasks
    finally:
        transport.close()
        await gw.stop()
