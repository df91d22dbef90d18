"""Digest authentication (RFC 2617, RFC 7616) with the vectors of PROTOCOL.md §3.3."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181gw.errors import AuthError
from gb28181gw.sip.auth import (
    _AUTH_PARAM_RE,
    _PLAIN_DIGEST,
    Challenge,
    Credentials,
    NonceStore,
    Verdict,
    _plain_params,
    authorization_for,
    digest_response,
    plain_digest,
)
from gb28181gw.sip.params import unquote

VECTOR = {
    "username": "34020000001320000001",
    "realm": "3402000000",
    "password": "12345678",
    "method": "REGISTER",
    "uri": "sip:34020000002000000001@3402000000",
    "nonce": "9bd055b7a3c8e2d1f0a4b6c8d2e4f601",
}

AUTH_HEADER = (
    'Digest username="34020000001320000001",realm="3402000000",nonce="9bd055b7a3c8e2d1f0a4b6c8d2e4f601",'
    'uri="sip:34020000002000000001@3402000000",response="59eb1e7804cae7b13e8c4511216bc6b9",algorithm=MD5'
)


class TestVectors:
    def test_md5_without_qop(self) -> None:
        assert digest_response(algorithm="MD5", **VECTOR) == "59eb1e7804cae7b13e8c4511216bc6b9"

    def test_md5_with_qop_auth(self) -> None:
        got = digest_response(algorithm="MD5", qop="auth", nc="00000001", cnonce="0a4f113b", **VECTOR)
        assert got == "0dc37c8a49ff0634944c4e980c5f3130"

    def test_sha256_is_computed_from_its_definition(self) -> None:
        def h(s: str) -> str:
            return hashlib.sha256(s.encode()).hexdigest()

        ha1 = h("34020000001320000001:3402000000:12345678")
        ha2 = h("REGISTER:sip:34020000002000000001@3402000000")
        expected = h(f"{ha1}:{VECTOR['nonce']}:00000002:abc:auth:{ha2}")
        got = digest_response(algorithm="SHA-256", qop="auth", nc="00000002", cnonce="abc", **VECTOR)
        assert got == expected

    def test_md5_sess(self) -> None:
        def h(s: str) -> str:
            return hashlib.md5(s.encode()).hexdigest()

        ha1 = h(h("34020000001320000001:3402000000:12345678") + f":{VECTOR['nonce']}:cn")
        ha2 = h("REGISTER:sip:34020000002000000001@3402000000")
        expected = h(f"{ha1}:{VECTOR['nonce']}:00000001:cn:auth:{ha2}")
        got = digest_response(algorithm="MD5-sess", qop="auth", nc="00000001", cnonce="cn", **VECTOR)
        assert got == expected

    def test_nc_enters_the_hash_as_written(self) -> None:
        a = digest_response(algorithm="MD5", qop="auth", nc="0000000a", cnonce="x", **VECTOR)
        b = digest_response(algorithm="MD5", qop="auth", nc="0000000A", cnonce="x", **VECTOR)
        assert a != b

    def test_unsupported(self) -> None:
        with pytest.raises(AuthError):
            digest_response(algorithm="MD4", **VECTOR)
        with pytest.raises(AuthError):
            digest_response(algorithm="MD5", qop="auth-int", nc="1", cnonce="x", **VECTOR)


class TestHeaders:
    def test_parse_credentials(self) -> None:
        c = Credentials.parse(AUTH_HEADER)
        assert c.username == "34020000001320000001" and c.response == "59eb1e7804cae7b13e8c4511216bc6b9"
        assert c.expected("12345678", "REGISTER") == c.response
        assert Credentials.parse(c.serialize()) == c

    def test_challenge_round_trip(self) -> None:
        ch = Challenge(realm="3402000000", nonce="abc", qop="auth", opaque="o", stale=True)
        text = ch.serialize()
        assert 'realm="3402000000"' in text and "stale=true" in text and "algorithm=MD5" in text
        assert Challenge.parse(text) == ch

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "Digest",
            "Basic dXNlcjpwYXNz",
            'Digest username="a"',
            'Digest realm="r",nonce',
            'Digest qop=auth,username="a",realm="r",nonce="n",uri="u",response="x"',
        ],
    )
    def test_malformed_credentials(self, value: str) -> None:
        with pytest.raises(AuthError):
            Credentials.parse(value)


def _regex_params(rest: str) -> dict[str, str]:
    # the general path of parse_auth_params, which the fast path must agree with
    return {name.lower(): unquote(val) for name, val in _AUTH_PARAM_RE.findall(rest)}


_PARAM_TEXT = st.text(alphabet=st.sampled_from(list('aZ09_-.= ,"\\\t\u3000é')), max_size=30)


class TestFastParams:
    """``_plain_params`` (split at commas) beside the regex it stands in for."""

    def test_what_devices_send_takes_the_fast_path(self) -> None:
        rest = AUTH_HEADER.partition(" ")[2]
        fast = _plain_params(rest)
        assert fast is not None and fast == _regex_params(rest)

    @pytest.mark.parametrize(
        "rest",
        [
            'username="a,b",realm="r"',  # a comma inside quotes
            'username="a\\"b"',  # an escape
            "username=a b",  # white space inside a token
            'username="a",',  # an empty item
            'a="x"y=1',  # junk after a quoted value
            "a=b=c",
        ],
    )
    def test_odd_shapes_go_to_the_regex(self, rest: str) -> None:
        assert _plain_params(rest) is None

    @given(st.lists(st.tuples(_PARAM_TEXT, _PARAM_TEXT, st.booleans()), min_size=1, max_size=6), _PARAM_TEXT)
    def test_same_result_as_the_regex(self, items: list[tuple[str, str, bool]], junk: str) -> None:
        for rest in (
            ",".join(f'{n}="{v}"' if q else f"{n}={v}" for n, v, q in items),
            ",".join(f'{n}="{v}"' if q else f"{n}={v}" for n, v, q in items) + junk,
        ):
            fast = _plain_params(rest)
            if fast is not None:
                assert fast == _regex_params(rest), rest


_VALUE_TEXT = st.text(alphabet=st.sampled_from(list('aZ09_-.=: ,"\\\t@é')), max_size=12)


class TestPlainDigest:
    """``Credentials.parse`` reads the Authorization devices send with one pattern (``_PLAIN_DIGEST``);
    whatever that pattern takes, the general reading (``Credentials._parse``) reads alike, and what
    it does not take is left to the general reading."""

    def test_what_devices_send_takes_the_pattern(self) -> None:
        assert _PLAIN_DIGEST.fullmatch(AUTH_HEADER) is not None
        assert Credentials.parse(AUTH_HEADER) == Credentials._parse(AUTH_HEADER)

    @pytest.mark.parametrize(
        "value",
        [
            AUTH_HEADER.replace(",algorithm=MD5", ",algorithm=SHA-256"),
            AUTH_HEADER.replace("algorithm=MD5", 'algorithm=MD5,opaque="x"'),
            AUTH_HEADER.replace("algorithm=MD5", 'qop=auth,nc=00000001,cnonce="c"'),
            AUTH_HEADER.replace("Digest", "digest"),
            AUTH_HEADER.replace(",realm", " ,realm"),
            AUTH_HEADER.replace(',uri="', ',uri="\\'),
            " " + AUTH_HEADER,
        ],
    )
    def test_other_shapes_are_read_the_general_way(self, value: str) -> None:
        assert _PLAIN_DIGEST.fullmatch(value) is None

    @given(
        st.lists(_VALUE_TEXT, min_size=5, max_size=5),
        st.sampled_from(["", ",algorithm=MD5", ', algorithm="MD5"', ",algorithm=md5", ",algorithm=MD5 "]),
        st.sampled_from([",", ", ", ",  ", " ,", ",\t"]),
        st.sampled_from(["Digest ", "Digest  ", "Digest\t"]),
    )
    def test_same_credentials_as_the_general_reading(
        self, values: list[str], algorithm: str, comma: str, scheme: str
    ) -> None:
        names = ("username", "realm", "nonce", "uri", "response")
        value = scheme + comma.join(f'{n}="{v}"' for n, v in zip(names, values, strict=True)) + algorithm
        if _PLAIN_DIGEST.fullmatch(value) is None:
            return
        assert Credentials.parse(value) == Credentials._parse(value), value


_TRICKY = [
    AUTH_HEADER.replace('username="34020000001320000001"', 'username="a\\"b"'),  # an escaped quote
    AUTH_HEADER.replace('username="34020000001320000001"', 'username="a,b"'),  # a comma inside quotes
    AUTH_HEADER.replace('uri="', 'uri="x", uri="'),  # a parameter twice
    AUTH_HEADER.replace(",algorithm=MD5", ',algorithm=MD5,algorithm="SHA-256"'),
    AUTH_HEADER.replace(",algorithm=MD5", ",algorithm=MD5-sess"),
    AUTH_HEADER.replace(",algorithm=MD5", ",algorithm=SHA-256"),
    AUTH_HEADER.replace(",algorithm=MD5", ',algorithm=MD5,qop=auth,nc=00000001,cnonce="c"'),
    AUTH_HEADER.replace(",algorithm=MD5", ',algorithm=MD5,qop="auth",nc=00000001,cnonce="c"'),
    AUTH_HEADER.replace(",algorithm=MD5", ",algorithm=MD5,qop=auth-int"),
    AUTH_HEADER.replace(",algorithm=MD5", ',algorithm=MD5,x-odd="y",z=1'),  # unknown parameters
    AUTH_HEADER.replace(",algorithm=MD5", ",algorithm=MD5,"),
    AUTH_HEADER.replace(",algorithm=MD5", ",algorithm=MD5 x"),
    AUTH_HEADER.replace('response="', 'response="\u00e9'),
    AUTH_HEADER.replace("Digest ", "Digest\t"),
    AUTH_HEADER.replace('realm="', "realm='").replace('",nonce', "',nonce", 1),
]


@pytest.mark.parametrize("value", _TRICKY)
def test_the_one_pattern_reading_of_credentials_is_the_general_one(value: str) -> None:
    # quoted strings with escapes or commas, repeated, unknown and odd parameters, other
    # algorithms and qop: Credentials.parse (which tries _PLAIN_DIGEST first) gives what the
    # general reading gives, credentials or the same refusal
    def read(parse: Callable[[str], Credentials]) -> Credentials | str:
        try:
            return parse(value)
        except AuthError as exc:
            return str(exc)

    assert read(Credentials.parse) == read(Credentials._parse)


class TestNonceStore:
    def test_the_challenge_header_written_directly_is_the_challenge_serialized(self) -> None:
        for qop in (False, True):
            for algorithm in ("MD5", "SHA-256"):
                a = NonceStore(realm="3402000000", qop=qop, algorithm=algorithm, token=lambda n: "ab" * n)
                b = NonceStore(realm="3402000000", qop=qop, algorithm=algorithm, token=lambda n: "ab" * n)
                for now in (5.0, 5.001):
                    assert a.challenge_header("10.0.0.1", now) == b.challenge("10.0.0.1", now).serialize()
                assert a._spent == b._spent and a._serial == b._serial

    def test_a_nonce_is_sealed_with_blake2b_keyed_by_the_stores_secret(self) -> None:
        # each seal starts from a copy of the keyed state: none may leave anything in it for the next
        store = NonceStore(realm="3402000000", token=lambda n: "5a" * n)
        key = bytes.fromhex("5a" * 32)
        for stamp, host in (("0193a5f2c3d400000001", "10.0.0.1"), ("0193a5f2c3d400000002", "10.0.0.1"),
                            ("0193a5f2c3d400000001", "10.0.0.1"), ("0193a5f2c3d400000001", "::1")):  # fmt: skip
            expected = hashlib.blake2b(f"{stamp}:{host}".encode(), key=key, digest_size=16).hexdigest()
            assert store._seal(stamp, host) == expected
        assert store.verify(self._creds(store, 5.0), method="REGISTER", password="12345678", host="127.0.0.1",
                            now=5.0) is Verdict.OK  # fmt: skip

    @given(
        st.sampled_from([None, "auth"]),
        st.sampled_from(["sip:34020000002000000001@3402000000", "sip:x@y", "sip:é@y"]),
        st.sampled_from(["REGISTER", "INVITE"]),
        st.text(max_size=8),
    )
    def test_the_expected_response_taken_directly_is_the_definitions(
        self, qop: str | None, uri: str, method: str, password: str
    ) -> None:
        store = NonceStore(realm="3402000000")
        creds = Credentials(
            "34020000001320000001", "3402000000", "0" * 52, uri, "x",
            qop=qop, nc="00000001" if qop else None, cnonce="c0" if qop else None,
        )  # fmt: skip
        for _ in range(2):  # the second time with HA2 kept
            assert store._expected(creds, password, method) == creds.expected(password, method)

    def _creds(
        self, store: NonceStore, now: float, *, password: str = "12345678", host: str = "127.0.0.1", **kw: object
    ) -> Credentials:
        ch = store.challenge(host, now)
        return authorization_for(
            ch, method="REGISTER", uri=VECTOR["uri"], username=VECTOR["username"], password=password, **kw
        )  # type: ignore[arg-type]

    def test_ok_then_replay_is_stale(self) -> None:
        store = NonceStore(realm="3402000000")
        creds = self._creds(store, 0.0)
        assert store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=1.0) is Verdict.OK
        assert store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=2.0) is Verdict.STALE

    @pytest.mark.parametrize(
        "case", ["ok", "wrong password", "wrong realm", "other address", "expired", "unknown nonce", "replay"]
    )
    def test_the_values_of_plain_credentials_get_the_verdict_of_the_credentials(self, case: str) -> None:
        # the quick REGISTER checks plain_digest's five values (verify_values), the registrar a
        # Credentials (verify): twin stores (same secret) must answer alike, case by case
        stores = [NonceStore(realm="3402000000", lifetime=60, token=lambda n: "cd" * n) for _ in range(2)]
        header = ""
        for store in stores:
            creds = self._creds(store, 0.0, password="wrong" if case == "wrong password" else "12345678")
            header = creds.serialize()
        if case == "wrong realm":
            header = header.replace('realm="3402000000"', 'realm="3401000000"')
        if case == "unknown nonce":
            header = AUTH_HEADER
        plain = plain_digest(header)
        assert plain is not None and plain == dataclasses.astuple(Credentials.parse(header))[:5]
        host = "10.0.0.9" if case == "other address" else "127.0.0.1"
        now = 61.0 if case == "expired" else 1.0
        by_values, by_creds = stores
        for _ in range(2 if case == "replay" else 1):  # a replay: the second check of each
            got = by_values.verify_values(*plain, "REGISTER", "12345678", host, now)
            want = by_creds.verify(
                Credentials.parse(header), method="REGISTER", password="12345678", host=host, now=now
            )
            assert got is want
        assert by_values._spent == by_creds._spent
        assert (got is Verdict.OK) is (case == "ok")

    @pytest.mark.parametrize("first_by_values", [True, False])
    def test_a_nonce_spent_by_its_values_is_a_replay_to_the_credentials_and_back(self, first_by_values: bool) -> None:
        store = NonceStore(realm="3402000000")
        creds = self._creds(store, 0.0)
        plain = plain_digest(creds.serialize())
        assert plain is not None
        verdicts = []
        for by_values in (first_by_values, not first_by_values):
            if by_values:
                verdicts.append(store.verify_values(*plain, "REGISTER", "12345678", "127.0.0.1", 1.0))
            else:
                verdicts.append(store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=1.0))
        assert verdicts == [Verdict.OK, Verdict.STALE]

    @pytest.mark.parametrize(
        "header",
        [
            'Digest realm="3402000000", username="u", nonce="n", uri="sip:x@y", response="r"',
            'Digest username="u", realm="r", nonce="n", uri="sip:x@y", response="r", qop=auth, nc=1, cnonce="c"',
            'Digest username="u", realm="r", nonce="n", uri="sip:x@y", response="r", algorithm=SHA-256',
            "Basic dTpw",
        ],
    )
    def test_credentials_of_another_shape_have_no_plain_values(self, header: str) -> None:
        assert plain_digest(header) is None

    def test_wrong_password(self) -> None:
        store = NonceStore(realm="3402000000")
        creds = self._creds(store, 0.0, password="wrong")
        assert (
            store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=1.0)
            is Verdict.BAD_RESPONSE
        )

    def test_expired_nonce_is_stale(self) -> None:
        store = NonceStore(realm="3402000000", lifetime=60)
        creds = self._creds(store, 0.0)
        assert store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=61.0) is Verdict.STALE

    def test_nonce_is_bound_to_the_address_it_was_issued_to(self) -> None:
        store = NonceStore(realm="3402000000")
        creds = self._creds(store, 0.0, host="10.0.0.1")
        assert store.verify(creds, method="REGISTER", password="12345678", host="10.0.0.2", now=1.0) is Verdict.STALE

    def test_unknown_nonce_is_stale(self) -> None:
        store = NonceStore(realm="3402000000")
        creds = Credentials.parse(AUTH_HEADER)
        assert store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=0.0) is Verdict.STALE

    def test_wrong_realm(self) -> None:
        store = NonceStore(realm="3401000000")
        creds = Credentials.parse(AUTH_HEADER)
        assert (
            store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=0.0)
            is Verdict.WRONG_REALM
        )

    def test_qop_nonce_count_must_increase(self) -> None:
        store = NonceStore(realm="3402000000", qop=True)
        ch = store.challenge("127.0.0.1", 0.0)
        assert ch.qop == "auth"
        args = {"method": "REGISTER", "uri": VECTOR["uri"], "username": VECTOR["username"], "password": "12345678"}
        c1 = authorization_for(ch, nc=1, cnonce="a", **args)  # type: ignore[arg-type]
        c2 = authorization_for(ch, nc=2, cnonce="b", **args)  # type: ignore[arg-type]
        verify = {"method": "REGISTER", "password": "12345678", "host": "127.0.0.1"}
        assert store.verify(c1, now=1.0, **verify) is Verdict.OK  # type: ignore[arg-type]
        assert store.verify(c1, now=1.0, **verify) is Verdict.STALE  # type: ignore[arg-type]
        assert store.verify(c2, now=1.0, **verify) is Verdict.OK  # type: ignore[arg-type]

    def test_sha256_store(self) -> None:
        store = NonceStore(realm="3402000000", algorithm="SHA-256")
        creds = self._creds(store, 0.0)
        assert creds.algorithm == "SHA-256"
        assert store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=1.0) is Verdict.OK

    def test_algorithm_mismatch(self) -> None:
        store = NonceStore(realm="3402000000", algorithm="SHA-256")
        creds = Credentials.parse(AUTH_HEADER)
        assert store.verify(creds, method="REGISTER", password="x", host="127.0.0.1", now=0.0) is Verdict.BAD_ALGORITHM

    def test_challenges_and_one_time_nonces_keep_no_objects_and_a_replay_is_stale(self) -> None:
        # a REGISTER flood must cost no memory (issue 10); used nonces are bits, not records
        store = NonceStore(realm="r", lifetime=5)
        for i in range(1000):
            store.challenge("h", float(i) / 1000)
        creds = [self._creds_r(store, 1.0 + i / 100) for i in range(50)]
        for c in creds:
            assert store.verify(c, method="REGISTER", password="12345678", host="h", now=1.6) is Verdict.OK
        assert len(store) == 0
        for c in (creds[0], creds[-1]):
            assert store.verify(c, method="REGISTER", password="12345678", host="h", now=1.7) is Verdict.STALE

    def test_a_nonce_sealed_the_old_way_or_by_another_run_is_stale_not_an_error(self) -> None:
        # nonces issued before the upgrade (HMAC-SHA-256 seal under the same secret) or before a
        # restart (another secret): a fresh challenge with stale=true, the device asks again
        import hmac as hmac_

        secret = lambda n: "ab" * n  # noqa: E731
        store = NonceStore(realm="3402000000", token=secret)
        fresh = store.challenge("127.0.0.1", 0.0)
        stamp = fresh.nonce[:20]
        old_seal = hmac_.digest(bytes.fromhex("ab" * 32), f"{stamp}:127.0.0.1".encode(), "sha256").hex()[:32]
        other_run = NonceStore(realm="3402000000").challenge("127.0.0.1", 0.0)
        args = {"method": "REGISTER", "uri": VECTOR["uri"], "username": VECTOR["username"], "password": "12345678"}
        for challenge in (Challenge("3402000000", stamp + old_seal), other_run):
            creds = authorization_for(challenge, **args)  # type: ignore[arg-type]
            assert store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=1.0) is (
                Verdict.STALE
            )
        creds = authorization_for(fresh, **args)  # type: ignore[arg-type]
        assert store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=1.0) is Verdict.OK
        assert store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=1.0) is Verdict.STALE

    @pytest.mark.parametrize("qop", [False, True])
    def test_text_that_is_no_ascii_in_a_nonce_or_response_is_a_verdict_not_an_exception(self, qop: bool) -> None:
        # compare_digest raises TypeError on str holding non-ASCII: a nonce of the right length
        # with an "é" in it was answered 500 (a logged internal error) instead of stale
        store = NonceStore(realm="3402000000", qop=qop)
        verify = {"method": "REGISTER", "password": "12345678", "host": "127.0.0.1", "now": 1.0}
        odd = Credentials("u", "3402000000", "\u00e9" * 52, "sip:x@y", "0" * 32, qop="auth" if qop else None,
                          nc="00000001" if qop else None, cnonce="c" if qop else None)  # fmt: skip
        assert store.verify(odd, **verify) is Verdict.STALE  # type: ignore[arg-type]
        live = self._creds(store, 0.0)
        wrong = dataclasses.replace(live, response="\u00e9" * 32)
        assert store.verify(wrong, **verify) is Verdict.BAD_RESPONSE  # type: ignore[arg-type]
        assert store.verify(live, **verify) is Verdict.OK  # type: ignore[arg-type]

    @pytest.mark.parametrize("qop", [False, True])
    def test_a_user_name_that_is_no_utf8_hashes_as_the_bytes_sent(self, qop: bool) -> None:
        # parse_message reads bytes that are no UTF-8 (a GBK name) as lone surrogates; the digest
        # is over the bytes the device sent, so they hash as those bytes (they raised before)
        store = NonceStore(realm="3402000000", qop=qop)
        name = "\u6444".encode("gbk").decode("utf-8", "surrogateescape")
        ch = store.challenge("127.0.0.1", 0.0)
        creds = authorization_for(
            ch, method="REGISTER", uri="sip:\udcff@y", username=name, password="p", cnonce="\udcfe"
        )
        ha1 = hashlib.md5(b"\xc9\xe3:3402000000:p").hexdigest()
        ha2 = hashlib.md5(b"REGISTER:sip:\xff@y").hexdigest()
        tail = f"{creds.nc}:".encode() + b"\xfe:auth:" if qop else b""
        assert creds.response == hashlib.md5(f"{ha1}:{ch.nonce}:".encode() + tail + ha2.encode()).hexdigest()
        assert store._expected(creds, "p", "REGISTER") == creds.expected("p", "REGISTER") == creds.response
        assert store.verify(creds, method="REGISTER", password="p", host="127.0.0.1", now=1.0) is Verdict.OK

    def test_a_nonce_older_than_the_window_is_stale(self) -> None:
        store = NonceStore(realm="r", window=8)
        first = self._creds_r(store, 0.0)
        for _ in range(8):
            store.challenge("h", 0.1)  # its slot is taken by a newer serial
        assert store.verify(first, method="REGISTER", password="12345678", host="h", now=0.2) is Verdict.STALE
        fresh = self._creds_r(store, 0.3)
        assert store.verify(fresh, method="REGISTER", password="12345678", host="h", now=0.4) is Verdict.OK

    def test_qop_nonces_are_bounded_and_expire_without_letting_a_replay_through(self) -> None:
        store = NonceStore(realm="r", qop=True, max_nonces=10, lifetime=5)
        args = {"method": "REGISTER", "uri": VECTOR["uri"], "username": VECTOR["username"], "password": "12345678"}
        verify = {"method": "REGISTER", "password": "12345678", "host": "h"}
        creds = [authorization_for(store.challenge("h", i / 100), nc=1, cnonce="c", **args) for i in range(50)]  # type: ignore[arg-type]
        for c in creds:
            assert store.verify(c, now=0.6, **verify) is Verdict.OK  # type: ignore[arg-type]
        assert len(store) == 10
        for c in (creds[0], creds[-1]):  # forgotten to keep the bound, or remembered: stale either way
            assert store.verify(c, now=0.7, **verify) is Verdict.STALE  # type: ignore[arg-type]
        late = authorization_for(store.challenge("h", 100.0), nc=1, cnonce="c", **args)  # type: ignore[arg-type]
        assert store.verify(late, now=100.0, **verify) is Verdict.OK  # type: ignore[arg-type]
        assert len(store) == 1  # the others expired

    def test_a_forged_or_altered_nonce_is_stale(self) -> None:
        store = NonceStore(realm="3402000000")
        ch = store.challenge("127.0.0.1", 0.0)
        later = f"{50_000:012x}" + ch.nonce[12:]  # the stamp moved forward, the seal kept
        for nonce in (later, ch.nonce[:-1] + ("0" if ch.nonce[-1] != "0" else "1"), ch.nonce + "00", "x" * 52):
            forged = Challenge(realm=ch.realm, nonce=nonce, algorithm=ch.algorithm)
            creds = authorization_for(
                forged, method="REGISTER", uri=VECTOR["uri"], username=VECTOR["username"], password="12345678"
            )
            assert store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=1.0) is (
                Verdict.STALE
            )
        # and a nonce from another gateway (another secret) is unknown here
        other = NonceStore(realm="3402000000")
        creds = self._creds(other, 0.0)
        assert store.verify(creds, method="REGISTER", password="12345678", host="127.0.0.1", now=1.0) is Verdict.STALE

    def _creds_r(self, store: NonceStore, now: float) -> Credentials:
        ch = store.challenge("h", now)
        return authorization_for(
            ch, method="REGISTER", uri=VECTOR["uri"], username=VECTOR["username"], password="12345678"
        )
