"""A Kamailio dispatcher in front of the nodes, for devices that cannot follow a redirect (issue 17).

GB/T 28181-2016 firmware often ignores the director's 302; such devices are configured with the
address of a SIP dispatcher instead (``tests/shell/kamailio/dispatcher.cfg``, Kamailio 5.6 as
Debian ships it). It sends each device's requests to a node by a hash of the From user (the
device ID), puts a Path naming the device's address on its REGISTERs (RFC 3327) and record-routes
INVITEs; the nodes keep the Path and send their requests for the device (Catalog, DeviceInfo,
INVITE) through it. It probes the nodes with OPTIONS every second, so a dead node leaves the set.

Real processes: one ``redis-server``, two ``gb28181gw serve`` nodes, Kamailio, SIPp IPCs
registering at Kamailio's address (``ipc_register_uac.xml``: no redirect followed) and a SIPp
device on one IPC's port answering what its node asks through the front
(``front_device_uas.xml``). Proven: the devices spread over both nodes as Kamailio's hash says,
each online exactly once; a node's Catalog and DeviceInfo queries reach the device through the
front and are answered; a viewer's stream gets media that ``av`` decodes; after ``kill -9`` of a
node the front sends its devices' requests to the survivor, which answers their keepalives 404, and
registering through the front again they are online there; a device whose node died in the middle
of a dialog gets 408 from the front for its BYE, and is streamed from again at the survivor; a front
with no live node answers 503 with Retry-After, and a device's later attempt reaches the node
started again.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import media_port
from tests.media import UdpConsumer, decode_h264, gb_ps, packetize, send_udp, wait_for
from tests.process import wait_ready
from tests.redis_server import RedisServer

from .conftest import filled, require_sipp, sipp_scenario
from .test_cascade_nodes import seed_channel
from .test_cluster import drain
from .test_devices import free_udp_port
from .test_director import SITE, Node, sipp, start_node, until
from .test_ownership_nodes import events
from .test_streams import answer

pytestmark = pytest.mark.sipp

KAMAILIO_CFG = Path(__file__).parent / "kamailio" / "dispatcher.cfg"
#: Milliseconds Kamailio waits for a node's answer (its OPTIONS probes' too) before it counts as dead.
PROBE_MS = 2000
DEVICES = [f"3402000000132{i:07d}" for i in range(201, 217)]
MEDIA = DEVICES[0]  # the IPC that is queried and streamed from
CH = "34020000001310000201"
DEVICE_SSRC = 200000201
FRAMES, GOP = 20, 10


def require_kamailio() -> str:
    """Kamailio's path; the test fails without it, or without SIPp (``.ci/run`` installs both), as
    :func:`require_sipp` does."""
    found = shutil.which("kamailio") or next((p for p in ("/usr/sbin/kamailio",) if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail("kamailio is not installed: .ci/run installs it (apt-get install kamailio)")
    require_sipp()
    return found


def ds_hash(user: str) -> int:
    """Kamailio dispatcher's hash of a string (``ds_get_hash`` in dispatch.c, 5.6), over unsigned 32 bits:
    with algorithm 7 a request goes to the destination ``ds_hash(From user) % n`` while it is live."""
    data = user.encode()
    mask = 0xFFFFFFFF
    h = 0
    i = 0
    while i <= len(data) - 4:
        v = (data[i] << 24) + (data[i + 1] << 16) + (data[i + 2] << 8) + data[i + 3]
        h = (h + (v ^ (v >> 3))) & mask
        i += 4
    v = 0
    while i < len(data):
        v = ((v << 8) + data[i]) & mask
        i += 1
    h = (h + (v ^ (v >> 3))) & mask
    h = ((h + (h >> 11)) + ((h >> 13) + (h >> 23))) & mask
    return h or 1


@dataclass
class Front:
    """Kamailio on 127.0.0.1:``port`` dispatching to the nodes of its list file."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            # its own process group (start_new_session): the main process and the children it forked
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_front(tmp_path: Path, nodes: list[Node]) -> Front:
    binary = require_kamailio()
    run = tmp_path / "kamailio"
    run.mkdir(exist_ok=True)
    port = free_udp_port()
    listing = run / "dispatcher.list"
    listing.write_text("".join(f"1 sip:127.0.0.1:{n.sip}\n" for n in nodes))
    config = run / "kamailio.cfg"
    config.write_text(filled(KAMAILIO_CFG, listen=f"udp:127.0.0.1:{port}", list_file=listing, probe_ms=PROBE_MS))
    log = run / "kamailio.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-f", str(config), "-DD", "-E", "-Y", str(run), "-w", str(run), "-m", "32", "-M", "4"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, close_fds=True, start_new_session=True,
        )  # fmt: skip
    front = Front(port, proc, log)
    try:
        # ready once it answers anything (an OPTIONS goes to a node, or is refused with no node live)
        until(lambda: proc.poll() is not None or sip_answer(port, "OPTIONS", DEVICES[-1]) is not None, 15, "Kamailio")
        assert proc.poll() is None, front.output()
    except BaseException:
        front.stop()
        raise
    return front


def keepalive(user: str) -> bytes:
    """A Keepalive Notify body from ``user`` (GB/T 28181 §9.6)."""
    return (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>7</SN>\r\n'
        f"<DeviceID>{user}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
    ).encode()


def sip_answer(
    port: int,
    method: str,
    user: str,
    *,
    timeout: float = 1.0,
    body: bytes = b"",
    source: str = "127.0.0.1",
    extra: str = "",
    to_tag: str = "",
) -> str | None:
    """One ``method`` (OPTIONS, REGISTER, a MESSAGE with ``body``) from ``user`` at ``source`` to
    127.0.0.1:``port``, ``extra`` header lines (each ending in CRLF) added and ``to_tag`` after To:
    its final answer (``None`` if none came within ``timeout``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        local = s.getsockname()[1]
        branch = f"z9hG4bK{user}{time.monotonic_ns()}"
        s.sendto(
            (
                f"{method} sip:{SITE}@3402000000 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {source}:{local};rport;branch={branch}\r\n"
                f"From: <sip:{user}@3402000000>;tag=t1\r\nTo: <sip:{user}@3402000000>{to_tag}\r\n"
                f"Call-ID: {branch}@{source}\r\nCSeq: 1 {method}\r\n"
                f"Contact: <sip:{user}@{source}:{local}>\r\nMax-Forwards: 70\r\nExpires: 3600\r\n"
                + extra
                + ("Content-Type: Application/MANSCDP+xml\r\n" if body else "")
                + f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body,
            ("127.0.0.1", port),
        )
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data = s.recv(65535).decode(errors="replace")
            except OSError:
                return None
            if not data.startswith("SIP/2.0 1"):
                return data
    return None


def first_line(answer: str | None) -> str:
    return (answer or "").split("\r\n", 1)[0]


@contextmanager
def front_cluster(tmp_path: Path, redis: RedisServer, *settings: str) -> Iterator[tuple[Front, list[Node]]]:
    """Two nodes, both ready (``settings``: more ``--set KEY=VALUE`` for both), and the front
    before them; everything stopped after."""
    nodes: list[Node] = []
    output: dict[str, list[str]] = {}
    front: Front | None = None
    try:
        for index, name in enumerate(("n1", "n2")):
            ports = media_port(800) + 50 * index
            node = start_node(
                tmp_path, name, redis, "--set", f"media.port_min={ports}", "--set", f"media.port_max={ports + 49}",
                "--set", "media.linger=0", "--set", "sip.t1=0.1", *(a for kv in settings for a in ("--set", kv)),
            )  # fmt: skip
            nodes.append(node)
        for node in nodes:
            wait_ready(node.admin, node.proc)  # (its output, if it exits first)
            output[node.name] = []
            drain(node, output[node.name])  # read as it comes: a full pipe would stop the node
        front = start_front(tmp_path, nodes)
        yield front, nodes
    finally:
        if front is not None:
            front.stop()
        for node in nodes:
            node.end()
    for name, lines in output.items():
        assert "Traceback" not in "".join(lines), (name, "".join(lines)[-4000:])


def register(tmp_path: Path, front: Front, nodes: list[Node], ids: list[str], *, port: int = 0) -> None:
    """SIPp IPCs ``ids`` register at the front (no redirect to follow) and keep alive twice."""
    sipp(tmp_path, nodes[0], ids, port=port, scenario="ipc_register_uac.xml", to=front.port)


def http(node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(node.admin + "/api/v1" + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def owner_of(device: str, nodes: list[Node]) -> Node:
    (owner,) = [n for n in nodes if n.proc.poll() is None and device in n.online()]
    return owner


def invite_scenario(tmp_path: Path, name: str, *, then: str) -> Path:
    """The device taking its node's INVITE for CH (``front_device_uas.xml``), ``then`` after the ACK."""
    path = tmp_path / f"{name}.xml"
    path.write_text(sipp_scenario("front_device_uas.xml", ch=CH, answer=answer(ssrc=f"{DEVICE_SSRC:010d}"), then=then))
    return path


def query_scenario(tmp_path: Path, what: str, body: str) -> Path:
    """The device taking one MESSAGE query of CmdType ``what``, answering 200 and then ``body`` (SN filled in)."""
    path = tmp_path / f"{what}.xml"
    check = (
        f'<ereg regexp="&lt;CmdType&gt;{what}&lt;/CmdType&gt;" search_in="body" check_it="true" assign_to="checked"/>'
    )
    part = sipp_scenario("parts/message_response_by_domain.xml", device=MEDIA, cseq=1, body=body)
    path.write_text(sipp_scenario("message_uas.xml", check=check, parts=part, refs="all,sn,checked"))
    return path


CATALOG = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>[$sn]</SN>\r\n'
    f'<DeviceID>{MEDIA}</DeviceID>\r\n<SumNum>1</SumNum>\r\n<DeviceList Num="1">\r\n<Item>\r\n'
    f"<DeviceID>{CH}</DeviceID>\r\n<Name>gate</Name>\r\n<Manufacturer>Vendor</Manufacturer>\r\n"
    f"<Parental>0</Parental>\r\n<ParentID>{MEDIA}</ParentID>\r\n<Status>ON</Status>\r\n"
    "</Item>\r\n</DeviceList>\r\n</Response>\r\n"
)
DEVICE_INFO = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>DeviceInfo</CmdType>\r\n<SN>[$sn]</SN>\r\n'
    f"<DeviceID>{MEDIA}</DeviceID>\r\n<Result>OK</Result>\r\n<DeviceName>front gate</DeviceName>\r\n"
    "<Manufacturer>Vendor</Manufacturer>\r\n<Model>IPC-2016</Model>\r\n<Firmware>V1.0</Firmware>\r\n"
    "<Channel>1</Channel>\r\n</Response>\r\n"
)


def start_device(tmp_path: Path, scenario: Path, port: int) -> subprocess.Popen[str]:
    """The SIPp device on ``port`` (the one it registered from), tracing what it got to ``<name>.msg``."""
    sipp_binary = require_sipp()
    return subprocess.Popen(
        [sipp_binary, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-timeout", "40s",
         "-timeout_error", "-nostdin", "-trace_msg", "-message_file", str(scenario.with_suffix(".msg"))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, close_fds=True,
    )  # fmt: skip


def stop_device(device: subprocess.Popen[str]) -> None:
    if device.poll() is None:
        device.kill()
        device.communicate(timeout=10)


def device_done(device: subprocess.Popen[str], scenario: Path) -> str:
    out = device.communicate(timeout=45)[0]
    trace = scenario.with_suffix(".msg")
    messages = trace.read_text(errors="replace") if trace.exists() else ""
    assert device.returncode == 0, out[-3000:] + messages[-4000:]
    return messages


async def stream_from(node: Node) -> tuple[UdpConsumer, dict[str, Any]]:
    """A viewer's stream of CH at ``node`` (POST /streams): the viewer's receiver and the answer."""
    receiver = await UdpConsumer.start()
    body = {"channel_id": CH, "consumer": {"transport": "udp", "host": "127.0.0.1", "port": receiver.port}}
    status, started = await asyncio.to_thread(http, node, "POST", "/streams", body)
    assert status == 201, started
    return receiver, started


async def play_and_decode(tmp_path: Path, node: Node, port: int) -> str:
    """A viewer's stream of CH at ``node``: the device on ``port`` takes the INVITE, real H.264 in PS
    sent to the stream reaches the viewer and decodes, the viewer leaves and the node's BYE reaches
    the device. What the device received and sent."""
    scenario = invite_scenario(tmp_path, f"invite-{node.name}", then=sipp_scenario("parts/bye_from_gateway.xml"))
    device = start_device(tmp_path, scenario, port)
    receiver: UdpConsumer | None = None
    try:
        await asyncio.sleep(0.3)  # let it bind
        receiver, started = await stream_from(node)
        ps = gb_ps(FRAMES, GOP)
        packets = packetize(ps, DEVICE_SSRC, mtu=1000)
        await send_udp(packets, started["port"])
        await wait_for(lambda: len(receiver.got.packets) == len(packets), 10)
        assert decode_h264(receiver.got.payload()) == FRAMES
        consumer = started["consumer"]["id"]
        status, _ = await asyncio.to_thread(http, node, "DELETE", f"/streams/{started['id']}/consumers/{consumer}")
        assert status in (200, 204)
        return await asyncio.to_thread(device_done, device, scenario)
    finally:
        if receiver is not None:
            receiver.close()
        stop_device(device)


async def test_devices_spread_by_the_from_user_hash_and_are_reached_through_the_front(
    tmp_path: Path, redis: RedisServer
) -> None:
    with front_cluster(tmp_path, redis) as (front, nodes):
        port = free_udp_port()
        await asyncio.to_thread(register, tmp_path, front, nodes, [MEDIA], port=port)
        await asyncio.to_thread(register, tmp_path, front, nodes, DEVICES[1:])
        online = {n.name: n.online() for n in nodes}
        assert all(online.values()), online  # both nodes got some
        assert sorted(d for s in online.values() for d in s) == sorted(DEVICES)  # each online exactly once
        # the hash is Kamailio's over the From user: the devices of one node are those of one residue
        residues: dict[int, set[str]] = {}
        for device in DEVICES:
            residues.setdefault(ds_hash(device) % 2, set()).add(device)
        assert sorted(map(sorted, residues.values())) == sorted(map(sorted, online.values()))
        # what the owner keeps: the front's address, and the front's Path naming the device's
        owner = owner_of(MEDIA, nodes)
        rows = owner.cli("devices")
        assert isinstance(rows, list)
        (row,) = [r for r in rows if r["device_id"] == MEDIA]
        assert (row["host"], row["port"]) == ("127.0.0.1", front.port)
        assert row["path"].startswith(f"<sip:127.0.0.1:{front.port};lr;received=") and str(port) in row["path"]

        # the node's Catalog and DeviceInfo queries reach the device through the front, and its
        # answers (sent to the front, where the queries came from) reach the node
        traces = ""
        for what, body, path in (
            ("Catalog", CATALOG, f"/devices/{MEDIA}/catalog"),
            ("DeviceInfo", DEVICE_INFO, f"/devices/{MEDIA}/info"),
        ):
            scenario = query_scenario(tmp_path, what, body)
            device = start_device(tmp_path, scenario, port)
            try:
                await asyncio.sleep(0.3)  # let it bind
                status, got = await asyncio.to_thread(http, owner, "POST" if what == "Catalog" else "GET", path)
                assert status == 200, got
                traces += await asyncio.to_thread(device_done, device, scenario)
            finally:
                stop_device(device)
            if what == "Catalog":
                assert (got["channels"], got["complete"]) == (1, True)
            else:
                assert "IPC-2016" in json.dumps(got)
        # a viewer's stream: the INVITE reaches the device through the front, the media decodes
        messages = traces + await play_and_decode(tmp_path, owner, port)
        # the device saw requests naming its own address (as if it had registered directly), and
        # the ACK and BYE came through the front
        assert f"MESSAGE sip:{MEDIA}@127.0.0.1:{port} SIP/2.0" in messages
        assert f"INVITE sip:{CH}@127.0.0.1:{port} SIP/2.0" in messages
        assert messages.count(f"Record-Route: <sip:127.0.0.1:{front.port};lr") >= 1


async def test_a_killed_nodes_devices_come_online_at_the_survivor_and_its_dialog_gets_408(
    tmp_path: Path, redis: RedisServer
) -> None:
    await seed_channel(redis, MEDIA, CH)  # the node MEDIA registers at loads it
    with front_cluster(tmp_path, redis) as (front, nodes):
        port = free_udp_port()
        await asyncio.to_thread(register, tmp_path, front, nodes, [MEDIA], port=port)
        await asyncio.to_thread(register, tmp_path, front, nodes, DEVICES[1:])
        victim = owner_of(MEDIA, nodes)
        (survivor,) = [n for n in nodes if n is not victim]
        orphans = victim.online()
        kept = survivor.online()
        # the device streaming from the victim sends its BYE in the dialog 3 s after the ACK: by
        # then its node is dead, and the front, finding nobody there, answers 408
        bye = sipp_scenario("parts/bye_from_device_routed.xml", ch=CH, pause=3000, status=408)
        scenario = invite_scenario(tmp_path, "invite", then=bye)
        device = start_device(tmp_path, scenario, port)
        receiver: UdpConsumer | None = None
        try:
            await asyncio.sleep(0.3)
            receiver, _ = await stream_from(victim)
            victim.proc.kill()  # no goodbye
            victim.proc.wait(timeout=10)
            await asyncio.to_thread(device_done, device, scenario)
        finally:
            if receiver is not None:
                receiver.close()
            stop_device(device)
        # the front's probes take the dead node out: a request from an orphan reaches the survivor
        probe = sorted(orphans)[0]
        until(
            lambda: first_line(sip_answer(front.port, "OPTIONS", probe, timeout=3)) == "SIP/2.0 200 OK",
            20,
            "the front sending an orphan's OPTIONS to the survivor",
        )
        # its devices' keepalives now reach the survivor, which does not serve them: 404, which
        # makes a device register again (GB/T 28181 §9.6)
        answered = sip_answer(front.port, "MESSAGE", probe, timeout=5, body=keepalive(probe))
        assert first_line(answered) == "SIP/2.0 404 Not Found", answered
        # so they register again through the front and are served there; nobody else moved
        await asyncio.to_thread(register, tmp_path, front, nodes, [MEDIA], port=port)  # from its port, as before
        await asyncio.to_thread(register, tmp_path, front, nodes, sorted(orphans - {MEDIA}))
        assert survivor.online() == kept | orphans == set(DEVICES)

        def owner(device: str) -> str:
            value = redis.command(b"HGET", b"gbgw:owner", device.encode())
            return value.decode() if value is not None else ""

        until(lambda: all(owner(d).endswith(f" {survivor.name}") for d in orphans), 10, "the survivor's claims")
        for device_id in orphans:
            kinds = [e for e in events(redis) if e["device"] == device_id and e["event"] == "online"]
            assert kinds[-1]["node"] == survivor.name
        # the device whose stream was cut is streamed from again, at the survivor, through the front
        await play_and_decode(tmp_path, survivor, port)


def test_a_front_with_no_live_node_answers_503_and_a_later_attempt_reaches_the_node_again(
    tmp_path: Path, redis: RedisServer
) -> None:
    with front_cluster(tmp_path, redis) as (front, nodes):
        for node in nodes:
            node.proc.kill()
            node.proc.wait(timeout=10)
        # the first REGISTER may still be sent to a dead node: it times out there and fails over to
        # the other, dead too; from then on both are out of the set and the answer is at once
        answer_ = sip_answer(front.port, "REGISTER", MEDIA, timeout=3 * PROBE_MS / 1000 + 5)
        assert first_line(answer_).startswith("SIP/2.0 503 "), answer_
        assert "\r\nRetry-After: 30\r\n" in (answer_ or "")
        assert first_line(sip_answer(front.port, "REGISTER", MEDIA, timeout=5)).startswith("SIP/2.0 503 ")
        # a node started again where it was: the front's probe finds it, and the device's next
        # attempt is challenged by it
        again = start_node(tmp_path, "n1", redis, sip=nodes[0].sip)
        nodes.append(again)
        wait_ready(again.admin, again.proc)
        until(
            lambda: first_line(sip_answer(front.port, "REGISTER", MEDIA, timeout=3)).startswith("SIP/2.0 401 "),
            20,
            "the front sending a REGISTER to the node started again",
        )
