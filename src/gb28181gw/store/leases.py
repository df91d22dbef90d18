"""Leases in Redis (issue 17): which one of several gateway nodes acts for a shared name.

The Redis side of :mod:`gb28181gw.gb.lease`; the upstream service holds ``lease:upstream:<name>``
for each superior it registers with. Keys (after the store's prefix, ``gbgw:``)::

    lease:<name>            string  "<node> <epoch> <token>" of its holder, expiring unless renewed
    lease:<name>:epoch      string  how many times it has been taken (by any node)

Every operation is one Lua script, so that checking and changing are one step: a take sets the
value only if there is none (and counts a new epoch, from at least the largest the caller has
seen: the counter is lost with the rest when Redis restarts empty), a renewal extends it and a release deletes
it only if its value still ends in the caller's token. A node whose lease expired cannot renew
it after another node took it, nor delete the other's.

It has its own connection, with a timeout shorter than a lease's life, rather than the store's:
a renewal must not wait behind the store's large batches, nor for the store's 5 s timeout.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gb28181gw.errors import StoreError, redact_url
from gb28181gw.store.base import LEASE_DEFERRED
from gb28181gw.store.redis import PREFIX, connect

_ACQUIRE = """
-- KEYS: lease, its epoch counter; ARGV: node, token, ttl ms, known epoch, defer (1/0).
-- {1, epoch} taken (or already ours: a retried take); {0, value, ms left} held by another;
-- {2} none held, but the counter is below the known epoch (Redis lost its data) and defer is
-- set: the counter is restored, nothing taken (the holder may be alive and re-take it)
local v = redis.call('GET', KEYS[1])
if v then
  local tail = ' ' .. ARGV[2]
  if string.sub(v, -#tail) == tail then return {1, tonumber(string.match(v, ' (%d+) '))} end
  return {0, v, redis.call('PTTL', KEYS[1])}
end
local stored = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local known = tonumber(ARGV[4]) or 0
if stored < known then
  redis.call('SET', KEYS[2], known)
  if ARGV[5] == '1' then return {2} end
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch .. ' ' .. ARGV[2], 'PX', ARGV[3])
return {1, epoch}
"""

_RENEW = """
-- KEYS: lease; ARGV: token, ttl ms. {1} renewed; {0, value or ''} not ours
local v = redis.call('GET', KEYS[1])
local tail = ' ' .. ARGV[1]
if v and string.sub(v, -#tail) == tail then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1}
end
return {0, v or ''}
"""

_RELEASE = """
-- KEYS: lease; ARGV: token. 1 deleted, 0 not ours
local v = redis.call('GET', KEYS[1])
local tail = ' ' .. ARGV[1]
if v and string.sub(v, -#tail) == tail then return redis.call('DEL', KEYS[1]) end
return 0
"""


# What RedisLeases.acquire returns as the epoch of a take it deferred: defined in store.base, whose
# users (the upstream service) then need not import redis-py with every other store
DEFERRED = LEASE_DEFERRED


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class RedisLeases:
    """Take, renew and release leases in the Redis store at ``url``.

    Args:
        url: the store's ``store.url``.
        timeout: seconds to connect and to wait for an answer (keep it below a lease's margin).
        prefix: what every key starts with (the store's).

    Every method raises :class:`~gb28181gw.errors.StoreError` when Redis does not answer.
    """

    def __init__(self, url: str, *, timeout: float = 1.0, prefix: str = PREFIX) -> None:
        self.url = url
        self.location = redact_url(url)
        self.timeout = timeout
        self.prefix = prefix
        self._redis: Any = None
        self._scripts: dict[str, Any] = {}

    async def open(self) -> None:
        # one retry, at once and only on a broken connection: after Redis restarts, the first
        # command on the old connection fails at once, and a renewal reported failed for
        # that costs the holder a retry interval (in which a standby could take a lease that
        # Redis lost). Not on a timeout: a renewal retried late is worse than one reported
        # failed (the machine retries it). Every script is safe to run twice (token compare).
        self._redis = connect(self.url, timeout=self.timeout, retries=1, retry_on=(RedisConnectionError,))
        for source in (_ACQUIRE, _RENEW, _RELEASE):
            self._scripts[source] = self._redis.register_script(source)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def _run(self, source: str, keys: list[str], args: list[object]) -> Any:
        if self._redis is None:
            raise StoreError(f"leases in {self.location} are not open")
        try:
            return await self._scripts[source](keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreError(f"lease operation on {self.location} failed: {exc}") from None

    def _key(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    async def acquire(
        self, name: str, node: str, token: str, ttl: float, *, known_epoch: int = 0, defer: bool = False
    ) -> tuple[int, str, float | None]:
        """Take lease ``name`` for ``node`` if nobody holds it, with an epoch above ``known_epoch``.

        With ``defer``, a lease nobody holds whose epoch counter is below ``known_epoch`` (Redis
        lost its data) is not taken: the counter is put back to ``known_epoch``.

        Returns:
            ``(epoch, "", None)`` when taken; ``(0, holder's value, seconds it has left)`` when
            held by another; ``(DEFERRED, "", None)`` when deferred.
        """
        key = self._key(name)
        args: list[object] = [node, token, int(ttl * 1000), int(known_epoch), 1 if defer else 0]
        answer = await self._run(_ACQUIRE, [key, key + ":epoch"], args)
        if int(answer[0]) == 2:
            return DEFERRED, "", None
        if int(answer[0]) == 1:
            return int(answer[1]), "", None
        left = int(answer[2])
        return 0, _text(answer[1]), left / 1000 if left >= 0 else None

    async def renew(self, name: str, token: str, ttl: float) -> str | None:
        """Extend lease ``name`` if it is still the take of ``token``: ``None``, else the value found (``""``: none)."""
        answer = await self._run(_RENEW, [self._key(name)], [token, int(ttl * 1000)])
        return None if int(answer[0]) == 1 else _text(answer[1])

    async def release(self, name: str, token: str) -> bool:
        """Delete lease ``name`` if it is still the take of ``token``; whether it was."""
        return bool(await self._run(_RELEASE, [self._key(name)], [token]))
