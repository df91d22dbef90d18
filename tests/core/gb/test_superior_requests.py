"""A superior's requests (PROTOCOL.md §9.4, §9.7): the policy, the SN rewriting both ways, the re-batched RecordInfo."""

from __future__ import annotations

import pytest

from gb28181gw.errors import ManscdpError
from gb28181gw.gb.registrar import is_platform_id
from gb28181gw.gb.superior_requests import (
    Action,
    Target,
    dangerous_command,
    decide,
    expects_response,
    record_parts,
)
from gb28181gw.manscdp.codec import parse_xml
from gb28181gw.manscdp.messages import CatalogItem, Root, decode, encode_list, list_items, restamp

CH = "34020000001310000001"
NVR = "34020000001180000001"
OURS = "34020000002000000001"


def body(root: str, cmd: str, target: str = CH, extra: str = "", sn: int = 7) -> bytes:
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<{root}>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n'
        f"<DeviceID>{target}</DeviceID>\r\n{extra}</{root}>\r\n"
    ).encode("gb18030")


def control(sub: str, target: str = CH) -> bytes:
    return body("Control", "DeviceControl", target, sub)


class TestPolicy:
    """§9.7: 404 for what it may not see, 403 for what can take a site down, the rest served or forwarded."""

    @pytest.mark.parametrize(
        ("sub", "name"),
        [
            ("<TeleBoot>Boot</TeleBoot>", "TeleBoot"),
            ("<FormatSDCard>0</FormatSDCard>", "FormatSDCard"),
            ("<DeviceUpgrade><Firmware>V2</Firmware><FileURL>http://x/f</FileURL></DeviceUpgrade>", "DeviceUpgrade"),
        ],
    )
    @pytest.mark.parametrize("target", [Target.OURS, Target.VISIBLE])
    def test_dangerous_controls_are_403_unless_allowed(self, sub: str, name: str, target: Target) -> None:
        env = decode(control(sub))
        assert dangerous_command(env) == name
        refused = decide(env, target)
        assert (refused.action, refused.status, refused.command) == (Action.REJECT, 403, name)
        assert name in refused.reason and "allow_commands" in refused.reason
        # another command allowed is no help
        assert decide(env, target, allowed=("DeviceConfig",)).status == 403
        allowed = decide(env, target, allowed=(name,))
        assert allowed.status == 200 and allowed.command == name

    def test_device_config_is_dangerous_too(self) -> None:
        env = decode(body("Control", "DeviceConfig", NVR, "<BasicParam><Name>x</Name></BasicParam>"))
        assert dangerous_command(env) == "DeviceConfig" and expects_response(env)
        assert decide(env, Target.VISIBLE).status == 403
        forwarded = decide(env, Target.VISIBLE, allowed=("DeviceConfig",))
        assert (forwarded.action, forwarded.response) == (Action.FORWARD, True)
        # aimed at our platform when allowed: we have nothing to configure, Result ERROR
        assert decide(env, Target.OURS, allowed=("DeviceConfig",)).action is Action.ANSWER

    def test_an_allowed_teleboot_of_the_gateway_is_taken_and_not_acted_on(self) -> None:
        verdict = decide(decode(control("<TeleBoot>Boot</TeleBoot>", OURS)), Target.OURS, allowed=("TeleBoot",))
        assert (verdict.action, verdict.status, verdict.response) == (Action.TAKE, 200, False)
        assert "does not restart" in verdict.reason

    def test_an_allowed_teleboot_of_a_channel_is_forwarded_without_a_response(self) -> None:
        verdict = decide(decode(control("<TeleBoot>Boot</TeleBoot>")), Target.VISIBLE, allowed=("TeleBoot",))
        assert (verdict.action, verdict.response) == (Action.FORWARD, False)

    @pytest.mark.parametrize("target", [Target.HIDDEN, Target.UNKNOWN])
    @pytest.mark.parametrize(
        "request_body",
        [
            control("<PTZCmd>A50F0100000000B5</PTZCmd>"),
            control("<TeleBoot>Boot</TeleBoot>"),
            body("Query", "DeviceStatus"),
        ],
    )
    def test_what_it_may_not_see_is_404_even_a_dangerous_command(self, target: Target, request_body: bytes) -> None:
        verdict = decide(decode(request_body), target)
        assert (verdict.action, verdict.status) == (Action.REJECT, 404)
        # a superior is not told whether the ID exists elsewhere
        assert CH in verdict.reason

    @pytest.mark.parametrize("cmd", ["DeviceInfo", "DeviceStatus"])
    def test_our_platform_answers_device_info_and_status_itself(self, cmd: str) -> None:
        assert decide(decode(body("Query", cmd, OURS)), Target.OURS).action is Action.ANSWER

    def test_other_queries_of_our_platform_get_result_error(self) -> None:
        verdict = decide(decode(body("Query", "PresetQuery", OURS)), Target.OURS)
        assert verdict.action is Action.ANSWER and "platform itself" in verdict.reason
        ptz = decide(decode(control("<PTZCmd>A50F0100000000B5</PTZCmd>", OURS)), Target.OURS)
        assert (ptz.action, ptz.response) == (Action.TAKE, False)

    @pytest.mark.parametrize(
        ("request_body", "action", "response"),
        [
            (body("Query", "DeviceInfo"), Action.FORWARD, True),
            (body("Query", "deviceStatus"), Action.FORWARD, True),  # CmdType compared case-insensitively
            (body("Query", "PresetQuery"), Action.FORWARD, True),
            (
                body("Query", "RecordInfo", extra="<StartTime>2024-05-06T00:00:00</StartTime>"),
                Action.FORWARD_RECORDS,
                True,
            ),
            (body("Query", "ConfigDownload", extra="<ConfigType>BasicParam</ConfigType>"), Action.FORWARD_CONFIG, True),
            (control("<PTZCmd>A50F0100000000B5</PTZCmd>"), Action.FORWARD, False),
            (control("<IFameCmd>Send</IFameCmd>"), Action.FORWARD, False),
            (control("<RecordCmd>Record</RecordCmd>"), Action.FORWARD, True),
            (control("<GuardCmd>SetGuard</GuardCmd>"), Action.FORWARD, True),
            (control("<AlarmCmd>ResetAlarm</AlarmCmd><Info><AlarmMethod>2</AlarmMethod></Info>"), Action.FORWARD, True),
            (control("<HomePosition><Enabled>1</Enabled></HomePosition>"), Action.FORWARD, True),
        ],
    )
    def test_a_visible_target_is_forwarded(self, request_body: bytes, action: Action, response: bool) -> None:
        verdict = decide(decode(request_body), Target.VISIBLE)
        assert (verdict.action, verdict.status, verdict.response, verdict.command) == (action, 200, response, "")

    @pytest.mark.parametrize(
        "request_body",
        [body("Query", "Catalog", OURS), body("Query", "MobilePosition"), body("Control", "Bogus")],
    )
    def test_catalog_and_unknown_commands_are_not_served_here(self, request_body: bytes) -> None:
        env = decode(request_body)
        assert decide(env, Target.OURS).status == 501 and decide(env, Target.VISIBLE).status == 501

    def test_responses_and_notifies_from_the_superior_are_taken(self) -> None:
        answer = decide(decode(body("Response", "Alarm", CH, "<Result>OK</Result>")), Target.UNKNOWN)
        assert (answer.action, answer.status) == (Action.TAKE, 200)


class TestSnMapping:
    """§9.4: a body crosses the hop with the next hop's SN and everything else as it came."""

    def test_superior_to_device_keeps_the_ptz_bytes_and_device_id(self) -> None:
        sent = control("<PTZCmd>a50f010180000036</PTZCmd>\r\n<Info><ControlPriority>5</ControlPriority></Info>\r\n")
        out = restamp(parse_xml(sent), 4242, charset="UTF-8")
        env = decode(out)
        assert (env.root, env.sn, env.device_id) == (Root.CONTROL, 4242, CH)
        assert b"<PTZCmd>a50f010180000036</PTZCmd>" in out  # not even the case changed
        assert b"<ControlPriority>5</ControlPriority>" in out
        assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')

    def test_device_to_superior_in_its_charset_with_attributes_kept(self) -> None:
        answer = body(
            "Response",
            "PresetQuery",
            extra='<SumNum>1</SumNum>\r\n<PresetList Num="1">\r\n<Item><PresetID>1</PresetID><PresetName>门口</PresetName></Item>\r\n</PresetList>\r\n',
            sn=99,
        )
        out = restamp(parse_xml(answer), 17435, charset="GB2312")
        assert "<PresetName>门口</PresetName>".encode("gb2312") in out  # GB bytes, not UTF-8
        assert b'<PresetList Num="1">' in out
        env = decode(out)
        assert (env.sn, env.device_id, list_items(env, "PresetList")[0]) == (17435, CH, 1)

    def test_a_body_without_sn_is_an_error(self) -> None:
        with pytest.raises(ManscdpError, match="without SN"):
            restamp(parse_xml(b"<Control><CmdType>DeviceControl</CmdType></Control>"), 1)


class TestRecordParts:
    """§9.4 and Annex M: RecordInfo sent up in batches, each with the superior's SN and one SumNum."""

    @staticmethod
    def items(n: int) -> list[CatalogItem]:
        return [
            CatalogItem(CH, {"Name": "大门口", "StartTime": f"2024-05-06T0{i}:00:00", "Secrecy": "0", "Type": "time"})
            for i in range(n)
        ]

    def test_batches_carry_one_sum_num_and_every_item_once(self) -> None:
        parts = [decode(p) for p in record_parts(CH, 17433, self.items(5), batch=2, charset="GB2312").bodies]
        assert [p.sn for p in parts] == [17433] * 3
        counts = [list_items(p, "RecordList") for p in parts]
        assert [c[0] for c in counts] == [5, 5, 5] and [len(c[1]) for c in counts] == [2, 2, 1]
        assert [i.fields["StartTime"] for c in counts for i in c[1]] == [f"2024-05-06T0{i}:00:00" for i in range(5)]
        assert all(p.device_id == CH for p in parts)
        assert [p.element.find("RecordList").get("Num") for p in parts] == ["2", "2", "1"]  # type: ignore[union-attr]

    def test_split_by_size_like_a_catalog(self) -> None:
        # a catalog_batch of 64 over UDP: the same splitting as the catalog (gb.cascade_catalog.split_parts)
        parts = record_parts(CH, 9, self.items(64), batch=64, charset="GB2312", limit=2048)
        assert len(parts.bodies) > 1 and all(len(b) <= 2048 for b in parts.bodies) and sum(parts.counts) == 64
        assert {list_items(decode(b), "RecordList")[0] for b in parts.bodies} == {64}
        assert [decode(b).sn for b in parts.bodies] == [9] * len(parts.bodies)

    def test_no_recordings_is_one_message_with_sum_num_0_and_no_list(self) -> None:
        (part,) = record_parts(CH, 5, [], batch=4, charset="UTF-8", head=[("Name", "大门口")]).bodies
        env = decode(part)
        assert env.text("SumNum") == "0" and env.text("Name") == "大门口" and b"RecordList" not in part

    def test_encode_list_writes_the_head_before_sum_num(self) -> None:
        out = encode_list("RecordInfo", 3, CH, [("Name", "x")], "RecordList", [[("DeviceID", CH)]], sum_num=9)
        text = out.decode("gb18030")
        assert text.index("<Name>") < text.index("<SumNum>9</SumNum>") < text.index('<RecordList Num="1">')


@pytest.mark.parametrize(
    ("text", "platform"),
    [(OURS, True), ("34020000001320000001", False), ("3402000000200000000", False), ("3402000000200000000x", False)],
)
def test_is_platform_id(text: str, platform: bool) -> None:
    assert is_platform_id(text) is platform
