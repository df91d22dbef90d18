"""A superior's queries and controls, and alarms sent up (issue 12 item 4), over real 127.0.0.1 sockets.

Three SIPp processes play the others: the superior's server side (it takes our registration
and checks every MESSAGE we send up: SN, SumNum, Result, charset), the superior's client side
(it sends one query or control and expects 200, 403 or 404), and a device registered on the
gateway (it checks what the gateway forwards — the PTZCmd byte for byte — and answers with
the gateway's SN). The gateway is identified as the superior's by From ID and address: the
client side may use any port.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.gb.model import Channel

from .conftest import run_sipp, sipp_scenario
from .test_devices import (
    CH1,
    CH2,
    NVR,
    device_scenario,
    finished,
    free_udp_port,
    play_device,
    register,
    response_message,
)
from .test_upstreams import UPPER, gateway_under, until

pytestmark = pytest.mark.sipp

OURS = "34020000002000000001"
NO_BODY = "Content-Length: 0\r\n\r\n"


def xml(text: str) -> str:
    """``text`` as it goes into a SIPp regexp attribute."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def query(root: str, cmd: str, sn: int, target: str, extra: str = "") -> str:
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<{root}>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n'
        f"<DeviceID>{target}</DeviceID>\r\n{extra}</{root}>\r\n"
    )


def response(cmd: str, target: str, extra: str, sn: str = "[$sn]") -> str:
    return query("Response", cmd, 0, target, extra).replace("<SN>0</SN>", f"<SN>{sn}</SN>")


@dataclass
class Site:
    """The gateway under a SIPp superior, with one SIPp-registered NVR whose channels are known."""

    gw: Gateway
    superior: asyncio.subprocess.Process
    device_port: int
    tmp_path: Path
    closed: bool = False

    async def ask(self, body: str, status: int, name: str = "ask") -> None:
        """The superior's client side: send ``body``, expect ``status``."""
        path = self.tmp_path / f"{name}.xml"
        scenario = sipp_scenario("superior_request_uac.xml", gateway=OURS, superior=UPPER, body=body, status=status)
        path.write_bytes(scenario.encode("gb18030"))
        result = await run_sipp(str(path), self.gw.stack.port, self.tmp_path)
        assert result.ok, result.stdout

    async def device(self, parts: list[str], check: str | None = None) -> asyncio.subprocess.Process:
        """The NVR takes one MESSAGE (``check`` must match it), answers 200, then sends ``parts``."""
        scenario = device_scenario(parts, check=xml(check) if check else None).encode("gb18030")
        return await play_device(scenario, self.device_port, self.tmp_path, "device")

    async def close(self) -> None:
        """Stop the gateway (it unregisters) and check the superior saw everything it expected."""
        self.closed = True
        await self.gw.stop()
        await finished(self.superior)

    def counted(self, cmd: str, result: str) -> int:
        """gb28181gw_upstream_requests for the superior."""
        return self.gw.upstreams._requests[("district", cmd, result)]

    def our_sn(self) -> int:
        """The SN the gateway used toward the device."""
        return int(re.findall(r"<SN>([0-9]+)</SN>", self.wire_down)[0])

    @property
    def wire_up(self) -> bytes:
        """What the superior's server side received."""
        return (self.tmp_path / "superior.msg").read_bytes()

    @property
    def wire_down(self) -> str:
        """What the device received and sent."""
        return (self.tmp_path / "device.msg").read_text(errors="replace")


Make = Callable[..., Awaitable[Site]]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Make]:
    made: list[Site] = []

    async def make(
        checks: list[str],
        messages: int,
        *,
        answer: str = NO_BODY,
        settings: dict[str, str] | None = None,
        **upstream: object,
    ) -> Site:
        """A superior expecting ``messages`` MESSAGEs that each match every regex in ``checks``."""
        checks = [*checks, "<SN>([0-9]+)</SN>"]  # its SN, for a Response in the 200 ([$sn])
        actions = "".join(
            f'<ereg regexp="{xml(c)}" search_in="body" check_it="true" assign_to="c{i}"/>' for i, c in enumerate(checks)
        )
        actions = actions.replace(f'assign_to="c{len(checks) - 1}"', 'assign_to="all,sn"')
        refs = ",".join([*(f"c{i}" for i in range(len(checks) - 1)), "all", "sn"])
        scenario = sipp_scenario("superior_requests_uas.xml", checks=actions, answer=answer, refs=refs)
        port = free_udp_port()
        # our registration (ended by our unregistration when the gateway stops) and the MESSAGEs
        sup = await play_device(scenario.encode("gb18030"), port, tmp_path, "superior", calls=messages + 1)
        upstream.setdefault("keepalive_interval", 600)  # no keepalive among the checked MESSAGEs
        gw = await gateway_under(tmp_path, port, settings=settings, **upstream)
        made.append(Site(gw, sup, free_udp_port(), tmp_path))
        await until(lambda: gw.upstreams.links["district"].machine.registered)
        await register(gw, tmp_path, made[-1].device_port)
        gw.devices.channels[NVR] = {CH1: Channel(CH1, NVR, "大门口", "ON"), CH2: Channel(CH2, NVR, "停车场", "ON")}
        return made[-1]

    yield make
    for s in made:
        if not s.closed:
            await s.gw.stop()
            if s.superior.returncode is None:
                s.superior.kill()
            await s.superior.wait()


# --- our platform ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        # Channel: what this superior may see (share below: one of the NVR's two channels)
        ("DeviceInfo", ["<Result>OK</Result>", "<Manufacturer>gb28181gw</Manufacturer>", "<Channel>1</Channel>"]),
        ("DeviceStatus", ["<Result>OK</Result>", "<Online>ONLINE</Online>", "<Status>OK</Status>"]),
    ],
)
async def test_our_platform_is_answered_by_us(site: Make, cmd: str, expected: list[str]) -> None:
    s = await site(["<Response>", f"<CmdType>{cmd}</CmdType>", "<SN>7001</SN>", f"<DeviceID>{OURS}</DeviceID>",
                    *expected], 1, share=[CH1])  # fmt: skip
    await s.ask(query("Query", cmd, 7001, OURS), 200)
    await until(lambda: s.counted(cmd, "ok") == 1)
    await s.close()
    assert not (s.tmp_path / "device.msg").exists()  # nothing was asked of any device


# --- forwarded to the device -----------------------------------------------------------------


async def test_device_status_of_a_channel_goes_to_its_device_with_the_sn_mapped_both_ways(site: Make) -> None:
    # the superior wants UTF-8; the device answers in GB2312: the answer goes up re-encoded
    s = await site(["<Response>", "<SN>7002</SN>", f"<DeviceID>{CH1}</DeviceID>", "<Online>ONLINE</Online>"], 1,
                   charset="UTF-8")  # fmt: skip
    answer = response("DeviceStatus", CH1, "<Result>OK</Result>\r\n<Online>ONLINE</Online>\r\n<Status>OK</Status>\r\n"
                      "<Reason>设备正常</Reason>\r\n")  # fmt: skip
    dev = await s.device([response_message(41, answer)], check=f"<CmdType>DeviceStatus</CmdType>.*<DeviceID>{CH1}<")
    await s.ask(query("Query", "DeviceStatus", 7002, CH1), 200)
    await finished(dev)
    await until(lambda: s.counted("DeviceStatus", "ok") == 1)
    await s.close()
    assert s.our_sn() != 7002  # our own SN toward the device, the superior's back up
    up = s.wire_up
    assert "<Reason>设备正常</Reason>".encode() in up and b'encoding="UTF-8"' in up


@pytest.mark.parametrize(("batch", "parts"), [(1, 2), (4, 1)])
async def test_record_info_in_two_parts_is_relayed_with_the_superiors_sn_and_sum_num(
    site: Make, batch: int, parts: int
) -> None:
    s = await site(["<CmdType>RecordInfo</CmdType>", "<SN>7003</SN>", "<SumNum>2</SumNum>",
                    f'<RecordList Num="{2 // parts}">', f"<DeviceID>{CH1}</DeviceID>"], parts,
                   catalog_batch=batch)  # fmt: skip

    def record(hour: int) -> str:
        item = (f"<Item>\r\n<DeviceID>{CH1}</DeviceID>\r\n<Name>大门口</Name>\r\n<StartTime>2024-05-06T0{hour}:00:00</StartTime>\r\n"
                f"<EndTime>2024-05-06T0{hour}:59:59</EndTime>\r\n<Secrecy>0</Secrecy>\r\n<Type>time</Type>\r\n</Item>\r\n")  # fmt: skip
        return response(
            "RecordInfo",
            CH1,
            f'<Name>大门口</Name>\r\n<SumNum>2</SumNum>\r\n<RecordList Num="1">\r\n{item}</RecordList>\r\n',
        )

    dev = await s.device([response_message(51, record(8)), response_message(52, record(9))],
                         check="<StartTime>2024-05-06T00:00:00</StartTime>.*<Type>all</Type>")  # fmt: skip
    extra = (
        "<StartTime>2024-05-06T00:00:00</StartTime>\r\n<EndTime>2024-05-06T23:59:59</EndTime>\r\n<Type>all</Type>\r\n"
    )
    await s.ask(query("Query", "RecordInfo", 7003, CH1, extra), 200)
    await finished(dev)
    await until(lambda: s.counted("RecordInfo", "ok") == 1)
    await s.close()
    up = s.wire_up.decode("gb18030")
    assert up.count("<StartTime>2024-05-06T08:00:00</StartTime>") == 1
    assert up.count("<StartTime>2024-05-06T09:00:00</StartTime>") == 1
    assert s.our_sn() != 7003


async def test_ptz_is_forwarded_with_the_ptzcmd_bytes_unchanged(site: Make) -> None:
    s = await site([], 0)
    # the device checks the bytes; the superior gets its 200 at once and nothing else (PTZ has no Response)
    dev = await s.device(
        [], check=f"<DeviceID>{CH1}</DeviceID>.*<PTZCmd>A50F0129404080DE</PTZCmd>.*<ControlPriority>5<"
    )
    ptz = "<PTZCmd>A50F0129404080DE</PTZCmd>\r\n<Info>\r\n<ControlPriority>5</ControlPriority>\r\n</Info>\r\n"
    await s.ask(query("Control", "DeviceControl", 7004, CH1, ptz), 200)
    await finished(dev)
    await until(lambda: s.counted("DeviceControl", "ok") == 1)
    await s.close()
    assert s.our_sn() != 7004


async def test_config_download_of_two_types_is_asked_one_type_at_a_time(site: Make) -> None:
    # a device answers each ConfigType in its own Response with one SN: asked one type at a time,
    # each answer is matched for sure, and both go up with the superior's SN. The device (one SIPp
    # call per query) answers the type it was asked, echoing it.
    s = await site(["<CmdType>ConfigDownload</CmdType>", "<SN>7014</SN>", "<Result>OK</Result>", "<Echo>"], 2)
    echo = response("ConfigDownload", NVR, "<Result>OK</Result>\r\n<[$type]>\r\n<Echo>[$type]</Echo>\r\n</[$type]>\r\n")
    action = (f'<ereg regexp="{xml("<SN>([0-9]+)</SN>")}" search_in="body" check_it="true" assign_to="all,sn"/>'
              f'<ereg regexp="{xml("<ConfigType>([A-Za-z]+)</ConfigType>")}" search_in="body" check_it="true" assign_to="whole,type"/>')  # fmt: skip
    scenario = sipp_scenario("message_uas.xml", check=action, parts=response_message(71, echo), refs="all,whole,type")
    dev = await play_device(scenario.encode(), s.device_port, s.tmp_path, "device", calls=2)
    await s.ask(
        query("Query", "ConfigDownload", 7014, NVR, "<ConfigType>BasicParam/VideoParamOpt</ConfigType>\r\n"), 200
    )
    await finished(dev)
    await until(lambda: s.counted("ConfigDownload", "ok") == 1)
    await s.close()
    up = s.wire_up
    assert b"<Echo>BasicParam</Echo>" in up and b"<Echo>VideoParamOpt</Echo>" in up
    assert s.wire_down.count("<ConfigType>") == 2 and "BasicParam/" not in s.wire_down


async def test_a_control_with_a_response_relays_the_devices_result(site: Make) -> None:
    s = await site(["<CmdType>DeviceControl</CmdType>", "<SN>7005</SN>", "<Result>OK</Result>"], 1)
    dev = await s.device([response_message(61, response("DeviceControl", CH1, "<Result>OK</Result>\r\n"))],
                         check="<RecordCmd>Record</RecordCmd>")  # fmt: skip
    await s.ask(query("Control", "DeviceControl", 7005, CH1, "<RecordCmd>Record</RecordCmd>\r\n"), 200)
    await finished(dev)
    await until(lambda: s.counted("DeviceControl", "ok") == 1)
    await s.close()


# --- refused -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [OURS, CH1, NVR])
async def test_teleboot_is_refused_with_403_and_logged(
    site: Make, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = await site([], 0)
    with caplog.at_level(logging.WARNING, logger="gb28181gw.upstream"):
        await s.ask(query("Control", "DeviceControl", 7006, target, "<TeleBoot>Boot</TeleBoot>\r\n"), 403)
    assert s.counted("DeviceControl", "403") == 1
    (line,) = [r for r in caplog.records if r.getMessage() == "superior's command refused"]
    assert (line.upstream, line.superior, line.command, line.target) == ("district", UPPER, "TeleBoot", target)  # type: ignore[attr-defined]
    await s.close()
    assert not (s.tmp_path / "device.msg").exists()


async def test_teleboot_allowed_reaches_a_channels_device_but_never_restarts_the_gateway(site: Make) -> None:
    s = await site([], 0, allow_commands=["TeleBoot"])
    await s.ask(query("Control", "DeviceControl", 7007, OURS, "<TeleBoot>Boot</TeleBoot>\r\n"), 200, "ours")
    assert s.gw.ready  # still serving
    dev = await s.device([], check=f"<DeviceID>{CH1}</DeviceID>.*<TeleBoot>Boot</TeleBoot>")
    await s.ask(query("Control", "DeviceControl", 7008, CH1, "<TeleBoot>Boot</TeleBoot>\r\n"), 200, "channel")
    await finished(dev)
    await until(lambda: s.counted("DeviceControl", "ok") == 2)
    await s.close()


async def test_device_config_is_403_unless_allowed(site: Make) -> None:
    s = await site([], 0, allow_commands=["TeleBoot"])  # another command allowed is no help
    config = "<BasicParam>\r\n<HeartBeatInterval>5</HeartBeatInterval>\r\n</BasicParam>\r\n"
    await s.ask(query("Control", "DeviceConfig", 7009, NVR, config), 403)
    assert s.counted("DeviceConfig", "403") == 1
    await s.close()


@pytest.mark.parametrize("target", [CH2, "34020000001310000099"], ids=["unshared", "unknown"])
async def test_a_channel_it_may_not_see_is_404(site: Make, target: str) -> None:
    s = await site([], 0, share=[CH1])
    await s.ask(query("Control", "DeviceControl", 7010, target, "<PTZCmd>A50F0100000000B5</PTZCmd>\r\n"), 404, "ptz")
    await s.ask(query("Query", "DeviceStatus", 7011, target), 404, "status")
    assert s.counted("DeviceControl", "404") == 1 and s.counted("DeviceStatus", "404") == 1
    await s.close()
    assert not (s.tmp_path / "device.msg").exists()


# --- failures at the device ------------------------------------------------------------------


async def test_a_device_that_never_answers_gives_result_error(site: Make) -> None:
    s = await site(["<CmdType>PresetQuery</CmdType>", "<SN>7012</SN>", "<Result>ERROR</Result>"], 1,
                   settings={"devices.query_timeout": "0.5"})  # fmt: skip
    dev = await s.device([], check="<CmdType>PresetQuery</CmdType>")  # 200, then silence
    await s.ask(query("Query", "PresetQuery", 7012, CH1), 200)
    await finished(dev)
    await until(lambda: s.counted("PresetQuery", "timeout") == 1)
    await s.close()


async def test_a_channel_of_an_offline_device_is_answered_from_what_we_know(site: Make) -> None:
    s = await site(["<SN>7013</SN>", f"<DeviceID>{CH1}</DeviceID>", "<Online>OFFLINE</Online>"], 1)
    s.gw.registrar.devices[NVR].state = s.gw.registrar.devices[NVR].state.OFFLINE
    await s.ask(query("Query", "DeviceStatus", 7013, CH1), 200)
    await until(lambda: s.counted("DeviceStatus", "offline") == 1)
    await s.close()
    assert not (s.tmp_path / "device.msg").exists()


# --- alarms up -------------------------------------------------------------------------------


async def test_an_alarm_reaches_the_superior_and_its_response_in_the_200_is_taken(
    site: Make, caplog: pytest.LogCaptureFixture
) -> None:
    # the superior answers like Monibuca (PROTOCOL.md §11.6 P4): the Response in the 200
    p4 = response("Alarm", CH1, "<Result>OK</Result>\r\n")
    answer = f"Content-Type: Application/MANSCDP+xml\r\nContent-Length: [len]\r\n\r\n{p4}"
    s = await site(["<Notify>", "<CmdType>Alarm</CmdType>", f"<DeviceID>{CH1}</DeviceID>", "<AlarmMethod>5</AlarmMethod>",
                    "<AlarmType>2</AlarmType>"], 1, answer=answer, share=[CH1])  # fmt: skip
    with caplog.at_level(logging.INFO, logger="gb28181gw.upstream"):
        # the unshared channel's alarm first: were it sent up, the superior's checks would fail
        for name, channel in (("alarm2", CH2), ("alarm1", CH1)):
            alarm = query("Notify", "Alarm", 301, channel, "<AlarmPriority>4</AlarmPriority>\r\n<AlarmMethod>5</AlarmMethod>\r\n"
                          "<AlarmTime>2024-05-06T12:40:01</AlarmTime>\r\n<Info>\r\n<AlarmType>2</AlarmType>\r\n</Info>\r\n")  # fmt: skip
            path = s.tmp_path / f"{name}.xml"
            path.write_text(sipp_scenario("alarm_uac.xml", device=NVR, body=alarm))
            result = await run_sipp(str(path), s.gw.stack.port, s.tmp_path, extra=("-p", str(s.device_port)))
            assert result.ok, result.stdout
        await until(lambda: any(r.getMessage() == "superior answered our alarm" for r in caplog.records))
    await s.close()
    assert s.wire_up.count(b"<CmdType>Alarm</CmdType>") == 2  # our Notify and the superior's Response in its 200


async def test_the_superiors_response_message_to_our_alarm_is_matched_by_our_sn(
    site: Make, caplog: pytest.LogCaptureFixture
) -> None:
    s = await site(["<Notify>", "<CmdType>Alarm</CmdType>", f"<DeviceID>{CH1}</DeviceID>"], 1)
    alarm = query("Notify", "Alarm", 302, CH1, "<AlarmPriority>1</AlarmPriority>\r\n<AlarmMethod>2</AlarmMethod>\r\n"
                  "<AlarmTime>2024-05-06T12:40:01</AlarmTime>\r\n")  # fmt: skip
    (s.tmp_path / "alarm.xml").write_text(sipp_scenario("alarm_uac.xml", device=NVR, body=alarm))
    result = await run_sipp(
        str(s.tmp_path / "alarm.xml"), s.gw.stack.port, s.tmp_path, extra=("-p", str(s.device_port))
    )
    assert result.ok, result.stdout
    await until(lambda: (s.tmp_path / "superior.msg").exists() and b"<CmdType>Alarm</CmdType>" in s.wire_up)
    (ours,) = re.findall(rb"<SN>([0-9]+)</SN>", s.wire_up.split(b"<CmdType>Alarm</CmdType>")[1])
    assert int(ours) != 302  # our own SN upward
    with caplog.at_level(logging.INFO, logger="gb28181gw.upstream"):
        # a Response with another SN matches nothing; then the right one (the standard two-step answer)
        await s.ask(response("Alarm", CH1, "<Result>OK</Result>\r\n", sn=str(int(ours) + 1)), 200, "wrong")
        await s.ask(response("Alarm", CH1, "<Result>OK</Result>\r\n", sn=ours.decode()), 200, "right")
        await until(lambda: any(r.getMessage() == "superior answered our alarm" for r in caplog.records))
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("superior's Response matches nothing we sent") == 1
    await s.close()
