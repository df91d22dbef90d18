"""What calls between nodes leave in Redis and how a too-large answer ends (review of i17-fwd).

Answers may now carry 16 MiB (a node's stream listing): an answer kept in the caller's reply
stream after it was read, or a call kept in the inbox after it was answered, holds Redis
memory for nothing (up to REPLIES_MAXLEN/INBOX_MAXLEN of them); an answer beyond the limit
must be refused by the node that made it, not dropped by the caller who then waits out the
deadline for an answer that came.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from redis.asyncio import Redis

from gb28181gw.errors import RpcRefused
from gb28181gw.gb.rpc import Call
from tests.redis_server import RedisServer

from .test_rpc import live, node, raw

__all__ = ["raw"]  # the fixture, used by name


async def test_answers_and_calls_are_not_kept_in_redis_once_done(redis: RedisServer, raw: Redis) -> None:
    big = "x" * (1024 * 1024)

    async def listing(call: Call) -> Mapping[str, Any]:
        return {"streams": [big]}

    await live(raw, "n1", "n2")
    n1 = await node(redis, "n1")
    n2 = await node(redis, "n2", stream_list=listing)
    try:
        for _ in range(20):
            got = await n1.call("n2", "stream.list", {"pad": "y" * 60_000})
            assert got["streams"] == [big]

        # 20 answers of 1 MiB and 20 calls of 60 kB were kept (about 21 MiB) until 10,000 more came
        for _ in range(500):
            kept = (await raw.xlen("gbgw:rpc:n1:replies"), await raw.xlen("gbgw:rpc:n2"))
            if kept == (0, 0):
                break
            await asyncio.sleep(0.02)
        assert kept == (0, 0), f"answers and calls still in Redis once done: {kept}"
        assert (await raw.xpending("gbgw:rpc:n2", "rpc"))["pending"] == 0
        # and calls go on working after their entries are deleted
        assert (await n1.call("n2", "stream.list", {}))["streams"] == [big]
    finally:
        await n1.close()
        await n2.close()


async def test_an_answer_beyond_the_limit_is_refused_by_its_node_not_waited_for(
    redis: RedisServer, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gb28181gw.gb.rpc as rpc_core

    monkeypatch.setattr(rpc_core, "MAX_RESULT", 100_000)

    async def listing(call: Call) -> Mapping[str, Any]:
        return {"streams": ["x" * 200_000]}

    await live(raw, "n1", "n2")
    n1 = await node(redis, "n1")
    n2 = await node(redis, "n2", stream_list=listing)
    try:
        # was: the caller dropped the answer as unreadable and said "did not answer" after 20 s
        with pytest.raises(RpcRefused) as caught:
            await n1.call("n2", "stream.list", {}, timeout=20)
        assert caught.value.status == 413
        assert "100000" in str(caught.value) and "stream.list" in str(caught.value)
        assert n2.served[("stream.list", "error")] == 1
    finally:
        await n1.close()
        await n2.close()
