"""SDP for GB/T 28181 media sessions (RFC 4566 + GB ``y=``/``f=``, PROTOCOL.md §7.3-7.5).

:meth:`SessionDescription.parse` is tolerant of what devices send (LF-only lines, double
spaces, ``y=`` before ``m=``, empty ``f=``, unknown lines) and keeps every line it does
not interpret, so a parsed SDP serializes back line for line. ``str()`` writes CRLF lines
ending in CRLF. :class:`SsrcAllocator` hands out GB SSRCs (``D NNNNN SSSS``) unique among
live streams, with the free ``SSSS`` digits picked at random (a random source passed in) so
that the next stream's SSRC cannot be guessed, and not reused for a quarantine period (time
passed in). :func:`expected_media_host` says which address a device's media must come from.
"""

from __future__ import annotations

import ipaddress
import random
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from gb28181gw.errors import SdpError

MAX_SSRC = 0xFFFFFFFF


class SessionKind(StrEnum):
    """What a media session carries: its ``s=`` (PROTOCOL.md §7.1), as we write it."""

    PLAY = "Play"  # live
    PLAYBACK = "Playback"  # a recorded span at the pace the receiver controls (INFO, §7.9)
    DOWNLOAD = "Download"  # a recorded span sent as fast as ``a=downloadspeed`` asks, then MediaStatus 121

    @classmethod
    def of(cls, name: str) -> SessionKind | None:
        """The kind an ``s=`` names, compared case-insensitively (platforms write ``playback``); ``None`` if none."""
        folded = name.strip().lower()
        return next((kind for kind in cls if kind.value.lower() == folded), None)

    @property
    def recorded(self) -> bool:
        """Whether it carries a recorded span (``t=`` start and end, ``u=``, a history SSRC)."""
        return self is not SessionKind.PLAY

    @property
    def word(self) -> str:
        """Its name in lower case, as the admin API, metrics and logs write it."""
        return self.value.lower()


class StreamMode(StrEnum):
    """How media reaches us (receiver's view, as wvp names it, §7.5)."""

    UDP = "udp"
    TCP_PASSIVE = "tcp-passive"  # the device connects to us
    TCP_ACTIVE = "tcp-active"  # we connect to the device


@dataclass(slots=True)
class Media:
    """One ``m=`` section.

    Attributes:
        media: ``video`` or ``audio``.
        port: the port of the line.
        proto: ``RTP/AVP`` or ``TCP/RTP/AVP``.
        formats: payload types as text, in order.
        connection: this section's ``c=`` address, if it has one.
        attributes: ``a=`` lines as (name, value or None), in order.
        extra: other lines of the section (``i=``, ``b=`` …) as (type, value).
    """

    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value`` (``""`` for a flag), or ``None``."""
        for n, v in self.attributes:
            if n == name:
                return v if v is not None else ""
        return None

    @property
    def rtpmap(self) -> dict[int, str]:
        """Payload type → encoding name upper-cased (``PS``, ``H264`` …)."""
        out: dict[int, str] = {}
        for n, v in self.attributes:
            if n == "rtpmap" and v:
                pt, _, rest = v.partition(" ")
                if pt.isdigit():
                    out[int(pt)] = rest.split("/", 1)[0].strip().upper()
        return out

    @property
    def is_tcp(self) -> bool:
        """RTP over TCP (RFC 4571)."""
        return self.proto.upper().startswith("TCP/")

    @property
    def setup(self) -> str | None:
        """``active``/``passive``: the TCP role of whoever wrote this SDP (§7.5)."""
        value = self.attribute("setup")
        return value.lower() if value else None

    @property
    def direction(self) -> str | None:
        """``recvonly``, ``sendonly``, ``sendrecv`` or ``inactive``."""
        for n, _ in self.attributes:
            if n in ("recvonly", "sendonly", "sendrecv", "inactive"):
                return n
        return None


@dataclass(slots=True)
class SessionDescription:
    """A parsed SDP.

    Attributes:
        origin: the ``o=`` value.
        name: ``s=`` (``Play``, ``Playback``, ``Download``, ``Talk``).
        connection: the session ``c=`` address.
        time: the ``t=`` value (``0 0`` for live).
        uri: ``u=`` (playback: ``channelID:0``).
        media: the ``m=`` sections.
        ssrc: the ``y=`` value as sent (10 digits), or ``None``.
        format: the ``f=`` value (often empty), or ``None`` when absent.
        extra: other session lines as (type, value).
    """

    origin: str
    name: str
    connection: str | None = None
    time: str = "0 0"
    uri: str | None = None
    media: list[Media] = field(default_factory=list)
    ssrc: str | None = None
    format: str | None = None
    extra: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        """Parse an SDP body.

        Raises:
            SdpError: a line is not ``x=value``, an ``m=`` line or port is malformed, or the
                ``y=`` SSRC is not 10 digits ≤ 4294967295 (PROTOCOL.md §1.7 rule 3).
        """
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        sdp = cls(origin="", name="")
        current: Media | None = None
        for raw in text.replace("\r\n", "\n").split("\n"):
            line = raw.strip()
            if not line:
                continue
            kind, eq, value = line.partition("=")
            kind = kind.strip()
            if not eq or len(kind) != 1:
                raise SdpError(f"malformed SDP line {line[:60]!r}")
            value = value.strip()
            if kind == "m":
                current = _media(value)
                sdp.media.append(current)
            elif kind == "a":
                name, colon, aval = value.partition(":")
                attr = (name.strip(), aval.strip() if colon else None)
                if current is not None:
                    current.attributes.append(attr)
                else:
                    sdp.extra.append(("a", value))
            elif kind == "c":
                address = _connection(value)
                if current is not None:
                    current.connection = address
                else:
                    sdp.connection = address
            elif kind == "y":
                sdp.ssrc = value
                check_ssrc(value)
            elif kind == "f":
                sdp.format = value
            elif kind == "o":
                sdp.origin = value
            elif kind == "s":
                sdp.name = value
            elif kind == "t":
                sdp.time = value
            elif kind == "u":
                sdp.uri = value
            elif kind == "v":
                if value != "0":
                    raise SdpError(f"unsupported SDP version {value[:10]!r}")
            elif current is not None:
                current.extra.append((kind, value))
            else:
                sdp.extra.append((kind, value))
        if not sdp.media:
            raise SdpError("SDP without an m= line")
        return sdp

    def serialize(self) -> str:
        """The SDP text: CRLF line ends, ending in CRLF (devices want the last one)."""
        lines = ["v=0", f"o={self.origin}", f"s={self.name}"]
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        if self.connection is not None:
            lines.append(f"c=IN {'IP6' if ':' in self.connection else 'IP4'} {self.connection}")
        lines.append(f"t={self.time}")
        lines += [f"{k}={v}" for k, v in self.extra]
        for m in self.media:
            lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection is not None:
                lines.append(f"c=IN {'IP6' if ':' in m.connection else 'IP4'} {m.connection}")
            lines += [f"{k}={v}" for k, v in m.extra]
            lines += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in m.attributes]
        if self.ssrc is not None:
            lines.append(f"y={self.ssrc}")
        if self.format is not None:
            lines.append(f"f={self.format}")
        return "\r\n".join(lines) + "\r\n"

    __str__ = serialize

    def video(self) -> Media | None:
        """The first video section (GB live video always has one)."""
        return next((m for m in self.media if m.media == "video"), None)

    @property
    def ssrc_value(self) -> int | None:
        """The SSRC as the integer RTP carries (``0200000001`` → 200000001)."""
        return int(self.ssrc) if self.ssrc else None

    def media_address(self, m: Media) -> str | None:
        """Where media of ``m`` goes (its own ``c=`` or the session's)."""
        return m.connection or self.connection


def _media(value: str) -> Media:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"malformed m= line {value[:60]!r}")
    port_text = parts[1].split("/", 1)[0]
    if not port_text.isdigit() or int(port_text) > 65535:
        raise SdpError(f"malformed m= port {parts[1][:20]!r}")
    return Media(parts[0], int(port_text), parts[2], parts[3:])


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0].upper() != "IN":
        raise SdpError(f"malformed c= line {value[:60]!r}")
    return parts[2].split("/", 1)[0]


def check_ssrc(value: str) -> int:
    """A GB ``y=`` value must be 10 decimal digits and fit 32 bits; return its integer."""
    if len(value) != 10 or not value.isdigit() or not value.isascii() or int(value) > MAX_SSRC:
        raise SdpError(f"y= SSRC {value[:20]!r} is not 10 digits up to 4294967295")
    return int(value)


def play_offer(
    *,
    channel_id: str,
    our_id: str,
    media_ip: str,
    port: int,
    ssrc: str,
    mode: StreamMode = StreamMode.UDP,
    kind: SessionKind = SessionKind.PLAY,
    span: tuple[int, int] = (0, 0),
    download_speed: int | None = None,
    format: str = "",
) -> SessionDescription:
    """The INVITE offer (PROTOCOL.md §7.7, §7.8): PS first, recvonly, our SSRC.

    For TCP, ``a=setup`` says our role: passive (the device connects) or active (we do). A
    recorded kind adds ``u=CHANNEL:0`` and ``t=START END`` (epoch seconds); Download adds
    ``a=downloadspeed:N`` (after the rtpmaps, before ``y=``, as §7.8.2 shows). ``format`` is the
    ``f=`` value (empty by default: devices take it).
    """
    tcp = mode is not StreamMode.UDP
    attrs: list[tuple[str, str | None]] = [("recvonly", None)]
    if tcp:
        attrs += [("setup", "passive" if mode is StreamMode.TCP_PASSIVE else "active"), ("connection", "new")]
    attrs += [("rtpmap", "96 PS/90000"), ("rtpmap", "98 H264/90000"), ("rtpmap", "97 MPEG4/90000")]
    if kind is SessionKind.DOWNLOAD:
        attrs.append(("downloadspeed", str(download_speed or 1)))
    return SessionDescription(
        origin=f"{our_id} 0 0 IN IP4 {media_ip}",
        name=kind.value,
        connection=media_ip,
        time=f"{span[0]} {span[1]}" if kind.recorded else "0 0",
        uri=f"{channel_id}:0" if kind.recorded else None,
        media=[Media("video", port, "TCP/RTP/AVP" if tcp else "RTP/AVP", ["96", "98", "97"], attributes=attrs)],
        ssrc=ssrc,
        format=format,
    )


def span_of(time: str) -> tuple[int, int]:
    """The (start, end) epoch seconds of a recorded session's ``t=`` value.

    Raises:
        SdpError: not two whole numbers, or the end not after the start.
    """
    parts = time.split()
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 12 for p in parts):
        raise SdpError(f"t={time[:40]!r} is not two epoch seconds (START END)")
    start, end = int(parts[0]), int(parts[1])
    if end <= start:
        raise SdpError(f"t={time[:40]!r}: the end is not after the start")
    return start, end


def file_size(sdp: SessionDescription) -> int | None:
    """The ``a=filesize`` of a Download answer in bytes; ``None`` when absent, negative (Hikvision's ``-1``, M8) or malformed."""
    value = file_size_text(sdp)
    if value is None or not value.isdigit():  # file_size_text's digits are ASCII: int() takes them
        return None
    return int(value)


def file_size_text(sdp: SessionDescription) -> str | None:
    """The ``a=filesize`` value as the answer wrote it, when a whole number (``-1`` included, M8), else ``None``.

    A relay passes up what the device said, unknown included (PROTOCOL.md §9.6).
    """
    video = sdp.video()
    value = (video.attribute("filesize") if video is not None else None) or next(
        (v.partition(":")[2] for k, v in sdp.extra if k == "a" and v.startswith("filesize:")), None
    )
    text = (value or "").strip()
    digits = text.removeprefix("-")
    # ASCII only: "²" is a digit to isdigit() and a ValueError to int() (a device's answer must not crash us)
    return text if digits.isascii() and digits.isdigit() and len(text) <= 20 else None


def download_speed(sdp: SessionDescription) -> int:
    """The ``a=downloadspeed`` of a Download offer: 1 when absent or unreadable (§7.3); at least 1."""
    video = sdp.video()
    value = (video.attribute("downloadspeed") if video is not None else None) or ""
    value = value.strip()
    return max(1, int(value)) if value.isascii() and value.isdigit() and len(value) <= 4 else 1


class SsrcAllocator:
    """GB SSRCs (PROTOCOL.md §7.4.1): ``0``/``1`` (live/history) + digits 4-8 of our ID + 4 random digits.

    The last four digits are picked at random among the free ones (O(1): a list of free
    sequences, the chosen one swapped with the last), never ``0000``.

    Args:
        server_id: our 20-digit ID.
        quarantine: seconds a released SSRC is not handed out again (media servers bind an SSRC
            to a source address for a while, M3).
        rng: the random source the digits are picked with (the shell passes :class:`random.SystemRandom`).
        sequences: the last four digits it may hand out (``media.ssrc_min``-``ssrc_max``): nodes of
            one gateway ID (several on a Redis store) each take a range of their own, so that no
            two hand out one SSRC without a shared counter (issue 17).
    """

    def __init__(
        self, server_id: str, *, quarantine: float = 15.0, rng: random.Random, sequences: range = range(1, 10000)
    ) -> None:
        self.domain_part = server_id[3:8]
        self.quarantine = quarantine
        self._rng = rng
        self._live: set[str] = set()
        self._cooling: deque[tuple[float, str]] = deque()
        if not sequences or sequences.start < 1 or sequences.stop > 10000:
            raise ValueError(f"SSRC sequences {sequences} are not within 1-9999")
        self.sequences = sequences
        self._free: dict[str, list[int]] = {"0": list(sequences), "1": list(sequences)}

    def allocate(self, now: float, *, history: bool = False) -> str:
        """A fresh SSRC string.

        Raises:
            SdpError: all 9,999 sequences of that kind are in use or cooling down.
        """
        while self._cooling and self._cooling[0][0] <= now:
            ssrc = self._cooling.popleft()[1]
            self._free[ssrc[0]].append(int(ssrc[6:]))
        kind = "1" if history else "0"
        free = self._free[kind]
        if not free:
            n = len(self.sequences)
            raise SdpError(f"no free SSRC: {n:,} streams of this kind are active or cooling down")
        i = self._rng.randrange(len(free))
        free[i], free[-1] = free[-1], free[i]
        ssrc = f"{kind}{self.domain_part}{free.pop():04d}"
        self._live.add(ssrc)
        return ssrc

    def release(self, ssrc: str, now: float) -> None:
        """Give ``ssrc`` back; it can be handed out again after the quarantine (ignored if not handed out)."""
        if ssrc in self._live:
            self._live.discard(ssrc)
            self._cooling.append((now + self.quarantine, ssrc))

    def __len__(self) -> int:
        return len(self._live) + len(self._cooling)

    @property
    def active(self) -> int:
        """SSRCs handed out and not given back (cooling ones excluded)."""
        return len(self._live)


def expected_media_host(answer_host: str, signalling_host: str) -> str:
    """The host a device's media must come from: the one its SDP answer names (``c=``), or, when
    that is not a usable unicast address or is a private one while the device reaches us from a
    public address (it is behind NAT), the host its SIP came from.

    Media from any other host is dropped, so a stranger cannot take a stream over (issue 10).
    """
    try:
        named = ipaddress.ip_address(answer_host)
    except ValueError:
        return signalling_host  # empty, or a name we do not resolve on the signalling path
    if named.is_unspecified or named.is_multicast or named.is_reserved:
        return signalling_host
    try:
        sip = ipaddress.ip_address(signalling_host)
    except ValueError:
        return str(named)
    if not named.is_global and sip.is_global:
        return signalling_host
    return str(named)
