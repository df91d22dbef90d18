"""Device ownership and liveness in a real redis-server (issue 17): the scripts of ``store/ownership.py``.

Each "node" is a :class:`RedisCluster` on a store connection of its own, as each gateway has;
the node keys (``node:<id>``) that say which nodes live are set and deleted by hand here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from gb28181gw.errors import StoreError
from gb28181gw.gb.model import Device, DeviceState
from gb28181gw.gb.ownership import Holding
from gb28181gw.store.base import DeviceNotice
from tests.redis_server import RedisServer, module_server

D1, D2, D3 = "34020000001320000001", "34020000001320000002", "34020000001320000003"


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from module_server(tmp_path_factory)


class Nodes:
    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.stores: list[Any] = []

    async def node(
        self, name: str, devices: list[Device] | None = None, *, clock: Callable[[], float] = time.time
    ) -> Any:
        from gb28181gw.store.ownership import RedisCluster
        from gb28181gw.store.redis import RedisStore

        store = RedisStore(self.redis.url)
        await store.open()
        self.stores.append(store)
        cluster = RedisCluster(store, name, dead_grace=0.0, janitor_interval=3600, clock=clock)
        await cluster.start(devices or [])
        return cluster

    async def close(self) -> None:
        for store in self.stores:
            await store.close()


@pytest.fixture
async def nodes(redis: RedisServer) -> AsyncIterator[Nodes]:
    redis.flush()
    n = Nodes(redis)
    try:
        yield n
    finally:
        await n.close()


def online(device_id: str, host: str = "10.0.0.1") -> Device:
    return Device(device_id, host=host, port=5060, state=DeviceState.ONLINE, expires=3600, expires_at=2e9)


def owner(redis: RedisServer, device_id: str) -> bytes | None:
    return redis.command(b"HGET", b"gbgw:owner", device_id.encode())


def row(redis: RedisServer, device_id: str) -> list[object]:
    raw = redis.command(b"HGET", b"gbgw:devices", device_id.encode())
    assert raw is not None
    return list(json.loads(raw))


async def events(cluster: object) -> list[dict[str, str]]:
    r = cluster.store._r()  # type: ignore[attr-defined]
    out = []
    for _id, fields in await r.xrange("gbgw:events"):
        out.append({k.decode(): v.decode() for k, v in fields.items()})
    return out


async def test_a_later_register_at_another_node_takes_the_device_and_the_first_stops_writing(
    nodes: Nodes, redis: RedisServer
) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    a.registered(D1, 100.0)
    result = await a.write([online(D1)], {D1: 2e9}, [DeviceNotice(D1, "online")])
    assert result.lost == [] and owner(redis, D1) == b"1 a" and a.ownership.epoch(D1) == 1
    b.registered(D1, 101.0)  # re-homed: its REGISTER reached B
    await b.write([online(D1, host="10.0.0.2")], {D1: 2e9 + 1}, [DeviceNotice(D1, "online")])
    assert owner(redis, D1) == b"2 b"
    # out of A's live set with the claim itself: were A dead, its janitor (which reads only due
    # entries) would otherwise keep A's set open until the device's old deadline
    assert redis.command(b"ZSCORE", b"gbgw:live:a", D1.encode()) == b"$-1"
    # A learns with its next batch, even one without the device (lost:a), and forgets it
    result = await a.write([], {}, [])
    assert result.lost == [D1] and not a.owns(D1)
    assert a.lost == 1
    # a stale row and offline mark from A change nothing
    a.ownership.load([])
    stale = await a.write([online(D1, host="10.9.9.9")], {D1: None}, [DeviceNotice(D1, "offline", "x")])
    assert stale.lost == []  # not ours: not even sent
    assert row(redis, D1)[7] == "10.0.0.2"
    assert [(e["event"], e["node"]) for e in await events(a)] == [("online", "a"), ("online", "b")]


async def test_a_stale_nodes_write_is_refused_by_the_epoch(nodes: Nodes, redis: RedisServer) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    a.registered(D1, 100.0)
    await a.write([online(D1)], {D1: 2e9}, [])
    b.registered(D1, 101.0)
    await b.write([online(D1, host="10.0.0.2")], {D1: 2e9}, [])
    # A still believes it owns epoch 1 (B's word has not reached it): its row is refused in the script
    redis.command(b"DEL", b"gbgw:lost:a")
    assert a.ownership.state(D1) is Holding.OWNED
    result = await a.write([online(D1, host="10.9.9.9")], {D1: 2e9}, [DeviceNotice(D1, "offline", "timeout")])
    assert result.lost == [D1] and not a.owns(D1)
    assert row(redis, D1)[7] == "10.0.0.2" and owner(redis, D1) == b"2 b"
    assert redis.command(b"ZSCORE", b"gbgw:live:a", D1.encode()) == b"$-1"
    assert all(e["event"] != "offline" for e in await events(a))


async def test_a_claim_queued_before_a_later_register_elsewhere_loses_on_arrival(
    nodes: Nodes, redis: RedisServer
) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    a.registered(D1, 100.0)  # queued at A: Redis away, or only a slow batch
    b.registered(D1, 105.0)
    await b.write([online(D1, host="10.0.0.2")], {D1: 2e9}, [])
    result = await a.write([online(D1)], {D1: 2e9}, [DeviceNotice(D1, "online")])
    assert result.lost == [D1] and not a.owns(D1)
    assert owner(redis, D1) == b"1 b" and row(redis, D1)[7] == "10.0.0.2"
    assert await events(a) == []


async def test_a_failed_batch_keeps_its_claims_and_asks_for_a_resync(nodes: Nodes, redis: RedisServer) -> None:
    a = await nodes.node("a")
    a.registered(D1, 100.0)
    redis.stop(kill=True)
    try:
        with pytest.raises(StoreError):
            await a.write([online(D1)], {D1: 2e9}, [])
    finally:
        redis.start()
    assert a.pending and a.errors[("write",)] == 1
    result = await a.write([online(D1)], {D1: 2e9}, [])
    assert result.resync and owner(redis, D1) == b"1 a"


async def test_redis_restarted_empty_gets_the_owners_back_and_nothing_is_dropped(
    nodes: Nodes, redis: RedisServer
) -> None:
    a = await nodes.node("a")
    for d in (D1, D2):
        a.registered(d, 100.0)
    await a.write([online(D1), online(D2)], {D1: 2e9, D2: 2e9}, [])
    redis.flush()  # as a restart without persistence leaves it
    result = await a.write([online(D1)], {D1: 2e9}, [])
    assert result.resync and result.lost == []
    assert owner(redis, D1) == b"1 a" and a.owns(D1) and a.owns(D2)
    # the registrar then writes every device it owns again
    result = await a.write([online(D1), online(D2)], {D1: 2e9, D2: 2e9}, [])
    assert not result.resync and owner(redis, D2) == b"1 a"


async def test_an_older_dump_naming_an_older_epoch_of_ours_is_restored(nodes: Nodes, redis: RedisServer) -> None:
    a = await nodes.node("a")
    a.registered(D1, 100.0)
    await a.write([online(D1)], {}, [])
    a.registered(D1, 200.0)
    await a.write([online(D1)], {}, [])
    assert owner(redis, D1) == b"2 a"
    redis.command(b"HSET", b"gbgw:owner", D1.encode(), b"1 a")
    result = await a.write([online(D1)], {}, [])
    assert result.lost == [] and owner(redis, D1) == b"2 a"


async def test_the_owner_going_offline_appends_one_event_and_leaves_the_live_set(
    nodes: Nodes, redis: RedisServer
) -> None:
    a = await nodes.node("a")
    a.registered(D1, 100.0)
    await a.write([online(D1)], {D1: 2e9}, [DeviceNotice(D1, "online")])
    assert redis.command(b"ZSCORE", b"gbgw:live:a", D1.encode()) != b"$-1"
    await a.write([online(D1)], {D1: None}, [DeviceNotice(D1, "offline", "no keepalive for 6 s")])
    # sent again as when its answer was lost (the caller keeps the batch; nothing here changed): no second event
    a._published.add(D1)
    await a.write([online(D1)], {D1: None}, [DeviceNotice(D1, "offline", "no keepalive for 6 s")])
    assert [(e["event"], e["reason"]) for e in await events(a)] == [
        ("online", ""),
        ("offline", "no keepalive for 6 s"),
    ]
    assert redis.command(b"ZCARD", b"gbgw:live:a") == b":0"


async def test_online_and_offline_within_one_batch_both_reach_the_stream(nodes: Nodes) -> None:
    a = await nodes.node("a")
    a.registered(D1, 100.0)
    await a.write(
        [online(D1)], {D1: None}, [DeviceNotice(D1, "online"), DeviceNotice(D1, "offline", "TCP connection closed")]
    )
    assert [e["event"] for e in await events(a)] == ["online", "offline"]


async def test_two_janitors_of_a_dead_node_mark_each_device_offline_once(nodes: Nodes, redis: RedisServer) -> None:
    dead = await nodes.node("dead", clock=lambda: 1000.0)
    for d in (D1, D2, D3):
        dead.registered(d, 100.0)
    # D1 and D2 past their deadline at the janitors' clock, D3 not yet
    await dead.write([online(D1), online(D2), online(D3)], {D1: 900.0, D2: 950.0, D3: 1500.0}, [])
    survivor = await nodes.node("c")
    survivor.registered(D2, time.time())  # D2 re-registered at c before anyone swept (c's clock is right)
    await survivor.write([online(D2, host="10.0.0.3")], {D2: 2e9}, [])
    b = await nodes.node("b", clock=lambda: 1000.0)
    c2 = await nodes.node("c2", clock=lambda: 1000.0)
    # node:dead never existed (killed long ago); b, c and c2 are alive
    for name in ("b", "c", "c2"):
        redis.command(b"SET", f"gbgw:node:{name}".encode(), b"{}")
    dead_seen = await asyncio.gather(b.janitor_round(0.0), c2.janitor_round(0.0))
    assert dead_seen == [["dead"], ["dead"]]
    holder = redis.command(b"GET", b"gbgw:janitor:dead")
    assert holder in (b.token.encode(), c2.token.encode())
    offline = [e for e in await events(b) if e["event"] == "offline"]
    assert [(e["device"], e["node"]) for e in offline] == [(D1, "dead")]
    assert row(redis, D1)[15] == "offline" and "node dead stopped" in str(row(redis, D1)[25])
    assert row(redis, D2)[15] == "online" and row(redis, D2)[7] == "10.0.0.3"  # the new node's row
    # again: D1 is not marked twice; D3's deadline has not passed
    await asyncio.gather(b.janitor_round(1.0), c2.janitor_round(1.0))
    assert len([e for e in await events(b) if e["event"] == "offline"]) == 1
    assert redis.command(b"SISMEMBER", b"gbgw:nodes", b"dead") == b":1"
    # D3's deadline passes: marked, the set removed, the node forgotten
    for j in (b, c2):
        j._clock = lambda: 2000.0
    await asyncio.gather(b.janitor_round(2.0), c2.janitor_round(2.0))
    offline = [e for e in await events(b) if e["event"] == "offline"]
    assert sorted(e["device"] for e in offline) == [D1, D3]
    assert redis.command(b"EXISTS", b"gbgw:live:dead") == b":0"
    assert redis.command(b"EXISTS", b"gbgw:lost:dead") == b":0"  # c's claim of D2 had told the dead node
    assert redis.command(b"SISMEMBER", b"gbgw:nodes", b"dead") == b":0"
    assert redis.command(b"EXISTS", b"gbgw:janitor:dead") == b":0"
    assert sum(j.adoptions[("offline",)] for j in (b, c2)) == 2
    # D2 left the dead node's set with c's claim: no janitor had it to leave to its new node
    assert sum(j.adoptions[("reclaimed",)] for j in (b, c2)) == 0
    assert sum(j.adoptions[("finished",)] for j in (b, c2)) == 1


async def test_a_janitor_stops_when_the_node_comes_back(nodes: Nodes, redis: RedisServer) -> None:
    dead = await nodes.node("back", clock=lambda: 1000.0)
    dead.registered(D1, 100.0)
    await dead.write([online(D1)], {D1: 900.0}, [])
    b = await nodes.node("b", clock=lambda: 1000.0)
    redis.command(b"SET", b"gbgw:lock-probe", b"1")
    redis.command(b"SET", b"gbgw:janitor:back", b.token.encode())
    redis.command(b"SET", b"gbgw:node:back", b"{}")  # it restarted
    assert await b.sweep("back") == (0, 0, False)
    assert redis.command(b"EXISTS", b"gbgw:janitor:back") == b":0"
    assert row(redis, D1)[15] == "online" and await events(b) == []


async def test_a_janitor_taking_the_lock_after_another_finished_the_node_does_nothing(
    nodes: Nodes, redis: RedisServer
) -> None:
    # two janitors read the node list at once; one finishes the dead node and lets go of the lock,
    # the other then takes the lock: it must not count (and log) the node finished a second time
    dead = await nodes.node("dead", clock=lambda: 1000.0)
    dead.registered(D1, 100.0)
    await dead.write([online(D1)], {D1: 900.0}, [])
    b = await nodes.node("b", clock=lambda: 1000.0)
    c = await nodes.node("c", clock=lambda: 1000.0)
    redis.command(b"SET", b"gbgw:janitor:dead", b.token.encode())
    assert await b.sweep("dead") == (1, 0, True)
    redis.command(b"SET", b"gbgw:janitor:dead", c.token.encode())
    assert await c.sweep("dead") == (0, 0, False)
    assert c.adoptions[("finished",)] == 0 and c.adoptions[("offline",)] == 0
    assert redis.command(b"EXISTS", b"gbgw:janitor:dead") == b":0"
    assert [e["event"] for e in await events(b)] == ["offline"]


async def test_the_offline_of_a_device_a_janitor_marked_already_is_not_appended_again(
    nodes: Nodes, redis: RedisServer
) -> None:
    # the owner was paused past its key's life: a janitor marked its device offline; it resumes
    a = await nodes.node("a", clock=lambda: 1000.0)
    a.registered(D1, 100.0)
    await a.write([online(D1)], {D1: 900.0}, [])
    b = await nodes.node("b", clock=lambda: 1000.0)
    redis.command(b"SET", b"gbgw:node:b", b"{}")
    await b.janitor_round(0.0)
    await a.write([online(D1)], {D1: None}, [DeviceNotice(D1, "offline", "no keepalive")])
    assert [e["event"] for e in await events(a)] == ["offline"]


async def test_a_device_no_node_owns_is_written_by_any_but_anothers_is_not(nodes: Nodes, redis: RedisServer) -> None:
    # an operator provisions a device before it ever registers: its row must not wait for an owner
    a, b = await nodes.node("a"), await nodes.node("b")
    provisioned = Device(D1, name="gate", provisioned=True)
    result = await a.write([provisioned], {}, [])
    assert result.lost == [] and row(redis, D1)[1] == "gate" and owner(redis, D1) == b"$-1"
    b.registered(D2, 100.0)
    await b.write([online(D2, host="10.0.0.2")], {D2: 2e9}, [])
    await a.write([Device(D2, name="not yours")], {}, [])
    assert row(redis, D2)[1] == "" and row(redis, D2)[7] == "10.0.0.2"


@pytest.mark.parametrize("skew", [300.0, -300.0], ids=["first-node-fast", "second-node-slow"])
async def test_a_later_register_wins_whatever_the_nodes_clocks_say(
    nodes: Nodes, redis: RedisServer, skew: float
) -> None:
    # A registers the device, then B (re-homed); one of the two clocks is five minutes off
    fast = skew > 0
    a = await nodes.node("a", clock=(lambda: time.time() + skew) if fast else time.time)
    b = await nodes.node("b", clock=time.time if fast else (lambda: time.time() + skew))
    a.registered(D1, a._clock())
    await a.write([online(D1)], {D1: a._clock() + 60}, [DeviceNotice(D1, "online")])
    b.registered(D1, b._clock())
    result = await b.write([online(D1, host="10.0.0.2")], {D1: b._clock() + 60}, [DeviceNotice(D1, "online")])
    assert result.lost == [] and b.owns(D1) and owner(redis, D1) == b"2 b"
    assert (await a.write([], {}, [])).lost == [D1]
    assert row(redis, D1)[7] == "10.0.0.2"


async def test_a_janitor_does_not_mark_early_because_the_dead_nodes_clock_was_slow(
    nodes: Nodes, redis: RedisServer
) -> None:
    # the dead node's clock was five minutes slow: its device's deadline, a minute ahead of it, is
    # four minutes past by a right clock, yet the device had a minute left when its node died
    dead = await nodes.node("dead", clock=lambda: time.time() - 300)
    dead.registered(D1, dead._clock())
    await dead.write([online(D1)], {D1: dead._clock() + 60}, [])
    b = await nodes.node("b")
    redis.command(b"SET", b"gbgw:node:b", b"{}")
    assert await b.janitor_round(0.0) == ["dead"]
    assert row(redis, D1)[15] == "online" and await events(b) == []
    assert redis.command(b"ZCARD", b"gbgw:live:dead") == b":1"


async def test_a_janitor_takes_a_dead_nodes_devices_a_bounded_number_per_script(
    nodes: Nodes, redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one script over a dead node's whole set would hold Redis up for every node as long as it runs
    from gb28181gw.store import ownership

    monkeypatch.setattr(ownership, "SWEEP_CHUNK", 2)
    ids = [f"3402000000132000{i:04d}" for i in range(1, 6)]
    dead = await nodes.node("dead", clock=lambda: 1000.0)
    for d in ids:
        dead.registered(d, 100.0)
    later = f"3402000000132000{9:04d}"
    dead.registered(later, 100.0)
    await dead.write([online(d) for d in [*ids, later]], {**{d: 900.0 for d in ids}, later: 1500.0}, [])
    b = await nodes.node("b", clock=lambda: 1000.0)
    redis.command(b"SET", b"gbgw:node:b", b"{}")
    redis.command(b"SET", b"gbgw:janitor:dead", b.token.encode())
    script = b.store._script(ownership._SWEEP)
    taken: list[int] = []

    async def counted(**kw: Any) -> Any:
        answer = await script(**kw)
        taken.append(int(answer[3]))
        return answer

    monkeypatch.setattr(b.store, "_script", lambda source, client=None: counted)
    assert await b.sweep("dead") == (5, 0, False)
    assert taken == [2, 2, 1]  # the later device, its deadline not passed, is not even read
    assert len([e for e in await events(b) if e["event"] == "offline"]) == 5
    assert redis.command(b"ZCARD", b"gbgw:live:dead") == b":1"


async def test_a_device_a_janitor_marked_offline_while_its_node_was_away_is_said_online_again(
    nodes: Nodes, redis: RedisServer
) -> None:
    # A could not reach Redis (or was stopped) past its key's life: B's janitor marked A's device
    # offline; the device kept talking to A, which writes its next deadline: the stream hears it is back
    a = await nodes.node("a", clock=lambda: 1000.0)
    a.registered(D1, 100.0)
    await a.write([online(D1)], {D1: 900.0}, [DeviceNotice(D1, "online")])
    b = await nodes.node("b", clock=lambda: 1000.0)
    redis.command(b"SET", b"gbgw:node:b", b"{}")
    await b.janitor_round(0.0)
    assert row(redis, D1)[15] == "offline"
    result = await a.write([], {D1: 1100.0}, [])
    assert result.back == [D1]
    assert [(e["event"], e["node"]) for e in await events(a)] == [("online", "a"), ("offline", "a"), ("online", "a")]
    # its row is A's to write again (the registrar does, with the next batch); once only
    assert (await a.write([online(D1)], {D1: 1200.0}, [])).back == []
    assert row(redis, D1)[15] == "online" and len(await events(a)) == 3


async def test_a_device_back_online_by_its_own_nodes_word_is_said_online_once(nodes: Nodes, redis: RedisServer) -> None:
    a = await nodes.node("a")
    a.registered(D1, 100.0)
    offline = Device(D1, host="10.0.0.1", port=5060, state=DeviceState.OFFLINE, expires=3600, expires_at=2e9)
    await a.write([online(D1)], {D1: 2e9}, [DeviceNotice(D1, "online")])
    await a.write([offline], {D1: None}, [DeviceNotice(D1, "offline", "no keepalive")])
    result = await a.write([online(D1)], {D1: 2e9}, [DeviceNotice(D1, "online")])  # a keepalive brought it back
    assert result.back == []
    assert [e["event"] for e in await events(a)] == ["online", "offline", "online"]


async def _busy(redis: RedisServer, seconds: float) -> None:
    """Hold Redis up for ``seconds`` with a script that spins, as a big one (or a slow disk) does."""
    from redis.asyncio import Redis

    r = Redis.from_url(redis.url)
    try:
        await r.eval(
            "local s = redis.call('TIME') repeat local n = redis.call('TIME') "
            "until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > tonumber(ARGV[1])",
            0,
            int(seconds * 1e6),
        )
    finally:
        await r.aclose()


async def test_a_batch_applied_but_unanswered_and_sent_again_appends_each_event_once(
    nodes: Nodes, redis: RedisServer
) -> None:
    # the write-behind's client gives up on an answer after its timeout (Redis busy) and sends the
    # script once more (redis-py's retry); the registrar sends the failed batch again with its next
    # flush, and the flush after that, whatever Redis ran of it. Each event reaches the stream once
    from gb28181gw.store.redis import connect

    a = await nodes.node("a")
    a.registered(D2, 99.0)
    await a.write([online(D2)], {D2: 2e9}, [])  # the script is loaded: the batch below goes by its SHA
    await a.store._redis.aclose()
    a.store._redis = connect(redis.url, timeout=0.3, retries=1)  # as the store's own client, quicker
    a.store._scripts.clear()  # registered with the client they were made by
    a.registered(D1, 100.0)
    batch = ([online(D1)], {D1: 2e9}, [DeviceNotice(D1, "online")])
    busy = asyncio.create_task(_busy(redis, 1.0))
    await asyncio.sleep(0.1)
    with pytest.raises(StoreError):
        await a.write(*batch)
    await busy
    await a.write(*batch)  # the registrar's next flush: the batch it kept
    assert [(e["device"], e["event"]) for e in await events(a)] == [(D1, "online")]
    # what comes next is appended as ever: the device offline, then back with a keepalive
    offline = Device(D1, host="10.0.0.1", port=5060, state=DeviceState.OFFLINE, expires=3600, expires_at=2e9)
    gone = [DeviceNotice(D1, "offline", "no keepalive")]
    await a.write([offline], {D1: None}, gone)
    await a.write([offline], {D1: None}, gone)  # sent again: once
    back = [DeviceNotice(D1, "online")]
    await a.write([online(D1)], {D1: 2e9}, back)
    await a.write([online(D1)], {D1: 2e9}, back)
    assert [e["event"] for e in await events(a) if e["device"] == D1] == ["online", "offline", "online"]


async def test_a_batch_of_several_scripts_sent_again_appends_each_event_once(nodes: Nodes) -> None:
    # more devices than one script takes (CHUNK): the scripts go pipelined, and a failure after
    # some ran sends them all again
    from gb28181gw.store.ownership import CHUNK

    a = await nodes.node("a")
    ids = [f"340200000013{i:08d}" for i in range(1, CHUNK + 3)]
    for i in ids:
        a.registered(i, 100.0)
    batch = ([online(i) for i in ids], dict.fromkeys(ids, 2e9), [DeviceNotice(i, "online") for i in ids])
    await a.write(*batch)
    await a.write(*batch)
    online_events = [e["device"] for e in await events(a) if e["event"] == "online"]
    assert sorted(online_events) == ids


async def test_a_restarted_node_says_online_again(nodes: Nodes) -> None:
    # a new process: its notices are new ones, even though it numbers them from 1 again
    a = await nodes.node("a")
    a.registered(D1, 100.0)
    await a.write([online(D1)], {D1: 2e9}, [DeviceNotice(D1, "online")])
    again = await nodes.node("a")
    again.registered(D1, 101.0)
    await again.write([online(D1)], {D1: 2e9}, [DeviceNotice(D1, "online")])
    assert [e["event"] for e in await events(a)] == ["online", "online"]


async def test_a_removed_device_leaves_no_notice_mark(nodes: Nodes, redis: RedisServer) -> None:
    a = await nodes.node("a")
    a.registered(D1, 100.0)
    await a.write([online(D1)], {D1: 2e9}, [DeviceNotice(D1, "online")])
    assert redis.command(b"HEXISTS", b"gbgw:noticed", D1.encode()) == b":1"
    assert await a.store.delete_device(D1)
    assert redis.command(b"HEXISTS", b"gbgw:noticed", D1.encode()) == b":0"
