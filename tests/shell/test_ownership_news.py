"""A node learning what other nodes wrote, from a real redis-server (issue 17): ``RedisCluster.news``.

Each "node" is a :class:`RedisCluster` on a store connection of its own, as each gateway has
(``test_ownership_redis.Nodes``). What is checked: the rows a node is given are those of the
devices *other* nodes wrote events about, read as Redis holds them now; and whenever entries past
its cursor may be gone (its first read, the stream trimmed past it, Redis emptied or set back)
it is given every row instead, so that a missed event never leaves its view stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gb28181gw.errors import StoreError
from gb28181gw.gb.model import Device, DeviceState
from gb28181gw.store.base import DeviceNotice
from tests.helpers import most_between_turns
from tests.redis_server import RedisServer, module_server

from .test_ownership_redis import D1, D2, D3, Nodes, events, nodes, online

__all__ = ["nodes"]  # the fixture, used by name


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from module_server(tmp_path_factory)


async def register(node: object, device_id: str, at: float, host: str = "10.0.0.1") -> None:
    node.registered(device_id, at)  # type: ignore[attr-defined]
    await node.write([online(device_id, host)], {device_id: 2e9}, [DeviceNotice(device_id, "online")])  # type: ignore[attr-defined]


async def test_the_first_read_is_every_row_then_only_what_other_nodes_wrote(nodes: Nodes) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    await register(a, D1, 100.0)
    first = await b.news()
    assert first.whole and [d.device_id for d in first.devices] == [D1]
    assert (await b.news()).devices == []  # nothing new
    await register(a, D2, 101.0, host="10.0.0.2")
    learnt = await b.news()
    assert not learnt.whole and [(d.device_id, d.host, d.state) for d in learnt.devices] == [
        (D2, "10.0.0.2", DeviceState.ONLINE)
    ]
    # A is not told of its own writes
    assert (await a.news()).whole
    await register(a, D3, 102.0)
    assert (await a.news()).devices == []


async def test_a_device_moving_and_going_offline_elsewhere_is_learnt_with_its_newest_row(nodes: Nodes) -> None:
    a, b, c = await nodes.node("a"), await nodes.node("b"), await nodes.node("c")
    await c.news()
    await register(a, D1, 100.0)
    await register(b, D1, 101.0, host="10.0.0.2")  # re-homed: B's claim, B's row
    learnt = await c.news()
    # two events, one row: the one Redis holds now
    assert [(d.device_id, d.host) for d in learnt.devices] == [(D1, "10.0.0.2")]
    gone = online(D1, "10.0.0.2")
    gone.state = DeviceState.OFFLINE
    await b.write([gone], {D1: None}, [DeviceNotice(D1, "offline", "keepalive timeout")])
    assert [(d.device_id, d.state) for d in (await c.news()).devices] == [(D1, DeviceState.OFFLINE)]
    # A lost it: its next batch says so, and its next read gives it B's row, even though B's events
    # about it may have been read (and passed over) while A still held the device
    await a.news()
    assert (await a.write([], {}, [])).lost == [D1]
    assert [(d.device_id, d.state) for d in (await a.news()).devices] == [(D1, DeviceState.OFFLINE)]


async def test_a_stream_trimmed_past_the_cursor_gives_every_row(nodes: Nodes, redis: RedisServer) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    await register(a, D1, 100.0)
    await b.news()
    await register(a, D2, 101.0)
    await register(a, D3, 102.0)
    # trimmed to one entry: D2's event is gone unread
    assert redis.command(b"XTRIM", b"gbgw:events", b"MAXLEN", b"1") == b":2"
    learnt = await b.news()
    assert learnt.whole and sorted(d.device_id for d in learnt.devices) == [D1, D2, D3]
    await register(a, D1, 103.0, host="10.0.0.9")
    learnt = await b.news()
    assert not learnt.whole and [(d.device_id, d.host) for d in learnt.devices] == [(D1, "10.0.0.9")]


async def test_redis_emptied_gives_every_row_and_again_once_the_nodes_wrote_theirs(
    nodes: Nodes, redis: RedisServer
) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    await register(a, D1, 100.0)
    await b.news()
    redis.flush()  # as a restart without persistence leaves it
    assert (await b.news()).whole  # a stream with no entries, and no boot token: a restart
    # A writes its device again (its batch found Redis empty: a resync, without events)
    result = await a.write([online(D1, "10.0.0.7")], {D1: 2e9}, [])
    assert result.resync or (await a.write([online(D1, "10.0.0.7")], {D1: 2e9}, [])).resync
    learnt = await b.news()
    # the boot token changed again (A put a new one): every row, this time with A's
    assert learnt.whole and [(d.device_id, d.host) for d in learnt.devices] == [(D1, "10.0.0.7")]


async def test_a_stream_set_back_by_an_older_dump_gives_every_row(nodes: Nodes, redis: RedisServer) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    await register(a, D1, 100.0)
    await b.news()
    await register(a, D2, 101.0)
    assert [d.device_id for d in (await b.news()).devices] == [D2]
    # the stream made anew behind the cursor, the boot token kept (a restore that kept it)
    redis.command(b"DEL", b"gbgw:events")
    redis.command(b"XADD", b"gbgw:events", b"1-1", b"device", D3.encode(), b"event", b"online", b"node", b"a")
    assert (await b.news()).whole


async def test_redis_away_raises_and_the_next_read_goes_on_from_the_same_place(
    nodes: Nodes, redis: RedisServer
) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    await b.news()
    await register(a, D1, 100.0)
    redis.stop(kill=True)
    try:
        with pytest.raises(StoreError):
            await b.news()
    finally:
        redis.start()
    redis.flush()
    # started again empty: the boot token is gone, so every row (none yet) rather than a stale view
    assert (await b.news()).whole
    await register(a, D2, 101.0)
    assert [d.device_id for d in (await b.news()).devices] == [D2]


async def test_every_row_read_again_is_decoded_with_the_loop_turning_between_steps(
    nodes: Nodes, redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full read (the first, every 5 minutes, twice after a Redis restart) decodes every row: 100,000
    took 0.74 s in one go, a stall every keepalive and REGISTER behind it waited out. Counted, not
    timed: how many rows are decoded between two turns of a task beside it."""
    from gb28181gw.store.base import ROWS_PER_STEP
    from gb28181gw.store.redis import _encode_devices

    count = ROWS_PER_STEP * 4 + 10
    rows = _encode_devices([online(f"3402000000132{i:07d}").row() for i in range(count)])
    b = await nodes.node("b")
    args = [b"HSET", b"gbgw:devices"]
    for k, v in rows.items():
        args += [k, v]
    redis.command(*args)
    decoded = 0
    from_row = Device.from_row.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Device], values: Any) -> Device:
        nonlocal decoded
        decoded += 1
        return from_row(cls, values)

    monkeypatch.setattr(Device, "from_row", classmethod(counting))
    learnt, most = await most_between_turns(lambda: decoded, b.news())
    assert learnt.whole and len(learnt.devices) == count
    assert most <= ROWS_PER_STEP, f"{most} rows decoded without a turn of the loop"


async def test_a_device_deleted_elsewhere_is_named_removed_and_only_when_its_row_is_still_gone(
    nodes: Nodes, redis: RedisServer
) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    await register(a, D1, 100.0)
    await register(a, D2, 101.0)
    await b.news()
    before = len(await events(a))
    assert await a.store.delete_device(D1)
    # the delete and its entry in one script: an entry means the row went
    assert (await events(a))[before:] == [
        {"device": D1, "event": "removed", "node": "", "at": (await events(a))[before]["at"]}
    ]
    learnt = await b.news()
    assert not learnt.whole and learnt.devices == [] and learnt.removed == [D1]
    # deleting what is not there appends nothing
    assert not await a.store.delete_device(D1)
    assert len(await events(a)) == before + 1
    assert (await b.news()).removed == []
    # deleted, then registered again before B reads: the row is there, B learns it, drops nothing
    assert await a.store.delete_device(D2)
    await register(a, D2, 102.0, host="10.0.0.5")
    learnt = await b.news()
    assert learnt.removed == [] and [(d.device_id, d.host) for d in learnt.devices] == [(D2, "10.0.0.5")]


async def test_a_full_read_is_exact_only_while_redis_kept_its_data(nodes: Nodes, redis: RedisServer) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    await register(a, D1, 100.0)
    first = await b.news()
    assert first.whole and first.exact  # every row there is: what is missing was deleted
    await register(a, D2, 101.0)
    await register(a, D3, 102.0)
    redis.command(b"XTRIM", b"gbgw:events", b"MAXLEN", b"1")
    trimmed = await b.news()
    assert trimmed.whole and trimmed.exact  # entries lost, not rows
    redis.flush()
    emptied = await b.news()
    assert emptied.whole and not emptied.exact  # rows no node writes again (provisioned ones) are gone
    await register(a, D1, 103.0)
    b._reconcile_at = 0.0  # the periodic full read, now
    later = await b.news()
    # still not: what Redis lost stays lost, so a missing row no longer means a delete
    assert later.whole and not later.exact


async def test_a_stream_set_back_makes_full_reads_inexact(nodes: Nodes, redis: RedisServer) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    await register(a, D1, 100.0)
    await b.news()
    await register(a, D2, 101.0)
    await b.news()
    redis.command(b"DEL", b"gbgw:events")  # as an older dump restored leaves it
    learnt = await b.news()
    assert learnt.whole and not learnt.exact
