"""HTTP digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616).

Server side: :class:`NonceStore` issues nonces and checks digest credentials
(MD5 or SHA-256, ``-sess`` variants, with or without ``qop=auth``). A nonce
expires after a lifetime (the answer is then a fresh challenge with
``stale=true``), is bound to the address it was issued to, and cannot be
replayed: without qop it is good for one request; with qop each ``nc`` must
be higher than the last one seen.

Client side: :func:`choose_challenge` picks the challenge to answer out of a 401's
``WWW-Authenticate`` (or a 407's ``Proxy-Authenticate``) values, :func:`authorization_for`
answers it, and :func:`credentials_header` names the header the answer goes in.

Time (``now``) and randomness are passed in; nothing here reads a clock.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from gb28181gw.errors import AuthError

from .params import quote, unquote

_HASHES: dict[str, Callable[[bytes], Any]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
if "sm3" in hashlib.algorithms_available:  # pragma: no cover - depends on the OpenSSL build
    _HASHES["SM3"] = lambda data: hashlib.new("sm3", data)

ALGORITHMS = frozenset(_HASHES) | frozenset(f"{a}-SESS" for a in _HASHES)


def _h(algorithm: str, text: str) -> str:
    # surrogateescape: a header's bytes that are no UTF-8 (a GBK user name) were read as lone
    # surrogates (parse_message), and hash as the bytes the client sent
    digest: str = _HASHES[algorithm](text.encode("utf-8", "surrogateescape")).hexdigest()
    return digest


def _base(algorithm: str) -> str:
    alg = algorithm.upper()
    return alg[:-5] if alg.endswith("-SESS") else alg


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1); hex in lower case.

    ``nc`` and ``cnonce`` enter the hash exactly as written by the client.

    Raises:
        AuthError: for an unsupported algorithm or qop.
    """
    alg = algorithm.upper()
    base = _base(alg)
    if base not in _HASHES:
        raise AuthError(f"unsupported digest algorithm {algorithm!r}")
    ha1 = _h(base, f"{username}:{realm}:{password}")
    if alg.endswith("-SESS"):
        ha1 = _h(base, f"{ha1}:{nonce}:{cnonce or ''}")
    ha2 = _h(base, f"{method}:{uri}")
    if qop is None:
        return _h(base, f"{ha1}:{nonce}:{ha2}")
    if qop != "auth":
        raise AuthError(f"unsupported qop {qop!r}")
    return _h(base, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# name = token or quoted-string, then a comma or the end (RFC 2617 §1.2 auth-param lists)
_AUTH_PARAM = r'\s*([A-Za-z0-9_.!%*+`\'~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*'
_AUTH_PARAM_RE = re.compile(_AUTH_PARAM)


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest k=v, k="v"`` into the scheme and lower-cased parameter names.

    Raises:
        AuthError: when the header is not of that form.
    """
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    rest = rest.strip()
    if not scheme or not rest:
        raise AuthError(f"malformed authentication header {value[:80]!r}")
    params = _plain_params(rest)
    if params is None:
        params = {name.lower(): unquote(val) for name, val in _AUTH_PARAM_RE.findall(rest)}
    if not params:
        raise AuthError(f"malformed authentication parameters {rest[:80]!r}")
    # junk between well-formed parameters is ignored, not fatal: what matters is that the
    # mandatory ones are there and that the digest verifies
    return scheme, params


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.!%*+`'~-")


def _plain_params(rest: str) -> dict[str, str] | None:
    """The fast path of :func:`parse_auth_params`: ``k="v",k=v`` split at its commas.

    What devices send (``username="…",realm="…",nonce="…",uri="…",response="…",algorithm=MD5``)
    is parsed with ``str.split`` instead of the regex, 3-4 times faster. Anything else — an
    escape, a comma or quote inside a value, white space inside an unquoted one, an empty item,
    a name or an unquoted value that is no token — returns ``None``, and the regex decides; both give the same
    result on what this accepts (``tests/core/sip/test_auth.py`` compares them).
    """
    if "\\" in rest:
        return None
    params: dict[str, str] = {}
    for item in rest.split(","):
        name, eq, value = item.partition("=")
        if not eq:
            return None
        name = name.strip()
        value = value.strip()
        if not name or not _TOKEN_CHARS.issuperset(name):
            return None
        if value[:1] == '"':
            if len(value) < 2 or value[-1] != '"' or '"' in value[1:-1]:
                return None
            value = value[1:-1]
        elif not _TOKEN_CHARS.issuperset(value):
            return None
        params[name.lower()] = value
    return params


@dataclass(frozen=True, slots=True)
class Challenge:
    """A ``WWW-Authenticate``/``Proxy-Authenticate`` digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: str | None = None
    opaque: str | None = None
    stale: bool = False

    def serialize(self) -> str:
        """The header value. Quoting follows RFC 2617 (``algorithm`` and ``stale`` unquoted)."""
        if self.opaque is None and not self.qop and not self.stale and '"' not in self.realm and "\\" not in self.realm:
            # the challenge sent to every device, written directly (nonces are hex)
            return f'Digest realm="{self.realm}",nonce="{self.nonce}",algorithm={self.algorithm}'
        parts = [f"Digest realm={quote(self.realm)}", f"nonce={quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={quote(self.qop)}")
        if self.stale:
            parts.append("stale=true")
        return ",".join(parts)

    @classmethod
    def parse(cls, value: str) -> Challenge:
        """Parse a challenge header value.

        Raises:
            AuthError: if it is not a digest challenge with realm and nonce.
        """
        scheme, p = parse_auth_params(value)
        if scheme.lower() != "digest" or "realm" not in p or "nonce" not in p:
            raise AuthError(f"not a digest challenge: {value[:80]!r}")
        qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
        return cls(
            realm=p["realm"],
            nonce=p["nonce"],
            algorithm=p.get("algorithm", "MD5"),
            qop="auth" if "auth" in qops else None,
            opaque=p.get("opaque"),
            stale=p.get("stale", "").lower() == "true",
        )


#: The Authorization devices send, whole: the five mandatory parameters quoted, in RFC 3261's
#: order, then ``algorithm=MD5`` or nothing (no qop). A value holds no quote, backslash or comma,
#: so :func:`_plain_params` would read it alike (``tests/core/sip/test_auth.py`` compares the two);
#: anything else — another order, qop, opaque, odd spacing — is read by the general path.
_PLAIN_DIGEST = re.compile(
    r'Digest +username="([^"\\,]*)", *realm="([^"\\,]*)", *nonce="([^"\\,]*)", *uri="([^"\\,]*)",'
    r' *response="([^"\\,]*)"(?:, *algorithm=(?:MD5|"MD5"))?'
)


def plain_digest(value: str) -> tuple[str, str, str, str, str] | None:
    """(username, realm, nonce, uri, response in lower case) of the Authorization devices send
    (``_PLAIN_DIGEST``: MD5, no qop, no opaque), what :meth:`Credentials.parse` gives for it;
    ``None`` for any other shape (then ``Credentials.parse`` reads it the general way)."""
    plain = _PLAIN_DIGEST.fullmatch(value)
    if plain is None:
        return None
    username, realm, nonce, uri, response = plain.group(1, 2, 3, 4, 5)
    return username, realm, nonce, uri, response.lower()


@dataclass(frozen=True, slots=True, init=False)
class Credentials:
    """Digest credentials from an ``Authorization`` header (RFC 3261 §22.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    # Written out, not left to dataclasses (init=False): mypyc compiles the methods a class's source
    # has, while the __init__ dataclasses generates stays interpreted (issue 16), one per REGISTER the
    # registrar checks. object.__setattr__ as in the generated one (the class is frozen): mypyc makes
    # each a plain store of the field.
    def __init__(
        self,
        username: str,
        realm: str,
        nonce: str,
        uri: str,
        response: str,
        algorithm: str = "MD5",
        qop: str | None = None,
        nc: str | None = None,
        cnonce: str | None = None,
        opaque: str | None = None,
    ) -> None:
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "realm", realm)
        object.__setattr__(self, "nonce", nonce)
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "response", response)
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "qop", qop)
        object.__setattr__(self, "nc", nc)
        object.__setattr__(self, "cnonce", cnonce)
        object.__setattr__(self, "opaque", opaque)

    @classmethod
    def parse(cls, value: str) -> Credentials:
        """Parse an Authorization value.

        Raises:
            AuthError: if it is not digest, or a mandatory parameter is missing.
        """
        plain = plain_digest(value)
        if plain is not None:
            username, realm, nonce, uri, response = plain
            return cls(username, realm, nonce, uri, response)
        return cls._parse(value)

    @classmethod
    def _parse(cls, value: str) -> Credentials:
        """:meth:`parse` for any shape (the general reading)."""
        scheme, p = parse_auth_params(value)
        if scheme.lower() != "digest":
            raise AuthError(f"authentication scheme {scheme[:20]!r} is not Digest")
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
        if missing:
            raise AuthError(f"digest credentials lack {', '.join(missing)}")
        qop = p.get("qop")
        if qop is not None and ("nc" not in p or "cnonce" not in p):
            raise AuthError("qop given without nc and cnonce")
        return cls(
            username=p["username"],
            realm=p["realm"],
            nonce=p["nonce"],
            uri=p["uri"],
            response=p["response"].lower(),
            algorithm=p.get("algorithm", "MD5"),
            qop=qop,
            nc=p.get("nc"),
            cnonce=p.get("cnonce"),
            opaque=p.get("opaque"),
        )

    def serialize(self) -> str:
        """The header value."""
        parts = [
            f"Digest username={quote(self.username)}",
            f"realm={quote(self.realm)}",
            f"nonce={quote(self.nonce)}",
            f"uri={quote(self.uri)}",
            f"response={quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.qop:
            parts += [f"qop={self.qop}", f"nc={self.nc}", f"cnonce={quote(self.cnonce or '')}"]
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        return ",".join(parts)

    def expected(self, password: str, method: str) -> str:
        """The response these credentials should carry for ``password``."""
        return digest_response(
            algorithm=self.algorithm,
            username=self.username,
            realm=self.realm,
            password=password,
            method=method,
            uri=self.uri,
            nonce=self.nonce,
            qop=self.qop,
            nc=self.nc,
            cnonce=self.cnonce,
        )


def authorization_for(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
    token: Callable[[int], str] = secrets.token_hex,
) -> Credentials:
    """Answer ``challenge`` (client side); uses qop=auth when the server offers it."""
    qop = challenge.qop
    nc_text = f"{nc:08x}" if qop else None
    cn = (cnonce or token(8)) if qop or challenge.algorithm.upper().endswith("-SESS") else None
    response = digest_response(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        qop=qop,
        nc=nc_text,
        cnonce=cn,
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        qop=qop,
        nc=nc_text,
        cnonce=cn,
        opaque=challenge.opaque,
    )


#: Client preference among the algorithms a server offers (RFC 8760 §2.4: the strongest it supports).
_CLIENT_PREFERENCE = ("SHA-256", "SHA-256-SESS", "MD5", "MD5-SESS")


def choose_challenge(values: list[str]) -> Challenge | None:
    """The digest challenge to answer among a response's challenge header values (client side).

    A server may offer one challenge per algorithm (RFC 8760 §2.4); the strongest we
    support wins (SHA-256 before MD5). Values that are not digest challenges, or whose
    algorithm we cannot compute, are skipped. ``None`` when nothing can be answered.
    """
    usable: list[Challenge] = []
    for value in values:
        try:
            challenge = Challenge.parse(value)
        except AuthError:
            continue
        if challenge.algorithm.upper() in ALGORITHMS:
            usable.append(challenge)
    if not usable:
        return None
    rank = {name: i for i, name in enumerate(_CLIENT_PREFERENCE)}
    return min(usable, key=lambda c: rank.get(c.algorithm.upper(), len(rank)))


def credentials_header(status: int) -> tuple[str, str]:
    """(challenge header, credentials header) for a 401 or a 407 (RFC 3261 §22.2, §22.3)."""
    if status == 407:
        return "Proxy-Authenticate", "Proxy-Authorization"
    return "WWW-Authenticate", "Authorization"


class Verdict(Enum):
    """Result of checking credentials."""

    OK = "ok"
    STALE = "stale"  # nonce expired, unknown, replayed, or issued to another address: challenge again, stale=true
    WRONG_REALM = "wrong-realm"
    BAD_ALGORITHM = "bad-algorithm"
    BAD_RESPONSE = "bad-response"  # wrong password (or wrong username)

    @property
    def is_ok(self) -> bool:
        """Whether the request is authenticated."""
        return self is Verdict.OK


#: Hex digits of a nonce's stamp (issued time in ms, 48 bits; serial, 32 bits) and of its seal.
_STAMP_HEX = 20
_MAC_HEX = 32
#: (method, uri) pairs whose HA2 is kept: a site's devices all register to one Request-URI.
_HA2_KEPT = 256


@dataclass(slots=True)
class _NonceState:
    issued_ms: int  # when it was issued (its stamp: monotonic milliseconds, 48 bits)
    last_nc: int


def secure_token() -> Callable[[int], str]:
    """A ``token(nbytes) -> hex`` drawing from the OS's CSPRNG, 4 KiB at a time.

    Nonces must be unpredictable (RFC 7616 §3.3); reading the OS pool in blocks rather
    than per nonce saves a system call per challenge.
    """
    pool = b""

    def token(nbytes: int) -> str:
        nonlocal pool
        if len(pool) < nbytes:
            pool = os.urandom(4096)
        chunk, pool = pool[:nbytes], pool[nbytes:]
        return chunk.hex()

    return token


class NonceStore:
    """Issues and checks server nonces (RFC 7616 §3.3, §5.4).

    A challenge keeps no state: its nonce carries when it was issued and a serial, sealed
    with a MAC (keyed BLAKE2b) over them and the client's address under a secret drawn at start-up. A
    REGISTER flood therefore costs no memory (each challenge used to be remembered for the
    nonce's lifetime, pinning the heap long after the flood). A nonce is good for one request
    without qop: a bit per serial in a sliding window marks it used, so a captured request
    cannot be replayed and no object is kept per registration; a nonce older than the window
    is stale (the client asks again). With qop its ``nc`` must increase: only those nonces
    are remembered, and only a client knowing a password can add one.

    Args:
        realm: the realm to challenge with (GB/T 28181: the 10-digit SIP domain).
        lifetime: seconds a nonce stays valid.
        algorithm: ``MD5`` (what devices speak), ``SHA-256``, or a ``-sess`` variant.
        qop: offer ``qop="auth"`` (many devices handle it; the safest universal
            challenge omits it, PROTOCOL.md §3.2).
        max_nonces: qop nonces remembered at once; past it the oldest are forgotten, and
            every nonce issued before the last one forgotten is answered ``stale`` (the
            client asks again), so forgetting never lets a replay through.
        window: challenges whose serials are tracked for one-time use (a power of two);
            a nonce whose serial is older is stale.
        token: random source ``token(nbytes) -> hex``: the MAC secret (256 bits).
    """

    def __init__(
        self,
        *,
        realm: str,
        lifetime: float = 300.0,
        algorithm: str = "MD5",
        qop: bool = False,
        max_nonces: int = 200_000,
        window: int = 1 << 20,
        token: Callable[[int], str] | None = None,
    ) -> None:
        if algorithm.upper() not in ALGORITHMS:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        if window < 8 or window & (window - 1) or window > 1 << 31:
            raise ValueError("window must be a power of two from 8 to 2**31")
        self.realm = realm
        self.lifetime = lifetime
        self.algorithm = algorithm.upper()
        self.qop = qop
        self._max = max_nonces
        self._secret = bytes.fromhex((token or secure_token())(32))
        # the key hashed in once: each seal copies this state rather than hashing the key block again
        self._keyed = hashlib.blake2b(key=self._secret, digest_size=_MAC_HEX // 2)
        self._serial = 0
        self._window = window
        self._spent = bytearray(window // 8)  # bit per serial: used once already
        self._used: OrderedDict[str, _NonceState] = OrderedDict()  # qop nonces and their last nc
        self._horizon_ms = -1  # qop nonces issued at or before this were possibly used and forgotten
        # Challenge.serialize's plain shape, with %s for the nonce (None: another shape)
        plain = not qop and '"' not in realm and "\\" not in realm and "%" not in realm
        self._plain_header = f'Digest realm="{realm}",nonce="%s",algorithm={self.algorithm}' if plain else None
        self._ha2: dict[tuple[str, str], str] = {}  # (method, uri) → MD5 HA2: a site's devices share one

    def _seal(self, stamp: str, host: str) -> str:
        # keyed BLAKE2b is a MAC (RFC 7693 §2.5: the key makes it one) and a third of the cost of HMAC-SHA-256 here,
        # paid twice per registration (the challenge and its check)
        mac = self._keyed.copy()  # = hashlib.blake2b(key=self._secret, digest_size=16), a quarter cheaper
        mac.update(f"{stamp}:{host}".encode())
        return mac.hexdigest()

    def _issue(self, host: str, now: float) -> str:
        """A fresh nonce for ``host``."""
        serial = self._serial = (self._serial + 1) & 0xFFFFFFFF
        slot = serial & (self._window - 1)
        self._spent[slot >> 3] &= ~(1 << (slot & 7)) & 0xFF  # the slot's previous serial left the window
        # issued time in ms and a serial: unique per challenge, readable back by verify()
        stamp = f"{int(now * 1000) & 0xFFFFFFFFFFFF:012x}{serial:08x}"
        return stamp + self._seal(stamp, host)

    def challenge(self, host: str, now: float, *, stale: bool = False) -> Challenge:
        """Issue a fresh nonce for a client at ``host`` and return the challenge."""
        return Challenge(
            realm=self.realm,
            nonce=self._issue(host, now),
            algorithm=self.algorithm,
            qop="auth" if self.qop else None,
            stale=stale,
        )

    def challenge_header(self, host: str, now: float) -> str:
        """``challenge(host, now).serialize()``: the header value written directly, without the
        :class:`Challenge` (the quick path challenges every device of a storm once)."""
        if self._plain_header is None:
            return self.challenge(host, now).serialize()
        return self._plain_header % self._issue(host, now)

    def verify(self, credentials: Credentials, *, method: str, password: str, host: str, now: float) -> Verdict:
        """Check ``credentials`` for a request of ``method`` from ``host`` against ``password``.

        A nonce is consumed by a successful check without qop, and its ``nc``
        recorded with qop, so a captured request cannot be replayed.
        """
        c = credentials
        return self.verify_values(
            c.username, c.realm, c.nonce, c.uri, c.response, method, password, host, now,
            c.algorithm, c.qop, c.nc, c.cnonce,
        )  # fmt: skip

    def verify_values(
        self,
        username: str,
        realm: str,
        nonce: str,
        uri: str,
        response: str,
        method: str,
        password: str,
        host: str,
        now: float,
        algorithm: str = "MD5",
        qop: str | None = None,
        nc: str | None = None,
        cnonce: str | None = None,
    ) -> Verdict:
        """:meth:`verify` of the credentials' values, without a :class:`Credentials`.

        Why: the quick REGISTER reads a plain Authorization into these five strings
        (:func:`plain_digest`); building the frozen dataclass from them cost more than the
        pattern that read them (its ``__init__`` stays interpreted under mypyc). Every check is
        this one method's, whichever way it is called (``response`` already lower case).
        """
        if realm != self.realm:
            return Verdict.WRONG_REALM
        if algorithm.upper() != self.algorithm:
            return Verdict.BAD_ALGORITHM
        stamp = nonce[:_STAMP_HEX]
        if (
            len(nonce) != _STAMP_HEX + _MAC_HEX
            or not nonce.isascii()  # compare_digest refuses other text (a TypeError, answered 500)
            or not hmac.compare_digest(nonce[_STAMP_HEX:], self._seal(stamp, host))
        ):
            return Verdict.STALE  # not ours, not for this address, or from before a restart
        issued_ms = int(stamp[:12], 16)
        age = ((int(now * 1000) - issued_ms) & 0xFFFFFFFFFFFF) / 1000  # ms in 48 bits wrap
        serial = int(stamp[12:], 16)
        if age > self.lifetime or (self._serial - serial) & 0xFFFFFFFF >= self._window:
            return Verdict.STALE
        slot = serial & (self._window - 1)
        count = 0
        state: _NonceState | None = None
        if qop is not None:
            if issued_ms <= self._horizon_ms:
                return Verdict.STALE
            self._expire(now)
            state = self._used.get(nonce)
            try:
                count = int(nc or "", 16)
            except ValueError:
                return Verdict.BAD_RESPONSE
            if state is not None and count <= state.last_nc:
                return Verdict.STALE
        elif self._spent[slot >> 3] >> (slot & 7) & 1:
            return Verdict.STALE  # used once already: a replay
        try:
            expected = self._expected_of(username, realm, nonce, uri, password, method, algorithm, qop, nc, cnonce)
        except AuthError:
            return Verdict.BAD_ALGORITHM
        if not response.isascii() or not hmac.compare_digest(expected, response):
            return Verdict.BAD_RESPONSE
        if qop is None:
            self._spent[slot >> 3] |= 1 << (slot & 7)
            return Verdict.OK
        if state is None:
            state = self._used[nonce] = _NonceState(issued_ms, count)
            while len(self._used) > self._max:
                _, forgotten = self._used.popitem(last=False)
                self._horizon_ms = max(self._horizon_ms, forgotten.issued_ms)
        state.last_nc = count
        return Verdict.OK

    def _expected(self, credentials: Credentials, password: str, method: str) -> str:
        """``credentials.expected(password, method)``, by :meth:`_expected_of`."""
        c = credentials
        return self._expected_of(
            c.username, c.realm, c.nonce, c.uri, password, method, c.algorithm, c.qop, c.nc, c.cnonce
        )

    def _expected_of(
        self,
        username: str,
        realm: str,
        nonce: str,
        uri: str,
        password: str,
        method: str,
        algorithm: str,
        qop: str | None,
        nc: str | None,
        cnonce: str | None,
    ) -> str:
        """The response expected of these credentials' values: for plain MD5 (what devices use)
        with the hashes taken directly and HA2 kept per (method, uri); else :func:`digest_response`."""
        if self.algorithm != "MD5" or (qop is not None and qop != "auth"):
            return digest_response(
                algorithm=algorithm, username=username, realm=realm, password=password, method=method,
                uri=uri, nonce=nonce, qop=qop, nc=nc, cnonce=cnonce,
            )  # fmt: skip
        md5 = hashlib.md5
        ha1 = md5(f"{username}:{realm}:{password}".encode("utf-8", "surrogateescape")).hexdigest()
        key = (method, uri)
        ha2 = self._ha2.get(key)
        if ha2 is None:
            if len(self._ha2) >= _HA2_KEPT:
                self._ha2.clear()
            ha2 = self._ha2[key] = md5(f"{method}:{uri}".encode("utf-8", "surrogateescape")).hexdigest()
        if qop is None:
            return md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        text = f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"
        return md5(text.encode("utf-8", "surrogateescape")).hexdigest()

    def _expire(self, now: float) -> None:
        # kept in the order of first use, which follows issue within a nonce's lifetime
        used = self._used
        now_ms = int(now * 1000) & 0xFFFFFFFFFFFF
        while used:
            nonce, state = next(iter(used.items()))
            if ((now_ms - state.issued_ms) & 0xFFFFFFFFFFFF) / 1000 <= self.lifetime:
                break
            del used[nonce]

    def __len__(self) -> int:
        """Objects remembered: qop nonces in use (challenges and one-time nonces keep none)."""
        return len(self._used)
