"""A live-play INVITE session against SIPp playing the device: INVITE, 100, 200 with SDP, ACK, BYE."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.gb.model import Device
from gb28181gw.gb.session import PlaySession, PlayState, invite
from gb28181gw.sdp import StreamMode
from gb28181gw.sip.endpoint import Peer

from .conftest import sipp_scenario
from .test_devices import finished, free_udp_port, play_device
from .test_streams import answer

pytestmark = pytest.mark.sipp

CH = "34020000001310000001"
NVR = "34020000001180000001"

CHECKS = f"""<ereg regexp="Subject: {CH}:0200000001,34020000002000000001:0" search_in="msg" check_it="true" assign_to="subject"/>
      <ereg regexp="y=0200000001" search_in="body" check_it="true" assign_to="y"/>"""
DEVICE = sipp_scenario(
    "invite_uas.xml",
    checks=CHECKS,
    ch=CH,
    answer=answer(ssrc="0200000042"),
    then=sipp_scenario("parts/bye_from_gateway.xml"),
    refs="subject,y",
)


async def test_play_session_against_sipp(gateway: Gateway, tmp_path: Path) -> None:
    port = free_udp_port()
    proc = await play_device(DEVICE.encode(), port, tmp_path, "invite")
    ep = gateway.endpoint
    s = PlaySession.start(
        CH,
        Device(NVR, transport="UDP", host="127.0.0.1", port=port),
        our_id="34020000002000000001",
        domain="3402000000",
        media_ip="127.0.0.1",
        port=30000,
        ssrc="0200000001",
        mode=StreamMode.UDP,
        call_id=ep.new_call_id(),
        local_tag=ep.new_tag(),
    )
    device = Peer("UDP", "127.0.0.1", port)
    req = invite(s, contact=f"sip:34020000002000000001@127.0.0.1:{gateway.stack.port}")
    resp = await gateway.stack.request(req, device)
    assert resp.status == 200
    ack = s.answered(resp)
    assert s.state is PlayState.ESTABLISHED and s.ssrc == "0200000042" and s.media_port == 15060
    ep.send_ack(ack, device)
    gateway.stack.pump()
    await asyncio.sleep(0.1)
    bye = await gateway.stack.request(s.bye(), device)
    assert bye.status == 200
    await finished(proc)  # SIPp saw the Subject, our y=, the ACK and the BYE
