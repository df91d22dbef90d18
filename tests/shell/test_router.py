"""The request router over real 127.0.0.1 sockets, with our own SIP core as the peer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.config import load_config
from gb28181gw.errors import RouteConflict
from gb28181gw.net.router import PASS, ManscdpRequest, Role
from gb28181gw.net.stack import SipStack
from gb28181gw.sip.dialog import DialogId
from gb28181gw.sip.endpoint import SipEndpoint
from gb28181gw.sip.events import RequestReceived
from gb28181gw.sip.message import Request, make_request, make_response
from gb28181gw.sip.peer import Peer
from gb28181gw.sip.timers import TimerConfig

from .conftest import loopback_sip, sipp_scenario, start_gateway

PLATFORM = "34020000002000000009"  # a superior platform (cascade will configure these)
STRANGER = "34020000002000000008"
STRANGER_DEVICE = "34020000001320000008"
CATALOG_QUERY = (
    b'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>17</SN>\r\n'
    b"<DeviceID>34020000002000000001</DeviceID>\r\n</Query>\r\n"
)


async def _client() -> SipStack:
    stack = SipStack(SipEndpoint(timers=TimerConfig(t1=0.1, t2=0.4, t4=0.5)))
    await stack.listen(loopback_sip())
    return stack


def _request(
    ep: SipEndpoint,
    method: str,
    sender: str,
    *,
    body: bytes = b"",
    to_tag: str | None = None,
    from_tag: str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
) -> Request:
    return make_request(
        method,
        "sip:34020000002000000001@127.0.0.1",
        from_addr=f"sip:{sender}@3402000000",
        to_addr="sip:34020000002000000001@3402000000",
        call_id=call_id or ep.new_call_id(),
        cseq=cseq,
        from_tag=from_tag or ep.new_tag(),
        to_tag=to_tag,
        content_type="Application/MANSCDP+xml" if body else None,
        body=body,
    )


async def test_a_platforms_query_reaches_its_owner_and_a_strangers_gets_404(gateway: Gateway) -> None:
    router = gateway.stack.router
    got: list[ManscdpRequest] = []

    def platform_query(msg: ManscdpRequest) -> None:
        got.append(msg)
        assert msg.event.transaction is not None
        gateway.stack.respond(msg.event.transaction, make_response(msg.event.request, 200, to_tag="cascade"))

    router.add_role_resolver(lambda sender, peer: Role.PLATFORM if sender == PLATFORM else None, owner="cascade")
    # a CmdType of its own: the gateway's cascade services own the real ones (Catalog, DeviceInfo …)
    router.on_message(Role.PLATFORM, "TestQuery", platform_query, owner="cascade")
    query = CATALOG_QUERY.replace(b"Catalog", b"TestQuery")
    client = await _client()
    target = Peer("UDP", "127.0.0.1", gateway.stack.port)
    try:
        resp = await client.request(_request(client.endpoint, "MESSAGE", PLATFORM, body=query), target)
        assert resp.status == 200 and resp.to.tag == "cascade"
        (msg,) = got
        assert (msg.role, msg.sender, msg.cmd_type) == (Role.PLATFORM, PLATFORM, "TestQuery")
        assert msg.root.tag == "Query" and msg.event.peer.port == client.port
        # the same query from a device nobody claims: 404, as an unregistered device's keepalive gets
        resp = await client.request(_request(client.endpoint, "MESSAGE", STRANGER_DEVICE, body=CATALOG_QUERY), target)
        assert resp.status == 404 and STRANGER_DEVICE in (resp.headers.get("warning") or "")
        # from a platform that is not our superior (and could not register here): 403 (issue 12)
        resp = await client.request(_request(client.endpoint, "MESSAGE", STRANGER, body=CATALOG_QUERY), target)
        assert resp.status == 403 and STRANGER in (resp.headers.get("warning") or "")
        assert len(got) == 1
        assert gateway.registrar.keepalives[("unregistered",)] == 2
        refused = gateway.registrar.registrar.refused.entries()
        assert [r.reason for r in refused if r.device_id == STRANGER] == ["platform-id"]
        # a CmdType with no owner of its own goes to the cascade's other requests, which serve
        # configured superiors only: this resolver's platform is none
        info = CATALOG_QUERY.replace(b"Catalog", b"DeviceInfo")
        resp = await client.request(_request(client.endpoint, "MESSAGE", PLATFORM, body=info), target)
        assert resp.status == 403 and "not a superior" in (resp.headers.get("warning") or "")
        # an unparseable body from a known sender: 400
        resp = await client.request(_request(client.endpoint, "MESSAGE", PLATFORM, body=b"<Query"), target)
        assert resp.status == 400 and len(got) == 1
    finally:
        await client.close()


async def test_a_refused_sender_gets_403() -> None:
    gw = await start_gateway(**{"registrar.deny_ids": "3402000000200000000"})
    client = await _client()
    try:
        req = _request(client.endpoint, "MESSAGE", STRANGER, body=CATALOG_QUERY)
        resp = await client.request(req, Peer("UDP", "127.0.0.1", gw.stack.port))
        assert resp.status == 403
    finally:
        await client.close()
        await gw.stop()


async def test_requests_for_unknown_dialogs_get_481_from_the_router(gateway: Gateway) -> None:
    client = await _client()
    target = Peer("UDP", "127.0.0.1", gateway.stack.port)
    try:
        for method in ("BYE", "NOTIFY", "INFO"):
            resp = await client.request(_request(client.endpoint, method, STRANGER, to_tag="nosuchdialog"), target)
            assert resp.status == 481, method
        # outside any dialog: BYE and INFO (playback control) are methods we take in dialogs only,
        # UPDATE not at all
        for method in ("BYE", "INFO"):
            assert (await client.request(_request(client.endpoint, method, STRANGER), target)).status == 481, method
        resp = await client.request(_request(client.endpoint, "UPDATE", STRANGER), target)
        assert resp.status == 405 and "INFO" in (resp.headers.get("allow") or "")
        # a tagged MESSAGE is taken as it always was (404 for a sender that is not registered)
        tagged = _request(client.endpoint, "MESSAGE", STRANGER_DEVICE, body=CATALOG_QUERY, to_tag="x")
        assert (await client.request(tagged, target)).status == 404
    finally:
        await client.close()


async def test_in_dialog_requests_reach_their_owner_by_dialog_id(gateway: Gateway) -> None:
    router = gateway.stack.router
    seen: dict[int, list[str]] = {}

    def owner_of(n: int):  # type: ignore[no-untyped-def]
        def handle(event: RequestReceived) -> None:
            seen.setdefault(n, []).append(event.request.method)
            if event.transaction is not None:
                gateway.stack.respond(event.transaction, make_response(event.request, 200))

        return handle

    for n in range(10_000):
        router.add_dialog(DialogId(f"call-{n}", f"gw{n}", f"up{n}"), owner_of(n), owner="test")
    client = await _client()
    target = Peer("UDP", "127.0.0.1", gateway.stack.port)
    try:
        for method, cseq in (("INFO", 2), ("BYE", 3)):
            req = _request(
                client.endpoint, method, PLATFORM, to_tag="gw7777", from_tag="up7777", call_id="call-7777", cseq=cseq
            )
            assert (await client.request(req, target)).status == 200
        assert seen == {7777: ["INFO", "BYE"]}
        # the same Call-ID and our tag with another remote tag is another dialog
        req = _request(client.endpoint, "BYE", PLATFORM, to_tag="gw7777", from_tag="other", call_id="call-7777")
        assert (await client.request(req, target)).status == 481
        router.remove_dialog(DialogId("call-7777", "gw7777", "up7777"))
        req = _request(client.endpoint, "BYE", PLATFORM, to_tag="gw7777", from_tag="up7777", call_id="call-7777")
        assert (await client.request(req, target)).status == 481
        assert seen == {7777: ["INFO", "BYE"]}
    finally:
        await client.close()
        for n in range(10_000):
            router.remove_dialog(DialogId(f"call-{n}", f"gw{n}", f"up{n}"))


async def test_a_chain_link_passes_on_or_consumes(gateway: Gateway) -> None:
    calls: list[str] = []

    def watcher(event: RequestReceived) -> object:
        calls.append(event.request.method)
        return PASS  # seen, passed on to the rest of the chain and its default

    gateway.stack.router.consume("OPTIONS", watcher, owner="watcher")
    client = await _client()
    try:
        req = _request(client.endpoint, "OPTIONS", STRANGER)
        resp = await client.request(req, Peer("UDP", "127.0.0.1", gateway.stack.port))
        assert resp.status == 200 and "REGISTER" in (resp.headers.get("allow") or "")
        assert calls == ["OPTIONS"]
    finally:
        await client.close()


async def test_two_owners_for_one_route_fail_at_start_up(tmp_path: Path) -> None:
    config = load_config(
        env={},
        overrides={
            "store.path": str(Path(tempfile.mkdtemp(prefix="gb28181gw-test-", dir=tmp_path)) / "gw.db"),
            "sip.listen": "127.0.0.1",
            "sip.port": "0",
            "admin.enabled": "false",
            "media.workers": "0",
        },
    )
    gw = Gateway(config)
    gw.stack.router.on_message(Role.DEVICE, "keepalive", lambda msg: None, owner="impostor")
    try:
        with pytest.raises(RouteConflict) as err:
            await gw.start()
    finally:
        await gw.stop()
    text = str(err.value)
    assert "MESSAGE from DEVICE, CmdType Keepalive" in text and "'impostor'" in text and "'registrar'" in text
    assert (err.value.owner, err.value.newcomer) == ("impostor", "registrar")

    router = SipStack(SipEndpoint()).router
    router.handle("REGISTER", lambda event: None, owner="registrar")
    with pytest.raises(RouteConflict, match="REGISTER outside dialogs is owned by 'registrar'; 'cascade'"):
        router.handle("register", lambda event: None, owner="cascade")
    with pytest.raises(RouteConflict, match="built in"):
        router.handle("MESSAGE", lambda event: None, owner="cascade")
    router.on_message(Role.PLATFORM, "Catalog", lambda msg: None, owner="cascade")
    with pytest.raises(RouteConflict, match="PLATFORM, CmdType catalog is owned by 'cascade'"):
        router.on_message(Role.PLATFORM, "catalog", lambda msg: None, owner="talk")
    dialog = DialogId("c", "l", "r")
    router.add_dialog(dialog, lambda event: None, owner="streams")
    with pytest.raises(RouteConflict, match="dialog c .* owned by 'streams'; 'cascade'"):
        router.add_dialog(dialog, lambda event: None, owner="cascade")


@pytest.mark.sipp
async def test_a_notify_that_overtakes_the_200_to_subscribe_reaches_its_subscription(tmp_path: Path) -> None:
    from gb28181gw.gb.model import Channel
    from gb28181gw.sip.dialog import DialogState

    from .test_devices import CH1, NVR, finished, free_udp_port, play_device, register

    gw = await start_gateway()
    try:
        port = free_udp_port()
        await register(gw, tmp_path, port)
        gw.devices.channels[NVR] = {CH1: Channel(CH1, NVR, "gate", "ON")}
        proc = await play_device(
            sipp_scenario("notify_first_uas.xml", nvr=NVR, ch1=CH1).encode(), port, tmp_path, "first"
        )
        sub = await gw.subscriptions.subscribe(NVR, "catalog")
        await finished(proc)  # SIPp got 200 for its NOTIFY, sent before its 200 to the SUBSCRIBE
        assert sub.dialog.state is DialogState.CONFIRMED and sub.remote_tag.endswith("nvr")
        assert sub.dialog.remote_cseq == 1
        assert gw.devices.channels[NVR][CH1].status == "OFF"
        # the pending route is gone, the dialog's own stays until the subscription ends
        assert gw.stack.router.dialog_count == 1
        await gw.subscriptions.stop()
        assert gw.stack.router.dialog_count == 0
    finally:
        await gw.stop()


async def test_a_stray_response_is_counted_by_its_drop_reason(gateway: Gateway) -> None:
    import asyncio
    import socket

    from gb28181gw.sip.events import DropReason

    ep = SipEndpoint()
    stray = make_response(_request(ep, "MESSAGE", STRANGER), 200, to_tag="x")
    stray.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKnobody")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(stray.serialize(), ("127.0.0.1", gateway.stack.port))
        for _ in range(50):
            if gateway.metrics.sip.dropped[DropReason.STRAY_RESPONSE.value]:
                break
            await asyncio.sleep(0.02)
    assert gateway.metrics.sip.dropped["stray-response"] == 1


@pytest.mark.sipp
@pytest.mark.parametrize("who", ["device", "gateway"])
async def test_a_streams_dialog_is_routed_while_it_lives(tmp_path: Path, who: str) -> None:
    from tests.media import UdpConsumer

    from .test_devices import finished
    from .test_streams import CH, DEVICE_BYE, WE_BYE, answer, gateway_with_device, scenario

    gw, device = await gateway_with_device(tmp_path, scenario(answer(), tail=DEVICE_BYE if who == "device" else WE_BYE))
    udp = await UdpConsumer.start()
    try:
        st, _ = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        assert gw.stack.router.dialog_count == 1 and st.session.remote_tag  # registered once answered
        if who == "gateway":
            await gw.streams.stop_stream(st.id)
        await finished(device)  # the device's BYE got our 200, or ours reached it
        assert not gw.streams.streams and gw.stack.router.dialog_count == 0
    finally:
        udp.close()
        await gw.stop()


async def test_a_chain_link_passes_every_call_id_but_those_it_holds(gateway: Gateway) -> None:
    """``passes_unless_in``: the link's own container, asked in place, as it is when asked."""
    router = gateway.stack.router
    held: set[str] = {"held-1"}

    def consumer(event: object) -> object:
        return PASS

    router.consume("INFO", consumer, owner="test", passes_unless_in=held)
    assert not router.chain_passes("INFO", "held-1")
    assert router.chain_passes("INFO", "other")
    held.add("other")
    held.discard("held-1")
    assert router.chain_passes("INFO", "held-1") and not router.chain_passes("INFO", "other")
