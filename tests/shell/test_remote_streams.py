"""A viewer's stream of another node's device, asked at any node's admin API (issue 17, admin/streams.py).

Two ``gb28181gw serve`` nodes on one redis-server: the device (an NVR played by SIPp, channel
CH, its channel in the shared store as its node's catalog would have written it) registers at
node B, which owns it. The viewer asks node A's API: A forwards the request by RPC to B, B
INVITEs the device and sends what it relays straight to the viewer's address (real H.264 in PS
over RTP, decoded with ``av``); listing, renewing and stopping at A act on B's stream.

Failure paths: B killed while the device has not yet answered B's INVITE (A answers 504 naming
B after the call's deadline, never hangs; A's listing names B as unanswered); B not live (its
claim expired): 503 at once, naming it; a channel nobody has: 404 at A, no call made.

The playback forwarding and the finding of a stream by asking the nodes run in one process
(the nodes in it), where the stream's state at B can be read directly.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gb28181gw.app import Gateway
from gb28181gw.gb.model import Channel
from tests.helpers import media_port
from tests.media import UdpConsumer, decode_h264, gb_ps, packetize, send_udp, wait_for
from tests.process import free_port, serve, wait_ready
from tests.redis_server import RedisServer

from .conftest import sipp_scenario, start_gateway
from .test_cascade_nodes import seed_channel, stop
from .test_cli_streams import cli_at, output
from .test_devices import NVR, finished, free_udp_port, kill, play_device
from .test_devices import register as register_at
from .test_playback_service import SPAN, device_scenario, info_part
from .test_store_redis import register
from .test_streams import CH, DEVICE_SSRC, answer, scenario

pytestmark = pytest.mark.sipp

OURS = "34020000002000000001"
FRAMES, GOP = 50, 10
UNKNOWN = "34020000001310009999"


async def http(admin: int, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s:
        async with s.request(
            method, f"http://127.0.0.1:{admin}/api/v1{path}", json=body, timeout=aiohttp.ClientTimeout(total=60)
        ) as resp:
            return resp.status, await resp.json()


async def redis_get(redis: RedisServer, command: str, *args: str) -> Any:
    r = Redis.from_url(redis.url)
    try:
        return await r.execute_command(command, *args)
    finally:
        await r.aclose()


async def owned_by_b(redis: RedisServer) -> None:
    """Until B's REGISTER batch names it the NVR's owner (within store.flush_interval)."""
    owner = None
    for _ in range(50):
        owner = await redis_get(redis, "HGET", "gbgw:owner", NVR)
        if owner is not None and owner.endswith(b" nB"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"B does not own the NVR: {owner!r}")


class Nodes:
    """Nodes A and B as ``gb28181gw serve`` processes on ``redis``."""

    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.a_sip, self.a_admin, self.b_sip, self.b_admin = free_port(), free_port(), free_port(), free_port()
        self.a: subprocess.Popen[str] | None = None
        self.b: subprocess.Popen[str] | None = None

    def _start(
        self, node: str, sip: int, admin: int, ports: tuple[int, int], ssrcs: tuple[int, int], *more: str
    ) -> Any:
        proc = serve(
            *more,
            "--id", OURS, "--listen", "127.0.0.1", "--port", str(sip), "--admin-port", str(admin),
            "--set", "store.backend=redis", "--set", f"store.url={self.redis.url}", "--set", f"node.id={node}",
            "--set", "media.workers=0", "--set", "media.linger=0", "--set", "media.invite_timeout=5",
            "--set", f"media.port_min={ports[0]}", "--set", f"media.port_max={ports[1]}",
            "--set", f"media.ssrc_min={ssrcs[0]}", "--set", f"media.ssrc_max={ssrcs[1]}",
            "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=", "--set", "sip.t1=0.1",
        )  # fmt: skip
        wait_ready(f"http://127.0.0.1:{admin}", proc)
        return proc

    def start(self, *b_settings: str) -> None:
        self.a = self._start("nA", self.a_sip, self.a_admin, (media_port(600), media_port(649)), (1, 4999))
        self.b = self._start(
            "nB", self.b_sip, self.b_admin, (media_port(650), media_port(699)), (5000, 9999), *b_settings
        )

    async def device_at_b(self, tmp_path: Path) -> int:
        """The NVR registered at B, B named its owner in Redis: its SIP port."""
        port = free_udp_port()
        await register(port, NVR, self.b_sip, tmp_path)
        await owned_by_b(self.redis)
        return port

    def close(self) -> tuple[str, str]:
        return stop(self.a), stop(self.b)


@pytest.fixture
async def nodes(redis: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator[Nodes]:
    """A and B started; B with the ``--set`` settings a test parametrizes it with indirectly."""
    await seed_channel(redis)
    n = Nodes(redis)
    try:
        n.start(*getattr(request, "param", ()))
        yield n
    finally:
        a_out, _b_out = n.close()
        assert "Traceback" not in a_out, a_out[-4000:]


def viewer(port: int) -> dict[str, Any]:
    return {"transport": "udp", "host": "127.0.0.1", "port": port, "label": "viewer", "ttl": 30}


async def test_a_viewer_asking_a_gets_the_stream_of_bs_device_from_b_and_a_lists_renews_and_stops_it(
    tmp_path: Path, nodes: Nodes
) -> None:
    ps = gb_ps(FRAMES, GOP)
    receiver = await UdpConsumer.start()
    device: asyncio.subprocess.Process | None = None
    try:
        device_port = await nodes.device_at_b(tmp_path)
        device = await play_device(scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")), device_port, tmp_path, "device")

        status, opened = await http(
            nodes.a_admin, "POST", "/streams", {"channel_id": CH, "consumer": viewer(receiver.port)}
        )
        assert status == 201, opened
        # B's stream, as B's own API shows it: its node, its ports, the viewer's address
        assert opened["node"] == "nB" and opened["channel_id"] == CH and opened["state"] == "live"
        consumer = opened["consumer"]
        assert consumer["address"] == f"127.0.0.1:{receiver.port}" and consumer["label"] == "viewer"
        assert consumer["local_address"] == "127.0.0.1" and consumer["local_port"] == opened["port"]
        assert media_port(650) <= opened["port"] <= media_port(699)  # B's media range: the media comes from B
        stream_id = opened["id"]
        status, at_b = await http(nodes.b_admin, "GET", f"/streams/{stream_id}")
        assert status == 200 and [c["id"] for c in at_b["consumers"]] == [consumer["id"]]

        packets = packetize(ps, DEVICE_SSRC, mtu=1000)
        await send_udp(packets, opened["port"])
        await wait_for(lambda: len(receiver.got.packets) == len(packets), 10)
        assert receiver.got.payload() == ps and decode_h264(receiver.got.payload()) == FRAMES

        # A lists every live node's streams, each naming its node
        status, listing = await http(nodes.a_admin, "GET", "/streams")
        assert status == 200 and listing["unanswered"] == []
        assert [(s["id"], s["node"]) for s in listing["streams"]] == [(stream_id, "nB")]
        assert listing["streams"][0]["relay"]["packets"] == len(packets)
        status, only_a = await http(nodes.a_admin, "GET", "/streams?node=nA")
        assert (status, only_a["streams"]) == (200, [])

        status, renewed = await http(
            nodes.a_admin, "PATCH", f"/streams/{stream_id}/consumers/{consumer['id']}", {"ttl": 60}
        )
        assert status == 200 and renewed["renewed"] == consumer["id"] and renewed["node"] == "nB", renewed
        status, shown = await http(nodes.a_admin, "GET", f"/streams/{stream_id}?node=nB")
        assert status == 200 and shown["consumers"][0]["expires_in"] > 30

        # stopped at A: B BYEs the device; the stream's end is told by A as B tells it
        status, stopped = await http(nodes.a_admin, "DELETE", f"/streams/{stream_id}")
        assert (status, stopped) == (200, {"stopped": stream_id, "node": "nB"})
        await finished(device)
        device = None
        status, gone = await http(nodes.a_admin, "GET", f"/streams/{stream_id}")
        assert status == 410 and gone["node"] == "nB" and "stopped by operator" in gone["reason"], gone
    finally:
        receiver.close()
        await kill(device)


async def test_gb28181gw_play_at_a_records_bs_device_and_streams_at_a_names_b(tmp_path: Path, nodes: Nodes) -> None:
    ps = gb_ps(FRAMES, GOP)
    device: asyncio.subprocess.Process | None = None
    player: asyncio.subprocess.Process | None = None
    try:
        device_port = await nodes.device_at_b(tmp_path)
        device = await play_device(scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")), device_port, tmp_path, "device")
        out = tmp_path / "out.ps"
        proc = player = await cli_at(nodes.a_admin, "play", CH, "--seconds", "3", "-o", str(out))

        async def at_b() -> list[dict[str, Any]]:
            status, listing = await http(nodes.b_admin, "GET", "/streams")
            return [s for s in listing["streams"] if s["consumers"]] if status == 200 else []

        for _ in range(150):
            if await at_b():
                break
            await asyncio.sleep(0.1)
        (st,) = await at_b()
        assert st["consumers"][0]["label"] == "cli"
        await send_udp(packetize(ps, DEVICE_SSRC, mtu=1000), st["port"])
        listing = await output(await cli_at(nodes.a_admin, "streams"))
        header, *rows = listing.splitlines()  # piped: tab-separated, the node last
        assert header.endswith("\tnode") and len(rows) == 1 and rows[0].endswith("\tnB"), listing
        assert rows[0].startswith(f"{st['id']}\t{CH}\t")
        text = await output(proc)
        assert "0 lost" in text, text
        assert out.read_bytes() == ps and decode_h264(out.read_bytes()) == FRAMES
        await finished(device)  # the CLI left through A, linger 0: B BYEs the device
        device = None
    finally:
        await kill(player, device)


@pytest.mark.parametrize("nodes", [("--set", "node.claim_seconds=3")], indirect=True)
async def test_gb28181gw_play_at_a_ends_in_words_when_b_dies_mid_stream(tmp_path: Path, nodes: Nodes) -> None:
    # B's claim (3 s here) expires after its kill -9: A's answer to the CLI's poll says B is gone
    ps = gb_ps(FRAMES, GOP)
    device: asyncio.subprocess.Process | None = None
    player: asyncio.subprocess.Process | None = None
    try:
        device_port = await nodes.device_at_b(tmp_path)
        device = await play_device(scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")), device_port, tmp_path, "device")
        out = tmp_path / "out.ps"
        proc = player = await cli_at(nodes.a_admin, "play", CH, "--seconds", "120", "-o", str(out))
        for _ in range(150):
            status, listing = await http(nodes.b_admin, "GET", "/streams")
            if status == 200 and any(s["consumers"] for s in listing["streams"]):
                break
            await asyncio.sleep(0.1)
        (st,) = listing["streams"]
        await send_udp(packetize(ps, DEVICE_SSRC, mtu=1000), st["port"])
        await wait_for(lambda: out.exists() and out.stat().st_size == len(ps), 10)
        assert nodes.b is not None
        nodes.b.kill()
        nodes.b.communicate(timeout=10)
        raw, _ = await asyncio.wait_for(proc.communicate(), 40)  # long before --seconds
        text = raw.decode(errors="replace")
        assert proc.returncode == 1 and "node nB is not live" in text, text
        assert decode_h264(out.read_bytes()) == FRAMES  # what came before is kept
    finally:
        await kill(player, device)


async def test_b_killed_while_its_device_is_invited_is_504_naming_it_then_503_once_not_live(
    tmp_path: Path, nodes: Nodes, redis: RedisServer
) -> None:
    receiver = await UdpConsumer.start()
    device: asyncio.subprocess.Process | None = None
    try:
        device_port = await nodes.device_at_b(tmp_path)
        # a device answering B's INVITE only after 20 s: B is killed before
        late = sipp_scenario("invite_late_uas.xml", ch=CH, pause=20000, answer=answer(ssrc=f"{DEVICE_SSRC:010d}"))
        device = await play_device(late.encode(), device_port, tmp_path, "late")

        # a channel nobody has: answered by A (404), no node asked; a bad ID 400
        status, refused = await http(nodes.a_admin, "POST", "/streams", {"channel_id": UNKNOWN, "consumer": viewer(9)})
        assert status == 404 and "node" not in refused, refused
        status, refused = await http(nodes.a_admin, "POST", "/streams", {"channel_id": "12", "consumer": viewer(9)})
        assert status == 400, refused

        opening = asyncio.ensure_future(
            http(nodes.a_admin, "POST", "/streams", {"channel_id": CH, "consumer": viewer(receiver.port)})
        )

        async def inviting() -> bool:
            status, listing = await http(nodes.b_admin, "GET", "/streams")
            return status == 200 and [s["state"] for s in listing["streams"]] == ["inviting"]

        for _ in range(100):
            if await inviting():
                break
            await asyncio.sleep(0.1)
        assert await inviting()
        assert nodes.b is not None
        nodes.b.kill()  # kill -9: no goodbye, its claim lives on until it expires
        nodes.b.communicate(timeout=10)

        status, failed = await asyncio.wait_for(opening, 30)
        assert status == 504 and failed["node"] == "nB" and "node nB did not answer" in failed["error"], failed
        # the listing does not wait for B: it says B did not answer
        status, listing = await http(nodes.a_admin, "GET", "/streams")
        assert status == 200 and listing["streams"] == [], listing
        assert [(u["node"], u["status"]) for u in listing["unanswered"]] == [("nB", 504)]

        # B's claim expires: asked again, refused at once, naming B
        for _ in range(250):
            if not await redis_get(redis, "EXISTS", "gbgw:node:nB"):
                break
            await asyncio.sleep(0.1)
        status, refused = await http(nodes.a_admin, "POST", "/streams", {"channel_id": CH, "consumer": viewer(9)})
        assert status == 503 and refused["node"] == "nB" and "node nB is not live" in refused["error"], refused
        status, refused = await http(nodes.a_admin, "DELETE", "/streams/0100005001?node=nB")
        assert status == 503 and refused["node"] == "nB", refused
    finally:
        receiver.close()
        await kill(device)


# --- in one process: playbacks, and a stream found by asking the nodes -------------------------


async def inproc(
    redis: RedisServer, name: str, ports: tuple[int, int], ssrcs: tuple[int, int], *, invite_timeout: float = 5
) -> Gateway:
    return await start_gateway(
        **{
            "store.backend": "redis", "store.url": redis.url, "node.id": name, "media.linger": "0",
            "media.invite_timeout": str(invite_timeout), "media.port_min": str(ports[0]),
            "media.port_max": str(ports[1]), "media.ssrc_min": str(ssrcs[0]), "media.ssrc_max": str(ssrcs[1]),
        }
    )  # fmt: skip


async def inproc_device_at_b(tmp_path: Path, redis: RedisServer, b: Gateway) -> int:
    """The NVR registered at B (in this process), CH in the store and B's memory, B its owner: the NVR's SIP port."""
    await seed_channel(redis)
    port = free_udp_port()
    await register_at(b, tmp_path, port)
    b.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
    await owned_by_b(redis)
    return port


async def test_a_playback_of_bs_device_asked_at_a_is_opened_controlled_and_left_at_b(
    tmp_path: Path, redis: RedisServer
) -> None:
    a = await inproc(redis, "nA", (media_port(700), media_port(749)), (1, 4999))
    b = await inproc(redis, "nB", (media_port(750), media_port(799)), (5000, 9999))
    receiver = await UdpConsumer.start()
    try:
        port = await inproc_device_at_b(tmp_path, redis, b)
        await wait_for(lambda: a.nodes.view and {n.node_id for n in a.nodes.view} == {"nA", "nB"}, 10)
        then = info_part(
            "^PAUSE RTSP/1.0..CSeq: 1..PauseTime: now..$", answer="RTSP/1.0 200 OK\r\nCSeq: 1\r\n", name="p1"
        ) + sipp_scenario("parts/bye_from_gateway.xml")
        device = await play_device(device_scenario("Playback", then, "p1"), port, tmp_path, "device")
        asked = {
            "channel_id": CH,
            "kind": "playback",
            "start": SPAN.start,
            "end": SPAN.end,
            "consumer": viewer(receiver.port),
        }
        assert a.admin is not None and b.admin is not None
        status, opened = await http(a.admin.port, "POST", "/playbacks", asked)
        assert status == 201 and opened["node"] == "nB" and opened["kind"] == "playback", opened
        (st,) = b.streams.streams.values()
        assert st.id == opened["id"] and st.span == SPAN and not a.streams.streams
        ps = gb_ps(FRAMES, GOP)
        await send_udp(packetize(ps, int(st.session.ssrc), mtu=1000), st.port)
        await wait_for(lambda: receiver.got.payload() == ps, 10)
        assert decode_h264(receiver.got.payload()) == FRAMES

        # found by asking the nodes (as at a node that did not open it)
        a.stream_api.placed.clear()
        status, paused = await http(a.admin.port, "POST", f"/streams/{st.id}/control", {"action": "pause"})
        assert status == 200 and paused["node"] == "nB" and paused["device_status"] == 200, paused
        assert st.control is not None and st.control.paused
        assert a.stream_api.placed == {st.id: "nB"}
        status, refused = await http(a.admin.port, "POST", f"/streams/{st.id}/control", {"action": "fly"})
        assert status == 400, refused  # refused at A: no node asked
        # a second viewer joins the playback at A: B sends to it too
        second = await UdpConsumer.start()
        try:
            status, joined = await http(a.admin.port, "POST", f"/streams/{st.id}/consumers", viewer(second.port))
            assert status == 201 and joined["node"] == "nB" and len(st.consumers) == 2, joined
            assert joined["consumer"]["address"] == f"127.0.0.1:{second.port}"
            status, left = await http(a.admin.port, "DELETE", f"/streams/{st.id}/consumers/{joined['consumer']['id']}")
            assert status == 200 and len(st.consumers) == 1, left
        finally:
            second.close()
        status, left = await http(a.admin.port, "DELETE", f"/streams/{st.id}/consumers/{opened['consumer']['id']}")
        assert status == 200 and left["removed"] == opened["consumer"]["id"]
        await finished(device)  # its last consumer gone, B ended the playback (BYE)
        await wait_for(lambda: not b.streams.streams, 5)
        status, missing = await http(a.admin.port, "GET", "/streams/0100009999")
        assert status == 404, missing  # on no node
        assert a.rpc is not None and b.rpc is not None
        assert a.rpc.calls[("stream.open", "ok")] == 1 and b.rpc.served[("stream.open", "ok")] == 1
    finally:
        receiver.close()
        await a.stop()
        await b.stop()


async def test_a_stream_b_opens_after_as_deadline_is_not_sent_to_the_viewer_told_504(
    tmp_path: Path, redis: RedisServer
) -> None:
    # A waits 2 + 1 s; B would wait 10 s for its device, which answers after 4.5 s: A answers
    # 504, and the consumer B adds once the device answers is removed at once (linger 0: BYE)
    a = await inproc(redis, "nA", (media_port(700), media_port(749)), (1, 4999), invite_timeout=2)
    b = await inproc(redis, "nB", (media_port(750), media_port(799)), (5000, 9999), invite_timeout=10)
    receiver = await UdpConsumer.start()
    try:
        port = await inproc_device_at_b(tmp_path, redis, b)
        await wait_for(lambda: {n.node_id for n in a.nodes.view} == {"nA", "nB"}, 10)
        late = sipp_scenario("invite_late_uas.xml", ch=CH, pause=4500, answer=answer(ssrc=f"{DEVICE_SSRC:010d}"))
        device = await play_device(late.encode(), port, tmp_path, "late")
        assert a.admin is not None
        status, failed = await http(
            a.admin.port, "POST", "/streams", {"channel_id": CH, "consumer": viewer(receiver.port)}
        )
        assert status == 504 and failed["node"] == "nB", failed
        await finished(device)  # answered, ACKed, then BYE: its stream had no consumer left
        await wait_for(lambda: not b.streams.streams, 5)
        assert receiver.got.packets == [] and b.rpc is not None
        assert b.rpc.served[("stream.open", "expired")] == 1
    finally:
        receiver.close()
        await a.stop()
        await b.stop()


async def test_a_download_of_bs_device_asked_at_a_runs_at_b_at_the_speed_asked_and_ends_complete(
    tmp_path: Path, redis: RedisServer
) -> None:
    a = await inproc(redis, "nA", (media_port(700), media_port(749)), (1, 4999))
    b = await inproc(redis, "nB", (media_port(750), media_port(799)), (5000, 9999))
    receiver = await UdpConsumer.start()
    try:
        port = await inproc_device_at_b(tmp_path, redis, b)
        then = sipp_scenario("parts/media_status.xml", pause=1000, sender=CH, from_tag="[pid]dev")  # then B's BYE
        scenario = device_scenario("Download", then, "")
        scenario = scenario.replace(  # the speed asked at A reaches the device from B
            b'assign_to="t"/>',
            b'assign_to="t"/>\n      <ereg regexp="a=downloadspeed:3" search_in="body" check_it="true" assign_to="ds"/>',
        ).replace(b'variables="', b'variables="ds,')
        device = await play_device(scenario, port, tmp_path, "device")
        asked = {"channel_id": CH, "kind": "download", "start": SPAN.start, "end": SPAN.end, "speed": 3}
        assert a.admin is not None
        status, opened = await http(a.admin.port, "POST", "/playbacks", {**asked, "consumer": viewer(receiver.port)})
        assert status == 201 and opened["node"] == "nB", opened
        assert (opened["kind"], opened["download_speed"], opened["file_size"]) == ("download", 3, 1234567)
        (st,) = b.streams.streams.values()
        ps = gb_ps(FRAMES, GOP)
        await send_udp(packetize(ps, int(st.session.ssrc), mtu=1000), st.port)
        await wait_for(lambda: receiver.got.payload() == ps, 10)
        assert decode_h264(receiver.got.payload()) == FRAMES
        await finished(device)  # MediaStatus 121, then B's BYE
        # its end is told at A as B tells it: complete
        status, ended = await http(a.admin.port, "GET", f"/streams/{opened['id']}")
        assert status == 410 and ended["complete"] is True and ended["node"] == "nB", ended
    finally:
        receiver.close()
        await a.stop()
        await b.stop()


async def test_on_a_single_node_node_names_nothing_else() -> None:
    gw = await start_gateway()  # SQLite: no other node to ask
    try:
        assert gw.admin is not None
        status, missing = await http(gw.admin.port, "GET", "/streams/0100000001?node=nB")
        assert status == 404 and "node" not in missing, missing
        status, listing = await http(gw.admin.port, "GET", "/streams?node=nB")
        assert (status, listing) == (200, {"streams": []})
    finally:
        await gw.stop()
