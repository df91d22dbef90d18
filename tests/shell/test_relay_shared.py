"""The relay's shared port (``media.shared_port``, issue 16): every UDP stream of a forwarder on one
port, told apart by SSRC and sender.

The demultiplexer's rules are tested alone (no sockets); then a forwarder over real sockets: the
model test sends the same datagrams to a stream on a port of its own and to the same stream on a
shared port (with another device's stream beside it) and asks for the same output; then the
cases only a shared port meets — a device sending a wrong SSRC, two that cannot be told apart,
strangers, a stream's teardown — and real H.264 in PS through a relay worker to two viewers.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import errno
import logging
import random
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gb28181gw.config import load_config
from gb28181gw.errors import ConfigError
from gb28181gw.relay import mmsg
from gb28181gw.relay.demux import GONE_SECONDS, Demux
from gb28181gw.relay.forwarder import SSRC_LATCH_PACKETS, Forwarder, RelaySettings
from gb28181gw.relay.records import RelayEvent
from gb28181gw.relay.workers import WorkerRelay
from gb28181gw.sdp import StreamMode
from gb28181gw.services.streams import _split
from tests.helpers import media_port
from tests.media import TcpConsumer, UdpConsumer, decode_h264, gb_ps, packetize, send_udp, wait_for

from .test_devices import finished, free_even_udp_port, kill
from .test_relay_batch import DEVICE, PACKETS, SSRC, STRANGER, _drain, _sink, _traffic, _with_ssrc
from .test_streams import CH, DEVICE_SSRC, answer, gateway_with_device, scenario

NVR = "127.0.0.3"


@dataclasses.dataclass
class S:
    """A stream as the demultiplexer reads it."""

    id: str
    ssrc: int
    source_host: str | None = DEVICE
    source: Any = None


class TestDemux:
    def test_a_stream_is_found_by_its_ssrc_and_once_latched_by_the_fast_index(self) -> None:
        d: Demux[S] = Demux()
        a, b = S("a", 1), S("b", 2)
        d.add(a)
        d.add(b)
        assert d.resolve(1, (DEVICE, 5000), 0.0) is a and d.resolve(2, (DEVICE, 5002), 0.0) is b
        assert d.fast == {}  # nothing latched yet
        a.source = (DEVICE, 5000)
        d.update(a)
        assert d.fast == {1: a}
        assert d.unknown == d.ambiguous == 0

    def test_a_known_ssrc_from_elsewhere_goes_to_its_stream_which_counts_it(self) -> None:
        # as on a port of its own: the stream drops it as from a wrong source (the forwarder counts it)
        d: Demux[S] = Demux()
        a = S("a", 1, source=(DEVICE, 5000))
        d.add(a)
        assert d.resolve(1, (STRANGER, 9), 0.0) is a
        assert d.resolve(1, (DEVICE, 5001), 0.0) is a

    def test_a_wrong_ssrc_is_matched_by_its_host_while_one_stream_of_it_awaits_media(self) -> None:
        d: Demux[S] = Demux()
        a, other = S("a", 1), S("o", 2, source_host=NVR)
        d.add(a)
        d.add(other)
        assert d.resolve(0xDEAD, (DEVICE, 5000), 0.0) is a  # M1: the device's own SSRC
        assert d.resolve(0xDEAD, (STRANGER, 5000), 0.0) is None  # from no expected host: a stranger's
        assert d.unknown == 1

    def test_two_streams_of_one_host_with_a_wrong_ssrc_are_ambiguous_never_guessed(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        d: Demux[S] = Demux()
        a, b = S("a", 1, source_host=NVR), S("b", 2, source_host=NVR)
        d.add(a)
        d.add(b)
        with caplog.at_level(logging.WARNING, "gb28181gw.relay"):
            for _ in range(3):
                assert d.resolve(0xDEAD, (NVR, 5000), 0.0) is None
        assert d.ambiguous == 3 and d.unknown == 0
        [record] = [r for r in caplog.records if "could be any of several streams" in r.getMessage()]
        assert record.streams == "a,b" and record.source == f"{NVR}:5000"  # type: ignore[attr-defined]
        # one of them latched on its right SSRC from that sender: its neighbour's wrong one is still
        # ambiguous (it could be the latched stream's device changing SSRC)
        a.source = (NVR, 5000)
        d.update(a)
        assert d.resolve(0xBEEF, (NVR, 5000), 0.0) is None and d.ambiguous == 4
        # from another port of the host only the stream awaiting media can be its sender
        assert d.resolve(0xBEEF, (NVR, 5002), 0.0) is b

    def test_two_streams_answered_with_one_ssrc_are_told_apart_by_host(self) -> None:
        d: Demux[S] = Demux()
        a, b = S("a", 7, source_host=DEVICE), S("b", 7, source_host=NVR)
        d.add(a)
        d.add(b)
        assert d.resolve(7, (NVR, 1), 0.0) is b and d.resolve(7, (DEVICE, 1), 0.0) is a
        assert d.fast == {}  # shared SSRC: always the slow way
        a.source, b.source = (DEVICE, 1), (NVR, 1)
        d.update(a)
        d.update(b)
        assert d.resolve(7, (NVR, 1), 0.0) is b and d.resolve(7, (DEVICE, 1), 0.0) is a
        assert d.resolve(7, (STRANGER, 1), 0.0) is None and d.unknown == 1
        c = S("c", 7, source_host=DEVICE)  # a third, of the first one's host, awaiting media
        d.add(c)
        assert d.resolve(7, (DEVICE, 2), 0.0) is c

    def test_removing_and_reindexing_leave_no_entry_behind(self) -> None:
        d: Demux[S] = Demux()
        a = S("a", 1, source=(DEVICE, 5000))
        d.add(a)
        a.ssrc = 9  # followed the device's own SSRC (M1)
        d.update(a)
        assert d.fast == {9: a} and d.resolve(1, (DEVICE, 5000), 0.0) is a  # now by its source only
        d.remove(a, 0.0)
        d.remove(a, 0.0)  # twice: no error
        assert len(d) == 0 and d.fast == {} and d._by_ssrc == {} and d._by_host == {}
        assert d.resolve(9, (DEVICE, 5000), 0.0) is None

    def test_a_closed_streams_ssrc_from_its_sender_is_nobodys_for_a_while(self) -> None:
        # its device may still send after the BYE: not the wrong SSRC (M1) of a stream of its host
        d: Demux[S] = Demux()
        a, b, c = S("a", 11, source_host=NVR, source=(NVR, 5000)), S("b", 12, source_host=NVR), S("c", 13)
        for s in (a, b, c):
            d.add(s)
        d.remove(a, 100.0)
        d.remove(c, 100.0)  # never latched: its SSRC from its host
        assert d.resolve(11, (NVR, 5000), 100.0) is None and d.unknown == 1
        assert d.resolve(13, (DEVICE, 7), 104.0) is None and d.unknown == 2
        assert d.resolve(11, (NVR, 5002), 101.0) is b  # another sender of the host: b's device (M1)
        assert d.resolve(11, (NVR, 5000), 100.0 + GONE_SECONDS) is b  # once it has rested: as any other
        assert d._gone == {(13, DEVICE): (None, 100.0 + GONE_SECONDS)}
        d.remove(b, 200.0)  # what has expired goes as others close
        assert list(d._gone) == [(12, NVR)]
        d.add(S("a2", 11, source_host=NVR))  # the SSRC given again (after its quarantine): rule 1
        assert d.resolve(12, (NVR, 1), 201.0) is None

    def test_a_wrong_ssrc_another_stream_followed_already_still_finds_its_own_stream(self) -> None:
        # two cameras of one make send one constant SSRC of their own (M1): the first one's stream
        # followed it; the second one's must not lose it to the first (as its wrong source)
        d: Demux[S] = Demux()
        a, b = S("a", 0xAAAA, source_host=DEVICE, source=(DEVICE, 1)), S("b", 12, source_host=NVR)
        d.add(a)
        d.add(b)
        assert d.resolve(0xAAAA, (NVR, 5), 0.0) is b
        assert d.resolve(0xAAAA, (STRANGER, 5), 0.0) is a  # nobody else's: a's wrong source, as before
        assert d.resolve(0xAAAA, (DEVICE, 2), 0.0) is a
        # but a stream's SSRC from another port of its own host (its device sending from a new
        # port) is its wrong source, never the wrong SSRC of a neighbour of that host awaiting media
        d.add(S("c", 13, source_host=DEVICE))
        assert d.resolve(0xAAAA, (DEVICE, 2), 0.0) is a
        b.ssrc, b.source = 0xAAAA, (NVR, 5)  # followed it too: both by their sources
        d.update(b)
        assert d.resolve(0xAAAA, (NVR, 5), 0.0) is b and d.resolve(0xAAAA, (DEVICE, 1), 0.0) is a
        assert d.unknown == d.ambiguous == 0

    def test_random_adds_updates_and_removes_keep_the_indexes_exact(self) -> None:
        rng = random.Random(16)
        d: Demux[S] = Demux()
        live: dict[str, S] = {}
        for step in range(2000):
            what = rng.random()
            if what < 0.4 or not live:
                s = S(f"s{step}", rng.randrange(4), rng.choice([DEVICE, NVR, None]))
                live[s.id] = s
                d.add(s)
            elif what < 0.75:
                s = rng.choice(list(live.values()))
                s.ssrc, s.source = rng.randrange(4), rng.choice([None, (DEVICE, 1), (NVR, 2)])
                d.update(s)
            else:
                d.remove(live.pop(rng.choice(list(live))), 0.0)
            for ssrc in range(4):
                same = [s for s in live.values() if s.ssrc == ssrc]
                want = same[0] if len(same) == 1 and same[0].source is not None else None
                assert d.fast.get(ssrc) is want
        assert len(d) == len(live)


def _settings() -> RelaySettings:
    return RelaySettings(
        host="127.0.0.1", tcp_queue_limit=1 << 20, udp_receive_buffer=1 << 20, stats_interval=1.0, gop_cache=1 << 20
    )


def _batch(vlen: int) -> mmsg.Batch:
    libc = mmsg.load()
    assert libc is not None
    return mmsg.Batch(libc, vlen=vlen, slot=2 + 2048)


async def _run(
    shared: bool, datagrams: list[tuple[socket.socket, bytes]], vlen: int, *, beside: list[bytes] = (), viewers: int = 1
) -> tuple[Any, ...]:
    """Stream "s" (SSRC, from DEVICE) on a port of its own or on a shared one beside stream "n" (from
    NVR, sent ``beside`` interleaved); the forwarder's reader called by hand until all is read."""
    events: list[RelayEvent] = []
    forwarder = Forwarder(_settings(), on_event=events.append, batch=_batch(vlen) if vlen else False)
    port = free_even_udp_port()
    forwarder.open("s", port, StreamMode.UDP, SSRC, source=DEVICE, shared=shared)
    nvr = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    nvr.bind((NVR, 0))
    sinks = [_sink(), _sink(), _sink()]
    try:
        if shared:
            forwarder.open("n", port, StreamMode.UDP, 4242, source=NVR, shared=True)
            forwarder.add_consumer("n", "c", "udp", "127.0.0.1", sinks[1].getsockname()[1], 77)
        forwarder.add_consumer("s", "c", "udp", "127.0.0.1", sinks[0].getsockname()[1], 1000)
        if viewers > 1:  # a second viewer, with an SSRC of its own: written into the same slots
            forwarder.add_consumer("s", "c2", "udp", "127.0.0.1", sinks[2].getsockname()[1], 1001)
        others = iter(beside)
        for sender, data in datagrams:
            sender.sendto(data, ("127.0.0.1", port))
            if shared and (extra := next(others, None)) is not None:
                nvr.sendto(extra, ("127.0.0.1", port))
        sock = forwarder._shared[port].sock if shared else forwarder.streams["s"].udp
        assert sock is not None
        forwarder.loop.remove_reader(sock.fileno())
        if shared:
            sp = forwarder._shared[port]
            reader = (lambda: forwarder._on_shared(sp)) if vlen else (lambda: forwarder._on_shared_plain(sp))
        else:
            st_ = forwarder.streams["s"]
            reader = (lambda: forwarder._on_udp_batched(st_)) if vlen else (lambda: forwarder._on_udp(st_))
        for _ in range(2 * len(datagrams) + 2):
            reader()
        f = forwarder.snapshot().streams["s"]
        consumers = {k: dataclasses.replace(c, address=("", 0)) for k, c in f.consumers.items()}
        # what differs by nature: the port, times, and where drops are counted: a packet too short
        # for an SSRC, or of no stream's SSRC from no stream's source, has no stream to be counted
        # on at a shared port (the relay's unknown_source counts it there)
        dropped = f.wrong_source + f.wrong_ssrc + f.malformed + forwarder.totals().unknown_source
        f = dataclasses.replace(
            f, port=0, idle=0.0, age=0.0, bitrate=0.0, consumers=consumers, malformed=0, wrong_source=0, wrong_ssrc=0
        )
        mine = [e for e in events if getattr(e, "stream", "s") == "s"]
        gop = forwarder.streams["s"].gop
        return (_drain(sinks[0]), _drain(sinks[2])), f, gop, mine, dropped, _drain(sinks[1]), forwarder.totals()
    finally:
        forwarder.close_all()
        nvr.close()
        for s in sinks:
            s.close()


class TestSharedEqualsOwnPort:
    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_traffic(), st.sampled_from([0, 1, 3, 8]), st.integers(1, 2))
    def test_same_output_on_the_same_datagrams(self, traffic: list[tuple[int, bytes]], vlen: int, viewers: int) -> None:
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        beside = packetize(gb_ps(6, 3, (64, 48)), 4242, mtu=100)
        try:
            for s, host in zip(senders, (DEVICE, DEVICE, STRANGER), strict=True):
                s.bind((host, 0))
            datagrams = [(senders[who], data) for who, data in traffic]
            own = asyncio.run(_run(False, datagrams, vlen, viewers=viewers))
            shared = asyncio.run(_run(True, datagrams, vlen, beside=beside, viewers=viewers))
        finally:
            for s in senders:
                s.close()
        assert shared[:5] == own[:5]
        assert own[0][0] and bool(own[0][1]) is (viewers > 1)  # the device's packets went through
        n = min(len(traffic), len(beside))
        assert shared[5] == [_with_ssrc(p, 77) for p in beside[:n]]  # the neighbour's, all, only its own
        assert shared[6].ambiguous_source == 0


async def _shared_forwarder(*streams: tuple[str, int, str]) -> tuple[Forwarder, int, list[socket.socket]]:
    forwarder = Forwarder(_settings())
    port = free_even_udp_port()
    sinks = []
    for name, ssrc, host in streams:
        forwarder.open(name, port, StreamMode.UDP, ssrc, source=host, shared=True)
        sink = _sink()
        sinks.append(sink)
        forwarder.add_consumer(name, "c", "udp", "127.0.0.1", sink.getsockname()[1], 5)
    return forwarder, port, sinks


def _from(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


async def _send(sock: socket.socket, packets: list[bytes], port: int) -> None:
    for i, p in enumerate(packets):
        sock.sendto(p, ("127.0.0.1", port))
        if i % 16 == 15:
            await asyncio.sleep(0.002)
    await asyncio.sleep(0.05)


class TestSharedOnly:
    async def test_a_device_sending_its_own_ssrc_is_followed_as_on_its_own_port(self) -> None:
        forwarder, port, sinks = await _shared_forwarder(("s", SSRC, DEVICE), ("n", 4242, NVR))
        device = _from(DEVICE)
        try:
            packets = [_with_ssrc(p, 0xABCDEF) for p in PACKETS]
            await _send(device, packets, port)
            got = _drain(sinks[0])
            assert got == [_with_ssrc(p, 5) for p in packets[SSRC_LATCH_PACKETS - 1 :]]
            f = forwarder.snapshot().streams["s"]
            assert f.ssrc == 0xABCDEF and f.ssrc_latched and f.wrong_ssrc == 0
            assert forwarder.streams["s"].shared.demux.fast.get(0xABCDEF) is forwarder.streams["s"]  # type: ignore[union-attr]
            assert _drain(sinks[1]) == []
        finally:
            device.close()
            forwarder.close_all()
            for s in sinks:
                s.close()

    async def test_two_streams_of_one_nvr_with_wrong_ssrcs_get_nothing_and_are_counted(self) -> None:
        forwarder, port, sinks = await _shared_forwarder(("a", 11, NVR), ("b", 12, NVR))
        nvr = _from(NVR)
        try:
            await _send(nvr, [_with_ssrc(p, 0xAAAA) for p in PACKETS[:20]], port)
            assert _drain(sinks[0]) == _drain(sinks[1]) == []
            totals = forwarder.totals()
            assert totals.ambiguous_source == 20 and totals.packets_in == 0
            # one of them sends its right SSRC: it flows, and the wrong one is still nobody's
            await _send(nvr, [_with_ssrc(p, 11) for p in PACKETS[:10]], port)
            await _send(nvr, [_with_ssrc(p, 0xAAAA) for p in PACKETS[:5]], port)
            assert len(_drain(sinks[0])) == 10 and _drain(sinks[1]) == []
            assert forwarder.totals().ambiguous_source == 25
        finally:
            nvr.close()
            forwarder.close_all()
            for s in sinks:
                s.close()

    async def test_strangers_are_dropped_and_counted_never_sent_on(self) -> None:
        forwarder, port, sinks = await _shared_forwarder(("s", SSRC, DEVICE))
        stranger, device = _from(STRANGER), _from(DEVICE)
        try:
            await _send(stranger, [_with_ssrc(p, 999) for p in PACKETS[:10]] + [b"\x80\x60"], port)
            await _send(stranger, PACKETS[:4], port)  # the stream's own SSRC: its wrong_source
            await _send(device, PACKETS[:6], port)
            assert _drain(sinks[0]) == [_with_ssrc(p, 5) for p in PACKETS[:6]]
            totals = forwarder.totals()
            assert (totals.unknown_source, totals.wrong_source, totals.packets_in) == (11, 4, 6)
        finally:
            stranger.close()
            device.close()
            forwarder.close_all()
            for s in sinks:
                s.close()

    async def test_a_closed_stream_leaves_nothing_and_its_packets_become_strangers(self) -> None:
        forwarder, port, sinks = await _shared_forwarder(("s", SSRC, DEVICE), ("n", 4242, DEVICE))
        device = _from(DEVICE)
        try:
            await _send(device, PACKETS[:5], port)
            sp = forwarder._shared[port]
            assert sp.demux.fast.get(SSRC) is forwarder.streams["s"]
            forwarder.close("s")
            assert SSRC not in sp.demux.fast and len(sp.demux) == 1 and sp.sock.fileno() >= 0
            await _send(device, PACKETS[5:10], port)
            # the neighbour awaits media from the same host, but the closed stream's SSRC from its
            # sender is still the closed stream's (GONE_SECONDS): not the neighbour's wrong SSRC
            assert forwarder.snapshot().streams["n"].wrong_ssrc == 0
            assert forwarder.totals().unknown_source == 5
            forwarder.close("n")
            await _send(device, PACKETS[10:13], port)
            assert len(sp.demux) == 0 and forwarder.totals().unknown_source == 8
            assert len(_drain(sinks[0])) == 5 and _drain(sinks[1]) == []
        finally:
            device.close()
            forwarder.close_all()
            for s in sinks:
                s.close()
        assert forwarder._shared == {}

    async def test_a_closed_streams_sender_never_feeds_a_stream_of_its_host_awaiting_media(self) -> None:
        # channel 1 of an NVR closes while the NVR still sends it (its BYE not yet acted on, or
        # ignored); channel 2 of the same NVR awaits its first packet. On a port of its own the
        # closed stream's packets would reach a closed port: here they must not become channel 2's
        # "own SSRC" (M1) and be followed after SSRC_LATCH_PACKETS of them
        forwarder, port, sinks = await _shared_forwarder(("a", 11, NVR), ("b", 12, NVR))
        nvr = _from(NVR)
        try:
            await _send(nvr, [_with_ssrc(p, 11) for p in PACKETS[:10]], port)
            assert len(_drain(sinks[0])) == 10
            forwarder.close("a")
            await _send(nvr, [_with_ssrc(p, 11) for p in PACKETS[10:80]], port)
            assert _drain(sinks[1]) == []
            f = forwarder.snapshot().streams["b"]
            assert f.ssrc == 12 and not f.ssrc_latched and f.wrong_ssrc == 0
            assert forwarder.totals().unknown_source == 70
            # channel 2's own packets (from another port of the NVR) still find it
            second = _from(NVR)
            try:
                await _send(second, [_with_ssrc(p, 12) for p in PACKETS[:5]], port)
            finally:
                second.close()
            assert _drain(sinks[1]) == [_with_ssrc(p, 5) for p in PACKETS[:5]]
        finally:
            nvr.close()
            forwarder.close_all()
            for s in sinks:
                s.close()

    async def test_two_devices_sending_one_wrong_ssrc_are_each_followed_as_on_ports_of_their_own(self) -> None:
        forwarder, port, sinks = await _shared_forwarder(("s", SSRC, DEVICE), ("n", 4242, NVR))
        device, nvr = _from(DEVICE), _from(NVR)
        try:
            packets = [_with_ssrc(p, 0xABCDEF) for p in PACKETS[:60]]
            await _send(device, packets, port)
            await _send(nvr, packets, port)
            want = [_with_ssrc(p, 5) for p in packets[SSRC_LATCH_PACKETS - 1 :]]
            assert _drain(sinks[0]) == want and _drain(sinks[1]) == want
            figures = forwarder.snapshot().streams
            assert figures["n"].ssrc == 0xABCDEF and figures["s"].wrong_source == 0
        finally:
            device.close()
            nvr.close()
            forwarder.close_all()
            for s in sinks:
                s.close()

    async def test_a_send_the_socket_has_no_room_for_is_taken_back_from_its_consumer(self) -> None:
        libc = mmsg.load()
        assert libc is not None
        real = libc.sendmmsg

        calls: list[int] = []

        def sendmmsg(fd: int, headers: int, count: int, flags: int) -> int:
            calls.append(count)
            if len(calls) == 2:
                return int(real(fd, headers, 1, flags))  # the second batch: one went, then the buffer was full
            if len(calls) == 3:
                ctypes.set_errno(errno.EAGAIN)
                return -1  # its second would block: dropped, as sendto's BlockingIOError
            return int(real(fd, headers, count, flags))

        forwarder = Forwarder(_settings(), batch=mmsg.Batch(mmsg.Libc(libc.recvmmsg, sendmmsg), vlen=8, slot=2 + 2048))
        port = free_even_udp_port()
        sinks = [_sink(), _sink(), _sink()]
        devices = [_from(DEVICE), _from(NVR), _from("127.0.0.4")]
        try:
            for j, (host, sink) in enumerate(zip((DEVICE, NVR, "127.0.0.4"), sinks, strict=True)):
                forwarder.open(f"s{j}", port, StreamMode.UDP, 100 + j, source=host, shared=True)
                forwarder.add_consumer(f"s{j}", "c", "udp", "127.0.0.1", sink.getsockname()[1], 5)
                devices[j].sendto(_with_ssrc(PACKETS[0], 100 + j), ("127.0.0.1", port))
            await asyncio.sleep(0.05)
            forwarder._on_shared(forwarder._shared[port])  # first packets: the slow way, latched
            for j, d in enumerate(devices):
                d.sendto(_with_ssrc(PACKETS[1], 100 + j), ("127.0.0.1", port))
            await asyncio.sleep(0.05)
            forwarder._on_shared(forwarder._shared[port])  # the fast way: 3 queued, the second dropped
            assert calls == [3, 3, 2, 1]  # one sendmmsg a batch for three streams' consumers
            assert [len(_drain(s)) for s in sinks] == [2, 1, 2]
            figures = {k: v.consumers["c"] for k, v in forwarder.snapshot().streams.items()}
            assert [(f.packets, f.dropped, f.errors) for f in figures.values()] == [(2, 0, 0), (1, 1, 0), (2, 0, 0)]
            assert figures["s1"].bytes == len(PACKETS[0])
        finally:
            forwarder.close_all()
            for x in (*sinks, *devices):
                x.close()

    async def test_a_tcp_consumer_beside_a_udp_one_leaves_the_udp_ones_ssrc_alone(self) -> None:
        # the UDP consumer's packet is queued, then the TCP one's SSRC written into the same slot
        forwarder, port, sinks = await _shared_forwarder(("s", SSRC, DEVICE))
        tcp = await TcpConsumer.start()
        device = _from(DEVICE)
        try:
            await forwarder.add_tcp_consumer("s", "t", "127.0.0.1", tcp.port, 9)
            await _send(device, PACKETS[:40], port)
            await wait_for(lambda: len(tcp.got.packets) == 40)
            assert _drain(sinks[0]) == [_with_ssrc(p, 5) for p in PACKETS[:40]]
            assert tcp.got.packets == [_with_ssrc(p, 9) for p in PACKETS[:40]]
            forwarder.close("s")
            await asyncio.wait_for(tcp.closed.wait(), 5)  # its side of the connection closed too
        finally:
            device.close()
            tcp.close()
            forwarder.close_all()
            for s in sinks:
                s.close()

    def test_a_range_too_small_for_a_shared_port_and_a_tcp_one_per_worker_is_refused(self) -> None:
        overrides = {"media.shared_port": "true", "media.workers": "2", "media.port_min": "30000"}
        with pytest.raises(ConfigError, match="shared port"):
            load_config(env={}, overrides={**overrides, "media.port_max": "30003"})
        assert load_config(env={}, overrides={**overrides, "media.port_max": "30007"}).media.shared_port
        # an odd first port: each share loses the pair its first port would start (30001-30004: 30002 only)
        odd = {**overrides, "media.port_min": "30001"}
        with pytest.raises(ConfigError, match="shared port"):
            load_config(env={}, overrides={**odd, "media.port_max": "30008"})
        config = load_config(env={}, overrides={**odd, "media.port_max": "30010"})
        pools = _split((30001, 30010), config.relay_workers, 0.0, random.Random(1), reserve=2)
        assert all(pool.capacity >= 1 for pool in pools)

    def test_each_relay_keeps_the_first_port_of_its_share_for_the_shared_one(self) -> None:
        pools = _split((30000, 30099), 2, 0.0, random.Random(1), reserve=2)
        assert [(p.first, p.last) for p in pools] == [(30002, 30049), (30052, 30099)]
        odd = _split((30001, 30099), 2, 0.0, random.Random(1), reserve=2)
        assert [p.first - 2 for p in odd] == [30002, 30050]  # even, inside each share (30001-30049, 30050-30099)


async def test_h264_in_ps_through_a_relay_worker_on_its_shared_port_to_two_viewers() -> None:
    relay = WorkerRelay(1, _settings())
    await relay.start()
    port = free_even_udp_port()
    viewers = [await UdpConsumer.start() for _ in range(3)]
    devices = [_from(DEVICE), _from(NVR)]
    try:
        await relay.open("a", port, StreamMode.UDP, 1111, source=DEVICE, shared=True)
        await relay.open("b", port, StreamMode.UDP, 2222, source=NVR, shared=True)
        await relay.add_consumer("a", "v1", "udp", "127.0.0.1", viewers[0].port, 31)
        await relay.add_consumer("a", "v2", "udp", "127.0.0.1", viewers[1].port, 32)
        await relay.add_consumer("b", "v3", "udp", "127.0.0.1", viewers[2].port, 33)
        a, b = packetize(gb_ps(30, 10), 1111), packetize(gb_ps(20, 10, (160, 120)), 2222)
        await asyncio.gather(_send(devices[0], a, port), _send(devices[1], b, port))
        await wait_for(lambda: [len(v.got.packets) for v in viewers] == [len(a), len(a), len(b)])
        assert [v.got.ssrcs for v in viewers] == [{31}, {32}, {33}]
        assert [decode_h264(v.got.payload()) for v in viewers] == [30, 30, 20]
        snap = await relay.fresh_snapshot()
        assert snap.streams["a"].port == snap.streams["b"].port == port
        assert snap.streams["a"].ps.key_frames == 3 and snap.totals.unknown_source == 0
    finally:
        for d in devices:
            d.close()
        for v in viewers:
            v.close()
        await relay.stop()


@pytest.mark.sipp
@pytest.mark.parametrize("workers", ["0", "1"], ids=["in-process", "worker-process"])
async def test_the_stream_service_offers_the_relays_shared_port_and_gives_nothing_back_to_the_pool(
    tmp_path: Path, workers: str
) -> None:
    # the device answers with an SSRC of its own (M1): the stream is found by it on the shared port
    sc = scenario(answer(ssrc=f"{DEVICE_SSRC:010d}"))
    gw, device = await gateway_with_device(tmp_path, sc, **{"media.shared_port": "true", "media.workers": workers})
    viewer = await UdpConsumer.start()
    try:
        st, consumer = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=viewer.port)
        assert st.shared and st.port == gw.streams.shared_ports[0] == media_port(0) and gw.streams.pools[0].in_use == 0
        assert st.session.ssrc == f"{DEVICE_SSRC:010d}"
        ps = gb_ps(20, 10, (160, 120))
        packets = packetize(ps, DEVICE_SSRC, mtu=400)
        await send_udp(packets, st.port)
        await wait_for(lambda: len(viewer.got.packets) == len(packets))
        assert viewer.got.ssrcs == {consumer.ssrc} and decode_h264(viewer.got.payload()) == 20
        await gw.streams.remove_consumer(st.id, consumer.id)  # the last one: linger 0, BYE
        await finished(device)
        await wait_for(lambda: not gw.streams.streams and gw.streams._shared_count == [0])
        assert gw.streams.pools[0].in_use == 0
    finally:
        viewer.close()
        await kill(device)
        await gw.stop()
