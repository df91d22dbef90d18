"""The authorities' forms (gb/forms.py): form files read or refused by key, sheets laid out, rows checked."""

from __future__ import annotations

from importlib import resources

import pytest

from gb28181gw.errors import FormError
from gb28181gw.gb.forms import Form, RowProblem, Site, build, check_rows, import_titles, parse_form

CAM = "34020000001310000001"
CAM2 = "34020000001320000002"

# the columns of each shipped form, exactly as issue 14 lists them
PLATFORM_COLUMNS = [
    "序号", "名称", "平台厂商", "是否符合GB/T 28181", "网络类型", "平台描述", "是否已对接本级雪亮平台",
    "建设时间", "建设费用", "运维费", "备注",
]  # fmt: skip
CAMERA_COLUMNS = [
    "序号", "20位编码", "名称", "管理平台名称", "品牌", "型号", "所在市、县（区）、乡镇（街道）", "经度", "纬度",
    "建设时间", "是否以租代建", "状态", "计划整合方式", "备注",
]  # fmt: skip
SURVEY_COLUMNS = [
    "序号", "20位编码", "名称", "管理平台名称", "品牌", "型号", "所在市、县（区）、乡镇（街道）", "所属派出所",
    "经度", "纬度", "视频图像命名及视频图像文字标注", "立杆编号", "立杆高度", "横臂数量", "立杆状况",
    "建设时间", "是否以租代建", "状态", "计划整合方式", "备注",
]  # fmt: skip
REGISTRATION_COLUMNS = ["序号", "联网设备名称", "品牌", "型号", "端口号", "管理员密码", "备注"]
SHIPPED = {
    "integration-list": [("平台", "platforms", PLATFORM_COLUMNS), ("摄像机", "cameras", CAMERA_COLUMNS)],
    "camera-survey": [("调研表", "cameras", SURVEY_COLUMNS)],
    "network-registration": [("联网设备", "devices", REGISTRATION_COLUMNS)],
}

SMALL = """
name = "small"
title = "小表"

[[sheets]]
name = "摄像机"
rows = "cameras"
titles = ["{site}清单", "填报日期：{date} 共{count}路"]

[[sheets.columns]]
title = "序号"
value = "row_number"

[[sheets.columns]]
title = "编码"
value = "id"
width = 24

[[sheets.columns]]
title = "名称"
value = "name"
required = true

[[sheets.columns]]
title = "地区"
value = ["city", "district", "township"]

[[sheets.columns]]
title = "经度"
value = "longitude"

[[sheets.columns]]
title = "纬度"
value = "latitude"

[[sheets.columns]]
title = "建设时间"
value = "built"
format = "YYYY.MM"

[[sheets.columns]]
title = "以租代建"
value = "leased"

[[sheets.columns]]
title = "状态"
value = "state"

[[sheets.columns]]
title = "密码"
text = ""
"""


def small() -> Form:
    return parse_form(SMALL, "small.toml")


def row(id_: str = CAM, **values: str) -> dict[str, str]:
    base = {"id": id_, "name": "北门", "longitude": "118.376451", "latitude": "31.123457"}
    return {**base, **values}


class TestShippedForms:
    @pytest.mark.parametrize("name", sorted(SHIPPED))
    def test_each_loads_and_its_header_is_the_issue_s(self, name: str) -> None:
        text = (resources.files("gb28181gw") / "forms" / f"{name}.toml").read_text(encoding="utf-8")
        form = parse_form(text, f"{name}.toml")
        assert form.name == name
        assert [(s.name, s.rows, s.header) for s in form.sheets] == SHIPPED[name]

    def test_the_password_column_is_never_filled(self) -> None:
        text = (resources.files("gb28181gw") / "forms" / "network-registration.toml").read_text(encoding="utf-8")
        form = parse_form(text, "network-registration.toml")
        sheet = form.sheets[0]
        table = build(
            form, sheet, [{"id": "34020000001180000001", "name": "NVR", "password": "secret"}], Site("2026-12-02")
        )
        assert table.rows[0][sheet.header.index("管理员密码")] == ""


class TestFormErrors:
    """Every file that cannot be used is refused naming the file and the key."""

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (('value = "latitude"', 'value = "polestation"'),
             'small.toml: sheets[0].columns[5].value: no field "polestation" (did you mean pole_number?)'),
            (('value = "latitude"', 'value = "纬度"'), 'sheets[0].columns[5].value: no field "纬度" (did you mean latitude?'),
            (('value = "latitude"', 'value = "lattitude"'), "did you mean latitude?"),
            (('value = "latitude"', "value = 3"), "sheets[0].columns[5].value: must be a field key"),
            (('value = "latitude"', 'value = "latitude"\ntext = "x"'), "sheets[0].columns[5]: a column has either"),
            (('name = "small"', 'name = "Small Form"'), "small.toml: name: 'Small Form' must be lower-case"),
            (('name = "small"\n', ""), "small.toml: name: missing"),
            (('rows = "cameras"', 'rows = "people"'), "sheets[0].rows: 'people' is not one of cameras, devices, platforms"),
            (('name = "摄像机"', 'name = "a/b"'), "sheets[0].name: 'a/b': a sheet name"),
            (("{site}清单", "{city}清单"), "sheets[0].titles[0]: no placeholder {city}"),
            (("{site}清单", "{site清单"), "sheets[0].titles[0]: "),
            (('format = "YYYY.MM"', 'format = "YYYY.MM"\nwidth = "wide"'), "sheets[0].columns[6].width: must be a number"),
            (('title = "经度"\nvalue = "longitude"', 'title = "经度"\nvalue = "longitude"\nformat = "YYYY"'),
             "sheets[0].columns[4].format: only a date column has a format"),
            (('format = "YYYY.MM"', 'format = "dd/mm/yy"'), "sheets[0].columns[6].format: 'dd/mm/yy' is not a date style"),
            (('title = "名称"', 'title = "编码"'), "sheets[0].columns[2].title: '编码' is the title of another column"),
            (("required = true", 'required = "yes"'), "sheets[0].columns[2].required: must be true or false"),
            (('text = ""', 'text = ""\nrequired = true'), "sheets[0].columns[9].required: a fixed text is never missing"),
            (('title = "序号"', 'title = "序号"\ncolour = "red"'), "sheets[0].columns[0].colour: unknown key"),
            (('rows = "cameras"', 'rows = "cameras"\ntypes = ["131"]'), "sheets[0].types: must be a list of type codes"),
            (('title = "密码"', 'title = "校验问题"'), "sheets[0].columns: 校验问题 is the column the export adds"),
            (('title = "小表"', 'title = "小表"\n[x'), "small.toml: not TOML"),
        ],
    )  # fmt: skip
    def test_the_message_names_the_key(self, change: tuple[str, str], message: str) -> None:
        old, new = change
        assert old in SMALL
        with pytest.raises(FormError) as caught:
            parse_form(SMALL.replace(old, new, 1), "small.toml")
        assert message in str(caught.value)
        assert str(caught.value).startswith("small.toml: ")

    def test_a_form_without_sheets_or_columns(self) -> None:
        with pytest.raises(FormError, match=r"^x.toml: sheets: a form needs at least one"):
            parse_form('name = "x"\ntitle = "x"\n', "x.toml")
        with pytest.raises(FormError, match=r"sheets\[0\]\.columns: a sheet needs at least one"):
            parse_form('name = "x"\ntitle = "x"\n[[sheets]]\nname = "s"\nrows = "devices"\n', "x.toml")

    def test_two_sheets_of_one_name(self) -> None:
        doubled = SMALL + SMALL[SMALL.index("[[sheets]]") :]
        with pytest.raises(FormError, match=r"sheets\[1\]\.name: '摄像机' is the name of another sheet"):
            parse_form(doubled, "small.toml")


class TestLayout:
    def test_cells_are_shown_as_people_read_them(self) -> None:
        form = small()
        r = row(
            city="南京市", district="鼓楼区", township="宁海路街道", built="2020-03-15", leased="yes", state="inactive"
        )
        table = build(form, form.sheets[0], [r, row(CAM2, name="南门")], Site("2026-12-02", name="某小区"))
        assert table.titles == ["某小区清单", "填报日期：2026年12月02日 共2路"]
        assert table.header == ["序号", "编码", "名称", "地区", "经度", "纬度", "建设时间", "以租代建", "状态", "密码"]
        assert table.rows[0] == [
            "1",
            CAM,
            "北门",
            "南京市鼓楼区宁海路街道",
            "118.376451",
            "31.123457",
            "2020.03",
            "是",
            "停用",
            "",
        ]
        assert table.rows[1][:3] == ["2", CAM2, "南门"]
        assert table.ids == [CAM, CAM2]
        assert table.problems == []

    def test_the_default_sheet_is_the_cameras(self) -> None:
        text = (resources.files("gb28181gw") / "forms" / "integration-list.toml").read_text(encoding="utf-8")
        form = parse_form(text, "integration-list.toml")
        assert (
            form.sheet().name == "摄像机" and form.sheet("1").name == "平台" and form.sheet("平台").rows == "platforms"
        )
        with pytest.raises(FormError, match="no sheet 'x' .*平台, 摄像机"):
            form.sheet("x")


class TestChecks:
    """Validation before export (issue 14 item 4): each rule is a row's reason, with its column."""

    def check(self, *rows: dict[str, str], industry: str = "", network: str = "") -> list[RowProblem]:
        return check_rows(small().sheets[0], list(rows), industry=industry, network=network)

    def test_a_good_row_passes(self) -> None:
        assert self.check(row(built="2020-03")) == []

    @pytest.mark.parametrize(
        ("values", "column", "reason"),
        [
            ({"longitude": "118.37645"}, "经度", "5 decimals; at least 6"),
            ({"latitude": "31.123450"}, "纬度", "6th decimal is 0"),
            ({"longitude": "18.376451"}, "经度", "outside China"),
            ({"built": "2020.13"}, "建设时间", "month 13"),
            ({"name": ""}, "名称", "required, but empty"),
        ],
    )
    def test_each_rule_names_its_column(self, values: dict[str, str], column: str, reason: str) -> None:
        [p] = self.check(row(**values))
        assert (p.sheet, p.row, p.id, p.column) == ("摄像机", 1, CAM, column)
        assert reason in p.reason

    def test_a_type_code_that_is_not_a_camera(self) -> None:
        [p] = self.check(row("34020000001340000001"))
        assert p.column == "编码" and "type code 134" in p.reason

    def test_the_site_s_industry_and_network(self) -> None:
        problems = self.check(row(), industry="01", network="5")
        assert [p.reason for p in problems] == [
            "industry code (positions 9-10) is 00, the site's is 01",
            "network code (position 14) is 0, the site's is 5",
        ]
        assert self.check(row(), industry="00", network="0") == []

    def test_a_duplicate_id_names_the_first_row(self) -> None:
        [p] = self.check(row(), row(CAM2), row())
        assert (p.row, p.id, p.reason) == (3, CAM, f"{CAM} is also on row 1")

    def test_a_malformed_id(self) -> None:
        [p] = self.check(row("3402000000131000000X"))
        assert p.column == "编码" and p.id == "3402000000131000000X"

    def test_every_problem_of_a_row_is_listed_and_joined_in_one_cell(self) -> None:
        form = small()
        table = build(form, form.sheets[0], [row(longitude="118.3", built="soon", name="")], Site("2026-12-02"))
        assert [p.column for p in table.problems] == ["名称", "经度", "建设时间"]
        assert table.reasons(1).count("；") == 2 and table.reasons(2) == ""
        assert table.rows[0][6] == "soon"  # an unreadable date is shown as it is, and said why


def shipped() -> list[Form]:
    return [
        parse_form((resources.files("gb28181gw") / "forms" / f"{n}.toml").read_text(encoding="utf-8"), n)
        for n in sorted(SHIPPED)
    ]


def test_a_form_read_back_knows_every_column_it_printed() -> None:
    titles = import_titles(shipped())
    every = {t for sheets in SHIPPED.values() for _, _, columns in sheets for t in columns}
    assert set(titles) == every | {"校验问题"}
    assert titles["20位编码"] == "id" and titles["建设时间"] == "built" and titles["立杆高度"] == "pole_height"
    assert titles["联网设备名称"] == "name" and titles["端口号"] == "port"
    for derived in ("序号", "所在市、县（区）、乡镇（街道）", "管理员密码", "校验问题"):
        assert titles[derived] is None, derived


def test_a_title_two_forms_use_differently_is_left_to_the_import() -> None:
    other = parse_form(SMALL.replace('title = "编码"', 'title = "品牌"', 1), "other.toml")
    titles = import_titles([*shipped(), other])
    assert "品牌" not in titles and titles["型号"] == "model"


# --- hostile review (issue 14 items 3 and 4) ----------------------------------------------------

# a city's own form as an integrator writes it: another layout, the area split in columns, a
# date style 2020年03月, and 所属派出所 required
CITY = """
name = "nanjing-points"
title = "南京市视频监控点位登记表"

[[sheets]]
name = "点位登记"
rows = "cameras"
titles = ["南京市公安局", "{site}视频监控点位登记表", "填报日期：{date}"]

[[sheets.columns]]
title = "点位编号"
value = "id"

[[sheets.columns]]
title = "点位名称"
value = "name"
required = true

[[sheets.columns]]
title = "区（县）"
value = "district"

[[sheets.columns]]
title = "街道"
value = "township"

[[sheets.columns]]
title = "所属派出所"
value = "police_station"
required = true

[[sheets.columns]]
title = "经纬度"
value = ["longitude", "latitude"]
separator = ","

[[sheets.columns]]
title = "建设年月"
value = "built"
format = "YYYY年MM月"

[[sheets.columns]]
title = "序号"
value = "row_number"
"""


class TestAnIntegratorsForm:
    def test_a_city_form_with_its_own_layout_works_without_code(self) -> None:
        form = parse_form(CITY, "nanjing.toml")
        sheet = form.sheets[0]
        rows = [
            row(district="鼓楼区", township="宁海路街道", police_station="宁海路派出所", built="2020-03-15"),
            row(CAM2, district="鼓楼区", built="2020-03"),
        ]
        table = build(form, sheet, rows, Site("2026-12-02", "鼓楼小区"))
        assert table.titles == ["南京市公安局", "鼓楼小区视频监控点位登记表", "填报日期：2026年12月02日"]
        assert table.rows == [
            [CAM, "北门", "鼓楼区", "宁海路街道", "宁海路派出所", "118.376451,31.123457", "2020年03月", "1"],
            [CAM2, "北门", "鼓楼区", "", "", "118.376451,31.123457", "2020年03月", "2"],
        ]
        assert [(p.row, p.column, p.reason) for p in table.problems] == [(2, "所属派出所", "required, but empty")]

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (('value = "police_station"', 'value = "所属派出所"'),
             'sheets[0].columns[4].value: no field "所属派出所" (did you mean police_station?'),
            (('value = "police_station"', 'value = "police_staion"'), "did you mean police_station?"),
            (('format = "YYYY年MM月"', 'format = "yyyy年mm月"'), "sheets[0].columns[6].format: 'yyyy年mm月'"),
            (('[[sheets]]', '[[sheet]]'), "nanjing.toml: sheet: unknown key"),
            (('title = "街道"', 'titel = "街道"'), "sheets[0].columns[3].titel: unknown key"),
            (('title = "街道"', 'title = "街道"\nnote = ' + "[" * 2000 + "]" * 2000),
             "nanjing.toml: nested too deeply to be a form"),
        ],
    )  # fmt: skip
    def test_every_mistake_in_it_is_named_with_its_key(self, change: tuple[str, str], message: str) -> None:
        old, new = change
        assert old in CITY
        with pytest.raises(FormError) as caught:
            parse_form(CITY.replace(old, new, 1), "nanjing.toml")
        assert message in str(caught.value) and str(caught.value).startswith("nanjing.toml: ")


def test_a_form_asking_millions_of_cells_is_refused_by_key() -> None:
    # 3,000 columns fit in a form file's 256 KB; with 5,000 cameras that is 15 million cells
    many = SMALL
    columns = "".join(f'[[sheets.columns]]\ntitle = "c{i}"\nvalue = "row_number"\n' for i in range(3000))
    with pytest.raises(FormError, match=r"^small.toml: sheets\[0\].columns: 3010 columns; a sheet has at most 256$"):
        parse_form(many + columns, "small.toml")
    sheets = "".join(SMALL[SMALL.index("[[sheets]]") :].replace('name = "摄像机"', f'name = "s{i}"') for i in range(20))
    with pytest.raises(FormError, match=r"^small.toml: sheets: 20 sheets; a form has at most 16$"):
        parse_form('name = "small"\ntitle = "x"\n' + sheets, "small.toml")
    titles = SMALL.replace('titles = ["{site}清单", ', "titles = [" + '"t", ' * 30)
    with pytest.raises(FormError, match=r"sheets\[0\].titles: 31 title rows; at most 16$"):
        parse_form(titles, "small.toml")


class TestDateStyles:
    """Dates are read in any of the issue's forms and written in the column's own style."""

    @pytest.mark.parametrize("written", ["2020.03", "2020-03", "2020-03-15", "2020/3"])
    @pytest.mark.parametrize(("style", "shown"), [("YYYY.MM", "2020.03"), ("YYYY年MM月", "2020年03月")])
    def test_each_written_form_is_shown_in_the_style(self, written: str, style: str, shown: str) -> None:
        from gb28181gw.gb.ledger import FIELD_BY_KEY, normalise

        form = parse_form(SMALL.replace('format = "YYYY.MM"', f'format = "{style}"'), "small.toml")
        kept = normalise(FIELD_BY_KEY["built"], written)
        table = build(form, form.sheets[0], [row(built=kept)], Site("2026-12-02"))
        assert table.rows[0][6] == shown and table.problems == []

    @pytest.mark.parametrize(
        ("style", "kept", "shown"),
        [
            ("YYYY年MM月DD日", "2020-03", "2020年03月"),  # was 2020年03: the 月 went with the missing day
            ("YYYY年M月D日", "2020-03", "2020年3月"),
            ("YYYY年MM月DD日", "2020", "2020年"),
            ("MM/YYYY", "2020", "2020"),  # was "": a year-only date vanished from the form
            ("DD.MM.YYYY", "2020-03", "03.2020"),  # was .03.2020
            ("YYYY.MM.DD", "2020-03", "2020.03"),
            ("YYYY-MM-DD", "2020-03-15", "2020-03-15"),
        ],
    )
    def test_a_style_asking_more_than_is_known_drops_only_the_missing_parts(
        self, style: str, kept: str, shown: str
    ) -> None:
        from gb28181gw.gb.ledger import format_date

        assert format_date(kept, style) == shown


class TestHostileRows:
    def check(self, *rows: dict[str, str]) -> list[RowProblem]:
        return check_rows(small().sheets[0], list(rows))

    @pytest.mark.parametrize("value", ["１１８.３７６４５１", "١١٨.٣٧٦٤٥١"])
    def test_a_coordinate_in_other_digits_is_flagged(self, value: str) -> None:
        # Python's \\d and float() take full-width and Arabic-Indic digits; no authority's tool does
        [p] = self.check(row(longitude=value))
        assert p.column == "经度" and "not a decimal number" in p.reason

    @pytest.mark.parametrize("name", [" ", "\u3000", "\t"])
    def test_a_required_cell_of_blanks_is_empty(self, name: str) -> None:
        [p] = self.check(row(name=name))
        assert (p.column, p.reason) == ("名称", "required, but empty")

    @pytest.mark.parametrize(
        ("id_", "reason"),
        [
            ("34020000001319000001", "network code (position 14) 9 is reserved"),
            ("34020000201310000001", "industry code (positions 9-10) 20 is reserved"),
            ("34020000701310000001", "industry code (positions 9-10) 70 is reserved"),
        ],
    )
    def test_industry_and_network_must_be_valid_codes_even_with_no_site_codes(self, id_: str, reason: str) -> None:
        [p] = self.check(row(id_))
        assert p.column == "编码" and p.reason == reason

    def test_every_defined_industry_and_network_code_passes(self) -> None:
        ids = [f"34020000{i:02d}131{n}000001" for i in (*range(15), *range(40, 60), *range(90, 100)) for n in range(9)]
        assert self.check(*(row(i) for i in ids)) == []
