"""The address we tell each device is the one it reached us at (issue 11, defect 1).

A gateway listening on 0.0.0.0 serves devices that reach it at different local addresses:
127.0.0.1, 127.0.0.2 and 127.0.0.3 (Linux loopback answers the whole 127/8), and a device in
a network namespace on the far side of a veth pair. Each must see its own address in the Via
and Contact of our requests and in the ``c=``/``o=`` of our INVITE's SDP, must get our answers
from that address, and the media it sends there must be relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gb28181gw.admin.streams import stream_json
from gb28181gw.app import Gateway
from gb28181gw.gb.model import Channel
from gb28181gw.net.addresses import RouteCache
from gb28181gw.sip.peer import Peer
from tests.helpers import media_port
from tests.media import UdpConsumer, gb_ps, packetize, wait_for
from tests.process import free_port

from .conftest import require_sipp, sipp_scenario, start_gateway
from .test_devices import finished
from .test_streams import WE_BYE

pytestmark = pytest.mark.sipp

GW = "34020000002000000001"


def _nvr(n: int) -> str:
    return f"3402000000118000{n:04d}"


def _channel(n: int) -> str:
    return f"3402000000131000{n:04d}"


async def wildcard_gateway() -> Gateway:
    return await start_gateway(
        **{
            "sip.listen": "0.0.0.0",
            "sip.port": str(free_port()),
            "media.port_min": str(media_port(100)),
            "media.port_max": str(media_port(199)),
            "media.linger": "0",
        }
    )


def sipp_argv(scenario: Path, *, local: str, port: int, target: str | None, netns: str | None) -> list[str]:
    argv = [require_sipp(), "-sf", str(scenario), *([target] if target else []), "-i", local, "-p", str(port)]
    argv += ["-m", "1", "-timeout", "15s", "-timeout_error", "-nostdin", "-trace_msg"]
    argv += ["-message_file", str(scenario.with_suffix(".msg"))]
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


async def sipp(
    scenario: str, tmp_path: Path, name: str, *, local: str, port: int, target: str | None = None,
    netns: str | None = None,
) -> asyncio.subprocess.Process:  # fmt: skip
    path = tmp_path / f"{name}.xml"
    path.write_text(scenario)
    proc = await asyncio.create_subprocess_exec(
        *sipp_argv(path, local=local, port=port, target=target, netns=netns),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    if target is None:
        await asyncio.sleep(0.3)  # a UAS: let it bind
    return proc


def invite_checks(reached: str, sip_port: int) -> str:
    """SIPp checks on our INVITE: every address in it is ``reached``, the one the device sent to."""
    a = re.escape(reached)
    return f"""<ereg regexp="Via: SIP/2.0/UDP {a}:{sip_port};" search_in="msg" check_it="true" assign_to="via"/>
      <ereg regexp="Contact: .sip:{GW}@{a}:{sip_port}." search_in="msg" check_it="true" assign_to="contact"/>
      <ereg regexp="o={GW} 0 0 IN IP4 {a}[^0-9.]" search_in="body" check_it="true" assign_to="origin"/>
      <ereg regexp="c=IN IP4 {a}[^0-9.]" search_in="body" check_it="true" assign_to="conn"/>"""


def device_answer(channel: str) -> str:
    lines = ["v=0", f"o={channel} 0 0 IN IP4 [local_ip]", "s=Play", "c=IN IP4 [local_ip]", "t=0 0"]
    lines += ["m=video 15060 RTP/AVP 96", "a=sendonly", "a=rtpmap:96 PS/90000", "y=[$y]", "f="]
    return "\r\n".join(lines) + "\r\n"


def invite_scenario(channel: str, reached: str, sip_port: int) -> str:
    checks = invite_checks(reached, sip_port)
    checks += '\n      <ereg regexp="y=(0[0-9]{9})" search_in="body" check_it="true" assign_to="all,y"/>'
    return sipp_scenario(
        "invite_uas.xml",
        checks=checks,
        ch=channel,
        answer=device_answer(channel),
        then=WE_BYE,
        refs="via,contact,origin,conn,all,y",
    )


async def play_and_relay(
    gw: Gateway, tmp_path: Path, n: int, *, device: str, reached: str, netns: str | None = None
) -> None:
    """Device ``n`` at ``device`` reaches the gateway at ``reached``: it registers, answers our INVITE
    (SIPp checks the addresses in it) and sends media to where the SDP said; a consumer gets it."""
    nvr, channel, port = _nvr(n), _channel(n), free_port()
    register = sipp_scenario("register_uac.xml", device=nvr, expires=3600)
    proc = await sipp(
        register, tmp_path, f"register{n}", local=device, port=port, target=f"{reached}:{gw.stack.port}", netns=netns
    )
    await finished(proc)
    assert gw.registrar.devices[nvr].host == device
    gw.devices.channels.setdefault(nvr, {})[channel] = Channel(channel, nvr)  # as its catalog would have it
    uas = await sipp(invite_scenario(channel, reached, gw.stack.port), tmp_path, f"invite{n}", local=device, port=port,
                     netns=netns)  # fmt: skip
    consumer = await UdpConsumer.start()
    try:
        st, c = await gw.streams.play(channel, transport="udp", host="127.0.0.1", port=consumer.port)
        assert stream_json(gw.streams, st)["media_address"] == reached
        packets = packetize(gb_ps(10, 5), int(st.session.ssrc), mtu=600)
        await send_media(packets, device, reached, st.port, netns, tmp_path)
        await wait_for(lambda: len(consumer.got.packets) == len(packets))
        await gw.streams.remove_consumer(st.id, c.id)  # linger 0: BYE
        await finished(uas)
    finally:
        consumer.close()
        if uas.returncode is None:
            uas.kill()


async def send_media(packets: list[bytes], source: str, dest: str, port: int, netns: str | None, tmp: Path) -> None:
    """The device's RTP, from its own address to where our SDP told it to send."""
    if netns is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            for p in packets:
                s.sendto(p, (dest, port))
                await asyncio.sleep(0.001)
        return
    blob = tmp / "rtp.bin"
    blob.write_bytes(b"".join(len(p).to_bytes(2, "big") + p for p in packets))
    code = (
        "import socket,sys,time\n"
        "d=open(sys.argv[1],'rb').read(); s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind((sys.argv[2],0)); i=0\n"
        "while i<len(d):\n"
        " n=int.from_bytes(d[i:i+2],'big'); s.sendto(d[i+2:i+2+n],(sys.argv[3],int(sys.argv[4]))); i+=2+n; time.sleep(0.001)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, sys.executable, "-c", code, str(blob), source, dest, str(port)
    )  # fmt: skip
    assert await proc.wait() == 0


async def test_each_device_is_told_the_address_it_reached_us_at(tmp_path: Path) -> None:
    gw = await wildcard_gateway()
    try:
        await play_and_relay(gw, tmp_path, 1, device="127.0.0.1", reached="127.0.0.1")
        await play_and_relay(gw, tmp_path, 2, device="127.0.0.2", reached="127.0.0.2")
        # the same device host reaching us at another address is told that one
        await play_and_relay(gw, tmp_path, 3, device="127.0.0.1", reached="127.0.0.4")
    finally:
        await gw.stop()


def _message_via(data: bytes) -> str:
    text = data.decode(errors="replace")
    assert text.startswith("MESSAGE "), text
    return re.search(r"^Via: (.*)$", text, re.M)[1]  # type: ignore[index]


def _register(device: str, host: str, port: int, transport: str) -> bytes:
    return (
        f"REGISTER sip:{GW}@3402000000 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {host}:{port};rport;branch=z9hG4bK{port}{transport}\r\n"
        f"From: <sip:{device}@3402000000>;tag=r{port}\r\nTo: <sip:{device}@3402000000>\r\n"
        f"Call-ID: reg{port}{transport}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{device}@{host}:{port}>\r\n"
        "Max-Forwards: 70\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def test_answers_and_requests_leave_from_the_address_the_device_reached(tmp_path: Path) -> None:
    # over UDP the kernel would answer 127.0.0.3 from 127.0.0.1 (its route's source): a device
    # that checks where answers come from must see the address it sent to
    gw = await wildcard_gateway()
    loop = asyncio.get_running_loop()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.3", 0))
    udp.setblocking(False)
    try:
        port = udp.getsockname()[1]
        await loop.sock_sendto(udp, _register(_nvr(5), "127.0.0.3", port, "UDP"), ("127.0.0.3", gw.stack.port))
        answer, source = await asyncio.wait_for(loop.sock_recvfrom(udp, 65535), 5)
        assert answer.startswith(b"SIP/2.0 200 ")
        assert source == ("127.0.0.3", gw.stack.port)
        query = asyncio.ensure_future(gw.devices.device_info(_nvr(5)))
        message, source = await asyncio.wait_for(loop.sock_recvfrom(udp, 65535), 5)
        assert _message_via(message).startswith(f"SIP/2.0/UDP 127.0.0.3:{gw.stack.port};")
        assert source == ("127.0.0.3", gw.stack.port)
        query.cancel()
        subscribe = asyncio.ensure_future(gw.subscriptions.subscribe(_nvr(5), "catalog"))
        request, _ = await asyncio.wait_for(loop.sock_recvfrom(udp, 65535), 5)
        assert request.startswith(b"SUBSCRIBE ")
        assert f"Via: SIP/2.0/UDP 127.0.0.3:{gw.stack.port};".encode() in request
        assert f"Contact: <sip:{GW}@127.0.0.3:{gw.stack.port}>".encode() in request
        subscribe.cancel()

        # over TCP: the connection's local end
        reader, writer = await asyncio.open_connection("127.0.0.5", gw.stack.port, local_addr=("127.0.0.6", 0))
        tcp_port = writer.get_extra_info("sockname")[1]
        writer.write(_register(_nvr(6), "127.0.0.6", tcp_port, "TCP"))
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"SIP/2.0 200 ")
        query = asyncio.ensure_future(gw.devices.device_info(_nvr(6)))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert _message_via(head).startswith(f"SIP/2.0/TCP 127.0.0.5:{gw.stack.port};")
        query.cancel()
        writer.close()
        # a device we have not heard from yet: the address routing picks toward it
        assert gw.stack.local_address(Peer("UDP", "127.0.0.7", 5060)) == ("127.0.0.1", gw.stack.port)
    finally:
        udp.close()
        await gw.stop()


async def test_a_device_record_shows_the_address_it_is_told(tmp_path: Path) -> None:
    # `device show` (local_host, local_port): what the installer compares with the camera's settings
    gw = await wildcard_gateway()
    loop = asyncio.get_running_loop()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.3", 0))
    udp.setblocking(False)
    try:
        port = udp.getsockname()[1]
        await loop.sock_sendto(udp, _register(_nvr(8), "127.0.0.3", port, "UDP"), ("127.0.0.4", gw.stack.port))
        answer, _ = await asyncio.wait_for(loop.sock_recvfrom(udp, 65535), 5)
        assert answer.startswith(b"SIP/2.0 200 ")
        device = gw.registrar.devices[_nvr(8)]
        assert (device.local_host, device.local_port) == ("127.0.0.4", gw.stack.port)
        await gw.registrar.flush()
        stored = await gw.registrar.store.get_device(_nvr(8))
        assert stored is not None and (stored.local_host, stored.local_port) == ("127.0.0.4", gw.stack.port)
    finally:
        udp.close()
        await gw.stop()


async def test_advertised_address_and_media_address_still_win(tmp_path: Path) -> None:
    gw = await start_gateway(
        **{"sip.listen": "0.0.0.0", "sip.advertised_address": "192.0.2.10", "media.address": "192.0.2.20"}
    )
    try:
        assert gw.stack.local_address(Peer("UDP", "127.0.0.2", 5060)) == ("192.0.2.10", gw.stack.port)
        assert gw.streams.settings.address == "192.0.2.20"
    finally:
        await gw.stop()
    gw = await start_gateway(**{"sip.listen": "0.0.0.0", "sip.advertised_address": "192.0.2.10"})
    try:
        assert gw.streams.settings.address == "192.0.2.10"  # media follows the advertised address
        assert gw.status()["sip"]["advertised"] == "192.0.2.10"
    finally:
        await gw.stop()
    # a relay bound to one address receives nowhere else: that is the address devices are told
    gw = await start_gateway(**{"sip.listen": "0.0.0.0", "media.listen": "127.0.0.1"})
    try:
        assert gw.streams.settings.address == "127.0.0.1"
        assert gw.stack.local_address(Peer("UDP", "127.0.0.2", 5060)) == ("127.0.0.1", gw.stack.port)  # routed
        assert gw.status()["sip"]["advertised"] == "per device"
    finally:
        await gw.stop()


# --- a device in another network namespace, over a veth pair ------------------------------------


@contextlib.contextmanager
def veth_namespace() -> Iterator[tuple[str, str, str]]:
    """A network namespace joined to ours by a veth pair: (namespace, our address, its address).

    Fails without ``ip`` (``.ci/run`` installs iproute2, as it installs SIPp); skips the test, saying
    why, only where namespaces cannot be made at all (not root, a container without CAP_SYS_ADMIN /
    CAP_NET_ADMIN).
    """
    if shutil.which("ip") is None:
        pytest.fail("no `ip` command: .ci/run installs it (apt-get install iproute2)")
    tag = os.getpid() % 100_000
    ns, ours, theirs = f"gbgw{tag}", f"gbv{tag}a", f"gbv{tag}b"
    net = f"10.231.{tag % 250}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        for argv in (
            ["ip", "link", "add", ours, "type", "veth", "peer", "name", theirs],
            ["ip", "link", "set", theirs, "netns", ns],
            ["ip", "addr", "add", f"{net}.1/24", "dev", ours],
            ["ip", "link", "set", ours, "up"],
            ["ip", "-n", ns, "addr", "add", f"{net}.2/24", "dev", theirs],
            ["ip", "-n", ns, "link", "set", theirs, "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
        ):
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot set up a veth pair here ({' '.join(argv)}): {done.stderr.strip()}")
        yield ns, f"{net}.1", f"{net}.2"
    finally:
        subprocess.run(["ip", "link", "del", ours], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


async def test_device_in_another_network_namespace(tmp_path: Path) -> None:
    with veth_namespace() as (ns, ours, theirs):
        assert RouteCache().source_for(theirs) == ours  # first contact: the routed source address
        gw = await wildcard_gateway()
        try:
            await play_and_relay(gw, tmp_path, 8, device=theirs, reached=ours, netns=ns)
        finally:
            await gw.stop()


async def test_media_timeout_is_a_warning_naming_where_the_device_was_told_to_send(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await start_gateway(
        **{"sip.listen": "0.0.0.0", "sip.port": str(free_port()), "media.port_min": str(media_port(200)),
           "media.port_max": str(media_port(299)), "media.rtp_timeout": "1"}
    )  # fmt: skip
    nvr, channel, port = _nvr(9), _channel(9), free_port()
    consumer = await UdpConsumer.start()
    try:
        proc = await sipp(
            sipp_scenario("register_uac.xml", device=nvr, expires=3600), tmp_path, "register9",
            local="127.0.0.2", port=port, target=f"127.0.0.2:{gw.stack.port}",
        )  # fmt: skip
        await finished(proc)
        gw.devices.channels.setdefault(nvr, {})[channel] = Channel(channel, nvr)
        uas = await sipp(invite_scenario(channel, "127.0.0.2", gw.stack.port), tmp_path, "invite9", local="127.0.0.2",
                         port=port)  # fmt: skip
        with caplog.at_level("WARNING", logger="gb28181gw.streams"):
            st, _ = await gw.streams.play(channel, transport="udp", host="127.0.0.1", port=consumer.port)
            await finished(uas)  # no RTP at all for 1 s: BYE
        (record,) = [r for r in caplog.records if r.getMessage() == "media timeout"]
        assert record.levelname == "WARNING"
        assert record.told_to_send_to == f"127.0.0.2:{st.port} (udp)"  # type: ignore[attr-defined]
        assert record.reason.startswith("no RTP at all for ")  # type: ignore[attr-defined]
    finally:
        consumer.close()
        await gw.stop()


async def test_ipv6_contact_is_bracketed() -> None:
    gw = await start_gateway(**{"sip.listen": "0.0.0.0,::"})
    try:
        assert gw.stack.contact(GW, Peer("UDP", "::1", 5060)) == f"sip:{GW}@[::1]:{gw.stack.port}"
        assert gw.stack.contact(GW, Peer("UDP", "127.0.0.9", 5060)) == f"sip:{GW}@127.0.0.1:{gw.stack.port}"
    finally:
        await gw.stop()


async def test_several_listen_addresses_each_device_is_served_on_the_one_it_reached() -> None:
    # two sockets of one family: answers and requests to a device leave from the one it sent to
    # (they used to leave from the first, 127.0.0.1, whatever the device had reached)
    gw = await start_gateway(**{"sip.listen": "127.0.0.1,127.0.0.2", "sip.port": str(free_port())})
    loop = asyncio.get_running_loop()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.2", 0))
    udp.setblocking(False)
    try:
        assert gw.status()["sip"]["advertised"] == "per device"
        port = udp.getsockname()[1]
        await loop.sock_sendto(udp, _register(_nvr(10), "127.0.0.2", port, "UDP"), ("127.0.0.2", gw.stack.port))
        answer, source = await asyncio.wait_for(loop.sock_recvfrom(udp, 65535), 5)
        assert answer.startswith(b"SIP/2.0 200 ") and source == ("127.0.0.2", gw.stack.port)
        query = asyncio.ensure_future(gw.devices.device_info(_nvr(10)))
        message, source = await asyncio.wait_for(loop.sock_recvfrom(udp, 65535), 5)
        assert _message_via(message).startswith(f"SIP/2.0/UDP 127.0.0.2:{gw.stack.port};")
        assert source == ("127.0.0.2", gw.stack.port)
        query.cancel()
    finally:
        udp.close()
        await gw.stop()
