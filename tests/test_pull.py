"""pull.py's pieces that need no gateway: the MP4 timeline and the parameter sets taken from a key frame."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from gb28181gw.media.ps import PsDemuxer
from gb28181gw.pull import Timeline, open_recording, parameter_sets
from tests.media import gb_ps, h264_frames


def test_timeline_starts_at_zero_and_follows_the_pts() -> None:
    t = Timeline()
    assert [t.next(p) for p in (900_000, 903_600, 907_200)] == [0, 3600, 7200]


def test_timeline_unwraps_33_bits_and_bridges_gaps_jumps_and_missing_pts() -> None:
    t = Timeline()
    top = (1 << 33) - 1800
    assert t.next(top) == 0
    assert t.next(1800) == 3600  # wrapped: still 3600 ticks on
    assert t.next(None) == 7200  # no PTS: one frame interval on
    assert t.next(5) == 10800  # went back (a device restart): one interval on, never backwards
    assert t.next(3605) == 14400  # and follows the new clock from there
    assert t.next(3605 + 3600 * 25 * 60) == 18000  # a jump of a minute is not time passing


@pytest.mark.parametrize("suffix", [".ps", ".mp4"])
def test_a_recordings_seconds_are_its_own_clock_not_how_fast_it_came(tmp_path: Path, suffix: str) -> None:
    assert Timeline().duration == 0
    recording = open_recording(tmp_path / f"out{suffix}")
    assert recording.seconds == 0
    recording.feed(gb_ps(50, 10))  # 50 frames at 25 fps, fed at once (a download at any speed)
    recording.close()
    assert recording.frames == 50 and recording.seconds == 2.0


def test_parameter_sets_are_the_sps_and_pps_of_the_key_frame() -> None:
    key = h264_frames(1, 1)[0][0]
    sets = parameter_sets(key)
    nal_types = [part[0] & 0x1F for part in sets.split(b"\x00\x00\x00\x01") if part]
    assert nal_types == [7, 8]
    assert parameter_sets(h264_frames(2, 10)[1][0]) == b""  # a P frame has none


@pytest.mark.parametrize("suffix", [".ps", ".mp4"])
def test_a_recording_fed_byte_runs_plays_and_an_empty_one_leaves_no_file(tmp_path: Path, suffix: str) -> None:
    ps = gb_ps(30, 10)
    path = tmp_path / f"out{suffix}"
    recording = open_recording(path)
    for i in range(0, len(ps), 1000):
        recording.feed(ps[i : i + 1000])
    recording.close()
    recording.close()  # twice is harmless
    demuxed = PsDemuxer().feed(ps)
    assert recording.frames == 30 and recording.codec == "H264" and demuxed
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
    empty = tmp_path / f"empty{suffix}"
    open_recording(empty).close()
    assert not empty.exists()


def test_an_unknown_extension_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\.ps or \.mp4"):
        open_recording(Path("x.avi"))
