"""The registration director's choice of node: rendezvous hashing (GB/T 28181-2022 §9.1.2.3, issue 17)."""

from __future__ import annotations

from collections import Counter

from gb28181gw.gb.director import (
    Direction,
    NodeRecord,
    Verdict,
    candidates,
    choose,
    contact_uri,
    direct,
    weight,
)

DEVICES = [f"3402000000132{i:07d}" for i in range(10_000)]
N1, N2, N3 = (NodeRecord(f"n{i}", f"127.0.0.1:{5060 + i}") for i in (1, 2, 3))


class TestRendezvousHashing:
    def test_the_weight_is_a_stable_function_of_both_names(self) -> None:
        # a fixed value: every director, on any host or Python, computes the same (no salted hash())
        assert weight("n1", "34020000001320000001") == 0x71B845A162941834
        assert weight("n1", "2") != weight("n12", "")  # the separator keeps the names apart

    def test_the_choice_does_not_depend_on_the_order_of_the_nodes(self) -> None:
        for device in DEVICES[:500]:
            assert choose(device, [N1, N2, N3]) == choose(device, [N3, N1, N2]) == choose(device, [N2, N3, N1])

    def test_three_nodes_share_ten_thousand_devices_within_a_few_percent(self) -> None:
        spread = Counter(choose(d, [N1, N2, N3]).node_id for d in DEVICES)  # type: ignore[union-attr]
        assert set(spread) == {"n1", "n2", "n3"}
        for count in spread.values():
            assert abs(count - len(DEVICES) / 3) < 0.04 * len(DEVICES), spread

    def test_a_node_removed_moves_only_its_own_devices(self) -> None:
        before = {d: choose(d, [N1, N2, N3]) for d in DEVICES}
        after = {d: choose(d, [N1, N3]) for d in DEVICES}
        for d in DEVICES:
            if before[d] != N2:
                assert after[d] == before[d]  # nobody else re-registers
            else:
                assert after[d] in (N1, N3)
        # and N2's devices spread over both survivors, not all onto one
        moved = Counter(after[d].node_id for d in DEVICES if before[d] == N2)  # type: ignore[union-attr]
        assert set(moved) == {"n1", "n3"} and min(moved.values()) > 0.4 * sum(moved.values())

    def test_a_node_added_takes_about_a_quarter_from_every_node(self) -> None:
        n4 = NodeRecord("n4", "127.0.0.1:5064")
        before = {d: choose(d, [N1, N2, N3]) for d in DEVICES}
        after = {d: choose(d, [N1, N2, N3, n4]) for d in DEVICES}
        moved = [d for d in DEVICES if after[d] != before[d]]
        assert all(after[d] == n4 for d in moved)
        assert abs(len(moved) - len(DEVICES) / 4) < 0.04 * len(DEVICES)

    def test_no_node_no_choice(self) -> None:
        assert choose("34020000001320000001", []) is None


class TestDirect:
    def test_a_device_of_another_node_is_redirected_there(self) -> None:
        device = next(d for d in DEVICES if choose(d, [N1, N2, N3]) == N2)
        assert direct(device, [N1, N2, N3], "n1") == Direction(Verdict.REDIRECT, N2)

    def test_a_device_of_this_node_is_served_here(self) -> None:
        device = next(d for d in DEVICES if choose(d, [N1, N2, N3]) == N1)
        assert direct(device, [N1, N2, N3], "n1") == Direction(Verdict.SERVE, N1)

    def test_a_director_that_serves_no_devices_is_never_chosen(self) -> None:
        director = NodeRecord("d", "127.0.0.1:5070", director=True, serves=False)
        chosen = Counter(direct(d, [director, N1, N2], "d").node.node_id for d in DEVICES[:2000])  # type: ignore[union-attr]
        assert set(chosen) == {"n1", "n2"}
        assert all(direct(d, [director, N1, N2], "d").verdict is Verdict.REDIRECT for d in DEVICES[:200])

    def test_a_director_that_serves_takes_its_share(self) -> None:
        director = NodeRecord("d", "127.0.0.1:5070", director=True, serves=True)
        verdicts = Counter(direct(d, [director, N1, N2], "d").verdict for d in DEVICES[:3000])
        assert verdicts[Verdict.SERVE] > 800 and verdicts[Verdict.REDIRECT] > 1600

    def test_no_live_node_serving_devices_is_unavailable(self) -> None:
        director = NodeRecord("d", "127.0.0.1:5070", director=True, serves=False)
        assert direct(DEVICES[0], [director], "d") == Direction(Verdict.UNAVAILABLE)
        assert direct(DEVICES[0], [], "d") == Direction(Verdict.UNAVAILABLE)

    def test_a_node_without_an_address_is_no_candidate(self) -> None:
        nameless = NodeRecord("n9", "")
        assert candidates([nameless, N1]) == [N1]
        assert direct(DEVICES[0], [nameless], "d").verdict is Verdict.UNAVAILABLE

    def test_every_director_agrees(self) -> None:
        # two directors with the same view send every device to the same node
        for d in DEVICES[:1000]:
            assert direct(d, [N1, N2, N3], "d1").node == direct(d, [N1, N2, N3], "d2").node


class TestContact:
    def test_the_contact_names_the_server_id_at_the_node(self) -> None:
        # PROTOCOL.md §3.7: Contact: <sip:<assigned server ID>@<ip:port>>
        assert contact_uri("34020000002000000001", "127.0.0.1:5080") == "sip:34020000002000000001@127.0.0.1:5080"
        assert contact_uri("34020000002000000001", "gw2.example:5060") == "sip:34020000002000000001@gw2.example:5060"
        assert contact_uri("34020000002000000001", "[::1]:5080") == "sip:34020000002000000001@[::1]:5080"

    def test_a_device_on_tcp_is_sent_on_over_tcp(self) -> None:
        # a sip: URI without transport means UDP (RFC 3263 §4.1)
        uri = contact_uri("34020000002000000001", "127.0.0.1:5080", "TCP")
        assert uri == "sip:34020000002000000001@127.0.0.1:5080;transport=tcp"
        assert contact_uri("34020000002000000001", "127.0.0.1:5080", "UDP").endswith("5080")
