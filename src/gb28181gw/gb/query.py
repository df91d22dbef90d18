"""Queries toward devices: SN allocation and multi-message Catalog assembly (PROTOCOL.md §5.1, §5.5.6).

Answers are matched on (device, CmdType, SN), never on Call-ID: each Response is a new
MESSAGE transaction. A Catalog answer comes in many MESSAGEs; :class:`CatalogCollector`
gathers them by SN until SumNum items arrived — or until the device goes quiet, since
SumNum lies in both directions in the field (C1) — keeping a partial result flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gb28181gw.manscdp.messages import CatalogItem


class SnAllocator:
    """Per-device SNs, increasing, wrapping before 2**31 (SNType is an integer ≥ 1)."""

    def __init__(self, start: int = 1) -> None:
        self._next: dict[str, int] = {}
        self._start = start

    def next(self, device_id: str) -> int:
        """The next SN for ``device_id``."""
        sn = self._next.get(device_id, self._start)
        self._next[device_id] = sn + 1 if sn < 2**31 - 2 else 1
        return sn


@dataclass(slots=True)
class CatalogResult:
    """A Catalog answer, whole or partial.

    Attributes:
        device_id: who answered.
        sn: the query's SN.
        sum_num: what the device said it would send (-1 if it never said).
        items: the items by ID (a repeated ID keeps its last version).
        complete: SumNum items arrived; otherwise the device went quiet first.
        messages: how many response MESSAGEs made it.
        refused: items left out because the answer reached its cap (``max_items``).
    """

    device_id: str
    sn: int
    sum_num: int = -1
    items: dict[str, CatalogItem] = field(default_factory=dict)
    complete: bool = False
    messages: int = 0
    refused: int = 0


class CatalogCollector:
    """Assembles one Catalog answer.

    Works for every multi-message answer (Catalog, RecordInfo: Annex M).

    Args:
        device_id / sn: what it answers.
        key_fields: fields that, with the item's ID, identify an item (empty: the ID alone).
        first_timeout: how long to wait for the first part (large lower platforms take minutes, C12).
        idle_timeout: how long to wait for the next part once parts are coming (C1).
        total_timeout: when the answer ends however its parts keep coming (each part must not
            extend it for ever).
        max_items: items kept at most; later new items are counted in ``refused``, not kept.
    """

    def __init__(
        self,
        device_id: str,
        sn: int,
        *,
        now: float,
        first_timeout: float,
        idle_timeout: float,
        total_timeout: float,
        max_items: int,
        key_fields: tuple[str, ...] = (),
    ) -> None:
        self.result = CatalogResult(device_id, sn)
        # catalog items are unique by ID; record items by these fields as well (many share the channel ID)
        self.key_fields = key_fields
        self.first_timeout = min(first_timeout, total_timeout)
        self.idle_timeout = idle_timeout
        self.max_items = max_items
        self.end = now + total_timeout
        self.deadline = min(now + first_timeout, self.end)

    def add(self, sum_num: int, items: list[CatalogItem], now: float) -> bool:
        """Take one response message; return whether the answer is now complete."""
        r = self.result
        r.messages += 1
        if sum_num >= 0:
            r.sum_num = sum_num
        for item in items:
            key = item.device_id
            if self.key_fields:
                key = "|".join([key, *(item.fields.get(f, "") for f in self.key_fields)])
            if len(r.items) >= self.max_items and key not in r.items:
                r.refused += 1
                continue
            r.items[key] = item
        self.deadline = min(now + self.idle_timeout, self.end)
        r.complete = r.sum_num >= 0 and len(r.items) >= r.sum_num
        return r.complete

    def expired(self, now: float) -> bool:
        """Whether the device went quiet before completing."""
        return now >= self.deadline
