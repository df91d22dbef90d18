"""Playback and download sessions toward a device, at the service: SIPp plays the device's SIP side
(it checks the INVITE's s=, u=, t= and history y=, and the MANSRTSP bodies of the controls), the
test sends real H.264 in PS over RTP as the device's media and a UDP consumer decodes what comes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from gb28181gw.errors import StreamError
from gb28181gw.gb import mansrtsp
from gb28181gw.gb.playback import Span
from gb28181gw.sdp import SessionKind
from tests.media import TcpConsumer, UdpConsumer, decode_h264, gb_ps, packetize, send_tcp, send_udp, wait_for

from .conftest import sipp_scenario
from .test_devices import finished
from .test_streams import CH, WE_BYE, gateway_with_device

pytestmark = pytest.mark.sipp

#: 2024-05-06 08:00:00-08:10:00 Beijing time (PROTOCOL.md §7.8.1).
SPAN = Span(1714953600, 1714954200)


def recorded_checks(kind: str, span: Span) -> str:
    """What SIPp checks in a Playback or Download INVITE (§7.8): s=, u=CHANNEL:0, t=START END, y=1…."""
    return f"""<ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="gwfrom"/>
      <ereg regexp="Subject: {CH}:1[0-9]{{9}},34020000002000000001:0" search_in="msg" check_it="true" assign_to="subject"/>
      <ereg regexp="s={kind}" search_in="body" check_it="true" assign_to="s"/>
      <ereg regexp="u={CH}:0" search_in="body" check_it="true" assign_to="u"/>
      <ereg regexp="t={span.start} {span.end}" search_in="body" check_it="true" assign_to="t"/>
      <ereg regexp="y=(1[0-9]{{9}})" search_in="body" check_it="true" assign_to="all,y"/>"""


def recorded_answer(kind: str, span: Span, *, extra: str = "") -> str:
    lines = ["v=0", f"o={CH} 0 0 IN IP4 [local_ip]", f"s={kind}", "c=IN IP4 [local_ip]", f"t={span.start} {span.end}"]
    lines += ["m=video 15060 RTP/AVP 96", "a=sendonly", "a=rtpmap:96 PS/90000"]
    if extra:
        lines.append(extra)
    lines += ["y=[$y]", "f="]
    return "\r\n".join(lines) + "\r\n"


def info_part(body_regexp: str, *, status: str = "200 OK", answer: str = "", name: str = "info") -> str:
    checks = f'<ereg regexp="{body_regexp}" search_in="body" check_it="true" assign_to="{name}"/>'
    return sipp_scenario(
        "parts/info_answer.xml",
        checks=checks,
        status=status,
        content_type="Content-Type: Application/MANSRTSP\r\n" if answer else "",
        body=answer,
    )


def device_scenario(kind: str, then: str, refs: str, *, answered: Span = SPAN) -> bytes:
    return sipp_scenario(
        "invite_uas.xml",
        checks=recorded_checks(kind, SPAN),
        ch=CH,
        answer=recorded_answer(kind, answered, extra="a=filesize:1234567" if kind == "Download" else ""),
        then=then,
        refs="gwfrom,subject,s,u,t,all,y" + (f",{refs}" if refs else ""),
    ).encode()


async def test_playback_pause_resume_then_media_status_ends_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    then = (
        info_part("^PAUSE RTSP/1.0..CSeq: 1..PauseTime: now..$", answer="RTSP/1.0 200 OK\r\nCSeq: 1\r\n", name="p1")
        + info_part("^PLAY RTSP/1.0..CSeq: 2..Range: npt=now-..$", name="p2")
        + sipp_scenario("parts/media_status.xml", pause=300, sender=CH, from_tag="[pid]dev")
    )
    gw, device = await gateway_with_device(tmp_path, device_scenario("Playback", then, "p1,p2"))
    caplog.set_level("INFO", logger="gb28181gw.streams")
    udp = await UdpConsumer.start()
    gone: list[str] = []
    gw.streams.on_media_status(lambda st: gone.append(st.id))
    try:
        st, consumer = await gw.streams.open_recorded(
            CH, kind=SessionKind.PLAYBACK, span=SPAN, transport="udp", host="127.0.0.1", port=udp.port
        )
        assert st.id.startswith("1") and st.kind is SessionKind.PLAYBACK and CH not in gw.streams.by_channel
        ps = gb_ps(50, 10)
        with socket.socket(type=socket.SOCK_DGRAM) as media:
            await send_udp(packetize(ps, int(st.session.ssrc), mtu=400), st.port, sock=media)
        await wait_for(lambda: len(udp.got.packets) > 0)
        result = await gw.streams.control(st.id, mansrtsp.pause(0))
        assert result.ok and result.answer is not None and result.answer.cseq == 1
        assert st.control is not None and st.control.paused
        result = await gw.streams.control(st.id, mansrtsp.resume(0))
        assert result.ok and not st.control.paused
        await finished(device)  # MediaStatus answered 200, then our BYE
        assert gone == [st.id]
        await wait_for(lambda: st.id not in gw.streams.streams)
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.cause == "complete" and ended.complete
        assert decode_h264(udp.got.payload()) == 50
        await wait_for(lambda: gw.streams.pools[0].in_use == 0 and gw.streams.ssrcs.active == 0)
        # a log line per control (what was asked, what the device said) and one at the end (kind, result)
        controls = [(r.control, r.answer, r.cseq) for r in caplog.records if r.getMessage() == "playback control"]
        assert controls == [("PAUSE", "200 OK", 1), ("PLAY Range npt=now-", "200 OK", 2)]
        closed = [r for r in caplog.records if r.getMessage() == "stream closed"]
        assert [(r.kind, r.result, r.complete) for r in closed] == [("playback", "complete", True)]
        assert "MediaStatus 121" in closed[0].reason
    finally:
        udp.close()
        await gw.stop()


async def test_download_offer_and_file_size(tmp_path: Path) -> None:
    then = sipp_scenario("parts/media_status.xml", pause=200, sender=CH, from_tag="other-tag")  # M11: by Call-ID
    scenario = device_scenario("Download", then, "")
    scenario = scenario.replace(
        b'assign_to="t"/>',
        b'assign_to="t"/>\n      <ereg regexp="a=downloadspeed:3" search_in="body" check_it="true" assign_to="ds"/>',
    )
    scenario = (
        scenario.replace(b'refs="', b'refs="ds,')
        if b'refs="' in scenario
        else scenario.replace(b'variables="', b'variables="ds,')
    )
    gw, device = await gateway_with_device(tmp_path, scenario)
    udp = await UdpConsumer.start()
    try:
        assert gw.admin is not None
        base = f"http://127.0.0.1:{gw.admin.port}"
        body = {  # the operator's local times, in the site's zone (gateway.time_zone: Asia/Shanghai)
            "channel_id": CH,
            "kind": "download",
            "start": "2024-05-06T08:00:00",
            "end": "2024-05-06T08:10:00",
            "speed": 3,
            "consumer": {"transport": "udp", "host": "127.0.0.1", "port": udp.port},
        }
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/api/v1/playbacks", json=body) as resp:
                opened = await resp.json()
                assert resp.status == 201, opened
            assert opened["kind"] == "download" and opened["span"]["start"] == SPAN.start
            assert (opened["download_speed"], opened["file_size"], opened["complete"]) == (3, 1234567, False)
            st = gw.streams.streams[opened["id"]]
            await finished(device)
            await wait_for(lambda: st.id not in gw.streams.streams)
            ended = gw.streams.ended_stream(st.id)
            assert ended is not None and ended.cause == "complete" and ended.complete
            async with http.get(base + "/metrics") as resp:
                text = await resp.text()
        assert 'gb28181gw_downloads_total{result="complete"} 1.0' in text
        assert 'gb28181gw_media_sessions_total{kind="download",result="complete"} 1.0' in text
        assert 'gb28181gw_media_sessions_active{kind="download"} 0.0' in text
    finally:
        udp.close()
        await gw.stop()


async def test_a_device_answering_another_span_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # what it sends is what it found (an NVR clipping the span to its recordings): the session
    # goes on, and the operator reads which span was asked and which answered
    other = Span(SPAN.start + 60, SPAN.end)
    gw, device = await gateway_with_device(tmp_path, device_scenario("Playback", WE_BYE, "", answered=other))
    caplog.set_level("INFO", logger="gb28181gw.streams")
    udp = await UdpConsumer.start()
    try:
        st, _ = await gw.streams.open_recorded(
            CH, kind=SessionKind.PLAYBACK, span=SPAN, transport="udp", host="127.0.0.1", port=udp.port
        )
        (said,) = [r for r in caplog.records if r.getMessage() == "device answered another span"]
        assert (said.asked, said.answered) == (SPAN.sdp_time, other.sdp_time)  # type: ignore[attr-defined]
        await gw.streams.stop_stream(st.id)
        await finished(device)
    finally:
        udp.close()
        await gw.stop()


async def test_bad_spans_are_refused_before_any_invite(tmp_path: Path) -> None:
    gw, device = await gateway_with_device(tmp_path, device_scenario("Playback", "", ""))
    try:
        now = int(time.time())
        for span, words in [
            (Span(SPAN.end, SPAN.start), "before it starts"),
            (Span(now + 3600, now + 7200), "in the future"),
            (Span(SPAN.start, SPAN.start + 3 * 86400), "playback.max_span"),
        ]:
            with pytest.raises(StreamError, match=words) as err:
                await gw.streams.open_recorded(
                    CH, kind=SessionKind.PLAYBACK, span=span, transport="udp", host="127.0.0.1", port=9
                )
            assert err.value.status == 400
        assert not gw.streams.streams
        local = Span.from_local(
            dt.datetime(2024, 5, 6, 8), dt.datetime(2024, 5, 6, 8, 10), dt.timezone(dt.timedelta(hours=8))
        )
        assert local == SPAN
    finally:
        device.kill()
        await device.wait()
        await gw.stop()
        await asyncio.sleep(0)


#: A second span, right after the first: another INVITE, another stream.
LATER = Span(SPAN.end, SPAN.end + 600)
OFFER_FORMAT = "v/2/6/25/1/4096a///"


def tcp_answer(kind: str, span: Span, *, port: int, setup: str) -> str:
    """The device's answer over TCP: ``setup`` is the device's role (active: it connects to us)."""
    sdp = recorded_answer(kind, span).replace("m=video 15060 RTP/AVP 96", f"m=video {port} TCP/RTP/AVP 96")
    return sdp.replace("a=sendonly", f"a=sendonly\r\na=setup:{setup}\r\na=connection:new")


@pytest.mark.parametrize("mode", ["tcp-passive", "tcp-active"])
async def test_playback_over_tcp_with_a_configured_f_line(tmp_path: Path, mode: str) -> None:
    # the device's media over TCP either way; the offer carries media.offer_format as its f= line
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    ours = "passive" if mode == "tcp-passive" else "active"
    checks = recorded_checks("Playback", SPAN) + (
        f'\n      <ereg regexp="m=video [0-9]+ TCP/RTP/AVP 96 98 97" search_in="body" check_it="true" assign_to="m"/>'
        f'\n      <ereg regexp="a=setup:{ours}" search_in="body" check_it="true" assign_to="setup"/>'
        f'\n      <ereg regexp="f={re.escape(OFFER_FORMAT)}\\r" search_in="body" check_it="true" assign_to="f"/>'
    )
    scenario = sipp_scenario(
        "invite_uas.xml",
        checks=checks,
        ch=CH,
        answer=tcp_answer(
            "Playback",
            SPAN,
            port=server.sockets[0].getsockname()[1],
            setup="active" if mode == "tcp-passive" else "passive",
        ),
        then=WE_BYE,
        refs="gwfrom,subject,s,u,t,all,y,m,setup,f",
    ).encode()
    gw, device = await gateway_with_device(
        tmp_path, scenario, **{"media.stream_mode": mode, "media.offer_format": OFFER_FORMAT}
    )
    tcp = await TcpConsumer.start()
    writer: asyncio.StreamWriter | None = None
    try:
        st, consumer = await gw.streams.open_recorded(
            CH, kind=SessionKind.PLAYBACK, span=SPAN, transport="tcp", host="127.0.0.1", port=tcp.port
        )
        assert st.session.format == OFFER_FORMAT
        if mode == "tcp-passive":
            _, writer = await asyncio.open_connection("127.0.0.1", st.port)  # the device connects to us
        else:
            writer = await asyncio.wait_for(accepted.get(), 5)  # we connected to the device
        ps = gb_ps(50, 10)
        await send_tcp(packetize(ps, int(st.session.ssrc)), writer)
        await wait_for(lambda: decode_h264(tcp.got.payload()) == 50)
        assert tcp.got.ssrcs == {consumer.ssrc}
        await gw.streams.stop_stream(st.id)
        await finished(device)
        await wait_for(lambda: gw.streams.pools[0].in_use == 0 and gw.streams.ssrcs.active == 0)
    finally:
        if writer is not None:
            writer.close()
        server.close()
        tcp.close()
        await gw.stop()


async def test_two_spans_are_two_sessions_and_a_second_viewer_joins_one(tmp_path: Path) -> None:
    # two viewers of different spans: two INVITEs, two streams; a third viewer joins the first
    # over the admin API: no INVITE, the same media
    checks = recorded_checks("Playback", SPAN).replace(
        f"t={SPAN.start} {SPAN.end}", f"t=({SPAN.start} {SPAN.end}|{LATER.start} {LATER.end})"
    )
    scenario = sipp_scenario(
        "invite_uas.xml",
        checks=checks,
        ch=CH,
        answer=recorded_answer("Playback", SPAN),  # t= of the first span for both: not held against the device
        then=WE_BYE,
        refs="gwfrom,subject,s,u,t,all,y",
    ).encode()
    gw, device = await gateway_with_device(tmp_path, scenario, calls=2)
    one, two, three = await UdpConsumer.start(), await UdpConsumer.start(), await UdpConsumer.start()
    try:
        first, a = await gw.streams.open_recorded(
            CH, kind=SessionKind.PLAYBACK, span=SPAN, transport="udp", host="127.0.0.1", port=one.port
        )
        second, _ = await gw.streams.open_recorded(
            CH, kind=SessionKind.PLAYBACK, span=LATER, transport="udp", host="127.0.0.1", port=two.port
        )
        assert first is not second and first.port != second.port and first.session.call_id != second.session.call_id
        assert first.id[0] == second.id[0] == "1" and len(gw.streams.by_call_id) == 2
        assert gw.admin is not None
        url = f"http://127.0.0.1:{gw.admin.port}/api/v1/streams/{first.id}/consumers"
        async with aiohttp.ClientSession() as http:
            join = {"consumer": {"transport": "udp", "host": "127.0.0.1", "port": three.port, "label": "second"}}
            async with http.post(url, json=join) as resp:
                joined = await resp.json()
                assert resp.status == 201, joined
            assert joined["id"] == first.id and joined["kind"] == "playback" and len(joined["consumers"]) == 2
            assert joined["span"] == {"start": SPAN.start, "end": SPAN.end, "seconds": 600}
            async with http.post(url, json={"consumer": {"transport": "udp", "port": 0}}) as resp:
                assert resp.status == 400 and "port" in (await resp.json())["error"]
        assert len(gw.streams.streams) == 2  # no third INVITE
        ps = gb_ps(50, 10)
        with socket.socket(type=socket.SOCK_DGRAM) as media:
            await send_udp(packetize(ps, int(first.session.ssrc), mtu=1400), first.port, sock=media)
        await wait_for(lambda: decode_h264(one.got.payload()) == 50 and decode_h264(three.got.payload()) == 50)
        assert not two.got.packets  # the other span's viewer sees nothing of it
        assert one.got.ssrcs == {a.ssrc} and len(three.got.ssrcs) == 1 and three.got.ssrcs != {a.ssrc}
        await gw.streams.stop_stream(first.id)
        await gw.streams.stop_stream(second.id)
        await finished(device)  # both calls ended with our BYE
        await wait_for(lambda: gw.streams.pools[0].in_use == 0 and gw.streams.ssrcs.active == 0)
        assert not gw.streams.by_call_id
    finally:
        for consumer in (one, two, three):
            consumer.close()
        await gw.stop()
