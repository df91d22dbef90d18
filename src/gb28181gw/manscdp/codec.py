"""MANSCDP bytes ↔ XML tree, the only module that imports lxml.

Real devices declare one charset and send another (PROTOCOL.md §5.2, §11.3):
GB2312 declared with GBK/GB18030 bytes, UTF-8 declared with GB bytes, no prolog,
lower-case element names, NUL padding, a bare ``&``. The decoder takes bytes,
tries strict UTF-8 where it fits, falls back to GB18030 (a superset of GB2312 and
GBK), and parses with a hardened parser: no entities, no DTD, no network, a
size cap — an XML bomb is an error, not an outage.
"""

from __future__ import annotations

import re

from lxml import etree
from lxml.etree import _Element as Element  # re-exported: the element type of every parsed body

from gb28181gw.errors import ManscdpError

__all__ = ["Element", "MAX_BODY", "child_text", "decode_text", "declared_encoding", "parse_xml", "root_name"]

#: Bodies larger than this are refused (a catalog of 10,000 items is about 5 MB).
MAX_BODY = 8 * 1024 * 1024

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=True,
    recover=False,
)
_PROLOG_RE = re.compile(rb"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_ENCODING_RE = re.compile(rb"encoding\s*=\s*[\"']([A-Za-z0-9_\-]+)[\"']", re.IGNORECASE)
_BARE_AMP_RE = re.compile(r"&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9A-Fa-f]+);)")


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


def parse_xml(body: bytes, *, max_size: int = MAX_BODY) -> Element:
    """Parse a MANSCDP body into an element tree.

    Raises:
        ManscdpError: when the body is empty, too large, not XML, or carries a DTD.
    """
    if not body.strip(b"\x00 \t\r\n"):
        raise ManscdpError("empty MANSCDP body")
    if len(body) > max_size:
        raise ManscdpError(f"MANSCDP body of {len(body)} bytes exceeds {max_size}")
    text = decode_text(body)
    # the prolog's encoding is no longer true once decoded: drop it
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ManscdpError("MANSCDP body carries a DTD or entity declarations; refused")
    if "&" in text:
        text = _BARE_AMP_RE.sub("&amp;", text)
    try:
        return etree.fromstring(text.encode("utf-8"), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ManscdpError(f"MANSCDP body is not well-formed XML: {exc}") from None


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
