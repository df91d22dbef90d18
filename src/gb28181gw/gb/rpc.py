"""Calls between gateway nodes (issue 17): the records on the wire and the callee's rules, without Redis.

A node asks another to act on a device it owns (open the device's stream and send it to a
superior, a PTZ command …). The transport is Redis Streams (:mod:`gb28181gw.store.rpc`); this
module holds what does not depend on it:

- :class:`Call`: one request. ``id`` is an idempotency id of 128 random bits (the shell passes
  ``secrets.token_hex(16)``; never a small counter: WVP's ids from 1-1000 collide), ``caller``
  the node the answer goes to, ``method`` and JSON ``args``, and an absolute ``deadline`` in
  epoch seconds (nodes' clocks are NTP-synchronised; a call is worth running only before it).
- :class:`Answer`: ``status`` 200 with a JSON ``result``, or an error status and its words.
- :class:`AnswerCache`: what the callee does with each call it reads (:class:`Decision`): run
  it; skip it, its deadline having passed (nobody waits any more); leave it, the same id
  running already; or send again the answer it gave the same id (a call delivered twice, a
  reclaimed one already answered), so that no call runs twice. Answers are kept until their
  call's deadline has passed (after that the caller has given up and a copy is skipped as
  expired anyway) and at most :data:`CACHE_SIZE` of them.

Records are stream entries: flat ``{field: bytes}`` maps (:meth:`Call.encode`), read back by
:meth:`Call.decode`, which raises :class:`~gb28181gw.errors.RpcError` (400) for anything else.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gb28181gw.errors import RpcError, RpcRefused

#: Answers a callee remembers at most (a repeated id beyond them runs again only if it is still
#: before its deadline and older than this many answers: not under any realistic load).
CACHE_SIZE = 4096
#: Seconds a call lives by default: a control (PTZ, a query).
CONTROL_TIMEOUT = 5.0
#: Seconds a call opening a stream lives beyond ``media.invite_timeout`` (the device's own time to
#: answer our INVITE on its node): the calls' own round trips (superiors wait 10-30 s for the 200,
#: PROTOCOL.md §9.5; the default makes it 11 s).
INVITE_MARGIN = 1.0
#: Longest method name and argument text accepted (a call is a short message, not a payload).
MAX_METHOD = 64
MAX_ARGS = 64 * 1024
#: Longest result text accepted: a node's listing of its streams (about 1.5 kB each, with their
#: relay figures) is an answer too, and a node relaying thousands of streams must be listable.
MAX_RESULT = 16 * 1024 * 1024

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class Decision(StrEnum):
    """What the callee does with a call it has read (:meth:`AnswerCache.begin`)."""

    RUN = "run"
    EXPIRED = "expired"  # past its deadline: acknowledged, not run, not answered
    RUNNING = "running"  # the same id is being run: its answer will come
    REPLAY = "replay"  # answered already: the same answer again


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str:
    raw = fields.get(name)
    if raw is None:
        raise RpcError(400, f"the call has no {name.decode()} field")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise RpcError(400, f"the call's {name.decode()} field is not UTF-8") from None


def _object(text: str, what: str, limit: int = MAX_ARGS) -> dict[str, Any]:
    if len(text) > limit:
        raise RpcError(400, f"the {what} is {len(text)} characters long, beyond {limit}")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise RpcError(400, f"the {what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RpcError(400, f"the {what} is not a JSON object")
    return value


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RpcError(400, f"the call's {what} {text[:40]!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise RpcError(400, f"the call's {what} is not finite")
    return value


@dataclass(frozen=True, slots=True)
class Call:
    """One call to another node.

    Attributes:
        id: the idempotency id (32 hex digits of randomness).
        caller: the node the answer goes to.
        method: what to do (``stream.open`` …).
        args: its arguments, a JSON object.
        deadline: epoch seconds after which nobody waits for the answer.
    """

    id: str
    caller: str
    method: str
    args: dict[str, Any] = field(hash=False)
    deadline: float

    @classmethod
    def make(cls, id: str, caller: str, method: str, args: Mapping[str, Any], *, now: float, timeout: float) -> Call:
        """A call living ``timeout`` seconds from ``now`` (epoch seconds).

        Raises:
            RpcError: an empty id or method, a method name too long, arguments that are not JSON (400).
        """
        if len(id) < 16:
            raise RpcError(400, "a call id needs at least 64 bits of randomness")
        if not method or len(method) > MAX_METHOD:
            raise RpcError(400, f"method name {method[:80]!r} is empty or longer than {MAX_METHOD}")
        try:
            _dumps(dict(args))
        except (TypeError, ValueError) as exc:
            raise RpcError(400, f"the arguments of {method} cannot be sent as JSON: {exc}") from None
        return cls(id, caller, method, dict(args), now + timeout)

    def expired(self, now: float) -> bool:
        """Whether its deadline has passed at ``now`` (epoch seconds)."""
        return now >= self.deadline

    def encode(self) -> dict[bytes, bytes]:
        """The stream entry's fields."""
        return {
            b"id": self.id.encode(),
            b"caller": self.caller.encode(),
            b"method": self.method.encode(),
            b"args": _dumps(self.args).encode(),
            b"deadline": repr(self.deadline).encode(),
        }

    @classmethod
    def decode(cls, fields: Mapping[bytes, bytes]) -> Call:
        """The call in a stream entry's fields.

        Raises:
            RpcError: a field missing or unreadable (400).
        """
        id = _text(fields, b"id")
        method = _text(fields, b"method")
        if not id or not method or len(method) > MAX_METHOD:
            raise RpcError(400, "the call's id or method is empty or too long")
        return cls(
            id,
            _text(fields, b"caller"),
            method,
            _object(_text(fields, b"args"), "arguments"),
            _number(_text(fields, b"deadline"), "deadline"),
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to one call.

    Attributes:
        id: the call's id.
        status: 200, or an error status (:class:`~gb28181gw.errors.RpcError`'s codes, or the
            callee's own: a stream's 480, 486 …).
        result: what the method returned (200).
        error: what went wrong, in words (not 200).
    """

    id: str
    status: int
    result: dict[str, Any] = field(default_factory=dict, hash=False)
    error: str = ""
    #: the result as JSON text, when :meth:`of` wrote it already (not written twice)
    text: str = field(default="", hash=False, compare=False, repr=False)

    @classmethod
    def of(cls, id: str, result: dict[str, Any], *, node: str, method: str) -> Answer:
        """The answer carrying ``result``, or a 413 saying it is too long for the caller to read.

        Checked here, by the node that made it: the caller would drop it as unreadable and then
        wait out its deadline for an answer that came (a listing of very many streams).
        """
        text = _dumps(result)
        if len(text) > MAX_RESULT:
            return cls(
                id,
                413,
                error=f"the answer of {method} on node {node} is {len(text)} characters long, beyond {MAX_RESULT}",
            )
        return cls(id, 200, result, text=text)

    @property
    def ok(self) -> bool:
        return self.status == 200

    def encode(self) -> dict[bytes, bytes]:
        fields = {b"id": self.id.encode(), b"status": str(self.status).encode()}
        if self.ok:
            fields[b"result"] = (self.text or _dumps(self.result)).encode()
        else:
            fields[b"error"] = self.error.encode("utf-8", "replace")
        return fields

    @classmethod
    def decode(cls, fields: Mapping[bytes, bytes]) -> Answer:
        """The answer in a stream entry's fields.

        Raises:
            RpcError: a field missing or unreadable (400).
        """
        id = _text(fields, b"id")
        try:
            status = int(_text(fields, b"status"))
        except ValueError:
            raise RpcError(400, "the answer's status is not a number") from None
        if status == 200:
            return cls(id, 200, _object(_text(fields, b"result"), "result", MAX_RESULT))
        return cls(id, status, error=fields.get(b"error", b"").decode("utf-8", "replace"))

    def raise_for_status(self, node: str, method: str) -> dict[str, Any]:
        """The result, or :class:`~gb28181gw.errors.RpcRefused` with the callee's status and words."""
        if self.ok:
            return self.result
        raise RpcRefused(self.status, f"node {node} refused {method}: {self.error}")


class AnswerCache:
    """The callee's memory of the calls it ran: no call runs twice (see the module docstring).

    Args:
        size: answers kept at most (the oldest go first).
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._answers: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self._running: dict[str, float] = {}

    def begin(self, call: Call, now: float) -> tuple[Decision, Answer | None]:
        """What to do with ``call`` read at ``now`` (epoch seconds); the answer to send again for REPLAY."""
        self._forget(now)
        kept = self._answers.get(call.id)
        if kept is not None:
            return Decision.REPLAY, kept[1]
        if call.id in self._running:
            return Decision.RUNNING, None
        if call.expired(now):
            return Decision.EXPIRED, None
        self._running[call.id] = call.deadline
        return Decision.RUN, None

    def finish(self, call: Call, answer: Answer) -> None:
        """``call`` was run and answered ``answer``: a copy of it gets the same answer."""
        self._running.pop(call.id, None)
        self._answers[call.id] = (call.deadline, answer)
        self._answers.move_to_end(call.id)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)

    def abandon(self, call: Call) -> None:
        """``call`` was given up at its deadline, unanswered (a copy is then skipped as expired)."""
        self._running.pop(call.id, None)

    def _forget(self, now: float) -> None:
        # answers are added in roughly deadline order; one past its deadline ends the scan
        while self._answers:
            first = next(iter(self._answers.values()))
            if first[0] > now:
                break
            self._answers.popitem(last=False)

    @property
    def running(self) -> int:
        return len(self._running)

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._answers
