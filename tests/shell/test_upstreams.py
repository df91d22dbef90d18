"""Upward registration over real 127.0.0.1 sockets (issue 12 item 2): a gateway and a superior that misbehaves.

The superior here is a bare UDP socket answering as each test says: the password is wrong
(403 forever), it does not know us (404), it answers garbage, or it never answers. The
gateway must back off (never a tight loop), say why in its log, its metrics and its
``/api/v1/upstreams``, and answer the superior's OPTIONS.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.config import load_config
from gb28181gw.sip.auth import Challenge, Credentials
from gb28181gw.sip.message import Request, Response, make_response, parse_message

from .conftest import start_gateway

UPPER = "34010000002000000001"
OURS = "34020000002000000001"
PASSWORD = "upper-pass"

#: What the superior answers to a request: bytes to send back, or None for silence.
Policy = Callable[[Request], bytes | None]


class Superior(asyncio.DatagramProtocol):
    """A UDP superior that records every request and answers by ``policy``."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.requests: list[tuple[float, Request]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.gateway_addr: tuple[str, int] | None = None
        self.responses: list[Response] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        if isinstance(msg, Response):
            self.responses.append(msg)
            return
        self.gateway_addr = addr
        self.requests.append((asyncio.get_running_loop().time(), msg))
        answer = self.policy(msg)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def registers(self) -> list[Request]:
        return [r for _, r in self.requests if r.method == "REGISTER"]


_OPEN: list[Superior] = []


async def superior(policy: Policy) -> Superior:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(lambda: Superior(policy), local_addr=("127.0.0.1", 0))
    _OPEN.append(proto)
    return proto


@pytest.fixture(autouse=True)
async def _close_superiors() -> AsyncIterator[None]:
    yield
    while _OPEN:
        sup = _OPEN.pop()
        if sup.transport is not None:
            sup.transport.close()
    await asyncio.sleep(0)


def status(code: int, *headers: tuple[str, str]) -> Policy:
    def answer(req: Request) -> bytes:
        resp = make_response(req, code, to_tag="sup1")
        for name, value in headers:
            resp.headers.add(name, value)
        return bytes(resp)

    return answer


def digest_superior(password: str = PASSWORD, *, keepalive: int = 200) -> Policy:
    """A superior that challenges every REGISTER once and checks the answer (403 if wrong)."""
    challenge = Challenge(realm="3401000000", nonce="5d41402abc4b2a76b9719d911017c592")

    def answer(req: Request) -> bytes:
        if req.method == "MESSAGE":
            return bytes(make_response(req, keepalive, to_tag="sup1"))
        auth = req.headers.get("authorization")
        if auth is None:
            resp = make_response(req, 401, to_tag="sup1")
            resp.headers.add("WWW-Authenticate", challenge.serialize())
            return bytes(resp)
        ok = Credentials.parse(auth).expected(password, "REGISTER") == Credentials.parse(auth).response
        resp = make_response(req, 200 if ok else 403, to_tag="sup1")
        if ok:
            resp.headers.add("Expires", req.headers.get("expires") or "3600")
            resp.headers.add("Date", "2024-05-06T12:34:56.789")
        return bytes(resp)

    return answer


async def gateway_under(
    tmp_path: Path, port: int, *, settings: dict[str, str] | None = None, **upstream: object
) -> Gateway:
    table = {
        "name": "district",
        "id": UPPER,
        "host": "127.0.0.1",
        "port": port,
        "password": PASSWORD,
        "keepalive_interval": 1,
        "keepalive_misses": 2,
        "retry_interval": 0.5,
        "retry_max": 1.0,
        **upstream,
    }
    lines = ["[[upstream]]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path = tmp_path / "gw.toml"
    path.write_text("\n".join(lines) + "\n")
    overrides = {
        "store.path": str(tmp_path / "gw.db"),
        "gateway.id": OURS,
        "sip.listen": "127.0.0.1",
        "sip.port": "0",
        "admin.port": "0",
        "sip.t1": "0.05",
        "sip.t2": "0.2",
        "sip.t4": "0.5",
        "devices.catalog_on_register": "false",
        "devices.subscribe": "",
        "media.workers": "0",
        **(settings or {}),
    }
    gw = Gateway(load_config(path, env={}, overrides=overrides))
    await gw.start()
    return gw


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def api_upstreams(gw: Gateway) -> list[dict[str, object]]:
    assert gw.admin is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin.port}/api/v1/upstreams", timeout=5) as resp:
        rows: list[dict[str, object]] = json.load(resp)["upstreams"]
    return rows


async def test_registers_with_digest_keeps_alive_and_unregisters(tmp_path: Path) -> None:
    sup = await superior(digest_superior())
    gw = await gateway_under(tmp_path, sup.port, gb_version="3.0")
    try:
        link = gw.upstreams.links["district"]
        await until(lambda: link.last_keepalive is not None)
        first, second = sup.registers()[:2]
        assert first.headers.get("authorization") is None
        assert second.headers.get("x-gb-ver") == "3.0"
        contact = second.headers.get("contact") or ""
        assert contact == f"<sip:{OURS}@127.0.0.1:{gw.stack.port}>"
        assert sup.gateway_addr == ("127.0.0.1", gw.stack.port)  # from our SIP socket
        (row,) = await asyncio.to_thread(api_upstreams, gw)
        assert row["name"] == "district" and row["state"] == "registered" and row["id"] == UPPER
        assert isinstance(row["clock_offset"], float) and row["clock_offset"] < -1e7  # 2024, from its Date
        assert row["last_register"] and row["last_keepalive"]
        assert 'gb28181gw_upstream_registered{upstream="district"} 1.0' in gw.metrics.render().decode()
        # the superior's OPTIONS probe gets 200
        assert sup.transport is not None and sup.gateway_addr is not None
        probe = (
            f"OPTIONS sip:{OURS}@127.0.0.1:{gw.stack.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{sup.port};branch=z9hG4bKprobe1\r\n"
            f"From: <sip:{UPPER}@3401000000>;tag=p1\r\nTo: <sip:{OURS}@3402000000>\r\n"
            "Call-ID: probe-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sup.transport.sendto(probe.encode(), sup.gateway_addr)
        await until(lambda: any(r.headers.get("call-id") == "probe-1" for r in sup.responses))
        (answer,) = [r for r in sup.responses if r.headers.get("call-id") == "probe-1"]
        assert answer.status == 200
    finally:
        await gw.stop()
    last = sup.registers()[-1]
    assert last.headers.get("expires") == "0" and last.headers.get("authorization") is not None
    assert gw.upstreams.links["district"].machine.state.name == "STOPPED"


async def test_wrong_password_backs_off_and_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sup = await superior(digest_superior(password="something-else"))
    with caplog.at_level("WARNING", logger="gb28181gw.upstream"):
        gw = await gateway_under(tmp_path, sup.port)
        try:
            await asyncio.sleep(2.5)
            link = gw.upstreams.links["district"]
            assert not link.machine.registered and link.register_failures >= 2
            # each attempt is a REGISTER and its answer to the challenge: with 0.5 s doubling to a 1 s cap
            # (less jitter) about 3 attempts fit in 2.5 s, never a tight loop
            assert 4 <= len(sup.registers()) <= 10, len(sup.registers())
            (row,) = await asyncio.to_thread(api_upstreams, gw)
            assert row["state"] in ("backing-off", "registering")
            assert "wrong password" in str(row["last_error"])
            text = gw.metrics.render().decode()
            assert 'gb28181gw_upstream_register_failures_total{reason="forbidden",upstream="district"}' in text
            assert 'gb28181gw_upstream_registered{upstream="district"} 0.0' in text
        finally:
            await gw.stop()
    failed = [r for r in caplog.records if r.getMessage() == "upward registration failed"]
    assert failed and all("wrong password" in r.detail for r in failed)  # type: ignore[attr-defined]
    assert failed[0].reason == "forbidden"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("policy", "reason", "words"),
    [
        (status(404), "not-found", "does not know us"),
        (lambda req: b"\x00\x01 garbage, not SIP at all\r\n\r\n", "timeout", "no answer"),
        (lambda req: None, "timeout", "no answer"),
        (status(500), "rejected", "500"),
    ],
    ids=["404", "garbage", "silence", "500"],
)
async def test_a_superior_that_will_not_have_us(tmp_path: Path, policy: Policy, reason: str, words: str) -> None:
    sup = await superior(policy)
    gw = await gateway_under(tmp_path, sup.port)
    try:
        link = gw.upstreams.links["district"]
        await until(lambda: link.register_failures >= 2)
        assert not link.machine.registered
        assert words in link.last_error
        text = gw.metrics.render().decode()
        assert f'gb28181gw_upstream_register_failures_total{{reason="{reason}",upstream="district"}}' in text
        # device registration and the rest of the gateway are unaffected
        assert gw.ready
    finally:
        await gw.stop()
    n = len(sup.registers())
    await asyncio.sleep(0.3)
    assert len(sup.registers()) == n  # stopped: nothing more, and no Expires 0 (never registered)
    assert all(r.headers.get("expires") != "0" for r in sup.registers())


async def test_keepalives_unanswered_mean_lost_then_register_again(tmp_path: Path) -> None:
    answering = True
    base = digest_superior()

    def policy(req: Request) -> bytes | None:
        return base(req) if answering or req.method == "REGISTER" else None

    sup = await superior(policy)
    gw = await gateway_under(tmp_path, sup.port)
    lost: list[tuple[str, str]] = []
    gw.upstreams.on_lost(lambda name, why: lost.append((name, why)))
    try:
        link = gw.upstreams.links["district"]
        await until(lambda: link.last_keepalive is not None)
        registers = len(sup.registers())
        answering = False
        await until(lambda: bool(lost), timeout=15)
        assert lost[0][0] == "district" and "keepalives" in lost[0][1]
        answering = True
        await until(lambda: link.machine.registered and len(sup.registers()) > registers, timeout=10)
        assert link.keepalive_failures >= 2
    finally:
        await gw.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_registers_to_another_gateway_over_udp_and_tcp(tmp_path: Path, transport: str) -> None:
    district = await start_gateway(
        **{
            "gateway.id": UPPER,
            "registrar.accept_platforms": "true",
            "registrar.password": PASSWORD,
        }
    )
    try:
        site = await gateway_under(tmp_path, district.stack.port, transport=transport)
        try:
            link = site.upstreams.links["district"]
            await until(lambda: link.last_keepalive is not None)
            record = district.registrar.devices.get(OURS)
            assert record is not None and record.online and str(record.transport) == transport.upper()
        finally:
            await site.stop()
        record = district.registrar.devices.get(OURS)
        assert record is not None and not record.online  # we unregistered on the way out
    finally:
        await district.stop()


async def test_302_redirect_is_followed_to_the_assigned_server(tmp_path: Path) -> None:
    assigned = await superior(digest_superior())
    redirector = await superior(
        status(302, ("Contact", f"<sip:34010000002000000002@127.0.0.1:{assigned.port}>"), ("Expires", "3600"))
    )
    gw = await gateway_under(tmp_path, redirector.port)
    try:
        link = gw.upstreams.links["district"]
        await until(lambda: link.last_keepalive is not None)
        assert len(redirector.registers()) == 1
        assert [r.uri for r in assigned.registers()] == [f"sip:34010000002000000002@127.0.0.1:{assigned.port}"] * 2
        (row,) = await asyncio.to_thread(api_upstreams, gw)
        assert row["state"] == "registered" and row["id"] == "34010000002000000002"
        assert row["address"] == f"udp:127.0.0.1:{assigned.port}"
        assert any(r.method == "MESSAGE" for _, r in assigned.requests)
    finally:
        await gw.stop()
    assert assigned.registers()[-1].headers.get("expires") == "0"


async def test_who_sent_a_message_is_asked_of_the_upstreams_only_when_a_superior_is_configured(
    tmp_path: Path,
) -> None:
    """With superiors their service claims their IDs (asked before the registrar); with none it would
    claim nobody, and is not asked at all (the links are fixed at start-up)."""
    from gb28181gw.net.router import Role
    from gb28181gw.sip.peer import Peer

    sup = await superior(digest_superior())
    gw = await gateway_under(tmp_path, sup.port)
    plain = await start_gateway()
    try:
        at_superior = Peer("UDP", "127.0.0.1", sup.port)
        assert [r.owner for r in gw.stack.router._resolvers] == ["upstreams", "registrar"]
        assert gw.stack.router.role_of(UPPER, at_superior) is Role.PLATFORM
        assert [r.owner for r in plain.stack.router._resolvers] == ["registrar"]
        assert plain.upstreams._role(UPPER, at_superior) is None  # what it would have said
        device = "34020000001320000077"
        assert plain.stack.router.role_of(device, at_superior) is gw.stack.router.role_of(device, at_superior) is None
    finally:
        await plain.stop()
        await gw.stop()
