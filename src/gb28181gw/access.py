"""Who may use the admin API: bearer tokens, their roles, and what each role may do, without I/O.

A token is ``gbgw_`` followed by 43 URL-safe characters (32 random bytes). It is shown once, when
it is made; the gateway keeps only its SHA-256 (:func:`digest_of`). A plain hash is enough for a
secret of 256 random bits: nobody can guess one, so nothing is gained by a slow password hash,
and a lookup by hash costs one dictionary access per request.

Roles are ordered: each may do everything the one below it may (:meth:`Role.allows`).

- ``viewer``: read devices, channels, streams, upstreams, the ledger and metrics;
- ``operator``: also reach the cameras: play, snapshot, PTZ, device control, playback, download,
  catalog refresh, the doctor;
- ``admin``: also add and remove devices, lift bans, change the ledger and what superiors see,
  manage tokens, read the audit trail.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from gb28181gw.errors import TokenError

__all__ = [
    "PREFIX",
    "Role",
    "Token",
    "check_name",
    "digest_of",
    "looks_like_token",
    "new_secret",
    "parse_authorization",
]

#: The start of every token: tells a leaked one apart in logs and secret scanners.
PREFIX = "gbgw_"
_SECRET_BYTES = 32
_TOKEN = re.compile(rf"{PREFIX}[A-Za-z0-9_-]{{43}}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class Role(StrEnum):
    """What a token may do; each role may do all the ones below it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may."""
        return self.rank >= needed.rank

    @classmethod
    def parse(cls, text: str) -> Role:
        """The role named ``text``; :class:`TokenError` naming the roles if it is none."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise TokenError(f"no role {text!r}: use one of {', '.join(r.value for r in cls)}") from None


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class Token:
    """A stored token: never its secret.

    Attributes:
        name: who holds it, unique (``nvr-team``, ``grafana``, ``zhang.wei``).
        role: what it may do.
        digest: SHA-256 of the secret, hex (:func:`digest_of`).
        created: wall-clock epoch seconds.
        revoked: when it was revoked (epoch seconds), 0.0 while it is valid. A revoked token
            stays stored so its name cannot be reused by mistake and the audit trail keeps
            meaning; it never authenticates again.
        last_used: when it last authenticated a request (epoch seconds, 0.0 never); kept
            in memory and written with the next token change, so it may lag after a restart.
    """

    name: str
    role: Role
    digest: str
    created: float
    revoked: float = 0.0
    last_used: float = 0.0

    @property
    def active(self) -> bool:
        return self.revoked == 0.0


def check_name(name: str) -> str:
    """``name`` if it can name a token; :class:`TokenError` saying why not."""
    if not _NAME.fullmatch(name):
        raise TokenError(
            f"token name {name!r} is not usable: 1 to 64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def new_secret() -> str:
    """A new token's secret (``gbgw_`` + 43 characters)."""
    return PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def looks_like_token(text: str) -> bool:
    """Whether ``text`` has a token's form (it may still be unknown, revoked or forged)."""
    return _TOKEN.fullmatch(text) is not None


def digest_of(secret: str) -> str:
    """What is stored of ``secret``: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("ascii", "replace")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a, b)


def parse_authorization(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header.

    Raises:
        TokenError: not a Bearer header, or no token of the right form in it (the message
            never quotes the header: it may hold someone's secret).
    """
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise TokenError("the Authorization header must be 'Bearer <token>'")
    value = value.strip()
    if not looks_like_token(value):
        raise TokenError(f"the bearer token is malformed: a token is {PREFIX} and 43 more characters")
    return value
