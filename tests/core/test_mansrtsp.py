"""MANSRTSP bodies (playback control over INFO, PROTOCOL.md §7.9): parsed and built as bytes."""

from __future__ import annotations

import pytest

from gb28181gw.errors import MansrtspError
from gb28181gw.gb import mansrtsp
from gb28181gw.gb.mansrtsp import RtspRequest, RtspResponse, Verb, is_mansrtsp, parse_request, parse_response


@pytest.mark.parametrize("version", ["RTSP/1.0", "MANSRTSP/1.0", "mansrtsp/1.0"])
def test_both_version_tokens_are_read(version: str) -> None:
    request = parse_request(f"PLAY {version}\r\nCSeq: 7\r\nScale: 2.0\r\n".encode())
    assert (request.verb, request.cseq, request.scale, request.version) == (Verb.PLAY, 7, 2.0, version)
    answer = parse_response(f"{version} 200 OK\r\nCSeq: 7\r\nRTP-Info: seq=10;rtptime=900\r\n")
    assert (answer.status, answer.reason, answer.cseq, answer.rtp_info) == (200, "OK", 7, "seq=10;rtptime=900")


def test_lf_only_blank_edges_and_lower_case_headers_are_read() -> None:
    request = parse_request(b"\n\npause RTSP/1.0\ncseq: 3\npausetime: now\n\n")
    assert request.verb is Verb.PAUSE and request.cseq == 3 and request.header("PauseTime") == "now"
    assert request.headers == (("pausetime", "now"),)


def test_headers_after_a_blank_line_are_not_ours() -> None:
    request = parse_request("TEARDOWN RTSP/1.0\r\nCSeq: 1\r\n\r\nnot: a header of ours\r\n")
    assert request.verb is Verb.TEARDOWN and request.headers == ()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"PLAY\r\nCSeq: 1\r\n", "request line"),
        (b"PLAY HTTP/1.1\r\nCSeq: 1\r\n", "request line"),
        (b"PLAY RTSP/1.0 extra\r\nCSeq: 1\r\n", "request line"),
        (b"RECORD RTSP/1.0\r\nCSeq: 1\r\n", "unknown MANSRTSP method"),
        (b"PLAY RTSP/1.0\r\nScale: 1.0\r\n", "without CSeq"),
        (b"PLAY RTSP/1.0\r\nCSeq: one\r\n", "not a number"),
        (b"PLAY RTSP/1.0\r\nCSeq: -1\r\n", "not a number"),
        (b"PLAY RTSP/1.0\r\nCSeq: 12345678901\r\n", "not a number"),
        (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nno colon here\r\n", "malformed"),
        (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nbad name: x\r\n", "malformed"),
        (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: fast\r\n", "not a number"),
        (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: 0\r\n", "not a speed"),
        (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: nan\r\n", "not a speed"),
        (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: clock=20240506T080000Z-\r\n", "npt=START-"),
        (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: npt=soon-\r\n", "not seconds"),
        (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: npt=inf-\r\n", "not a position"),
        (b"PLAY RTSP/1.0\r\nCSeq: 1\r\n" + b"X: " + b"y" * 5000, "at most"),
    ],
)
def test_bad_requests_raise_with_words(body: bytes, words: str) -> None:
    with pytest.raises(MansrtspError, match=words):
        parse_request(body)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "RTSP/1.0 OK\r\nCSeq: 1\r\n",
        "RTSP/1.0 2000 OK\r\nCSeq: 1\r\n",
        "SIP/2.0 200 OK\r\nCSeq: 1\r\n",
        "RTSP/1.0 200 OK\r\n",
    ],
)
def test_bad_answers_raise(body: str) -> None:
    with pytest.raises(MansrtspError):
        parse_response(body)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("npt=100-", 100.0),
        ("npt=12.5-", 12.5),
        ("npt=0-", 0.0),
        ("npt=now-", None),
        ("NPT = 30-60", 30.0),
        ("npt=-", None),
    ],
)
def test_range_forms(value: str, expected: float | None) -> None:
    assert parse_request(f"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: {value}\r\n").range_start == expected


@pytest.mark.parametrize(
    ("value", "expected"), [("2.0", 2.0), ("2", 2.0), ("0.25", 0.25), ("2.000000", 2.0), ("-1.0", -1.0), ("4", 4.0)]
)
def test_scale_forms(value: str, expected: float) -> None:
    assert parse_request(f"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: {value}\r\n").scale == expected


def test_builders_write_exact_bytes() -> None:
    assert mansrtsp.pause(1).serialize() == b"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n"
    assert mansrtsp.resume(2).serialize() == b"PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=now-\r\n"
    assert mansrtsp.seek(3, 100).serialize() == b"PLAY RTSP/1.0\r\nCSeq: 3\r\nRange: npt=100-\r\n"
    assert mansrtsp.seek(3, 12.5).serialize() == b"PLAY RTSP/1.0\r\nCSeq: 3\r\nRange: npt=12.5-\r\n"
    assert mansrtsp.speed(4, 2).serialize() == b"PLAY RTSP/1.0\r\nCSeq: 4\r\nScale: 2.0\r\n"
    assert mansrtsp.speed(4, 0.25).serialize() == b"PLAY RTSP/1.0\r\nCSeq: 4\r\nScale: 0.25\r\n"
    assert mansrtsp.teardown(5).serialize() == b"TEARDOWN RTSP/1.0\r\nCSeq: 5\r\n"
    for scale in mansrtsp.SCALES:  # what every device must take reads back as it was written
        assert parse_request(mansrtsp.speed(1, scale).serialize()).scale == scale


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_seek_refuses_what_is_no_position(bad: float) -> None:
    with pytest.raises(MansrtspError, match="cannot seek"):
        mansrtsp.seek(1, bad)


@pytest.mark.parametrize("bad", [0.0, float("nan"), float("-inf")])
def test_speed_refuses_what_is_no_speed(bad: float) -> None:
    with pytest.raises(MansrtspError, match="cannot play at speed"):
        mansrtsp.speed(1, bad)


def test_with_cseq_relays_every_other_line_as_it_was() -> None:
    # a superior's request relayed into the device's dialog: only CSeq changes, order and case kept
    body = b"PLAY MANSRTSP/1.0\r\nCSeq: 41\r\nScale: 2.000000\r\nRange: npt=now-\r\nX-Vendor: a b\r\n"
    relayed = parse_request(body).with_cseq(3)
    assert relayed.serialize() == b"PLAY RTSP/1.0\r\nCSeq: 3\r\nScale: 2.000000\r\nRange: npt=now-\r\nX-Vendor: a b\r\n"
    answer = parse_response(b"MANSRTSP/1.0 200 OK\nCSeq: 3\nRTP-Info: seq=1;rtptime=2\nRange: npt=0-\n")
    assert answer.with_cseq(41).serialize() == (
        b"MANSRTSP/1.0 200 OK\r\nCSeq: 41\r\nRTP-Info: seq=1;rtptime=2\r\nRange: npt=0-\r\n"
    )
    # CSeq not second in the original: it is written second, the rest in order
    moved = parse_request(b"PAUSE RTSP/1.0\r\nPauseTime: now\r\nCSeq: 9\r\n").with_cseq(1)
    assert moved.serialize() == b"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n"


def test_answer_without_reason_and_describe() -> None:
    answer = parse_response("RTSP/1.0 400\r\nCSeq: 2\r\n")
    assert (answer.status, answer.reason) == (400, "")
    assert answer.serialize() == b"RTSP/1.0 400\r\nCSeq: 2\r\n"
    assert RtspResponse(200, "OK", 1).rtp_info is None
    assert mansrtsp.speed(1, 2).describe() == "PLAY Scale 2.0"
    assert mansrtsp.seek(1, 100).describe() == "PLAY Range npt=100-"
    assert mansrtsp.pause(1).describe() == "PAUSE"
    assert RtspRequest(Verb.PLAY, 1).scale is None and RtspRequest(Verb.PLAY, 1).range_start is None


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("Application/MANSRTSP", True),
        ("application/mansrtsp; charset=utf-8", True),
        (" APPLICATION/MANSRTSP ", True),
        ("Application/MANSCDP+xml", False),
        ("", False),
        (None, False),
    ],
)
def test_is_mansrtsp(content_type: str | None, expected: bool) -> None:
    assert is_mansrtsp(content_type) is expected


# --- a hostile reviewer's cases: what a stranger's body or an operator's number may hold ---------


@pytest.mark.parametrize(
    "body",
    [
        "RTSP/1.0 200 OK\r\nCSeq: \u00b2\r\n",  # "²" is a digit to str.isdigit(), not to int()
        "RTSP/1.0 \u00b200 OK\r\nCSeq: 1\r\n",
        "RTSP/1.0 099 OK\r\nCSeq: 1\r\n",  # no status class: a 0xx must not read as a success
        "RTSP/1.0 000 OK\r\nCSeq: 1\r\n",
    ],
)
def test_unicode_digits_and_classless_codes_are_refused_not_crashed_on(body: str) -> None:
    with pytest.raises(MansrtspError):
        parse_response(body.encode())
    with pytest.raises(MansrtspError):
        parse_request(b"PLAY RTSP/1.0\r\nCSeq: \xc2\xb2\r\n")


@pytest.mark.parametrize("scale", [1e300, 1e16, 1e-7, -1e300, 300.0])
def test_speed_refuses_scales_no_device_could_read(scale: float) -> None:
    # repr() wrote 1e+16 as "1e+16.0": a body no device reads
    with pytest.raises(MansrtspError, match="cannot play at speed"):
        mansrtsp.speed(1, scale)


@pytest.mark.parametrize(
    ("scale", "text"), [(256.0, "256.0"), (-4.0, "-4.0"), (1 / 3, "0.333333"), (1 / 256, "0.003906"), (0.5, "0.5")]
)
def test_scales_are_written_in_fixed_notation(scale: float, text: str) -> None:
    assert mansrtsp.speed(1, scale).header("Scale") == text
    assert parse_request(mansrtsp.speed(1, scale).serialize()).scale == pytest.approx(scale, rel=1e-3)


def test_a_seek_below_a_millisecond_is_written_as_a_number() -> None:
    assert mansrtsp.seek(1, 0.0001).header("Range") == "npt=0-"  # not "npt=0.-"
    assert mansrtsp.seek(1, 7.0004).header("Range") == "npt=7-"
