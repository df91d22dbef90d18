"""PTZCmd (PROTOCOL.md §5.6.2 test vectors)."""

from __future__ import annotations

import pytest

from gb28181gw.errors import ManscdpError
from gb28181gw.manscdp.ptz import PtzCmd, aux, cruise, focus_iris, move, preset, scan

VECTORS = [
    (move("stop"), "A50F0100000000B5"),
    (move("right", 0x80), "A50F010180000036"),
    (move("left", 0x80), "A50F010280000037"),
    (move("up", 0x80), "A50F01080080003D"),
    (move("down", 0x80), "A50F010400800039"),
    (move("zoom-in", zoom_speed=5), "A50F011000005015"),
    (move("zoom-out", zoom_speed=5), "A50F012000005025"),
    (PtzCmd(0x29, 0x40, 0x40, 8), "A50F0129404080DE"),
    (preset("set", 3), "A50F018100030039"),
    (preset("call", 3), "A50F01820003003A"),
    (preset("delete", 3), "A50F01830003003B"),
    (focus_iris("iris-close", 0x40), "A50F01480040003D"),
    (focus_iris("focus-near", 0x40), "A50F014240000037"),
    (focus_iris("stop"), "A50F0140000000F5"),
    (cruise("add", 1, 3), "A50F01840103003D"),
    (cruise("speed", 1, 300), "A50F0186012C1078"),
    (cruise("start", 1), "A50F01880100003E"),
    (scan("start", 1), "A50F01890100003F"),
    (scan("left", 1), "A50F018901010040"),
    (aux(True), "A50F018C01000042"),
    (aux(False), "A50F018D01000043"),
]


@pytest.mark.parametrize(("cmd", "hex_"), VECTORS, ids=[v[1] for v in VECTORS])
def test_vectors_encode_and_decode(cmd: PtzCmd, hex_: str) -> None:
    assert cmd.encode() == hex_
    assert PtzCmd.decode(hex_) == cmd
    assert PtzCmd.decode(hex_.lower()).encode() == hex_


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("A50F01000000", "8 bytes"),
        ("B50F0100000000B5", "A5"),
        ("A50F0100000000B6", "checksum"),
        ("zz", "hex"),
        ("A5000100000000A6", "check nibble"),
    ],
)
def test_bad_codes(text: str, fragment: str) -> None:
    with pytest.raises(ManscdpError, match=fragment):
        PtzCmd.decode(text)


def test_opposite_directions_are_refused() -> None:
    with pytest.raises(ValueError):
        PtzCmd(0x03)
    with pytest.raises(ValueError):
        preset("call", 0)
    with pytest.raises(ValueError):
        move("sideways")
