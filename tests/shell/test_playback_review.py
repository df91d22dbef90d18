"""Recorded sessions as a hostile device, operator or integrator would push them, over real sockets:
a SIPp device (its SIP side) and the admin API.

A Download answer whose ``a=filesize`` holds Unicode digits; seeks a download or past the span's
end (refused before any INFO); a TEARDOWN the device accepts (the session ends at once, with our
BYE); admin bodies with times no clock has (epoch 1e20, year 1) and speeds no device reads.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gb28181gw.app import Gateway
from gb28181gw.errors import StreamError
from gb28181gw.gb import mansrtsp
from gb28181gw.gb.playback import Span
from gb28181gw.sdp import SessionKind
from gb28181gw.services.streams import COMPLETE_DRAIN, Stream
from tests.media import UdpConsumer, gb_ps, packetize, send_udp, wait_for

from .conftest import sipp_scenario, start_gateway
from .test_devices import finished, free_udp_port, register_expires_zero
from .test_playback_faults import PLAYBACK, api, no_leaks, open_session
from .test_playback_service import SPAN, device_scenario, info_part, recorded_answer, recorded_checks
from .test_streams import CH, WE_BYE, answer, gateway_with_device, scenario

pytestmark = pytest.mark.sipp


async def test_a_download_answer_with_odd_digits_is_taken_and_a_seek_in_it_refused(tmp_path: Path) -> None:
    # "²" is a digit to str.isdigit() and a ValueError to int(): it killed the INVITE's task, so
    # open_recorded() never returned and the stream, its port and SSRC were never given back
    scenario = sipp_scenario(
        "invite_uas.xml",
        checks=recorded_checks("Download", SPAN),
        ch=CH,
        answer=recorded_answer("Download", SPAN, extra="a=filesize:\u00b2\u00b3"),
        then=WE_BYE,  # no INFO: a seek in a download is refused before it is sent
        refs="gwfrom,subject,s,u,t,all,y",
    ).encode()
    gw, device = await gateway_with_device(tmp_path, scenario)
    dialogs = gw.stack.router.dialog_count
    udp = await UdpConsumer.start()
    try:
        st = await asyncio.wait_for(open_session(gw, udp.port, SessionKind.DOWNLOAD, SPAN), 5)
        assert st.session.file_size is None  # unknown, as Hikvision's -1 is
        with pytest.raises(StreamError, match="download") as refused:
            await gw.streams.control(st.id, mansrtsp.seek(0, 100))
        assert refused.value.status == 400
        assert st.control is not None and st.control.cseq == 0 and st.position == 0  # nothing sent, nothing moved
        await gw.streams.stop_stream(st.id)
        await finished(device)
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.complete is False
        await no_leaks(gw, dialogs)
    finally:
        udp.close()
        await gw.stop()


async def playback(
    tmp_path: Path, then: str, refs: str, **overrides: str
) -> tuple[Gateway, asyncio.subprocess.Process, int, UdpConsumer, Stream]:
    """A gateway, a SIPp device answering a Playback of :data:`SPAN` (then ``then``), the gateway's
    dialogs before it, a consumer and the session open toward it."""
    gw, device = await gateway_with_device(tmp_path, device_scenario("Playback", then, refs), **overrides)
    dialogs = gw.stack.router.dialog_count
    udp = await UdpConsumer.start()
    return gw, device, dialogs, udp, await open_session(gw, udp.port, SessionKind.PLAYBACK, SPAN)


async def test_a_teardown_the_device_accepts_ends_the_session_with_our_bye(tmp_path: Path) -> None:
    # a seek past the span's end is refused before the INFO (the clock would take it as media
    # sent: span-end, complete); the TEARDOWN goes, and its 200 ends the session at once — not
    # at media.rtp_timeout with a media-timeout cause, a consumer left staring at nothing
    then = info_part("^TEARDOWN RTSP/1.0..CSeq: 1..$", name="t1") + WE_BYE
    gw, device, dialogs, udp, st = await playback(tmp_path, then, "t1", **{"media.rtp_timeout": "30"})
    try:
        with pytest.raises(StreamError, match="the span is 600 s long") as refused:
            await gw.streams.control(st.id, mansrtsp.seek(0, SPAN.seconds + 100))
        assert refused.value.status == 400 and st.position == 0
        async with aiohttp.ClientSession() as http:
            async with http.post(api(gw, f"/streams/{st.id}/control"), json={"action": "teardown"}) as resp:
                answer = await resp.json()
                assert resp.status == 200, answer
            assert answer["cseq"] == 1 and answer["device_status"] == 200
            await asyncio.wait_for(finished(device), 5)  # our BYE came at once
            async with http.get(api(gw, f"/streams/{st.id}")) as resp:
                assert resp.status == 410
                gone = await resp.json()
            assert gone["cause"] == "teardown" and gone["complete"] is False
            async with http.post(api(gw, f"/streams/{st.id}/control"), json={"action": "resume"}) as resp:
                assert resp.status == 410  # gone, and it says why
        assert gw.streams.closes[("teardown",)] == 1
        assert gw.streams.controls[("teardown", "ok")] == 1
        await no_leaks(gw, dialogs)
    finally:
        udp.close()
        await gw.stop()


async def test_a_paused_session_whose_device_goes_offline_ends(tmp_path: Path) -> None:
    # a pause never times out (media.rtp_timeout counts from the resume); a device gone must still end it
    then = info_part("^PAUSE RTSP/1.0..CSeq: 1..PauseTime: now..$", name="p1") + WE_BYE
    gw, device, dialogs, udp, st = await playback(tmp_path, then, "p1", **{"media.rtp_timeout": "1"})
    try:
        assert (await gw.streams.control(st.id, mansrtsp.pause(0))).ok
        await asyncio.sleep(1.5)  # longer than media.rtp_timeout with no RTP at all: still there
        assert st.id in gw.streams.streams
        await register_expires_zero(gw, tmp_path, free_udp_port())
        await finished(device)  # our BYE
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.cause == "device-offline" and ended.complete is False
        await no_leaks(gw, dialogs)
    finally:
        udp.close()
        await gw.stop()


async def test_media_status_in_a_live_dialog_does_not_end_the_live_stream(tmp_path: Path) -> None:
    # MediaStatus 121 says a recording was sent: a live stream has none, and closed "complete" a
    # moment later (telling a superior its live view had "ended")
    tail = sipp_scenario("parts/media_status.xml", pause=100, sender=CH, from_tag="[pid]dev")  # then our BYE
    gw, device = await gateway_with_device(tmp_path, scenario(answer(), tail=tail))
    told: list[str] = []
    gw.streams.on_media_status(lambda st: told.append(st.id))
    udp = await UdpConsumer.start()
    oks = gw.stack.counters.responses_out["UDP", b"200"]
    try:
        st, _ = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        await wait_for(lambda: gw.stack.counters.responses_out["UDP", b"200"] > oks)  # the MESSAGE answered
        await asyncio.sleep(COMPLETE_DRAIN + 0.3)  # when a recorded stream would have closed
        assert st.id in gw.streams.streams and not st.complete and not told
        await gw.streams.stop_stream(st.id)
        await finished(device)
        assert gw.streams.closes[("operator",)] == 1 and gw.streams.closes[("complete",)] == 0
    finally:
        udp.close()
        await gw.stop()


def stretched(packets: list[bytes], factor: int) -> list[bytes]:
    """``packets`` with the time between their RTP timestamps ``factor`` times longer: the same
    frames as a fast download sends them (each frame further on in the recording; under the
    relay's 10 s jump between two frames)."""
    first = struct.unpack_from("!I", packets[0], 4)[0]
    out = []
    for p in packets:
        ts = struct.unpack_from("!I", p, 4)[0]
        out.append(p[:4] + struct.pack("!I", (first + (ts - first) * factor) % (1 << 32)) + p[8:])
    return out


async def test_a_fast_download_that_sent_its_span_is_complete(tmp_path: Path) -> None:
    # at a=downloadspeed 256, minutes of recording come between two readings of the clock: a step
    # over 120 s was taken for a jump, the position stayed at 0 and a whole download ended
    # "media-timeout", incomplete
    span = Span(SPAN.start, SPAN.start + 198)
    scenario = device_scenario("Download", WE_BYE, "").replace(str(SPAN.end).encode(), str(span.end).encode())
    gw, device = await gateway_with_device(tmp_path, scenario, **{"media.rtp_timeout": "1"})
    dialogs = gw.stack.router.dialog_count
    udp = await UdpConsumer.start()
    media = socket.socket(type=socket.SOCK_DGRAM)
    try:
        st, _ = await gw.streams.open_recorded(
            CH,
            kind=SessionKind.DOWNLOAD,
            span=span,
            download_speed=256,
            transport="udp",
            host="127.0.0.1",
            port=udp.port,
        )
        # 50 frames 4 s apart in the recording (the last at 196 s), sent at once
        packets = stretched(packetize(gb_ps(50, 10), int(st.session.ssrc), mtu=1400), 100)
        await send_udp(packets, st.port, sock=media)
        await finished(device)  # silence for rtp_timeout once the span is sent: our BYE
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.position is not None and ended.position > 195, ended
        assert ended.cause == "span-end" and ended.complete is True
        assert gw.streams.downloads[("complete",)] == 1
        await no_leaks(gw, dialogs)
    finally:
        media.close()
        udp.close()
        await gw.stop()


async def test_a_download_the_device_ends_with_bye_right_after_its_burst_is_complete(tmp_path: Path) -> None:
    # a relay worker reports its figures every media.stats_interval: the verdict at the device's
    # BYE took the last report, from before the download's final burst, and called it incomplete
    tail = sipp_scenario("parts/bye_from_device.xml", ch=CH, pause=400)
    span = Span(SPAN.start, SPAN.start + 10)
    scenario = device_scenario("Download", tail, "").replace(str(SPAN.end).encode(), str(span.end).encode())
    gw, device = await gateway_with_device(tmp_path, scenario, **{"media.workers": "1", "media.stats_interval": "60"})
    dialogs = gw.stack.router.dialog_count
    udp = await UdpConsumer.start()
    media = socket.socket(type=socket.SOCK_DGRAM)
    try:
        st = await open_session(gw, udp.port, SessionKind.DOWNLOAD, span)
        # 50 frames 0.2 s apart in the recording (the last at 9.8 s), sent at once
        packets = stretched(packetize(gb_ps(50, 10), int(st.session.ssrc), mtu=1400), 5)
        await send_udp(packets, st.port, sock=media)
        await finished(device)
        await wait_for(lambda: gw.streams.ended_stream(st.id) is not None)  # closed once the worker's figures came
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.cause == "device-bye", ended
        assert ended.complete is True and ended.position is not None and ended.position > 9.7, ended
        assert gw.streams.downloads[("complete",)] == 1
        await wait_for(lambda: all(pool.in_use == 0 for pool in gw.streams.pools))  # the relay closed it
        for relay in gw.streams.relays:  # its report every 60 s would be late for no_leaks
            await relay.fresh_snapshot()
        await no_leaks(gw, dialogs)
    finally:
        media.close()
        udp.close()
        await gw.stop()


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"start": 1e20}, "is not epoch seconds"),  # beyond time_t: an OverflowError, a 500 before
    ({"end": 2**64}, "is not epoch seconds"),
    ({"start": "0001-01-01T00:00:00", "end": "0001-01-01T01:00:00"}, "before 1970"),
    ({"start": "1960-01-01T00:00:00+14:00", "end": "1960-01-01T01:00:00+14:00"}, "before 1970"),
    ({"start": "9999-12-31T22:00:00", "end": "9999-12-31T23:59:59"}, "in the future"),
    ({"speed": 1e300}, "a playback's speed is 1/256 to 256"),  # its Scale control could not be written
    ({"speed": 0.001}, "a playback's speed is 1/256 to 256"),
]


async def test_times_and_speeds_no_clock_or_device_has_are_400_before_any_invite() -> None:
    gw = await start_gateway()  # no device at all: nothing may be sent anywhere
    try:
        async with aiohttp.ClientSession() as http:
            for change, words in BAD_BODIES:
                async with http.post(api(gw, "/playbacks"), json={**PLAYBACK, **change}) as resp:
                    assert resp.status == 400, (change, await resp.text())
                    answer = await resp.json()
                assert words in answer["error"], (change, answer)
        assert not gw.streams.streams and gw.streams.ssrcs.active == 0
        assert gw.streams.results[("bad-span",)] == 3  # the span's checks; the times themselves before them
    finally:
        await gw.stop()
