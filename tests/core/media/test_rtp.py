"""RTP packets (RFC 3550) and RFC 4571 framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181gw.errors import RtpError
from gb28181gw.media.rtp import RtpPacket, read_header, set_ssrc, uint16_add, uint16_diff, uint16_gt, uint32_gt
from gb28181gw.media.tcp_framing import Rfc4571Reader, frame
from tests.helpers import feed_bytewise

PKT = RtpPacket(96, 65535, 3600, 200000001, True, b"\x00\x00\x01\xba" + b"x" * 100)


def test_round_trip_and_repr() -> None:
    data = PKT.serialize()
    assert data[:2] == b"\x80\xe0" and len(data) == 12 + 104
    assert RtpPacket.parse(data) == PKT
    assert repr(PKT) == "RtpPacket(pt=96, seq=65535, ts=3600, ssrc=0x0bebc201, marker=True, payload=104 bytes)"


def test_csrc_extension_and_padding() -> None:
    p = RtpPacket(96, 1, 2, 3, payload=b"abc", csrc=[7, 8], extension=(0xBEDE, b"\x01\x02\x03\x04"))
    data = bytearray(p.serialize()) + b"\x00\x02"  # two bytes of padding; the last byte counts them
    data[0] |= 0x20  # the P bit
    parsed = RtpPacket.parse(bytes(data))
    assert parsed.csrc == [7, 8] and parsed.extension == (0xBEDE, b"\x01\x02\x03\x04")
    assert parsed.payload == b"abc" and parsed.padding == 2


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\x80" * 11, "shorter"),
        (b"\x40" + b"\x00" * 11, "version"),
        (b"\x82" + b"\x00" * 11, "CSRC"),
        (b"\x90" + b"\x00" * 11, "extension"),
        (b"\xa0" + b"\x00" * 12, "padding"),
    ],
)
def test_bad_packets(data: bytes, fragment: str) -> None:
    with pytest.raises(RtpError, match=fragment):
        RtpPacket.parse(data)


@given(st.binary(max_size=200))
def test_parse_raises_only_rtp_error(data: bytes) -> None:
    try:
        RtpPacket.parse(data)
    except RtpError:
        pass


def test_set_ssrc_in_place() -> None:
    buf = bytearray(b"\x00\x00" + PKT.serialize())
    set_ssrc(buf, 0xDEADBEEF, offset=2)
    assert read_header(buf, 2) == (96, 65535, 3600, 0xDEADBEEF, True)
    assert buf[14:] == PKT.serialize()[12:]  # payload untouched


def test_wraparound() -> None:
    assert uint16_add(65535, 1) == 0
    assert uint16_gt(0, 65535) and not uint16_gt(65535, 0)
    assert uint16_diff(2, 65534) == 4 and uint16_diff(65534, 2) == -4
    assert uint32_gt(5, 0xFFFFFFF0)


def test_rfc4571_bytewise_and_batched() -> None:
    packets = [RtpPacket(96, i, 3600 * i, 1, payload=bytes([i]) * (i * 50 + 10)).serialize() for i in range(5)]
    stream = b"".join(frame(p) for p in packets)
    reader = Rfc4571Reader()
    got = [p for chunk in feed_bytewise(stream) for p in reader.feed(chunk)]
    assert got == packets and reader.buffered == 0
    assert Rfc4571Reader().feed(stream) == packets


def test_interleaved_dollar_form() -> None:
    p = PKT.serialize()
    data = b"$\x00" + len(p).to_bytes(2, "big") + p
    assert Rfc4571Reader().feed(data + frame(p)) == [p, p]


def test_resync_after_garbage() -> None:
    p = PKT.serialize()
    reader = Rfc4571Reader()
    got = reader.feed(frame(p) + b"\xff\xff\x13\x37junk" + frame(p))
    assert got == [p, p]
    assert reader.resyncs == 1 and reader.skipped > 0
