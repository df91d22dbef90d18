"""Malformed input: every fixture is answered statelessly or dropped, and nothing else happens.

Fixtures: ``tests/fixtures/sip/malformed`` (GB/T 28181-flavoured breakage) and the
invalid messages of RFC 4475 §3.1.2; each directory's ``expected.toml`` says what
the endpoint must do.
"""

from __future__ import annotations

import pytest

from gb28181gw.sip.events import MessageDropped, RequestReceived
from tests.helpers import DEVICE_UDP, FIXTURES, MESSAGE, drain_events, load_expected, new_endpoint

CASES = [
    (directory, name, outcome)
    for directory in (("sip", "malformed"), ("sip", "rfc4475", "invalid"))
    for name, outcome in load_expected(*directory).items()
]


def test_there_are_at_least_fifty_malformed_fixtures() -> None:
    assert len([c for c in CASES if c[2] != "accept"]) >= 50


@pytest.mark.parametrize(("directory", "name", "outcome"), CASES, ids=[c[1] for c in CASES])
def test_fixture(directory: tuple[str, ...], name: str, outcome: int | str) -> None:
    data = FIXTURES.joinpath(*directory, f"{name}.sip").read_bytes()
    ep = new_endpoint()
    ep.receive(data, DEVICE_UDP, 0.0)
    events = drain_events(ep)
    out = ep.datagrams_to_send()
    if outcome == "accept":
        assert [type(e) for e in events] == [RequestReceived]
        return
    assert len(events) == 1 and isinstance(events[0], MessageDropped), events
    dropped = events[0]
    if outcome == "drop":
        assert out == [] and dropped.status == 0
    else:
        assert dropped.status == outcome
        assert len(out) == 1
        wire, peer = out[0]
        assert peer == DEVICE_UDP  # answered to where it came from
        # the answer echoes the request's headers, broken ones included (RFC 3261 §8.2.6.2),
        # so check it as text rather than parsing it
        assert wire.startswith(f"SIP/2.0 {outcome} ".encode())
        assert b"\r\nWarning: 399 gb28181gw " in wire
        assert b"\r\nCall-ID:" in wire and b"\r\nVia:" in wire
    # and the endpoint still serves the next, valid message
    ep.receive(MESSAGE, DEVICE_UDP, 1.0)
    assert [type(e) for e in drain_events(ep)] == [RequestReceived]
