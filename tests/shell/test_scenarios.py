"""The SIPp scenarios under tests/shell/sipp and their loader (placeholders, parts)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from .conftest import SIPP_DIR, sipp_scenario


@pytest.mark.parametrize("name", sorted(p.relative_to(SIPP_DIR).as_posix() for p in SIPP_DIR.rglob("*.xml")))
def test_every_scenario_is_well_formed_once_filled(name: str) -> None:
    placeholders = set(re.findall(r"\{([a-z_][a-z0-9_]*)\}", (SIPP_DIR / name).read_text(encoding="utf-8")))
    text = sipp_scenario(name, **dict.fromkeys(placeholders, ""))
    if name.startswith("parts/"):
        text = f"<scenario>{text}</scenario>"  # a part is a run of elements inside a scenario
    root = ET.fromstring(text)
    assert root.tag == "scenario"


def test_placeholders_are_filled_and_regex_counts_kept() -> None:
    text = sipp_scenario("register_uac.xml", device="34020000001320000001", expires=0)
    assert "From: <sip:34020000001320000001@3402000000>;tag=[pid]r\nTo:" in text
    assert "\nExpires: 0\n" in text and "{" not in text
    part = sipp_scenario("parts/bye_from_device.xml", ch="{device}", pause=10)
    assert "From: <sip:{device}@3402000000>" in part  # an inserted value is not filled again


def test_a_missing_or_unknown_value_is_an_error() -> None:
    with pytest.raises(KeyError, match=r"register_uac.xml: no value for \{expires\}"):
        sipp_scenario("register_uac.xml", device="34020000001320000001")
    with pytest.raises(KeyError, match="register_uac.xml has no placeholder for expire"):
        sipp_scenario("register_uac.xml", device="34020000001320000001", expires=0, expire=0)
