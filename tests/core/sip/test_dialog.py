"""RFC 3261 §12 dialogs (and RFC 6665 §4.1.2.4), driven through two sans-I/O endpoints and a fake clock."""

from __future__ import annotations

import pytest

from gb28181gw.errors import DialogError, LocalProtocolError, SipParseError
from gb28181gw.sip.dialog import (
    TRANSITIONS,
    Dialog,
    DialogId,
    DialogInput,
    DialogState,
    dialog_id_of,
    render_table,
)
from gb28181gw.sip.endpoint import SipEndpoint
from gb28181gw.sip.events import RequestReceived, ResponseReceived
from gb28181gw.sip.message import Request, Response, make_response, parse_message
from gb28181gw.sip.peer import Peer
from tests.helpers import FakeClock, drain_events, new_endpoint

GW = Peer("UDP", "127.0.0.1", 5060)
DEV = Peer("UDP", "127.0.0.1", 5062)
OUR = "sip:34020000002000000001@3402000000"
CH = "34020000001310000001"
TARGET = f"sip:{CH}@127.0.0.1:5062"


def uac_dialog() -> Dialog:
    return Dialog.uac(
        call_id="call-1",
        local_tag="gwtag",
        local_uri=OUR,
        remote_uri=f"sip:{CH}@3402000000",
        target=TARGET,
        peer=DEV,
    )


class Pair:
    """A gateway endpoint and a device endpoint that pass bytes to each other on one fake clock."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.gw = new_endpoint()
        self.dev = new_endpoint()
        self.dev.set_local_address("UDP", DEV.host, DEV.port)

    def _deliver(self, src: SipEndpoint, dst: SipEndpoint, to_peer: Peer) -> list[object]:
        for data, _ in src.datagrams_to_send():
            dst.receive(data, to_peer, self.clock.now)
        return drain_events(dst)

    def to_device(self, request: Request) -> RequestReceived:
        """Send ``request`` from the gateway; the device's RequestReceived (after 100 Trying, for INVITE)."""
        if request.method == "ACK":
            self.gw.send_ack(request, DEV)
        else:
            self.gw.send_request(request, DEV, self.clock.now)
        self.clock.advance(0.01)
        events = [e for e in self._deliver(self.gw, self.dev, GW) if isinstance(e, RequestReceived)]
        (ev,) = events
        self.dev.datagrams_to_send()  # a 100 Trying, if any, stays on the device side
        return ev

    def device_answers(self, ev: RequestReceived, response: Response) -> Response:
        assert ev.transaction is not None
        self.dev.respond(ev.transaction, response, self.clock.now)
        self.clock.advance(0.01)
        (got,) = [e for e in self._deliver(self.dev, self.gw, DEV) if isinstance(e, ResponseReceived)]
        return got.response

    def to_gateway(self, request: Request) -> RequestReceived:
        self.dev.send_request(request, GW, self.clock.now)
        self.clock.advance(0.01)
        (ev,) = [e for e in self._deliver(self.dev, self.gw, DEV) if isinstance(e, RequestReceived)]
        return ev

    def gateway_answers(self, ev: RequestReceived, response: Response) -> Response:
        assert ev.transaction is not None
        self.gw.respond(ev.transaction, response, self.clock.now)
        self.clock.advance(0.01)
        *_, got = [e for e in self._deliver(self.gw, self.dev, GW) if isinstance(e, ResponseReceived)]  # after 100
        return got.response


def answer(ev: RequestReceived, status: int, *, tag: str | None = "devtag", contact: str | None = None) -> Response:
    resp = make_response(ev.request, status, to_tag=tag)
    if contact:
        resp.headers.add("Contact", f"<{contact}>")
    return resp


class TestUac:
    """§12.1.2, §12.2.1: we sent the INVITE or SUBSCRIBE."""

    def test_invite_2xx_confirms_then_ack_and_bye(self) -> None:
        pair, d = Pair(), uac_dialog()
        assert d.state is DialogState.PENDING and d.remote_tag == "" and d.remote_cseq is None
        invite = d.request("INVITE", contact="sip:34020000002000000001@127.0.0.1:5060", body=b"v=0\r\n")
        assert invite.uri == TARGET and invite.cseq.number == 1 and invite.to.tag is None
        assert invite.from_.tag == "gwtag" and invite.call_id == "call-1"
        ev = pair.to_device(invite)
        ringing = pair.device_answers(ev, answer(ev, 180, contact=f"sip:{CH}@10.0.0.9:5062"))
        d.receive_response(ringing)
        assert d.state is DialogState.EARLY and d.remote_tag == "devtag"
        ok = answer(ev, 200, contact=f"sip:{CH}@10.0.0.9:5070")
        ok.headers.add("Record-Route", "<sip:p1.example;lr>")
        ok.headers.add("Record-Route", "<sip:p2.example;lr>")
        d.receive_response(pair.device_answers(ev, ok))
        assert d.state is DialogState.CONFIRMED
        assert d.id == DialogId("call-1", "gwtag", "devtag")
        assert d.remote_target == f"sip:{CH}@10.0.0.9:5070"  # the 2xx's Contact
        assert d.route_set == ("<sip:p2.example;lr>", "<sip:p1.example;lr>")  # reversed for the UAC
        ack = d.ack()
        assert ack.method == "ACK" and ack.cseq.number == 1  # the INVITE's CSeq number (§13.2.2.4)
        assert ack.uri == d.remote_target and ack.headers.get_all("route") == list(d.route_set)
        assert pair.to_device(ack).request.to.tag == "devtag"
        info = d.request("INFO", content_type="Application/MANSRTSP", body=b"PLAY RTSP/1.0\r\n")
        assert info.cseq.number == 2 and info.to.tag == "devtag" and info.from_.tag == "gwtag"
        bye = d.request("BYE")
        assert bye.cseq.number == 3 and d.state is DialogState.TERMINATED
        ev = pair.to_device(bye)
        assert dialog_id_of(ev.request) == DialogId("call-1", "devtag", "gwtag")  # as the device sees it
        with pytest.raises(LocalProtocolError, match="TERMINATED"):
            d.request("INFO")

    def test_from_a_request_and_its_answer(self) -> None:
        pair = Pair()
        invite = uac_dialog().request("INVITE")
        invite.headers.set("CSeq", "7 INVITE")
        ev = pair.to_device(invite)
        ok = answer(ev, 200, contact=f"sip:{CH}@10.0.0.9:5070")
        ok.headers.add("Record-Route", "<sip:p1.example;lr>")
        ok.headers.add("Record-Route", "<sip:p2.example;lr>")
        d = Dialog.uac_from(invite, pair.device_answers(ev, ok), DEV)
        assert d.state is DialogState.CONFIRMED and d.is_uac and d.id == DialogId("call-1", "gwtag", "devtag")
        assert (d.local_uri, d.remote_uri) == (OUR, f"sip:{CH}@3402000000")
        assert d.remote_target == f"sip:{CH}@10.0.0.9:5070" and d.route_set[0] == "<sip:p2.example;lr>"
        assert d.ack().cseq.number == 7 and d.request("BYE").cseq.number == 8
        with pytest.raises(LocalProtocolError):
            Dialog.uac_from(invite, make_response(ev.request, 486, to_tag="x"), DEV)

    def test_final_error_ends_a_pending_dialog(self) -> None:
        pair, d = Pair(), uac_dialog()
        ev = pair.to_device(d.request("INVITE"))
        d.receive_response(pair.device_answers(ev, answer(ev, 486)))
        assert d.state is DialogState.TERMINATED
        with pytest.raises(LocalProtocolError):
            d.ack()

    def test_provisional_without_tag_creates_nothing(self) -> None:
        pair, d = Pair(), uac_dialog()
        ev = pair.to_device(d.request("INVITE"))
        d.receive_response(pair.device_answers(ev, answer(ev, 180, tag=None)))
        assert d.state is DialogState.PENDING and d.remote_tag == ""
        resp = make_response(ev.request, 200)
        with pytest.raises(SipParseError, match="no To tag"):
            d.receive_response(resp)

    def test_resubscribe_in_dialog_and_notify_cseq_order(self) -> None:
        pair, d = Pair(), uac_dialog()
        ev = pair.to_device(d.request("SUBSCRIBE", extra=[("Event", "Catalog;id=1"), ("Expires", "60")]))
        d.receive_response(pair.device_answers(ev, answer(ev, 200, contact=f"sip:{CH}@127.0.0.1:5062")))
        assert d.state is DialogState.CONFIRMED and d.invite_cseq == 0
        with pytest.raises(LocalProtocolError, match="no 2xx to ACK"):
            d.ack()  # a SUBSCRIBE dialog has no ACK
        again = d.request("SUBSCRIBE", extra=[("Event", "Catalog;id=2")])
        assert again.cseq.number == 2 and again.to.tag == "devtag"  # refreshed inside the dialog
        ev2 = pair.to_device(again)
        d.receive_response(pair.device_answers(ev2, answer(ev2, 200)))
        assert d.state is DialogState.CONFIRMED
        # the device's NOTIFYs: remote CSeq starts empty, then must increase (§12.2.2)
        notify = self._notify(d, cseq=5)
        d.receive_request(pair.to_gateway(notify).request)
        assert d.remote_cseq == 5
        with pytest.raises(DialogError) as err:
            d.receive_request(self._notify(d, cseq=4))
        assert err.value.status == 500 and d.remote_cseq == 5
        d.receive_request(self._notify(d, cseq=5))  # only a lower number is out of order
        d.receive_request(self._notify(d, cseq=6))
        assert d.remote_cseq == 6

    def test_notify_overtaking_the_2xx_creates_the_dialog(self) -> None:
        pair, d = Pair(), uac_dialog()
        ev = pair.to_device(d.request("SUBSCRIBE"))
        notify = self._notify(d, cseq=1, remote_tag="devtag")
        notify.headers.add("Contact", f"<sip:{CH}@10.0.0.9:5062>")
        got = pair.to_gateway(notify).request
        assert dialog_id_of(got) == DialogId("call-1", "gwtag", "devtag")
        d.receive_notify(got)
        d.receive_request(got)
        assert d.state is DialogState.CONFIRMED and d.remote_tag == "devtag" and d.remote_cseq == 1
        assert d.remote_target == f"sip:{CH}@10.0.0.9:5062"
        d.receive_response(pair.device_answers(ev, answer(ev, 200)))  # the 2xx, late: still confirmed
        assert d.state is DialogState.CONFIRMED
        with pytest.raises(LocalProtocolError, match="CONFIRMED"):
            d.receive_notify(got)

    def test_strict_route_set_puts_the_target_last(self) -> None:
        pair, d = Pair(), uac_dialog()
        ev = pair.to_device(d.request("INVITE"))
        ok = answer(ev, 200, contact=f"sip:{CH}@10.0.0.9:5070")
        ok.headers.add("Record-Route", "<sip:strict.example>")
        d.receive_response(pair.device_answers(ev, ok))
        bye = d.request("BYE")
        assert bye.uri == "sip:strict.example"  # §12.2.1.1: a strict router gets the Request-URI
        assert bye.headers.get_all("route") == [f"<sip:{CH}@10.0.0.9:5070>"]

    @staticmethod
    def _notify(d: Dialog, *, cseq: int, remote_tag: str | None = None) -> Request:
        text = (
            f"NOTIFY sip:34020000002000000001@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKn{cseq}\r\n"
            f"From: <sip:{CH}@3402000000>;tag={remote_tag or d.remote_tag}\r\n"
            f"To: <{OUR}>;tag={d.local_tag}\r\nCall-ID: {d.call_id}\r\nCSeq: {cseq} NOTIFY\r\n"
            "Event: Catalog\r\nSubscription-State: active\r\nContent-Length: 0\r\n\r\n"
        )
        msg = parse_message(text.encode())
        assert isinstance(msg, Request)
        return msg


class TestUas:
    """§12.1.1, §12.2.1, §12.2.2: they sent the INVITE; our response created the dialog."""

    def _invite(self, pair: Pair) -> RequestReceived:
        dev = Dialog.uac(
            call_id="up-1",
            local_tag="suptag",
            local_uri="sip:34020000002000000009@3402000000",
            remote_uri=f"sip:{CH}@3402000000",
            target=f"sip:{CH}@127.0.0.1:5060",
            peer=GW,
        )
        invite = dev.request("INVITE", contact="sip:34020000002000000009@127.0.0.1:5062")
        invite.headers.add("Record-Route", "<sip:p1.example;lr>")
        invite.headers.add("Record-Route", "<sip:p2.example;lr>")
        return pair.to_gateway(invite)

    def test_2xx_confirms_and_in_dialog_requests(self) -> None:
        pair = Pair()
        ev = self._invite(pair)
        ok = make_response(ev.request, 200, to_tag="gwtag")
        d = Dialog.uas(ev.request, ok, ev.peer)
        assert d.state is DialogState.CONFIRMED and not d.is_uac
        assert d.id == DialogId("up-1", "gwtag", "suptag") == dialog_id_of(_with_to_tag(ev.request, "gwtag"))
        assert d.remote_cseq == 1 and d.local_cseq == 0
        assert d.local_uri == f"sip:{CH}@3402000000" and d.remote_uri == "sip:34020000002000000009@3402000000"
        assert d.remote_target == "sip:34020000002000000009@127.0.0.1:5062"
        assert d.route_set == ("<sip:p1.example;lr>", "<sip:p2.example;lr>")  # as received for the UAS
        pair.gateway_answers(ev, ok)
        notify = d.request("NOTIFY", extra=[("Event", "presence")])
        assert notify.cseq.number == 1 and notify.to.tag == "suptag" and notify.from_.tag == "gwtag"
        assert notify.uri == d.remote_target and notify.headers.get_all("route") == list(d.route_set)
        assert d.request("INFO").cseq.number == 2
        # their requests: the ACK carries the INVITE's number and is not checked; then CSeq must rise
        d.receive_request(_in_dialog("ACK", 1))
        d.receive_request(_in_dialog("INFO", 2))
        with pytest.raises(DialogError) as err:
            d.receive_request(_in_dialog("INFO", 1))
        assert err.value.status == 500 and "below 2" in err.value.reason
        d.receive_request(_in_dialog("BYE", 3))
        assert d.state is DialogState.TERMINATED
        with pytest.raises(DialogError) as gone:
            d.receive_request(_in_dialog("INFO", 4))
        assert gone.value.status == 481

    def test_early_dialog_from_a_provisional_with_tag(self) -> None:
        pair = Pair()
        ev = self._invite(pair)
        d = Dialog.uas(ev.request, make_response(ev.request, 183, to_tag="gwtag"), ev.peer)
        assert d.state is DialogState.EARLY

    def test_responses_that_create_no_dialog(self) -> None:
        pair = Pair()
        ev = self._invite(pair)
        for resp in (make_response(ev.request, 200), make_response(ev.request, 486, to_tag="x")):
            with pytest.raises(LocalProtocolError):
                Dialog.uas(ev.request, resp, ev.peer)


class TestTable:
    def test_unlisted_input_raises_naming_the_state(self) -> None:
        d = uac_dialog()
        d.terminate()
        assert d.terminated
        d.terminate()  # ending twice is harmless
        with pytest.raises(LocalProtocolError, match="TERMINATED cannot take R_2XX"):
            d._fire(DialogInput.R_2XX)

    def test_every_state_is_reachable_and_terminated_is_final(self) -> None:
        reached = {DialogState.PENDING} | set(TRANSITIONS.values())
        assert reached == set(DialogState)
        assert {new for (state, _), new in TRANSITIONS.items() if state is DialogState.TERMINATED} == {
            DialogState.TERMINATED
        }
        assert "PENDING" in render_table() and "R_NOTIFY" in render_table()

    def test_request_without_to_tag_is_in_no_dialog(self) -> None:
        assert dialog_id_of(_in_dialog("INFO", 1, to_tag="")) is None


def _in_dialog(method: str, cseq: int, *, to_tag: str = "gwtag") -> Request:
    tag = f";tag={to_tag}" if to_tag else ""
    text = (
        f"{method} sip:{CH}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKr{method}{cseq}\r\n"
        f"From: <sip:34020000002000000009@3402000000>;tag=suptag\r\nTo: <sip:{CH}@3402000000>{tag}\r\n"
        f"Call-ID: up-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def _with_to_tag(request: Request, tag: str) -> Request:
    """``request`` as it would come back inside the dialog: our tag in To."""
    to = f"To: <sip:{CH}@3402000000>".encode()
    msg = parse_message(request.serialize().replace(to, to + f";tag={tag}".encode()))
    assert isinstance(msg, Request)
    return msg
