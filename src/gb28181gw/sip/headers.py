"""SIP header fields: an ordered, case-insensitive multi-dict and typed views.

Header names are case-insensitive and have compact forms (RFC 3261 §7.3.3,
§20); lookups accept any spelling. The container keeps every header as it came
(name spelling, order, repeats) so that a parsed message serializes back to the
same header section. Typed views (:class:`Via`, :class:`NameAddr`,
:class:`CSeq`) are parsed on demand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from gb28181gw.errors import SipParseError

from .params import find_outside_quotes, format_params, parse_params, quote, split_commas, unquote
from .uri import SipUri, parse_hostport

#: RFC 3261 §7.3.3 compact forms, plus the ones later RFCs define (RFC 3265 ``o``/``u``,
#: RFC 3515 ``r``, RFC 3892 ``b``, RFC 4028 ``x``, RFC 3841 ``a``/``j``, RFC 4474 ``y``/``n``).
COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "y": "identity",
    "n": "identity-info",
}

#: How we spell header names we write ourselves.
CANONICAL_NAMES = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "x-gb-ver": "X-GB-ver",
}

#: Headers whose values are comma-separated lists (RFC 3261 §7.3.1); others are never split.
LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "path",  # RFC 3327 §4
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "allow-events",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "in-reply-to",
    }
)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_NAME_CACHE: dict[str, str] = {}
_FAST_HOST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_NAME_CACHE_MAX = 4096


def header_key(name: str) -> str:
    """The lookup key of a header name: stripped, lower case, compact form expanded.

    Raises:
        SipParseError: (400) if the name is not a ``token``.
    """
    key = _NAME_CACHE.get(name)
    if key is not None:
        return key
    stripped = name.strip()
    if name[:1] in (" ", "\t") or not _TOKEN_RE.fullmatch(stripped):
        raise SipParseError(f"malformed header name {stripped[:40]!r}")
    lower = stripped.lower()
    key = COMPACT_FORMS.get(lower, lower)
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[name] = key
    return key


def canonical_name(key: str) -> str:
    """Our spelling of a header name for output (``call-id`` → ``Call-ID``)."""
    name = CANONICAL_NAMES.get(key)
    if name is None:
        name = "-".join(part.capitalize() for part in key.split("-"))
        CANONICAL_NAMES[key] = name
    return name


class Headers:
    """Ordered multi-dict of header fields with case-insensitive, compact-aware lookup.

    Each entry keeps its name as written and its raw value: the text after the
    colon, leading white space included, so that a parsed header section
    serializes back byte for byte. Accessors return values stripped. Keys for
    lookup are :func:`header_key` of the name.
    """

    __slots__ = ("_keys", "_names", "_values")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._keys: list[str] = []
        self._names: list[str] = []
        self._values: list[str] = []
        if items:
            for name, value in items:
                self.add(name, value)

    @classmethod
    def _from_parsed(cls, keys: list[str], names: list[str], values: list[str]) -> Headers:
        h = cls.__new__(cls)
        h._keys, h._names, h._values = keys, names, values
        return h

    def copy(self) -> Headers:
        """A shallow copy that can be changed independently."""
        return Headers._from_parsed(self._keys[:], self._names[:], self._values[:])

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (any spelling), stripped, or ``default``."""
        key = _NAME_CACHE.get(name) or header_key(name)
        try:
            return self._values[self._keys.index(key)].strip()
        except ValueError:
            return default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and header_key(name) in self._keys

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; list headers are also split at their commas."""
        key = header_key(name)
        values = [v.strip() for k, v in zip(self._keys, self._values, strict=True) if k == key]
        if key in LIST_HEADERS:
            return [item for v in values for item in split_commas(v)]
        return values

    def add(self, name: str, value: str) -> None:
        """Append a header field."""
        self._keys.append(_NAME_CACHE.get(name) or header_key(name))
        self._names.append(name)
        self._values.append(" " + value)

    def extend(self, items: Iterable[tuple[str, str]]) -> None:
        """Append several header fields."""
        for name, value in items:
            self._keys.append(_NAME_CACHE.get(name) or header_key(name))
            self._names.append(name)
            self._values.append(" " + value)

    def prepend(self, name: str, value: str) -> None:
        """Insert a header field before all others (a new top Via)."""
        self._keys.insert(0, header_key(name))
        self._names.insert(0, name)
        self._values.insert(0, " " + value)

    def set_first(self, name: str, value: str) -> None:
        """Replace the value of the first ``name`` only, keeping later ones.

        Raises:
            ValueError: if there is no ``name``.
        """
        key = header_key(name)
        self._values[self._keys.index(key)] = " " + value

    def set(self, name: str, value: str) -> None:
        """Replace the first ``name`` in place (removing any others), or append it."""
        key = header_key(name)
        try:
            i = self._keys.index(key)
        except ValueError:
            self.add(name, value)
            return
        self._values[i] = " " + value
        self._remove_from(key, i + 1)

    def remove(self, name: str) -> None:
        """Remove every ``name``."""
        self._remove_from(header_key(name), 0)

    def _remove_from(self, key: str, start: int) -> None:
        i = len(self._keys) - 1
        while i >= start:
            if self._keys[i] == key:
                del self._keys[i], self._names[i], self._values[i]
            i -= 1

    def items(self) -> Iterator[tuple[str, str]]:
        """(name as written, stripped value) pairs in order."""
        return ((n, v.strip()) for n, v in zip(self._names, self._values, strict=True))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return self.items()

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Headers({list(self.items())!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._keys == other._keys and [v.strip() for v in self._values] == [v.strip() for v in other._values]


# --- typed header values ---------------------------------------------------------------


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 §20.42): ``SIP/2.0/UDP host:port;branch=...``.

    Attributes:
        transport: upper-case transport token (``UDP``, ``TCP`` …).
        host: sent-by host (IPv6 in brackets).
        port: sent-by port, or ``None``.
        params: parameters in order; names lower-cased, ``rport`` without value maps to ``None``.
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> Via:
        """Parse one Via value (not a comma list); raise 400 when malformed."""
        if value.startswith("SIP/2.0/"):
            # fast path for the common shape: SIP/2.0/UDP host:port;k=v;k
            transport, sp, rest = value[8:].partition(" ")
            sent_by, semi, param_text = rest.partition(";")
            host, colon, port_text = sent_by.partition(":")
            if (
                sp
                and transport.isalpha()
                and transport.isascii()
                and host
                and _FAST_HOST.issuperset(host)
                and (not colon or (port_text.isdigit() and port_text.isascii() and len(port_text) <= 5))
                and '"' not in param_text
                and " " not in param_text
            ):
                port = int(port_text) if colon else None
                if port is None or port <= 65535:
                    params: dict[str, str | None] = {}
                    if semi:
                        for item in param_text.split(";"):
                            k, eq, v = item.partition("=")
                            if not k:
                                raise SipParseError(f"parameter without a name in {value[:80]!r}")
                            params[k.lower()] = v if eq else None
                    return cls(transport.upper(), host, port, params)
        proto, sep, rest = value.partition("/")
        if not sep or proto.strip().upper() != "SIP":
            raise SipParseError(f"malformed Via {value[:80]!r}")
        version, sep, rest = rest.partition("/")
        if not sep or version.strip() != "2.0":
            raise SipParseError(f"malformed Via {value[:80]!r}")
        rest = rest.lstrip()
        # transport token, then LWS, then sent-by
        i = 0
        n = len(rest)
        while i < n and rest[i] not in " \t\r\n":
            i += 1
        transport = rest[:i].upper()
        if not transport or not _TOKEN_RE.fullmatch(transport):
            raise SipParseError(f"malformed Via transport {value[:80]!r}")
        sent_by, semi, param_text = rest[i:].partition(";")
        host, port = parse_hostport(sent_by, value)
        params = parse_params(param_text) if semi else {}
        return cls(transport, host, port, params)

    @property
    def branch(self) -> str | None:
        """The branch parameter (RFC 3261 §8.1.1.7), or ``None``."""
        return self.params.get("branch")

    @property
    def host_no_brackets(self) -> str:
        """The host without the brackets of an IPv6 reference (socket form)."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def sent_by(self) -> str:
        """``host[:port]`` as used in transaction keys."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def serialize(self) -> str:
        """The Via value as text."""
        return f"SIP/2.0/{self.transport} {self.sent_by}{format_params(self.params)}"

    __str__ = serialize


@dataclass(slots=True)
class NameAddr:
    """A ``name-addr`` or ``addr-spec`` with header parameters: From, To, Contact, Route.

    Attributes:
        uri: the URI text (use :attr:`sip_uri` for the parsed form); ``*`` for a wildcard Contact.
        display_name: the display name, unquoted (may be Chinese); ``None`` if absent.
        params: header parameters (``tag``, ``expires`` …) — not the URI's own.
    """

    uri: str
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        """Parse a From/To/Contact/Route value; raise 400 when malformed."""
        value = value.strip()
        if value == "*":
            return cls("*")
        lt = find_outside_quotes(value, "<")
        if lt >= 0:
            gt = value.find(">", lt)
            if gt < 0:
                raise SipParseError(f"unterminated <URI> in {value[:80]!r}")
            display = value[:lt].strip()
            uri = value[lt + 1 : gt].strip()
            tail = value[gt + 1 :].strip()
            display_name: str | None = None
            if display:
                display_name = unquote(display) if display.startswith('"') else " ".join(display.split())
                if display.startswith('"') and not (len(display) >= 2 and display.endswith('"')):
                    raise SipParseError(f"malformed display name in {value[:80]!r}")
        else:
            # addr-spec form: any ';' belongs to the header, not the URI (RFC 3261 §20.10)
            display_name = None
            uri, semi, rest = value.partition(";")
            uri = uri.strip()
            tail = ";" + rest if semi else ""
            if " " in uri or "\t" in uri:
                raise SipParseError(f"LWS inside an addr-spec in {value[:80]!r}")
        if not uri or ":" not in uri:
            raise SipParseError(f"malformed address {value[:80]!r}")
        if tail and not tail.startswith(";"):
            raise SipParseError(f"junk after address in {value[:80]!r}")
        params = parse_params(tail[1:]) if tail else {}
        return cls(uri, display_name, params)

    @property
    def sip_uri(self) -> SipUri:
        """The URI parsed (raises 400/416 when it is not a valid SIP URI)."""
        return SipUri.parse(self.uri)

    @property
    def user(self) -> str | None:
        """The user part of a SIP URI (the GB/T 28181 ID), without parsing the rest strictly."""
        _, colon, rest = self.uri.partition(":")
        if not colon:
            return None
        at = rest.rfind("@")
        return rest[:at].partition(":")[0] if at >= 0 else None

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3)."""
        return self.params.get("tag")

    def serialize(self) -> str:
        """The value as text, always in name-addr form."""
        if self.uri == "*":
            return "*"
        display = f"{quote(self.display_name)} " if self.display_name is not None else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"

    __str__ = serialize


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq (RFC 3261 §20.16): sequence number and method."""

    number: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        """Parse ``number method``; raise 400 when malformed or out of range."""
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii():
            raise SipParseError(f"malformed CSeq {value[:80]!r}")
        number = int(parts[0])
        if number > 2**31 - 1:
            raise SipParseError(f"CSeq number out of range in {value[:80]!r}")
        if not _TOKEN_RE.fullmatch(parts[1]):
            raise SipParseError(f"malformed CSeq method in {value[:80]!r}")
        return cls(number, parts[1])

    def serialize(self) -> str:
        """``number method``."""
        return f"{self.number} {self.method}"

    __str__ = serialize


def is_token(text: str) -> bool:
    """Whether ``text`` is an RFC 3261 ``token``."""
    return _TOKEN_RE.fullmatch(text) is not None
