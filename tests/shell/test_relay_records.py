"""Relay events, figures and commands as records: their wire form round-trips, and a failure
keeps its RelayFailure code across a worker's pipe, so callers branch on the code, not the text."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from gb28181gw import errors
from gb28181gw.errors import Gb28181Error, RelayError, RelayFailure, StreamError
from gb28181gw.media.ports import PortsExhausted
from gb28181gw.relay.commands import (
    COMMANDS,
    AddConsumer,
    AddPassiveConsumer,
    Close,
    Connect,
    Expect,
    Open,
    Ping,
    RemoveConsumer,
    Snapshot,
    Stop,
    decode_command,
    encode_command,
    execute,
)
from gb28181gw.relay.forwarder import Forwarder, RelaySettings
from gb28181gw.relay.records import (
    EVENT_KINDS,
    ConsumerLost,
    FirstPacket,
    MediaClosed,
    MediaConnected,
    RelayEvent,
    RelaySnapshot,
    WorkerLost,
    decode_event,
    decode_snapshot,
    encode_event,
    encode_snapshot,
)
from gb28181gw.relay.workers import LocalRelay, WorkerRelay
from gb28181gw.sdp import StreamMode
from tests.media import UdpConsumer, gb_ps, packetize, wait_for

from .test_devices import free_even_udp_port, free_udp_port

SETTINGS = RelaySettings(
    host="127.0.0.1", tcp_queue_limit=1 << 20, udp_receive_buffer=1 << 20, stats_interval=0.1, gop_cache=1 << 20
)


def through_json(data: Any) -> Any:
    return json.loads(json.dumps(data))


@pytest.mark.parametrize(
    "event",
    [
        FirstPacket("0100000001", 0x0BEBC201),
        MediaConnected("0100000001", ("127.0.0.1", 15060)),
        MediaClosed("0100000001", "the device closed the media connection"),
        ConsumerLost("0100000001", "c2", "send failed: Broken pipe"),
        WorkerLost(3),
    ],
)
def test_events_round_trip_through_json(event: RelayEvent) -> None:
    assert decode_event(through_json(encode_event(event))) == event


def test_every_event_class_has_a_wire_name_and_junk_is_refused() -> None:
    # (slots=True makes a second class of each, so compare names)
    assert {c.__name__ for c in EVENT_KINDS} == {c.__name__ for c in RelayEvent.__subclasses__()}
    with pytest.raises(ValueError, match="unknown relay event"):
        decode_event(["no-such-event", 1])
    with pytest.raises(ValueError, match="bad relay event"):
        decode_event(["first-packet", "s1"])  # a field missing


@pytest.mark.parametrize(
    "command",
    [
        Open("0100000001", 30000, StreamMode.TCP_PASSIVE, 100000001),
        Expect("0100000001", 7),
        Connect("0100000001", "127.0.0.1", 15060, 3, 1.0),
        AddConsumer("0100000001", "c1", "tcp", "127.0.0.1", 9000, 42),
        AddPassiveConsumer("0100000001", "c1", "10.0.0.2", 30002, 42, 10.0, False, ("203.0.113.7",)),
        AddPassiveConsumer("0100000001", "c2", "127.0.0.1", 30004, 43, 10.0, True),
        RemoveConsumer("0100000001", "c1"),
        Close("0100000001"),
        Ping(),
        Snapshot(),
        Stop(),
    ],
)
def test_commands_round_trip_through_json(command: Any) -> None:
    decoded = decode_command(through_json(encode_command(command)))
    assert decoded == command and type(decoded) is type(command)


def test_one_table_knows_every_command_and_unknown_ones_are_bad_commands() -> None:
    assert len({op for op, _ in COMMANDS.values()}) == len(COMMANDS)
    for data in (["no_such_op"], [], ["open", "s1"], ["add_passive_consumer", "s1", "c1", "h", 1, 2, 3.0, True, 7]):
        with pytest.raises(RelayError) as info:
            decode_command(data)
        assert info.value.code is RelayFailure.BAD_COMMAND


async def test_a_snapshot_with_streams_and_consumers_round_trips() -> None:
    forwarder = Forwarder(SETTINGS)
    port = free_even_udp_port()
    consumer = await UdpConsumer.start()
    try:
        forwarder.open("s1", port, StreamMode.UDP, 1234)
        forwarder.add_consumer("s1", "c1", "udp", "127.0.0.1", consumer.port, 99)
        packets = packetize(gb_ps(10, 5), 1234)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for p in packets:
                sender.sendto(p, ("127.0.0.1", port))
        await wait_for(lambda: len(consumer.got.packets) == len(packets))
        snap = forwarder.snapshot()
        figures = snap.streams["s1"]
        assert figures.packets == len(packets) and figures.source is not None
        assert figures.consumers["c1"].packets == len(packets) and figures.ps.video_codec == "H264"
        assert snap.totals.packets_out == len(packets)
        assert decode_snapshot(through_json(encode_snapshot(snap))) == snap
    finally:
        consumer.close()
        forwarder.close_all()
    with pytest.raises(ValueError, match="bad relay snapshot"):
        decode_snapshot([{"s1": [1, 2]}, [], 0, 0, 0.0])


def test_relay_stream_and_port_errors_are_part_of_the_tree() -> None:
    err = RelayError(RelayFailure.PORT_TAKEN, "cannot bind media port 30000: Address already in use")
    assert isinstance(err, Gb28181Error) and err.code is RelayFailure.PORT_TAKEN
    assert "PORT_TAKEN" in repr(err)
    stream = StreamError(503, "no free media port")
    assert isinstance(stream, Gb28181Error) and stream.status == 503 and str(stream) == "no free media port"
    assert issubclass(PortsExhausted, Gb28181Error)
    drawing = errors.__doc__ or ""
    assert all(name in drawing for name in ("RelayError", "StreamError", "PortsExhausted"))


async def expect_failure(relay: LocalRelay | WorkerRelay, taken: int) -> None:
    with pytest.raises(RelayError) as info:
        await relay.open("s1", taken, StreamMode.UDP, 1)
    assert info.value.code is RelayFailure.PORT_TAKEN
    free = free_even_udp_port()
    await relay.open("s1", free, StreamMode.UDP, 1)
    with pytest.raises(RelayError) as info:
        await relay.open("s1", free, StreamMode.UDP, 1)
    assert info.value.code is RelayFailure.EXISTS
    with pytest.raises(RelayError) as info:
        await relay.expect("s2", 5)
    assert info.value.code is RelayFailure.NO_STREAM
    closed = free_udp_port()  # nothing listens on TCP there
    with pytest.raises(RelayError) as info:
        await relay.add_consumer("s1", "c1", "tcp", "127.0.0.1", closed, 5)
    assert info.value.code is RelayFailure.CONSUMER_UNREACHABLE
    await relay.close("s1")


@pytest.mark.parametrize("where", ["in-process", "worker-process"])
async def test_failure_codes_are_the_same_in_process_and_across_the_pipe(where: str) -> None:
    relay: LocalRelay | WorkerRelay = (
        LocalRelay(Forwarder(SETTINGS)) if where == "in-process" else WorkerRelay(0, SETTINGS)
    )
    await relay.start()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    try:
        await expect_failure(relay, holder.getsockname()[1])
        snap = relay.snapshot() if where == "in-process" else await relay.fresh_snapshot()  # type: ignore[union-attr]
        assert isinstance(snap, RelaySnapshot) and snap.pid == relay.pid and not snap.streams
    finally:
        holder.close()
        await relay.stop()
    if where == "worker-process":
        with pytest.raises(RelayError) as info:
            await relay.open("s3", 30000, StreamMode.UDP, 1)
        assert info.value.code is RelayFailure.WORKER_GONE


async def test_execute_runs_the_table_for_the_in_process_relay() -> None:
    forwarder = Forwarder(SETTINGS)
    port = free_even_udp_port()
    assert await execute(forwarder, Open("s1", port, StreamMode.UDP, 1)) is None
    snap = await execute(forwarder, Snapshot())
    assert snap is not None and list(snap.streams) == ["s1"]
    await execute(forwarder, Stop())
    assert not forwarder.streams
    await asyncio.sleep(0)
