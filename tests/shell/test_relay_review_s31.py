"""Review of the relay's batched path (recvmmsg from a blasting stream's first packet, a run's
SSRCs and lengths written a column at a time) and of its mypyc build: what the model test in
test_relay_batch.py does not reach.

Each test runs the same traffic through the general path (``recvfrom_into``/``sendto``, no batch)
and the batched one and asks for what the general path gives.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import errno
import pickle
import random
import select
import socket
import struct
from typing import Any

import pytest

from gb28181gw.media.tcp_framing import frame
from gb28181gw.relay import forwarder as forwarder_module
from gb28181gw.relay import mmsg
from gb28181gw.relay.forwarder import Forwarder, RelaySettings
from gb28181gw.relay.records import ConsumerLost, MediaConnected, RelayEvent
from gb28181gw.sdp import StreamMode
from tests.media import wait_for

from .test_devices import free_even_udp_port
from .test_relay_batch import (
    DEVICE,
    LIBC,
    PACKETS,
    SSRC,
    STRANGER,
    _batch,
    _drain,
    _feed,
    _opened,
    _reader,
    _settings,
    _sink,
    _with_ssrc,
)

pytestmark = pytest.mark.skipif(LIBC is None, reason="libc has no recvmmsg/sendmmsg here")


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST (SO_LINGER 0): the other end's next send fails."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _broken(fd: int) -> bool:
    """The connection on ``fd`` was reset (seen without reading from it)."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in p.poll(0))


class TestConsumersChangedMidRun:
    """A TCP consumer whose send fails is removed at once (ConsumerLost), mid-batch; an in-process
    handler of that event may add or remove consumers there and then. The general path sends each
    packet to the consumers the stream has when it arrives; so must the batched one."""

    @pytest.mark.parametrize("batched", [False, True])
    async def test_a_consumer_added_or_removed_by_a_handler_mid_run_is_sent_from_the_next_packet(
        self, batched: bool
    ) -> None:
        events: list[RelayEvent] = []
        forwarder = Forwarder(_settings(0), on_event=events.append, batch=_batch(4) if batched else False)
        port, stream = _opened(forwarder, DEVICE)
        device, first, later = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), _sink(), _sink()
        device.bind((DEVICE, 0))
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        accepted: list[socket.socket] = []

        def on_event(event: RelayEvent) -> None:
            events.append(event)
            if isinstance(event, ConsumerLost):  # e.g. a viewer group that leaves and comes back together
                forwarder.remove_consumer("s", "c0")
                forwarder.add_consumer("s", "c2", "udp", "127.0.0.1", later.getsockname()[1], 1002)

        forwarder.on_event = on_event
        try:
            forwarder.add_consumer("s", "c0", "udp", "127.0.0.1", first.getsockname()[1], 1000)
            await forwarder.add_tcp_consumer("s", "c1", "127.0.0.1", listener.getsockname()[1], 1001)
            accepted.append(listener.accept()[0])
            tcp = next(c for c in stream.consumers if c.id == "c1")
            forwarder.loop.remove_reader(tcp.sock.fileno())  # the reset is met by a send, mid-batch
            reader = _reader(forwarder, stream)
            burst = forwarder_module.BURST
            for p in PACKETS[:burst]:  # one wake-up of BURST packets: the next is read by recvmmsg throughout
                device.sendto(p, ("127.0.0.1", port))
            reader()
            assert len(_drain(first)) == burst
            _reset(accepted.pop())
            await wait_for(lambda: _broken(tcp.sock.fileno()), 5)
            for p in PACKETS[burst : 2 * burst]:
                device.sendto(p, ("127.0.0.1", port))
            for _ in range(4):
                reader()
            assert [e.consumer for e in events if isinstance(e, ConsumerLost)] == ["c1"]
            # the packet whose send failed went to c0 (it was a consumer then), the rest to c2 only
            assert _drain(first) == [_with_ssrc(PACKETS[burst], 1000)]
            assert _drain(later) == [_with_ssrc(p, 1002) for p in PACKETS[burst + 1 : 2 * burst]]
        finally:
            forwarder.close_all()
            for s in (device, first, later, listener, *accepted):
                s.close()


async def _relay6(batch: mmsg.Batch | bool, datagrams: list[tuple[socket.socket, bytes]], chunks: list[int]) -> Any:
    """test_relay_batch._relay over IPv6 (the forwarder bound to ::1): what one consumer got, in
    order, and the stream's figures."""
    forwarder = Forwarder(dataclasses.replace(_settings(), host="::1"), batch=batch)
    port, stream = _opened(forwarder, "::1")
    sink = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sink.bind(("::1", 0))
    sink.setblocking(False)
    try:
        forwarder.add_consumer("s", "c0", "udp", "::1", sink.getsockname()[1], 1000)
        reader = _reader(forwarder, stream)
        _feed(reader, datagrams, ("::1", port), chunks)
        for _ in range(4):
            reader()
        figures = forwarder.snapshot().streams["s"]
        figures = dataclasses.replace(figures, port=0, idle=0.0, age=0.0, bitrate=0.0, consumers={})
        return _drain(sink), figures, forwarder.totals(), stream.gop
    finally:
        forwarder.close_all()
        sink.close()


class TestIpv6:
    """Over IPv6 a sender's name is a 28-byte sockaddr_in6: the fast path compares it as bytes,
    and the consumer's destination is one too."""

    @pytest.mark.parametrize("chunks", [[1], [3, 17], [40]])
    async def test_same_output_as_the_general_path(self, chunks: list[int]) -> None:
        try:
            device, other = (socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range(2))
        except OSError:  # pragma: no cover - no IPv6 here
            pytest.skip("no IPv6")
        try:
            device.bind(("::1", 0))
            other.bind(("::1", 0))
            datagrams = []
            for i, p in enumerate(PACKETS):
                if i % 11 == 5:
                    datagrams.append((other, p))  # another port of the device's host: wrong source
                if i % 13 != 7:  # a gap now and then
                    datagrams.append((device, p))
            assert LIBC is not None
            real, sent = LIBC.sendmmsg, []

            def sendmmsg(fd: int, headers: Any, count: int, flags: int) -> int:
                sent.append(count)
                return int(real(fd, headers, count, flags))

            general = await _relay6(False, datagrams, chunks)
            batched = await _relay6(_batch(8, libc=mmsg.Libc(LIBC.recvmmsg, sendmmsg)), datagrams, chunks)
        finally:
            device.close()
            other.close()
        assert batched == general
        assert general[1].packets > 0 and general[1].wrong_source > 0
        assert {struct.unpack_from("!I", p, 8)[0] for p in batched[0]} == {1000}
        assert chunks == [1] or sum(sent) > len(PACKETS) // 2  # the fast path took most of them


class TestMovedHeaders:
    """A run that starts past a general-path packet is sent from moved send headers (header j
    carries slot first + j, its length copied from the received lengths): a send cut short must
    carry on from the right header and count what did not go by its own length."""

    async def test_a_send_cut_short_after_a_general_packet_drops_the_right_datagram(self) -> None:
        assert LIBC is not None
        real, calls = LIBC.sendmmsg, []

        def sendmmsg(fd: int, headers: Any, count: int, flags: int) -> int:
            calls.append(count)
            if len(calls) == 1:
                return int(real(fd, headers, 1, flags))  # one went, then the buffer was full
            if len(calls) == 2:
                ctypes.set_errno(errno.EAGAIN)
                return -1
            return int(real(fd, headers, count, flags))

        batch = _batch(8, libc=mmsg.Libc(LIBC.recvmmsg, sendmmsg))
        forwarder = Forwarder(_settings(), batch=batch)
        port, stream = _opened(forwarder, DEVICE)
        device, stranger = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
        device.bind((DEVICE, 0))
        stranger.bind((STRANGER, 0))
        sink = _sink()
        # packets of different sizes, so that a length taken from the wrong slot shows
        packets = [p + bytes(j) for j, p in enumerate(PACKETS[:5])]
        try:
            forwarder.add_consumer("s", "c0", "udp", "127.0.0.1", sink.getsockname()[1], 1000)
            device.sendto(packets[0], ("127.0.0.1", port))  # read alone (recvfrom_into): latches the source
            stranger.sendto(packets[1], ("127.0.0.1", port))  # slot 0 of the batch: the general path
            for p in packets[1:]:
                device.sendto(p, ("127.0.0.1", port))  # slots 1-4: one run, headers 0-3 moved
            _reader(forwarder, stream)()
            assert calls[:3] == [4, 3, 2]
            assert not batch.moved and list(batch.send_iov[: 2 * 4 : 2]) == list(batch.addresses[:4])
            got = _drain(sink)
            assert got == [_with_ssrc(p, 1000) for p in packets[:2] + packets[3:]]
            c = forwarder.snapshot().streams["s"].consumers["c0"]
            assert (c.packets, c.dropped, c.errors) == (4, 1, 0)
            assert c.bytes == sum(map(len, packets)) - len(packets[2])
            assert forwarder.snapshot().streams["s"].wrong_source == 1
        finally:
            forwarder.close_all()
            for s in (device, stranger, sink):
                s.close()


async def _relay_tcp(
    batch: mmsg.Batch | bool, datagrams: list[tuple[socket.socket, bytes]], chunks: list[int]
) -> tuple[list[bytes], bytes, Any]:
    """Relay ``datagrams`` to a UDP consumer and a TCP one (RFC 4571), in wake-ups of ``chunks``
    packets: what each got, and the stream's figures."""
    forwarder = Forwarder(_settings(), batch=batch)
    port, stream = _opened(forwarder, DEVICE)
    sink, listener = _sink(), socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    conn: socket.socket | None = None
    try:
        forwarder.add_consumer("s", "u", "udp", "127.0.0.1", sink.getsockname()[1], 1000)
        await forwarder.add_tcp_consumer("s", "t", "127.0.0.1", listener.getsockname()[1], 1001)
        conn = listener.accept()[0]
        conn.setblocking(False)
        reader = _reader(forwarder, stream)
        _feed(reader, datagrams, ("127.0.0.1", port), chunks)
        for _ in range(4):
            reader()
        figures = forwarder.snapshot().streams["s"]
        tcp = figures.consumers["t"]
        stream_bytes = bytearray()

        def all_read() -> bool:
            assert conn is not None
            try:
                stream_bytes.extend(conn.recv(1 << 20))
            except BlockingIOError:
                pass
            return len(stream_bytes) == tcp.bytes + 2 * tcp.packets

        await wait_for(all_read, 5)
        consumers = {k: dataclasses.replace(c, address=("", 0)) for k, c in figures.consumers.items()}
        figures = dataclasses.replace(figures, port=0, idle=0.0, age=0.0, bitrate=0.0, consumers=consumers)
        return _drain(sink), bytes(stream_bytes), figures
    finally:
        forwarder.close_all()
        for s in (sink, listener, *([conn] if conn else [])):
            s.close()


class TestTcpBeside:
    """A TCP consumer beside a UDP one: each packet gets the TCP consumer's length prefix written
    into the two bytes before it (a batch slot's own) and each consumer's SSRC in turn."""

    @pytest.mark.parametrize(("seed", "chunks"), [(1, [1]), (2, [5, 11]), (3, [40]), (4, [2, 9, 1])])
    async def test_same_output_as_the_general_path(self, seed: int, chunks: list[int]) -> None:
        rng = random.Random(seed)
        device, other = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
        try:
            device.bind((DEVICE, 0))
            other.bind((DEVICE, 0))
            datagrams = []
            for p in PACKETS:
                what = rng.choice(["ok"] * 8 + ["skip", "dup", "other", "short"])
                if what == "skip":
                    continue
                if what == "dup":
                    datagrams.append((device, p))
                elif what == "other":
                    datagrams.append((other, p))
                elif what == "short":
                    datagrams.append((device, p[:7]))
                datagrams.append((device, p))
            general = await _relay_tcp(False, datagrams, chunks)
            batched = await _relay_tcp(_batch(6), datagrams, chunks)
        finally:
            device.close()
            other.close()
        assert batched == general
        assert general[2].consumers["t"].packets == general[2].packets > 0


def test_the_relay_settings_reach_a_worker_whole() -> None:
    # RelaySettings.__reduce__ lists the fields by hand (a compiled frozen class refuses to be
    # unpickled field by field): a field added later and not listed there would reach each relay
    # worker as its default, silently. Every field here is set to something else than its default.
    values: dict[str, Any] = {}
    for f in dataclasses.fields(RelaySettings):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")  # compiled: the class
        values[f.name] = {"str": "::1", "float": 2.5, "bool": not f.default}.get(kind, 12345 + len(values))
    settings = RelaySettings(**values)
    assert pickle.loads(pickle.dumps(settings)) == settings
    assert dataclasses.asdict(pickle.loads(pickle.dumps(settings))) == values


class TestDualStack:
    """``media.listen = "::"`` takes IPv4 devices too (an IPv6 socket, IPv4-mapped senders: what
    Forwarder._as_peer_host is for); their consumers are as often IPv4, and an IPv6 socket cannot
    send to "127.0.0.1" as such (getaddrinfo: address family not supported), only to ::ffff:127.0.0.1."""

    @pytest.mark.parametrize("batched", [False, True])
    async def test_an_ipv4_consumer_of_a_relay_listening_on_the_ipv6_wildcard_is_sent_to(self, batched: bool) -> None:
        forwarder = Forwarder(dataclasses.replace(_settings(), host="::"), batch=_batch(8) if batched else False)
        port, stream = _opened(forwarder, DEVICE)
        assert stream.udp is not None and stream.udp.family == socket.AF_INET6
        device, sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), _sink()
        device.bind((DEVICE, 0))
        try:
            forwarder.add_consumer("s", "c0", "udp", "127.0.0.1", sink.getsockname()[1], 1000)
            for p in PACKETS[:20]:
                device.sendto(p, ("127.0.0.1", port))
            reader = _reader(forwarder, stream)
            for _ in range(4):
                reader()
            assert _drain(sink) == [_with_ssrc(p, 1000) for p in PACKETS[:20]]
            c = forwarder.snapshot().streams["s"].consumers["c0"]
            assert (c.packets, c.errors, c.address) == (20, 0, ("127.0.0.1", sink.getsockname()[1]))
        finally:
            forwarder.close_all()
            device.close()
            sink.close()


class TestTcpMediaOverIpv6:
    """A device's TCP media connection (tcp-passive) to a relay on IPv6: ``accept`` gives the peer as
    (host, port, flowinfo, scope), four items, where the relay keeps (host, port). Compiled by mypyc,
    a tuple typed ``tuple[str, int]`` is checked for its length where it is passed."""

    async def test_a_device_connecting_over_ipv6_is_attached_and_relayed(self) -> None:
        try:
            sink = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sink.bind(("::1", 0))
        except OSError:  # pragma: no cover - no IPv6 here
            pytest.skip("no IPv6")
        sink.setblocking(False)
        events: list[RelayEvent] = []
        forwarder = Forwarder(dataclasses.replace(_settings(), host="::1"), on_event=events.append)
        port = free_even_udp_port()
        device = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            forwarder.open("s", port, StreamMode.TCP_PASSIVE, SSRC, source="::1")
            forwarder.add_consumer("s", "c0", "udp", "::1", sink.getsockname()[1], 1000)
            device.setblocking(False)
            await asyncio.get_running_loop().sock_connect(device, ("::1", port))
            await wait_for(lambda: any(isinstance(e, MediaConnected) for e in events), 5)
            connected = next(e for e in events if isinstance(e, MediaConnected))
            assert connected.peer == device.getsockname()[:2]
            device.sendall(b"".join(frame(p) for p in PACKETS[:10]))
            got: list[bytes] = []
            await wait_for(lambda: bool(got.extend(_drain(sink))) or len(got) == 10, 5)
            assert got == [_with_ssrc(p, 1000) for p in PACKETS[:10]]
        finally:
            forwarder.close_all()
            device.close()
            sink.close()
