"""Relay workers: the forwarder in the gateway's process, or in worker processes that use every core.

Python runs one core per process, and media, not signalling, decides how many cameras a
server carries. With ``media.workers = N`` the gateway starts N processes, each running a
:class:`~gb28181gw.relay.forwarder.Forwarder` on its own event loop and owning a share of
the media port range; the signalling process sends them commands over a socket pair (a
4-byte length, then JSON) and receives their events at once and their figures every
``stats_interval``, each in the wire form of its record (:mod:`.commands`, :mod:`.records`). ``media.workers = 0`` keeps the forwarder in the gateway's own loop for
small sites. Both are a :class:`Relay`, so the stream service does not know which it has.

A worker exits when its socket pair closes, so it never outlives the gateway. It ignores
SIGINT and SIGTERM, which a terminal or a service manager sends to the whole process group:
the gateway stops it once its streams are closed, and only a worker that dies while the
gateway runs is reported lost (an error, and its streams are closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import multiprocessing
import signal
import socket
import struct
from collections.abc import Callable
from typing import Any

import setproctitle

from gb28181gw.errors import RelayError, RelayFailure
from gb28181gw.sdp import StreamMode

from .commands import (
    AddConsumer,
    AddPassiveConsumer,
    Close,
    Command,
    Connect,
    Expect,
    Open,
    Ping,
    RemoveConsumer,
    Snapshot,
    StartConsumer,
    Stop,
    decode_command,
    encode_command,
    execute,
)
from .forwarder import Forwarder, RelaySettings
from .records import (
    RelayEvent,
    RelaySnapshot,
    RelayTotals,
    WorkerLost,
    decode_event,
    decode_snapshot,
    encode_event,
    encode_snapshot,
)

log = logging.getLogger("gb28181gw.relay")

_LEN = struct.Struct("!I")
#: Longest control message accepted (a snapshot of thousands of streams fits).
MAX_MESSAGE = 64 * 1024 * 1024


class Relay:
    """What the stream service drives: one forwarder, here or in a worker process.

    Every command goes through :meth:`call` as a :mod:`~.commands` record; the methods
    below only build them.

    Attributes:
        index: which worker (0 for the in-process relay).
        pid: the process the forwarder runs in.
        on_event: called with each stream event.
    """

    index: int = 0
    pid: int = 0

    def __init__(self) -> None:
        self.on_event: Callable[[RelayEvent], None] = lambda event: None

    async def start(self) -> None:
        """Get ready to take streams."""

    async def stop(self) -> None:
        """Close every stream and stop."""

    async def call(self, command: Command) -> RelaySnapshot | None:
        """Run ``command`` on the forwarder.

        Raises:
            RelayError: it failed; ``code`` says how.
        """
        raise NotImplementedError

    async def open(
        self, stream_id: str, port: int, mode: StreamMode, ssrc: int, *, source: str | None = None, shared: bool = False
    ) -> None:
        """Bind the stream's port(s); :attr:`RelayFailure.PORT_TAKEN` if they cannot be bound.

        ``source``: the only host media is taken from (``None``: the first sender's). ``shared``:
        ``port`` is the relay's shared port (``media.shared_port``).
        """
        await self.call(Open(stream_id, port, mode, ssrc, source, shared))

    async def expect(self, stream_id: str, ssrc: int, *, source: str | None = None) -> None:
        """The SSRC the device's answer announced, and the host its media must come from (``None``: unchanged)."""
        await self.call(Expect(stream_id, ssrc, source))

    async def connect(self, stream_id: str, host: str, port: int, attempts: int, interval: float) -> None:
        """TCP active: connect to the device's media port."""
        await self.call(Connect(stream_id, host, port, attempts, interval))

    async def add_consumer(
        self, stream_id: str, consumer_id: str, transport: str, host: str, port: int, ssrc: int
    ) -> None:
        """Start sending to a consumer; raises :class:`RelayError` if it cannot be reached."""
        await self.call(AddConsumer(stream_id, consumer_id, transport, host, port, ssrc))

    async def add_passive_consumer(
        self,
        stream_id: str,
        consumer_id: str,
        host: str,
        port: int,
        ssrc: int,
        *,
        timeout: float,
        started: bool,
        also_from: tuple[str, ...] = (),
    ) -> None:
        """Listen on ``port`` for a TCP-passive consumer at ``host`` or one of ``also_from``
        (:attr:`RelayFailure.PORT_TAKEN` if it cannot be bound); it is dropped (``ConsumerLost``) if it
        does not connect in ``timeout`` seconds."""
        await self.call(AddPassiveConsumer(stream_id, consumer_id, host, port, ssrc, timeout, started, also_from))

    async def start_consumer(self, stream_id: str, consumer_id: str) -> None:
        """Start sending to a paused TCP-passive consumer."""
        await self.call(StartConsumer(stream_id, consumer_id))

    async def remove_consumer(self, stream_id: str, consumer_id: str) -> None:
        """Stop sending to a consumer."""
        await self.call(RemoveConsumer(stream_id, consumer_id))

    async def close(self, stream_id: str) -> None:
        """Close a stream's sockets."""
        await self.call(Close(stream_id))

    def snapshot(self) -> RelaySnapshot:
        """The latest figures."""
        raise NotImplementedError

    async def fresh_snapshot(self) -> RelaySnapshot:
        """The figures as of now (a worker's are otherwise up to ``stats_interval`` old)."""
        return self.snapshot()

    def totals(self) -> RelayTotals:
        """The running totals alone (what metrics need)."""
        return self.snapshot().totals


class LocalRelay(Relay):
    """The forwarder in the gateway's own event loop (``media.workers = 0``)."""

    def __init__(self, forwarder: Forwarder) -> None:
        super().__init__()
        self.forwarder = forwarder
        forwarder.on_event = lambda event: self.on_event(event)
        self.pid = forwarder.pid

    async def stop(self) -> None:
        await self.call(Stop())

    async def call(self, command: Command) -> RelaySnapshot | None:
        return await execute(self.forwarder, command)

    def snapshot(self) -> RelaySnapshot:
        return self.forwarder.snapshot()

    def totals(self) -> RelayTotals:
        return self.forwarder.totals()


def _pack(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return _LEN.pack(len(data)) + data


async def _read(reader: asyncio.StreamReader) -> dict[str, Any]:
    size = _LEN.unpack(await reader.readexactly(4))[0]
    if size > MAX_MESSAGE:
        raise ValueError(f"relay control message of {size} bytes")
    message: dict[str, Any] = json.loads(await reader.readexactly(size))
    return message


class WorkerRelay(Relay):
    """A forwarder in a worker process.

    Messages on the socket pair (each a 4-byte length, then a JSON object): ``{"id", "op"}``
    a command (:func:`~.commands.encode_command`) and ``{"id", "result"}`` or ``{"id", "error",
    "code"}`` its answer (``code`` a :class:`RelayFailure`); ``{"event"}`` an event and
    ``{"snapshot"}`` the figures (:mod:`~.records` wire forms).

    Args:
        index: the worker's number (for logs and metrics).
        settings: bind address, queue bound, receive buffer, seconds between the figures it sends back.
    """

    def __init__(self, index: int, settings: RelaySettings) -> None:
        super().__init__()
        self.index = index
        self.settings = settings
        self._process: multiprocessing.process.BaseProcess | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], Command]] = {}
        self._snapshot = RelaySnapshot({}, RelayTotals(), worker=index)
        self._lost = False

    async def start(self) -> None:
        parent, child = socket.socketpair()
        ctx = multiprocessing.get_context("spawn")  # no inherited loop, sockets or threads
        self._process = ctx.Process(
            target=worker_main, args=(child, self.index, self.settings), name=worker_title(self.index)
        )
        self._process.daemon = True
        self._process.start()
        child.close()
        self.pid = self._process.pid or 0
        reader, self._writer = await asyncio.open_connection(sock=parent, limit=MAX_MESSAGE)
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))
        await self.call(Ping())

    async def stop(self) -> None:
        if self._writer is not None:
            stopping = self._send(Stop())
            self._lost = True  # its socket closing from now on is expected, not a lost worker
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stopping, 2.0)
            self._writer.close()
            self._writer = None
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._process is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._process.join, 3.0)
            if self._process.is_alive():  # pragma: no cover - it exits when its socket closes
                self._process.kill()
            self._process = None

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await _read(reader)
                if "event" in message:
                    self.on_event(decode_event(message["event"]))
                elif "snapshot" in message:
                    self._snapshot = decode_snapshot(message["snapshot"])
                else:
                    fut, command = self._pending.pop(message.get("id", 0), (None, None))
                    if fut is not None and not fut.done():
                        if "error" in message:
                            fut.set_exception(RelayError(_failure(message.get("code")), message["error"]))
                        elif isinstance(command, Snapshot):
                            fut.set_result(decode_snapshot(message["result"]))
                        else:
                            fut.set_result(None)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            if not self._lost:
                self._lost = True
                log.error("relay worker %d is gone: %s", self.index, exc or "closed")
                for fut, _ in self._pending.values():
                    if not fut.done():
                        fut.set_exception(RelayError(RelayFailure.WORKER_GONE, f"relay worker {self.index} is gone"))
                self._pending.clear()
                self.on_event(WorkerLost(self.index))

    async def call(self, command: Command) -> RelaySnapshot | None:
        result: RelaySnapshot | None = await self._send(command)
        return result

    def _send(self, command: Command) -> asyncio.Future[Any]:
        # sent at once (not when awaited): stop() relies on the order
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._writer is None or self._lost:
            fut.set_exception(RelayError(RelayFailure.WORKER_GONE, f"relay worker {self.index} is not running"))
            return fut
        call_id = next(self._ids)
        self._pending[call_id] = (fut, command)
        self._writer.write(_pack({"id": call_id, "op": encode_command(command)}))
        return fut

    def snapshot(self) -> RelaySnapshot:
        return self._snapshot

    async def fresh_snapshot(self) -> RelaySnapshot:
        """Ask the worker for its figures now (benchmarks; the service at a recorded session's device BYE)."""
        snap = await self.call(Snapshot())
        assert snap is not None
        self._snapshot = snap
        return snap


def _failure(code: Any) -> RelayFailure:
    try:
        return RelayFailure(code)
    except ValueError:
        return RelayFailure.INTERNAL


# --- the worker process ------------------------------------------------------------------


def worker_title(index: int) -> str:
    """What ``ps``, ``top`` and ``/proc/PID/cmdline`` show for worker ``index`` (as in its log lines)."""
    return f"gb28181gw relay worker {index}"


def worker_main(sock: socket.socket, index: int, settings: RelaySettings) -> None:
    """Entry point of a worker process: serve commands on ``sock`` until it closes."""
    # Without a title every worker shows as `python -c from multiprocessing.spawn import ...`:
    # an operator looking at `ps` or `top` for the process eating a core could not tell which.
    setproctitle.setproctitle(worker_title(index))
    # Ctrl-C, and SIGTERM from a service manager or `timeout`, reach the whole process group.
    # The gateway stops its workers after it has closed their streams (BYE first); a worker
    # that died of the signal first would look lost. It exits when its socket pair closes,
    # so it never outlives the gateway; SIGKILL still ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(sock, index, settings))
    else:
        uvloop.run(_serve(sock, index, settings))


async def _serve(sock: socket.socket, index: int, settings: RelaySettings) -> None:
    reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_MESSAGE)
    forwarder = Forwarder(
        settings, on_event=lambda event: writer.write(_pack({"event": encode_event(event)})), worker=index
    )
    loop = asyncio.get_running_loop()

    async def push_stats() -> None:
        while True:
            await asyncio.sleep(settings.stats_interval)
            writer.write(_pack({"snapshot": encode_snapshot(forwarder.snapshot())}))

    async def handle(call_id: int, command: Command) -> None:
        reply: dict[str, Any] = {"id": call_id}
        try:
            result = await execute(forwarder, command)
        except RelayError as exc:
            reply["error"], reply["code"] = str(exc), exc.code.value
        except Exception as exc:  # a bug must not take every stream of the worker down
            log.exception("relay worker %d: %r failed", index, command)
            reply["error"], reply["code"] = f"internal error in relay worker: {exc}", RelayFailure.INTERNAL.value
        else:
            reply["result"] = encode_snapshot(result) if result is not None else None
        writer.write(_pack(reply))

    pusher = loop.create_task(push_stats())
    # Each command runs as a task, so connecting to a slow TCP consumer holds up no other
    # stream; commands without an await (all but that one) still complete in arrival order.
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            try:
                message = await _read(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            call_id = message.get("id", 0)
            try:
                command = decode_command(message.get("op"))  # type: ignore[arg-type]
            except RelayError as exc:
                writer.write(_pack({"id": call_id, "error": str(exc), "code": exc.code.value}))
                continue
            if isinstance(command, Stop):
                await execute(forwarder, command)
                writer.write(_pack({"id": call_id, "result": None}))
                await writer.drain()
                return
            task = loop.create_task(handle(call_id, command))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        pusher.cancel()
        for task in tasks:
            task.cancel()
        forwarder.close_all()
        writer.close()
