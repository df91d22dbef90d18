"""Live-play INVITE sessions, driven through two sans-I/O endpoints (gateway and device)."""

from __future__ import annotations

import pytest

from gb28181gw.gb.model import Device
from gb28181gw.gb.session import PlaySession, PlayState, SessionError, invite
from gb28181gw.sdp import SessionDescription, StreamMode
from gb28181gw.sip.endpoint import Peer
from gb28181gw.sip.events import RequestReceived, ResponseReceived
from gb28181gw.sip.message import Request, make_response, parse_message
from tests.helpers import drain_events, new_endpoint

GW = Peer("UDP", "127.0.0.1", 5060)
DEV = Peer("UDP", "127.0.0.1", 5062)
CH, NVR = "34020000001310000001", "34020000001180000001"

ANSWER = (
    "v=0\r\no=34020000001310000001 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 10.1.1.9\r\nt=0 0\r\n"
    "m=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny={ssrc}\r\nf=\r\n"
)


def session(mode: StreamMode = StreamMode.UDP) -> PlaySession:
    return PlaySession.start(
        CH,
        Device(NVR, transport="UDP", host=DEV.host, port=DEV.port),
        our_id="34020000002000000001",
        domain="3402000000",
        media_ip="127.0.0.1",
        port=30000,
        ssrc="0200000001",
        mode=mode,
        call_id="call-1",
        local_tag="gwtag",
    )


def exchange(
    body: str | None, status: int = 200, mode: StreamMode = StreamMode.UDP
) -> tuple[PlaySession, Request, object]:
    """INVITE from the gateway endpoint to a device endpoint, which answers ``status`` with ``body``."""
    gw, dev = new_endpoint(), new_endpoint()
    s = session(mode)
    tx = gw.send_request(invite(s, contact="sip:34020000002000000001@127.0.0.1:5060"), DEV, 0.0)
    ((wire, _),) = gw.datagrams_to_send()
    dev.receive(wire, GW, 0.0)
    (ev,) = drain_events(dev)
    assert isinstance(ev, RequestReceived) and ev.transaction is not None
    dev.datagrams_to_send()  # 100 Trying
    resp = make_response(ev.request, status, to_tag="devtag")
    resp.headers.add("Contact", f"<sip:{CH}@127.0.0.1:5062>")
    if body is not None:
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = body.encode()
    dev.respond(ev.transaction, resp, 0.0)
    for data, _ in dev.datagrams_to_send():
        gw.receive(data, DEV, 0.1)
    events = [e for e in drain_events(gw) if isinstance(e, ResponseReceived)]
    return s, ev.request, events[-1].response if events else tx


def test_invite_is_what_protocol_md_shows() -> None:
    s, req, _ = exchange(ANSWER.format(ssrc="0200000001"))
    assert req.method == "INVITE" and req.uri == f"sip:{CH}@127.0.0.1:5062"
    assert req.headers["subject"] == f"{CH}:0200000001,34020000002000000001:0"
    assert req.headers["content-type"] == "application/sdp"
    offer = SessionDescription.parse(req.body)
    assert offer.ssrc == "0200000001" and offer.video().port == 30000  # type: ignore[union-attr]


def test_answer_establishes_and_its_ssrc_wins() -> None:
    s, _, resp = exchange(ANSWER.format(ssrc="0200000077"))
    ack = s.answered(resp)  # type: ignore[arg-type]
    assert s.state is PlayState.ESTABLISHED
    assert s.ssrc == "0200000077" and s.offered_ssrc == 200000077
    assert (s.media_host, s.media_port) == ("10.1.1.9", 15060)
    assert ack.method == "ACK" and ack.uri == f"sip:{CH}@127.0.0.1:5062"
    assert ack.cseq.number == 1 and ack.to.tag == "devtag" and ack.from_.tag == "gwtag"
    bye = s.bye()
    assert bye.method == "BYE" and bye.cseq.number == 2 and bye.headers["call-id"] == "call-1"
    assert s.state is PlayState.TERMINATED


def test_answer_without_y_keeps_the_offered_ssrc() -> None:
    s, _, resp = exchange(ANSWER.format(ssrc="0200000001").replace("y=0200000001\r\n", ""))
    s.answered(resp)  # type: ignore[arg-type]
    assert s.ssrc == "0200000001"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (None, "no SDP"),
        (ANSWER.format(ssrc="0200000001").replace("15060", "0"), "port 0"),
        (ANSWER.format(ssrc="0200000001").replace("PS/90000", "HIKVISION/90000"), "not a GB/T 28181 stream"),
        (ANSWER.format(ssrc="12345"), "unusable"),
        ("v=0\r\ns=Play\r\nm=audio 8000 RTP/AVP 8\r\n", "no video"),
    ],
)
def test_unusable_answers(body: str | None, fragment: str) -> None:
    s, _, resp = exchange(body)
    with pytest.raises(SessionError, match=fragment):
        s.answered(resp)  # type: ignore[arg-type]


def test_tcp_active_answered_with_udp_is_refused() -> None:
    s, _, resp = exchange(ANSWER.format(ssrc="0200000001"), mode=StreamMode.TCP_ACTIVE)
    with pytest.raises(SessionError, match="answered UDP"):
        s.answered(resp)  # type: ignore[arg-type]


def test_device_bye_matches_its_dialog() -> None:
    s, _, resp = exchange(ANSWER.format(ssrc="0200000001"))
    s.answered(resp)  # type: ignore[arg-type]
    bye = (
        f"BYE sip:34020000002000000001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKb1\r\n"
        f"From: <sip:{CH}@3402000000>;tag=devtag\r\nTo: <sip:34020000002000000001@3402000000>;tag=gwtag\r\n"
        "Call-ID: call-1\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(bye)
    assert isinstance(msg, Request) and s.matches(msg)
    other = parse_message(bye.replace(b"call-1", b"call-2"))
    assert isinstance(other, Request) and not s.matches(other)


def test_device_requests_in_the_dialog_are_checked_and_bye_ends_it() -> None:
    from gb28181gw.errors import DialogError
    from gb28181gw.sip.dialog import DialogId, DialogState, dialog_id_of

    s, _, resp = exchange(ANSWER.format(ssrc="0200000001"))
    s.answered(resp)  # type: ignore[arg-type]
    assert s.dialog_id == DialogId("call-1", "gwtag", "devtag") and s.dialog.state is DialogState.CONFIRMED

    def from_device(method: str, cseq: int) -> Request:
        msg = parse_message(
            (
                f"{method} sip:34020000002000000001@127.0.0.1:5060 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{method}{cseq}\r\n"
                f"From: <sip:{CH}@3402000000>;tag=devtag\r\nTo: <sip:34020000002000000001@3402000000>;tag=gwtag\r\n"
                f"Call-ID: call-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        assert isinstance(msg, Request) and dialog_id_of(msg) == s.dialog_id
        return msg

    s.receive_request(from_device("INFO", 5))
    with pytest.raises(DialogError) as err:
        s.receive_request(from_device("BYE", 4))  # out of order (RFC 3261 §12.2.2)
    assert err.value.status == 500 and s.state is PlayState.ESTABLISHED
    s.receive_request(from_device("BYE", 6))
    assert s.state is PlayState.TERMINATED and s.dialog.terminated
