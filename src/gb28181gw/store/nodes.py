"""The gateway nodes sharing a Redis store, as Redis shows them (issue 17): who is live, where, doing what.

Read-only over keys other modules write (after the store's prefix, ``gbgw:``; the layout is in
:mod:`gb28181gw.store.redis`)::

    nodes                   set     node ids that have claimed; a node is live while node:<id> exists
    node:<id>               string  its claim: JSON with advertised, director, serves, ttl (store.redis)
    owner                   hash    device ID -> "<epoch> <node id>": the node a device registered at last
    lease:upstream:<name>   string  "<node> <epoch> <token>": the node registered with superior <name>

:meth:`RedisNodes.live` is what a director reads every second: one Lua script, one round trip,
whatever the number of nodes. The rest (:meth:`RedisNodes.owners`, :meth:`RedisNodes.leases`)
serves the operator (``gb28181gw nodes``, ``devices``) and walks its keys in pages (``HSCAN``,
``SCAN``), so that a fleet of 100,000 devices never holds Redis up for one long command.

It has its own connection with a short timeout, like :mod:`gb28181gw.store.leases`: a refresh must
not wait behind the store's large batches, and a Redis that stops answering is noticed in a second.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from gb28181gw.errors import StoreError, redact_url
from gb28181gw.gb.director import NodeRecord
from gb28181gw.store.redis import PREFIX, connect

_LIVE = """
-- KEYS: nodes; ARGV: prefix. {id, claim, ms left} of every listed node whose claim exists
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. 'node:' .. id
  local claim = redis.call('GET', key)
  if claim then
    out[#out + 1] = id
    out[#out + 1] = claim
    out[#out + 1] = redis.call('PTTL', key)
  end
end
return out
"""

#: Entries asked for per HSCAN / SCAN page.
PAGE = 1000
#: The lease names of superiors (store.leases: ``lease:upstream:<name>``).
UPSTREAM_LEASES = "lease:upstream:"


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)


def parse_claim(node_id: str, raw: str, ms_left: int) -> NodeRecord:
    """A node's claim as a :class:`NodeRecord`; a claim written before it had these fields (or
    unreadable) is a node with no address, which a director never names."""
    try:
        claim = json.loads(raw)
        if not isinstance(claim, dict):
            claim = {}
    except ValueError:
        claim = {}
    advertised = claim.get("advertised")
    director = claim.get("director") is True
    serves = claim.get("serves")
    return NodeRecord(
        node_id,
        advertised if isinstance(advertised, str) else "",
        director=director,
        serves=serves if isinstance(serves, bool) else not director,
        ttl=max(ms_left, 0) / 1000,
    )


def claim_ttl(raw: str) -> float | None:
    """The ``ttl`` (node.claim_seconds) a node's claim says it is renewed within, if it says."""
    try:
        value = json.loads(raw).get("ttl")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class RedisNodes:
    """Read the nodes, device owners and superiors' lease holders in the Redis store at ``url``.

    Args:
        url: the store's ``store.url``.
        timeout: seconds to connect and to wait for an answer.
        prefix: what every key starts with (the store's).

    Every method raises :class:`~gb28181gw.errors.StoreError` when Redis does not answer.
    """

    def __init__(self, url: str, *, timeout: float = 1.0, prefix: str = PREFIX) -> None:
        self.url = url
        self.location = redact_url(url)
        self.timeout = timeout
        self.prefix = prefix
        self._redis: Any = None
        self._live: Any = None

    async def open(self) -> None:
        self._redis = connect(self.url, timeout=self.timeout)  # no retry: the next refresh is, a second later
        self._live = self._redis.register_script(_LIVE)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _r(self) -> Any:
        if self._redis is None:
            raise StoreError(f"nodes in {self.location} are not open")
        return self._redis

    async def live_claims(self) -> list[tuple[str, str, int]]:
        """``(node id, claim JSON, ms left)`` of every live node, in one round trip."""
        r = self._r()
        try:
            flat = await self._live(keys=[self.prefix + "nodes"], args=[self.prefix], client=r)
        except (RedisError, OSError) as exc:
            raise StoreError(f"reading the nodes from {self.location} failed: {exc}") from None
        return [(_text(flat[i]), _text(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def live(self) -> list[NodeRecord]:
        """The live nodes, sorted by ID, in one round trip."""
        return sorted((parse_claim(*c) for c in await self.live_claims()), key=lambda n: n.node_id)

    async def listed(self) -> list[str]:
        """Every node id in ``nodes``, live or not (a dead one stays until the janitor removes it)."""
        try:
            return sorted(_text(x) for x in await self._r().smembers(self.prefix + "nodes"))
        except (RedisError, OSError) as exc:
            raise StoreError(f"reading the nodes from {self.location} failed: {exc}") from None

    async def owners(self) -> dict[str, str]:
        """Device ID → the node that owns it (from ``owner``: "<epoch> <node id>"), read in pages."""
        out: dict[str, str] = {}
        try:
            async for device, value in self._r().hscan_iter(self.prefix + "owner", count=PAGE):
                _, _, node = _text(value).partition(" ")
                if node:
                    out[_text(device)] = node
        except (RedisError, OSError) as exc:
            raise StoreError(f"reading device owners from {self.location} failed: {exc}") from None
        return out

    async def owners_of(self, device_ids: Sequence[str]) -> dict[str, str]:
        """The node of each of ``device_ids`` that has one (``HMGET`` in pages)."""
        out: dict[str, str] = {}
        r = self._r()
        try:
            for i in range(0, len(device_ids), PAGE):
                page = device_ids[i : i + PAGE]
                for device, value in zip(page, await r.hmget(self.prefix + "owner", page), strict=True):
                    if value is not None:
                        node = _text(value).partition(" ")[2]
                        if node:
                            out[device] = node
        except (RedisError, OSError) as exc:
            raise StoreError(f"reading device owners from {self.location} failed: {exc}") from None
        return out

    async def owned(self) -> Counter[str]:
        """How many devices each node owns."""
        return Counter((await self.owners()).values())

    async def leases(self) -> dict[str, str]:
        """Superior name → the node holding its lease."""
        r, prefix = self._r(), self.prefix + UPSTREAM_LEASES
        out: dict[str, str] = {}
        try:
            keys = [k async for k in r.scan_iter(match=prefix + "*", count=PAGE) if not _text(k).endswith(":epoch")]
            values = await r.mget(keys) if keys else []
        except (RedisError, OSError) as exc:
            raise StoreError(f"reading leases from {self.location} failed: {exc}") from None
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                out[_text(key)[len(prefix) :]] = _text(value).split(" ", 1)[0]
        return out
