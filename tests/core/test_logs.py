"""Wire-trace redaction and structured log lines."""

from __future__ import annotations

import json
import logging

import pytest

from gb28181gw.logs import JsonFormatter, RateLimit, TextFormatter, redact


def test_authorization_secrets_are_redacted() -> None:
    text = (
        "REGISTER sip:3402@3402000000 SIP/2.0\r\n"
        'Authorization: Digest username="34020000001320000001",realm="3402000000",nonce="n1",'
        'uri="sip:x",response="59eb1e7804cae7b13e8c4511216bc6b9",cnonce="0a4f113b",nc=00000001\r\n'
        "Contact: <sip:user:secret@127.0.0.1>\r\n"
        'X-Other: response="kept-here"\r\n'
    )
    out = redact(text)
    assert "59eb1e78" not in out and "0a4f113b" not in out and "secret" not in out
    assert 'response="<redacted>"' in out
    assert 'username="34020000001320000001"' in out
    assert 'X-Other: response="kept-here"' in out


def test_formatters_carry_extra_fields() -> None:
    record = logging.LogRecord("gb28181gw.x", logging.INFO, __file__, 1, "device online", None, None)
    record.device = "34020000001320000001"
    record.reason = "registered again"
    assert 'device=34020000001320000001 reason="registered again"' in TextFormatter().format(record)
    obj = json.loads(JsonFormatter().format(record))
    assert obj["device"] == "34020000001320000001" and obj["msg"] == "device online" and obj["level"] == "info"


def _record(msg: str, created: float, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("gb28181gw.sip", logging.INFO, __file__, 1, msg, None, None)
    record.created = created
    record.__dict__.update(extra)
    return record


def test_peer_text_cannot_forge_lines_or_break_the_stream() -> None:
    # a NUL, a forged second line and GB2312 bytes kept as lone surrogates by surrogateescape
    hostile = "34020000001320000001\x00\nts ERROR forged line \udcba\udca3"
    record = _record("dropped SIP input %s", 0.0, reason=hostile)
    record.args = (hostile,)
    escaped = "34020000001320000001\\x00\\x0ats ERROR forged line \\xba\\xa3"
    text, obj = TextFormatter().format(record), JsonFormatter().format(record)
    for line in (text, obj):
        assert "\n" not in line and "\x00" not in line
        line.encode("utf-8")  # a lone surrogate here would make the log stream raise
    assert f"dropped SIP input {escaped}" in text and f"reason={json.dumps(escaped)}" in text
    assert json.loads(obj)["reason"] == escaped and json.loads(obj)["msg"] == f"dropped SIP input {escaped}"


def test_rate_limit_lets_a_burst_through_then_sums_up_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    limit = RateLimit(burst=3, window=10.0)
    passed = [limit.filter(_record("dropped SIP input", 100.0 + i * 0.01, reason=f"parse: {i}")) for i in range(50)]
    assert passed == [True] * 3 + [False] * 47
    assert limit.filter(_record("another kind", 100.5))  # kinds are limited apart
    assert limit.total_suppressed == 47
    # the next line of the kind after the window says how many were held back
    later = _record("dropped SIP input", 111.0)
    assert limit.filter(later) and later.suppressed == 47  # type: ignore[attr-defined]
    # a kind that went quiet is summed up by the periodic summary
    for i in range(10):
        limit.filter(_record("TCP connect failed", 200.0 + i))
    with caplog.at_level(logging.WARNING, logger="gb28181gw.logs"):
        limit.summarize(205.0)  # its window is still open: nothing yet
        assert not caplog.records
        limit.summarize(215.0)
    (summary,) = caplog.records
    assert summary.getMessage() == "log lines suppressed"
    assert (summary.line, summary.count) == ("TCP connect failed", 7)  # type: ignore[attr-defined]
    assert limit.filter(summary)  # summaries themselves are never held back


def test_wire_trace_is_not_limited() -> None:
    limit = RateLimit(burst=1, window=10.0)
    assert all(limit.filter(_wire(1.0)) for _ in range(10))


def _wire(created: float) -> logging.LogRecord:
    record = logging.LogRecord("gb28181gw.wire", logging.DEBUG, __file__, 1, "%s", ("<",), None)
    record.created = created
    return record
