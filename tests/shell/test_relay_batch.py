"""The relay's batched UDP path (recvmmsg/sendmmsg through ctypes, issue 16) beside the general one
(recvfrom_into/sendto), over real sockets.

The model test feeds the same datagrams — a device's H.264 in PS, with gaps, duplicates, late
packets, foreign SSRCs, a stranger and a second port of the device's host mixed in — to a
forwarder of each kind and asks for the same output: the bytes each consumer got, in order, every
figure, the packets kept for joining consumers and the events. Batches are made small (and of
every size) so that they end short, mid-frame and between a general packet and the next. The
rest covers what only the batched path meets: a datagram longer than a slot, a send the socket
has no room for, errors from either call in the middle of a batch, and the fallback.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import errno
import socket
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gb28181gw.media.rtp import RtpPacket
from gb28181gw.relay import forwarder as forwarder_module
from gb28181gw.relay import mmsg
from gb28181gw.relay.forwarder import Forwarder, RelaySettings, RelayStream
from gb28181gw.relay.records import RelayEvent
from gb28181gw.sdp import StreamMode
from tests.media import UdpConsumer, decode_h264, gb_ps, packetize, wait_for

from .test_devices import free_even_udp_port

LIBC = mmsg.load()
pytestmark = pytest.mark.skipif(LIBC is None, reason="libc has no recvmmsg/sendmmsg here")
SSRC = 200000123
DEVICE, STRANGER = "127.0.0.1", "127.0.0.2"
#: Real packets of a few GOPs (key frames every 5 frames), small enough to fill few kernel buffers.
PACKETS = packetize(gb_ps(40, 5, (64, 48)), SSRC, mtu=100, seq=65500)  # 83, past 65535 too


def _settings(gop_cache: int = 1 << 20) -> RelaySettings:
    return RelaySettings(
        host="127.0.0.1", tcp_queue_limit=1 << 20, udp_receive_buffer=4 << 20, stats_interval=1.0, gop_cache=gop_cache
    )


def _batch(vlen: int = 4, slot: int = 2 + 2048, libc: mmsg.Libc | None = None) -> mmsg.Batch:
    assert LIBC is not None
    return mmsg.Batch(libc or LIBC, vlen=vlen, slot=slot)


def _sink() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _drain(s: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(s.recv(65536))
        except BlockingIOError:
            return got


@dataclasses.dataclass
class Outcome:
    received: list[list[bytes]]
    figures: Any
    totals: Any
    gop: list[bytes] | None
    events: list[RelayEvent]


async def _relay(
    batch: mmsg.Batch | bool,
    datagrams: list[tuple[socket.socket, bytes]],
    consumers: int,
    gop_cache: int = 1 << 20,
    chunks: list[int] | None = None,
) -> Outcome:
    """Send ``datagrams`` (all at once: loopback queues them) to a new stream, then let the
    forwarder read them, its reader called by hand until its socket is empty. ``chunks``: sent
    that many at a time instead (the sizes taken in turn), each read by one call of the reader (a
    wake-up), so that wake-ups bring few packets or many (a stream read as paced or blasting)."""
    events: list[RelayEvent] = []
    forwarder = Forwarder(_settings(gop_cache), on_event=events.append, batch=batch)
    port, stream = _opened(forwarder, DEVICE)
    sinks = [_sink() for _ in range(consumers)]
    try:
        for j, s in enumerate(sinks):
            forwarder.add_consumer("s", f"c{j}", "udp", "127.0.0.1", s.getsockname()[1], 1000 + j)
        reader = _reader(forwarder, stream)
        _feed(reader, datagrams, ("127.0.0.1", port), chunks)
        for _ in range(len(datagrams) + 2):
            reader()
        snapshot = forwarder.snapshot()
        figures = snapshot.streams["s"]  # what differs between two runs (ports, times) left out
        consumers_ = {k: dataclasses.replace(c, address=("", 0)) for k, c in figures.consumers.items()}
        figures = dataclasses.replace(figures, port=0, idle=0.0, age=0.0, bitrate=0.0, consumers=consumers_)
        return Outcome([_drain(s) for s in sinks], figures, forwarder.totals(), stream.gop, events)
    finally:
        forwarder.close_all()
        for s in sinks:
            s.close()


async def _from_device(batch: mmsg.Batch | bool, packets: list[bytes]) -> Outcome:
    """``_relay`` of ``packets`` sent by the device, to one consumer."""
    device = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    device.bind((DEVICE, 0))
    try:
        return await _relay(batch, [(device, p) for p in packets], 1)
    finally:
        device.close()


def _opened(forwarder: Forwarder, source: str = DEVICE) -> tuple[int, RelayStream]:
    """Stream "s" opened on a free port, media from ``source`` only, its reader off the loop (the
    test calls it by hand, a wake-up at a time): its port and the stream."""
    port = free_even_udp_port()
    forwarder.open("s", port, StreamMode.UDP, SSRC, source=source)
    stream = forwarder.streams["s"]
    assert stream.udp is not None
    forwarder.loop.remove_reader(stream.udp.fileno())
    return port, stream


def _feed(
    reader: Callable[[], None], datagrams: list[tuple[socket.socket, bytes]], dest: Any, chunks: list[int] | None
) -> None:
    """Send ``datagrams`` to ``dest``: all at once, or ``chunks`` at a time (the sizes taken in turn),
    each chunk then read by one call of ``reader`` (a wake-up of few packets or of many)."""
    sizes, at = iter(chunks * len(datagrams) if chunks else [len(datagrams)]), 0
    while at < len(datagrams):
        size = next(sizes)
        for sender, data in datagrams[at : at + size]:
            sender.sendto(data, dest)
        at += size
        if chunks:
            reader()


def _reader(forwarder: Forwarder, stream: RelayStream) -> Callable[[], None]:
    return lambda: (forwarder._on_udp if forwarder._batch is None else forwarder._on_udp_batched)(stream)


def _with_ssrc(packet: bytes, ssrc: int) -> bytes:
    return packet[:8] + ssrc.to_bytes(4, "big") + packet[12:]


@st.composite
def _traffic(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """(sender, datagram): 0 the device, 1 another port of the device's host, 2 a stranger."""
    out: list[tuple[int, bytes]] = []
    packets = PACKETS[: draw(st.integers(10, len(PACKETS)))]
    i = 0
    while i < len(packets):
        what = draw(st.sampled_from(["ok"] * 12 + ["skip", "dup", "swap", "ssrc", "other", "stranger", "short"]))
        p = packets[i]
        if what == "skip":
            i += 1
            continue
        if what == "dup":
            out.append((0, p))
        elif what == "swap" and i + 1 < len(packets):
            out.append((0, packets[i + 1]))
        elif what == "ssrc":
            out.append((0, _with_ssrc(p, 7)))
        elif what == "other":
            out.append((1, p))
        elif what == "stranger":
            out.append((2, p))
        elif what == "short":
            out.append((0, p[:5]))
        out.append((0, p))
        i += 1
    return out


class TestBatchedEqualsGeneral:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        _traffic(),
        st.integers(1, 9),
        st.integers(1, 2),
        st.sampled_from([1 << 20, 0, 3000]),
        st.none() | st.lists(st.integers(1, 3 * forwarder_module.BURST), min_size=1, max_size=5),
    )
    def test_same_output_on_the_same_datagrams(
        self, traffic: list[tuple[int, bytes]], vlen: int, consumers: int, gop_cache: int, chunks: list[int] | None
    ) -> None:
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        try:
            for s, host in zip(senders, (DEVICE, DEVICE, STRANGER), strict=True):
                s.bind((host, 0))
            datagrams = [(senders[who], data) for who, data in traffic]
            general = asyncio.run(_relay(False, datagrams, consumers, gop_cache, chunks))
            batched = asyncio.run(_relay(_batch(vlen), datagrams, consumers, gop_cache, chunks))
        finally:
            for s in senders:
                s.close()
        assert batched == general
        assert general.received[0]  # the device's packets went through

    async def test_a_blast_fills_whole_batches_and_ends_with_a_short_one(self) -> None:
        device = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        device.bind((DEVICE, 0))
        try:
            datagrams = [(device, p) for p in PACKETS[:75]]  # 75 = 9 batches of 8 and one of 3
            general = await _relay(False, datagrams, 1)
            batched = await _relay(_batch(8), datagrams, 1)
        finally:
            device.close()
        assert batched == general
        assert [RtpPacket.parse(p).ssrc for p in batched.received[0]] == [1000] * 75  # rewritten in place
        assert batched.figures.packets == 75 and batched.figures.lost == 0


class TestBatchedOnly:
    async def test_a_datagram_longer_than_a_slot_is_counted_malformed_not_relayed_cut_short(self) -> None:
        device = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        device.bind((DEVICE, 0))
        big = _with_ssrc(bytes([0x80, 96, 0, 9]) + bytes(8) + bytes(700), SSRC)
        try:
            datagrams = [(device, p) for p in PACKETS[:3]] + [(device, big)] + [(device, p) for p in PACKETS[3:6]]
            out = await _relay(_batch(4, slot=2 + 400), datagrams, 1)
        finally:
            device.close()
        assert out.received[0] == [_with_ssrc(p, 1000) for p in PACKETS[:6]]
        assert out.figures.malformed == 1 and out.figures.packets == 6

    async def test_a_send_the_socket_has_no_room_for_is_dropped_and_the_rest_go(self) -> None:
        assert LIBC is not None
        real = LIBC.sendmmsg
        calls = []

        def sendmmsg(fd: int, headers: int, count: int, flags: int) -> int:
            calls.append(count)
            if len(calls) == 1:
                return int(real(fd, headers, 2, flags))  # two went, then the buffer was full
            if len(calls) == 2:
                ctypes.set_errno(errno.EAGAIN)
                return -1  # the third would block: dropped, as sendto's BlockingIOError
            return int(real(fd, headers, count, flags))

        out = await _from_device(_batch(8, libc=mmsg.Libc(LIBC.recvmmsg, sendmmsg)), PACKETS[:8])
        # the first packet goes the general path (it latches the source); then 7 in one sendmmsg
        assert calls[:3] == [7, 5, 4]
        sent = [_with_ssrc(p, 1000) for p in PACKETS[:8]]
        assert out.received[0] == sent[:3] + sent[4:]
        consumer = out.figures.consumers["c0"]
        assert (consumer.packets, consumer.dropped, consumer.errors) == (7, 1, 0)
        assert consumer.bytes == sum(map(len, PACKETS[:8])) - len(PACKETS[3])

    async def test_a_send_error_mid_batch_is_counted_and_the_rest_go(self) -> None:
        assert LIBC is not None
        real = LIBC.sendmmsg
        calls = []

        def sendmmsg(fd: int, headers: int, count: int, flags: int) -> int:
            calls.append(count)
            if len(calls) == 1:
                ctypes.set_errno(errno.EINTR)
                return -1  # interrupted: tried again, as sendto does
            if len(calls) == 3:
                ctypes.set_errno(errno.EPERM)
                return -1  # e.g. a firewall's refusal: an error for this packet only
            return int(real(fd, headers, min(count, 1) if len(calls) == 2 else count, flags))

        out = await _from_device(_batch(8, libc=mmsg.Libc(LIBC.recvmmsg, sendmmsg)), PACKETS[:8])
        sent = [_with_ssrc(p, 1000) for p in PACKETS[:8]]
        assert out.received[0] == sent[:2] + sent[3:]
        consumer = out.figures.consumers["c0"]
        assert (consumer.packets, consumer.dropped, consumer.errors) == (7, 0, 1)

    async def test_a_receive_error_mid_batch_is_passed_over_like_recvfrom_into_s(self) -> None:
        assert LIBC is not None
        real = LIBC.recvmmsg
        calls = []

        def recvmmsg(fd: int, headers: int, count: int, flags: int, timeout: Any) -> int:
            calls.append(count)
            if len(calls) == 2:
                ctypes.set_errno(errno.ECONNREFUSED)  # an ICMP error for something sent earlier
                return -1
            return int(real(fd, headers, count, flags, timeout))

        device = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        device.bind((DEVICE, 0))
        try:
            datagrams = [(device, p) for p in PACKETS[:10]]
            out = await _relay(_batch(4, libc=mmsg.Libc(recvmmsg, LIBC.sendmmsg)), datagrams, 1)
            general = await _relay(False, datagrams, 1)
        finally:
            device.close()
        assert out == general
        assert len(calls) > 3

    async def test_a_blasting_stream_is_read_with_recvmmsg_from_its_first_packet_a_paced_one_not(self) -> None:
        assert LIBC is not None
        real = LIBC.recvmmsg
        read: list[int] = []  # the packets each recvmmsg took

        def recvmmsg(fd: int, headers: int, count: int, flags: int, timeout: Any) -> int:
            k = int(real(fd, headers, count, flags, timeout))
            read.append(max(k, 0))
            return k

        forwarder = Forwarder(_settings(), batch=_batch(4, libc=mmsg.Libc(recvmmsg, LIBC.sendmmsg)))
        port, stream = _opened(forwarder, DEVICE)
        device, sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), _sink()
        device.bind((DEVICE, 0))
        forwarder.add_consumer("s", "c0", "udp", "127.0.0.1", sink.getsockname()[1], 1000)
        reader = _reader(forwarder, stream)
        burst = forwarder_module.BURST
        # a wake-up's packets (how many) -> whether recvmmsg read the first of them
        steps = [(burst, False), (burst, True), (burst - 1, True), (1, False), (2 * burst, False), (1, True)]
        sent: list[bytes] = []
        try:
            for count, from_first in steps:
                read.clear()
                for p in PACKETS[len(sent) : len(sent) + count]:
                    device.sendto(p, ("127.0.0.1", port))
                    sent.append(p)
                reader()
                assert sum(read) == (count if from_first else count - 1), (count, read)
            assert _drain(sink) == [_with_ssrc(p, 1000) for p in sent]  # all, in order, either way
            assert forwarder.snapshot().streams["s"].packets == len(sent)
        finally:
            forwarder.close_all()
            device.close()
            sink.close()

    def test_the_sender_is_spelled_as_recvfrom_into_spells_it(self) -> None:
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            try:
                receiver = socket.socket(family, socket.SOCK_DGRAM)
                receiver.bind((host, 0))
            except OSError:  # pragma: no cover - no IPv6 here
                continue
            sender = socket.socket(family, socket.SOCK_DGRAM)
            sender.bind((host, 0))
            batch = _batch(2)
            try:
                sender.sendto(b"x" * 20, receiver.getsockname())
                assert batch.receive(receiver.fileno()) == 1
                assert batch.sender(0) == sender.getsockname()
                assert batch.length(0) == 20 and not batch.truncated(0)
                assert mmsg.sockaddr(family, receiver.getsockname()[:2]) is not None
            finally:
                sender.close()
                receiver.close()
        assert mmsg.sockaddr(socket.AF_INET, ("camera.local", 5)) is None  # a name: sent with sendto

    def test_a_run_queued_from_a_later_slot_carries_the_consumers_ssrc_and_each_length(self) -> None:
        # _queue_run alone, no kernel: an SSRC whose four bytes differ (a swapped half or byte shows),
        # a run from slot 2 on (the send headers then point at other slots than their own)
        b = _batch(6)
        for i in range(b.vlen):
            off = b.offset(i)
            b.buf[off : off + 12] = bytes([0x80, 96, 0, i, 0, 0, 0, i]) + (0xAABBCCDD).to_bytes(4, "big")
            b.lengths[mmsg.LEN_AT + b.stride * i] = 100 + i
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            out = forwarder_module.UdpOut("c", 0x01020304, ("127.0.0.1", 9), sock)
            forwarder_module._queue_run(b, 2, b.vlen - 2, out)
            forwarder_module._queue_run(b, 2, b.vlen - 2, out)  # the columns made once, used again
        finally:
            sock.close()
        ssrcs = [bytes(b.buf[b.offset(i) + 8 : b.offset(i) + 12]) for i in range(b.vlen)]
        assert ssrcs == [bytes.fromhex("aabbccdd")] * 2 + [bytes.fromhex("01020304")] * (b.vlen - 2)
        assert [b.buf[b.offset(i) + 3] for i in range(b.vlen)] == list(range(b.vlen))  # nothing else moved
        assert list(b.send_iov[1 : 2 * (b.vlen - 2) : 2]) == [100 + i for i in range(2, b.vlen)]
        assert list(b.send_iov[0 : 2 * (b.vlen - 2) : 2]) == list(b.addresses[2:])
        assert b.moved

    def test_slots_an_odd_number_of_bytes_apart_are_refused(self) -> None:
        # the batched path writes SSRCs as 16-bit words, which need every packet on an even offset
        with pytest.raises(ValueError, match="even"):
            _batch(4, slot=2 + 2047)
        assert _batch(3, slot=2 + 2048).halves.nbytes == 3 * (2 + 2048)


class TestFallback:
    @pytest.mark.parametrize("batched", [True, False])
    async def test_h264_in_ps_decodes_through_either_path(self, batched: bool) -> None:
        forwarder = Forwarder(_settings(), batch=batched)
        assert (forwarder._batch is not None) is batched
        port = free_even_udp_port()
        forwarder.open("s", port, StreamMode.UDP, SSRC, source=DEVICE)
        viewer = await UdpConsumer.start()
        device = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        packets = packetize(gb_ps(30, 10), SSRC)
        try:
            forwarder.add_consumer("s", "v", "udp", "127.0.0.1", viewer.port, 1)
            for i, p in enumerate(packets):
                device.sendto(p, ("127.0.0.1", port))
                if i % 16 == 15:
                    await asyncio.sleep(0.001)
            await wait_for(lambda: len(viewer.got.packets) == len(packets))
            assert viewer.got.ssrcs == {1}
            assert decode_h264(viewer.got.payload()) == 30
            assert forwarder.snapshot().streams["s"].ps.key_frames == 3
        finally:
            device.close()
            viewer.close()
            forwarder.close_all()

    async def test_without_recvmmsg_in_libc_the_forwarder_keeps_recvfrom_into(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        class NoMmsg:  # a libc without the two calls (not Linux, an old libc): what load() opens
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                pass

        # ctypes.CDLL, not mmsg.load: compiled, the forwarder calls load() directly, not the module's attribute
        monkeypatch.setattr(ctypes, "CDLL", NoMmsg)
        assert mmsg.load() is None
        forwarder = Forwarder(_settings())
        assert forwarder._batch is None
        out = await _from_device(True, PACKETS[:5])
        assert out.received[0] == [_with_ssrc(p, 1000) for p in PACKETS[:5]]
