"""The forwarder on its own: a slow TCP consumer never stalls the others (real sockets); the packets
kept since the last key frame for joining consumers, and their bounds (bytes fed to the per-packet path)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct

import pytest

from gb28181gw.relay import forwarder as forwarder_module
from gb28181gw.relay.forwarder import Forwarder, RelaySettings, RelayStream, UdpOut
from gb28181gw.relay.records import KeyFrameWanted, RelayEvent
from gb28181gw.sdp import StreamMode
from tests.media import UdpConsumer, gb_ps, packetize, wait_for

from .test_devices import free_even_udp_port


async def test_slow_tcp_consumer_gets_a_bounded_queue_and_drops() -> None:
    events: list[RelayEvent] = []
    settings = RelaySettings(
        host="127.0.0.1", tcp_queue_limit=65536, udp_receive_buffer=1 << 20, stats_interval=1.0, gop_cache=1 << 20
    )
    forwarder = Forwarder(settings, on_event=events.append)
    port = free_even_udp_port()
    forwarder.open("s1", port, StreamMode.UDP, 1234)
    # a consumer that accepts the connection and never reads, with a small receive buffer
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    fast = await UdpConsumer.start()
    try:
        await forwarder.add_tcp_consumer("s1", "slow", "127.0.0.1", listener.getsockname()[1], 1)
        forwarder.add_consumer("s1", "fast", "udp", "127.0.0.1", fast.port, 2)
        packets = packetize(gb_ps(200, 25), 1234, mtu=1400) * 150  # ~15 MB: more than the kernel buffers
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i, p in enumerate(packets):
            sender.sendto(p, ("127.0.0.1", port))
            if i % 16 == 15:
                await asyncio.sleep(0.001)
        sender.close()
        await wait_for(lambda: len(fast.got.packets) == len(packets))
        figures = {k: dataclasses.asdict(v) for k, v in forwarder.snapshot().streams["s1"].consumers.items()}
        assert figures["fast"]["packets"] == len(packets) and figures["fast"]["dropped"] == 0
        assert figures["slow"]["dropped"] > 0  # beyond its 64 KiB queue
        assert figures["slow"]["packets"] + figures["slow"]["dropped"] == len(packets)
        assert forwarder.snapshot().totals.slow_consumer == figures["slow"]["dropped"]
    finally:
        fast.close()
        forwarder.close_all()
        listener.close()
    assert not forwarder.streams


async def _udp_out(consumer_id: str, ssrc: int) -> tuple[UdpOut, UdpConsumer]:
    """A real UDP consumer (a stand-in would not do: the relay's compiled build checks the type)."""
    got = await UdpConsumer.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return UdpOut(consumer_id, ssrc, ("127.0.0.1", got.port), sock), got


def _first_of(packets: list[bytes], frame: int) -> int:
    """Index of the first RTP packet of ``frame`` (packetize stamps frame i with 3600·i)."""
    return next(i for i, p in enumerate(packets) if struct.unpack_from("!I", p, 4)[0] == 3600 * frame)


def _stream_fed(gop_cache: int, packets: list[bytes]) -> tuple[Forwarder, RelayStream]:
    """Packets fed to the forwarder's per-packet path as bytes, no sockets (the cache is what is tested)."""
    settings = RelaySettings("127.0.0.1", 65536, 1 << 20, 1.0, gop_cache)
    forwarder = Forwarder(settings)
    st = RelayStream("s1", 0, StreamMode.UDP, 1234, 0.0, "127.0.0.1")
    for i, p in enumerate(packets):
        st.buf[2 : 2 + len(p)] = p
        forwarder._relay(st, st.buf, st.view, 2, len(p), ("127.0.0.1", 9), float(i))
    return forwarder, st


async def test_packets_since_the_last_key_frame_are_kept_and_sent_first_to_a_joining_consumer() -> None:
    ps = gb_ps(50, 10)
    packets = packetize(ps, 1234, mtu=500)
    first_of_40 = _first_of(packets, 40)
    forwarder, st = _stream_fed(1 << 20, packets[:-3])
    assert st.gop == packets[first_of_40:-3] and st.gop_bytes == sum(map(len, st.gop))
    late, got = await _udp_out("late", 77)
    try:
        forwarder._join(st, late)
        for i, p in enumerate(packets[-3:]):  # live packets while it catches up (UDP: paced)
            st.buf[2 : 2 + len(p)] = p
            forwarder._relay(st, st.buf, st.view, 2, len(p), ("127.0.0.1", 9), 100.0 + i)
        await wait_for(lambda: late in st.consumers, 2)  # caught up: sent to directly from now on
        await wait_for(lambda: len(got.got.packets) >= len(packets) - first_of_40, 2)
        # the device's packets from the key frame on, each once, in order, with the consumer's SSRC
        assert [p[:8] + p[12:] for p in got.got.packets] == [p[:8] + p[12:] for p in packets[first_of_40:]]
        assert got.got.ssrcs == {77}
        assert st.gop is not None and {struct.unpack_from("!I", p, 8)[0] for p in st.gop} == {1234}  # untouched
    finally:
        late.sock.close()  # the stream's, in the relay: a UdpOut's close leaves it open
        got.close()


async def test_the_cache_is_dropped_past_its_bounds_until_the_next_key_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    packets = packetize(gb_ps(30, 10), 1234, mtu=500)
    starts = [_first_of(packets, frame) for frame in (0, 10, 20)]
    gop_bytes = sum(map(len, packets[starts[1] : starts[2]]))
    # bytes: one GOP more than fits → dropped; the next key frame starts it again
    forwarder, st = _stream_fed(gop_bytes - 1, packets[: starts[2]])
    assert st.gop is None
    forwarder, st = _stream_fed(gop_bytes - 1, packets[: starts[2] + 1])
    assert st.gop == [packets[starts[2]]]
    # no key frame at all: nothing kept, a joining consumer is reported (the device is asked for one)
    events: list[RelayEvent] = []
    forwarder, st = _stream_fed(1 << 20, packets[1 : starts[1]])
    assert st.gop is None
    forwarder.on_event = events.append
    joining, got = await _udp_out("x", 77)
    forwarder._join(st, joining)
    joining.sock.close()
    got.close()
    assert events == [KeyFrameWanted("s1")]
    # packets: a stream of many small packets is bounded by count too
    monkeypatch.setattr(forwarder_module, "GOP_CACHE_PACKETS", 4)
    forwarder, st = _stream_fed(1 << 20, packets[: starts[1]])
    assert starts[1] > 4 and st.gop is None
    # gop_cache 0: nothing is ever kept
    forwarder, st = _stream_fed(0, packets)
    assert st.gop is None
