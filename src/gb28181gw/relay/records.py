"""What a relay reports: stream events and statistics, as frozen records, and their wire form.

The forwarder hands its events to ``on_event`` and its figures to whoever asks, as the
records below, whether it runs in the gateway's process or in a relay worker. Between a
worker and the gateway they cross a socket pair as JSON: :func:`encode_event` /
:func:`decode_event` and :func:`encode_snapshot` / :func:`decode_snapshot` turn them into
plain lists (field order, no names: a snapshot of thousands of streams goes every second)
and back. A record's wire form is its fields in declaration order, so adding a field to a
record changes both sides at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gb28181gw.sdp import StreamMode

# --- events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayEvent:
    """Base class of relay events."""


@dataclass(frozen=True, slots=True)
class FirstPacket(RelayEvent):
    """The stream's first good RTP packet arrived (and was relayed).

    Attributes:
        stream: the stream's ID.
        ssrc: the packet's SSRC.
    """

    stream: str
    ssrc: int


@dataclass(frozen=True, slots=True)
class MediaConnected(RelayEvent):
    """TCP media: the device connected to us (passive), or we to it (active).

    Attributes:
        stream: the stream's ID.
        peer: the device's end of the connection.
    """

    stream: str
    peer: tuple[str, int]


@dataclass(frozen=True, slots=True)
class MediaClosed(RelayEvent):
    """The device's TCP media connection closed or failed: the stream has no media any more.

    Attributes:
        stream: the stream's ID.
        reason: what happened, for logs and the close reason.
    """

    stream: str
    reason: str


@dataclass(frozen=True, slots=True)
class ConsumerLost(RelayEvent):
    """A TCP consumer closed its connection, could not be sent to, or (TCP passive) never
    connected in time; the relay dropped it.

    Attributes:
        stream: the stream's ID.
        consumer: the consumer's ID.
        reason: what happened.
    """

    stream: str
    consumer: str
    reason: str


@dataclass(frozen=True, slots=True)
class KeyFrameWanted(RelayEvent):
    """A consumer joined a stream that has media but no packets kept since a key frame (none seen
    yet, or the cache bound was passed): it sees no picture until the device sends one.

    Attributes:
        stream: the stream's ID.
    """

    stream: str


@dataclass(frozen=True, slots=True)
class WorkerLost(RelayEvent):
    """A relay worker process died while the gateway runs: its streams are gone.

    Attributes:
        worker: the worker's index.
    """

    worker: int


#: Wire name of each event (stable words: they cross the worker pipe).
EVENT_KINDS: dict[type[RelayEvent], str] = {
    FirstPacket: "first-packet",
    MediaConnected: "connected",
    MediaClosed: "closed",
    ConsumerLost: "consumer-lost",
    KeyFrameWanted: "keyframe-wanted",
    WorkerLost: "worker-lost",
}
_EVENT_CLASSES = {kind: cls for cls, kind in EVENT_KINDS.items()}


def encode_event(event: RelayEvent) -> list[Any]:
    """``[kind, field, …]`` for the worker pipe."""
    return [EVENT_KINDS[type(event)], *_values(event)]


def decode_event(data: list[Any]) -> RelayEvent:
    """The event :func:`encode_event` encoded.

    Raises:
        ValueError: an unknown kind or the wrong number of fields.
    """
    cls = _EVENT_CLASSES.get(data[0]) if data else None
    if cls is None:
        raise ValueError(f"unknown relay event {data[:1]!r}")
    try:
        return cls(*(tuple(v) if isinstance(v, list) else v for v in data[1:]))
    except TypeError as exc:
        raise ValueError(f"bad relay event {data!r}: {exc}") from None


# --- statistics ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PsFigures:
    """What the PS inspector saw in a stream (codecs, frames, key-frame rhythm, errors)."""

    video_codec: str
    audio_codec: str
    frames: int
    key_frames: int
    key_frame_interval: int
    errors: int


@dataclass(frozen=True, slots=True)
class ConsumerFigures:
    """What went to one consumer.

    Attributes:
        transport / address / ssrc: where it goes, and with which SSRC.
        packets / bytes: sent.
        dropped: packets not sent because its socket or queue was full.
        errors: sends that failed.
    """

    transport: str
    address: tuple[str, int]
    ssrc: int
    packets: int
    bytes: int
    dropped: int
    errors: int


@dataclass(frozen=True, slots=True)
class StreamFigures:
    """One stream's figures at the time of the snapshot.

    Attributes:
        port / mode: its media port and how media arrives.
        ssrc / ssrc_latched: the SSRC taken, and whether it was followed instead of the negotiated one (M1).
        source: where its media comes from (the first good source), or ``None`` before any.
        connected: TCP modes: whether the media connection is up; ``None`` for UDP.
        packets / bytes / bitrate / lost / reordered / duplicates: what arrived (bit/s over the last seconds).
        idle / age: seconds since the last packet (or since opening, before any), and since opening.
        wrong_ssrc / wrong_source / malformed: packets dropped, by reason (``wrong_source``: from
            another host than the device's, or another port than its first good packet's).
        refused_connections: TCP connections refused (one media connection per session, and
            none from another host than the device's).
        tcp_resyncs: times the RFC 4571 framing was lost and found again.
        ps: what the PS inspector saw.
        timestamp: the RTP timestamp of the last frame that began (-1 before any): where a
            recorded stream is (:class:`~gb28181gw.gb.playback.MediaClock`).
        first_timestamp: the RTP timestamp of the first packet (-1 before any): where a recorded
            stream began, so a burst sent before the first reading counts (a download at 4x).
        jumps / jump_timestamp: timestamp jumps seen (back, or ahead by more than 10 s between two
            frames: a seek, a device restart), and the timestamp the last one jumped to (-1: none).
        consumers: what went to each consumer, by consumer ID.
    """

    port: int
    mode: StreamMode
    ssrc: int
    ssrc_latched: bool
    source: tuple[Any, ...] | None
    connected: bool | None
    packets: int
    bytes: int
    bitrate: float
    lost: int
    reordered: int
    duplicates: int
    idle: float
    age: float
    wrong_ssrc: int
    wrong_source: int
    malformed: int
    refused_connections: int
    tcp_resyncs: int
    timestamp: int
    first_timestamp: int
    jumps: int
    jump_timestamp: int
    ps: PsFigures
    consumers: dict[str, ConsumerFigures] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RelayTotals:
    """Running totals of one relay over every stream and consumer, closed ones included.

    They never go backwards (Prometheus counters are built on them). ``gop_evictions``: times a
    stream's packets kept for joining consumers were let go to keep the relay within
    ``media.gop_cache_total``. On shared ports (``media.shared_port``): ``unknown_source`` packets
    no stream could be found for (strangers) and ``ambiguous_source`` packets that could be more
    than one stream's (:mod:`.demux`), both dropped.
    """

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    lost: int = 0
    wrong_ssrc: int = 0
    wrong_source: int = 0
    malformed: int = 0
    slow_consumer: int = 0
    send_errors: int = 0
    ps_errors: int = 0
    tcp_resyncs: int = 0
    gop_evictions: int = 0
    unknown_source: int = 0
    ambiguous_source: int = 0


@dataclass(frozen=True, slots=True)
class RelaySnapshot:
    """Every stream's figures and the running totals of one relay.

    Attributes:
        streams: figures by stream ID.
        totals: the running totals.
        worker: the relay's index (0 for the in-process relay).
        pid: the process it runs in.
        cpu_seconds: CPU time of that process (user + system).
    """

    streams: dict[str, StreamFigures]
    totals: RelayTotals
    worker: int = 0
    pid: int = 0
    cpu_seconds: float = 0.0


def encode_snapshot(snap: RelaySnapshot) -> list[Any]:
    """A snapshot as nested lists for the worker pipe."""
    streams = {}
    for stream_id, f in snap.streams.items():
        values = _values(f)
        values[-2] = _values(f.ps)
        values[-1] = {cid: _values(c) for cid, c in f.consumers.items()}
        streams[stream_id] = values
    return [streams, _values(snap.totals), snap.worker, snap.pid, snap.cpu_seconds]


def decode_snapshot(data: list[Any]) -> RelaySnapshot:
    """The snapshot :func:`encode_snapshot` encoded.

    Raises:
        ValueError: the data does not have the shape of a snapshot.
    """
    try:
        streams_data, totals, worker, pid, cpu = data
        streams = {}
        for stream_id, v in streams_data.items():
            *scalars, ps, consumers = v
            scalars[1] = StreamMode(scalars[1])
            if scalars[4] is not None:
                scalars[4] = tuple(scalars[4])
            figures = {cid: ConsumerFigures(c[0], (c[1][0], c[1][1]), *c[2:]) for cid, c in consumers.items()}
            streams[stream_id] = _STREAM_FIGURES(*scalars, PsFigures(*ps), figures)
        return RelaySnapshot(streams, RelayTotals(*totals), worker, pid, cpu)
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"bad relay snapshot: {exc}") from None


_STREAM_FIGURES: Any = StreamFigures  # built from a list of its fields: mypy cannot count them


def _values(record: Any) -> list[Any]:
    # a slotted dataclass lists its fields, in declaration order, in __slots__
    return [getattr(record, name) for name in record.__slots__]
