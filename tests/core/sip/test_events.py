"""MessageDropped says why with a DropReason (the metric label) and a detail for the log."""

from __future__ import annotations

from gb28181gw.sip.events import DropReason, MessageDropped
from gb28181gw.sip.message import make_response, parse_message
from tests.helpers import DEVICE_UDP, FakeClock, drain_events, new_endpoint, request


def test_stray_response_and_garbage_carry_their_reason() -> None:
    ep, clock = new_endpoint(), FakeClock()
    req = parse_message(request("MESSAGE", "z9hG4bKnobody"))
    stray = make_response(req, 200, to_tag="x")  # type: ignore[arg-type]
    ep.receive(stray.serialize(), DEVICE_UDP, clock.now)
    ep.receive(b"\x00\xff" * 40, DEVICE_UDP, clock.now)
    ep.receive(request("MESSAGE", "z9hG4bKbad").replace(b"CSeq: 1 MESSAGE", b"CSeq: x MESSAGE"), DEVICE_UDP, clock.now)
    first, second, third = drain_events(ep)
    assert isinstance(first, MessageDropped) and first.reason is DropReason.STRAY_RESPONSE
    assert first.reason.value == "stray-response" and first.detail == "200 MESSAGE matches nothing"
    assert isinstance(second, MessageDropped) and second.reason is DropReason.PARSE and second.status == 0
    assert isinstance(third, MessageDropped) and third.reason is DropReason.PARSE and third.status == 400
    assert "CSeq" in third.detail
