"""A stranger's wrong passwords do not lock out the device at its own address (issue 10, defect 4)."""

from __future__ import annotations

import asyncio
import socket

from gb28181gw.sip.auth import Challenge, authorization_for
from gb28181gw.sip.message import Response, parse_message
from tests.hostile.conftest import start_gateway
from tests.hostile.test_persistence import register

DEVICE = "34020000001320000001"
URI = "sip:34020000002000000001@3402000000"


def attempt(port: int, device_id: str, password: str, n: int, source: str = "127.0.0.1") -> int:
    """REGISTER, and answer its challenge with ``password``: the final status."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(5)
        s.sendto(register(device_id, n), ("127.0.0.1", port))
        first = parse_message(s.recv(65535))
        assert isinstance(first, Response)
        if first.status != 401:
            return first.status
        ch = Challenge.parse(first.headers["www-authenticate"])
        creds = authorization_for(ch, method="REGISTER", uri=URI, username=device_id, password=password)
        retry = register(device_id, n + 1000).replace(
            b"Content-Length: 0", f"Authorization: {creds.serialize()}\r\nContent-Length: 0".encode()
        )
        s.sendto(retry, ("127.0.0.1", port))
        answer = parse_message(s.recv(65535))
        assert isinstance(answer, Response)
        return answer.status


def wrong_realm(port: int, n: int) -> bytes:
    bogus = register(DEVICE, n).replace(
        b"Content-Length: 0",
        b'Authorization: Digest username="34020000001320000001", realm="1", nonce="x", uri="sip:x", '
        b'response="0"\r\nContent-Length: 0',
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.3", 0))
        s.settimeout(5)
        s.sendto(bogus, ("127.0.0.1", port))
        return s.recv(65535)


async def test_a_strangers_wrong_passwords_do_not_lock_out_the_camera() -> None:
    gw = await start_gateway(**{"registrar.password": "12345678", "registrar.max_auth_failures": "3"})
    try:
        port = gw.stack.port
        # the stranger on another address guesses, with a wrong realm too (which needs no nonce)
        stranger = [await asyncio.to_thread(attempt, port, DEVICE, "guess", n, "127.0.0.2") for n in range(6)]
        assert stranger[:2] == [401, 401] and set(stranger[2:]) == {403}
        for n in range(50, 60):
            assert (await asyncio.to_thread(wrong_realm, port, n)).startswith(b"SIP/2.0 403")
        # the camera at its own address registers at once
        assert await asyncio.to_thread(attempt, port, DEVICE, "12345678", 100) == 200
        assert gw.registrar.devices[DEVICE].host == "127.0.0.1"
    finally:
        await gw.stop()
