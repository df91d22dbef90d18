"""Playback and download faults at the service and the admin API, over real sockets: a SIPp device
(its SIP side) and real H.264 in PS over RTP sent by the test as its media.

Controls a device refuses, never answers or answers 481; INFO the device sends; a pause longer
than ``media.rtp_timeout``; seeks that make the timestamps jump; downloads that end every way
(MediaStatus, the span's end, past it, a BYE or silence halfway); spans with no recordings; bad
admin bodies. After each: no port, SSRC, dialog, Call-ID entry or task left.
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
from gb28181gw.services.streams import Stream
from tests.media import UdpConsumer, decode_h264, gb_ps, packetize, send_udp, wait_for

from .conftest import sipp_scenario, start_gateway
from .test_devices import finished
from .test_playback_service import SPAN, device_scenario, info_part
from .test_streams import CH, NVR, WE_BYE, gateway_with_device

pytestmark = pytest.mark.sipp

FRAMES, GOP = 50, 10  # 2 s of video at 25 fps (3600 ticks a frame)
#: A 10 s span, for downloads that reach its end in a test's time.
SHORT = Span(SPAN.start, SPAN.start + 10)


@pytest.fixture(scope="module")
def ps() -> bytes:
    return gb_ps(FRAMES, GOP)


def retimed(packets: list[bytes], *, seconds: float, seq: int) -> list[bytes]:
    """``packets`` with their RTP timestamps moved ``seconds`` later and sequence numbers from ``seq``:
    the same video further on in the recording (after a seek: a jump in both)."""
    out = []
    for i, p in enumerate(packets):
        ts = (struct.unpack_from("!I", p, 4)[0] + int(seconds * 90_000)) % (1 << 32)
        out.append(p[:2] + struct.pack("!HI", (seq + i) & 0xFFFF, ts) + p[8:])
    return out


async def open_session(gw: Gateway, port: int, kind: SessionKind, span: Span) -> Stream:
    """A recorded session of ``span`` sent to a UDP consumer on ``port``."""
    st, _ = await gw.streams.open_recorded(CH, kind=kind, span=span, transport="udp", host="127.0.0.1", port=port)
    return st


def api(gw: Gateway, path: str) -> str:
    assert gw.admin is not None
    return f"http://127.0.0.1:{gw.admin.port}/api/v1{path}"


async def no_leaks(gw: Gateway, dialogs: int) -> None:
    """Nothing of a closed session is left: stream, port, SSRC, dialog, Call-ID entry, task."""
    service = gw.streams
    await wait_for(
        lambda: (
            not service.streams
            and all(pool.in_use == 0 for pool in service.pools)
            and service.ssrcs.active == 0
            and not service._tasks._tasks
            and all(not relay.snapshot().streams for relay in service.relays)  # its sockets closed
        )
    )
    assert gw.stack.router.dialog_count == dialogs
    assert not service.by_call_id and not service.by_channel


def metric(text: str, line_start: str) -> float:
    """The value of the exposition line starting with ``line_start`` (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def scrape(gw: Gateway) -> str:
    async with aiohttp.ClientSession() as http, http.get(api(gw, "").replace("/api/v1", "/metrics")) as resp:
        assert resp.status == 200
        return await resp.text()


async def test_controls_refused_unanswered_and_481_surface_and_count(tmp_path: Path, ps: bytes) -> None:
    # the body CSeq goes 1, 2, 3, 4 in the device's dialog whatever the answers were
    then = (
        info_part(
            "^PAUSE RTSP/1.0..CSeq: 1..PauseTime: now..$",
            answer="RTSP/1.0 200 OK\r\nCSeq: 1\r\nRTP-Info: seq=1000;rtptime=0\r\n",
            name="p1",
        )
        + info_part("^PLAY RTSP/1.0..CSeq: 2..Scale: 2.0..$", status="400 Bad Request", name="p2")
        + sipp_scenario(
            "parts/info_unanswered.xml",
            checks='<ereg regexp="^PLAY RTSP/1.0..CSeq: 3..Range: npt=100-..$" search_in="body" '
            'check_it="true" assign_to="p3"/>',
        )
        + info_part(
            "^PAUSE RTSP/1.0..CSeq: 4..PauseTime: now..$", status="481 Call/Transaction Does Not Exist", name="p4"
        )
    )
    gw, device = await gateway_with_device(
        tmp_path, device_scenario("Playback", then, "p1,p2,p3,p4"), **{"playback.control_timeout": "1"}
    )
    dialogs = gw.stack.router.dialog_count
    udp = await UdpConsumer.start()
    try:
        st = await open_session(gw, udp.port, SessionKind.PLAYBACK, SPAN)
        assert gw.stack.router.dialog_count == dialogs + 1 and gw.streams.by_call_id
        with socket.socket(type=socket.SOCK_DGRAM) as media:
            await send_udp(packetize(ps, int(st.session.ssrc), mtu=1400), st.port, sock=media)
        await wait_for(lambda: decode_h264(udp.got.payload()) == FRAMES)
        url = api(gw, f"/streams/{st.id}/control")
        async with aiohttp.ClientSession() as http:
            for bad, words in [
                ({"action": "rewind"}, "unknown action 'rewind'"),
                ({}, "unknown action ''"),
                ({"action": "seek"}, "seek needs a number"),
                ({"action": "seek", "position": -3}, "cannot seek to -3.0"),
                ({"action": "speed", "scale": "fast"}, "speed needs a number"),
                ({"action": "speed", "scale": 0}, "cannot play at speed 0.0"),
            ]:
                async with http.post(url, json=bad) as resp:  # refused here: no INFO, no CSeq taken
                    answer = await resp.json()
                    assert resp.status == 400 and words in answer["error"], (bad, answer)
            async with http.post(url, json={"action": "pause"}) as resp:
                body = await resp.json()
                assert resp.status == 200, body
            assert (body["device_status"], body["cseq"], body["control"]) == (200, 1, "PAUSE")
            assert body["rtsp"] == {
                "status": 200,
                "reason": "OK",
                "cseq": 1,
                "headers": {"RTP-Info": "seq=1000;rtptime=0"},
            }
            assert body["stream"]["paused"] is True
            async with http.post(url, json={"action": "speed", "scale": 2}) as resp:
                body = await resp.json()
                assert resp.status == 502, body
            assert (body["device_status"], body["device_reason"]) == (400, "Bad Request")
            assert "device answered PLAY Scale 2.0 with 400 Bad Request" in body["error"]
            assert body["stream"]["paused"] is True and body["stream"]["scale"] == 1.0  # as it was
            async with http.post(url, json={"action": "seek", "position": 100}) as resp:
                body = await resp.json()
                assert resp.status == 504, body
            assert "did not answer PLAY Range npt=100- in 1 s" in body["error"]
            assert st.id in gw.streams.streams and st.control is not None and st.control.paused  # intact
            assert st.position is not None and st.position < 3  # the seek was not answered: no move to 100
            async with http.get(api(gw, f"/streams/{st.id}")) as resp:
                assert resp.status == 200
        # the device no longer knows the session: closed, without a BYE (SIPp would not take one)
        result = await gw.streams.control(st.id, mansrtsp.pause(0))
        assert result.status == 481 and not result.ok
        await finished(device)
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.cause == "device-gone" and ended.kind is SessionKind.PLAYBACK
        await no_leaks(gw, dialogs)
        text = await scrape(gw)
        assert metric(text, 'gb28181gw_playback_controls_total{result="ok",verb="pause"}') == 1
        assert metric(text, 'gb28181gw_playback_controls_total{result="refused-400",verb="play"}') == 1
        assert metric(text, 'gb28181gw_playback_controls_total{result="timeout",verb="play"}') == 1
        assert metric(text, 'gb28181gw_playback_controls_total{result="refused-481",verb="pause"}') == 1
        assert metric(text, 'gb28181gw_media_sessions_total{kind="playback",result="device-gone"}') == 1
        assert metric(text, 'gb28181gw_media_sessions_active{kind="playback"}') == 0
        with pytest.raises(StreamError) as err:  # nothing left to control
            await gw.streams.control(st.id, mansrtsp.resume(0))
        assert err.value.status == 404
    finally:
        udp.close()
        await gw.stop()


async def test_every_info_from_the_device_is_answered(tmp_path: Path) -> None:
    # in the dialog: 200 for MANSRTSP, 415 for another body; outside any dialog: 481
    in_dialog = {"ch": CH, "to": "[$gwfrom]", "call_id": "[call_id]"}
    then = (
        sipp_scenario("parts/device_info.xml", **in_dialog, cseq=3, content_type="Application/MANSRTSP", status=200)
        + sipp_scenario("parts/device_info.xml", **in_dialog, cseq=4, content_type="text/plain", status=415)
        + sipp_scenario(
            "parts/device_info.xml",
            ch=CH,
            to="<sip:34020000002000000001@3402000000>;tag=nosuchdialog",
            call_id="[call_id]",  # SIPp matches answers by Call-ID: the tag alone names no dialog
            cseq=5,
            content_type="Application/MANSRTSP",
            status=481,
        )
        + sipp_scenario("parts/bye_from_device.xml", ch=CH, pause=0).replace("CSeq: 2 BYE", "CSeq: 6 BYE")
    )
    gw, device = await gateway_with_device(tmp_path, device_scenario("Playback", then, ""))
    dialogs = gw.stack.router.dialog_count
    udp = await UdpConsumer.start()
    try:
        st = await open_session(gw, udp.port, SessionKind.PLAYBACK, SPAN)
        await finished(device)  # SIPp checked each answer, then ended the session itself
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.cause == "device-bye"  # none of the INFOs ended it
        await no_leaks(gw, dialogs)
    finally:
        udp.close()
        await gw.stop()


async def test_a_pause_longer_than_rtp_timeout_and_a_seek_jump_keep_the_session(tmp_path: Path, ps: bytes) -> None:
    then = (
        info_part("^PAUSE RTSP/1.0..CSeq: 1..PauseTime: now..$", name="p1")
        + info_part("^PLAY RTSP/1.0..CSeq: 2..Range: npt=now-..$", name="p2")
        + info_part("^PLAY RTSP/1.0..CSeq: 3..Range: npt=300-..$", name="p3")
        + WE_BYE
    )
    gw, device = await gateway_with_device(
        tmp_path,
        device_scenario("Playback", then, "p1,p2,p3"),
        **{"media.rtp_timeout": "1", "media.stats_interval": "0.1"},
    )
    udp = await UdpConsumer.start()
    try:
        st = await open_session(gw, udp.port, SessionKind.PLAYBACK, SPAN)
        packets = packetize(ps, int(st.session.ssrc), mtu=1400)
        media = socket.socket(type=socket.SOCK_DGRAM)
        await send_udp(packets, st.port, sock=media)
        await wait_for(lambda: len(udp.got.packets) == len(packets))
        await wait_for(lambda: st.position is not None and st.position > 1.9)
        assert (await gw.streams.control(st.id, mansrtsp.pause(0))).ok
        await asyncio.sleep(2.5)  # 2.5 times media.rtp_timeout without a packet
        assert st.id in gw.streams.streams and st.control is not None and st.control.paused
        assert (await gw.streams.control(st.id, mansrtsp.resume(0))).ok
        await asyncio.sleep(0.5)  # the pause does not count after the resume: still open
        assert st.id in gw.streams.streams
        await send_udp(retimed(packets, seconds=2.0, seq=1000 + len(packets)), st.port, sock=media)
        await wait_for(lambda: len(udp.got.packets) == 2 * len(packets))  # media flows again
        await wait_for(lambda: st.position is not None and st.position > 3.9)
        # a seek: the device's sequence and timestamps jump; the relay goes on, the position follows
        assert (await gw.streams.control(st.id, mansrtsp.seek(0, 300))).ok
        assert st.position == 300
        await send_udp(retimed(packets, seconds=5000.0, seq=40000), st.port, sock=media)
        await wait_for(lambda: len(udp.got.packets) == 3 * len(packets))
        # the relay saw the jump: the 2 s after it count from the seek, read however late
        await wait_for(lambda: st.position is not None and st.position > 301.9)
        assert st.position is not None and st.position < 302.1
        assert decode_h264(udp.got.payload()) == 3 * FRAMES
        media.close()
        assert st.id in gw.streams.streams
        await gw.streams.stop_stream(st.id)
        await finished(device)
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.cause == "operator" and ended.complete is False
    finally:
        udp.close()
        await gw.stop()


async def test_a_pause_past_pause_limit_ends_the_session_with_bye(tmp_path: Path, ps: bytes) -> None:
    # a pause has no media timeout; a session nobody resumes (a superior that forgot its dialog)
    # must still end, and its device hear our BYE
    then = info_part("^PAUSE RTSP/1.0..CSeq: 1..PauseTime: now..$", name="p1") + WE_BYE
    gw, device = await gateway_with_device(
        tmp_path,
        device_scenario("Playback", then, "p1"),
        **{"media.rtp_timeout": "5", "media.stats_interval": "0.1", "playback.pause_limit": "1"},
    )
    dialogs = gw.stack.router.dialog_count
    udp = await UdpConsumer.start()
    try:
        st = await open_session(gw, udp.port, SessionKind.PLAYBACK, SPAN)
        assert (await gw.streams.control(st.id, mansrtsp.pause(0))).ok
        await finished(device)  # our BYE came, long before media.rtp_timeout
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.cause == "pause-limit" and "playback.pause_limit" in ended.reason
        await no_leaks(gw, dialogs)
    finally:
        udp.close()
        await gw.stop()


async def send_span(
    media: socket.socket, port: int, ps: bytes, ssrc: int, seconds: int, *, at: int = 0, seq: int = 1000
) -> int:
    """Send ``seconds`` of video from ``at`` seconds into the span (the 2 s clip again and again,
    later each time) from ``media`` (the device's one media socket); the next sequence number."""
    packets = packetize(ps, ssrc, mtu=1400)
    for start in range(at, at + seconds, 2):
        await send_udp(retimed(packets, seconds=start, seq=seq), port, sock=media)
        seq += len(packets)
    return seq


async def short_download(
    tmp_path: Path, tail: str, **overrides: str
) -> tuple[Gateway, asyncio.subprocess.Process, UdpConsumer, socket.socket]:
    """A gateway, a SIPp device answering a Download of :data:`SHORT` (then ``tail``), a consumer
    and the device's media socket."""
    scenario = device_scenario("Download", tail, "").replace(str(SPAN.end).encode(), str(SHORT.end).encode())
    settings = {"media.rtp_timeout": "1", "media.stats_interval": "0.1", **overrides}
    gw, device = await gateway_with_device(tmp_path, scenario, **settings)
    return gw, device, await UdpConsumer.start(), socket.socket(type=socket.SOCK_DGRAM)


@pytest.mark.parametrize("workers", ["0", "1"], ids=["in-process", "worker-process"])
async def test_download_to_the_span_end_then_silence_is_complete(tmp_path: Path, ps: bytes, workers: str) -> None:
    # no MediaStatus: media up to the span's end, then nothing → closed "span-end" at rtp_timeout, complete
    # (a relay worker reports the timestamps over its pipe: the same)
    gw, device, udp, media = await short_download(tmp_path, WE_BYE, **{"media.workers": workers})
    dialogs = gw.stack.router.dialog_count
    try:
        st = await open_session(gw, udp.port, SessionKind.DOWNLOAD, SHORT)
        async with aiohttp.ClientSession() as http:
            await send_span(media, st.port, ps, int(st.session.ssrc), 4)
            await wait_for(lambda: st.position is not None and st.position > 3.9)
            async with http.get(api(gw, f"/streams/{st.id}")) as resp:
                shown = await resp.json()
            assert shown["kind"] == "download" and shown["span"]["seconds"] == 10
            assert 0.39 < shown["progress"] < 0.5 and shown["complete"] is False and shown["file_size"] == 1234567
            await send_span(
                media, st.port, ps, int(st.session.ssrc), 6, at=4, seq=5000
            )  # up to 10 s (the last frame at 9.96 s)
            await finished(device)  # silence for rtp_timeout: our BYE
            async with http.get(api(gw, f"/streams/{st.id}")) as resp:
                assert resp.status == 410
                gone = await resp.json()
        assert gone["cause"] == "span-end" and gone["complete"] is True and gone["kind"] == "download"
        assert "sent its span" in gone["error"]
        await no_leaks(gw, dialogs)
        text = await scrape(gw)
        assert metric(text, 'gb28181gw_downloads_total{result="complete"}') == 1
        assert metric(text, 'gb28181gw_media_sessions_total{kind="download",result="span-end"}') == 1
        sent = sum(len(p) for p in packetize(ps, 1)) * 5
        assert len(ps) * 5 <= metric(text, "gb28181gw_download_bytes_total") <= sent
    finally:
        media.close()
        udp.close()
        await gw.stop()


async def test_download_going_on_past_the_span_is_ended_by_end_grace(tmp_path: Path, ps: bytes) -> None:
    overrides = {"media.rtp_timeout": "5", "playback.end_grace": "2"}
    gw, device, udp, media = await short_download(tmp_path, WE_BYE, **overrides)
    try:
        st = await open_session(gw, udp.port, SessionKind.DOWNLOAD, SHORT)
        seq = await send_span(media, st.port, ps, int(st.session.ssrc), 10)
        await asyncio.sleep(0.3)
        assert st.id in gw.streams.streams  # at the span's end, within the grace
        await send_span(media, st.port, ps, int(st.session.ssrc), 4, at=10, seq=seq)  # 14 s of a 10 s span
        await finished(device)  # ended well before rtp_timeout
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.cause == "span-end" and ended.complete
        assert "past the span's end" in ended.reason
        assert gw.streams.downloads[("complete",)] == 1
    finally:
        media.close()
        udp.close()
        await gw.stop()


@pytest.mark.parametrize("how", ["device-bye", "media-stops"])
async def test_a_download_that_stops_halfway_is_incomplete(tmp_path: Path, ps: bytes, how: str) -> None:
    tail = sipp_scenario("parts/bye_from_device.xml", ch=CH, pause=300) if how == "device-bye" else WE_BYE
    gw, device, udp, media = await short_download(tmp_path, tail)
    dialogs = gw.stack.router.dialog_count
    try:
        st = await open_session(gw, udp.port, SessionKind.DOWNLOAD, SHORT)
        await send_span(media, st.port, ps, int(st.session.ssrc), 4)
        await finished(device)
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.complete is False
        assert ended.cause == ("device-bye" if how == "device-bye" else "media-timeout")
        assert ended.position is not None and 3.5 < ended.position < 4.1
        assert gw.streams.downloads[("incomplete",)] == 1 and gw.streams.downloads[("complete",)] == 0
        await no_leaks(gw, dialogs)
    finally:
        media.close()
        udp.close()
        await gw.stop()


async def test_media_status_after_the_stream_closed_does_nothing_harmful(tmp_path: Path, ps: bytes) -> None:
    # the device's BYE right after its MediaStatus: the drain timer must not close (or count) twice
    then = sipp_scenario("parts/media_status.xml", pause=100, sender=CH, from_tag="[pid]dev").replace(
        '<recv request="BYE"/>', "<!-- no BYE of ours: the device's own follows -->"
    )
    assert "<!-- no BYE of ours" in then
    then = then.split("<!-- no BYE of ours")[0]  # up to the 200 to the MediaStatus
    then += sipp_scenario("parts/bye_from_device.xml", ch=CH, pause=0).replace("CSeq: 2 BYE", "CSeq: 31 BYE")
    gw, device = await gateway_with_device(tmp_path, device_scenario("Download", then, ""))
    dialogs = gw.stack.router.dialog_count
    udp = await UdpConsumer.start()
    try:
        st = await open_session(gw, udp.port, SessionKind.DOWNLOAD, SPAN)
        await finished(device)
        await asyncio.sleep(0.8)  # past COMPLETE_DRAIN
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.cause == "device-bye" and ended.complete is True
        assert gw.streams.closes[("complete",)] == 0 and gw.streams.closes[("device-bye",)] == 1
        assert gw.streams.downloads[("complete",)] == 1
        assert st.drain is None
        await no_leaks(gw, dialogs)
    finally:
        udp.close()
        await gw.stop()


async def test_a_keepalive_with_the_sessions_call_id_reaches_the_device_service(tmp_path: Path) -> None:
    then = sipp_scenario("parts/keepalive_same_call_id.xml", device=NVR) + WE_BYE
    gw, device = await gateway_with_device(tmp_path, device_scenario("Playback", then, ""))
    udp = await UdpConsumer.start()
    try:
        before = gw.registrar.devices[NVR].last_keepalive
        st = await open_session(gw, udp.port, SessionKind.PLAYBACK, SPAN)
        await wait_for(lambda: gw.registrar.devices[NVR].last_keepalive > before)
        assert st.id in gw.streams.streams and not st.complete
        await gw.streams.stop_stream(st.id)
        await finished(device)
    finally:
        udp.close()
        await gw.stop()


#: A good POST /api/v1/playbacks body: SPAN in the site's zone (Asia/Shanghai).
PLAYBACK = {
    "channel_id": CH,
    "kind": "playback",
    "start": "2024-05-06T08:00:00",
    "end": "2024-05-06T08:10:00",
    "consumer": {"transport": "udp", "host": "127.0.0.1", "port": 9},
}


async def test_a_span_without_recordings(tmp_path: Path) -> None:
    # the device refuses with 404: a clear error, nothing left; over the admin API the same words
    refused = sipp_scenario("invite_refused_uas.xml", status=404, reason="Not Found").encode()
    gw, device = await gateway_with_device(tmp_path, refused)
    dialogs = gw.stack.router.dialog_count
    try:
        async with aiohttp.ClientSession() as http, http.post(api(gw, "/playbacks"), json=PLAYBACK) as resp:
            answer = await resp.json()
        assert resp.status == 404 and "answered the INVITE 404 Not Found" in answer["error"], answer
        await finished(device)
        await no_leaks(gw, dialogs)
        assert gw.streams.sessions[("playback", "refused-404")] == 1
    finally:
        await gw.stop()


async def test_a_device_that_answers_and_never_sends_media(tmp_path: Path) -> None:
    gw, device = await gateway_with_device(
        tmp_path, device_scenario("Playback", WE_BYE, ""), **{"media.rtp_timeout": "1"}
    )
    dialogs = gw.stack.router.dialog_count
    try:
        st = await open_session(gw, 9, SessionKind.PLAYBACK, SPAN)
        await finished(device)
        ended = gw.streams.ended_stream(st.id)
        assert ended is not None and ended.cause == "media-timeout" and ended.reason.startswith("no RTP at all")
        assert ended.complete is False
        await no_leaks(gw, dialogs)
    finally:
        await gw.stop()


BAD_BODIES: list[tuple[Any, str]] = [
    ("not json", "the body must be JSON"),
    ([1, 2], "the body must be JSON"),
    ({"channel_id": "123", "kind": "playback"}, "invalid channel ID"),
    ({"kind": "live"}, 'kind must be "playback" or "download"'),
    ({"kind": None}, 'kind must be "playback" or "download"'),
    ({"start": None}, "start/end: a time is ISO 8601"),
    ({"start": "yesterday"}, "'yesterday' is not a time"),
    ({"end": True}, "not true/false"),
    ({"end": -5}, "is not epoch seconds"),
    ({"speed": 0}, "speed must be a number more than 0"),
    ({"speed": "fast"}, "speed must be a number more than 0"),
    ({"kind": "download", "speed": 2.5}, "a download's speed is a whole number 1-256"),
    ({"kind": "download", "speed": 1000}, "a download's speed is a whole number 1-256"),
    ({"consumer": None}, "the body must be JSON"),
    ({"consumer": {"transport": "sctp", "port": 9}}, "consumer transport must be udp, tcp or tcp-passive"),
    ({"consumer": {"transport": "udp", "port": 70000}}, "consumer port must be 1-65535"),
    ({"consumer": {"transport": "udp", "port": 9, "ttl": -1}}, "consumer ttl must be a positive number"),
    ({"start": "2024-05-06T08:10:00", "end": "2024-05-06T08:00:00"}, "before it starts"),
    ({"start": "2099-01-01T00:00:00", "end": "2099-01-01T01:00:00"}, "in the future"),
    ({"start": "2024-05-01T00:00:00", "end": "2024-05-06T00:00:00"}, "more than playback.max_span (24 h)"),
]


async def test_bad_admin_bodies_are_400_with_words_before_any_invite() -> None:
    gw = await start_gateway()  # no device at all: nothing may be sent anywhere
    good = PLAYBACK
    try:
        async with aiohttp.ClientSession() as http:
            for change, words in BAD_BODIES:
                body = change if not isinstance(change, dict) else {**good, **change}
                kwargs: dict[str, Any] = (
                    {"data": body, "headers": {"Content-Type": "application/json"}}
                    if isinstance(body, str)
                    else {"json": body}
                )
                async with http.post(api(gw, "/playbacks"), **kwargs) as resp:
                    answer = await resp.json()
                assert resp.status == 400, (change, answer)
                assert words in answer["error"] + answer.get("hint", ""), (change, answer)
            # the controls of a stream nobody has
            async with http.post(api(gw, "/streams/1000000001/control"), json={"action": "pause"}) as resp:
                assert resp.status == 404
            async with http.post(api(gw, "/streams/1000000001/consumers"), json={"port": 9}) as resp:
                assert resp.status == 404
        assert not gw.streams.streams and gw.streams.ssrcs.active == 0
        assert gw.streams.results[("bad-span",)] == 3
    finally:
        await gw.stop()
