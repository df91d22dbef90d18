"""Calls between gateway nodes on Redis Streams (issue 17): the transport of :mod:`gb28181gw.gb.rpc`.

Keys (after the store's prefix, ``gbgw:``)::

    rpc:<node>              stream  the inbox of node <node>: one entry per call (Call.encode), read
                                    by its consumer group "rpc" (one consumer: the node, by its id);
                                    MAXLEN ~ INBOX_MAXLEN
    rpc:<node>:replies      stream  the answers to the calls node <node> made (Answer.encode), read by
                                    that node with XREAD; MAXLEN ~ REPLIES_MAXLEN

Why Streams and not pub/sub: a message published while a node's connection blips is lost for
good, and a call must either be answered or time out for a reason. A stream keeps a call until
its node reads and acknowledges it (the consumer group's pending list survives the node's
restart: :meth:`RedisRpc.open` reclaims the calls left pending, with ``XAUTOCLAIM``, and answers
those still before their deadline), and keeps an answer until the caller has read past it.

Answers go back on a stream of the caller's, ``rpc:<caller>:replies``, read by one task per
node with ``XREAD BLOCK`` from the last entry it saw; it resolves the future of each call
waiting here by its id (an answer to a call that has given up is dropped). One reply stream per
caller, rather than one per call, costs no key creation per call and one blocked reader per node.
Other choices: a per-call list with ``BLPOP`` (a key and a blocked connection per call in flight).

Calling:

- One Lua script checks that the target is live (its ``node:<id>`` claim exists, see
  :mod:`gb28181gw.store.redis`) and appends the call to its inbox: a node that is not live fails
  the call at once (:class:`~gb28181gw.errors.NodeUnreachable`) instead of at its deadline.
- The caller waits until the call's deadline (``media.invite_timeout`` plus
  :data:`~gb28181gw.gb.rpc.INVITE_MARGIN` for opening a stream,
  :data:`~gb28181gw.gb.rpc.CONTROL_TIMEOUT` for a control) and raises
  :class:`~gb28181gw.errors.RpcTimeout` after it.
- Redis unreachable (when sending, or while waiting: the reply reader loses its connection)
  fails the call with :class:`~gb28181gw.errors.NodeUnreachable` naming Redis; the next call
  works again once Redis is back.

Serving (the node's own inbox): each call read goes through :class:`~gb28181gw.gb.rpc.AnswerCache`
(run, skip as expired, leave as running, or send the remembered answer again) and is
acknowledged (``XACK``) in the same round trip as its answer is appended. Handlers raise a
:class:`~gb28181gw.errors.Gb28181Error` with a ``status`` to refuse; anything else is a 500.

Deadlines are epoch seconds (``time.time()``): nodes keep their clocks synchronised (NTP), as
Redis-based leases already require.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from redis.exceptions import RedisError, ResponseError

from gb28181gw.errors import (
    Gb28181Error,
    NodeNotLive,
    NodeUnreachable,
    RpcError,
    RpcTimeout,
    StoreError,
    redact_url,
)
from gb28181gw.gb.rpc import CONTROL_TIMEOUT, Answer, AnswerCache, Call, Decision
from gb28181gw.stopping import check_cancelled
from gb28181gw.store.redis import PREFIX, connect

log = logging.getLogger("gb28181gw.rpc")

#: The consumer group every inbox is read by.
GROUP = "rpc"
#: Calls an inbox keeps (approximately: ``MAXLEN ~``); each is read within milliseconds.
INBOX_MAXLEN = 10_000
#: Answers a reply stream keeps (approximately).
REPLIES_MAXLEN = 10_000
#: Milliseconds a reader blocks in one XREAD/XREADGROUP before looking again.
BLOCK_MS = 1_000
#: Calls read at once.
BATCH = 128
#: Seconds a call must have been pending, unacknowledged, before a (re)starting node takes it
#: back (``XAUTOCLAIM``): a call being run has been pending for less than its own deadline
#: anyway, and the answer cache keeps a call reclaimed while running from running twice.
RECLAIM_IDLE = 1.0
#: Seconds between looks for calls left pending (the start-up look misses those delivered
#: less than RECLAIM_IDLE before the node died).
RECLAIM_INTERVAL = 5.0
#: Seconds a command to Redis may take before the call fails (a caller must not wait out the
#: store's 5 s for a Redis that does not answer).
COMMAND_TIMEOUT = 2.0
#: Seconds closing waits for the readers and running calls to end (each round of cancelling).
CLOSE_TIMEOUT = 1.0
#: Rounds of cancelling closing gives a task that is not over (one that took its result as it
#: was cancelled, as ``asyncio.wait_for`` may, runs on to its next await).
CLOSE_ROUNDS = 3
#: Seconds closing waits for commands other tasks have under way (a call being sent, an owner
#: read): each ends within its timeout, a retry included.
DRAIN_TIMEOUT = 2 * COMMAND_TIMEOUT + CLOSE_TIMEOUT
#: Seconds between retries of a reader whose Redis is away.
RETRY_INTERVAL = 0.5

_SEND = """
-- KEYS: node:<target>, rpc:<target>; ARGV: maxlen, field, value, ...  1 sent, 0 the target is not live
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 2))
return 1
"""

Handler = Callable[[Call], Awaitable[Mapping[str, Any]]]


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class RedisRpc:
    """This node's end of the calls between nodes: its inbox served, its calls sent and answered.

    Args:
        url: the store's ``store.url``.
        node: this node's ``node.id``.
        prefix: what every key starts with (the store's).
        clock: epoch seconds (deadlines); tests pass another.

    Attributes:
        calls: (method, result) → calls made: result ``ok``, ``refused`` (an error answer),
            ``timeout``, ``unreachable``.
        served: (method, result) → calls read: ``ok``, ``error``, ``expired``, ``replayed``.
        observe: called with each answered call's round trip in seconds (a histogram's observe).
        known: method names counted under their own name (others as ``other``).
    """

    def __init__(self, url: str, node: str, *, prefix: str = PREFIX, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.location = redact_url(url)
        self.node = node
        self.prefix = prefix
        self.clock = clock
        self.handlers: dict[str, Handler] = {}
        self.cache = AnswerCache()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.served: Counter[tuple[str, str]] = Counter()
        self.observe: Callable[[float], None] = lambda seconds: None
        self.known: set[str] = set()
        self._redis: Any = None  # commands (short timeout)
        self._blocking: Any = None  # XREAD/XREADGROUP BLOCK (a timeout longer than the block)
        self._waiting: dict[str, asyncio.Future[Answer]] = {}
        self._running: dict[bytes, asyncio.Task[None]] = {}  # entry id → its run
        self._tasks: list[asyncio.Task[None]] = []  # notices and answers
        self._readers: list[asyncio.Task[None]] = []
        self._closing = False
        self._send: Any = None
        # commands under way on _redis: closing waits for them before closing its connections,
        # since redis-py lets a command on a closed client connect again, and that connection
        # would then never be closed (found unclosed when collected, its loop long gone)
        self._commands = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self.inbox = f"{prefix}rpc:{node}"
        self.replies = f"{prefix}rpc:{node}:replies"

    # --- lifecycle ---------------------------------------------------------------------

    def handle(self, method: str, handler: Handler) -> None:
        """Run ``handler`` for the calls of ``method`` (one per method: a second is a wiring bug)."""
        if method in self.handlers:
            raise ValueError(f"RPC method {method} has a handler already")
        self.handlers[method] = handler
        self.known.add(method)

    async def open(self) -> None:
        """Connect, create the inbox's group, take back calls left pending, and start reading.

        Raises:
            StoreError: Redis cannot be reached.
        """
        self._closing = False
        try:
            self._redis = connect(self.url, timeout=COMMAND_TIMEOUT, retries=1)
            self._blocking = connect(
                self.url, timeout=COMMAND_TIMEOUT, read_timeout=BLOCK_MS / 1000 + COMMAND_TIMEOUT, retries=1
            )
            self._send = self._redis.register_script(_SEND)
            await self._make_group()
            last = await self._last_reply()
        except (RedisError, OSError) as exc:
            await self.close()
            raise StoreError(
                f"cannot reach the Redis store at {self.location} for calls between nodes: {exc}"
            ) from None
        loop = asyncio.get_running_loop()
        self._readers = [loop.create_task(self._serve_inbox()), loop.create_task(self._read_replies(last))]

    async def close(self) -> None:
        """Stop serving and calling, and close every connection to Redis.

        Calls waiting for an answer fail with :class:`~gb28181gw.errors.NodeUnreachable`; commands
        under way are waited for (at most :data:`DRAIN_TIMEOUT`), so none connects again after.
        """
        self._closing = True
        if self._tasks:
            # notices and answers under way (a BYE's close sent while shutting down) go out first
            await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT)
        pending = {*self._readers, *self._tasks, *self._running.values()}
        for _ in range(CLOSE_ROUNDS):
            if not pending:
                break
            for task in pending:
                task.cancel()
            if self._blocking is not None:
                # a reader cancelled inside redis-py's blocking read waits for its connection to be
                # let go of: closing the connections under it ends the read at once (each close is
                # bounded by the connect timeout; one that fails must not stop the closing)
                with contextlib.suppress(RedisError, OSError):
                    await self._blocking.connection_pool.disconnect(inuse_connections=True)
            _done, pending = await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
        if pending:
            log.warning("calls between nodes: tasks still running after close", extra={"tasks": len(pending)})
        self._tasks = []
        self._readers = []
        self._running.clear()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(NodeUnreachable(f"node {self.node} is shutting down"))
        self._waiting.clear()
        redis, blocking = self._redis, self._blocking
        self._redis = self._blocking = self._send = None  # no command starts from here on
        if self._commands:
            try:
                await asyncio.wait_for(self._drained.wait(), DRAIN_TIMEOUT)
            except TimeoutError:
                log.warning(
                    "calls between nodes: commands still under way at close", extra={"commands": self._commands}
                )
        for client in (redis, blocking):
            if client is not None:
                await client.aclose()

    @contextlib.asynccontextmanager
    async def _command(self, what: str) -> AsyncIterator[Any]:
        """The command client for one command (or pipeline), counted as under way until it ends.

        Raises:
            NodeUnreachable: closed (or never opened).
        """
        redis = self._redis
        if redis is None:
            raise NodeUnreachable(f"calls between nodes are not open on node {self.node}: {what}")
        self._commands += 1
        self._drained.clear()
        try:
            yield redis
        finally:
            self._commands -= 1
            if not self._commands:
                self._drained.set()

    async def _make_group(self) -> None:
        try:
            # from the start of the stream: calls sent before the group existed are read (and
            # skipped if their deadline has passed)
            await self._redis.xgroup_create(self.inbox, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _last_reply(self) -> bytes:
        newest = await self._redis.xrevrange(self.replies, count=1)
        return bytes(newest[0][0]) if newest else b"0-0"

    # --- calling -----------------------------------------------------------------------

    def _label(self, method: str) -> str:
        return method if method in self.known else "other"

    async def call(
        self, node: str, method: str, args: Mapping[str, Any] | None = None, *, timeout: float = CONTROL_TIMEOUT
    ) -> dict[str, Any]:
        """Ask ``node`` to run ``method`` with ``args``; its result.

        Raises:
            NodeUnreachable: ``node`` is not live, or Redis cannot be reached (at once).
            RpcTimeout: no answer within ``timeout`` seconds.
            RpcRefused: the node answered with an error (its status).
            RpcError: arguments that cannot be sent (400).
        """
        label = method  # names in this code: bounded
        started = time.monotonic()
        call = Call.make(secrets.token_hex(16), self.node, method, args or {}, now=self.clock(), timeout=timeout)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[call.id] = future
        try:
            fields: list[bytes | int] = [INBOX_MAXLEN]
            for k, v in call.encode().items():
                fields += [k, v]
            try:
                async with self._command(f"{method} to node {node} not sent"):
                    keys = [f"{self.prefix}node:{node}", f"{self.prefix}rpc:{node}"]
                    sent = await self._send(keys=keys, args=fields)
            except (RedisError, OSError) as exc:
                raise NodeUnreachable(f"{method} to node {node}: Redis at {self.location} unreachable: {exc}") from None
            if not sent:
                raise NodeNotLive(f"node {node} is not live (no {self.prefix}node:{node}): {method} not sent")
            try:
                answer = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise RpcTimeout(f"node {node} did not answer {method} within {timeout:g} s") from None
            result = answer.raise_for_status(node, method)
        except RpcError as exc:
            self.calls[(label, _result(exc))] += 1
            raise
        finally:
            self._waiting.pop(call.id, None)
            if future.done() and not future.cancelled():
                future.exception()  # failed by the reply reader while the send failed too: seen
        self.calls[(label, "ok")] += 1
        self.observe(time.monotonic() - started)
        return result

    def notify(self, node: str, method: str, args: Mapping[str, Any], *, timeout: float = CONTROL_TIMEOUT) -> None:
        """Make a call whose answer nobody waits for (a failure is logged)."""

        async def send() -> None:
            try:
                await self.call(node, method, args, timeout=timeout)
            except RpcError as exc:
                log.info("notice to a node not delivered", extra={"node": node, "method": method, "error": str(exc)})

        task = asyncio.get_running_loop().create_task(send())
        self._tasks.append(task)
        task.add_done_callback(self._tasks_done)

    def _tasks_done(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    async def _read_replies(self, last: bytes) -> None:
        failing = False
        while True:
            check_cancelled()  # a cancellation lost in a command (stopping.py) ends the reader here
            try:
                got = await self._blocking.xread({self.replies: last}, count=BATCH, block=BLOCK_MS)
            except (RedisError, OSError) as exc:
                if self._closing:
                    return
                if not failing:
                    log.warning("answers between nodes cannot be read; retrying", extra={"error": str(exc)})
                failing = True
                # whatever was in flight cannot be answered through a Redis that is away: say so now
                self._fail_waiting(NodeUnreachable(f"Redis at {self.location} unreachable while waiting: {exc}"))
                last = b"0-0"  # a restarted Redis starts its ids again: read whatever is there
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            failing = False
            read: list[bytes] = []
            for _stream, entries in got or ():
                for entry_id, fields in entries:
                    last = bytes(entry_id)
                    read.append(last)
                    try:
                        answer = Answer.decode(fields)
                    except RpcError as exc:
                        log.warning("unreadable answer dropped", extra={"entry": _text(entry_id), "error": str(exc)})
                        continue
                    except Exception:  # a defect: this answer is lost (its caller times out), not the reader
                        log.exception("answer dropped: reading it failed", extra={"entry": _text(entry_id)})
                        continue
                    future = self._waiting.get(answer.id)
                    if future is not None and not future.done():
                        future.set_result(answer)
            if read:
                await self._forget_replies(read)

    async def _forget_replies(self, read: list[bytes]) -> None:
        """Delete answers read: only this node reads its reply stream, and an answer may be 16 MiB
        (a stream listing); kept until REPLIES_MAXLEN trimmed them, Redis held gigabytes for nothing."""
        try:
            async with self._command("answers read not deleted") as redis:
                await redis.xdel(self.replies, *read)
        except (RedisError, OSError, NodeUnreachable) as exc:  # MAXLEN trimming still bounds them
            log.info("answers read not deleted", extra={"error": str(exc)})

    def _fail_waiting(self, exc: RpcError) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(exc)

    # --- serving -----------------------------------------------------------------------

    async def _serve_inbox(self) -> None:
        failing = False
        next_reclaim = 0.0
        while True:
            check_cancelled()
            try:
                if time.monotonic() >= next_reclaim:
                    await self._reclaim()
                    next_reclaim = time.monotonic() + RECLAIM_INTERVAL
                got = await self._blocking.xreadgroup(GROUP, self.node, {self.inbox: ">"}, count=BATCH, block=BLOCK_MS)
            except (RedisError, OSError, NodeUnreachable) as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc) and not self._closing:
                    # Redis restarted empty: the group is made again
                    log.warning("inbox group missing (Redis restarted?); made again", extra={"node": self.node})
                    try:
                        await self._make_group()
                    except (RedisError, OSError):
                        await asyncio.sleep(RETRY_INTERVAL)
                    continue
                # any other refusal (the inbox key overwritten with another type: WRONGTYPE) is
                # retried as Redis being away is: a reader that ended here would leave every call
                # to this node to time out, and nobody would hear why
                if self._closing:
                    return
                if not failing:
                    log.warning("calls to this node cannot be read; retrying", extra={"error": str(exc)})
                failing = True
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            failing = False
            for _stream, entries in got or ():
                for entry_id, fields in entries:
                    self._take_guarded(bytes(entry_id), fields)

    async def _reclaim(self) -> None:
        start: Any = "0-0"
        while True:
            async with self._command("calls left pending not taken back") as redis:
                answer = await redis.xautoclaim(
                    self.inbox, GROUP, self.node, min_idle_time=int(RECLAIM_IDLE * 1000), start_id=start, count=BATCH
                )
            start, entries = answer[0], answer[1]
            for entry_id, fields in entries:
                if fields is None or bytes(entry_id) in self._running:
                    continue  # deleted by trimming, or being run here now
                log.info("call left pending taken back", extra={"entry": _text(entry_id)})
                self._take_guarded(bytes(entry_id), fields)
            if start in (b"0-0", "0-0"):
                return

    def _take_guarded(self, entry_id: bytes, fields: Mapping[bytes, bytes]) -> None:
        """:meth:`_take`, a defect in which drops (and acknowledges) that call only: ended, the
        inbox reader would leave every later call to this node to time out without a word why."""
        try:
            self._take(entry_id, fields)
        except Exception:
            log.exception("call dropped: taking it failed", extra={"entry": _text(entry_id)})
            self._spawn_ack(entry_id, None, "")  # else reclaimed and failing again for ever

    def _take(self, entry_id: bytes, fields: Mapping[bytes, bytes]) -> None:
        try:
            call = Call.decode(fields)
        except RpcError as exc:
            log.warning("unreadable call dropped", extra={"entry": _text(entry_id), "error": str(exc)})
            self._spawn_ack(entry_id, None, "")
            return
        decision, kept = self.cache.begin(call, self.clock())
        label = self._label(call.method)
        if decision is Decision.EXPIRED:
            self.served[(label, "expired")] += 1
            log.info("call past its deadline skipped", extra={"method": call.method, "caller": call.caller})
            self._spawn_ack(entry_id, None, "")
        elif decision is Decision.RUNNING:
            self._spawn_ack(entry_id, None, "")  # a copy: the run under way answers it
        elif decision is Decision.REPLAY:
            self.served[(label, "replayed")] += 1
            self._spawn_ack(entry_id, kept, call.caller)
        else:
            task = asyncio.get_running_loop().create_task(self._run(entry_id, call))
            self._running[entry_id] = task

    def _spawn_ack(self, entry_id: bytes, answer: Answer | None, caller: str) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(entry_id, answer, caller))
        self._tasks.append(task)
        task.add_done_callback(self._tasks_done)

    async def _run(self, entry_id: bytes, call: Call) -> None:
        label = self._label(call.method)
        handler = self.handlers.get(call.method)
        try:
            if handler is None:
                answer = Answer(call.id, 404, error=f"no method {call.method} on node {self.node}")
            else:
                result = await asyncio.wait_for(handler(call), max(0.0, call.deadline - self.clock()))
                answer = Answer.of(call.id, dict(result), node=self.node, method=call.method)
        except TimeoutError:
            # nobody waits any more: acknowledged unanswered (a copy read later is past its deadline)
            self.cache.abandon(call)
            self.served[(label, "expired")] += 1
            log.info("call cut at its deadline", extra={"method": call.method, "caller": call.caller})
            try:
                await self._answer(entry_id, None, call.caller)
            finally:
                self._running.pop(entry_id, None)
            return
        except Gb28181Error as exc:
            status = getattr(exc, "status", None)
            answer = Answer(call.id, status if isinstance(status, int) and status != 200 else 500, error=str(exc))
        except Exception as exc:  # a bug in a handler: the caller is told, this node goes on
            log.exception("RPC handler failed", extra={"method": call.method})
            answer = Answer(call.id, 500, error=f"{call.method} failed on node {self.node}: {exc!r}")
        self.cache.finish(call, answer)
        self.served[(label, "ok" if answer.ok else "error")] += 1
        try:
            await self._answer(entry_id, answer, call.caller)
        finally:
            self._running.pop(entry_id, None)

    async def _answer(self, entry_id: bytes, answer: Answer | None, caller: str) -> None:
        """Append ``answer`` to the caller's reply stream and acknowledge the call, in one round trip."""
        try:
            async with self._command("answer not sent") as redis, redis.pipeline(transaction=False) as pipe:
                if answer is not None:
                    pipe.xadd(
                        f"{self.prefix}rpc:{caller}:replies", answer.encode(), maxlen=REPLIES_MAXLEN, approximate=True
                    )
                pipe.xack(self.inbox, GROUP, entry_id)
                # answered (or skipped): nothing reads it again, and a call may be 64 KiB; kept
                # until INBOX_MAXLEN trimmed it, the inbox held up to 640 MiB for nothing
                pipe.xdel(self.inbox, entry_id)
                await pipe.execute()
        except (RedisError, OSError, NodeUnreachable) as exc:
            # left pending: taken back and answered again (from the cache) once Redis is back
            log.warning("answer to a call not sent", extra={"entry": _text(entry_id), "error": str(exc)})

    # --- what nodes read of each other --------------------------------------------------

    async def owner(self, device_id: str) -> str | None:
        """The node owning ``device_id`` (the ``owner`` hash: "<epoch> <node>"), None if none is recorded.

        Raises:
            NodeUnreachable: Redis cannot be reached.
        """
        try:
            async with self._command(f"the owner of {device_id} not read") as redis:
                raw = await redis.hget(f"{self.prefix}owner", device_id)
        except (RedisError, OSError) as exc:
            raise NodeUnreachable(f"the owner of {device_id} cannot be read: {exc}") from None
        if raw is None:
            return None
        _epoch, _, node = _text(raw).partition(" ")
        return node or None

    async def live(self, nodes: Iterable[str]) -> set[str]:
        """Which of ``nodes`` are live (their ``node:<id>`` claims exist).

        Raises:
            NodeUnreachable: Redis cannot be reached.
        """
        names = sorted(set(nodes))
        if not names:
            return set()
        try:
            async with self._command("node claims not read") as redis, redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.exists(f"{self.prefix}node:{name}")
                found = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise NodeUnreachable(f"node claims cannot be read: {exc}") from None
        return {name for name, n in zip(names, found, strict=True) if n}

    async def device_of(self, channel_id: str) -> str | None:
        """The device a channel (or a device that is its own channel) belongs to in the shared
        store: for a channel this node has not in memory (another node's device). One round trip
        over every device with channels: a miss, not a hot path.

        Raises:
            NodeUnreachable: Redis cannot be reached.
        """
        p = self.prefix
        try:
            async with self._command(f"the device of channel {channel_id} not read") as redis:
                if await redis.hexists(f"{p}devices", channel_id):
                    return channel_id
                owners = sorted(_text(m) for m in await redis.smembers(f"{p}channels"))
                if not owners:
                    return None
                async with redis.pipeline(transaction=False) as pipe:
                    for owner in owners:
                        pipe.hexists(f"{p}channels:{owner}", channel_id)
                    found = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise NodeUnreachable(f"the device of channel {channel_id} cannot be read: {exc}") from None
        return next((o for o, hit in zip(owners, found, strict=True) if hit), None)


def _result(exc: RpcError) -> str:
    if isinstance(exc, RpcTimeout):
        return "timeout"
    if isinstance(exc, NodeUnreachable):
        return "unreachable"
    return "refused" if exc.status != 400 else "bad"
