"""The quick path over a real socket: REGISTER and keepalive answered on it, retransmissions and replays
absorbed or refused as the general path does, and ``registrar.quick_path = false`` for comparison."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gb28181gw.app import Gateway
from gb28181gw.gb.model import DeviceState
from gb28181gw.net.router import PASS
from gb28181gw.sip.quick import QuickRequest
from tests.helpers import KEEPALIVE_BODY

from .conftest import start_gateway

PASSWORD = "12345678"
ID = "34020000001320000001"
DOMAIN = "3402000000"
URI = f"sip:34020000002000000001@{DOMAIN}"


def register(port: int, branch: str, cseq: int, auth: str = "") -> bytes:
    return (
        f"REGISTER {URI} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{branch}\r\n"
        f"From: <sip:{ID}@{DOMAIN}>;tag=f1\r\n"
        f"To: <sip:{ID}@{DOMAIN}>\r\n"
        "Call-ID: reg1@127.0.0.1\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{ID}@127.0.0.1:{port}>\r\n"
        f"{auth}"
        "Max-Forwards: 70\r\nUser-Agent: IP Camera\r\nExpires: 3600\r\nX-GB-ver: 3.0\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def authorization(challenge: bytes) -> str:
    nonce = challenge.split(b'nonce="')[1].split(b'"')[0].decode()
    ha1 = hashlib.md5(f"{ID}:{DOMAIN}:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{URI}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    return (
        f'Authorization: Digest username="{ID}", realm="{DOMAIN}", nonce="{nonce}", uri="{URI}", '
        f'response="{response}", algorithm=MD5\r\n'
    )


def keepalive(port: int, branch: str) -> bytes:
    head = (
        f"MESSAGE {URI} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{branch}\r\n"
        f"From: <sip:{ID}@{DOMAIN}>;tag=k1\r\n"
        f"To: <{URI}>\r\n"
        f"Call-ID: ka-{branch}@127.0.0.1\r\n"
        "CSeq: 20 MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\nMax-Forwards: 70\r\n"
        f"Content-Length: {len(KEEPALIVE_BODY)}\r\n\r\n"
    )
    return head.encode() + KEEPALIVE_BODY


def count_general(gw: Gateway) -> list[int]:
    """How many datagrams reached the general path (the endpoint), counted from now."""
    seen = [0]
    endpoint = gw.stack.endpoint
    receive: Callable[..., None] = endpoint.receive

    def counting(*args: object) -> None:
        seen[0] += 1
        receive(*args)

    endpoint.receive = counting  # type: ignore[method-assign]
    return seen


def count_scans(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The messages the quick reader is asked to read from now on."""
    scanned: list[bytes] = []
    scan = QuickRequest.scan

    def counting(data: bytes, *args: Any) -> QuickRequest | None:
        scanned.append(data)
        return scan(data, *args)

    monkeypatch.setattr(QuickRequest, "scan", counting)
    return scanned


def keepalive_with(port: int, call: str, body: bytes) -> bytes:
    """A keepalive MESSAGE carrying ``body`` instead of the plain keepalive body."""
    message = keepalive(port, call).replace(KEEPALIVE_BODY, body)
    return message.replace(b"Content-Length: %d" % len(KEEPALIVE_BODY), b"Content-Length: %d" % len(body))


def device_socket(
    gw: Gateway, host: str = "127.0.0.1"
) -> tuple[socket.socket, int, Callable[[bytes], Awaitable[bytes]]]:
    """A device's UDP socket, its port, and ``ask(datagram) -> the gateway's answer``."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    target = ("127.0.0.1", gw.stack.port)

    async def ask(data: bytes) -> bytes:
        await loop.sock_sendto(sock, data, target)
        return (await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 5))[0]

    return sock, sock.getsockname()[1], ask


@pytest.mark.parametrize("quick", [True, False])
async def test_registration_keepalive_retransmission_and_replay(quick: bool) -> None:
    gw = await start_gateway(**{"registrar.password": PASSWORD, "registrar.quick_path": str(quick).lower()})
    sock, port, ask = device_socket(gw)
    try:
        general = count_general(gw)
        challenge = await ask(register(port, "a1", 1))
        assert challenge.startswith(b"SIP/2.0 401 ") and b"stale" not in challenge
        signed = register(port, "a2", 2, authorization(challenge))
        ok = await ask(signed)
        assert ok.startswith(b"SIP/2.0 200 ")
        assert f"Contact: <sip:{ID}@127.0.0.1:{port}>;expires=3600\r\n".encode() in ok
        assert b"X-GB-ver: 3.0\r\n" in ok and b"\r\nDate: " in ok
        device = gw.registrar.devices[ID]
        assert device.state is DeviceState.ONLINE and (device.host, device.port) == ("127.0.0.1", port)
        assert gw.registrar.registrations[("challenged", "challenge")] == 1
        assert gw.registrar.registrations[("registered", "ok")] == 1
        assert general[0] == (0 if quick else 2)

        # RFC 3261 §17.2.2: the retransmission gets the same bytes, and changes nothing
        registered_at = device.registered_at
        assert await ask(signed) == ok
        assert gw.registrar.devices[ID].registered_at == registered_at
        assert gw.registrar.registrations[("registered", "ok")] == 1
        # digest replay: the same credentials in a new transaction are stale (a fresh challenge)
        replay = await ask(signed.replace(b"branch=z9hG4bKa2", b"branch=z9hG4bKa3"))
        assert replay.startswith(b"SIP/2.0 401 ") and b"stale=true" in replay.lower()
        assert gw.registrar.registrations[("challenged", "stale-nonce")] == 1
        assert general[0] == (2 if quick else 4)

        answer = await ask(keepalive(port, "k1"))
        assert answer.startswith(b"SIP/2.0 200 ") and b"CSeq: 20 MESSAGE\r\n" in answer
        assert await ask(keepalive(port, "k1")) == answer
        assert gw.registrar.keepalives[("ok",)] == 1
        assert gw.registrar.devices[ID].last_keepalive > 0
        assert general[0] == (3 if quick else 6)
        # from another address the device's ID is not believed, on either path
        other, _, ask_other = device_socket(gw, "127.0.0.2")
        try:
            refused = await ask_other(keepalive(port, "k2"))
        finally:
            other.close()
        assert refused.startswith(b"SIP/2.0 404 ")
        assert gw.registrar.keepalives[("ok",)] == 1
    finally:
        sock.close()
        await gw.stop()


async def test_a_chain_link_that_cannot_say_it_passes_keeps_keepalives_on_the_general_path() -> None:
    gw = await start_gateway(**{"registrar.password": PASSWORD})
    sock, port, ask = device_socket(gw)
    try:
        router = gw.stack.router
        assert router.chain_passes("MESSAGE", "ka-k1@127.0.0.1")  # the streams' link says it passes
        # ... but not a Call-ID it holds (a recorded stream's: its MediaStatus is the streams')
        gw.streams.by_call_id["ka-k1@127.0.0.1"] = None  # type: ignore[assignment]
        assert not router.chain_passes("MESSAGE", "ka-k1@127.0.0.1")
        assert router.chain_passes("MESSAGE", "ka-k2@127.0.0.1")
        del gw.streams.by_call_id["ka-k1@127.0.0.1"]
        assert router.chain_passes("MESSAGE", "ka-k1@127.0.0.1")
        challenge = await ask(register(port, "b1", 1))
        assert (await ask(register(port, "b2", 2, authorization(challenge)))).startswith(b"SIP/2.0 200 ")
        seen: list[str] = []

        def watcher(event: object) -> object:
            seen.append("watched")
            return PASS

        router.consume("MESSAGE", watcher, owner="test")  # no `passes`: it must see every MESSAGE
        assert not router.chain_passes("MESSAGE", "ka-k1@127.0.0.1")
        general = count_general(gw)
        assert (await ask(keepalive(port, "k1"))).startswith(b"SIP/2.0 200 ")
        assert seen == ["watched"] and general[0] == 1
        assert gw.registrar.keepalives[("ok",)] == 1
    finally:
        sock.close()
        await gw.stop()


@pytest.mark.parametrize("quick", [True, False])
async def test_a_failing_handler_is_answered_500_on_either_path(quick: bool) -> None:
    # the general path's runner answers a handler's failure 500 (kept for Timer J like any final
    # answer); the quick path must not drop the request unanswered instead
    gw = await start_gateway(**{"registrar.password": PASSWORD, "registrar.quick_path": str(quick).lower()})
    sock, port, ask = device_socket(gw)
    try:
        challenge = await ask(register(port, "c1", 1))

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug")

        gw.registrar.registrar.accept = broken  # type: ignore[method-assign]
        signed = register(port, "c2", 2, authorization(challenge))
        failed = await ask(signed)
        assert failed.startswith(b"SIP/2.0 500 ") and b"internal error" in failed
        assert await ask(signed) == failed  # a retransmission: the same answer, the handler not run again
        assert gw.stack.counters.dropped["internal-error"] == 0
        assert gw.stack.counters.requests["in", "UDP", "REGISTER"] == 2
    finally:
        sock.close()
        await gw.stop()


async def test_a_message_that_is_no_keepalive_is_not_read_by_the_quick_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    # a Catalog response or any other MANSCDP body: the quick path's handler takes none of them, so
    # the stack leaves it unread (on_quick's `needs`) and the general path answers it as before
    gw = await start_gateway(**{"registrar.password": PASSWORD})
    sock, port, ask = device_socket(gw)
    try:
        challenge = await ask(register(port, "d1", 1))
        assert (await ask(register(port, "d2", 2, authorization(challenge)))).startswith(b"SIP/2.0 200 ")
        scanned = count_scans(monkeypatch)
        general = count_general(gw)
        body = KEEPALIVE_BODY.replace(b"Notify>", b"Response>").replace(b"Keepalive", b"DeviceStatus")
        answer = await ask(keepalive_with(port, "d3", body))
        assert answer.startswith(b"SIP/2.0 200 ")
        assert scanned == [] and general[0] == 1
        assert gw.registrar.keepalives[("ok",)] == 0
        # a keepalive is still read and answered on the quick path
        assert (await ask(keepalive(port, "d4"))).startswith(b"SIP/2.0 200 ")
        assert len(scanned) == 1 and general[0] == 1
        assert gw.registrar.keepalives[("ok",)] == 1
    finally:
        sock.close()
        await gw.stop()


@pytest.mark.parametrize(
    "cmd_type",
    [
        b"<CmdType> Keepalive </CmdType>",
        b"<CmdType><![CDATA[Keepalive]]></CmdType>",
        b"<CmdType>\r\nKeepalive</CmdType>",
    ],
)
async def test_a_keepalive_spelled_otherwise_is_answered_by_the_general_path(
    cmd_type: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a body without <CmdType>Keepalive</CmdType> literally is left unread by the quick path (on_quick's
    # `needs`), but the general path still reads it as the keepalive it is: answered and counted
    gw = await start_gateway(**{"registrar.password": PASSWORD})
    sock, port, ask = device_socket(gw)
    try:
        challenge = await ask(register(port, "o1", 1))
        assert (await ask(register(port, "o2", 2, authorization(challenge)))).startswith(b"SIP/2.0 200 ")
        scanned = count_scans(monkeypatch)
        general = count_general(gw)
        body = KEEPALIVE_BODY.replace(b"<CmdType>Keepalive</CmdType>", cmd_type)
        assert (await ask(keepalive_with(port, "o3", body))).startswith(b"SIP/2.0 200 ")
        assert scanned == [] and general[0] == 1
        assert gw.registrar.keepalives[("ok",)] == 1
    finally:
        sock.close()
        await gw.stop()


@pytest.mark.parametrize("quick", [True, False])
async def test_a_keepalive_after_the_registration_ran_out_is_404_before_the_deadline_fires(quick: bool) -> None:
    # the registrar's resolver answers an online device at its address at once (its common case):
    # a registration that has run out, its deadline not yet fired, must still be no DEVICE
    gw = await start_gateway(**{"registrar.password": PASSWORD, "registrar.quick_path": str(quick).lower()})
    sock, port, ask = device_socket(gw)
    try:
        challenge = await ask(register(port, "e1", 1))
        assert (await ask(register(port, "e2", 2, authorization(challenge)))).startswith(b"SIP/2.0 200 ")
        assert (await ask(keepalive(port, "e3"))).startswith(b"SIP/2.0 200 ")
        device = gw.registrar.devices[ID]
        device.expires_at = gw.registrar._clock() - 1  # the liveness timer has not fired yet
        assert device.state is DeviceState.ONLINE
        answer = await ask(keepalive(port, "e4"))
        assert answer.startswith(b"SIP/2.0 404 ")
        assert gw.registrar.keepalives[("ok",)] == 1 and gw.registrar.keepalives[("unregistered",)] == 1
        # and a keepalive that moved the device's port is the general transition, saved at once
        device.expires_at = gw.registrar._clock() + 3600
        other, other_port, ask_other = device_socket(gw)
        try:
            moved = await ask_other(keepalive(other_port, "e5"))
        finally:
            other.close()
        # accept_port_change (the default): NAT rebinding, the device is there now (the general transition)
        assert moved.startswith(b"SIP/2.0 200 ")
        assert (gw.registrar.devices[ID].host, gw.registrar.devices[ID].port) == ("127.0.0.1", other_port)
        assert gw.registrar.keepalives[("ok",)] == 2
    finally:
        sock.close()
        await gw.stop()


@pytest.mark.parametrize(
    ("interval", "count", "left"),
    [(0, 0, 3600.0), (30, 2, 3600.0), (60, 3, 100.0), (0, 5, 7.5), (10, 0, 0.0), (0, 0, -20.0)],
)
async def test_a_keepalive_done_in_place_sets_the_deadline_watch_would(interval: int, count: int, left: float) -> None:
    """_kept_alive writes _watch out for an online device at its address: the deadline it leaves
    (and the timer it arms) must be liveness_timeout's, whatever the device's own heartbeat settings
    and however soon its registration ends."""
    from gb28181gw.gb.keepalive import liveness_timeout
    from gb28181gw.sip.peer import Peer

    gw = await start_gateway(**{"registrar.password": PASSWORD})
    sock, port, ask = device_socket(gw)
    try:
        assert (await ask(register(port, "a1", 1))).startswith(b"SIP/2.0 401 ")
        challenge = await ask(register(port, "a1b", 1))
        assert (await ask(register(port, "a2", 2, authorization(challenge)))).startswith(b"SIP/2.0 200 ")
        svc = gw.registrar
        device = svc.devices[ID]
        device.keepalive_interval, device.keepalive_count = interval, count
        now, epoch = svc._now()
        device.expires_at = epoch + left
        expected = now + max(
            liveness_timeout(device, epoch, interval=svc.keepalive_interval, count=svc.keepalive_count), 0.0
        )
        svc._kept_alive(ID, Peer("UDP", "127.0.0.1", port), now, epoch)
        assert svc.devices[ID] is device  # done in place
        assert svc.liveness.deadline(ID) == expected
        assert svc._timer.armed and svc._timer.when <= expected
        assert ID in svc._heartbeats or ID in svc._dirty
    finally:
        sock.close()
        await gw.stop()


async def test_a_keepalive_keeps_the_arrival_times_of_the_last_four() -> None:
    """_kept_alive's arrival times (the doctor's interval check): the first keepalives append,
    then each one drops the oldest (the written-out rotation for four), on either path."""
    from gb28181gw.services.registrar import KEEPALIVES_KEPT
    from gb28181gw.sip.peer import Peer

    gw = await start_gateway(**{"registrar.password": PASSWORD})
    sock, port, ask = device_socket(gw)
    try:
        challenge = await ask(register(port, "a1", 1))
        assert (await ask(register(port, "a2", 2, authorization(challenge)))).startswith(b"SIP/2.0 200 ")
        svc = gw.registrar
        svc.keepalive_arrivals.pop(ID, None)
        now, epoch = svc._now()
        for i in range(KEEPALIVES_KEPT + 3):
            svc._kept_alive(ID, Peer("UDP", "127.0.0.1", port), now + i, epoch + i)
            first = max(0, i + 1 - KEEPALIVES_KEPT)
            assert svc.keepalive_arrivals[ID] == tuple(now + k for k in range(first, i + 1))
        # over the socket too: the quick path's keepalive lands last
        assert (await ask(keepalive(port, "k1"))).startswith(b"SIP/2.0 200 ")
        kept = svc.keepalive_arrivals[ID]
        assert len(kept) == KEEPALIVES_KEPT and kept[:-1] == tuple(now + k for k in range(4, 7))
    finally:
        sock.close()
        await gw.stop()
