"""The audit trail's core: the hash chain finds every record touched by hand, secrets never kept,
the listing's filters (gb28181gw.audit, issue 15 item 2)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

from gb28181gw.audit import (
    GENESIS,
    MAX_TOTAL,
    REDACTED,
    Action,
    Anchor,
    AuditEntry,
    AuditQuery,
    AuditRecord,
    Result,
    chain_hash,
    redact,
    verify,
)


def entry(n: int, **kw: Any) -> AuditEntry:
    base: dict[str, Any] = dict(
        time=1_700_000_000.0 + n,
        actor="token:ops",
        source="10.0.0.5",
        action=Action.PTZ,
        target=f"340200000013200{n:05d}",
        params={"ptz": "A50F010100000000"},
    )
    return AuditEntry(**(base | kw))


def chain(entries: list[AuditEntry], anchor: Anchor | None = None) -> list[AuditRecord]:
    """Records as the store writes them."""
    anchor = anchor or Anchor()
    out, previous = [], anchor.hash
    for seq, e in enumerate(entries, anchor.seq + 1):
        h = chain_hash(previous, seq, e)
        out.append(AuditRecord(seq, e, h))
        previous = h
    return out


class TestChainHash:
    def test_covers_every_field_and_the_number(self) -> None:
        e = entry(1)
        h = chain_hash(GENESIS, 1, e)
        assert len(h) == 64 and h == chain_hash(GENESIS, 1, e)
        assert chain_hash(GENESIS, 2, e) != h
        assert chain_hash("1" * 64, 1, e) != h
        for change in (
            {"time": e.time + 1},
            {"actor": "local"},
            {"source": "10.0.0.6"},
            {"action": Action.DEVICE_CONTROL},
            {"target": "x"},
            {"params": {"ptz": "A50F010200000000"}},
            {"result": Result.REFUSED},
            {"detail": "why"},
        ):
            assert chain_hash(GENESIS, 1, replace(e, **change)) != h, change

    def test_the_order_of_parameters_is_not_part_of_it(self) -> None:
        a = entry(1, params={"a": 1, "b": 2})
        b = entry(1, params={"b": 2, "a": 1})
        assert chain_hash(GENESIS, 1, a) == chain_hash(GENESIS, 1, b)


class TestVerify:
    def test_a_whole_chain_has_no_problem(self) -> None:
        records = chain([entry(n) for n in range(1, 6)])
        assert verify(records) == []
        assert verify(records, head=5) == []
        assert verify([]) == []

    def test_an_altered_record_is_named(self) -> None:
        records = chain([entry(n) for n in range(1, 6)])
        records[2] = replace(records[2], entry=replace(records[2].entry, actor="token:someone-else"))
        problems = verify(records)
        assert [(p.seq, "altered" in p.problem) for p in problems] == [(3, True)]

    def test_an_altered_and_rehashed_record_breaks_the_next_one(self) -> None:
        records = chain([entry(n) for n in range(1, 6)])
        forged = replace(records[1].entry, actor="token:someone-else")
        records[1] = AuditRecord(2, forged, chain_hash(records[0].hash, 2, forged))
        assert [p.seq for p in verify(records)] == [3]

    def test_a_removed_record_is_named(self) -> None:
        records = chain([entry(n) for n in range(1, 6)])
        del records[2]
        problems = verify(records)
        assert [p.seq for p in problems] == [4]
        assert "record 3 missing" in problems[0].problem

    def test_an_inserted_record_is_found(self) -> None:
        records = chain([entry(n) for n in range(1, 6)])
        # a record slipped in after 2, chained right, and the later ones renumbered: their hashes fail
        inserted = entry(99, actor="gateway")
        forged = AuditRecord(3, inserted, chain_hash(records[1].hash, 3, inserted))
        renumbered = [replace(r, seq=r.seq + 1) for r in records[2:]]
        problems = verify([*records[:2], forged, *renumbered])
        assert problems and problems[0].seq == 4 and "altered" in problems[0].problem

    def test_a_duplicated_number_is_out_of_order(self) -> None:
        records = chain([entry(n) for n in range(1, 4)])
        problems = verify([*records[:2], records[1], records[2]])
        assert problems[0].seq == 2 and "out of order" in problems[0].problem

    def test_records_cut_from_the_end_are_found_with_the_head(self) -> None:
        records = chain([entry(n) for n in range(1, 6)])
        assert verify(records[:3]) == []  # the chain alone cannot tell
        problems = verify(records[:3], head=5)
        assert [p.seq for p in problems] == [4] and "4 to 5 missing from the end" in problems[0].problem

    def test_the_chain_starts_after_its_anchor(self) -> None:
        records = chain([entry(n) for n in range(1, 8)])
        anchor = Anchor(records[2].seq, records[2].hash)  # 1 to 3 removed by retention
        assert verify(records[3:], anchor) == []
        assert verify(records[4:], anchor)[0].seq == 5


class TestRedact:
    def test_secrets_are_replaced_at_any_depth(self) -> None:
        kept = redact(
            {
                "password": "hunter2",
                "device": {"id": "34020000001320000001", "Password": "x", "sip_secret": "y"},
                "list": [{"token": "gbt_abc"}, {"name": "cam"}],
                "Authorization": "Bearer gbt_abc",
                "api_key": "k",
                "speed": 5,
            }
        )
        assert kept["password"] == REDACTED and kept["Authorization"] == REDACTED and kept["api_key"] == REDACTED
        assert kept["device"] == {"id": "34020000001320000001", "Password": REDACTED, "sip_secret": REDACTED}
        assert kept["list"] == [{"token": REDACTED}, {"name": "cam"}]
        assert kept["speed"] == 5
        assert "hunter2" not in repr(kept) and "gbt_abc" not in repr(kept)

    def test_long_values_and_many_parameters_are_cut(self) -> None:
        kept = redact({"a": "x" * 10_000, **{f"k{i}": i for i in range(100)}})
        assert len(kept["a"]) < 600 and "10000 characters" in kept["a"]
        assert len(kept) == 51 and kept["…"] == "51 more"

    def test_nested_values_are_bounded_in_total(self) -> None:
        # 50 lists of 50 lists of 50 long texts are 62 MB: one record must not hold that
        nested = {"rows": [[["y" * 500] * 50] * 50] * 50, "more": "z" * 400}
        kept = redact(nested)
        assert len(json.dumps(kept)) <= MAX_TOTAL + 1000
        assert kept["…"] == "1 more (cut: the record's limit)"  # what did not fit is named
        assert redact({"small": "z" * 400}) == {"small": "z" * 400}

    def test_values_json_cannot_carry_are_kept_as_text(self) -> None:
        kept = redact({"nan": math.nan, "inf": -math.inf, "ok": 1.5, "none": None})
        assert kept == {"nan": "nan", "inf": "-inf", "ok": 1.5, "none": None}
        json.dumps(kept, allow_nan=False)


class TestQuery:
    def record(self, seq: int, **kw: Any) -> AuditRecord:
        return AuditRecord(seq, entry(seq, **kw), "")

    def test_every_filter(self) -> None:
        r = self.record(5, actor="superior:34020000002000000001", action=Action.STREAM_OPEN, result=Result.REFUSED)
        assert AuditQuery().matches(r)
        assert AuditQuery(after=4).matches(r) and not AuditQuery(after=5).matches(r)
        assert AuditQuery(since=r.entry.time, until=r.entry.time).matches(r)
        assert not AuditQuery(since=r.entry.time + 1).matches(r)
        assert not AuditQuery(until=r.entry.time - 1).matches(r)
        assert AuditQuery(actor="superior:").matches(r) and AuditQuery(actor=r.entry.actor).matches(r)
        assert not AuditQuery(actor="superior").matches(r)  # a prefix ends in ":"
        assert not AuditQuery(actor="token:").matches(r)
        assert AuditQuery(target="3402*").matches(r) and AuditQuery(target=r.entry.target).matches(r)
        assert not AuditQuery(target="3402").matches(r)
        assert AuditQuery(action="stream.").matches(r) and AuditQuery(action="stream.open").matches(r)
        assert not AuditQuery(action="stream").matches(r) and not AuditQuery(action="stream.close").matches(r)
        assert AuditQuery(result="refused").matches(r) and not AuditQuery(result="ok").matches(r)
