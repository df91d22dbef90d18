"""A superior's Playback and Download through cascade over real sockets (issue 13 item 5, PROTOCOL.md §9.6).

SIPp plays the superior (``superior_invite_uac.xml`` with an ``s=Playback`` / ``Download`` offer,
its INFO and BYE from ``parts/superior_in_dialog.xml``) and the device (``invite_uas.xml`` with
the recorded checks of :mod:`tests.shell.test_playback_service`: ``s=``, ``u=``, ``t=``, a history
``y=``; its INFO checks and MediaStatus from the parts used there). The test sends the device's
media (real H.264 in PS over RTP) and decodes what reaches the superior's ``m=`` port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.gb import mansrtsp
from gb28181gw.gb.model import Channel
from gb28181gw.sip.message import Request, Response, make_response, parse_message
from tests.media import UdpConsumer, decode_h264, gb_ps, packetize, send_udp, wait_for

from .conftest import sipp_scenario
from .test_cascade_invite import (
    CH,
    FRAMES,
    GOP,
    NVR,
    SUPERIOR,
    RawSuperior,
    _superiors_finish,  # noqa: F401 - its autouse fixture waits for in_background() here too
    cancelled_while_the_device_is_late,
    cascade_gateway,
    in_background,
    nothing_left,
    offer,
    refused,
    sending,
    superior,
    superior_gets_bye,
    upstream_metrics,
    with_device,
)
from .test_cascade_invite_review import in_dialog as raw_in_dialog
from .test_devices import finished, free_udp_port, play_device, register
from .test_playback_service import SPAN, info_part, recorded_answer, recorded_checks
from .test_streams import DEVICE_BYE, WE_BYE
from .test_streams import answer as live_answer

pytestmark = pytest.mark.sipp

#: The superior's y= for a recorded session (history: 1…, PROTOCOL.md §7.4.1), echoed to it.
HISTORY_SSRC = "1100000077"
MANSRTSP = "Application/MANSRTSP"


def recorded_offer(
    port: int, kind: str = "Playback", *, time_line: str = f"t={SPAN.start} {SPAN.end}", extra: str = ""
) -> str:
    """The superior's offer: ``u=CH:0`` and ``t=`` instead of live's ``t=0 0``."""
    sdp = offer(port, name=kind, ssrc=HISTORY_SSRC).replace("t=0 0\r\n", f"u={CH}:0\r\n{time_line}\r\n")
    return sdp.replace("a=rtpmap:96 PS/90000\r\n", f"a=rtpmap:96 PS/90000\r\n{extra}") if extra else sdp


def body(content_type: str, text: str) -> str:
    return f"Content-Type: {content_type}\r\nContent-Length: [len]\r\n\r\n{text}"


def sdp_body(sdp: str) -> str:
    return body("application/sdp", sdp)


def ereg(regexp: str, name: str, where: str = "body") -> str:
    """A SIPp check: ``regexp`` (XML-escaped here) must match the ``body`` or the whole ``msg``."""
    escaped = regexp.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return f'<ereg regexp="{escaped}" search_in="{where}" check_it="true" assign_to="{name}"/>'


def recorded_ok(kind: str, extra_checks: str = "") -> str:
    """Our 200 as the superior checks it: live's checks plus s=, u= and t= echoed."""
    checks = ereg(f"s={kind}", "s") + ereg(f"u={CH}:0", "u") + ereg(f"t={SPAN.start} {SPAN.end}", "t") + extra_checks
    return sipp_scenario(
        "parts/superior_ok.xml", ch=CH, superior=SUPERIOR, proto="RTP/AVP", ssrc=HISTORY_SSRC, checks=checks
    )


OK_REFS = "m,dir,map,o,c,y,s,u,t"


def in_dialog(method: str, cseq: int, content: str, status: int, checks: str = "", *, pause: int = 0) -> str:
    return sipp_scenario(
        "parts/superior_in_dialog.xml",
        method=method,
        cseq=cseq,
        content=content,
        status=status,
        checks=checks,
        pause=pause,
        superior=SUPERIOR,
        ch=CH,
    )


def info(cseq: int, rtsp: str, status: int = 200, checks: str = "", *, pause: int = 0) -> str:
    return in_dialog("INFO", cseq, body(MANSRTSP, rtsp), status, checks, pause=pause)


def bye(cseq: int, *, pause: int = 0) -> str:
    return in_dialog("BYE", cseq, "Content-Length: 0\r\n\r\n", 200, pause=pause)


def device(kind: str, then: str, refs: str = "", *, checks: str = "", answer_extra: str = "") -> bytes:
    """The device's scenario: the recorded INVITE checked (s=, u=, t=, y=1…), answered, then ``then``."""
    return sipp_scenario(
        "invite_uas.xml",
        checks=recorded_checks(kind, SPAN) + checks,
        ch=CH,
        answer=recorded_answer(kind, SPAN, extra=answer_extra),
        then=then,
        refs="gwfrom,subject,s,u,t,all,y" + (f",{refs}" if refs else ""),
    ).encode()


async def stream_to_superior(gw: Gateway, receiver: UdpConsumer) -> None:
    """Send the device's media once the superior's consumer started; check it decoded, its SSRC echoed."""
    await wait_for(lambda: sending(gw), 10)
    (st,) = gw.streams.streams.values()
    ps = gb_ps(FRAMES, GOP)
    packets = packetize(ps, int(st.session.ssrc), mtu=1000)
    await send_udp(packets, st.port)
    await wait_for(lambda: len(receiver.got.packets) == len(packets))
    assert receiver.got.ssrcs == {int(HISTORY_SSRC)}
    assert receiver.got.payload() == ps and decode_h264(receiver.got.payload()) == FRAMES  # relayed untouched


async def session(
    tmp_path: Path,
    device_scenario: bytes,
    steps: str,
    *,
    kind: str = "Playback",
    expect: str = "",
    refs: str = "",
    extra: str = "",
    settings: dict[str, str] | None = None,
    during: Callable[[Gateway, UdpConsumer], Awaitable[None]] | None = None,
) -> Gateway:
    """A recorded session from the superior's INVITE to its end, both SIPp sides succeeding and
    nothing left open; ``during`` runs while it goes on. Returns the (stopped) gateway to inspect."""
    gw = await cascade_gateway(tmp_path, settings=settings)
    dev = await with_device(gw, tmp_path, device_scenario)
    assert dev is not None
    receiver = await UdpConsumer.start()
    try:
        sdp = recorded_offer(receiver.port, kind, extra=extra)
        run = superior(gw, tmp_path, sdp_body(sdp), expect or recorded_ok(kind), then=steps, refs=OK_REFS + refs)
        sup = in_background(run)
        if during is not None:
            await during(gw, receiver)
        result = await sup
        assert result.ok, result.stdout + result.messages
        await finished(dev)
        await nothing_left(gw)
        return gw
    finally:
        receiver.close()
        await gw.stop()


# --- the happy paths -----------------------------------------------------------------------


async def test_playback_pause_and_play_reach_the_device_in_its_dialog(tmp_path: Path) -> None:
    # the device's dialog numbers bodies 1, 2; the superior numbered them 7, 8 and gets 7, 8 back
    then = (
        info_part("^PAUSE RTSP/1.0..CSeq: 1..PauseTime: now..$", answer="RTSP/1.0 200 OK\r\nCSeq: 1\r\n", name="p1")
        + info_part(
            "^PLAY RTSP/1.0..CSeq: 2..Range: npt=now-..$",
            answer="RTSP/1.0 200 OK\r\nCSeq: 2\r\nRTP-Info: seq=10;rtptime=900\r\n",
            name="p2",
        )
        + WE_BYE  # both INFOs checked, then our BYE
    )
    steps = (
        info(
            21,
            "PAUSE MANSRTSP/1.0\r\nCSeq: 7\r\nPauseTime: now\r\n",
            checks=ereg("^RTSP/1.0 200 OK..CSeq: 7..$", "a1"),
            pause=1500,
        )
        + info(
            22,
            "PLAY RTSP/1.0\r\nCSeq: 8\r\nRange: npt=now-\r\n",
            checks=ereg("CSeq: 8..RTP-Info: seq=10;rtptime=900", "a2") + ereg(f"Content-Type: {MANSRTSP}", "ct", "msg"),
        )
        + bye(23, pause=300)
    )

    async def during(gw: Gateway, receiver: UdpConsumer) -> None:
        await stream_to_superior(gw, receiver)
        (st,) = gw.streams.streams.values()
        assert st.kind.word == "playback" and st.span == SPAN
        assert CH not in gw.streams.by_channel  # its own session: no live viewer joins it
        assert 'gb28181gw_upstream_streams{upstream="district"} 1.0' in upstream_metrics(gw)

    # linger 30 s: its own device session still ends with the superior's BYE (nobody else watches it)
    gw = await session(
        tmp_path,
        device("Playback", then, "p1,p2"),
        steps,
        refs=",a1,a2,ct",
        during=during,
        settings={"media.linger": "30"},
    )
    metrics = upstream_metrics(gw)
    assert 'request="INFO",result="ok",upstream="district"} 2.0' in metrics
    assert 'gb28181gw_upstream_streams{upstream="district"} 0.0' in metrics


async def test_download_media_status_reaches_the_superior_in_its_dialog(tmp_path: Path) -> None:
    then = sipp_scenario("parts/media_status.xml", pause=1500, sender=CH, from_tag="[pid]dev")  # then our BYE
    answer = "a=filesize:1234567"
    dev = device("Download", then, "ds", checks=ereg("a=downloadspeed:4", "ds"), answer_extra=answer)  # passed down
    told = (
        ereg("<CmdType>MediaStatus</CmdType>", "cmd")
        + ereg("<NotifyType>121</NotifyType>", "nt")
        + ereg(f"<DeviceID>{CH}</DeviceID>", "id")
        + ereg('encoding="GB2312"', "enc")
        # in its dialog: its tag in To, ours in From, the first CSeq of ours in the dialog
        + ereg(f"To: <sip:{SUPERIOR}@3401000000>;tag=[0-9]+up", "to", "msg")
        + ereg(f"From: <sip:{CH}@3402000000>;tag=[0-9a-z]+", "from", "msg")
        + ereg("CSeq: 1 MESSAGE", "cseq", "msg")
    )
    steps = sipp_scenario("parts/superior_gets_message.xml", timeout=10000, checks=told, pause=0) + bye(21)
    seen: list[str] = []

    async def during(gw: Gateway, receiver: UdpConsumer) -> None:
        await wait_for(lambda: sending(gw), 10)
        (served,) = gw.cascade_media.dialogs.values()
        assert served.offer.download_speed == 4
        seen.append(served.stream_id)

    expect = recorded_ok("Download", ereg(answer, "fs"))
    refs = ",fs,cmd,nt,id,enc,to,from,cseq"
    gw = await session(
        tmp_path, dev, steps, kind="Download", expect=expect, refs=refs, extra="a=downloadspeed:4\r\n", during=during
    )
    ended = gw.streams.ended_stream(seen[0])
    assert ended is not None and ended.complete and ended.kind.word == "download"


async def test_our_bye_waits_for_the_media_status_answer(tmp_path: Path) -> None:
    # the superior answers our MediaStatus only after the device session closed (0.5 s after it,
    # COMPLETE_DRAIN) and never BYEs: our BYE comes, but after its 200 to the MESSAGE
    then = sipp_scenario("parts/media_status.xml", pause=1000, sender=CH, from_tag="other-tag")  # M11: by Call-ID
    told = sipp_scenario(
        "parts/superior_gets_message.xml", timeout=10000, checks=ereg("<NotifyType>121</NotifyType>", "nt"), pause=1500
    )
    expect = recorded_ok("Download", ereg("a=filesize:-1", "fs"))  # unknown, as the device said (M8)
    dev = device("Download", then, answer_extra="a=filesize:-1")
    await session(tmp_path, dev, told + superior_gets_bye(), kind="Download", expect=expect, refs=",fs,nt")


# --- failure paths -------------------------------------------------------------------------

NOT_FOUND = sipp_scenario("invite_refused_uas.xml", status=404, reason="Not Found").encode()
SPAN_T = f"t={SPAN.start} {SPAN.end}"


REFUSED = [
    ("not-numbers", "t=yesterday today", None, None, 400, "not two epoch seconds"),
    ("end-first", f"t={SPAN.end} {SPAN.start}", None, None, 400, "not after the start"),
    ("no-t", "", None, None, 400, "not after the start"),  # t= absent: SDP's 0 0
    ("future", f"t={int(time.time()) + 7200} {int(time.time()) + 9000}", None, None, 400, "in the future"),
    ("too-long", f"t={SPAN.start} {SPAN.start + 3 * 86400}", None, None, 400, "playback.max_span"),
    ("year-33658", "t=999999999998 999999999999", None, None, 400, "in the future"),  # no crash, no silence
    ("unshared", SPAN_T, ["34020000001180000002"], None, 404, "no channel"),  # another NVR only: as live
    ("device-404", SPAN_T, None, NOT_FOUND, 404, "404"),  # no recordings there: passed up
]


@pytest.mark.parametrize(
    ("case", "time_line", "share", "dev", "status", "warning"),
    REFUSED,
    # named by case only: an ID with the clock in it ("future") differed between the two xdist
    # workers collecting a second apart, and CI stopped before running anything
    ids=[case[0] for case in REFUSED],
)
async def test_refused(
    tmp_path: Path, case: str, time_line: str, share: list[str] | None, dev: bytes | None, status: int, warning: str
) -> None:
    gw = await cascade_gateway(tmp_path, **({"share": share} if share else {}))
    device_run = await with_device(gw, tmp_path, dev)
    try:
        sdp = recorded_offer(30000, time_line=time_line)
        if not time_line:
            sdp = sdp.replace("\r\n\r\n", "\r\n")
        result = await superior(gw, tmp_path, sdp_body(sdp), refused(status, warning), refs="warning")
        assert result.ok, result.stdout + result.messages
        if device_run is None:
            assert not gw.streams.streams  # refused before any device INVITE
        else:
            await finished(device_run)
        await nothing_left(gw)
    finally:
        await gw.stop()


async def test_info_after_the_dialog_ended_is_481(tmp_path: Path) -> None:
    steps = bye(21, pause=500) + info(22, "PAUSE RTSP/1.0\r\nCSeq: 3\r\n", 481)
    await session(tmp_path, device("Playback", WE_BYE), steps)


async def test_info_not_mansrtsp_is_415_and_unreadable_is_400_the_session_stays(tmp_path: Path) -> None:
    plain = body("text/plain", "PAUSE RTSP/1.0\r\nCSeq: 3\r\n")
    steps = (
        in_dialog("INFO", 21, plain, 415, ereg(f"Accept: {MANSRTSP}", "acc", "msg"), pause=300)
        + info(22, "JUMP RTSP/1.0\r\nCSeq: 4\r\n", 400, ereg("Warning: 399 gb28181gw", "w", "msg"))
        + info(23, "PLAY RTSP/1.0\r\nCSeq: 5\r\nScale: fast\r\n", 400)
        + bye(24)
    )
    # no INFO reaches the device: only our BYE after the superior's
    gw = await session(tmp_path, device("Playback", WE_BYE), steps, refs=",acc,w")
    assert 'request="INFO",result="415",upstream="district"} 1.0' in upstream_metrics(gw)


async def test_a_seek_past_the_span_is_400_and_never_reaches_the_device(tmp_path: Path) -> None:
    # the device-side refusal (StreamService.control's 400) reaches the superior as 400, not our 500
    steps = info(21, f"PLAY RTSP/1.0\r\nCSeq: 3\r\nRange: npt={SPAN.seconds + 60}-\r\n", 400, pause=300) + bye(22)
    gw = await session(tmp_path, device("Playback", WE_BYE), steps)
    assert 'request="INFO",result="400",upstream="district"} 1.0' in upstream_metrics(gw)


async def test_device_silent_to_info_is_408_and_the_session_stays(tmp_path: Path) -> None:
    silent = sipp_scenario("parts/device_info_silent.xml", checks=ereg("^PAUSE RTSP/1.0..CSeq: 1..", "p1"))
    steps = info(21, "PAUSE RTSP/1.0\r\nCSeq: 3\r\n", 408, ereg("did not answer", "w", "msg"), pause=300)

    async def during(gw: Gateway, receiver: UdpConsumer) -> None:
        await wait_for(lambda: 'request="INFO",result="408"' in upstream_metrics(gw), 10)
        assert sending(gw) and len(gw.streams.streams) == 1  # the session stays

    dev = device("Playback", silent, "p1")
    settings = {"playback.control_timeout": "1"}
    await session(tmp_path, dev, steps + bye(22, pause=300), refs=",w", settings=settings, during=during)


async def test_device_bye_mid_playback_reaches_the_superior(tmp_path: Path) -> None:
    await session(tmp_path, device("Playback", DEVICE_BYE), superior_gets_bye())


async def test_cancel_before_the_device_answered_stops_its_own_session_at_once(tmp_path: Path) -> None:
    # the device answers after the superior's CANCEL: the session opened for that superior alone
    # is closed then (BYE), not left streaming for media.linger (30 s here) with nobody to see it
    gw = await cascade_gateway(tmp_path, settings={"media.linger": "30"})
    answer = recorded_answer("Playback", SPAN).replace("[$y]", "1200000099")
    try:
        await cancelled_while_the_device_is_late(gw, tmp_path, answer, sdp_body(recorded_offer(30000)))
    finally:
        await gw.stop()


async def test_our_own_ssrc_toward_a_superior_playback_is_a_history_one(tmp_path: Path) -> None:
    # ssrc = "own" (or a superior sending no y=, M2): our answer's y= names a playback, so it starts with 1 (§7.4.1)
    gw = await cascade_gateway(tmp_path, ssrc="own")
    dev = await with_device(gw, tmp_path, device("Playback", WE_BYE))
    assert dev is not None
    try:
        expect = sipp_scenario(
            "parts/superior_ok.xml", ch=CH, superior=SUPERIOR, proto="RTP/AVP", ssrc="[0-9]{10}", checks=""
        )
        sup = in_background(
            superior(
                gw, tmp_path, sdp_body(recorded_offer(30000)), expect, then=bye(21, pause=500), refs="m,dir,map,o,c,y"
            )
        )
        await wait_for(lambda: sending(gw), 10)
        (served,) = gw.cascade_media.dialogs.values()
        ours = f"{served.ssrc:010d}"
        result = await sup
        assert result.ok, result.stdout + result.messages
        await finished(dev)
        await nothing_left(gw)
        assert ours.startswith("1"), f"y={ours} for a playback"
    finally:
        await gw.stop()


async def test_a_playback_with_the_subject_of_a_live_view_does_not_replace_it(tmp_path: Path) -> None:
    # a superior that writes one Subject for all it asks of a channel (CH:0100000077 here) plays it
    # back while watching it live: two streams, not the same one asked again (Annex K c), so the
    # live view is not ended by the playback
    gw = await cascade_gateway(tmp_path)
    any_y = '<ereg regexp="y=([01][0-9]{9})" search_in="body" check_it="true" assign_to="all,y"/>'
    both = sipp_scenario("invite_uas.xml", checks=any_y, ch=CH, answer=live_answer(), then=WE_BYE, refs="all,y")
    port = free_udp_port()
    await register(gw, tmp_path, port)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
    dev = await play_device(both.encode(), port, tmp_path, "device", calls=2)
    loop = asyncio.get_running_loop()
    transport, sup = await loop.create_datagram_endpoint(RawSuperior, local_addr=("127.0.0.1", 0))
    try:
        for call_id, sdp in (("live", offer(30000)), ("playback", recorded_offer(30002))):
            await sup.answered(gw, call_id, sdp)
        await wait_for(lambda: sending(gw, 2), 5)
        assert sup.byes() == []
        assert sorted(s.offer.session.word for s in gw.cascade_media.dialogs.values()) == ["play", "playback"]
    finally:
        await gw.stop()
        transport.close()
    await finished(dev)


async def test_u_naming_an_unshared_channel_is_404_whatever_the_subject_names(tmp_path: Path) -> None:
    # u= names the recorded channel (§9.6): a Subject and Request-URI naming a shared camera of the
    # same NVR do not open the unshared one's recordings, nor play the shared one instead
    shared = "34020000001310000002"
    gw = await cascade_gateway(tmp_path, share=[shared])
    await with_device(gw, tmp_path, None)
    gw.devices.channels[NVR][shared] = Channel(shared, NVR)
    try:
        sdp = recorded_offer(30000)  # u=CH:0
        result = await superior(
            gw, tmp_path, sdp_body(sdp), refused(404, "no channel", ch=shared), refs="warning", ch=shared
        )
        assert result.ok, result.stdout + result.messages
        assert not gw.streams.streams
        await nothing_left(gw)
    finally:
        await gw.stop()


class RawDevice(asyncio.DatagramProtocol):
    """The NVR as a bare UDP socket: answers the Playback INVITE, keeps every INFO, and answers
    them only once ``hold`` have come, the last first (a device may answer in any order)."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.transport: asyncio.DatagramTransport | None = None
        self.infos: list[tuple[Request, tuple[str, int]]] = []
        self.byes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        if not isinstance(msg, Request) or msg.method == "ACK" or self.transport is None:
            return
        if msg.method == "INVITE":
            host, port = self.transport.get_extra_info("sockname")[:2]
            response = make_response(msg, 200, to_tag="rawdev")
            response.headers.add("Contact", f"<sip:{CH}@{host}:{port}>")
            response.headers.add("Content-Type", "application/sdp")
            response.body = (
                recorded_answer("Playback", SPAN).replace("[local_ip]", host).replace("[$y]", "1200000099").encode()
            )
        elif msg.method == "INFO":
            self.infos.append((msg, addr))
            if len(self.infos) == self.hold:
                for info, to in reversed(self.infos):
                    cseq = mansrtsp.parse_request(info.body).cseq
                    answer = make_response(info, 200)
                    answer.headers.add("Content-Type", MANSRTSP)
                    answer.body = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n".encode()
                    self.transport.sendto(bytes(answer), to)
            return
        else:
            self.byes += msg.method == "BYE"
            response = make_response(msg, 200)
        self.transport.sendto(bytes(response), addr)


async def test_a_burst_of_info_maps_each_answer_to_its_own_request(tmp_path: Path) -> None:
    # ten PAUSE / PLAY at once, none waiting for its answer (SIP CSeq 21…30, body CSeq 100…109):
    # the device gets them in order in its dialog, numbered 1…10, answers them the last first,
    # and each answer goes back to its own INFO with the body CSeq the superior gave that one
    n = 10
    gw = await cascade_gateway(tmp_path)
    port = free_udp_port()
    await register(gw, tmp_path, port)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
    loop = asyncio.get_running_loop()
    dev_transport, dev = await loop.create_datagram_endpoint(lambda: RawDevice(n), local_addr=("127.0.0.1", port))
    sup_transport, sup = await loop.create_datagram_endpoint(RawSuperior, local_addr=("127.0.0.1", 0))
    verbs = ["PAUSE" if i % 2 == 0 else "PLAY" for i in range(n)]
    try:
        tag = await sup.answered(gw, "burst", recorded_offer(30000))
        for i, verb in enumerate(verbs):
            rtsp = f"{verb} RTSP/1.0\r\nCSeq: {100 + i}\r\n"
            raw_in_dialog(sup, gw.stack.port, "INFO", "burst", 21 + i, tag, rtsp, content_type=MANSRTSP)

        def answers() -> dict[int, bytes]:
            return {m.cseq.number: m.body for m in sup.got if isinstance(m, Response) and m.cseq.method == "INFO"}

        await wait_for(lambda: len(answers()) == n, 10)
        got = answers()
        for i in range(n):
            assert got[21 + i] == f"RTSP/1.0 200 OK\r\nCSeq: {100 + i}\r\n".encode(), (i, got[21 + i])
        sent = [mansrtsp.parse_request(info.body) for info, _ in dev.infos]
        assert [(r.verb, r.cseq) for r in sent] == [(verb, i + 1) for i, verb in enumerate(verbs)]
        assert [info.cseq.number for info, _ in dev.infos] == sorted(info.cseq.number for info, _ in dev.infos)
        metrics = upstream_metrics(gw)
        assert f'request="INFO",result="ok",upstream="district"}} {n}.0' in metrics
        raw_in_dialog(sup, gw.stack.port, "BYE", "burst", 21 + n, tag, "")
        await nothing_left(gw)
        await wait_for(lambda: dev.byes == 1)
    finally:
        await gw.stop()
        dev_transport.close()
        sup_transport.close()
