"""Bans, last authentication failures and refusals (PROTOCOL.md §3.3; issue 11 defects 5 and 11), with a fake clock."""

from __future__ import annotations

from gb28181gw.gb.bans import BanList, RefusalLog, address_key, id_key
from gb28181gw.gb.model import Ban, Device
from gb28181gw.gb.registrar import Outcome, Registrar, RegistrarPolicy
from gb28181gw.sip.auth import Challenge, NonceStore, authorization_for
from gb28181gw.sip.endpoint import Peer
from gb28181gw.sip.message import Request, parse_message
from tests.helpers import REGISTER, FakeClock

ID = "34020000001320000001"
OTHER = "34020000001320000002"
CAMERA = Peer("UDP", "10.0.0.5", 5060)
STRANGER = Peer("UDP", "10.6.6.6", 5060)
URI = "sip:34020000002000000001@3402000000"
#: wall clock = monotonic clock + this (the registrar is given both)
WALL = 1_714_970_000.0


def registrar(**policy: object) -> Registrar:
    p = RegistrarPolicy(domain="3402000000", **policy)  # type: ignore[arg-type]
    return Registrar(p, NonceStore(realm="3402000000", token=lambda n: "ab" * n))


def req(device_id: str = ID) -> Request:
    msg = parse_message(REGISTER.replace(b"34020000001320000001", device_id.encode()))
    assert isinstance(msg, Request)
    return msg


def attempt(
    r: Registrar, clock: FakeClock, peer: Peer, password: str, device_id: str = ID, device: Device | None = None
) -> tuple[int, str]:
    """One REGISTER and, if challenged, its answer with ``password``: the final status and reason."""
    first = r.handle(req(device_id), peer, device, now=clock.now, epoch=WALL + clock.now, tag="t")
    if first.response.status != 401:
        return first.response.status, first.reason
    ch = Challenge.parse(first.response.headers["www-authenticate"])
    second = req(device_id)
    creds = authorization_for(ch, method="REGISTER", uri=URI, username=device_id, password=password)
    second.headers.add("Authorization", creds.serialize())
    result = r.handle(second, peer, device, now=clock.now, epoch=WALL + clock.now, tag="t")
    return result.response.status, result.reason


class TestBanRecords:
    """A ban says what, who, from where, since and until when, and why."""

    def test_five_wrong_passwords_make_two_bans_that_say_everything(self) -> None:
        r, clock = registrar(password="12345678"), FakeClock(100.0)
        for _ in range(5):
            clock.advance(1)
            attempt(r, clock, CAMERA, "wrong")
        bans = {b.key: b for b in r.bans.active(clock.now)}
        assert set(bans) == {address_key("10.0.0.5"), id_key(ID, "10.0.0.5")}
        own = bans[id_key(ID, "10.0.0.5")]
        assert (own.address, own.device_id, own.failures) == ("10.0.0.5", ID, 5)
        assert own.since == WALL + 105.0 and own.until == WALL + 105.0 + 600.0
        assert "5 wrong passwords within 300 s" in own.reason
        assert bans[address_key("10.0.0.5")].device_id == ID  # the ID that completed it
        assert {b.key for b in r.bans.take_added()} == set(bans)
        assert r.bans.take_added() == []  # the outbox empties

    def test_a_refused_attempt_is_counted_on_the_ban(self) -> None:
        r, clock = registrar(password="12345678", max_auth_failures=2), FakeClock()
        attempt(r, clock, CAMERA, "wrong")
        attempt(r, clock, CAMERA, "wrong")
        for _ in range(3):
            assert attempt(r, clock, CAMERA, "12345678") == (403, "banned")
        assert r.bans.get(address_key("10.0.0.5"), clock.now).attempts == 3  # type: ignore[union-attr]

    def test_the_last_failure_is_remembered_per_id_with_address_and_reason(self) -> None:
        r, clock = registrar(password="12345678"), FakeClock()
        assert r.bans.last_failure(ID) is None
        attempt(r, clock, CAMERA, "wrong")
        clock.advance(7)
        attempt(r, clock, STRANGER, "guess")
        failure = r.bans.last_failure(ID)
        assert failure is not None and (failure.at, failure.address, failure.reason) == (
            WALL + clock.now,
            "10.6.6.6",
            "wrong password",
        )
        assert r.bans.last_failure(OTHER) is None

    def test_of_device_finds_its_own_bans_and_its_addresss(self) -> None:
        r, clock = registrar(password="12345678", max_auth_failures=2), FakeClock()
        for _ in range(2):
            attempt(r, clock, STRANGER, "guess", device_id=OTHER)  # bans 10.6.6.6, completed by OTHER
        assert r.bans.of_device(ID, "10.0.0.5", clock.now) == []
        # ID now registers from the stranger's address: that address's ban refuses it too
        assert [b.key for b in r.bans.of_device(ID, "10.6.6.6", clock.now)] == [address_key("10.6.6.6")]
        assert {b.key for b in r.bans.of_device(OTHER, "", clock.now)} == {
            address_key("10.6.6.6"),
            id_key(OTHER, "10.6.6.6"),
        }
        assert r.bans.of_device(OTHER, "", clock.now + 601) == []  # ended
        # of two ending together, its own ID ban comes last (what `device show` picks)
        assert r.bans.of_device(OTHER, "10.6.6.6", clock.now)[-1].key == id_key(OTHER, "10.6.6.6")


class TestLifting:
    def test_lift_one_key(self) -> None:
        r, clock = registrar(password="12345678", max_auth_failures=2), FakeClock()
        attempt(r, clock, CAMERA, "wrong")
        attempt(r, clock, CAMERA, "wrong")
        assert r.bans.lift(id_key(ID, "10.0.0.5")) is not None
        assert r.bans.lift(id_key(ID, "10.0.0.5")) is None
        assert attempt(r, clock, CAMERA, "12345678")[1] == "banned"  # the address ban is still on
        assert r.bans.lift(address_key("10.0.0.5")) is not None
        assert attempt(r, clock, CAMERA, "12345678") == (200, "ok")

    def test_lift_device_lifts_it_from_every_address_and_the_address_bans_that_came_with_it(self) -> None:
        r, clock = registrar(password="12345678", max_auth_failures=2), FakeClock()
        for peer in (CAMERA, STRANGER):
            attempt(r, clock, peer, "wrong")
            attempt(r, clock, peer, "wrong")
        for _ in range(2):
            attempt(r, clock, Peer("UDP", "10.7.7.7", 5060), "x", device_id=OTHER)
        lifted = {b.key for b in r.bans.lift_device(ID)}
        assert lifted == {id_key(ID, "10.0.0.5"), address_key("10.0.0.5"), id_key(ID, "10.6.6.6"),
                          address_key("10.6.6.6")}  # fmt: skip
        assert [b.device_id for b in r.bans.active(clock.now)] == [OTHER, OTHER]  # another device's stay
        assert attempt(r, clock, CAMERA, "12345678") == (200, "ok")

    def test_lift_device_forgets_its_failures_so_the_next_wrong_password_does_not_ban_at_once(self) -> None:
        r, clock = registrar(password="12345678", max_auth_failures=3), FakeClock()
        attempt(r, clock, CAMERA, "wrong")
        attempt(r, clock, CAMERA, "wrong")
        assert r.bans.lift_device(ID) == []  # nothing banned yet, but the counts go
        assert attempt(r, clock, CAMERA, "wrong") == (401, "bad-password")
        assert attempt(r, clock, CAMERA, "wrong") == (401, "bad-password")


class TestBounds:
    """Hostile input: everything is bounded and no active ban is ever dropped (issue 10)."""

    def test_restore_keeps_active_bans_drops_ended_and_caps_them_at_ban_seconds(self) -> None:
        bans = BanList(limit=2, window=60.0, ban=600.0)
        epoch, now = WALL, 50.0
        stored = [
            Ban("ip:10.0.0.1", "10.0.0.1", ID, epoch - 100, epoch + 500, "r", 5),
            Ban("ip:10.0.0.2", "10.0.0.2", "", epoch - 700, epoch - 100, "r", 5),  # ended
            Ban("ip:10.0.0.3", "10.0.0.3", "", epoch, epoch + 86400, "r", 5),  # ban_seconds shrank
        ]
        ended = bans.restore(stored, now=now, epoch=epoch)
        assert [b.key for b in ended] == ["ip:10.0.0.2"]
        assert [b.key for b in bans.active(now)] == ["ip:10.0.0.1", "ip:10.0.0.3"]
        assert bans.banned("ip:10.0.0.1", now) == 500.0 and bans.banned("ip:10.0.0.3", now) == 600.0
        assert bans.get("ip:10.0.0.3", now).until == epoch + 600  # type: ignore[union-attr]
        assert bans.of_device(ID, "", now)[0].key == "ip:10.0.0.1"
        assert bans.active(now + 601) == [] and bans.of_device(ID, "", now + 601) == []
        assert not bans._by_id  # the index empties with the bans

    def test_bans_past_max_bans_refuse_but_are_not_remembered(self) -> None:
        bans = BanList(limit=1, window=60.0, ban=600.0, max_bans=10)
        assert all(bans.fail(f"ip:10.1.0.{i}", 1.0, device_id=f"{i:020d}") for i in range(50))
        assert len(bans.active(2.0)) == 10 and bans.bans == 50
        assert len(bans.take_added()) == 10 and len(bans._by_id) == 10

    def test_last_failures_are_bounded(self) -> None:
        bans = BanList(limit=5, window=60.0, ban=600.0, max_keys=100)
        for i in range(10_000):
            bans.note_failure(f"{i:020d}", "10.0.0.1", "wrong password", float(i))
        assert len(bans._last_failure) == 100 and bans.last_failure(f"{9_999:020d}") is not None


class TestRefusals:
    """Who keeps knocking: refused IDs by address, bounded against made-up IDs (issue 11 defect 11)."""

    def test_refusals_are_counted_per_id_and_address_with_the_last_reason(self) -> None:
        r, clock = registrar(require_provisioned=True), FakeClock(100.0)
        for _ in range(3):
            clock.advance(10)
            assert attempt(r, clock, CAMERA, "") == (403, "not-provisioned")
        attempt(r, clock, STRANGER, "")
        (stranger, camera) = r.refused.entries()
        assert (camera.device_id, camera.address, camera.reason, camera.count) == (ID, "10.0.0.5", "not-provisioned", 3)
        assert (camera.first_seen, camera.last_seen) == (WALL + 110.0, WALL + 130.0)
        assert "has not been added" in camera.detail
        assert stranger.address == "10.6.6.6" and stranger.count == 1

    def test_a_challenge_is_no_refusal_but_a_wrong_password_is(self) -> None:
        r, clock = registrar(password="12345678"), FakeClock()
        r.handle(req(), CAMERA, None, now=clock.now, epoch=WALL, tag="t")
        assert len(r.refused) == 0
        attempt(r, clock, CAMERA, "wrong")
        assert [(e.reason, e.count) for e in r.refused.entries()] == [("bad-password", 1)]

    def test_a_device_that_gets_in_is_no_longer_knocking(self) -> None:
        r, clock = registrar(password="12345678"), FakeClock()
        attempt(r, clock, CAMERA, "wrong")
        attempt(r, clock, STRANGER, "guess")
        assert attempt(r, clock, CAMERA, "12345678") == (200, "ok")
        assert [e.address for e in r.refused.entries()] == ["10.6.6.6"]

    def test_a_million_made_up_ids_cost_a_bounded_log(self) -> None:
        log = RefusalLog(max_entries=1000)
        for i in range(100_000):
            log.record(f"3402000000132{i:07d}", "10.6.6.6", "not-registered", "x" * 1000, float(i))
        log.record("9" * 5000, "10.6.6.6", "invalid-id", "y", 1.0)
        assert len(log) == 1000 and log.forgotten == 100_000 - 999
        newest = log.entries()[0]
        assert len(newest.device_id) == 40 and newest.reason == "invalid-id"
        assert all(len(e.detail) <= 200 for e in log.entries())

    def test_rejected_outcomes_only(self) -> None:
        r, clock = registrar(), FakeClock()
        result = r.handle(req(), CAMERA, None, now=clock.now, epoch=WALL, tag="t")
        assert result.outcome is Outcome.REGISTERED and len(r.refused) == 0
        bad = req("3402000000132000000X")
        assert r.handle(bad, CAMERA, None, now=clock.now, epoch=WALL, tag="t").reason == "invalid-id"
        assert [(e.device_id, e.reason) for e in r.refused.entries()] == [("3402000000132000000X", "invalid-id")]
