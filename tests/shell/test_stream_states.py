"""The stream state machine (services/streams.py): the table, state × input → state and actions,
driven through StreamService._apply on a real in-process gateway (no device needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gb28181gw.app import Gateway
from gb28181gw.errors import LocalProtocolError, StreamError
from gb28181gw.gb.model import Device
from gb28181gw.gb.session import PlaySession
from gb28181gw.sdp import StreamMode
from gb28181gw.services.streams import (
    TRANSITIONS,
    Stream,
    StreamAction,
    StreamInput,
    StreamService,
    StreamState,
    render_table,
)
from gb28181gw.sip.endpoint import Peer

from .conftest import start_gateway

S, I, A = StreamState, StreamInput, StreamAction  # noqa: E741

#: The whole table as the module docstring draws it: (state, input, new state, actions).
EXPECTED = [
    (S.INVITING, I.ANSWERED, S.INVITING, ()),
    (S.INVITING, I.ESTABLISHED, S.LIVE, (A.RESOLVE_WAITERS,)),
    (S.INVITING, I.FAILED, S.CLOSED, (A.FAIL_WAITERS, A.REMEMBER_CAUSE, A.TEAR_DOWN)),
    (S.INVITING, I.CLOSE, S.ABANDONED, (A.FAIL_WAITERS, A.REMEMBER_CAUSE)),
    (S.ABANDONED, I.CLOSE, S.ABANDONED, ()),
    (S.ABANDONED, I.ANSWERED, S.CLOSED, (A.TEAR_DOWN,)),
    (S.ABANDONED, I.ESTABLISHED, S.CLOSED, (A.TEAR_DOWN,)),
    (S.ABANDONED, I.FAILED, S.CLOSED, (A.TEAR_DOWN,)),
    (S.LIVE, I.CONSUMER_ADDED, S.LIVE, ()),
    (S.LIVE, I.LAST_CONSUMER_LEFT, S.LINGERING, (A.START_LINGER,)),
    (S.LIVE, I.CLOSE, S.CLOSED, (A.REMEMBER_CAUSE, A.TEAR_DOWN)),
    (S.LINGERING, I.CONSUMER_ADDED, S.LIVE, (A.CANCEL_LINGER,)),
    (S.LINGERING, I.LAST_CONSUMER_LEFT, S.LINGERING, ()),
    (S.LINGERING, I.CLOSE, S.CLOSED, (A.CANCEL_LINGER, A.REMEMBER_CAUSE, A.TEAR_DOWN)),
    (S.CLOSED, I.CLOSE, S.CLOSED, ()),
    (S.CLOSED, I.LAST_CONSUMER_LEFT, S.CLOSED, ()),
]


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    gateway = await start_gateway(**{"media.port_min": "42200", "media.port_max": "42299", "media.linger": "30"})
    try:
        yield gateway
    finally:
        await gateway.stop()


def new_stream(service: StreamService, state: StreamState = S.INVITING) -> Stream:
    """A stream record as _open makes it, put in ``state`` (no INVITE is sent); a closed one is forgotten."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    pool = service.pools[0]
    port, ssrc = pool.allocate(now), service.ssrcs.allocate(now)
    channel = f"3402000000131{int(ssrc) % 10_000_000:07d}"
    device = Device("34020000001320000001", host="127.0.0.1", port=9)
    session = PlaySession.start(
        channel, device, our_id="34020000002000000001", domain="3402000000", media_ip="127.0.0.1", port=port,
        ssrc=ssrc, mode=StreamMode.UDP, call_id="call-1", local_tag="tag-1",
    )  # fmt: skip
    st = Stream(
        id=ssrc, channel_id=channel, device_id=session.device_id, mode=StreamMode.UDP, port=port,
        relay=service.relays[0], pool=pool, peer=Peer("UDP", "127.0.0.1", 9), session=session,
        ready=loop.create_future(), state=state, created=now, created_epoch=time.time(),
    )  # fmt: skip
    if state is not S.CLOSED:
        service.streams[st.id] = st
        service.by_channel[channel] = st
    return st


def test_the_table_is_exactly_the_drawn_one() -> None:
    assert {(s, i): (n, a) for s, i, n, a in EXPECTED} == TRANSITIONS
    graph = render_table()
    assert all(f'"{s.name}" -> "{n.name}"' in graph for s, _, n, _ in EXPECTED)


async def test_each_row_moves_the_state_and_unlisted_inputs_fail_naming_the_state(gw: Gateway) -> None:
    service = gw.streams
    for state in StreamState:
        for event in StreamInput:
            st = new_stream(service, state)
            if (state, event) not in TRANSITIONS:
                with pytest.raises(LocalProtocolError, match=f"{event.name} in state {state.name}"):
                    service._apply(st, event)
                assert st.state is state
            else:
                service._apply(st, event, reason="test", cause="operator")
                assert st.state is TRANSITIONS[(state, event)][0], (state, event)
                assert (st.id in service.streams) is (st.state is not S.CLOSED)
            if st.state is not S.CLOSED:
                service._close(st, "test over", "operator")  # ABANDONED waits for the answer: give it one
                if st.state is S.ABANDONED:
                    service._apply(st, I.ANSWERED)
            assert st.state is S.CLOSED and st.linger is None
    await service._tasks.wait(3)
    # every port came back but those of the records made CLOSED (nothing tears those down)
    assert not service.streams and service.pools[0].in_use == len(StreamInput)


async def test_close_while_inviting_fails_the_waiters_and_ends_the_dialog_once_answered(gw: Gateway) -> None:
    service = gw.streams
    st = new_stream(service)
    service._close(st, "stopped by operator", "operator")
    assert st.state is S.ABANDONED and st.id in service.streams  # the port stays ours until the answer
    with pytest.raises(StreamError, match="closed while being set up: stopped by operator") as info:
        await st.ready
    assert info.value.status == 502
    service._close(st, "device offline", "device-offline")  # a second cause does not replace the first
    service._apply(st, I.ESTABLISHED)  # the relay was being set up when the close came
    assert st.state is S.CLOSED and st.id not in service.streams
    assert (service.closes[("operator",)], service.closes[("device-offline",)]) == (1, 0)
    assert st.close_reason == "stopped by operator"


async def test_linger_starts_with_the_last_consumer_and_stops_with_the_next(gw: Gateway) -> None:
    service = gw.streams
    st = new_stream(service)
    service._apply(st, I.ESTABLISHED)
    assert st.state is S.LIVE and st.ready.done() and st.linger is None
    service._maybe_linger(st)
    assert st.state is S.LINGERING and st.linger is not None
    handle = st.linger
    service._apply(st, I.CONSUMER_ADDED)
    assert st.state is S.LIVE and st.linger is None and handle.cancelled()
    service._maybe_linger(st)
    service._close(st, "gone", "operator")
    assert st.state is S.CLOSED and st.linger is None


async def test_setup_failure_closes_at_once_with_the_error(gw: Gateway) -> None:
    service = gw.streams
    st = new_stream(service)
    service._fail(st, StreamError(504, "device did not answer"), "timeout")
    assert st.state is S.CLOSED and service.closes[("setup-failed",)] == 1 and service.results[("timeout",)] == 1
    with pytest.raises(StreamError, match="did not answer"):
        await st.ready
