"""Small grammar helpers shared by the header and URI parsers (RFC 3261 §25.1).

``generic-param`` lists, quoted strings and comma-separated header values, all
tolerant of the linear white space (LWS) RFC 3261 allows around separators.
"""

from __future__ import annotations

from collections.abc import Iterator

from gb28181gw.errors import SipParseError


def unquote(value: str) -> str:
    """Remove the quotes of a ``quoted-string`` and resolve its ``quoted-pair`` escapes."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        if "\\" not in inner:
            return inner
        out: list[str] = []
        it = iter(inner)
        for ch in it:
            if ch == "\\":
                out.append(next(it, ""))
            else:
                out.append(ch)
        return "".join(out)
    return value


def quote(value: str) -> str:
    """Make a ``quoted-string`` of ``value``, escaping ``"`` and ``\\``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquoted_positions(text: str, sep: str, *, angles: bool) -> Iterator[int]:
    """Positions of ``sep`` outside quoted strings (and outside ``<...>`` when ``angles``)."""
    in_quote = False
    in_angle = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == sep and not in_angle:
            yield i
        elif angles and ch == "<":
            in_angle = True
        elif angles and ch == ">":
            in_angle = False
        i += 1
    if in_quote:
        raise SipParseError(f"unterminated quoted string in {text[:80]!r}")


def split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not inside a quoted string or ``<...>``."""
    if sep not in text or ('"' not in text and "<" not in text):
        if '"' in text and text.count('"') % 2 and "\\" not in text:
            raise SipParseError(f"unterminated quoted string in {text[:80]!r}")
        return text.split(sep)
    parts: list[str] = []
    start = 0
    for i in _unquoted_positions(text, sep, angles=True):
        parts.append(text[start:i])
        start = i + 1
    parts.append(text[start:])
    return parts


def find_outside_quotes(text: str, sep: str) -> int:
    """Index of the first ``sep`` outside a quoted string, or -1."""
    if '"' not in text:
        return text.find(sep)
    for i in _unquoted_positions(text, sep, angles=False):
        return i
    return -1


def split_commas(value: str) -> list[str]:
    """Split a header value made of comma-separated elements (RFC 3261 §7.3.1)."""
    return [part.strip() for part in split_outside_quotes(value, ",") if part.strip()]


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``name[=value]`` pairs separated by ``;`` (the leading ``;`` already removed).

    Names are lower-cased (parameter names are case-insensitive); values keep
    their case and their quotes, and a name without a value maps to ``None``.
    """
    params: dict[str, str | None] = {}
    for part in split_outside_quotes(text, ";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not name:
            if eq or value.strip():
                raise SipParseError(f"parameter without a name in {text[:80]!r}")
            continue
        params[name.lower()] = value.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """``;name=value`` text for ``params`` (values are written as stored)."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
