"""MANSCDP bytes ↔ XML tree, the only module that imports lxml.

Real devices declare one charset and send another (PROTOCOL.md §5.2, §11.3):
GB2312 declared with GBK/GB18030 bytes, UTF-8 declared with GB bytes, no prolog,
lower-case element names, NUL padding, a bare ``&``. The decoder takes bytes,
tries strict UTF-8 where it fits, falls back to GB18030 (a superset of GB2312 and
GBK) — marking a byte even GB18030 lacks rather than losing the body — and parses with a hardened parser: no entities, no DTD, no network, a
size cap — an XML bomb is an error, not an outage.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from lxml import etree
from lxml.etree import _Element as Element  # re-exported: the element type of every parsed body

from gb28181gw.errors import ManscdpError

__all__ = [
    "Element",
    "Keepalive",
    "KEEPALIVE_MARK",
    "MAX_BODY",
    "REPLACEMENT",
    "etree",
    "charset_problem",
    "is_keepalive",
    "keepalive_fast",
    "child_text",
    "decode_text",
    "declared_encoding",
    "parse_xml",
    "root_name",
    "undecodable",
]

#: Bodies larger than this are refused (a catalog of 10,000 items is about 5 MB).
MAX_BODY = 8 * 1024 * 1024

_PROLOG_RE = re.compile(rb"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_ENCODING_RE = re.compile(rb"encoding\s*=\s*[\"']([A-Za-z0-9_\-]+)[\"']", re.IGNORECASE)


def declared_encoding(body: bytes) -> str | None:
    """The encoding named in the XML prolog, upper-cased, or ``None``."""
    m = _PROLOG_RE.match(body)
    if not m:
        return None
    enc = _ENCODING_RE.search(m.group(0))
    return enc.group(1).decode("ascii").upper() if enc else None


def decode_text(body: bytes) -> str:
    """Body bytes → text, whatever the prolog claims (see module docstring)."""
    body = body.strip(b"\x00 \t\r\n")
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # GB2312 / GBK bodies, declared or not: GB18030 decodes all of them
    return body.decode("gb18030", errors="replace")


def _parser(encoding: str) -> etree.XMLParser:
    return etree.XMLParser(
        encoding=encoding,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=True,
        recover=False,
    )


# one parser per encoding, each told the real encoding so libxml2 decodes the bytes itself
_UTF8 = _parser("utf-8")
_GB18030 = _parser("gb18030")
_BARE_AMP_BYTES_RE = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9A-Fa-f]+);)")


def parse_xml(body: bytes, *, max_size: int = MAX_BODY) -> Element:
    """Parse a MANSCDP body into an element tree.

    The bytes are handed to libxml2 with the encoding they really have — UTF-8 when they
    decode as UTF-8, else GB18030 (a superset of GB2312 and GBK) — whatever the prolog says.

    Raises:
        ManscdpError: when the body is empty, too large, not XML, or carries a DTD.
    """
    if len(body) > max_size:
        raise ManscdpError(f"MANSCDP body of {len(body)} bytes exceeds {max_size}")
    body = body.strip(b"\x00 \t\r\n")
    if not body:
        raise ManscdpError("empty MANSCDP body")
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise ManscdpError("MANSCDP body carries a DTD or entity declarations; refused")
    if b"&" in body:
        # '&' is ASCII, never a trail byte of GB18030 or UTF-8: safe to repair on bytes (X4)
        body = _BARE_AMP_BYTES_RE.sub(b"&amp;", body)
    try:
        body.decode("utf-8")
        parser = _UTF8
    except UnicodeDecodeError:
        parser = _GB18030
        try:
            body.decode("gb18030")
        except UnicodeDecodeError:
            # a byte no GB charset has (firmware bugs, a cut multi-byte name): libxml2 would
            # refuse the whole body, so decode here, mark each bad byte U+FFFD and keep every
            # valid item; :func:`undecodable` names the fields that carry a mark
            body = body.decode("gb18030", errors="replace").encode("utf-8")
            parser = _UTF8
    try:
        return etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise ManscdpError(f"MANSCDP body is not well-formed XML: {exc}") from None


def charset_problem(body: bytes) -> str:
    """Why ``body``'s bytes are not what its prolog declares, in words; ``""`` when they are.

    :func:`parse_xml` reads every such body anyway (§11.3); an acceptance test reports them:
    GB2312 declared with characters only GBK/GB18030 have, UTF-8 (or no prolog, which means
    UTF-8) with GB bytes, a GB charset declared with UTF-8 bytes, bytes no charset has.
    """
    body = body.strip(b"\x00 \t\r\n").removeprefix(b"\xef\xbb\xbf")
    if body.isascii():
        return ""
    declared = declared_encoding(body) or "UTF-8 (no encoding declared)"
    try:
        body.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    if declared.startswith("UTF"):
        if utf8:
            return ""
        try:
            body.decode("gb18030")
        except UnicodeDecodeError:
            return f"declares {declared} but holds bytes no charset has"
        return f"declares {declared} but is in a GB charset (GBK/GB18030)"
    if utf8:
        return f"declares {declared} but is in UTF-8"
    for charset in ("gb2312", "gbk", "gb18030"):
        try:
            body.decode(charset)
        except UnicodeDecodeError:
            continue
        if declared in ("GB2312", "GB_2312-80", "EUC-CN") and charset != "gb2312":
            return f"declares {declared} but holds characters only {charset.upper()} has"
        return ""
    return f"declares {declared} but holds bytes no charset has"


def undecodable(root: Element) -> list[str]:
    """Names of the elements whose text holds bytes that could not be decoded (U+FFFD marks them)."""
    return [str(e.tag) for e in root.iter() if isinstance(e.tag, str) and e.text and REPLACEMENT in e.text]


#: What an undecodable byte becomes in a decoded body.
REPLACEMENT = "\ufffd"


def child_text(element: Element, name: str) -> str | None:
    """Text of the first child called ``name``, compared case-insensitively, stripped."""
    lower = name.lower()
    for child in element:
        tag = child.tag
        if isinstance(tag, str) and tag.lower() == lower:
            return (child.text or "").strip()
    return None


def root_name(element: Element) -> str:
    """The root element's name (``Query``, ``Response``, ``Notify``, ``Control``)."""
    return str(element.tag)


class Keepalive(NamedTuple):
    """What a Keepalive Notify says (GB/T 28181 §9.6, A.2.5): the fields :func:`keepalive_fast` reads."""

    sn: int
    device_id: str
    status: str


# A Keepalive Notify as devices send it, byte for byte: an optional prolog declaring GB2312 or
# UTF-8 (either case), the four elements in their order with nothing but blank space between
# them, and texts of plain ASCII letters and digits. Whatever else a body holds (attributes,
# comments, entities, CDATA, other elements or charsets, a BOM) is left to lxml.
_KEEPALIVE_RE = re.compile(
    rb"[\x00 \t\r\n]*"
    # each quoted value closed by the quote that opened it: lxml refuses version="1.0' (the
    # property test found the pattern taking it, answered 200 where the general path says 400)
    rb"""(?:<\?xml version=(?:"1\.0"|'1\.0')"""
    rb"""(?: encoding=(?:"(?:GB2312|gb2312|UTF-8|utf-8)"|'(?:GB2312|gb2312|UTF-8|utf-8)'))?\?>[ \t\r\n]*)?"""
    rb"<Notify>[ \t\r\n]*"
    rb"<CmdType>Keepalive</CmdType>[ \t\r\n]*"
    rb"<SN>([0-9]{1,18})</SN>[ \t\r\n]*"
    rb"<DeviceID>([0-9A-Za-z]{1,32})</DeviceID>[ \t\r\n]*"
    rb"<Status>([A-Za-z]{1,16})</Status>[ \t\r\n]*"
    rb"</Notify>[\x00 \t\r\n]*"
)


#: What every body :func:`keepalive_fast` takes contains (its pattern requires it literally): a
#: MESSAGE without it is no plain keepalive, and the quick path leaves it unread (``SipStack.on_quick``).
KEEPALIVE_MARK = b"<CmdType>Keepalive</CmdType>"


#: Keepalive bodies the pattern took, cut around their SN and DeviceID: (what comes before the SN,
#: what comes between it and the DeviceID, what comes after the DeviceID), the most recent first.
#: A site's devices send one body but for those two texts, so one cut serves them all.
_CUTS: list[tuple[bytes, bytes, bytes]] = []
#: Cuts kept (a peer sending bodies spaced in ever new ways takes the oldest one's place, not more).
_CUTS_KEPT = 4


def is_keepalive(body: bytes) -> bool:
    """Whether :func:`keepalive_fast` reads ``body`` (for callers that need no fields: the quick
    path asks of every keepalive, and building the fields cost as much as the match).

    A body that is a kept cut with another SN and DeviceID put in is taken without the pattern
    (:func:`_cut_fits`; the pattern cost ~0.5 µs a keepalive); any other is matched, and a cut
    of it kept when it matches.
    """
    if len(body) > 512:
        return False
    for cut in _CUTS:
        if _cut_fits(body, cut):
            return True
    m = _KEEPALIVE_RE.fullmatch(body)
    if m is None:
        return False
    cut = (body[: m.start(1)], body[m.end(1) : m.start(2)], body[m.end(2) :])
    if cut not in _CUTS:
        _CUTS.insert(0, cut)
        del _CUTS[_CUTS_KEPT:]
    return True


def _cut_fits(body: bytes, cut: tuple[bytes, bytes, bytes]) -> bool:
    """Whether ``body`` is ``head + SN + middle + ID + tail`` with an SN and a DeviceID that the
    pattern's groups take ([0-9]{1,18} and [0-9A-Za-z]{1,32}; ``bytes.isdigit`` and ``isalnum``
    are ASCII only).

    Exact: the cut comes from a body the pattern took, whose parts before, between and after
    those two groups matched ``head``, ``middle`` and ``tail``; they match them again around any
    SN and DeviceID the groups take, so the pattern takes every body this does (the property tests
    in tests/core/test_keepalive_fast.py hold the two to it); a body this declines is matched.
    """
    head, middle, tail = cut
    if not body.startswith(head) or not body.endswith(tail):
        return False
    start = len(head)
    end = len(body) - len(tail)
    i = body.find(middle, start, end)
    if i < 0:
        return False
    sn = body[start:i]
    device_id = body[i + len(middle) : end]
    return 0 < len(sn) <= 18 and sn.isdigit() and 0 < len(device_id) <= 32 and device_id.isalnum()


def keepalive_fast(body: bytes) -> Keepalive | None:
    """The fields of a plain Keepalive Notify, read without building a tree; ``None`` for any
    other body, which :func:`parse_xml` then reads.

    Why: a gateway of 10,000 devices takes tens of thousands of keepalives a second at its
    peak, and parsing each into an lxml tree cost ~7 µs of the ~60 µs a keepalive took, for
    four short fields. This reads only bodies whose every byte the pattern accounts for, and
    gives exactly what :func:`parse_xml` and :func:`child_text` would (a property test holds
    them to it); anything unusual declines and takes the general path.
    """
    if len(body) > 512:
        return None
    m = _KEEPALIVE_RE.fullmatch(body)
    if m is None:
        return None
    sn, device_id, status = m.groups()
    return Keepalive(int(sn), device_id.decode("ascii"), status.decode("ascii"))
