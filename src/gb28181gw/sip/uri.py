"""SIP URIs (RFC 3261 §19.1): ``sip:user:password@host:port;uri-params?headers``."""

from __future__ import annotations

from dataclasses import dataclass, field

from gb28181gw.errors import SipParseError

from .params import format_params, parse_params

MAX_PORT = 65535


@dataclass(slots=True)
class SipUri:
    """A parsed ``sip:``/``sips:`` URI.

    Attributes:
        scheme: ``sip`` or ``sips`` (lower case).
        user: the user part, still %-escaped as on the wire; ``None`` if absent.
            In GB/T 28181 it is the 20-digit ID.
        host: host name, IPv4 address, or IPv6 reference *with* brackets.
        port: port number, or ``None`` when the URI has none.
        password: the password part of userinfo, if any (deprecated, RFC 3261 §19.1.1).
        params: URI parameters in order; a parameter without a value maps to ``None``.
        headers: the raw ``?`` headers part, without the ``?``; empty if absent.
    """

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    password: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a SIP URI; raise :class:`SipParseError` (400) when malformed."""
        text = text.strip()
        scheme, sep, rest = text.partition(":")
        if not sep or not rest:
            raise SipParseError(f"malformed URI {text[:80]!r}: no scheme")
        scheme = scheme.lower()
        if scheme not in ("sip", "sips"):
            raise SipParseError(f"unsupported URI scheme {scheme[:20]!r}", 416)
        user: str | None = None
        password: str | None = None
        # '@' cannot appear unescaped in uri-params or headers, so the last one ends userinfo.
        at = rest.rfind("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, colon, pw = userinfo.partition(":")
            if colon:
                password = pw
            if not user:
                raise SipParseError(f"malformed URI {text[:80]!r}: empty user")
        headers = ""
        q = rest.find("?")
        if q >= 0:
            rest, headers = rest[:q], rest[q + 1 :]
        hostport, semi, param_text = rest.partition(";")
        params = parse_params(param_text) if semi else {}
        host, port = parse_hostport(hostport, text)
        return cls(scheme, user, host, port, password, params, headers)

    def serialize(self) -> str:
        """The URI as text."""
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += (":", self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += (":", str(self.port))
        if self.params:
            out.append(format_params(self.params))
        if self.headers:
            out += ("?", self.headers)
        return "".join(out)

    __str__ = serialize

    @property
    def host_no_brackets(self) -> str:
        """The host, with the brackets of an IPv6 reference removed (socket form)."""
        return self.host[1:-1] if self.host.startswith("[") else self.host


def parse_hostport(hostport: str, context: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 in brackets); raise 400 when malformed."""
    hostport = hostport.strip()
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {context[:80]!r}")
        host, tail = hostport[: end + 1], hostport[end + 1 :]
        if tail and not tail.startswith(":"):
            raise SipParseError(f"junk after IPv6 reference in {context[:80]!r}")
        port_text = tail[1:] if tail else None
    else:
        host, colon, port_text_ = hostport.partition(":")
        port_text = port_text_ if colon else None
    if not host or not _valid_host(host):
        raise SipParseError(f"malformed host in {context[:80]!r}")
    if port_text is None:
        return host, None
    port_text = port_text.strip()
    if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5 or int(port_text) > MAX_PORT:
        raise SipParseError(f"malformed port in {context[:80]!r}")
    return host, int(port_text)


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_[]:")


def _valid_host(host: str) -> bool:
    # hostname / IPv4address / IPv6reference (RFC 3261 §25.1); '_' is tolerated because
    # real devices put it in host names.
    if not _HOST_CHARS.issuperset(host):
        return False
    if host.startswith("["):
        return host.endswith("]") and len(host) > 2
    return ":" not in host and "[" not in host and "]" not in host
