"""REGISTER policy (GB/T 28181 §9.1, PROTOCOL.md §3) on the sans-I/O registrar."""

from __future__ import annotations

import datetime as dt
import ipaddress
import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181gw.gb import model
from gb28181gw.gb.devices import DeviceEvent, Output
from gb28181gw.gb.model import Device, DeviceState, Transport
from gb28181gw.gb.registrar import (
    MAX_PATH,
    PERIODS_SHARED,
    BanList,
    DateFormat,
    Outcome,
    Registrar,
    RegistrarPolicy,
    format_date,
    policy_address,
)
from gb28181gw.sip.auth import Challenge, NonceStore, authorization_for
from gb28181gw.sip.endpoint import Peer
from gb28181gw.sip.message import Request, parse_message
from tests.helpers import REGISTER

PEER = Peer("UDP", "127.0.0.1", 5061)
# 2024-05-06T12:34:56.789 in Beijing time
EPOCH = 1714970096.789
URI = "sip:34020000002000000001@3402000000"


def registrar(**policy: object) -> Registrar:
    p = RegistrarPolicy(domain="3402000000", **policy)  # type: ignore[arg-type]
    return Registrar(p, NonceStore(realm="3402000000", token=lambda n: "ab" * n))


def req(data: bytes = REGISTER, **replace: str) -> Request:
    for old, new in replace.items():
        data = data.replace(old.encode(), new.encode())
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def handle(r: Registrar, request: Request, device: Device | None = None, now: float = 100.0, peer: Peer = PEER):  # type: ignore[no-untyped-def]
    return r.handle(request, peer, device, now=now, epoch=EPOCH + now - 100.0, tag="t")


def with_auth(
    request: Request, challenge_response, password: str = "12345678", username: str = "34020000001320000001"
) -> Request:  # type: ignore[no-untyped-def]
    ch = Challenge.parse(challenge_response.headers["www-authenticate"])
    creds = authorization_for(ch, method="REGISTER", uri=URI, username=username, password=password)
    request.headers.add("Authorization", creds.serialize())
    return request


def test_open_registration_without_password() -> None:
    result = handle(registrar(), req())
    assert result.outcome is Outcome.REGISTERED
    resp = result.response
    assert resp.status == 200
    assert resp.headers["date"] == "2024-05-06T12:34:56.789"
    assert resp.headers["expires"] == "3600"
    assert resp.headers["contact"] == "<sip:34020000001320000001@127.0.0.1:5061>;expires=3600"
    assert resp.headers["x-gb-ver"] == "3.0"
    d = result.device
    assert d is not None and d.registered and d.online
    assert (d.transport, d.host, d.port) == ("UDP", "127.0.0.1", 5061)
    assert d.user_agent == "IP Camera" and d.gb_version == "3.0"
    assert d.expires_at == d.registered_at + 3600


def test_digest_flow() -> None:
    r = registrar(password="12345678")
    first = handle(r, req())
    assert first.outcome is Outcome.CHALLENGED and first.response.status == 401
    assert 'realm="3402000000"' in first.response.headers["www-authenticate"]
    assert "date" not in first.response.headers
    second = handle(r, with_auth(req(), first.response))
    assert second.outcome is Outcome.REGISTERED and second.response.status == 200


def test_username_may_differ_from_the_device_id() -> None:
    r = registrar(password="12345678")
    first = handle(r, req())
    assert handle(r, with_auth(req(), first.response, username="admin")).response.status == 200


def test_per_device_password_overrides_the_global_one() -> None:
    r = registrar(password="global")
    dev = Device("34020000001320000001", password="own-pass")
    first = handle(r, req(), dev)
    assert handle(r, with_auth(req(), first.response, "own-pass"), dev).response.status == 200
    first = handle(r, req(), dev)
    assert handle(r, with_auth(req(), first.response, "global"), dev).response.status == 401


def test_wrong_password_is_401_until_the_limit_then_403_and_banned() -> None:
    r = registrar(password="12345678", max_auth_failures=3, ban_seconds=60)
    statuses = []
    for i in range(3):
        ch = handle(r, req(), now=100.0 + i)
        statuses.append(handle(r, with_auth(req(), ch.response, "bad"), now=100.0 + i).response.status)
    assert statuses == [401, 401, 403]
    # banned now, even with the right password
    result = handle(r, req(), now=110.0)
    assert result.response.status == 403 and result.reason == "banned"
    assert "retry in" in result.response.headers["warning"]
    # and free again after the ban
    assert handle(r, req(), now=200.0).response.status == 401


class TestNoLockout:
    """A stranger cannot lock a device out (issue 10, defect 4)."""

    STRANGER = Peer("UDP", "10.6.6.6", 5060)

    def guess(self, r: Registrar, peer: Peer, now: float, password: str = "bad") -> int:
        ch = handle(r, req(), now=now, peer=peer)
        if ch.response.status != 401:
            return int(ch.response.status)
        return int(handle(r, with_auth(req(), ch.response, password), now=now, peer=peer).response.status)

    def test_a_strangers_wrong_passwords_ban_the_stranger_not_the_device(self) -> None:
        r = registrar(password="12345678", max_auth_failures=3, ban_seconds=600)
        assert [self.guess(r, self.STRANGER, 100.0 + i) for i in range(4)] == [401, 401, 403, 403]
        # the real camera at its own address registers at once
        assert self.guess(r, PEER, 105.0, password="12345678") == 200

    def test_a_wrong_realm_guesses_nothing_and_counts_nothing(self) -> None:
        r = registrar(password="12345678", max_auth_failures=2, ban_seconds=600)
        bogus = 'Digest username="34020000001320000001", realm="9999999999", nonce="x", uri="sip:x", response="00"'
        for i in range(50):
            result = handle(r, self.with_header(bogus), now=100.0 + i, peer=PEER)
            assert result.response.status == 403 and result.reason == "wrong-realm"
        assert len(r.bans) == 0 and r.bans.bans == 0
        assert self.guess(r, PEER, 200.0, password="12345678") == 200

    @staticmethod
    def with_header(authorization: str) -> Request:
        request = req()
        request.headers.add("Authorization", authorization)
        return request

    def test_the_ban_table_is_bounded_and_never_drops_an_active_ban(self) -> None:
        bans = BanList(limit=2, window=60.0, ban=600.0, max_keys=100)
        assert bans.fail("ip:10.0.0.1", 0.0) is False and bans.fail("ip:10.0.0.1", 1.0) is True
        for i in range(10_000):  # a flood of one-off failures from everywhere
            bans.fail(f"ip:10.1.{i // 256}.{i % 256}", 2.0)
        assert len(bans) <= 101
        assert bans.banned("ip:10.0.0.1", 3.0) > 0  # still banned
        assert bans.banned("ip:10.0.0.1", 602.0) == 0  # until it ends
        bans.fail("ip:10.2.0.1", 700.0)
        assert "ip:10.0.0.1" not in bans._bans  # and then it is forgotten


@pytest.mark.parametrize(
    ("device_id", "reason"),
    [
        ("34020000002000000001", "own-id"),
        ("00000000000000000000", "invalid-id"),
        ("34020000002000000099", "platform-id"),
    ],
)
def test_own_zero_and_platform_ids_do_not_register_as_devices(device_id: str, reason: str) -> None:
    r = registrar(gateway_id="34020000002000000001")
    result = handle(r, req(**{"34020000001320000001": device_id}))
    assert (result.response.status, result.reason, result.device) == (403, reason, None)
    allowed = registrar(gateway_id="34020000002000000001", accept_platforms=True)
    assert handle(allowed, req(**{"34020000001320000001": "34020000002000000099"})).response.status == 200


def test_replayed_nonce_is_401_stale() -> None:
    r = registrar(password="12345678")
    ch = handle(r, req())
    signed = with_auth(req(), ch.response)
    assert handle(r, signed).response.status == 200
    replay = handle(r, signed)
    assert replay.response.status == 401 and "stale=true" in replay.response.headers["www-authenticate"]


def test_expired_nonce_is_401_stale() -> None:
    r = registrar(password="12345678")
    ch = handle(r, req(), now=100.0)
    late = handle(r, with_auth(req(), ch.response), now=100.0 + 301)
    assert late.response.status == 401 and "stale=true" in late.response.headers["www-authenticate"]


def test_malformed_authorization_is_400() -> None:
    r = registrar(password="12345678")
    bad = req()
    bad.headers.add("Authorization", "Digest garbage")
    assert handle(r, bad).response.status == 400


@pytest.mark.parametrize(
    ("old", "new", "status", "reason"),
    [
        ("<sip:34020000001320000001@3402000000>;tag", "<sip:3402000000132000000X@3402000000>;tag", 403, "invalid-id"),
        ("<sip:34020000001320000001@3402000000>;tag", "<sip:340200000013200@3402000000>;tag", 403, "invalid-id"),
        (
            "REGISTER sip:34020000002000000001@3402000000",
            "REGISTER sip:34010000002000000001@3401000000",
            403,
            "foreign-domain",
        ),
        ("Contact: <sip:34020000001320000001@127.0.0.1:5061>\r\n", "", 400, "no-contact"),
        ("Expires: 3600", "Expires: forever", 400, "bad-expires"),
        ("Expires: 3600", "Expires: 99999999999999", 400, "bad-expires"),
        ("Expires: 3600", "Expires: -1", 400, "bad-expires"),
        ("Expires: 3600", "Expires: 10", 423, "interval-too-brief"),
        ("Contact: <sip:34020000001320000001@127.0.0.1:5061>", "Contact: <sip:3402@127.0.0.1:5061", 400, "bad-contact"),
    ],
)
def test_bad_registers_are_answered_with_the_problem_named(old: str, new: str, status: int, reason: str) -> None:
    result = handle(registrar(), req(**{old: new}))
    assert result.response.status == status
    assert result.reason == reason
    assert result.device is None
    assert result.response.headers["warning"].startswith("399 gb28181gw ")
    if status == 423:
        assert result.response.headers["min-expires"] == "60"


def test_strict_ids() -> None:
    odd = {"<sip:34020000001320000001@3402000000>;tag": "<sip:99020000001320000001@3402000000>;tag"}
    assert handle(registrar(), req(**odd)).response.status == 200
    assert handle(registrar(strict_ids=True), req(**odd)).response.status == 403


def test_expires_from_contact_param_then_default_then_capped() -> None:
    r = registrar(expires_max=7200)
    no_header = req(**{"Expires: 3600\r\n": ""})
    assert handle(r, no_header).response.headers["expires"] == "3600"
    in_contact = req(**{"Expires: 3600\r\n": "", "127.0.0.1:5061>": "127.0.0.1:5061>;expires=1800"})
    assert handle(r, in_contact).response.headers["expires"] == "1800"
    assert handle(r, req(**{"Expires: 3600": "Expires: 86400"})).response.headers["expires"] == "7200"


def test_devices_granted_one_period_share_its_int_and_any_period_is_kept() -> None:
    # issue 16: an int above 256 is 28 bytes of its own; each device parsed its own 3600
    r = registrar(expires_max=100_000)
    first, second = (handle(r, req(**{"Expires: 3600": f"Expires: {3000 + 600}"})).device for _ in range(2))
    assert first is not None and second is not None
    assert first.expires == second.expires == 3600 and r._periods[3600] == 3600
    # compiled by mypyc, a record holds its int fields unboxed (no object to share)
    assert not model.__file__.endswith(".py") or first.expires is second.expires
    # past the first PERIODS_SHARED values a device keeps its own, granted as asked all the same
    for period in range(4000, 4000 + PERIODS_SHARED + 3):
        dev = handle(r, req(**{"Expires: 3600": f"Expires: {period}"})).device
        assert dev is not None and dev.expires == period
        assert dev.expires_at == pytest.approx(EPOCH + period)
    assert len(r._periods) == PERIODS_SHARED


def test_unregister() -> None:
    r = registrar()
    dev = handle(r, req()).device
    result = handle(r, req(**{"Expires: 3600": "Expires: 0"}), dev)
    assert result.outcome is Outcome.UNREGISTERED and result.response.status == 200
    assert result.device is not None and not result.device.registered and not result.device.online
    star = req(**{"Contact: <sip:34020000001320000001@127.0.0.1:5061>": "Contact: *", "Expires: 3600": "Expires: 0"})
    assert handle(r, star, dev).outcome is Outcome.UNREGISTERED
    bad_star = req(**{"Contact: <sip:34020000001320000001@127.0.0.1:5061>": "Contact: *"})
    assert handle(r, bad_star, dev).response.status == 400


def test_refresh_and_new_address() -> None:
    r = registrar()
    dev = handle(r, req()).device
    again = handle(r, req(), dev, now=200.0)
    assert again.outcome is Outcome.REFRESHED and not again.address_changed
    moved = handle(r, req(), again.device, now=300.0, peer=Peer("UDP", "10.1.2.3", 40000))
    assert moved.address_changed
    assert moved.device is not None and (moved.device.host, moved.device.port) == ("10.1.2.3", 40000)


class TestPath:
    """RFC 3327: a proxy in front (a dispatcher before several nodes) puts a Path on the REGISTER."""

    FRONT = "<sip:10.0.0.9:5060;lr;received=sip:192.168.1.20:5061>"
    WITH_PATH = {"Max-Forwards: 70": f"Path: {FRONT}\r\nPath: <sip:10.0.0.8;lr>\r\nMax-Forwards: 70"}

    def test_the_path_is_kept_with_the_device_in_order(self) -> None:
        result = handle(registrar(), req(**self.WITH_PATH), peer=Peer("UDP", "10.0.0.9", 5060))
        d = result.device
        assert d is not None and d.path == f"{self.FRONT}, <sip:10.0.0.8;lr>"
        assert (d.host, d.port) == ("10.0.0.9", 5060)  # requests still go where it came from: the front
        assert "path" not in result.response.headers  # the UA did not say it supports the extension

    def test_a_ua_that_supports_path_is_told_the_path_kept(self) -> None:
        supported = {**self.WITH_PATH}
        supported["Max-Forwards: 70"] = supported["Max-Forwards: 70"] + "\r\nSupported: path"
        result = handle(registrar(), req(**supported))
        assert result.response.headers.get_all("path") == [self.FRONT, "<sip:10.0.0.8;lr>"]

    def test_a_registration_without_path_clears_the_one_before(self) -> None:
        r = registrar()
        dev = handle(r, req(**self.WITH_PATH)).device
        assert dev is not None and dev.path
        direct = handle(r, req(), dev, now=200.0).device
        assert direct is not None and direct.path == ""

    def test_a_path_with_commas_in_one_header_is_kept_whole(self) -> None:
        both = {"Max-Forwards: 70": f"Path: {self.FRONT}, <sip:10.0.0.8;lr>\r\nMax-Forwards: 70"}
        d = handle(registrar(), req(**both)).device
        assert d is not None and d.path == f"{self.FRONT}, <sip:10.0.0.8;lr>"

    def test_a_path_longer_than_any_front_puts_is_refused_not_kept(self) -> None:
        # kept with the device (memory, both stores) and sent as Route on every request to it:
        # a REGISTER of 100 Path headers was kept whole (42 KB), past a UDP request's room
        many = "\r\n".join(f"Path: <sip:10.0.0.{i}:5060;lr;x={'a' * 400}>" for i in range(100))
        result = handle(registrar(), req(**{"Max-Forwards: 70": many + "\r\nMax-Forwards: 70"}))
        assert (result.response.status, result.reason) == (400, "path-too-long")
        assert result.device is None
        assert str(MAX_PATH) in result.response.headers["warning"]
        fits = {"Max-Forwards: 70": f"Path: <sip:10.0.0.9;lr;x={'a' * (MAX_PATH - 40)}>\r\nMax-Forwards: 70"}
        assert handle(registrar(), req(**fits)).response.status == 200

    def test_a_malformed_path_is_400_naming_it(self) -> None:
        # an unterminated quote made splitting the list raise out of handle(): a 500 and a traceback
        bad = {"Max-Forwards: 70": 'Path: "front <sip:10.0.0.9;lr>\r\nMax-Forwards: 70'}
        result = handle(registrar(), req(**bad))
        assert (result.response.status, result.reason) == (400, "bad-path")
        assert result.device is None
        assert "Path" in result.response.headers["warning"]


FRONT_PEER = Peer("UDP", "10.0.0.9", 5060)
TRUSTED = (ipaddress.ip_network("10.0.0.0/29"), ipaddress.ip_network("10.0.0.9/32"))


def via_front(received: str = "sip:192.168.1.20:5061", *, device_id: str = "34020000001320000001") -> Request:
    """The REGISTER as a front puts it: its own Path on top, naming where the device's came from."""
    path = f"Path: <sip:10.0.0.9:5060;lr;received={received}>\r\n"
    return req(**{"Max-Forwards: 70": path + "Max-Forwards: 70", "34020000001320000001": device_id})


class TestPolicyAddress:
    """Which address the policy judges a REGISTER by (:func:`policy_address`): the source's, or,
    from a trusted proxy, the device's address its Path names (RFC 3327; Kamailio's
    ``add_path_received()``)."""

    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            ("<sip:10.0.0.9:5060;lr;received=sip:192.168.1.20:5061>", "192.168.1.20"),  # Kamailio over UDP
            ("<sip:10.0.0.9;lr;received=sip:192.168.1.20:5061%3Btransport%3Dtcp>", "192.168.1.20"),  # and TCP
            ("<sip:10.0.0.9;lr;received=sip:[2001:db8::7]:5061>", "2001:db8::7"),  # an IPv6 device
            ("<sip:10.0.0.9;lr;received=sip:%5B2001:DB8:0:0::7%5D:5061>", "2001:db8::7"),  # escaped, normalised
            ("<sip:flow@10.0.0.9;lr;received=sip:192.168.1.20:5061;ob>", "192.168.1.20"),  # outbound's flow token
            ('<sip:10.0.0.9;lr;Received="sip:192.168.1.20:5061">', "192.168.1.20"),  # quoted, any case
            ("<sip:10.0.0.9;lr;received=192.168.1.20>", "192.168.1.20"),  # an address alone
            ("<sip:10.0.0.9;lr;received=2001:db8::7>", "2001:db8::7"),
            ("<sip:10.0.0.9;lr;received=sip:192.168.1.20:5061>, <sip:10.0.0.8;lr>", "192.168.1.20"),
            # no usable received: the source, as without a proxy
            ("<sip:10.0.0.9;lr>", "10.0.0.9"),
            ("<sip:10.0.0.9;lr;received=sip:camera.example:5061>", "10.0.0.9"),
            ("<sip:10.0.0.9;lr;received=>", "10.0.0.9"),
            ("<sip:10.0.0.9;lr;received>", "10.0.0.9"),
            ("<sip:10.0.0.9;lr;received=sip:999.1.1.1:5061>", "10.0.0.9"),
            ("<sip:10.0.0.9;lr;received=sip:[2001:db8::7:5061>", "10.0.0.9"),
            ("<sip:10.0.0.9;lr;received=sip:%ZZ1.2.3.4>", "10.0.0.9"),
            ("<sip:10.0.0.9;lr>;received=sip:192.168.1.20:5061", "10.0.0.9"),  # a header parameter: not the URI's
            # only the first value is the proxy's own: one further down is the device's to write
            ("<sip:10.0.0.9;lr>, <sip:10.0.0.8;lr;received=sip:192.168.1.20:5061>", "10.0.0.9"),
            ('"front <sip:10.0.0.9;lr;received=sip:192.168.1.20:5061>', "10.0.0.9"),  # malformed: refused later
        ],
    )
    def test_a_trusted_proxys_received_names_the_address(self, path: str, expected: str) -> None:
        request = req(**{"Max-Forwards: 70": f"Path: {path}\r\nMax-Forwards: 70"})
        assert policy_address(request, "10.0.0.9", TRUSTED) == expected

    def test_from_any_other_source_or_with_no_path_the_source(self) -> None:
        request = via_front()
        assert policy_address(request, "10.0.0.10", TRUSTED) == "10.0.0.10"  # not a trusted proxy
        assert policy_address(request, "10.0.0.9", ()) == "10.0.0.9"  # none trusted (the default)
        assert policy_address(request, "not-an-ip", TRUSTED) == "not-an-ip"
        assert policy_address(req(), "10.0.0.9", TRUSTED) == "10.0.0.9"  # no Path

    def test_an_ipv6_front(self) -> None:
        trusted = (ipaddress.ip_network("2001:db8:f::/64"),)
        assert policy_address(via_front(), "2001:db8:f::9", trusted) == "192.168.1.20"
        assert policy_address(via_front(), "2001:db8:e::9", trusted) == "2001:db8:e::9"


class TestTrustedProxy:
    """Behind a SIP front every device's REGISTER comes from the front's address: judged by it, one
    camera with a wrong password banned the front, and every device behind it with it."""

    A, B = "192.168.1.20", "192.168.1.21"
    OTHER_ID = "34020000001320000002"

    @staticmethod
    def attempt(r: Registrar, request: Request, peer: Peer, now: float, password: str) -> int:
        """One registration: the challenge, then the answer with ``password``: the final status."""
        ch = handle(r, request, now=now, peer=peer)
        if ch.response.status != 401:
            return int(ch.response.status)
        again = parse_message(request.serialize())  # the same REGISTER again, now with credentials
        assert isinstance(again, Request)
        return int(handle(r, with_auth(again, ch.response, password), now=now, peer=peer).response.status)

    def test_wrong_passwords_through_the_front_ban_the_device_address_not_the_fronts(self) -> None:
        r = registrar(password="12345678", max_auth_failures=5, ban_seconds=600, trusted_proxies=TRUSTED)
        bad = [self.attempt(r, via_front(f"sip:{self.A}:5061"), FRONT_PEER, 100.0 + i, "bad") for i in range(6)]
        assert bad == [401, 401, 401, 401, 403, 403]
        assert {b.key for b in r.bans.active(110.0)} == {f"ip:{self.A}", f"id:34020000001320000001@{self.A}"}
        assert {b.address for b in r.bans.active(110.0)} == {self.A}
        assert r.bans.banned("ip:10.0.0.9", 110.0) == 0
        failure = r.bans.last_failure("34020000001320000001")
        assert failure is not None and failure.address == self.A
        assert [(e.device_id, e.address) for e in r.refused.entries()] == [("34020000001320000001", self.A)]
        # another device behind the same front registers, and so does another ID from the front's
        # own address; the banned device's address stays banned, whichever ID it claims
        ok = self.attempt(r, via_front(f"sip:{self.B}:5061", device_id=self.OTHER_ID), FRONT_PEER, 111.0, "12345678")
        assert ok == 200
        assert self.attempt(r, via_front(f"sip:{self.A}:5062"), FRONT_PEER, 112.0, "12345678") == 403
        other = self.attempt(r, via_front(f"sip:{self.A}:5063", device_id=self.OTHER_ID), FRONT_PEER, 113.0, "12345678")
        assert other == 403

    def test_requests_still_go_to_the_front_and_the_nonce_is_the_fronts(self) -> None:
        r = registrar(password="12345678", trusted_proxies=TRUSTED)
        ch = handle(r, via_front(), peer=FRONT_PEER)
        # the challenge went to the front: answered from anywhere else, the nonce is not this one's
        elsewhere = handle(r, with_auth(via_front(), ch.response), peer=Peer("UDP", self.A, 5061))
        assert (elsewhere.response.status, elsewhere.reason) == (401, "stale-nonce")
        ch = handle(r, via_front(), peer=FRONT_PEER)
        result = handle(r, with_auth(via_front(), ch.response), peer=FRONT_PEER)
        assert result.response.status == 200 and result.device is not None
        assert (result.device.host, result.device.port) == ("10.0.0.9", 5060)
        assert result.device.path == f"<sip:10.0.0.9:5060;lr;received=sip:{self.A}:5061>"

    def test_a_forged_path_from_an_untrusted_source_is_banned_under_its_source(self) -> None:
        r = registrar(password="12345678", max_auth_failures=3, ban_seconds=600, trusted_proxies=TRUSTED)
        stranger = Peer("UDP", "10.6.6.6", 5060)
        forged = [self.attempt(r, via_front(f"sip:{self.B}:5061"), stranger, 100.0 + i, "bad") for i in range(3)]
        assert forged == [401, 401, 403]
        assert {b.key for b in r.bans.active(110.0)} == {"ip:10.6.6.6", "id:34020000001320000001@10.6.6.6"}
        assert [e.address for e in r.refused.entries()] == ["10.6.6.6"]
        # the address it named is not banned: the device there registers through the front
        assert self.attempt(r, via_front(f"sip:{self.B}:5061"), FRONT_PEER, 111.0, "12345678") == 200

    def test_success_through_the_front_forgets_the_devices_failures(self) -> None:
        r = registrar(password="12345678", max_auth_failures=3, ban_seconds=600, trusted_proxies=TRUSTED)
        for start in (100.0, 110.0):  # two failures, then the right password: the count starts again
            for i in range(2):
                assert self.attempt(r, via_front(), FRONT_PEER, start + i, "bad") == 401
            assert self.attempt(r, via_front(), FRONT_PEER, start + 5, "12345678") == 200
        assert r.bans.active(120.0) == [] and not r.bans.failing
        # unregistering forgets them too
        for i in range(2):
            assert self.attempt(r, via_front(), FRONT_PEER, 130.0 + i, "bad") == 401
        gone = via_front()
        gone.headers.set("Expires", "0")
        assert self.attempt(r, gone, FRONT_PEER, 135.0, "12345678") == 200
        assert not r.bans.failing

    def test_allow_and_deny_networks_judge_the_devices_address(self) -> None:
        cameras = (ipaddress.ip_network("192.168.1.0/24"),)
        deny = registrar(deny_networks=cameras, trusted_proxies=TRUSTED)
        refused = handle(deny, via_front(f"sip:{self.A}:5061"), peer=FRONT_PEER)
        assert refused.reason == "denied-address" and self.A in refused.response.headers["warning"]
        assert [e.address for e in deny.refused.entries()] == [self.A]
        assert handle(deny, via_front("sip:172.16.0.5:5061"), peer=FRONT_PEER).response.status == 200
        # allowed: the cameras' network, not the front's; the front itself is judged by its own
        allow = registrar(allow_networks=cameras, trusted_proxies=TRUSTED)
        assert handle(allow, via_front(f"sip:{self.A}:5061"), peer=FRONT_PEER).response.status == 200
        assert handle(allow, via_front("sip:172.16.0.5:5061"), peer=FRONT_PEER).reason == "denied-address"
        assert handle(allow, req(), peer=FRONT_PEER).reason == "denied-address"  # no Path: the front's address
        # untrusted, the same Path changes nothing: the source is judged
        untrusted = registrar(allow_networks=cameras)
        assert handle(untrusted, via_front(f"sip:{self.A}:5061"), peer=FRONT_PEER).reason == "denied-address"

    def test_a_malformed_path_of_the_devices_own_below_the_fronts_does_not_put_the_blame_on_the_front(
        self,
    ) -> None:
        # the front puts its Path line first and forwards the device's after it, unread: a device
        # whose own Path cannot be parsed (an unterminated quote) was judged by the front's address,
        # so its wrong passwords banned the front and every device behind it
        r = registrar(password="12345678", max_auth_failures=3, ban_seconds=600, trusted_proxies=TRUSTED)

        def with_bad_path() -> Request:
            request = via_front(f"sip:{self.A}:5061")
            request.headers.add("Path", '"unterminated <sip:10.6.6.6;lr>')
            return request

        assert policy_address(with_bad_path(), "10.0.0.9", TRUSTED) == self.A
        bad = [self.attempt(r, with_bad_path(), FRONT_PEER, 100.0 + i, "bad") for i in range(3)]
        assert bad == [401, 401, 403]
        assert {b.address for b in r.bans.active(110.0)} == {self.A}
        assert r.bans.banned("ip:10.0.0.9", 110.0) == 0
        # the other devices behind the front still register
        ok = self.attempt(r, via_front(f"sip:{self.B}:5061", device_id=self.OTHER_ID), FRONT_PEER, 111.0, "12345678")
        assert ok == 200

    def test_a_device_getting_in_through_the_front_forgives_no_failures_of_the_fronts_address(self) -> None:
        # failures counted against the front's own address (REGISTERs from it with no Path) are not
        # the device's: its success through the front, judged by its own address, keeps them
        r = registrar(password="12345678", max_auth_failures=3, ban_seconds=600, trusted_proxies=TRUSTED)
        for i in range(2):
            assert self.attempt(r, req(), FRONT_PEER, 100.0 + i, "bad") == 401
        assert self.attempt(r, via_front(f"sip:{self.B}:5061"), FRONT_PEER, 103.0, "12345678") == 200
        assert self.attempt(r, req(), FRONT_PEER, 104.0, "bad") == 403
        assert r.bans.banned("ip:10.0.0.9", 105.0) > 0 and r.bans.banned(f"ip:{self.B}", 105.0) == 0

    def test_an_ipv6_device_through_the_front(self) -> None:
        r = registrar(password="12345678", max_auth_failures=2, ban_seconds=600, trusted_proxies=TRUSTED)
        for i in range(2):
            self.attempt(r, via_front("sip:[2001:db8::20]:5061"), FRONT_PEER, 100.0 + i, "bad")
        assert r.bans.banned("ip:2001:db8::20", 105.0) > 0 and r.bans.banned("ip:10.0.0.9", 105.0) == 0
        assert self.attempt(r, via_front("sip:[2001:db8::21]:5061"), FRONT_PEER, 106.0, "12345678") == 200


def test_require_provisioned() -> None:
    r = registrar(require_provisioned=True)
    assert handle(r, req()).reason == "not-provisioned"
    assert handle(r, req(), Device("34020000001320000001", provisioned=True)).response.status == 200


def test_allow_and_deny_lists() -> None:
    assert handle(registrar(deny_ids=("3402000000132",)), req()).reason == "denied-id"
    assert handle(registrar(allow_ids=("4403",)), req()).reason == "denied-id"
    assert handle(registrar(allow_ids=("3402",)), req()).response.status == 200
    net = (ipaddress.ip_network("127.0.0.0/8"),)
    assert handle(registrar(deny_networks=net), req()).reason == "denied-address"
    assert handle(registrar(allow_networks=(ipaddress.ip_network("10.0.0.0/8"),)), req()).reason == "denied-address"
    assert handle(registrar(allow_networks=net), req()).response.status == 200


@pytest.mark.parametrize(
    "policy",
    [
        {},
        {"gateway_id": "34020000001320000001"},
        {"deny_ids": ("3402000000132",)},
        {"allow_ids": ("4403",)},
        {"strict_ids": True},
    ],
)
@pytest.mark.parametrize("device_id", ["34020000001320000001", "00000000000000000000", "34020000002000000099", "3402x"])
def test_remembered_id_checks_answer_as_the_first_pass(policy: dict[str, object], device_id: str) -> None:
    # the second REGISTER of an ID takes the remembered result of the ID checks: it must be
    # what a registrar that never saw the ID answers
    seen = registrar(**policy)
    handle(seen, req(**{"34020000001320000001": device_id}))
    again = handle(seen, req(**{"34020000001320000001": device_id}))
    fresh = handle(registrar(**policy), req(**{"34020000001320000001": device_id}))
    assert (again.response.status, again.reason, again.detail) == (fresh.response.status, fresh.reason, fresh.detail)


@pytest.mark.parametrize(
    "uri",
    [
        "sip:34020000002000000001@3402000000",
        "sip:34010000002000000001@3401000000",
        "sip:34020000002000000001@3401000000.spvmn.cn",
        "sip:34020000002000000001@[::1]",
        "sip:bad@",
    ],
)
def test_remembered_request_uris_answer_as_the_first_pass(uri: str) -> None:
    seen = registrar()
    request = "REGISTER sip:34020000002000000001@3402000000"
    handle(seen, req(**{request: f"REGISTER {uri}"}))
    again = handle(seen, req(**{request: f"REGISTER {uri}"}))
    fresh = handle(registrar(), req(**{request: f"REGISTER {uri}"}))
    assert (again.response.status, again.reason, again.detail) == (fresh.response.status, fresh.reason, fresh.detail)


@given(st.floats(min_value=0, max_value=4e9), st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Shanghai"]))
def test_the_offset_remembered_per_second_is_the_instants(epoch: float, zone_name: str) -> None:
    zone = zoneinfo.ZoneInfo(zone_name)
    offset = (dt.datetime.fromtimestamp(epoch, zone).utcoffset() or dt.timedelta()).total_seconds()
    expected = format_date(epoch, DateFormat.MILLISECONDS, offset / 3600)
    format_date(epoch - 0.5, DateFormat.MILLISECONDS, zone)  # the second before, possibly remembered
    assert format_date(epoch, DateFormat.MILLISECONDS, zone) == expected
    assert format_date(epoch, DateFormat.MILLISECONDS, zone) == expected  # and now from the cache


def test_date_formats() -> None:
    assert format_date(EPOCH, DateFormat.MILLISECONDS) == "2024-05-06T12:34:56.789"
    assert format_date(EPOCH, DateFormat.SECONDS) == "2024-05-06T12:34:56"
    assert format_date(EPOCH, DateFormat.SECONDS, 0.0) == "2024-05-06T04:34:56"
    assert format_date(EPOCH, DateFormat.OFF) is None
    assert "date" not in handle(registrar(date_format=DateFormat.OFF), req()).response.headers


def test_the_date_is_in_the_sites_time_zone() -> None:
    # gateway.time_zone reaches the Date header as a zone: an offset, UTC, or one with daylight saving
    assert format_date(EPOCH, DateFormat.SECONDS, dt.timezone(dt.timedelta(hours=-5))) == "2024-05-05T23:34:56"
    assert format_date(EPOCH, DateFormat.MILLISECONDS, dt.UTC) == "2024-05-06T04:34:56.789"
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    assert format_date(EPOCH, DateFormat.SECONDS, berlin) == "2024-05-06T06:34:56"  # summer: +2
    assert format_date(EPOCH - 180 * 86400, DateFormat.SECONDS, berlin) == "2023-11-08T05:34:56"  # winter: +1
    assert handle(registrar(time_zone=dt.UTC), req()).response.headers.get("date") == "2024-05-06T04:34:56.789"


class TestTransitions:
    """Each accepted REGISTER is one named device transition, applied to the returned copy only."""

    def test_register_refresh_unregister(self) -> None:
        r = registrar()
        first = handle(r, req())
        assert first.change is not None and first.device is not None
        assert (first.change.event, first.change.old, first.change.new) == (
            DeviceEvent.REGISTERED,
            DeviceState.UNREGISTERED,
            DeviceState.ONLINE,
        )
        assert first.change.went_online and Output.ANNOUNCE in first.change.outputs
        again = handle(r, req(), first.device, now=200.0)
        assert again.change is not None and again.change.event is DeviceEvent.REFRESHED and again.change.nothing
        assert first.device.registered_at == EPOCH  # the stored record is not touched
        gone = handle(r, req(**{"Expires: 3600": "Expires: 0"}), again.device, now=300.0)
        assert gone.change is not None and gone.change.event is DeviceEvent.UNREGISTERED
        assert gone.change.went_offline and gone.change.reason == "unregistered (Expires: 0)"
        assert gone.device is not None and gone.device.state is DeviceState.UNREGISTERED

    def test_offline_device_refreshing_comes_back_online(self) -> None:
        r = registrar()
        dev = handle(r, req()).device
        assert dev is not None
        dev.state = DeviceState.OFFLINE
        result = handle(r, req(), dev, now=200.0)
        assert result.change is not None and result.change.event is DeviceEvent.REFRESHED
        assert result.change.went_online and Output.ANNOUNCE not in result.change.outputs

    def test_lapsed_registration_registers_anew(self) -> None:
        r = registrar()
        dev = handle(r, req()).device
        result = handle(r, req(), dev, now=100.0 + 3601)
        assert result.outcome is Outcome.REGISTERED
        assert result.change is not None and result.change.event is DeviceEvent.REGISTERED
        assert (result.change.old, result.change.new) == (DeviceState.ONLINE, DeviceState.ONLINE)

    def test_new_address_is_in_the_change(self) -> None:
        r = registrar()
        dev = handle(r, req()).device
        moved = handle(r, req(), dev, now=200.0, peer=Peer("TCP", "10.1.2.3", 40000))
        assert moved.change is not None and moved.change.moved_from == PEER
        assert moved.device is not None and moved.device.transport is Transport.TCP

    def test_rejections_change_nothing(self) -> None:
        result = handle(registrar(password="12345678"), req())
        assert result.response.status == 401 and result.change is None and result.device is None
