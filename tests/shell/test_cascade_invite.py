"""A superior's live INVITE over real sockets (issue 12 item 5, PROTOCOL.md §9.5).

SIPp plays the superior (``superior_invite_uac.xml``) and the device (``invite_uas.xml``),
registered on the gateway; the test sends the device's media (real H.264 in PS over RTP)
and receives what the gateway sends the superior at the address of the superior's SDP,
decoding it with ``av``. Failure paths: each refusal and what it answers, nothing left over.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.gb.model import Channel
from gb28181gw.gb.superior_invite import ServedState
from gb28181gw.media.rtp import RtpPacket
from gb28181gw.media.tcp_framing import Rfc4571Reader
from gb28181gw.sip.message import Request, Response, make_response, parse_message
from tests.helpers import media_port
from tests.media import TcpConsumer, UdpConsumer, decode_h264, gb_ps, packetize, send_udp, wait_for

from .conftest import SippResult, run_sipp, sipp_scenario, start_gateway_from
from .test_devices import finished, free_udp_port, play_device, register
from .test_streams import DEVICE_BYE, DEVICE_SSRC, answer, scenario

pytestmark = pytest.mark.sipp

SUPERIOR = "34010000002000000001"
OURS = "34020000002000000001"
NVR = "34020000001180000001"
CH = "34020000001310000001"
SUPERIOR_SSRC = "0100000077"
FRAMES, GOP = 50, 10


@pytest.fixture(scope="module")
def ps() -> bytes:
    return gb_ps(FRAMES, GOP)


_RUNNING: list[asyncio.Task[SippResult]] = []


def in_background(superior_run: Coroutine[object, object, SippResult]) -> asyncio.Task[SippResult]:
    """Run a SIPp superior while the test goes on; it is waited for even when the test fails."""
    task = asyncio.ensure_future(superior_run)
    _RUNNING.append(task)
    return task


@pytest.fixture(autouse=True)
async def _superiors_finish() -> AsyncIterator[None]:
    yield
    while _RUNNING:
        await asyncio.wait({_RUNNING.pop()}, timeout=30)  # SIPp ends by its own -timeout


async def cascade_gateway(tmp_path: Path, settings: dict[str, str] | None = None, **upstream: object) -> Gateway:
    """A gateway with one superior, ``district``, whose registrar nobody runs: its INVITEs are what matter.
    ``settings``: more overrides (``playback.control_timeout`` …)."""
    table = {
        "name": "district",
        "id": SUPERIOR,
        "host": "127.0.0.1",
        "port": free_udp_port(),
        "password": "upper-pass",
        "retry_interval": 600.0,
        **upstream,
    }
    path = tmp_path / "gw.toml"
    path.write_text("\n".join(["[[upstream]]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]) + "\n")
    media = {
        "media.port_min": str(media_port(200)),
        "media.port_max": str(media_port(299)),
        "media.linger": "0",
        "media.invite_timeout": "5",
    }
    return await start_gateway_from(path, media | (settings or {}))


async def with_device(gw: Gateway, tmp_path: Path, device_scenario: bytes | None) -> asyncio.subprocess.Process | None:
    """Register the NVR with channel CH; with a scenario, SIPp then answers the gateway's INVITE as it says."""
    port = free_udp_port()
    await register(gw, tmp_path, port)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)  # as its catalog would have it
    if device_scenario is None:
        return None
    return await play_device(device_scenario, port, tmp_path, "device")


def offer(
    port: int,
    *,
    proto: str = "RTP/AVP",
    setup: str = "",
    ssrc: str = SUPERIOR_SSRC,
    name: str = "Play",
    ps: bool = True,
) -> str:
    lines = ["v=0", f"o={SUPERIOR} 0 0 IN IP4 127.0.0.1", f"s={name}", "c=IN IP4 127.0.0.1", "t=0 0"]
    lines += [f"m=video {port} {proto} {'96' if ps else '98'}", "a=recvonly"]
    lines.append("a=rtpmap:96 PS/90000" if ps else "a=rtpmap:98 H264/90000")
    if setup:
        lines += [f"a=setup:{setup}", "a=connection:new"]
    if ssrc:
        lines.append(f"y={ssrc}")
    lines.append("f=")
    return "\r\n".join(lines) + "\r\n"


def content(sdp: str | None) -> str:
    if sdp is None:
        return "Content-Length: 0\r\n\r\n"
    return f"Content-Type: application/sdp\r\nContent-Length: [len]\r\n\r\n{sdp}"


def ok(*, proto: str = "RTP/AVP", ssrc: str = SUPERIOR_SSRC, setup: str = "", ch: str = CH) -> str:
    checks = f'<ereg regexp="a=setup:{setup}" search_in="body" check_it="true" assign_to="setup"/>' if setup else ""
    return sipp_scenario("parts/superior_ok.xml", ch=ch, superior=SUPERIOR, proto=proto, ssrc=ssrc, checks=checks)


OK_REFS = "m,dir,map,o,c,y"


def superior_bye(pause: int = 3000) -> str:
    return sipp_scenario("parts/superior_bye.xml", ch=CH, superior=SUPERIOR, pause=pause)


def superior_gets_bye(timeout: int = 10000) -> str:
    return sipp_scenario("parts/superior_gets_bye.xml", timeout=timeout)


def refused(status: int, warning: str, *, ch: str = CH) -> str:
    return sipp_scenario("parts/superior_refused.xml", ch=ch, superior=SUPERIOR, status=status, warning=warning)


async def superior(
    gw: Gateway,
    tmp_path: Path,
    body: str,
    expect: str,
    *,
    then: str = "",
    refs: str = "",
    ch: str = CH,
    name: str = "superior",
) -> SippResult:
    text = sipp_scenario(
        "superior_invite_uac.xml",
        ch=ch,
        superior=SUPERIOR,
        content=body,
        expect=expect,
        then=then,
        refs=reference(refs),
    )
    path = tmp_path / f"{name}.xml"
    path.write_text(text)
    return await run_sipp(str(path), gw.stack.port, tmp_path, timeout=20)


def reference(refs: str) -> str:
    return f'  <Reference variables="{refs}"/>\n' if refs else ""


def sending(gw: Gateway, n: int = 1) -> bool:
    return sum(s.state is ServedState.SENDING for s in gw.cascade_media.dialogs.values()) == n


async def nothing_left(gw: Gateway) -> None:
    await wait_for(
        lambda: (
            not gw.streams.streams
            and gw.streams.pools[0].in_use == 0
            and gw.streams.ssrcs.active == 0
            and not gw.cascade_media.dialogs
            and not gw.cascade_media.pending
            and not gw.cascade_media.by_consumer
            and gw.stack.router.dialog_count == 0
        ),
        5,
    )


def upstream_metrics(gw: Gateway) -> str:
    return "\n".join(
        line for line in gw.metrics.render().decode().splitlines() if line.startswith("gb28181gw_upstream_")
    )


# --- media reaches the superior ------------------------------------------------------------


async def test_udp_superior_gets_decodable_ps_with_its_ssrc(tmp_path: Path, ps: bytes) -> None:
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")))
    assert device is not None
    receiver = await UdpConsumer.start()
    try:
        sup = in_background(
            superior(gw, tmp_path, content(offer(receiver.port)), ok(), then=superior_bye(), refs=OK_REFS)
        )
        await wait_for(lambda: sending(gw), 10)
        assert 'gb28181gw_upstream_streams{upstream="district"} 1.0' in upstream_metrics(gw)
        (st,) = gw.streams.streams.values()
        packets = packetize(ps, DEVICE_SSRC, mtu=1000)
        await send_udp(packets, st.port)
        await wait_for(lambda: len(receiver.got.packets) == len(packets))
        assert receiver.got.ssrcs == {int(SUPERIOR_SSRC)}  # its y= echoed (ssrc = "echo")
        assert receiver.got.payload() == ps and decode_h264(receiver.got.payload()) == FRAMES
        result = await sup
        assert result.ok, result.stdout + result.messages
        # its BYE: the consumer goes, linger 0 closes the stream, the device gets our BYE
        await finished(device)
        await nothing_left(gw)
        metrics = upstream_metrics(gw)
        assert 'gb28181gw_upstream_streams{upstream="district"} 0.0' in metrics
        assert 'gb28181gw_upstream_requests_total{request="INVITE",result="ok",upstream="district"} 1.0' in metrics
    finally:
        receiver.close()
        await gw.stop()


async def test_tcp_we_connect_to_a_passive_superior(tmp_path: Path, ps: bytes) -> None:
    # its a=setup:passive: it listens at c=:m=, we connect (answer a=setup:active); own SSRC
    gw = await cascade_gateway(tmp_path, ssrc="own")
    device = await with_device(gw, tmp_path, scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")))
    assert device is not None
    receiver = await TcpConsumer.start()
    try:
        sdp = offer(receiver.port, proto="TCP/RTP/AVP", setup="passive")
        expect = ok(proto="TCP/RTP/AVP", ssrc="0[0-9]{9}", setup="active")
        sup = in_background(superior(gw, tmp_path, content(sdp), expect, then=superior_bye(), refs=OK_REFS + ",setup"))
        await wait_for(lambda: sending(gw), 10)
        (served,) = gw.cascade_media.dialogs.values()
        assert served.ssrc != int(SUPERIOR_SSRC) and f"{served.ssrc:010d}".startswith("020000")  # ours: §7.4.1
        (st,) = gw.streams.streams.values()
        packets = packetize(ps, DEVICE_SSRC, mtu=1000)
        await asyncio.wait_for(receiver.connected.wait(), 5)
        await send_udp(packets, st.port)
        await wait_for(lambda: len(receiver.got.packets) == len(packets))
        assert receiver.got.ssrcs == {served.ssrc}
        assert receiver.got.payload() == ps and decode_h264(receiver.got.payload()) == FRAMES
        result = await sup
        assert result.ok, result.stdout + result.messages
        await finished(device)
        await nothing_left(gw)
        await asyncio.wait_for(receiver.closed.wait(), 5)  # our connection to it is closed too
    finally:
        receiver.close()
        await gw.stop()


async def test_tcp_superior_connects_to_us(tmp_path: Path, ps: bytes) -> None:
    # its a=setup:active: it connects to the port of our answer's m= (our a=setup:passive)
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")))
    assert device is not None
    got: list[bytes] = []
    try:
        sdp = offer(9, proto="TCP/RTP/AVP", setup="active")
        expect = ok(proto="TCP/RTP/AVP", setup="passive")
        sup = in_background(superior(gw, tmp_path, content(sdp), expect, then=superior_bye(), refs=OK_REFS + ",setup"))
        await wait_for(lambda: sending(gw), 10)
        (served,) = gw.cascade_media.dialogs.values()
        (st,) = gw.streams.streams.values()
        listening = st.consumers[served.consumer_id].local_port
        assert f"m=video {listening} TCP/RTP/AVP 96".encode() in served.answer
        reader, writer = await asyncio.open_connection("127.0.0.1", listening)
        frames = Rfc4571Reader()

        async def read() -> None:
            while data := await reader.read(65536):
                got.extend(frames.feed(data))

        reading = asyncio.create_task(read())
        packets = packetize(ps, DEVICE_SSRC, mtu=1000)
        relay = gw.streams.relays[0]
        await wait_for(lambda: served.consumer_id in relay.snapshot().streams[st.id].consumers)  # accepted, started
        await send_udp(packets, st.port)
        await wait_for(lambda: len(got) == len(packets))
        payload = b"".join(RtpPacket.parse(p).payload for p in got)
        assert {RtpPacket.parse(p).ssrc for p in got} == {int(SUPERIOR_SSRC)}
        assert payload == ps and decode_h264(payload) == FRAMES
        result = await sup
        assert result.ok, result.stdout + result.messages
        await finished(device)
        await nothing_left(gw)
        await asyncio.wait_for(reading, 5)  # we closed our end
        writer.close()
    finally:
        await gw.stop()


# --- either side ends it -------------------------------------------------------------------


async def test_device_bye_reaches_the_superior(tmp_path: Path) -> None:
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer(), tail=DEVICE_BYE))
    assert device is not None
    receiver = await UdpConsumer.start()
    try:
        result = await superior(
            gw, tmp_path, content(offer(receiver.port)), ok(), then=superior_gets_bye(), refs=OK_REFS
        )
        assert result.ok, result.stdout + result.messages
        await finished(device)
        await nothing_left(gw)
    finally:
        receiver.close()
        await gw.stop()


async def test_superior_lost_loses_its_streams(tmp_path: Path) -> None:
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer()))
    assert device is not None
    receiver = await UdpConsumer.start()
    try:
        sup = in_background(
            superior(gw, tmp_path, content(offer(receiver.port)), ok(), then=superior_gets_bye(), refs=OK_REFS)
        )
        await wait_for(lambda: sending(gw), 10)
        for listener in gw.upstreams._lost:  # what UpstreamService does when keepalives go unanswered
            listener("district", "keepalives unanswered")
        result = await sup
        assert result.ok, result.stdout + result.messages  # it got our BYE
        await finished(device)  # and the device, its stream no longer watched
        await nothing_left(gw)
    finally:
        receiver.close()
        await gw.stop()


# --- refusals ------------------------------------------------------------------------------

UNKNOWN = "34020000001310000099"


@pytest.mark.parametrize(
    ("case", "body", "status", "warning", "ch"),
    [
        ("unknown-channel", offer(30000), 404, "no channel", UNKNOWN),
        ("no-sdp", None, 488, "without an SDP offer", CH),
        ("port-0", offer(0), 488, "port 0", CH),
        ("no-ps", offer(30000, ps=False), 488, "no PS", CH),
        ("playback-live-t", offer(30000, name="Playback"), 400, "not after the start", CH),  # t=0 0: no span
        ("bad-sdp", offer(30000).replace("m=video 30000", "m=video notaport"), 400, "SDP cannot be used", CH),
    ],
)
async def test_refused(tmp_path: Path, case: str, body: str | None, status: int, warning: str, ch: str) -> None:
    gw = await cascade_gateway(tmp_path)
    await with_device(gw, tmp_path, None)
    try:
        result = await superior(gw, tmp_path, content(body), refused(status, warning, ch=ch), refs="warning", ch=ch)
        assert result.ok, result.stdout + result.messages
        assert not gw.streams.streams  # no device was INVITEd
        assert f'result="{status}",upstream="district"' in upstream_metrics(gw)
        await nothing_left(gw)
    finally:
        await gw.stop()


async def test_unshared_channel_is_404(tmp_path: Path) -> None:
    gw = await cascade_gateway(tmp_path, share=["34020000001180000002"])  # another NVR only
    await with_device(gw, tmp_path, None)
    try:
        result = await superior(gw, tmp_path, content(offer(30000)), refused(404, "no channel"), refs="warning")
        assert result.ok, result.stdout + result.messages
        assert not gw.streams.streams
    finally:
        await gw.stop()


async def test_unregistered_device_is_480(tmp_path: Path) -> None:
    gw = await cascade_gateway(tmp_path)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)  # known from the store, never registered
    try:
        result = await superior(gw, tmp_path, content(offer(30000)), refused(480, "not registered"), refs="warning")
        assert result.ok, result.stdout + result.messages
    finally:
        await gw.stop()


async def test_device_busy_is_passed_up(tmp_path: Path) -> None:
    gw = await cascade_gateway(tmp_path)
    busy = sipp_scenario("invite_refused_uas.xml", status=486, reason="Busy Here").encode()
    device = await with_device(gw, tmp_path, busy)
    assert device is not None
    try:
        result = await superior(gw, tmp_path, content(offer(30000)), refused(486, "486"), refs="warning")
        assert result.ok, result.stdout + result.messages
        await finished(device)
        await nothing_left(gw)
    finally:
        await gw.stop()


async def test_unreachable_tcp_target_leaves_nothing(tmp_path: Path) -> None:
    # we connect on its ACK (nothing is sent before): the connection refused ends the dialog with BYE
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer()))
    assert device is not None
    closed = free_udp_port()  # nobody listens on TCP there either
    try:
        sdp = offer(closed, proto="TCP/RTP/AVP", setup="passive")
        expect = ok(proto="TCP/RTP/AVP", setup="active")
        result = await superior(gw, tmp_path, content(sdp), expect, then=superior_gets_bye(), refs=OK_REFS + ",setup")
        assert result.ok, result.stdout + result.messages
        await finished(device)  # the stream it opened for nobody is closed again: BYE
        await nothing_left(gw)
    finally:
        await gw.stop()


async def test_stranger_is_403(tmp_path: Path) -> None:
    gw = await cascade_gateway(tmp_path)
    await with_device(gw, tmp_path, None)
    try:
        text = sipp_scenario(
            "superior_invite_uac.xml",
            ch=CH,
            superior="34090000002000000001",  # not our superior: devices never INVITE us either
            content=content(offer(30000)),
            expect=sipp_scenario(
                "parts/superior_refused.xml", ch=CH, superior="34090000002000000001", status=403, warning="superior"
            ),
            then="",
            refs=reference("warning"),
        )
        path = tmp_path / "stranger.xml"
        path.write_text(text)
        result = await run_sipp(str(path), gw.stack.port, tmp_path, timeout=10)
        assert result.ok, result.stdout + result.messages
        assert not gw.streams.streams
    finally:
        await gw.stop()


# --- the superior changes its mind; a second viewer; re-INVITE; shutdown -------------------


async def cancelled_while_the_device_is_late(gw: Gateway, tmp_path: Path, device_answer: str, body: str) -> None:
    """The superior CANCELs its INVITE (``body``) while the device has not answered; the device
    answers (``device_answer``) 1.5 s later: 200 to the CANCEL, 487 to the INVITE, and once the
    device answered, nothing is left (the consumer it brings released, the device session ended
    with BYE)."""
    late = sipp_scenario("invite_late_uas.xml", ch=CH, pause=1500, answer=device_answer)
    device = await with_device(gw, tmp_path, late.encode())
    assert device is not None
    cancel = sipp_scenario("parts/superior_cancel.xml", ch=CH, superior=SUPERIOR, pause=300)
    result = await superior(gw, tmp_path, body, cancel)
    assert result.ok, result.stdout + result.messages  # 200 to its CANCEL, 487 to its INVITE
    await finished(device)
    await nothing_left(gw)
    assert 'result="cancelled",upstream="district"' in upstream_metrics(gw)


async def test_cancel_before_our_200_releases_the_late_consumer(tmp_path: Path) -> None:
    gw = await cascade_gateway(tmp_path)
    try:
        await cancelled_while_the_device_is_late(
            gw, tmp_path, answer(ssrc=f"{DEVICE_SSRC:010d}"), content(offer(30000))
        )
    finally:
        await gw.stop()


async def test_superior_bye_ends_only_its_consumer(tmp_path: Path, ps: bytes) -> None:
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")))
    assert device is not None
    receiver, local = await UdpConsumer.start(), await UdpConsumer.start()
    try:
        st, viewer = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=local.port)
        sup = in_background(
            superior(gw, tmp_path, content(offer(receiver.port)), ok(), then=superior_bye(1500), refs=OK_REFS)
        )
        await wait_for(lambda: sending(gw), 10)
        assert len(gw.streams.streams) == 1  # joined: the device saw one INVITE (SIPp takes only one)
        packets = packetize(ps, DEVICE_SSRC, mtu=1000)
        half = len(packets) // 2
        device_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # one source: the relay latches it
        await send_udp(packets[:half], st.port, sock=device_media)
        await wait_for(lambda: len(receiver.got.packets) == half and len(local.got.packets) == half)
        result = await sup
        assert result.ok, result.stdout + result.messages
        await wait_for(lambda: not gw.cascade_media.dialogs)
        assert set(st.consumers) == {viewer.id}  # the local viewer stays
        await send_udp(packets[half:], st.port, sock=device_media)
        device_media.close()
        await wait_for(lambda: len(local.got.packets) == len(packets))
        assert len(receiver.got.packets) == half  # nothing more to the superior
        assert local.got.payload() == ps and decode_h264(local.got.payload()) == FRAMES
        await gw.streams.remove_consumer(st.id, viewer.id)
        await finished(device)
        await nothing_left(gw)
    finally:
        receiver.close()
        local.close()
        await gw.stop()


async def test_no_ack_means_bye(tmp_path: Path) -> None:
    gw = await cascade_gateway(tmp_path)  # T1 0.1 s: 64*T1 is 6.4 s
    device = await with_device(gw, tmp_path, scenario(answer()))
    assert device is not None
    try:
        no_ack = sipp_scenario("parts/superior_no_ack.xml", timeout=12000)
        result = await superior(gw, tmp_path, content(offer(30000)), no_ack)
        assert result.ok, result.stdout + result.messages
        assert result.messages.count("SIP/2.0 200 OK") >= 3  # our 200 was retransmitted meanwhile
        await finished(device)
        await nothing_left(gw)
    finally:
        await gw.stop()


async def test_reinvite_gets_the_same_answer_and_shutdown_byes(tmp_path: Path) -> None:
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer()))
    assert device is not None
    try:
        again = sipp_scenario(
            "parts/superior_reinvite.xml",
            ch=CH,
            superior=SUPERIOR,
            pause=300,
            content=content(offer(30000)),
            ssrc=SUPERIOR_SSRC,
        )
        sup = in_background(
            superior(gw, tmp_path, content(offer(30000)), ok(), then=again + superior_gets_bye(), refs=OK_REFS + ",y2")
        )
        await wait_for(lambda: sending(gw), 10)
        (served,) = gw.cascade_media.dialogs.values()
        assert served.dialog is not None
        await wait_for(lambda: served.dialog is not None and served.dialog.remote_cseq == 21, 5)
    finally:
        await gw.stop()  # BYE to the superior, then to the device
    result = await sup
    assert result.ok, result.stdout + result.messages
    await finished(device)


class RawSuperior(asyncio.DatagramProtocol):
    """The superior as a bare UDP socket: sends what the test says, keeps what comes back."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.got: list[Request | Response] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        self.got.append(msg)
        if isinstance(msg, Request) and msg.method == "BYE" and self.transport is not None:
            self.transport.sendto(bytes(make_response(msg, 200)), addr)

    def send(self, gw: Gateway, method: str, call_id: str, *, to_tag: str = "", body: str = "") -> None:
        assert self.transport is not None
        port = self.transport.get_extra_info("sockname")[1]
        text = (
            f"{method} sip:{CH}@127.0.0.1:{gw.stack.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{method}{call_id}\r\n"
            f"From: <sip:{SUPERIOR}@3401000000>;tag=up-{call_id}\r\n"
            f"To: <sip:{CH}@3402000000>{';tag=' + to_tag if to_tag else ''}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 20 {method}\r\nContact: <sip:{SUPERIOR}@127.0.0.1:{port}>\r\n"
            f"Subject: {CH}:0100000077,{SUPERIOR}:0\r\nMax-Forwards: 70\r\n"
            f"{'Content-Type: application/sdp' + chr(13) + chr(10) if body else ''}"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )
        self.transport.sendto(text.encode(), ("127.0.0.1", gw.stack.port))

    async def answered(self, gw: Gateway, call_id: str, body: str) -> str:
        """INVITE with offer ``body``, its 200 awaited and ACKed; our To tag."""
        self.send(gw, "INVITE", call_id, body=body)
        await wait_for(lambda: self.final(call_id) is not None, 10)
        ok_ = self.final(call_id)
        assert ok_ is not None and ok_.status == 200, ok_
        tag = ok_.to.tag or ""
        self.send(gw, "ACK", call_id, to_tag=tag)
        return tag

    def final(self, call_id: str) -> Response | None:
        return next((m for m in self.got if isinstance(m, Response) and m.status >= 200 and m.call_id == call_id), None)

    def byes(self) -> list[str]:
        return [m.call_id for m in self.got if isinstance(m, Request) and m.method == "BYE"]


async def test_same_subject_again_replaces_the_old_sender(tmp_path: Path) -> None:
    # Annex K c: a new INVITE for the stream it is already sent (same Subject sender part) replaces it
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer()))
    assert device is not None
    loop = asyncio.get_running_loop()
    transport, sup = await loop.create_datagram_endpoint(RawSuperior, local_addr=("127.0.0.1", 0))
    try:
        for call_id in ("first", "second"):
            sup.send(gw, "INVITE", call_id, body=offer(30000))
            await wait_for(lambda call_id=call_id: sup.final(call_id) is not None, 10)  # type: ignore[misc]
            ok_ = sup.final(call_id)
            assert ok_ is not None and ok_.status == 200
            sup.send(gw, "ACK", call_id, to_tag=ok_.to.tag or "")
        await wait_for(lambda: sup.byes() == ["first"])
        (served,) = gw.cascade_media.dialogs.values()
        assert served.request.call_id == "second"
        assert len(gw.streams.streams) == 1 and len(next(iter(gw.streams.streams.values())).consumers) == 1
    finally:
        await gw.stop()  # the second dialog ends with BYE too, and the device's stream
        transport.close()
    assert sup.byes() == ["first", "second"]
    await finished(device)
