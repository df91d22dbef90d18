"""Logging: structured lines (``key=value`` text or JSON) and the SIP wire trace.

Wire lines use the prefixes ``<`` received, ``>`` sent, ``x`` dropped, and are
written at debug level to the ``gb28181gw.wire`` logger only when enabled.
Digest ``response``, ``cnonce`` and any URI password are redacted, so a trace
can be shared without handing out something a replay could use.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

WIRE = logging.getLogger("gb28181gw.wire")

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_REDACT_RE = re.compile(r'(?im)((?:response|cnonce)\s*=\s*)("[^"]*"|[^,\s]+)')
_AUTH_LINE_RE = re.compile(r"(?im)^((?:proxy-)?authorization\s*:.*)$")
_URI_PASSWORD_RE = re.compile(r"(sips?:[^:@\s<>\"]+:)[^@\s<>\"]+@")


def redact(text: str) -> str:
    """Hide digest responses/cnonces in Authorization lines and passwords in SIP URIs."""
    text = _AUTH_LINE_RE.sub(lambda m: _REDACT_RE.sub(r'\1"<redacted>"', m.group(1)), text)
    return _URI_PASSWORD_RE.sub(r"\1<redacted>@", text)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger message key=value …`` on one line (wire traces keep their line breaks)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, record.getMessage()]
        for key, value in _extras(record).items():
            text = str(value)
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
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            obj[key] = value if isinstance(value, int | float | bool | type(None)) else str(value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text", *, wire: bool = False) -> None:
    """Configure the root logger for the gateway process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
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
    text = data.decode("utf-8", "replace")
    WIRE.debug("%s %s %d bytes\n%s", prefix, peer, len(data), redact(text.rstrip("\r\n")))
