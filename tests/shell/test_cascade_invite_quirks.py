"""A superior's INVITE written its own way (issue 12 item 5), served rather than refused, over real sockets.

Superiors in the field fill Subject with an ID of their own while the Request-URI names the
channel, send a ``y=`` that is no GB SSRC (9 or 11 digits), or name their media host instead
of its address: none of these is a reason to leave the screen black.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.sdp import SessionDescription
from gb28181gw.sip.message import Response
from tests.media import wait_for

from .test_cascade_invite import CH, SUPERIOR, RawSuperior, cascade_gateway, offer, sending, with_device
from .test_cascade_invite_review import in_dialog
from .test_devices import finished
from .test_streams import answer, scenario

pytestmark = pytest.mark.sipp

UNKNOWN = "34020000001310009999"


async def served(gw: Gateway, body: str, *, subject: str) -> tuple[Response, RawSuperior, asyncio.DatagramTransport]:
    """Send the INVITE from a bare UDP superior; its final answer, ACKed when 2xx."""
    loop = asyncio.get_running_loop()
    transport, sup = await loop.create_datagram_endpoint(RawSuperior, local_addr=("127.0.0.1", 0))
    in_dialog(sup, gw.stack.port, "INVITE", "quirk", 20, "", body, subject=subject)
    await wait_for(lambda: sup.final("quirk") is not None, 10)
    reply = sup.final("quirk")
    assert reply is not None
    if reply.status == 200:
        sup.send(gw, "ACK", "quirk", to_tag=reply.to.tag or "")
    return reply, sup, transport


@pytest.mark.parametrize(
    ("case", "body", "subject"),
    [
        # Subject names an ID we do not have; the Request-URI names the channel
        ("subject-of-its-own", offer(30000), f"{UNKNOWN}:0100000077,{SUPERIOR}:0"),
        # y= of 9 digits: we send with our own SSRC and say so in our y=
        ("y-of-9-digits", offer(30000, ssrc="123456789"), f"{CH}:0100000077,{SUPERIOR}:0"),
        # its media host by name, resolved once (not by the relay at every packet)
        (
            "host-by-name",
            offer(30000).replace("c=IN IP4 127.0.0.1", "c=IN IP4 localhost"),
            f"{CH}:0100000077,{SUPERIOR}:0",
        ),
    ],
)
async def test_quirky_invite_is_served(tmp_path: Path, case: str, body: str, subject: str) -> None:
    gw = await cascade_gateway(tmp_path)
    device = await with_device(gw, tmp_path, scenario(answer()))
    assert device is not None
    transport: asyncio.DatagramTransport | None = None
    try:
        reply, _, transport = await served(gw, body, subject=subject)
        assert reply.status == 200, (case, reply.status, reply.headers.get("warning"))
        await wait_for(lambda: sending(gw), 5)
        (st,) = gw.streams.streams.values()
        (consumer,) = st.consumers.values()
        assert (consumer.host, consumer.port) == ("127.0.0.1", 30000)
        ours = SessionDescription.parse(reply.body)
        assert ours.ssrc is not None and int(ours.ssrc) == consumer.ssrc  # what RTP carries, told
        if case == "y-of-9-digits":
            assert ours.ssrc != "123456789" and len(ours.ssrc) == 10
    finally:
        await gw.stop()
        if transport is not None:
            transport.close()
    await finished(device)
