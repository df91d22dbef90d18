"""Per-address request limits (sip/flood.py) and the malformed-input log throttle (logs.Throttle), on a fake clock."""

from __future__ import annotations

import pytest

from gb28181gw.config import load_config
from gb28181gw.errors import ConfigError
from gb28181gw.logs import Throttle
from gb28181gw.sip.flood import FloodBanEnded, FloodBanned, FloodGuard, FloodKind, FloodThrottled, parse_exempt

STRANGER = "198.51.100.7"
DEVICE = "192.0.2.10"


def guard(**kwargs: object) -> FloodGuard:
    settings: dict[str, object] = {"window": 2.0, "limit": 10, "known_limit": 50, "ban": 300.0}
    settings.update(kwargs)
    return FloodGuard(**settings)  # type: ignore[arg-type]


def send(g: FloodGuard, host: str, count: int, now: float) -> int:
    """How many of ``count`` requests at ``now`` were admitted."""
    return sum(g.admit(host, now) for _ in range(count))


class TestWindow:
    def test_up_to_the_limit_passes(self) -> None:
        g = guard()
        assert send(g, STRANGER, 10, 0.0) == 10
        assert g.take_events() == []
        assert g.banned_count == 0

    def test_a_new_window_counts_afresh(self) -> None:
        g = guard()
        assert send(g, STRANGER, 10, 0.0) == 10
        assert send(g, STRANGER, 10, 2.0) == 10  # window over: ten more allowed
        assert not g.admit(STRANGER, 3.9)  # the eleventh of this window

    def test_requests_spread_over_windows_are_never_banned(self) -> None:
        g = guard()
        for second in range(600):
            assert send(g, STRANGER, 4, float(second)) == 4  # 8 per 2-s window, under 10
        assert g.bans_begun == {FloodKind.STRANGER: 0, FloodKind.KNOWN: 0}

    def test_addresses_are_counted_apart(self) -> None:
        g = guard()
        assert send(g, STRANGER, 10, 0.0) == 10
        assert send(g, "198.51.100.8", 10, 0.0) == 10
        assert g.banned_count == 0


class TestBan:
    def test_one_past_the_limit_bans_and_drops_the_rest(self) -> None:
        g = guard()
        assert send(g, STRANGER, 1000, 0.5) == 10
        (event,) = g.take_events()
        assert isinstance(event, FloodBanned)
        assert event.ban.host == STRANGER and event.ban.kind is FloodKind.STRANGER and event.limit == 10
        assert event.ban.sent == 11
        assert g.dropped == 990 and event.ban.dropped == 990  # the eleventh included
        assert g.bans_begun[FloodKind.STRANGER] == 1
        assert g.banned(STRANGER, 100.0) and g.banned_count == 1

    def test_the_ban_holds_for_its_time_then_ends_once_with_its_toll(self) -> None:
        g = guard()
        send(g, STRANGER, 11, 0.0)
        g.take_events()
        assert send(g, STRANGER, 5, 299.9) == 0
        g.expire(299.9)
        assert g.take_events() == []
        g.expire(300.0)
        (ended,) = g.take_events()
        assert isinstance(ended, FloodBanEnded) and not ended.forgotten
        assert ended.ban.dropped == 6  # the eleventh and the five
        assert g.banned_count == 0
        assert send(g, STRANGER, 10, 300.5) == 10  # a fresh start

    def test_a_ban_run_out_ends_on_the_next_request_too(self) -> None:
        g = guard()
        send(g, STRANGER, 11, 0.0)
        g.take_events()
        assert g.admit(STRANGER, 301.0)
        assert [type(e) for e in g.take_events()] == [FloodBanEnded]

    def test_bans_end_in_the_order_they_began(self) -> None:
        g = guard()
        for i in range(5):
            send(g, f"198.51.100.{i}", 11, float(i))
        g.take_events()
        g.expire(302.5)
        assert [e.ban.host for e in g.take_events()] == ["198.51.100.0", "198.51.100.1", "198.51.100.2"]
        assert [b.host for b in g.bans()] == ["198.51.100.3", "198.51.100.4"]

    def test_lifted_by_an_operator(self) -> None:
        g = guard()
        send(g, STRANGER, 11, 0.0)
        assert g.lift(STRANGER) is not None
        assert g.admit(STRANGER, 1.0)
        assert g.lift(STRANGER) is None

    def test_as_dict_for_listings(self) -> None:
        g = guard()
        send(g, STRANGER, 13, 10.0)
        (ban,) = g.bans()
        assert ban.as_dict(110.0) == {
            "address": STRANGER,
            "kind": "stranger",
            "seconds_left": 200.0,
            "sent": 11,
            "dropped": 3,
        }


class TestKnown:
    def test_a_known_address_has_the_higher_limit(self) -> None:
        asked: list[str] = []

        def known(host: str) -> bool:
            asked.append(host)
            return host == DEVICE

        g = guard(known=known)
        assert send(g, DEVICE, 50, 0.0) == 50
        assert asked == [DEVICE]  # asked once, when the strangers' limit was passed
        assert send(g, DEVICE, 5, 0.1) == 0
        (event,) = g.take_events()
        assert isinstance(event, FloodThrottled)
        assert event.host == DEVICE and event.limit == 50 and event.since == 0.0
        assert g.bans_begun == {FloodKind.STRANGER: 0, FloodKind.KNOWN: 1}
        assert g.dropped == 5

    def test_a_known_address_is_throttled_never_banned(self) -> None:
        # a spoofer sending from a superior's (or a site router's) address must not buy it a ban
        g = guard(known=lambda host: host == DEVICE)
        assert send(g, DEVICE, 10_000, 0.0) == 50
        assert g.banned_count == 0 and not g.banned(DEVICE, 0.5)
        assert send(g, DEVICE, 1, 2.0) == 1  # the next window: the real peer is heard again
        assert g.bans_begun[FloodKind.KNOWN] == 1  # one event for the window, not one per drop
        assert len(g.take_events()) == 1

    def test_a_known_address_is_trusted_by_the_tcp_cap(self) -> None:
        g = guard(known=lambda host: host == DEVICE, exempt=parse_exempt(["10.0.0.0/8"]))
        assert g.trusted(DEVICE) and g.trusted("10.0.0.1") and not g.trusted(STRANGER)

    def test_a_stranger_keeps_the_lower_limit(self) -> None:
        g = guard(known=lambda host: host == DEVICE)
        assert send(g, STRANGER, 50, 0.0) == 10
        assert g.bans_begun[FloodKind.STRANGER] == 1

    def test_asked_again_in_each_window(self) -> None:
        asked: list[float] = []
        g = guard(known=lambda host: asked.append(0.0) is None)
        for window in range(3):
            send(g, DEVICE, 20, 2.0 * window)
        assert len(asked) == 3 and g.banned_count == 0


class TestExempt:
    def test_exempt_networks_are_never_limited(self) -> None:
        g = guard(exempt=parse_exempt(["10.0.0.0/8", "2001:db8::/32"]))
        assert send(g, "10.1.2.3", 100_000, 0.0) == 100_000
        assert send(g, "2001:db8::1", 1000, 0.0) == 1000
        assert g.banned_count == 0
        assert g.is_exempt("10.9.9.9") and not g.is_exempt(STRANGER)

    def test_others_still_are(self) -> None:
        g = guard(exempt=parse_exempt(["10.0.0.0/8"]))
        assert send(g, "11.0.0.1", 20, 0.0) == 10

    def test_ipv4_mapped_addresses_match_ipv4_networks(self) -> None:
        # a dual-stack socket names an IPv4 peer ::ffff:a.b.c.d
        g = guard(exempt=parse_exempt(["127.0.0.0/8"]))
        assert send(g, "::ffff:127.0.0.1", 100, 0.0) == 100
        assert send(g, "::ffff:198.51.100.7", 100, 0.0) == 10

    def test_an_address_that_is_not_one_is_a_stranger(self) -> None:
        g = guard(exempt=parse_exempt(["0.0.0.0/0"]))
        assert send(g, "not-an-address", 20, 0.0) == 10


class TestMemoryBound:
    def test_spoofed_addresses_keep_the_table_at_its_cap(self) -> None:
        g = guard(max_addresses=1000)
        for i in range(100_000):
            g.admit(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", i * 0.001)
        assert g.tracked == 1000
        assert g.banned_count == 0

    def test_the_oldest_window_is_forgotten_first(self) -> None:
        g = guard(max_addresses=3)
        send(g, "10.0.0.1", 9, 0.0)
        send(g, "10.0.0.2", 1, 0.1)
        send(g, "10.0.0.3", 1, 0.2)
        send(g, "10.0.0.1", 1, 2.5)  # a new window for .1: it is the newest now
        send(g, "10.0.0.4", 1, 2.6)  # pushes out .2
        assert send(g, "10.0.0.1", 9, 2.7) == 9  # its count survived: 10 in this window
        assert not g.admit("10.0.0.1", 2.8)

    def test_a_spoofing_flood_does_not_lift_a_ban(self) -> None:
        g = guard(max_addresses=100)
        send(g, STRANGER, 11, 0.0)
        for i in range(10_000):
            g.admit(f"10.0.{i >> 8 & 255}.{i & 255}", 1.0)
        assert not g.admit(STRANGER, 2.0)
        assert g.banned(STRANGER, 2.0)

    def test_past_the_cap_of_bans_the_oldest_goes_and_is_counted(self) -> None:
        g = guard(max_bans=3)
        for i in range(5):
            send(g, f"10.0.0.{i}", 11, float(i))
        assert g.banned_count == 3
        assert g.bans_forgotten == 2
        forgotten = [e.ban.host for e in g.take_events() if isinstance(e, FloodBanEnded)]
        assert forgotten == ["10.0.0.0", "10.0.0.1"]
        assert g.bans_begun[FloodKind.STRANGER] == 5


class TestThrottle:
    def test_one_line_per_kind_per_interval_and_the_count_held_back(self) -> None:
        t = Throttle(60.0)
        assert t.allow("parse", 0.0) == 0
        assert [t.allow("parse", 0.001 * i) for i in range(1, 20_000)] == [None] * 19_999
        assert t.allow("too-large", 1.0) == 0  # another kind has its own line
        assert t.allow("parse", 60.0) == 19_999  # the next line says how many were held back
        assert t.total_held == 19_999

    def test_a_kind_gone_quiet_is_summed_up(self) -> None:
        t = Throttle(60.0)
        t.allow("parse", 0.0)
        for _ in range(500):
            t.allow("parse", 1.0)
        assert t.summaries(59.0) == []
        assert t.summaries(60.0) == [("parse", 500)]
        assert t.summaries(200.0) == []
        assert t.allow("parse", 100.0) is None  # the summary was the line of its interval
        assert t.allow("parse", 120.0) == 1

    def test_everything_at_shutdown(self) -> None:
        t = Throttle(60.0)
        t.allow("parse", 0.0)
        t.allow("parse", 1.0)
        assert t.summaries(2.0, everything=True) == [("parse", 1)]

    def test_kinds_are_bounded(self) -> None:
        t = Throttle(1.0, max_kinds=10)
        for i in range(1000):
            t.allow(f"kind-{i}", float(i))
        assert len(t._last) <= 11


class TestConfig:
    def test_known_limit_below_limit_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="flood.known_limit.*not be smaller than flood.limit"):
            load_config(env={}, overrides={"flood.limit": "500", "flood.known_limit": "100"})
