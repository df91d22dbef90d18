"""Digest authentication (server side) against a real SIP stack: pjsua2 (PJSIP) registering.

The registrar itself comes later; this test wires a minimal REGISTER handler on top of
:class:`~gb28181gw.sip.auth.NonceStore` to prove our challenge/verify against PJSIP's digest.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.errors import AuthError
from gb28181gw.sip.auth import Credentials, NonceStore, Verdict
from gb28181gw.sip.events import RequestReceived
from gb28181gw.sip.message import make_response

pytestmark = pytest.mark.pjsua

SCRIPT = Path(__file__).with_name("pjsua_register.py")
DEVICE = "34020000001320000001"


def install_register(gateway: Gateway, store: NonceStore, password: str, verdicts: list[Verdict]) -> None:
    loop = asyncio.get_running_loop()

    def on_register(event: RequestReceived) -> None:
        req, tx = event.request, event.transaction
        assert tx is not None
        tag = gateway.endpoint.new_tag()
        auth = req.headers.get("authorization")
        if auth is None:
            resp = make_response(req, 401, to_tag=tag)
            resp.headers.add("WWW-Authenticate", store.challenge(event.peer.host, loop.time()).serialize())
        else:
            try:
                verdict = store.verify(
                    Credentials.parse(auth), method="REGISTER", password=password, host=event.peer.host, now=loop.time()
                )
            except AuthError:
                verdict = Verdict.BAD_RESPONSE
            verdicts.append(verdict)
            if verdict is Verdict.OK:
                resp = make_response(req, 200, to_tag=tag)
                resp.headers.add("Contact", req.headers.get("contact") or "")
                resp.headers.add("Expires", "3600")
            elif verdict is Verdict.STALE:
                resp = make_response(req, 401, to_tag=tag)
                resp.headers.add(
                    "WWW-Authenticate", store.challenge(event.peer.host, loop.time(), stale=True).serialize()
                )
            else:
                resp = make_response(req, 403, to_tag=tag)
        gateway.stack.respond(tx, resp)

    gateway.stack.route("REGISTER", on_register)


async def run_pjsua(port: int, transport: str, password: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "127.0.0.1",
        str(port),
        transport,
        DEVICE,
        password,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("REGISTER ")]
    assert lines, text
    return int(lines[-1].split()[1])


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("qop", [False, True], ids=["no-qop", "qop-auth"])
async def test_pjsua2_registers_with_digest(gateway: Gateway, transport: str, qop: bool) -> None:
    verdicts: list[Verdict] = []
    install_register(gateway, NonceStore(realm="3402000000", qop=qop), "12345678", verdicts)
    assert await run_pjsua(gateway.stack.port, transport, "12345678") == 200
    assert verdicts[-1] is Verdict.OK


async def test_pjsua2_wrong_password_is_refused(gateway: Gateway) -> None:
    verdicts: list[Verdict] = []
    install_register(gateway, NonceStore(realm="3402000000"), "12345678", verdicts)
    assert await run_pjsua(gateway.stack.port, "udp", "not-the-password") == 403
    assert verdicts == [Verdict.BAD_RESPONSE]


async def test_pjsua2_answers_a_stale_nonce(gateway: Gateway) -> None:
    # a nonce lifetime of 0 makes every answer stale: PJSIP retries with the fresh nonce once
    # more and then gives up, so the point is that it never gets 200 nor loops forever
    verdicts: list[Verdict] = []
    install_register(gateway, NonceStore(realm="3402000000", lifetime=-1), "12345678", verdicts)
    code = await run_pjsua(gateway.stack.port, "udp", "12345678")
    assert code == 401
    assert verdicts and all(v is Verdict.STALE for v in verdicts)
