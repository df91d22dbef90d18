"""A superior's INVITE for a device of another node (issue 17): two ``gb28181gw serve`` nodes on one redis-server.

Node A is the only one with the ``[[upstream]]`` (so it holds the superior's lease); the
device (an NVR played by SIPp, channel CH) registers at node B, which owns it (the ``owner``
hash names B: set here as the ownership code would). The channel is in the shared store only
(A started before it was written): A finds it in Redis, asks B by RPC to open the device's
stream and send it straight to the superior's address, and answers the superior with B's
media address. The superior here is a bare UDP socket in the test (it answers A's REGISTER and
keepalives); what B sends it is real H.264 in PS over RTP, decoded with ``av``.

- The superior's BYE to A closes the output on B (B's stream, linger 0, BYEs the device).
- B killed (``kill -9``) mid-stream: A sees B's claim expire and sends BYE upward.
- B not live: the superior's INVITE is answered 480 at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gb28181gw.app import Gateway
from gb28181gw.gb.model import Channel
from gb28181gw.services.cascade_media import GONE_AFTER, WATCH_INTERVAL
from gb28181gw.sip.message import Request, Response, make_response, parse_message
from tests.helpers import media_port
from tests.media import UdpConsumer, decode_h264, gb_ps, packetize, send_udp, wait_for
from tests.process import free_port, serve, wait_ready
from tests.redis_server import RedisServer, require_redis_py

from .conftest import start_gateway, start_gateway_from
from .test_devices import NVR, finished, free_udp_port, kill, play_device
from .test_devices import register as register_at
from .test_store_redis import register
from .test_streams import DEVICE_BYE, DEVICE_SSRC, answer, scenario

pytestmark = pytest.mark.sipp

SUPERIOR = "34010000002000000001"
OURS = "34020000002000000001"
CH = "34020000001310000001"
SUPERIOR_SSRC = "0100000077"
FRAMES, GOP = 50, 10


class Superior(asyncio.DatagramProtocol):
    """The superior as a bare UDP socket: 200 to every request of A's, INVITEs as the test says."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.got: list[Request | Response] = []

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        self.got.append(msg)
        if isinstance(msg, Request) and msg.method != "ACK" and self.transport is not None:
            self.transport.sendto(bytes(make_response(msg, 200, to_tag="sup1")), addr)

    def send(self, sip_port: int, method: str, call_id: str, **more: str) -> None:
        assert self.transport is not None
        self.transport.sendto(superior_request(self.port, sip_port, method, call_id, **more), ("127.0.0.1", sip_port))

    def final(self, call_id: str) -> Response | None:
        return next((m for m in self.got if isinstance(m, Response) and m.status >= 200 and m.call_id == call_id), None)

    def messages(self) -> list[str]:
        return [
            m.body.decode("gb2312", "replace") for m in self.got if isinstance(m, Request) and m.method == "MESSAGE"
        ]

    def byes(self) -> list[str]:
        return [m.call_id for m in self.got if isinstance(m, Request) and m.method == "BYE"]

    def registers(self) -> int:
        return sum(1 for m in self.got if isinstance(m, Request) and m.method == "REGISTER")


def superior_request(
    own_port: int,
    sip_port: int,
    method: str,
    call_id: str,
    *,
    to_tag: str = "",
    body: str = "",
    to: str = CH,
    content_type: str = "application/sdp",
) -> bytes:
    """A request of the superior's (at 127.0.0.1:``own_port``) to a node's SIP port, for ``to`` (CH)."""
    text = (
        f"{method} sip:{to}@127.0.0.1:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{own_port};rport;branch=z9hG4bK{method}{call_id}\r\n"
        f"From: <sip:{SUPERIOR}@3401000000>;tag=up-{call_id}\r\n"
        f"To: <sip:{to}@3402000000>{';tag=' + to_tag if to_tag else ''}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 20 {method}\r\nContact: <sip:{SUPERIOR}@127.0.0.1:{own_port}>\r\n"
        f"Subject: {CH}:0100000077,{SUPERIOR}:0\r\nMax-Forwards: 70\r\n"
        f"{'Content-Type: ' + content_type + chr(13) + chr(10) if body else ''}"
        f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    )
    return text.encode()


def offer(port: int) -> str:
    lines = ["v=0", f"o={SUPERIOR} 0 0 IN IP4 127.0.0.1", "s=Play", "c=IN IP4 127.0.0.1", "t=0 0"]
    lines += [f"m=video {port} RTP/AVP 96", "a=recvonly", "a=rtpmap:96 PS/90000", f"y={SUPERIOR_SSRC}", "f="]
    return "\r\n".join(lines) + "\r\n"


def api(admin: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1{path}", timeout=5) as resp:
        return json.loads(resp.read())


def metrics(admin: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def stop(proc: subprocess.Popen[str] | None) -> str:
    if proc is None:
        return ""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]
    except ValueError:
        return ""


class Nodes:
    def __init__(self, tmp_path: Path, redis: RedisServer, superior_port: int) -> None:
        self.tmp_path, self.redis = tmp_path, redis
        self.a_sip, self.a_admin, self.b_sip, self.b_admin = free_port(), free_port(), free_port(), free_port()
        config = tmp_path / "a.toml"
        config.write_text(
            "[[upstream]]\n"
            'name = "district"\n'
            f'id = "{SUPERIOR}"\n'
            'host = "127.0.0.1"\n'
            f"port = {superior_port}\n"
            "keepalive_interval = 5\n"
        )
        config.chmod(0o600)
        self.a_config = config
        self.a: subprocess.Popen[str] | None = None
        self.b: subprocess.Popen[str] | None = None

    def common(self, node: str, ports: tuple[int, int], ssrcs: tuple[int, int]) -> list[str]:
        return [
            "--id", OURS, "--listen", "127.0.0.1", "--set", "store.backend=redis", "--set", f"store.url={self.redis.url}",
            "--set", f"node.id={node}", "--set", "node.lease_seconds=3", "--set", "media.workers=0",
            "--set", "media.linger=0", "--set", f"media.port_min={ports[0]}", "--set", f"media.port_max={ports[1]}",
            "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=", "--set", "sip.t1=0.1",
            "--set", "media.invite_timeout=10", "--set", f"media.ssrc_min={ssrcs[0]}", "--set", f"media.ssrc_max={ssrcs[1]}",
        ]  # fmt: skip

    def start_a(self) -> None:
        self.a = serve(
            "-c", str(self.a_config), "--port", str(self.a_sip), "--admin-port", str(self.a_admin),
            *self.common("nA", (media_port(400), media_port(449)), (1, 4999)),
        )  # fmt: skip
        wait_ready(f"http://127.0.0.1:{self.a_admin}", self.a)

    def start_b(self) -> None:
        self.b = serve(
            "--port",
            str(self.b_sip),
            "--admin-port",
            str(self.b_admin),
            *self.common("nB", (media_port(450), media_port(499)), (5000, 9999)),
        )
        wait_ready(f"http://127.0.0.1:{self.b_admin}", self.b)

    def close(self) -> tuple[str, str]:
        return stop(self.a), stop(self.b)


@pytest.fixture
async def superior() -> AsyncIterator[Superior]:
    transport, sup = await asyncio.get_running_loop().create_datagram_endpoint(Superior, local_addr=("127.0.0.1", 0))
    try:
        yield sup
    finally:
        transport.close()


async def seed_channel(redis: RedisServer, device: str = NVR, channel: str = CH) -> None:
    """The device's channel in the shared store, as its node's catalog of it would have written it."""
    r = Redis.from_url(redis.url)
    try:
        await r.hset(f"gbgw:channels:{device}", channel, json.dumps(["gate", "ON", device, {}]))
        await r.sadd("gbgw:channels", device)
    finally:
        await r.aclose()


async def own(redis: RedisServer, device: str, node: str) -> None:
    """The ``owner`` hash entry the ownership code writes at each REGISTER ("<epoch> <node>")."""
    r = Redis.from_url(redis.url)
    try:
        await r.hset("gbgw:owner", device, f"1 {node}")
    finally:
        await r.aclose()


async def device_at_b(tmp_path: Path, redis: RedisServer, b: Gateway) -> int:
    """The NVR registered at B, CH in the store and B's memory, the owner hash naming B: the NVR's SIP port."""
    await seed_channel(redis)
    port = free_udp_port()
    await register_at(b, tmp_path, port)
    b.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
    await own(redis, NVR, "nB")
    return port


async def stop_all(
    a: Gateway, b: Gateway, receiver: UdpConsumer, device: asyncio.subprocess.Process | None = None
) -> None:
    """The end of an in-process test: the receiver closed, both nodes stopped, the device killed if it is still on."""
    receiver.close()
    await a.stop()
    await b.stop()
    await kill(device)


async def invite(sup: Superior, sip_port: int, call_id: str, port: int) -> Response:
    sup.send(sip_port, "INVITE", call_id, body=offer(port))
    await wait_for(lambda: sup.final(call_id) is not None, 30)
    final = sup.final(call_id)
    assert final is not None
    return final


async def b_stream(nodes: Nodes) -> dict[str, Any]:
    await wait_for(lambda: bool(api(nodes.b_admin, "/streams")["streams"]), 10)
    (st,) = api(nodes.b_admin, "/streams")["streams"]
    return dict(st)


async def test_superior_invite_at_a_gets_media_from_b_bye_closes_it_and_b_killed_means_bye(
    tmp_path: Path, redis: RedisServer, superior: Superior
) -> None:
    ps = gb_ps(FRAMES, GOP)
    nodes = Nodes(tmp_path, redis, superior.port)
    receiver = await UdpConsumer.start()
    device: asyncio.subprocess.Process | None = None
    try:
        nodes.start_a()
        await wait_for(lambda: superior.registers() >= 1, 20)  # A holds the lease and registers upward
        await seed_channel(redis)
        nodes.start_b()
        device_port = free_udp_port()
        await register(device_port, NVR, nodes.b_sip, tmp_path)
        await own(redis, NVR, "nB")

        # --- A's catalog to the superior holds B's device (read from the shared store) ----------
        query = (
            '<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>17</SN>\r\n'
            f"<DeviceID>{OURS}</DeviceID>\r\n</Query>\r\n"
        )
        superior.send(nodes.a_sip, "MESSAGE", "catalog", body=query, to=OURS, content_type="Application/MANSCDP+xml")
        await wait_for(lambda: any(f"<DeviceID>{CH}</DeviceID>" in m for m in superior.messages()), 15)

        # --- the INVITE at A, the media from B --------------------------------------------------
        device = await play_device(scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")), device_port, tmp_path, "device1")
        ok = await invite(superior, nodes.a_sip, "first", receiver.port)
        assert ok.status == 200, ok
        body = ok.body.decode()
        assert f"y={SUPERIOR_SSRC}" in body and "c=IN IP4 127.0.0.1" in body
        st = await b_stream(nodes)
        (consumer,) = st["consumers"]
        assert consumer["address"] == f"127.0.0.1:{receiver.port}" and consumer["paused"]
        assert consumer["label"] == "upstream:district@nA"
        assert f"m=video {consumer['local_port'] or st['port']} " in body  # B's port in A's answer
        superior.send(nodes.a_sip, "ACK", "first", to_tag=ok.to.tag or "")
        await wait_for(lambda: not api(nodes.b_admin, "/streams")["streams"][0]["consumers"][0]["paused"], 10)
        packets = packetize(ps, DEVICE_SSRC, mtu=1000)
        await send_udp(packets, st["port"])
        await wait_for(lambda: len(receiver.got.packets) == len(packets), 10)
        assert receiver.got.ssrcs == {int(SUPERIOR_SSRC)}
        assert receiver.got.payload() == ps and decode_h264(receiver.got.payload()) == FRAMES
        assert 'gb28181gw_rpc_calls_total{method="cascade.open",result="ok"} 1.0' in metrics(nodes.a_admin)
        assert 'gb28181gw_rpc_served_total{method="cascade.open",result="ok"} 1.0' in metrics(nodes.b_admin)

        # --- the superior's BYE at A closes the output on B ------------------------------------
        superior.send(nodes.a_sip, "BYE", "first", to_tag=ok.to.tag or "")
        await wait_for(lambda: not api(nodes.b_admin, "/streams")["streams"], 10)
        await finished(device)  # B's stream (linger 0) BYEd the device
        assert superior.byes() == []

        # --- B killed mid-stream: A sends BYE upward ---------------------------------------------
        device = await play_device(scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")), device_port, tmp_path, "device2")
        ok = await invite(superior, nodes.a_sip, "second", receiver.port)
        assert ok.status == 200, ok
        superior.send(nodes.a_sip, "ACK", "second", to_tag=ok.to.tag or "")
        # B has started sending (the ACK's cascade.start answered): killed before that, the start
        # call's timeout would end the dialog (BYE upward) while B's claim still lives
        await wait_for(lambda: not api(nodes.b_admin, "/streams")["streams"][0]["consumers"][0]["paused"], 10)
        assert nodes.b is not None
        nodes.b.kill()
        nodes.b.communicate(timeout=10)
        # B's claim expires (15 s) and A's watch sees it (every 2 s)
        await wait_for(lambda: superior.byes() == ["second"], 40)

        # --- B gone: an INVITE for its device is refused at once (480) ----------------------------
        refused = await invite(superior, nodes.a_sip, "third", receiver.port)
        assert refused.status == 480, refused
        a_metrics = metrics(nodes.a_admin)
        assert 'gb28181gw_rpc_calls_total{method="cascade.open",result="unreachable"} 1.0' in a_metrics
    finally:
        receiver.close()
        a_out, b_out = nodes.close()
        await kill(device)
    assert "Traceback" not in a_out, a_out[-4000:]


# --- the same two nodes in this process: the failure paths --------------------------------------


async def inproc_nodes(
    tmp_path: Path, redis: RedisServer, superior_port: int, *, b_upstream: bool = False, **more: str
) -> tuple[Gateway, Gateway]:
    config = tmp_path / "a-inproc.toml"
    config.write_text(
        f'[[upstream]]\nname = "district"\nid = "{SUPERIOR}"\nhost = "127.0.0.1"\nport = {superior_port}\n'
        "retry_interval = 600.0\n"
    )
    common = {
        "store.backend": "redis",
        "store.url": redis.url,
        "media.linger": "0",
        "media.invite_timeout": "5",
        **more,
    }
    a = await start_gateway_from(
        config,
        {**common, "node.id": "nA", "media.port_min": str(media_port(500)), "media.port_max": str(media_port(549))},
    )
    b = await start_gateway_from(
        config if b_upstream else None,
        {**common, "node.id": "nB", "media.port_min": str(media_port(550)), "media.port_max": str(media_port(599))},
    )
    return a, b


async def test_the_device_ending_its_stream_at_b_is_a_bye_from_a(
    tmp_path: Path, redis: RedisServer, superior: Superior
) -> None:
    a, b = await inproc_nodes(tmp_path, redis, superior.port)
    receiver = await UdpConsumer.start()
    try:
        port = await device_at_b(tmp_path, redis, b)
        device = await play_device(scenario(answer(), tail=DEVICE_BYE), port, tmp_path, "device")
        ok = await invite(superior, a.stack.port, "first", receiver.port)
        assert ok.status == 200, ok
        superior.send(a.stack.port, "ACK", "first", to_tag=ok.to.tag or "")
        (served,) = a.cascade_media.dialogs.values()
        assert served.node == "nB" and (served.stream_id, served.consumer_id) in {
            (st.id, c) for st in b.streams.streams.values() for c in st.consumers
        }
        # the device's BYE ends B's stream; B tells A, which sends BYE upward
        await wait_for(lambda: superior.byes() == ["first"], 15)
        await finished(device)
        await wait_for(lambda: not a.cascade_media.dialogs and not a.cascade_media.remote, 5)
        await wait_for(lambda: not b.streams.streams and not b.cascade_media.exported, 5)
        assert b.rpc is not None and b.rpc.calls[("cascade.gone", "ok")] == 1
    finally:
        await stop_all(a, b, receiver)


async def test_b_refusing_is_passed_up_by_a_and_nothing_is_left(
    tmp_path: Path, redis: RedisServer, superior: Superior
) -> None:
    a, b = await inproc_nodes(tmp_path, redis, superior.port)
    try:
        await seed_channel(redis)
        b.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)  # known at B, never registered there
        await own(redis, NVR, "nB")
        refused = await invite(superior, a.stack.port, "first", 40000)
        # B's own answer ("no device"), passed up as a local refusal would be (UPWARD), naming B
        warning = refused.headers.get("warning") or ""
        assert refused.status == 404 and "node nB refused cascade.open: no device" in warning, warning
        assert not a.cascade_media.dialogs and not a.cascade_media.pending and not a.cascade_media.remote
        assert not b.streams.streams and not b.cascade_media.exported
        assert a.rpc is not None and a.rpc.calls[("cascade.open", "refused")] == 1
        # a channel of nobody's device: 404 at A, as before (no RPC)
        await own(redis, NVR, "")
        superior.send(a.stack.port, "INVITE", "second", body=offer(40000), to="34020000001310000099")
        await wait_for(lambda: superior.final("second") is not None, 10)
        final = superior.final("second")
        assert final is not None and final.status == 404
    finally:
        await a.stop()
        await b.stop()


async def test_b_stopping_cleanly_is_a_bye_from_a_at_once(
    tmp_path: Path, redis: RedisServer, superior: Superior
) -> None:
    a, b = await inproc_nodes(tmp_path, redis, superior.port)
    receiver = await UdpConsumer.start()
    b_stopped = False
    try:
        port = await device_at_b(tmp_path, redis, b)
        device = await play_device(scenario(answer()), port, tmp_path, "device")
        ok = await invite(superior, a.stack.port, "first", receiver.port)
        assert ok.status == 200, ok
        superior.send(a.stack.port, "ACK", "first", to_tag=ok.to.tag or "")
        await wait_for(lambda: bool(b.cascade_media.exported), 5)
        await b.stop()  # B BYEs the device, and tells A before its claim is released
        b_stopped = True
        await finished(device)
        await wait_for(lambda: superior.byes() == ["first"], 10)
        assert not a.cascade_media.dialogs and not a.cascade_media.remote
        assert a.rpc is not None and a.rpc.served[("cascade.gone", "ok")] == 1  # told, not found by its watch
    finally:
        receiver.close()
        await a.stop()
        if not b_stopped:
            await b.stop()


async def test_redis_restarted_mid_stream_cuts_nothing_and_the_bye_still_closes_at_b(
    tmp_path: Path, superior: Superior
) -> None:
    # persistent: Redis away for a while and back with its data (for one restarted empty, see
    # the test after this one)
    require_redis_py()
    redis = RedisServer(tmp_path / "redis-aof", persistent=True)
    redis.start()
    # no media is sent here: the device's stream must not end for that while Redis is away
    a, b = await inproc_nodes(tmp_path, redis, superior.port, **{"media.rtp_timeout": "300"})
    receiver = await UdpConsumer.start()
    device = None
    try:
        port = await device_at_b(tmp_path, redis, b)
        device = await play_device(scenario(answer()), port, tmp_path, "device")
        ok = await invite(superior, a.stack.port, "first", receiver.port)
        assert ok.status == 200, ok
        superior.send(a.stack.port, "ACK", "first", to_tag=ok.to.tag or "")
        await wait_for(
            lambda: [c.paused for st in b.streams.streams.values() for c in st.consumers.values()] == [False]
        )
        redis.stop(kill=True)
        await asyncio.sleep(WATCH_INTERVAL * 2)  # A's watch meets a Redis that does not answer
        redis.start()
        # the nodes' calls work again (the claims and groups were kept), and a few looks of A's watch pass
        assert a.rpc is not None
        await wait_for(lambda: redis.command(b"EXISTS", b"gbgw:node:nB") == b":1", 15)
        await asyncio.sleep(GONE_AFTER + WATCH_INTERVAL)
        assert superior.byes() == [] and len(a.cascade_media.dialogs) == 1 and len(b.cascade_media.exported) == 1
        # the superior's BYE still closes the sending on B, through the restarted Redis
        superior.send(a.stack.port, "BYE", "first", to_tag=ok.to.tag or "")
        await wait_for(lambda: not b.cascade_media.exported and not b.streams.streams, 15)
        assert not a.cascade_media.dialogs and not a.cascade_media.remote
    finally:
        await stop_all(a, b, receiver)
        redis.stop()
        await kill(device)


async def test_redis_restarted_empty_mid_stream_the_holder_keeps_its_lease_registration_and_stream(
    tmp_path: Path, redis: RedisServer, superior: Superior
) -> None:
    # no persistence: the superior's lease and its epoch counter are lost with everything else.
    # A holds the lease and serves the superior B's device; B has the same [[upstream]] and
    # could take over. A's next renewal finds no value, takes the lease again at once, and
    # keeps the registration, the dialog and B's sending (issue 17: no stream cut)
    ps = gb_ps(FRAMES, GOP)
    a, b = await inproc_nodes(
        tmp_path, redis, superior.port, b_upstream=True, **{"media.rtp_timeout": "300", "node.lease_seconds": "3"}
    )
    receiver = await UdpConsumer.start()
    device = None
    camera: socket.socket | None = None
    try:
        a_link, b_link = a.upstreams.links["district"], b.upstreams.links["district"]
        assert a_link.lease is not None and b_link.lease is not None
        await wait_for(lambda: a_link.machine.registered and b_link.lease is not None and b_link.lease.holder == "nA")
        assert superior.registers() == 1
        port = await device_at_b(tmp_path, redis, b)
        device = await play_device(scenario(answer(ssrc=f"{DEVICE_SSRC:010d}")), port, tmp_path, "device")
        ok = await invite(superior, a.stack.port, "first", receiver.port)
        assert ok.status == 200, ok
        superior.send(a.stack.port, "ACK", "first", to_tag=ok.to.tag or "")
        await wait_for(
            lambda: [c.paused for st in b.streams.streams.values() for c in st.consumers.values()] == [False]
        )
        (stream,) = b.streams.streams.values()
        packets = packetize(ps, DEVICE_SSRC, mtu=1000)
        half = len(packets) // 2
        camera = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # one source: the stream latches onto it
        await send_udp(packets[:half], stream.port, sock=camera)
        await wait_for(lambda: len(receiver.got.packets) == half, 10)
        epoch = a_link.lease.epoch
        machine = a_link.machine

        redis.stop(kill=True)
        redis.start()  # empty
        await wait_for(lambda: a_link.lease is not None and a_link.lease.epoch > epoch, 15)  # re-taken
        await asyncio.sleep(4.0)  # four of A's renewals (every 1 s) and as many tries of B's pass
        assert a_link.machine is machine and machine.registered  # the same registration, Call-ID and all
        assert a_link.lease.held and b_link.lease.holder == "nA" and not b_link.lease.held
        assert superior.registers() == 1 and superior.byes() == []
        assert len(a.cascade_media.dialogs) == 1 and len(b.cascade_media.exported) == 1
        await send_udp(packets[half:], stream.port, sock=camera)  # the media still reaches the superior
        await wait_for(lambda: len(receiver.got.packets) == len(packets), 10)
        assert receiver.got.payload() == ps and decode_h264(receiver.got.payload()) == FRAMES
        exposed = a.metrics.render().decode()
        assert 'gb28181gw_upstream_lease_changes_total{change="retaken",upstream="district"} 1.0' in exposed
        assert 'change="lost"' not in exposed and 'change="fenced"' not in exposed
        assert '{change="gained",upstream="district"} 1.0' in exposed
        # the superior's BYE still closes the sending on B, through the emptied Redis
        superior.send(a.stack.port, "BYE", "first", to_tag=ok.to.tag or "")
        await wait_for(lambda: not b.cascade_media.exported and not b.streams.streams, 15)
        assert not a.cascade_media.dialogs and not a.cascade_media.remote
    finally:
        receiver.close()
        if camera is not None:
            camera.close()
        await a.stop()
        await b.stop()
        await kill(device)


async def test_a_device_arriving_at_a_started_node_brings_its_stored_channels(
    tmp_path: Path, redis: RedisServer
) -> None:
    # a device re-homed after its node died: the channels its old node stored are in the shared
    # store, not in this node's memory (loaded at its start), and the superior's INVITE for one
    # is served from memory (cascade.open answered "no device or channel" before: test_cluster.py)
    gw = await start_gateway(**{"store.backend": "redis", "store.url": redis.url, "node.id": "nB"})
    try:
        await seed_channel(redis)
        other = "34020000001320000077"  # nothing stored for it: nothing loaded, nothing broken
        await register_at(gw, tmp_path, free_udp_port())
        await register_at(gw, tmp_path, free_udp_port(), other)
        await wait_for(lambda: CH in gw.devices.channels.get(NVR, {}), 5)
        assert gw.devices.owner_of(CH) == NVR and gw.devices.device_of(CH).device_id == NVR
        assert other not in gw.devices.channels
    finally:
        await gw.stop()


async def test_a_superior_invite_for_a_device_known_here_but_served_by_b_is_refused_without_an_invite_down(
    tmp_path: Path, redis: RedisServer, superior: Superior
) -> None:
    # A learns B's device (its row: registered, online, its address) from the events stream. When
    # the owner hash cannot send the INVITE on (here it names A, as a stale or lost entry would),
    # A must not INVITE the device itself from a gateway it is not registered at: 480 at once
    a, b = await inproc_nodes(tmp_path, redis, superior.port)
    try:
        await seed_channel(redis)
        port = free_udp_port()
        await register_at(b, tmp_path, port)
        await b.registrar.flush()
        await wait_for(lambda: (d := a.registrar.devices.get(NVR)) is not None and d.online, 10)
        assert not a.registrar.cluster.owns(NVR)
        a.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
        await own(redis, NVR, "nA")
        refused = await invite(superior, a.stack.port, "first", 40000)
        assert refused.status == 480, refused
        assert "not registered at this node" in (refused.headers.get("warning") or ""), refused
        assert not a.cascade_media.dialogs and not a.cascade_media.pending and not a.streams.streams
    finally:
        await a.stop()
        await b.stop()
