"""Round trip of a call between two nodes on Redis Streams (issue 17 benchmark).

One redis-server on 127.0.0.1; two :class:`~gb28181gw.store.rpc.RedisRpc` ends (``n1`` calls,
``n2`` answers an echo) in this process, on one event loop, as in the gateway. ``--calls``
calls one after another, then the same number ``--parallel`` at a time; p50 and p99 of each
call's round trip (sent to answer read), and calls per second.

Baseline in the same run: the bare Redis pattern underneath, without ids, deadlines, the
liveness script, the consumer group, acknowledgements or the answer cache: ``XADD`` to a
request stream read by ``XREAD BLOCK`` on another connection, which ``XADD``\\ s the answer to a
reply stream read by ``XREAD BLOCK`` on a third.

  flock /tmp/bench.lock python benchmarks/bench_rpc.py --calls 3000 --parallel 16
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(1, str(ROOT))
from redis.asyncio import Redis  # noqa: E402
from redis.exceptions import RedisError  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

from gb28181gw.gb.rpc import Call  # noqa: E402
from gb28181gw.store.rpc import RedisRpc  # noqa: E402


def summary(name: str, seconds: list[float], wall: float) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{name:<34} n={len(ms):>6}  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  {len(ms) / wall:9.0f} calls/s"


async def timed(n: int, parallel: int, one: Callable[[int], Awaitable[None]]) -> tuple[list[float], float]:
    seconds: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            t = time.perf_counter()
            await one(i)
            seconds.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(parallel)))
    return seconds, time.perf_counter() - start


async def bench_rpc(url: str, n: int, parallel: int) -> list[str]:
    r = Redis.from_url(url)
    for node in ("n1", "n2"):
        await r.set(f"gbgw:node:{node}", "{}", px=600_000)
    await r.aclose()

    async def echo(call: Call) -> Mapping[str, Any]:
        return {"i": call.args["i"]}

    n1, n2 = RedisRpc(url, "n1"), RedisRpc(url, "n2")
    n2.handle("bench.echo", echo)
    await n1.open()
    await n2.open()
    lines = []
    try:

        async def one(i: int) -> None:
            got = await n1.call("n2", "bench.echo", {"i": i}, timeout=5)
            assert got["i"] == i

        await timed(200, 1, one)  # warm up: scripts loaded, connections made
        for p in (1, parallel):
            seconds, wall = await timed(n, p, one)
            lines.append(summary(f"RedisRpc call, {p} at a time", seconds, wall))
    finally:
        await n1.close()
        await n2.close()
    return lines


async def bench_bare(url: str, n: int, parallel: int) -> list[str]:
    """XADD → XREAD BLOCK → XADD → XREAD BLOCK, with one waiter per id (the same shape, nothing else)."""
    caller, server, reader = Redis.from_url(url), Redis.from_url(url), Redis.from_url(url)
    waiting: dict[bytes, asyncio.Future[None]] = {}

    await caller.delete("bare:req", "bare:rep")

    async def serve() -> None:
        last = b"0-0"
        while True:
            try:
                got = await server.xread({"bare:req": last}, count=128, block=1000)
            except (RedisError, OSError):
                return  # closed at the end
            for _, entries in got or ():
                for entry_id, fields in entries:
                    last = entry_id
                    await server.xadd("bare:rep", {b"id": fields[b"id"]}, maxlen=10_000, approximate=True)

    async def read() -> None:
        last = b"0-0"
        while True:
            try:
                got = await reader.xread({"bare:rep": last}, count=128, block=1000)
            except (RedisError, OSError):
                return  # closed at the end
            for _, entries in got or ():
                for entry_id, fields in entries:
                    last = entry_id
                    future = waiting.pop(fields[b"id"], None)
                    if future is not None:
                        future.set_result(None)

    tasks = [asyncio.ensure_future(serve()), asyncio.ensure_future(read())]
    await asyncio.sleep(0.2)
    lines = []
    try:

        async def one(i: int) -> None:
            key = str(i).encode() + b"-" + str(time.perf_counter_ns()).encode()
            future = asyncio.get_running_loop().create_future()
            waiting[key] = future
            await caller.xadd("bare:req", {b"id": key}, maxlen=10_000, approximate=True)
            await future

        await timed(200, 1, one)
        for p in (1, parallel):
            seconds, wall = await timed(n, p, one)
            lines.append(summary(f"bare XADD/XREAD round trip, {p} at a time", seconds, wall))
    finally:
        for t in tasks:
            t.cancel()
        for c in (server, reader):  # a cancelled blocking read lets go only when its connection closes
            await c.connection_pool.disconnect(inuse_connections=True)
        await asyncio.wait(tasks, timeout=2)
        for c in (caller, server, reader):
            await c.aclose()
    return lines


async def main(args: argparse.Namespace) -> None:
    server = RedisServer(Path(tempfile.mkdtemp(prefix="bench-rpc-")))
    server.start()
    try:
        for _ in range(args.repeat):
            for line in await bench_bare(server.url, args.calls, args.parallel):
                print(line, flush=True)
            for line in await bench_rpc(server.url, args.calls, args.parallel):
                print(line, flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
