"""The Redis store: the state several gateway nodes will share (issue 17), on redis-py's asyncio client.

It passes the same contract suite as the SQLite default (``tests/contract/test_store.py``), with
the same errors: :class:`~gb28181gw.errors.StoreError` when Redis cannot be reached or written
(``writable`` goes false until a write succeeds again: the write-behind keeps what it could not
write and tries again), :class:`~gb28181gw.errors.StoreRecordError` for a value no store can keep
(text with a lone surrogate that stands for no device byte, an integer beyond 64 bits, NaN or
infinity); such a batch is refused before anything is sent.

Key layout (every key starts with the prefix, ``gbgw:`` by default)::

    schema                  string  the layout's version (MIGRATIONS); a newer one is refused
    node:<id>               string  the running gateway of node.id <id>: JSON {pid, host, started, token,
                                    advertised ("host:port" devices are sent to, "" none), director (bool),
                                    serves (bool: a director may send devices to it), ttl (its node.claim_seconds)},
                                    expiring ttl (NODE_TTL by default) after its last renewal
    nodes                   set     node ids that have claimed (SADD on every claim; only the janitor removes one):
                                    the live nodes are those whose node:<id> exists
    devices                 hash    device ID -> JSON array of its fields (DEVICE_LAYOUT)
    channels                set     IDs of the devices that have channels
    channels:<device>       hash    channel ID -> JSON [name, status, parent_id, extra]
    alarm:seq               string  last alarm number
    alarms                  hash    number -> JSON [device_id, reported_by, priority, method,
                                    alarm_type, alarm_time, description, received_at, extra]
    alarm:ids               zset    every kept alarm number (score: the number); trimmed to MAX_ALARMS
    alarm:src, alarm:by     hash    number -> its device_id / reported_by (to trim the indexes below)
    alarm:of:<id>           zset    numbers of the alarms a device raised or reported
    bans                    hash    ban key -> JSON [BAN_FIELDS values]
    bans:until              zset    ban key, scored by when it ends
    shares                  hash    JSON [upstream, entry] -> "1" shared / "0" taken back
    overrides               hash    JSON [upstream, channel] -> JSON [name, civil_code, parent_id]
    ledger                  hash    ID -> JSON {"fields": {...}, "updated_at": t}
    tokens                  hash    name -> JSON [role, digest, created, revoked, last_used]
    audit                   hash    number -> the record's 64-hex hash, then JSON [time, actor,
                                    source, action, target, params (JSON text), result, detail]
    audit:seqs              zset    every stored record number (score: the number): pages in order
    audit:time              zset    record number, scored by its time: time filters and retention
    audit:chain             hash    anchor_seq, anchor_hash, head_seq, head_hash
    rpc:<node>              stream  calls to node <node> (store/rpc.py), read by its consumer group "rpc";
                                    MAXLEN ~ 10,000
    rpc:<node>:replies      stream  answers to the calls node <node> made, read by it with XREAD BLOCK

Several nodes (issue 17; the scripts are in ``store/ownership.py``, the rules in ``gb/ownership.py``)::

    nodes                   set     node IDs that have written (a dead one is removed by its janitor)
    owner                   hash    device ID -> "<epoch> <node>": the node whose REGISTER claimed it
                                    last; the epoch grows by one with every claim, at any node
    owner:at                hash    device ID -> time (Redis's clock) of the REGISTER that made the current epoch
    lost:<node>             hash    device ID -> epoch: devices claimed away from <node>, read and
                                    emptied by <node> with its next batch
    live:<node>             zset    device ID -> liveness deadline (Redis's clock, seconds) of <node>'s online
                                    devices, plus a third of each one's keepalive window
    janitor:<node>          string  token of the live node adopting dead <node>'s devices (PX, renewed)
    events                  stream  device online/offline: device, event, node, epoch, reason, at
                                    (janitor: the adopting node, on its offline marks); removed (a
                                    row deleted: device, event, node, at); MAXLEN ~ 100,000
    boot                    string  set once per data set: another one means Redis lost its data
    lease:<name>            string  "<node> <epoch> <token>" of a superior lease's holder (store/leases.py)
    lease:<name>:epoch      string  how many times that lease was taken

With a ``node.id`` the device rows are written through the ownership script, never over the row
of a node that claimed the device later.

Text goes in as UTF-8 with ``surrogateescape`` (Redis values are bytes), so what a device sent
in GB2312 comes back byte for byte, as with SQLite. The gateway reads everything at start-up and
writes behind itself in batches, so each call is one round trip where it can be: a batch of
devices is one ``HSET``, a multi-key change one Lua script (atomic, and checked before it runs:
Redis does not roll a script back). The audit chain is appended by compare-and-set: the hash of a
record covers the one before it and Redis's Lua has no SHA-256, so the hashes are computed here
and the script writes them only if the head is still the one they were computed on; otherwise
it is computed again on the new head. Two writers therefore cannot fork the chain, and an append
retried after a lost reply is recognised as already written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, NoReturn, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from gb28181gw.access import Role, Token
from gb28181gw.audit import GENESIS, Anchor, AuditEntry, AuditQuery, AuditRecord, chain_hash
from gb28181gw.errors import StoreError, StoreRecordError, redact_url
from gb28181gw.gb.ledger import LedgerEntry
from gb28181gw.gb.model import BAN_FIELDS, Alarm, Ban, Channel, Device, Override, ShareEntry
from gb28181gw.stopping import check_cancelled, stop_task
from gb28181gw.store.base import device_rows, in_steps, params_json, stored_audit

T = TypeVar("T")
log = logging.getLogger("gb28181gw.store")

PREFIX = "gbgw:"
#: Entries kept in the shared ``events`` stream (approximately: MAXLEN ~); see store/ownership.py.
EVENTS_MAXLEN = 100_000
#: Alarms kept; older ones are deleted as new ones come (as with SQLite).
MAX_ALARMS = 100_000
#: Seconds to connect, and to wait for an answer, before the call fails (the write-behind retries).
TIMEOUT = 5.0
#: Audit records removed by one retention script: Redis serves nobody else while a script runs.
PRUNE_CHUNK = 5_000
#: Records read per round trip when a listing filters them here.
AUDIT_PAGE = 1_000
#: Devices in a batch below which encoding them on the event loop costs less than a thread hop.
ENCODE_ON_LOOP = 200
_INT64 = range(-(2**63), 2**63)
#: Seconds a node's claim on its node.id lives unless renewed (every third of it): how long a
#: gateway stopped without a word (kill -9 on another host) keeps its name from a new one.
NODE_TTL = 15.0
#: What a stored device's JSON array holds, in order: the :class:`Device` fields (layout version 1,
#: then ``path`` appended: see :data:`_DEVICE_LAYOUT_1`).
#: A field added to Device needs a migration that rewrites the stored arrays (or, appended at the
#: end, a read that takes the shorter arrays), and this tuple changed with it (a test compares it with the Device fields).
DEVICE_LAYOUT: tuple[str, ...] = (
    "device_id", "name", "reported_name", "manufacturer", "model", "firmware", "transport", "host", "port",
    "local_host", "local_port", "charset", "stream_mode", "password", "provisioned", "state", "expires",
    "registered_at", "expires_at", "last_keepalive", "keepalive_interval", "keepalive_count", "user_agent",
    "gb_version", "call_id", "offline_reason", "created_at", "updated_at", "path",
)  # fmt: skip
#: The fields of layout version 1's arrays, written before ``path`` (RFC 3327) was kept: read
#: with an empty Path (the device registered directly), so no stored array needs rewriting.
_DEVICE_LAYOUT_1 = len(DEVICE_LAYOUT) - 1
#: Fields a node appends to the layout later are ignored when read here (the array's known prefix
#: is the device): during a rolling upgrade the nodes not yet upgraded keep reading the devices the
#: upgraded ones write, instead of logging each as unreadable and losing sight of it. Only an
#: appended field may be added so; a field whose meaning or place changes needs a migration
#: (``schema``), which older nodes refuse at start.


#: Connections a client keeps open to Redis at most; a command past them waits for one.
MAX_CONNECTIONS = 100


def connect(
    url: str,
    *,
    timeout: float,
    retries: int = 0,
    retry_on: tuple[type[RedisError], ...] | None = None,
    read_timeout: float | None = None,
    **options: Any,
) -> Redis:
    """A client of the Redis at ``url`` (connecting lazily) that waits ``timeout`` seconds to connect
    and ``read_timeout`` (default ``timeout``) for an answer, retrying a command that failed
    ``retries`` times at once (on the errors ``retry_on`` names: by default a dropped connection or
    a timeout); each user picks these for what a late answer costs it.

    Raises:
        StoreError: ``url`` is not a Redis URL redis-py can use (named without its password).
    """
    try:
        # A pool that waits for a free connection (up to ``timeout``) instead of failing: redis-py
        # 8 caps a pool at 100 connections and refused the 101st command in flight at once with
        # "Too many connections", which a burst of RPC calls (100 stream opens at once) reached.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            socket_connect_timeout=timeout,
            socket_timeout=timeout if read_timeout is None else read_timeout,
            retry=Retry(NoBackoff(), retries)
            if retry_on is None
            else Retry(NoBackoff(), retries, supported_errors=retry_on),
            **options,
        )
        return Redis.from_pool(pool)
    except ValueError as exc:
        raise StoreError(f"store.url {redact_url(url)!r} cannot be used: {exc}") from None


async def _create_chain(r: Redis, p: str) -> None:
    await r.hsetnx(p + "audit:chain", "anchor_seq", 0)
    await r.hsetnx(p + "audit:chain", "anchor_hash", GENESIS)
    await r.hsetnx(p + "audit:chain", "head_seq", 0)
    await r.hsetnx(p + "audit:chain", "head_hash", GENESIS)


#: Layout migrations; entry i brings ``schema`` i to i + 1. Each must be safe to run twice (two
#: nodes starting on an empty Redis at once may both run it).
MIGRATIONS: list[Callable[[Redis, str], Awaitable[None]]] = [_create_chain]
SCHEMA_VERSION = len(MIGRATIONS)

_CHANNELS = """
-- KEYS: devices, channels:<device>, channels; ARGV: device, replace ("1"/"0"), n deletes, deletes..., id, value...
local n = tonumber(ARGV[3])
if #ARGV > 3 + n and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return redis.error_reply('NODEVICE channels of device ' .. ARGV[1] .. ', which is not stored')
end
if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
for i = 4, 3 + n do redis.call('HDEL', KEYS[2], ARGV[i]) end
for i = 4 + n, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('SADD', KEYS[3], ARGV[1])
else redis.call('SREM', KEYS[3], ARGV[1]) end
return 0
"""

_RENEW = """
-- KEYS: node:<id>; ARGV: our claim, ttl ms. 1 renewed, 0 taken again (it had lapsed), else who holds it
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 0 end
return holder
"""

_TAKE_OVER = """
-- KEYS: node:<id>; ARGV: the claim seen, ours, ttl ms: replace it only if it is still the one seen
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

_RELEASE = """
-- KEYS: node:<id>; ARGV: our claim
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_DELETE_DEVICE = """
-- KEYS: devices, channels:<device>, channels, noticed, events; ARGV: device, node, events maxlen, now
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])  -- the last online/offline notice appended for it (store.ownership)
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
-- the other nodes drop it from memory when they read this (store.ownership's news): in the same
-- script as the delete, so an entry means the row went, and no delete goes untold
if removed == 1 then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[3], '*', 'device', ARGV[1], 'event', 'removed', 'node', ARGV[2],
             'at', ARGV[4])
end
return removed
"""

_ALARMS = """
-- KEYS: alarm:seq, alarms, alarm:ids, alarm:src, alarm:by; ARGV: index prefix, limit, (device, reporter, value)...
local count = (#ARGV - 2) / 3
local id = redis.call('INCRBY', KEYS[1], count) - count
for i = 3, #ARGV, 3 do
  id = id + 1
  redis.call('HSET', KEYS[2], id, ARGV[i + 2])
  redis.call('ZADD', KEYS[3], id, id)
  redis.call('HSET', KEYS[4], id, ARGV[i])
  redis.call('HSET', KEYS[5], id, ARGV[i + 1])
  redis.call('ZADD', ARGV[1] .. ARGV[i], id, id)
  redis.call('ZADD', ARGV[1] .. ARGV[i + 1], id, id)
end
local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[2])
if excess > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[3], 0, excess - 1)) do
    local src, by = redis.call('HGET', KEYS[4], old), redis.call('HGET', KEYS[5], old)
    if src then redis.call('ZREM', ARGV[1] .. src, old) end
    if by then redis.call('ZREM', ARGV[1] .. by, old) end
    redis.call('HDEL', KEYS[2], old)
    redis.call('HDEL', KEYS[4], old)
    redis.call('HDEL', KEYS[5], old)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, excess - 1)
end
return 0
"""

_BANS = """
-- KEYS: bans, bans:until; ARGV: ended before (exclusive score), (key, until, value)...
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do redis.call('HDEL', KEYS[1], key) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for i = 2, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
end
return 0
"""

_AUDIT_APPEND = """
-- KEYS: audit:chain, audit, audit:seqs, audit:time; ARGV: expected head seq, head hash, (seq, time, value)...
local head = redis.call('HMGET', KEYS[1], 'head_seq', 'head_hash')
if not head[1] or not head[2] then return redis.error_reply('NOCHAIN the audit chain head is missing') end
if head[1] ~= ARGV[1] or head[2] ~= ARGV[2] then return {0, head[1], head[2]} end
for i = 3, #ARGV, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i])
  redis.call('ZADD', KEYS[4], ARGV[i + 1], ARGV[i])
end
redis.call('HSET', KEYS[1], 'head_seq', ARGV[#ARGV - 2], 'head_hash', string.sub(ARGV[#ARGV], 1, 64))
return {1}
"""

_AUDIT_PRUNE = """
-- KEYS: audit:chain, audit, audit:seqs, audit:time; ARGV: before, most to remove. From the front only
local before, most, removed = tonumber(ARGV[1]), tonumber(ARGV[2]), 0
local last, last_hash = nil, nil
while removed < most do
  local front = redis.call('ZRANGE', KEYS[3], 0, 0)
  if #front == 0 then break end
  local seq = front[1]
  local t = redis.call('ZSCORE', KEYS[4], seq)
  if not t or tonumber(t) >= before then break end
  local value = redis.call('HGET', KEYS[2], seq)
  last, last_hash = seq, value and string.sub(value, 1, 64) or ''
  redis.call('HDEL', KEYS[2], seq)
  redis.call('ZREM', KEYS[3], seq)
  redis.call('ZREM', KEYS[4], seq)
  removed = removed + 1
end
if last then redis.call('HSET', KEYS[1], 'anchor_seq', last, 'anchor_hash', last_hash) end
return removed
"""


def _call(script: Any, keys: list[str], args: Sequence[object], _r: Any) -> Any:
    """Run ``script`` (an AsyncScript); the client argument is the one :meth:`RedisStore._write` passes."""
    return script(keys=keys, args=args)


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _dumps(value: object) -> bytes:
    """``value`` as stored: compact JSON, UTF-8 with device bytes kept (``surrogateescape``).

    Raises:
        StoreRecordError: a lone surrogate that stands for no byte, an integer beyond 64 bits, NaN or infinity.
    """
    try:
        return _encode(value).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise StoreRecordError(f"text in {str(value)[:200]!r} holds characters that cannot be stored") from None
    except ValueError as exc:
        raise StoreRecordError(f"{exc} in {str(value)[:200]!r}") from None


def _encode_devices(rows: list[tuple[Any, ...]]) -> dict[bytes, bytes]:
    """Device rows (:meth:`Device.row`, in :data:`DEVICE_LAYOUT` order) as hash fields and values."""
    mapping = {}
    for row in rows:
        _check_ints(row)
        mapping[_key(row[0])] = _dumps(row)
    return mapping


def _started(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc), "" if unknown: with the pid
    it names one process on this host, a pid used again by another process included."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def _alive(pid: int, started: str) -> bool:
    """Whether the process that claimed a node (``pid``, started at ``started``) still runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # someone's process has that pid
    now = _started(pid)
    return not (started and now and now != started)


def _loads(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8", "surrogateescape"))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _key(text: str) -> bytes:
    """A key or hash field made of text (an ID, a name)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise StoreRecordError(f"{text!r} holds characters that cannot be stored") from None


def _check_ints(values: Sequence[object]) -> None:
    # SQLite's integers are 64-bit; a larger one is refused here too, so the contract is one
    for v in values:
        if v.__class__ is int and v not in _INT64:
            raise StoreRecordError(f"{v} does not fit in 64 bits")


def _score(value: float) -> str:
    """A sorted-set score (finite, or Redis's own infinities)."""
    if math.isnan(value):
        raise StoreRecordError("NaN cannot be stored as a time")
    return repr(value) if math.isfinite(value) else ("+inf" if value > 0 else "-inf")


class RedisStore:
    """:class:`~gb28181gw.store.base.Store` on a Redis server.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` (TLS) or ``unix:///path?db=N``.
        node: this gateway's ``node.id``: claimed in ``node:<id>`` while the store is open, so that a
            second running gateway with the same name is refused ("" claims nothing: the CLI's own use).
        prefix: what every key starts with.
    """

    def __init__(
        self,
        url: str,
        *,
        node: str = "",
        prefix: str = PREFIX,
        about: Mapping[str, object] | None = None,
        claim_ttl: float | None = None,
    ) -> None:
        self.url = url
        self.location = redact_url(url)
        self.prefix = prefix
        self.node = node
        self.claim_ttl = NODE_TTL if claim_ttl is None else claim_ttl
        # what this process writes in node:<id>: who it is, and a token telling its claim from an
        # earlier process's with the same pid (a restarted container); then what the other nodes
        # read of it (``about``: where devices reach it, whether it directs; see gb.director)
        self._about: dict[str, object] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _started(os.getpid()),
            "token": secrets.token_hex(8),
            "ttl": self.claim_ttl,
            **(about or {}),
        }
        self._claim = json.dumps(self._about)
        self._heartbeat: asyncio.Task[None] | None = None
        self._redis: Any = None  # a redis.asyncio.Redis: its types say bytes | str for every answer
        self._scripts: dict[str, AsyncScript] = {}
        self._audit_head: tuple[int, str] | None = None  # the head as this process last wrote or saw it
        self.writable = True
        self.last_error = ""
        self.write_failures: Counter[str] = Counter()

    def _k(self, name: str) -> str:
        return self.prefix + name

    def _r(self) -> Any:
        if self._redis is None:
            raise StoreError(f"store {self.location} is not open")
        return self._redis

    def _script(self, source: str, client: Any = None) -> AsyncScript:
        """The script of ``source``, sent by its SHA-1 (loaded again by redis-py after a Redis restart)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = (client or self._r()).register_script(source)
        return script

    def _refused(self, exc: StoreRecordError, what: str) -> StoreRecordError:
        self.write_failures["record"] += 1
        return StoreRecordError(f"{what} in {self.location} failed: {exc}")

    async def _write(self, what: str, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run the write ``op``; a Redis that cannot be reached or written is a :class:`StoreError`.

        A script's refusal of a record (``NODEVICE``) is a :class:`StoreRecordError`: the store is fine.
        """
        r = self._r()
        try:
            result = await op(r)
        except ResponseError as exc:
            if str(exc).startswith("NODEVICE"):
                self.write_failures["record"] += 1
                raise StoreRecordError(f"{what} in {self.location} failed: {exc}") from None
            self._failed(what, exc)
        except (RedisError, OSError) as exc:
            self._failed(what, exc)
        self.writable = True
        return result

    def _failed(self, what: str, exc: Exception) -> NoReturn:
        self.writable = False
        self.last_error = f"{what} in {self.location} failed: {exc}"
        self.write_failures["store"] += 1
        raise StoreError(self.last_error) from None

    async def _read(self, what: str, op: Callable[[Any], Awaitable[T]]) -> T:
        try:
            return await op(self._r())
        except (RedisError, OSError) as exc:
            raise StoreError(f"{what} from {self.location} failed: {exc}") from None

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        # one quick retry: a connection Redis closed (a restart) is made again at once; a Redis
        # that stays away fails the call, and the gateway's write-behind tries again later
        r = connect(
            self.url,
            timeout=TIMEOUT,
            retries=1,
            encoding_errors="surrogateescape",  # device bytes in a key (an ID) go in as sent
        )
        try:
            await r.ping()
            version = await self._version(r)
            for v in range(version, SCHEMA_VERSION):
                await MIGRATIONS[v](r, self.prefix)
                await r.set(self._k("schema"), v + 1)
            if self.node:
                await self._take_node(r)
        except (RedisError, OSError) as exc:
            await r.aclose()
            raise StoreError(
                f"cannot reach the Redis store at {self.location}: {exc}; start Redis there or fix store.url"
            ) from None
        except StoreError:
            await r.aclose()
            raise
        self._redis = r
        if self.node:
            self._heartbeat = asyncio.get_running_loop().create_task(self._keep_node())

    async def _take_node(self, r: Any) -> None:
        """Claim ``node:<id>``, or raise :class:`StoreError` naming the running gateway that holds it.

        A claim whose process is gone from this host (killed; this is its restart) is taken over at
        once rather than after it expires.
        """
        key, ttl = self._k(f"node:{self.node}"), int(self.claim_ttl * 1000)
        # listed before claimed: a node is never live without being listed (the set only grows
        # here; the janitor of device ownership removes the dead)
        await r.sadd(self._k("nodes"), self.node)
        while not await r.set(key, self._claim, nx=True, px=ttl):
            raw = await r.get(key)
            if raw is None:
                continue  # it expired just now
            try:
                holder = json.loads(raw)
                pid, host, started = int(holder["pid"]), str(holder["host"]), str(holder.get("started", ""))
            except (ValueError, TypeError, KeyError, AttributeError):
                pid, host, started = 0, "?", ""
            if host == socket.gethostname() and not _alive(pid, started):
                if await self._script(_TAKE_OVER, r)(keys=[key], args=[raw, self._claim, ttl]):
                    log.warning(
                        "node.id taken over from a gateway that is gone",
                        extra={"node": self.node, "pid": pid, "store": self.location},
                    )
                    return
                continue
            raise StoreError(
                f"node.id {self.node} is in use by a running gb28181gw (pid {pid} on {host}) on {self.location}: "
                f"give each gateway node its own node.id (a stopped one's claim ends within {self.claim_ttl:.0f} s)"
            )

    async def _keep_node(self) -> None:
        """Renew the claim on ``node:<id>`` every third of its life; take it again if it lapsed."""
        key, ttl, failing = self._k(f"node:{self.node}"), int(self.claim_ttl * 1000), False
        script = self._script(_RENEW)
        while True:
            check_cancelled()
            await asyncio.sleep(self.claim_ttl / 3)
            try:
                answer = await script(keys=[key], args=[self._claim, ttl])
            except (RedisError, OSError) as exc:
                if not failing:  # once per outage: the write-behind reports it too
                    log.warning(
                        "node claim cannot be renewed; will retry", extra={"node": self.node, "error": str(exc)}
                    )
                failing = True
                continue
            failing = False
            if answer == 0:
                log.warning(
                    "node claim had lapsed (Redis was away or restarted); taken again", extra={"node": self.node}
                )
                try:
                    await self._r().sadd(self._k("nodes"), self.node)  # a restarted Redis lost the set too
                except (RedisError, OSError, StoreError):
                    pass  # listed at the next lapse; the claim itself is what makes the node live
            elif answer != 1:
                log.error(
                    "node.id is held by another gateway: two nodes run with one name",
                    extra={"node": self.node, "holder": _text(answer), "store": self.location},
                )

    async def announce(self, **about: object) -> None:
        """Add ``about`` to this node's claim (its address, known once the SIP port is bound).

        Raises:
            StoreError: Redis did not take it, or another process holds the claim now.
        """
        if not self.node:
            return
        claim = json.dumps({**self._about, **about})
        key = self._k(f"node:{self.node}")

        async def swap(r: Any) -> Any:
            return await self._script(_TAKE_OVER, r)(keys=[key], args=[self._claim, claim, int(self.claim_ttl * 1000)])

        if not await self._write("node claim", swap):
            raise StoreError(f"node:{self.node} in {self.location} is no longer this process's claim")
        self._about.update(about)
        self._claim = claim

    async def _version(self, r: Any) -> int:
        raw = await r.get(self._k("schema"))
        if raw is None:
            # not audit:chain: migration 0 creates it before schema is set, and nodes starting at
            # once on an empty Redis see each other's half-done migration (it is safe to run again)
            if await r.exists(*(self._k(k) for k in ("devices", "tokens", "ledger", "alarm:seq"))):
                raise StoreError(
                    f"store {self.location} holds gb28181gw keys ({self.prefix}*) but no {self.prefix}schema; "
                    "it was left untouched: restore it or use another database"
                )
            return 0
        try:
            version = int(raw)
        except ValueError:
            raise StoreError(f"store {self.location} has an unreadable {self.prefix}schema {raw!r}") from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.location} has schema version {version}, newer than this gb28181gw knows "
                f"({SCHEMA_VERSION}); upgrade gb28181gw or use another store.url"
            )
        return version

    async def close(self) -> None:
        if self._heartbeat is not None:
            # not cancel() and await: a renewal cancelled as its command is sent runs on (stopping.py)
            await stop_task(self._heartbeat, what=f"node {self.node}'s claim renewal")
            self._heartbeat = None
        if self._redis is not None:
            if self.node:
                try:
                    await self._script(_RELEASE)(keys=[self._k(f"node:{self.node}")], args=[self._claim])
                except (RedisError, OSError):
                    pass  # Redis is away: the claim ends by itself within claim_ttl
            await self._redis.aclose()
            self._redis = None

    # --- devices ---------------------------------------------------------------------

    def _device(self, device_id: bytes, raw: bytes) -> Device:
        try:
            values = _loads(raw)
            if not isinstance(values, list):
                raise ValueError("not an array")
            if len(values) == _DEVICE_LAYOUT_1:
                values.append("")
            elif len(values) > len(DEVICE_LAYOUT):
                del values[len(DEVICE_LAYOUT) :]  # a newer node's appended fields (see above)
            return Device.from_row(dict(zip(DEVICE_LAYOUT, values, strict=True)))
        except (ValueError, TypeError) as exc:
            raise StoreError(f"device {_text(device_id)} in {self.location} cannot be read: {exc}") from None

    async def load_devices(self) -> list[Device]:
        rows: dict[bytes, bytes] = await self._read("reading devices", lambda r: r.hgetall(self._k("devices")))
        keys = sorted(rows, key=_text)
        # decoded in steps with a loop turn between: several nodes read every row again while
        # serving (every 5 minutes, twice after a Redis restart), and 100,000 rows decoded in one
        # go held the loop 0.74 s, every keepalive and REGISTER behind it waiting
        return await in_steps(keys, lambda k: self._device(k, rows[k]))

    async def get_device(self, device_id: str) -> Device | None:
        raw = await self._read("reading a device", lambda r: r.hget(self._k("devices"), _key(device_id)))
        return None if raw is None else self._device(_key(device_id), raw)

    async def save_devices(self, devices: Sequence[Device]) -> None:
        if not devices:
            return
        rows = await device_rows(devices)  # on the loop (callers go on changing the devices), in steps
        try:
            if len(rows) < ENCODE_ON_LOOP:
                mapping = _encode_devices(rows)
            else:
                # every 30 s the registrar writes the keepalive times of every device: encoding
                # 10,000 of them takes ~30 ms, which the event loop must not wait out
                mapping = await asyncio.get_running_loop().run_in_executor(None, _encode_devices, rows)
        except StoreRecordError as exc:
            raise self._refused(exc, f"writing {len(devices)} devices") from None
        await self._write(f"writing {len(mapping)} devices", lambda r: r.hset(self._k("devices"), mapping=mapping))

    async def delete_device(self, device_id: str) -> bool:
        keys = [self._k(k) for k in ("devices", f"channels:{device_id}", "channels", "noticed", "events")]
        args: list[bytes | str | int] = [_key(device_id), self.node, EVENTS_MAXLEN, repr(time.time())]
        script = self._script(_DELETE_DEVICE)
        removed = await self._write(f"deleting {device_id}", lambda r: script(keys=keys, args=args))
        return bool(removed)

    async def count_devices(self) -> int:
        return int(await self._read("counting devices", lambda r: r.hlen(self._k("devices"))))

    # --- channels --------------------------------------------------------------------

    async def _channels(
        self, device_id: str, upserts: Sequence[Channel], deletes: Sequence[str], *, replace: bool
    ) -> None:
        args: list[bytes | str | int] = [_key(device_id), "1" if replace else "0", len(deletes)]
        what = f"writing channels of {device_id}"
        try:
            args += [_key(c) for c in deletes]
            for c in upserts:
                args += [_key(c.channel_id), _dumps([c.name, c.status, c.parent_id, c.extra])]
        except StoreRecordError as exc:
            raise self._refused(exc, what) from None
        keys = [self._k("devices"), self._k(f"channels:{device_id}"), self._k("channels")]
        script = self._script(_CHANNELS)
        await self._write(what, lambda r: script(keys=keys, args=args))

    async def replace_channels(self, device_id: str, channels: Sequence[Channel]) -> None:
        await self._channels(device_id, channels, (), replace=True)

    async def update_channels(self, device_id: str, upserts: Sequence[Channel], deletes: Sequence[str] = ()) -> None:
        if upserts or deletes:
            await self._channels(device_id, upserts, deletes, replace=False)

    async def load_channels(self, device_id: str | None = None) -> list[Channel]:
        async def load(r: Any) -> list[tuple[str, dict[bytes, bytes]]]:
            if device_id is not None:
                return [(device_id, await r.hgetall(self._k(f"channels:{device_id}")))]
            owners = sorted(_text(m) for m in await r.smembers(self._k("channels")))
            async with r.pipeline(transaction=False) as pipe:
                for owner in owners:
                    pipe.hgetall(self._k(f"channels:{owner}"))
                return list(zip(owners, await pipe.execute(), strict=True))

        channels = []
        for owner, rows in await self._read("reading channels", load):
            for cid in sorted(rows, key=_text):
                name, status, parent, extra = _loads(rows[cid])
                channels.append(Channel(_text(cid), owner, name, status, parent, extra))
        return channels

    # --- alarms ----------------------------------------------------------------------

    async def save_alarms(self, alarms: Sequence[Alarm]) -> None:
        if not alarms:
            return
        args: list[bytes | str | int] = [self._k("alarm:of:"), MAX_ALARMS]
        what = f"writing {len(alarms)} alarms"
        try:
            for a in alarms:
                value = [a.device_id, a.reported_by, a.priority, a.method, a.alarm_type, a.alarm_time,
                         a.description, a.received_at, a.extra]  # fmt: skip
                args += [_key(a.device_id), _key(a.reported_by), _dumps(value)]
        except StoreRecordError as exc:
            raise self._refused(exc, what) from None
        keys = [self._k(k) for k in ("alarm:seq", "alarms", "alarm:ids", "alarm:src", "alarm:by")]
        script = self._script(_ALARMS)
        await self._write(what, lambda r: script(keys=keys, args=args))

    async def load_alarms(self, limit: int = 100, device_id: str | None = None) -> list[Alarm]:
        if limit <= 0:
            return []
        index = _key(self._k("alarm:ids") if device_id is None else self._k("alarm:of:") + device_id)

        async def load(r: Any) -> list[bytes | None]:
            ids = await r.zrevrange(index, 0, limit - 1)
            return await r.hmget(self._k("alarms"), ids) if ids else []

        alarms = []
        for raw in await self._read("reading alarms", load):
            if raw is not None:
                dev, by, prio, method, kind, at, desc, received, extra = _loads(raw)
                alarms.append(Alarm(dev, by, prio, method, kind, at, desc, received, extra))
        return alarms

    # --- bans ------------------------------------------------------------------------

    async def save_bans(self, bans: Sequence[Ban], *, ended_before: float = 0.0) -> None:
        what = f"writing {len(bans)} bans"
        try:
            args: list[bytes | str] = ["(" + _score(ended_before)]
            for b in bans:
                row = tuple(getattr(b, f) for f in BAN_FIELDS)
                _check_ints(row)
                args += [_key(b.key), _score(b.until), _dumps(row)]
        except StoreRecordError as exc:
            raise self._refused(exc, what) from None
        script = self._script(_BANS)
        await self._write(what, lambda r: script(keys=[self._k("bans"), self._k("bans:until")], args=args))

    async def load_bans(self) -> list[Ban]:
        async def load(r: Any) -> list[bytes | None]:
            keys = await r.zrange(self._k("bans:until"), 0, -1)
            return await r.hmget(self._k("bans"), keys) if keys else []

        bans = []
        for raw in await self._read("reading bans", load):
            try:
                if raw is None:
                    raise ValueError("indexed but missing")
                bans.append(Ban.from_row(_loads(raw)))
            except (TypeError, ValueError) as exc:
                # a damaged ban must not stop the gateway from starting: it is only dropped
                log.warning("stored ban cannot be read; dropped", extra={"store": self.location, "error": str(exc)})
        return bans

    async def delete_bans(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        fields = [_key(k) for k in keys]

        async def delete(r: Any) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hdel(self._k("bans"), *fields)
                pipe.zrem(self._k("bans:until"), *fields)
                await pipe.execute()

        await self._write(f"deleting {len(keys)} bans", delete)

    # --- superiors: shares and overrides -------------------------------------------------

    async def save_shares(self, entries: Sequence[ShareEntry]) -> None:
        if not entries:
            return
        try:
            mapping = {_dumps([e.upstream, e.entry]): b"1" if e.shared else b"0" for e in entries}
        except StoreRecordError as exc:
            raise self._refused(exc, f"writing {len(entries)} share entries") from None
        await self._write(
            f"writing {len(entries)} share entries",
            lambda r: r.hset(self._k("shares"), mapping=mapping),
        )

    async def load_shares(self) -> list[ShareEntry]:
        rows: dict[bytes, bytes] = await self._read("reading shares", lambda r: r.hgetall(self._k("shares")))
        entries = [
            ShareEntry(str(up), str(entry), v == b"1") for (up, entry), v in ((_loads(k), v) for k, v in rows.items())
        ]
        return sorted(entries, key=lambda e: (e.upstream, e.entry))

    async def save_override(self, override: Override) -> None:
        o = override
        what = f"writing the override of {o.channel_id}"
        try:
            field, value = _dumps([o.upstream, o.channel_id]), _dumps([o.name, o.civil_code, o.parent_id])
        except StoreRecordError as exc:
            raise self._refused(exc, what) from None
        await self._write(what, lambda r: r.hset(self._k("overrides"), field, value))

    async def delete_override(self, upstream: str, channel_id: str) -> bool:
        field = _dumps([upstream, channel_id])
        removed = await self._write(
            f"deleting the override of {channel_id}",
            lambda r: r.hdel(self._k("overrides"), field),
        )
        return bool(removed)

    async def load_overrides(self) -> list[Override]:
        rows: dict[bytes, bytes] = await self._read("reading overrides", lambda r: r.hgetall(self._k("overrides")))
        overrides = [Override(*_loads(k), *_loads(v)) for k, v in rows.items()]
        return sorted(overrides, key=lambda o: (o.upstream, o.channel_id))

    # --- the camera ledger --------------------------------------------------------------

    async def save_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        if not entries:
            return
        what = f"writing {len(entries)} ledger entries"
        try:
            mapping = {_key(e.id): _dumps({"fields": dict(e.values), "updated_at": e.updated_at}) for e in entries}
        except StoreRecordError as exc:
            raise self._refused(exc, what) from None
        await self._write(what, lambda r: r.hset(self._k("ledger"), mapping=mapping))

    async def delete_ledger(self, ids: Sequence[str]) -> None:
        if ids:
            fields = [_key(i) for i in ids]
            await self._write(f"deleting {len(ids)} ledger entries", lambda r: r.hdel(self._k("ledger"), *fields))

    async def load_ledger(self) -> list[LedgerEntry]:
        rows: dict[bytes, bytes] = await self._read("reading the ledger", lambda r: r.hgetall(self._k("ledger")))
        entries = []
        for raw_id in sorted(rows, key=_text):
            entry_id = _text(raw_id)
            try:
                stored = _loads(rows[raw_id])
                values = stored["fields"]
                if not isinstance(values, dict):
                    raise ValueError("fields are not an object")
                updated = float(stored.get("updated_at", 0.0))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise StoreError(f"ledger entry {entry_id} in {self.location} cannot be read: {exc}") from None
            entries.append(LedgerEntry(entry_id, {str(k): str(v) for k, v in values.items()}, updated))
        return entries

    # --- tokens -------------------------------------------------------------------------

    async def save_token(self, token: Token) -> None:
        t = token
        what = f"writing token {t.name}"
        try:
            field, value = _key(t.name), _dumps([str(t.role), t.digest, t.created, t.revoked, t.last_used])
        except StoreRecordError as exc:
            raise self._refused(exc, what) from None
        await self._write(what, lambda r: r.hset(self._k("tokens"), field, value))

    async def load_tokens(self) -> list[Token]:
        rows: dict[bytes, bytes] = await self._read("reading tokens", lambda r: r.hgetall(self._k("tokens")))
        tokens = []
        for raw_name in sorted(rows, key=_text):
            name = _text(raw_name)
            role, digest, created, revoked, last_used = _loads(rows[raw_name])
            try:
                tokens.append(Token(name, Role(role), digest, created, revoked, last_used))
            except ValueError:
                raise StoreError(f"token {name} in {self.location} has role {role!r}, which is none") from None
        return tokens

    # --- the audit trail ----------------------------------------------------------------

    async def append_audit(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        if not entries:
            return []
        what = f"appending {len(entries)} audit records"
        try:
            bodies: list[tuple[str, bytes]] = []
            for e in entries:
                if not math.isfinite(e.time):
                    raise StoreRecordError(f"time {e.time} cannot be stored")
                times = repr(float(e.time))
                fields = [e.time, e.actor, e.source, str(e.action), e.target, params_json(e), str(e.result), e.detail]
                bodies.append((times, _dumps(fields)))
        except StoreRecordError as exc:
            raise self._refused(exc, what) from None
        keys = [self._k(k) for k in ("audit:chain", "audit", "audit:seqs", "audit:time")]
        script = self._script(_AUDIT_APPEND)
        head = self._audit_head
        if head is None:
            anchor_head = await self._read("reading the audit chain", self._ends)
            head = anchor_head[1].seq, anchor_head[1].hash
        for _ in range(100):
            seq, previous = head
            records: list[AuditRecord] = []
            args: list[str | bytes] = [str(seq), previous]
            for entry, (times, body) in zip(entries, bodies, strict=True):
                seq += 1
                previous = chain_hash(previous, seq, entry)
                records.append(AuditRecord(seq, entry, previous))
                args += [str(seq), times, previous.encode("ascii") + body]
            answer = await self._write(what, partial(_call, script, keys, args))
            if answer[0] == 1 or (int(answer[1]), _text(answer[2])) == (seq, previous):
                # written (the second case: by this very call, whose first answer was lost and retried)
                self._audit_head = seq, previous
                return records
            # another writer appended meanwhile: chain these after its records
            head = int(answer[1]), _text(answer[2])
        raise StoreError(f"{what} in {self.location} failed: the chain kept moving under 100 attempts")

    async def _ends(self, r: Any) -> tuple[Anchor, Anchor]:
        a_seq, a_hash, h_seq, h_hash = await r.hmget(
            self._k("audit:chain"), ["anchor_seq", "anchor_hash", "head_seq", "head_hash"]
        )
        if h_seq is None or h_hash is None:
            raise StoreError(f"store {self.location} has no {self.prefix}audit:chain: restore it")
        return Anchor(int(a_seq or 0), _text(a_hash or GENESIS.encode())), Anchor(int(h_seq), _text(h_hash))

    def _audit(self, seq: int, raw: bytes) -> AuditRecord:
        digest, text = _text(raw[:64]), _text(raw[64:])
        try:
            fields = json.loads(text)
            if not isinstance(fields, list) or len(fields) != 8:
                raise ValueError("not an array of 8 fields")
        except ValueError as exc:
            raise StoreError(f"audit record {seq} in {self.location} cannot be read: {exc}") from None
        return stored_audit(seq, fields, digest)

    async def _records(self, r: Any, seqs: Sequence[bytes | int]) -> list[AuditRecord]:
        if not seqs:
            return []
        raws = await r.hmget(self._k("audit"), list(seqs))
        return [self._audit(int(s), raw) for s, raw in zip(seqs, raws, strict=True) if raw is not None]

    async def audit_chain(self, after: int = 0, limit: int = 10_000) -> list[AuditRecord]:
        async def page(r: Any) -> list[AuditRecord]:
            seqs = await r.zrangebyscore(self._k("audit:seqs"), f"({after}", "+inf", start=0, num=max(0, limit))
            return await self._records(r, seqs)

        return [] if limit <= 0 else await self._read("reading the audit trail", page)

    async def load_audit(self, query: AuditQuery) -> list[AuditRecord]:
        if query.limit <= 0:
            return []

        async def load(r: Any) -> list[AuditRecord]:
            found: list[AuditRecord] = []
            if query.since is not None or query.until is not None:
                low = "-inf" if query.since is None else _score(query.since)
                high = "+inf" if query.until is None else _score(query.until)
                seqs = sorted(
                    s for s in map(int, await r.zrangebyscore(self._k("audit:time"), low, high)) if s > query.after
                )
                for i in range(0, len(seqs), AUDIT_PAGE):
                    found += [x for x in await self._records(r, seqs[i : i + AUDIT_PAGE]) if query.matches(x)]
                    if len(found) >= query.limit:
                        break
                return found[: query.limit]
            after = query.after
            while len(found) < query.limit:
                seqs = await r.zrangebyscore(self._k("audit:seqs"), f"({after}", "+inf", start=0, num=AUDIT_PAGE)
                if not seqs:
                    break
                found += [x for x in await self._records(r, seqs) if query.matches(x)]
                after = int(seqs[-1])
            return found[: query.limit]

        return await self._read("reading the audit trail", load)

    async def audit_ends(self) -> tuple[Anchor, Anchor]:
        return await self._read("reading the audit chain", self._ends)

    async def prune_audit(self, before: float) -> int:
        if math.isnan(before):
            return 0
        keys = [self._k(k) for k in ("audit:chain", "audit", "audit:seqs", "audit:time")]
        script = self._script(_AUDIT_PRUNE)
        bound = repr(before) if math.isfinite(before) else ("1e308" if before > 0 else "-1e308")
        removed = 0
        while True:
            # in chunks, each leaving the chain whole with its anchor: Redis serves nobody while a script runs
            n = int(
                await self._write(
                    "removing audit records past their retention",
                    lambda r: script(keys=keys, args=[bound, PRUNE_CHUNK]),
                )
            )
            removed += n
            if n < PRUNE_CHUNK:
                return removed
            await asyncio.sleep(0)
