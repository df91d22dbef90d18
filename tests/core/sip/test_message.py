"""RFC 3261 §7 message codec: parse, serialize, round trips, RFC 4475 torture tests."""

from __future__ import annotations

import pytest

from gb28181gw.errors import SipParseError
from gb28181gw.sip.headers import CSeq, Headers, NameAddr, Via
from gb28181gw.sip.message import Limits, Request, Response, make_request, make_response, parse_message
from gb28181gw.sip.uri import SipUri
from tests.helpers import FIXTURES, MESSAGE, REGISTER, crlf, load_fixture


class TestParseRegister:
    def test_fields(self) -> None:
        msg = parse_message(REGISTER)
        assert isinstance(msg, Request)
        assert msg.method == "REGISTER"
        assert msg.uri == "sip:34020000002000000001@3402000000"
        assert msg.call_id == "1926390155@127.0.0.1"
        assert msg.cseq == CSeq(1, "REGISTER")
        assert msg.top_via.transport == "UDP"
        assert msg.top_via.host == "127.0.0.1" and msg.top_via.port == 5061
        assert msg.top_via.params == {"rport": None, "branch": "z9hG4bK1843296217"}
        assert msg.from_.user == "34020000001320000001"
        assert msg.from_.tag == "1520488418"
        assert msg.to.tag is None
        assert msg.headers["expires"] == "3600"
        assert msg.headers["X-GB-VER"] == "3.0"
        assert msg.body == b""

    def test_round_trip_is_byte_exact(self) -> None:
        assert parse_message(REGISTER).serialize() == REGISTER
        assert parse_message(MESSAGE).serialize() == MESSAGE

    def test_body_is_bytes_of_content_length(self) -> None:
        msg = parse_message(MESSAGE)
        assert msg.body.startswith(b"<?xml") and msg.body.endswith(b"</Notify>\r\n")

    def test_trailing_bytes_after_body_are_ignored(self) -> None:
        # RFC 3261 §18.3: bytes beyond Content-Length in a datagram are discarded
        msg = parse_message(MESSAGE + b"junk")
        assert msg.body.endswith(b"</Notify>\r\n")

    def test_leading_crlfs_are_ignored(self) -> None:
        assert parse_message(b"\r\n\r\n" + REGISTER).method == "REGISTER"  # type: ignore[union-attr]

    def test_bare_lf_line_ends_are_tolerated(self) -> None:
        msg = parse_message(REGISTER.replace(b"\r\n", b"\n"))
        assert msg.headers["call-id"] == "1926390155@127.0.0.1"

    def test_no_empty_line_is_tolerated_on_datagrams(self) -> None:
        msg = parse_message(REGISTER.rstrip(b"\r\n"))
        assert msg.headers["content-length"] == "0"


class TestHeaders:
    def test_compact_forms_and_case(self) -> None:
        data = crlf(
            """OPTIONS sip:a@b SIP/2.0
v: SIP/2.0/UDP h:5060;branch=z9hG4bKx
f: <sip:a@b>;tag=1
t: sip:b@c
i: cid
CSEQ: 1 OPTIONS
m: <sip:a@h>
l: 0
c: application/sdp

"""
        )
        msg = parse_message(data)
        assert msg.headers.get("Via") == "SIP/2.0/UDP h:5060;branch=z9hG4bKx"
        assert msg.headers.get("call-ID") == "cid"
        assert msg.headers.get("Contact") == "<sip:a@h>"
        assert msg.headers.get("content-type") == "application/sdp"
        assert msg.serialize() == data

    def test_repeated_and_comma_separated_values(self) -> None:
        data = crlf(
            """OPTIONS sip:a@b SIP/2.0
Via: SIP/2.0/UDP h1;branch=z9hG4bK1, SIP/2.0/TCP h2;branch=z9hG4bK2
Via: SIP/2.0/UDP h3;branch=z9hG4bK3
From: <sip:a@b>;tag=1
To: sip:b@c
Call-ID: x
CSeq: 1 OPTIONS
Contact: "A, B" <sip:a@h1>, <sip:b@h2>;q=0.5

"""
        )
        msg = parse_message(data)
        vias = msg.headers.get_all("via")
        assert [Via.parse(v).host for v in vias] == ["h1", "h2", "h3"]
        assert msg.top_via.branch == "z9hG4bK1"
        contacts = [NameAddr.parse(c) for c in msg.headers.get_all("contact")]
        assert contacts[0].display_name == "A, B"
        assert contacts[1].params == {"q": "0.5"}

    def test_quoted_chinese_display_name_survives_round_trip(self) -> None:
        display = "一号门岗".encode("gb2312")
        data = REGISTER.replace(b"From: <sip:", b'From: "' + display + b'" <sip:')
        msg = parse_message(data)
        assert msg.from_.display_name is not None
        assert msg.from_.display_name.encode("utf-8", "surrogateescape") == display
        assert msg.serialize() == data

    def test_utf8_display_name(self) -> None:
        data = REGISTER.replace(b"From: <sip:", 'From: "南门摄像机" <sip:'.encode())
        assert parse_message(data).from_.display_name == "南门摄像机"

    def test_header_params_with_spaces(self) -> None:
        na = NameAddr.parse(' "x" <sip:a@b;transport=tcp> ;  tag  = 77 ; expires=0')
        assert na.uri == "sip:a@b;transport=tcp"
        assert na.params == {"tag": "77", "expires": "0"}

    def test_addr_spec_params_belong_to_the_header(self) -> None:
        na = NameAddr.parse("sip:watson@example.com;tag=DkfV")
        assert na.uri == "sip:watson@example.com"
        assert na.tag == "DkfV"

    def test_headers_container_mutations(self) -> None:
        h = Headers([("Via", "a"), ("Route", "r1"), ("Via", "b")])
        h.prepend("Via", "top")
        assert h.get_all("via") == ["top", "a", "b"]
        h.set_first("via", "new-top")
        assert h.get_all("via") == ["new-top", "a", "b"]
        h.set("v", "only")
        assert h.get_all("via") == ["only"]
        h.remove("route")
        assert "route" not in h and len(h) == 1


class TestUri:
    @pytest.mark.parametrize(
        ("text", "user", "host", "port"),
        [
            ("sip:34020000001320000001@3402000000", "34020000001320000001", "3402000000", None),
            ("sip:34020000001320000001@127.0.0.1:5061", "34020000001320000001", "127.0.0.1", 5061),
            ("sip:127.0.0.1:5060", None, "127.0.0.1", 5060),
            ("sips:u@[2001:db8::1]:5061;transport=tcp", "u", "[2001:db8::1]", 5061),
            ("SIP:u:pw@h", "u", "h", None),
        ],
    )
    def test_parse(self, text: str, user: str | None, host: str, port: int | None) -> None:
        uri = SipUri.parse(text)
        assert (uri.user, uri.host, uri.port) == (user, host, port)

    def test_round_trip_with_params_and_headers(self) -> None:
        text = "sip:a@b:5060;lr;transport=udp?subject=x"
        uri = SipUri.parse(text)
        assert uri.params == {"lr": None, "transport": "udp"}
        assert uri.headers == "subject=x"
        assert str(uri) == text

    @pytest.mark.parametrize("text", ["sip:", "sip:@h", "sip:u@h:99999", "sip:u@[::1", "sip:u@h:x", "sip:u@h h"])
    def test_malformed(self, text: str) -> None:
        with pytest.raises(SipParseError):
            SipUri.parse(text)

    def test_unsupported_scheme_is_416(self) -> None:
        with pytest.raises(SipParseError) as exc:
            SipUri.parse("tel:+8612345")
        assert exc.value.status == 416


class TestSerialize:
    def test_content_length_is_computed_in_bytes(self) -> None:
        body = '<?xml version="1.0" encoding="GB2312"?><Notify><Name>南门</Name></Notify>'.encode("gb2312")
        req = make_request(
            "MESSAGE",
            "sip:34020000001320000001@3402000000",
            from_addr="sip:34020000002000000001@3402000000",
            to_addr="sip:34020000001320000001@3402000000",
            call_id="c1",
            cseq=7,
            from_tag="t1",
            content_type="Application/MANSCDP+xml",
            body=body,
        )
        req.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx")  # the endpoint's job
        wire = req.serialize()
        assert f"Content-Length: {len(body)}\r\n".encode() in wire
        again = parse_message(wire)
        assert again.body == body
        assert again.cseq == CSeq(7, "MESSAGE")

    def test_existing_content_length_is_rewritten_in_place(self) -> None:
        msg = parse_message(MESSAGE)
        msg.body = b"x"
        wire = msg.serialize()
        assert wire.endswith(b"Content-Length: 1\r\n\r\nx")

    def test_make_response_copies_dialog_headers_and_adds_tag(self) -> None:
        req = parse_message(REGISTER)
        assert isinstance(req, Request)
        resp = make_response(req, 200, to_tag="abc")
        assert isinstance(resp, Response)
        assert resp.headers.get_all("via") == req.headers.get_all("via")
        assert resp.to.tag == "abc"
        assert resp.headers["call-id"] == req.call_id
        assert "contact" not in resp.headers
        trying = make_response(req, 100, to_tag="abc")
        assert trying.to.tag is None
        assert parse_message(resp.serialize()).status == 200  # type: ignore[union-attr]


class TestLimits:
    def test_message_too_large(self) -> None:
        with pytest.raises(SipParseError) as exc:
            parse_message(REGISTER, Limits(max_message_size=100))
        assert exc.value.status == 513

    def test_too_many_headers_keeps_partial_for_an_answer(self) -> None:
        with pytest.raises(SipParseError) as exc:
            parse_message(REGISTER, Limits(max_headers=5))
        assert exc.value.status == 513
        assert isinstance(exc.value.partial, Request)
        assert exc.value.partial.headers.get("call-id") == "1926390155@127.0.0.1"

    def test_body_over_limit_is_413(self) -> None:
        with pytest.raises(SipParseError) as exc:
            parse_message(MESSAGE, Limits(max_body_size=10))
        assert exc.value.status == 413


VALID = sorted(FIXTURES.joinpath("sip", "rfc4475", "valid").glob("*.sip"))


class TestRfc4475Valid:
    @pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
    def test_parses_and_round_trips(self, path) -> None:  # type: ignore[no-untyped-def]
        data = path.read_bytes()
        msg = parse_message(data)
        msg.top_via  # noqa: B018
        msg.from_  # noqa: B018
        msg.to  # noqa: B018
        again = parse_message(msg.serialize())
        before, after = msg.headers.copy(), again.headers.copy()
        for h in (before, after):
            h.remove("content-length")  # added on serialization when the original had none
        assert after == before
        assert again.body == msg.body

    def test_wsinv_details(self) -> None:
        msg = parse_message(load_fixture("sip", "rfc4475", "valid", "wsinv.sip"))
        assert isinstance(msg, Request)
        assert msg.to.tag == "1918181833n"
        assert msg.from_.display_name == 'J Rosenberg \\"'
        assert msg.cseq == CSeq(9, "INVITE")
        assert msg.headers["max-forwards"] == "0068"
        assert [Via.parse(v).host for v in msg.headers.get_all("via")] == [
            "192.0.2.2",
            "spindle.example.com",
            "192.168.255.111",
        ]
        assert msg.headers["subject"] == ""
        assert msg.headers["NewFangledHeader"] == "newfangled value continued newfangled value"
        assert msg.headers["UnknownHeaderWithUnusualValue"] == ";;,,;;,;"
        assert len(msg.body) == 150

    def test_dblreq_takes_the_first_message_only(self) -> None:
        msg = parse_message(load_fixture("sip", "rfc4475", "valid", "dblreq.sip"))
        assert isinstance(msg, Request) and msg.method == "REGISTER" and msg.body == b""

    def test_esc02_method_is_not_unescaped(self) -> None:
        msg = parse_message(load_fixture("sip", "rfc4475", "valid", "esc02.sip"))
        assert isinstance(msg, Request) and msg.method == "RE%47IST%45R"
        assert len(msg.headers.get_all("contact")) == 2  # C%6Fntact is another header

    def test_unreason_keeps_utf8_reason(self) -> None:
        msg = parse_message(load_fixture("sip", "rfc4475", "valid", "unreason.sip"))
        assert isinstance(msg, Response) and msg.status == 200
        assert "простое" in msg.reason

    def test_noreason_empty_phrase(self) -> None:
        msg = parse_message(load_fixture("sip", "rfc4475", "valid", "noreason.sip"))
        assert isinstance(msg, Response) and msg.status == 100 and msg.reason == ""


def test_parse_errors_leave_no_reference_cycles() -> None:
    """A flood of garbage must be freed at once by reference counting, not by a rare full collection."""
    import gc

    from gb28181gw.sip.endpoint import Peer
    from tests.helpers import drain_events, new_endpoint

    ep = new_endpoint()
    peer = Peer("UDP", "127.0.0.1", 5060)
    garbage = [
        b"INVITE \x00sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa\r\n\r\n",  # bad start line
        b"REGISTER sip:a SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKb\r\nBad Name: x\r\n\r\n",  # bad header name
        b"REGISTER sip:a SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKc\r\nCSeq: abc\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n",
        b"garbage",
    ]
    gc.collect()
    gc.disable()
    try:
        for i in range(200):
            for data in garbage:
                ep.receive(data, peer, 1.0 + i)
            drain_events(ep)
            ep.datagrams_to_send()
        assert gc.collect() == 0
    finally:
        gc.enable()
