"""The running gateway driven by SIPp over real 127.0.0.1 sockets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gb28181gw.app import Gateway

from .conftest import run_sipp

pytestmark = pytest.mark.sipp

TRANSPORTS = ["u1", "t1"]  # UDP, TCP (one socket for all calls)


def _responses(messages: str) -> list[str]:
    """The SIP responses SIPp received, as text, from its -trace_msg file."""
    blocks = re.split(r"-{10,} [^\n]*\n(?:UDP|TCP) message received[^\n]*\n", messages)
    return [b.split("\n\n-----", 1)[0].strip() for b in blocks[1:] if b.lstrip().startswith("SIP/2.0")]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_options_is_answered_200(gateway: Gateway, tmp_path: Path, transport: str) -> None:
    result = await run_sipp("options_uac.xml", gateway.stack.port, tmp_path, transport=transport, calls=20, rate=50)
    assert result.ok, result.stdout
    assert gateway.metrics.sip.requests["in", "UDP" if transport == "u1" else "TCP", "OPTIONS"] == 20


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unknown_method_is_405_with_allow(gateway: Gateway, tmp_path: Path, transport: str) -> None:
    result = await run_sipp("unknown_method_uac.xml", gateway.stack.port, tmp_path, transport=transport, calls=3)
    assert result.ok, result.stdout
    (first, *_) = _responses(result.messages)
    assert first.startswith("SIP/2.0 405 Method Not Allowed")
    assert re.search(r"Allow: .*OPTIONS", first)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_garbage_between_two_requests_does_not_stop_the_second(
    gateway: Gateway, tmp_path: Path, transport: str
) -> None:
    # over TCP the junk is still framed (it has a Content-Length), so only it is dropped and the
    # connection goes on; junk that breaks framing closes the connection (tests/shell/test_stack.py)
    result = await run_sipp(
        "garbage_between_uac.xml", gateway.stack.port, tmp_path, transport=transport, calls=5, rate=20
    )
    assert result.ok, result.stdout
    name = "UDP" if transport == "u1" else "TCP"
    assert gateway.metrics.sip.parse_errors[name, "dropped"] == 5
    assert gateway.metrics.sip.responses_out[name, b"200"] == 10


async def test_retransmitted_request_gets_the_identical_response(gateway: Gateway, tmp_path: Path) -> None:
    result = await run_sipp("retransmit_uac.xml", gateway.stack.port, tmp_path, calls=3)
    assert result.ok, result.stdout
    responses = _responses(result.messages)
    assert len(responses) == 6
    for first, second in zip(responses[::2], responses[1::2], strict=True):
        assert first == second
    # three requests reached the application, three copies were absorbed
    assert gateway.metrics.sip.requests["in", "UDP", "OPTIONS"] == 3
    assert gateway.metrics.sip.responses_out["UDP", b"200"] == 6
