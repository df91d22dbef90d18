"""Issue 17's pieces together: a director, three nodes and one superior on one redis-server.

One module-wide cluster (the cases run in this order and each leaves it as the next expects;
``.ci/run`` gives a file to one worker): a real redis-server with its append-only file, three
``gb28181gw serve`` nodes (n1, n2, n3) with the same ``[[upstream]]`` and a fourth, the
director (``node.director = true``, no upstream: it only redirects, the README's example). n1
starts first and is let register upward, so the lease holder is known: n1. The superior is
:class:`~tests.shell.test_upstream_lease.MutingSuperior` (it counts the REGISTERs by sender and
Call-ID and sends the test's INVITEs); the devices are SIPp IPCs following the director's 302
(``director_register_uac.xml``). One of them, ``MEDIA``, is chosen so that the hash gives it to n2:
it owns channel CH, and when a node INVITEs it a SIPp UAS on its port answers and the test sends
real H.264 in PS over RTP to the node, which the superior's receiver decodes with ``av``.

1. Steady state: the devices spread over the three nodes, each online once (one ``online`` event
   each, one node listing it); one registration stream upward; the superior's INVITE at n1 for
   n2's channel gets n2's media.
2. Redis killed and restarted from its file while a stream runs: no device dropped, the stream
   not cut (media still reaches the superior after), a device registering meanwhile has its
   ``online`` event in the stream afterwards.
3. ``kill -9`` of n1 (the lease holder, owning devices): its devices, registering at the director
   again, come online on n2 and n3, each with at most one ``offline`` event; a survivor registers
   upward with a new Call-ID within the lease and an INVITE at it gets media.
4. Redis restarted empty while a stream runs: the holder takes the lease Redis lost again and
   ends nothing (no BYE, media still arrives).

Elsewhere: ``kill -STOP`` of the holder for longer than the lease, then ``-CONT`` (not one message
upward after) and two nodes started at the same instant (exactly one REGISTER) are
``tests/shell/test_upstream_lease.py``'s, on two nodes; the director alone, ``test_director.py``.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gb28181gw.gb.director import NodeRecord, choose
from tests.helpers import media_port
from tests.media import UdpConsumer, decode_h264, gb_ps, packetize, send_udp, wait_for
from tests.process import wait_ready
from tests.redis_server import RedisServer, require_redis_py

from .conftest import require_sipp
from .test_cascade_nodes import SUPERIOR, SUPERIOR_SSRC, api, offer, seed_channel, superior_request
from .test_devices import finished, free_udp_port, play_device
from .test_director import Node, sipp, start_node, until
from .test_ownership_nodes import events
from .test_streams import DEVICE_SSRC, answer, scenario
from .test_upstream_lease import MutingSuperior

pytestmark = pytest.mark.sipp

LEASE = 4.0  # node.lease_seconds: short for the test; a kill moves the lease within it
FRAMES, GOP = 30, 10
CANDIDATES = [f"3402000000132{i:07d}" for i in range(101, 141)]


@dataclass
class Cluster:
    tmp_path: Path
    redis: RedisServer
    superior: MutingSuperior
    director: Node
    nodes: list[Node]
    devices: list[str]  # registered through the director in the steady state
    media: str  # the device owning CH, which the hash gives to n2
    media_port: int  # where it registered from: its SIPp UAS listens there
    output: dict[str, list[str]] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.proc.poll() is None]

    def holder(self) -> Node:
        """The node the superior's newest REGISTER came from."""
        port = self.superior.registers()[-1].port
        return next(n for n in self.nodes if n.sip == port)

    def online(self) -> dict[str, set[str]]:
        return {n.name: n.online() for n in self.live()}


def drain(node: Node, into: list[str]) -> None:
    """Read the node's output as it comes: a full pipe would stop the gateway."""

    def read() -> None:
        assert node.proc.stdout is not None
        for line in node.proc.stdout:
            into.append(line)

    threading.Thread(target=read, daemon=True).start()


def records(nodes: list[Node]) -> list[NodeRecord]:
    return [NodeRecord(n.name, f"127.0.0.1:{n.sip}") for n in nodes]


def node_of(device: str, nodes: list[Node]) -> str:
    chosen = choose(device, records(nodes))
    assert chosen is not None
    return chosen.node_id


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_redis_py()
    require_sipp()
    tmp_path = tmp_path_factory.mktemp("cluster")
    redis = RedisServer(tmp_path / "redis", persistent=True)
    redis.start()
    superior = MutingSuperior()
    config = tmp_path / "upstream.toml"
    config.write_text(
        f'[[upstream]]\nname = "district"\nid = "{SUPERIOR}"\nhost = "127.0.0.1"\nport = {superior.port}\n'
        "keepalive_interval = 1\nretry_interval = 1.0\nretry_max = 2.0\n"
    )
    config.chmod(0o600)
    started: list[Node] = []
    output: dict[str, list[str]] = {}

    def start(name: str, *extra: str) -> Node:
        node = start_node(tmp_path, name, redis, *extra)
        output[name] = []
        drain(node, output[name])
        started.append(node)
        return node

    def ready(node: Node) -> None:
        try:
            wait_ready(node.admin, node.proc)
        except AssertionError:
            time.sleep(0.5)
            raise AssertionError("".join(output[node.name])[-3000:]) from None

    def member(name: str, index: int) -> Node:
        ports = media_port(600) + 50 * index
        return start(
            name, "-c", str(config), "--set", f"node.lease_seconds={LEASE}", "--set", "media.linger=0",
            "--set", f"media.port_min={ports}", "--set", f"media.port_max={ports + 49}",
            "--set", f"media.ssrc_min={1 + 3000 * index}", "--set", f"media.ssrc_max={3000 * (index + 1)}",
            "--set", "media.invite_timeout=10", "--set", "sip.t1=0.1",
        )  # fmt: skip

    try:
        n1 = member("n1", 0)
        ready(n1)
        until(lambda: bool(superior.registers()), 20, "n1's REGISTER upward")
        nodes = [n1, member("n2", 1), member("n3", 2)]
        director = start("d", "--set", "node.director=true")
        for node in (*nodes[1:], director):
            ready(node)
        until(lambda: director.metric("gb28181gw_nodes_live") == 4, 15, "the director seeing four nodes")
        media = next(d for d in CANDIDATES if node_of(d, nodes) == "n2")
        devices = [d for d in CANDIDATES if d != media][:18]
        asyncio.run(seed_channel(redis, media))
        device_port = free_udp_port()
        sipp(tmp_path, director, [media], port=device_port)
        sipp(tmp_path, director, devices)
        yield Cluster(tmp_path, redis, superior, director, nodes, devices, media, device_port, output)
    finally:
        for node in started:
            node.end()
        superior.stop()
        redis.stop()
    for name, lines in output.items():
        assert "Traceback" not in "".join(lines), (name, "".join(lines)[-4000:])


async def play(cluster: Cluster, holder: Node, call_id: str) -> tuple[UdpConsumer, asyncio.subprocess.Process, Any]:
    """The superior's INVITE for CH at ``holder``, ACKed, the device answering: (receiver, device, 200)."""
    sup = cluster.superior
    receiver = await UdpConsumer.start()
    # its call lasts while Redis is stopped, a device registers, nodes notice: far more than the
    # usual 15 s on a loaded machine (a CI run timed out there)
    device = await play_device(
        scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")),
        cluster.media_port,
        cluster.tmp_path,
        f"device-{call_id}",
        timeout=120,
    )
    sup.send(superior_request(sup.port, holder.sip, "INVITE", call_id, body=offer(receiver.port)), holder.sip)
    await wait_for(lambda: sup.final(call_id) is not None, 30)
    ok = sup.final(call_id)
    assert ok is not None and ok.status == 200, (ok, ok.headers.get("warning") if ok else None)
    assert f"y={SUPERIOR_SSRC}" in ok.body.decode()
    sup.send(superior_request(sup.port, holder.sip, "ACK", call_id, to_tag=ok.to.tag or ""), holder.sip)
    return receiver, device, ok


def owner_stream(owner: Node) -> dict[str, Any]:
    (st,) = api(int(owner.admin.rsplit(":", 1)[1]), "/streams")["streams"]
    return dict(st)


async def media_reaches_the_superior(owner: Node, receiver: UdpConsumer) -> None:
    """Real H.264 in PS sent to the owner's stream arrives at the superior and decodes."""
    await wait_for(lambda: not owner_stream(owner)["consumers"][0]["paused"], 10)
    ps = gb_ps(FRAMES, GOP)
    packets = packetize(ps, DEVICE_SSRC, mtu=1000)
    before = len(receiver.got.packets)
    await send_udp(packets, owner_stream(owner)["port"])
    await wait_for(lambda: len(receiver.got.packets) == before + len(packets), 10)
    assert receiver.got.ssrcs == {int(SUPERIOR_SSRC)}
    assert decode_h264(receiver.got.payload()[-len(ps) :] if before else receiver.got.payload()) == FRAMES


async def hang_up(cluster: Cluster, holder: Node, call_id: str, ok: Any, device: asyncio.subprocess.Process) -> None:
    sup = cluster.superior
    sup.send(superior_request(sup.port, holder.sip, "BYE", call_id, to_tag=ok.to.tag or ""), holder.sip)
    await finished(device)  # the owner's stream (linger 0) BYEd the device


def no_bye_upward(cluster: Cluster, holder: Node) -> None:
    """The superior got no BYE; else the holder's lines that say why it ended a stream."""
    byes = [r for r in cluster.superior.received() if r.method == "BYE"]
    why = [line for line in cluster.output.get(holder.name, []) if "gone" in line or "ended" in line]
    assert byes == [], (byes, why[-20:])


def online_events(redis: RedisServer, device: str, kind: str = "online") -> list[dict[str, str]]:
    return [e for e in events(redis) if e["device"] == device and e["event"] == kind]


async def test_steady_state_spread_online_once_one_registration_and_media_across_nodes(cluster: Cluster) -> None:
    everyone = [cluster.media, *cluster.devices]
    online = cluster.online()
    assert all(online.values()), online  # every node got some
    assert sorted(d for s in online.values() for d in s) == sorted(everyone)  # each online exactly once
    for name, mine in online.items():
        assert mine == {d for d in everyone if node_of(d, cluster.nodes) == name}
    assert cluster.director.online() == set()
    for device in everyone:
        (event,) = online_events(cluster.redis, device)
        assert event["node"] == node_of(device, cluster.nodes)

    def listed(node: Node) -> list[tuple[str, object, object]]:
        rows = node.cli("devices")
        assert isinstance(rows, list)
        return sorted((str(r["device_id"]), r["node"], r["here"]) for r in rows)

    # `gb28181gw devices` at each node (the director too): every device, once, those registered at
    # the others learnt from the events stream while running, the node column naming the one
    # serving it; served here only its own
    for node in (*cluster.nodes, cluster.director):
        expected = sorted((d, node_of(d, cluster.nodes), node_of(d, cluster.nodes) == node.name) for d in everyone)
        deadline = time.monotonic() + 10
        while (got := listed(node)) != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert got == expected, (node.name, got)
    # one registration stream upward: n1's, one Call-ID, nobody else sending
    assert {r.port for r in cluster.superior.received()} == {cluster.nodes[0].sip}
    assert len({r.call_id for r in cluster.superior.registers()}) == 1
    # the superior's INVITE at the holder (n1) for n2's channel: media from n2 straight up
    holder, owner = cluster.holder(), cluster.node("n2")
    assert holder.name == "n1"
    receiver, device, ok = await play(cluster, holder, "steady")
    try:
        assert owner_stream(owner)["consumers"][0]["label"] == "upstream:district@n1"
        await media_reaches_the_superior(owner, receiver)
        await hang_up(cluster, holder, "steady", ok, device)
        await wait_for(lambda: not api(int(owner.admin.rsplit(":", 1)[1]), "/streams")["streams"], 10)
    finally:
        receiver.close()
        if device.returncode is None:
            device.kill()
            await device.wait()


async def test_redis_restarted_with_its_data_drops_nothing_and_delivers_what_came_meanwhile(cluster: Cluster) -> None:
    before = cluster.online()
    holder, owner = cluster.holder(), cluster.node("n2")
    late = next(d for d in CANDIDATES[::-1] if d not in cluster.devices and d != cluster.media)
    receiver, device, ok = await play(cluster, holder, "restart")
    try:
        await wait_for(lambda: not owner_stream(owner)["consumers"][0]["paused"], 10)
        cluster.redis.stop(kill=True)
        try:
            # a device arriving meanwhile: the director redirects from its last view, the node registers it
            await asyncio.to_thread(sipp, cluster.tmp_path, cluster.director, [late])
            cluster.devices.append(late)  # registered: the later tests count it, whatever fails below
        finally:
            cluster.redis.start()  # from its append-only file, within the lease
        await wait_for(lambda: bool(online_events(cluster.redis, late)), 20)
        after = cluster.online()
        assert {n: s - {late} for n, s in after.items()} == before  # no device dropped
        assert late in after[node_of(late, cluster.nodes)]
        await asyncio.sleep(3.0)  # the holder's watch of n2 looks a few times at the restarted Redis
        no_bye_upward(cluster, holder)
        await media_reaches_the_superior(owner, receiver)  # the stream was not cut
        await hang_up(cluster, holder, "restart", ok, device)
    finally:
        receiver.close()
        if device.returncode is None:
            device.kill()
            await device.wait()


async def test_kill_9_of_the_lease_holder_moves_its_devices_and_the_lease(cluster: Cluster) -> None:
    victim = cluster.holder()
    assert victim.name == "n1"
    first = cluster.superior.registers()[-1]
    orphans = victim.online()
    assert orphans  # it owns devices too
    victim.proc.kill()  # no goodbye
    victim.proc.wait(timeout=10)
    killed = time.time()
    survivors = cluster.live()
    # the lease moves: a survivor registers with a new Call-ID
    until(lambda: cluster.superior.registers()[-1].port != victim.sip, 3 * LEASE + 10, "a survivor's REGISTER")
    taken = cluster.superior.registers()[-1]
    assert taken.call_id != first.call_id and taken.expires == "3600" and taken.at > killed
    # its devices register at the director again once it has left the director's view
    until(lambda: cluster.director.metric("gb28181gw_nodes_live") == 3, 20, "n1 leaving the director's view")
    await asyncio.to_thread(sipp, cluster.tmp_path, cluster.director, sorted(orphans))
    everyone = [cluster.media, *cluster.devices]
    online = cluster.online()
    assert sorted(d for s in online.values() for d in s) == sorted(everyone)  # each online exactly once
    for name, mine in online.items():
        assert mine == {d for d in everyone if node_of(d, survivors) == name}
    # n1's janitor round comes after its node key expired: at most one offline per device, ever
    await asyncio.to_thread(
        until, lambda: cluster.redis.command(b"SISMEMBER", b"gbgw:nodes", b"n1") == b":0", 60, "the janitor"
    )
    for one in everyone:
        assert len(online_events(cluster.redis, one, "offline")) <= 1, one
    # a new INVITE at the new holder works (the media device stayed on n2)
    holder, owner = cluster.holder(), cluster.node("n2")
    receiver, device, ok = await play(cluster, holder, "after-kill")
    try:
        await media_reaches_the_superior(owner, receiver)
        await hang_up(cluster, holder, "after-kill", ok, device)
    finally:
        receiver.close()
        if device.returncode is None:
            device.kill()
            await device.wait()


async def test_redis_restarted_empty_cuts_no_stream(cluster: Cluster) -> None:
    holder, owner = cluster.holder(), cluster.node("n2")
    receiver, device, ok = await play(cluster, holder, "empty")
    try:
        await wait_for(lambda: not owner_stream(owner)["consumers"][0]["paused"], 10)
        cluster.redis.stop(kill=True)
        for path in cluster.redis.directory.iterdir():
            if path.name != "redis.log":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        cluster.redis.start()
        await asyncio.sleep(2 * LEASE)
        no_bye_upward(cluster, holder)
        await media_reaches_the_superior(owner, receiver)
        await hang_up(cluster, holder, "empty", ok, device)
    finally:
        receiver.close()
        if device.returncode is None:
            device.kill()
            await device.wait()
