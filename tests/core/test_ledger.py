"""The camera ledger's fields, values and ID rules (gb/ledger.py), and division names (divisions.py)."""

from __future__ import annotations

import pytest

from gb28181gw.divisions import area_of, division_name
from gb28181gw.errors import LedgerValueError
from gb28181gw.gb.ledger import (
    FIELD_BY_KEY,
    FIELDS,
    Kind,
    LedgerEntry,
    check_coordinate,
    check_id,
    codes_text,
    diff,
    field_named,
    format_date,
    merge,
    normalise,
    normalise_all,
    parse_date,
    same_value,
)
from gb28181gw.ids import GbId


class TestDates:
    @pytest.mark.parametrize(
        ("text", "kept"),
        [
            ("2020.03", "2020-03"), ("2020-03", "2020-03"), ("2020-03-15", "2020-03-15"), ("2020/3", "2020-03"),
            ("2020/3/5", "2020-03-05"), ("2020年3月", "2020-03"), ("2020年3月15日", "2020-03-15"),
            ("202003", "2020-03"), ("20200315", "2020-03-15"), ("2020-03-15 00:00:00", "2020-03-15"),
            (" 2020.3 ", "2020-03"), ("2020", "2020"), ("2024-02-29", "2024-02-29"),
            # a date cell saved as CSV by Excel or WPS in a Chinese locale, and a year alone in words
            ("2020/3/15 0:00", "2020-03-15"), ("2020/3/15 00:00:00", "2020-03-15"), ("2020年", "2020"),
        ],
    )  # fmt: skip
    def test_the_ways_people_write_them_are_read(self, text: str, kept: str) -> None:
        assert parse_date(text) == kept

    @pytest.mark.parametrize(
        "text", ["2020.13", "2023-02-29", "03/2020", "去年", "2020-3-32", "1899", "2020..03", "2020/3/15 8:30"]
    )
    def test_what_is_not_a_date_says_so(self, text: str) -> None:
        with pytest.raises(ValueError, match=r"date|month|day|year"):
            parse_date(text)

    @pytest.mark.parametrize(
        ("kept", "style", "out"),
        [
            ("2020-03", "YYYY.MM", "2020.03"), ("2020-03-15", "YYYY.MM", "2020.03"),
            ("2020-03-15", "YYYY-MM-DD", "2020-03-15"), ("2020-03", "YYYY-MM-DD", "2020-03"),
            ("2020-03-05", "YYYY年M月D日", "2020年3月5日"), ("2020", "YYYY.MM", "2020"),
        ],
    )  # fmt: skip
    def test_written_in_the_form_s_style(self, kept: str, style: str, out: str) -> None:
        assert format_date(kept, style) == out


class TestCoordinates:
    def test_six_decimals_inside_china_pass(self) -> None:
        assert check_coordinate(Kind.LONGITUDE, "118.376451") is None
        assert check_coordinate(Kind.LATITUDE, "31.3345671") is None

    @pytest.mark.parametrize(
        ("kind", "text", "reason"),
        [
            (Kind.LONGITUDE, "118.37645", "has 5 decimals"),
            (Kind.LONGITUDE, "118.376450", "6th decimal is 0"),
            (Kind.LATITUDE, "31.12345", "has 5 decimals"),
            (Kind.LONGITUDE, "-118.376451", "outside China"),
            (Kind.LATITUDE, "60.123451", "outside China"),
            (Kind.LONGITUDE, "东经118度", "not a decimal"),
            (Kind.LATITUDE, "", "not a decimal"),
        ],
    )
    def test_each_rule_names_itself(self, kind: Kind, text: str, reason: str) -> None:
        got = check_coordinate(kind, text)
        assert got is not None and reason in got


class TestValues:
    @pytest.mark.parametrize(
        ("key", "text", "kept"),
        [
            ("leased", "是", "yes"), ("leased", "否", "no"), ("leased", "No", "no"), ("state", "在用", "active"),
            ("state", "停用", "inactive"), ("plan", "迁移", "move"), ("plan", "remove", "remove"),
            ("pole_height", "6.5", "6.5"), ("pole_arms", "2", "2"), ("port", "05060", "5060"),
            ("ip", "192.168.1.64", "192.168.1.64"), ("location", "  北门岗亭 ", "北门岗亭"), ("built", "2019.7", "2019-07"),
            ("remarks", "", ""),
        ],
    )  # fmt: skip
    def test_kept_values(self, key: str, text: str, kept: str) -> None:
        assert normalise(FIELD_BY_KEY[key], text) == kept

    @pytest.mark.parametrize(
        ("key", "text"),
        [("leased", "maybe"), ("state", "坏了"), ("pole_height", "-1"), ("pole_arms", "2.5"), ("port", "70000"),
         ("ip", "192.168.1"), ("longitude", "118.37"), ("location", "x" * 501), ("remarks", "a\x00b")],
    )  # fmt: skip
    def test_unreadable_values_name_their_field(self, key: str, text: str) -> None:
        with pytest.raises(LedgerValueError) as info:
            normalise(FIELD_BY_KEY[key], text)
        assert info.value.field == key and info.value.reason

    def test_an_unknown_field_is_named_with_the_known_ones(self) -> None:
        with pytest.raises(LedgerValueError, match="no such ledger field.*police_station"):
            normalise_all({"colour": "red"})

    def test_the_choice_words_are_shown_in_chinese(self) -> None:
        assert FIELD_BY_KEY["state"].display("active") == "在用"
        assert FIELD_BY_KEY["leased"].display("no") == "否"
        assert FIELD_BY_KEY["plan"].display("keep") == "保留"

    def test_column_titles_find_their_field(self) -> None:
        assert field_named("所属派出所") is FIELD_BY_KEY["police_station"]
        assert field_named("位置名称") is FIELD_BY_KEY["location"]
        assert field_named("是否符合GB/T28181") is FIELD_BY_KEY["conforms"]
        assert field_named("立杆高度(米)") is FIELD_BY_KEY["pole_height"]
        assert field_named(" police_station ") is FIELD_BY_KEY["police_station"]
        assert field_named("颜色") is None

    def test_titles_and_keys_are_unique(self) -> None:
        assert len({f.key for f in FIELDS}) == len(FIELDS)
        assert len({f.label for f in FIELDS}) == len(FIELDS)


class TestIdRules:
    def test_a_camera_of_the_site_passes(self) -> None:
        assert check_id("34020200011320000001", industry="01", network="0") == []

    def test_each_rule_is_a_reason(self) -> None:
        reasons = check_id("34020200001180000001", industry="01", network="5")
        assert any("type code 118" in r for r in reasons)
        assert any("industry code (positions 9-10) is 00, the site's is 01" in r for r in reasons)
        assert any("network code (position 14) is 0, the site's is 5" in r for r in reasons)

    def test_a_malformed_id_is_its_own_reason(self) -> None:
        assert "digit" in check_id("3402020001132000000X")[0]

    def test_any_type_when_none_is_expected(self) -> None:
        assert check_id("34020200001180000001", types=None) == []


class TestEntries:
    def test_changes_are_what_differs(self) -> None:
        entry = LedgerEntry("34020000001310000001", {"location": "北门", "leased": "no"}, 1.0)
        changes = diff(entry, {"location": "北门", "leased": "yes", "built": "2020-03"})
        assert [(c.field, c.old, c.new) for c in changes] == [("leased", "no", "yes"), ("built", "", "2020-03")]
        after = entry.changed({"location": ""}, 2.0)
        assert after.values == {"leased": "no"} and after.updated_at == 2.0

    def test_a_row_is_the_ledger_over_what_the_device_reports(self) -> None:
        row = merge(
            {"location": "北门岗亭", "township": "赭山街道"},
            {
                "id": "34020200001310000001",
                "reported_name": "Camera 01",
                "address": "gate",
                "manufacturer": "Hikvision",
            },
            ("安徽省", "芜湖市", "镜湖区"),
        )
        assert row["name"] == "Camera 01" and row["location"] == "北门岗亭" and row["brand"] == "Hikvision"
        assert row["area"] == "安徽省 芜湖市 镜湖区 赭山街道"
        assert row["police_station"] == "" and row["kind"] == ""


class TestDivisions:
    def test_names_from_the_civil_code(self) -> None:
        area = area_of("34020200001320000001")
        assert (area.province, area.city, area.district) == ("安徽省", "芜湖市", "镜湖区")
        assert str(area_of("110101")) == "北京市 东城区"  # a municipality's districts have no city between
        assert area_of("340000").names == ["安徽省"]

    def test_an_unknown_code_is_said(self) -> None:
        area = area_of("349901")
        assert area.province == "安徽省" and area.unknown == "3499"
        assert division_name("99") is None

    def test_id_decode_names_them(self) -> None:
        rows = {p: m for p, _, m in GbId.parse("34020200001320000001").describe()}
        assert (
            rows["1-2"] == "province 安徽省"
            and rows["3-4"] == "city 芜湖市"
            and rows["5-6"] == "district/county 镜湖区"
        )


class TestSameValue:
    def test_what_the_row_shows_is_no_change(self) -> None:
        assert same_value("name", "Camera 01", "", "Camera 01")
        assert same_value("built", "2020-03", "2020-03-15", "2020-03-15")  # a form prints the month only
        assert same_value("ip", "192.168.1.64", "", "192.168.1.64")

    def test_real_changes_are_changes(self) -> None:
        assert not same_value("name", "北门", "", "Camera 01")
        assert not same_value("built", "2020-04", "2020-03-15", "2020-03-15")
        assert not same_value("location", "", "北门岗亭", "北门岗亭")  # clearing
        assert not same_value("built", "2020-03-15", "2020-03", "2020-03")  # more precise


def test_expected_type_codes_are_said_as_ranges() -> None:
    assert codes_text(frozenset({131, 132})) == "131/132"
    assert codes_text(frozenset({*range(111, 133), *range(200, 215)})) == "111-132/200-214"
    assert codes_text(frozenset({7, 131, 132, 133})) == "007/131-133"
    assert check_id("34020000002000000001", types=frozenset(range(111, 133))) == [
        "type code 200 (platform) is not 111-132"
    ]


@pytest.mark.parametrize(
    ("key", "written", "kept"),
    [
        ("longitude", "１１８.１２３４５６", "118.123456"),  # full-width digits, as a Chinese IME types them
        ("latitude", "３２．１２３４５６", "32.123456"),
        ("pole_height", "１２.５", "12.5"),
        ("port", "５０６０", "5060"),
        ("ip", "１９２.１６８.１.６４", "192.168.1.64"),
    ],
)
def test_full_width_digits_are_kept_as_ascii(key: str, written: str, kept: str) -> None:
    # kept as typed they would be exported so, and no authority's system reads ３２ as a number
    assert normalise(FIELD_BY_KEY[key], written) == kept


@pytest.mark.parametrize(("key", "written"), [("latitude", "٣٢.١٢٣٤٥٦"), ("cost", "١٢")])
def test_digits_of_other_scripts_are_not_numbers(key: str, written: str) -> None:
    with pytest.raises(LedgerValueError, match="not"):
        normalise(FIELD_BY_KEY[key], written)


def test_a_line_break_written_with_a_carriage_return_is_a_line_break() -> None:
    # Windows tools write a cell's line break as CR LF (and Excel's XLSX as _x000D_): not a control character
    assert normalise(FIELD_BY_KEY["remarks"], "第一行\r\n第二行\r第三行") == "第一行\n第二行\n第三行"


def test_an_excel_date_number_says_what_it_is() -> None:
    # a date column saved to CSV while formatted as a number: 43900 is 2020-03-10 to Excel, to nobody else
    with pytest.raises(ValueError, match=r"'43900' is a spreadsheet's date number \(2020-03-10\?\)"):
        parse_date("43900")


def test_a_lone_surrogate_is_a_value_error_not_a_store_failure() -> None:
    # {"remarks": "\\ud800"} is valid JSON and no text: refused with its field, before the store sees it
    with pytest.raises(LedgerValueError, match="lone surrogate") as exc:
        normalise(FIELD_BY_KEY["remarks"], "北门\ud800")
    assert exc.value.field == "remarks"
