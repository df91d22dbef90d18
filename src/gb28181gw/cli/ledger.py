"""``ledger``: the camera ledger (一机一档) — shown, edited, imported from and exported in the authorities' forms."""

from __future__ import annotations

from gb28181gw.cli.common import main


@main.group("ledger")
def ledger_group() -> None:
    """The camera ledger (一机一档): what the authorities' forms ask of each camera."""
