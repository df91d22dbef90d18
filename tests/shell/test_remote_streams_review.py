"""Review of i17-fwd: what a caller at node A can make node B do (admin/streams.py's forwarding).

A consumer's address is checked against ``media.consumer_networks``: the node that sends the
media (B) is the one whose operator set where its media may go, so a request forwarded from A
with an address only A's networks allow is refused at B (403), before B invites the device.
No media leaves 127.0.0.1: the device never answers (nothing listens at its port).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gb28181gw.app import Gateway
from gb28181gw.errors import RpcRefused
from gb28181gw.gb.model import Channel
from gb28181gw.store.rpc import RedisRpc
from tests.helpers import media_port
from tests.media import wait_for
from tests.redis_server import RedisServer

from .conftest import start_gateway
from .test_cascade_nodes import seed_channel
from .test_devices import NVR, free_udp_port
from .test_devices import register as register_at
from .test_remote_streams import http, owned_by_b
from .test_streams import CH


async def _node(redis: RedisServer, name: str, ports: tuple[int, int], ssrcs: tuple[int, int], nets: str) -> Gateway:
    return await start_gateway(
        **{
            "store.backend": "redis", "store.url": redis.url, "node.id": name, "media.linger": "0",
            "media.invite_timeout": "2", "media.port_min": str(ports[0]), "media.port_max": str(ports[1]),
            "media.ssrc_min": str(ssrcs[0]), "media.ssrc_max": str(ssrcs[1]), "media.consumer_networks": nets,
        }
    )  # fmt: skip


async def test_a_consumer_address_only_as_networks_allow_is_refused_at_b(tmp_path: Path, redis: RedisServer) -> None:
    a = await _node(redis, "nA", (media_port(800), media_port(849)), (1, 4999), "10.99.0.0/16")
    b = await _node(redis, "nB", (media_port(850), media_port(899)), (5000, 9999), "")
    try:
        await seed_channel(redis)
        await register_at(b, tmp_path, free_udp_port())
        b.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
        await owned_by_b(redis)
        await wait_for(lambda: {n.node_id for n in a.nodes.view} == {"nA", "nB"}, 10)
        assert a.admin is not None and b.admin is not None
        elsewhere = {"transport": "udp", "host": "10.99.1.2", "port": 9000}
        # at B itself: refused
        status, refused = await http(b.admin.port, "POST", "/streams", {"channel_id": CH, "consumer": elsewhere})
        assert status == 403, refused
        # through A: was 504 (B invited the device, to send its media to 10.99.1.2)
        status, refused = await http(a.admin.port, "POST", "/streams", {"channel_id": CH, "consumer": elsewhere})
        assert status == 403 and refused["node"] == "nB" and "10.99.1.2" in refused["error"], refused
        assert not b.streams.streams and b.streams.results[("opened",)] == 0
    finally:
        await a.stop()
        await b.stop()


async def test_malformed_stream_calls_from_a_peer_are_400_naming_the_problem_and_b_goes_on(
    redis: RedisServer,
) -> None:
    b = await _node(redis, "nB", (media_port(850), media_port(899)), (5000, 9999), "")
    caller = RedisRpc(redis.url, "nX")
    raw = Redis.from_url(redis.url)
    try:
        await raw.set("gbgw:node:nX", json.dumps({"pid": 0}), px=60_000)
        await caller.open()
        bad = [
            ("stream.open", {"channel": CH}),  # no consumer
            ("stream.open", {"channel": CH, "consumer": "127.0.0.1:9000"}),
            ("stream.open", {"channel": CH, "consumer": {"transport": "udp", "host": "127.0.0.1", "port": "x"}}),
            (
                "stream.open",
                {"channel": CH, "consumer": {"transport": "udp", "host": "127.0.0.1", "port": 9}, "actor": 5},
            ),
            ("stream.show", {}),  # no stream
            ("stream.join", {"stream": "0100000001", "consumer": None}),
            ("stream.renew", {"stream": "0100000001", "consumer": "c1", "ttl": "soon"}),
            ("stream.renew", {"stream": "0100000001", "consumer": "c1", "ttl": -5}),
            ("stream.control", {"stream": "0100000001", "body": ["pause"]}),
        ]
        for method, args in bad:
            with pytest.raises(RpcRefused) as caught:
                await caller.call("nB", method, args)
            # was 500 "…failed on node nB: KeyError('consumer')" and a traceback in B's log
            assert caught.value.status == 400, (method, args, caught.value)
            assert method in str(caught.value), str(caught.value)
        got = await caller.call("nB", "stream.list", {})
        assert got == {"status": 200, "body": {"streams": []}}
    finally:
        await caller.close()
        await raw.aclose()
        await b.stop()
