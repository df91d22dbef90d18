"""A stranger cannot move a registered device by sending MESSAGEs in its name (issue 10, defect 2)."""

from __future__ import annotations

import asyncio
import socket

from gb28181gw.app import Gateway
from tests.helpers import KEEPALIVE_BODY
from tests.hostile.test_persistence import register
from tests.shell.test_registrar import _message

DEVICE = "34020000001320000001"
ALARM_BODY = (
    b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>9</SN>\r\n'
    b"<DeviceID>34020000001320000001</DeviceID>\r\n<AlarmPriority>1</AlarmPriority>\r\n<AlarmMethod>2</AlarmMethod>"
    b"\r\n<AlarmTime>2026-12-02T10:00:00</AlarmTime>\r\n</Notify>\r\n"
)


class Peer:
    """A UDP socket on one loopback address: the camera, or a stranger."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]

    def exchange(self, gw_port: int, data: bytes) -> bytes:
        self.sock.sendto(data, ("127.0.0.1", gw_port))
        return self.sock.recv(65535)

    def close(self) -> None:
        self.sock.close()


async def test_a_strangers_keepalive_and_alarm_leave_the_device_where_it_was(gateway: Gateway) -> None:
    port = gateway.stack.port
    camera, stranger = Peer("127.0.0.1"), Peer("127.0.0.2")
    try:
        assert (await asyncio.to_thread(camera.exchange, port, register(DEVICE, 1))).startswith(b"SIP/2.0 200")
        for n, body in enumerate((KEEPALIVE_BODY, ALARM_BODY)):
            answer = await asyncio.to_thread(stranger.exchange, port, _message(DEVICE, body, f"z9hG4bKs{n}"))
            assert answer.startswith(b"SIP/2.0 404") and b"register again" in answer
        device = gateway.registrar.devices[DEVICE]
        assert (device.host, device.port) == ("127.0.0.1", camera.port)
        await asyncio.sleep(0.2)
        assert await gateway.store.load_alarms() == []
        # the camera itself is still served, and its alarms are kept
        for n, body in enumerate((KEEPALIVE_BODY, ALARM_BODY)):
            answer = await asyncio.to_thread(camera.exchange, port, _message(DEVICE, body, f"z9hG4bKc{n}"))
            assert answer.startswith(b"SIP/2.0 200")
        for _ in range(50):
            if await gateway.store.load_alarms():
                break
            await asyncio.sleep(0.05)
        assert [a.reported_by for a in await gateway.store.load_alarms()] == [DEVICE]
    finally:
        camera.close()
        stranger.close()


def _notify(to_tag: str, branch: str) -> bytes:
    body = (
        b'<?xml version="1.0"?><Notify><CmdType>Catalog</CmdType><SN>5</SN><DeviceID>34020000001320000001</DeviceID>'
        b'<SumNum>1</SumNum><DeviceList Num="1"><Item><DeviceID>34020000001310000001</DeviceID><Event>DEL</Event>'
        b"</Item></DeviceList></Notify>"
    )
    to = f"<sip:34020000002000000001@3402000000>{';tag=' + to_tag if to_tag else ''}"
    head = (
        f"NOTIFY sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;rport;branch={branch}\r\n"
        f"From: <sip:{DEVICE}@3402000000>;tag=n1\r\nTo: {to}\r\nCall-ID: {branch}@127.0.0.1\r\nCSeq: 3 NOTIFY\r\n"
        f"Event: Catalog\r\nSubscription-State: active\r\nContent-Type: Application/MANSCDP+xml\r\n"
        f"Max-Forwards: 70\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def test_a_notify_outside_our_subscription_dialogs_changes_no_channel(gateway: Gateway) -> None:
    from gb28181gw.gb.model import Channel

    port = gateway.stack.port
    camera = Peer("127.0.0.1")
    try:
        assert (await asyncio.to_thread(camera.exchange, port, register(DEVICE, 1))).startswith(b"SIP/2.0 200")
        gateway.devices.channels[DEVICE] = {"34020000001310000001": Channel("34020000001310000001", DEVICE, "gate")}
        # even from the registered device's own address: no To tag, or a tag of no dialog of ours
        for n, tag in enumerate(("", "forged")):
            answer = await asyncio.to_thread(camera.exchange, port, _notify(tag, f"z9hG4bKn{n}"))
            assert answer.startswith(b"SIP/2.0 481")
        assert "34020000001310000001" in gateway.devices.channels[DEVICE]
    finally:
        camera.close()
