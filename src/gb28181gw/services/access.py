"""The admin API's tokens: made, revoked, listed, and checked on every request.

Tokens are held in memory keyed by their digest (loaded from the store at :meth:`AccessService.start`),
so checking one costs a hash and a dictionary lookup; the lookup key is the digest of what the
caller sent, so nothing secret is compared byte by byte, and the stored digest is compared once
more in constant time. A token's change is written to the store before it takes effect and
recorded in the audit trail (its name and role, never its secret). ``last_used`` is kept in
memory only and written with the token's next change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from gb28181gw.access import Role, Token, check_name, digest_of, new_secret, parse_authorization, same_digest
from gb28181gw.audit import Action, Result
from gb28181gw.errors import AccessDenied, StoreError, TokenError
from gb28181gw.services.audit import AuditService
from gb28181gw.store.base import Store

__all__ = ["CREATE_HINT", "AccessService", "token_json"]

#: How to get a token, for the hint of a 401.
CREATE_HINT = (
    "send 'Authorization: Bearer <token>' (the CLI: --token or GB28181GW_TOKEN); an admin makes one with "
    "`gb28181gw token create NAME --role viewer|operator|admin`"
)


def token_json(token: Token) -> dict[str, Any]:
    """What the API and the CLI show of a token: never its digest, never its secret."""
    return {
        "name": token.name,
        "role": str(token.role),
        "created": token.created,
        "revoked": token.revoked,
        "last_used": token.last_used,
        "active": token.active,
    }


class AccessService:
    """Keeps the tokens and says whose a request's ``Authorization`` header is.

    Args:
        store: where tokens are kept.
        audit: records token changes (``None``: not recorded, for tests of this class alone).
        clock: wall-clock epoch seconds.
    """

    def __init__(self, store: Store, audit: AuditService | None = None, *, clock: Callable[[], float] = time.time):
        self.store = store
        self.audit = audit
        self._clock = clock
        self._by_digest: dict[str, Token] = {}
        self._by_name: dict[str, Token] = {}
        # one change at a time: a name checked free, or an admin token checked not the last, stays so
        # across the store write (two tokens under one name would leave one working but unstored)
        self._changing = asyncio.Lock()

    async def start(self) -> None:
        """Load the stored tokens."""
        for token in await self.store.load_tokens():
            self._keep(token)

    def _keep(self, token: Token) -> None:
        self._by_digest[token.digest] = token
        self._by_name[token.name] = token

    # --- checking -----------------------------------------------------------------------

    def authenticate(self, header: str | None) -> Token:
        """The active token an ``Authorization`` header carries.

        Raises:
            AccessDenied: 401, reason ``missing`` (no header), ``malformed`` (not ``Bearer`` and a
                token's form), ``unknown`` or ``revoked``. The message never quotes the header.
        """
        if not header:
            raise AccessDenied("this request needs a token", 401, "missing", CREATE_HINT)
        try:
            secret = parse_authorization(header)
        except TokenError as exc:
            raise AccessDenied(str(exc), 401, "malformed", CREATE_HINT) from None
        digest = digest_of(secret)
        token = self._by_digest.get(digest)
        if token is None or not same_digest(token.digest, digest):
            raise AccessDenied("the token is not one of this gateway's", 401, "unknown", CREATE_HINT)
        if not token.active:
            raise AccessDenied(f"the token {token.name!r} was revoked", 401, "revoked", "ask an admin for a new token")
        used = dataclasses.replace(token, last_used=self._clock())
        self._keep(used)
        return used

    def has_admin(self) -> bool:
        """Whether an active admin token exists (start-up needs one where tokens are required)."""
        return any(t.active and t.role is Role.ADMIN for t in self._by_name.values())

    # --- managing -----------------------------------------------------------------------

    def listing(self) -> list[Token]:
        """Every token, revoked ones too, by name."""
        return [self._by_name[name] for name in sorted(self._by_name)]

    async def create(self, name: str, role: Role) -> tuple[Token, str]:
        """A new token and its secret (shown this once).

        Raises:
            TokenError: 400 a name that cannot be one, 409 a name already used (revoked tokens
                keep theirs: the audit trail names them).
        """
        try:
            try:
                check_name(name)
            except TokenError as exc:
                raise TokenError(str(exc), 400) from None
            async with self._changing:
                return await self._create(name, role)
        except (TokenError, StoreError) as exc:
            self._refused(Action.TOKEN_CREATE, name[:100], {"name": name[:100], "role": str(role)}, exc)
            raise

    async def _create(self, name: str, role: Role) -> tuple[Token, str]:
        if name in self._by_name:
            raise TokenError(
                f"a token named {name!r} exists already" + ("" if self._by_name[name].active else " (revoked)"),
                409,
                "token names are never reused: choose another",
            )
        secret = new_secret()
        token = Token(name, role, digest_of(secret), self._clock())
        await self.store.save_token(token)
        self._keep(token)
        self._record(Action.TOKEN_CREATE, token)
        return token, secret

    async def revoke(self, name: str, *, keep_an_admin: bool = False) -> Token:
        """Revoke the token ``name`` (at once: its next request is refused); revoking twice is harmless.

        Args:
            keep_an_admin: refuse to revoke the last active admin token (where every caller needs a
                token, nobody could make another one through the API).

        Raises:
            TokenError: 404 no token of that name; 409 the last admin token with ``keep_an_admin``.
        """
        try:
            async with self._changing:
                return await self._revoke(name, keep_an_admin)
        except (TokenError, StoreError) as exc:
            self._refused(Action.TOKEN_REVOKE, name[:100], {"name": name[:100]}, exc)
            raise

    async def _revoke(self, name: str, keep_an_admin: bool) -> Token:
        token = self._by_name.get(name)
        if token is None:
            raise TokenError(f"no token named {name!r}", 404, "`gb28181gw token list` lists them")
        if keep_an_admin and token.active and token.role is Role.ADMIN:
            if not any(t.active and t.role is Role.ADMIN and t.name != name for t in self._by_name.values()):
                raise TokenError(
                    f"{name!r} is the last admin token, and the admin API asks every caller for a token: "
                    "without it nobody could manage tokens through the API",
                    409,
                    "make another first (`gb28181gw token create NAME --role admin`), then revoke this one; "
                    "or stop the gateway and revoke it on the store (`gb28181gw token revoke NAME` with no gateway "
                    "answering)",
                )
        if token.active:
            token = dataclasses.replace(token, revoked=self._clock())
            await self.store.save_token(token)
            self._keep(token)
            self._record(Action.TOKEN_REVOKE, token)
        return token

    def _refused(self, action: Action, target: str, params: dict[str, object], exc: TokenError | StoreError) -> None:
        # a refused token change is an abnormal operation the rules ask to see (someone probing names,
        # or trying to revoke the last admin token); a store failure is a failed one
        if self.audit is not None:
            result = Result.REFUSED if isinstance(exc, TokenError) else Result.FAILED
            self.audit.record(action, target, params, result=result, detail=str(exc))

    def _record(self, action: Action, token: Token) -> None:
        if self.audit is not None:
            self.audit.record(action, token.name, {"name": token.name, "role": str(token.role)}, result=Result.OK)
