"""SIP requests and responses: parse from bytes, serialize to bytes (RFC 3261 §7).

:func:`parse_message` takes one whole message (a UDP datagram, or what
:class:`~gb28181gw.sip.framing.StreamFramer` cut from a TCP stream) and returns
a :class:`Request` or :class:`Response`, or raises :class:`SipParseError`
carrying the status to answer. Nothing else escapes it.

Header values stay strings and bodies stay bytes: MANSCDP and SDP are not SIP's
business. Header text is decoded as UTF-8 with ``surrogateescape`` so that GB2312
display names survive a parse/serialize round trip byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

from gb28181gw.errors import SipParseError

from .headers import _NAME_CACHE, CSeq, Headers, NameAddr, Via, canonical_name, header_key, is_token
from .status import reason_phrase

SIP_VERSION = "SIP/2.0"


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits applied while parsing; a message over them is refused.

    Attributes:
        max_message_size: bytes in one whole message (start line, headers, body).
        max_headers: header fields (after unfolding) in one message.
        max_line_length: characters in one header line, after unfolding.
        max_body_size: bytes of body; above it the answer is 413.
    """

    max_message_size: int = 256 * 1024
    max_headers: int = 128
    max_line_length: int = 8 * 1024
    max_body_size: int = 256 * 1024


DEFAULT_LIMITS = Limits()

# Headers that may appear only once (RFC 3261 §7.3.1: not list-valued).
_SINGLE = frozenset(("call-id", "cseq", "from", "to", "content-length", "max-forwards"))
_REQUIRED = frozenset(("via", "from", "to", "call-id", "cseq"))


class Message:
    """Fields shared by requests and responses."""

    __slots__ = ("headers", "body", "_via")

    headers: Headers
    body: bytes
    _via: Via | None

    @property
    def top_via(self) -> Via:
        """The first Via value, parsed (raises 400 if missing or malformed)."""
        via = self._via
        if via is None:
            value = self.headers.get("via")
            if value is None:
                raise SipParseError("missing Via header")
            first = value.split(",", 1)[0] if "," in value else value
            via = self._via = Via.parse(first)
        return via

    def invalidate_via(self) -> None:
        """Forget the cached top Via after the Via header was changed."""
        self._via = None

    @property
    def call_id(self) -> str:
        """Call-ID value."""
        return self.headers["call-id"]

    @property
    def cseq(self) -> CSeq:
        """CSeq, parsed."""
        return CSeq.parse(self.headers["cseq"])

    @property
    def from_(self) -> NameAddr:
        """From, parsed."""
        return NameAddr.parse(self.headers["from"])

    @property
    def to(self) -> NameAddr:
        """To, parsed."""
        return NameAddr.parse(self.headers["to"])

    def _serialize(self, start_line: str) -> bytes:
        h = self.headers
        body = self.body
        if "content-length" not in h._keys:
            lines = [
                start_line,
                *map("".join, zip(h._names, repeat(":"), h._values)),
                f"Content-Length: {len(body)}",
                "\r\n",
            ]
            return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body
        lines = [start_line]
        wrote_length = False
        for key, name, value in zip(h._keys, h._names, h._values, strict=True):
            if key == "content-length":
                if wrote_length:
                    continue
                lines.append(f"{name}: {len(body)}")
                wrote_length = True
            else:
                lines.append(f"{name}:{value}")
        if not wrote_length:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


class Request(Message):
    """A SIP request.

    Attributes:
        method: the method token, case kept (methods are case-sensitive).
        uri: the Request-URI text.
        headers: header fields in wire order.
        body: the body bytes, exactly Content-Length long.
    """

    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: str, headers: Headers | None = None, body: bytes = b"") -> None:
        self.method = method
        self.uri = uri
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._via = None

    def serialize(self) -> bytes:
        """The request as bytes, with Content-Length computed from the body."""
        return self._serialize(f"{self.method} {self.uri} {SIP_VERSION}")

    __bytes__ = serialize

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.headers.get('call-id')!r}>"


class Response(Message):
    """A SIP response.

    Attributes:
        status: the status code.
        reason: the reason phrase (may be empty).
        headers: header fields in wire order.
        body: the body bytes.
    """

    __slots__ = ("status", "reason")

    def __init__(
        self, status: int, reason: str | None = None, headers: Headers | None = None, body: bytes = b""
    ) -> None:
        self.status = status
        self.reason = reason_phrase(status) if reason is None else reason
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._via = None

    def serialize(self) -> bytes:
        """The response as bytes, with Content-Length computed from the body."""
        return self._serialize(f"{SIP_VERSION} {self.status} {self.reason}")

    __bytes__ = serialize

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.headers.get('call-id')!r}>"


def _split_head(data: bytes) -> tuple[bytes, int]:
    """Return (header section, offset of the body)."""
    crlf = data.find(b"\r\n\r\n")
    if crlf >= 0:
        lf = data.find(b"\n\n", 0, crlf)
        if lf < 0:
            return data[:crlf], crlf + 4
        return data[:lf], lf + 2
    lf = data.find(b"\n\n")
    if lf >= 0:
        return data[:lf], lf + 2
    # no empty line: accepted from UDP peers that omit it when there is no body
    return data, len(data)


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one whole SIP message.

    Args:
        data: the message bytes; leading CRLFs are ignored (RFC 3261 §7.5).
            Bytes after the body (beyond Content-Length) are ignored, as RFC 3261
            §18.3 asks of datagrams.
        limits: size limits to enforce.

    Returns:
        The parsed request or response. The start line, header names, the
        presence and uniqueness of Via/From/To/Call-ID/CSeq, the CSeq number and
        method, Content-Length and Max-Forwards have been checked. Typed header
        values (:attr:`Message.top_via`, ``from_``, ``to``) are parsed when first
        used and raise :class:`SipParseError` then; the endpoint reads the top Via
        before anything else, so a malformed one is answered 400 all the same.

    Raises:
        SipParseError: with ``status`` 400 (syntax), 413 (body too large),
            505 (SIP version) or 513 (message or header section too large);
            ``partial`` holds a :class:`Request` with the headers read so far
            when a stateless answer may be possible.
    """
    if len(data) > limits.max_message_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds {limits.max_message_size}", 513)
    if data.startswith((b"\r", b"\n")):
        data = data.lstrip(b"\r\n")
    crlf = data.find(b"\r\n\r\n")
    head = data[:crlf] if crlf >= 0 else data
    body_at = crlf + 4
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    if crlf < 0 or text.count("\n") + 1 != len(lines):
        # bare LF line ends or no empty line (tolerated from sloppy UDP stacks)
        head, body_at = _split_head(data)
        text = head.decode("utf-8", "surrogateescape")
        lines = [line.rstrip("\r") for line in text.split("\n")]
    if not head:
        raise SipParseError("empty message")
    start = lines[0]
    del lines[0]

    headers = Headers.__new__(Headers)
    msg: Request | Response
    start_error: SipParseError | None = None
    if start.startswith("SIP/"):
        msg = _parse_status_line(start, headers)
    else:
        try:
            msg = _parse_request_line(start, headers)
        except SipParseError as exc:
            # keep reading the headers: with Via/From/To/Call-ID/CSeq the error can still be answered.
            # Its traceback would hold this frame, which holds it: a reference cycle freed only by a
            # rare full collection (memory stayed high after a flood of garbage), so it goes.
            start_error = exc.with_traceback(None)
            msg = Request.__new__(Request)
            msg.method, msg.uri, msg.headers, msg.body, msg._via = start.split(" ", 1)[0], "", headers, b"", None
    if not lines:
        raise SipParseError("no header fields", 400)
    names, seps, values = zip(*[line.partition(":") for line in lines], strict=True)
    try:
        keys = list(map(_NAME_CACHE.__getitem__, names))
    except KeyError:
        headers._keys, headers._names, headers._values = [], [], []
        if any(line[:1] in (" ", "\t") for line in lines):
            # RFC 3261 §7.3.1 folding: continuation lines join the line before
            lines = _unfold(lines, msg)
            names, seps, values = zip(*[line.partition(":") for line in lines], strict=True)
        keys = []
        name_error: SipParseError | None = None
        for n in names:
            try:
                keys.append(header_key(n))
            except SipParseError as exc:
                # keep the other headers so that the error can still be answered
                name_error = name_error or exc.with_traceback(None)  # no cycle: see start_error
                keys.append("")
        if name_error is not None:
            headers._keys, headers._names, headers._values = keys, list(names), list(values)
            name_error.partial = _partial(msg)
            try:
                raise name_error from None
            finally:
                name_error = None  # no cycle: see start_error
    headers._keys, headers._names, headers._values = keys, list(names), list(values)
    if "" in seps:
        bad = next(n for n, sep in zip(names, seps, strict=True) if not sep)
        raise SipParseError(f"header line without a colon: {bad[:60]!r}", 400, _partial(msg))
    if start_error is not None:
        start_error.partial = msg
        try:
            raise start_error
        finally:
            start_error = None  # raised, its traceback holds this frame again
    if len(lines) > limits.max_headers:
        raise SipParseError(f"more than {limits.max_headers} header lines", 513, _partial(msg))
    if len(head) > limits.max_line_length:
        for line in lines:
            if len(line) > limits.max_line_length:
                raise SipParseError(f"a header line is longer than {limits.max_line_length}", 513, _partial(msg))

    present = _validate(msg, keys, values)

    available = len(data) - body_at
    if "content-length" in present:
        cl_text = values[keys.index("content-length")].strip()
        if not cl_text.isdigit() or not cl_text.isascii() or len(cl_text) > 10:
            raise SipParseError(f"malformed Content-Length {cl_text[:20]!r}", 400, _partial(msg))
        length = int(cl_text)
        if length > limits.max_body_size:
            raise SipParseError(f"body of {length} bytes exceeds {limits.max_body_size}", 413, _partial(msg))
        if length > available:
            raise SipParseError(
                f"Content-Length {length} is larger than the {available} body bytes received", 400, _partial(msg)
            )
    else:
        length = available
        if length > limits.max_body_size:
            raise SipParseError(f"body of {length} bytes exceeds {limits.max_body_size}", 413, _partial(msg))
    msg.body = data[body_at : body_at + length] if length else b""
    return msg


def _unfold(lines: list[str], msg: Request | Response) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not out:
                raise SipParseError("continuation line before the first header", 400, _partial(msg))
            out[-1] = f"{out[-1].rstrip()} {line.strip()}"
        else:
            out.append(line)
    return out


def _partial(msg: Request | Response) -> Request | None:
    return msg if isinstance(msg, Request) else None


_KNOWN_METHODS = frozenset(
    (
        "REGISTER",
        "MESSAGE",
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "INFO",
        "SUBSCRIBE",
        "NOTIFY",
        "UPDATE",
        "PRACK",
        "REFER",
        "PUBLISH",
    )
)


def _parse_request_line(line: str, headers: Headers) -> Request:
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError(f"malformed request line {line[:80]!r}")
    method, uri, version = parts
    if version != SIP_VERSION and version.upper() != SIP_VERSION:
        if version[:4].upper() == "SIP/":
            raise SipParseError(f"SIP version {version[:20]!r} not supported", 505)
        raise SipParseError(f"malformed request line {line[:80]!r}")
    if method not in _KNOWN_METHODS and not is_token(method):
        raise SipParseError(f"malformed method {method[:40]!r}")
    if not uri.startswith(("sip:", "sips:")):
        scheme, colon, _ = uri.partition(":")
        if not colon or not scheme or not _is_scheme(scheme):
            raise SipParseError(f"malformed Request-URI {uri[:80]!r}", 400)
    req = Request.__new__(Request)
    req.method, req.uri, req.headers, req.body, req._via = method, uri, headers, b"", None
    return req


def _is_scheme(scheme: str) -> bool:
    return scheme.isascii() and scheme[0].isalpha() and all(ch.isalnum() or ch in "+-." for ch in scheme)


def _parse_status_line(line: str, headers: Headers) -> Response:
    version, _, rest = line.partition(" ")
    if version.upper() != SIP_VERSION:
        raise SipParseError(f"SIP version {version[:20]!r} not supported", 505)
    code, _, reason = rest.partition(" ")
    if len(code) != 3 or not code.isdigit() or not code.isascii() or not 100 <= int(code) <= 699:
        raise SipParseError(f"malformed status code {code[:20]!r}")
    resp = Response.__new__(Response)
    resp.status, resp.reason, resp.headers, resp.body, resp._via = int(code), reason.strip(), headers, b"", None
    return resp


def _validate(msg: Request | Response, keys: list[str], values: tuple[str, ...]) -> set[str]:
    present = set(keys)
    if not _REQUIRED <= present:
        missing = [canonical_name(k) for k in ("via", "from", "to", "call-id", "cseq") if k not in present]
        raise SipParseError(f"missing {', '.join(missing)} header", 400, _partial(msg))
    if len(present) != len(keys):
        for k in _SINGLE:
            if keys.count(k) > 1:
                raise SipParseError(f"more than one {canonical_name(k)} header", 400, _partial(msg))
    try:
        cseq = values[keys.index("cseq")].split()
        if len(cseq) != 2:
            raise SipParseError(f"malformed CSeq {' '.join(cseq)[:40]!r}")
        number, method = cseq
        if (
            not number.isdigit()
            or not number.isascii()
            or len(number) > 10
            or (len(number) == 10 and int(number) > 2**31 - 1)
        ):
            raise SipParseError(f"malformed CSeq number {number[:20]!r}")
        if isinstance(msg, Request):
            if method != msg.method:
                raise SipParseError(f"CSeq method {method[:40]!r} does not match the request method {msg.method!r}")
        elif not is_token(method):
            raise SipParseError(f"malformed CSeq method {method[:40]!r}")
        if "max-forwards" in present:
            mf = values[keys.index("max-forwards")].strip()
            if len(mf) > 3:
                mf = mf.lstrip("0") or "0"  # leading zeros are legal (RFC 4475 §3.1.1.1)
            if not mf.isdigit() or not mf.isascii() or len(mf) > 3 or (len(mf) == 3 and mf > "255"):
                raise SipParseError(f"malformed Max-Forwards {mf[:20]!r}")
        if not values[keys.index("call-id")].strip():
            raise SipParseError("empty Call-ID")
    except SipParseError as exc:
        exc.partial = _partial(msg)
        raise
    return present


def make_response(request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None) -> Response:
    """Build a response to ``request`` (RFC 3261 §8.2.6).

    Copies every Via, From, To, Call-ID and CSeq; adds ``to_tag`` to To when the
    request had none (never on 100 Trying); copies Record-Route on responses that
    can create a dialog (§12.1.1).
    """
    h = request.headers
    rk = h._keys
    copy = _RESPONSE_COPY_RR if 100 < status < 300 and request.method in ("INVITE", "SUBSCRIBE") else _RESPONSE_COPY
    idx = [i for i, key in enumerate(rk) if key in copy]
    if len(idx) > 1:
        pick = itemgetter(*idx)
        keys, names, values = list(pick(rk)), list(pick(h._names)), list(pick(h._values))
    else:
        keys, names, values = [rk[i] for i in idx], [h._names[i] for i in idx], [h._values[i] for i in idx]
    if to_tag is not None and status != 100 and "to" in keys:
        i = keys.index("to")
        if "tag=" not in values[i].replace(" ", "").lower():
            values[i] = f"{values[i]};tag={to_tag}"
    return Response(status, reason, Headers._from_parsed(keys, names, values))


_RESPONSE_COPY = frozenset({"via", "from", "to", "call-id", "cseq"})
_RESPONSE_COPY_RR = _RESPONSE_COPY | {"record-route"}


def make_request(
    method: str,
    uri: str,
    *,
    from_addr: str,
    to_addr: str,
    call_id: str,
    cseq: int,
    from_tag: str,
    to_tag: str | None = None,
    contact: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """Build a request outside or inside a dialog (RFC 3261 §8.1.1).

    The endpoint adds the Via (with a fresh branch) and Max-Forwards when it sends it.
    ``from_addr``/``to_addr``/``contact`` are URIs such as ``sip:ID@domain``.
    """
    headers = Headers()
    headers.add("From", f"<{from_addr}>;tag={from_tag}")
    headers.add("To", f"<{to_addr}>" + (f";tag={to_tag}" if to_tag else ""))
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        headers.add("Contact", f"<{contact}>")
    for name, value in extra or ():
        headers.add(name, value)
    if content_type is not None:
        headers.add("Content-Type", content_type)
    return Request(method, uri, headers, body)
