"""A superior's Playback of another node's device (issue 17, PROTOCOL.md §9.6): two nodes in this process on one redis-server.

Node A holds the superior (a bare UDP socket, :class:`tests.shell.test_cascade_nodes.Superior`);
the device (SIPp, channel CH) is at node B. The superior's ``s=Playback`` INVITE at A opens a
session of its own at B (``cascade.open`` with the span), B sends the recording (real H.264 in
PS over RTP) straight to the superior; the superior's INFO at A is relayed in the device's
dialog at B (``cascade.control``) and answered with the device's answer, numbered as the
superior numbered it; the device's MediaStatus 121 at B becomes A's MESSAGE upward, before
A's BYE. The superior's BYE stops B's session even where live streams linger.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gb28181gw.sip.message import Request, Response
from tests.media import UdpConsumer, decode_h264, gb_ps, packetize, send_udp, wait_for
from tests.redis_server import RedisServer

from .conftest import sipp_scenario
from .test_cascade_nodes import SUPERIOR, Superior, device_at_b, inproc_nodes, stop_all, superior, superior_request
from .test_devices import finished, play_device
from .test_playback_service import SPAN, device_scenario, info_part
from .test_streams import CH, WE_BYE

__all__ = ["superior"]  # the fixture, used by name

pytestmark = pytest.mark.sipp

HISTORY_SSRC = "1100000077"
FRAMES, GOP = 50, 10


def recorded_offer(port: int) -> str:
    lines = ["v=0", f"o={SUPERIOR} 0 0 IN IP4 127.0.0.1", "s=Playback", f"u={CH}:0", "c=IN IP4 127.0.0.1"]
    lines += [f"t={SPAN.start} {SPAN.end}", f"m=video {port} RTP/AVP 96", "a=recvonly", "a=rtpmap:96 PS/90000"]
    lines += [f"y={HISTORY_SSRC}", "f="]
    return "\r\n".join(lines) + "\r\n"


def answer_to(sup: Superior, call_id: str, method: str) -> Response | None:
    return next(
        (
            m
            for m in sup.got
            if isinstance(m, Response)
            and m.call_id == call_id
            and m.status >= 200
            and (m.headers.get("cseq") or "").endswith(method)
        ),
        None,
    )


async def playback_at_a(sup: Superior, sip_port: int, receiver: UdpConsumer) -> Response:
    sup.send(sip_port, "INVITE", "pb", body=recorded_offer(receiver.port))
    await wait_for(lambda: sup.final("pb") is not None, 20)
    ok = sup.final("pb")
    assert ok is not None and ok.status == 200, ok
    sup.send(sip_port, "ACK", "pb", to_tag=ok.to.tag or "")
    return ok


async def test_playback_at_a_of_bs_device_is_sent_controlled_and_ended_by_b(
    tmp_path: Path, redis: RedisServer, superior: Superior
) -> None:
    a, b = await inproc_nodes(tmp_path, redis, superior.port)
    receiver = await UdpConsumer.start()
    device = None
    try:
        port = await device_at_b(tmp_path, redis, b)
        then = info_part(
            "^PAUSE RTSP/1.0..CSeq: 1..PauseTime: now..$", answer="RTSP/1.0 200 OK\r\nCSeq: 1\r\n", name="p1"
        ) + sipp_scenario("parts/media_status.xml", pause=1500, sender=CH, from_tag="[pid]dev")
        device = await play_device(device_scenario("Playback", then, "p1"), port, tmp_path, "device")

        ok = await playback_at_a(superior, a.stack.port, receiver)
        assert f"y={HISTORY_SSRC}" in ok.body.decode() and "s=Playback" in ok.body.decode()
        (st,) = b.streams.streams.values()
        assert st.kind.word == "playback" and st.span == SPAN and not a.streams.streams
        await wait_for(lambda: [c.paused for c in st.consumers.values()] == [False], 10)
        ps = gb_ps(FRAMES, GOP)
        await send_udp(packetize(ps, int(st.session.ssrc), mtu=1000), st.port)
        await wait_for(lambda: receiver.got.payload() == ps, 10)
        assert receiver.got.ssrcs == {int(HISTORY_SSRC)} and decode_h264(receiver.got.payload()) == FRAMES

        # the superior's PAUSE (its body CSeq 7) at A: relayed at B in the device's dialog (body CSeq 1)
        info = superior_request(
            superior.port,
            a.stack.port,
            "INFO",
            "pb",
            to_tag=ok.to.tag or "",
            body="PAUSE MANSRTSP/1.0\r\nCSeq: 7\r\nPauseTime: now\r\n",
            content_type="Application/MANSRTSP",
        ).replace(b"CSeq: 20 INFO", b"CSeq: 21 INFO")
        assert superior.transport is not None
        superior.transport.sendto(info, ("127.0.0.1", a.stack.port))
        await wait_for(lambda: answer_to(superior, "pb", "INFO") is not None, 15)
        answered = answer_to(superior, "pb", "INFO")
        assert answered is not None and answered.status == 200, answered
        assert answered.body.decode().startswith("RTSP/1.0 200 OK\r\nCSeq: 7\r\n")
        assert st.control is not None and st.control.paused

        # the device's MediaStatus 121 at B: A's MESSAGE upward, then A's BYE (after its answer)
        await wait_for(lambda: superior.byes() == ["pb"], 15)
        told = [i for i, m in enumerate(superior.got) if isinstance(m, Request) and m.method == "MESSAGE"]
        bye = next(i for i, m in enumerate(superior.got) if isinstance(m, Request) and m.method == "BYE")
        assert [superior.messages()[-1].count("<NotifyType>121</NotifyType>")] == [1] and told and told[-1] < bye
        await finished(device)  # B ended the device's session with BYE
        await wait_for(lambda: not b.streams.streams and not b.cascade_media.exported, 5)
        assert not a.cascade_media.dialogs and not a.cascade_media.remote
        assert b.rpc is not None and b.rpc.served[("cascade.control", "ok")] == 1
        assert a.rpc is not None and a.rpc.served[("cascade.media_status", "ok")] == 1
    finally:
        await stop_all(a, b, receiver, device)


async def test_the_superiors_bye_at_a_stops_the_playback_at_b_where_live_streams_linger(
    tmp_path: Path, redis: RedisServer, superior: Superior
) -> None:
    a, b = await inproc_nodes(tmp_path, redis, superior.port, **{"media.linger": "30"})
    receiver = await UdpConsumer.start()
    device = None
    try:
        port = await device_at_b(tmp_path, redis, b)
        device = await play_device(device_scenario("Playback", WE_BYE, ""), port, tmp_path, "device")
        ok = await playback_at_a(superior, a.stack.port, receiver)
        await wait_for(lambda: bool(b.cascade_media.exported), 5)
        superior.send(a.stack.port, "BYE", "pb", to_tag=ok.to.tag or "")
        await finished(device)  # its own session: no linger, B BYEs the device at once
        await wait_for(lambda: not b.streams.streams and not b.cascade_media.exported, 5)
        assert not a.cascade_media.dialogs and superior.byes() == []
    finally:
        await stop_all(a, b, receiver, device)


def in_dialog(sup: Superior, sip_port: int, to_tag: str, method: str, cseq: int, rtsp: str = "") -> None:
    """The superior's request in the dialog of call ``pb``, numbered ``cseq`` (above the INVITE's 20)."""
    request = superior_request(
        sup.port, sip_port, method, "pb", to_tag=to_tag, body=rtsp, content_type="Application/MANSRTSP"
    ).replace(f"CSeq: 20 {method}".encode(), f"CSeq: {cseq} {method}".encode())
    request = request.replace(f"branch=z9hG4bK{method}pb".encode(), f"branch=z9hG4bK{method}pb{cseq}".encode())
    assert sup.transport is not None
    sup.transport.sendto(request, ("127.0.0.1", sip_port))


async def test_the_device_at_b_refusing_or_silent_to_a_control_is_the_superiors_answer_at_a(
    tmp_path: Path, redis: RedisServer, superior: Superior
) -> None:
    a, b = await inproc_nodes(tmp_path, redis, superior.port, **{"playback.control_timeout": "1"})
    receiver = await UdpConsumer.start()
    device = None
    try:
        port = await device_at_b(tmp_path, redis, b)
        silent = '<ereg regexp="^PLAY RTSP/1.0..CSeq: 2..Range: npt=now-..$" search_in="body" check_it="true" assign_to="p2"/>'
        then = (
            info_part("^PAUSE RTSP/1.0..CSeq: 1..PauseTime: now..$", status="400 Bad Request", name="p1")
            + sipp_scenario("parts/info_unanswered.xml", checks=silent)
            + WE_BYE
        )
        device = await play_device(device_scenario("Playback", then, "p1,p2"), port, tmp_path, "device")
        ok = await playback_at_a(superior, a.stack.port, receiver)
        await wait_for(lambda: bool(b.cascade_media.exported), 5)
        tag = ok.to.tag or ""

        in_dialog(superior, a.stack.port, tag, "INFO", 21, "PAUSE MANSRTSP/1.0\r\nCSeq: 7\r\nPauseTime: now\r\n")
        await wait_for(lambda: answer_to(superior, "pb", "21 INFO") is not None, 10)
        refused = answer_to(superior, "pb", "21 INFO")
        assert refused is not None and refused.status == 400, refused  # the device's own answer
        in_dialog(superior, a.stack.port, tag, "INFO", 22, "PLAY MANSRTSP/1.0\r\nCSeq: 8\r\nRange: npt=now-\r\n")
        await wait_for(lambda: answer_to(superior, "pb", "22 INFO") is not None, 10)
        silent_answer = answer_to(superior, "pb", "22 INFO")
        assert silent_answer is not None and silent_answer.status == 408, silent_answer  # as a silent device's
        assert "did not answer" in (silent_answer.headers.get("warning") or "")
        assert len(a.cascade_media.dialogs) == 1  # the session goes on

        in_dialog(superior, a.stack.port, tag, "BYE", 23)
        await wait_for(lambda: answer_to(superior, "pb", "23 BYE") is not None, 10)
        await finished(device)
        await wait_for(lambda: not b.streams.streams and not b.cascade_media.exported, 5)
    finally:
        await stop_all(a, b, receiver, device)
