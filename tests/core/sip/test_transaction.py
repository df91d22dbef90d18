"""RFC 3261 §17 transactions (with RFC 6026), driven with bytes and a fake clock."""

from __future__ import annotations

import pytest

from gb28181gw.errors import LocalProtocolError
from gb28181gw.sip.completed import EXPIRE_STEP
from gb28181gw.sip.endpoint import Peer
from gb28181gw.sip.events import (
    MessageDropped,
    RequestCancelled,
    RequestReceived,
    ResponseReceived,
    TransactionFailed,
    TransactionTimedOut,
)
from gb28181gw.sip.message import Request, Response, make_request, make_response, parse_message
from gb28181gw.sip.timers import TimerConfig
from gb28181gw.sip.transaction import State, render_tables
from tests.helpers import DEVICE_TCP, DEVICE_UDP, FakeClock, drain_events, new_endpoint, request

DEVICE = Peer("UDP", "127.0.0.1", 5061)


def _rx(ep, data, clock, peer=DEVICE_UDP):  # type: ignore[no-untyped-def]
    ep.receive(data, peer, clock.now)
    return drain_events(ep)


def _sent(ep) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [d for d, _ in ep.datagrams_to_send()]


def _fire_until(ep, clock, until: float) -> list[float]:  # type: ignore[no-untyped-def]
    """Advance the clock timer by timer up to ``until``; return the times output was sent."""
    times = []
    while (t := ep.get_timer()) is not None and t <= until:
        clock.now = t
        ep.handle_timer(t)
        if ep.datagrams_to_send():
            times.append(round(t - 1000.0, 3))
    clock.now = until
    return times


class TestNonInviteServer:
    """§17.2.2."""

    def test_answer_then_absorb_retransmission(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, request("MESSAGE"), clock)
        assert isinstance(ev, RequestReceived) and ev.transaction is not None
        assert ev.transaction.state is State.TRYING
        # a retransmission before the TU answers is absorbed silently
        assert _rx(ep, request("MESSAGE"), clock) == []
        assert _sent(ep) == []
        ep.respond(ev.transaction, make_response(ev.request, 200, to_tag="t"), clock.now)
        (first,) = _sent(ep)
        assert ev.transaction.state is State.COMPLETED
        # a retransmission after it gets the identical response again, not a new event
        clock.advance(1)
        assert _rx(ep, request("MESSAGE"), clock) == []
        assert _sent(ep) == [first]

    def test_timer_j_terminates_after_64_t1_on_udp(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, request("MESSAGE"), clock)
        ep.respond(ev.transaction, make_response(ev.request, 200), clock.now)
        assert ep.transactions_in_flight == 1
        assert ep.get_timer() == pytest.approx(clock.now + 32.0)
        ep.handle_timer(clock.advance(31.9))
        assert ep.transactions_in_flight == 1
        ep.handle_timer(clock.advance(0.2))
        assert ep.transactions_in_flight == 0
        # after termination a retransmission is a new request
        assert [type(e) for e in _rx(ep, request("MESSAGE"), clock)] == [RequestReceived]

    def test_timer_j_of_many_at_once_expires_in_slices_still_absorbing(self) -> None:
        # a backlog of Timer J (a burst's, or the loop was late) is expired EXPIRE_STEP at a time,
        # the next timer due at once for the rest; what is not yet expired still absorbs
        ep, clock = new_endpoint(), FakeClock()
        count = 2 * EXPIRE_STEP + 5
        for n in range(count):
            (ev,) = _rx(ep, request("MESSAGE", f"z9hG4bKmany{n}"), clock)
            ep.respond(ev.transaction, make_response(ev.request, 200, to_tag="t"), clock.now)
        answers = _sent(ep)
        clock.advance(33.0)
        left, calls = count, 0
        while left:
            assert ep.get_timer() is not None and ep.get_timer() <= clock.now
            ep.handle_timer(clock.now)
            calls += 1
            assert left - EXPIRE_STEP <= ep.transactions_in_flight < left
            left = ep.transactions_in_flight
            if calls == 1:
                # the last one answered is still kept: its retransmission gets the same answer
                assert _rx(ep, request("MESSAGE", f"z9hG4bKmany{count - 1}"), clock) == []
                assert _sent(ep) == [answers[-1]]
        assert calls == 3 and ep.get_timer() is None

    def test_timer_j_is_zero_over_tcp(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, request("MESSAGE"), clock, DEVICE_TCP)
        ep.respond(ev.transaction, make_response(ev.request, 200), clock.now)
        assert ep.transactions_in_flight == 0
        assert [p for _, p in ep.datagrams_to_send()] == [DEVICE_TCP]

    def test_provisional_then_final(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, request("MESSAGE"), clock)
        ep.respond(ev.transaction, make_response(ev.request, 100), clock.now)
        assert ev.transaction.state is State.PROCEEDING
        (trying,) = _sent(ep)
        _rx(ep, request("MESSAGE"), clock)
        assert _sent(ep) == [trying]
        ep.respond(ev.transaction, make_response(ev.request, 200), clock.now)
        assert ev.transaction.state is State.COMPLETED

    def test_second_final_response_is_a_local_error(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, request("MESSAGE"), clock)
        ep.respond(ev.transaction, make_response(ev.request, 200), clock.now)
        with pytest.raises(LocalProtocolError, match="COMPLETED"):
            ep.respond(ev.transaction, make_response(ev.request, 404), clock.now)

    def test_response_goes_to_source_with_received_and_rport(self) -> None:
        """RFC 3581: NATed devices get answers at the address the request came from."""
        ep, clock = new_endpoint(), FakeClock()
        nat = Peer("UDP", "198.51.100.7", 40123)
        (ev,) = _rx(ep, request("MESSAGE", via_host="192.168.1.64:5060"), clock, nat)
        ep.respond(ev.transaction, make_response(ev.request, 200), clock.now)
        ((wire, peer),) = ep.datagrams_to_send()
        assert peer == nat
        via = parse_message(wire).top_via
        assert via.params["received"] == "198.51.100.7"
        assert via.params["rport"] == "40123"

    def test_rfc2543_branch_matching(self) -> None:
        """Devices that send branches without the magic cookie still get retransmissions absorbed."""
        ep, clock = new_endpoint(), FakeClock()
        old = request("MESSAGE", branch="z3hG9bK12345")
        (ev,) = _rx(ep, old, clock)
        assert ev.transaction.key[0] == "2543"
        ep.respond(ev.transaction, make_response(ev.request, 200), clock.now)
        (first,) = _sent(ep)
        assert _rx(ep, old, clock) == []
        assert _sent(ep) == [first]


class TestStatelessRejection:
    """RFC 3261 §8.2.7: a rejection sent once, no transaction kept (what a flood of them costs: nothing)."""

    def test_non_invite_rejection_keeps_nothing_and_a_retransmission_is_answered_again(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, request("MESSAGE"), clock)
        ep.respond(ev.transaction, make_response(ev.request, 404, to_tag="t"), clock.now, stateless=True)
        (answer,) = _sent(ep)
        assert answer.startswith(b"SIP/2.0 404")
        assert ev.transaction.state is State.TERMINATED and ep.transactions_in_flight == 0
        assert ep.get_timer() is None  # no Timer J
        # the retransmission is a new request for the TU, which rejects it again
        (again,) = _rx(ep, request("MESSAGE"), clock)
        assert isinstance(again, RequestReceived) and again.transaction is not ev.transaction
        with pytest.raises(LocalProtocolError):  # the forgotten transaction takes no second answer
            ep.respond(ev.transaction, make_response(ev.request, 500, to_tag="t"), clock.now)

    def test_invite_rejection_is_not_retransmitted_and_its_ack_is_nobodys(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, request("INVITE", "z9hG4bKinv9"), clock)
        _sent(ep)  # 100 Trying
        ep.respond(ev.transaction, make_response(ev.request, 486, to_tag="t"), clock.now, stateless=True)
        (busy,) = _sent(ep)
        assert busy.startswith(b"SIP/2.0 486") and ep.transactions_in_flight == 0
        assert _fire_until(ep, clock, 1000.0 + 40) == []  # no Timer G retransmissions, no Timer H
        ack = request("INVITE", "z9hG4bKinv9").replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
        (ack_ev,) = _rx(ep, ack, clock)
        assert isinstance(ack_ev, RequestReceived) and ack_ev.transaction is None  # the TU ignores it

    def test_provisional_and_2xx_are_never_stateless(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, request("MESSAGE"), clock)
        ep.respond(ev.transaction, make_response(ev.request, 200, to_tag="t"), clock.now, stateless=True)
        assert ev.transaction.state is State.COMPLETED and ep.transactions_in_flight == 1  # Timer J kept


class TestNonInviteClient:
    """§17.1.2."""

    def _request(self, ep, peer: Peer = DEVICE_UDP) -> Request:  # type: ignore[no-untyped-def]
        return _outgoing(ep, "MESSAGE", "sip:34020000001320000001@127.0.0.1:5061")

    def test_timer_e_doubles_to_t2_then_f_times_out(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        tx = ep.send_request(self._request(ep), DEVICE_UDP, clock.now)
        assert len(_sent(ep)) == 1
        times = _fire_until(ep, clock, 1000.0 + 40)
        # retransmits at 0.5, 1.5, 3.5, 7.5, then every T2 = 4 s until Timer F at 32 s
        assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        (ev,) = drain_events(ep)
        assert isinstance(ev, TransactionTimedOut) and ev.transaction is tx
        assert ep.transactions_in_flight == 0

    def test_via_sent_by_is_the_local_address_the_shell_gives(self) -> None:
        # §18.1.1: the sent-by is where the peer reaches us; the shell knows it per peer (issue 11)
        ep, clock = new_endpoint(), FakeClock()
        ep.send_request(self._request(ep), DEVICE_UDP, clock.now, local=("192.0.2.7", 5070))
        ep.send_request(self._request(ep), DEVICE_UDP, clock.now)
        given, default = (parse_message(wire).top_via for wire in _sent(ep))
        assert (given.host, given.port) == ("192.0.2.7", 5070)
        assert (default.host, default.port) == ("127.0.0.1", 5060)  # set_local_address's
        ack = make_request(
            "ACK", "sip:x@127.0.0.1", from_addr="sip:a@b", to_addr="sip:c@d", call_id="c", cseq=1, from_tag="f"
        )
        ep.send_ack(ack, DEVICE_UDP, local=("2001:db8::7", 5070))
        (wire,) = _sent(ep)
        assert wire.split(b"\r\n")[1].startswith(b"Via: SIP/2.0/UDP [2001:db8::7]:5070;")

    def test_a_gate_that_says_no_stops_retransmissions_for_good(self) -> None:
        # issue 17: a request sent in a lease's name is retransmitted only while the lease holds
        ep, clock = new_endpoint(), FakeClock()
        asked: list[float] = []
        open_until = 1000.0 + 2.0

        def gate(now: float) -> bool:
            asked.append(round(now - 1000.0, 3))
            return now < open_until or now > 1000.0 + 10  # opens again later: too late

        tx = ep.send_request(self._request(ep), DEVICE_UDP, clock.now, gate=gate)
        assert len(_sent(ep)) == 1  # the first send is the caller's own check
        assert _fire_until(ep, clock, 1000.0 + 40) == [0.5, 1.5]
        assert asked == [0.5, 1.5, 3.5]  # refused at 3.5: never asked (nor sent) again
        (ev,) = drain_events(ep)
        assert isinstance(ev, TransactionTimedOut) and ev.transaction is tx  # Timer F still ends it
        assert ep.transactions_in_flight == 0

    def test_no_retransmission_over_tcp(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        ep.send_request(self._request(ep), DEVICE_TCP, clock.now)
        _sent(ep)
        assert _fire_until(ep, clock, 1000.0 + 40) == []
        assert isinstance(drain_events(ep)[0], TransactionTimedOut)

    def test_final_response_delivered_once_then_k(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        tx = ep.send_request(self._request(ep), DEVICE_UDP, clock.now)
        (wire,) = _sent(ep)
        req = parse_message(wire)
        assert req.top_via.params == {"rport": None, "branch": tx.key[0]}
        assert req.headers["max-forwards"] == "70"
        ok = make_response(req, 200, to_tag="x").serialize()  # type: ignore[arg-type]
        (ev,) = _rx(ep, ok, clock)
        assert isinstance(ev, ResponseReceived) and ev.response.status == 200
        assert _rx(ep, ok, clock) == []  # retransmitted response absorbed
        ep.handle_timer(clock.advance(5.1))  # Timer K = T4
        assert ep.transactions_in_flight == 0
        (drop,) = _rx(ep, ok, clock)
        assert isinstance(drop, MessageDropped) and drop.reason.startswith("stray-response")

    def test_provisional_switches_to_t2_interval(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        ep.send_request(self._request(ep), DEVICE_UDP, clock.now)
        (wire,) = _sent(ep)
        _rx(ep, make_response(parse_message(wire), 100).serialize(), clock)  # type: ignore[arg-type]
        assert _fire_until(ep, clock, 1000.0 + 9) == [0.5, 4.5, 8.5]

    def test_transport_error_fails_the_transaction(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        tx = ep.send_request(self._request(ep), DEVICE_TCP, clock.now)
        ep.transport_error(DEVICE_TCP, "connection refused", clock.now)
        (ev,) = drain_events(ep)
        assert isinstance(ev, TransactionFailed) and ev.transaction is tx and "refused" in ev.reason
        assert ep.transactions_in_flight == 0

    def test_a_closing_connection_fails_only_its_own_transactions(self) -> None:
        # found by the connection's index (issue 10, defect 9), not by walking every transaction
        ep, clock = new_endpoint(), FakeClock()
        other = Peer("TCP", DEVICE_TCP.host, DEVICE_TCP.port + 1)
        mine = [ep.send_request(self._request(ep), DEVICE_TCP, clock.now) for _ in range(3)]
        theirs = ep.send_request(self._request(ep), other, clock.now)
        udp = ep.send_request(self._request(ep), Peer("UDP", DEVICE_TCP.host, DEVICE_TCP.port), clock.now)
        ep.transport_error(DEVICE_TCP, "connection closed", clock.now)
        failed = [ev.transaction for ev in drain_events(ep) if isinstance(ev, TransactionFailed)]
        assert sorted(map(id, failed)) == sorted(map(id, mine))
        assert (
            ep.transactions_in_flight == 2
            and theirs.state is not State.TERMINATED
            and udp.state is not State.TERMINATED
        )
        assert ep._on_connection == {other: {theirs}}
        ep.transport_error(DEVICE_TCP, "connection closed", clock.now)  # again: nothing left to fail
        assert drain_events(ep) == []


def _outgoing(ep, method: str, uri: str, **kw: object) -> Request:  # type: ignore[no-untyped-def]
    """A request from the gateway to a device, as the endpoint's TU would build it."""
    return make_request(
        method,
        uri,
        from_addr="sip:34020000002000000001@3402000000",
        to_addr=uri.split(";")[0].rsplit(":", 1)[0] if uri.count(":") > 1 else uri,
        call_id=ep.new_call_id(),
        cseq=1,
        from_tag=ep.new_tag(),
        **kw,  # type: ignore[arg-type]
    )


def _invite(ep) -> Request:  # type: ignore[no-untyped-def]
    return _outgoing(
        ep,
        "INVITE",
        "sip:34020000001310000001@3402000000",
        extra=[("Subject", "34020000001310000001:0,34020000002000000001:0")],
        body=b"v=0\r\n",
        content_type="application/sdp",
    )


class TestInviteClient:
    """§17.1.1 and RFC 6026 §8.4."""

    def test_timer_a_doubles_until_b(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        ep.send_request(_invite(ep), DEVICE_UDP, clock.now)
        _sent(ep)
        assert _fire_until(ep, clock, 1000.0 + 40) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        assert isinstance(drain_events(ep)[0], TransactionTimedOut)

    def test_non_2xx_is_acked_by_the_transaction(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        ep.send_request(_invite(ep), DEVICE_UDP, clock.now)
        invite = parse_message(_sent(ep)[0])
        busy = make_response(invite, 486, to_tag="dev").serialize()  # type: ignore[arg-type]
        (ev,) = _rx(ep, busy, clock)
        assert isinstance(ev, ResponseReceived) and ev.response.status == 486
        (ack_wire,) = _sent(ep)
        ack = parse_message(ack_wire)
        assert isinstance(ack, Request) and ack.method == "ACK"
        assert ack.uri == invite.uri  # type: ignore[union-attr]
        assert ack.top_via.branch == invite.top_via.branch
        assert ack.to.tag == "dev"
        assert ack.cseq.number == 1 and ack.cseq.method == "ACK"
        # a retransmitted 486 is ACKed again, not passed up
        assert _rx(ep, busy, clock) == []
        assert len(_sent(ep)) == 1

    def test_2xx_retransmissions_reach_the_tu_while_accepted(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        tx = ep.send_request(_invite(ep), DEVICE_UDP, clock.now)
        invite = parse_message(_sent(ep)[0])
        ok = make_response(invite, 200, to_tag="dev").serialize()  # type: ignore[arg-type]
        assert [type(e) for e in _rx(ep, ok, clock)] == [ResponseReceived]
        assert tx.state is State.ACCEPTED
        assert [type(e) for e in _rx(ep, ok, clock)] == [ResponseReceived]  # TU must re-ACK
        ep.handle_timer(clock.advance(32.1))  # Timer M
        assert ep.transactions_in_flight == 0

    def test_acknowledged_2xx_retransmissions_get_the_same_ack(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        ep.send_request(_invite(ep), DEVICE_UDP, clock.now)
        invite = parse_message(_sent(ep)[0])
        ok_msg = make_response(invite, 200, to_tag="dev")  # type: ignore[arg-type]
        ok = ok_msg.serialize()
        (event,) = _rx(ep, ok, clock)
        assert isinstance(event, ResponseReceived)
        ack = make_request(
            "ACK",
            "sip:c@d",
            from_addr="sip:a@b",
            to_addr="sip:c@d",
            call_id=invite.call_id,
            cseq=1,
            from_tag="x",
            to_tag="dev",
        )
        ep.send_ack(ack, DEVICE_UDP, ep.client_transaction(event.response))
        (first,) = _sent(ep)
        for _ in range(3):
            assert _rx(ep, ok, clock) == []  # answered here, not passed up again
            assert _sent(ep) == [first]

    def test_cancel_waits_for_a_provisional_response(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        tx = ep.send_request(_invite(ep), DEVICE_UDP, clock.now)
        invite = parse_message(_sent(ep)[0])
        ep.cancel(tx, clock.now)
        assert _sent(ep) == []  # §9.1: not before a provisional response
        _rx(ep, make_response(invite, 100).serialize(), clock)  # type: ignore[arg-type]
        (cancel_wire,) = _sent(ep)
        cancel = parse_message(cancel_wire)
        assert isinstance(cancel, Request) and cancel.method == "CANCEL"
        assert cancel.top_via.branch == invite.top_via.branch
        assert cancel.cseq.number == invite.cseq.number and cancel.cseq.method == "CANCEL"
        assert cancel.uri == invite.uri  # type: ignore[union-attr]


class TestInviteServer:
    """§17.2.1 and RFC 6026 §7.1."""

    def _invite_bytes(self, branch: str = "z9hG4bKinv1") -> bytes:
        return request("INVITE", branch)

    def test_100_trying_at_once(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, self._invite_bytes(), clock)
        (trying,) = _sent(ep)
        assert trying.startswith(b"SIP/2.0 100 Trying")
        assert _rx(ep, self._invite_bytes(), clock) == []
        assert _sent(ep) == [trying]  # retransmitted INVITE gets the last provisional again

    def test_non_2xx_retransmitted_by_g_until_ack(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, self._invite_bytes(), clock)
        _sent(ep)
        ep.respond(ev.transaction, make_response(ev.request, 404, to_tag="t"), clock.now)
        (nf,) = _sent(ep)
        assert _fire_until(ep, clock, 1000.0 + 6) == [0.5, 1.5, 3.5]
        ack = self._invite_bytes().replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
        assert _rx(ep, ack, clock) == []  # absorbed by the transaction
        assert ev.transaction.state is State.CONFIRMED
        assert _fire_until(ep, clock, 1000.0 + 20) == []
        assert ep.transactions_in_flight == 0  # Timer I (T4) ended it
        assert nf.startswith(b"SIP/2.0 404")

    def test_timer_h_without_ack(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, self._invite_bytes(), clock)
        ep.respond(ev.transaction, make_response(ev.request, 486), clock.now)
        _sent(ep)
        _fire_until(ep, clock, 1000.0 + 33)
        (timeout,) = drain_events(ep)
        assert isinstance(timeout, TransactionTimedOut) and timeout.transaction is ev.transaction

    def test_2xx_moves_to_accepted_and_absorbs_retransmissions(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, self._invite_bytes(), clock)
        ep.respond(ev.transaction, make_response(ev.request, 200, to_tag="t"), clock.now)
        _sent(ep)
        assert ev.transaction.state is State.ACCEPTED
        assert _rx(ep, self._invite_bytes(), clock) == []
        # the ACK to a 2xx has its own branch and goes to the TU, without a transaction
        ack = request("ACK", "z9hG4bKack9")
        (ack_ev,) = _rx(ep, ack, clock)
        assert isinstance(ack_ev, RequestReceived) and ack_ev.transaction is None

    def test_cancel_answers_200_and_487(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        (ev,) = _rx(ep, self._invite_bytes(), clock)
        _sent(ep)
        cancel = request("CANCEL", "z9hG4bKinv1")
        (cancelled,) = _rx(ep, cancel, clock)
        assert isinstance(cancelled, RequestCancelled) and cancelled.transaction is ev.transaction
        statuses = sorted(parse_message(w).status for w in _sent(ep))  # type: ignore[union-attr]
        assert statuses == [200, 487]
        with pytest.raises(LocalProtocolError):
            ep.respond(ev.transaction, make_response(ev.request, 200), clock.now)

    def test_cancel_for_nothing_is_481(self) -> None:
        ep, clock = new_endpoint(), FakeClock()
        _rx(ep, request("CANCEL", "z9hG4bKnothing"), clock)
        (wire,) = _sent(ep)
        assert wire.startswith(b"SIP/2.0 481 ")


def test_tables_render() -> None:
    dot = render_tables()
    assert dot.startswith("digraph") and "INVITE_SERVER.COMPLETED" in dot


def test_custom_timers() -> None:
    ep, clock = new_endpoint(timers=TimerConfig(t1=0.1, t2=0.4, t4=1.0)), FakeClock()
    (ev,) = _rx(ep, request("MESSAGE"), clock)
    ep.respond(ev.transaction, make_response(ev.request, 200), clock.now)
    assert ep.get_timer() == pytest.approx(clock.now + 6.4)


def test_response_type_is_response() -> None:
    assert isinstance(
        parse_message(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
        ),
        Response,
    )
