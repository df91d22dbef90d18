"""Catalog items to channels (GB/T 28181 §9.5.3, PROTOCOL.md §11.4 C8/C9)."""

from __future__ import annotations

import pytest

from gb28181gw.gb.catalog import Position, channel_from_item, channel_status, check_position
from gb28181gw.gb.model import Channel
from gb28181gw.manscdp.messages import CatalogItem

DEV = "34020000001320000001"
CH = "34020000001310000001"


@pytest.mark.parametrize(
    ("sent", "status"),
    [("ON", "ON"), ("Online", "ON"), (" 1 ", "ON"), ("ok", "ON"), ("OFF", "OFF"), ("offline", "OFF"), ("0", "OFF"),
     (" Broken ", "Broken"), ("", "")],
)  # fmt: skip
def test_status_is_on_or_off(sent: str, status: str) -> None:
    assert channel_status(sent) == status


@pytest.mark.parametrize(
    ("lon", "lat", "position", "kept"),
    [
        (None, None, Position.ABSENT, False),
        ("118.1", "24.5", Position.VALID, True),
        ("0", "0.0", Position.UNKNOWN, False),
        ("0", "24.5", Position.VALID, True),
        ("181", "24.5", Position.INVALID, False),
        ("118.1", "-91", Position.INVALID, False),
        ("east", "24.5", Position.INVALID, False),
        ("118.1", None, Position.INVALID, False),
    ],
)
def test_coordinates(lon: str | None, lat: str | None, position: Position, kept: bool) -> None:
    fields = {"Name": "gate"}
    if lon is not None:
        fields["Longitude"] = lon
    if lat is not None:
        fields["Latitude"] = lat
    assert check_position(fields) is position
    assert ("Longitude" in fields) is kept and ("Latitude" in fields) is kept
    assert fields["Name"] == "gate"


def test_catalog_answer_item() -> None:
    item = CatalogItem(
        CH,
        {"Name": "南门", "Status": "Online", "ParentID": DEV, "PTZType": "1", "Longitude": "999", "Latitude": "24"},
    )
    update = channel_from_item(DEV, item)
    assert update.channel == Channel(CH, DEV, "南门", "ON", DEV, {"PTZType": "1"})
    assert update.position is Position.INVALID
    assert item.fields["Longitude"] == "999"  # the item itself is left as sent


def test_catalog_answer_item_without_status_stays_empty() -> None:
    assert channel_from_item(DEV, CatalogItem(CH, {"Name": "x"})).channel.status == ""


def test_catalog_event_keeps_what_it_leaves_out() -> None:
    previous = Channel(CH, DEV, "old name", "OFF", DEV, {"PTZType": "1"})
    item = CatalogItem(CH, {"Event": "UPDATE", "Longitude": "118.1", "Latitude": "24.5"})
    update = channel_from_item(DEV, item, previous=previous, default_status="ON")
    assert update.channel == Channel(CH, DEV, "old name", "ON", DEV, {"Longitude": "118.1", "Latitude": "24.5"})
    assert update.position is Position.VALID
