"""A device deleted at one node is dropped from the others' memory (issue 17), gateways in this process.

Gateway C (``node.id`` nC) on a real redis-server knows devices from Redis; a device row is then
deleted as another node's ``device remove`` does it (:meth:`RedisStore.delete_device`, which
appends a ``removed`` event in the same script). C drops it from its table and its channels
within a read or two, but never a device C itself serves. A row gone without an event (missed)
is dropped by C's next full read, unless Redis lost its data meanwhile: then a missing row is no
delete, and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from redis.asyncio import Redis

from gb28181gw.gb.model import Channel, Device
from gb28181gw.store.redis import RedisStore
from tests.redis_server import RedisServer

from .conftest import start_gateway

D1, D2, D3, D4, D5 = (f"3402000000132000{i:04d}" for i in range(1, 6))
CH = "34020000001310000001"


async def until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout  # a guard against hanging, not a measurement
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_device_deleted_elsewhere_is_dropped_here_with_its_channels_never_one_served_here(
    redis: RedisServer,
) -> None:
    seed = RedisStore(redis.url)
    await seed.open()
    await seed.save_devices([Device(d, name=f"device {d[-1]}") for d in (D1, D2, D3, D4, D5)])
    await seed.replace_channels(D1, [Channel(CH, D1, "gate")])
    r = Redis.from_url(redis.url)
    await r.hset("gbgw:owner", D2, "1 nC")  # C's own (as after a REGISTER at C)
    c = await start_gateway(
        **{"store.backend": "redis", "store.url": redis.url, "node.id": "nC", "store.flush_interval": "0.1"}
    )
    other = RedisStore(redis.url, node="nB")
    await other.open()
    try:
        known = c.registrar.devices
        assert {D1, D2, D3, D4, D5} <= set(known) and CH in c.devices.channels[D1]
        assert await other.delete_device(D1)
        await until(lambda: D1 not in known, "C to drop the device deleted at B")
        assert D1 not in c.devices.channels
        # C's own device deleted by another (as a stale write would): kept, C's record counts
        assert await other.delete_device(D2)
        assert await other.delete_device(D3)  # a later event: once it is read, D2's was too
        await until(lambda: D3 not in known, "C to drop D3")
        assert D2 in known
        # a row gone with no event (as one trimmed away unread): C's next full read drops it
        await r.hdel("gbgw:devices", D4)
        cluster = c.registrar.cluster
        cluster._reconcile_at = 0.0  # type: ignore[attr-defined]  # the periodic full read, now
        await until(lambda: D4 not in known, "C's full read to drop the device whose row is gone")
        # Redis emptied (restarted without persistence): no device dropped, not even at later full reads
        await r.flushall()
        cluster._reconcile_at = 0.0  # type: ignore[attr-defined]
        await until(lambda: cluster._reconcile_at > time.monotonic() + 5, "C's full read after the loss")  # type: ignore[attr-defined]
        cluster._reconcile_at = 0.0  # type: ignore[attr-defined]  # and the next periodic one
        await until(lambda: cluster._reconcile_at > time.monotonic() + 100, "C's next full read")  # type: ignore[attr-defined]
        assert D5 in known and D2 in known
    finally:
        await other.close()
        await c.stop()
        await seed.close()
        await r.aclose()
