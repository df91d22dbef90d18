"""Review of issue 12 item 5 (the relay's side of joining consumers): cases from real devices
and networks that the packets kept since the last key frame, TCP and paused consumers must survive."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest

from gb28181gw.media.ps import PsInspector
from gb28181gw.media.rtp import RtpPacket
from gb28181gw.relay.forwarder import CatchingUp, Forwarder, RelaySettings, RelayStream, TcpOut
from gb28181gw.sdp import StreamMode
from gb28181gw.services.streams import StreamError
from tests.helpers import media_port
from tests.media import TcpConsumer, UdpConsumer, gb_ps, packs, wait_for

from .test_devices import finished, free_even_udp_port
from .test_relay_join import CH, gateway

PACK_HEADER = b"\x00\x00\x01\xba\x44\x00\x04\x00\x04\x01\x01\x89\xc3\xf8"


def _rtp(payloads: list[bytes], ts: int, seq: int, ssrc: int = 1234) -> list[bytes]:
    return [
        RtpPacket(96, (seq + k) & 0xFFFF, ts, ssrc, k == len(payloads) - 1, p).serialize()
        for k, p in enumerate(payloads)
    ]


def _feed(forwarder: Forwarder, st: RelayStream, packets: list[bytes]) -> None:
    for p in packets:
        st.buf[2 : 2 + len(p)] = p
        forwarder._relay(st, st.buf, st.view, 2, len(p), ("127.0.0.1", 9), 1.0)


def _stream(gop_cache: int = 1 << 22, tcp_queue: int = 65536) -> tuple[Forwarder, RelayStream]:
    forwarder = Forwarder(RelaySettings("127.0.0.1", tcp_queue, 1 << 20, 1.0, gop_cache))
    st = RelayStream("s1", 0, StreamMode.UDP, 1234, 0.0, "127.0.0.1")
    return forwarder, st


AUDIO_PACK = PACK_HEADER + b"\x00\x00\x01\xc0\x00\x48\x80\x80\x05\x21\x00\x01\x00\x01" + b"\xd5" * 64


@pytest.mark.parametrize("device", ["psm-alone", "pack-header-split", "audio-first", "same-timestamp"])
def test_key_frames_the_first_packet_of_a_timestamp_does_not_show_are_kept(device: str) -> None:
    # psm-alone: the pack header, system header and PSM of an I frame in one small RTP packet, the
    # video PES (SPS, PPS, IDR) in the next (a device that cuts RTP at PES boundaries);
    # pack-header-split: the first RTP packet of each frame is 10 bytes;
    # audio-first: an audio pack with the video frame's timestamp sent just before it (audio and
    # video PTS coincide at 40 ms audio frames and 25 fps);
    # same-timestamp: a device whose key frames have the timestamp of the frame before (§8.1: 2022
    # had to say that frames have different timestamps); the cache then grows to its bound and
    # holds nothing from then on. M=1 ends every frame.
    packets: list[bytes] = []
    key_at = 0
    for i, pack in enumerate(packs(gb_ps(30, 10))):
        ts = 3600 * (i - 1 if device == "same-timestamp" and i % 10 == 0 and i else i)
        if device == "psm-alone" and pack.find(b"\x00\x00\x01\xbc") > 0:
            video = pack.find(b"\x00\x00\x01\xe0")
            pieces = [pack[:video]] + [pack[j : j + 1000] for j in range(video, len(pack), 1000)]
        elif device == "pack-header-split":
            pieces = [pack[:10]] + [pack[j : j + 1000] for j in range(10, len(pack), 1000)]
        else:
            pieces = [pack[j : j + 1000] for j in range(0, len(pack), 1000)]
        if device == "audio-first":
            packets += _rtp([AUDIO_PACK], ts, 1000 + len(packets))
        if i == 20:
            key_at = len(packets)
        packets += _rtp(pieces, ts, 1000 + len(packets))
    forwarder, st = _stream()
    _feed(forwarder, st, packets)
    assert st.gop is not None and st.gop[0] == packets[key_at]  # from the last I frame's pack header on


def test_h265_key_frames_are_found_without_a_psm() -> None:
    # a device that sends no PSM (the demuxer guesses the codec from the NAL units; the inspector does not)
    nals = b"".join(b"\x00\x00\x00\x01" + bytes([t << 1, 1]) + b"\xaa" * 20 for t in (32, 33, 34, 19))
    header = bytes([0x80, 0x80, 5, 0x21, 0x00, 0x01, 0x00, 0x01])
    pes = b"\x00\x00\x01\xe0" + struct.pack("!H", len(header) + len(nals)) + header + nals
    pack = PACK_HEADER + pes
    inspector = PsInspector()
    assert inspector.frame_start(pack, 0, len(pack))
    # its pictures that are not key frames (TRAIL_R) are not taken for one
    trail = b"\x00\x00\x00\x01\x02\x01" + b"\xaa" * 20
    p_pes = b"\x00\x00\x01\xe0" + struct.pack("!H", len(header) + len(trail)) + header + trail
    assert not inspector.frame_start(PACK_HEADER + p_pes, 0, len(PACK_HEADER + p_pes))


@pytest.mark.parametrize("code", [0xBD, 0xBE], ids=["private-data", "padding"])
def test_key_frame_with_private_data_or_padding_before_its_video_is_found(code: int) -> None:
    # Hikvision puts private data in 0xBD PES (PROTOCOL §8.3); a padding PES (0xBE) is plain ISO 13818-1
    pack = packs(gb_ps(1, 1))[0]
    video = pack.find(b"\x00\x00\x01\xe0")
    other = b"\x00\x00\x01" + bytes([code]) + struct.pack("!H", 16) + b"\x80\x00\x00" + b"\xff" * 13
    pack = pack[:video] + other + pack[video:]
    inspector = PsInspector()
    assert inspector.frame_start(pack, 0, min(len(pack), 1400))
    assert inspector.stats.frames == 1 and inspector.stats.key_frames == 1
    # a pack that opens with audio is still no video frame
    audio = AUDIO_PACK
    assert not inspector.frame_start(audio, 0, len(audio)) and inspector.stats.frames == 1


def _with_es_prefix(pack: bytes, prefix: bytes) -> bytes:
    """``pack`` with ``prefix`` put before its video PES's elementary stream (PES length fixed)."""
    pes = pack.find(b"\x00\x00\x01\xe0")
    length = struct.unpack_from("!H", pack, pes + 4)[0]
    es = pes + 9 + pack[pes + 8]
    return pack[: pes + 4] + struct.pack("!H", length + len(prefix)) + pack[pes + 6 : es] + prefix + pack[es:]


def test_sps_and_pps_before_every_frame_do_not_make_every_frame_a_key_frame() -> None:
    # encoders that repeat SPS+PPS before every picture (§8.5 asks for them before every I frame,
    # not only there): the cache must start at the IDR, else a joining decoder starts on a P frame
    all_packs = packs(gb_ps(30, 10))
    key_es = all_packs[0][all_packs[0].find(b"\x00\x00\x01\xe0") :]
    # x264's key frames: SPS, PPS, SEI, IDR; its other frames: slices only
    headers = key_es[key_es.find(b"\x00\x00\x01\x67") : key_es.find(b"\x00\x00\x01\x06")]
    assert b"\x00\x00\x01\x68" in headers
    stream = [pack if i % 10 == 0 else _with_es_prefix(pack, headers) for i, pack in enumerate(all_packs)]
    packets: list[bytes] = []
    key_at = 0
    for i, pack in enumerate(stream[:25]):
        if i == 20:
            key_at = len(packets)
        packets += _rtp([pack[j : j + 1000] for j in range(0, len(pack), 1000)], 3600 * i, 1000 + len(packets))
    forwarder, st = _stream()
    _feed(forwarder, st, packets)
    assert st.gop is not None and st.gop[0] == packets[key_at]  # frame 20, the last IDR
    assert st.inspector.stats.key_frames == 3


async def test_paused_tcp_consumer_removed_while_its_start_connects_is_not_left_in_the_relay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, device = await gateway(tmp_path, **{"media.workers": "0"})
    udp, active = await UdpConsumer.start(), await TcpConsumer.start()
    gate, connecting = asyncio.Event(), asyncio.Event()
    original = Forwarder.add_tcp_consumer

    async def slow_connect(self: Forwarder, *args: object, **kwargs: object) -> None:
        connecting.set()
        await gate.wait()  # a superior slow to take the connection
        await original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Forwarder, "add_tcp_consumer", slow_connect)
    try:
        st, _ = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        _, c = await gw.streams.play(CH, transport="tcp", host="127.0.0.1", port=active.port, paused=True)
        start = asyncio.get_running_loop().create_task(gw.streams.start_consumer(st.id, c.id))
        await connecting.wait()
        await gw.streams.remove_consumer(st.id, c.id)  # the superior's BYE right after its ACK
        await asyncio.sleep(0.05)
        gate.set()
        with pytest.raises(StreamError) as removed:
            await start
        assert removed.value.status == 404
        await wait_for(lambda: active.connected.is_set(), 3)
        await asyncio.sleep(0.05)
        assert c.id not in gw.streams.relays[0].snapshot().streams[st.id].consumers
    finally:
        udp.close()
        active.close()
        await gw.stop()
        await finished(device)


async def test_tcp_consumer_queue_bound_comes_back_after_the_burst() -> None:
    # The queue bound is raised by the kept packets for the join's burst; a consumer that later
    # stalls must not be allowed that much more than media.tcp_queue for the rest of its life.
    loop = asyncio.get_running_loop()
    forwarder, st = _stream(tcp_queue=65536)
    gop = [
        RtpPacket(96, k, 0, 1234, False, (PACK_HEADER if k == 0 else b"") + b"\x11" * 1300).serialize()
        for k in range(400)
    ]
    st.gop, st.gop_bytes = list(gop), sum(map(len, gop))
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    out = TcpOut("c1", 77, ("127.0.0.1", 1), ours, loop, 65536, lambda c, r: None)
    try:
        forwarder._join(st, out)
        want = sum(len(p) + 2 for p in gop)
        got = 0
        while got < want:  # the consumer reads the burst, then stalls
            try:
                got += len(theirs.recv(65536))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        await wait_for(lambda: not out.pending, 2)
        live = [RtpPacket(96, 400 + k, 3600, 1234, False, b"\x22" * 1300).serialize() for k in range(2000)]
        peak = 0
        for p in live:
            _feed(forwarder, st, [p])
            peak = max(peak, len(out.pending))
        assert peak <= 65536, f"{peak} bytes queued for a stalled consumer with media.tcp_queue 65536"
    finally:
        out.close()
        theirs.close()


async def test_udp_consumer_joining_a_large_gop_gets_all_of_it() -> None:
    # 1,000 packets of 1,400 bytes kept (a 4 Mbit/s camera, key frame every 3 s) go out in one
    # loop turn: a receiver with the kernel's default buffer (212 KB) keeps 92 of them, the
    # relay counts all 1,000 as sent. On a real link the socket's send buffer fills instead
    # (EAGAIN: dropped), at memory speed, far above the link's rate.
    forwarder, _ = _stream()
    port = free_even_udp_port()
    forwarder.open("s1", port, StreamMode.UDP, 1234)
    st = forwarder.streams["s1"]
    payload = PACK_HEADER + b"\x00\x00\x01\xbc\x00\x0e\xe0\xff\x00\x00\x00\x04\x1b\xe0\x00\x00\x00\x00\x00\x00"
    key = payload + b"\x00\x00\x01\xe0\x05\x00\x80\x80\x05\x21\x00\x01\x00\x01\x00\x00\x00\x01\x67" + b"\x01" * 1200
    packets = _rtp([key] + [b"\x33" * 1388] * 999, 0, 1)
    _feed(forwarder, st, packets)
    assert st.gop is not None and len(st.gop) == 1000
    consumer = await UdpConsumer.start()
    try:
        forwarder.add_consumer("s1", "late", "udp", "127.0.0.1", consumer.port, 77)
        await wait_for(lambda: len(consumer.got.packets) == 1000, 2)
    finally:
        consumer.close()
        forwarder.close_all()


async def test_the_api_tells_a_tcp_passive_consumer_its_port(tmp_path: Path) -> None:
    # POST /api/v1/streams passes any transport to play(), tcp-passive included; the answer is
    # built by stream_json, whose consumers carry no local port: the consumer cannot connect
    from gb28181gw.admin.streams import stream_json

    gw, device = await gateway(tmp_path, **{"media.workers": "0"})
    try:
        st, c = await gw.streams.play(CH, transport="tcp-passive", host="127.0.0.1", port=40000)
        entry = next(x for x in stream_json(gw.streams, st)["consumers"] if x["id"] == c.id)
        assert c.local_port and c.local_port in entry.values()
    finally:
        await gw.stop()
        await finished(device)


async def test_a_tcp_passive_consumer_asked_over_the_api_is_told_its_port_and_listed_with_it(tmp_path: Path) -> None:
    import aiohttp

    from .test_cli_streams import cli, output

    gw, device = await gateway(tmp_path, **{"media.workers": "0"})
    assert gw.admin is not None
    api = f"http://127.0.0.1:{gw.admin.port}/api/v1/streams"
    try:
        async with aiohttp.ClientSession() as http:
            # no port: it connects to ours
            body = {"channel_id": CH, "consumer": {"transport": "tcp-passive", "host": "127.0.0.1"}}
            async with http.post(api, json=body) as resp:
                assert resp.status == 201, await resp.text()
                answer = await resp.json()
            consumer = answer["consumer"]
            assert consumer["transport"] == "tcp-passive" and consumer["paused"] is False
            assert (
                media_port(100) <= consumer["local_port"] <= media_port(199)
                and consumer["local_port"] != answer["port"]
            )
            # the others still need a port, and the usage names tcp-passive; 0 is no port for it either
            body = {"channel_id": CH, "consumer": {"transport": "udp", "host": "127.0.0.1"}}
            async with http.post(api, json=body) as resp:
                assert resp.status == 400 and "tcp-passive" in (await resp.json())["error"]
            body = {"channel_id": CH, "consumer": {"transport": "tcp-passive", "host": "127.0.0.1", "port": 0}}
            async with http.post(api, json=body) as resp:
                assert resp.status == 201
        # the port named is the one listening for it
        _, writer = await asyncio.open_connection("127.0.0.1", consumer["local_port"])
        listing = await output(await cli(gw, "streams"))
        assert f"tcp-passive 127.0.0.1 connects to port {consumer['local_port']}" in listing
        writer.close()
    finally:
        await gw.stop()
        await finished(device)


def test_the_stream_listing_shows_where_each_consumer_is() -> None:
    from gb28181gw.cli.media import _consumers_text

    row = {
        "consumers": [
            {"id": "c1", "transport": "udp", "address": "10.0.0.5:4000", "local_port": 42100, "paused": False},
            {"id": "c2", "transport": "tcp-passive", "address": "10.0.0.6:9", "local_port": 42102, "paused": True},
            {"id": "c3", "transport": "tcp-passive", "address": "10.0.0.7:9"},  # an older gateway: no port said
        ]
    }
    assert _consumers_text(row) == (
        "c1 udp 10.0.0.5:4000, c2 tcp-passive 10.0.0.6 connects to port 42102 (paused), c3 tcp-passive 10.0.0.7"
    )
    assert _consumers_text({"consumers": []}) == "-"


def _key_gop(count: int, ts: int = 0, seq: int = 1) -> list[bytes]:
    key = (
        PACK_HEADER
        + b"\x00\x00\x01\xbc\x00\x0e\xe0\xff\x00\x00\x00\x04\x1b\xe0\x00\x00\x00\x00\x00\x00"
        + b"\x00\x00\x01\xe0\x05\x00\x80\x80\x05\x21\x00\x01\x00\x01\x00\x00\x00\x01\x67"
        + b"\x01" * 1200
    )
    return _rtp([key] + [b"\x33" * 1388] * (count - 1), ts, seq)


async def _joining(kept: list[bytes]) -> tuple[Forwarder, RelayStream, UdpConsumer, CatchingUp]:
    """A stream that has relayed ``kept`` (a key frame first), and a UDP consumer joining it late."""
    forwarder, _ = _stream()
    forwarder.open("s1", free_even_udp_port(), StreamMode.UDP, 1234)
    st = forwarder.streams["s1"]
    _feed(forwarder, st, kept)
    consumer = await UdpConsumer.start()
    forwarder.add_consumer("s1", "late", "udp", "127.0.0.1", consumer.port, 77)
    catching = st.consumers[0]
    assert isinstance(catching, CatchingUp)
    return forwarder, st, consumer, catching


async def test_a_joining_udp_consumer_is_paced_then_sent_to_directly_in_order() -> None:
    from gb28181gw.relay import forwarder as forwarder_module

    kept = _key_gop(600)
    forwarder, st, consumer, catching = await _joining(kept)
    try:
        # the first tick: a share of the kept packets (they go in 0.5 s at most), not all of them
        first = catching.packets
        assert 0 < first <= len(kept) * forwarder_module.CATCH_UP_TICK / forwarder_module.CATCH_UP_SECONDS + 1
        assert forwarder.snapshot().streams["s1"].consumers["late"].packets == first  # counted as its own
        live = _rtp([b"\x44" * 1388] * 50, 3600, 1 + len(kept))
        for p in live:  # the device goes on meanwhile
            _feed(forwarder, st, [p])
            await asyncio.sleep(0.002)
        await wait_for(lambda: len(consumer.got.packets) == len(kept) + len(live), 3)
        assert st.consumers[0] is not catching  # caught up: sent to directly
        got = [RtpPacket.parse(p) for p in consumer.got.packets]
        assert [p.sequence for p in got] == [RtpPacket.parse(p).sequence for p in kept + live]  # in order, once each
        assert {p.ssrc for p in got} == {77}
        after = _rtp([b"\x55" * 100], 7200, 1 + len(kept) + len(live))
        _feed(forwarder, st, after)
        await wait_for(lambda: len(consumer.got.packets) == len(kept) + len(live) + 1, 2)
    finally:
        consumer.close()
        forwarder.close_all()


async def test_a_consumer_joining_a_stream_faster_than_its_first_pace_still_catches_up() -> None:
    # a download at 4x joined in its first second: no rate known yet and a few packets kept, so the
    # first pace is the floor (2 Mbit/s); the device sends ~6 Mbit/s. Paced at the floor for good,
    # the backlog would grow as long as the stream lasts and its tail be lost when it closes.
    from gb28181gw.relay import forwarder as forwarder_module

    kept = _key_gop(4)
    forwarder, st, consumer, catching = await _joining(kept)
    try:
        assert catching.rate == forwarder_module.CATCH_UP_MIN_RATE
        live = _rtp([b"\x44" * 1388] * 400, 3600, 1 + len(kept))
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(0, len(live), 4):  # 4 packets every 5 ms: ~1.1 MB/s, more than 4x the floor
            _feed(forwarder, st, live[k : k + 4])
            await asyncio.sleep(max(0.0, start + (k + 4) / 800 - loop.time()))
        # caught up while the device was still sending, or just after: not 2 s of backlog behind it
        await wait_for(lambda: len(consumer.got.packets) == len(kept) + len(live), 0.3)
        assert st.consumers[0] is not catching
        got = [RtpPacket.parse(p).sequence for p in consumer.got.packets]
        assert got == [RtpPacket.parse(p).sequence for p in kept + live]  # in order, once each
    finally:
        consumer.close()
        forwarder.close_all()


async def test_a_udp_consumer_that_leaves_while_catching_up_is_sent_nothing_more() -> None:
    forwarder, _ = _stream()
    port = free_even_udp_port()
    forwarder.open("s1", port, StreamMode.UDP, 1234)
    st = forwarder.streams["s1"]
    _feed(forwarder, st, _key_gop(1000))
    consumer = await UdpConsumer.start()
    try:
        forwarder.add_consumer("s1", "late", "udp", "127.0.0.1", consumer.port, 77)
        catching = st.consumers[0]
        forwarder.remove_consumer("s1", "late")
        assert not st.consumers and catching.timer is None  # type: ignore[union-attr]
        sent = forwarder.totals().packets_out
        await asyncio.sleep(0.1)
        assert forwarder.totals().packets_out == sent < 1000  # its figures stay in the totals, none added
        # a stream closed under a consumer catching up
        forwarder.add_consumer("s1", "again", "udp", "127.0.0.1", consumer.port, 77)
        forwarder.close("s1")
        await asyncio.sleep(0.05)
    finally:
        consumer.close()
        forwarder.close_all()


def _gop_frames(frames: int, ts: int = 0, seq: int = 1) -> list[bytes]:
    """A key frame then ``frames - 1`` others, 10 packets of ≈ 1,400 bytes each."""
    out = _key_gop(10, ts, seq)
    for i in range(1, frames):
        out += _rtp([b"\x33" * 1388] * 10, ts + 3600 * i, seq + len(out))
    return out


def test_the_relay_keeps_its_streams_caches_within_its_total_budget() -> None:
    # media.gop_cache_total: past it (checked once a frame) the largest cache goes; that stream
    # keeps nothing until its next key frame, counted in the relay's totals
    forwarder = Forwarder(RelaySettings("127.0.0.1", 65536, 1 << 20, 1.0, 1 << 22, 1_000_000))
    streams = [RelayStream(f"s{i}", 0, StreamMode.UDP, 1234, 0.0, "127.0.0.1") for i in range(3)]
    for st in streams:
        forwarder.streams[st.id] = st
    _feed(forwarder, streams[0], _gop_frames(40))  # ≈ 560 KB
    _feed(forwarder, streams[1], _gop_frames(20))  # ≈ 280 KB
    assert forwarder.gop_held < 1_000_000 and forwarder.totals().gop_evictions == 0
    _feed(forwarder, streams[2], _gop_frames(15))  # ≈ 210 KB: over the budget, the largest goes
    assert streams[0].gop is None and streams[0].gop_evictions == 1
    assert streams[1].gop is not None and streams[2].gop is not None and len(streams[2].gop) == 150
    assert forwarder.gop_held <= 1_000_000 and forwarder.totals().gop_evictions == 1
    # its next key frame starts it again
    _feed(forwarder, streams[0], _gop_frames(2, ts=3600 * 100, seq=1000))
    assert streams[0].gop is not None and len(streams[0].gop) == 20
    # the total follows key frames (the caches start again smaller) and closes
    _feed(forwarder, streams[1], _gop_frames(2, ts=3600 * 100, seq=1000))
    _feed(forwarder, streams[2], _gop_frames(2, ts=3600 * 100, seq=1000))
    kept = sum(st.gop_bytes for st in streams)
    for st in streams:
        _feed(forwarder, st, _rtp([b"\x33"], 3600 * 200, 2000))  # a frame starts: each brought up to date
    assert forwarder.gop_held == kept < 100_000
    forwarder._drop_gop(streams[0])
    assert forwarder.gop_held == streams[1].gop_counted + streams[2].gop_counted and streams[0].gop is None
    # 0: no total bound
    forwarder = Forwarder(RelaySettings("127.0.0.1", 65536, 1 << 20, 1.0, 1 << 22, 0))
    st = RelayStream("s", 0, StreamMode.UDP, 1234, 0.0, "127.0.0.1")
    _feed(forwarder, st, _gop_frames(200))
    assert st.gop is not None and len(st.gop) == 2000 and forwarder.gop_evictions == 0


def test_a_key_frame_cut_into_several_packs_is_kept_from_its_first() -> None:
    # devices that put a pack header before each PES of a large I frame: the later packs, with
    # the frame's timestamp and IDR slices of their own, are pieces of it, not new key frames
    all_packs = packs(gb_ps(25, 10))
    header = bytes([0x80, 0x80, 5, 0x21, 0x00, 0x01, 0x00, 0x01])
    slice_ = b"\x00\x00\x01\x65\x00" + b"\xaa" * 900  # another slice of the IDR picture
    piece = PACK_HEADER + b"\x00\x00\x01\xe0" + struct.pack("!H", len(header) + len(slice_)) + header + slice_
    packets: list[bytes] = []
    key_at = 0
    for i, pack in enumerate(all_packs):
        if i == 20:
            key_at = len(packets)
        pieces = [pack[j : j + 1000] for j in range(0, len(pack), 1000)]
        packets += _rtp(pieces + ([piece, piece] if i % 10 == 0 else []), 3600 * i, 1000 + len(packets))
    forwarder, st = _stream()
    _feed(forwarder, st, packets)
    assert st.gop is not None and st.gop[0] == packets[key_at]
    assert st.inspector.stats.key_frames == 3
