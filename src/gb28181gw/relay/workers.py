"""Relay workers: the forwarder in the gateway's process, or in worker processes that use every core.

Python runs one core per process, and media, not signalling, decides how many cameras a
server carries. With ``media.workers = N`` the gateway starts N processes, each running a
:class:`~gb28181gw.relay.forwarder.Forwarder` on its own event loop and owning a share of
the media port range; the signalling process sends them commands over a socket pair (a
4-byte length, then JSON) and receives their events at once and their figures every
``stats_interval``. ``media.workers = 0`` keeps the forwarder in the gateway's own loop for
small sites. Both are a :class:`Relay`, so the stream service does not know which it has.

A worker exits when its socket pair closes, so it never outlives the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import resource
import socket
import struct
from collections.abc import Callable
from typing import Any

from gb28181gw.sdp import StreamMode

from .forwarder import Event, Forwarder, RelayError

log = logging.getLogger("gb28181gw.relay")

_LEN = struct.Struct("!I")
#: Longest control message accepted (a snapshot of thousands of streams fits).
MAX_MESSAGE = 64 * 1024 * 1024


class Relay:
    """What the stream service drives: one forwarder, here or in a worker process.

    Attributes:
        index: which worker (0 for the in-process relay).
        on_event: called with each stream event.
    """

    index: int = 0
    pid: int = 0

    def __init__(self) -> None:
        self.on_event: Callable[[Event], None] = lambda event: None

    async def start(self) -> None:
        """Get ready to take streams."""

    async def stop(self) -> None:
        """Close every stream and stop."""

    async def open(self, stream_id: str, port: int, mode: StreamMode, ssrc: int) -> None:
        """Bind the stream's port(s); raises :class:`RelayError` if they cannot be bound."""
        raise NotImplementedError

    async def expect(self, stream_id: str, ssrc: int) -> None:
        """The SSRC the device's answer announced."""
        raise NotImplementedError

    async def connect(self, stream_id: str, host: str, port: int, attempts: int, interval: float) -> None:
        """TCP active: connect to the device's media port."""
        raise NotImplementedError

    async def add_consumer(
        self, stream_id: str, consumer_id: str, transport: str, host: str, port: int, ssrc: int
    ) -> None:
        """Start sending to a consumer; raises :class:`RelayError` if it cannot be reached."""
        raise NotImplementedError

    async def remove_consumer(self, stream_id: str, consumer_id: str) -> None:
        """Stop sending to a consumer."""
        raise NotImplementedError

    async def close(self, stream_id: str) -> None:
        """Close a stream's sockets."""
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        """The latest figures: ``{"streams": {id: {...}}, "totals": {...}}``."""
        raise NotImplementedError

    def totals(self) -> dict[str, int]:
        """The running totals alone (what metrics need)."""
        totals: dict[str, int] = self.snapshot().get("totals", {})
        return totals


class LocalRelay(Relay):
    """The forwarder in the gateway's own event loop (``media.workers = 0``)."""

    def __init__(self, forwarder: Forwarder) -> None:
        super().__init__()
        self.forwarder = forwarder
        forwarder.on_event = lambda event: self.on_event(event)
        self.pid = os.getpid()

    async def stop(self) -> None:
        self.forwarder.close_all()

    async def open(self, stream_id: str, port: int, mode: StreamMode, ssrc: int) -> None:
        self.forwarder.open(stream_id, port, mode, ssrc)

    async def expect(self, stream_id: str, ssrc: int) -> None:
        self.forwarder.expect(stream_id, ssrc)

    async def connect(self, stream_id: str, host: str, port: int, attempts: int, interval: float) -> None:
        await self.forwarder.connect(stream_id, host, port, attempts=attempts, interval=interval)

    async def add_consumer(
        self, stream_id: str, consumer_id: str, transport: str, host: str, port: int, ssrc: int
    ) -> None:
        if transport == "tcp":
            await self.forwarder.add_tcp_consumer(stream_id, consumer_id, host, port, ssrc)
        else:
            self.forwarder.add_consumer(stream_id, consumer_id, transport, host, port, ssrc)

    async def remove_consumer(self, stream_id: str, consumer_id: str) -> None:
        self.forwarder.remove_consumer(stream_id, consumer_id)

    async def close(self, stream_id: str) -> None:
        self.forwarder.close(stream_id)

    def snapshot(self) -> dict[str, Any]:
        snap = self.forwarder.snapshot()
        snap["pid"] = self.pid
        return snap

    def totals(self) -> dict[str, int]:
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

    Args:
        index: the worker's number (for logs and metrics).
        host: the media address its sockets bind to.
        stats_interval: seconds between the figures it sends back.
        tcp_queue_limit / udp_receive_buffer: as for :class:`Forwarder`.
    """

    def __init__(
        self,
        index: int,
        *,
        host: str,
        stats_interval: float = 1.0,
        tcp_queue_limit: int = 1024 * 1024,
        udp_receive_buffer: int = 1024 * 1024,
    ) -> None:
        super().__init__()
        self.index = index
        self._settings = {
            "host": host,
            "stats_interval": stats_interval,
            "tcp_queue_limit": tcp_queue_limit,
            "udp_receive_buffer": udp_receive_buffer,
        }
        self._process: multiprocessing.process.BaseProcess | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._snapshot: dict[str, Any] = {"streams": {}, "totals": {}}
        self._lost = False

    async def start(self) -> None:
        parent, child = socket.socketpair()
        ctx = multiprocessing.get_context("spawn")  # no inherited loop, sockets or threads
        self._process = ctx.Process(
            target=worker_main, args=(child, self.index, self._settings), name=f"gb28181gw-relay-{self.index}"
        )
        self._process.daemon = True
        self._process.start()
        child.close()
        self.pid = self._process.pid or 0
        reader, self._writer = await asyncio.open_connection(sock=parent, limit=MAX_MESSAGE)
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))
        await self._call("ping")

    async def stop(self) -> None:
        if self._writer is not None:
            stopping = self._call("stop")
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
                    self.on_event(message)
                elif "snapshot" in message:
                    self._snapshot = message["snapshot"]
                else:
                    fut = self._pending.pop(message.get("id", 0), None)
                    if fut is not None and not fut.done():
                        if "error" in message:
                            fut.set_exception(RelayError(message["error"]))
                        else:
                            fut.set_result(message.get("result"))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            if not self._lost:
                self._lost = True
                log.error("relay worker %d is gone: %s", self.index, exc or "closed")
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(RelayError(f"relay worker {self.index} is gone"))
                self._pending.clear()
                self.on_event({"event": "worker-lost", "worker": self.index})

    def _call(self, op: str, **args: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._writer is None or self._lost:
            fut.set_exception(RelayError(f"relay worker {self.index} is not running"))
            return fut
        call_id = next(self._ids)
        self._pending[call_id] = fut
        self._writer.write(_pack({"id": call_id, "op": op, **args}))
        return fut

    async def open(self, stream_id: str, port: int, mode: StreamMode, ssrc: int) -> None:
        await self._call("open", stream=stream_id, port=port, mode=str(mode), ssrc=ssrc)

    async def expect(self, stream_id: str, ssrc: int) -> None:
        await self._call("expect", stream=stream_id, ssrc=ssrc)

    async def connect(self, stream_id: str, host: str, port: int, attempts: int, interval: float) -> None:
        await self._call("connect", stream=stream_id, host=host, port=port, attempts=attempts, interval=interval)

    async def add_consumer(
        self, stream_id: str, consumer_id: str, transport: str, host: str, port: int, ssrc: int
    ) -> None:
        await self._call(
            "add_consumer", stream=stream_id, consumer=consumer_id, transport=transport, host=host, port=port, ssrc=ssrc
        )

    async def remove_consumer(self, stream_id: str, consumer_id: str) -> None:
        await self._call("remove_consumer", stream=stream_id, consumer=consumer_id)

    async def close(self, stream_id: str) -> None:
        await self._call("close", stream=stream_id)

    def snapshot(self) -> dict[str, Any]:
        return self._snapshot

    async def fresh_snapshot(self) -> dict[str, Any]:
        """Ask the worker for its figures now (benchmarks; the service uses the periodic ones)."""
        snap: dict[str, Any] = await self._call("snapshot")
        self._snapshot = snap
        return snap


# --- the worker process ------------------------------------------------------------------


def worker_main(sock: socket.socket, index: int, settings: dict[str, Any]) -> None:
    """Entry point of a worker process: serve commands on ``sock`` until it closes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the gateway stops us
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(sock, index, settings))
    else:
        uvloop.run(_serve(sock, index, settings))


async def _serve(sock: socket.socket, index: int, settings: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_MESSAGE)
    forwarder = Forwarder(
        host=settings["host"],
        on_event=lambda event: writer.write(_pack(event)),
        tcp_queue_limit=settings["tcp_queue_limit"],
        udp_receive_buffer=settings["udp_receive_buffer"],
    )
    loop = asyncio.get_running_loop()
    pid = os.getpid()

    def snapshot() -> dict[str, Any]:
        snap = forwarder.snapshot()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        snap.update(pid=pid, worker=index, cpu_seconds=usage.ru_utime + usage.ru_stime)
        return snap

    async def push_stats() -> None:
        while True:
            await asyncio.sleep(settings["stats_interval"])
            writer.write(_pack({"snapshot": snapshot()}))

    async def handle(message: dict[str, Any]) -> None:
        op = message.get("op")
        reply: dict[str, Any] = {"id": message.get("id", 0)}
        try:
            result = await _execute(forwarder, op, message)
        except RelayError as exc:
            reply["error"] = str(exc)
        except Exception as exc:  # a bug must not take every stream of the worker down
            log.exception("relay worker %d: %s failed", index, op)
            reply["error"] = f"internal error in relay worker: {exc}"
        else:
            reply["result"] = snapshot() if op == "snapshot" else result
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
            if message.get("op") == "stop":
                forwarder.close_all()
                writer.write(_pack({"id": message.get("id", 0), "result": None}))
                await writer.drain()
                return
            task = loop.create_task(handle(message))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        pusher.cancel()
        for task in tasks:
            task.cancel()
        forwarder.close_all()
        writer.close()


async def _execute(f: Forwarder, op: str | None, m: dict[str, Any]) -> Any:
    if op == "open":
        f.open(m["stream"], m["port"], StreamMode(m["mode"]), m["ssrc"])
    elif op == "expect":
        f.expect(m["stream"], m["ssrc"])
    elif op == "connect":
        await f.connect(m["stream"], m["host"], m["port"], attempts=m["attempts"], interval=m["interval"])
    elif op == "add_consumer":
        if m["transport"] == "tcp":
            await f.add_tcp_consumer(m["stream"], m["consumer"], m["host"], m["port"], m["ssrc"])
        else:
            f.add_consumer(m["stream"], m["consumer"], m["transport"], m["host"], m["port"], m["ssrc"])
    elif op == "remove_consumer":
        f.remove_consumer(m["stream"], m["consumer"])
    elif op == "close":
        f.close(m["stream"])
    elif op in ("ping", "snapshot"):
        pass
    else:
        raise RelayError(f"unknown relay command {op!r}")
    return None
