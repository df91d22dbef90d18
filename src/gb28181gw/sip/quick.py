"""A quick reader and answerer for the two requests a gateway lives on: REGISTER and MESSAGE over UDP.

Why it exists: a gateway of 10,000 cameras takes a registration storm after every power cut and
tens of thousands of keepalive MESSAGEs a second, and through the general stack each one is
parsed into a :class:`~gb28181gw.sip.message.Request`, gets a transaction object, an event, a
trip through the router and a :class:`~gb28181gw.sip.message.Response` serialised again — about
as much work as the registrar's own. What those requests need is five header values to copy into
the answer, three or four to read, and a transaction key to absorb retransmissions by.

:meth:`QuickRequest.scan` reads only requests whose every line it accounts for: the request line
``REGISTER|MESSAGE sip:… SIP/2.0``, header lines from a short list of full names (no compact forms,
no repeats, no folding), one Via of the common shape with an RFC 3261 branch, From and To that the
endpoint's cheap check would not doubt, no To tag, a Content-Length matching the body exactly, and
the same checks as :func:`~gb28181gw.sip.message.parse_message` of CSeq, Max-Forwards and Call-ID.
Anything else gives ``None``, and the request takes the general path unchanged: what this skips
(typed parsing of From, To and Contact, the transaction object and its events) is what those
shapes make unnecessary. :meth:`QuickRequest.answer` writes the same bytes as
``make_response(...)`` and ``serialize()`` would (the tests hold the two to it).

What to do with the request — and whether it is the common case at all — is the caller's
(:mod:`gb28181gw.gb.quick` for REGISTER, the registrar service for keepalives); the retransmission
check (a transaction or a completed answer under :attr:`QuickRequest.key`) is the shell's, against
the endpoint (:meth:`~gb28181gw.sip.endpoint.SipEndpoint.known`).
"""

from __future__ import annotations

from gb28181gw.errors import SipParseError

from .headers import Via
from .message import Limits
from .peer import Peer
from .status import reason_phrase
from .transaction import MAGIC_COOKIE

__all__ = ["QUICK_METHODS", "QuickRequest", "stamp_plain_via"]

#: The methods read here.
QUICK_METHODS = frozenset({"REGISTER", "MESSAGE"})

#: Header names read (lower case; the name as sent is kept for the answer). Any other name — a
#: compact form, a Route, a Require — sends the request the general way.
_KNOWN = frozenset(
    {
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "max-forwards",
        "content-length",
        "contact",
        "expires",
        "authorization",
        "user-agent",
        "x-gb-ver",
        "content-type",
        "allow",
        "supported",
        "date",
    }
)
#: The spellings of those names read here: others (``cAll-iD``) take the general path.
_KEY_OF: dict[str, str] = {}
for _key, _name in zip(
    sorted(_KNOWN),
    ["Allow", "Authorization", "Call-ID", "Contact", "Content-Length", "Content-Type", "CSeq", "Date", "Expires",
     "From", "Max-Forwards", "Supported", "To", "User-Agent", "Via", "X-GB-ver"],
    strict=True,
):  # fmt: skip
    for _spelling in (_name, _key, _name.upper(), _name.title()):
        _KEY_OF[_spelling] = _key
#: Copied into every answer, in the request's order (RFC 3261 §8.2.6; make_response).
_COPIED = frozenset({"via", "from", "to", "call-id", "cseq"})
_REQUIRED = ("via", "from", "to", "call-id", "cseq", "content-length")


def stamp_plain_via(raw: str, host: str, port: int, rport: bool) -> str | None:
    """``raw`` (one Via value as received) with ``received`` (and ``rport``'s value) added (RFC 3261
    §18.2.1, RFC 3581 §4), for the common shapes only; ``None`` for any other.

    Shared with :meth:`~gb28181gw.sip.endpoint.SipEndpoint._stamp_via`, which edits other shapes itself.
    """
    if "," in raw or "eceived" in raw:
        return None
    if not rport:
        return f"{raw.rstrip()};received={host}"
    if raw.endswith(";rport"):
        return f"{raw}={port};received={host}"
    if ";rport;" in raw:
        return raw.replace(";rport;", f";rport={port};received={host};", 1)
    return None


class QuickRequest:
    """A REGISTER or MESSAGE read by :meth:`scan` (see the module docstring).

    Attributes:
        method: ``REGISTER`` or ``MESSAGE``.
        uri: the Request-URI.
        values: header key (lower case) → value, stripped.
        body: the body bytes.
        key: the server transaction key (RFC 3261 §17.2.3: branch, sent-by, method).
        sender: the user part of From (the device's ID).
    """

    __slots__ = ("method", "uri", "values", "body", "key", "sender", "_copied")

    def __init__(
        self,
        method: str,
        uri: str,
        values: dict[str, str],
        body: bytes,
        key: tuple[str, str, str],
        sender: str,
        copied: list[tuple[str, str]],
    ) -> None:
        self.method = method
        self.uri = uri
        self.values = values
        self.body = body
        self.key = key
        self.sender = sender
        self._copied = copied

    @classmethod
    def scan(cls, data: bytes, peer: Peer, limits: Limits) -> QuickRequest | None:
        """Read ``data`` received from ``peer`` over UDP, or ``None`` when it is not the common case."""
        if len(data) > limits.max_message_size:
            return None
        crlf = data.find(b"\r\n\r\n")
        if crlf <= 0 or len(data) > crlf + 4 + limits.max_body_size:
            return None
        head = data[:crlf]
        if len(head) > limits.max_line_length:
            return None  # no plain REGISTER is that long; the parser checks its lines
        text = head.decode("utf-8", "surrogateescape")
        lines = text.split("\r\n")
        n = len(lines) - 1
        # no bare CR or LF anywhere (each line break is one CRLF)
        if n != text.count("\n") or n != text.count("\r") or n > limits.max_headers or not n:
            return None
        method, sp, rest = lines[0].partition(" ")
        if method not in QUICK_METHODS:
            return None
        uri, sp2, version = rest.partition(" ")
        if not sp or not sp2 or version != "SIP/2.0" or not uri.startswith("sip:") or " " in uri:
            return None
        del lines[0]
        names, colons, raws = zip(*[line.partition(":") for line in lines], strict=True)
        keys = list(map(_KEY_OF.get, names))
        if None in keys or "" in colons:
            return None
        values: dict[str, str] = dict(zip(keys, map(str.strip, raws), strict=True))  # type: ignore[arg-type]
        if len(values) != n:
            return None  # a header twice
        copied = [(key, lines[i]) for i, key in enumerate(keys) if key in _COPIED]
        for key in _REQUIRED:
            if key not in values:
                return None
        # what parse_message checks
        cseq = values["cseq"].split()
        if len(cseq) != 2 or cseq[1] != method:
            return None
        number = cseq[0]
        if not number.isdigit() or not number.isascii() or len(number) > 10 or int(number) > 2**31 - 1:
            return None
        mf = values.get("max-forwards")
        if mf is not None and (not mf.isdigit() or not mf.isascii() or len(mf) > 3 or int(mf) > 255):
            return None
        if not values["call-id"]:
            return None
        length = values["content-length"]
        if not length.isdigit() or not length.isascii() or len(length) > 10:
            return None
        if int(length) != len(data) - crlf - 4:
            return None  # short, or bytes after the body: the general path decides
        # From and To as the endpoint's cheap check takes them without parsing; no To tag (a dialog)
        for key in ("from", "to"):
            value = values[key]
            if '"' in value or value.count("<") != value.count(">") or ":" not in value or value.count("<") > 1:
                return None
        if "tag" in values["to"].lower():
            return None
        sender = values["from"]
        start = sender.find("sip:")
        at = sender.find("@", start)
        if start < 0 or at <= start:
            return None
        sender = sender[start + 4 : at]
        if not sender.isalnum():
            return None
        # one Via of the common shape, with an RFC 3261 branch
        via_text = values["via"]
        if "," in via_text:
            return None
        try:
            via = Via.parse(via_text)
        except SipParseError:
            return None  # the general path answers it
        branch = via.params.get("branch")
        if via.transport != "UDP" or not branch or not branch.startswith(MAGIC_COOKIE) or len(branch) == 7:
            return None
        rport = "rport" in via.params
        if rport or via.host_no_brackets != peer.host:
            i = keys.index("via")
            name, raw = names[i], raws[i]
            stamped = stamp_plain_via(raw, peer.host, peer.port, rport)
            if stamped is None:
                return None
            copied = [(key, f"{name}:{stamped}" if key == "via" else line) for key, line in copied]
        key_ = (branch, via.sent_by, method)
        return cls(method, uri, values, data[crlf + 4 :], key_, sender, copied)

    def get(self, key: str) -> str | None:
        """A header's value (``key`` lower case), stripped, or ``None``."""
        return self.values.get(key)

    def answer(
        self, status: int, to_tag: str, extra: list[tuple[str, str]] | tuple[()] = (), server: str | None = None
    ) -> bytes:
        """The response bytes: what ``make_response(request, status, to_tag=to_tag)``, then ``extra``
        added in order, the endpoint's ``Server`` and ``serialize()`` give."""
        lines = [f"SIP/2.0 {status} {reason_phrase(status)}"]
        for key, line in self._copied:
            lines.append(f"{line};tag={to_tag}" if key == "to" else line)
        for name, value in extra:
            lines.append(f"{name}: {value}")
        if server:
            lines.append(f"Server: {server}")
        lines.append("Content-Length: 0")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape")
