"""Devices registering through a director are spread over the nodes (issue 17; GB/T 28181-2022 §9.1.2.3).

Real processes: one ``redis-server``, three ``gb28181gw serve`` nodes (n1, n2, n3) and a fourth
as the director (``node.director = true``, serving no devices itself: the README's example).
SIPp IPCs (``tests/shell/sipp/director_register_uac.xml``) REGISTER at the director, follow its
302 to the node its Contact names (SIPp's ``setdest``), register there with digest and keep alive.
Each device must end up online at exactly the node the rendezvous hash names, and every node
must get some. A node killed with ``kill -9`` stays in the director's view until its claim on
``node:<id>`` runs out (``node.claim_seconds``, 3 s here); then its devices, registering at the
director again, are sent to the survivors. Failure paths: a director with no live node answers
503 with Retry-After; Redis gone, it keeps redirecting from its last view; a platform's ID is
not redirected; a malformed ``node.advertised_address`` stops start-up naming the key.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gb28181gw.gb.director import NodeRecord, choose
from tests.process import free_port, http_get, serve, wait_ready
from tests.redis_server import RedisServer

from .conftest import SIPP_DIR, require_sipp

pytestmark = pytest.mark.sipp

SITE = "34020000002000000001"
PASSWORD = "12345678"
CLAIM = 3.0  # node.claim_seconds: a killed node leaves the view within this (and the 1 s refresh)
DEVICES = [f"3402000000132{i:07d}" for i in range(1, 31)]


@dataclass
class Node:
    name: str
    sip: int
    admin: str
    proc: subprocess.Popen[str]

    def cli(self, *args: str) -> object:
        done = subprocess.run(
            [sys.executable, "-m", "gb28181gw", *args, "--json", "--admin", self.admin],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    def online(self) -> set[str]:
        """The devices online and served here (a node lists the others' too, as it learns of them)."""
        rows = self.cli("devices")
        assert isinstance(rows, list)
        return {row["device_id"] for row in rows if row["online"] and row.get("here", True)}

    def metric(self, name: str) -> float:
        status, body = http_get(self.admin + "/metrics")
        assert status == 200
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def end(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            return self.proc.communicate(timeout=15)[0]
        except (ValueError, OSError):
            return ""


def start_node(tmp_path: Path, name: str, redis: RedisServer, *extra: str, sip: int = 0) -> Node:
    """Node ``name`` on ``sip`` (a free port if 0: a node started again where it was is given its port)."""
    sip, admin = sip or free_port(), free_port()
    proc = serve(
        "--id", SITE, "--listen", "127.0.0.1", "--port", str(sip), "--admin-port", str(admin),
        "--set", "store.backend=redis", "--set", f"store.url={redis.url}", "--set", f"node.id={name}",
        "--set", f"node.claim_seconds={CLAIM}", "--set", "media.workers=0", "--set", "sip.transports=udp",
        "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=",
        *extra,
        env={"GB28181GW_REGISTRAR_PASSWORD": PASSWORD},
        store=str(tmp_path / f"{name}.db"),
    )  # fmt: skip
    return Node(name, sip, f"http://127.0.0.1:{admin}", proc)


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    # a guard against hanging, not a measurement
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def sipp(
    tmp_path: Path,
    director: Node,
    ids: list[str],
    *,
    port: int = 0,
    scenario: str = "director_register_uac.xml",
    to: int | None = None,
) -> None:
    """SIPp IPCs ``ids`` register through ``director`` (from local ``port``, the kernel's if 0) and keep alive twice.

    ``scenario`` and ``to`` (a port instead of the director's): IPCs that register elsewhere, such
    as at a dispatcher in front of the nodes (``ipc_register_uac.xml``, which follows no redirect).
    """
    binary = require_sipp()
    inf = tmp_path / f"devices-{ids[0]}.csv"
    # SIPp expands keywords inside injected fields, so field1 carries the whole auth keyword
    inf.write_text("SEQUENTIAL\n" + "".join(f"{i};[authentication username={i} password={PASSWORD}];\n" for i in ids))
    done = subprocess.run(
        [binary, "-sf", str(SIPP_DIR / scenario), f"127.0.0.1:{director.sip if to is None else to}",
         "-i", "127.0.0.1", "-p", str(port), "-t", "u1", "-m", str(len(ids)), "-r", "20", "-timeout", "60s",
         "-timeout_error", "-nostdin", "-inf", str(inf), "-trace_msg", "-message_file", str(tmp_path / "sipp.msg")],
        capture_output=True, text=True, timeout=90, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + (tmp_path / "sipp.msg").read_text(errors="replace")[-3000:]


def register(port: int, device_id: str) -> bytes:
    """One plain REGISTER from a socket of this test; the answer's bytes."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        local = s.getsockname()[1]
        s.sendto(
            (
                f"REGISTER sip:{SITE}@3402000000 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};rport;branch=z9hG4bK{device_id}{time.monotonic_ns()}\r\n"
                f"From: <sip:{device_id}@3402000000>;tag=t1\r\nTo: <sip:{device_id}@3402000000>\r\n"
                f"Call-ID: {time.monotonic_ns()}@127.0.0.1\r\nCSeq: 1 REGISTER\r\n"
                f"Contact: <sip:{device_id}@127.0.0.1:{local}>\r\nMax-Forwards: 70\r\nExpires: 3600\r\n"
                "X-GB-ver: 3.0\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )
        return s.recvfrom(65535)[0]


@pytest.fixture
def cluster(tmp_path: Path, redis: RedisServer) -> Iterator[tuple[Node, list[Node]]]:
    """The director and three nodes, all ready, the director seeing all four."""
    director = start_node(tmp_path, "d", redis, "--set", "node.director=true")
    nodes = [start_node(tmp_path, name, redis) for name in ("n1", "n2", "n3")]
    try:
        for node in (director, *nodes):
            wait_ready(node.admin, node.proc)
        until(lambda: director.metric("gb28181gw_nodes_live") == 4, 15, "the director seeing four nodes")
        yield director, nodes
    finally:
        for node in (director, *nodes):
            node.end()


def records(nodes: list[Node]) -> list[NodeRecord]:
    return [NodeRecord(n.name, f"127.0.0.1:{n.sip}") for n in nodes]


def test_devices_registering_through_the_director_are_spread_as_the_hash_says(
    tmp_path: Path, cluster: tuple[Node, list[Node]]
) -> None:
    director, nodes = cluster
    sipp(tmp_path, director, DEVICES)
    expected = {n.name: {d for d in DEVICES if choose(d, records(nodes)).node_id == n.name} for n in nodes}  # type: ignore[union-attr]
    assert all(expected.values()), expected  # (30 devices: every node gets some)
    online = {n.name: n.online() for n in nodes}
    assert online == expected
    assert director.online() == set()  # it only redirects
    assert sum(len(s) for s in online.values()) == len(DEVICES)  # each device online exactly once
    assert director.metric("gb28181gw_director_redirects_total") == len(DEVICES)
    assert director.metric("gb28181gw_node_view_seconds_count") >= 1  # the Redis round trip of each read
    for n in nodes:
        rows = n.cli("devices")
        assert isinstance(rows, list)
        # the node column reads the owner hash, which ownership (i17-own) writes at each REGISTER;
        # the devices of the other nodes are listed too (learnt from the events stream), theirs
        assert all(row["node"] == n.name for row in rows if row["here"])
        assert all(row["node"] != n.name for row in rows if not row["here"])
    for n in nodes:
        assert director.metric(f'gb28181gw_director_redirects_total{{node="{n.name}"}}') == len(expected[n.name])


def test_a_killed_nodes_devices_are_sent_to_the_survivors_once_its_claim_runs_out(
    tmp_path: Path, cluster: tuple[Node, list[Node]]
) -> None:
    director, nodes = cluster
    sipp(tmp_path, director, DEVICES)
    victim, survivors = nodes[1], [nodes[0], nodes[2]]
    orphans = victim.online()
    assert orphans
    victim.proc.kill()  # no goodbye: its claim runs out by itself
    victim.proc.wait(timeout=10)
    until(lambda: director.metric("gb28181gw_nodes_live") == 3, 15, "the killed node's claim running out")
    rows = director.cli("nodes")
    assert isinstance(rows, list)
    gone = next(r for r in rows if r["node"] == victim.name)
    assert not gone["live"] and gone["heartbeat_age"] is None  # listed until the janitor clears it
    # its devices find their node gone and register at the director again (§9.1.2.3)
    sipp(tmp_path, director, sorted(orphans))
    for survivor in survivors:
        mine = {d for d in DEVICES if choose(d, records(survivors)).node_id == survivor.name}  # type: ignore[union-attr]
        assert survivor.online() == mine  # its own devices kept, the orphans the hash gives it added
    assert set().union(*(s.online() for s in survivors)) == set(DEVICES)


def test_a_director_with_no_node_answers_503_with_retry_after(tmp_path: Path, redis: RedisServer) -> None:
    director = start_node(tmp_path, "d", redis, "--set", "node.director=true")
    try:
        wait_ready(director.admin, director.proc)
        answer = register(director.sip, DEVICES[0]).decode()
        assert answer.startswith("SIP/2.0 503 "), answer
        assert "\r\nRetry-After: 30\r\n" in answer and "\r\nX-GB-ver: 3.0\r\n" in answer
        assert director.metric("gb28181gw_director_unavailable_total") == 1
        assert director.online() == set()
    finally:
        director.end()


def test_the_302_names_the_node_and_survives_redis_going_away(
    tmp_path: Path, cluster: tuple[Node, list[Node]], redis: RedisServer
) -> None:
    director, nodes = cluster
    device = DEVICES[0]
    node = choose(device, records(nodes))
    assert node is not None
    answer = register(director.sip, device).decode()
    assert answer.startswith("SIP/2.0 302 Moved Temporarily\r\n"), answer
    assert f"\r\nContact: <sip:{SITE}@{node.advertised}>\r\n" in answer
    assert "\r\nExpires: 3600\r\n" in answer and "WWW-Authenticate" not in answer  # before any challenge
    redis.stop()
    until(lambda: director.metric("gb28181gw_node_view_errors_total") >= 1, 10, "a failed refresh")
    # the nodes are most likely still serving: the last view is kept
    assert f"<sip:{SITE}@{node.advertised}>" in register(director.sip, device).decode()


def test_a_platform_registering_at_a_director_is_not_redirected(
    tmp_path: Path, cluster: tuple[Node, list[Node]]
) -> None:
    director, _ = cluster
    answer = register(director.sip, "34020000002000000099").decode()  # type 200: a lower platform
    assert not answer.startswith("SIP/2.0 302"), answer
    assert answer.startswith("SIP/2.0 403 "), answer  # the registrar's own answer (accept_platforms is off)


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1:99999", "::1:5060"])
def test_a_malformed_advertised_address_stops_start_up_naming_the_key(
    tmp_path: Path, redis: RedisServer, value: str
) -> None:
    node = start_node(tmp_path, "n1", redis, "--set", f"node.advertised_address={value}")
    output = node.proc.communicate(timeout=30)[0]
    assert node.proc.returncode == 3, output
    assert "node.advertised_address" in output and value in output


def test_nodes_lists_each_node_with_its_address_role_devices_superiors_and_heartbeat(
    tmp_path: Path, cluster: tuple[Node, list[Node]], redis: RedisServer
) -> None:
    director, nodes = cluster
    # what ownership (owner: "<epoch> <node>") and the superiors' leases ("<node> <epoch> <token>") hold
    owner = [b"HSET", b"gbgw:owner", b"34020000001320000901", b"3 n1", b"34020000001320000902", b"5 n1"]
    assert redis.command(*owner, b"34020000001320000903", b"1 n2") == b":3"
    assert redis.command(b"SET", b"gbgw:lease:upstream:district", b"n3 4 ab12") == b"+OK"
    assert redis.command(b"SET", b"gbgw:lease:upstream:district:epoch", b"4") == b"+OK"
    data = nodes[0].cli("nodes")
    assert isinstance(data, list)
    rows = {r["node"]: r for r in data}
    assert sorted(rows) == ["d", "n1", "n2", "n3"]
    assert rows["d"]["director"] and not rows["d"]["serves"] and rows["d"]["advertised"] == f"127.0.0.1:{director.sip}"
    for n in nodes:
        row = rows[n.name]
        assert row["live"] and not row["director"] and row["serves"]
        assert row["advertised"] == f"127.0.0.1:{n.sip}"
        assert 0 <= row["heartbeat_age"] <= CLAIM
    assert (rows["n1"]["devices"], rows["n2"]["devices"], rows["n3"]["devices"], rows["d"]["devices"]) == (2, 1, 0, 0)
    assert rows["n3"]["superiors"] == ["district"] and rows["n1"]["superiors"] == []
    assert rows["n1"]["this"] and not rows["n2"]["this"]
    # the table (piped: tab-separated)
    done = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "nodes", "--admin", director.admin],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert lines[0] == ["node", "address", "role", "state", "devices", "superiors", "heartbeat"]
    assert ["d (this)", f"127.0.0.1:{director.sip}", "director", "live", "0", "-"] == lines[1][:6]
    assert lines[4][:6] == ["n3", f"127.0.0.1:{nodes[2].sip}", "node", "live", "0", "district"]


def test_nodes_with_redis_gone_is_a_clear_503(
    tmp_path: Path, cluster: tuple[Node, list[Node]], redis: RedisServer
) -> None:
    director, _ = cluster
    redis.stop()
    done = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "nodes", "--admin", director.admin],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "the nodes cannot be read" in done.stderr + done.stdout


async def test_a_node_on_port_0_claims_the_port_it_got_and_sees_itself(redis: RedisServer) -> None:
    from .conftest import start_gateway

    gw = await start_gateway(**{"store.backend": "redis", "store.url": redis.url, "node.id": "n7"})
    try:
        claim = json.loads(redis.command(b"GET", b"gbgw:node:n7") or b"{}")
        assert claim["advertised"] == f"127.0.0.1:{gw.stack.port}" and gw.stack.port != 0
        assert (claim["director"], claim["serves"], claim["ttl"]) == (False, True, 15.0)
        assert redis.command(b"SISMEMBER", b"gbgw:nodes", b"n7") == b":1"
        (me,) = gw.nodes.view  # read before the gateway was ready
        assert (me.node_id, me.advertised, me.serves) == ("n7", claim["advertised"], True)
    finally:
        await gw.stop()


def test_a_director_that_serves_answers_the_devices_it_hashes_to_itself(tmp_path: Path, redis: RedisServer) -> None:
    director = start_node(tmp_path, "d", redis, "--set", "node.director=true", "--set", "node.director_serves=true")
    try:
        wait_ready(director.admin, director.proc)
        # the only node serving devices: every device is its own, challenged as on any node
        answer = register(director.sip, DEVICES[0]).decode()
        assert answer.startswith("SIP/2.0 401 "), answer
        assert director.metric("gb28181gw_director_redirects_total") == 0
        rows = director.cli("nodes")
        assert isinstance(rows, list)
        assert [(r["node"], r["director"], r["serves"]) for r in rows] == [("d", True, True)]
    finally:
        director.end()


async def test_the_redis_reader_of_nodes_owners_and_leases(redis: RedisServer) -> None:
    from gb28181gw.errors import StoreError
    from gb28181gw.store.nodes import RedisNodes

    claim = json.dumps({"pid": 1, "advertised": "10.0.0.1:5061", "director": False, "serves": True, "ttl": 15.0})
    assert redis.command(b"SET", b"gbgw:node:n1", claim.encode(), b"PX", b"15000") == b"+OK"
    assert redis.command(b"SET", b"gbgw:node:old", b'{"pid": 2}', b"PX", b"15000") == b"+OK"  # an older claim
    assert redis.command(b"SADD", b"gbgw:nodes", b"n1", b"old", b"dead") == b":3"  # dead: listed, no claim
    assert redis.command(b"HSET", b"gbgw:owner", b"A", b"3 n1", b"B", b"9 dead", b"C", b"garbage") == b":3"
    assert redis.command(b"SET", b"gbgw:lease:upstream:city", b"n1 2 tok") == b"+OK"
    assert redis.command(b"SET", b"gbgw:lease:upstream:city:epoch", b"2") == b"+OK"
    nodes = RedisNodes(redis.url)
    await nodes.open()
    try:
        live = await nodes.live()
        assert [(n.node_id, n.advertised, n.director, n.serves) for n in live] == [
            ("n1", "10.0.0.1:5061", False, True),
            ("old", "", False, True),  # no address: never named by a director
        ]
        assert 14 < live[0].ttl <= 15
        assert await nodes.listed() == ["dead", "n1", "old"]
        assert await nodes.owners_of(["A", "B", "C", "D"]) == {"A": "n1", "B": "dead"}
        assert await nodes.owned() == {"n1": 1, "dead": 1}
        assert await nodes.leases() == {"city": "n1"}
        redis.stop()
        with pytest.raises(StoreError, match="reading the nodes from redis://127.0.0.1"):
            await nodes.live()
    finally:
        await nodes.close()


def test_a_camera_whose_node_is_killed_finds_a_survivor_by_itself(tmp_path: Path, redis: RedisServer) -> None:
    # the camera is SIPp (camera_rehoming_uac.xml) doing only what a camera does: register through
    # the director, keep alive, refresh before Expires 10 runs out, and go back to the director when
    # its node stops answering. The test kills its node with kill -9 and does nothing else for it
    binary = require_sipp()
    short = ("--set", "registrar.expires_min=5")  # the camera asks for 10 s
    director = start_node(tmp_path, "d", redis, "--set", "node.director=true", *short)
    nodes = [start_node(tmp_path, name, redis, *short) for name in ("n1", "n2")]
    device = DEVICES[-1]
    inf = tmp_path / "camera.csv"
    inf.write_text(f"SEQUENTIAL\n{device};[authentication username={device} password={PASSWORD}];\n")
    log_file = tmp_path / "camera.log"
    camera: subprocess.Popen[bytes] | None = None
    try:
        for node in (director, *nodes):
            wait_ready(node.admin, node.proc)
        until(lambda: director.metric("gb28181gw_nodes_live") == 3, 15, "the director seeing three nodes")
        camera = subprocess.Popen(
            [binary, "-sf", str(SIPP_DIR / "camera_rehoming_uac.xml"), f"127.0.0.1:{director.sip}",
             "-i", "127.0.0.1", "-p", "0", "-t", "u1", "-m", "1", "-nostdin", "-inf", str(inf),
             "-trace_logs", "-log_file", str(log_file), "-trace_msg", "-message_file", str(tmp_path / "camera.msg"), "-trace_err", "-error_file", str(tmp_path / "camera.err")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path, close_fds=True,
        )  # fmt: skip

        def serving() -> list[Node]:
            return [n for n in nodes if n.proc.poll() is None and device in n.online()]

        until(lambda: len(serving()) == 1, 20, "the camera registered at its node")
        (home,) = serving()
        (survivor,) = [n for n in nodes if n is not home]
        until(lambda: log_file.exists() and "registered" in log_file.read_text(), 10, "the camera's log")
        home.proc.kill()  # no goodbye; the camera is not told
        home.proc.wait(timeout=10)
        # a guard against hanging, not a measurement: the camera's registration (10 s) runs out
        # twice over, its node's claim (3 s) with it
        until(lambda: device in survivor.online(), 40, "the camera online at the survivor by itself")
        assert camera.poll() is None, log_file.read_text()  # it never gave up
        log = log_file.read_text()
        assert f"lost {device} at 127.0.0.1:{home.sip}" in log, log
        assert f"registered {device} 127.0.0.1:{survivor.sip}" in log, log

        def owner() -> str:
            value = redis.command(b"HGET", b"gbgw:owner", device.encode())
            return value.decode() if value is not None else ""

        # the claim goes with the survivor's next write-behind batch, after its answer
        until(lambda: owner().endswith(f" {survivor.name}"), 10, "the survivor's claim in Redis")
        # the killed node's janitor comes once its key is gone: the camera, claimed by the survivor
        # already, is not its to mark offline; at most one offline in all
        until(lambda: redis.command(b"SISMEMBER", b"gbgw:nodes", home.name.encode()) == b":0", 60, "the janitor")
        assert device in survivor.online()
        kinds = [e["event"] for e in stream_events(redis) if e["device"] == device]
        assert kinds.count("offline") <= 1 and kinds[-1] == "online", kinds
        assert [e["node"] for e in stream_events(redis) if e["device"] == device and e["event"] == "online"][-1] == (
            survivor.name
        )
    finally:
        if camera is not None and camera.poll() is None:
            camera.terminate()  # SIPp writes out its buffered logs
            try:
                camera.wait(timeout=10)
            except subprocess.TimeoutExpired:
                camera.kill()
                camera.wait(timeout=10)
        for node in (director, *nodes):
            node.end()


def stream_events(redis: RedisServer) -> list[dict[str, str]]:
    """The ``events`` stream, read with redis-py."""
    import redis as redis_py

    r = redis_py.Redis.from_url(redis.url)
    try:
        return [{k.decode(): v.decode() for k, v in f.items()} for _id, f in r.xrange("gbgw:events")]  # type: ignore[union-attr]
    finally:
        r.close()


def test_a_serving_director_holding_a_superiors_lease_is_killed_the_lease_and_its_devices_move(
    tmp_path: Path, redis: RedisServer
) -> None:
    # two directors that also serve devices (node.director_serves): d1, up first, registers upward
    # (its lease), redirects devices to d2 or keeps them; kill -9 of d1 moves the lease to d2 (a
    # REGISTER with a new Call-ID) and d1's devices, registering through d2, are served there
    from .test_cascade_nodes import SUPERIOR
    from .test_upstream_lease import MutingSuperior

    lease = 4.0
    superior = MutingSuperior()
    config = tmp_path / "upstream.toml"
    config.write_text(
        f'[[upstream]]\nname = "district"\nid = "{SUPERIOR}"\nhost = "127.0.0.1"\nport = {superior.port}\n'
        "keepalive_interval = 1\nretry_interval = 1.0\nretry_max = 2.0\n"
    )
    config.chmod(0o600)
    both = ("-c", str(config), "--set", f"node.lease_seconds={lease}", "--set", "node.director=true",
            "--set", "node.director_serves=true")  # fmt: skip
    d1 = start_node(tmp_path, "d1", redis, *both)
    started = [d1]
    try:
        wait_ready(d1.admin, d1.proc)
        until(lambda: bool(superior.registers()), 20, "d1's REGISTER upward")
        d2 = start_node(tmp_path, "d2", redis, *both)
        started.append(d2)
        wait_ready(d2.admin, d2.proc)
        until(lambda: d1.metric("gb28181gw_nodes_live") == 2, 15, "d1 seeing both")
        sipp(tmp_path, d1, DEVICES[:12])
        kept = {d for d in DEVICES[:12] if choose(d, records([d1, d2])).node_id == "d1"}  # type: ignore[union-attr]
        assert kept and kept != set(DEVICES[:12])  # (12 devices: each director serves some)
        until(lambda: d1.online() == kept, 10, "d1 serving the devices the hash gives it")
        assert d2.online() == set(DEVICES[:12]) - kept
        assert {r.port for r in superior.registers()} == {d1.sip}  # one registration stream: d1's
        first = superior.registers()[-1]
        d1.proc.kill()  # no goodbye: its lease, its claim and its devices' deadlines run out by themselves
        d1.proc.wait(timeout=10)
        killed = time.time()
        until(lambda: superior.registers()[-1].port == d2.sip, 3 * lease + 10, "d2's REGISTER upward")
        taken = superior.registers()[-1]
        assert taken.call_id != first.call_id and taken.at > killed
        assert {r.port for r in superior.received() if r.at > taken.at} <= {d2.sip}
        # d1's devices, registering at the surviving director once d1 has left its view, are d2's
        until(lambda: d2.metric("gb28181gw_nodes_live") == 1, 20, "d1 leaving d2's view")
        sipp(tmp_path, d2, sorted(kept))
        until(lambda: d2.online() == set(DEVICES[:12]), 10, "d2 serving every device")
        assert d2.metric("gb28181gw_director_redirects_total") == 0  # the only serving node: its own
        until(lambda: redis.command(b"SISMEMBER", b"gbgw:nodes", b"d1") == b":0", 60, "the janitor of d1")
        for device in DEVICES[:12]:
            kinds = [e["event"] for e in stream_events(redis) if e["device"] == device]
            assert kinds.count("offline") <= 1 and kinds[-1] == "online", (device, kinds)
    finally:
        for node in started:
            node.end()
        superior.stop()
