"""The lease machine (gb/lease.py, issue 17) driven with a fake clock: take, renew, fence, pause, release."""

from __future__ import annotations

import pytest

from gb28181gw.errors import LocalProtocolError
from gb28181gw.gb.lease import (
    TRANSITIONS,
    Fenced,
    Gained,
    Lease,
    LeaseEvent,
    LeaseInput,
    LeaseLost,
    LeaseOp,
    LeaseRequest,
    LeaseSettings,
    LeaseState,
    Released,
    Retaken,
    epoch_of,
    holder_of,
    render_table,
    transition,
)
from gb28181gw.sip.message import make_request
from tests.helpers import DEVICE_UDP, FakeClock, counter_token, new_endpoint

TTL = 9.0  # renew every 3 s, fence 1.8 s before expiry: 7.2 s after the confirmed send


def make() -> tuple[Lease, FakeClock]:
    return Lease(LeaseSettings("upstream:district", "n1", TTL), token=counter_token()), FakeClock()  # type: ignore[arg-type]


def one(lease: Lease) -> LeaseRequest:
    (request,) = lease.requests_to_send()
    return request


def events(lease: Lease) -> list[LeaseEvent]:
    out = []
    while (e := lease.next_event()) is not None:
        out.append(e)
    return out


def run_until(lease: Lease, clock: FakeClock, t: float) -> None:
    """Fire every timer up to ``t`` (answering nothing)."""
    while (when := lease.get_timer()) is not None and when <= t:
        clock.now = when
        lease.handle_timer(when)
    clock.now = t


def held(lease: Lease, clock: FakeClock) -> LeaseRequest:
    lease.start(clock.now)
    take = one(lease)
    lease.taken(take.ref, 7, clock.now)
    assert events(lease) == [Gained("upstream:district", 7)]
    return take


class TestTake:
    def test_a_free_lease_is_taken_with_a_token_and_the_epoch_is_reported(self) -> None:
        lease, clock = make()
        lease.start(clock.now)
        take = one(lease)
        assert take.op is LeaseOp.ACQUIRE and take.node == "n1" and take.token and take.ttl == TTL
        assert lease.state is LeaseState.ACQUIRING and not lease.may_send(clock.now)
        lease.taken(take.ref, 3, clock.now)
        assert lease.state is LeaseState.HELD and lease.epoch == 3 and lease.holder == "n1"
        assert events(lease) == [Gained("upstream:district", 3)]
        assert lease.may_send(clock.now)

    def test_a_busy_lease_is_tried_again_when_its_holder_may_be_gone(self) -> None:
        lease, clock = make()
        lease.start(clock.now)
        lease.busy(one(lease).ref, "n2", 1.5, clock.now)
        assert lease.state is LeaseState.STANDBY and lease.holder == "n2"
        assert lease.get_timer() == clock.now + 1.5  # sooner than the retry interval
        run_until(lease, clock, clock.now + 1.5)
        again = one(lease)
        assert again.op is LeaseOp.ACQUIRE
        lease.busy(again.ref, "n2", None, clock.now)
        assert lease.get_timer() == pytest.approx(clock.now + TTL / 3)
        assert events(lease) == []

    def test_no_lease_is_taken_while_redis_is_down(self) -> None:
        lease, clock = make()
        lease.start(clock.now)
        for _ in range(5):
            lease.failed(one(lease).ref, clock.now)
            assert lease.state is LeaseState.STANDBY and not lease.may_send(clock.now)
            run_until(lease, clock, lease.get_timer() or 0.0)
        assert events(lease) == []

    def test_a_stale_answer_is_ignored(self) -> None:
        lease, clock = make()
        lease.start(clock.now)
        take = one(lease)
        lease.taken(take.ref + 1, 1, clock.now)
        assert lease.state is LeaseState.ACQUIRING
        lease.taken(take.ref, 1, clock.now)
        lease.taken(take.ref, 1, clock.now)  # twice: once counts
        assert events(lease) == [Gained("upstream:district", 1)]


class TestRenew:
    def test_renewals_keep_it_held_at_a_third_of_the_ttl(self) -> None:
        lease, clock = make()
        held(lease, clock)
        start = clock.now
        for n in range(1, 6):
            run_until(lease, clock, start + n * TTL / 3)
            renew = one(lease)
            assert renew.op is LeaseOp.RENEW and renew.token == lease.token
            assert lease.state is LeaseState.RENEWING and lease.may_send(clock.now)
            clock.advance(0.01)
            lease.renewed(renew.ref, clock.now)
            assert lease.valid_from == pytest.approx(start + n * TTL / 3)
        assert events(lease) == []

    def test_unconfirmed_renewals_fence_it_before_it_can_expire(self) -> None:
        lease, clock = make()
        held(lease, clock)
        start = clock.now
        run_until(lease, clock, start + TTL / 3)
        lease.failed(one(lease).ref, clock.now)  # Redis away
        assert lease.may_send(clock.now)
        while lease.state is not LeaseState.FENCED:
            run_until(lease, clock, lease.get_timer() or 0.0)
            for r in lease.requests_to_send():
                lease.failed(r.ref, clock.now)
        # fenced at ttl - margin after the last confirmed send, never later
        assert clock.now == pytest.approx(start + TTL - TTL * 0.2)
        assert events(lease) == [Fenced("upstream:district", pytest.approx(TTL * 0.8))]
        assert not lease.may_send(clock.now)

    def test_fenced_then_confirmed_again_is_gained_afresh(self) -> None:
        lease, clock = make()
        held(lease, clock)
        run_until(lease, clock, clock.now + TTL * 0.8)
        assert lease.state is LeaseState.FENCED
        assert isinstance(events(lease)[0], Fenced)
        renew = one(lease)  # the fence asks again at once
        assert renew.op is LeaseOp.RENEW
        lease.renewed(renew.ref, clock.now)
        assert events(lease) == [Gained("upstream:district", 7)]
        assert lease.may_send(clock.now)

    def test_found_taken_by_another_node_is_lost(self) -> None:
        lease, clock = make()
        held(lease, clock)
        run_until(lease, clock, clock.now + TTL / 3)
        lease.gone(one(lease).ref, "n2", clock.now)
        assert events(lease) == [LeaseLost("upstream:district", "n2")]
        assert lease.state is LeaseState.STANDBY and not lease.may_send(clock.now) and lease.token == ""
        run_until(lease, clock, lease.get_timer() or 0.0)
        assert one(lease).op is LeaseOp.ACQUIRE


class TestRedisLostTheLease:
    """A renewal that finds no value (Redis restarted empty) is not a renewal that finds another's."""

    def test_missing_key_is_taken_again_and_everything_carries_on(self) -> None:
        lease, clock = make()
        take = held(lease, clock)
        run_until(lease, clock, clock.now + TTL / 3)
        renew = one(lease)
        clock.advance(0.01)
        lease.missing(renew.ref, clock.now)
        retake = one(lease)  # at once, not at the next renewal
        assert retake.op is LeaseOp.RETAKE and retake.token == take.token and not retake.defer
        assert retake.known_epoch == 7  # the counter restarts from nothing with an empty Redis
        assert lease.state is LeaseState.RETAKING and lease.may_send(clock.now)  # still ours
        clock.advance(0.01)
        lease.taken(retake.ref, 8, clock.now)
        # not Gained: the shell keeps the registration, its dialogs and streams
        assert events(lease) == [Retaken("upstream:district", 8)]
        assert lease.state is LeaseState.HELD and lease.may_send(clock.now) and lease.epoch == 8
        assert lease.valid_from == clock.now - 0.01  # counted from the re-take's send
        run_until(lease, clock, clock.now + TTL / 3)
        assert one(lease).op is LeaseOp.RENEW

    def test_missing_key_but_another_node_took_it_first_is_lost(self) -> None:
        lease, clock = make()
        held(lease, clock)
        run_until(lease, clock, clock.now + TTL / 3)
        lease.missing(one(lease).ref, clock.now)
        lease.busy(one(lease).ref, "n2", TTL, clock.now, epoch=8)
        assert events(lease) == [LeaseLost("upstream:district", "n2")]
        assert lease.state is LeaseState.STANDBY and not lease.may_send(clock.now) and lease.token == ""
        assert lease.seen_epoch == 8

    def test_gone_with_no_holder_means_missing(self) -> None:
        lease, clock = make()
        held(lease, clock)
        run_until(lease, clock, clock.now + TTL / 3)
        lease.gone(one(lease).ref, "", clock.now)
        assert one(lease).op is LeaseOp.RETAKE and events(lease) == []

    def test_a_retake_unanswered_is_found_out_by_the_next_renewal(self) -> None:
        lease, clock = make()
        take = held(lease, clock)
        run_until(lease, clock, clock.now + TTL / 3)
        lease.missing(one(lease).ref, clock.now)
        lease.failed(one(lease).ref, clock.now)  # Redis away again
        assert lease.state is LeaseState.HELD and lease.may_send(clock.now)
        run_until(lease, clock, lease.get_timer() or 0.0)
        renew = one(lease)
        assert renew.op is LeaseOp.RENEW and renew.token == take.token  # a take that landed is ours
        lease.renewed(renew.ref, clock.now)
        assert events(lease) == []

    def test_a_retake_that_outlives_the_fence_registers_afresh(self) -> None:
        lease, clock = make()
        held(lease, clock)
        start = clock.now
        run_until(lease, clock, start + TTL / 3)
        lease.missing(one(lease).ref, clock.now)
        retake = one(lease)
        run_until(lease, clock, start + TTL)  # its answer is slow: the fence runs
        assert [type(e) for e in events(lease)] == [Fenced]
        assert not lease.may_send(clock.now)
        lease.taken(retake.ref, 8, clock.now)
        assert events(lease) == [Gained("upstream:district", 8)]

    def test_fenced_and_another_node_held_it_in_between_registers_afresh(self) -> None:
        # Redis unreachable from us: we fence; n2 takes it (epoch 8) and registers upward; then
        # Redis restarts empty and our renewal finds nothing: we win the take, but must not
        # resume our old registration (the superior now knows n2's): Gained, never Retaken
        lease, clock = make()
        held(lease, clock)
        run_until(lease, clock, clock.now + TTL / 3)
        while lease.state is not LeaseState.FENCED:
            for r in lease.requests_to_send():
                lease.failed(r.ref, clock.now)
            run_until(lease, clock, lease.get_timer() or 0.0)
        assert [type(e) for e in events(lease)] == [Fenced]
        renew = one(lease)
        lease.missing(renew.ref, clock.now)
        retake = one(lease)
        assert retake.op is LeaseOp.RETAKE and not lease.may_send(clock.now)
        lease.taken(retake.ref, 9, clock.now)
        assert events(lease) == [Gained("upstream:district", 9)]
        assert lease.may_send(clock.now)

    def test_fenced_and_found_held_by_another_is_lost(self) -> None:
        lease, clock = make()
        held(lease, clock)
        run_until(lease, clock, clock.now + TTL * 0.8)
        assert [type(e) for e in events(lease)] == [Fenced]
        lease.missing(one(lease).ref, clock.now)
        lease.busy(one(lease).ref, "n2", TTL, clock.now, epoch=8)
        assert events(lease) == [LeaseLost("upstream:district", "n2")]


class TestEpochAcrossAnEmptyRedis:
    def test_every_take_carries_the_largest_epoch_seen(self) -> None:
        lease, clock = make()
        lease.start(clock.now)
        first = one(lease)
        assert first.known_epoch == 0 and first.defer
        lease.busy(first.ref, "n2", 1.0, clock.now, epoch=41)
        run_until(lease, clock, clock.now + 1.0)
        again = one(lease)
        assert again.op is LeaseOp.ACQUIRE and again.known_epoch == 41 and again.defer
        lease.taken(again.ref, 42, clock.now)
        assert lease.epoch == 42 and lease.seen_epoch == 42

    def test_a_standby_leaves_a_lease_redis_lost_to_its_holder_for_a_grace(self) -> None:
        lease, clock = make()
        lease.start(clock.now)
        lease.busy(one(lease).ref, "n2", None, clock.now, epoch=41)
        run_until(lease, clock, lease.get_timer() or 0.0)
        lease.vacant(one(lease).ref, clock.now)  # Redis restarted empty: counter 0 < 41
        assert lease.state is LeaseState.STANDBY and events(lease) == []
        assert lease.get_timer() == pytest.approx(clock.now + TTL)  # a live holder re-took or fenced by then
        run_until(lease, clock, lease.get_timer() or 0.0)
        take = one(lease)  # n2 did not re-take in the grace: dead; this one is a real take
        lease.taken(take.ref, 42, clock.now)
        assert events(lease) == [Gained("upstream:district", 42)]

    def test_epoch_of(self) -> None:
        assert epoch_of("n2 14 00ab") == 14
        assert epoch_of("garbage") == 0


class TestPause:
    """A process stopped (SIGSTOP) for longer than the lease looks at the clock before it sends."""

    def test_resumed_after_the_ttl_it_sends_nothing_before_a_confirmation(self) -> None:
        lease, clock = make()
        held(lease, clock)
        clock.advance(TTL * 2)  # stopped: no timer ran meanwhile
        # the first thing the shell does after resuming, whatever woke it, is ask before sending
        assert not lease.may_send(clock.now)
        assert lease.state is LeaseState.FENCED
        assert events(lease) == [Fenced("upstream:district", pytest.approx(TTL * 2))]
        renew = one(lease)
        lease.gone(renew.ref, "n2", clock.now)  # the other node took it meanwhile
        assert events(lease) == [LeaseLost("upstream:district", "n2")]
        assert not lease.may_send(clock.now)

    def test_a_request_out_when_paused_is_not_retransmitted_whichever_timer_runs_first(self) -> None:
        # the Done-when of issue 17: SIGSTOP with a keepalive outstanding, resumed after the TTL:
        # its retransmission timer and the lease's fence timer are due at once; the endpoint
        # asks the lease (the shell's gate) before retransmitting, and may_send fences first
        lease, clock = make()
        held(lease, clock)
        ep = new_endpoint()
        keepalive = make_request(
            "MESSAGE", "sip:34020000002000000001@3402000000", from_addr="sip:a@b", to_addr="sip:c@d",
            call_id="k", cseq=2, from_tag="f",
        )  # fmt: skip
        assert lease.may_send(clock.now)
        ep.send_request(keepalive, DEVICE_UDP, clock.now, gate=lease.may_send)
        assert len(ep.datagrams_to_send()) == 1
        clock.advance(TTL * 2)  # stopped: no timer ran meanwhile
        assert (ep.get_timer() or 0) < clock.now and (lease.get_timer() or 0) < clock.now
        ep.handle_timer(clock.now)  # the endpoint's timer first: the worse order
        assert ep.datagrams_to_send() == []
        assert lease.state is LeaseState.FENCED and [type(e) for e in events(lease)] == [Fenced]
        lease.handle_timer(clock.now)  # then the lease's: nothing more
        run_until(lease, clock, clock.now + TTL)  # renewals unanswered; Timer F ends the keepalive
        while (when := ep.get_timer()) is not None:
            ep.handle_timer(when)
            assert ep.datagrams_to_send() == []
        assert ep.transactions_in_flight == 0

    def test_paused_within_the_margin_it_may_send(self) -> None:
        lease, clock = make()
        held(lease, clock)
        assert lease.valid_from is not None
        fence = lease.valid_from + TTL - TTL * 0.2
        assert lease.may_send(fence - 0.001)
        assert not lease.may_send(fence)

    def test_a_renewal_answered_after_a_pause_confirms_nothing(self) -> None:
        lease, clock = make()
        held(lease, clock)
        run_until(lease, clock, clock.now + TTL / 3)
        renew = one(lease)
        clock.advance(TTL)  # paused between the renewal's send and its answer
        lease.renewed(renew.ref, clock.now)  # it was ours when Redis ran it, but that was long ago
        assert lease.state is LeaseState.FENCED
        assert [type(e) for e in events(lease)] == [Fenced]
        assert not lease.may_send(clock.now)
        again = one(lease)
        clock.advance(0.01)
        lease.renewed(again.ref, clock.now)  # a fresh confirmation: ours again, registered afresh
        assert events(lease) == [Gained("upstream:district", 7)]


class TestRelease:
    def test_a_held_lease_is_released_on_its_token(self) -> None:
        lease, clock = make()
        take = held(lease, clock)
        lease.stop(clock.now)
        release = one(lease)
        assert release.op is LeaseOp.RELEASE and release.token == take.token
        assert not lease.may_send(clock.now)
        lease.released(release.ref, clock.now)
        assert events(lease) == [Released("upstream:district")]
        assert lease.get_timer() is None and lease.state is LeaseState.RELEASED

    def test_a_take_still_out_is_released_too(self) -> None:
        lease, clock = make()
        lease.start(clock.now)
        take = one(lease)
        lease.stop(clock.now)
        release = one(lease)
        assert release.op is LeaseOp.RELEASE and release.token == take.token
        lease.taken(take.ref, 1, clock.now)  # the take's late answer: ignored
        lease.failed(release.ref, clock.now)  # Redis away: it expires by itself
        assert events(lease) == [Released("upstream:district")]

    def test_standby_stops_at_once(self) -> None:
        lease, clock = make()
        lease.start(clock.now)
        lease.busy(one(lease).ref, "n2", None, clock.now)
        lease.stop(clock.now)
        assert lease.requests_to_send() == [] and events(lease) == [Released("upstream:district")]
        lease.stop(clock.now)
        assert lease.state is LeaseState.RELEASED


class TestTable:
    def test_an_input_the_table_does_not_list_names_the_state(self) -> None:
        with pytest.raises(LocalProtocolError, match="RENEWED is not possible in state STANDBY"):
            transition(LeaseState.STANDBY, LeaseInput.RENEWED)

    def test_every_state_but_released_can_stop(self) -> None:
        for state in LeaseState:
            assert (state, LeaseInput.STOP) in TRANSITIONS

    def test_render_and_holder(self) -> None:
        assert render_table().startswith("digraph lease {")
        assert holder_of("n2 14 00ab") == "n2"
