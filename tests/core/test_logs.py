"""Wire-trace redaction and structured log lines."""

from __future__ import annotations

import json
import logging

from gb28181gw.logs import JsonFormatter, TextFormatter, redact


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
