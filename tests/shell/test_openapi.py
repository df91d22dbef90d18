"""The OpenAPI document (``src/gb28181gw/admin/openapi.json``) against a running gateway.

It must list exactly the routes of the gateway's router, and every real answer of every route
— a valid request and at least one invalid one each — must match the schema it documents for
that status (JSON Schema 2020-12, its ``$ref`` resolved inside the document). One gateway serves
the whole module; its device is a loopback socket that registers and answers what the routes
ask of it (Catalog, DeviceInfo, DeviceStatus, RecordInfo, DeviceControl, INVITE, INFO, BYE).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import tomllib
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gb28181gw.access import Role
from gb28181gw.admin import MAX_BODY
from gb28181gw.admin.ledger import MAX_IMPORT_BODY
from gb28181gw.admin.openapi import document
from gb28181gw.app import Gateway
from gb28181gw.gb.model import Alarm
from gb28181gw.sip.message import Request, make_response, parse_message
from tests.helpers import ROOT, media_port
from tests.hostile.test_persistence import register

from .conftest import start_gateway_from

#: the async tests share the module's gateway, so its event loop
shared_loop = pytest.mark.asyncio(loop_scope="module")

NVR = "34020000001180000001"
CH = "34020000001310000001"
PROVISIONED = "34020000001320000002"  # added by the API, never registers
UNKNOWN = "34020000001320009999"
DOC = json.loads(document())
_URI = "urn:gb28181gw:openapi"


def strict(doc: Any) -> Any:
    """``doc`` with every object schema closed (``additionalProperties: false``), for checking answers.

    The published document leaves objects open, so a client validating with it accepts fields a
    later version adds; this test must not: an answer's renamed or undocumented field fails it.
    ``allOf: [{$ref: X}, {more properties}]`` is merged into one object first, or X, closed, would
    refuse the properties the second part adds.
    """
    schemas = doc.get("components", {}).get("schemas", {})

    def close(node: Any) -> Any:
        if isinstance(node, list):
            return [close(n) for n in node]
        if not isinstance(node, dict):
            return node
        node = {k: close(v) for k, v in node.items()}
        if "allOf" in node and all("$ref" in p or "properties" in p for p in node["allOf"]):
            merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
            for part in node.pop("allOf"):
                if "$ref" in part:
                    part = close(schemas[part["$ref"].rsplit("/", 1)[1]])
                merged["properties"].update(part.get("properties", {}))
                merged["required"] += part.get("required", [])
            node.update(merged)
        if "properties" in node and "additionalProperties" not in node and "patternProperties" not in node:
            node["additionalProperties"] = False
        return node

    return close(doc)


_REGISTRY = Registry().with_resource(_URI, Resource.from_contents(strict(DOC), default_specification=DRAFT202012))


def _operations() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in DOC["paths"].items() for method in ops}


def _routes(gw: Gateway) -> set[tuple[str, str]]:
    assert gw.admin is not None
    # aiohttp adds HEAD beside each add_get: the same answer without a body, not an operation of ours
    return {(r.method, r.resource.canonical) for r in gw.admin.app.router.routes() if r.method != "HEAD" and r.resource}


class FakeDevice(asyncio.DatagramProtocol):
    """A device's SIP side: answers each query MESSAGE with 200 and its Response, INVITE with an
    SDP answer, INFO with a MANSRTSP 200 and BYE with 200."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.registered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent = 0
        #: CmdTypes answered 403 (the gateway's 502), and answered 200 but never with a Response (504)
        self.refuse: set[str] = set()
        self.mute: set[str] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        msg = parse_message(data)
        if not isinstance(msg, Request):
            if data.startswith(b"SIP/2.0 200") and b"REGISTER" in data and not self.registered.done():
                self.registered.set_result(None)
            return
        if msg.method == "MESSAGE":
            kind = re.search(rb"<CmdType>(\w+)</CmdType>", msg.body)
            kind_name = kind[1].decode() if kind else ""
            if kind_name in self.refuse:
                self.transport.sendto(make_response(msg, 403, to_tag="fake").serialize(), addr)
                return
            self.transport.sendto(make_response(msg, 200, to_tag="fake").serialize(), addr)
            answer = self._answer(msg.body) if kind_name not in self.mute else ""
            if answer:
                self.transport.sendto(self._message(answer), addr)
        elif msg.method == "INVITE":
            resp = make_response(msg, 200, to_tag="fake-dialog")
            resp.headers.add("Contact", f"<sip:{CH}@127.0.0.1:{self.transport.get_extra_info('sockname')[1]}>")
            resp.headers.add("Content-Type", "application/sdp")
            ssrc = re.search(rb"y=(\d+)", msg.body)
            resp.body = (
                f"v=0\r\no={CH} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\n"
                f"y={ssrc[1].decode() if ssrc else '0100000001'}\r\nf=\r\n"
            ).encode()
            self.transport.sendto(resp.serialize(), addr)
        elif msg.method == "INFO":
            cseq = re.search(rb"CSeq:\s*(\d+)", msg.body)
            resp = make_response(msg, 200)
            resp.headers.add("Content-Type", "Application/MANSRTSP")
            resp.body = f"RTSP/1.0 200 OK\r\nCSeq: {cseq[1].decode() if cseq else '1'}\r\n\r\n".encode()
            self.transport.sendto(resp.serialize(), addr)
        elif msg.method in ("BYE", "NOTIFY", "OPTIONS"):
            self.transport.sendto(make_response(msg, 200).serialize(), addr)

    def _answer(self, body: bytes) -> str:
        cmd, sn = re.search(rb"<CmdType>(\w+)</CmdType>", body), re.search(rb"<SN>(\d+)</SN>", body)
        if cmd is None or sn is None or b"<Query>" not in body and b"GuardCmd" not in body:
            return ""  # PTZ and other controls: the 200 is the whole answer
        kind, n = cmd[1].decode(), sn[1].decode()
        head = f"<CmdType>{kind}</CmdType><SN>{n}</SN>"
        if kind == "Catalog":
            return (
                f'{head}<DeviceID>{NVR}</DeviceID><SumNum>1</SumNum><DeviceList Num="1"><Item><DeviceID>{CH}</DeviceID>'
                f"<Name>大门口</Name><Manufacturer>Vendor</Manufacturer><Parental>0</Parental><ParentID>{NVR}</ParentID>"
                "<Status>ON</Status></Item></DeviceList>"
            )
        if kind == "DeviceInfo":
            return f"{head}<DeviceID>{NVR}</DeviceID><Result>OK</Result><Manufacturer>Vendor</Manufacturer><Channel>1</Channel>"
        if kind == "DeviceStatus":
            return f"{head}<DeviceID>{NVR}</DeviceID><Result>OK</Result><Online>ONLINE</Online><Status>OK</Status>"
        if kind == "RecordInfo":
            return (
                f'{head}<DeviceID>{CH}</DeviceID><Name>大门口</Name><SumNum>1</SumNum><RecordList Num="1"><Item>'
                f"<DeviceID>{CH}</DeviceID><Name>大门口</Name><StartTime>2024-05-06T08:00:00</StartTime>"
                "<EndTime>2024-05-06T09:00:00</EndTime><Secrecy>0</Secrecy><Type>time</Type></Item></RecordList>"
            )
        if kind == "DeviceControl":
            return f"{head}<DeviceID>{NVR}</DeviceID><Result>OK</Result>"
        return ""

    def _message(self, inner: str) -> bytes:
        self.sent += 1
        body = f'<?xml version="1.0" encoding="UTF-8"?>\r\n<Response>{inner}</Response>\r\n'.encode()
        port = self.transport.get_extra_info("sockname")[1] if self.transport else 0
        head = (
            "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKans{self.sent}\r\n"
            f"From: <sip:{NVR}@3402000000>;tag=ans{self.sent}\r\nTo: <sip:34020000002000000001@3402000000>\r\n"
            f"Call-ID: answer-{self.sent}@127.0.0.1\r\nCSeq: {self.sent} MESSAGE\r\n"
            "Content-Type: Application/MANSCDP+xml\r\nMax-Forwards: 70\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


@dataclass
class Site:
    gw: Gateway
    http: aiohttp.ClientSession
    base: str
    device: FakeDevice
    #: (method, route) → statuses seen, for the coverage check
    seen: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    tmp: Path = tmp_path_factory.mktemp("openapi")
    config = tmp / "gw.toml"
    # a superior nobody answers: its routes answer all the same
    config.write_text('[[upstream]]\nname = "district"\nid = "34020000002000000009"\nhost = "127.0.0.1"\nport = 9\n')
    gw = await start_gateway_from(
        config,
        {
            "store.path": str(tmp / "gw.db"),
            "media.port_min": str(media_port(1000)),
            "media.port_max": str(media_port(1099)),
            "media.linger": "0",
            # the 504 below waits this long for a muted device
            "devices.query_timeout": "1",
        },
    )
    loop = asyncio.get_running_loop()
    transport, device = await loop.create_datagram_endpoint(FakeDevice, local_addr=("127.0.0.1", 0))
    transport.sendto(register(NVR, 1), ("127.0.0.1", gw.stack.port))
    await asyncio.wait_for(device.registered, 5)
    assert gw.admin is not None
    http = aiohttp.ClientSession()
    try:
        yield Site(gw, http, f"http://127.0.0.1:{gw.admin.port}", device)
    finally:
        await http.close()
        await gw.stop()
        transport.close()


def _schema_pointer(method: str, route: str, status: int, content_type: str) -> str | None:
    """The JSON pointer (in the document) of the schema for this answer, or None if it documents none."""
    responses = DOC["paths"][route][method.lower()]["responses"]
    key = str(status)
    if key not in responses:
        raise AssertionError(f"{method} {route}: status {status} is not documented")
    pointer = f"/paths/{route.replace('~', '~0').replace('/', '~1')}/{method.lower()}/responses/{key}"
    answer = responses[key]
    if "$ref" in answer:
        pointer = answer["$ref"].removeprefix("#")
        answer = DOC
        for part in pointer.strip("/").split("/"):
            answer = answer[part]
    content = answer.get("content", {})
    if content_type not in content:
        raise AssertionError(f"{method} {route} {status}: content type {content_type} is not documented")
    return f"{pointer}/content/{content_type.replace('/', '~1')}/schema"


async def call(
    site: Site,
    method: str,
    route: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    ctype: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Send one request of the operation ``method`` ``route``; check its answer against the document."""
    headers = dict(headers or {})
    if body is not None or raw is not None:
        headers["Content-Type"] = ctype or "application/json"
    data: Any = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None and len(data) > 1024 * 1024:
        data = io.BytesIO(data)  # aiohttp warns of a large bytes body (it could block the loop)
    async with site.http.request(method, site.base + path, data=data, headers=headers) as resp:
        content = await resp.read()
        status, content_type = resp.status, resp.content_type
        if status == 401 and "WWW-Authenticate" not in resp.headers:
            site.failures.append(f"{method} {path} → 401 without WWW-Authenticate")
    site.seen.setdefault((method, route), set()).add(status)
    try:
        pointer = _schema_pointer(method, route, status, content_type)
    except AssertionError as exc:
        site.failures.append(f"{exc}: {content[:300]!r}")
        return status, None
    parsed: Any = json.loads(content) if content_type == "application/json" else content.decode("utf-8", "replace")
    schema = {"$ref": _URI + "#" + urllib.parse.quote(pointer or "", safe="/~")}
    errors = sorted(Draft202012Validator(schema, registry=_REGISTRY).iter_errors(parsed), key=str)
    for error in errors[:3]:
        where = "/".join(str(p) for p in error.absolute_path)
        site.failures.append(f"{method} {path} → {status}: at {where or 'the top'}: {error.message[:200]}")
    return status, parsed


@shared_loop
async def test_every_route_is_documented_and_every_operation_is_a_route(site: Site) -> None:
    routes, operations = _routes(site.gw), _operations()
    assert routes - operations == set(), "routes the document lacks"
    assert operations - routes == set(), "operations no route serves"


@shared_loop
async def test_the_document_names_the_role_each_route_enforces(site: Site) -> None:
    assert site.gw.admin is not None
    enforced = {(r.method, r.resource.canonical): r for r in site.gw.admin.app.router.routes() if r.resource}
    for method, path, role in site.gw.admin.routes():
        canonical = next(c for (m, c), r in enforced.items() if m == method and r.resource.canonical == c
                         and _matches(c, path))  # fmt: skip
        assert DOC["paths"][canonical][method.lower()]["x-role"] == role.value, f"{method} {path}"


def _matches(canonical: str, path: str) -> bool:
    # aiohttp's canonical form drops a placeholder's regex ({id:[0-9]{20}} → {id})
    return re.sub(r"\{(\w+):[^/]*\}", r"{\1}", path) == canonical


@shared_loop
async def test_the_gateway_serves_the_document(site: Site) -> None:
    status, body = await call(site, "GET", "/api/v1/openapi.json", "/api/v1/openapi.json")
    assert status == 200 and body == DOC
    assert body["openapi"].startswith("3.1")


def test_the_wheel_ships_the_document() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "admin/openapi.json" in project["tool"]["setuptools"]["package-data"]["gb28181gw"]


def test_the_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import OpenAPIV31SpecValidator

    assert [str(e)[:300] for e in OpenAPIV31SpecValidator(DOC).iter_errors()] == []
    # and it can fail: an answer without its description, an operation with a status that is no status
    broken = json.loads(document())
    del broken["paths"]["/healthz"]["get"]["responses"]["200"]["description"]
    broken["paths"]["/readyz"]["get"]["responses"]["2000"] = {"description": "no such status"}
    assert len(list(OpenAPIV31SpecValidator(broken).iter_errors())) >= 2


def test_the_document_is_valid_openapi_and_says_who_may_do_what() -> None:
    Draft202012Validator.check_schema({"$defs": DOC["components"]["schemas"]})
    roles = {"viewer", "operator", "admin"}
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            if path in ("/healthz", "/readyz"):
                assert op["security"] == [] and "x-role" not in op, where
                continue
            assert op["x-role"] in roles, where
            assert {"401", "403"} <= op["responses"].keys(), where
            if method == "get" and not path.startswith(("/api/v1/tokens", "/api/v1/audit")):
                assert (
                    op["x-role"] == "viewer"
                    or path.startswith("/api/v1/devices/{device_id}/{what}")
                    or (path.endswith("/records"))
                ), where
            placeholders = set(re.findall(r"\{(\w+)\}", path))
            assert placeholders == {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}, where
            for status, answer in op["responses"].items():
                assert status.isdigit() and ("$ref" in answer or "description" in answer), where


@shared_loop
async def test_every_route_answers_as_documented(site: Site) -> None:
    gw = site.gw
    # --- health, status, metrics
    assert (await call(site, "GET", "/healthz", "/healthz"))[0] == 200
    assert (await call(site, "GET", "/readyz", "/readyz"))[0] == 200
    assert (await call(site, "GET", "/metrics", "/metrics"))[0] == 200
    assert (await call(site, "GET", "/api/v1/status", "/api/v1/status"))[0] == 200

    # --- devices
    r = "/api/v1/devices"
    assert (await call(site, "POST", r, r, {"device_id": PROVISIONED, "password": "s3cret", "name": "南门"}))[0] == 201
    assert (await call(site, "POST", r, r, {"device_id": PROVISIONED, "stream_mode": "default"}))[0] == 200
    assert (await call(site, "POST", r, r, {"device_id": "123"}))[0] == 400
    assert (await call(site, "POST", r, r, raw=b"device_id=1", ctype="text/plain"))[0] == 415
    assert (await call(site, "GET", r, r + "?state=online"))[0] == 200
    r = "/api/v1/devices/{device_id}"
    assert (await call(site, "GET", r, f"/api/v1/devices/{NVR}"))[0] == 200
    assert (await call(site, "GET", r, f"/api/v1/devices/{UNKNOWN}"))[0] == 404
    r = "/api/v1/devices/{device_id}/catalog"
    assert (await call(site, "POST", r, f"/api/v1/devices/{NVR}/catalog", {}))[0] == 200
    assert (await call(site, "POST", r, f"/api/v1/devices/{PROVISIONED}/catalog", {}))[0] == 409
    r = "/api/v1/devices/{device_id}/{what}"
    assert (await call(site, "GET", r, f"/api/v1/devices/{NVR}/info"))[0] == 200
    assert (await call(site, "GET", r, f"/api/v1/devices/{NVR}/status"))[0] == 200
    assert (await call(site, "GET", r, f"/api/v1/devices/{UNKNOWN}/info"))[0] == 404
    # a device that refuses (502) or never answers (504)
    site.device.refuse, site.device.mute = {"DeviceInfo", "DeviceControl"}, {"DeviceStatus"}
    assert (await call(site, "GET", r, f"/api/v1/devices/{NVR}/info"))[0] == 502
    assert (await call(site, "GET", r, f"/api/v1/devices/{NVR}/status"))[0] == 504
    control = {"target": NVR, "name": "GuardCmd", "value": "SetGuard"}
    assert (await call(site, "POST", "/api/v1/control", "/api/v1/control", control))[0] == 502
    site.device.refuse, site.device.mute = set(), set()
    r = "/api/v1/channels"
    assert (await call(site, "GET", r, r))[0] == 200
    assert (await call(site, "GET", r, f"{r}?device={NVR}"))[0] == 200
    assert (await call(site, "GET", r, f"{r}?device={UNKNOWN}"))[0] == 404
    r = "/api/v1/channels/{channel_id}/records"
    span = "from=2024-05-06T00:00:00&to=2024-05-06T23:59:59"
    assert (await call(site, "GET", r, f"/api/v1/channels/{CH}/records?{span}"))[0] == 200
    assert (await call(site, "GET", r, f"/api/v1/channels/{CH}/records?from=yesterday"))[0] == 400
    r = "/api/v1/control"
    assert (await call(site, "POST", r, r, {"target": NVR, "name": "GuardCmd", "value": "SetGuard"}))[0] == 200
    assert (await call(site, "POST", r, r, {"target": NVR}))[0] == 400
    r = "/api/v1/ptz"
    assert (await call(site, "POST", r, r, {"channel_id": CH, "kind": "move", "action": "left"}))[0] == 200
    assert (await call(site, "POST", r, r, {"channel_id": CH, "kind": "somersault"}))[0] == 400
    r = "/api/v1/alarms"
    await gw.store.save_alarms(
        [Alarm(CH, NVR, "1", "5", "2", "2024-05-06T08:00:00", "越界", 1.7e9, {"Longitude": "0"})]
    )
    status, listed = await call(site, "GET", r, r)
    assert status == 200 and listed["alarms"], listed  # an empty list would check no alarm's schema
    assert (await call(site, "GET", r, r + "?limit=0"))[0] == 400
    r = "/api/v1/devices/{id}/doctor"
    assert (await call(site, "POST", r, f"/api/v1/devices/{NVR}/doctor", {"checks": ["device_info"]}))[0] == 200
    assert (await call(site, "POST", r, f"/api/v1/devices/{NVR}/doctor", {"channel": 7}))[0] == 400
    r = "/api/v1/devices/prune"
    assert (await call(site, "POST", r, r, {"older_than": 1e9, "dry_run": True}))[0] == 200
    assert (await call(site, "POST", r, r, {"older_than": -1}))[0] == 400

    # --- bans and refusals
    bans = gw.registrar.registrar.bans
    for _ in range(bans.limit):
        bans.fail("ip:192.0.2.7", gw.registrar._now()[0], address="192.0.2.7", reason="bad password")
    assert (await call(site, "GET", "/api/v1/bans", "/api/v1/bans"))[0] == 200
    r = "/api/v1/bans/{key}"
    assert (await call(site, "DELETE", r, "/api/v1/bans/ip:192.0.2.7"))[0] == 200
    assert (await call(site, "DELETE", r, "/api/v1/bans/ip:192.0.2.7"))[0] == 404
    r = "/api/v1/devices/{device_id}/bans"
    assert (await call(site, "DELETE", r, f"/api/v1/devices/{NVR}/bans"))[0] == 200
    assert (await call(site, "DELETE", r, f"/api/v1/devices/{UNKNOWN}/bans"))[0] == 404
    assert (await call(site, "GET", "/api/v1/refused", "/api/v1/refused"))[0] == 200

    # --- live streams and their consumers
    r = "/api/v1/streams"
    status, live = await call(site, "POST", r, r, {"channel_id": CH, "consumer": {"port": 9}})
    assert status == 201, live
    assert (await call(site, "POST", r, r, {"channel_id": "x"}))[0] == 400
    assert (await call(site, "POST", r, r, {"channel_id": CH, "consumer": {"host": "192.0.2.1", "port": 9}}))[0] == 403
    assert (await call(site, "GET", r, r))[0] == 200
    sid, one = live["id"], "/api/v1/streams/{stream_id}"
    assert (await call(site, "GET", one, f"/api/v1/streams/{sid}"))[0] == 200
    assert (await call(site, "GET", one, "/api/v1/streams/nope"))[0] == 404
    r = "/api/v1/streams/{stream_id}/consumers"
    status, joined = await call(site, "POST", r, f"/api/v1/streams/{sid}/consumers", {"consumer": {"port": 10}})
    assert status == 201, joined
    assert (await call(site, "POST", r, f"/api/v1/streams/{sid}/consumers", {"consumer": {"port": 0}}))[0] == 400
    r = "/api/v1/streams/{stream_id}/consumers/{consumer_id}"
    cid = joined["consumer"]["id"]
    assert (await call(site, "PATCH", r, f"/api/v1/streams/{sid}/consumers/{cid}", {"ttl": 30}))[0] == 200
    assert (await call(site, "PATCH", r, f"/api/v1/streams/{sid}/consumers/{cid}", {"ttl": -1}))[0] == 400
    assert (await call(site, "DELETE", r, f"/api/v1/streams/{sid}/consumers/{cid}"))[0] == 200
    assert (await call(site, "DELETE", r, f"/api/v1/streams/{sid}/consumers/{cid}"))[0] == 404
    r = "/api/v1/streams/{stream_id}/control"
    assert (await call(site, "POST", r, f"/api/v1/streams/{sid}/control", {"action": "pause"}))[0] == 400  # live
    assert (await call(site, "DELETE", one, f"/api/v1/streams/{sid}"))[0] == 200
    assert (await call(site, "GET", one, f"/api/v1/streams/{sid}"))[0] == 410

    # --- a playback and its controls
    r = "/api/v1/playbacks"
    asked = {"channel_id": CH, "kind": "playback", "start": "2024-05-06T08:00:00", "end": "2024-05-06T09:00:00"}
    status, playback = await call(site, "POST", r, r, {**asked, "consumer": {"port": 11}})
    assert status == 201, playback
    assert (await call(site, "POST", r, r, {**asked, "kind": "rewind"}))[0] == 400
    r, pid = "/api/v1/streams/{stream_id}/control", playback["id"]
    assert (await call(site, "POST", r, f"/api/v1/streams/{pid}/control", {"action": "pause"}))[0] == 200
    assert (await call(site, "POST", r, f"/api/v1/streams/{pid}/control", {"action": "fly"}))[0] == 400
    assert (await call(site, "DELETE", one, f"/api/v1/streams/{pid}"))[0] == 200
    assert (await call(site, "DELETE", one, "/api/v1/streams/nope"))[0] == 404

    # --- superiors
    assert (await call(site, "GET", "/api/v1/upstreams", "/api/v1/upstreams"))[0] == 200
    assert (await call(site, "GET", "/api/v1/nodes", "/api/v1/nodes"))[0] == 200  # SQLite: no nodes
    r = "/api/v1/upstreams/{name}/shares"
    assert (await call(site, "GET", r, "/api/v1/upstreams/district/shares"))[0] == 200
    assert (await call(site, "GET", r, "/api/v1/upstreams/nowhere/shares"))[0] == 404
    assert (await call(site, "POST", r, "/api/v1/upstreams/district/shares", {"ids": [CH]}))[0] == 200
    assert (await call(site, "POST", r, "/api/v1/upstreams/district/shares", {"ids": 1}))[0] == 400
    assert (await call(site, "DELETE", r, "/api/v1/upstreams/district/shares", {"ids": [CH]}))[0] == 200
    assert (await call(site, "DELETE", r, "/api/v1/upstreams/nowhere/shares", {"ids": [CH]}))[0] == 404
    r = "/api/v1/upstreams/{name}/overrides"
    assert (await call(site, "GET", r, "/api/v1/upstreams/district/overrides"))[0] == 200
    assert (await call(site, "GET", r, "/api/v1/upstreams/nowhere/overrides"))[0] == 404
    r = "/api/v1/upstreams/{name}/overrides/{channel_id}"
    at = f"/api/v1/upstreams/district/overrides/{CH}"
    assert (await call(site, "PUT", r, at, {"name": "北门"}))[0] == 200
    assert (await call(site, "PUT", r, at, {"name": 7}))[0] == 400
    assert (await call(site, "DELETE", r, at))[0] == 200
    assert (await call(site, "DELETE", r, at))[0] == 404

    # --- the ledger and its forms
    r = "/api/v1/ledger"
    assert (await call(site, "GET", r, r))[0] == 200
    assert (await call(site, "GET", r, r + "?kind=every"))[0] == 400
    r, at = "/api/v1/ledger/{id}", f"/api/v1/ledger/{CH}"
    assert (await call(site, "PATCH", r, at, {"fields": {"location": "北门岗亭"}}))[0] == 200
    assert (await call(site, "PATCH", r, at, {"fields": 1}))[0] == 400
    assert (await call(site, "GET", r, at))[0] == 200
    assert (await call(site, "GET", r, f"/api/v1/ledger/{UNKNOWN}"))[0] == 404
    assert (await call(site, "DELETE", r, at))[0] == 200
    assert (await call(site, "DELETE", r, f"/api/v1/ledger/{UNKNOWN}"))[0] == 404
    r = "/api/v1/ledger/import"
    rows = [{"line": 2, "id": CH, "values": {"location": "北门岗亭"}}]
    assert (await call(site, "POST", r, r, {"rows": rows, "dry_run": True}))[0] == 200
    assert (await call(site, "POST", r, r, {"rows": 1}))[0] == 400
    r = "/api/v1/devices/{device_id}"
    assert (await call(site, "DELETE", r, f"/api/v1/devices/{PROVISIONED}"))[0] == 200
    assert (await call(site, "DELETE", r, f"/api/v1/devices/{PROVISIONED}"))[0] == 404
    status, forms = await call(site, "GET", "/api/v1/ledger/forms", "/api/v1/ledger/forms")
    assert status == 200 and forms["forms"], forms
    form = forms["forms"][0]["name"]
    r = "/api/v1/ledger/check"
    assert (await call(site, "GET", r, f"{r}?form={urllib.parse.quote(form)}"))[0] == 200
    assert (await call(site, "GET", r, r))[0] == 400
    r = "/api/v1/ledger/export"
    assert (await call(site, "GET", r, f"{r}?form={urllib.parse.quote(form)}&format=csv"))[0] in (200, 422)
    assert (await call(site, "GET", r, f"{r}?form={urllib.parse.quote(form)}&format=pdf"))[0] == 400

    # --- tokens, whoami and the audit trail: in the router once the other issue-15 branches are merged
    routes = _routes(gw)
    if ("POST", "/api/v1/tokens") in routes:
        r = "/api/v1/tokens"
        assert (await call(site, "POST", r, r, {"name": "openapi-test", "role": "operator"}))[0] == 201
        assert (await call(site, "POST", r, r, {"name": "openapi-test2", "role": "king"}))[0] == 400
        assert (await call(site, "GET", r, r))[0] == 200
        r = "/api/v1/tokens/{name}"
        assert (await call(site, "DELETE", r, "/api/v1/tokens/openapi-test"))[0] == 200
        assert (await call(site, "DELETE", r, "/api/v1/tokens/no-such-token"))[0] == 404
    if ("GET", "/api/v1/whoami") in routes:
        await call(site, "GET", "/api/v1/whoami", "/api/v1/whoami")
    if ("GET", "/api/v1/audit") in routes:
        r = "/api/v1/audit"
        assert (await call(site, "GET", r, r))[0] == 200
        assert (await call(site, "GET", r, r + "?limit=0"))[0] == 400
        assert (await call(site, "GET", "/api/v1/audit/verify", "/api/v1/audit/verify"))[0] == 200

    assert site.failures == [], "\n".join(site.failures)
    # every route got a valid request (a 2xx) and, if it takes a path, a body or a required
    # parameter, an invalid one (a 4xx); optional filters (?state=) only narrow a listing
    for method, route in routes:
        statuses = site.seen.get((method, route), set())
        assert any(200 <= s < 300 for s in statuses), f"{method} {route}: no successful request ({statuses})"
        op = DOC["paths"][route][method.lower()]
        if op.get("requestBody") or any(p["required"] for p in op.get("parameters", [])):
            assert any(400 <= s < 500 for s in statuses), f"{method} {route}: no invalid request ({statuses})"


#: A value for each path placeholder: names that exist, so that a handler reaching its body
#: reads it (the refusals below happen before any handler looks the names up).
_PLACEHOLDERS = {
    "device_id": NVR, "id": NVR, "channel_id": CH, "what": "info", "stream_id": "nope",
    "consumer_id": "nope", "name": "district", "key": "ip:192.0.2.99",
}  # fmt: skip


def _path(route: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: _PLACEHOLDERS[m[1]], route)


@shared_loop
async def test_every_refusal_of_the_guard_is_documented_where_it_occurs(site: Site) -> None:
    """413 and 415 on every route with a body, 403 for a foreign Host on every route, and, tokens
    required, 401 without a token and 403 for each role below the route's ``x-role`` (and only
    then: the document's roles are the ones the router enforces)."""
    admin, access = site.gw.admin, site.gw.access
    assert admin is not None
    tokens = {}
    for role in (Role.VIEWER, Role.OPERATOR):
        token, secret = await access.create(f"openapi-{role}", role)
        tokens[role] = {"Authorization": f"Bearer {secret}"}
    routes = sorted(_routes(site.gw))
    for method, route in routes:
        op = DOC["paths"][route][method.lower()]
        if "requestBody" in op:
            limit = MAX_IMPORT_BODY if route == "/api/v1/ledger/import" else MAX_BODY
            big = json.dumps({"pad": "x" * limit}).encode()
            # no stream is open: the stream routes answer 404 before they read the body
            expected = {413, 404} if "{stream_id}" in route else {413}
            assert (await call(site, method, route, _path(route), raw=big))[0] in expected, (method, route)
            if method != "DELETE":  # a DELETE is never sent cross-site unasked (it needs a preflight)
                assert (await call(site, method, route, _path(route), raw=b"{}", ctype="text/plain"))[0] == 415
        status, _ = await call(site, method, route, _path(route), headers={"Host": "gw.evil.example"})
        assert status == 403, (method, route)
    admin.require_tokens, admin.open_metrics = True, False
    try:
        for method, route in routes:
            op = DOC["paths"][route][method.lower()]
            if route in ("/healthz", "/readyz"):
                continue
            assert (await call(site, method, route, _path(route)))[0] == 401, (method, route)
            needed = Role.parse(op["x-role"])
            for role, header in tokens.items():
                # no body: what a role may do is refused as 415 (or 400/404 for these names), never 403
                status, _ = await call(site, method, route, _path(route), headers=header)
                assert (status == 403) == (not role.allows(needed)), (method, route, str(role), status)
    finally:
        admin.require_tokens, admin.open_metrics = False, True
        for role in tokens:
            await access.revoke(f"openapi-{role}")
    assert site.failures == [], "\n".join(site.failures)
