"""Admin API requests for a device another node owns go to that node by RPC (issue 17, services/remote.py).

Two gateways in this process on one redis-server (nodes ``nA`` and ``nB``); a SIPp NVR
registers at B, and the ``owner`` hash names B (as the ownership code writes it at each
REGISTER). A PTZ command asked of A's admin API reaches the NVR from B with its exact bytes;
B's refusal (the device silent) comes back through A as B would answer it (504); an owner that
is not live is refused at once (502, as an unreachable device), naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gb28181gw.app import Gateway
from tests.redis_server import RedisServer

from .conftest import start_gateway
from .test_devices import NVR, device_scenario, finished, free_udp_port, play_device, register

pytestmark = pytest.mark.sipp


async def node(redis: RedisServer, name: str, **more: str) -> Gateway:
    on_redis = {"store.backend": "redis", "store.url": redis.url, "node.id": name, "store.flush_interval": "0.1"}
    return await start_gateway(**on_redis, **more)


async def own(redis: RedisServer, device: str, node_id: str) -> None:
    r = Redis.from_url(redis.url)
    try:
        await r.hset("gbgw:owner", device, f"1 {node_id}")
    finally:
        await r.aclose()


async def post(gw: Gateway, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    assert gw.admin is not None
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{gw.admin.port}/api/v1{path}", json=body) as resp:
            return resp.status, await resp.json()


async def get(gw: Gateway, path: str) -> tuple[int, dict[str, Any]]:
    assert gw.admin is not None
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{gw.admin.port}/api/v1{path}") as resp:
            return resp.status, await resp.json()


async def test_ptz_and_queries_at_a_reach_the_device_of_b(tmp_path: Path, redis: RedisServer) -> None:
    a = await node(redis, "nA")
    b = await node(redis, "nB", **{"devices.query_timeout": "0.5"})
    try:
        port = free_udp_port()
        await register(b, tmp_path, port)
        await b.registrar.flush()  # its row in the shared store: A finds the device there
        # A may know the device already (learnt from B's events within a second) or not yet:
        # either way the owner hash, not A's memory, sends the request to B
        await own(redis, NVR, "nB")

        check = "&lt;PTZCmd&gt;A50F0100000000B5&lt;/PTZCmd&gt;"
        proc = await play_device(device_scenario([], check=check).encode(), port, tmp_path, "ptz")
        status, answer = await post(a, "/ptz", {"channel_id": NVR, "kind": "move", "action": "stop"})
        assert (status, answer) == (200, {"sent": "A50F0100000000B5"})
        await finished(proc)
        assert "<PTZCmd>A50F0100000000B5</PTZCmd>" in (tmp_path / "ptz.msg").read_text()
        assert a.rpc is not None and b.rpc is not None
        assert a.rpc.calls[("device.ptz", "ok")] == 1 and b.rpc.served[("device.ptz", "ok")] == 1

        # B's own refusal comes back with its status: the NVR does not answer B's query
        status, answer = await get(a, f"/devices/{NVR}/status")
        assert status == 504 and "did not answer" in answer["error"], answer  # as when asked at B
        assert "nB" in json.dumps(answer) and a.rpc.calls[("device.query", "refused")] == 1

        # an owner that is not live: refused at once, naming it
        await own(redis, NVR, "nZ")
        status, answer = await post(a, "/ptz", {"channel_id": NVR, "kind": "move", "action": "stop"})
        assert status == 502 and "node nZ is not live" in answer["error"], answer

        # owned by A itself, Redis says: A handles it, and A knows the device (learnt from B's events)
        # but does not serve it: refused as not registered here, nothing sent from the wrong gateway
        await own(redis, NVR, "nA")
        status, answer = await post(a, "/ptz", {"channel_id": NVR, "kind": "move", "action": "stop"})
        assert status in (404, 409, 480) and a.rpc.calls[("device.ptz", "ok")] == 1, answer
        assert status != 409 or (
            "registered at another node" in answer["error"] and "`gb28181gw devices` names it" in answer["hint"]
        ), answer
    finally:
        await a.stop()
        await b.stop()
