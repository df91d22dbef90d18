"""Upward registration toward a superior (GB/T 28181 §9.1, §9.6; PROTOCOL.md §9.2): bytes in, fake time."""

from __future__ import annotations

import datetime as _dt
import itertools

import pytest

from gb28181gw.errors import LocalProtocolError
from gb28181gw.gb.upstream import (
    JITTER,
    MAX_REDIRECTS,
    TRANSITIONS,
    Failure,
    KeepaliveAnswered,
    KeepaliveMissed,
    Lost,
    Outgoing,
    Output,
    Purpose,
    Redirected,
    Registered,
    RegisterFailed,
    Stopped,
    Upstream,
    UpstreamEvent,
    UpstreamInput,
    UpstreamSettings,
    UpstreamState,
    backoff_delay,
    clock_offset,
    render_table,
    transition,
)
from gb28181gw.manscdp.codec import child_text, parse_xml
from gb28181gw.sip.auth import Credentials, digest_response
from gb28181gw.sip.message import Request, Response, parse_message
from gb28181gw.sip.peer import Peer
from tests.helpers import FakeClock

S, I, O = UpstreamState, UpstreamInput, Output  # noqa: E741
SUPERIOR = Peer("UDP", "10.1.0.1", 5060)
OURS = "34020000002000000001"
UPPER = "34010000002000000001"
PASSWORD = "upper-pass"
CST = _dt.timezone(_dt.timedelta(hours=8))


def settings(**kw: object) -> UpstreamSettings:
    base: dict[str, object] = {
        "name": "district",
        "server_id": UPPER,
        "domain": "3401000000",
        "peer": SUPERIOR,
        "local_id": OURS,
        "local_domain": "3402000000",
        "username": OURS,
        "password": PASSWORD,
        "expires": 3600,
        "keepalive_interval": 60.0,
        "keepalive_misses": 3,
        "retry_interval": 60.0,
        "retry_max": 600.0,
    }
    base.update(kw)
    return UpstreamSettings(**base)  # type: ignore[arg-type]


class Rig:
    """One machine, a fake clock, deterministic randomness, and helpers to play the superior."""

    def __init__(self, *, random: float = 0.0, **kw: object) -> None:
        counter = itertools.count(1)
        self.clock = FakeClock()
        self.random = random
        self.up = Upstream(
            settings(**kw),
            token=lambda n: f"{next(counter):0{2 * n}x}",
            random=lambda: self.random,
            zone=CST,
        )
        self.up.set_local_address("10.2.0.2", 5060)
        self.events: list[UpstreamEvent] = []

    def sent(self) -> list[Outgoing]:
        out = self.up.requests_to_send()
        for o in out:
            # every request survives the wire: serialized, parsed back
            parsed = parse_message(_with_via(o.request))
            assert isinstance(parsed, Request)
        return out

    def one(self, purpose: Purpose) -> Outgoing:
        out = self.sent()
        assert [o.purpose for o in out] == [purpose], out
        return out[0]

    def drain(self) -> list[UpstreamEvent]:
        got = []
        while (ev := self.up.next_event()) is not None:
            got.append(ev)
        self.events += got
        return got

    def answer(self, out: Outgoing, status: int, *headers: str, wall: float | None = None) -> None:
        self.up.receive_response(out.ref, respond(out.request, status, *headers), self.clock.now, wall=wall)

    def advance_to_timer(self) -> float:
        when = self.up.get_timer()
        assert when is not None
        self.clock.now = max(self.clock.now, when)
        self.up.handle_timer(self.clock.now)
        return when

    def register(self) -> Outgoing:
        """Start and get registered through one MD5 challenge; returns the authenticated REGISTER."""
        self.up.start(self.clock.now)
        first = self.one(Purpose.REGISTER)
        self.answer(first, 401, 'WWW-Authenticate: Digest realm="3401000000",nonce="n1",algorithm=MD5')
        second = self.one(Purpose.REGISTER)
        self.answer(second, 200, "Expires: 3600")
        assert self.up.state is S.REGISTERED
        self.drain()
        return second


def _with_via(request: Request) -> bytes:
    data = bytes(request)
    head, _, rest = data.partition(b"\r\n")
    return head + b"\r\nVia: SIP/2.0/UDP 10.2.0.2:5060;branch=z9hG4bKtest\r\nMax-Forwards: 70\r\n" + rest


def respond(request: Request, status: int, *headers: str) -> Response:
    """The superior's answer, as bytes on the wire and parsed back."""
    h = request.headers
    lines = [
        f"SIP/2.0 {status} Whatever",
        "Via: SIP/2.0/UDP 10.2.0.2:5060;branch=z9hG4bKtest",
        f"From: {h.get('from')}",
        f"To: {h.get('to')};tag=sup1",
        f"Call-ID: {h.get('call-id')}",
        f"CSeq: {h.get('cseq')}",
        *headers,
        "Content-Length: 0",
        "",
        "",
    ]
    parsed = parse_message("\r\n".join(lines).encode())
    assert isinstance(parsed, Response)
    return parsed


def credentials(out: Outgoing, header: str = "authorization") -> Credentials:
    value = out.request.headers.get(header)
    assert value is not None, f"no {header} in {out.request!r}"
    return Credentials.parse(value)


#: The whole machine, written out independently of the module.
EXPECTED = {
    (S.IDLE, I.START): (S.REGISTERING, (O.SEND_REGISTER,)),
    (S.IDLE, I.STOP): (S.STOPPED, (O.ANNOUNCE_STOPPED,)),
    (S.REGISTERING, I.OK): (S.REGISTERED, (O.ARM_REFRESH, O.ARM_KEEPALIVE, O.ANNOUNCE_REGISTERED)),
    (S.REGISTERING, I.CHALLENGED): (S.REGISTERING, (O.SEND_REGISTER,)),
    (S.REGISTERING, I.REDIRECTED): (S.REGISTERING, (O.SEND_REGISTER,)),
    (S.REGISTERING, I.REJECTED): (S.BACKOFF, (O.DISARM, O.GO_HOME, O.ARM_RETRY)),
    (S.REGISTERING, I.TIMED_OUT): (S.BACKOFF, (O.DISARM, O.GO_HOME, O.ARM_RETRY)),
    (S.REGISTERING, I.STOP): (S.STOPPED, (O.DISARM, O.ANNOUNCE_STOPPED)),
    (S.REGISTERED, I.REFRESH_DUE): (S.REFRESHING, (O.SEND_REGISTER,)),
    (S.REGISTERED, I.KEEPALIVE_DUE): (S.REGISTERED, (O.SEND_KEEPALIVE, O.ARM_KEEPALIVE)),
    (S.REGISTERED, I.KEEPALIVE_OK): (S.REGISTERED, ()),
    (S.REGISTERED, I.KEEPALIVE_MISSED): (S.REGISTERED, ()),
    (S.REGISTERED, I.LOST): (S.REGISTERING, (O.DISARM, O.GO_HOME, O.ANNOUNCE_LOST, O.SEND_REGISTER)),
    (S.REGISTERED, I.STOP): (S.UNREGISTERING, (O.DISARM, O.ANNOUNCE_LOST, O.SEND_UNREGISTER)),
    (S.REFRESHING, I.OK): (S.REGISTERED, (O.ARM_REFRESH, O.ANNOUNCE_REGISTERED)),
    (S.REFRESHING, I.CHALLENGED): (S.REFRESHING, (O.SEND_REGISTER,)),
    (S.REFRESHING, I.REDIRECTED): (S.REGISTERING, (O.DISARM, O.ANNOUNCE_LOST, O.SEND_REGISTER)),
    (S.REFRESHING, I.REJECTED): (S.BACKOFF, (O.DISARM, O.GO_HOME, O.ANNOUNCE_LOST, O.ARM_RETRY)),
    (S.REFRESHING, I.TIMED_OUT): (S.BACKOFF, (O.DISARM, O.GO_HOME, O.ANNOUNCE_LOST, O.ARM_RETRY)),
    (S.REFRESHING, I.KEEPALIVE_DUE): (S.REFRESHING, (O.SEND_KEEPALIVE, O.ARM_KEEPALIVE)),
    (S.REFRESHING, I.KEEPALIVE_OK): (S.REFRESHING, ()),
    (S.REFRESHING, I.KEEPALIVE_MISSED): (S.REFRESHING, ()),
    (S.REFRESHING, I.LOST): (S.REGISTERING, (O.DISARM, O.GO_HOME, O.ANNOUNCE_LOST, O.SEND_REGISTER)),
    (S.REFRESHING, I.STOP): (S.UNREGISTERING, (O.DISARM, O.ANNOUNCE_LOST, O.SEND_UNREGISTER)),
    (S.BACKOFF, I.RETRY_DUE): (S.REGISTERING, (O.SEND_REGISTER,)),
    (S.BACKOFF, I.STOP): (S.STOPPED, (O.DISARM, O.ANNOUNCE_STOPPED)),
    (S.UNREGISTERING, I.OK): (S.STOPPED, (O.ANNOUNCE_STOPPED,)),
    (S.UNREGISTERING, I.CHALLENGED): (S.UNREGISTERING, (O.SEND_UNREGISTER,)),
    (S.UNREGISTERING, I.REDIRECTED): (S.STOPPED, (O.ANNOUNCE_STOPPED,)),
    (S.UNREGISTERING, I.REJECTED): (S.STOPPED, (O.ANNOUNCE_STOPPED,)),
    (S.UNREGISTERING, I.TIMED_OUT): (S.STOPPED, (O.ANNOUNCE_STOPPED,)),
    (S.UNREGISTERING, I.STOP): (S.UNREGISTERING, ()),
    (S.STOPPED, I.STOP): (S.STOPPED, ()),
    # issue 17: another node holds the lease: stop without an Expires: 0
    (S.IDLE, I.ABANDON): (S.STOPPED, (O.DISARM, O.ANNOUNCE_STOPPED)),
    (S.REGISTERING, I.ABANDON): (S.STOPPED, (O.DISARM, O.ANNOUNCE_STOPPED)),
    (S.REGISTERED, I.ABANDON): (S.STOPPED, (O.DISARM, O.ANNOUNCE_LOST, O.ANNOUNCE_STOPPED)),
    (S.REFRESHING, I.ABANDON): (S.STOPPED, (O.DISARM, O.ANNOUNCE_LOST, O.ANNOUNCE_STOPPED)),
    (S.BACKOFF, I.ABANDON): (S.STOPPED, (O.DISARM, O.ANNOUNCE_STOPPED)),
    (S.UNREGISTERING, I.ABANDON): (S.STOPPED, (O.DISARM, O.ANNOUNCE_STOPPED)),
    (S.STOPPED, I.ABANDON): (S.STOPPED, ()),
}


class TestTable:
    def test_the_table_is_the_expected_one(self) -> None:
        assert TRANSITIONS == EXPECTED

    @pytest.mark.parametrize(("pair", "target"), list(EXPECTED.items()), ids=lambda x: str(x))
    def test_every_row(self, pair: tuple[UpstreamState, UpstreamInput], target: object) -> None:
        assert transition(*pair) == target

    def test_an_unlisted_pair_names_the_state(self) -> None:
        with pytest.raises(LocalProtocolError, match="START is not possible in state REGISTERED"):
            transition(S.REGISTERED, I.START)

    def test_render(self) -> None:
        graph = render_table()
        assert graph.startswith("digraph upstream") and '"BACKOFF" -> "REGISTERING"' in graph


class TestRegister:
    """GB/T 28181 §9.1.2.1 and PROTOCOL.md §9.2: REGISTER, challenge, 200."""

    def test_first_register_has_our_identity_and_no_credentials(self) -> None:
        rig = Rig(gb_version="3.0")
        rig.up.start(rig.clock.now)
        out = rig.one(Purpose.REGISTER)
        r = out.request
        assert out.peer == SUPERIOR
        assert r.method == "REGISTER" and r.uri == f"sip:{UPPER}@3401000000"
        assert r.headers.get("from", "").startswith(f"<sip:{OURS}@3402000000>;tag=")
        assert r.headers.get("to") == f"<sip:{OURS}@3402000000>"
        assert r.headers.get("contact") == f"<sip:{OURS}@10.2.0.2:5060>"
        assert r.headers.get("expires") == "3600"
        assert r.headers.get("x-gb-ver") == "3.0"
        assert r.headers.get("authorization") is None

    def test_no_x_gb_ver_unless_configured(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        assert rig.one(Purpose.REGISTER).request.headers.get("x-gb-ver") is None

    def test_md5_challenge_answered_with_the_protocol_test_vector(self) -> None:
        # PROTOCOL.md §9.2: the authenticated upward REGISTER for password upper-pass
        rig = Rig()
        rig.up.start(rig.clock.now)
        first = rig.one(Purpose.REGISTER)
        rig.answer(
            first,
            401,
            'WWW-Authenticate: Digest realm="3401000000",nonce="5d41402abc4b2a76b9719d911017c592",algorithm=MD5',
        )
        second = rig.one(Purpose.REGISTER)
        c = credentials(second)
        assert (c.username, c.realm, c.uri, c.algorithm, c.qop) == (
            OURS,
            "3401000000",
            f"sip:{UPPER}@3401000000",
            "MD5",
            None,
        )
        assert c.response == "e5903d10dcf97496fd04c3e443c029b8"
        assert second.request.headers.get("call-id") == first.request.headers.get("call-id")
        assert second.request.headers.get("cseq") == "2 REGISTER"
        rig.answer(second, 200, "Expires: 3600")
        (ev,) = rig.drain()
        assert isinstance(ev, Registered) and ev.expires == 3600 and not ev.refreshed
        assert rig.up.state is S.REGISTERED and rig.up.registered

    def test_sha256_with_qop_and_407(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        first = rig.one(Purpose.REGISTER)
        rig.answer(
            first,
            407,
            'Proxy-Authenticate: Digest realm="r",nonce="abc",algorithm=MD5,qop="auth"',
            'Proxy-Authenticate: Digest realm="r",nonce="abc",algorithm=SHA-256,qop="auth,auth-int",opaque="op"',
        )
        second = rig.one(Purpose.REGISTER)
        assert second.request.headers.get("authorization") is None
        c = credentials(second, "proxy-authorization")
        assert (c.algorithm, c.qop, c.nc, c.opaque) == ("SHA-256", "auth", "00000001", "op")
        assert c.cnonce
        assert c.response == digest_response(
            algorithm="SHA-256",
            username=OURS,
            realm="r",
            password=PASSWORD,
            method="REGISTER",
            uri=f"sip:{UPPER}@3401000000",
            nonce="abc",
            qop="auth",
            nc="00000001",
            cnonce=c.cnonce,
        )

    def test_stale_nonce_is_answered_again(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        rig.answer(rig.one(Purpose.REGISTER), 401, 'WWW-Authenticate: Digest realm="3401000000",nonce="n1"')
        second = rig.one(Purpose.REGISTER)
        rig.answer(second, 401, 'WWW-Authenticate: Digest realm="3401000000",nonce="n2",stale=true')
        third = rig.one(Purpose.REGISTER)
        assert credentials(third).nonce == "n2"
        rig.answer(third, 200)
        assert rig.up.state is S.REGISTERED

    def test_endless_stale_is_a_failure(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        rig.answer(rig.one(Purpose.REGISTER), 401, 'WWW-Authenticate: Digest realm="x",nonce="n0"')
        for i in range(10):
            out = rig.sent()
            if not out:
                break
            rig.answer(out[0], 401, f'WWW-Authenticate: Digest realm="x",nonce="n{i + 1}",stale=true')
        assert rig.up.state is S.BACKOFF
        (failed,) = [e for e in rig.drain() if isinstance(e, RegisterFailed)]
        assert failed.reason is Failure.AUTH and "stale" in failed.detail

    def test_second_challenge_without_stale_means_wrong_password(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        rig.answer(rig.one(Purpose.REGISTER), 401, 'WWW-Authenticate: Digest realm="3401000000",nonce="n1"')
        rig.answer(rig.one(Purpose.REGISTER), 401, 'WWW-Authenticate: Digest realm="3401000000",nonce="n2"')
        assert rig.up.state is S.BACKOFF and rig.sent() == []
        (failed,) = rig.drain()
        assert isinstance(failed, RegisterFailed)
        assert failed.reason is Failure.AUTH and "refused" in failed.detail and failed.status == 401

    def test_a_challenge_we_cannot_answer(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        rig.answer(rig.one(Purpose.REGISTER), 401, 'WWW-Authenticate: Digest realm="x",nonce="n",algorithm=FOO')
        (failed,) = rig.drain()
        assert isinstance(failed, RegisterFailed) and failed.reason is Failure.AUTH
        assert rig.up.state is S.BACKOFF

    def test_granted_expires_drives_the_refresh(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        rig.answer(rig.one(Purpose.REGISTER), 200, "Expires: 100")
        rig.drain()
        start = rig.clock.now
        assert rig.up.granted == 100
        # keepalive at +60 comes first, refresh at 80 % of 100 s
        assert rig.advance_to_timer() == start + 60
        rig.one(Purpose.KEEPALIVE)
        assert rig.advance_to_timer() == start + 80
        refresh = rig.one(Purpose.REGISTER)
        assert rig.up.state is S.REFRESHING
        assert refresh.request.headers.get("authorization") is None  # challenged afresh
        rig.answer(refresh, 401, 'WWW-Authenticate: Digest realm="3401000000",nonce="n9"')
        again = rig.one(Purpose.REGISTER)
        assert credentials(again).nonce == "n9"
        rig.answer(again, 200, "Expires: 100")
        events = rig.drain()
        assert [type(e) for e in events] == [Registered] and events[0].refreshed  # type: ignore[union-attr]
        assert rig.up.state is S.REGISTERED

    def test_contact_expires_wins_over_header(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        rig.answer(rig.one(Purpose.REGISTER), 200, f"Contact: <sip:{OURS}@10.2.0.2:5060>;expires=1800", "Expires: 7200")
        assert rig.up.granted == 1800

    def test_date_gives_the_clock_offset(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        wall = _dt.datetime(2024, 5, 6, 4, 34, 50, tzinfo=_dt.UTC).timestamp()
        # GB/T 28181 Date is Beijing time without a zone: 12:34:56.789 CST is 04:34:56.789 UTC
        rig.answer(rig.one(Purpose.REGISTER), 200, "Date: 2024-05-06T12:34:56.789", wall=wall)
        (ev,) = rig.drain()
        assert isinstance(ev, Registered)
        assert ev.clock_offset == pytest.approx(6.789)

    def test_clock_offset_formats(self) -> None:
        wall = _dt.datetime(2024, 5, 6, 4, 34, 56, tzinfo=_dt.UTC).timestamp()
        assert clock_offset("2024-05-06T12:34:56", wall, CST) == pytest.approx(0.0)
        assert clock_offset("Mon, 06 May 2024 04:35:06 GMT", wall, CST) == pytest.approx(10.0)
        assert clock_offset("yesterday", wall, CST) is None
        assert clock_offset("2024-13-45T99:00:00", wall, CST) is None


class TestBackoff:
    """Refused or unreachable: exponential back-off with jitter, never a tight loop."""

    def test_delay_grows_and_is_capped(self) -> None:
        delays = [backoff_delay(n, base=60, cap=600, random=0.0) for n in range(1, 8)]
        assert delays == [60, 120, 240, 480, 600, 600, 600]
        assert backoff_delay(1, base=60, cap=600, random=0.999) == pytest.approx(60 * (1 + JITTER * 0.999))
        assert backoff_delay(10_000, base=60, cap=600, random=0.999) <= 600 * (1 + JITTER)
        assert min(backoff_delay(1, base=60, cap=600, random=r / 10) for r in range(10)) == 60  # never sooner

    def test_403_backs_off_and_grows_to_the_cap(self) -> None:
        rig = Rig(retry_interval=10.0, retry_max=50.0, random=0.5)
        rig.up.start(rig.clock.now)
        waits = []
        for _ in range(6):
            out = rig.one(Purpose.REGISTER)
            rig.answer(out, 403, 'Warning: 399 sup "wrong password"')
            (failed,) = rig.drain()
            assert isinstance(failed, RegisterFailed)
            assert failed.reason is Failure.FORBIDDEN and failed.status == 403
            assert "wrong password" in failed.detail and OURS in failed.detail
            assert rig.up.state is S.BACKOFF and rig.sent() == []  # nothing until the timer
            before = rig.clock.now
            waits.append(rig.advance_to_timer() - before)
            assert rig.up.state is S.REGISTERING
        f = 1 + JITTER * 0.5
        assert waits == pytest.approx([10 * f, 20 * f, 40 * f, 50 * f, 50 * f, 50 * f])
        assert rig.up.failures == 6

    def test_404_and_other_statuses(self) -> None:
        for status, reason in ((404, Failure.NOT_FOUND), (500, Failure.REJECTED), (488, Failure.REJECTED)):
            rig = Rig()
            rig.up.start(rig.clock.now)
            rig.answer(rig.one(Purpose.REGISTER), status)
            (failed,) = rig.drain()
            assert isinstance(failed, RegisterFailed) and failed.reason is reason, status
            assert rig.up.state is S.BACKOFF

    def test_timeout_backs_off_and_success_resets_the_count(self) -> None:
        rig = Rig(retry_interval=5.0, retry_max=100.0)
        rig.up.start(rig.clock.now)
        rig.up.receive_failure(rig.one(Purpose.REGISTER).ref, "Timer F", rig.clock.now)
        (failed,) = rig.drain()
        assert isinstance(failed, RegisterFailed) and failed.reason is Failure.TIMEOUT and failed.status is None
        assert failed.retry_in == 5.0  # random 0: no jitter
        rig.random = 0.5
        rig.advance_to_timer()
        rig.up.receive_failure(rig.one(Purpose.REGISTER).ref, "Timer F", rig.clock.now)
        assert rig.drain()[0].retry_in == pytest.approx(10.0 * (1 + JITTER * 0.5))  # type: ignore[union-attr]
        rig.advance_to_timer()
        rig.answer(rig.one(Purpose.REGISTER), 200)
        assert rig.up.failures == 0 and rig.up.last_failure is None

    def test_late_answer_to_an_old_register_is_ignored(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        old = rig.one(Purpose.REGISTER)
        rig.up.receive_failure(old.ref, "Timer F", rig.clock.now)
        rig.answer(old, 200)  # overtaken: we are backing off
        assert rig.up.state is S.BACKOFF


class TestKeepalive:
    """GB/T 28181 §9.6, PROTOCOL.md §4.1: keepalives upward, misses mean lost."""

    def test_keepalive_message(self) -> None:
        rig = Rig(charset="UTF-8", gb_version="3.0")
        rig.register()
        rig.advance_to_timer()
        ka = rig.one(Purpose.KEEPALIVE)
        r = ka.request
        assert r.method == "MESSAGE" and r.uri == f"sip:{UPPER}@3401000000"
        assert r.headers.get("to") == f"<sip:{UPPER}@3401000000>"
        assert r.headers.get("content-type") == "Application/MANSCDP+xml"
        assert r.headers.get("x-gb-ver") == "3.0"
        root = parse_xml(r.body)
        assert root.tag == "Notify"
        assert child_text(root, "CmdType") == "Keepalive"
        assert child_text(root, "DeviceID") == OURS and child_text(root, "Status") == "OK"
        assert b'encoding="UTF-8"' in r.body
        rig.answer(ka, 200)
        (ev,) = rig.drain()
        assert isinstance(ev, KeepaliveAnswered) and rig.up.last_keepalive == rig.clock.now

    def test_keepalives_every_interval(self) -> None:
        rig = Rig(keepalive_interval=20.0)
        rig.register()
        t0 = rig.clock.now
        times = []
        for _ in range(3):
            times.append(rig.advance_to_timer() - t0)
            rig.answer(rig.one(Purpose.KEEPALIVE), 200)
        assert times == [20, 40, 60]

    def test_misses_in_a_row_mean_lost_and_register_again(self) -> None:
        rig = Rig(keepalive_interval=10.0, keepalive_misses=3)
        rig.register()
        rig.advance_to_timer()
        rig.up.receive_failure(rig.one(Purpose.KEEPALIVE).ref, "Timer F", rig.clock.now)
        rig.advance_to_timer()
        rig.answer(rig.one(Purpose.KEEPALIVE), 200)  # an answer resets the count
        assert rig.up.misses == 0
        for n in (1, 2):
            rig.advance_to_timer()
            rig.up.receive_failure(rig.one(Purpose.KEEPALIVE).ref, "Timer F", rig.clock.now)
            assert rig.up.state is S.REGISTERED and rig.up.misses == n
        rig.drain()
        rig.advance_to_timer()
        rig.answer(rig.one(Purpose.KEEPALIVE), 500)  # a non-2xx is a miss too: the third
        events = rig.drain()
        assert [type(e) for e in events] == [KeepaliveMissed, Lost]
        assert "3 keepalives" in events[1].reason  # type: ignore[union-attr]
        assert rig.up.state is S.REGISTERING
        again = rig.one(Purpose.REGISTER)
        assert again.request.headers.get("authorization") is None
        assert rig.up.get_timer() is None  # no keepalive, no refresh while not registered

    def test_404_to_a_keepalive_is_lost_at_once(self) -> None:
        rig = Rig()
        rig.register()
        rig.advance_to_timer()
        rig.answer(rig.one(Purpose.KEEPALIVE), 404)
        assert [type(e) for e in rig.drain()] == [KeepaliveMissed, Lost]
        assert rig.up.state is S.REGISTERING
        rig.one(Purpose.REGISTER)

    def test_answer_to_a_keepalive_from_before_the_loss_is_ignored(self) -> None:
        rig = Rig(keepalive_misses=1)
        rig.register()
        rig.advance_to_timer()
        first = rig.one(Purpose.KEEPALIVE)
        rig.up.receive_failure(first.ref, "Timer F", rig.clock.now)
        reg = rig.one(Purpose.REGISTER)
        rig.answer(first, 200)
        assert rig.up.state is S.REGISTERING and rig.up.last_keepalive is None
        rig.answer(reg, 200)
        assert rig.up.state is S.REGISTERED

    def test_refresh_timeout_is_lost_and_backs_off(self) -> None:
        rig = Rig(expires=100)
        rig.register()
        while rig.up.state is S.REGISTERED:
            rig.advance_to_timer()
            for out in rig.sent():
                if out.purpose is Purpose.KEEPALIVE:
                    rig.answer(out, 200)
                else:
                    refresh = out
        rig.up.receive_failure(refresh.ref, "Timer F", rig.clock.now)
        events = rig.drain()
        assert [type(e) for e in events if not isinstance(e, KeepaliveAnswered)] == [Lost, RegisterFailed]
        assert rig.up.state is S.BACKOFF


class TestRedirect:
    """GB/T 28181-2022 §9.1.2.3, PROTOCOL.md §3.7."""

    def test_302_is_followed(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        rig.answer(rig.one(Purpose.REGISTER), 302, "Contact: <sip:34010000002000000002@10.1.0.9:5080>", "Expires: 3600")
        (ev,) = rig.drain()
        assert isinstance(ev, Redirected) and ev.peer == Peer("UDP", "10.1.0.9", 5080)
        out = rig.one(Purpose.REGISTER)
        assert out.peer == Peer("UDP", "10.1.0.9", 5080)
        assert out.request.uri == "sip:34010000002000000002@10.1.0.9:5080"
        rig.answer(out, 401, 'WWW-Authenticate: Digest realm="3401000000",nonce="r1"')
        authed = rig.one(Purpose.REGISTER)
        assert authed.peer.port == 5080 and credentials(authed).uri == "sip:34010000002000000002@10.1.0.9:5080"
        rig.answer(authed, 200)
        assert rig.up.state is S.REGISTERED and rig.up.server_id == "34010000002000000002"
        rig.advance_to_timer()
        assert rig.one(Purpose.KEEPALIVE).peer.port == 5080

    def test_a_redirect_loop_is_a_failure_and_we_go_home(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        rig.answer(rig.one(Purpose.REGISTER), 302, "Contact: <sip:34010000002000000002@10.1.0.9:5080>")
        rig.answer(rig.one(Purpose.REGISTER), 302, f"Contact: <sip:{UPPER}@10.1.0.1:5060>")
        assert rig.up.state is S.BACKOFF
        failed = [e for e in rig.drain() if isinstance(e, RegisterFailed)]
        assert failed[0].reason is Failure.REDIRECT and "loop" in failed[0].detail
        rig.advance_to_timer()
        assert rig.one(Purpose.REGISTER).peer == SUPERIOR

    def test_redirects_are_bounded(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        for hop in range(MAX_REDIRECTS + 1):
            out = rig.sent()
            assert len(out) == 1
            rig.answer(out[0], 302, f"Contact: <sip:34010000002000000002@10.1.0.{10 + hop}:5080>")
        assert rig.up.state is S.BACKOFF
        assert any(isinstance(e, RegisterFailed) and "redirects" in e.detail for e in rig.drain())

    def test_302_without_contact(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        rig.answer(rig.one(Purpose.REGISTER), 302)
        (failed,) = rig.drain()
        assert isinstance(failed, RegisterFailed) and failed.reason is Failure.REDIRECT


class TestShutdown:
    """GB/T 28181 §9.1.2.2: a clean shutdown unregisters with Expires: 0."""

    def test_registered_unregisters(self) -> None:
        rig = Rig()
        rig.register()
        rig.up.stop(rig.clock.now)
        out = rig.one(Purpose.UNREGISTER)
        assert out.request.headers.get("expires") == "0"
        rig.answer(out, 401, 'WWW-Authenticate: Digest realm="3401000000",nonce="u1"')
        authed = rig.one(Purpose.UNREGISTER)
        assert authed.request.headers.get("expires") == "0" and credentials(authed).nonce == "u1"
        rig.answer(authed, 200)
        events = rig.drain()
        assert [type(e) for e in events] == [Lost, Stopped]
        assert events[1].unregistered  # type: ignore[union-attr]
        assert rig.up.state is S.STOPPED and rig.up.get_timer() is None

    def test_unanswered_unregister_still_stops(self) -> None:
        rig = Rig()
        rig.register()
        rig.up.stop(rig.clock.now)
        rig.up.receive_failure(rig.one(Purpose.UNREGISTER).ref, "Timer F", rig.clock.now)
        assert rig.up.state is S.STOPPED
        assert not [e for e in rig.drain() if isinstance(e, Stopped)][0].unregistered

    def test_backing_off_stops_at_once(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        rig.answer(rig.one(Purpose.REGISTER), 403)
        rig.up.stop(rig.clock.now)
        assert rig.sent() == [] and rig.up.state is S.STOPPED and rig.up.get_timer() is None

    def test_stop_while_registering_ignores_the_late_answer(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        out = rig.one(Purpose.REGISTER)
        rig.up.stop(rig.clock.now)
        rig.answer(out, 200)
        assert rig.up.state is S.STOPPED


class TestAbandon:
    """Issue 17: the superior's lease went to another node: stop without a word (no Expires: 0)."""

    def test_registered_stops_without_unregistering_and_drops_what_is_queued(self) -> None:
        rig = Rig()
        rig.register()
        rig.drain()
        rig.advance_to_timer()  # a keepalive is queued, not yet sent
        rig.up.abandon(rig.clock.now)
        assert rig.sent() == [] and rig.up.state is S.STOPPED and rig.up.get_timer() is None
        events = rig.drain()
        assert [type(e) for e in events] == [Lost, Stopped]
        assert "another gateway node" in events[0].reason  # type: ignore[union-attr]
        assert not events[1].unregistered  # type: ignore[union-attr]

    def test_registering_stops_and_its_late_answer_is_ignored(self) -> None:
        rig = Rig()
        rig.up.start(rig.clock.now)
        out = rig.one(Purpose.REGISTER)
        rig.up.abandon(rig.clock.now)
        rig.answer(out, 200)
        assert rig.up.state is S.STOPPED and rig.sent() == []
        assert [type(e) for e in rig.drain()] == [Stopped]
        rig.up.abandon(rig.clock.now)
        assert rig.drain() == []
