"""RFC 3261 §18.3 stream framing by Content-Length."""

from __future__ import annotations

import pytest

from gb28181gw.errors import SipParseError
from gb28181gw.sip.framing import PING, StreamFramer
from gb28181gw.sip.message import Limits, parse_message
from tests.helpers import MESSAGE, REGISTER, feed_bytewise


def test_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    out: list[bytes] = []
    for piece in feed_bytewise(REGISTER + MESSAGE):
        out += framer.feed(piece)
    assert out == [REGISTER, MESSAGE]
    assert framer.buffered == 0


def test_several_messages_in_one_read() -> None:
    assert StreamFramer().feed(MESSAGE + REGISTER + MESSAGE) == [MESSAGE, REGISTER, MESSAGE]


def test_partial_body_waits() -> None:
    framer = StreamFramer()
    assert framer.feed(MESSAGE[:-20]) == []
    assert framer.feed(MESSAGE[-20:]) == [MESSAGE]


def test_crlf_keepalive_ping() -> None:
    framer = StreamFramer()
    out = framer.feed(b"\r\n\r\n" + REGISTER + b"\r\n")
    assert out == [PING, REGISTER]
    assert framer.feed(b"\r\n") == [PING]


def test_stray_single_crlf_between_messages_is_skipped() -> None:
    assert StreamFramer().feed(REGISTER + b"\r\n" + MESSAGE) == [REGISTER, MESSAGE]


def test_compact_content_length() -> None:
    msg = MESSAGE.replace(b"Content-Length:", b"l:")
    assert StreamFramer().feed(msg + msg) == [msg, msg]
    assert parse_message(msg).body.endswith(b"</Notify>\r\n")


def test_header_section_too_large() -> None:
    framer = StreamFramer(Limits(max_message_size=2048))
    with pytest.raises(SipParseError) as exc:
        for _ in range(100):
            framer.feed(b"X-Junk: " + b"a" * 100 + b"\r\n")
    assert exc.value.status == 513


def test_one_megabyte_header_is_refused_before_it_is_all_buffered() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError) as exc:
        framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX-Big: " + b"a" * (1024 * 1024))
    assert exc.value.status == 513


def test_body_over_limit() -> None:
    framer = StreamFramer(Limits(max_body_size=10))
    with pytest.raises(SipParseError) as exc:
        framer.feed(MESSAGE)
    assert exc.value.status == 413


def test_malformed_content_length_loses_framing() -> None:
    with pytest.raises(SipParseError) as exc:
        StreamFramer().feed(MESSAGE.replace(b"Content-Length: 169", b"Content-Length: x"))
    assert exc.value.status == 400


def test_missing_content_length_means_no_body() -> None:
    msg = REGISTER.replace(b"Content-Length: 0\r\n", b"")
    assert StreamFramer().feed(msg + msg) == [msg, msg]
