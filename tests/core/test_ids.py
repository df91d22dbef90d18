"""20-digit GB/T 28181 IDs (PROTOCOL.md §1)."""

from __future__ import annotations

import pytest

from gb28181gw.errors import IdError
from gb28181gw.ids import GbId, IdKind


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("34020000001320000001", IdKind.CHANNEL),  # IPC registering itself (type 132)
        ("34020000001180000001", IdKind.DEVICE),  # NVR
        ("34020000001310000002", IdKind.CHANNEL),
        ("34020000002000000001", IdKind.PLATFORM),
        ("34020000002150000001", IdKind.BUSINESS_GROUP),
        ("34020000002160000001", IdKind.VIRTUAL_ORG),
        ("34020000003000000001", IdKind.USER),
        ("34020000005000000001", IdKind.EXTERNAL_SERVER),
        ("34020000006000000001", IdKind.EXTENSION),
    ],
)
def test_kinds(value: str, kind: IdKind) -> None:
    gid = GbId.parse(value)
    assert gid.kind is kind
    assert str(gid) == value
    assert gid.warnings == ()


def test_fields() -> None:
    gid = GbId.parse("44030512011327000042")
    assert gid.centre_code == "44030512"
    assert gid.domain == "4403051201"
    assert gid.industry == "01"
    assert gid.type_code == 132
    assert gid.network == "7"
    assert gid.serial == "000042"
    rows = {p: (d, m) for p, d, m in gid.describe()}
    assert "广东" in rows["1-2"][1]
    assert "IPC" in rows["11-13"][1]
    assert "互联网" in rows["14"][1]


@pytest.mark.parametrize(
    ("value", "positions", "fragment"),
    [
        ("3402000000132000000A", (20, 20), "'A' is not a digit"),
        ("34020000001320 00001", (15, 15), "' ' is not a digit"),
        ("３4020000001320000001", (1, 1), "not a digit"),  # a full-width digit is not ASCII
        ("3402000000132000001", None, "has 19 digits"),
        ("340200000013200000011", None, "has 21 digits"),
        ("", None, "has 0 digits"),
    ],
)
def test_malformed_say_where_and_why(value: str, positions: tuple[int, int] | None, fragment: str) -> None:
    with pytest.raises(IdError) as exc:
        GbId.parse(value)
    assert exc.value.positions == positions
    assert fragment in str(exc.value)


def test_civil_codes_only_when_allowed() -> None:
    with pytest.raises(IdError, match="civil code"):
        GbId.parse("3402")
    for code in ("34", "3402", "340202", "34020201"):
        gid = GbId.parse(code, allow_civil=True)
        assert gid.kind is IdKind.CIVIL_CODE
        assert gid.describe()[-1][2].startswith("civil-code node")
    with pytest.raises(IdError, match="has 5 digits"):
        GbId.parse("34020", allow_civil=True)


class TestStrictAndLenient:
    def test_unknown_province(self) -> None:
        lenient = GbId.parse("99020000001320000001")
        assert any("province" in w for w in lenient.warnings)
        with pytest.raises(IdError) as exc:
            GbId.parse("99020000001320000001", strict=True)
        assert exc.value.positions == (1, 2)

    def test_undefined_type_code(self) -> None:
        assert GbId.parse("34020000000050000001").warnings
        with pytest.raises(IdError) as exc:
            GbId.parse("34020000000050000001", strict=True)
        assert exc.value.positions == (11, 13)
        assert "type code 005" in exc.value.reason

    def test_level_under_an_empty_level(self) -> None:
        with pytest.raises(IdError) as exc:
            GbId.parse("34000100001320000001", strict=True)
        assert exc.value.positions == (5, 6)

    def test_network_digit_9_never_rejects(self) -> None:
        gid = GbId.parse("34020000001329000001", strict=True)
        assert any("network" in w for w in gid.warnings)

    def test_factory_default_placeholder_domain_is_fine(self) -> None:
        assert GbId.parse("34020000002000000003", strict=True).warnings == ()

    def test_is_valid(self) -> None:
        assert GbId.is_valid("34020000001320000001")
        assert not GbId.is_valid("x")


class TestCentreRemembered:
    """The centre code's check is remembered per code (ids._centre_warnings): a storm's IDs share
    a few centres. The remembered answer must be the check's, each time, in both modes."""

    CENTRES = ["34020000", "99020000", "34000100", "11000000", "34020100", "00000000", "34990000"]

    @pytest.mark.parametrize("strict", [False, True])
    def test_same_answer_first_and_later(self, strict: bool) -> None:
        from gb28181gw import ids

        for centre in self.CENTRES:
            text = f"{centre}001320000001"
            outcomes = []
            for _ in range(3):
                try:
                    outcomes.append(GbId.parse(text, strict=strict).warnings)
                except IdError as exc:
                    outcomes.append((exc.positions, exc.reason))
            expected: object
            try:
                expected = tuple(ids._check_centre(centre, strict, 8))
            except IdError as exc:
                expected = (exc.positions, exc.reason)
            assert outcomes[0] == outcomes[1] == outcomes[2]
            if isinstance(outcomes[0], tuple) and outcomes[0] and isinstance(outcomes[0][0], tuple):
                assert outcomes[0] == expected  # refused the same way every time
            else:
                assert set(expected).issubset(outcomes[0])  # type: ignore[arg-type]

    def test_bounded(self) -> None:
        from gb28181gw import ids

        for n in range(ids._CENTRE_KEPT + 10):
            GbId.parse(f"34{n % 100:02d}{n // 100:04d}001320000001")
        assert len(ids._CENTRE_WARNINGS) <= ids._CENTRE_KEPT
