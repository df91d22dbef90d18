"""What a superior may see (PROTOCOL.md §9.3): the most specific share entry wins."""

from __future__ import annotations

from gb28181gw.gb.share import ShareRule

NVR = "34020000001180000001"
GATE = "34020000001310000001"  # a channel of NVR
BACK = "34020000001310000002"  # another
IPC = "34010000001320000007"  # a camera elsewhere, its own device


def seen(rule: ShareRule) -> set[str]:
    return {c for c, d in ((GATE, NVR), (BACK, NVR), (IPC, IPC)) if rule.allows(c, d)}


class TestPrecedence:
    """Longest matching entry over the item's IDs; on a tie the item's own ID over its device's."""

    def test_share_all_then_unshare_a_device_then_share_one_channel_back(self) -> None:
        rule = ShareRule().unshare([NVR])
        assert seen(rule) == {IPC}
        assert seen(rule.share([GATE])) == {GATE, IPC}

    def test_share_all_then_unshare_a_prefix_then_share_one_channel_or_device_back(self) -> None:
        rule = ShareRule().unshare(["3402"])
        assert seen(rule) == {IPC}
        assert seen(rule.share([GATE])) == {GATE, IPC}
        assert seen(rule.share([NVR])) == {GATE, BACK, IPC}  # the device's ID is longer than the prefix
        assert seen(rule.share(["340200"])) == {GATE, BACK, IPC}  # so is a narrower prefix

    def test_a_longer_unshared_prefix_inside_a_shared_one_hides(self) -> None:
        rule = ShareRule.from_config(["34"]).unshare(["3402000000131"])
        assert seen(rule) == {IPC}  # both channels' own IDs start with it; the NVR's does not
        assert seen(rule.share([BACK])) == {BACK, IPC}

    def test_channel_unshared_under_a_shared_device(self) -> None:
        assert seen(ShareRule.from_config([NVR]).unshare([BACK])) == {GATE}

    def test_tie_goes_to_the_items_own_id(self) -> None:
        # full 20-digit entries on both IDs: the channel's wins, either way round
        assert ShareRule(everything=False, shared=frozenset({GATE}), unshared=frozenset({NVR})).allows(GATE, NVR)
        assert not ShareRule(everything=False, shared=frozenset({NVR}), unshared=frozenset({GATE})).allows(GATE, NVR)
        # a prefix both IDs start with is one entry: one verdict
        assert not ShareRule().unshare(["3402000000"]).allows(GATE, NVR)

    def test_device_unshared_wins_over_a_shorter_shared_prefix_of_the_channel(self) -> None:
        assert seen(ShareRule.from_config(["3402000000131"]).unshare([NVR])) == set()

    def test_config_list_shares_only_what_it_names(self) -> None:
        assert seen(ShareRule.from_config([GATE, "3401"])) == {GATE, IPC}
        assert seen(ShareRule.from_config([])) == set()

    def test_share_and_unshare_move_an_entry_between_the_sets(self) -> None:
        rule = ShareRule().unshare([NVR]).share([NVR])
        assert NVR in rule.shared and NVR not in rule.unshared
        assert seen(rule) == {GATE, BACK, IPC}
        assert seen(rule.unshare([NVR])) == {IPC}

    def test_ids_shorter_than_an_entry_do_not_match_it(self) -> None:
        assert ShareRule().unshare([NVR]).allows("3402", "3402")


class TestDescribe:
    def test_all(self) -> None:
        assert ShareRule().describe() == "all"
        assert ShareRule().share([GATE]).describe() == "all"  # sharing what is shared changes nothing

    def test_all_except_and_shared_back(self) -> None:
        assert ShareRule().unshare([NVR]).describe() == f"all except {NVR}"
        assert ShareRule().unshare([NVR]).share([GATE]).describe() == f"all except {NVR} but {GATE}"

    def test_list(self) -> None:
        assert ShareRule.from_config([]).describe() == "nothing"
        assert ShareRule.from_config([NVR, "3401"]).unshare([BACK]).describe() == f"3401, {NVR} except {BACK}"
