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
