"""Reading a ledger table into edits (gb/ledger_file.py): header, columns, rows, every problem with its line."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gb28181gw.gb.ledger_file import (
    CLEAR_MARK,
    HEADER_SEARCH_ROWS,
    FileRow,
    LedgerTable,
    column_letter,
    read_table,
)

CH1, CH2, CH3 = "34020000001310000001", "34020000001310000002", "34020000001310000003"


def table(*rows: Sequence[str], first: int = 1, **kw: object) -> LedgerTable:
    return read_table(list(enumerate(rows, first)), **kw)  # type: ignore[arg-type]


def reasons(t: LedgerTable) -> list[tuple[int, str]]:
    return [(p.line, p.reason) for p in t.problems]


def test_column_letters() -> None:
    assert [column_letter(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA",
    ]  # fmt: skip


class TestHeader:
    def test_title_rows_above_the_header_are_skipped(self) -> None:
        t = table(
            ["XX市视频监控整合接入清单", "", ""],
            ["填报单位：XX派出所", "", ""],
            [],
            ["序号", "20位编码", "安装位置"],
            ["1", CH1, "北门岗亭"],
            extra_titles={"序号": None},
        )
        assert t.header_line == 4 and not t.problems
        assert t.rows == [FileRow(5, CH1, {"location": "北门岗亭"})]

    @pytest.mark.parametrize(
        "title",
        ["20位编码", "国标编码", "设备编码", "通道编码", "编码", "ID", "id", "设备ID", "DeviceID", "20位编码（必填）",
         " 国标 编码 ", "*通道国标编码", "摄像机国标编码"],
    )  # fmt: skip
    def test_the_id_column_goes_by_many_titles(self, title: str) -> None:
        t = table(["名称", title], ["南门", CH1])
        assert not t.problems, t.problems
        assert t.rows == [FileRow(2, CH1, {"name": "南门"})]

    def test_a_civil_code_column_is_not_the_id(self) -> None:
        t = table(["行政区划编码", "通道编码", "品牌"], ["340202", CH1, "海康"])
        assert t.column_of("id") is not None and t.column_of("id").index == 1  # type: ignore[union-attr]
        assert [p.column for p in t.problems] == ["A (行政区划编码)"]  # named, not a field: reported

    def test_the_better_id_title_wins_and_the_other_is_reported(self) -> None:
        t = table(["设备编码", "通道编码"], ["34020000001180000001", CH1])
        assert t.rows == [FileRow(2, CH1, {})]
        assert reasons(t) == [
            (1, "column A (设备编码): a second ID column, not read (the IDs are taken from column B (通道编码))")
        ]

    def test_a_note_naming_the_id_is_not_the_header(self) -> None:
        t = table(["填写说明：国标编码须填写20位数字"], ["国标编码", "品牌"], [CH1, "海康"])
        assert t.header_line == 2 and t.rows == [FileRow(3, CH1, {"brand": "海康"})]

    def test_no_id_column(self) -> None:
        t = table(["名称", "品牌"], ["南门", "海康"], first=3)
        assert t.header_line == 0 and t.rows == []
        ((line, reason),) = reasons(t)
        assert line == 3 and "no ID column in the first 10 rows" in reason and "20位编码" in reason

    def test_the_header_is_searched_in_the_first_ten_rows_only(self) -> None:
        rows = [[f"标题{i}"] for i in range(HEADER_SEARCH_ROWS)] + [["20位编码"], [CH1]]
        assert table(*rows).header_line == 0
        assert table(*rows[1:]).header_line == HEADER_SEARCH_ROWS

    def test_unknown_column_is_reported_not_dropped(self) -> None:
        t = table(["20位编码", "颜色", "品牌"], [CH1, "红", "海康"])
        assert reasons(t) == [
            (1, "column B (颜色) names no ledger field and is not imported: rename it "
                "(`gb28181gw ledger set --help` lists the fields) or delete it")
        ]  # fmt: skip
        assert t.problems[0].column == "B (颜色)"
        assert t.rows == [FileRow(2, CH1, {"brand": "海康"})]  # the rest is still read

    def test_two_columns_for_one_field_read_neither(self) -> None:
        t = table(["20位编码", "名称", "设备名称", "品牌"], [CH1, "南门", "北门", "海康"])
        ((line, reason),) = reasons(t)
        assert line == 1 and reason == "columns B (名称) and C (设备名称) both give name: neither is imported; keep one"
        assert t.rows == [FileRow(2, CH1, {"brand": "海康"})]

    def test_extra_titles_map_a_forms_own_columns(self) -> None:
        t = table(
            ["序号", "国标", "所在市、县（区）、乡镇（街道）", "摄像机点位"],
            ["1", CH1, "安徽省 芜湖市", "南门"],
            extra_titles={"序号": None, "国标": "id", "所在市、县（区）、乡镇（街道）": None, "摄像机点位": "location"},
        )
        assert not t.problems
        assert t.rows == [FileRow(2, CH1, {"location": "南门"})]

    def test_extra_title_naming_no_field_is_not_read(self) -> None:
        t = table(["20位编码", "设备名称"], [CH1, "NVR"], extra_titles={"设备名称": "device_name"})
        assert not t.problems and t.rows == [FileRow(2, CH1, {})]


def test_a_title_with_a_note_in_brackets_names_its_field() -> None:
    # a bureau's template marks what must be filled and how: 安装位置（必填）, 经度(WGS-84)
    t = table(
        ["20位编码", "安装位置（必填）", "经度(WGS-84)", "建设时间（格式：2020.03）", "*所属派出所"],
        [CH1, "北门", "", "", ""],
    )
    assert [c.field for c in t.columns] == ["id", "location", "longitude", "built", "police_station"]
    assert not t.problems


class TestRows:
    def test_blank_rows_are_skipped_and_counted(self) -> None:
        t = table(["20位编码", "品牌"], [CH1, "海康"], ["", " "], [], [CH2, "大华"])
        assert [r.line for r in t.rows] == [2, 5] and t.blank == 2 and not t.problems

    def test_empty_and_filler_cells_give_no_value_and_the_mark_clears(self) -> None:
        t = table(
            ["20位编码", "品牌", "型号", "备注", "安装位置"],
            [CH1, "", "-", CLEAR_MARK, "/"],
            [CH2, "  ", "—", "(清空)", "北门"],
        )
        assert t.rows == [FileRow(2, CH1, {"remarks": ""}), FileRow(3, CH2, {"remarks": "", "location": "北门"})]

    @pytest.mark.parametrize(
        ("cell", "reason"),
        [
            ("3.402E+19", "a spreadsheet turned this ID into a number and lost its digits"),
            ("3.40200000013e+19", "a spreadsheet turned this ID into a number"),
            ("3402000000131000001", "19 digits"),
            ("3402000000131000000A", "not a digit"),
            ("", "no ID: the ID column is empty on this row"),
        ],
    )
    def test_a_bad_id_leaves_the_row_out(self, cell: str, reason: str) -> None:
        t = table(["20位编码", "品牌"], [cell, "海康"], [CH2, "大华"])
        ((line, text),) = reasons(t)
        assert line == 2 and reason in text
        assert t.problems[0].column == "A (20位编码)"
        assert t.rows == [FileRow(3, CH2, {"brand": "大华"})]

    def test_what_people_write_to_keep_an_id_text_is_read(self) -> None:
        t = table(["20位编码"], [f"'{CH1}"], [f'="{CH2}"'], [f" {CH3}\t"])
        assert [r.id for r in t.rows] == [CH1, CH2, CH3] and not t.problems

    def test_an_id_typed_in_full_width_digits_is_that_id(self) -> None:
        # a Chinese IME in full-width mode: the same digits, not another ID; NBSP and U+3000 around it too
        wide = CH1.translate({ord("0") + d: 0xFF10 + d for d in range(10)})
        t = table(["20位编码"], [wide], [f"\u3000{CH2}\u00a0"])
        assert [r.id for r in t.rows] == [CH1, CH2] and not t.problems

    def test_a_duplicate_id_is_reported_on_the_later_line_and_neither_row_applied(self) -> None:
        # the gateway leaves out both rows of an ID given twice; the file's reader must not pass it the first
        t = table(["20位编码", "品牌"], [CH1, "海康"], [CH2, "大华"], [CH1, "宇视"], [CH1, "华为"])
        assert reasons(t) == [
            (4, f"{CH1} is also on line 2: which row is meant cannot be told; neither is applied"),
            (5, f"{CH1} is also on line 2: which row is meant cannot be told; neither is applied"),
        ]
        assert [r.line for r in t.rows] == [3]

    def test_more_cells_than_the_header(self) -> None:
        t = table(["20位编码", "品牌"], [CH1, "海康", "多余"], [CH2, "大华", "", "-"])
        assert reasons(t) == [
            (
                2,
                "column C holds '多余' but has no title in the header (line 1); give the column a title or delete the value",
            )
        ]
        assert t.problems[0].id == CH1
        assert t.rows == [FileRow(3, CH2, {"brand": "大华"})]  # empty or filler cells past the header are no problem

    def test_a_value_under_a_blank_title(self) -> None:
        t = table(["20位编码", "", "品牌"], [CH1, "x", "海康"], [CH2, "", "大华"])
        assert [p.line for p in t.problems] == [2] and "column B holds 'x'" in t.problems[0].reason
        assert [r.id for r in t.rows] == [CH2]

    def test_short_rows_give_what_they_have(self) -> None:
        t = table(["品牌", "20位编码", "型号"], ["海康", CH1])
        assert t.rows == [FileRow(2, CH1, {"brand": "海康"})]

    def test_values_are_passed_as_text(self) -> None:
        t = table(["20位编码", "经度", "建设时间", "是否以租代建"], [CH1, "118.37645", "2020.13", "也许"])
        # reading them is the ledger service's (it reports field and reason); the file reader passes them on
        assert t.rows == [FileRow(2, CH1, {"longitude": "118.37645", "built": "2020.13", "leased": "也许"})]
