"""Review of the superior's live INVITE (issue 12 item 5): paths a WVP/Hikvision/Dahua superior takes.

Each test is a defect found in review; see tests/shell/test_cascade_invite.py for the helpers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.services import streams as streams_module
from gb28181gw.sip.message import Request, Response
from tests.media import wait_for

from .conftest import run_sipp, sipp_scenario
from .test_cascade_invite import (
    CH,
    SUPERIOR,
    RawSuperior,
    cascade_gateway,
    content,
    nothing_left,
    offer,
    refused,
    sending,
    superior,
    upstream_metrics,
    with_device,
)
from .test_devices import finished
from .test_relay_join import PassiveClient
from .test_streams import DEVICE_SSRC, answer, scenario

pytestmark = pytest.mark.sipp


@pytest.mark.parametrize(("status", "reason"), [(480, "Temporarily Unavailable"), (408, "Request Timeout")])
async def test_device_refusal_is_passed_up_as_it_is(tmp_path: Path, status: int, reason: str) -> None:
    # an NVR whose camera is offline answers 480 (Hikvision, Dahua); the superior must hear 480, not 502
    gw = await cascade_gateway(tmp_path)
    device = await with_device(
        gw, tmp_path, sipp_scenario("invite_refused_uas.xml", status=status, reason=reason).encode()
    )
    assert device is not None
    try:
        result = await superior(gw, tmp_path, content(offer(30000)), refused(status, str(status)), refs="warning")
        assert result.ok, result.stdout + result.messages
        await finished(device)
        await nothing_left(gw)
    finally:
        await gw.stop()


def in_dialog(
    sup: RawSuperior,
    gw_port: int,
    method: str,
    call_id: str,
    cseq: int,
    to_tag: str,
    body: str,
    *,
    subject: str = "",
    content_type: str = "application/sdp",
) -> None:
    """A request with its own branch and CSeq (RawSuperior.send reuses the INVITE's), a To tag if given."""
    assert sup.transport is not None
    port = sup.transport.get_extra_info("sockname")[1]
    text = (
        f"{method} sip:{CH}@127.0.0.1:{gw_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{method}{call_id}{cseq}\r\n"
        f"From: <sip:{SUPERIOR}@3401000000>;tag=up-{call_id}\r\n"
        f"To: <sip:{CH}@3402000000>{';tag=' + to_tag if to_tag else ''}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{SUPERIOR}@127.0.0.1:{port}>\r\n"
        f"{'Subject: ' + subject + chr(13) + chr(10) if subject else ''}"
        f"Max-Forwards: 70\r\n{'Content-Type: ' + content_type + chr(13) + chr(10) if body else ''}"
        f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    )
    sup.transport.sendto(text.encode(), ("127.0.0.1", gw_port))


async def test_reinvite_moving_the_media_is_not_answered_as_if_it_were_followed(tmp_path: Path) -> None:
    # a re-INVITE whose offer names a new port: a 200 with the unchanged answer tells the superior
    # media now goes to its new port while it still goes to the old one (RFC 3264 §8); refusing it
    # (488, RFC 3261 §14.2) leaves the session as it was and says so
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer()))
    assert device is not None
    loop = asyncio.get_running_loop()
    transport, sup = await loop.create_datagram_endpoint(RawSuperior, local_addr=("127.0.0.1", 0))
    try:
        sup.send(gw, "INVITE", "move", body=offer(30000))
        await wait_for(lambda: sup.final("move") is not None, 10)
        ok_ = sup.final("move")
        assert ok_ is not None and ok_.status == 200
        tag = ok_.to.tag or ""
        sup.send(gw, "ACK", "move", to_tag=tag)
        await wait_for(lambda: sending(gw), 5)
        in_dialog(sup, gw.stack.port, "INVITE", "move", 21, tag, offer(30002))

        def reinvite_answer() -> Response | None:
            return next(
                (m for m in sup.got if isinstance(m, Response) and m.cseq.number == 21 and m.status >= 200), None
            )

        await wait_for(lambda: reinvite_answer() is not None, 5)
        reply = reinvite_answer()
        assert reply is not None and reply.status == 488, reply
        (served,) = gw.cascade_media.dialogs.values()
        (st,) = gw.streams.streams.values()
        assert st.consumers[served.consumer_id].port == 30000  # still sent where it was
        assert sending(gw)
    finally:
        await gw.stop()
        transport.close()
    await finished(device)


async def answered_invite(
    tmp_path: Path, call_id: str, sdp: str
) -> tuple[Gateway, asyncio.subprocess.Process, RawSuperior, asyncio.DatagramTransport, Response]:
    """A gateway whose device answers, and a superior whose INVITE with ``sdp`` got our 200 (not ACKed yet)."""
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer()))
    assert device is not None
    loop = asyncio.get_running_loop()
    transport, sup = await loop.create_datagram_endpoint(RawSuperior, local_addr=("127.0.0.1", 0))
    sup.send(gw, "INVITE", call_id, body=sdp)
    await wait_for(lambda: sup.final(call_id) is not None, 10)
    ok_ = sup.final(call_id)
    assert ok_ is not None and ok_.status == 200
    return gw, device, sup, transport, ok_


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.2"], ids=["from-its-sip-address", "from-c="])
async def test_tcp_superior_behind_nat_connects_from_its_sip_address(tmp_path: Path, source: str) -> None:
    # its a=setup:active, c= its private address (127.0.0.2 here): the connection comes from where
    # NAT puts it, the address its SIP comes from (127.0.0.1); or, a media server on another host
    # than its SIP (WVP with ZLMediaKit), from c=. Both are taken; a third host is not.
    sdp = offer(9, proto="TCP/RTP/AVP", setup="active").replace("c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.2")
    gw, device, sup, transport, ok_ = await answered_invite(tmp_path, "nat", sdp)
    stranger = PassiveClient()
    writer = None
    try:
        sup.send(gw, "ACK", "nat", to_tag=ok_.to.tag or "")
        await wait_for(lambda: sending(gw), 5)
        (served,) = gw.cascade_media.dialogs.values()
        (st,) = gw.streams.streams.values()
        port = st.consumers[served.consumer_id].local_port
        await stranger.connect(port, source="127.0.0.3")  # neither its SIP address nor c=: closed at once
        await asyncio.wait_for(stranger.closed.wait(), 3)
        _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        relay = gw.streams.relays[0]
        await wait_for(lambda: served.consumer_id in relay.snapshot().streams[st.id].consumers, 3)
        assert relay.snapshot().streams[st.id].refused_connections == 1
        assert sending(gw)
    finally:
        stranger.close()
        if writer is not None:
            writer.close()
        await gw.stop()
        transport.close()
    await finished(device)


async def test_paused_consumer_waits_as_long_as_the_ack_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the consumer waiting for the superior's ACK must last the 64*T1 the ACK is waited for, whatever
    # T1 is: here the stream service's own default (shortened) is far below it (with sip.t1 above
    # 0.5 s, 32 s was), and an ACK that comes after it but within 64*T1 still starts the media
    monkeypatch.setattr(streams_module, "PAUSED_TIMEOUT", 0.5)
    gw, device, sup, transport, ok_ = await answered_invite(tmp_path, "slow", offer(30000))
    try:
        (served,) = gw.cascade_media.dialogs.values()
        (st,) = gw.streams.streams.values()
        consumer = st.consumers[served.consumer_id]
        ack_wait = 64 * gw.stack.endpoint.timers.t1
        assert consumer.start_by is not None
        assert consumer.start_by - consumer.created == pytest.approx(ack_wait)
        await asyncio.sleep(2.0)  # the superior is slow to ACK: past 0.5 s and a health check (1 s), within 6.4 s
        assert st.consumers.get(served.consumer_id) is consumer and not any(
            isinstance(m, Request) and m.method == "BYE" for m in sup.got
        )
        sup.send(gw, "ACK", "slow", to_tag=ok_.to.tag or "")
        await wait_for(lambda: sending(gw), 5)
    finally:
        await gw.stop()
        transport.close()
    await finished(device)


async def pending_invite(
    tmp_path: Path, pause: int = 2500
) -> tuple[Gateway, asyncio.subprocess.Process, RawSuperior, asyncio.DatagramTransport]:
    """A gateway whose device answers late, and a superior whose INVITE waits for it."""
    gw = await cascade_gateway(tmp_path)
    late = sipp_scenario("invite_late_uas.xml", ch=CH, pause=pause, answer=answer(ssrc=f"{DEVICE_SSRC:010d}"))
    device = await with_device(gw, tmp_path, late.encode())
    assert device is not None
    loop = asyncio.get_running_loop()
    transport, sup = await loop.create_datagram_endpoint(RawSuperior, local_addr=("127.0.0.1", 0))
    sup.send(gw, "INVITE", "waiting", body=offer(30000))
    await wait_for(lambda: bool(gw.cascade_media.pending), 5)
    return gw, device, sup, transport


async def test_superior_lost_while_its_invite_waits_is_480_and_leaves_nothing(tmp_path: Path) -> None:
    gw, device, sup, transport = await pending_invite(tmp_path)
    try:
        for listener in gw.upstreams._lost:
            listener("district", "keepalives unanswered")
        await wait_for(lambda: sup.final("waiting") is not None, 5)
        final = sup.final("waiting")
        assert final is not None and final.status == 480
        await finished(device)  # it answers late: the consumer it brings is released, the stream closed
        await nothing_left(gw)
        assert 'result="480",upstream="district"' in upstream_metrics(gw)
        assert 'gb28181gw_upstream_streams{upstream="district"} 0' in upstream_metrics(gw)
    finally:
        await gw.stop()
        transport.close()


async def test_shutdown_while_an_invite_waits_answers_503(tmp_path: Path) -> None:
    gw, device, sup, transport = await pending_invite(tmp_path)
    try:
        await gw.stop()
        await wait_for(lambda: sup.final("waiting") is not None, 5)
        final = sup.final("waiting")
        assert final is not None and final.status == 503
    finally:
        transport.close()
        if device.returncode is None:
            device.kill()
            await device.wait()


async def test_two_invites_while_the_device_is_being_invited_share_one_device_invite(tmp_path: Path) -> None:
    # the same superior, two Subjects (two of its viewers), both before the device answered:
    # both get 200 (one device INVITE: SIPp takes only one), both ACKed are sent to
    gw, device, sup, transport = await pending_invite(tmp_path, pause=1500)
    try:
        in_dialog(sup, gw.stack.port, "INVITE", "second", 20, "", offer(30002), subject=f"{CH}:0100000078,{SUPERIOR}:0")
        await wait_for(lambda: len(gw.cascade_media.pending) == 2, 5)
        await wait_for(lambda: sup.final("waiting") is not None and sup.final("second") is not None, 10)
        for call_id in ("waiting", "second"):
            final = sup.final(call_id)
            assert final is not None and final.status == 200, final
        sup.send(gw, "ACK", "waiting", to_tag=sup.final("waiting").to.tag or "")  # type: ignore[union-attr]
        in_dialog(sup, gw.stack.port, "ACK", "second", 20, sup.final("second").to.tag or "", "")  # type: ignore[union-attr]
        await wait_for(lambda: sending(gw, 2), 5)
        (st,) = gw.streams.streams.values()
        assert sorted(c.port for c in st.consumers.values()) == [30000, 30002]
        assert 'gb28181gw_upstream_streams{upstream="district"} 2' in upstream_metrics(gw)
    finally:
        await gw.stop()
        transport.close()
    await finished(device)


async def test_invite_over_sip_tcp_no_2xx_retransmission_and_bye_on_its_connection(tmp_path: Path) -> None:
    # over TCP the 2xx is sent once (RFC 3261 §13.3.1.4 retransmits over unreliable transports only);
    # with no ACK our BYE still comes, on its connection
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer()))
    assert device is not None
    try:
        text = sipp_scenario(
            "superior_invite_uac.xml",
            ch=CH,
            superior=SUPERIOR,
            content=content(offer(30000)),
            expect=sipp_scenario("parts/superior_no_ack.xml", timeout=12000),
            then="",
            refs="",
        )
        path = tmp_path / "tcp.xml"
        path.write_text(text)
        result = await run_sipp(str(path), gw.stack.port, tmp_path, transport="t1", timeout=20)
        assert result.ok, result.stdout + result.messages
        assert result.messages.count("CSeq: 20 INVITE") == 3, result.messages  # INVITE, 100, one 200
        await finished(device)
        await nothing_left(gw)
    finally:
        await gw.stop()


async def test_superior_tcp_connection_gone_while_its_invite_waits_leaves_nothing(tmp_path: Path) -> None:
    # a superior over SIP TCP restarts while the device is being invited: its INVITE transaction dies
    # with the connection; when the device answers, nothing may be kept for a 200 nobody can get
    gw = await cascade_gateway(tmp_path)
    late = sipp_scenario("invite_late_uas.xml", ch=CH, pause=1500, answer=answer(ssrc=f"{DEVICE_SSRC:010d}"))
    device = await with_device(gw, tmp_path, late.encode())
    assert device is not None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.stack.port)
        port = writer.get_extra_info("sockname")[1]
        body = offer(30000)
        writer.write(
            (
                f"INVITE sip:{CH}@127.0.0.1:{gw.stack.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP 127.0.0.1:{port};rport;branch=z9hG4bKtcpgone\r\n"
                f"From: <sip:{SUPERIOR}@3401000000>;tag=up-gone\r\nTo: <sip:{CH}@3402000000>\r\n"
                f"Call-ID: gone\r\nCSeq: 20 INVITE\r\nContact: <sip:{SUPERIOR}@127.0.0.1:{port};transport=tcp>\r\n"
                f"Subject: {CH}:0100000077,{SUPERIOR}:0\r\nMax-Forwards: 70\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}"
            ).encode()
        )
        await writer.drain()
        await wait_for(lambda: bool(gw.cascade_media.pending), 5)
        writer.close()
        await finished(device)  # it answered: the consumer it brought is released, the stream closed
        await nothing_left(gw)
        assert 'gb28181gw_upstream_streams{upstream="district"} 0' in upstream_metrics(gw)
    finally:
        await gw.stop()


async def test_bye_before_the_ack_ends_it_and_stops_the_200(tmp_path: Path) -> None:
    # its ACK lost and its user hanging up at once: the BYE (no ACK yet) ends it, our 200 stops
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer()))
    assert device is not None
    loop = asyncio.get_running_loop()
    transport, sup = await loop.create_datagram_endpoint(RawSuperior, local_addr=("127.0.0.1", 0))
    try:
        sup.send(gw, "INVITE", "early-bye", body=offer(30000))
        await wait_for(lambda: sup.final("early-bye") is not None, 10)
        ok_ = sup.final("early-bye")
        assert ok_ is not None and ok_.status == 200
        in_dialog(sup, gw.stack.port, "BYE", "early-bye", 21, ok_.to.tag or "", "")
        await wait_for(lambda: any(isinstance(m, Response) and m.cseq.method == "BYE" for m in sup.got), 5)
        bye_ok = next(m for m in sup.got if isinstance(m, Response) and m.cseq.method == "BYE")
        assert bye_ok.status == 200
        await finished(device)
        await nothing_left(gw)
        count = sum(1 for m in sup.got if isinstance(m, Response) and m.status == 200 and m.cseq.method == "INVITE")
        await asyncio.sleep(1.0)  # T1 is 0.1 s: a retransmission still running would show by now
        assert (
            sum(1 for m in sup.got if isinstance(m, Response) and m.status == 200 and m.cseq.method == "INVITE")
            == count
        )
        assert 'gb28181gw_upstream_streams{upstream="district"} 0' in upstream_metrics(gw)
    finally:
        await gw.stop()
        transport.close()
