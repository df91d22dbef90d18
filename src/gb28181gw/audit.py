"""The audit trail's records and their hash chain, without I/O.

Every action that changes something or reaches a camera is one :class:`AuditEntry`: when, who
(:class:`Actor`: a token's name, the local CLI, a superior's ID, the gateway itself), from where,
on what, which :class:`Action`, with which parameters (secrets redacted by :func:`redact`) and how
it ended. The store appends entries in order and gives each a sequence number and a hash that
covers the entry and the hash before it (:func:`chain_hash`), so that a record altered, removed or
inserted by hand breaks the chain where it was touched (:func:`verify`). Records older than the
retention are removed from the front only; the store then keeps the last removed record's number
and hash as the chain's :class:`Anchor`.

What the chain cannot show: the hash has no key, so someone who can write the database can re-hash
every record after one they altered and store the new head, cut records from the end together with
the stored head, or roll the file back to an older copy. Copying the head hash elsewhere
(``gb28181gw audit verify`` prints it) closes those gaps.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "GENESIS",
    "MAX_TOTAL",
    "Action",
    "Actor",
    "Anchor",
    "AuditEntry",
    "AuditQuery",
    "AuditRecord",
    "ChainProblem",
    "Result",
    "chain_hash",
    "redact",
    "storable",
    "verify",
]

#: The hash before the first record.
GENESIS = "0" * 64
#: Parameter keys whose values are never kept (matched anywhere in the key, any case).
_SECRET_KEY = re.compile(r"pass|secret|token|authori[sz]ation|credential|private|key$|nonce", re.IGNORECASE)
REDACTED = "***"
#: Longest text kept of one parameter value, and most parameters kept of one entry.
MAX_VALUE = 500
MAX_PARAMS = 50
#: About the most characters kept of one entry's parameters in all.
MAX_TOTAL = 20_000


class Action(StrEnum):
    """What was done (stable names: filters, alerts and the CSV use them)."""

    STREAM_OPEN = "stream.open"  # params: kind (live/playback/download), channel, stream, to
    STREAM_CLOSE = "stream.close"
    STREAM_CONTROL = "stream.control"  # playback pause, seek, speed
    SNAPSHOT = "snapshot"
    PTZ = "ptz"
    DEVICE_CONTROL = "device.control"  # reboot, record, guard, alarm reset, home position …
    DEVICE_QUERY = "device.query"  # catalog refresh, info, status, records
    DEVICE_ADD = "device.add"
    DEVICE_REMOVE = "device.remove"
    DEVICE_PRUNE = "device.prune"
    DEVICE_BAN = "device.ban"
    DEVICE_UNBAN = "device.unban"
    LEDGER_EDIT = "ledger.edit"
    LEDGER_IMPORT = "ledger.import"
    LEDGER_REMOVE = "ledger.remove"
    SHARE_CHANGE = "share.change"
    OVERRIDE_SET = "override.set"
    OVERRIDE_REMOVE = "override.remove"
    DOCTOR_RUN = "doctor.run"
    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"
    ACCESS_REFUSED = "access.refused"  # an authenticated caller asked for another role's action
    AUDIT_PRUNE = "audit.prune"  # records older than the retention removed


class Result(StrEnum):
    """How an action ended."""

    OK = "ok"
    REFUSED = "refused"  # not allowed or not possible: nothing was done
    FAILED = "failed"  # tried, and the device or the gateway failed


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts.

    Attributes:
        name: ``token:NAME`` (an admin API token), ``local`` (a loopback caller without a token,
            where tokens are optional), ``cli`` (the CLI working on the store itself), ``superior:ID``
            (a superior platform), ``gateway`` (the gateway on its own: an idle stream closed, a ban
            for failed authentication, retention).
        source: the address it came from (``""`` for the gateway itself).
    """

    name: str
    source: str = ""

    @classmethod
    def token(cls, name: str, source: str) -> Actor:
        return cls(f"token:{name}", source)

    @classmethod
    def superior(cls, superior_id: str, source: str) -> Actor:
        return cls(f"superior:{superior_id}", source)


#: The gateway acting on its own.
GATEWAY = Actor("gateway")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One action, before the store numbers and chains it.

    Attributes:
        time: wall-clock epoch seconds.
        actor: who (:attr:`Actor.name`).
        source: from where (:attr:`Actor.source`).
        action: what: an :class:`Action` (a plain string when read back from a newer gb28181gw).
        target: on what: a device or channel ID, a stream, a token's or superior's name ("" none).
        params: what was asked, already :func:`redact`-ed.
        result: how it ended: a :class:`Result`.
        detail: why it was refused or failed, or what came of it ("" none).
    """

    time: float
    actor: str
    source: str
    action: str
    target: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    result: str = Result.OK
    detail: str = ""

    def canonical(self, seq: int) -> bytes:
        """The bytes the chain hashes: every field, with its sequence number, in one fixed form."""
        return json.dumps(
            [seq, repr(float(self.time)), self.actor, self.source, str(self.action), self.target,
             self.params, str(self.result), self.detail],
            ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str,
        ).encode("utf-8", "surrogateescape")  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A stored entry: numbered and chained.

    Attributes:
        seq: its number, from 1, without gaps.
        entry: what happened.
        hash: :func:`chain_hash` of the previous record's hash and this entry, hex.
    """

    seq: int
    entry: AuditEntry
    hash: str

    def as_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "seq": self.seq,
            "time": e.time,
            "actor": e.actor,
            "source": e.source,
            "action": str(e.action),
            "target": e.target,
            "params": dict(e.params),
            "result": str(e.result),
            "detail": e.detail,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where the stored chain starts: the last record removed by retention (``seq`` 0 and
    :data:`GENESIS` when none was)."""

    seq: int = 0
    hash: str = GENESIS


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which records to list (every filter optional).

    Attributes:
        since, until: wall-clock epoch seconds, inclusive.
        actor: exact actor name, or a prefix ending in ``:`` (``token:``, ``superior:``).
        target: exact target, or a prefix of an ID ending in ``*``.
        action: exact action, or a family ending in ``.`` (``stream.``).
        result: only records with this result.
        after: only records numbered above this (paging).
        limit: most records returned, oldest first.
    """

    since: float | None = None
    until: float | None = None
    actor: str = ""
    target: str = ""
    action: str = ""
    result: str = ""
    after: int = 0
    limit: int = 1000

    def matches(self, r: AuditRecord) -> bool:
        """Whether ``r`` passes the filters (backends may filter in their query language instead)."""
        e = r.entry
        if r.seq <= self.after:
            return False
        if self.since is not None and e.time < self.since or self.until is not None and e.time > self.until:
            return False
        if self.actor and not (e.actor.startswith(self.actor) if self.actor.endswith(":") else e.actor == self.actor):
            return False
        if self.target and not (
            e.target.startswith(self.target[:-1]) if self.target.endswith("*") else e.target == self.target
        ):
            return False
        action = str(e.action)
        if self.action and not (action.startswith(self.action) if self.action.endswith(".") else action == self.action):
            return False
        return not self.result or str(e.result) == self.result


def chain_hash(previous: str, seq: int, entry: AuditEntry) -> str:
    """The hash of record ``seq`` holding ``entry`` after a record whose hash is ``previous``."""
    h = hashlib.sha256(previous.encode("ascii"))
    h.update(b"\n")
    h.update(entry.canonical(seq))
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """Where the chain is broken.

    Attributes:
        seq: the record at fault (the first one after a gap for a missing record).
        problem: what is wrong, in words.
    """

    seq: int
    problem: str


def verify(records: Iterable[AuditRecord], anchor: Anchor = Anchor(), *, head: int | None = None) -> list[ChainProblem]:
    """Every break in the chain of ``records`` (oldest first), starting after ``anchor``.

    Args:
        head: the last record's number as the store last wrote it, to detect records cut from the end.

    A record whose hash does not match was altered (or the one before it was, and re-hashed); a
    number skipped means records were removed (the hash of the record after the gap cannot be
    checked: what it was chained to is gone); a number out of order, inserted. After a break the
    chain goes on from the record's stored hash, so each later break is found too.
    """
    problems: list[ChainProblem] = []
    previous, expected = anchor.hash, anchor.seq + 1
    for r in records:
        if r.seq != expected:
            if r.seq > expected:
                missing = f"record {expected}" if r.seq == expected + 1 else f"records {expected} to {r.seq - 1}"
                problems.append(ChainProblem(r.seq, f"{missing} missing"))
            else:
                problems.append(ChainProblem(r.seq, f"record {r.seq} out of order (expected {expected})"))
        if r.seq == expected and chain_hash(previous, r.seq, r.entry) != r.hash:
            problems.append(ChainProblem(r.seq, f"record {r.seq} does not match its hash: altered"))
        previous, expected = r.hash, r.seq + 1
    if head is not None and head >= expected:
        missing = f"record {expected}" if head == expected else f"records {expected} to {head}"
        problems.append(ChainProblem(expected, f"{missing} missing from the end"))
    return problems


def storable(text: str) -> str:
    """``text`` as a store can keep it: a lone surrogate that stands for no byte a device sent
    (``surrogateescape`` makes U+DC80 to U+DCFF; JSON's ``\\ud800`` makes any) becomes U+FFFD."""
    if text.isascii() or not _FOREIGN_SURROGATE.search(text):
        return text
    return _FOREIGN_SURROGATE.sub("\ufffd", text)


_FOREIGN_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` fit to keep: secrets replaced by ``***``, long values cut, at most
    :data:`MAX_PARAMS` of them, nested mappings and lists redacted the same way, and about
    :data:`MAX_TOTAL` characters in all (nesting would otherwise multiply the other bounds)."""
    return _mapping(params, [MAX_TOTAL])


def _mapping(params: Mapping[str, Any], budget: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, (key, value) in enumerate(params.items()):
        if i >= MAX_PARAMS or budget[0] <= 0:
            out["…"] = f"{len(params) - i} more" + ("" if i >= MAX_PARAMS else " (cut: the record's limit)")
            break
        name = storable(str(key)[:100])
        budget[0] -= len(name)
        out[name] = REDACTED if _SECRET_KEY.search(name) else _value(value, budget)
    return out


def _value(value: Any, budget: list[int]) -> Any:
    if isinstance(value, Mapping):
        return _mapping(value, budget)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        kept = []
        for i, v in enumerate(items):
            if i >= MAX_PARAMS or budget[0] <= 0:
                kept.append(f"… {len(items) - i} more" + ("" if i >= MAX_PARAMS else " (cut: the record's limit)"))
                break
            kept.append(_value(v, budget))
        return kept
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # JSON has no NaN or infinity: an answer holding them is not JSON
    elif value is None or isinstance(value, (bool, int, float)):
        budget[0] -= 8
        return value
    text = storable(str(value))
    if len(text) > MAX_VALUE:
        text = text[:MAX_VALUE] + f"… ({len(text)} characters)"
    budget[0] -= len(text)
    return text
