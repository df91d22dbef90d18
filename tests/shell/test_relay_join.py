"""Consumers of an open stream, over real sockets with real H.264 in PS (issue 12, item 5):
a consumer joining mid-stream decodes at once (the packets since the last key frame are sent
first), TCP-passive consumers connect to us, paused consumers wait for their start, and the
owner hears of every consumer that goes without being removed by it.

SIPp plays the device's SIP side (the scenarios of test_streams); the test sends the media.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import av
import pytest

from gb28181gw.app import Gateway
from gb28181gw.media.ps import PsDemuxer, PsInspector
from gb28181gw.media.rtp import RtpPacket
from gb28181gw.media.tcp_framing import Rfc4571Reader
from gb28181gw.services import streams as streams_module
from gb28181gw.services.streams import Consumer, Stream, StreamError
from tests.helpers import media_port
from tests.media import (
    Received,
    TcpConsumer,
    UdpConsumer,
    decode_units,
    gb_ps,
    packetize,
    packs,
    send_udp,
    wait_for,
)

from .conftest import sipp_scenario
from .test_devices import finished
from .test_streams import CH, answer, gateway_with_device, scenario

pytestmark = pytest.mark.sipp

FRAMES, GOP = 50, 10
JOIN_AT = 25  # frames the device has sent when the second consumer joins: mid-GOP (key frame 20)
#: The device ends the stream 3 s after its ACK: time for leases and pauses to run out first.
DEVICE_BYE = sipp_scenario("parts/bye_from_device.xml", ch=CH, pause=3000)
WORKERS = pytest.mark.parametrize("workers", ["0", "1"], ids=["in-process", "worker-process"])


@pytest.fixture(scope="module")
def ps() -> bytes:
    return gb_ps(FRAMES, GOP)


class Gone:
    """What the consumer-gone listener heard."""

    def __init__(self, gw: Gateway) -> None:
        self.calls: list[tuple[str, str, str]] = []
        gw.streams.on_consumer_gone(self)

    def __call__(self, stream_id: str, consumer: Consumer, reason: str) -> None:
        self.calls.append((stream_id, consumer.id, reason))


async def gateway(
    tmp_path: Path, *, tail: str | None = None, **overrides: str
) -> tuple[Gateway, asyncio.subprocess.Process]:
    """A gateway with the SIPp device of test_streams registered, on a port range of its own."""
    sc = scenario(answer()) if tail is None else scenario(answer(), tail=tail)
    return await gateway_with_device(
        tmp_path, sc, **{"media.port_min": str(media_port(100)), "media.port_max": str(media_port(199)), **overrides}
    )


def figure(gw: Gateway, st: Stream, name: str) -> object:
    """One of the stream's relay figures (a worker's arrive every ``media.stats_interval``)."""
    return getattr(gw.streams.relays[0].snapshot().streams.get(st.id), name, None)


def in_order(got: Received) -> list[RtpPacket]:
    return [RtpPacket.parse(p) for p in got.packets]


def clean_decode(payload: bytes) -> tuple[bool, int, int]:
    """(first frame is a key frame, access units, pictures av decodes; -1 if av reports an error):
    a clean start decodes every unit."""
    demuxer = PsDemuxer()
    frames = demuxer.feed(payload) + demuxer.flush()
    try:
        pictures = decode_units([f.data for f in frames])
    except av.error.FFmpegError:
        pictures = -1
    return bool(frames) and frames[0].key, len(frames), pictures


class PassiveClient:
    """A consumer that connects to the gateway's TCP-passive port (from ``source``) and reads RFC 4571."""

    def __init__(self) -> None:
        self.got = Received()
        self.reader = Rfc4571Reader()
        self.closed = asyncio.Event()
        self.sock: socket.socket | None = None
        self.task: asyncio.Task[None] | None = None

    async def connect(self, port: int, source: str = "127.0.0.1") -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock = sock
        sock.bind((source, 0))
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        self.task = loop.create_task(self._read())

    async def _read(self) -> None:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(self.sock, 65536):
                self.got.packets += self.reader.feed(data)
        except OSError:
            pass
        self.closed.set()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.sock is not None:
            self.sock.close()


async def feed(st: Stream, packets: list[bytes], sock: socket.socket) -> None:
    await send_udp(packets, st.port, sock=sock)


def split(ps: bytes, ssrc: int) -> tuple[list[bytes], list[bytes], bytes]:
    """The device's packets before and after the join, and the PS from the last key frame on."""
    all_packs = packs(ps)
    before = packetize(b"".join(all_packs[:JOIN_AT]), ssrc, mtu=600)
    after = packetize(b"".join(all_packs[JOIN_AT:]), ssrc, mtu=600, seq=1000 + len(before))
    # the second half's timestamps go on from the first's (packetize numbers packs from 0)
    after = [p[:4] + struct.pack("!I", RtpPacket.parse(p).timestamp + 3600 * JOIN_AT) + p[8:] for p in after]
    last_key = JOIN_AT // GOP * GOP
    return before, after, b"".join(all_packs[last_key:])


def assert_continuous(packets: list[RtpPacket], ssrc: int) -> None:
    seqs = [p.sequence for p in packets]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "sequence numbers skip or repeat at the join"
    assert {p.ssrc for p in packets} == {ssrc}


async def rest_arrives_after_the_key_frame(
    st: Stream, after: list[bytes], device_media: socket.socket, expected: bytes, *pairs: tuple[Received, int]
) -> None:
    """Feed the rest of the stream; each (what a consumer got, its SSRC) must be the device's
    packets from the last key frame before it joined on: continuous, none twice, none missing."""
    await feed(st, after, device_media)
    await wait_for(lambda: all(got.payload() == expected for got, _ in pairs))
    for got, ssrc in pairs:
        assert_continuous(in_order(got), ssrc)


async def cleanup(gw: Gateway, device: asyncio.subprocess.Process, *closables: object) -> None:
    """Close the test's sockets and consumers, stop the gateway (BYE) and check SIPp saw it all."""
    for c in closables:
        c.close()  # type: ignore[attr-defined]
    await gw.stop()
    await finished(device)


@WORKERS
@pytest.mark.parametrize("transport", ["udp", "tcp-passive"])
@pytest.mark.parametrize("cache", ["on", "off"])
async def test_consumer_joining_mid_stream_decodes_at_once(
    tmp_path: Path, ps: bytes, workers: str, transport: str, cache: str
) -> None:
    # cache "off" (media.gop_cache = 0) is the proof that the check below fails without the cache
    overrides = {"media.workers": workers, "media.keyframe_request": "false"}
    if cache == "off":
        overrides["media.gop_cache"] = "0"
    gw, device = await gateway(tmp_path, **overrides)
    first = await UdpConsumer.start()
    second: UdpConsumer | PassiveClient
    device_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        st, a = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=first.port)
        assert a.local_port == st.port  # UDP consumers are sent to from the stream's own port
        ssrc = int(st.session.ssrc)
        before, after, expected = split(ps, ssrc)
        await feed(st, before, device_media)
        await wait_for(lambda: len(first.got.packets) == len(before))
        loop = asyncio.get_running_loop()
        joined = loop.time()
        if transport == "udp":
            second = await UdpConsumer.start()
            _, b = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=second.port)
        else:
            second = PassiveClient()
            _, b = await gw.streams.play(CH, transport="tcp-passive", host="127.0.0.1", port=0)
            assert b.local_port and b.local_port != st.port
            await second.connect(b.local_port)
        if cache == "on":
            # a picture within a second of joining, before the device sends anything more
            await wait_for(lambda: len(second.got.packets) > 0, 1.0)
            assert loop.time() - joined < 1.0
            first_payload = RtpPacket.parse(second.got.packets[0]).payload
            assert PsInspector().frame_start(first_payload, 0, len(first_payload))  # a key frame's first packet
        await feed(st, after, device_media)
        await wait_for(lambda: len(first.got.packets) == len(before) + len(after))
        await asyncio.sleep(0.1)  # a packet too many would arrive now
        got = in_order(second.got)
        key, units, pictures = clean_decode(second.got.payload())
        if cache == "on":
            assert_continuous(got, b.ssrc)
            assert second.got.payload() == expected  # from the last key frame on, byte for byte
            assert key and units == FRAMES - JOIN_AT // GOP * GOP and pictures == units
        else:
            assert not key and pictures < FRAMES - JOIN_AT  # joined mid-GOP: undecodable until the next key frame
        # the first consumer saw the device's stream untouched
        assert first.got.payload() == ps
    finally:
        await cleanup(gw, device, device_media, first, second)


@WORKERS
async def test_keyframe_cache_joins_over_tcp_active_too(tmp_path: Path, ps: bytes, workers: str) -> None:
    gw, device = await gateway(tmp_path, **{"media.workers": workers})
    first, second = await UdpConsumer.start(), await TcpConsumer.start()
    device_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        st, _ = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=first.port)
        before, after, expected = split(ps, int(st.session.ssrc))
        await feed(st, before, device_media)
        await wait_for(lambda: len(first.got.packets) == len(before))
        _, b = await gw.streams.play(CH, transport="tcp", host="127.0.0.1", port=second.port)
        assert b.local_port == 0
        await rest_arrives_after_the_key_frame(st, after, device_media, expected, (second.got, b.ssrc))
    finally:
        await cleanup(gw, device, device_media, first, second)


@WORKERS
async def test_tcp_passive_consumer_refuses_strangers_and_takes_one_connection(
    tmp_path: Path, ps: bytes, workers: str
) -> None:
    gw, device = await gateway(tmp_path, **{"media.workers": workers})
    gone = Gone(gw)
    client, stranger, late = PassiveClient(), PassiveClient(), PassiveClient()
    device_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        st, c = await gw.streams.play(CH, transport="tcp-passive", host="127.0.0.1", port=0)
        assert c.transport == "tcp-passive" and c.local_port
        assert gw.streams.pools[0].in_use == 2  # the stream's port and the consumer's
        await stranger.connect(c.local_port, source="127.0.0.2")  # another host: closed at once
        await asyncio.wait_for(stranger.closed.wait(), 3)
        await client.connect(c.local_port)
        packets = packetize(ps, int(st.session.ssrc), mtu=1400)
        await feed(st, packets, device_media)
        await wait_for(lambda: len(client.got.packets) == len(packets))
        assert client.got.payload() == ps  # byte for byte: it decodes as the device's stream does
        assert client.got.ssrcs == {c.ssrc} and not stranger.got.packets
        with pytest.raises(ConnectionRefusedError):  # one connection per consumer: the port is closed
            await late.connect(c.local_port)
        await wait_for(lambda: figure(gw, st, "refused_connections") == 1, 3)
        client.close()  # the consumer's connection lost: dropped, the owner told, the port given back
        await wait_for(lambda: gone.calls != [])
        assert gone.calls[0][:2] == (st.id, c.id) and "closed the connection" in gone.calls[0][2]
        await finished(device)  # the last consumer left: BYE (linger 0)
        await wait_for(lambda: gw.streams.pools[0].in_use == 0)
    finally:
        device_media.close()
        for x in (client, stranger, late):
            x.close()
        await gw.stop()


@WORKERS
async def test_tcp_passive_consumer_connects_from_a_host_allowed_with_it_and_no_third(
    tmp_path: Path, ps: bytes, workers: str
) -> None:
    # a superior behind NAT: its c= (127.0.0.2) is not where its connection comes from (127.0.0.3)
    gw, device = await gateway(tmp_path, **{"media.workers": workers})
    client, stranger = PassiveClient(), PassiveClient()
    device_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(StreamError) as not_passive:
            await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=9, also_from=("127.0.0.3",))
        assert not_passive.value.status == 400
        st, c = await gw.streams.play(
            CH, transport="tcp-passive", host="127.0.0.2", port=0, also_from=("127.0.0.3",), paused=True
        )
        assert c.host == "127.0.0.2" and c.also_from == ("127.0.0.3",)
        await stranger.connect(c.local_port, source="127.0.0.4")  # a third host: closed at once
        await asyncio.wait_for(stranger.closed.wait(), 3)
        await client.connect(c.local_port, source="127.0.0.3")
        await gw.streams.start_consumer(st.id, c.id)
        packets = packetize(ps, int(st.session.ssrc), mtu=1400)
        await feed(st, packets, device_media)
        await wait_for(lambda: len(client.got.packets) == len(packets))
        assert client.got.payload() == ps and not stranger.got.packets
        await wait_for(lambda: figure(gw, st, "refused_connections") == 1, 3)
    finally:
        await cleanup(gw, device, device_media, client, stranger)


@WORKERS
async def test_passive_consumer_that_never_connects_is_dropped_and_its_port_freed(tmp_path: Path, workers: str) -> None:
    gw, device = await gateway(tmp_path, **{"media.workers": workers, "media.consumer_connect_timeout": "0.5"})
    gone = Gone(gw)
    udp = await UdpConsumer.start()
    try:
        st, keep = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        _, c = await gw.streams.play(CH, transport="tcp-passive", host="127.0.0.1", port=0)
        assert gw.streams.pools[0].in_use == 2
        await wait_for(lambda: gone.calls != [], 3)
        assert gone.calls == [(st.id, c.id, "the consumer did not connect within 0.5 s")]
        assert set(st.consumers) == {keep.id}
        await wait_for(lambda: gw.streams.pools[0].in_use == 1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # SO_REUSEADDR: an earlier test's connection on this port may be in TIME_WAIT; a listener still refuses it
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", c.local_port))  # nobody listens there any more (in whichever process)
        await gw.streams.remove_consumer(st.id, keep.id)
        await finished(device)
        assert gone.calls == [(st.id, c.id, "the consumer did not connect within 0.5 s")]  # removal is not "gone"
    finally:
        udp.close()
        await gw.stop()


@WORKERS
async def test_paused_consumers_get_nothing_until_started(tmp_path: Path, ps: bytes, workers: str) -> None:
    gw, device = await gateway(tmp_path, **{"media.workers": workers})
    udp, passive, active = await UdpConsumer.start(), PassiveClient(), await TcpConsumer.start()
    device_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        st, a = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port, paused=True)
        _, b = await gw.streams.play(CH, transport="tcp-passive", host="127.0.0.1", port=0, paused=True)
        _, c = await gw.streams.play(CH, transport="tcp", host="127.0.0.1", port=active.port, paused=True)
        assert a.paused and b.paused and c.paused
        await passive.connect(b.local_port)  # connected before the ACK: still sent nothing
        before, after, expected = split(ps, int(st.session.ssrc))
        await feed(st, before, device_media)
        await wait_for(lambda: figure(gw, st, "packets") == len(before), 3)
        await asyncio.sleep(0.2)
        assert not udp.got.packets and not passive.got.packets
        assert not active.connected.is_set()  # TCP active: not even connected before the start
        for consumer in (a, b, c, b):  # twice: no harm
            await gw.streams.start_consumer(st.id, consumer.id)
        assert not a.paused and not b.paused and not c.paused
        await asyncio.wait_for(active.connected.wait(), 3)  # (its accept may run after our start returns)
        with pytest.raises(StreamError) as missing:
            await gw.streams.start_consumer(st.id, "c99")
        assert missing.value.status == 404
        # started mid-GOP: all begin at the last key frame and decode
        pairs = ((udp.got, a.ssrc), (passive.got, b.ssrc), (active.got, c.ssrc))
        await rest_arrives_after_the_key_frame(st, after, device_media, expected, *pairs)
    finally:
        await cleanup(gw, device, device_media, udp, passive, active)


@WORKERS
async def test_consumer_gone_on_every_path(tmp_path: Path, workers: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams_module, "PAUSED_TIMEOUT", 0.5)
    # health checks every 0.2 s, so the lease and the pause run out well before the device's BYE
    gw, device = await gateway(tmp_path, tail=DEVICE_BYE, **{"media.workers": workers, "media.stats_interval": "0.2"})
    gone = Gone(gw)
    udp = await UdpConsumer.start()
    try:
        st, removed = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        _, leased = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port, ttl=0.3)
        _, paused = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port, paused=True)
        _, kept = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        await gw.streams.remove_consumer(st.id, removed.id)  # the owner's own removal: not told
        await wait_for(lambda: len(gone.calls) == 2, 3)
        assert sorted(gone.calls) == sorted(
            [(st.id, leased.id, "its lease ran out"), (st.id, paused.id, "not started within 0.5 s")]
        )
        await finished(device)  # the device's BYE (3 s in) closes the stream: the last consumer goes
        await wait_for(lambda: len(gone.calls) == 3)
        assert gone.calls[2] == (st.id, kept.id, "the device ended the stream (BYE)")
    finally:
        udp.close()
        await gw.stop()


@WORKERS
async def test_shutdown_tells_every_consumer_and_keyframes_are_asked_for(
    tmp_path: Path, ps: bytes, workers: str
) -> None:
    # nothing cached (gop_cache 0): consumers joining a stream with media make us ask the device
    # for a key frame, once per KEYFRAME_REQUEST_INTERVAL however many join
    gw, device = await gateway(tmp_path, **{"media.workers": workers, "media.gop_cache": "0"})
    gone = Gone(gw)
    asked: list[tuple[str, str, object]] = []

    async def command(target: str, name: str, value: object, *, wait: bool) -> dict[str, str]:
        asked.append((target, name, value))
        return {}

    gw.devices.command = command  # type: ignore[method-assign]
    udp = await UdpConsumer.start()
    device_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stopped = False
    try:
        st, first = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        assert not asked  # the stream had no media yet: its first frame is a key frame
        await feed(st, packetize(ps, int(st.session.ssrc))[:30], device_media)
        await wait_for(lambda: len(udp.got.packets) == 30)
        _, second = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        _, third = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        _, fourth = await gw.streams.play(CH, transport="tcp-passive", host="127.0.0.1", port=0, paused=True)
        await gw.streams.start_consumer(st.id, fourth.id)  # joins once connected: not here
        await wait_for(lambda: asked != [])
        await asyncio.sleep(0.2)
        assert asked == [(CH, "IFameCmd", "Send")]  # one request for two joins within the interval
        stopped = True
        await gw.stop()
        assert sorted(c for _, c, _ in gone.calls) == sorted([first.id, second.id, third.id, fourth.id])
        assert {r for _, _, r in gone.calls} == {"gateway shutting down"}
        await finished(device)
    finally:
        device_media.close()
        udp.close()
        if not stopped:
            await gw.stop()
