"""What the stream service asks of a relay: one record per command, and one table that runs them.

The in-process relay and a relay worker both run a command through :func:`execute`, so a
command means the same wherever the forwarder lives; a worker only adds the trip over its
socket pair (:func:`encode_command` / :func:`decode_command`: ``[op, field, …]`` as JSON).
Every command but :class:`Snapshot` answers ``None``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gb28181gw.errors import RelayError, RelayFailure
from gb28181gw.sdp import StreamMode

from .forwarder import Forwarder
from .records import RelaySnapshot


@dataclass(frozen=True, slots=True)
class Command:
    """Base class of relay commands."""

    @classmethod
    def from_wire(cls, values: list[Any]) -> Command:
        """The command from its fields as they crossed the pipe."""
        return cls(*values)


@dataclass(frozen=True, slots=True)
class Open(Command):
    """Bind a new stream's port(s) before the INVITE goes out (:meth:`Forwarder.open`).

    ``source`` is the host media is accepted from (the device's SIP host until its answer
    names another); ``None`` takes the first sender's. ``shared``: ``port`` is the relay's shared
    port (``media.shared_port``, a UDP stream).
    """

    stream: str
    port: int
    mode: StreamMode
    ssrc: int
    source: str | None = None
    shared: bool = False

    @classmethod
    def from_wire(cls, values: list[Any]) -> Command:
        stream, port, mode, ssrc, source, shared = values
        return cls(stream, port, StreamMode(mode), ssrc, source, shared)


@dataclass(frozen=True, slots=True)
class Expect(Command):
    """The SSRC the device's answer announced and the host its media must come from
    (:meth:`Forwarder.expect`; ``source`` ``None`` leaves the host as it was)."""

    stream: str
    ssrc: int
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Connect(Command):
    """TCP active: connect to the device's media port (:meth:`Forwarder.connect`)."""

    stream: str
    host: str
    port: int
    attempts: int
    interval: float


@dataclass(frozen=True, slots=True)
class AddConsumer(Command):
    """Start sending the stream to a consumer over ``udp`` or ``tcp``."""

    stream: str
    consumer: str
    transport: str
    host: str
    port: int
    ssrc: int


@dataclass(frozen=True, slots=True)
class AddPassiveConsumer(Command):
    """Listen on ``port`` for a TCP-passive consumer's one connection, from ``host`` or one of
    ``also_from`` only; dropped if it has not connected in ``timeout`` seconds; sent to once
    ``started`` (or :class:`StartConsumer`)."""

    stream: str
    consumer: str
    host: str
    port: int
    ssrc: int
    timeout: float
    started: bool
    also_from: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, values: list[Any]) -> Command:
        stream, consumer, host, port, ssrc, timeout, started, also_from = values
        return cls(stream, consumer, host, port, ssrc, timeout, started, tuple(also_from))  # JSON made it a list


@dataclass(frozen=True, slots=True)
class StartConsumer(Command):
    """Start sending to a paused TCP-passive consumer (:meth:`Forwarder.start_consumer`)."""

    stream: str
    consumer: str


@dataclass(frozen=True, slots=True)
class RemoveConsumer(Command):
    """Stop sending to a consumer (no error if it is gone)."""

    stream: str
    consumer: str


@dataclass(frozen=True, slots=True)
class Close(Command):
    """Close a stream and its sockets (no error if it is closed)."""

    stream: str


@dataclass(frozen=True, slots=True)
class Ping(Command):
    """Answer at once (a worker is up)."""


@dataclass(frozen=True, slots=True)
class Snapshot(Command):
    """The relay's figures now."""


@dataclass(frozen=True, slots=True)
class Stop(Command):
    """Close every stream; a worker exits after answering."""


async def _open(f: Forwarder, c: Open) -> None:
    f.open(c.stream, c.port, c.mode, c.ssrc, source=c.source, shared=c.shared)


async def _expect(f: Forwarder, c: Expect) -> None:
    f.expect(c.stream, c.ssrc, source=c.source)


async def _connect(f: Forwarder, c: Connect) -> None:
    await f.connect(c.stream, c.host, c.port, attempts=c.attempts, interval=c.interval)


async def _add_consumer(f: Forwarder, c: AddConsumer) -> None:
    if c.transport == "tcp":
        await f.add_tcp_consumer(c.stream, c.consumer, c.host, c.port, c.ssrc)
    else:
        f.add_consumer(c.stream, c.consumer, c.transport, c.host, c.port, c.ssrc)


async def _add_passive_consumer(f: Forwarder, c: AddPassiveConsumer) -> None:
    f.add_passive_consumer(
        c.stream, c.consumer, c.host, c.port, c.ssrc, timeout=c.timeout, started=c.started, also_from=c.also_from
    )


async def _start_consumer(f: Forwarder, c: StartConsumer) -> None:
    f.start_consumer(c.stream, c.consumer)


async def _remove_consumer(f: Forwarder, c: RemoveConsumer) -> None:
    f.remove_consumer(c.stream, c.consumer)


async def _close(f: Forwarder, c: Close) -> None:
    f.close(c.stream)


async def _ping(f: Forwarder, c: Ping) -> None:
    return None


async def _snapshot(f: Forwarder, c: Snapshot) -> RelaySnapshot:
    return f.snapshot()


async def _stop(f: Forwarder, c: Stop) -> None:
    f.close_all()


Handler = Callable[[Forwarder, Any], Awaitable[RelaySnapshot | None]]

#: Each command: its wire name and what runs it — the one table both kinds of relay use.
COMMANDS: dict[type[Command], tuple[str, Handler]] = {
    Open: ("open", _open),
    Expect: ("expect", _expect),
    Connect: ("connect", _connect),
    AddConsumer: ("add_consumer", _add_consumer),
    AddPassiveConsumer: ("add_passive_consumer", _add_passive_consumer),
    StartConsumer: ("start_consumer", _start_consumer),
    RemoveConsumer: ("remove_consumer", _remove_consumer),
    Close: ("close", _close),
    Ping: ("ping", _ping),
    Snapshot: ("snapshot", _snapshot),
    Stop: ("stop", _stop),
}
_BY_OP = {op: cls for cls, (op, _) in COMMANDS.items()}


async def execute(forwarder: Forwarder, command: Command) -> RelaySnapshot | None:
    """Run ``command`` on ``forwarder``.

    Raises:
        RelayError: the forwarder's, or :attr:`RelayFailure.BAD_COMMAND` for a command it does not take.
    """
    entry = COMMANDS.get(type(command))
    if entry is None:
        raise RelayError(RelayFailure.BAD_COMMAND, f"unknown relay command {command!r}")
    return await entry[1](forwarder, command)


def encode_command(command: Command) -> list[Any]:
    """``[op, field, …]`` for the worker pipe."""
    names: tuple[str, ...] = command.__slots__
    return [COMMANDS[type(command)][0], *(getattr(command, name) for name in names)]


def decode_command(data: list[Any]) -> Command:
    """The command :func:`encode_command` encoded.

    Raises:
        RelayError: :attr:`RelayFailure.BAD_COMMAND` for an unknown op or the wrong fields.
    """
    cls = _BY_OP.get(data[0]) if isinstance(data, list) and data else None
    if cls is None:
        raise RelayError(RelayFailure.BAD_COMMAND, f"unknown relay command {data[:1] if data else data!r}")
    try:
        return cls.from_wire(data[1:])
    except (TypeError, ValueError) as exc:
        raise RelayError(RelayFailure.BAD_COMMAND, f"bad relay command {data!r}: {exc}") from None
