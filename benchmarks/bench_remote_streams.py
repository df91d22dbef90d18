"""A viewer's stream asked at the node owning the device, and at another node (issue 17, admin/streams.py).

One redis-server on 127.0.0.1; nodes A and B (gateways in this process, one loop, as two nodes
on one core would be); the device of :mod:`bench_cascade_invite` (a UDP socket: answers every
INVITE at once, sends RTP from its ACK to its BYE) registers at B. For each of B (local) and A
(forwarded to B by RPC):

open   ``POST /api/v1/streams`` → the first RTP packet at the viewer's socket, the stream opened
       cold each round (the viewer leaves with ``DELETE``, linger 0 closes it, BYE).
show   ``GET /api/v1/streams/ID`` of a stream held open: the price of one forwarded call.
list   ``GET /api/v1/streams`` (at A: its own streams and B's, asked by RPC).

  flock /tmp/bench.lock python benchmarks/bench_remote_streams.py --rounds 50 --reads 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(1, str(ROOT))
sys.path.insert(2, str(ROOT / "benchmarks"))
import aiohttp  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

from bench_cascade_invite import CH, NVR, OURS, Device, Receiver  # noqa: E402
from gb28181gw.app import Gateway  # noqa: E402
from gb28181gw.config import load_config  # noqa: E402
from gb28181gw.gb.model import Channel  # noqa: E402


async def node(tmp: Path, redis: RedisServer, name: str, ports: tuple[int, int], ssrcs: tuple[int, int]) -> Gateway:
    overrides = {
        "store.path": str(tmp / f"{name}.db"),
        "store.backend": "redis",
        "store.url": redis.url,
        "node.id": name,
        "gateway.id": OURS,
        "sip.listen": "127.0.0.1",
        "sip.port": "0",
        "admin.port": "0",
        "devices.catalog_on_register": "false",
        "devices.subscribe": "",
        "media.workers": "0",
        "media.port_min": str(ports[0]),
        "media.port_max": str(ports[1]),
        "media.ssrc_min": str(ssrcs[0]),
        "media.ssrc_max": str(ssrcs[1]),
        "media.linger": "0",
    }
    gw = Gateway(load_config(None, env={}, overrides=overrides))
    await gw.start()
    return gw


def figures(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{name:<44} n={len(ms):>5}  p50 {statistics.median(ms):7.2f} ms  p99 {p99:7.2f} ms"


async def run(rounds: int, reads: int) -> None:
    logging.disable(logging.WARNING)
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        redis = RedisServer(tmp / "redis")
        redis.start()
        a = await node(tmp, redis, "nA", (41000, 41499), (1, 4999))
        b = await node(tmp, redis, "nB", (41500, 41999), (5000, 9999))
        media, receiver = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
        viewer_port = media.get_extra_info("sockname")[1]
        _, device = await loop.create_datagram_endpoint(
            lambda: Device(("127.0.0.1", b.stack.port)), local_addr=("127.0.0.1", 0)
        )
        held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        held.bind(("127.0.0.1", 0))
        r = Redis.from_url(redis.url)
        try:
            device.register()
            await asyncio.wait_for(device.registered.wait(), 5)
            b.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
            # ... and in the shared store, as B's catalog of the device writes it: where A finds it
            await r.hset(f"gbgw:channels:{NVR}", CH, json.dumps(["gate", "ON", NVR, {}]))
            await r.sadd("gbgw:channels", NVR)
            while not (await r.hget("gbgw:owner", NVR) or b"").endswith(b" nB"):
                await asyncio.sleep(0.05)
            assert a.admin is not None and b.admin is not None
            async with aiohttp.ClientSession() as http:

                async def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
                    async with http.request(method, f"http://127.0.0.1:{port}/api/v1{path}", json=body) as resp:
                        return resp.status, await resp.json()

                consumer = {"transport": "udp", "host": "127.0.0.1", "port": viewer_port}
                for where, gw in (("B (owner, local)", b), ("A (forwarded to B)", a)):
                    assert gw.admin is not None
                    opens = []
                    for _ in range(rounds):
                        receiver.first = loop.create_future()
                        t0 = time.perf_counter()
                        status, opened = await call(
                            gw.admin.port, "POST", "/streams", {"channel_id": CH, "consumer": consumer}
                        )
                        assert status == 201, opened
                        opens.append(await asyncio.wait_for(receiver.first, 10) - t0)
                        path = f"/streams/{opened['id']}/consumers/{opened['consumer']['id']}"
                        status, _ = await call(gw.admin.port, "DELETE", path)
                        assert status == 200
                        while b.streams.streams:  # linger 0: closed, BYE sent
                            await asyncio.sleep(0.01)
                    print(figures(f"open at {where}: POST -> first RTP", opens))

                # one stream held open at B, shown and listed at each node
                held_consumer = {**consumer, "port": held.getsockname()[1]}
                status, opened = await call(
                    b.admin.port, "POST", "/streams", {"channel_id": CH, "consumer": held_consumer}
                )
                assert status == 201, opened
                for what, path in (("show", f"/streams/{opened['id']}"), ("list", "/streams")):
                    for where, gw in (("B (owner, local)", b), ("A (forwarded to B)", a)):
                        assert gw.admin is not None
                        seconds = []
                        for _ in range(reads):
                            t0 = time.perf_counter()
                            status, _ = await call(gw.admin.port, "GET", path)
                            seconds.append(time.perf_counter() - t0)
                            assert status == 200
                        print(figures(f"{what} at {where}", seconds))
        finally:
            await r.aclose()
            held.close()
            media.close()
            await a.stop()
            await b.stop()
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50, help="cold opens at each node")
    parser.add_argument("--reads", type=int, default=500, help="shows and listings at each node")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.reads))


if __name__ == "__main__":
    main()
