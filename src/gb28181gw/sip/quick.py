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

How it reads, cheaply: the header names of a request, in their order (its *shape*), are judged
once per shape (:class:`_Shape`); the values are then checked in Python (the *dict reading*).
Once a shape has been read 16 times its requests are read by one compiled pattern of the whole
header block instead (:func:`_compile`), which takes the plain form of every value and leaves
anything else to the dict reading; both are held by property tests to the general parser.

What to do with the request — and whether it is the common case at all — is the caller's
(:mod:`gb28181gw.gb.quick` for REGISTER, the registrar service for keepalives); the retransmission
check (a transaction or a completed answer under :attr:`QuickRequest.key`) is the shell's, against
the endpoint (:meth:`~gb28181gw.sip.endpoint.SipEndpoint.known`).
"""

from __future__ import annotations

import re

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

    __slots__ = (
        "names",
        "keys",
        "copied",
        "copied_keys",
        "via",
        "seen",
        "hits",
        "copied_names",
        "to_at",
        "via_at",
        "fetch",
        "value_groups",
        "group_of",
    )

    def __init__(
        self, names: tuple[str, ...], keys: tuple[str, ...], copied: tuple[tuple[str, str], ...], via: str
    ) -> None:
        self.names = names
        self.keys = keys
        self.copied = copied
        self.copied_keys = tuple(key for key, _ in copied)
        self.via = via  # the Via's name as sent
        self.seen = 0  # requests of this shape read the dict way; its pattern is compiled at _COMPILE_AFTER
        self.hits = 0  # requests of this shape read by its pattern
        self.copied_names = tuple(name for _, name in copied)
        # where the answer's To (its tag added) and Via (perhaps stamped) are among the copied lines
        self.to_at = self.copied_keys.index("to") if "to" in self.copied_keys else -1
        self.via_at = self.copied_keys.index("via") if "via" in self.copied_keys else -1
        # with a pattern: the number of every group _matched reads, in its order (numbers, not
        # names: each name cost a dict lookup per request, thirty of them)
        self.fetch: tuple[int, ...] = ()
        # with a pattern: the numbers of the header values' groups, in order; the values are
        # taken from the match only when asked for (QuickRequest.values)
        self.value_groups: tuple[int, ...] = ()
        # with a pattern: header key → the number of its value's group (QuickRequest.get)
        self.group_of: dict[str, int] = {}


def _shape_of(names: tuple[str, ...]) -> _Shape | None:
    keys = tuple(_KEY_OF.get(name, "") for name in names)
    if "" in keys or len(set(keys)) != len(keys) or not _REQUIRED_SET.issubset(keys):
        return None
    copied = tuple((key, name) for key, name in zip(keys, names, strict=True) if key in _COPIED)
    return _Shape(names, keys, copied, names[keys.index("via")])


# --- the pattern of a shape -------------------------------------------------------------------
#
# Once a shape has been read _COMPILE_AFTER times, its requests are read by one compiled pattern of
# the whole header block: its header names in their order, each value of a plain shape. It stands
# for the dict reading below and gives what that gives (tests/core/test_quick.py holds the two to
# it); a request it does not match is read the dict way, which decides. Every value it takes is
# printable ASCII with spaces and tabs only around or inside it, so its group is value.strip(); no
# CR or LF can occur inside a line, so the line checks hold too.

#: A value: printable ASCII, white space (space, tab) around and inside it; the group is the stripped value.
#: The leading white space is taken possessively: else a blank value could be split between it and
#: the trailing white space in as many ways as it has characters, and a request of that shape with
#: a few blank values and a bad last line backtracked through their product (a ~300-byte datagram
#: holding the event loop for minutes).
_VALUE = r"[ \t]*+(?P<{g}>(?:[!-~](?:[\t -~]*[!-~])?)?)[ \t]*"
#: Printable ASCII but space, ``"``, ``<`` and ``>``.
_NQ = r"[!#-;=?-~]"
#: Printable ASCII but space, ``"``, ``,``, ``;`` and ``=``: a Via parameter's characters.
_PARAM = r"[!#-+\--:<>-~]"
_PLAIN: dict[str, str] = {
    # SIP/2.0/UDP host[:port] with an RFC 3261 branch and perhaps rport, nothing else
    "via": (
        r"(?P<via_raw>[ \t]*(?P<{g}>SIP/2\.0/UDP (?P<via_host>[A-Za-z0-9._-]+)(?::(?P<via_port>[0-9]{{1,5}}))?"
        r"(?P<rport1>;rport)?;branch=(?P<branch>z9hG4bK" + _PARAM + r"+)(?P<rport2>;rport)?)[ \t]*)"
    ),
    # <sip:user@…> and parameters: no quote, one < and one >, the user letters and digits
    # the parameters after > as runs of _NQ with white space between, not one group pass a
    # character: the same strings (white space is never last), read at C speed when they have no
    # blank (sre repeats a one-character class without leaving its inner loop)
    "from": r"[ \t]*(?P<{g}><sip:(?P<sender>[A-Za-z0-9]+)@" + _NQ + r"*>" + _NQ + r"*(?:[ \t]+" + _NQ + r"+)*)[ \t]*",
    "to": r"[ \t]*(?P<{g}><sip:" + _NQ + r"*>" + _NQ + r"*(?:[ \t]+" + _NQ + r"+)*)[ \t]*",
    "call-id": r"[ \t]*(?P<{g}>[!-~](?:[\t -~]*[!-~])?)[ \t]*",
    "cseq": r"[ \t]*(?P<{g}>(?P<cseq>[0-9]{{1,10}})[ \t]+(?P=method))[ \t]*",
    # 0 to 255 in one to three digits, leading zeros too (what parse_message takes): checked
    # here rather than by an int() of a group per request
    "max-forwards": r"[ \t]*(?P<{g}>25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])[ \t]*",
    "content-length": r"[ \t]*(?P<{g}>(?P<length>[0-9]{{1,10}}))[ \t]*",
}
#: Requests of a shape read the dict way before its pattern is compiled: a peer inventing header
#: orders gets none compiled (a compilation costs as much as a few hundred readings).
_COMPILE_AFTER = 16
#: Patterns compiled at most until the shapes are forgotten (see _SHAPES_KEPT).
_PATTERNS_KEPT = 32
#: Patterns by the number of header lines they take: at most a few per number are tried.
_PATTERNS: dict[int, list[tuple[re.Pattern[str], _Shape]]] = {}
_PATTERNS_PER_COUNT = 4
_NONE_KEPT: list[tuple[re.Pattern[str], _Shape]] = []  # a line count without patterns (never added to)
#: Requests of a shape read the dict way before its pattern may take a kept pattern's place.
_EVICT_AFTER = 256
#: The groups of every pattern that _matched reads, in the order it unpacks them (then Call-ID's
#: value and the copied lines: _Shape.fetch).
_FETCHED = (
    "cseq",
    "length",
    "via_host",
    "via_port",
    "rport1",
    "rport2",
    "via_raw",
    "method",
    "uri",
    "sender",
    "branch",
)
_N_FETCHED = len(_FETCHED)


def _compile(shape: _Shape) -> None:
    """Compile ``shape``'s pattern and keep it (within the bounds above).

    When the bounds are reached, a shape read _EVICT_AFTER times or more takes the place of the
    least read pattern (of its line count when that has its four, else of all) if that was read
    fewer times; else nothing is compiled (called again at each power of two of ``shape.seen``).
    Without this, a peer's 640 requests in 40 invented shapes took every place for good: the
    devices' own shape was never compiled, and each of its requests was first tried against four
    patterns that failed late (8 µs a read became 32). _EVICT_AFTER keeps a peer churning shapes
    to one compilation per 256 requests (a compilation costs a few hundred readings).
    """
    kept = _PATTERNS.get(len(shape.keys), [])
    if any(entry[1] is shape for entry in kept):
        return  # compiled already (a request its pattern left to the dict reading counted)
    full = len(kept) >= _PATTERNS_PER_COUNT
    if full or sum(map(len, _PATTERNS.values())) >= _PATTERNS_KEPT:
        if shape.seen < _EVICT_AFTER:
            return
        pool = kept if full else [entry for entries in _PATTERNS.values() for entry in entries]
        coldest = min(pool, key=lambda entry: entry[1].hits)
        if coldest[1].hits >= shape.seen:
            return
        _PATTERNS[len(coldest[1].keys)].remove(coldest)
    parts = [r"(?P<method>REGISTER|MESSAGE) (?P<uri>sip:[!-~]*) SIP/2\.0"]
    values = []
    lines = []
    for i, (name, key) in enumerate(zip(shape.names, shape.keys, strict=True)):
        group = f"v{i}"
        values.append(group)
        line = re.escape(name) + ":" + _PLAIN.get(key, _VALUE).format(g=group)
        if key in _COPIED:
            lines.append(f"l{i}")
            line = f"(?P<l{i}>{line})"
        parts.append("\r\n" + line)
    pattern = re.compile("".join(parts))
    # one m.group() call for all of them rather than a subscript each (see _matched)
    number = pattern.groupindex
    call_id = values[shape.keys.index("call-id")]
    shape.fetch = tuple(number[name] for name in (*_FETCHED, call_id, *lines))
    shape.value_groups = tuple(number[name] for name in values)
    shape.group_of = {key: number[name] for key, name in zip(shape.keys, values, strict=True)}
    _PATTERNS.setdefault(len(shape.keys), []).append((pattern, shape))


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
        body: the body bytes.
        key: the server transaction key (RFC 3261 §17.2.3: branch, sent-by, method).
        sender: the user part of From (the device's ID).
        call_id: the Call-ID.
    """

    __slots__ = (
        "method",
        "uri",
        "body",
        "key",
        "sender",
        "call_id",
        "_values",
        "_match",
        "_copied",
        "_via",
        "_shape",
    )

    def __init__(
        self,
        method: str,
        uri: str,
        values: dict[str, str] | None,
        body: bytes,
        key: tuple[str, str, str],
        sender: str,
        copied: list[str] | tuple[str, ...],
        via: str | None,
        shape: _Shape,
        match: re.Match[str] | None = None,
        call_id: str = "",
    ) -> None:
        self.method = method
        self.uri = uri
        self._values = values
        # without ``values``: the shape's pattern's match, whose groups hold every header's value
        # (a keepalive reads two of them, so the dict of all is built only when asked for: see
        # :attr:`values`)
        self._match = match
        self.body = body
        self.key = key
        self.sender = sender
        self.call_id = call_id if values is None else values["call-id"]
        self._copied = copied  # the lines an answer copies, as sent, in order (keys: shape.copied_keys)
        self._via = via  # the Via line stamped with received/rport, or None to copy it as sent
        self._shape = shape

    @property
    def values(self) -> dict[str, str]:
        """Header key (lower case) → value, stripped."""
        values = self._values
        if values is None:
            assert self._match is not None
            got = self._match.group(*self._shape.value_groups)
            values = self._values = dict(zip(self._shape.keys, got))  # noqa: B905 - equal by construction
        return values

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
        if _PATTERNS:
            # the line count by its LFs, not its CRLFs (a one-character count is the cheaper
            # search, ~0.1 µs): a pattern matches only lines ended by CRLF with no other LF,
            # so a text one matches counts the same either way
            kept = _PATTERNS.get(text.count("\n"), _NONE_KEPT)
            for entry in kept:
                m = entry[0].fullmatch(text)
                if m is not None:
                    if kept[0] is not entry:
                        # the most recently read first: a peer's patterns of the same line count
                        # are not tried before every device's request
                        kept.remove(entry)
                        kept.insert(0, entry)
                    entry[1].hits += 1
                    return cls._matched(m, entry[1], data, crlf, peer, limits)
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
                _PATTERNS.clear()
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
        copied = [f"{name}:{raw[name]}" for name in shape.copied_names]
        seen = shape.seen = shape.seen + 1
        if seen >= _COMPILE_AFTER and not seen & (seen - 1):
            _compile(shape)  # at 16, 32, 64 … reads: until compiled, a few compilations at most
        return cls(
            method, uri, values, data[crlf + 4 :], (branch, sent_by, method), sender, copied, stamped_line, shape
        )

    @classmethod
    def _matched(
        cls, m: re.Match[str], shape: _Shape, data: bytes, crlf: int, peer: Peer, limits: Limits
    ) -> QuickRequest | None:
        """:meth:`scan` of a request its shape's pattern matched (see _compile): the checks the
        pattern cannot make, then the request as the dict reading would give it."""
        if len(shape.keys) > limits.max_headers:
            return None
        # every group read in one call: a subscript each cost ~50 ns, twenty of them per request
        got = m.group(*shape.fetch)
        # each one typed (a str, or None for an optional group), in _FETCHED's order: when compiled,
        # int() of a str is then a direct call rather than a call of the int type (~80 ns each)
        number: str = got[0]
        length: str = got[1]
        host: str = got[2]
        port: str | None = got[3]
        rport1: str | None = got[4]
        rport2: str | None = got[5]
        via_raw: str = got[6]
        method: str = got[7]
        uri: str = got[8]
        sender: str = got[9]
        branch: str = got[10]
        call_id: str = got[_N_FETCHED]
        lines = got[_N_FETCHED + 1 :]
        # the To line as sent (never empty): its name holds no "tag", so this is the check of its value
        to_line: str = lines[shape.to_at]
        if (
            (len(number) == 10 and int(number) > 2**31 - 1)
            or int(length) != len(data) - crlf - 4
            or "tag" in to_line.lower()
        ):
            return None
        if port is not None:
            port_number = int(port)
            if port_number > 65535:
                return None  # the dict reading decides (Via.parse refuses it)
            sent_by = f"{host}:{port_number}"
        else:
            sent_by = host
        rport = rport1 is not None or rport2 is not None
        stamped_line = None
        if rport or host != peer.host:
            stamped = stamp_plain_via(via_raw, peer.host, peer.port, rport)
            if stamped is None:
                return None
            stamped_line = f"{shape.via}:{stamped}"
        # the method as the constant (the pattern took one of the two): the dicts keyed by it
        # (handlers, counters) then find it by identity
        method = _MESSAGE if method == _MESSAGE else _REGISTER
        # QuickRequest, not cls: a direct call of its __init__ when compiled (it has no subclass)
        return QuickRequest(
            method,
            uri,
            None,
            data[crlf + 4 :],
            (branch, sent_by, method),
            sender,
            lines,
            stamped_line,
            shape,
            m,
            call_id,
        )

    def get(self, key: str) -> str | None:
        """A header's value (``key`` lower case), stripped, or ``None``: ``values.get(key)``.

        Read by its pattern, the one group asked for: a REGISTER reads five or six of its ten
        values, and the dict of all of them (:attr:`values`) cost three times those reads.
        """
        values = self._values
        if values is not None:
            return values.get(key)
        number = self._shape.group_of.get(key)
        if number is None:
            return None
        assert self._match is not None
        value: str = self._match.group(number)  # a value's group always takes part (see _compile)
        return value

    def answer(
        self, status: int, to_tag: str, extra: list[tuple[str, str]] | tuple[()] = (), server: str | None = None
    ) -> bytes:
        """The response bytes: what ``make_response(request, status, to_tag=to_tag)``, then ``extra``
        added in order, the endpoint's ``Server`` and ``serialize()`` give."""
        lines = [_STATUS_LINES.get(status) or f"SIP/2.0 {status} {reason_phrase(status)}", *self._copied]
        shape = self._shape
        # by position (the shape says where To and Via are), not a test of each line's key
        lines[shape.to_at + 1] += f";tag={to_tag}"
        if self._via is not None:
            lines[shape.via_at + 1] = self._via
        for name, value in extra:
            lines.append(f"{name}: {value}")
        if server:
            lines.append(f"Server: {server}")
        lines.append("Content-Length: 0\r\n\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape")


_NOT_SEEN = _Shape((), (), (), "")
_MESSAGE = "MESSAGE"
_REGISTER = "REGISTER"
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
