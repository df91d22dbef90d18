"""``gb28181gw id check`` on the ledgers integrators are handed (issue 11, defect 11).

Files are written the way Excel writes them: GBK/GB18030 on Chinese Windows, UTF-8 with a BOM
("CSV UTF-8"), UTF-16 tab-separated ("Unicode text"); each test runs the real command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LEDGER = [
    ("设备编码", "名称", "位置"),
    ("34020000001320000001", "南门枪机", "东城区幸福路"),
    ("34020000001320000002", "北门球机", "东城区和平街"),
    ("34020000001310000003", "𠮷祥路口", "西城区"),  # 𠮷: in GB18030 (4 bytes), not in GBK
]


def gb(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "gb28181gw", *args], input=stdin, capture_output=True, timeout=30)


def csv_bytes(rows: list[tuple[str, ...]], encoding: str, sep: str = ",") -> bytes:
    return "".join(sep.join(row) + "\r\n" for row in rows).encode(encoding)


def check(path: Path, *args: str) -> tuple[int, str, str]:
    result = gb("id", "check", str(path), *args)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_gbk_and_gb18030_csv_by_column_name(tmp_path: Path) -> None:
    gbk = tmp_path / "台账-gbk.csv"
    gbk.write_bytes(csv_bytes(LEDGER[:3], "gbk"))
    code, out, err = check(gbk, "--column", "设备编码")
    assert code == 0, out + err
    assert "2 IDs checked, 0 invalid, 0 duplicates, 0 warnings" in out
    assert "GBK" in err or "GB18030" in err  # says how it read the file
    gb18030 = tmp_path / "台账-gb18030.csv"
    gb18030.write_bytes(csv_bytes(LEDGER, "gb18030"))
    code, out, err = check(gb18030, "--column", "设备编码", "--json")
    assert code == 0, out + err
    data = json.loads(out)
    assert data["encoding"] == "gb18030" and data["checked"] == 3 and data["problems"] == []


def test_utf8_with_and_without_bom(tmp_path: Path) -> None:
    for name, data in (
        ("bom.csv", b"\xef\xbb\xbf" + csv_bytes(LEDGER, "utf-8")),
        ("plain.csv", csv_bytes(LEDGER, "utf-8")),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        code, out, err = check(path, "--column", "设备编码")
        assert code == 0, out + err
        assert "3 IDs checked, 0 invalid" in out and err == ""


def test_utf16_tab_separated_unicode_text(tmp_path: Path) -> None:
    path = tmp_path / "unicode.txt"
    path.write_bytes(csv_bytes(LEDGER, "utf-16", sep="\t"))
    code, out, err = check(path, "--column", "设备编码")
    assert code == 0, out + err
    assert "3 IDs checked, 0 invalid" in out


def test_numeric_column_skips_a_header_row_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    path.write_bytes(csv_bytes(LEDGER, "gb18030"))
    code, out, err = check(path, "--column", "1")
    assert code == 0, out + err
    assert "line 1: skipped as a header: 设备编码" in out
    assert "3 IDs checked, 0 invalid" in out
    # no header: the first row is checked like any other, and a bad first ID is still reported
    path.write_bytes(csv_bytes([("3402000000132000001", "坏"), *LEDGER[1:]], "gb18030"))
    code, out, err = check(path, "--column", "1")
    assert code == 1
    assert "line 1: '3402000000132000001': has 19 digits" in out and "skipped" not in out
    assert "4 IDs checked, 1 invalid" in out


def test_duplicates_name_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    path.write_bytes(csv_bytes([*LEDGER, ("34020000001320000001", "南门枪机(重复)", "东城区")], "gb18030"))
    code, out, err = check(path, "--column", "设备编码")
    assert code == 1
    assert "line 5: 34020000001320000001: duplicate of line 2" in out
    assert "4 IDs checked, 0 invalid, 1 duplicate, 0 warnings" in out
    code, out, err = check(path, "--column", "1", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["duplicates"] == 1 and data["header"] == {"line": 1, "text": "设备编码"}
    assert [(p["line"], p["kind"], p["first_line"]) for p in data["problems"]] == [(5, "duplicate", 2)]


def test_json_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes("设备编码\n34020000001320000001\n3.402E+19\n99020000001320000001\n".encode("gbk"))
    code, out, err = check(path, "--json")
    assert code == 1
    data = json.loads(out)
    assert data["header"] == {"line": 1, "text": "设备编码"}
    assert (data["checked"], data["invalid"], data["warnings"]) == (3, 1, 1)
    kinds = [(p["line"], p["kind"]) for p in data["problems"]]
    assert kinds == [(3, "invalid"), (4, "warning")]
    assert "format the column as Text" in data["problems"][0]["message"]


def test_standard_input_in_gbk() -> None:
    result = gb("id", "check", "-", "--column", "设备编码", stdin=csv_bytes(LEDGER[:3], "gbk"))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert "2 IDs checked, 0 invalid" in result.stdout.decode()


def test_a_workbook_instead_of_its_csv_is_refused_in_words(tmp_path: Path) -> None:
    path = tmp_path / "ledger.xlsx"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    code, out, err = check(path, "--column", "1")
    assert code == 1
    assert "is a spreadsheet workbook, not text" in err and "hint: " in err and "CSV" in err


def test_damaged_files_and_a_column_past_the_last_are_errors_not_tracebacks(tmp_path: Path) -> None:
    cut = tmp_path / "cut-utf16.txt"
    cut.write_bytes(b"\xff\xfe" + "34020000001320000001\r\n".encode("utf-16-le") + b"\x00")  # one byte short
    code, out, err = check(cut)
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err, err
    huge = tmp_path / "huge-cell.csv"
    huge.write_text('"' + "1" * 200_000 + '"\n')
    code, out, err = check(huge, "--column", "1")
    assert code == 1 and "is not a CSV file: line 1" in err and "Traceback" not in err, err
    narrow = tmp_path / "two-columns.csv"
    narrow.write_bytes(csv_bytes(LEDGER, "utf-8"))
    code, out, err = check(narrow, "--column", "9")
    assert code == 2 and "no column 9: the widest row has 3" in err, err


def test_a_header_row_is_shown_without_its_control_characters(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.csv"
    ledger.write_bytes(b"\x1b]0;pwned\x07ID,name\r\n34020000001320000001,a\r\n")
    code, out, err = check(ledger, "--column", "1")
    assert code == 0, out + err
    assert "skipped as a header: \\x1b]0;pwned\\x07ID" in out and "\x1b" not in out
