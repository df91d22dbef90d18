"""SDP for GB/T 28181 (PROTOCOL.md §7.3-7.5, §7.7)."""

from __future__ import annotations

import random

import pytest

from gb28181gw.errors import SdpError
from gb28181gw.sdp import SessionDescription, SsrcAllocator, StreamMode, check_ssrc, play_offer

OFFER = (
    "v=0\r\no=34020000002000000001 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=video 30000 RTP/AVP 96 98 97\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\na=rtpmap:98 H264/90000\r\n"
    "a=rtpmap:97 MPEG4/90000\r\ny=0200000001\r\nf=\r\n"
)

ANSWER_QUIRKY = (  # LF only, y= before m=, an i= line, double spaces, uppercase
    "v=0\no=34020000001310000001  0 0 IN IP4 127.0.0.1\ns=Play\ni=camera\nc=IN IP4 10.0.0.5\nt=0 0\n"
    "y=0200000002\nm=video  15060 TCP/RTP/AVP 96\na=sendonly\na=setup:ACTIVE\na=connection:new\n"
    "a=rtpmap:96 PS/90000\nf=v/2/5/25/2/2048a/1/8/1\n"
)


def offer(port: int = 30000, mode: StreamMode = StreamMode.UDP) -> SessionDescription:
    return play_offer(
        channel_id="34020000001310000001",
        our_id="34020000002000000001",
        media_ip="127.0.0.1",
        port=port,
        ssrc="0200000001",
        mode=mode,
    )


def test_offer_is_what_protocol_md_shows() -> None:
    assert str(offer()) == OFFER
    assert str(SessionDescription.parse(OFFER)) == OFFER


def test_tcp_offers_say_our_role() -> None:
    v = offer(30100, StreamMode.TCP_PASSIVE).video()
    assert v is not None and v.is_tcp and v.setup == "passive" and v.attribute("connection") == "new"
    assert offer(9, StreamMode.TCP_ACTIVE).video().setup == "active"  # type: ignore[union-attr]


def test_quirky_answer() -> None:
    sdp = SessionDescription.parse(ANSWER_QUIRKY)
    v = sdp.video()
    assert v is not None
    assert (v.port, v.proto, v.formats) == (15060, "TCP/RTP/AVP", ["96"])
    assert v.is_tcp and v.setup == "active" and v.direction == "sendonly"
    assert v.rtpmap == {96: "PS"}
    assert sdp.media_address(v) == "10.0.0.5"
    assert sdp.ssrc == "0200000002" and sdp.ssrc_value == 200000002
    assert sdp.format == "v/2/5/25/2/2048a/1/8/1"
    assert ("i", "camera") in sdp.extra
    again = SessionDescription.parse(str(sdp))
    assert again == sdp


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("v=0\r\ns=Play\r\n", "without an m= line"),
        ("v=0\r\nm=video abc RTP/AVP 96\r\n", "m= port"),
        ("v=0\r\nm=video\r\n", "malformed m= line"),
        ("garbage\r\n", "malformed SDP line"),
        ("v=0\r\nm=video 1 RTP/AVP 96\r\ny=12345\r\n", "10 digits"),
        ("v=0\r\nm=video 1 RTP/AVP 96\r\ny=9999999999\r\n", "10 digits"),
        ("v=0\r\nc=IP4\r\nm=video 1 RTP/AVP 96\r\n", "c= line"),
        ("v=1\r\nm=video 1 RTP/AVP 96\r\n", "version"),
    ],
)
def test_bad_sdp(text: str, fragment: str) -> None:
    with pytest.raises(SdpError, match=fragment):
        SessionDescription.parse(text)


def test_ssrc_rule() -> None:
    assert check_ssrc("0200000001") == 200000001 == 0x0BEBC201


def test_ssrc_allocator_unique_and_quarantined() -> None:
    # the last four digits are random since issue 10: the fixed values became shapes
    alloc = SsrcAllocator("34020000002000000001", quarantine=15.0, rng=random.Random(7))
    a = alloc.allocate(0.0)
    b = alloc.allocate(0.0)
    assert a != b and a[:6] == b[:6] == "020000" and a[6:] != "0000" != b[6:]
    assert alloc.allocate(0.0, history=True)[:6] == "120000"
    alloc.release(a, 1.0)
    assert alloc.allocate(2.0) not in (a, b)  # a is cooling down
    for _ in range(9996):
        alloc.allocate(3.0)
    with pytest.raises(SdpError, match="no free SSRC"):
        alloc.allocate(3.0)
    assert alloc.allocate(17.0) == a  # a is free again after its quarantine


def test_ssrc_ranges_of_two_nodes_never_meet() -> None:
    # issue 17: nodes of one gateway.id each hand out SSRCs from their own media.ssrc_min-ssrc_max
    first = SsrcAllocator("34020000002000000001", rng=random.Random(1), sequences=range(1, 5000))
    second = SsrcAllocator("34020000002000000001", rng=random.Random(1), sequences=range(5000, 10000))
    a = {first.allocate(0.0) for _ in range(4999)}
    b = {second.allocate(0.0) for _ in range(5000)}
    assert not a & b and len(a) == 4999 and len(b) == 5000
    assert {int(s[6:]) for s in a} == set(range(1, 5000))
    with pytest.raises(SdpError, match="4,999 streams"):
        first.allocate(0.0)
    with pytest.raises(ValueError, match="within 1-9999"):
        SsrcAllocator("34020000002000000001", rng=random.Random(1), sequences=range(0, 10))
