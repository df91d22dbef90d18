"""Our catalog toward a superior (PROTOCOL.md §9.3, §5.5.4-5.5.5, §6.2): tree, scope, bodies, events, pacing."""

from __future__ import annotations

from typing import TypeVar

import pytest

from gb28181gw.errors import LocalProtocolError
from gb28181gw.gb.cascade_catalog import (
    STEP,
    UDP_BODY_LIMIT,
    Event,
    Identity,
    Kind,
    Pacer,
    PacerState,
    Steps,
    View,
    body_limit,
    build_view,
    build_view_steps,
    diff,
    notify_bodies,
    offline_changes,
    response_bodies,
    split_parts,
)
from gb28181gw.gb.model import Channel, Override
from gb28181gw.gb.share import ShareRule
from gb28181gw.manscdp.messages import catalog, decode

T = TypeVar("T")
US = "34020000002000000009"
NVR = "34020000001180000001"
IPC = "34020000001320000007"
GROUP = "34020000002150000001"
ORG = "34020000002160000001"
GATE = "34020000001310000001"
BACK = "34020000001310000002"


def nvr_catalog() -> list[Channel]:
    return [
        Channel("340202", NVR, "示例区"),
        Channel(GROUP, NVR, "治安业务", parent_id=NVR, extra={"CivilCode": "340202"}),
        Channel(ORG, NVR, "一号园区", extra={"BusinessGroupID": GROUP}),
        Channel(
            GATE,
            NVR,
            "大门口",
            "ON",
            NVR,
            {"CivilCode": "340202", "Manufacturer": "Hik", "Model": "X1", "PTZType": "1", "Password": "secret"},
        ),
        Channel(BACK, NVR, "后门", "ON", f"{NVR}/{ORG}", {"CivilCode": "340202"}),
        Channel(IPC, IPC, "停车场", "ON", IPC, {"CivilCode": "3401031"}),  # C6: not a civil code
    ]


def view(*, online: frozenset[str] = frozenset({NVR, IPC}), rule: ShareRule | None = None) -> View:
    return build_view(Identity(US, "site gateway"), nvr_catalog(), online=online.__contains__, rule=rule or ShareRule())


class TestTree:
    """The tree of Annex J: platform, regions, groups, organisations, channels (§9.3)."""

    def test_order_kinds_and_ids_unchanged(self) -> None:
        v = view()
        assert [(i.device_id, i.kind) for i in v.items.values()] == [
            (US, Kind.PLATFORM),
            ("34", Kind.REGION),
            ("3402", Kind.REGION),
            ("340200", Kind.REGION),  # the IPC's unusable civil code became ours
            ("340202", Kind.REGION),
            (GROUP, Kind.GROUP),
            (ORG, Kind.ORG),
            (GATE, Kind.CHANNEL),
            (BACK, Kind.CHANNEL),
            (IPC, Kind.CHANNEL),
        ]

    def test_region_named_when_reported_else_its_code(self) -> None:
        items = view().items
        assert items["340202"].fields == [("Name", "示例区")]
        assert items["3402"].fields == [("Name", "3402")]

    def test_platform_item_can_be_left_out(self) -> None:
        assert (
            US
            not in build_view(
                Identity(US, "gw", platform_item=False), nvr_catalog(), online=lambda d: True, rule=ShareRule()
            ).items
        )

    def test_group_parent_is_us_when_its_own_is_not_in_the_tree(self) -> None:
        assert dict(view().items[GROUP].fields)["ParentID"] == US

    def test_org_keeps_business_group_and_has_no_parent_under_the_group(self) -> None:
        assert view().items[ORG].fields == [("Name", "一号园区"), ("BusinessGroupID", GROUP)]

    def test_channel_fields_in_wire_order_with_info_and_no_password(self) -> None:
        fields = view().items[GATE].fields
        assert [k for k, _ in fields] == [
            "Name", "Manufacturer", "Model", "CivilCode", "Address", "Parental", "ParentID",
            "RegisterWay", "Secrecy", "Status", "Info",
        ]  # fmt: skip
        assert dict(fields)["ParentID"] == US  # the NVR is no item of the tree: the system owns it
        assert dict(fields)["Info"] == [("PTZType", "1")]

    def test_channel_in_a_virtual_org_keeps_only_the_parent_in_the_tree(self) -> None:
        assert dict(view().items[BACK].fields)["ParentID"] == ORG

    def test_several_parents_in_the_tree_are_kept_for_2022_and_the_innermost_for_2016(self) -> None:
        chans = nvr_catalog()
        chans[4].parent_id = f"{GATE}/{ORG}"  # under another shared item and in a virtual org
        for single, parent in ((False, f"{GATE}/{ORG}"), (True, ORG)):
            v = build_view(Identity(US, "gw", single_parent=single), chans, online=lambda d: True, rule=ShareRule())
            assert dict(v.items[BACK].fields)["ParentID"] == parent

    def test_channel_of_an_offline_device_is_off(self) -> None:
        v = view(online=frozenset({IPC}))
        assert dict(v.items[GATE].fields)["Status"] == "OFF"
        assert v.items[GATE].status == "OFF"
        assert v.items[IPC].status == "ON"

    def test_channel_reported_off_stays_off_with_its_device_online(self) -> None:
        chans = nvr_catalog()
        chans[3].status = "OFF"
        v = build_view(Identity(US, "gw"), chans, online=lambda d: True, rule=ShareRule())
        assert v.items[GATE].status == "OFF"

    def test_only_what_is_shared_and_the_groups_it_hangs_under(self) -> None:
        v = view(rule=ShareRule.from_config([BACK]))
        assert list(v.items) == [US, "34", "3402", "340202", GROUP, ORG, BACK]

    def test_unshared_device_takes_its_groups_along(self) -> None:
        v = view(rule=ShareRule().unshare([NVR]))
        assert list(v.items) == [US, "34", "3402", "340200", IPC]

    def test_one_channel_shared_back_from_an_unshared_device_or_district_is_seen(self) -> None:
        # the operator hides an NVR (or a whole ID prefix), then shows one of its cameras again
        for hidden in (NVR, "3402000000"):
            rule = ShareRule().unshare([hidden]).share([GATE])
            assert GATE in view(rule=rule).items
            assert BACK not in view(rule=rule).items

    def test_override_changes_name_civil_code_and_parent_never_the_id(self) -> None:
        v = build_view(
            Identity(US, "gw"),
            nvr_catalog(),
            online=lambda d: True,
            rule=ShareRule(),
            overrides={IPC: Override("district", IPC, name="西门", civil_code="340104", parent_id=ORG)},
        )
        item = v.items[IPC]
        assert item.device_id == IPC
        assert (dict(item.fields)["Name"], dict(item.fields)["CivilCode"], dict(item.fields)["ParentID"]) == (
            "西门",
            "340104",
            ORG,
        )
        assert "340104" in v.items and "3401" in v.items

    def test_an_overridden_parent_is_in_the_tree_or_falls_back_to_us(self) -> None:
        # the operator moves the shared IPC under the NVR's virtual org (not shared by itself):
        # the org and its group come along, as for a parent the device reported; a parent we do
        # not have at all (a typo, an org the device since dropped) is no dangling ParentID (§5.5.3)
        lost = "34020000002160009999"
        for parent, expected, tree in ((ORG, ORG, [GROUP, ORG]), (lost, US, []), (f"{lost}/{ORG}", ORG, [GROUP, ORG])):
            v = build_view(
                Identity(US, "gw"),
                nvr_catalog(),
                online=lambda d: True,
                rule=ShareRule.from_config([IPC]),
                overrides={IPC: Override("district", IPC, parent_id=parent)},
            )
            assert dict(v.items[IPC].fields)["ParentID"] == expected
            assert [i for i in v.items if i[10:13] in ("215", "216")] == tree


class TestScope:
    """What a Catalog query for one DeviceID returns (§5.5.4)."""

    def test_our_id_is_everything(self) -> None:
        v = view()
        assert v.scope(US) == list(v.items.values())

    def test_region_is_its_subtree(self) -> None:
        ids = [i.device_id for i in view().scope("340202") or []]
        assert ids == ["340202", GROUP, ORG, GATE, BACK]

    def test_group_is_its_orgs_and_their_channels(self) -> None:
        assert [i.device_id for i in view().scope(GROUP) or []] == [GROUP, ORG, BACK]

    def test_device_that_is_no_item_is_its_channels(self) -> None:
        assert [i.device_id for i in view().scope(NVR) or []] == [GATE, BACK]

    def test_unknown_or_unshared_id_is_none(self) -> None:
        assert view().scope("34020000001310009999") is None
        assert view(rule=ShareRule().unshare([GATE])).scope(GATE) is None


class TestResponseBodies:
    """Splitting (§5.5.5): same SN, SumNum = total, Num = items of that message."""

    def test_batches_of_four(self) -> None:
        v = view()
        bodies = response_bodies(list(v.items.values()), sn=88, device_id=US, batch=4, charset="GB2312").bodies
        assert len(bodies) == 3
        got = []
        for body in bodies:
            env = decode(body)
            assert (env.sn, env.device_id) == (88, US)
            sum_num, items = catalog(env)
            assert sum_num == 10
            assert f'<DeviceList Num="{len(items)}">'.encode() in body
            got += [i.device_id for i in items]
        assert got == list(v.items)
        assert [len(catalog(decode(b))[1]) for b in bodies] == [4, 4, 2]

    def test_charset_of_the_superior(self) -> None:
        items = list(view().items.values())
        gb = response_bodies(items, sn=1, device_id=US, batch=16, charset="GB2312").bodies[0]
        utf = response_bodies(items, sn=1, device_id=US, batch=16, charset="UTF-8").bodies[0]
        assert "大门口".encode("gb18030") in gb and b'encoding="GB2312"' in gb
        assert "大门口".encode() in utf

    def test_nothing_is_sum_zero_without_device_list(self) -> None:
        (body,) = response_bodies([], sn=5, device_id="340299", batch=4, charset="UTF-8").bodies
        assert b"<SumNum>0</SumNum>" in body and b"DeviceList" not in body


def drain(steps: Steps[T]) -> tuple[int, T]:
    """How many times a stepped computation yields, and its result."""
    yields = 0
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return yields, stop.value
        yields += 1


class TestSplitBySize:
    """A batch too big for one message (a UDP datagram) goes in several, none lost unsaid (§5.5.5, Annex M)."""

    @staticmethod
    def many(n: int) -> list[Channel]:
        return [
            Channel(
                f"340200000013200{c:05d}",
                NVR,
                f"示例路{c}号通道",
                "ON",
                NVR,
                {"CivilCode": "340200", "Address": "示例路"},
            )
            for c in range(n)
        ]

    def test_udp_limit_and_tcp_limit(self) -> None:
        assert body_limit("UDP", 262144) == UDP_BODY_LIMIT
        assert body_limit("udp", 4096) == 3072  # our own message limit is smaller still
        assert body_limit("TCP", 262144) == 262144 - 1024

    def test_a_big_batch_is_split_under_the_limit_with_one_sn_and_sum_num(self) -> None:
        v = build_view(Identity(US, "gw"), self.many(300), online=lambda d: True, rule=ShareRule())
        items = list(v.items.values())
        parts = response_bodies(items, sn=7, device_id=US, batch=256, charset="GB2312", limit=8192)
        assert len(parts.bodies) > 2 and not parts.skipped
        assert all(len(b) <= 8192 for b in parts.bodies)
        got = []
        for body, count in zip(parts.bodies, parts.counts, strict=True):
            sum_num, listed = catalog(decode(body))
            assert decode(body).sn == 7 and sum_num == len(items) and len(listed) == count
            assert f'<DeviceList Num="{count}">'.encode() in body
            got += [i.device_id for i in listed]
        assert got == list(v.items)  # every item once, in tree order

    def test_without_a_limit_only_the_batch_counts(self) -> None:
        items = list(
            build_view(Identity(US, "gw"), self.many(40), online=lambda d: True, rule=ShareRule()).items.values()
        )
        assert response_bodies(items, sn=1, device_id=US, batch=32, charset="UTF-8").counts == [32, len(items) - 32]

    def test_an_item_too_big_for_any_message_is_skipped_named_and_not_counted(self) -> None:
        chans = nvr_catalog()
        chans[3].name = "很长" * 3000  # GATE: 12,000 bytes of name
        v = build_view(Identity(US, "gw"), chans, online=lambda d: True, rule=ShareRule())
        parts = response_bodies(list(v.items.values()), sn=3, device_id=US, batch=4, charset="GB2312", limit=8192)
        assert [i.device_id for i in parts.skipped] == [GATE]  # type: ignore[attr-defined]
        sent = [i.device_id for b in parts.bodies for i in catalog(decode(b))[1]]
        assert GATE not in sent and len(sent) == len(v) - 1
        assert {catalog(decode(b))[0] for b in parts.bodies} == {len(v) - 1}  # SumNum: what is sent

    def test_notify_sns_are_drawn_once_per_message_sent(self) -> None:
        before = build_view(Identity(US, "gw"), self.many(100), online=lambda d: True, rule=ShareRule())
        after = build_view(Identity(US, "gw"), self.many(100), online=lambda d: False, rule=ShareRule())
        changes = diff(before, after)
        sns = iter(range(50, 1000))
        parts = notify_bodies(changes, next_sn=lambda: next(sns), device_id=US, batch=128, charset="UTF-8", limit=4096)
        assert len(parts.bodies) > 1 and all(len(b) <= 4096 for b in parts.bodies)
        assert [decode(b).sn for b in parts.bodies] == list(range(50, 50 + len(parts.bodies)))
        assert sum(parts.counts) == len(changes)
        assert all(catalog(decode(b))[0] == c for b, c in zip(parts.bodies, parts.counts, strict=True))

    def test_split_yields_between_steps(self) -> None:
        yields, parts = drain(
            split_parts(list(range(3 * STEP)), lambda chunk, total, i: bytes(len(chunk)), batch=8, limit=None)
        )
        assert yields == 3 and sum(parts.counts) == 3 * STEP


class TestIncremental:
    """A change of one device builds that device's items again, not the whole tree."""

    def test_build_in_steps_is_the_same_tree(self) -> None:
        chans = TestSplitBySize.many(3 * STEP)
        yields, stepped = drain(build_view_steps(Identity(US, "gw"), chans, online=lambda d: True, rule=ShareRule()))
        assert yields >= 6  # classifying and building, a step each STEP channels
        assert stepped.items == build_view(Identity(US, "gw"), chans, online=lambda d: True, rule=ShareRule()).items

    def test_other_devices_items_are_reused_and_the_changed_ones_built_again(self) -> None:
        before = view()
        after = build_view(
            Identity(US, "site gateway"),
            nvr_catalog(),
            online=frozenset({IPC}).__contains__,
            rule=ShareRule(),
            previous=before,
            changed={NVR},
        )
        assert after.items[IPC] is before.items[IPC]  # untouched device: the very same item
        assert after.items[GATE].status == "OFF" and after.items[GATE] is not before.items[GATE]
        assert after.items == view(online=frozenset({IPC})).items  # what a whole build gives
        assert [(c.event, c.item.device_id) for c in diff(before, after)] == [(Event.OFF, GATE), (Event.OFF, BACK)]

    def test_a_device_changed_but_not_said_keeps_its_items(self) -> None:
        # the shell says which devices changed; one it does not name is taken as it was
        before = view()
        after = build_view(
            Identity(US, "site gateway"), nvr_catalog(), online=frozenset({IPC}).__contains__, rule=ShareRule(),
            previous=before, changed=(),
        )  # fmt: skip
        assert after.items[GATE] is before.items[GATE]

    def test_nothing_reused_when_the_ids_a_parent_may_name_change(self) -> None:
        # a new organisation appears: a channel's ParentID may now name it, whichever device it is of
        before = view()
        chans = nvr_catalog()
        chans.append(Channel("34020000002160000002", IPC, "二号园区"))
        chans[5].parent_id = "34020000002160000002"  # the IPC's own item, under the new org
        after = build_view(
            Identity(US, "site gateway"), chans, online=frozenset({NVR, IPC}).__contains__, rule=ShareRule(),
            previous=before, changed={IPC},
        )  # fmt: skip
        assert after.items[GATE] is not before.items[GATE] and after.items[GATE] == before.items[GATE]
        assert dict(after.items[IPC].fields)["ParentID"] == "34020000002160000002"


class TestEvents:
    """Changes as catalog events (§6.2) and their NOTIFY bodies (2022 Annex N: SumNum = Num)."""

    def test_device_offline_is_off_events_for_its_channels(self) -> None:
        changes = diff(view(), view(online=frozenset({IPC})))
        assert [(c.event, c.item.device_id) for c in changes] == [(Event.OFF, GATE), (Event.OFF, BACK)]

    def test_unshare_is_del_share_is_add(self) -> None:
        before, after = view(), view(rule=ShareRule().unshare([IPC]))
        assert [(c.event, c.item.device_id) for c in diff(before, after)] == [
            (Event.DEL, IPC),
            (Event.DEL, "340200"),
        ]
        assert [(c.event, c.item.device_id) for c in diff(after, before)] == [
            (Event.ADD, "340200"),
            (Event.ADD, IPC),
        ]

    def test_name_change_is_update(self) -> None:
        chans = nvr_catalog()
        chans[3].name = "正门"
        after = build_view(Identity(US, "site gateway"), chans, online=lambda d: True, rule=ShareRule())
        assert [(c.event, c.item.device_id) for c in diff(view(), after)] == [(Event.UPDATE, GATE)]

    def test_nothing_changed_is_nothing(self) -> None:
        assert diff(view(), view()) == []

    def test_offline_changes_of_a_new_subscription(self) -> None:
        assert [c.item.device_id for c in offline_changes(view(online=frozenset({NVR})))] == [IPC]

    def test_notify_bodies(self) -> None:
        changes = diff(view(), view(rule=ShareRule().unshare([NVR])))
        sns = iter(range(100, 200))
        bodies = notify_bodies(changes, next_sn=lambda: next(sns), device_id=US, batch=2, charset="UTF-8").bodies
        # 340202, GROUP, ORG, GATE and BACK go (34 and 3402 stay: the IPC is under them)
        assert [len(catalog(decode(b))[1]) for b in bodies] == [2, 2, 1]
        assert catalog(decode(bodies[2]))[0] == 1
        first = decode(bodies[0])
        assert first.root.value == "Notify" and first.sn == 100 and first.device_id == US
        sum_num, items = catalog(first)
        assert sum_num == 2 and [i.fields for i in items] == [{"Event": "DEL"}, {"Event": "DEL"}]
        assert [decode(b).sn for b in bodies] == [100, 101, 102]

    def test_add_carries_the_full_item(self) -> None:
        (body,) = notify_bodies(
            diff(view(rule=ShareRule().unshare([IPC])), view()),
            next_sn=lambda: 1,
            device_id=US,
            batch=8,
            charset="UTF-8",
        ).bodies
        _, items = catalog(decode(body))
        assert items[1].device_id == IPC
        assert items[1].fields["Event"] == "ADD" and items[1].fields["Name"] == "停车场"


class TestPacer:
    """Serial sending (§5.5.5): next after the 2xx, fallback pace, stop on error or loss."""

    def test_next_only_after_the_previous_2xx(self) -> None:
        p = Pacer(fallback=0.5)
        p.push(3)
        assert p.ready
        assert p.sent(0.0) == 0
        assert not p.ready and p.get_timer() == 0.5
        p.receive(0, 200)
        assert p.sent(0.1) == 1
        p.receive(1, 200)
        assert p.sent(0.2) == 2
        p.receive(2, 200)
        assert p.finished and p.state is PacerState.IDLE and p.answered == 3

    def test_fallback_pace_when_the_superior_never_answers(self) -> None:
        p = Pacer(fallback=0.5)
        p.push(2)
        p.sent(10.0)
        p.handle_timer(10.4)
        assert not p.ready
        p.handle_timer(10.5)
        assert p.ready and p.fallbacks == 1
        p.sent(10.5)
        p.receive(0, 200)  # the late answer to the first changes nothing
        assert not p.ready
        p.receive(1, None)  # the second timed out: move on (nothing left)
        assert p.finished

    def test_final_error_stops_even_for_a_message_moved_on_from(self) -> None:
        p = Pacer(fallback=0.5)
        p.push(3)
        p.sent(0.0)
        p.handle_timer(0.5)
        p.sent(0.5)
        p.receive(0, 481)
        assert p.state is PacerState.STOPPED and p.finished and "481" in p.stop_reason
        p.push(1)
        p.receive(1, 200)
        assert p.state is PacerState.STOPPED and not p.ready

    def test_lost_superior_stops(self) -> None:
        p = Pacer()
        p.push(2)
        p.sent(0.0)
        p.lose("keepalives unanswered")
        assert p.finished and p.stop_reason == "keepalives unanswered" and p.get_timer() is None

    def test_more_queued_while_waiting(self) -> None:
        p = Pacer()
        p.push(1)
        p.sent(0.0)
        p.push(1)
        assert not p.ready
        p.receive(0, 200)
        assert p.ready

    def test_sending_when_not_ready_is_a_bug(self) -> None:
        with pytest.raises(LocalProtocolError, match="IDLE"):
            Pacer().sent(0.0)
