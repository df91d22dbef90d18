"""The admin API cannot be driven by a web page on the same host (issue 10, defects 7 and 14)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from gb28181gw.app import Gateway
from tests.hostile.conftest import start_gateway


def call(
    gw: Gateway, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    assert gw.admin is not None
    url = f"http://127.0.0.1:{gw.admin.port}{path}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


JSON = {"Content-Type": "application/json"}
DEVICE = json.dumps({"device_id": "34020000001320000001", "password": "x"}).encode()


async def test_a_cross_site_text_plain_post_is_refused(gateway: Gateway) -> None:
    # what <form enctype="text/plain"> or fetch(no-cors) sends without any preflight
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, body = await asyncio.to_thread(
            call, gateway, "POST", "/api/v1/devices", DEVICE, {"Content-Type": content_type}
        )
        assert status == 415 and "application/json" in str(body["error"])
    status, _ = await asyncio.to_thread(call, gateway, "POST", "/api/v1/devices/34020000001320000001/catalog")
    assert status == 415  # a body-less POST is a "simple" request too
    assert "34020000001320000001" not in gateway.registrar.devices
    # the CLI's way still works
    status, _ = await asyncio.to_thread(call, gateway, "POST", "/api/v1/devices", DEVICE, JSON)
    assert status == 201 and "34020000001320000001" in gateway.registrar.devices


async def test_a_foreign_origin_is_refused_even_with_json(gateway: Gateway) -> None:
    headers = {**JSON, "Origin": "http://evil.example"}
    status, body = await asyncio.to_thread(call, gateway, "POST", "/api/v1/devices", DEVICE, headers)
    assert status == 403 and "evil.example" in str(body["error"])
    assert "34020000001320000001" not in gateway.registrar.devices


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8028", "127.0.0.1.evil.example"])
async def test_a_rebound_host_name_is_refused(gateway: Gateway, host: str) -> None:
    status, body = await asyncio.to_thread(call, gateway, "GET", "/api/v1/devices", None, {"Host": host})
    assert status == 403 and "allowed_hosts" in str(body["error"])
    status, _ = await asyncio.to_thread(call, gateway, "POST", "/api/v1/devices", DEVICE, {**JSON, "Host": host})
    assert status == 403 and "34020000001320000001" not in gateway.registrar.devices


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8028", "127.0.0.1:8028", "[::1]:8028", "10.1.2.3"])
async def test_addresses_and_localhost_are_served(gateway: Gateway, host: str) -> None:
    assert (await asyncio.to_thread(call, gateway, "GET", "/api/v1/devices", None, {"Host": host}))[0] == 200


async def test_a_configured_name_is_served() -> None:
    gw = await start_gateway(**{"admin.allowed_hosts": "nvr-gw.site.local"})
    try:
        headers = {"Host": "nvr-gw.site.local:8028"}
        assert (await asyncio.to_thread(call, gw, "GET", "/api/v1/devices", None, headers))[0] == 200
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/ptz", b"[1, 2, 3]"),
        ("/api/v1/control", b'"just a string"'),
        ("/api/v1/devices", b"[]"),
        ("/api/v1/ptz", b"[" * 30_000 + b"]" * 30_000),  # deeper than the parser can recurse
        ("/api/v1/devices", b"{" * 50_000),
    ],
)
async def test_odd_bodies_get_400_not_500(gateway: Gateway, path: str, body: bytes) -> None:
    status, answer = await asyncio.to_thread(call, gateway, "POST", path, body, JSON)
    assert status == 400 and answer["error"]


async def test_an_oversized_body_is_413_json(gateway: Gateway) -> None:
    status, answer = await asyncio.to_thread(call, gateway, "POST", "/api/v1/ptz", b" " * 100_000, JSON)
    assert status == 413 and "bytes" in str(answer["error"])


async def test_an_oversized_listing_limit_is_400(gateway: Gateway) -> None:
    for limit in ("99999999999999999999999", "0", "-1", "ten"):
        status, _ = await asyncio.to_thread(call, gateway, "GET", f"/api/v1/alarms?limit={limit}")
        assert status == 400
    assert (await asyncio.to_thread(call, gateway, "GET", "/api/v1/alarms?limit=10000"))[0] == 200


def _play(host: str, ttl: object = None, port: int = 40000) -> bytes:
    consumer: dict[str, object] = {"transport": "udp", "host": host, "port": port}
    if ttl is not None:
        consumer["ttl"] = ttl
    return json.dumps({"channel_id": "34020000001310000001", "consumer": consumer}).encode()


async def test_streams_go_only_to_the_requester_loopback_or_configured_networks(gateway: Gateway) -> None:
    # 192.0.2.10 is a documentation address: the refusal comes before anything is sent anywhere
    status, body = await asyncio.to_thread(call, gateway, "POST", "/api/v1/streams", _play("192.0.2.10"), JSON)
    assert status == 403 and "consumer_networks" in str(body["error"])
    # loopback (the requester here) passes the check and meets the next one: no such channel
    assert (await asyncio.to_thread(call, gateway, "POST", "/api/v1/streams", _play("127.0.0.1"), JSON))[0] == 404
    gw = await start_gateway(**{"media.consumer_networks": "192.0.2.0/24"})
    try:
        assert (await asyncio.to_thread(call, gw, "POST", "/api/v1/streams", _play("192.0.2.10"), JSON))[0] == 404
    finally:
        await gw.stop()


@pytest.mark.parametrize(("ttl", "port"), [("nan", 40000), ("inf", 40000), (-5, 40000), (0, 40000), (None, 70000)])
async def test_consumer_ttl_and_port_must_make_sense(gateway: Gateway, ttl: object, port: int) -> None:
    body = _play("127.0.0.1", ttl, port)
    status, answer = await asyncio.to_thread(call, gateway, "POST", "/api/v1/streams", body, JSON)
    assert status == 400 and ("ttl" in str(answer["error"]) or "port" in str(answer["error"]))


async def test_control_of_a_device_that_never_answers_ends_at_the_query_timeout() -> None:
    from tests.hostile.test_hijack import DEVICE, Peer
    from tests.hostile.test_persistence import register

    gw = await start_gateway(**{"devices.query_timeout": "1"})
    camera = Peer("127.0.0.1")  # registers, then never answers anything
    try:
        assert (await asyncio.to_thread(camera.exchange, gw.stack.port, register(DEVICE, 1))).startswith(b"SIP/2.0 200")
        body = json.dumps({"target": DEVICE, "name": "TeleBoot", "value": "Boot"}).encode()
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, answer = await asyncio.to_thread(call, gw, "POST", "/api/v1/control", body, JSON)
        assert status == 504 and "did not answer" in str(answer["error"])  # issue 11: a timeout is 504
        assert loop.time() - started < 5  # not Timer F's 32 s
    finally:
        camera.close()
        await gw.stop()


async def test_numbers_too_big_for_a_float_are_400_json_not_500_text(gateway: Gateway) -> None:
    big = "9" * 400  # valid JSON: an integer no float holds
    prune = f'{{"older_than": {big}, "dry_run": true}}'.encode()
    status, body = await asyncio.to_thread(call, gateway, "POST", "/api/v1/devices/prune", prune, JSON)
    assert status == 400 and "older_than" in str(body["error"])
    renew = f'{{"ttl": {big}}}'.encode()
    status, body = await asyncio.to_thread(call, gateway, "PATCH", "/api/v1/streams/s1/consumers/c1", renew, JSON)
    assert status == 400 and "ttl" in str(body["error"])


async def test_a_bug_in_a_route_is_still_the_one_json_error(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[object]:
        raise RuntimeError("boom")

    monkeypatch.setattr(gateway.registrar, "bans", broken)
    status, body = await asyncio.to_thread(call, gateway, "GET", "/api/v1/bans")
    assert (
        status == 500 and body["error"] == "GET /api/v1/bans failed inside the gateway" and "log" in str(body["hint"])
    )


async def test_a_huge_consumer_ttl_or_alarm_limit_is_400(gateway: Gateway) -> None:
    play = json.dumps({"channel_id": "34020000001310000001", "consumer": {"port": 9000}}).replace(
        '"port": 9000', '"port": 9000, "ttl": ' + "9" * 400
    )
    status, body = await asyncio.to_thread(call, gateway, "POST", "/api/v1/streams", play.encode(), JSON)
    assert status == 400, body
    status, body = await asyncio.to_thread(call, gateway, "GET", "/api/v1/alarms?limit=" + "9" * 5000)
    assert status == 400 and "limit" in str(body["error"])
