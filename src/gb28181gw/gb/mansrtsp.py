"""MANSRTSP: playback control carried in INFO bodies (GB/T 28181 Annex B, PROTOCOL.md §7.9), without I/O.

A request is an RTSP-like text: ``PLAY RTSP/1.0`` / ``CSeq: n`` / ``Scale: 2.0`` or
``Range: npt=100-`` / ``PAUSE`` with ``PauseTime: now`` / ``TEARDOWN``; the answer rides in the
200 of the INFO as ``RTSP/1.0 200 OK`` / ``CSeq: n`` / ``RTP-Info: …`` (many devices answer
an empty 200). Devices and platforms write the version as ``RTSP/1.0`` or ``MANSRTSP/1.0``:
both are read; we write ``RTSP/1.0``, what every device takes. Lines end in CRLF, LF alone is
read too; each line we write ends in CRLF and no blank line follows (the body's length says
where it ends, as in the standard's examples).

The body's ``CSeq`` counts control requests of one dialog and is independent of the INFO's
SIP CSeq; a relay (a superior's control relayed to the device, §9.6) renumbers it both ways
with :meth:`RtspRequest.with_cseq` / :meth:`RtspResponse.with_cseq`, every other line kept.

:func:`pause`, :func:`resume`, :func:`seek`, :func:`speed` and :func:`teardown` build what the
operator asks for, in the forms the devices take (``Scale: 2.0``, not wvp's ``2.000000``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from gb28181gw.errors import MansrtspError

__all__ = [
    "CONTENT_TYPE",
    "MAX_SCALE",
    "SCALES",
    "RtspRequest",
    "RtspResponse",
    "Verb",
    "format_scale",
    "is_mansrtsp",
    "parse_request",
    "parse_response",
    "pause",
    "resume",
    "seek",
    "speed",
    "teardown",
]

#: The Content-Type of INFO bodies (compared case-insensitively on receipt).
CONTENT_TYPE = "Application/MANSRTSP"
#: The speeds every device must take (Annex B.2.4); others are passed on for the device to judge.
SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
#: The fastest speed asked for (and 1/MAX_SCALE the slowest): devices go to 32 or 64 at most.
MAX_SCALE = 256.0
#: Longest body read: a control request is a few lines.
MAX_BODY = 4096
_VERSIONS = ("RTSP/1.0", "MANSRTSP/1.0")


class Verb(StrEnum):
    """The control methods (Annex B.2)."""

    PLAY = "PLAY"
    PAUSE = "PAUSE"
    TEARDOWN = "TEARDOWN"


def is_mansrtsp(content_type: str | None) -> bool:
    """Whether a Content-Type names a MANSRTSP body (parameters and case ignored)."""
    return (content_type or "").split(";")[0].strip().lower() == CONTENT_TYPE.lower()


def format_scale(scale: float) -> str:
    """A Scale value as devices take it: ``2.0``, ``0.25``, ``-1.0`` (at most six decimals, at least one)."""
    # fixed notation: repr() writes 1e+16, which no device reads as a number
    text = f"{float(scale):.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _lines(body: bytes | str) -> list[str]:
    if isinstance(body, bytes):
        if len(body) > MAX_BODY:
            raise MansrtspError(f"MANSRTSP body of {len(body)} bytes (at most {MAX_BODY})")
        body = body.decode("utf-8", "replace")
    lines = [line.strip() for line in body.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise MansrtspError("empty MANSRTSP body")
    return lines


def _headers(lines: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for line in lines:
        if not line:
            break  # a blank line ends the headers (a body after it is not ours to read)
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or " " in name.strip():
            raise MansrtspError(f"malformed MANSRTSP header line {line[:60]!r}")
        out.append((name.strip(), value.strip()))
    return tuple(out)


def _cseq(headers: tuple[tuple[str, str], ...]) -> int:
    value = next((v for n, v in headers if n.lower() == "cseq"), None)
    if value is None:
        raise MansrtspError("MANSRTSP body without CSeq")
    if not (value.isascii() and value.isdigit()) or len(value) > 10:  # "²" is a digit to isdigit(), not to int()
        raise MansrtspError(f"MANSRTSP CSeq {value[:20]!r} is not a number")
    return int(value)


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    name = name.lower()
    return next((v for n, v in headers if n.lower() == name), None)


def _serialize(first: str, cseq: int, headers: tuple[tuple[str, str], ...]) -> bytes:
    lines = [first, f"CSeq: {cseq}", *(f"{n}: {v}" for n, v in headers if n.lower() != "cseq")]
    return ("\r\n".join(lines) + "\r\n").encode()


class _Headers:
    """What requests and answers share: their header lines, looked up by name."""

    __slots__ = ()
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``None``."""
        return _header(self.headers, name)


@dataclass(frozen=True, slots=True)
class RtspRequest(_Headers):
    """A control request.

    Attributes:
        verb: PLAY, PAUSE or TEARDOWN.
        cseq: the body's own sequence number.
        headers: the other header lines, in order, as (name, value) (``CSeq`` not among them).
        version: as written (``RTSP/1.0`` or ``MANSRTSP/1.0``).
    """

    verb: Verb
    cseq: int
    headers: tuple[tuple[str, str], ...] = ()
    version: str = "RTSP/1.0"

    @property
    def scale(self) -> float | None:
        """The ``Scale:`` asked for, or ``None`` (resume at the speed before).

        Raises:
            MansrtspError: it is not a finite non-zero number.
        """
        value = self.header("scale")
        if value is None:
            return None
        try:
            scale = float(value)
        except ValueError:
            raise MansrtspError(f"Scale {value[:20]!r} is not a number") from None
        if not math.isfinite(scale) or scale == 0:
            raise MansrtspError(f"Scale {value[:20]!r} is not a speed")
        return scale

    @property
    def range_start(self) -> float | None:
        """The seek position of ``Range: npt=START-`` in seconds from the span's start; ``None``
        for no Range or ``npt=now-`` (resume where it is).

        Raises:
            MansrtspError: a Range that is not ``npt=`` with a start of seconds (or ``now``).
        """
        value = self.header("range")
        if value is None:
            return None
        unit, eq, spec = value.partition("=")
        if unit.strip().lower() != "npt" or not eq:
            raise MansrtspError(f"Range {value[:40]!r} is not npt=START-")
        start = spec.split("-", 1)[0].strip()
        if start.lower() in ("now", ""):
            return None
        try:
            seconds = float(start)
        except ValueError:
            raise MansrtspError(f"Range start {start[:20]!r} is not seconds") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise MansrtspError(f"Range start {start[:20]!r} is not a position")
        return seconds

    def with_cseq(self, cseq: int) -> RtspRequest:
        """The same request numbered ``cseq`` (relayed into another dialog)."""
        return replace(self, cseq=cseq)

    def serialize(self) -> bytes:
        """The body: each line CRLF-terminated, our version token, CSeq second."""
        return _serialize(f"{self.verb} RTSP/1.0", self.cseq, self.headers)

    def describe(self) -> str:
        """Short words for logs and errors: ``PLAY Scale 2.0``, ``PLAY Range npt=100-``, ``PAUSE``."""
        extra = [f"{n} {v}" for n, v in self.headers if n.lower() in ("scale", "range")]
        return " ".join([str(self.verb), *extra])


@dataclass(frozen=True, slots=True)
class RtspResponse(_Headers):
    """A device's answer to a control request (the body of its 200 to the INFO).

    Attributes:
        status / reason: ``200 OK``, ``400 Bad Request`` …
        cseq: the request's body CSeq it answers.
        headers: the other header lines (``RTP-Info``, ``Range``, ``Scale`` …), ``CSeq`` not among them.
        version: as written.
    """

    status: int
    reason: str
    cseq: int
    headers: tuple[tuple[str, str], ...] = ()
    version: str = "RTSP/1.0"

    @property
    def rtp_info(self) -> str | None:
        """``RTP-Info`` (``seq=…;rtptime=…``: where the new position starts after a seek), or ``None``."""
        return self.header("rtp-info")

    def with_cseq(self, cseq: int) -> RtspResponse:
        """The same answer numbered ``cseq`` (relayed back into the asker's dialog)."""
        return replace(self, cseq=cseq)

    def serialize(self) -> bytes:
        """The body, as :meth:`RtspRequest.serialize` writes one."""
        return _serialize(f"{self.version} {self.status} {self.reason}".rstrip(), self.cseq, self.headers)


def parse_request(body: bytes | str) -> RtspRequest:
    """Parse a control request.

    Raises:
        MansrtspError: empty, not ``VERB RTSP/1.0`` or ``VERB MANSRTSP/1.0``, an unknown verb, a
            malformed header line, no CSeq, or a Scale or Range that cannot be read.
    """
    lines = _lines(body)
    parts = lines[0].split()
    if len(parts) != 2 or parts[1].upper() not in _VERSIONS:
        raise MansrtspError(f"not a MANSRTSP request line: {lines[0][:60]!r}")
    try:
        verb = Verb(parts[0].upper())
    except ValueError:
        raise MansrtspError(f"unknown MANSRTSP method {parts[0][:20]!r} (PLAY, PAUSE, TEARDOWN)") from None
    headers = _headers(lines[1:])
    request = RtspRequest(verb, _cseq(headers), tuple(h for h in headers if h[0].lower() != "cseq"), parts[1])
    request.scale, request.range_start  # noqa: B018 - read once, so a bad one fails here and not at its use
    return request


def parse_response(body: bytes | str) -> RtspResponse:
    """Parse a device's control answer.

    Raises:
        MansrtspError: empty, not ``RTSP/1.0 CODE REASON`` (or ``MANSRTSP/1.0``), a malformed header, no CSeq.
    """
    lines = _lines(body)
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.strip().partition(" ")
    if version.upper() not in _VERSIONS or not (
        len(code) == 3 and code.isascii() and code.isdigit() and code[0] in "123456"
    ):
        raise MansrtspError(f"not a MANSRTSP status line: {lines[0][:60]!r}")
    headers = _headers(lines[1:])
    return RtspResponse(
        int(code), reason.strip(), _cseq(headers), tuple(h for h in headers if h[0].lower() != "cseq"), version
    )


def pause(cseq: int) -> RtspRequest:
    """Pause where it is (``PauseTime: now``)."""
    return RtspRequest(Verb.PAUSE, cseq, (("PauseTime", "now"),))


def resume(cseq: int) -> RtspRequest:
    """Go on from where it paused, at the speed before (``Range: npt=now-``)."""
    return RtspRequest(Verb.PLAY, cseq, (("Range", "npt=now-"),))


def seek(cseq: int, seconds: float) -> RtspRequest:
    """Go to ``seconds`` from the span's start (``Range: npt=100-``; whole seconds written without decimals).

    Raises:
        MansrtspError: a negative or non-finite position.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise MansrtspError(f"cannot seek to {seconds!r}: a position is seconds from the start, 0 or more")
    text = str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.3f}".rstrip("0").rstrip(".")
    return RtspRequest(Verb.PLAY, cseq, (("Range", f"npt={text}-"),))


def speed(cseq: int, scale: float) -> RtspRequest:
    """Play at ``scale`` (``Scale: 2.0``; only Scale, no Range).

    Raises:
        MansrtspError: zero, a non-finite number, or beyond :data:`MAX_SCALE` either way.
    """
    if not math.isfinite(scale) or not 1 / MAX_SCALE <= abs(scale) <= MAX_SCALE:
        raise MansrtspError(
            f"cannot play at speed {scale!r}: a speed is 1/{MAX_SCALE:g} to {MAX_SCALE:g} times (or minus)"
        )
    return RtspRequest(Verb.PLAY, cseq, (("Scale", format_scale(scale)),))


def teardown(cseq: int) -> RtspRequest:
    """End the playback (most platforms send BYE instead)."""
    return RtspRequest(Verb.TEARDOWN, cseq)
