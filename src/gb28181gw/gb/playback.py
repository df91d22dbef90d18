"""Recorded spans and where a playback is in one (PROTOCOL.md §7.8-7.9), without I/O.

:class:`Span` is what the operator or a superior asks for: start and end in seconds since the
epoch, made from the operator's local times in the device's zone (:meth:`Span.from_local`) or
read off a ``t=`` line (:meth:`Span.from_sdp`), and checked before any INVITE
(:meth:`Span.check`: end after start, not in the future, not longer than the maximum).

:class:`MediaClock` follows where a playback is from the RTP timestamps the relay saw (90 kHz,
which devices derive from the recording's own clock whatever the speed): the first reading
counts from the stream's first timestamp (a download bursts ahead of the readings), each
reading adds the step since the one before; a seek sets the position; a jump back or of more
than :data:`MAX_STEP` times the pace (a seek's discontinuity, a device restart) adds nothing. When the relay
saw the jump itself, what came after it counts from the timestamp it jumped to, so a seek's
new position is exact however late the first reading after it comes.

:class:`Control` is a playback's control state — playing or paused, at which speed — changed
only by :func:`next_control` through :data:`CONTROL_TRANSITIONS` once the device said 2xx.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from enum import Enum, auto

from gb28181gw.errors import LocalProtocolError, SdpError, SpanError
from gb28181gw.sdp import span_of

from .mansrtsp import RtspRequest, Verb

__all__ = [
    "CONTROL_TRANSITIONS",
    "Control",
    "ControlState",
    "MediaClock",
    "Span",
    "next_control",
]

#: RTP clock of PS video (Annex C).
RTP_HZ = 90_000
#: A timestamp step larger than this (seconds of recording between two readings) is a jump, not progress.
MAX_STEP = 120.0
#: Seconds a span may start ahead of our clock (devices' clocks and ours differ by a little).
CLOCK_SLACK = 60.0


@dataclass(frozen=True, slots=True)
class Span:
    """A recorded span: ``start`` and ``end`` in whole seconds since the epoch (``t=`` of §7.8)."""

    start: int
    end: int

    @property
    def seconds(self) -> int:
        """Its length."""
        return self.end - self.start

    @property
    def sdp_time(self) -> str:
        """Its ``t=`` value."""
        return f"{self.start} {self.end}"

    @classmethod
    def from_sdp(cls, time: str) -> Span:
        """The span of a ``t=`` value.

        Raises:
            SpanError: not two epoch seconds, or the end not after the start.
        """
        try:
            return cls(*span_of(time))
        except SdpError as exc:
            raise SpanError(str(exc)) from None

    @classmethod
    def from_local(cls, start: _dt.datetime, end: _dt.datetime, zone: _dt.tzinfo) -> Span:
        """The span between two wall-clock times (naive ones are in ``zone``, the device's)."""

        def epoch(t: _dt.datetime) -> int:
            return math.floor((t if t.tzinfo is not None else t.replace(tzinfo=zone)).timestamp())

        return cls(epoch(start), epoch(end))

    def check(self, *, now: float, max_span: float) -> Span:
        """This span, if it can be asked for at ``now`` (epoch seconds); ``max_span`` 0 means no bound.

        Raises:
            SpanError: the end is not after the start, it starts before 1970 or in the future, or it is
                longer than ``max_span``.
        """
        if self.start < 0:
            # t= is two unsigned numbers (§7.8): a negative one is no time any device has recorded
            raise SpanError(f"the span starts before 1970 ({self.start} s since the epoch): nothing is recorded then")
        if self.end <= self.start:
            raise SpanError(f"the span ends ({_words(self.end)}) before it starts ({_words(self.start)})")
        if self.start > now + CLOCK_SLACK:
            raise SpanError(f"the span starts in the future ({_words(self.start)}): nothing is recorded yet")
        if max_span and self.seconds > max_span:
            raise SpanError(
                f"the span is {_length(self.seconds)} long, more than playback.max_span ({_length(max_span)}): "
                "ask for a shorter one"
            )
        return self


def _words(epoch: int) -> str:
    try:
        return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        # beyond year 9999 (t= allows 12 digits): still an answer, not a crash of whoever asked
        return f"{epoch} s since the epoch"


def _length(seconds: float) -> str:
    seconds = int(seconds)
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


@dataclass(slots=True)
class MediaClock:
    """Where a recorded stream is, in seconds from its span's start (see the module docstring).

    Attributes:
        position: seconds of the span played so far (from the start, or from the last seek).
        last: the RTP timestamp last read, or ``None`` before the first (and after a seek).
        started: a reading was taken (after it, the stream's first timestamp is no anchor: a seek
            starts counting at the next reading instead).
        jumps: the relay's count of timestamp jumps as of the last reading.
    """

    position: float = 0.0
    last: int | None = None
    started: bool = False
    jumps: int = 0

    def read(self, timestamp: int, first: int = -1, jumps: int = 0, jump: int = -1, *, pace: float = 1.0) -> float:
        """Take the latest RTP timestamp the relay saw (``-1``: none yet), the stream's first
        (``-1``: unknown) and its jumps so far with the timestamp of the last (``-1``: none);
        return the position. ``pace``: seconds of recording sent per second (a download's speed,
        a playback's Scale): a step up to :data:`MAX_STEP` times it is progress, not a jump."""
        if timestamp < 0:
            return self.position
        if jumps > self.jumps and jump >= 0:
            self.last = jump  # the jump adds nothing; what followed it counts (after a seek: from the seek)
        self.jumps = max(self.jumps, jumps)
        if self.last is None and not self.started and first >= 0:
            self.last = first
        self.started = True
        if self.last is not None:
            step = ((timestamp - self.last) % (1 << 32)) / RTP_HZ
            # a download at 256x sends minutes of recording between two readings: progress still
            if 0 < step <= MAX_STEP * max(1.0, pace):
                self.position += step
        self.last = timestamp
        return self.position

    def seek(self, seconds: float) -> None:
        """The device was told to go to ``seconds``: count from there at the next timestamp."""
        self.position = seconds
        self.last = None


class ControlState(Enum):
    """Whether a playback runs."""

    PLAYING = auto()
    PAUSED = auto()
    ENDED = auto()  # torn down (TEARDOWN answered 2xx): nothing more to control


#: ``(state, verb) -> state`` once the device answered a control 2xx. PLAY resumes, seeks or changes
#: speed (any of these from PAUSED plays again); PAUSE from PAUSED stays paused (asked twice).
CONTROL_TRANSITIONS: dict[tuple[ControlState, Verb], ControlState] = {
    (ControlState.PLAYING, Verb.PLAY): ControlState.PLAYING,
    (ControlState.PLAYING, Verb.PAUSE): ControlState.PAUSED,
    (ControlState.PLAYING, Verb.TEARDOWN): ControlState.ENDED,
    (ControlState.PAUSED, Verb.PLAY): ControlState.PLAYING,
    (ControlState.PAUSED, Verb.PAUSE): ControlState.PAUSED,
    (ControlState.PAUSED, Verb.TEARDOWN): ControlState.ENDED,
}


@dataclass(slots=True)
class Control:
    """A playback's control state.

    Attributes:
        state: playing, paused or ended.
        scale: the speed the device last accepted (1.0 at first; Download sessions keep 1.0 and
            run at their ``a=downloadspeed``).
        cseq: the body CSeq of the last request sent in the device's dialog (the next is one more).
        clock: where it is.
        quiet_since: a time (the caller's clock) the media inactivity is counted from at the
            earliest: the last resume, so the pause before it counts for nothing.
        applied: the body CSeq of the last request applied (answers of earlier ones that come
            after it are stale: the device did what came later after them).
        paused_since: when (the caller's clock) it was last paused: a pause has no media timeout,
            so ``playback.pause_limit`` bounds it instead.
    """

    state: ControlState = ControlState.PLAYING
    scale: float = 1.0
    cseq: int = 0
    clock: MediaClock = field(default_factory=MediaClock)
    quiet_since: float = 0.0
    applied: int = 0
    paused_since: float = 0.0

    @property
    def paused(self) -> bool:
        return self.state is ControlState.PAUSED

    def next_cseq(self) -> int:
        """The body CSeq for the next request in the device's dialog (increasing per dialog)."""
        self.cseq += 1
        return self.cseq


def next_control(control: Control, request: RtspRequest, *, now: float) -> ControlState:
    """Apply ``request``, which the device answered 2xx, to ``control`` (``now``: the caller's clock);
    an answer that comes after that of a later request (a lower body CSeq) changes nothing.

    Raises:
        LocalProtocolError: the session has ended: nothing more may be sent.
    """
    try:
        new = CONTROL_TRANSITIONS[(control.state, request.verb)]
    except KeyError:
        raise LocalProtocolError(f"{request.verb} after the playback {control.state.name.lower()}") from None
    if request.cseq <= control.applied:
        # a PAUSE answered after the PLAY sent behind it: the device plays; taking it would stop the
        # media timeout of a session that is not paused (and the clock would seek back)
        return control.state
    control.applied = request.cseq
    if request.verb is Verb.PLAY:
        scale = request.scale
        if scale is not None:
            control.scale = scale
        start = request.range_start
        if start is not None:
            control.clock.seek(start)
        if control.state is ControlState.PAUSED:
            control.quiet_since = now
    elif request.verb is Verb.PAUSE and control.state is ControlState.PLAYING:
        control.paused_since = now
    control.state = new
    return new
