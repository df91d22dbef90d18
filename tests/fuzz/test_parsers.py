"""Hypothesis properties: every parser returns a value or raises its documented error, nothing else."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gb28181gw.errors import AuthError, IdError, SipParseError
from gb28181gw.ids import GbId
from gb28181gw.sip.auth import Challenge, Credentials
from gb28181gw.sip.framing import StreamFramer
from gb28181gw.sip.headers import CSeq, NameAddr, Via
from gb28181gw.sip.message import Limits, parse_message
from gb28181gw.sip.uri import SipUri
from tests.helpers import DEVICE_UDP, MESSAGE, REGISTER, drain_events, new_endpoint, request

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = Limits(max_message_size=4096, max_headers=32, max_line_length=512, max_body_size=2048)

# text built from the characters SIP parsers trip over
SIP_CHARS = st.sampled_from(
    list(' \t\r\n:;,=<>"\\@/[]?%sipSIP/2.0UDPTCPbranchtagz9hG4bK0123456789.-_') + ["\x00", "中", "\xff"]
)
sip_text = st.lists(SIP_CHARS, max_size=120).map("".join)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes replaced, inserted or deleted."""
    data = bytearray(draw(st.sampled_from([REGISTER, MESSAGE])))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 2))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif pos < len(data):
            del data[pos : pos + draw(st.integers(1, 20))]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_parse_message_random_bytes(data: bytes) -> None:
    try:
        msg = parse_message(data, SMALL)
    except SipParseError as exc:
        assert exc.status in (400, 413, 505, 513)
        return
    msg.serialize()


@FUZZ
@given(mutated())
def test_parse_message_mutations(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    for accessor in ("top_via", "from_", "to", "cseq"):
        try:
            getattr(msg, accessor)
        except SipParseError:
            pass
    again = parse_message(msg.serialize())
    assert again.body == msg.body


@FUZZ
@given(st.one_of(st.binary(max_size=1500), mutated()))
def test_endpoint_never_raises_on_input(data: bytes) -> None:
    ep = new_endpoint()
    ep.receive(data, DEVICE_UDP, 0.0)
    drain_events(ep)
    ep.datagrams_to_send()
    # and still serves a good request afterwards
    ep.receive(request("MESSAGE", "z9hG4bKafterwards"), DEVICE_UDP, 1.0)
    assert len(drain_events(ep)) == 1


@FUZZ
@given(st.binary(max_size=3000), st.lists(st.integers(1, 64), min_size=1, max_size=40))
def test_framer_random_chunks(data: bytes, cuts: list[int]) -> None:
    framer = StreamFramer(SMALL)
    stream = REGISTER + data + MESSAGE
    pos = 0
    i = 0
    while pos < len(stream):
        size = cuts[i % len(cuts)]
        i += 1
        try:
            for message in framer.feed(stream[pos : pos + size]):
                assert isinstance(message, bytes)
        except SipParseError:
            return
        pos += size


@FUZZ
@given(sip_text)
def test_header_parsers(text: str) -> None:
    for parse in (Via.parse, NameAddr.parse, CSeq.parse, SipUri.parse):
        try:
            parse(text)
        except SipParseError:
            pass


@FUZZ
@given(sip_text)
def test_auth_parsers(text: str) -> None:
    for prefix in ("", "Digest "):
        for parse in (Credentials.parse, Challenge.parse):
            try:
                parse(prefix + text)
            except AuthError:
                pass


@FUZZ
@given(st.text(max_size=30), st.booleans(), st.booleans())
def test_ids(text: str, strict: bool, civil: bool) -> None:
    try:
        gid = GbId.parse(text, strict=strict, allow_civil=civil)
    except IdError as exc:
        assert exc.reason
        return
    assert gid.value == text
    gid.describe()
