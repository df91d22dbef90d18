"""Device ownership among nodes (issue 17): epoch rules, the per-device table, dead-node detection."""

from __future__ import annotations

import pytest

from gb28181gw.errors import LocalProtocolError
from gb28181gw.gb.ownership import (
    TRANSITIONS,
    Follow,
    Holding,
    HoldingInput,
    NodeWatch,
    Owner,
    Ownership,
    Sweep,
    WriteVerdict,
    claim_wins,
    follow_verdict,
    judge_write,
    parse_stream_id,
    render_table,
    sweep_verdict,
    transition,
)
from tests.helpers import FakeClock

D = "34020000001320000001"


class TestOwnerValue:
    def test_round_trip(self) -> None:
        assert Owner.parse("12 n1") == Owner(12, "n1")
        assert str(Owner(12, "n1")) == "12 n1"

    @pytest.mark.parametrize("value", ["", "n1", "12", "12 ", "-1 n1", "x n1", " n1"])
    def test_garbage_is_refused_naming_it(self, value: str) -> None:
        with pytest.raises(ValueError, match="not an owner value"):
            Owner.parse(value)


class TestClaimOrder:
    """A claim carries its REGISTER's wall time: the later REGISTER owns the device, whichever batch arrives first."""

    def test_first_claim_wins(self) -> None:
        assert claim_wins(None, 100.0)

    def test_a_later_register_wins_and_an_earlier_one_loses(self) -> None:
        clock = FakeClock(1000.0)
        at_a = clock.now
        clock.advance(2.0)
        at_b = clock.now
        # B's batch arrived first: A's claim, of an earlier REGISTER, loses on arrival
        assert claim_wins(None, at_b)
        assert not claim_wins(at_b, at_a)
        # in the order of the REGISTERs, each wins
        assert claim_wins(at_a, at_b)

    def test_the_same_claim_sent_again_wins(self) -> None:
        assert claim_wins(100.0, 100.0)


class TestFencedWrite:
    def test_our_epoch(self) -> None:
        assert judge_write(Owner(3, "a"), Owner(3, "a")) is WriteVerdict.OURS

    def test_another_node_claimed_since(self) -> None:
        assert judge_write(Owner(4, "b"), Owner(3, "a")) is WriteVerdict.LOST
        # even with a smaller epoch (Redis restored from a dump): another node's
        assert judge_write(Owner(1, "b"), Owner(3, "a")) is WriteVerdict.LOST

    def test_redis_lost_it_or_went_back_to_an_older_dump(self) -> None:
        assert judge_write(None, Owner(3, "a")) is WriteVerdict.RESTORE
        assert judge_write(Owner(2, "a"), Owner(3, "a")) is WriteVerdict.RESTORE

    def test_a_claim_of_ours_whose_answer_was_lost(self) -> None:
        assert judge_write(Owner(5, "a"), Owner(3, "a")) is WriteVerdict.ADOPT


class TestSweep:
    def test_dead_nodes_device_past_its_deadline_goes_offline(self) -> None:
        clock = FakeClock(500.0)
        deadline = clock.now + 10
        assert sweep_verdict(Owner(2, "dead"), "dead", deadline, clock.now) is Sweep.WAIT
        clock.advance(10.0)
        assert sweep_verdict(Owner(2, "dead"), "dead", deadline, clock.now) is Sweep.OFFLINE

    def test_a_device_registered_elsewhere_since_is_left_alone(self) -> None:
        assert sweep_verdict(Owner(3, "b"), "dead", 0.0, 100.0) is Sweep.LEAVE
        assert sweep_verdict(None, "dead", 0.0, 100.0) is Sweep.LEAVE


class TestTable:
    def test_every_state_answers_registered(self) -> None:
        for state in Holding:
            assert transition(state, HoldingInput.REGISTERED)[0] is Holding.CLAIMING

    def test_an_unlisted_pair_names_the_state(self) -> None:
        with pytest.raises(LocalProtocolError, match="CLAIM_WON is not possible in state OWNED"):
            transition(Holding.OWNED, HoldingInput.CLAIM_WON)

    def test_renders(self) -> None:
        assert render_table().count("->") == len(TRANSITIONS)


class TestOwnership:
    def test_a_claim_won_makes_the_device_ours_at_its_epoch(self) -> None:
        own = Ownership("a")
        assert not own.owns(D)
        own.registered(D, 100.0)
        assert own.owns(D) and own.state(D) is Holding.CLAIMING
        assert own.take_claims() == {D: 100.0}
        assert own.take_claims() == {}
        own.claimed(D, 7)
        assert own.state(D) is Holding.OWNED and own.epoch(D) == 7
        assert own.owned() == 1

    def test_a_claim_lost_forgets_the_device_once(self) -> None:
        own = Ownership("a")
        own.registered(D, 100.0)
        own.take_claims()
        own.claim_lost(D)
        assert not own.owns(D) and own.epoch(D) is None
        assert own.take_forgotten() == [D] and own.take_forgotten() == []
        assert own.lost == 1
        own.refused(D)  # a late answer about it: nothing more
        assert own.take_forgotten() == [] and own.lost == 1

    def test_a_refused_write_forgets_an_owned_device(self) -> None:
        own = Ownership("a")
        own.load([(D, Owner(4, "a")), ("other", Owner(9, "b"))])
        assert own.owns(D) and not own.owns("other") and own.epoch(D) == 4
        own.refused(D)
        assert own.take_forgotten() == [D] and not own.owns(D)

    def test_a_refusal_while_a_newer_claim_is_queued_is_left_to_that_claim(self) -> None:
        own = Ownership("a")
        own.load([(D, Owner(4, "a"))])
        own.registered(D, 200.0)  # its REGISTER came after the batch that is refused
        own.refused(D)
        assert own.owns(D) and own.take_forgotten() == []
        assert own.take_claims() == {D: 200.0}
        own.claimed(D, 6)
        assert own.state(D) is Holding.OWNED and own.epoch(D) == 6

    def test_an_old_claim_lost_while_a_newer_is_queued_changes_nothing(self) -> None:
        own = Ownership("a")
        own.registered(D, 100.0)
        sent = own.take_claims()
        own.registered(D, 130.0)
        own.claim_lost(D)
        assert own.owns(D) and own.take_forgotten() == []
        own.unsent(sent)  # had the batch failed instead, the newer claim stays the one queued
        assert own.take_claims() == {D: 130.0}

    def test_a_failed_batch_queues_its_claims_again(self) -> None:
        own = Ownership("a")
        own.registered(D, 100.0)
        own.unsent(own.take_claims())
        assert own.take_claims() == {D: 100.0}

    def test_restored_or_adopted_epochs_are_kept(self) -> None:
        own = Ownership("a")
        own.load([(D, Owner(4, "a"))])
        own.accepted(D, 9)
        assert own.epoch(D) == 9
        own.accepted("stranger", 3)  # not ours: nothing
        assert not own.owns("stranger")


class TestNodeWatch:
    def test_a_node_is_dead_only_after_its_key_stayed_missing_for_the_grace(self) -> None:
        clock = FakeClock(0.0)
        watch = NodeWatch(grace=7.0)
        assert watch.observe({"a": True, "b": False}, clock.now) == []
        clock.advance(5.0)
        assert watch.observe({"a": True, "b": False}, clock.now) == []
        clock.advance(2.0)
        assert watch.observe({"a": True, "b": False}, clock.now) == ["b"]

    def test_a_key_back_within_the_grace_resets_it(self) -> None:
        # Redis restarted empty: the live node takes its key again within a third of its TTL
        clock = FakeClock(0.0)
        watch = NodeWatch(grace=7.0)
        watch.observe({"b": False}, clock.now)
        clock.advance(5.0)
        watch.observe({"b": True}, clock.now)
        clock.advance(5.0)
        assert watch.observe({"b": False}, clock.now) == []
        clock.advance(7.0)
        assert watch.observe({"b": False}, clock.now) == ["b"]

    def test_a_node_swept_by_another_janitor_is_forgotten(self) -> None:
        watch = NodeWatch(grace=0.0)
        assert watch.observe({"b": False}, 0.0) == ["b"]
        assert watch.observe({}, 1.0) == []


class TestFollowingTheEventsStream:
    """When a node can read on from its cursor in ``events``, and when it must read every row."""

    def test_stream_ids_order_as_redis_orders_them(self) -> None:
        assert parse_stream_id("1700000000000-3") == (1700000000000, 3)
        assert parse_stream_id("10-0") > parse_stream_id("9-99")
        for bad in ("", "12", "a-1", "1-", "-1", "1-2-3"):
            with pytest.raises(ValueError, match="stream entry ID"):
                parse_stream_id(bad)

    def test_the_first_read_and_a_lost_data_set_reconcile(self) -> None:
        assert follow_verdict(None, boot_changed=False, last=(5, 0), deleted=(0, 0), first=(1, 0)) is Follow.RECONCILE
        assert follow_verdict((5, 0), boot_changed=True, last=(5, 0), deleted=(0, 0), first=(1, 0)) is Follow.RECONCILE

    def test_entries_past_the_cursor_all_there_are_read(self) -> None:
        assert follow_verdict((5, 0), boot_changed=False, last=(9, 0), deleted=(0, 0), first=(1, 0)) is Follow.READ
        assert follow_verdict((5, 0), boot_changed=False, last=(9, 0), deleted=None, first=(5, 0)) is Follow.READ

    def test_nothing_new_is_read_whatever_was_trimmed(self) -> None:
        assert follow_verdict((5, 0), boot_changed=False, last=(5, 0), deleted=None, first=None) is Follow.READ

    def test_a_stream_set_back_reconciles(self) -> None:
        # a restore from an older dump, or the stream made anew: new entries would hide below the cursor
        assert follow_verdict((5, 0), boot_changed=False, last=(4, 9), deleted=None, first=(1, 0)) is Follow.RECONCILE
        assert follow_verdict((5, 0), boot_changed=False, last=(0, 0), deleted=None, first=None) is Follow.RECONCILE

    def test_entries_deleted_or_trimmed_past_the_cursor_reconcile(self) -> None:
        assert follow_verdict((5, 0), boot_changed=False, last=(9, 0), deleted=(6, 0), first=(1, 0)) is Follow.RECONCILE
        assert follow_verdict((5, 0), boot_changed=False, last=(9, 0), deleted=(0, 0), first=(7, 0)) is Follow.RECONCILE
        assert follow_verdict((5, 0), boot_changed=False, last=(9, 0), deleted=None, first=None) is Follow.RECONCILE
