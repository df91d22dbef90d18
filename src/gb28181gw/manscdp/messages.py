"""MANSCDP envelopes: build queries and controls, read responses and notifications (PROTOCOL.md §5).

Every body is ``<Root><CmdType/><SN/><DeviceID/>…</Root>`` with Root one of Query,
Control, Notify, Response. :func:`decode` reads any of them into an :class:`Envelope`
(element names compared case-insensitively, values stripped); the readers below turn
the command-specific parts into plain records. :func:`encode` writes one, in the
peer's charset, with a byte-accurate prolog.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field
from enum import StrEnum
from xml.sax.saxutils import escape

from gb28181gw.errors import ManscdpError

from .codec import Element, child_text, etree, parse_xml


class Root(StrEnum):
    """The command classes (root element names)."""

    QUERY = "Query"
    CONTROL = "Control"
    NOTIFY = "Notify"
    RESPONSE = "Response"


class CmdType(StrEnum):
    """The CmdTypes this gateway speaks (§5.3)."""

    CATALOG = "Catalog"
    DEVICE_INFO = "DeviceInfo"
    DEVICE_STATUS = "DeviceStatus"
    RECORD_INFO = "RecordInfo"
    CONFIG_DOWNLOAD = "ConfigDownload"
    PRESET_QUERY = "PresetQuery"
    DEVICE_CONTROL = "DeviceControl"
    DEVICE_CONFIG = "DeviceConfig"
    KEEPALIVE = "Keepalive"
    ALARM = "Alarm"
    MEDIA_STATUS = "MediaStatus"
    MOBILE_POSITION = "MobilePosition"


CONTENT_TYPE = "Application/MANSCDP+xml"
_ROOTS = {r.value.lower(): r for r in Root}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded MANSCDP body.

    Attributes:
        root: Query / Control / Notify / Response.
        cmd_type: the CmdType text as sent (compare case-insensitively).
        sn: the sequence number.
        device_id: the DeviceID.
        element: the parsed root element, for the command-specific readers.
        body: the bytes it was parsed from, when the receiver kept them (a charset check reads them).
    """

    root: Root
    cmd_type: str
    sn: int
    device_id: str
    element: Element = field(repr=False, compare=False)
    body: bytes = field(default=b"", repr=False, compare=False)

    def is_cmd(self, cmd: CmdType) -> bool:
        """Whether this is ``cmd`` (case-insensitive: devices send ``catalog``)."""
        return self.cmd_type.lower() == cmd.value.lower()

    def text(self, name: str) -> str | None:
        """A top-level child's text, stripped."""
        return child_text(self.element, name)


def decode(body: bytes) -> Envelope:
    """Read any MANSCDP body.

    Raises:
        ManscdpError: not XML, unknown root, or no CmdType / SN / DeviceID.
    """
    return envelope(parse_xml(body))


def envelope(element: Element, *, body: bytes = b"") -> Envelope:
    """:func:`decode` for an already parsed body (``body``: its bytes, kept in :attr:`Envelope.body`)."""
    tag = element.tag if isinstance(element.tag, str) else ""
    root = _ROOTS.get(tag.lower())
    if root is None:
        raise ManscdpError(f"unknown MANSCDP root element <{tag[:40]}>")
    cmd = child_text(element, "CmdType")
    if not cmd:
        raise ManscdpError("MANSCDP body without CmdType")
    sn_text = child_text(element, "SN") or ""
    if not sn_text.isdigit():
        raise ManscdpError(f"MANSCDP SN {sn_text[:20]!r} is not a number")
    return Envelope(root, cmd, int(sn_text), child_text(element, "DeviceID") or "", element, body)


Fields = list[tuple[str, "str | int | Fields"]]


def encode(
    root: Root, cmd: CmdType | str, sn: int, device_id: str, fields: Fields | None = None, *, charset: str = "GB2312"
) -> bytes:
    """Write a MANSCDP body.

    Args:
        fields: (element, value) pairs after DeviceID, in order; a value that is a list
            of pairs becomes nested elements. An element name may carry attributes
            (``'DeviceList Num="4"'``): they go in the start tag only.
        charset: declared encoding. GB2312 (the 2016 default) and GB18030 are written with
            the gb18030 codec, so characters outside GB2312 survive (PROTOCOL.md §5.2);
            UTF-8 is written as UTF-8.
    """
    lines = _head(root, cmd, sn, device_id)
    _write_fields(lines, fields or [])
    return _finish(lines, root, charset)


def encode_list(
    cmd: CmdType | str,
    sn: int,
    device_id: str,
    head: Fields,
    list_name: str,
    items: list[Fields],
    *,
    sum_num: int,
    charset: str = "GB2312",
) -> bytes:
    """Write one part of a multi-message ``<Response>`` (Annex M, PROTOCOL.md §5.5.5).

    ``head`` comes after DeviceID, then ``<SumNum>sum_num</SumNum>`` and, unless ``items`` is
    empty (no results: no list, 2022 Annex M), ``<list_name Num="n">`` with one ``Item`` each.
    """
    lines = _head(Root.RESPONSE, cmd, sn, device_id)
    _write_fields(lines, head)
    lines.append(f"<SumNum>{sum_num}</SumNum>")
    if items:
        lines.append(f'<{list_name} Num="{len(items)}">')
        for item in items:
            lines.append("<Item>")
            _write_fields(lines, item)
            lines.append("</Item>")
        lines.append(f"</{list_name}>")
    return _finish(lines, Root.RESPONSE, charset)


def restamp(element: Element, sn: int, *, charset: str = "GB2312") -> bytes:
    """``element`` (a parsed body) written again with SN ``sn``, in ``charset``; all else unchanged.

    How a body crosses a cascade hop (PROTOCOL.md §9.4, §9.7): SNs are per hop, while the
    DeviceID and the command's payload (a PTZCmd's hex, a RecordList's items, attributes
    included) go on exactly as they came.
    """
    copy = deepcopy(element)
    sn_element = _child(copy, "SN")
    if sn_element is None:
        raise ManscdpError("MANSCDP body without SN")
    sn_element.text = str(sn)
    copy.tail = None
    text = etree.tostring(copy, encoding="unicode")
    return f'<?xml version="1.0" encoding="{charset}"?>\r\n{text}\r\n'.encode(_codec(charset))


def _head(root: Root, cmd: CmdType | str, sn: int, device_id: str) -> list[str]:
    return [
        f"<{root.value}>",
        f"<CmdType>{escape(str(cmd))}</CmdType>",
        f"<SN>{sn}</SN>",
        f"<DeviceID>{escape(device_id)}</DeviceID>",
    ]


def _finish(lines: list[str], root: Root, charset: str) -> bytes:
    lines.insert(0, f'<?xml version="1.0" encoding="{charset}"?>')
    lines.append(f"</{root.value}>")
    return ("\r\n".join(lines) + "\r\n").encode(_codec(charset))


def _codec(charset: str) -> str:
    # GB2312 and GB18030 are written with gb18030, so characters outside GB2312 survive (§5.2)
    return "utf-8" if charset.upper().replace("_", "-") in ("UTF-8", "UTF8") else "gb18030"


def _write_fields(lines: list[str], fields: Fields) -> None:
    for name, value in fields:
        if isinstance(value, list):
            lines.append(f"<{name}>")
            _write_fields(lines, value)
            lines.append(f"</{name.split(' ', 1)[0]}>")
        else:
            lines.append(f"<{name}>{escape(str(value))}</{name}>")


# --- readers -------------------------------------------------------------------------


@dataclass(slots=True)
class CatalogItem:
    """One ``DeviceList/Item`` of a Catalog response (§5.5.2).

    Attributes:
        device_id: the item's ID.
        fields: every other element as text, as the device sent it (``Info/PTZType``
            and other children of ``Info`` keep their own names).
    """

    device_id: str
    fields: dict[str, str]

    @property
    def name(self) -> str:
        """The item's name."""
        return self.fields.get("Name", "")


def catalog(env: Envelope) -> tuple[int, list[CatalogItem]]:
    """SumNum and the items of one Catalog response message (items without DeviceID are skipped, C5)."""
    return list_items(env, "DeviceList")


def list_items(env: Envelope, list_name: str) -> tuple[int, list[CatalogItem]]:
    """SumNum and the ``Item``s under ``list_name`` (``DeviceList``, ``RecordList``, ``PresetList``)."""
    sum_text = env.text("SumNum") or ""
    sum_num = int(sum_text) if sum_text.isdigit() else -1
    items: list[CatalogItem] = []
    device_list = _child(env.element, list_name)
    if device_list is None:
        return sum_num, items
    for item in device_list.iterchildren(tag=etree.Element):
        if item.tag.lower() != "item":
            continue
        fields: dict[str, str] = {}
        for child in item.iterchildren(tag=etree.Element):
            tag = child.tag
            if tag == "Info" or tag == "info" or tag == "INFO":
                for sub in child.iterchildren(tag=etree.Element):
                    text = sub.text
                    fields[sub.tag] = text.strip() if text else ""
                continue
            text = child.text
            fields[tag] = text.strip() if text else ""
        device_id = fields.pop("DeviceID", None) or fields.pop("PresetID", None)
        if device_id is None:
            for key in list(fields):
                if key.lower() in ("deviceid", "presetid"):
                    device_id = fields.pop(key)
                    break
        if not device_id:
            continue
        items.append(CatalogItem(device_id, fields))
    return sum_num, items


def flat(env: Envelope) -> dict[str, str]:
    """Every top-level element with text, by name (DeviceInfo, DeviceStatus and the like)."""
    out: dict[str, str] = {}
    for child in env.element:
        if isinstance(child.tag, str) and not len(child):
            out[child.tag] = (child.text or "").strip()
    return out


def _child(element: Element, name: str) -> Element | None:
    lower = name.lower()
    for child in element:
        if isinstance(child.tag, str) and child.tag.lower() == lower:
            return child
    return None
