"""Device ownership and liveness with real gateway nodes on one redis-server (issue 17).

Two ``gb28181gw serve`` processes (``node.id`` a and b) share a real redis-server; SIPp IPCs
(``ipc_register_uac.xml``: REGISTER with digest, then two keepalives) register at one node, then
some at the other, as a director re-homes them. What is checked is what lands in Redis: the
``owner`` hash, the device rows and the ``events`` stream.

- A device that registers at A, then at B: A stops watching it (its ownership is lost at once,
  through ``lost:a``), and writes nothing more for it: no offline mark or event from A when A's
  keepalive window passes; B's row stays; one offline in all, B's own.
- ``kill -9`` of A with devices registered there: once its ``node:a`` key is gone B's janitor marks
  each of A's devices offline exactly once (an event naming the janitor), none for a device that
  re-registered at B; then ``live:a`` is gone and a leaves ``nodes``.
- Redis killed and restarted (empty, or from its append-only file) while a node serves: no device is dropped from memory, and
  the registration and keepalives that came meanwhile (owner, row, events) are in Redis afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.process import free_port, http_get, serve, wait_ready
from tests.redis_server import RedisServer

from .conftest import run_sipp
from .test_registrar import PASSWORD, devices_file, ipc_ids

pytestmark = pytest.mark.sipp

SITE = "34020000002000000001"
#: registrar.keepalive_interval x keepalive_count: a device's offline deadline after its last keepalive
INTERVAL, COUNT = 4, 2


@dataclass
class Node:
    name: str
    sip: int
    admin: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # read its output as it comes: a full pipe would stop the gateway
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def metric(self, name: str) -> float:
        status, body = http_get(self.admin + "/metrics")
        assert status == 200
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def status(self) -> dict[str, Any]:
        status, body = http_get(self.admin + "/api/v1/status")
        assert status == 200, body
        return dict(json.loads(body))

    def devices(self) -> list[dict[str, object]]:
        done = subprocess.run(
            [sys.executable, "-m", "gb28181gw", "devices", "--json", "--admin", self.admin],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=15)
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def started(tmp_path: Path, redis: RedisServer) -> Iterator[Callable[[str], Node]]:
    nodes: list[Node] = []

    def start(name: str) -> Node:
        sip, admin = free_port(), free_port()
        proc = serve(
            "--id", SITE, "--listen", "127.0.0.1", "--port", str(sip), "--admin-port", str(admin),
            "--set", "store.backend=redis", "--set", f"store.url={redis.url}", "--set", f"node.id={name}",
            "--set", f"registrar.password={PASSWORD}", "--set", f"registrar.keepalive_interval={INTERVAL}",
            "--set", f"registrar.keepalive_count={COUNT}", "--set", "media.workers=0",
            "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=",
            store=str(tmp_path / f"{name}.db"),
        )  # fmt: skip
        node = Node(name, sip, f"http://127.0.0.1:{admin}", proc)
        nodes.append(node)
        wait_ready(node.admin, proc)
        return node

    try:
        yield start
    finally:
        for node in nodes:
            node.end()


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    # a guard against hanging, not a measurement
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def register(node: Node, ids: list[str], tmp_path: Path, *, port: int = 0, name: str = "") -> None:
    """SIPp IPCs ``ids`` register at ``node`` (and send two keepalives each)."""
    inf = devices_file(tmp_path, ids)
    target = inf.with_name(f"{name or node.name}-{ids[0]}.csv")
    inf.rename(target)
    extra = ("-inf", str(target)) + (("-p", str(port)) if port else ())
    result = await run_sipp("ipc_register_uac.xml", node.sip, tmp_path, calls=len(ids), extra=extra)
    assert result.ok, result.stdout


def owner(redis: RedisServer, device: str) -> str:
    raw = redis.command(b"HGET", b"gbgw:owner", device.encode())
    return "" if raw in (None, b"$-1") else raw.decode()


def stored_row(redis: RedisServer, device: str) -> list[object] | None:
    raw = redis.command(b"HGET", b"gbgw:devices", device.encode())
    return None if raw in (None, b"$-1") else list(json.loads(raw))


def events(redis: RedisServer) -> list[dict[str, str]]:
    """The ``events`` stream, read with redis-py."""
    import redis as redis_py

    r = redis_py.Redis.from_url(redis.url)
    try:
        return [{k.decode(): v.decode() for k, v in f.items()} for _id, f in r.xrange("gbgw:events")]  # type: ignore[union-attr]
    finally:
        r.close()


async def test_a_device_re_registered_at_another_node_is_no_longer_watched_or_written_by_the_first(
    tmp_path: Path, redis: RedisServer, started: Callable[[str], Node]
) -> None:
    a, b = started("a"), started("b")
    (device,) = ipc_ids(1)
    port_at_a = free_port()
    await register(a, [device], tmp_path, port=port_at_a)
    await until(lambda: owner(redis, device).endswith(" a"), 10, "A's claim")
    assert a.metric("gb28181gw_devices_owned") == 1
    await register(b, [device], tmp_path)
    await until(lambda: owner(redis, device).endswith(" b"), 10, "B's claim")
    epoch_b = int(owner(redis, device).split()[0])
    assert epoch_b > 1
    await until(lambda: a.metric("gb28181gw_ownership_lost_total") == 1, 10, "A to learn it lost the device")
    assert a.metric("gb28181gw_devices_owned") == 0 and b.metric("gb28181gw_devices_owned") == 1
    # A's record of it (as A last knew it, then B's row as A learns it: online either way): B's to count, not A's
    assert a.metric('gb28181gw_devices{state="online"}') == 0 and b.metric('gb28181gw_devices{state="online"}') == 1
    assert a.metric('gb28181gw_devices{state="registered"}') == 0
    assert a.metric('gb28181gw_devices{state="known"}') == 1
    # A's listing says so too: B serves the device
    (at_a,), (at_b,) = a.devices(), b.devices()
    assert (at_a["node"], at_a["here"]) == ("b", False) and (at_b["node"], at_b["here"]) == ("b", True)
    table = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "devices", "--admin", a.admin],
        capture_output=True, text=True, timeout=30, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert "last known online" in table.stdout, table.stdout
    # a keepalive reaching A from where it registered there: not A's device any more, 404 (it registers again)
    inf = devices_file(tmp_path, [device])
    stray = await run_sipp("keepalive_uac.xml", a.sip, tmp_path, extra=("-inf", str(inf), "-p", str(port_at_a)))
    assert not stray.ok and "SIP/2.0 404" in stray.messages
    row_b = stored_row(redis, device)
    # well past A's keepalive window: A would have marked it offline, had it still watched it
    await until(lambda: any(e["event"] == "offline" for e in events(redis)), 3 * INTERVAL * COUNT, "B's offline")
    await asyncio.sleep(1.0)
    offline = [e for e in events(redis) if e["event"] == "offline"]
    assert [(e["device"], e["node"]) for e in offline] == [(device, "b")], offline
    assert [e["node"] for e in events(redis) if e["event"] == "online"] == ["a", "b"]
    assert owner(redis, device) == f"{epoch_b} b"
    row = stored_row(redis, device)
    assert row is not None and row_b is not None and row[8] == row_b[8]  # B's port: A wrote nothing over it
    assert "device owned by another node now" in "".join(a.lines)
    # removing it at A: B would write it back with its next batch, so A refuses and names B
    refused = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "device", "remove", device, "--admin", a.admin],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert refused.returncode != 0 and "served by node b" in refused.stderr, refused
    assert stored_row(redis, device) is not None and device in {str(d["device_id"]) for d in a.devices()}


async def test_a_device_coming_back_to_a_node_that_let_it_go_is_online_there_in_the_stream(
    tmp_path: Path, redis: RedisServer, started: Callable[[str], Node]
) -> None:
    # A's record of the device is as it let it go (online): its REGISTER there reads as a refresh,
    # yet to the event stream (after B's online) it comes online at A
    a, b = started("a"), started("b")
    (device,) = ipc_ids(1, start=31)
    await register(a, [device], tmp_path)
    await until(lambda: owner(redis, device).endswith(" a"), 10, "A's claim")
    await register(b, [device], tmp_path, name="b")
    await until(lambda: a.metric("gb28181gw_ownership_lost_total") == 1, 10, "A to learn it lost the device")
    await register(a, [device], tmp_path, name="again")
    await until(lambda: owner(redis, device).endswith(" a"), 10, "A's claim")
    await until(lambda: len([e for e in events(redis) if e["event"] == "online"]) >= 3, 10, "A's online event")
    assert [e["node"] for e in events(redis) if e["event"] == "online"] == ["a", "b", "a"]
    assert a.metric('gb28181gw_devices{state="online"}') == 1


async def test_kill_9_of_a_node_marks_each_of_its_devices_offline_once_by_one_janitor(
    tmp_path: Path, redis: RedisServer, started: Callable[[str], Node]
) -> None:
    a, b = started("a"), started("b")
    ids = ipc_ids(3, start=11)
    await register(a, ids, tmp_path)
    moved = ids[2]
    await register(b, [moved], tmp_path, name="b")
    await until(lambda: all(owner(redis, d) for d in ids) and owner(redis, moved).endswith(" b"), 10, "the claims")
    await until(lambda: a.metric("gb28181gw_ownership_lost_total") == 1, 10, "A to learn it lost the moved device")
    a.proc.kill()  # no goodbye: its node key expires, its devices' deadlines pass without it
    a.proc.wait(timeout=10)
    stayed = ids[:2]
    await until(
        lambda: redis.command(b"SISMEMBER", b"gbgw:nodes", b"a") == b":0", 60, "B's janitor to finish with node a"
    )
    offline = [e for e in events(redis) if e["event"] == "offline" and e["node"] == "a"]
    assert sorted(e["device"] for e in offline) == stayed, offline
    assert all(e.get("janitor") == "b" for e in offline)
    for device in stayed:
        row = stored_row(redis, device)
        assert row is not None and row[15] == "offline" and "node a stopped" in str(row[25])
        assert owner(redis, device).endswith(" a")
    assert redis.command(b"EXISTS", b"gbgw:live:a") == b":0"
    assert b.metric('gb28181gw_adoptions_total{result="offline"}') == 2
    # the moved device is B's: whatever happens to it is B's to say
    assert not [e for e in events(redis) if e["device"] == moved and e["node"] == "a" and e["event"] == "offline"]
    await asyncio.sleep(2.5)  # another janitor round or two: nothing more
    assert len([e for e in events(redis) if e["event"] == "offline" and e["node"] == "a"]) == 2


@pytest.mark.parametrize("redis", [False, True], indirect=True, ids=["empty", "from-its-file"])
async def test_redis_restarted_mid_run_drops_no_device_and_gets_what_came_meanwhile(
    tmp_path: Path, redis: RedisServer, started: Callable[[str], Node]
) -> None:
    a = started("a")
    first, second = ipc_ids(2, start=21)
    port = free_port()
    await register(a, [first], tmp_path, port=port)
    await until(lambda: owner(redis, first) == "1 a", 10, "the claim")
    before = time.time()
    redis.stop(kill=True)
    try:
        # meanwhile: the device registers again (a refresh), another registers for the first time
        await register(a, [first], tmp_path, port=port, name="again")
        await register(a, [second], tmp_path, name="new")
    finally:
        redis.start()  # empty: nothing was persisted
    # the refresh's claim, queued while Redis was away, is the newest: epoch 2 if Redis kept epoch 1
    await until(lambda: owner(redis, first) in ("1 a", "2 a") and owner(redis, second) == "1 a", 20, "the claims")
    for device in (first, second):
        await until(lambda d=device: stored_row(redis, d) is not None, 20, f"the row of {device}")  # type: ignore[misc]
        # its deadline: with the batch after the one that found Redis empty (every owned device again)
        await until(
            lambda d=device: redis.command(b"ZSCORE", b"gbgw:live:a", d.encode()) not in (None, b"$-1"),  # type: ignore[misc]
            10,
            f"the deadline of {device}",
        )
    row = stored_row(redis, first)
    assert row is not None and float(row[17]) >= before and float(row[19]) >= before  # registered_at, last_keepalive
    assert any(e["device"] == second and e["event"] == "online" for e in events(redis))
    listed = {str(d["device_id"]): d for d in a.devices()}
    assert set(listed) == {first, second}
    assert all(d["registered"] for d in listed.values())
    assert redis.command(b"SISMEMBER", b"gbgw:nodes", b"a") == b":1"


async def test_a_running_node_learns_devices_registering_moving_and_going_offline_at_others(
    tmp_path: Path, redis: RedisServer, started: Callable[[str], Node]
) -> None:
    # C is up before the device exists anywhere and is never restarted: what it lists comes from the
    # events stream it follows (a device's arrival, move and offline at other nodes), with each row
    # as its serving node wrote it
    a, b, c = started("a"), started("b"), started("c")
    (device,) = ipc_ids(1, start=41)
    assert c.devices() == []
    at_b, at_a = free_port(), free_port()

    def listed(node: Node) -> dict[str, object]:
        rows = [r for r in node.devices() if r["device_id"] == device]
        return rows[0] if rows else {}

    def seen(node: Node, where: str, port: int, online: bool) -> bool:
        row = listed(node)
        return (row.get("node"), row.get("port"), row.get("online")) == (where, port, online)

    await register(b, [device], tmp_path, port=at_b)
    await until(lambda: seen(c, "b", at_b, True) and seen(a, "b", at_b, True), 10, "A and C to learn B's device")
    assert not listed(c)["here"] and not listed(a)["here"] and listed(b)["here"]
    # served only at B: the others list it, they do not count it as theirs
    assert c.metric('gb28181gw_devices{state="online"}') == 0 and c.metric("gb28181gw_devices_owned") == 0
    # nor does its status (``gb28181gw status``) say it has it online: B's does
    assert (c.status()["devices"]["online"], b.status()["devices"]["online"]) == (0, 1)
    assert c.status()["devices"]["known"] == 1
    # changed at C (a new name): C's write of another node's device is dropped in Redis, and C's
    # own record would go back to B's row with the next read: C refuses it, naming B
    changed = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "device", "add", device, "--name", "renamed at C", "--admin", c.admin],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert changed.returncode != 0 and "served by node b" in changed.stderr, changed
    assert listed(c).get("name", "") != "renamed at C"
    # removed at B, which serves it: gone from A's and C's listings too (a 'removed' event), not
    # kept there as last known online until they restart
    removed = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "device", "remove", device, "--admin", b.admin],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert removed.returncode == 0, removed
    await until(lambda: not listed(c) and not listed(a), 10, "A and C to drop the device removed at B")
    assert not listed(b)
    # re-homed to A: C, and B which let it go, see it at A, from A's address
    await register(a, [device], tmp_path, port=at_a, name="moved")
    await until(lambda: seen(c, "a", at_a, True) and seen(b, "a", at_a, True), 10, "B and C to learn of the move")
    assert listed(a)["here"] and not listed(b)["here"] and not listed(c)["here"]
    # silent past its keepalive window: offline at A, and so at B and C
    await until(lambda: seen(c, "a", at_a, False), 3 * INTERVAL * COUNT, "C to learn it went offline at A")
    await until(lambda: seen(b, "a", at_a, False), 5, "B to learn it went offline at A")
    assert "Traceback" not in "".join(a.lines + b.lines + c.lines)


async def test_a_node_goes_on_learning_after_redis_restarted_empty(
    tmp_path: Path, redis: RedisServer, started: Callable[[str], Node]
) -> None:
    # C's place in the events stream means nothing in a Redis that lost everything (the stream's
    # IDs start again, the boot token is new): it must read every row, then follow the new stream
    a, c = started("a"), started("c")
    first, second = ipc_ids(2, start=51)
    await register(a, [first], tmp_path)
    await until(lambda: any(r["device_id"] == first for r in c.devices()), 10, "C to learn A's first device")
    redis.stop(kill=True)
    try:
        await asyncio.sleep(1.5)  # C's reads fail meanwhile; it keeps what it knows
        assert any(r["device_id"] == first for r in c.devices())
    finally:
        redis.start()  # empty
    await register(a, [second], tmp_path, name="after")
    await until(
        lambda: {str(r["device_id"]): r["node"] for r in c.devices()} == {first: "a", second: "a"},
        20,
        "C to learn A's device registered after the restart, and A's first written back",
    )
    assert "other nodes' device events cannot be read; will retry" in "".join(c.lines)
    assert "Traceback" not in "".join(a.lines + c.lines)
