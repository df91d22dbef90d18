"""The CLI's shared helpers (cli/common.py): how times are read and shown, counts, record fields."""

from __future__ import annotations

import datetime as dt

import pytest

from gb28181gw.cli import common
from gb28181gw.cli.common import ago, duration, field_text, flatten, parse_time, plural

NOW = dt.datetime(2026, 12, 2, 15, 4, 5)


@pytest.mark.parametrize(
    ("text", "end_of_day", "expected"),
    [
        ("2024-05-06", False, dt.datetime(2024, 5, 6)),
        ("2024-05-06", True, dt.datetime(2024, 5, 6, 23, 59, 59)),
        ("2024-05-06T08:30", False, dt.datetime(2024, 5, 6, 8, 30)),
        ("2024-05-06t08:30:15", True, dt.datetime(2024, 5, 6, 8, 30, 15)),
        ("2024-05-06 08:30:15", False, dt.datetime(2024, 5, 6, 8, 30, 15)),
        ("today", False, dt.datetime(2026, 12, 2)),
        ("Yesterday", True, dt.datetime(2026, 12, 1, 23, 59, 59)),
        ("now", True, NOW),
        ("-2h", False, NOW - dt.timedelta(hours=2)),
        ("-90s", False, NOW - dt.timedelta(seconds=90)),
        ("-7d", False, NOW - dt.timedelta(days=7)),
    ],
)
def test_times_an_operator_types(text: str, end_of_day: bool, expected: dt.datetime) -> None:
    assert parse_time(text, now=NOW, end_of_day=end_of_day) == expected


@pytest.mark.parametrize("text", ["2024-02-30", "2024-05-06T25:00", "+2h", "-2w", "tomorrow", "20240506", ""])
def test_what_is_not_a_time_says_what_is(text: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_time(text, now=NOW)


def test_a_relative_time_before_year_one_is_refused_not_a_crash() -> None:
    with pytest.raises(ValueError, match="too far back"):
        parse_time("-999999d", now=NOW)


def test_durations_past_and_future_and_unset() -> None:
    assert [duration(s) for s in (None, 0, 59, 119, 120, 3599, 7200, 7260, 172800, 180000)] == [
        "-", "0 s", "59 s", "119 s", "2 min", "59 min", "2 h", "2 h 1 min", "2 d", "2 d 2 h",
    ]  # fmt: skip
    assert ago(1000.0, now=1300.0) == "5 min ago"
    assert ago(1300.0, now=1000.0) == "in 5 min"  # a future time is never "0 s ago"
    assert ago(0.0) == ago(None) == "never"


def test_plurals() -> None:
    assert [plural(n, "device") for n in (0, 1, 2)] == ["0 devices", "1 device", "2 devices"]
    assert plural(2, "entry", "entries") == "2 entries"


def test_fields_read_by_their_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "_zone", dt.timezone(dt.timedelta(hours=8)))
    epoch = dt.datetime(2026, 12, 2, 7, 0, tzinfo=dt.UTC).timestamp()
    assert field_text("ban.banned_until", epoch).startswith("2026-12-02 15:00:00 +08:00 (")
    assert field_text("last_keepalive", 0.0) == "never"
    assert field_text("uptime_seconds", 7260.4) == "2 h 1 min"
    assert field_text("offline_in", 30) == "in 30 s" and field_text("offline_in", None) == "-"
    assert (field_text("online", True), field_text("store_error", None), field_text("listen", ["a", "b"])) == (
        "yes",
        "-",
        "a, b",
    )
    assert field_text("port", 5060) == "5060" and field_text("device_id", "34020000001320000001") == (
        "34020000001320000001"
    )
    # a device that never registered has no port or registration figures yet, not zeros
    assert [field_text(k, 0) for k in ("port", "local_port", "expires", "keepalive_interval")] == ["-"] * 4
    assert field_text("keepalive_count", 3) == "3" and field_text("devices.known", 0) == "0"
    assert flatten({"sip": {"port": 1, "listen": []}, "pid": 2}) == [("sip.port", 1), ("sip.listen", []), ("pid", 2)]
