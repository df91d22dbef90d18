"""Queries toward devices: SN allocation and multi-message Catalog assembly (PROTOCOL.md §5.1, §5.5.6).

Answers are matched on (device, CmdType, SN), never on Call-ID: each Response is a new
MESSAGE transaction. A Catalog answer comes in many MESSAGEs; :class:`CatalogCollector`
gathers them by SN until SumNum items arrived — or until the device goes quiet, since
SumNum lies in both directions in the field (C1) — keeping a partial result flagged.
What a conformance check needs of the answer is kept as it comes (the SumNum of every part,
the items skipped and why, each part's charset problem) and judged by :func:`catalog_problems`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gb28181gw.errors import IdError
from gb28181gw.ids import GbId
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
        sum_nums: the SumNum of every message, in arrival order (-1 for one that had none).
        skipped: items left out for their ID, which is neither 20 digits nor a civil code
            (C5): (the ID as sent, why); the first :data:`SKIPPED_KEPT`.
        skipped_count: how many items were left out so (all of them).
        charset: each message's charset problem (:func:`~gb28181gw.manscdp.codec.charset_problem`)
            once, in arrival order; empty when every body was in the charset it declared.
    """

    device_id: str
    sn: int
    sum_num: int = -1
    items: dict[str, CatalogItem] = field(default_factory=dict)
    complete: bool = False
    messages: int = 0
    refused: int = 0
    sum_nums: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    charset: list[str] = field(default_factory=list)
    skipped_count: int = 0


#: Items skipped for their ID kept (with why) per answer; the rest are counted.
SKIPPED_KEPT = 100
#: Problems of one kind :func:`catalog_problems` names one by one; the rest are counted.
PROBLEMS_NAMED = 20


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
        linger: never done at SumNum, only once the device goes quiet: parts past a SumNum that
            is too small are taken too (the conformance doctor measures it, C1).
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
        linger: bool = False,
    ) -> None:
        self.result = CatalogResult(device_id, sn)
        self.linger = linger
        # catalog items are unique by ID; record items by these fields as well (many share the channel ID)
        self.key_fields = key_fields
        self.first_timeout = min(first_timeout, total_timeout)
        self.idle_timeout = idle_timeout
        self.max_items = max_items
        self.end = now + total_timeout
        self.deadline = min(now + first_timeout, self.end)

    def add(self, sum_num: int, items: list[CatalogItem], now: float, *, charset_problem: str = "") -> bool:
        """Take one response message; return whether the answer is now complete.

        ``charset_problem``: how the message's bytes differ from the charset it declares ("" if not).
        """
        r = self.result
        r.messages += 1
        r.sum_nums.append(sum_num)
        if charset_problem and charset_problem not in r.charset:
            r.charset.append(charset_problem)
        if sum_num >= 0:
            r.sum_num = sum_num
        for item in items:
            try:
                GbId.parse(item.device_id, allow_civil=True)
            except IdError as exc:
                if len(r.skipped) >= SKIPPED_KEPT:
                    r.skipped_count += 1  # a hostile device's flood is counted, not kept
                elif not any(skipped == item.device_id for skipped, _ in r.skipped):
                    r.skipped.append((item.device_id, str(exc)))
                    r.skipped_count += 1
                continue
            key = item.device_id
            if self.key_fields:
                key = "|".join([key, *(item.fields.get(f, "") for f in self.key_fields)])
            if len(r.items) >= self.max_items and key not in r.items:
                r.refused += 1
                continue
            r.items[key] = item
        self.deadline = min(now + self.idle_timeout, self.end)
        # a skipped item came all the same: SumNum counts it, and an answer left waiting for it would
        # be partial, which never removes a channel
        r.complete = r.sum_num >= 0 and len(r.items) + r.skipped_count >= r.sum_num
        return r.complete and not self.linger

    def expired(self, now: float) -> bool:
        """Whether the device went quiet before completing."""
        return now >= self.deadline


def catalog_problems(result: CatalogResult) -> list[str]:
    """What in a Catalog answer does not conform (GB/T 28181-2022 §9.5.2, Annex M), in words.

    The SumNum of every message must be the same and equal the items sent; every item's ID must be
    a valid 20-digit ID or civil code (:meth:`GbId.parse`, strict); every body must be in the
    charset it declares. Empty when the answer conforms.
    """
    problems: list[str] = []
    said = sorted({n for n in result.sum_nums if n >= 0})
    if len(said) > 1:
        problems.append(f"SumNum differs between messages: {', '.join(map(str, said))}")
    if -1 in result.sum_nums:
        problems.append(f"{result.sum_nums.count(-1)} of {result.messages} messages have no SumNum")
    sent = len(result.items) + result.skipped_count + result.refused
    if len(said) == 1 and said[0] != sent:
        problems.append(f"SumNum {said[0]} but {sent} items came in {result.messages} messages")
    problems += [f"item skipped: {reason}" for _, reason in result.skipped[:PROBLEMS_NAMED]]
    if result.skipped_count > PROBLEMS_NAMED:
        problems.append(f"{result.skipped_count - PROBLEMS_NAMED} more items skipped")
    odd = 0
    for item in result.items.values():
        try:
            GbId.parse(item.device_id, strict=True, allow_civil=True)
        except IdError as exc:
            odd += 1
            if odd <= PROBLEMS_NAMED:
                problems.append(f"item {exc}")
    if odd > PROBLEMS_NAMED:
        problems.append(f"{odd - PROBLEMS_NAMED} more items with odd IDs")
    problems += [f"charset: {c}" for c in result.charset]
    return problems
