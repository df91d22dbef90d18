"""Catalog items to channels (GB/T 28181 §9.5.3 Catalog, §9.11.2 catalog events), in one place.

Devices write catalog fields in many ways (PROTOCOL.md §11.4): Status as ``ON``,
``ONLINE``, ``Online``, ``1`` …, coordinates of ``0,0`` for "unknown", or text that
is no coordinate at all. :func:`channel_from_item` turns one item, from a Catalog
answer or a catalog event NOTIFY, into a :class:`~gb28181gw.gb.model.Channel` with
a normalised status and only usable coordinates, and says what it dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from gb28181gw.manscdp.messages import CatalogItem

from .model import Channel

__all__ = ["ChannelUpdate", "Position", "channel_from_item", "channel_status", "check_position"]

_STATUS = {"ON": "ON", "ONLINE": "ON", "1": "ON", "OK": "ON", "OFF": "OFF", "OFFLINE": "OFF", "0": "OFF"}

#: Item fields that have a place of their own in :class:`Channel` (or say what happened, not what it is).
_OWN_FIELDS = frozenset({"Name", "Status", "ParentID", "Event"})


def channel_status(text: str) -> str:
    """Catalog Status as ``ON``/``OFF`` (PROTOCOL.md §11.4 C8); anything else is kept as sent, stripped."""
    stripped = text.strip()
    return _STATUS.get(stripped.upper(), stripped)


class Position(Enum):
    """What the Longitude/Latitude of an item were."""

    ABSENT = auto()  # neither was sent
    VALID = auto()  # kept
    UNKNOWN = auto()  # 0,0: the device's way to say "unknown" (C9); dropped silently
    INVALID = auto()  # not numbers, or outside ±180/±90; dropped, worth counting


def check_position(fields: dict[str, str]) -> Position:
    """Judge the coordinates in ``fields``; when they are not usable, remove them from ``fields``."""
    lon, lat = fields.get("Longitude"), fields.get("Latitude")
    if lon is None and lat is None:
        return Position.ABSENT
    try:
        x, y = float(lon or "nan"), float(lat or "nan")
        valid = -180.0 <= x <= 180.0 and -90.0 <= y <= 90.0
    except ValueError:
        valid = False
    if valid and (x, y) != (0.0, 0.0):
        return Position.VALID
    fields.pop("Longitude", None)
    fields.pop("Latitude", None)
    return Position.INVALID if not valid else Position.UNKNOWN


@dataclass(frozen=True, slots=True)
class ChannelUpdate:
    """One catalog item made a channel.

    Attributes:
        channel: the channel to keep.
        position: what its coordinates were (:attr:`Position.INVALID` ones were dropped and should be counted).
    """

    channel: Channel
    position: Position


def channel_from_item(
    device_id: str, item: CatalogItem, *, previous: Channel | None = None, default_status: str = ""
) -> ChannelUpdate:
    """The channel ``item`` describes, reported by ``device_id``.

    Args:
        device_id: the device that reported it.
        item: the ``DeviceList/Item``.
        previous: what we knew of the channel: a catalog event (ADD/UPDATE) that leaves out
            Name or ParentID keeps them.
        default_status: the status when the item has none (a catalog event adding a channel
            means it is there: ``ON``).
    """
    fields = dict(item.fields)
    position = check_position(fields)
    name = fields.get("Name", previous.name if previous is not None else "")
    parent = fields.get("ParentID", previous.parent_id if previous is not None else "")
    status = channel_status(fields["Status"]) if "Status" in fields else default_status
    extra = {k: v for k, v in fields.items() if k not in _OWN_FIELDS}
    return ChannelUpdate(Channel(item.device_id, device_id, name, status, parent, extra), position)
