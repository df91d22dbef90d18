"""The registrar against a real SIP stack: pjsua2 (PJSIP) registering with digest and heart-beating."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from gb28181gw.app import Gateway

from .conftest import start_gateway

pytestmark = pytest.mark.pjsua

SCRIPT = Path(__file__).with_name("pjsua_register.py")
DEVICE = "34020000001320000001"


async def run_pjsua(port: int, transport: str, password: str, keepalives: int = 0) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "127.0.0.1",
        str(port),
        transport,
        DEVICE,
        password,
        str(keepalives),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 40)
    text = out.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith(("REGISTER ", "MESSAGE "))]
    assert lines, text
    return lines


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("qop", ["false", "true"], ids=["no-qop", "qop-auth"])
async def test_pjsua2_registers_with_digest_and_sends_keepalives(transport: str, qop: str) -> None:
    gw = await start_gateway(**{"registrar.password": "12345678", "registrar.digest_qop": qop})
    try:
        lines = await run_pjsua(gw.stack.port, transport, "12345678", keepalives=2)
        assert lines == ["REGISTER 200", "MESSAGE 200", "MESSAGE 200"]
        device = gw.registrar.devices[DEVICE]
        assert device.transport == transport.upper()
        assert gw.registrar.keepalives[("ok",)] == 2
        assert device.last_keepalive > device.registered_at
        # pjsua2 unregisters when it shuts down (Expires: 0, challenged and answered like a REGISTER)
        assert gw.registrar.registrations["registered", "ok"] == 1
        assert gw.registrar.registrations["unregistered", "ok"] == 1
        assert not device.online and not device.registered
        assert device.offline_reason.startswith("unregistered")
    finally:
        await gw.stop()


async def test_pjsua2_wrong_password_is_not_registered() -> None:
    gw = await start_gateway(**{"registrar.password": "12345678"})
    try:
        lines = await run_pjsua(gw.stack.port, "udp", "not-the-password")
        assert lines[0] in ("REGISTER 401", "REGISTER 403")
        assert DEVICE not in gw.registrar.devices
        assert gw.registrar.auth_failures[("bad-password",)] >= 1
    finally:
        await gw.stop()


async def test_pjsua2_per_device_password(gateway: Gateway) -> None:
    await gateway.registrar.provision(DEVICE, password="own-secret")
    assert (await run_pjsua(gateway.stack.port, "udp", "own-secret"))[0] == "REGISTER 200"
