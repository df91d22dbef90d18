"""Recorded spans, where a playback is, and its control state (PROTOCOL.md §7.8-7.9), with a fake clock."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from gb28181gw.errors import LocalProtocolError, SpanError
from gb28181gw.gb import mansrtsp
from gb28181gw.gb.mansrtsp import Verb
from gb28181gw.gb.playback import (
    CLOCK_SLACK,
    CONTROL_TRANSITIONS,
    MAX_STEP,
    RTP_HZ,
    Control,
    ControlState,
    MediaClock,
    Span,
    next_control,
)
from gb28181gw.gb.session import invite
from gb28181gw.sdp import SessionDescription, SessionKind, download_speed, file_size, file_size_text
from tests.core.gb.test_session import session as live_session

NOW = 1_714_960_000.0  # 2024-05-06 09:46:40 Beijing time
SPAN = Span(1714953600, 1714954200)


def test_span_from_local_in_the_devices_zone() -> None:
    beijing = dt.timezone(dt.timedelta(hours=8))
    assert Span.from_local(dt.datetime(2024, 5, 6, 8), dt.datetime(2024, 5, 6, 8, 10), beijing) == SPAN
    aware = dt.datetime(2024, 5, 6, 0, tzinfo=dt.UTC)  # an offset given wins over the zone
    assert Span.from_local(aware, aware + dt.timedelta(minutes=10), beijing) == SPAN
    assert SPAN.sdp_time == "1714953600 1714954200" and SPAN.seconds == 600


def test_span_from_sdp() -> None:
    assert Span.from_sdp("1714953600 1714954200") == SPAN
    for bad in ("0", "a b", "1714954200 1714953600", "1 1", "-1 5", "1 2 3"):
        with pytest.raises(SpanError):
            Span.from_sdp(bad)


def test_span_check_edges() -> None:
    assert SPAN.check(now=NOW, max_span=600) is SPAN  # exactly the maximum is allowed
    assert SPAN.check(now=NOW, max_span=0) is SPAN  # 0: no bound
    with pytest.raises(SpanError, match="more than playback.max_span \\(9 min\\)"):
        SPAN.check(now=NOW, max_span=540)
    with pytest.raises(SpanError, match="\\(599 s\\)"):
        SPAN.check(now=NOW, max_span=599)
    with pytest.raises(SpanError, match="ends .* before it starts"):
        Span(SPAN.start, SPAN.start).check(now=NOW, max_span=0)
    with pytest.raises(SpanError, match="2024-05-06 00:10:00 UTC"):
        Span(SPAN.end, SPAN.start).check(now=NOW, max_span=0)
    # a start a little ahead of our clock is a clock difference, more is the future
    assert Span(int(NOW + CLOCK_SLACK), int(NOW + 600)).check(now=NOW, max_span=0)
    with pytest.raises(SpanError, match="in the future"):
        Span(int(NOW + CLOCK_SLACK) + 1, int(NOW + 600)).check(now=NOW, max_span=0)
    # a start past year 9999 (t= takes 12 digits) is refused in words too, not a ValueError
    with pytest.raises(SpanError, match="999999999998 s since the epoch"):
        Span.from_sdp("999999999998 999999999999").check(now=NOW, max_span=0)
    # a span ending after now (still recording) but starting before is asked for
    assert Span(int(NOW - 60), int(NOW + 600)).check(now=NOW, max_span=0)


def ts(seconds: float, base: int = 0) -> int:
    return (base + int(seconds * RTP_HZ)) % (1 << 32)


def test_clock_counts_steps_and_ignores_none_yet() -> None:
    clock = MediaClock()
    assert clock.read(-1) == 0.0 and clock.last is None
    assert clock.read(ts(0, 1000)) == 0.0  # the first reading only sets where we are
    assert clock.read(ts(1.5, 1000)) == pytest.approx(1.5)
    assert clock.read(ts(1.5, 1000)) == pytest.approx(1.5)  # no new packet: no progress
    assert clock.read(-1) == pytest.approx(1.5)


def test_clock_counts_from_the_streams_first_timestamp_once() -> None:
    # a download bursts 3 s before the first reading: they count; after a seek the first is no anchor
    clock = MediaClock()
    assert clock.read(-1, -1) == 0.0 and not clock.started
    assert clock.read(ts(3, 7), first=ts(0, 7)) == pytest.approx(3.0)
    clock.seek(100)
    assert clock.read(ts(500, 7), first=ts(0, 7)) == 100
    assert clock.read(ts(501, 7), first=ts(0, 7)) == pytest.approx(101)


def test_clock_counts_from_where_the_relay_saw_a_jump() -> None:
    # a seek read late: what came after the jump counts from the seek, whenever the reading comes
    clock = MediaClock()
    clock.read(ts(0), first=ts(0))
    clock.read(ts(10))
    clock.seek(300)
    assert clock.read(ts(11)) == 300  # old media still arriving: anchored there, nothing counted
    assert clock.read(ts(5003), jumps=1, jump=ts(5000)) == pytest.approx(303)  # 3 s since the jump
    assert clock.read(ts(5004), jumps=1, jump=ts(5000)) == pytest.approx(304)  # the same jump again: a step
    # a jump without a seek (a device restart, back to 0): nothing for the jump, what followed counts
    assert clock.read(ts(2), jumps=2, jump=ts(0)) == pytest.approx(306)
    # a jump in the burst before the first reading: counted from the jump
    fresh = MediaClock()
    assert fresh.read(ts(7002), first=ts(0), jumps=1, jump=ts(7000)) == pytest.approx(2)


def test_clock_wraps_at_32_bits() -> None:
    clock = MediaClock()
    base = (1 << 32) - RTP_HZ  # one second before the wrap
    clock.read(base)
    assert clock.read(ts(3, base)) == pytest.approx(3.0)
    assert clock.last == ts(3, base) < base


def test_clock_ignores_jumps_back_and_far_ahead() -> None:
    clock = MediaClock()
    clock.read(ts(0, 5_000_000))
    clock.read(ts(10, 5_000_000))
    assert clock.read(ts(2, 5_000_000)) == pytest.approx(10)  # back: a restart, nothing added
    assert clock.read(ts(4, 5_000_000)) == pytest.approx(12)  # counted again from there
    assert clock.read(ts(4 + MAX_STEP + 1, 5_000_000)) == pytest.approx(12)  # far ahead: a jump
    assert clock.read(ts(4 + MAX_STEP + 3, 5_000_000)) == pytest.approx(14)
    assert clock.read(ts(4 + MAX_STEP + 3 + MAX_STEP, 5_000_000)) == pytest.approx(14 + MAX_STEP)  # the limit counts


def test_clock_seek_counts_from_the_new_position() -> None:
    clock = MediaClock()
    clock.read(ts(0))
    clock.read(ts(5))
    clock.seek(300)
    assert clock.position == 300 and clock.last is None
    assert clock.read(ts(90_000)) == 300  # the device's timestamps jumped: the first reading only anchors
    assert clock.read(ts(90_002)) == pytest.approx(302)


def test_every_transition_and_only_those() -> None:
    for state in ControlState:
        for verb in Verb:
            control = Control(state=state)
            request = mansrtsp.RtspRequest(verb, 1)
            if (state, verb) in CONTROL_TRANSITIONS:
                assert next_control(control, request, now=0) is CONTROL_TRANSITIONS[(state, verb)]
                assert control.state is CONTROL_TRANSITIONS[(state, verb)]
            else:
                assert state is ControlState.ENDED
                with pytest.raises(LocalProtocolError, match="after the playback ended"):
                    next_control(control, request, now=0)
                assert control.state is ControlState.ENDED


def test_pause_resume_speed_seek_teardown() -> None:
    control = Control(quiet_since=1.0)
    assert (control.next_cseq(), control.next_cseq()) == (1, 2)
    assert next_control(control, mansrtsp.pause(1), now=10.0) is ControlState.PAUSED and control.paused
    assert control.quiet_since == 1.0  # pausing does not move it: the pause itself is never idle
    assert control.paused_since == 10.0  # what playback.pause_limit counts from
    next_control(control, mansrtsp.pause(2), now=15.0)
    assert control.paused_since == 10.0  # a second PAUSE does not lengthen the bound
    assert next_control(control, mansrtsp.speed(3, 4), now=20.0) is ControlState.PLAYING
    assert control.scale == 4.0 and control.quiet_since == 20.0  # the pause counts for nothing
    next_control(control, mansrtsp.resume(4), now=30.0)
    assert control.scale == 4.0 and control.quiet_since == 20.0  # resuming while playing: nothing to forget
    next_control(control, mansrtsp.seek(5, 120), now=40.0)
    assert control.clock.position == 120 and control.scale == 4.0
    assert next_control(control, mansrtsp.teardown(6), now=50.0) is ControlState.ENDED
    with pytest.raises(LocalProtocolError):
        next_control(control, mansrtsp.resume(7), now=60.0)


@pytest.mark.parametrize("kind", list(SessionKind))
def test_the_configured_f_line_is_in_every_offer(kind: SessionKind) -> None:
    def offer(format: str) -> bytes:
        recorded = {"span": (SPAN.start, SPAN.end), "ssrc": "1200000001"} if kind.recorded else {"ssrc": "1200000001"}
        speed = 4 if kind is SessionKind.DOWNLOAD else None
        session = dataclasses.replace(live_session(), kind=kind, download_speed=speed, format=format, **recorded)
        return invite(session, contact="<sip:34020000002000000001@127.0.0.1:5060>").body

    assert offer("v/2/6/25/1/4096a///").endswith(b"y=1200000001\r\nf=v/2/6/25/1/4096a///\r\n")
    assert offer("").endswith(b"y=1200000001\r\nf=\r\n")  # the default: f= with nothing


def test_a_span_before_1970_is_refused() -> None:
    # an ISO time of year 1 (or 1960) gives negative epoch seconds: t= holds unsigned numbers
    with pytest.raises(SpanError, match="before 1970"):
        Span(-3600, 60).check(now=NOW, max_span=0)
    with pytest.raises(SpanError, match="before 1970"):
        Span.from_local(dt.datetime(1, 1, 1), dt.datetime(1, 1, 1, 1), dt.timezone(dt.timedelta(hours=8))).check(
            now=NOW, max_span=0
        )


@pytest.mark.parametrize("time", ["\u00b2 3", "1 \u00b2\u00b2", "-1 5"])
def test_a_t_line_of_odd_digits_is_an_error_not_a_crash(time: str) -> None:
    with pytest.raises(SpanError):
        Span.from_sdp(time)


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b2", "\u00b9\u00b2\u00b3"])
def test_odd_digits_in_a_download_answer_or_offer_are_unknown_not_a_crash(value: str) -> None:
    sdp = SessionDescription.parse(
        (
            "v=0\r\no=x 0 0 IN IP4 1.2.3.4\r\ns=Download\r\nc=IN IP4 1.2.3.4\r\nt=1 2\r\n"
            f"m=video 9 RTP/AVP 96\r\na=rtpmap:96 PS/90000\r\na=filesize:{value}\r\na=downloadspeed:{value}\r\n"
        ).encode()
    )
    assert file_size(sdp) is None and file_size_text(sdp) is None
    assert download_speed(sdp) == 1


def test_clock_counts_a_fast_downloads_long_steps_as_progress() -> None:
    # a download at 256x sends 256 s of recording between two readings a second apart: not a jump
    clock = MediaClock()
    assert clock.read(ts(256, 5_000_000), first=ts(0, 5_000_000), pace=256) == pytest.approx(256)
    assert clock.read(ts(512, 5_000_000), pace=256) == pytest.approx(512)
    assert clock.read(ts(512 + 256 * MAX_STEP + 1, 5_000_000), pace=256) == pytest.approx(512)  # beyond it: a jump
    slow = MediaClock()  # at 1x the same step is a jump, as before
    assert slow.read(ts(256, 5_000_000), first=ts(0, 5_000_000)) == 0


def test_an_answer_that_comes_after_a_later_requests_changes_nothing() -> None:
    # pause (1) and resume (2) sent at once; the device answers 2 first: it plays, and a late
    # answer to 1 must not mark it paused (a paused session never times out)
    control = Control(quiet_since=1.0)
    pause, resume = mansrtsp.pause(control.next_cseq()), mansrtsp.resume(control.next_cseq())
    next_control(control, resume, now=5.0)
    assert next_control(control, pause, now=6.0) is ControlState.PLAYING and not control.paused
    seek, speed = mansrtsp.seek(control.next_cseq(), 100), mansrtsp.speed(control.next_cseq(), 2)
    next_control(control, speed, now=7.0)
    control.clock.read(ts(0))
    control.clock.read(ts(5))
    next_control(control, seek, now=8.0)  # stale: the position goes on, not back to 100
    assert control.scale == 2.0 and control.clock.position == pytest.approx(5)
    assert control.applied == speed.cseq
