"""MANSCDP bodies: charsets as devices really send them, hardened parsing, envelopes, catalogs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gb28181gw.errors import ManscdpError
from gb28181gw.gb.query import CatalogCollector, CatalogResult, SnAllocator, catalog_problems
from gb28181gw.manscdp.codec import REPLACEMENT, declared_encoding, decode_text, parse_xml, undecodable
from gb28181gw.manscdp.messages import CatalogItem, CmdType, Root, catalog, decode, encode, envelope, flat
from tests.helpers import ROOT

FIXTURES = sorted((ROOT / "sdp_fixtures").glob("*/*.xml"))


@pytest.mark.parametrize("path", FIXTURES, ids=[f"{p.parent.name}/{p.stem}" for p in FIXTURES])
def test_brand_fixtures_parse_and_round_trip(path: Path) -> None:
    env = decode(path.read_bytes())
    assert env.sn > 0 and len(env.device_id) == 20
    # write it back in both charsets we send and read it again: nothing changes
    fields = flat(env)
    for charset in ("GB2312", "UTF-8"):
        items = [(k, v) for k, v in fields.items() if k.lower() not in ("cmdtype", "sn", "deviceid")]
        again = decode(encode(env.root, env.cmd_type, env.sn, env.device_id, items, charset=charset))  # type: ignore[arg-type]
        assert _norm(flat(again)) == _norm(fields)
        assert again.is_cmd(CmdType(env.cmd_type)) or again.cmd_type == env.cmd_type
    if env.is_cmd(CmdType.CATALOG):
        sum_num, items = catalog(env)
        assert items and all(len(i.device_id) == 20 for i in items)


def _norm(fields: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in fields.items() if k.lower() != "cmdtype"}


def test_hikvision_gbk_bytes_declared_gb2312_and_a_bare_ampersand() -> None:
    env = decode((ROOT / "sdp_fixtures" / "hikvision" / "catalog.xml").read_bytes())
    sum_num, items = catalog(env)
    assert sum_num == 2
    assert [i.name for i in items] == ["南门萳园&出口", "报警输入1"]
    assert items[0].fields["PTZType"] == "1"  # Info/PTZType flattened
    assert items[0].fields["Longitude"] == "118.3760"


def test_uniview_utf8_declared_gb2312_and_nul_padding() -> None:
    assert catalog(decode((ROOT / "sdp_fixtures" / "uniview" / "catalog.xml").read_bytes()))[1][0].name == "东侧围墙"
    assert decode((ROOT / "sdp_fixtures" / "uniview" / "keepalive.xml").read_bytes()).is_cmd(CmdType.KEEPALIVE)


def test_gb18030_only_character_survives_encoding() -> None:
    name = "𠀀萳园"  # 𠀀 is outside GB2312 and GBK: only GB18030 has it
    body = encode(Root.RESPONSE, CmdType.CATALOG, 1, "34020000001180000001", [("Name", name)])
    assert body.startswith(b'<?xml version="1.0" encoding="GB2312"?>')
    assert flat(decode(body))["Name"] == name


def test_encode_escapes_and_nests() -> None:
    body = encode(
        Root.CONTROL,
        CmdType.DEVICE_CONTROL,
        9,
        "34020000001310000001",
        [("PTZCmd", "A50F0100000000B5"), ("Info", [("ControlPriority", 5)])],
        charset="UTF-8",
    )
    text = body.decode()
    assert "<Info>\r\n<ControlPriority>5</ControlPriority>\r\n</Info>" in text
    env = decode(encode(Root.NOTIFY, "Alarm", 1, "3402", [("AlarmDescription", "a<b&c")]))
    assert env.text("alarmdescription") == "a<b&c"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"\x00\x00", "empty"),
        (b"not xml at all", "well-formed"),
        (b"<Query><CmdType>Catalog</CmdType><SN>1</SN></Query", "well-formed"),
        (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "c">]><Query>&b;</Query>', "DTD"),
        (b"<Other><CmdType>Catalog</CmdType><SN>1</SN></Other>", "root"),
        (b"<Query><SN>1</SN></Query>", "CmdType"),
        (b"<Query><CmdType>Catalog</CmdType><SN>x</SN></Query>", "SN"),
    ],
)
def test_bad_bodies(body: bytes, fragment: str) -> None:
    with pytest.raises(ManscdpError, match=fragment):
        decode(body)


def test_billion_laughs_and_oversize_are_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l ['
        + b"".join(b'<!ENTITY l%d "&l%d;&l%d;">' % (i, i - 1, i - 1) for i in range(1, 30))
        + b"]><Query>&l29;</Query>"
    )
    with pytest.raises(ManscdpError):
        parse_xml(bomb)
    with pytest.raises(ManscdpError, match="exceeds"):
        parse_xml(b"<Query>" + b"a" * (10 * 1024 * 1024) + b"</Query>")


def test_charset_helpers() -> None:
    assert declared_encoding(b'<?xml version="1.0" encoding="gb2312"?><a/>') == "GB2312"
    assert declared_encoding(b"<a/>") is None
    assert decode_text("南门".encode("gbk")) == "南门"
    assert decode_text(b"\xef\xbb\xbf<a/>") == "<a/>"


def test_lowercase_element_names_and_padding() -> None:
    env = envelope(
        parse_xml(
            b"<response><cmdtype>DeviceInfo</cmdtype><sn> 12 </sn><deviceid>34020000001180000001</deviceid></response>"
        )
    )
    assert env.root is Root.RESPONSE and env.is_cmd(CmdType.DEVICE_INFO) and env.sn == 12


def test_catalog_items_without_device_id_are_skipped() -> None:
    body = b"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>34020000001180000001</DeviceID><SumNum>2</SumNum><DeviceList Num='2'><Item><Name>x</Name></Item><Item><DeviceID>34020000001310000001</DeviceID></Item></DeviceList></Response>"
    assert [i.device_id for i in catalog(decode(body))[1]] == ["34020000001310000001"]


class TestCatalogCollector:
    def item(self, n: int) -> CatalogItem:
        return CatalogItem(f"340200000013100{n:05d}", {"Name": str(n)})

    def test_complete_when_sumnum_items_arrive_in_any_split(self) -> None:
        c = CatalogCollector("d", 1, now=0.0, first_timeout=120, idle_timeout=5, total_timeout=900, max_items=10**6)
        assert not c.add(3, [self.item(1)], 1.0)
        assert not c.add(3, [self.item(1)], 1.5)  # a repeat does not count twice
        assert c.add(3, [self.item(2), self.item(3)], 2.0)
        assert c.result.complete and c.result.messages == 3

    def test_quiet_device_leaves_a_partial_answer(self) -> None:
        c = CatalogCollector("d", 1, now=0.0, first_timeout=120, idle_timeout=5, total_timeout=900, max_items=10**6)
        assert not c.expired(119.0)
        c.add(5, [self.item(1)], 10.0)
        assert not c.expired(14.0) and c.expired(15.0)
        assert not c.result.complete and len(c.result.items) == 1

    def test_items_past_the_cap_are_counted_not_kept(self) -> None:
        c = CatalogCollector("d", 1, now=0.0, first_timeout=120, idle_timeout=5, total_timeout=900, max_items=3)
        c.add(1_000_000, [self.item(n) for n in range(10)], 1.0)
        c.add(1_000_000, [self.item(1), self.item(11)], 2.0)  # an update of a kept item is taken
        assert sorted(c.result.items) == [self.item(n).device_id for n in range(3)]
        assert c.result.refused == 8 and not c.result.complete

    def test_parts_cannot_extend_the_answer_past_its_total_timeout(self) -> None:
        c = CatalogCollector("d", 1, now=0.0, first_timeout=120, idle_timeout=5, total_timeout=30, max_items=10**6)
        for t in range(1, 29):
            c.add(10**6, [self.item(t)], float(t))  # a part every second, for ever
            assert not c.expired(float(t))
        assert c.expired(30.0) and not c.result.complete

    def test_sumnum_zero(self) -> None:
        c = CatalogCollector("d", 1, now=0.0, first_timeout=120, idle_timeout=5, total_timeout=900, max_items=10**6)
        assert c.add(0, [], 1.0)


def test_sn_allocator_per_device_and_wraps() -> None:
    sn = SnAllocator(start=2**31 - 3)
    assert [sn.next("a"), sn.next("a"), sn.next("a"), sn.next("b")] == [2**31 - 3, 2**31 - 2, 1, 2**31 - 3]


@pytest.mark.parametrize("brand", ["hikvision", "dahua", "uniview"])
def test_record_info_and_alarm_fixtures(brand: str) -> None:
    from gb28181gw.manscdp.messages import list_items

    records = decode((ROOT / "sdp_fixtures" / brand / "recordinfo.xml").read_bytes())
    sum_num, items = list_items(records, "RecordList")
    assert sum_num == 2 and len(items) == 2
    assert items[0].fields["Type"] == "time" and items[1].fields["Type"] == "alarm"
    alarm = decode((ROOT / "sdp_fixtures" / brand / "alarm.xml").read_bytes())
    assert alarm.root is Root.NOTIFY and alarm.is_cmd(CmdType.ALARM)
    assert flat(alarm)["AlarmDescription"] == "移动侦测"


class TestOneBadByte:
    """One byte no GB charset has loses one field's character, never the body (issue 10, defect 10)."""

    def test_catalog_page_keeps_every_item_and_marks_the_bad_field(self) -> None:
        good = (ROOT / "sdp_fixtures" / "hikvision" / "catalog.xml").read_bytes()
        bad = good.replace(
            "报警输入1".encode("gb18030"), "报警".encode("gb18030") + b"\xff" + "输入1".encode("gb18030")
        )
        assert bad != good
        sum_num, items = catalog(decode(bad))
        assert sum_num == 2 and len(items) == 2
        assert items[0].name == "南门萳园&出口"
        assert items[1].name == f"报警{REPLACEMENT}输入1"
        assert undecodable(parse_xml(bad)) == ["Name"]
        assert undecodable(parse_xml(good)) == []

    @pytest.mark.parametrize("cut", [b"\x81", b"\xfe\x30", b"\x80"])
    def test_keepalive_and_device_info_survive(self, cut: bytes) -> None:
        body = (
            b'<?xml version="1.0" encoding="GB2312"?><Response><CmdType>DeviceInfo</CmdType><SN>3</SN>'
            b"<DeviceID>34020000001320000001</DeviceID><DeviceName>" + "大门".encode("gb2312") + cut +
            b"</DeviceName><Manufacturer>Hikvision</Manufacturer><Result>OK</Result></Response>"
        )  # fmt: skip
        fields = flat(decode(body))
        assert fields["Manufacturer"] == "Hikvision" and fields["DeviceName"].startswith("大门")
        assert REPLACEMENT in fields["DeviceName"]


class TestCatalogDiagnostics:
    """What the conformance doctor reads of a Catalog answer (GB/T 28181-2022 Annex M, PROTOCOL.md §5.5, §11.3)."""

    NVR = "34020000001180000001"

    def body(self, sum_num: str, ids: list[str], *, declared: str = "GB2312", names: list[str] | None = None) -> bytes:
        names = names or ["x"] * len(ids)
        items = "".join(
            f"<Item><DeviceID>{i}</DeviceID><Name>{n}</Name></Item>" for i, n in zip(ids, names, strict=True)
        )
        sum_el = f"<SumNum>{sum_num}</SumNum>" if sum_num else ""
        text = (
            f'<?xml version="1.0" encoding="{declared}"?><Response><CmdType>Catalog</CmdType><SN>7</SN>'
            f"<DeviceID>{self.NVR}</DeviceID>{sum_el}<DeviceList Num='{len(ids)}'>{items}</DeviceList></Response>"
        )
        return text.encode("utf-8")

    def collect(self, *bodies: bytes) -> CatalogResult:
        from gb28181gw.manscdp.codec import charset_problem
        from gb28181gw.manscdp.messages import list_items

        c = CatalogCollector(self.NVR, 7, now=0.0, first_timeout=9, idle_timeout=5, total_timeout=90, max_items=100)
        for t, body in enumerate(bodies):
            sum_num, items = list_items(decode(body), "DeviceList")
            c.add(sum_num, items, float(t), charset_problem=charset_problem(body))
        return c.result

    def test_a_conforming_answer_has_no_problems(self) -> None:
        r = self.collect(
            self.body("2", ["34020000001310000001"], declared="UTF-8", names=["大门"]),
            self.body("2", ["34020000001310000002"], declared="UTF-8"),
        )
        assert r.sum_nums == [2, 2] and r.complete and catalog_problems(r) == []

    def test_sumnum_that_differs_between_messages(self) -> None:
        r = self.collect(self.body("2", ["34020000001310000001"]), self.body("3", ["34020000001310000002"]))
        assert r.sum_nums == [2, 3]
        assert catalog_problems(r) == ["SumNum differs between messages: 2, 3"]

    def test_sumnum_that_does_not_count_what_came(self) -> None:
        r = self.collect(self.body("3", ["34020000001310000001"]), self.body("3", ["34020000001310000002"]))
        assert catalog_problems(r) == ["SumNum 3 but 2 items came in 2 messages"]

    def test_a_message_without_sumnum(self) -> None:
        r = self.collect(self.body("1", ["34020000001310000001"]), self.body("", []))
        assert r.sum_nums == [1, -1]
        assert catalog_problems(r) == ["1 of 2 messages have no SumNum"]

    def test_ids_neither_20_digits_nor_civil_codes_are_skipped_and_named(self) -> None:
        r = self.collect(self.body("3", ["34020000001310000001", "3402000000131000001", "34020000001310000X02"]))
        assert list(r.items) == ["34020000001310000001"]  # C5: skipped, not stored
        assert [i for i, _ in r.skipped] == ["3402000000131000001", "34020000001310000X02"]
        problems = catalog_problems(r)
        assert problems[0].startswith("item skipped: '3402000000131000001': has 19 digits")
        assert "'X' is not a digit" in problems[1] and len(problems) == 2  # SumNum 3 counts the skipped ones

    def test_an_answer_whose_sumnum_counts_a_skipped_item_is_complete(self) -> None:
        # a normal refresh, not only the doctor: a partial answer never removes channels, so one bad
        # item must not keep the NVR's catalog partial (waiting the idle timeout, then flagged) for ever
        r = self.collect(
            self.body("2", ["34020000001310000001"]),
            self.body("2", ["3402000000131000002"]),
            self.body("2", ["3402000000131000002"]),  # sent again: counted once
        )
        assert r.complete and len(r.skipped) == 1
        assert catalog_problems(r)[0].startswith("item skipped: '3402000000131000002'")

    def test_a_hostile_answer_of_bad_ids_is_counted_not_kept(self) -> None:
        # every refresh keeps the skipped items: a device sending bad IDs for 15 minutes must not
        # grow it (nor the doctor's reason, one line of its progress stream) without bound
        bad = [f"1{n:018d}" for n in range(3000)]  # 19 digits each
        odd = [f"340200000010{n:08d}" for n in range(90)]  # type code 100: kept, but named
        r = self.collect(self.body("3090", bad[:1500]), self.body("3090", bad[1500:] + odd))
        assert r.complete and len(r.skipped) <= 100 and r.skipped_count == 3000
        problems = catalog_problems(r)
        assert len(problems) <= 50 and sum(len(p) for p in problems) < 20_000
        assert "2980 more items skipped" in problems and "70 more items with odd IDs" in problems, problems[-3:]

    def test_civil_codes_are_kept_and_a_20_digit_id_with_an_undefined_type_is_named(self) -> None:
        r = self.collect(self.body("2", ["340200", "34020000001000000001"]))
        assert sorted(r.items) == ["340200", "34020000001000000001"] and not r.skipped
        (problem,) = catalog_problems(r)
        assert "34020000001000000001" in problem and "type code 100 is not defined" in problem

    @pytest.mark.parametrize(
        ("declared", "name", "codec", "problem"),
        [
            ("GB2312", "大门", "gb2312", ""),
            ("GB2312", "镕", "gbk", "declares GB2312 but holds characters only GBK has"),
            ("UTF-8", "大门", "gbk", "declares UTF-8 but is in a GB charset (GBK/GB18030)"),
            ("GB2312", "大门", "utf-8", "declares GB2312 but is in UTF-8"),
            ("GBK", "大门\x80", "raw", "declares GBK but holds bytes no charset has"),
        ],
        ids=["clean", "gb2312-with-gbk", "utf8-with-gbk", "gb2312-with-utf8", "undecodable"],
    )
    def test_charset(self, declared: str, name: str, codec: str, problem: str) -> None:
        from gb28181gw.manscdp.codec import charset_problem

        text = f'<?xml version="1.0" encoding="{declared}"?><Response><Name>NAME</Name></Response>'
        if codec == "raw":
            body = text.encode().replace(b"NAME", "大门".encode("gbk") + b"\xff\xff")
        else:
            body = text.encode().replace(b"NAME", name.encode(codec))
        assert charset_problem(body) == problem

    def test_charset_problems_of_an_answer_are_named_once(self) -> None:
        gbk = self.body("2", ["34020000001310000001"], declared="UTF-8").replace(b"<Name>x", "<Name>大门".encode("gbk"))
        r = self.collect(gbk, gbk.replace(b"1310000001<", b"1310000002<"))
        assert r.charset == ["declares UTF-8 but is in a GB charset (GBK/GB18030)"]
        assert catalog_problems(r) == ["charset: declares UTF-8 but is in a GB charset (GBK/GB18030)"]
