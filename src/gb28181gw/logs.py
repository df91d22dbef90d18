"""Logging: structured lines (``key=value`` text or JSON) and the SIP wire trace.

Wire lines use the prefixes ``<`` received, ``>`` sent, ``x`` dropped, and are
written at debug level to the ``gb28181gw.wire`` logger only when enabled.
Digest ``response``, ``cnonce`` and any URI password are redacted, so a trace
can be shared without handing out something a replay could use.

What peers send reaches log lines (IDs, reasons, header values), so every line is
defended against them: control characters and undecodable bytes are escaped, so a
value cannot forge a second line or stop the handler (a lone surrogate would make
the stream raise), and :class:`RateLimit` lets at most a burst of lines of one kind
through per window, summing up the rest, so a flood of garbage cannot flood the disk.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

WIRE = logging.getLogger("gb28181gw.wire")

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_REDACT_RE = re.compile(r'(?im)((?:response|cnonce)\s*=\s*)("[^"]*"|[^,\s]+)')
_AUTH_LINE_RE = re.compile(r"(?im)^((?:proxy-)?authorization\s*:.*)$")
_URI_PASSWORD_RE = re.compile(r"(sips?:[^:@\s<>\"]+:)[^@\s<>\"]+@")


# C0 controls, DEL, C1 controls and lone surrogates (undecodable bytes kept by surrogateescape)
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# the wire trace keeps its line structure and tabs
_UNSAFE_WIRE_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_char(m: re.Match[str]) -> str:
    c = ord(m.group())
    if 0xDC80 <= c <= 0xDCFF:
        return f"\\x{c - 0xDC00:02x}"  # the byte the peer sent
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape(text: str) -> str:
    """``text`` with control characters and undecodable bytes written as ``\\xNN`` escapes."""
    return _UNSAFE_RE.sub(_escape_char, text) if _UNSAFE_RE.search(text) else text


def redact(text: str) -> str:
    """Hide digest responses/cnonces in Authorization lines and passwords in SIP URIs."""
    text = _AUTH_LINE_RE.sub(lambda m: _REDACT_RE.sub(r'\1"<redacted>"', m.group(1)), text)
    return _URI_PASSWORD_RE.sub(r"\1<redacted>@", text)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


#: The zone of log timestamps: the site's (``gateway.time_zone``), set by :func:`setup_logging`.
#: Each timestamp carries its offset (``2026-12-02T15:04:05.123+08:00``), so lines stay unambiguous.
_zone: tzinfo = timezone(timedelta(hours=8))


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, _zone).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.name == WIRE.name:
        return _UNSAFE_WIRE_RE.sub(_escape_char, text)
    return escape(text)


class RateLimit(logging.Filter):
    """Let at most ``burst`` lines of one kind through per ``window`` seconds; count the rest.

    A kind is the logger and the message template (the values differ, the line does not),
    so one peer's flood of garbage is logged a few times and then summed up: the first line
    of a kind in a new window carries ``suppressed=N`` for the window before, and
    :meth:`summarize` (called periodically by the gateway) logs the counts of kinds that
    went quiet. The wire trace, asked for explicitly, is never limited.

    Args:
        burst: lines of one kind let through per window.
        window: seconds.
    """

    def __init__(self, *, burst: int = 20, window: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}  # kind → (window start, lines seen)
        self.suppressed: Counter[tuple[str, str]] = Counter()  # not yet summed up
        self.total_suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == WIRE.name or record.name == _SUMMARY.name:
            return True
        kind = (record.name, str(record.msg))
        start, seen = self._windows.get(kind, (0.0, 0))
        if record.created - start >= self.window:
            if len(self._windows) >= _MAX_KINDS and kind not in self._windows:
                self._forget(record.created)
            self._windows[kind] = (record.created, 1)
            if missed := self.suppressed.pop(kind, 0):
                record.suppressed = missed
            return True
        self._windows[kind] = (start, seen + 1)
        if seen < self.burst:
            return True
        self.suppressed[kind] += 1
        self.total_suppressed += 1
        return False

    def _forget(self, now: float) -> None:
        # bounded memory: kinds are message templates (few) but a caller might format its own
        for kind, (start, _) in list(self._windows.items()):
            if now - start >= self.window:
                del self._windows[kind]

    def summarize(self, now: float) -> None:
        """Log the counts of lines suppressed in windows that have ended (and forget those windows)."""
        for kind, count in list(self.suppressed.items()):
            start, _ = self._windows.get(kind, (0.0, 0))
            if now - start >= self.window:
                del self.suppressed[kind]
                self._windows.pop(kind, None)
                _SUMMARY.warning(
                    "log lines suppressed", extra={"logger_name": kind[0], "line": kind[1], "count": count}
                )


class Throttle:
    """At most one log line per kind per ``interval`` seconds, with a count of what was held back.

    For input a peer controls (unparseable datagrams, broken TCP framing, oversized messages):
    it is counted always (metrics) and described now and then. :meth:`allow` says whether to
    log this one and how many of its kind were held back since the last line; :meth:`summaries`
    hands out the counts of kinds that went quiet, for one summary line each. Time comes in as
    ``now``. Kinds are few fixed words; past ``max_kinds`` the quiet ones are forgotten.
    """

    def __init__(self, interval: float, *, max_kinds: int = 256) -> None:
        self.interval = interval
        self.max_kinds = max_kinds
        self._last: dict[str, float] = {}  # kind → when its last line was let through
        self._held: Counter[str] = Counter()  # kind → lines held back since
        #: lines held back in all, ever
        self.total_held = 0

    def allow(self, kind: str, now: float) -> int | None:
        """``None``: hold this line back (it is counted); else log it, saying this many were held back."""
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] += 1
            self.total_held += 1
            return None
        if last is None and len(self._last) >= self.max_kinds:
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval or self._held[k]}
        self._last[kind] = now
        return self._held.pop(kind, 0)

    def summaries(self, now: float, *, everything: bool = False) -> list[tuple[str, int]]:
        """(kind, lines held back) for each kind whose interval ended with lines held back
        (``everything``: each kind with lines held back, as at shutdown)."""
        out = []
        for kind, held in list(self._held.items()):
            if everything or now - self._last.get(kind, 0.0) >= self.interval:
                del self._held[kind]
                self._last[kind] = now  # the summary is that interval's line
                out.append((kind, held))
        return out


_SUMMARY = logging.getLogger("gb28181gw.logs")
#: Kinds remembered before ended windows are forgotten.
_MAX_KINDS = 4096
RATE_LIMIT = RateLimit()


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger message key=value …`` on one line (wire traces keep their line breaks)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, _message(record)]
        for key, value in _extras(record).items():
            text = escape(str(value))
            parts.append(f"{key}={json.dumps(text, ensure_ascii=False) if (' ' in text or not text) else text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record),
        }
        for key, value in _extras(record).items():
            obj[key] = value if isinstance(value, int | float | bool | type(None)) else escape(str(value))
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


def setup_logging(
    level: str = "info", fmt: str = "text", *, wire: bool = False, time_zone: tzinfo | None = None
) -> None:
    """Configure the root logger for the gateway process; timestamps in ``time_zone`` (default Beijing)."""
    global _zone
    if time_zone is not None:
        _zone = time_zone
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RATE_LIMIT)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    WIRE.setLevel(logging.DEBUG if wire else logging.CRITICAL + 1)
    WIRE.propagate = True
    if wire and root.level > logging.DEBUG:
        # the wire trace is debug-level output: let it through without the rest of debug
        root.setLevel(logging.DEBUG)
        for name in ("asyncio", "aiohttp"):
            logging.getLogger(name).setLevel(level.upper())
        logging.getLogger("gb28181gw").setLevel(level.upper())


def log_wire(prefix: str, peer: object, data: bytes) -> None:
    """Write one wire-trace entry (caller checks ``WIRE.isEnabledFor(DEBUG)`` first)."""
    text = data.decode("utf-8", "backslashreplace")
    WIRE.debug("%s %s %d bytes\n%s", prefix, peer, len(data), redact(text.rstrip("\r\n")))
