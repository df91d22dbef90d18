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

from .test_devices import finished, free_udp_port, play_device

pytestmark = pytest.mark.sipp

CH = "34020000001310000001"
NVR = "34020000001180000001"

DEVICE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="device answering a live INVITE">
  <recv request="INVITE">
    <action>
      <ereg regexp="Subject: {ch}:0200000001,34020000002000000001:0" search_in="msg" check_it="true" assign_to="subject"/>
      <ereg regexp="y=0200000001" search_in="body" check_it="true" assign_to="y"/>
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 100 Trying
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]dev
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{ch}@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o={ch} 0 0 IN IP4 [local_ip]
s=Play
c=IN IP4 [local_ip]
t=0 0
m=video 15060 RTP/AVP 96
a=sendonly
a=rtpmap:96 PS/90000
y=0200000042
f=
]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <Reference variables="subject,y"/>
</scenario>
"""


async def test_play_session_against_sipp(gateway: Gateway, tmp_path: Path) -> None:
    port = free_udp_port()
    proc = await play_device(DEVICE.format(ch=CH).encode(), port, tmp_path, "invite")
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
