"""The conformance doctor end to end over real sockets: a SIPp device registers with digest and keeps
alive, then plays the device through ``POST /api/v1/devices/{id}/doctor`` (tests/shell/sipp/
doctor_device_uas.xml answers every query and INVITE); the test sends real H.264 in PS as its media,
over UDP or, TCP passive, connecting to the gateway's media port with RFC 4571 frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gb28181gw.app import Gateway
from gb28181gw.gb.doctor import CHECKS, DoctorReport, Outcome
from gb28181gw.gb.model import Channel
from gb28181gw.sdp import StreamMode
from gb28181gw.services.streams import Stream
from tests.helpers import media_port
from tests.media import UdpConsumer, gb_ps, packetize, send_tcp, send_udp, wait_for

from .conftest import run_sipp, sipp_scenario, start_gateway
from .test_devices import finished, free_udp_port, play_device
from .test_devices import register as register_openly

pytestmark = pytest.mark.sipp

NVR = "34020000001180000001"
CH, CH2 = "34020000001310000001", "34020000001310000002"
PASSWORD = "12345678"
FRAMES, GOP = 30, 10
BEIJING = datetime.timezone(datetime.timedelta(hours=8))


def part(cseq: int, body: str) -> str:
    return sipp_scenario("parts/message_response.xml", device=NVR, cseq=cseq, body=body)


def response(cmd: str, fields: str) -> str:
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>[$sn]</SN>\r\n'
        f"<DeviceID>{NVR}</DeviceID>\r\n{fields}</Response>\r\n"
    )


def catalog(items: list[tuple[str, int]]) -> str:
    """One MESSAGE per (channel ID, SumNum it states)."""
    out = []
    for n, (item_id, sum_num) in enumerate(items):
        item = (
            f"<Item>\r\n<DeviceID>{item_id}</DeviceID>\r\n<Name>通道{n + 1}</Name>\r\n<Manufacturer>Vendor</Manufacturer>\r\n"
            f"<Parental>0</Parental>\r\n<ParentID>{NVR}</ParentID>\r\n<Status>ON</Status>\r\n"
            "<Info>\r\n<PTZType>1</PTZType>\r\n</Info>\r\n</Item>\r\n"
        )
        fields = f'<SumNum>{sum_num}</SumNum>\r\n<DeviceList Num="1">\r\n{item}</DeviceList>\r\n'
        out.append(part(40 + n, response("Catalog", fields)))
    return "".join(out)


GOOD_CATALOG = [(CH, 2), (CH2, 2)]


def device(
    catalog_items: list[tuple[str, int]] = GOOD_CATALOG,
    *,
    clock_offset: float = 0.0,
    time_format: str = "%Y-%m-%dT%H:%M:%S",
    zone: datetime.tzinfo = BEIJING,
    tcp_setup: str = "active",
    heartbeat: int = 60,
) -> bytes:
    # a clock in step, as the Date of our 200 OK set it (or off by clock_offset seconds)
    now = (datetime.datetime.now(zone) + datetime.timedelta(seconds=clock_offset)).strftime(time_format)
    status = "<Result>OK</Result>\r\n<Online>ONLINE</Online>\r\n<Status>OK</Status>\r\n"
    status += f"<Encode>ON</Encode>\r\n<Record>ON</Record>\r\n<DeviceTime>{now}</DeviceTime>\r\n"
    info = "<DeviceName>NVR</DeviceName>\r\n<Result>OK</Result>\r\n<Manufacturer>Vendor</Manufacturer>\r\n"
    info += "<Model>N1</Model>\r\n<Firmware>V1.0</Firmware>\r\n<Channel>2</Channel>\r\n"
    config = "<Result>OK</Result>\r\n<BasicParam>\r\n<Name>NVR</Name>\r\n<Expiration>3600</Expiration>\r\n"
    config += (
        f"<HeartBeatInterval>{heartbeat}</HeartBeatInterval>\r\n<HeartBeatCount>3</HeartBeatCount>\r\n</BasicParam>\r\n"
    )
    records = '<Name>NVR</Name>\r\n<SumNum>0</SumNum>\r\n<RecordList Num="0">\r\n</RecordList>\r\n'
    return sipp_scenario(
        "doctor_device_uas.xml",
        ch=CH,
        tcp_setup=tcp_setup,
        catalog=catalog(catalog_items),
        info=part(50, response("DeviceInfo", info)),
        status=part(51, response("DeviceStatus", status)),
        config=part(52, response("ConfigDownload", config)),
        records=part(53, response("RecordInfo", records)),
    ).encode("gb2312")


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway with a digest password and the NVR registered (with digest) and two keepalives seen."""
    gateway = await start_gateway(
        **{
            "registrar.password": PASSWORD,
            "media.port_min": str(media_port(1000)),
            "media.port_max": str(media_port(1099)),
            "media.linger": "0",
            # the doctor takes a catalog until the device is quiet this long: SIPp's devices have 15 s
            "devices.catalog_idle_timeout": "1",
        }
    )
    try:
        yield gateway
    finally:
        await gateway.stop()


async def register(gw: Gateway, tmp_path: Path) -> int:
    port = free_udp_port()
    inf = tmp_path / "devices.csv"
    inf.write_text(f"SEQUENTIAL\n{NVR};[authentication username={NVR} password={PASSWORD}];\n")
    result = await run_sipp("ipc_register_uac.xml", gw.stack.port, tmp_path, extra=("-inf", str(inf), "-p", str(port)))
    assert result.ok, result.stdout
    assert len(gw.registrar.keepalive_arrivals[NVR]) == 2
    return port


async def doctor(gw: Gateway, body: dict[str, Any] | None = None) -> tuple[int, list[dict[str, Any]]]:
    """POST the doctor route; the status and the lines (or the one JSON error)."""
    assert gw.admin is not None
    url = f"http://127.0.0.1:{gw.admin.port}/api/v1/devices/{NVR}/doctor"
    async with aiohttp.ClientSession() as http, http.post(url, json=body or {}) as resp:
        if resp.status != 200:
            assert resp.content_type == "application/json"
            return resp.status, [await resp.json()]
        assert resp.content_type == "application/x-ndjson"
        return 200, [json.loads(line) async for line in resp.content]


async def send_media(gw: Gateway, ps: bytes) -> None:
    """Be the device's media: for each stream the doctor opens, send ``ps`` once it has its consumer."""
    served: set[str] = set()
    while True:
        await wait_for(lambda: any(s.id not in served and s.consumers for s in gw.streams.streams.values()), 60)
        st = next(s for s in gw.streams.streams.values() if s.id not in served and s.consumers)
        served.add(st.id)
        await feed(gw, st, packetize(ps, int(st.session.ssrc)))


async def feed(gw: Gateway, st: Stream, packets: list[bytes]) -> None:
    if st.mode is StreamMode.UDP:
        await send_udp(packets, st.port)
        return
    assert st.mode is StreamMode.TCP_PASSIVE  # the device connects to the gateway's media port
    _, writer = await asyncio.open_connection("127.0.0.1", st.port)
    try:
        # the doctor ends the session once it has seen two key frames: the rest may find it gone
        with contextlib.suppress(ConnectionError):
            await send_tcp(packets, writer)
        await wait_for(lambda: st.id not in gw.streams.streams, 30)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def results(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["result"]["key"]: line["result"] for line in lines if line["event"] == "result"}


async def test_a_conforming_device_passes_every_check(gw: Gateway, tmp_path: Path) -> None:
    port = await register(gw, tmp_path)
    # the keepalive check asks for its HeartBeatInterval (ConfigDownload, asked again by config_download), the time
    # check reads DeviceStatus, the device_status check reuses it: 7 MESSAGEs and 2 INVITEs
    sipp = await play_device(device(), port, tmp_path, "doctor-device", calls=9)
    media = asyncio.create_task(send_media(gw, gb_ps(FRAMES, GOP)))
    try:
        status, lines = await doctor(gw)
    finally:
        media.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await media
    assert status == 200
    kinds = [line["event"] for line in lines]
    assert kinds == ["start"] + ["running", "result"] * len(CHECKS) + ["done"]
    assert [c["key"] for c in lines[0]["checks"]] == [c.key for c in CHECKS]
    got = results(lines)
    assert {k: (r["outcome"], r["reason"]) for k, r in got.items()} == {c.key: ("pass", "") for c in CHECKS}
    assert got["register"]["figures"]["digest"] is True
    assert got["keepalive"]["figures"]["interval"] < 5
    assert abs(got["time"]["figures"]["offset"]) <= 5
    assert got["catalog"]["detail"] == "2 channels in 2 messages, SumNum 2"
    for key in ("live_udp", "live_tcp"):
        figures = got[key]["figures"]
        assert (figures["codec"], figures["width"], figures["height"]) == ("H264", 320, 240)
        assert figures["key_frame_interval"] == GOP and figures["channel"] == CH
    assert got["record_info"]["detail"] == f"answered: no recordings of {CH} in the last 24 h"
    report = DoctorReport.from_json(lines[-1]["report"])
    assert report.passed and report.device["manufacturer"] == "Vendor" and report.gateway["id"]
    await finished(sipp)  # it saw exactly the run's requests, BYE for both INVITEs among them
    await wait_for(lambda: not gw.streams.streams and gw.streams.pools[0].in_use == 0)
    assert gw.doctor.counts["live_tcp", "pass"] == 1 and not gw.doctor.running


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        ([(CH, 2), (CH2, 3)], "SumNum differs between messages: 2, 3"),
        ([(CH, 3), (CH2, 3)], "SumNum 3 but 2 items came in 2 messages"),
        ([(CH, 2), ("34020000001000000002", 2)], "type code 100 is not defined"),
        ([(CH, 2), ("3402000000131000002", 2)], "has 19 digits"),
    ],
    ids=["sumnum-differs", "sumnum-wrong-count", "undefined-type-code", "id-of-19-digits"],
)
async def test_a_bad_catalog_fails_with_the_reason(
    gw: Gateway, tmp_path: Path, items: list[tuple[str, int]], reason: str
) -> None:
    port = await register(gw, tmp_path)
    sipp = await play_device(device(items), port, tmp_path, "doctor-catalog", calls=1)
    status, lines = await doctor(gw, {"checks": ["catalog"]})
    await finished(sipp)
    assert status == 200
    (result,) = results(lines).values()
    assert result["outcome"] == "fail" and reason in result["reason"], result
    assert not DoctorReport.from_json(lines[-1]["report"]).passed


async def test_a_sumnum_smaller_than_what_came_fails_and_every_channel_is_kept(gw: Gateway, tmp_path: Path) -> None:
    # C1: SumNum counts the items of its own message; the answer is not cut at the first one
    port = await register(gw, tmp_path)
    sipp = await play_device(device([(CH, 1), (CH2, 1)]), port, tmp_path, "doctor-small-sumnum", calls=1)
    status, lines = await doctor(gw, {"checks": ["catalog"]})
    await finished(sipp)
    got = results(lines)["catalog"]
    assert got["outcome"] == "fail" and "SumNum 1 but 2 items came in 2 messages" in got["reason"], got
    assert sorted(gw.devices.channels[NVR]) == [CH, CH2]  # the refresh it made stored both


async def test_a_device_that_never_sends_media_fails_live_udp_and_its_stream_is_closed(
    gw: Gateway, tmp_path: Path
) -> None:
    port = await register(gw, tmp_path)
    sipp = await play_device(device(), port, tmp_path, "doctor-silent", calls=1)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)  # as its catalog would have it
    status, lines = await doctor(gw, {"checks": ["live_udp"], "channel": CH})
    assert status == 200
    result = results(lines)["live_udp"]
    assert (result["outcome"], result["reason"]) == ("fail", "no media within 10 s")
    await finished(sipp)  # our BYE ended the session
    assert gw.admin is not None
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{gw.admin.port}/api/v1/streams") as resp,
    ):
        assert await resp.json() == {"streams": []}


async def test_a_run_that_cannot_start_is_a_plain_error(gw: Gateway, tmp_path: Path) -> None:
    status, (err,) = await doctor(gw)
    assert status == 404 and err["error"] == f"no device {NVR}"
    await gw.registrar.provision(NVR, password="")
    status, (err,) = await doctor(gw)
    assert status == 409 and "not registered" in err["error"]
    await register(gw, tmp_path)
    status, (err,) = await doctor(gw, {"checks": ["catalog", "colour"]})
    assert status == 400 and err["error"] == "no check colour"
    status, (err,) = await doctor(gw, {"channel": "34020000001310000099"})
    assert status == 404 and "not a channel of device" in err["error"]


async def test_one_run_per_device_and_a_client_that_leaves_cancels_its_run(gw: Gateway, tmp_path: Path) -> None:
    port = await register(gw, tmp_path)
    sipp = await play_device(device(), port, tmp_path, "doctor-leaves", calls=1)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
    assert gw.admin is not None
    url = f"http://127.0.0.1:{gw.admin.port}/api/v1/devices/{NVR}/doctor"
    http = aiohttp.ClientSession()
    try:
        resp = await http.post(url, json={"checks": ["live_udp"], "channel": CH})
        assert resp.status == 200
        await wait_for(lambda: any(s.consumers for s in gw.streams.streams.values()))  # waiting for media
        status, (err,) = await doctor(gw)
        assert status == 409 and "being checked already" in err["error"]
        resp.close()  # the client goes away mid-run
    finally:
        await http.close()
    await wait_for(lambda: not gw.doctor.running and not gw.streams.streams)
    await finished(sipp)  # the stream was closed with BYE
    assert gw.doctor.counts["live_udp", Outcome.FAIL.value] == 0  # cancelled, not failed


async def test_a_clock_out_of_step_fails_the_time_check(gw: Gateway, tmp_path: Path) -> None:
    port = await register(gw, tmp_path)
    sipp = await play_device(device(clock_offset=-3600), port, tmp_path, "doctor-clock", calls=1)
    status, lines = await doctor(gw, {"checks": ["time", "device_status"]})
    await finished(sipp)  # one DeviceStatus answers both
    got = results(lines)
    assert got["time"]["outcome"] == "fail" and got["time"]["figures"]["offset"] < -3590
    # DeviceTime is to the second and was written a moment before it was asked for
    assert re.fullmatch(
        r"device clock 36\d\d\.\d s behind ours \(tolerance 5 s\): it did not take the Date of our REGISTER 200 OK",
        got["time"]["reason"],
    ), got["time"]["reason"]
    assert got["device_status"]["outcome"] == "pass"


@pytest.mark.parametrize(
    ("time_format", "zone", "outcome", "reason"),
    [
        ("%Y-%m-%dT%H:%M:%S.%f", BEIJING, "pass", ""),  # milliseconds (and more): an xs:dateTime
        ("%Y-%m-%dT%H:%M:%S+08:00", BEIJING, "pass", ""),  # its zone said: an xs:dateTime
        ("%Y-%m-%dT%H:%M:%SZ", datetime.UTC, "pass", ""),  # in step, in UTC, and saying so
        ("%Y-%m-%d %H:%M:%S", BEIJING, "warn", "not a GB/T 28181 dateTime"),  # X8: read, and named
    ],
    ids=["milliseconds", "offset", "utc", "no-T"],
)
async def test_a_device_time_in_another_form_is_read(
    gw: Gateway, tmp_path: Path, time_format: str, zone: datetime.tzinfo, outcome: str, reason: str
) -> None:
    port = await register(gw, tmp_path)
    sipp = await play_device(device(time_format=time_format, zone=zone), port, tmp_path, "doctor-time", calls=1)
    status, lines = await doctor(gw, {"checks": ["time"]})
    await finished(sipp)
    got = results(lines)["time"]
    assert got["outcome"] == outcome and reason in got["reason"], got
    assert abs(got["figures"]["offset"]) < 5


async def test_open_registration_warns_and_a_device_without_keepalives_fails(tmp_path: Path) -> None:
    gw = await start_gateway(**{"registrar.keepalive_interval": "1"})
    try:
        await register_openly(gw, tmp_path, free_udp_port())  # no password, no keepalive after
        status, lines = await doctor(gw, {"checks": ["register", "keepalive"]})
        got = results(lines)
        assert (
            got["register"]["outcome"] == "warn"
            and "digest authentication was not exercised" in got["register"]["reason"]
        )
        assert (got["keepalive"]["outcome"], got["keepalive"]["reason"]) == ("fail", "no keepalive within 6 s")
        assert not DoctorReport.from_json(lines[-1]["report"]).passed
    finally:
        await gw.stop()


async def test_a_gateway_that_stops_mid_run_says_so_and_closes_the_stream(tmp_path: Path) -> None:
    gw = await start_gateway(**{"registrar.password": PASSWORD, "media.linger": "0"})
    stopped = False
    try:
        port = await register(gw, tmp_path)
        sipp = await play_device(device(), port, tmp_path, "doctor-stop", calls=1)
        gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR, status="ON")
        run = asyncio.create_task(doctor(gw, {"checks": ["live_udp"]}))
        await wait_for(lambda: any(s.consumers for s in gw.streams.streams.values()))  # waiting for media
        await gw.stop()  # the operator restarts the service mid-run
        stopped = True
        status, lines = await run
        assert lines[-1]["event"] == "error", lines
        assert "the gateway is stopping" in lines[-1]["message"]
        await finished(sipp)  # the device's session ended with BYE before the stack went
    finally:
        if not stopped:
            await gw.stop()


async def test_a_device_that_goes_away_mid_run_has_the_rest_skipped(gw: Gateway, tmp_path: Path) -> None:
    port = await register(gw, tmp_path)
    sipp = await play_device(device(), port, tmp_path, "doctor-gone", calls=1)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
    run = asyncio.create_task(doctor(gw, {"checks": ["live_udp", "ptz", "record_info"]}))
    await wait_for(lambda: any(s.consumers for s in gw.streams.streams.values()))
    await gw.registrar.remove(NVR)  # an operator's `device remove` while it is being checked
    status, lines = await run
    await finished(sipp)  # its session was ended with BYE
    got = results(lines)
    assert got["live_udp"]["outcome"] == "fail"
    assert got["live_udp"]["reason"].startswith("the stream ended before a key frame: device offline")
    for key in ("ptz", "record_info"):  # both come after live_udp
        assert (got[key]["outcome"], got[key]["reason"]) == ("skip", "device went offline (removed)")


async def test_a_tcp_answer_in_the_wrong_role_is_named_when_no_media_comes(gw: Gateway, tmp_path: Path) -> None:
    # M4: asked for TCP passive (the device connects), it answers a=setup:passive and waits for us
    port = await register(gw, tmp_path)
    sipp = await play_device(device(tcp_setup="passive"), port, tmp_path, "doctor-role", calls=1)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR, status="ON")
    status, lines = await doctor(gw, {"checks": ["live_tcp"]})
    await finished(sipp)
    got = results(lines)["live_tcp"]
    assert got["outcome"] == "fail", got
    assert got["reason"] == (
        "asked for TCP passive (the device connects), the device answered a=setup:passive; no media within 10 s"
    )
    assert not gw.streams.streams


async def test_the_doctors_invite_is_its_own_and_a_shared_stream_is_left_alone(gw: Gateway, tmp_path: Path) -> None:
    port = await register(gw, tmp_path)
    sipp = await play_device(device(), port, tmp_path, "doctor-own", calls=2)
    gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
    viewer = await UdpConsumer.start()
    media = asyncio.create_task(send_media(gw, gb_ps(FRAMES, GOP)))
    try:
        shared, consumer = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=viewer.port)
        status, lines = await doctor(gw, {"checks": ["live_tcp"]})
        assert results(lines)["live_tcp"]["outcome"] == "pass"  # over TCP though the device's mode is UDP
        # a second INVITE of its own, closed after; the viewer's stream is still the channel's
        assert list(gw.streams.streams) == [shared.id] and gw.streams.by_channel[CH] is shared
        assert shared.mode is StreamMode.UDP and list(shared.consumers) == [consumer.id]
        await gw.streams.remove_consumer(shared.id, consumer.id)
        await finished(sipp)  # two INVITEs, two BYEs
    finally:
        media.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await media
        viewer.close()


async def test_the_media_checks_use_a_video_channel_that_is_on_and_ptz_goes_to_a_ptz_bullet(
    gw: Gateway, tmp_path: Path
) -> None:
    port = await register(gw, tmp_path)
    sipp = await play_device(device(), port, tmp_path, "doctor-choice", calls=1)
    # an NVR's catalog: channel 1 empty (OFF), an alarm input (134), channel 2 a PTZ bullet (4, 遥控枪机)
    gw.devices.channels[NVR] = {
        CH: Channel(CH, NVR, status="OFF", extra={"PTZType": "1"}),
        "34020000001340000001": Channel("34020000001340000001", NVR, status="ON"),
        CH2: Channel(CH2, NVR, status="ON", extra={"PTZType": "4"}),
    }
    status, lines = await doctor(gw, {"checks": ["ptz"]})
    await finished(sipp)  # the PTZ stop came and was answered
    got = results(lines)["ptz"]
    assert got["outcome"] == "pass" and got["figures"] == {"channel": CH2, "ptz_type": "4"}, got


async def test_a_fixed_bullet_camera_is_not_sent_ptz(gw: Gateway, tmp_path: Path) -> None:
    await register(gw, tmp_path)
    gw.devices.channels[NVR] = {CH: Channel(CH, NVR, status="ON", extra={"PTZType": "3"})}  # 固定枪机
    status, lines = await doctor(gw, {"checks": ["ptz"]})
    got = results(lines)["ptz"]
    assert got["outcome"] == "skip" and "PTZType 3" in got["reason"], got


async def test_keepalive_gaps_before_a_reboot_are_not_measured(gw: Gateway, tmp_path: Path) -> None:
    # the engineer reboots the NVR before the acceptance run: its keepalives stop for minutes, then
    # it registers again (a refresh, as it never timed out) and keeps alive at its interval
    await register(gw, tmp_path)
    now = asyncio.get_running_loop().time()
    gw.registrar.keepalive_arrivals[NVR] = (now - 400, now - 340)  # before the reboot
    await register(gw, tmp_path)  # REGISTER and two keepalives, as after the reboot
    status, lines = await doctor(gw, {"checks": ["keepalive"]})
    got = results(lines)["keepalive"]
    assert got["outcome"] == "pass" and got["figures"]["seen"] == 2, got


async def test_keepalives_that_come_during_the_check_are_awaited(tmp_path: Path) -> None:
    gw = await start_gateway(**{"registrar.keepalive_interval": "3"})
    try:
        port = free_udp_port()
        await register_openly(gw, tmp_path, port)  # no keepalive yet
        run = asyncio.create_task(doctor(gw, {"checks": ["keepalive"]}))
        await wait_for(lambda: NVR in gw.doctor.running)
        inf = tmp_path / "keepalive.csv"
        inf.write_text(f"SEQUENTIAL\n{NVR};\n")
        # two keepalives from the address it registered from, half a second apart
        result = await run_sipp(
            "keepalive_uac.xml", gw.stack.port, tmp_path, calls=2, rate=2, extra=("-inf", str(inf), "-p", str(port))
        )
        assert result.ok, result.stdout
        _, lines = await run
        got = results(lines)["keepalive"]
        assert got["outcome"] == "pass" and got["figures"]["seen"] == 2 and got["figures"]["expected"] == 3
        assert 0.2 < got["figures"]["interval"] < 3
    finally:
        await gw.stop()


async def test_keepalives_are_measured_against_the_devices_own_heartbeat_interval(tmp_path: Path) -> None:
    # configured for a keepalive every 30 s (BasicParam), not yet asked: the check asks before it judges
    gw = await start_gateway(**{"registrar.password": PASSWORD, "registrar.keepalive_interval": "10"})
    try:
        port = await register(gw, tmp_path)
        sipp = await play_device(device(heartbeat=30), port, tmp_path, "doctor-heartbeat", calls=1)
        now = asyncio.get_running_loop().time()
        gw.registrar.keepalive_arrivals[NVR] = (now - 25, now)  # every 25 s: on time for it
        status, lines = await doctor(gw, {"checks": ["keepalive"]})
        await finished(sipp)  # its ConfigDownload was asked and answered
        got = results(lines)["keepalive"]
        assert got["outcome"] == "pass" and got["figures"]["expected"] == 30, got
        assert got["detail"].endswith("its HeartBeatInterval is 30 s"), got
    finally:
        await gw.stop()


async def test_a_first_keepalive_late_in_the_wait_is_given_its_interval_for_the_next(tmp_path: Path) -> None:
    # none seen when the run starts (it just registered): the first comes near the end of an
    # interval, the next one interval later: on time, though after the first wait ran out
    gw = await start_gateway(**{"registrar.keepalive_interval": "2"})
    try:
        port = free_udp_port()
        await register_openly(gw, tmp_path, port)
        run = asyncio.create_task(doctor(gw, {"checks": ["keepalive"]}))
        await wait_for(lambda: NVR in gw.doctor.running)
        inf = tmp_path / "keepalive.csv"
        inf.write_text(f"SEQUENTIAL\n{NVR};\n")
        for pause in (5.5, 2.0):  # the device's own timing: 5.5 s of the 7 s wait, then its 2 s interval
            await asyncio.sleep(pause)
            sent = await run_sipp(
                "keepalive_uac.xml", gw.stack.port, tmp_path, extra=("-inf", str(inf), "-p", str(port))
            )
            assert sent.ok, sent.stdout
        _, lines = await run
        got = results(lines)["keepalive"]
        assert got["outcome"] == "pass" and got["figures"]["seen"] == 2, got
    finally:
        await gw.stop()


async def cli_doctor(gw: Gateway, *args: str) -> tuple[int, str]:
    """The real ``gb28181gw doctor`` against this gateway (the loop goes on serving while it runs)."""
    assert gw.admin is not None
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "gb28181gw"), "doctor", *args, "--admin", f"http://127.0.0.1:{gw.admin.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_command_passes_a_conforming_device_and_writes_the_report(gw: Gateway, tmp_path: Path) -> None:
    port = await register(gw, tmp_path)
    sipp = await play_device(device(), port, tmp_path, "doctor-cli", calls=9)
    media = asyncio.create_task(send_media(gw, gb_ps(FRAMES, GOP)))
    report = tmp_path / "report.html"
    try:
        status, out = await cli_doctor(gw, NVR, "-o", str(report))
    finally:
        media.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await media
    assert status == 0, out
    await finished(sipp)
    page = report.read_text(encoding="utf-8")
    for check in CHECKS:
        assert check.standard in page
    assert NVR in page and "Vendor" in page and "H264" in page


async def test_the_command_fails_a_device_with_a_lying_catalog_and_says_why(gw: Gateway, tmp_path: Path) -> None:
    port = await register(gw, tmp_path)
    sipp = await play_device(device([(CH, 3), (CH2, 3)]), port, tmp_path, "doctor-cli-bad", calls=1)
    status, out = await cli_doctor(gw, NVR, "--check", "catalog", "--json")
    await finished(sipp)
    assert status == 1, out
    report = DoctorReport.from_json(json.loads(out))
    (result,) = report.results
    assert result.outcome is Outcome.FAIL and "SumNum 3 but 2 items came in 2 messages" in result.reason
