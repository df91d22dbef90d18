"""PS demultiplexing of real H.264 in MPEG-2 PS made with av (libx264 + FFmpeg's vob muxer)."""

from __future__ import annotations

import pytest

from gb28181gw.media.ps import PsDemuxer
from tests.media import decode_units, h264_ps

FRAMES = 50
GOP = 10


@pytest.fixture(scope="module")
def ps() -> bytes:
    return h264_ps()


@pytest.mark.parametrize("chunk", [1400, 1, 7777])
def test_frames_and_key_frames_in_any_chunking(ps: bytes, chunk: int) -> None:
    demux = PsDemuxer()
    frames = []
    for i in range(0, len(ps), chunk):
        frames += demux.feed(ps[i : i + chunk])
    frames += demux.flush()
    assert len(frames) == FRAMES
    assert demux.stats.video_codec == "H264"
    assert [f.key for f in frames].count(True) == FRAMES // GOP
    assert frames[0].key and demux.stats.key_frame_interval == GOP
    # FFmpeg packs several frames into one PES, so a frame carries the PTS of the PES it began in
    pts = [f.pts for f in frames]
    assert all(p is not None for p in pts) and pts == sorted(pts)  # type: ignore[type-var]
    assert demux.stats.errors == 0
    # what the demuxer hands out is decodable H.264, every frame of it
    assert decode_units([f.data for f in frames]) == FRAMES


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_buffer_is_fed(ps: bytes, kind: type) -> None:
    # compiled (media.ps is in the build), a parameter typed bytes refuses a bytearray or memoryview
    # with TypeError where the sources took it: a receive buffer handed on as it is would stop a recording
    demux = PsDemuxer()
    frames = []
    for i in range(0, len(ps), 1400):
        frames += demux.feed(kind(ps[i : i + 1400]))
    assert len(frames + demux.flush()) == FRAMES and demux.stats.errors == 0


def test_garbage_is_skipped_and_counted(ps: bytes) -> None:
    demux = PsDemuxer()
    half = len(ps) // 2
    cut = ps.find(b"\x00\x00\x01\xba", half)
    frames = demux.feed(ps[:cut] + b"\xde\xad\xbe\xef" * 100 + ps[cut:]) + demux.flush()
    assert demux.stats.errors >= 1 and demux.stats.skipped_bytes >= 400
    assert len(frames) >= FRAMES - 1


def test_psm_teaches_the_codec() -> None:
    # a GB-style PSM: H.265 video on 0xE0, G.711A audio on 0xC0
    psm_body = bytes([0xE0, 0xFF, 0x00, 0x00, 0x00, 0x08, 0x24, 0xE0, 0x00, 0x00, 0x90, 0xC0, 0x00, 0x00])
    unit = b"\x00\x00\x01\xbc" + len(psm_body).to_bytes(2, "big") + psm_body
    demux = PsDemuxer()
    assert demux.feed(unit) == []
    assert demux.stats.video_codec == "H265" and demux.stats.audio_codec == "PCMA"
    assert demux.stats.stream_types == {0xE0: 0x24, 0xC0: 0x90}


def test_inspector_learns_codec_and_key_frames_from_gb_packs() -> None:
    from gb28181gw.media.ps import PsInspector
    from tests.media import gb_ps, packs

    inspector = PsInspector()
    for pack in packs(gb_ps(30, 10)):
        inspector.frame_start(pack, 0, len(pack))
    s = inspector.stats
    assert (s.video_codec, s.frames, s.key_frames, s.key_frame_interval, s.errors) == ("H264", 30, 3, 10, 0)
    garbage = b"\x17" * 100
    inspector.frame_start(garbage, 0, len(garbage))  # truncated or garbage PS is flagged, never raised
    inspector.frame_start(b"\x00\x00\x01\xba", 0, 4)
    assert s.errors == 2 and s.frames == 30


def test_frame_start_says_which_rtp_packet_opens_a_key_frame() -> None:
    # the relay inspects only the first packet of each timestamp; it must name key frames from it alone
    from gb28181gw.media.ps import PsInspector
    from gb28181gw.media.rtp import RtpPacket
    from tests.media import gb_ps, packetize

    inspector = PsInspector()
    keys, last_ts = [], -1
    for raw in packetize(gb_ps(30, 10), 1, mtu=400):
        p = RtpPacket.parse(raw)
        if p.timestamp != last_ts:
            last_ts = p.timestamp
            keys.append(inspector.frame_start(p.payload, 0, len(p.payload)))
    assert [i for i, key in enumerate(keys) if key] == [0, 10, 20]


def test_a_psm_on_a_frame_that_is_not_a_key_frame_is_only_a_hint() -> None:
    # some devices send a system header and PSM with every frame (§8.5): the NAL types decide
    from gb28181gw.media.ps import PsInspector
    from tests.media import gb_ps, packs

    key_pack, p_pack = packs(gb_ps(2, 10))
    headers_end = key_pack.index(b"\x00\x00\x01\xe0")
    with_psm = key_pack[:headers_end] + p_pack[14:]  # the key pack's headers, then a P frame's PES
    inspector = PsInspector()
    assert not inspector.frame_start(with_psm, 0, len(with_psm))
    assert inspector.frame_start(key_pack, 0, len(key_pack))
    assert not inspector.frame_start(b"\x00" * 40, 0, 40)  # not PS at all


def test_inspect_waits_for_the_video_of_a_frame_spread_over_packets() -> None:
    # the relay feeds the frame's bytes so far until its first NAL units tell (None until then)
    from gb28181gw.media.ps import PsInspector
    from tests.media import gb_ps, packs

    all_packs = packs(gb_ps(11, 10))
    key, other = all_packs[0], all_packs[1]
    video = key.find(b"\x00\x00\x01\xe0")
    sps = key.find(b"\x00\x00\x01\x67", video)
    inspector = PsInspector()
    for cut in (2, 10, 13, video - 3, video, video + 8, sps + 2):  # inside the pack header, PSM, PES header …
        assert inspector.inspect(key, 0, cut) is None, cut
    assert inspector.stats.frames == 0 and inspector.stats.errors == 0  # nothing counted before it is told
    assert inspector.inspect(key, 0, len(key)) is True
    assert inspector.inspect(other, 0, len(other)) is False
    assert (inspector.stats.frames, inspector.stats.key_frames, inspector.stats.packs) == (2, 1, 2)
    # told with what there is: a pack header cut short is an error, parameter sets alone a key frame
    assert inspector.frame_start(key, 0, 10) is False and inspector.stats.errors == 1
    assert inspector.frame_start(key, 0, sps + 8) is True
    # not PS, or not video: told at once
    assert inspector.inspect(b"\x17" * 40, 0, 40) is False
    assert inspector.inspect(b"\x00\x00\x02", 0, 3) is False
    audio = key[:14] + b"\x00\x00\x01\xc0\x00\x10" + b"\x80" * 16
    assert inspector.inspect(audio, 0, len(audio)) is False
