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
    Consumer,
    Stream,
    StreamAction,
    StreamInput,
    StreamService,
    StreamState,
    render_table,
)
from gb28181gw.sip.endpoint import Peer
from tests.helpers import media_port

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
    gateway = await start_gateway(
        **{"media.port_min": str(media_port(200)), "media.port_max": str(media_port(299)), "media.linger": "30"}
    )
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


async def test_an_ended_stream_answers_410_with_its_reason_for_a_while_then_404(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiohttp

    from gb28181gw.services import streams as streams_module

    service = gw.streams
    assert gw.admin is not None
    api = f"http://127.0.0.1:{gw.admin.port}/api/v1/streams/"
    st = new_stream(service)
    service._apply(st, I.ESTABLISHED)
    service._close(st, "the device ended the stream (BYE)", "device-bye", bye=False)
    async with aiohttp.ClientSession() as http:
        async with http.get(api + st.id) as resp:
            assert resp.status == 410
            answer = await resp.json()
        assert answer["error"] == f"stream {st.id} ended: the device ended the stream (BYE)"
        assert (answer["cause"], answer["channel_id"]) == ("device-bye", st.channel_id)
        assert abs(answer["ended_at"] - time.time()) < 5
        async with http.delete(api + st.id) as resp:  # stopping it again says the same
            assert resp.status == 410 and "ended: the device ended" in (await resp.json())["error"]
        async with http.get(api + "0999999999") as resp:  # never known
            assert resp.status == 404 and (await resp.json())["error"] == "no stream 0999999999"
        # bounded in number …
        monkeypatch.setattr(streams_module, "ENDED_KEPT", 3)
        later = [new_stream(service) for _ in range(4)]
        for other in later:
            service._close(other, "stopped by operator", "operator")
            await asyncio.sleep(0)  # ABANDONED → needs the answer
            service._apply(other, I.ANSWERED)
        assert list(service.ended) == [s.id for s in later[1:]]
        assert service.ended_stream(st.id) is None
        # … and in time
        monkeypatch.setattr(streams_module, "ENDED_KEPT_SECONDS", 0.0)
        await asyncio.sleep(0.01)
        async with http.get(api + later[-1].id) as resp:
            assert resp.status == 404
        assert not service.ended


async def test_a_consumer_lease_is_renewed_over_the_admin_api(gw: Gateway) -> None:
    import aiohttp

    service = gw.streams
    assert gw.admin is not None
    st = new_stream(service)
    service._apply(st, I.ESTABLISHED)
    now = service.loop.time()
    consumer = Consumer("c1", "udp", "127.0.0.1", 9, ssrc=1, label="cli", created=now, expires_at=now + 5)
    st.consumers[consumer.id] = consumer  # as _add_consumer leaves it (the relay is not involved here)
    api = f"http://127.0.0.1:{gw.admin.port}/api/v1/streams/{st.id}/consumers/"
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.patch(api + consumer.id, json={"ttl": 120}) as resp:
            assert resp.status == 200
        assert consumer.expires_at is not None and consumer.expires_at - service.loop.time() > 100
        async with http.patch(api + consumer.id, json={"ttl": 0}) as resp:
            assert resp.status == 400
        async with http.patch(api + "c99", json={"ttl": 30}) as resp:
            assert resp.status == 404
        service._close(st, "stopped by operator", "operator")
        async with http.patch(api + consumer.id, json={"ttl": 30}) as resp:
            assert resp.status == 410 and (await resp.json())["error"].endswith("ended: stopped by operator")
