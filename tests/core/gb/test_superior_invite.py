"""A superior's live, playback and download INVITE read and answered with bytes (PROTOCOL.md §9.5, §9.6, §7.3-7.8)."""

from __future__ import annotations

import pytest

from gb28181gw.errors import LocalProtocolError, OfferError
from gb28181gw.gb.playback import Span
from gb28181gw.gb.superior_invite import (
    ConsumerTransport,
    ServedInput,
    ServedState,
    answer_sdp,
    next_state,
    parse_offer,
    render_table,
    target_candidates,
    target_channel,
)
from gb28181gw.sdp import SessionDescription, SessionKind, file_size_text
from gb28181gw.sip.message import Request, parse_message

CH, UPPER = "34020000001310000001", "34010000002000000001"

#: The superior's INVITE of PROTOCOL.md §9.5, byte for byte (TCP, it listens, it gives the SSRC).
SECTION_9_5 = (
    "INVITE sip:34020000001310000001@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK7000001\r\n"
    "From: <sip:34010000002000000001@3401000000>;tag=up33001\r\n"
    "To: <sip:34020000001310000001@3402000000>\r\n"
    "Call-ID: up-inv-77@127.0.0.1\r\n"
    "CSeq: 20 INVITE\r\n"
    "Contact: <sip:34010000002000000001@127.0.0.1:5070>\r\n"
    "Subject: 34020000001310000001:0100000077,34010000002000000001:0\r\n"
    "Content-Type: application/sdp\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: {length}\r\n\r\n{body}"
)
OFFER = (
    "v=0\r\no=34010000002000000001 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=video 40000 TCP/RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\na=setup:passive\r\n"
    "a=connection:new\r\ny=0100000077\r\nf=\r\n"
)


def invite(body: str = OFFER, *, subject: str | None = None, uri: str | None = None) -> Request:
    text = SECTION_9_5.format(length=len(body.encode()), body=body)
    if subject is not None:
        text = text.replace("Subject: 34020000001310000001:0100000077,34010000002000000001:0\r\n", subject)
    if uri is not None:
        text = text.replace("INVITE sip:34020000001310000001@127.0.0.1:5060", f"INVITE {uri}", 1)
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


class TestOffer:
    def test_section_9_5_offer(self) -> None:
        offer = parse_offer(invite())
        assert offer.channel_id == CH and offer.subject == f"{CH}:0100000077"
        assert offer.transport is ConsumerTransport.TCP  # it is passive: we connect
        assert (offer.host, offer.port, offer.payload_type, offer.ssrc) == ("127.0.0.1", 40000, 96, 100000077)

    @pytest.mark.parametrize(
        ("proto", "setup", "transport"),
        [
            ("RTP/AVP", "", ConsumerTransport.UDP),
            ("TCP/RTP/AVP", "passive", ConsumerTransport.TCP),
            ("TCP/RTP/AVP", "active", ConsumerTransport.TCP_PASSIVE),
            ("TCP/RTP/AVP", "actpass", ConsumerTransport.TCP),  # the receiver listens (Annex D)
            ("TCP/RTP/AVP", "", ConsumerTransport.TCP),
        ],
    )
    def test_setup_roles(self, proto: str, setup: str, transport: ConsumerTransport) -> None:
        body = OFFER.replace("TCP/RTP/AVP", proto).replace(
            "a=setup:passive\r\n", f"a=setup:{setup}\r\n" if setup else ""
        )
        assert parse_offer(invite(body)).transport is transport

    def test_missing_or_zero_y_means_no_ssrc(self) -> None:
        assert parse_offer(invite(OFFER.replace("y=0100000077\r\n", ""))).ssrc is None
        assert parse_offer(invite(OFFER.replace("y=0100000077", "y=0000000000"))).ssrc is None  # wvp PR #817

    def test_quirks_lf_lines_y_before_m_media_level_c(self) -> None:
        body = (
            "v=0\no=x 0 0 IN IP4 10.0.0.1\ns=Play\nt=0 0\ny=0100000078\nm=video  40002  RTP/AVP 98 96\n"
            "c=IN IP4 10.0.0.2\na=rtpmap:98 H264/90000\na=rtpmap:96 PS/90000\n"
        )
        offer = parse_offer(invite(body))
        assert (offer.host, offer.port, offer.payload_type, offer.ssrc) == ("10.0.0.2", 40002, 96, 100000078)

    def test_ps_without_rtpmap_or_under_another_number(self) -> None:
        assert parse_offer(invite(OFFER.replace("a=rtpmap:96 PS/90000\r\n", ""))).payload_type == 96
        moved = OFFER.replace("TCP/RTP/AVP 96", "TCP/RTP/AVP 100").replace("rtpmap:96", "rtpmap:100")
        assert parse_offer(invite(moved)).require_ps() == 100

    @pytest.mark.parametrize(
        ("body", "status", "words"),
        [
            ("", 488, "without an SDP offer"),
            ("v=0\r\nnonsense\r\n", 400, "SDP cannot be used"),
            (OFFER.replace("s=Play", "s=Playback"), 400, "the end is not after the start"),  # t=0 0
            (OFFER.replace("s=Play", "s=Download").replace("t=0 0", "t=now later"), 400, "not two epoch seconds"),
            (OFFER.replace("s=Play", "s=playback").replace("t=0 0", "t=1714954200 1714953600"), 400, "not after"),
            (OFFER.replace("s=Play", "s=Playback").replace("t=0 0\r\n", ""), 400, "s=Playback"),
            (OFFER.replace("m=video", "m=audio"), 488, "no m=video"),
            (OFFER.replace("40000", "0"), 488, "port 0"),
            (OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"), 400, "no usable media address"),
            (OFFER.replace("c=IN IP4 127.0.0.1\r\n", ""), 400, "no usable media address"),
            (OFFER.replace("TCP/RTP/AVP", "RTP/SAVP"), 488, "neither RTP/AVP"),
        ],
    )
    def test_refused(self, body: str, status: int, words: str) -> None:
        with pytest.raises(OfferError) as info:
            parse_offer(invite(body))
        assert info.value.status == status and words in str(info.value)

    @pytest.mark.parametrize("y", ["12", "123456789", "01000000771", "0a00000077", "4294967296"])
    def test_a_y_that_is_no_gb_ssrc_is_ignored_not_fatal(self, y: str) -> None:
        offer = parse_offer(invite(OFFER.replace("y=0100000077", f"y={y}")))
        assert offer.ssrc is None and offer.ignored_ssrc == y  # we send with ours and answer it
        assert (offer.channel_id, offer.port) == (CH, 40000)

    def test_a_bad_y_does_not_hide_another_fault(self) -> None:
        with pytest.raises(OfferError) as info:
            parse_offer(invite("v=0\r\nnonsense\r\ny=12\r\n"))
        assert info.value.status == 400

    def test_no_address_is_fine_when_it_connects_to_us(self) -> None:
        active = OFFER.replace("a=setup:passive", "a=setup:active")
        for body in (
            active.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"),
            active.replace("c=IN IP4 127.0.0.1\r\n", ""),
        ):
            offer = parse_offer(invite(body))
            assert offer.transport is ConsumerTransport.TCP_PASSIVE and offer.host == ""  # the shell takes its SIP host

    def test_no_ps_is_488_naming_what_was_offered(self) -> None:
        h264 = OFFER.replace("TCP/RTP/AVP 96", "TCP/RTP/AVP 98").replace("96 PS/90000", "98 H264/90000")
        offer = parse_offer(invite(h264))  # readable: the channel checks come first
        with pytest.raises(OfferError) as info:
            offer.require_ps()
        assert info.value.status == 488 and "H264" in str(info.value)


#: A superior's Playback offer (PROTOCOL.md §7.8.1): u= names another channel than Subject and Request-URI.
RECORDED = (
    OFFER.replace("s=Play", "s=playback")
    .replace("t=0 0\r\n", "u=34020000001310000002:0\r\nt=1714953600 1714954200\r\n")
    .replace("y=0100000077", "y=1100000077")
)


class TestRecorded:
    def test_playback_span_and_u_first(self) -> None:
        offer = parse_offer(invite(RECORDED))
        assert offer.session is SessionKind.PLAYBACK and offer.kind == "playback"
        assert offer.span == Span(1714953600, 1714954200) and offer.download_speed is None
        assert offer.channel_id == "34020000001310000002" and offer.candidates == ("34020000001310000002", CH)
        assert offer.ssrc == 1100000077

    def test_download_speed_one_when_absent(self) -> None:
        download = RECORDED.replace("s=playback", "s=DOWNLOAD")
        offer = parse_offer(invite(download))
        assert offer.session is SessionKind.DOWNLOAD and offer.download_speed == 1
        faster = download.replace("a=rtpmap:96 PS/90000\r\n", "a=rtpmap:96 PS/90000\r\na=downloadspeed:4\r\n")
        assert parse_offer(invite(faster)).download_speed == 4

    def test_answer_echoes_s_t_u_and_passes_the_file_size_up(self) -> None:
        offer = parse_offer(invite(RECORDED.replace("s=playback", "s=Download")))
        sdp = answer_sdp(offer, channel_id=CH, media_ip="192.0.2.7", port=30100, ssrc=1100000077, file_size="-1")
        assert sdp.serialize().encode() == (
            b"v=0\r\no=34020000001310000001 0 0 IN IP4 192.0.2.7\r\ns=Download\r\n"
            b"u=34020000001310000002:0\r\nc=IN IP4 192.0.2.7\r\nt=1714953600 1714954200\r\n"
            b"m=video 30100 TCP/RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\na=setup:active\r\n"
            b"a=connection:new\r\na=filesize:-1\r\ny=1100000077\r\nf=\r\n"
        )
        plain = str(answer_sdp(offer, channel_id=CH, media_ip="192.0.2.7", port=1, ssrc=1))
        assert "filesize" not in plain and "s=Download\r\n" in plain

    def test_live_answer_has_no_u_and_the_file_size_is_not_for_it(self) -> None:
        text = str(
            answer_sdp(parse_offer(invite()), channel_id=CH, media_ip="127.0.0.1", port=1, ssrc=1, file_size="9")
        )
        assert "u=" not in text and "filesize" not in text and "t=0 0\r\n" in text

    def test_file_size_text_keeps_what_the_device_said(self) -> None:
        def answer(line: str) -> SessionDescription:
            return SessionDescription.parse(f"v=0\r\ns=Download\r\nt=0 0\r\nm=video 1 RTP/AVP 96\r\n{line}")

        assert file_size_text(answer("a=filesize:-1\r\n")) == "-1"
        assert file_size_text(answer("a=filesize: 536870912\r\n")) == "536870912"
        assert file_size_text(answer("a=filesize:big\r\n")) is None and file_size_text(answer("")) is None


class TestChannel:
    def test_subject_then_request_uri_then_u(self) -> None:
        assert target_channel(f"{CH}:0100000077,{UPPER}:0", f"sip:{UPPER}@3402000000", None) == CH
        assert target_channel(None, f"sip:{CH}@3402000000", "34020000001310000009:0") == CH
        assert target_channel("  ", "sip:3402000000", "34020000001310000009:0") == "34020000001310000009"
        assert target_channel(None, "not a uri", None) == ""
        # u= in its normal (URL) form names a file, not a channel
        assert target_channel(None, "sip:3402000000", "http://storage/a/b") == ""

    def test_every_channel_named_is_a_candidate_in_order(self) -> None:
        other = "34020000001310000002"
        assert target_candidates(f"{other}:0100000077,{UPPER}:0", f"sip:{CH}@3402000000", f"{CH}:0") == (other, CH)
        offer = parse_offer(invite(subject=f"Subject: {other}:0100000077,{UPPER}:0\r\n"))
        assert offer.channel_id == other and offer.candidates == (other, CH)

    def test_subject_wins_over_the_request_uri(self) -> None:
        offer = parse_offer(invite(uri=f"sip:{UPPER}@127.0.0.1:5060"))
        assert offer.channel_id == CH

    def test_request_uri_without_subject(self) -> None:
        offer = parse_offer(invite(subject=""))
        assert offer.channel_id == CH and offer.subject == ""

    def test_nothing_names_a_channel(self) -> None:
        with pytest.raises(OfferError) as info:
            parse_offer(invite(subject="", uri="sip:127.0.0.1:5060"))
        assert info.value.status == 400


class TestAnswer:
    def test_tcp_active_answer_bytes(self) -> None:
        sdp = answer_sdp(parse_offer(invite()), channel_id=CH, media_ip="192.0.2.7", port=30100, ssrc=100000077)
        assert sdp.serialize().encode() == (
            b"v=0\r\no=34020000001310000001 0 0 IN IP4 192.0.2.7\r\ns=Play\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n"
            b"m=video 30100 TCP/RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\na=setup:active\r\n"
            b"a=connection:new\r\ny=0100000077\r\nf=\r\n"
        )

    def test_tcp_passive_answer_has_our_listening_port(self) -> None:
        offer = parse_offer(invite(OFFER.replace("setup:passive", "setup:active")))
        text = str(answer_sdp(offer, channel_id=CH, media_ip="127.0.0.1", port=31000, ssrc=200001234))
        assert "m=video 31000 TCP/RTP/AVP 96\r\n" in text and "a=setup:passive\r\n" in text
        assert "y=0200001234\r\n" in text

    def test_udp_answer_and_ipv6(self) -> None:
        offer = parse_offer(invite(OFFER.replace("TCP/RTP/AVP", "RTP/AVP")))
        text = str(answer_sdp(offer, channel_id=CH, media_ip="2001:db8::7", port=30002, ssrc=1))
        assert "c=IN IP6 2001:db8::7\r\n" in text and "m=video 30002 RTP/AVP 96\r\n" in text
        assert "setup" not in text and "y=0000000001\r\nf=\r\n" in text and text.endswith("\r\n")

    def test_no_ps_no_answer(self) -> None:
        h264 = OFFER.replace("TCP/RTP/AVP 96", "TCP/RTP/AVP 98").replace("96 PS/90000", "98 H264/90000")
        with pytest.raises(OfferError):
            answer_sdp(parse_offer(invite(h264)), channel_id=CH, media_ip="127.0.0.1", port=1, ssrc=1)


class TestStates:
    def test_life(self) -> None:
        s = ServedState.PROCEEDING
        for event, expected in [
            (ServedInput.ANSWERED, ServedState.ACCEPTED),
            (ServedInput.ACKED, ServedState.SENDING),
            (ServedInput.ACKED, ServedState.SENDING),
            (ServedInput.END, ServedState.ENDED),
            (ServedInput.END, ServedState.ENDED),
        ]:
            s = next_state(s, event)
            assert s is expected

    def test_illegal_input_names_the_state(self) -> None:
        with pytest.raises(LocalProtocolError, match="ENDED cannot take ANSWERED"):
            next_state(ServedState.ENDED, ServedInput.ANSWERED)
        with pytest.raises(LocalProtocolError, match="PROCEEDING cannot take ACKED"):
            next_state(ServedState.PROCEEDING, ServedInput.ACKED)

    def test_render(self) -> None:
        assert '"ACCEPTED" -> "SENDING" [label="ACKED"]' in render_table()
