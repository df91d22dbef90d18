"""PTZCmd: the 8-byte front-end control code of DeviceControl (GB/T 28181 Annex A.3, PROTOCOL.md §5.6.2).

Byte 1 is ``A5``; byte 2 is version 0 with a nibble check (always ``0F``); byte 3 the low
address byte; byte 4 the instruction; bytes 5-6 data; byte 7 data 3 (high nibble) and the
address's high nibble; byte 8 the sum of bytes 1-7 mod 256. Written as 16 upper-case hex
characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from gb28181gw.errors import ManscdpError

HEADER = 0xA5


class Op(IntEnum):
    """Instruction codes (byte 4) other than the PTZ and focus/iris bit fields."""

    PRESET_SET = 0x81
    PRESET_CALL = 0x82
    PRESET_DELETE = 0x83
    CRUISE_ADD = 0x84
    CRUISE_DELETE = 0x85
    CRUISE_SPEED = 0x86
    CRUISE_DWELL = 0x87
    CRUISE_START = 0x88
    SCAN = 0x89
    SCAN_SPEED = 0x8A
    AUX_ON = 0x8C
    AUX_OFF = 0x8D


# PTZ bits (byte 4, 0b00xxxxxx)
RIGHT, LEFT, DOWN, UP, ZOOM_IN, ZOOM_OUT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
# focus / iris bits (byte 4, 0b0100xxxx)
FOCUS_FAR, FOCUS_NEAR, IRIS_OPEN, IRIS_CLOSE = 0x41, 0x42, 0x44, 0x48
FI_STOP = 0x40

DIRECTIONS = {
    "stop": 0,
    "right": RIGHT,
    "left": LEFT,
    "up": UP,
    "down": DOWN,
    "up-right": UP | RIGHT,
    "up-left": UP | LEFT,
    "down-right": DOWN | RIGHT,
    "down-left": DOWN | LEFT,
    "zoom-in": ZOOM_IN,
    "zoom-out": ZOOM_OUT,
}


@dataclass(frozen=True, slots=True)
class PtzCmd:
    """One decoded PTZCmd.

    Attributes:
        instruction: byte 4.
        data1 / data2: bytes 5 and 6.
        data3: the high nibble of byte 7 (0-15).
        address: the 12-bit address (devices ignore it; platforms send 1).
    """

    instruction: int
    data1: int = 0
    data2: int = 0
    data3: int = 0
    address: int = 1

    def __post_init__(self) -> None:
        for name, value, top in (
            ("instruction", self.instruction, 0xFF),
            ("data1", self.data1, 0xFF),
            ("data2", self.data2, 0xFF),
            ("data3", self.data3, 0xF),
            ("address", self.address, 0xFFF),
        ):
            if not 0 <= value <= top:
                raise ValueError(f"PTZCmd {name} {value} is out of range 0..{top}")
        if self.instruction < 0x40:
            for a, b in ((ZOOM_OUT, ZOOM_IN), (UP, DOWN), (LEFT, RIGHT)):
                if self.instruction & a and self.instruction & b:
                    raise ValueError("PTZCmd cannot move both ways at once (Annex A.3.2)")

    def encode(self) -> str:
        """The 16 hex characters."""
        b = [
            HEADER,
            0x0F,  # version 0; check = (0xA + 0x5 + 0) mod 16
            self.address & 0xFF,
            self.instruction,
            self.data1,
            self.data2,
            (self.data3 << 4) | (self.address >> 8),
        ]
        b.append(sum(b) & 0xFF)
        return bytes(b).hex().upper()

    __str__ = encode

    @classmethod
    def decode(cls, text: str) -> PtzCmd:
        """Check and decode 16 hex characters (a superior's command is forwarded unchanged).

        Raises:
            ManscdpError: wrong length, not hex, wrong header, version check or checksum.
        """
        text = text.strip()
        try:
            b = bytes.fromhex(text)
        except ValueError:
            raise ManscdpError(f"PTZCmd {text[:20]!r} is not hex") from None
        if len(b) != 8:
            raise ManscdpError(f"PTZCmd {text[:20]!r} is not 8 bytes")
        if b[0] != HEADER:
            raise ManscdpError(f"PTZCmd {text} does not start with A5")
        if (b[1] & 0x0F) != ((0xA + 0x5 + (b[1] >> 4)) & 0x0F):
            raise ManscdpError(f"PTZCmd {text}: byte 2 check nibble is wrong")
        if sum(b[:7]) & 0xFF != b[7]:
            raise ManscdpError(f"PTZCmd {text}: checksum is {b[7]:02X}, expected {sum(b[:7]) & 0xFF:02X}")
        try:
            return cls(b[3], b[4], b[5], b[6] >> 4, ((b[6] & 0x0F) << 8) | b[2])
        except ValueError as exc:
            raise ManscdpError(f"PTZCmd {text}: {exc}") from None


def move(direction: str, speed: int = 0x80, zoom_speed: int = 5) -> PtzCmd:
    """Pan/tilt/zoom in ``direction`` (see :data:`DIRECTIONS`), or ``stop``.

    ``speed`` (0-255) is used for pan and tilt, ``zoom_speed`` (0-15) for zoom.
    """
    try:
        bits = DIRECTIONS[direction]
    except KeyError:
        raise ValueError(f"unknown direction {direction!r} (one of {', '.join(DIRECTIONS)})") from None
    pan = speed if bits & (LEFT | RIGHT) else 0
    tilt = speed if bits & (UP | DOWN) else 0
    zoom = zoom_speed if bits & (ZOOM_IN | ZOOM_OUT) else 0
    return PtzCmd(bits, pan, tilt, zoom)


def focus_iris(action: str, speed: int = 0x40) -> PtzCmd:
    """``focus-near``, ``focus-far``, ``iris-open``, ``iris-close`` or ``stop``."""
    codes = {"focus-far": FOCUS_FAR, "focus-near": FOCUS_NEAR, "iris-open": IRIS_OPEN, "iris-close": IRIS_CLOSE}
    if action == "stop":
        return PtzCmd(FI_STOP)
    code = codes.get(action)
    if code is None:
        raise ValueError(f"unknown focus/iris action {action!r}")
    focus = speed if code in (FOCUS_FAR, FOCUS_NEAR) else 0
    iris = speed if code in (IRIS_OPEN, IRIS_CLOSE) else 0
    return PtzCmd(code, focus, iris)


def preset(action: str, number: int) -> PtzCmd:
    """``set``, ``call`` or ``delete`` preset ``number`` (1-255)."""
    ops = {"set": Op.PRESET_SET, "call": Op.PRESET_CALL, "delete": Op.PRESET_DELETE}
    if action not in ops:
        raise ValueError(f"unknown preset action {action!r} (set, call, delete)")
    if not 1 <= number <= 255:
        raise ValueError("preset numbers are 1-255")
    return PtzCmd(ops[action], 0, number)


def cruise(action: str, group: int, value: int = 0) -> PtzCmd:
    """Cruise ``add``/``delete`` a preset point, set ``speed``/``dwell`` (12-bit value), ``start``."""
    if action in ("add", "delete"):
        return PtzCmd(Op.CRUISE_ADD if action == "add" else Op.CRUISE_DELETE, group, value)
    if action in ("speed", "dwell"):
        if not 0 <= value <= 0xFFF:
            raise ValueError("cruise speed and dwell time are 0-4095")
        return PtzCmd(Op.CRUISE_SPEED if action == "speed" else Op.CRUISE_DWELL, group, value & 0xFF, value >> 8)
    if action == "start":
        return PtzCmd(Op.CRUISE_START, group)
    raise ValueError(f"unknown cruise action {action!r}")


def scan(action: str, group: int, value: int = 0) -> PtzCmd:
    """Scan ``start``, set ``left``/``right`` border, or set ``speed`` (12-bit)."""
    if action in ("start", "left", "right"):
        return PtzCmd(Op.SCAN, group, {"start": 0, "left": 1, "right": 2}[action])
    if action == "speed":
        return PtzCmd(Op.SCAN_SPEED, group, value & 0xFF, value >> 8)
    raise ValueError(f"unknown scan action {action!r}")


def aux(on: bool, switch: int = 1) -> PtzCmd:
    """Auxiliary switch ``switch`` (1 = wiper) on or off."""
    return PtzCmd(Op.AUX_ON if on else Op.AUX_OFF, switch)
