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
_REQUIRED_SET = frozenset({"via", "from", "to", "call-id", "cseq", "content-length"})
#: The host characters Via.parse reads on its fast path.
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


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


class _Shape:
    """What :meth:`QuickRequest.scan` concludes from a request's header names alone, in their order:
    the key of each (lower case) and the names of the lines an answer copies, in order (``None``
    for a shape it does not take: an unknown name, a name twice, a required header missing)."""

    __slots__ = ("keys", "copied", "via")

    def __init__(self, keys: tuple[str, ...], copied: tuple[tuple[str, str], ...], via: str) -> None:
        self.keys = keys
        self.copied = copied
        self.via = via  # the Via's name as sent


def _shape_of(names: tuple[str, ...]) -> _Shape | None:
    keys = tuple(_KEY_OF.get(name, "") for name in names)
    if "" in keys or len(set(keys)) != len(keys) or not _REQUIRED_SET.issubset(keys):
        return None
    copied = tuple((key, name) for key, name in zip(keys, names, strict=True) if key in _COPIED)
    return _Shape(keys, copied, names[keys.index("via")])


#: Shapes seen (header names in order → :class:`_Shape`, or ``None``). The devices of a site send
#: their headers under the same names in the same order every time, so the names of a request are
#: checked once per shape rather than one by one per request; bounded (emptied when full), since
#: a peer inventing orders could otherwise grow it.
_SHAPES: dict[tuple[str, ...], _Shape | None] = {}
_SHAPES_KEPT = 512
#: The plain Via a device sends: ``SIP/2.0/UDP host[:port];params`` (see :meth:`QuickRequest.scan`).
_VIA_UDP = "SIP/2.0/UDP "


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

    __slots__ = ("method", "uri", "values", "body", "key", "sender", "_raw", "_shape", "_via")

    def __init__(
        self,
        method: str,
        uri: str,
        values: dict[str, str],
        body: bytes,
        key: tuple[str, str, str],
        sender: str,
        raw: dict[str, str],
        shape: _Shape,
        via: str | None,
    ) -> None:
        self.method = method
        self.uri = uri
        self.values = values
        self.body = body
        self.key = key
        self.sender = sender
        self._raw = raw  # name as sent → value as sent, in order
        self._shape = shape
        self._via = via  # the Via line stamped with received/rport, or None to copy it as sent

    @classmethod
    def scan(cls, data: bytes, peer: Peer, limits: Limits) -> QuickRequest | None:
        """Read ``data`` received from ``peer`` over UDP, or ``None`` when it is not the common case."""
        size = len(data)
        crlf = data.find(b"\r\n\r\n")
        if (
            crlf <= 0
            or size > limits.max_message_size
            or size > crlf + 4 + limits.max_body_size
            or crlf > limits.max_line_length  # no plain REGISTER is that long; the parser checks its lines
        ):
            return None
        text = data[:crlf].decode("utf-8", "surrogateescape")
        lines = text.split("\r\n")
        n = len(lines) - 1
        # no bare CR or LF anywhere (each line break is one CRLF)
        if not n or n > limits.max_headers or n != text.count("\n") or n != text.count("\r"):
            return None
        method, sp, rest = lines[0].partition(" ")
        if method not in QUICK_METHODS:
            return None
        uri, sp2, version = rest.partition(" ")
        if not sp2 or version != "SIP/2.0" or not uri.startswith("sip:"):
            return None
        del lines[0]
        try:
            # one C call splits every header line at its first colon; a line without one raises
            raw: dict[str, str] = dict([line.split(":", 1) for line in lines])
        except ValueError:
            return None
        if len(raw) != n:
            return None  # a header twice under one spelling
        names = tuple(raw)
        shape = _SHAPES.get(names, _NOT_SEEN)
        if shape is _NOT_SEEN:
            if len(_SHAPES) >= _SHAPES_KEPT:
                _SHAPES.clear()
            shape = _SHAPES[names] = _shape_of(names)
        if shape is None:
            return None
        assert isinstance(shape, _Shape)
        values = dict(zip(shape.keys, map(str.strip, raw.values())))  # noqa: B905 - equal by construction
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
        if not length.isdigit() or not length.isascii() or len(length) > 10 or int(length) != size - crlf - 4:
            return None  # short, or bytes after the body: the general path decides
        # From and To as the endpoint's cheap check takes them without parsing; no To tag (a dialog)
        sender = values["from"]
        to = values["to"]
        if (
            '"' in sender
            or '"' in to
            or ":" not in to
            or sender.count("<") != sender.count(">")
            or to.count("<") != to.count(">")
            or sender.count("<") > 1
            or to.count("<") > 1
            or "tag" in to.lower()
        ):
            return None
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
        found = _plain_via(via_text) if via_text.startswith(_VIA_UDP) else None
        if found is None:
            try:
                via = Via.parse(via_text)
            except SipParseError:
                return None  # the general path answers it
            if via.transport != "UDP":
                return None
            found = via.host_no_brackets, via.sent_by, via.params.get("branch"), "rport" in via.params
        host, sent_by, branch, rport = found
        if not branch or not branch.startswith(MAGIC_COOKIE) or len(branch) == 7:
            return None
        stamped_line = None
        if rport or host != peer.host:
            name = shape.via
            stamped = stamp_plain_via(raw[name], peer.host, peer.port, rport)
            if stamped is None:
                return None
            stamped_line = f"{name}:{stamped}"
        return cls(method, uri, values, data[crlf + 4 :], (branch, sent_by, method), sender, raw, shape, stamped_line)

    def get(self, key: str) -> str | None:
        """A header's value (``key`` lower case), stripped, or ``None``."""
        return self.values.get(key)

    def answer(
        self, status: int, to_tag: str, extra: list[tuple[str, str]] | tuple[()] = (), server: str | None = None
    ) -> bytes:
        """The response bytes: what ``make_response(request, status, to_tag=to_tag)``, then ``extra``
        added in order, the endpoint's ``Server`` and ``serialize()`` give."""
        raw = self._raw
        lines = [_STATUS_LINES.get(status) or f"SIP/2.0 {status} {reason_phrase(status)}"]
        for key, name in self._shape.copied:
            if key == "to":
                lines.append(f"{name}:{raw[name]};tag={to_tag}")
            elif key == "via" and self._via is not None:
                lines.append(self._via)
            else:
                lines.append(f"{name}:{raw[name]}")
        for name, value in extra:
            lines.append(f"{name}: {value}")
        if server:
            lines.append(f"Server: {server}")
        lines.append("Content-Length: 0\r\n\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape")


_NOT_SEEN = _Shape((), (), "")
#: The status lines the quick path writes, written once.
_STATUS_LINES = {status: f"SIP/2.0 {status} {reason_phrase(status)}" for status in (200, 401, 500)}


def _plain_via(value: str) -> tuple[str, str, str | None, bool] | None:
    """(host, sent-by, branch, rport given) of ``SIP/2.0/UDP host[:port];params`` in the shape
    :meth:`Via.parse <gb28181gw.sip.headers.Via.parse>` reads on its fast path, read alike without
    building a :class:`Via`; ``None`` for anything else (then ``Via.parse`` decides)."""
    sent_by, semi, param_text = value[12:].partition(";")
    host, colon, port_text = sent_by.partition(":")
    if not host or not _HOST_CHARS.issuperset(host) or '"' in param_text or " " in param_text:
        return None
    if colon:
        if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5 or int(port_text) > 65535:
            return None
        sent_by = f"{host}:{int(port_text)}"
    branch: str | None = None
    rport = False
    if semi:
        # as Via.parse fills its dict: names lower-cased, the last of a name wins
        for item in param_text.split(";"):
            name, eq, v = item.partition("=")
            if not name:
                return None  # Via.parse refuses it
            name = name.lower()
            if name == "branch":
                branch = v if eq else None
            elif name == "rport":
                rport = True
    return host, sent_by, branch, rport
