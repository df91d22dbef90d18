"""Queries and controls toward devices played by SIPp over real sockets.

A SIPp client registers the device from a fixed port and exits; a SIPp server on the same
port then plays the device answering what the gateway asks (Catalog in two MESSAGEs,
DeviceInfo, a PTZ DeviceControl whose PTZCmd it checks byte for byte).
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.manscdp.ptz import move, preset
from tests.process import free_port, http_get

from .conftest import require_sipp, run_sipp, sipp_scenario, start_gateway

pytestmark = pytest.mark.sipp

NVR = "34020000001180000001"
CH1, CH2 = "34020000001310000001", "34020000001310000002"


def response_message(cseq: int, body: str) -> str:
    return sipp_scenario("parts/message_response.xml", device=NVR, cseq=cseq, body=body)


def catalog_body(encoding: str, sn: str, item_id: str, name: str) -> str:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n'
        f'<DeviceID>{NVR}</DeviceID>\r\n<SumNum>2</SumNum>\r\n<DeviceList Num="1">\r\n<Item>\r\n'
        f"<DeviceID>{item_id}</DeviceID>\r\n<Name>{name}</Name>\r\n<Manufacturer>Vendor</Manufacturer>\r\n"
        f"<Parental>0</Parental>\r\n<ParentID>{NVR}</ParentID>\r\n<Status>ON</Status>\r\n<Info>\r\n<PTZType>1</PTZType>\r\n</Info>\r\n"
        "</Item>\r\n</DeviceList>\r\n</Response>\r\n"
    )


def device_scenario(parts: list[str], *, check: str | None = None) -> str:
    """A server scenario: take one MESSAGE (checking ``check`` in it), answer 200, then send ``parts``."""
    action = f'<ereg regexp="{check}" search_in="body" check_it="true" assign_to="checked"/>' if check else ""
    refs = "all,sn" + (",checked" if check else "")
    return sipp_scenario("message_uas.xml", check=action, parts="".join(parts), refs=refs)


def free_udp_port() -> int:
    return free_port()


def free_even_udp_port() -> int:
    """An even UDP port free on 127.0.0.1 with the odd one above it (an RTP/RTCP pair, as the relay binds)."""
    return free_port(pair=True)


async def register(gw: Gateway, tmp_path: Path, port: int, device: str = NVR) -> None:
    path = tmp_path / "register.xml"
    path.write_text(sipp_scenario("register_uac.xml", device=device, expires=3600))
    result = await run_sipp(str(path), gw.stack.port, tmp_path, extra=("-p", str(port)))
    assert result.ok, result.stdout
    assert gw.registrar.devices[device].port == port


async def play_device(
    scenario: bytes, port: int, tmp_path: Path, name: str, *, calls: int = 1, timeout: int = 15
) -> asyncio.subprocess.Process:
    """A SIPp device playing ``scenario`` on ``port``; SIPp gives up ``timeout`` seconds after start."""
    path = tmp_path / f"{name}.xml"
    path.write_bytes(scenario)
    sipp = require_sipp()
    proc = await asyncio.create_subprocess_exec(
        sipp, "-sf", str(path), "-i", "127.0.0.1", "-p", str(port), "-m", str(calls), "-timeout", f"{timeout}s", "-timeout_error",
        "-nostdin", "-trace_msg", "-message_file", str(tmp_path / f"{name}.msg"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    await asyncio.sleep(0.3)  # let it bind
    return proc


async def finished(proc: asyncio.subprocess.Process) -> str:
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


async def kill(*procs: asyncio.subprocess.Process | None) -> None:
    """Each process that is still running killed and waited for (a test's finally: no SIPp left behind)."""
    for proc in procs:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def gw() -> Gateway:
    gateway = await start_gateway()
    yield gateway  # type: ignore[misc]
    await gateway.stop()


@pytest.mark.parametrize(
    ("encoding", "codec", "names"),
    [
        ("GB2312", "gb2312", ["大门口", "停车场入口"]),
        # UTF-8 with a character only GB18030 has, and a bare & (Hikvision, X4)
        ("UTF-8", "utf-8", ["𠀀园 & 北门", "萳园"]),
    ],
    ids=["gb2312", "utf8-gb18030-char-and-bare-ampersand"],
)
async def test_catalog_in_two_messages(
    gw: Gateway, tmp_path: Path, encoding: str, codec: str, names: list[str]
) -> None:
    port = free_udp_port()
    await register(gw, tmp_path, port)
    parts = [
        response_message(31, catalog_body(encoding, "[$sn]", CH1, names[0])),
        response_message(32, catalog_body(encoding, "[$sn]", CH2, names[1])),
    ]
    proc = await play_device(device_scenario(parts).encode(codec), port, tmp_path, f"catalog-{codec}")
    result = await gw.devices.catalog(NVR)
    await finished(proc)
    assert result.complete and result.sum_num == 2 and result.messages == 2
    stored = {c.channel_id: c for c in await gw.store.load_channels(NVR)}
    assert [stored[CH1].name, stored[CH2].name] == names  # byte for byte after decoding
    assert stored[CH1].extra["PTZType"] == "1" and stored[CH1].parent_id == NVR
    # what went on the wire was in the device's encoding (GB2312: two bytes per Chinese character)
    assert names[1].encode(codec) in (tmp_path / f"catalog-{codec}.msg").read_bytes()


async def test_device_info_updates_the_device(gw: Gateway, tmp_path: Path) -> None:
    port = free_udp_port()
    await register(gw, tmp_path, port)
    body = (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>DeviceInfo</CmdType>\r\n<SN>[$sn]</SN>\r\n'
        f"<DeviceID>{NVR}</DeviceID>\r\n<DeviceName>前门NVR</DeviceName>\r\n<Result>OK</Result>\r\n"
        "<Manufacturer>Hikvision</Manufacturer>\r\n<Model>DS-7816N</Model>\r\n<Firmware>V4.30</Firmware>\r\n<Channel>16</Channel>\r\n</Response>\r\n"
    )
    proc = await play_device(device_scenario([response_message(40, body)]).encode("gb2312"), port, tmp_path, "info")
    info = await gw.devices.device_info(NVR)
    await finished(proc)
    assert info["Channel"] == "16"
    d = gw.registrar.devices[NVR]
    # issue 11 defect 6: the device's own name is its reported_name; name stays the operator's
    assert (d.name, d.reported_name, d.manufacturer, d.model, d.firmware) == (
        "",
        "前门NVR",
        "Hikvision",
        "DS-7816N",
        "V4.30",
    )


async def test_device_info_keeps_the_operators_name_apart(gw: Gateway, tmp_path: Path) -> None:
    # issue 11 defect 6: the name given with `device add --name` survives the device's DeviceInfo
    await gw.registrar.provision(NVR, name="南门 NVR")
    port = free_udp_port()
    await register(gw, tmp_path, port)
    body = (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>DeviceInfo</CmdType>\r\n<SN>[$sn]</SN>\r\n'
        f"<DeviceID>{NVR}</DeviceID>\r\n<DeviceName>IPC-7A2F</DeviceName>\r\n<Result>OK</Result>\r\n</Response>\r\n"
    )
    proc = await play_device(device_scenario([response_message(40, body)]).encode("gb2312"), port, tmp_path, "info")
    await gw.devices.device_info(NVR)
    await finished(proc)
    d = gw.registrar.devices[NVR]
    assert (d.name, d.reported_name) == ("南门 NVR", "IPC-7A2F")
    await gw.registrar.flush()
    stored = await gw.store.get_device(NVR)
    assert stored is not None and (stored.name, stored.reported_name) == ("南门 NVR", "IPC-7A2F")
    assert gw.admin is not None
    status, text = await asyncio.to_thread(http_get, f"http://127.0.0.1:{gw.admin.port}/api/v1/devices/{NVR}")
    data = json.loads(text)
    assert status == 200 and (data["name"], data["reported_name"]) == ("南门 NVR", "IPC-7A2F")


@pytest.mark.parametrize(
    ("cmd", "expected"), [(move("stop"), "A50F0100000000B5"), (preset("call", 3), "A50F01820003003A")]
)
async def test_ptz_reaches_the_device_with_the_exact_bytes(
    gw: Gateway, tmp_path: Path, cmd: object, expected: str
) -> None:
    port = free_udp_port()
    await register(gw, tmp_path, port)
    gw.devices.channels[NVR] = {}  # the device itself is the target here
    check = f"&lt;PTZCmd&gt;{expected}&lt;/PTZCmd&gt;"
    proc = await play_device(device_scenario([], check=check).encode(), port, tmp_path, "ptz")
    await gw.devices.ptz(NVR, cmd)  # type: ignore[arg-type]
    await finished(proc)
    wire = (tmp_path / "ptz.msg").read_text()
    assert f"<PTZCmd>{expected}</PTZCmd>" in wire and "<CmdType>DeviceControl</CmdType>" in wire


async def test_query_to_a_silent_device_times_out_with_a_clear_error(tmp_path: Path) -> None:
    gw = await start_gateway(**{"devices.query_timeout": "0.5"})
    try:
        port = free_udp_port()
        await register(gw, tmp_path, port)
        # the device answers 200 to the MESSAGE but never sends the Response
        proc = await play_device(device_scenario([]).encode(), port, tmp_path, "silent")
        from gb28181gw.services.devices import DeviceError

        with pytest.raises(DeviceError, match="sent no DeviceStatus response"):
            await gw.devices.device_status(NVR)
        await finished(proc)
        admin = f"http://127.0.0.1:{gw.admin.port}" if gw.admin else ""
        from click.testing import CliRunner

        from gb28181gw.cli import main

        result = await asyncio.to_thread(CliRunner().invoke, main, ["channels", "--admin", admin, "--json"])
        assert result.exit_code == 0 and json.loads(result.output) == []
    finally:
        await gw.stop()


def record_body(sn: str, start: str, end: str) -> str:
    return (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>RecordInfo</CmdType>\r\n'
        f"<SN>{sn}</SN>\r\n<DeviceID>{CH1}</DeviceID>\r\n<Name>大门口</Name>\r\n<SumNum>2</SumNum>\r\n"
        f'<RecordList Num="1">\r\n<Item>\r\n<DeviceID>{CH1}</DeviceID>\r\n<Name>大门口</Name>\r\n'
        f"<StartTime>{start}</StartTime>\r\n<EndTime>{end}</EndTime>\r\n<Secrecy>0</Secrecy>\r\n<Type>time</Type>\r\n"
        "<FileSize>536870912</FileSize>\r\n</Item>\r\n</RecordList>\r\n</Response>\r\n"
    )


async def test_record_info_in_two_messages(gw: Gateway, tmp_path: Path) -> None:
    port = free_udp_port()
    await register(gw, tmp_path, port)
    gw.devices.channels[NVR] = {}
    from gb28181gw.gb.model import Channel

    gw.devices.channels[NVR][CH1] = Channel(CH1, NVR, "大门口")
    parts = [
        response_message(50, record_body("[$sn]", "2024-05-06T08:00:00", "2024-05-06T09:00:00")),
        response_message(51, record_body("[$sn]", "2024-05-06T09:00:00", "2024-05-06T10:00:00")),
    ]
    check = "&lt;Type&gt;all&lt;/Type&gt;"  # always ask for all types (some NVRs return nothing otherwise)
    proc = await play_device(device_scenario(parts, check=check).encode("gb2312"), port, tmp_path, "records")
    result = await gw.devices.records(CH1, "2024-05-06T00:00:00", "2024-05-06T23:59:59")
    await finished(proc)
    assert result.complete and len(result.items) == 2
    assert sorted(i.fields["StartTime"] for i in result.items.values()) == [
        "2024-05-06T08:00:00",
        "2024-05-06T09:00:00",
    ]


async def test_guard_command_returns_the_device_result(gw: Gateway, tmp_path: Path) -> None:
    port = free_udp_port()
    await register(gw, tmp_path, port)
    body = (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>DeviceControl</CmdType>\r\n<SN>[$sn]</SN>\r\n'
        f"<DeviceID>{NVR}</DeviceID>\r\n<Result>OK</Result>\r\n</Response>\r\n"
    )
    scenario = device_scenario([response_message(60, body)], check="&lt;GuardCmd&gt;SetGuard&lt;/GuardCmd&gt;")
    proc = await play_device(scenario.encode(), port, tmp_path, "guard")
    result = await gw.devices.command(NVR, "GuardCmd", "SetGuard", wait=True)
    await finished(proc)
    assert result["Result"] == "OK"


async def test_alarm_is_answered_counted_and_kept(gw: Gateway) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    dest = ("127.0.0.1", gw.stack.port)

    async def exchange(data: bytes) -> bytes:
        await loop.sock_sendto(sock, data, dest)
        return (await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 5))[0]

    def msg(method: str, branch: str, extra: str, body: bytes = b"") -> bytes:
        head = (
            f"{method} sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};rport;branch={branch}\r\n"
            f"From: <sip:{NVR}@3402000000>;tag=a1\r\nTo: <sip:{'34020000002000000001' if method == 'MESSAGE' else NVR}@3402000000>\r\n"
            f"Call-ID: {branch}@127.0.0.1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    try:
        reg = await exchange(
            msg("REGISTER", "z9hG4bKar", f"Contact: <sip:{NVR}@127.0.0.1:{port}>\r\nExpires: 3600\r\n")
        )
        assert reg.startswith(b"SIP/2.0 200 ")
        alarm = (
            '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>301</SN>\r\n'
            f"<DeviceID>{CH1}</DeviceID>\r\n<AlarmPriority>4</AlarmPriority>\r\n<AlarmMethod>5</AlarmMethod>\r\n"
            "<AlarmTime>2024-05-06T12:40:01</AlarmTime>\r\n<AlarmDescription>移动侦测</AlarmDescription>\r\n"
            "<info>\r\n<AlarmType>2</AlarmType>\r\n</info>\r\n</Notify>\r\n"
        ).encode("gb2312")
        ok = await exchange(msg("MESSAGE", "z9hG4bKalarm", "Content-Type: Application/MANSCDP+xml\r\n", alarm))
        assert ok.startswith(b"SIP/2.0 200 ")
        # then the gateway's own MESSAGE with the Response the standard asks for
        answer, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 5)
        assert answer.startswith(b"MESSAGE sip:" + NVR.encode())
        assert b"<CmdType>Alarm</CmdType>" in answer and b"<SN>301</SN>" in answer and b"<Result>OK</Result>" in answer
        from gb28181gw.sip.message import make_response, parse_message

        await loop.sock_sendto(sock, make_response(parse_message(answer), 200, to_tag="d").serialize(), addr)  # type: ignore[arg-type]
        assert gw.devices.alarm_count["5", "2"] == 1
        kept = gw.devices.alarms[-1]
        assert kept["AlarmDescription"] == "移动侦测" and kept["DeviceID"] == CH1 and kept["ReportedBy"] == NVR
        await asyncio.sleep(0.1)
        (stored,) = await gw.store.load_alarms()
        assert (stored.device_id, stored.method, stored.alarm_type, stored.description) == (CH1, "5", "2", "移动侦测")
    finally:
        sock.close()


async def test_catalog_subscription_and_its_notify_events(gw: Gateway, tmp_path: Path) -> None:
    from gb28181gw.gb.model import Channel

    port = free_udp_port()
    await register(gw, tmp_path, port)
    gw.devices.channels[NVR] = {CH1: Channel(CH1, NVR, "大门口", "ON"), CH2: Channel(CH2, NVR, "停车场", "ON")}
    scenario = sipp_scenario("subscribe_uas.xml", nvr=NVR, ch1=CH1, ch2=CH2, new_name="新增通道").encode("gb2312")
    proc = await play_device(scenario, port, tmp_path, "subscribe")
    sub = await gw.subscriptions.subscribe(NVR, "catalog")
    assert sub.expires == 60 and sub.remote_tag.endswith("nvr")
    await finished(proc)
    await asyncio.sleep(0.2)  # the store write runs in a task
    chans = gw.devices.channels[NVR]
    assert chans[CH1].status == "OFF"
    assert CH2 not in chans
    assert chans["34020000001310000003"].name == "新增通道"
    assert "34020000001310000099" not in chans  # an event for an unknown channel changes nothing
    stored = {c.channel_id for c in await gw.store.load_channels(NVR)}
    assert stored == {CH1, "34020000001310000003"}
    assert gw.subscriptions.events[("ADD",)] == 1 and gw.subscriptions.events[("ON",)] == 1
    assert (NVR, "catalog") in gw.subscriptions.subs
    await gw.subscriptions.stop()


async def test_invalid_coordinates_are_dropped_and_channels_go_off_with_their_device(
    gw: Gateway, tmp_path: Path
) -> None:
    from gb28181gw.gb.query import CatalogResult
    from gb28181gw.manscdp.messages import CatalogItem

    port = free_udp_port()
    await register(gw, tmp_path, port)
    result = CatalogResult(NVR, 1, 3, complete=True, messages=1)
    result.items = {
        CH1: CatalogItem(CH1, {"Name": "a", "Status": "ONLINE", "Longitude": "918.3", "Latitude": "31.3"}),
        CH2: CatalogItem(CH2, {"Name": "b", "Status": "1", "Longitude": "0", "Latitude": "0"}),
        "34020000001310000003": CatalogItem(
            "34020000001310000003", {"Name": "c", "Longitude": "118.376", "Latitude": "31.326"}
        ),
    }
    await gw.devices._store_catalog(result)
    chans = gw.devices.channels[NVR]
    assert "Longitude" not in chans[CH1].extra and "Longitude" not in chans[CH2].extra
    assert chans["34020000001310000003"].extra["Longitude"] == "118.376"
    assert chans[CH1].status == "ON" and chans[CH2].status == "ON"  # ONLINE and 1 normalised
    assert gw.devices.bad_positions[()] == 1  # 0,0 means unknown, not invalid
    # the device unregisters: its channels are OFF, in the store too
    await register_expires_zero(gw, tmp_path, port)
    await asyncio.sleep(0.2)
    assert all(c.status == "OFF" for c in gw.devices.channels[NVR].values())
    assert all(c.status == "OFF" for c in await gw.store.load_channels(NVR))


async def register_expires_zero(gw: Gateway, tmp_path: Path, port: int) -> None:
    path = tmp_path / "unregister.xml"
    path.write_text(sipp_scenario("register_uac.xml", device=NVR, expires=0))
    result = await run_sipp(str(path), gw.stack.port, tmp_path, extra=("-p", str(port)))
    assert result.ok, result.stdout
    assert not gw.registrar.devices[NVR].registered


async def test_subscription_is_refreshed_inside_its_dialog_before_it_expires(gw: Gateway, tmp_path: Path) -> None:
    port = free_udp_port()
    await register(gw, tmp_path, port)
    proc = await play_device(sipp_scenario("subscribe_refresh_uas.xml", nvr=NVR).encode(), port, tmp_path, "refresh")
    sub = await gw.subscriptions.subscribe(NVR, "catalog")
    assert sub.expires == 1
    await finished(proc)  # SIPp checked the refresh: same dialog (its To tag), CSeq 2
    for _ in range(20):
        if sub.expires == 60:
            break
        await asyncio.sleep(0.05)
    assert sub.cseq == 2 and sub.expires == 60
    await gw.subscriptions.stop()


async def test_device_errors_carry_their_status(gw: Gateway) -> None:
    """Callers read DeviceError.status (404 unknown, 480 not registered), never the message text."""
    from gb28181gw.errors import DeviceError
    from gb28181gw.services.streams import StreamError

    await gw.registrar.provision(NVR, name="not yet registered")
    with pytest.raises(DeviceError) as unregistered:
        gw.devices.registered(NVR)
    assert unregistered.value.status == DeviceError.NOT_REGISTERED == 480
    with pytest.raises(DeviceError) as unknown:
        gw.devices.device_of("34020000001310009999")
    assert unknown.value.status == DeviceError.NOT_FOUND == 404
    with pytest.raises(StreamError) as stream:
        await gw.streams.play(NVR, transport="udp", host="127.0.0.1", port=9)
    assert stream.value.status == 480
    with pytest.raises(StreamError) as stream:
        await gw.streams.play("34020000001310009999", transport="udp", host="127.0.0.1", port=9)
    assert stream.value.status == 404


async def test_catalog_is_read_even_when_deviceinfo_goes_unanswered(tmp_path: Path) -> None:
    # a lower platform (or a terse NVR) that takes DeviceInfo with 200 and never answers it still
    # has its catalog read (issue 12 item 6); the device here is a bare socket on its SIP port
    from gb28181gw.manscdp.messages import decode
    from gb28181gw.sip.message import Request, make_response, parse_message
    from tests.media import wait_for

    gw = await start_gateway(**{"devices.catalog_on_register": "true", "devices.query_timeout": "1"})
    port = free_udp_port()
    asked: list[str] = []

    class Silent(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            msg = parse_message(data)
            if isinstance(msg, Request) and msg.method == "MESSAGE":
                if not asked or asked[-1] != msg.call_id:
                    asked.append(msg.call_id)
                    cmds.append(decode(msg.body).cmd_type)
                self.transport.sendto(bytes(make_response(msg, 200)), addr)  # type: ignore[attr-defined]

    cmds: list[str] = []
    try:
        await register(gw, tmp_path, port)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Silent, local_addr=("127.0.0.1", port))
        try:
            await wait_for(lambda: "Catalog" in cmds, 10)
        finally:
            transport.close()
        assert cmds[:2] == ["DeviceInfo", "Catalog"]
    finally:
        await gw.stop()
