"""Device ownership and liveness in Redis (issue 17): the Lua side of :mod:`gb28181gw.gb.ownership`.

Keys (after the store's prefix, ``gbgw:``)::

    owner           hash    device ID -> "<epoch> <node>": the node whose REGISTER claimed it last
    owner:at        hash    device ID -> time (Redis's clock) of the REGISTER that made the current epoch
    lost:<node>     hash    device ID -> epoch: devices claimed away from <node> (read and emptied
                            by <node> with its next batch, so it stops watching them at once)
    live:<node>     zset    device ID -> liveness deadline (Redis's clock) of <node>'s online devices,
                            plus a third of the device's keepalive window (rewritten only when the
                            deadline passes it: a janitor marks late by at most that, never early)
    nodes           set     node IDs that have written (a dead one is removed by its janitor)
    janitor:<node>  string  the token of the live node adopting dead <node>'s devices (SET NX PX)
    events          stream  device online/offline: fields device, event, node, epoch, reason, at
                            (XADD MAXLEN ~ EVENTS_MAXLEN); removed (device, event, node, at):
                            appended by the store's delete of a row, in the same script
    boot            string  a token set once per Redis data set: another one means Redis lost its data
    noticed         hash    device ID -> "<process token>:<number>" of the last online/offline notice
                            appended for it (a batch sent again appends none of its notices twice)

**One batch, one script** (:data:`_WRITE`): the registrar's write-behind (every
``store.flush_interval``) sends the claims queued since the last batch, the changed rows, the
deadlines of this node's online devices and the online/offline events in one script per chunk of
:data:`CHUNK` devices, pipelined: no round trip per REGISTER or keepalive. Per device the script
claims it first (when a REGISTER is queued for it), then compares ``owner`` with this node's
epoch, and writes the row, the deadline and the events only if the device is still this node's.

**Each notice once**: a batch can reach Redis more than once: the registrar sends a failed batch
again whole, with the notices it carried, and a failure may come after some or all of its scripts
ran (their answers lost, or a later chunk of the pipeline failing). Every notice carries its
process's token and a number rising in the order notices are made
(:attr:`~gb28181gw.store.base.DeviceNotice.seq`); the script appends a notice only if its number
is past the last one of the same process appended for the device (``noticed``), so a batch sent
again appends nothing twice, while a device going offline and online again within one ownership
epoch (a keepalive brings it back) is still told each time. A restarted node has a new token.

**Offline exactly once**: the in-memory timer of the owning node decides; its offline event is
appended only if the script removes the device from ``live:<node>`` (or the device was never put
there), so an offline already marked by a janitor is not marked again. A node whose
``node:<id>`` key has been missing for :data:`DEAD_GRACE` seconds is dead; one live node takes
``janitor:<dead>`` (``SET NX PX``) and runs :data:`_SWEEP` every :data:`JANITOR_INTERVAL`: the
devices of ``live:<dead>`` still owned by the dead node are marked offline (row and event) once
their deadline passes, the others (registered elsewhere since) are dropped from the set; once the
set is empty it is deleted and the node removed from ``nodes``. A janitor that dies leaves its
lock to expire; the next one goes on from what is left. A node that was only cut off from Redis
(or stopped) past its key's life finds, when it next writes the deadline of a device still online
with it, the device out of its set and its row offline: it appends the device's online event
(``back``) and writes its row again.

**Learning what other nodes do** (:meth:`RedisCluster.news`, every second from the
registrar): one script (:data:`_NEWS`) reads on from this node's cursor in ``events`` and gives back
the rows of the devices the entries name that other nodes (or janitors) wrote about, with what
:func:`~gb28181gw.gb.ownership.follow_verdict` needs to tell whether entries were lost past the
cursor (``boot``, the stream's last, first and greatest deleted IDs). When they may have been (the
first call, a trimmed or emptied stream, Redis restarted or restored) every row is read instead, and
again :data:`SETTLE` seconds after a restart (the other nodes write their devices again with their
next batch, without events); a full read every :data:`RECONCILE_INTERVAL` catches what no event
says (a device provisioned at another node). A deleted row has its ``removed`` entry (appended by
the store's delete, in the same script): the device is named in :attr:`Learnt.removed` if its row
is still gone. A full read is :attr:`~gb28181gw.store.base.Learnt.exact` (a device missing from
it was deleted) until this node sees Redis lose data (its ``boot`` token changed, or the stream
went back): rows that no node writes again (provisioned, never registered) do not come back, so
from then on only a ``removed`` entry drops a device. Following the stream rather than reading every row
each time costs a few entries a second instead of every row; following it rather than a pub/sub
channel loses nothing while a node is cut off, and the cursor sees when the log itself lost
something.

**Times are Redis's**: a claim's REGISTER time, the deadlines in ``live:<node>`` and a janitor's
"now" are this node's wall clock plus its offset from Redis's ``TIME`` (measured at start and every
janitor interval), so claims and deadlines written by nodes whose clocks disagree compare as if
one clock had read them all (to within a round trip): a node minutes fast no longer wins every
claim for minutes, nor does a slow one's dead devices get marked offline early. An offset beyond
:data:`CLOCK_WARN` is logged.

**Redis away**: every batch that fails is kept whole by the caller and sent again, claims
included (a claim keeps the time of its REGISTER, so one that finds a later REGISTER's claim on
return loses). Once a batch goes through after a failure, or the ``boot`` token changed (Redis
restarted empty), the caller writes every device it owns again (:attr:`WriteResult.resync`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from gb28181gw.errors import StoreError, StoreRecordError
from gb28181gw.gb.model import Device, DeviceState
from gb28181gw.gb.ownership import Follow, NodeWatch, Owner, Ownership, StreamId, follow_verdict, parse_stream_id
from gb28181gw.stopping import check_cancelled, stop_task
from gb28181gw.store.base import DeviceNotice, Learnt, WriteResult
from gb28181gw.store.redis import (
    DEVICE_LAYOUT,
    ENCODE_ON_LOOP,
    EVENTS_MAXLEN,
    NODE_TTL,
    RedisStore,
    _check_ints,
    _dumps,
    _key,
    _text,
)

log = logging.getLogger("gb28181gw.ownership")

#: Devices per script: Redis serves nobody else while one runs.
CHUNK = 500
#: Devices of a dead node one janitor script takes at most (the janitor runs it again while it is full).
SWEEP_CHUNK = 1000
#: Seconds between janitor rounds (looking for dead nodes, adopting their devices).
JANITOR_INTERVAL = 2.0
#: Seconds a node's key must stay missing before it is dead: a live node takes its key again
#: within a third of NODE_TTL after Redis lost it.
DEAD_GRACE = NODE_TTL / 3 + 2.0
#: Milliseconds the janitor lock lives unless its holder renews it (every round).
LOCK_TTL_MS = int(JANITOR_INTERVAL * 5 * 1000)
#: Stream entries one read takes at most (the registrar reads again at once while they come full).
LEARN_CHUNK = 1000
#: Seconds between full reads of every device row, for what no event tells (a device provisioned elsewhere).
RECONCILE_INTERVAL = 300.0
#: Seconds after Redis lost its data before every row is read once more: the other nodes write
#: their devices again with their next batch (``store.flush_interval``), and that says no event.
SETTLE = 10.0
#: Seconds this node's clock may differ from Redis's before a warning says so. Claims and deadlines
#: are put in Redis's clock (:meth:`RedisCluster.registered`), so nodes need not agree; a clock this
#: far off is still worth fixing (event and row times are this node's).
CLOCK_WARN = 2.0

# Lua fields of a device row (1-based), for the janitor's offline mark
_STATE = DEVICE_LAYOUT.index("state") + 1
_REASON = DEVICE_LAYOUT.index("offline_reason") + 1
_UPDATED = DEVICE_LAYOUT.index("updated_at") + 1

_WRITE = """
-- KEYS: owner, owner:at, devices, live:<node>, events, nodes, boot, lost:<node>, noticed
-- ARGV: node, events maxlen, now, boot candidate, key prefix, n devices,
--       n x (device, claim time or '', epoch ('0': the row only, if no node owns the device) or '',
--            row or '', deadline or '' / '-' to remove),
--       then (device, kind, reason, '1' if never put in live:<node>, '<token>:<number>')...
-- answer: {boot, (device, result, value)...}; result won (value: epoch), lost (the owner),
--         restored / adopted (epoch), refused (the owner); gone: claimed away meanwhile (lost:<node>);
--         back (epoch): marked offline by a janitor, online here (its online event appended)
local node = ARGV[1]
redis.call('SADD', KEYS[6], node)
local boot = redis.call('GET', KEYS[7])
if not boot then redis.call('SET', KEYS[7], ARGV[4]) boot = ARGV[4] end
local out = {boot}
local function owner_of(dev)
  local cur = redis.call('HGET', KEYS[1], dev)
  if not cur then return nil, nil, nil end
  local e, n = string.match(cur, '^(%d+) (.+)$')
  return cur, tonumber(e), n
end
local ok, gone = {}, {}
local n = tonumber(ARGV[6])
local coming = {}  -- devices whose online event this batch carries
for j = 7 + 5 * n, #ARGV, 5 do if ARGV[j + 1] == 'online' then coming[ARGV[j]] = true end end
local i = 7
for _ = 1, n do
  local dev, at, epoch, row, deadline = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local cur, ce, cn = owner_of(dev)
  local mine = nil
  if at ~= '' then
    local stored_at = redis.call('HGET', KEYS[2], dev)
    if (not stored_at) or tonumber(at) >= tonumber(stored_at) then
      mine = (ce or 0) + 1
      redis.call('HSET', KEYS[1], dev, mine .. ' ' .. node)
      redis.call('HSET', KEYS[2], dev, at)
      -- tell the node it was taken from, so that it stops watching it with its next batch
      -- and take it out of that node's live set: it is not that node's to mark offline (nor a
      -- janitor's for it, whose sweep reads only due entries and would hold a dead node's set
      -- open until the re-homed device's old deadline)
      if cn and cn ~= node then
        redis.call('HSET', ARGV[5] .. 'lost:' .. cn, dev, mine)
        redis.call('ZREM', ARGV[5] .. 'live:' .. cn, dev)
      end
      out[#out + 1] = dev out[#out + 1] = 'won' out[#out + 1] = tostring(mine)
    else
      redis.call('ZREM', KEYS[4], dev)
      out[#out + 1] = dev out[#out + 1] = 'lost' out[#out + 1] = cur or ''
    end
  elseif epoch == '0' then
    -- a device no node owns (provisioned, never registered): its row is anybody's to write
    if not cur and row ~= '' then redis.call('HSET', KEYS[3], dev, row) end
  else
    local e = tonumber(epoch)
    if cn == node and ce == e then mine = e
    elseif (not cur) or (cn == node and ce < e) then
      redis.call('HSET', KEYS[1], dev, e .. ' ' .. node)
      mine = e
      out[#out + 1] = dev out[#out + 1] = 'restored' out[#out + 1] = tostring(e)
    elseif cn == node then
      mine = ce
      out[#out + 1] = dev out[#out + 1] = 'adopted' out[#out + 1] = tostring(ce)
    else
      redis.call('ZREM', KEYS[4], dev)
      out[#out + 1] = dev out[#out + 1] = 'refused' out[#out + 1] = cur
    end
  end
  if mine then
    ok[dev] = mine
    local back = false
    if deadline ~= '' and deadline ~= '-' and not coming[dev] and not redis.call('ZSCORE', KEYS[4], dev) then
      -- online here, yet out of our live set and its row offline: a janitor marked it while this node
      -- could not reach Redis (or was stopped); the stream hears it is back
      local raw = redis.call('HGET', KEYS[3], dev)
      if raw then
        local good, stored = pcall(cjson.decode, raw)
        back = good and type(stored) == 'table' and stored[STATE_FIELD] == 'offline'
      end
    end
    if row ~= '' then redis.call('HSET', KEYS[3], dev, row) end
    if deadline == '-' then gone[dev] = redis.call('ZREM', KEYS[4], dev)
    elseif deadline ~= '' then redis.call('ZADD', KEYS[4], deadline, dev) end
    if back then
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[2], '*', 'device', dev, 'event', 'online', 'node', node,
                 'epoch', mine, 'reason', '', 'at', ARGV[3])
      out[#out + 1] = dev out[#out + 1] = 'back' out[#out + 1] = tostring(mine)
    end
  end
end
local function seen(dev, said)
  -- this notice, or a later one of the same process, was appended already (a batch sent again)
  local last = redis.call('HGET', KEYS[9], dev)
  if not last then return false end
  local lt, ln = string.match(last, '^(%x+):(%d+)$')
  local t, num = string.match(said, '^(%x+):(%d+)$')
  return lt ~= nil and lt == t and tonumber(num) <= tonumber(ln)
end
while i <= #ARGV do
  local dev, kind, reason, fresh, said = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local e = ok[dev]
  if e and not seen(dev, said) then
    redis.call('HSET', KEYS[9], dev, said)
    local fire = true
    if kind == 'offline' then
      local removed = redis.call('ZREM', KEYS[4], dev)
      fire = removed == 1 or gone[dev] == 1 or fresh == '1'
      gone[dev] = 0
    end
    if fire then
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[2], '*', 'device', dev, 'event', kind, 'node', node,
                 'epoch', e, 'reason', reason, 'at', ARGV[3])
    end
  end
end
-- devices another node claimed since our last batch: say so, unless ours again meanwhile
local taken = redis.call('HGETALL', KEYS[8])
if #taken > 0 then
  redis.call('DEL', KEYS[8])
  for j = 1, #taken, 2 do
    local cur, ce, cn = owner_of(taken[j])
    if cn ~= node then
      redis.call('ZREM', KEYS[4], taken[j])
      out[#out + 1] = taken[j] out[#out + 1] = 'gone' out[#out + 1] = cur or ''
    end
  end
end
return out
""".replace("STATE_FIELD", str(_STATE))

_NEWS = """
-- KEYS: events, boot, devices, owner
-- ARGV: cursor ('' for none), most entries, this node, then IDs of devices to read anyway
-- answer: {boot, last generated ID, greatest deleted ID or '', first entry ID or '', last entry read or '',
--          (device, row or false, '1' if a 'removed' entry named it else '0')...}: the devices the
--          entries after the cursor name, written about by another node (or its janitor), and those asked for
local boot = redis.call('GET', KEYS[2]) or ''
local last, deleted, first = '0-0', '', ''
local out = {boot}
local wanted, order, removed = {}, {}, {}
local function want(dev)
  if not wanted[dev] then wanted[dev] = true order[#order + 1] = dev end
end
local read = ''
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    local k, v = info[i], info[i + 1]
    if k == 'last-generated-id' then last = v
    elseif k == 'max-deleted-entry-id' then deleted = v
    elseif k == 'first-entry' and type(v) == 'table' then first = v[1] end
  end
  if ARGV[1] ~= '' then
    local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
    for _, entry in ipairs(entries) do
      read = entry[1]
      local f, dev, node, event = entry[2], nil, nil, nil
      for j = 1, #f, 2 do
        if f[j] == 'device' then dev = f[j + 1]
        elseif f[j] == 'node' then node = f[j + 1]
        elseif f[j] == 'event' then event = f[j + 1] end
      end
      -- a janitor's offline names the dead node: another's too, unless this node's own (it is back)
      if dev and node ~= ARGV[3] then
        want(dev)
        if event == 'removed' then removed[dev] = true end
      end
    end
  end
end
for i = 4, #ARGV do want(ARGV[i]) end
out[2] = last out[3] = deleted out[4] = first out[5] = read
for _, dev in ipairs(order) do
  out[#out + 1] = dev
  out[#out + 1] = redis.call('HGET', KEYS[3], dev)
  out[#out + 1] = removed[dev] and '1' or '0'
end
return out
"""

_LOAD = """
-- KEYS: owner, boot; ARGV: node, boot candidate, then the IDs of registered devices, then '--',
-- then the IDs of the others. A registered device nobody owns (stored before ownership existed)
-- becomes this node's at epoch 1. Answer: {boot, owner of each ID in order, or false}
local boot = redis.call('GET', KEYS[2])
if not boot then redis.call('SET', KEYS[2], ARGV[2]) boot = ARGV[2] end
local out = {boot}
local registered = true
for i = 3, #ARGV do
  if ARGV[i] == '--' then registered = false
  else
    if registered then redis.call('HSETNX', KEYS[1], ARGV[i], '1 ' .. ARGV[1]) end
    out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i])
  end
end
return out
"""

_SWEEP = """
-- KEYS: owner, devices, live:<dead>, events, janitor:<dead>, nodes, node:<dead>, lost:<dead>
-- ARGV: dead node, lock token, now, events maxlen, lock ttl ms, janitor node, reason,
--       state field, reason field, updated field (1-based indexes in a device row), most devices to take
-- answer: {marked offline, left to their new node, 1 when the dead node's set is done, devices taken}
--         {-1} the lock is not ours; {-2} the node is back; {-3} another janitor finished it
-- Only devices whose deadline has passed are taken, at most ARGV[11]: a dead node's 100,000 would
-- otherwise hold Redis up for everyone (a lease renewal too) every round until the last deadline.
if redis.call('GET', KEYS[5]) ~= ARGV[2] then return {-1, 0, 0, 0} end
if redis.call('EXISTS', KEYS[7]) == 1 then redis.call('DEL', KEYS[5]) return {-2, 0, 0, 0} end
-- finished already by another janitor, which let go of the lock this one then took
if redis.call('SISMEMBER', KEYS[6], ARGV[1]) == 0 then redis.call('DEL', KEYS[5]) return {-3, 0, 0, 0} end
redis.call('PEXPIRE', KEYS[5], ARGV[5])
local dead, now = ARGV[1], tonumber(ARGV[3])
local si, ri, ui = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local marked, left = 0, 0
local all = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[11]))
for i = 1, #all, 2 do
  local dev, deadline = all[i], tonumber(all[i + 1])
  local cur = redis.call('HGET', KEYS[1], dev)
  local e, n = nil, nil
  if cur then e, n = string.match(cur, '^(%d+) (.+)$') end
  if n ~= dead then
    redis.call('ZREM', KEYS[3], dev)
    left = left + 1
  elseif deadline <= now then
    redis.call('ZREM', KEYS[3], dev)
    local raw = redis.call('HGET', KEYS[2], dev)
    if raw then
      local good, row = pcall(cjson.decode, raw)
      if good and type(row) == 'table' and row[si] == 'online' then
        row[si] = 'offline'
        row[ri] = ARGV[7]
        row[ui] = now
        redis.call('HSET', KEYS[2], dev, cjson.encode(row))
      end
    end
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'device', dev, 'event', 'offline', 'node', dead,
               'epoch', e, 'reason', ARGV[7], 'at', ARGV[3], 'janitor', ARGV[6])
    marked = marked + 1
  end
end
if redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[3])
  redis.call('DEL', KEYS[8])
  redis.call('SREM', KEYS[6], dead)
  redis.call('DEL', KEYS[5])
  return {marked, left, 1, #all / 2}
end
return {marked, left, 0, #all / 2}
"""


def _encode_rows(rows: list[tuple[Any, ...]]) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """Device rows as stored (:func:`~gb28181gw.store.redis._dumps`), and those refused with why."""
    encoded, refused = {}, []
    for row in rows:
        try:
            _check_ints(row)
            encoded[row[0]] = _dumps(row)
        except StoreRecordError as exc:
            refused.append((row[0], str(exc)))
    return encoded, refused


class RedisCluster:
    """The :class:`~gb28181gw.store.base.Cluster` of a node among several on one Redis store.

    Args:
        store: the node's open Redis store (its connection, and its ``writable`` state, are shared).
        node: this node's ``node.id``.
        clock: wall-clock seconds (event times, deadlines).
        janitor_interval: seconds between janitor rounds.
        dead_grace: seconds a node's key must stay missing before its devices are adopted.

    Attributes:
        adoptions: devices of dead nodes this node's janitor handled, by result: ``offline``
            (marked offline once), ``reclaimed`` (registered at another node since: left alone),
            and ``finished`` (dead nodes whose set was emptied).
        errors: Redis operations of ownership that failed, by operation (``write``, ``janitor``).
    """

    shared = True

    def __init__(
        self,
        store: RedisStore,
        node: str,
        *,
        clock: Callable[[], float] = time.time,
        janitor_interval: float = JANITOR_INTERVAL,
        dead_grace: float = DEAD_GRACE,
    ) -> None:
        self.store = store
        self.node = node
        self.ownership = Ownership(node)
        self._clock = clock
        self.janitor_interval = janitor_interval
        self._watch = NodeWatch(dead_grace)
        self._boot: str | None = None
        self._failed = False
        self._published: set[str] = set()  # devices this node put in live:<node>
        self._janitor: asyncio.Task[None] | None = None
        self.token = secrets.token_hex(8)
        #: Redis's clock minus this node's (seconds), as last measured: added to every time written
        self.clock_offset = 0.0
        self._clock_warned = False
        self.adoptions: Counter[tuple[str, ...]] = Counter()
        self.errors: Counter[tuple[str, ...]] = Counter()
        # following other nodes' writes (news): the last entry of ``events`` read, the boot token
        # the stream was read under, when to read every row again, devices to read anyway
        self._cursor: StreamId | None = None
        self._news_boot: str | None = None
        self._reconcile_at = 0.0
        self._recheck: set[str] = set()
        # whether a full read is every device there is (a device missing was deleted): not once
        # Redis lost data while this node ran, as rows nobody writes again never come back
        self._exact = True

    def _k(self, name: str) -> str:
        return self.store.prefix + name

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, devices: Sequence[Device]) -> None:
        registered = [d.device_id for d in devices if d.state is not DeviceState.UNREGISTERED]
        others = [d.device_id for d in devices if d.state is DeviceState.UNREGISTERED]
        args: list[str | bytes] = [self.node, secrets.token_hex(8), *map(_key, registered), "--", *map(_key, others)]
        script = self.store._script(_LOAD)
        answer = await self.store._write(
            "reading device owners", lambda r: script(keys=[self._k("owner"), self._k("boot")], args=args)
        )
        self._boot = _text(answer[0])
        self._news_boot = self._boot  # what the first read compares with: a loss since start is one
        await self.store._write("reading Redis's clock", self._measure_clock)
        owners = []
        for device_id, raw in zip([*registered, *others], answer[1:], strict=True):
            if raw:
                try:
                    owners.append((device_id, Owner.parse(_text(raw))))
                except ValueError as exc:
                    log.warning(
                        "device owner cannot be read; not this node's", extra={"device": device_id, "error": str(exc)}
                    )
        self.ownership.load(owners)
        log.info(
            "device ownership loaded",
            extra={"node": self.node, "owned": self.ownership.owned(), "devices": len(devices)},
        )
        self._janitor = asyncio.get_running_loop().create_task(self._janitor_loop())

    async def _measure_clock(self, r: Any) -> None:
        before = self._clock()
        secs, usecs = await r.time()
        after = self._clock()
        self.clock_offset = offset = secs + usecs / 1e6 - (before + after) / 2
        if abs(offset) > CLOCK_WARN and not self._clock_warned:
            log.warning(
                "this node's clock is off Redis's: claims and deadlines are put in Redis's clock, "
                "but event and row times are this node's; check NTP",
                extra={"node": self.node, "offset": round(offset, 3)},
            )
        self._clock_warned = abs(offset) > CLOCK_WARN

    def _now(self) -> float:
        """Now in Redis's clock."""
        return self._clock() + self.clock_offset

    async def stop(self) -> None:
        if self._janitor is not None:
            # not cancel() and await: a round cancelled as a command is sent runs on (stopping.py)
            await stop_task(self._janitor, what=f"node {self.node}'s janitor")
            self._janitor = None

    # --- the registrar's side ------------------------------------------------------------

    def owns(self, device_id: str) -> bool:
        return self.ownership.owns(device_id)

    def registered(self, device_id: str, at: float) -> None:
        # in Redis's clock, once: a claim sent again (Redis was away) carries the same time
        self.ownership.registered(device_id, at + self.clock_offset)

    @property
    def pending(self) -> bool:
        return self.ownership.pending

    @property
    def lost(self) -> int:
        """Devices another node took from this one (claims lost, writes refused, claimed away)."""
        return self.ownership.lost

    async def write(
        self, devices: Sequence[Device], deadlines: dict[str, float | None], notices: Sequence[DeviceNotice]
    ) -> WriteResult:
        own = self.ownership
        claims = own.take_claims()
        plain = [d.row() for d in devices]  # now, on the loop: callers go on changing the devices
        if len(plain) < ENCODE_ON_LOOP:
            rows, refused = _encode_rows(plain)
        else:
            # the heartbeat flush writes every device every 30 s: encoding 10,000 takes ~30 ms
            rows, refused = await asyncio.get_running_loop().run_in_executor(None, _encode_rows, plain)
        for device_id, error in refused:
            # left out alone: its claim, deadline and events still go
            self.store.write_failures["record"] += 1
            log.error("device cannot be stored", extra={"device": device_id, "error": error})
        ids = [i for i in dict.fromkeys([*claims, *rows, *deadlines, *(n.device_id for n in notices)]) if own.owns(i)]
        # rows of devices no node may own yet (an operator provisioned them): written if nobody does
        unowned = [i for i in rows if not own.owns(i)]
        by_device: dict[str, list[DeviceNotice]] = {}
        for notice in notices:
            by_device.setdefault(notice.device_id, []).append(notice)
        now = repr(self._now())
        offset = self.clock_offset
        chunks: list[list[bytes | str]] = []
        for start in range(0, max(len(ids), 1), CHUNK):
            part = ids[start : start + CHUNK]
            args: list[bytes | str] = [
                self.node, str(EVENTS_MAXLEN), now, secrets.token_hex(8), self.store.prefix, str(len(part))
            ]  # fmt: skip
            events: list[bytes | str] = []
            for device_id in part:
                at = claims.get(device_id)
                epoch = own.epoch(device_id)
                if at is None and epoch is None:
                    # claiming, and its claim went with an earlier batch whose answer is pending: none here
                    continue
                if device_id not in deadlines:
                    score = ""
                else:
                    when = deadlines[device_id]
                    score = "-" if when is None else repr(when + offset)
                args += [
                    _key(device_id),
                    "" if at is None else repr(at),
                    "" if at is not None or epoch is None else str(epoch),
                    rows.get(device_id, b""),
                    score,
                ]
                for notice in by_device.get(device_id, ()):
                    fresh = "0" if device_id in self._published else "1"
                    events += [_key(device_id), notice.kind, notice.reason, fresh, f"{self.token}:{notice.seq}"]
            if start == 0:
                for device_id in unowned:
                    args += [_key(device_id), "", "0", rows[device_id], ""]
            args[5] = str((len(args) - 6) // 5)
            chunks.append(args + events)
        keys = [self._k(k) for k in ("owner", "owner:at", "devices", f"live:{self.node}", "events", "nodes", "boot",
                                     f"lost:{self.node}", "noticed")]  # fmt: skip
        script = self.store._script(_WRITE)

        async def send(r: Any) -> list[Any]:
            if len(chunks) == 1:
                return [await script(keys=keys, args=chunks[0])]
            async with r.pipeline(transaction=False) as pipe:
                for args in chunks:
                    await script(keys=keys, args=args, client=pipe)
                return list(await pipe.execute())

        try:
            answers = await self.store._write(f"writing {len(ids)} devices with their owners", send)
        except StoreError:
            own.unsent(claims)
            self._failed = True
            self.errors[("write",)] += 1
            raise
        resync = self._failed
        self._failed = False
        for device_id, deadline in deadlines.items():
            if deadline is None:
                self._published.discard(device_id)
            elif own.owns(device_id):
                self._published.add(device_id)
        for notice in notices:
            if notice.kind == "offline":
                self._published.discard(notice.device_id)
        back: list[str] = []
        for answer in answers:
            boot = _text(answer[0])
            if boot != self._boot:
                if self._boot is not None:
                    log.warning("Redis lost its data (restarted empty?): this node writes its devices again")
                    resync = True
                self._boot = boot
            for j in range(1, len(answer), 3):
                device_id, result, value = _text(answer[j]), _text(answer[j + 1]), _text(answer[j + 2])
                if result == "won":
                    own.claimed(device_id, int(value))
                elif result == "lost":
                    own.claim_lost(device_id)
                    self._lost_log(device_id, value, "a later REGISTER claimed it at another node first")
                elif result in ("restored", "adopted"):
                    own.accepted(device_id, int(value))
                elif result == "back":
                    back.append(device_id)
                else:  # refused, gone
                    own.refused(device_id)
                    self._lost_log(device_id, value, "another node claimed it")
        lost = own.take_forgotten()
        for device_id in lost:
            self._published.discard(device_id)
        # its new node's online event may have been read while this node still held it (and
        # passed over): the row is read again with the next news
        self._recheck.update(lost)
        if resync:
            self._published.clear()
        if back:
            log.info(
                "devices marked offline while this node was away are online here: said so again",
                extra={"node": self.node, "devices": len(back)},
            )
        return WriteResult(lost, resync, back)

    async def news(self) -> Learnt:
        """See :meth:`~gb28181gw.store.base.Cluster.news`; one script, or a full read (see the module docstring)."""
        recheck, self._recheck = self._recheck, set()
        cursor = self._cursor
        args: list[str | bytes] = [
            "" if cursor is None else f"{cursor[0]}-{cursor[1]}", str(LEARN_CHUNK), self.node, *map(_key, recheck)
        ]  # fmt: skip
        keys = [self._k(k) for k in ("events", "boot", "devices", "owner")]
        script = self.store._script(_NEWS)
        try:
            answer = await self.store._read(
                "reading other nodes' device events", lambda r: script(keys=keys, args=args)
            )
        except StoreError:
            self._recheck |= recheck
            self.errors[("news",)] += 1
            raise
        boot, last, deleted, first, read = (_text(x) for x in answer[:5])
        verdict = follow_verdict(
            cursor,
            boot_changed=boot != self._news_boot,
            last=parse_stream_id(last),
            deleted=parse_stream_id(deleted) if deleted else None,
            first=parse_stream_id(first) if first else None,
        )
        now = time.monotonic()
        if verdict is Follow.READ and now < self._reconcile_at:
            devices, removed = [], []
            for j in range(5, len(answer), 3):
                if answer[j + 1] is None:
                    # no row: deleted since. Dropped only when a 'removed' entry says so: a row
                    # missing for any other reason (Redis lost it) is no delete
                    if _text(answer[j + 2]) == "1":
                        removed.append(_text(answer[j]))
                    continue
                try:
                    devices.append(self.store._device(answer[j], answer[j + 1]))
                except StoreError as exc:
                    log.warning("another node's device cannot be read; left as known", extra={"error": str(exc)})
            more = False
            if read:
                self._cursor = at = parse_stream_id(read)
                more = at < parse_stream_id(last)  # stopped at LEARN_CHUNK
            return Learnt(devices, more=more, removed=removed)
        went_back = cursor is not None and parse_stream_id(last) < cursor
        if self._news_boot is not None and (boot != self._news_boot or went_back):
            if self._exact:
                log.warning(
                    "Redis lost its data (or went back to an older copy): devices missing from it are "
                    "kept in memory from now on; only a delete's own event removes one",
                    extra={"node": self.node},
                )
            self._exact = False
        # entries may be lost past the cursor (or it is time): every row, read after ``last``
        # was taken, so that whatever is appended from here on is read next time
        try:
            rows = await self.store.load_devices()
        except StoreError:
            self._recheck |= recheck
            self.errors[("news",)] += 1
            raise
        if boot != self._news_boot and self._news_boot is not None:
            # the other nodes write theirs again with their next batch, eventless: read once more then
            self._reconcile_at = now + SETTLE
        else:
            self._reconcile_at = now + RECONCILE_INTERVAL
        if cursor is not None and verdict is Follow.RECONCILE:
            log.info(
                "device events may have been missed; every device read again",
                extra={"node": self.node, "devices": len(rows)},
            )
        self._cursor = parse_stream_id(last)
        self._news_boot = boot
        return Learnt(rows, whole=True, exact=self._exact)

    def _lost_log(self, device_id: str, owner: str, why: str) -> None:
        if not self.ownership.owns(device_id):
            log.info(
                "device owned by another node now: this node stops watching it",
                extra={"device": device_id, "owner": owner, "node": self.node, "reason": why},
            )

    # --- the janitor ---------------------------------------------------------------------

    async def _janitor_loop(self) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            check_cancelled()
            await asyncio.sleep(self.janitor_interval)
            try:
                await self._measure_clock(self.store._r())
                await self.janitor_round(loop.time())
                failing = False
            except (RedisError, OSError, StoreError) as exc:
                self.errors[("janitor",)] += 1
                if not failing:
                    log.warning("janitor cannot reach Redis; will retry", extra={"error": str(exc)})
                failing = True
            except Exception:
                log.exception("janitor round failed; will retry")

    async def janitor_round(self, now: float) -> list[str]:
        """Look for dead nodes and adopt the devices of those whose lock this node gets; the dead nodes seen.

        Raises:
            RedisError, OSError: Redis did not answer.
        """
        r = self.store._r()
        members = sorted(_text(m) for m in await r.smembers(self._k("nodes")) if _text(m) != self.node)
        if not members:
            self._watch.observe({}, now)
            return []
        async with r.pipeline(transaction=False) as pipe:
            for m in members:
                pipe.exists(self._k(f"node:{m}"))
            present = dict(zip(members, (bool(x) for x in await pipe.execute()), strict=True))
        dead = self._watch.observe(present, now)
        for node in dead:
            lock = self._k(f"janitor:{node}")
            if not await r.set(lock, self.token, nx=True, px=LOCK_TTL_MS):
                held = await r.get(lock)
                if held is None or _text(held) != self.token:
                    continue  # another node adopts it
            await self.sweep(node)
        return dead

    async def sweep(self, dead: str) -> tuple[int, int, bool]:
        """One round of adopting ``dead``'s devices (this node holding ``janitor:<dead>``).

        Returns:
            (marked offline, left to the node that owns them now, whether the dead node is done).
        """
        keys = [self._k(k) for k in ("owner", "devices", f"live:{dead}", "events", f"janitor:{dead}", "nodes",
                                     f"node:{dead}", f"lost:{dead}")]  # fmt: skip
        reason = f"node {dead} stopped; no keepalive since"
        args: list[str | int] = [dead, self.token, repr(self._now()), EVENTS_MAXLEN, LOCK_TTL_MS, self.node, reason,
                _STATE, _REASON, _UPDATED, SWEEP_CHUNK]  # fmt: skip
        script = self.store._script(_SWEEP)
        marked = left = done = 0
        while True:
            m, n, done, taken = (int(x) for x in await script(keys=keys, args=args))
            if m < 0:  # the lock is another's now, the node is back, or another janitor finished it
                done = 0
                break
            marked, left = marked + m, left + n
            if done or taken < SWEEP_CHUNK:
                break
        if marked:
            self.adoptions[("offline",)] += marked
            log.info(
                "devices of a dead node marked offline", extra={"dead": dead, "devices": marked, "node": self.node}
            )
        if left:
            self.adoptions[("reclaimed",)] += left
        if done:
            self.adoptions[("finished",)] += 1
            log.info("dead node's devices adopted; node removed", extra={"dead": dead, "node": self.node})
        return marked, left, bool(done)
