"""Calls between nodes, without Redis (issue 17): records, encoding, and the callee's answer cache."""

from __future__ import annotations

import pytest

from gb28181gw.errors import RpcError, RpcRefused
from gb28181gw.gb.rpc import MAX_ARGS, MAX_RESULT, Answer, AnswerCache, Call, Decision

ID = "0123456789abcdef0123456789abcdef"


def call(id: str = ID, *, now: float = 1000.0, timeout: float = 5.0, args: dict[str, object] | None = None) -> Call:
    return Call.make(id, "n1", "stream.open", args if args is not None else {"channel": "3402", "port": 40000},
                     now=now, timeout=timeout)  # fmt: skip


class TestCall:
    def test_round_trip_through_stream_fields(self) -> None:
        c = call(args={"name": "前门 camera", "n": 3, "list": [1, None], "nested": {"a": True}})
        back = Call.decode(c.encode())
        assert back == c and back.args == c.args
        assert back.deadline == 1005.0

    def test_deadline_is_absolute(self) -> None:
        c = call(now=1000.0, timeout=5.0)
        assert not c.expired(1004.999)
        assert c.expired(1005.0) and c.expired(2000.0)

    @pytest.mark.parametrize(
        ("fields", "words"),
        [
            ({}, "no id field"),
            ({b"id": ID.encode(), b"caller": b"n1", b"method": b"m", b"deadline": b"1"}, "no args field"),
            ({b"id": ID.encode(), b"caller": b"n1", b"method": b"m", b"args": b"[1]", b"deadline": b"1"}, "not a JSON object"),
            ({b"id": ID.encode(), b"caller": b"n1", b"method": b"m", b"args": b"{", b"deadline": b"1"}, "not JSON"),
            ({b"id": ID.encode(), b"caller": b"n1", b"method": b"m", b"args": b"{}", b"deadline": b"soon"}, "not a number"),
            ({b"id": ID.encode(), b"caller": b"n1", b"method": b"m", b"args": b"{}", b"deadline": b"nan"}, "not finite"),
            ({b"id": b"\xff", b"caller": b"n1", b"method": b"m", b"args": b"{}", b"deadline": b"1"}, "not UTF-8"),
            ({b"id": ID.encode(), b"caller": b"n1", b"method": b"", b"args": b"{}", b"deadline": b"1"}, "empty"),
            ({b"id": ID.encode(), b"caller": b"n1", b"method": b"m", b"args": b'{"a":"' + b"x" * MAX_ARGS + b'"}',
              b"deadline": b"1"}, "characters long"),
        ],
    )  # fmt: skip
    def test_unreadable_calls_are_400_naming_the_field(self, fields: dict[bytes, bytes], words: str) -> None:
        with pytest.raises(RpcError) as caught:
            Call.decode(fields)
        assert caught.value.status == 400 and words in str(caught.value)

    def test_refuses_a_short_id_an_odd_method_and_unsendable_args(self) -> None:
        with pytest.raises(RpcError, match="64 bits"):
            Call.make("1", "n1", "m", {}, now=0, timeout=1)  # a counter is no idempotency id
        with pytest.raises(RpcError, match="method name"):
            Call.make(ID, "n1", "m" * 65, {}, now=0, timeout=1)
        with pytest.raises(RpcError, match="JSON"):
            Call.make(ID, "n1", "m", {"x": object()}, now=0, timeout=1)
        with pytest.raises(RpcError, match="JSON"):
            Call.make(ID, "n1", "m", {"x": float("nan")}, now=0, timeout=1)


class TestAnswer:
    def test_ok_and_error_round_trip(self) -> None:
        ok = Answer(ID, 200, {"port": 30000, "ip": "127.0.0.1"})
        assert Answer.decode(ok.encode()) == ok and Answer.decode(ok.encode()).result == ok.result
        err = Answer(ID, 486, error="device busy")
        back = Answer.decode(err.encode())
        assert back == err and back.error == "device busy" and not back.ok

    def test_raise_for_status_keeps_the_callees_status(self) -> None:
        assert Answer(ID, 200, {"a": 1}).raise_for_status("n2", "m") == {"a": 1}
        with pytest.raises(RpcRefused) as caught:
            Answer(ID, 480, error="offline").raise_for_status("n2", "stream.open")
        assert caught.value.status == 480 and "n2" in str(caught.value) and "offline" in str(caught.value)

    def test_a_result_may_be_a_long_listing_but_not_endless(self) -> None:
        # a node's streams listed for another node: far beyond a call's argument limit
        rows = [{"id": f"{i:010d}", "figures": "x" * 1500} for i in range(1000)]
        answer = Answer.decode(Answer(ID, 200, {"streams": rows}).encode())
        assert answer.result["streams"] == rows
        huge = {b"id": ID.encode(), b"status": b"200", b"result": b'{"a":"' + b"x" * MAX_RESULT + b'"}'}
        with pytest.raises(RpcError, match="characters long"):
            Answer.decode(huge)

    def test_unreadable_status(self) -> None:
        with pytest.raises(RpcError, match="status"):
            Answer.decode({b"id": ID.encode(), b"status": b"ok"})


class TestAnswerCache:
    def test_run_once_then_replay_the_same_answer(self) -> None:
        cache = AnswerCache()
        c = call()
        assert cache.begin(c, 1000.0) == (Decision.RUN, None)
        assert cache.begin(c, 1000.1) == (Decision.RUNNING, None)  # delivered twice while running
        answer = Answer(c.id, 200, {"x": 1})
        cache.finish(c, answer)
        assert cache.begin(c, 1001.0) == (Decision.REPLAY, answer)
        assert cache.running == 0 and len(cache) == 1

    def test_a_call_past_its_deadline_is_not_run(self) -> None:
        cache = AnswerCache()
        assert cache.begin(call(now=1000.0, timeout=5.0), 1005.0) == (Decision.EXPIRED, None)
        assert cache.running == 0

    def test_answers_are_forgotten_after_their_deadline(self) -> None:
        cache = AnswerCache()
        c = call(now=1000.0, timeout=5.0)
        cache.begin(c, 1000.0)
        cache.finish(c, Answer(c.id, 200))
        other = call("f" * 32, now=1010.0)
        assert cache.begin(other, 1010.0)[0] is Decision.RUN
        assert c.id not in cache  # past 1005: a copy now would be skipped as expired anyway
        assert cache.begin(c, 1010.0) == (Decision.EXPIRED, None)

    def test_size_bound_drops_the_oldest(self) -> None:
        cache = AnswerCache(size=3)
        ids = [f"{i:032x}" for i in range(5)]
        for i in ids:
            c = call(i)
            cache.begin(c, 1000.0)
            cache.finish(c, Answer(i, 200))
        assert len(cache) == 3 and ids[0] not in cache and ids[4] in cache

    def test_an_error_answer_is_replayed_too(self) -> None:
        cache = AnswerCache()
        c = call()
        cache.begin(c, 1000.0)
        cache.finish(c, Answer(c.id, 486, error="busy"))
        decision, kept = cache.begin(c, 1000.5)
        assert decision is Decision.REPLAY and kept is not None and kept.status == 486
