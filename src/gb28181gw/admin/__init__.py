"""The HTTP admin API: health, readiness, Prometheus metrics and JSON status.

Bound to 127.0.0.1 by default. The CLI talks to a running gateway through it;
later services add their routes with :meth:`AdminServer.add_route`, each stating the
:class:`Role` that may call it.

Who calls (``_guard``, before any handler): ``/healthz`` and ``/readyz`` are open, ``/metrics``
too unless ``admin.open_metrics`` is false; everything else needs ``Authorization: Bearer
<token>`` (:mod:`gb28181gw.access`) whose role allows the route's, except that a caller
without the header is let through as ``local`` (with an admin's rights) while the API listens
on loopback and ``admin.require_tokens`` is false and no proxy header (``X-Forwarded-For`` …) says
the request came from elsewhere, nor ``Sec-Fetch-Site`` that a web page made it. A header is checked whenever it is sent; a token in the query
string, under any name, is refused (URLs end up in logs and browser histories). A route added
to the app past :meth:`add_route` has no role stated and is the admin's. A refusal is
401 (no valid token: counted, logged at a bounded rate, not audited, or a flood would fill the
trail) or 403 (a valid token, a role too small: also audited). The handler then runs as its
caller (:func:`gb28181gw.services.audit.acting`), so the audit records it makes name them.

Even with tokens, the API must not be usable by the web pages a browser on the same host
opens (a loopback caller needs no token). Browsers send cross-site requests a page may make without
asking (a form or ``text/plain`` POST, a body-less ``fetch``); every request that
changes something must therefore be ``application/json`` (which a page can only send
after a CORS preflight this API never grants) and carry no foreign ``Origin``. A page
could still rename its own host to 127.0.0.1 (DNS rebinding): the ``Host`` header
must be an IP address, ``localhost`` or a name listed in ``admin.allowed_hosts``.

Every answer is JSON written by :func:`json_response` (UTF-8, Chinese kept readable, never
``\\u`` escapes). Every failure is :func:`error_response`: ``{"error": what went wrong,
"hint": what to do}`` with a status that says whose fault it is: 400 a bad request, 404 an ID
that names nothing (every route that takes an ID), 409 a device that is known but not
registered, 502 a device that answered with an error or cannot be reached, 504 a device that
did not answer within the gateway's own bound (``devices.query_timeout`` …): clients wait longer
than that and show the gateway's reason. A :class:`DeviceError` becomes one through
:func:`device_error_response`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import ipaddress
import json
import logging
import math
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import SystemRoute

from gb28181gw import __version__
from gb28181gw.access import PREFIX, Role
from gb28181gw.audit import Action, Actor, Result
from gb28181gw.config import is_loopback
from gb28181gw.errors import AccessDenied, IdError, RequestRefused, StoreError, UpstreamError
from gb28181gw.gb.bans import MAX_REFUSALS
from gb28181gw.gb.model import Device, Override
from gb28181gw.ids import GbId
from gb28181gw.manscdp import ptz as ptz_codes
from gb28181gw.metrics import ADMIN_REFUSED, Metrics
from gb28181gw.sdp import StreamMode
from gb28181gw.services.access import CREATE_HINT, AccessService
from gb28181gw.services.audit import AuditService, acting
from gb28181gw.services.devices import DeviceError, DeviceService
from gb28181gw.services.registrar import RegistrarService
from gb28181gw.services.remote import QUERY_TIMEOUT, RemoteDevices
from gb28181gw.services.upstreams import UpstreamService
from gb28181gw.sip.flood import FloodGuard

log = logging.getLogger("gb28181gw.admin")

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_PREFIX = "/api/v1"
#: Rows of a streamed listing written between two yields to the event loop.
_CHUNK = 1000
#: Most rows one listing returns.
MAX_LIST = 10_000
#: Largest request body accepted (bytes).
MAX_BODY = 64 * 1024
#: Methods a page may not send cross-site unasked only if they are JSON (DELETE always needs a preflight).
#: The key of a flood ban in /bans: ``flood:ADDRESS``.
FLOOD_KEY = "flood:"
_CHANGING = frozenset({"POST", "PUT", "PATCH"})
#: Query parameters that would carry a token in the URL (refused: URLs are logged and kept in histories).
_TOKEN_PARAMETERS = frozenset({"token", "access_token", "api_key", "apikey", "api-key", "key", "auth", "bearer"})
_OPEN = frozenset({"/healthz", "/readyz"})
#: What a token's secret may look like, to keep it out of the log (the form check is the core's).
_SECRETS = re.compile(re.escape(PREFIX) + r"[A-Za-z0-9_-]*")
#: Headers a reverse proxy adds: such a request came from elsewhere, whatever its peer address.
_PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host")
#: The realm a 401 names in its ``WWW-Authenticate`` header.
REALM = "gb28181gw"


class AdminServer:
    """aiohttp application serving ``/healthz``, ``/readyz``, ``/metrics`` and ``/api/v1/*``.

    Args:
        metrics: the gateway's metrics.
        status: returns the JSON body of ``/api/v1/status``.
        ready: returns whether the gateway is ready to serve (``/readyz``).
        access: the tokens (``None``: no token is known, only a loopback caller gets in).
        audit: records refusals of a role too small.
        require_tokens: ask every caller for a token, loopback ones too (``admin.require_tokens``).
        open_metrics: serve ``/metrics`` without a token (``admin.open_metrics``).
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        status: Callable[[], dict[str, Any]],
        ready: Callable[[], bool],
        allowed_hosts: list[str],
        access: AccessService | None = None,
        audit: AuditService | None = None,
        require_tokens: bool = False,
        open_metrics: bool = True,
    ) -> None:
        self._metrics = metrics
        self._status = status
        self._ready = ready
        self._names = {"localhost", *(h.lower().rstrip(".") for h in allowed_hosts)}
        self.access = access
        self._audit = audit
        self.require_tokens = require_tokens
        self.open_metrics = open_metrics
        self._loopback = False  # known at start(): a token-less caller is "local" only on loopback
        self._refused = metrics.counter(ADMIN_REFUSED)
        self._roles: dict[web.AbstractRoute, Role] = {}
        self._listing: list[tuple[str, str, Role]] = []
        self.app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        for path, page in (("/healthz", self._healthz), ("/readyz", self._readyz), ("/metrics", self._metrics_page)):
            resource = self.app.router.add_resource(path)
            for method in ("GET", "HEAD"):  # open, or (/metrics with open_metrics false) any token's
                self._roles[resource.add_route(method, page)] = Role.VIEWER
        self.add_route("GET", "/status", self._status_page, role=Role.VIEWER)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.scheme = "http"

    def add_route(self, method: str, path: str, handler: Route, *, role: Role) -> None:
        """Add an API route under ``/api/v1`` (before :meth:`start`) that ``role`` and above may call."""
        route = self.app.router.add_route(method, f"{API_PREFIX}{path}", handler)
        self._roles[route] = role
        self._listing.append((method, f"{API_PREFIX}{path}", role))

    def routes(self) -> list[tuple[str, str, Role]]:
        """Every API route: method, full path, the role it needs (in the order added)."""
        return list(self._listing)

    @property
    def auth_required(self) -> bool:
        """Whether every caller needs a token (beyond loopback, or ``require_tokens``)."""
        return self.require_tokens or not self._loopback

    async def start(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """Serve on ``host``:``port`` (0 picks a free port, see :attr:`port`), over HTTPS with ``ssl_context``."""
        self._loopback = is_loopback(host)
        self.scheme = "https" if ssl_context is not None else "http"
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True, ssl_context=ssl_context)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info(
            "admin API listening",
            extra={
                "address": f"{self.scheme}://{host}:{self.port}",
                "tokens": "required" if self.auth_required else "optional",
            },
        )

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Route) -> web.StreamResponse:
        if not self._host_allowed(request.host):
            return error_response(403, f"host {request.host!r} is not this gateway's; add it to admin.allowed_hosts")
        try:
            actor = self._caller(request)
        except AccessDenied as exc:
            return self._refuse(request, exc)
        if request.method in _CHANGING:
            origin = request.headers.get("Origin")
            if origin is not None and origin.partition("://")[2] != request.host:
                return error_response(403, f"requests from web origin {origin!r} are refused")
            if request.content_type != "application/json":
                return error_response(415, "requests that change something must be Content-Type: application/json")
        try:
            if actor is None:
                return await handler(request)
            with acting(actor):
                return await handler(request)
        except RecursionError:
            return error_response(400, "the JSON body is nested too deeply")
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, f"the body is larger than {MAX_BODY} bytes")
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            # aiohttp's own answers (no such route, wrong method) in the one error form
            return error_response(exc.status, f"{request.method} {request.path}: {exc.reason}")
        except Exception:
            # a bug: still the one error form (aiohttp would answer text/plain), the traceback in the log
            log.exception("admin API request failed", extra={"method": request.method, "path": request.path})
            return error_response(
                500, f"{request.method} {request.path} failed inside the gateway", "a bug: the gateway's log says more"
            )

    def _caller(self, request: web.Request) -> Actor | None:
        """Who makes ``request`` (``None`` for the open pages); :class:`AccessDenied` if they may not."""
        path = request.path
        if path in _OPEN:
            return None
        if (
            any(k.lower() in _TOKEN_PARAMETERS for k in request.query)
            or PREFIX in request.query_string
            or PREFIX in path  # `token revoke <secret>` instead of its name: a path is logged and audited
        ):
            raise AccessDenied(
                "a token in the URL is refused: URLs are logged and kept in histories",
                401,
                "query-string",
                "send it in the header 'Authorization: Bearer <token>' instead, and revoke this one "
                "(`gb28181gw token revoke NAME`): it may have been seen",
            )
        if path == "/metrics" and self.open_metrics:
            return None
        peer = request.remote or ""
        headers = request.headers.getall("Authorization", [])
        if len(headers) > 1:
            # which one counts would depend on who reads them (a proxy may take the last): none does
            raise AccessDenied("send one Authorization header, not several", 401, "malformed", CREATE_HINT)
        header = headers[0] if headers else None
        if header is None and not self.auth_required:
            if any(name in request.headers for name in _PROXY_HEADERS):
                # a reverse proxy on this host would make every remote user it forwards "local"
                raise AccessDenied(
                    "a request forwarded by a proxy needs a token: only a caller on this host is let in without one",
                    401,
                    "proxied",
                    CREATE_HINT,
                )
            if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
                # a web page's request (an <img>, a link) rides on the browser's host being loopback
                raise AccessDenied("a request made by a web page needs a token", 401, "cross-site", CREATE_HINT)
            return Actor("local", peer)
        if self.access is None:
            raise AccessDenied("this request needs a token", 401, "missing" if header is None else "unknown")
        token = self.access.authenticate(header)
        route = request.match_info.route
        # a route of the app's own added past add_route (no role decided) is the admin's; aiohttp's
        # answers for a path or method that names nothing (404, 405) are anyone's
        needed = self._roles.get(route, Role.VIEWER if isinstance(route, SystemRoute) else Role.ADMIN)
        actor = Actor.token(token.name, peer)
        if not token.role.allows(needed):
            if self._audit is not None:
                self._audit.record(
                    Action.ACCESS_REFUSED,
                    request.path,
                    {"method": request.method, "path": _SECRETS.sub(PREFIX + "…", request.path), "role": str(needed)},
                    result=Result.REFUSED,
                    detail=f"the token's role is {token.role}",
                    actor=actor,
                )
            raise AccessDenied(
                f"{request.method} {request.path} needs the role {needed}; the token {token.name!r} is {token.role}",
                403,
                "role",
                f"ask an admin for a token with the role {needed}",
            )
        return actor

    def _refuse(self, request: web.Request, exc: AccessDenied) -> web.Response:
        self._refused[str(exc.status), exc.reason] += 1
        log.warning(
            "admin API request refused",
            extra={"status": exc.status, "reason": exc.reason, "method": request.method, "path": _SECRETS.sub(PREFIX + "…", request.path),
                   "peer": request.remote or ""},
        )  # fmt: skip
        response = refused_response(exc)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
        return response

    def _host_allowed(self, host: str) -> bool:
        if host.startswith("["):  # [IPv6]:port
            name = host[1 : host.find("]")]
        elif host.count(":") == 1:  # name:port
            name = host.partition(":")[0]
        else:  # a name, or a bare IPv6 address
            name = host
        name = name.lower().rstrip(".")
        if name in self._names:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    async def _healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "version": __version__})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = self._ready()
        return json_response({"ready": ready}, status=200 if ready else 503)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})

    async def _status_page(self, request: web.Request) -> web.Response:
        body = self._status()
        body.setdefault("time", time.time())
        return json_response(body)


def add_upstream_routes(admin: AdminServer, upstreams: UpstreamService) -> None:
    """``/api/v1/upstreams``: every superior, its registration state and health; what each may see
    (``…/{name}/shares``: GET, POST and DELETE with ``{"ids": [...]}``) and its channel overrides
    (``…/{name}/overrides``: GET; PUT and DELETE ``…/overrides/{channel_id}``) (issue 12)."""

    async def list_upstreams(request: web.Request) -> web.Response:
        return json_response({"upstreams": upstreams.listing()})

    def shares_of(name: str) -> dict[str, Any]:
        rule = upstreams.link(name).rule
        return {
            "upstream": name,
            "share": rule.describe(),
            "everything": rule.everything,
            "shared": sorted(rule.shared),
            "unshared": sorted(rule.unshared),
        }

    async def ids_of(request: web.Request) -> list[str]:
        body = await json_object(request, 'the body must be JSON: {"ids": ["34020000001310000001", "340202", ...]}')
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise UpstreamError('"ids" must be a list of IDs or ID prefixes (strings)')
        return ids

    async def show_shares(request: web.Request) -> web.Response:
        try:
            return json_response(shares_of(request.match_info["name"]))
        except UpstreamError as exc:
            return refused_response(exc)

    async def change_shares(request: web.Request) -> web.Response:
        # POST shares them, DELETE takes them back; the body names them either way
        name = request.match_info["name"]
        try:
            upstreams.link(name)
            await upstreams.share(name, await ids_of(request), shared=request.method == "POST")
            return json_response(shares_of(name))
        except UpstreamError as exc:
            return refused_response(exc)

    async def list_overrides(request: web.Request) -> web.Response:
        try:
            link = upstreams.link(request.match_info["name"])
        except UpstreamError as exc:
            return refused_response(exc)
        return json_response({"overrides": [o.to_dict() for _, o in sorted(link.overrides.items())]})

    async def put_override(request: web.Request) -> web.Response:
        name, channel = request.match_info["name"], request.match_info["channel_id"]
        try:
            upstreams.link(name)
            body = await json_object(
                request, 'the body must be JSON: {"name": ..., "civil_code": ..., "parent_id": ...}'
            )
            values = {k: body.get(k) or "" for k in ("name", "civil_code", "parent_id")}
            if not all(isinstance(v, str) for v in values.values()):
                raise UpstreamError("name, civil_code and parent_id must be strings")
            override = await upstreams.set_override(Override(name, channel, **values))
        except UpstreamError as exc:
            return refused_response(exc)
        return json_response(override.to_dict())

    async def delete_override(request: web.Request) -> web.Response:
        name, channel = request.match_info["name"], request.match_info["channel_id"]
        try:
            had = await upstreams.clear_override(name, channel)
        except UpstreamError as exc:
            return refused_response(exc)
        if not had:
            return error_response(
                404, f"no override of {channel} for {name}", "`gb28181gw upstream overrides NAME` lists them"
            )
        return json_response({"upstream": name, "channel_id": channel, "cleared": True})

    admin.add_route("GET", "/upstreams", list_upstreams, role=Role.VIEWER)
    admin.add_route("GET", "/upstreams/{name}/shares", show_shares, role=Role.VIEWER)
    admin.add_route("POST", "/upstreams/{name}/shares", change_shares, role=Role.ADMIN)
    admin.add_route("DELETE", "/upstreams/{name}/shares", change_shares, role=Role.ADMIN)
    admin.add_route("GET", "/upstreams/{name}/overrides", list_overrides, role=Role.VIEWER)
    admin.add_route("PUT", "/upstreams/{name}/overrides/{channel_id}", put_override, role=Role.ADMIN)
    admin.add_route("DELETE", "/upstreams/{name}/overrides/{channel_id}", delete_override, role=Role.ADMIN)


def refused_response(exc: RequestRefused) -> web.Response:
    """An operator's request that cannot be carried out: its status, its words, its hint."""
    return error_response(exc.status, str(exc), exc.hint)


def add_device_routes(
    admin: AdminServer,
    registrar: RegistrarService,
    devices: DeviceService,
    flood: FloodGuard | None = None,
    *,
    owners: Callable[[list[str]], Awaitable[dict[str, str]]] | None = None,
    remote: RemoteDevices | None = None,
    served_elsewhere: Callable[[str], Awaitable[str | None]] | None = None,
) -> None:
    """``/api/v1/devices``: list, show, add (provision) and remove devices; ``/api/v1/bans``: the
    registrar's bans for failed authentication and ``flood``'s bans of addresses that sent too fast.

    ``owners`` (several nodes on Redis): the node each of the given devices registered at last,
    shown as each listed device's ``node``. With ``remote`` (several nodes), requests acting on a
    device another node owns are made by that node (:mod:`gb28181gw.services.remote` lists which).
    ``served_elsewhere``: the live node other than this one that serves a device, if any: removing
    it here is refused (409), since that node's next write of the device would put it back; so is
    changing it (``POST /devices``), since only that node's writes of it reach the shared store.
    """

    async def elsewhere(target_id: str) -> str | None:
        return await remote.node_of(target_id) if remote is not None else None

    async def list_devices(request: web.Request) -> web.Response:
        devices = sorted(registrar.devices.values(), key=lambda d: d.device_id)
        state = request.query.get("state")
        if state == "online":
            devices = [d for d in devices if d.online]
        elif state == "offline":
            devices = [d for d in devices if not d.online]
        rows = [_device_json(registrar, d) for d in devices]
        if owners is not None:
            try:
                owner = await owners([row["device_id"] for row in rows])
            except StoreError:
                owner = None  # Redis away: the listing is still this node's to give, without nodes
            owns = registrar.cluster.owns
            for row in rows:
                row["node"] = owner.get(row["device_id"], "") if owner is not None else None
                # its state here is this node's own only if it serves it
                row["here"] = owns(row["device_id"])
        return json_response({"devices": rows})

    async def show_device(request: web.Request) -> web.Response:
        device = registrar.devices.get(request.match_info["device_id"])
        if device is None:
            return _no_device(request.match_info["device_id"])
        return json_response(_device_json(registrar, device))

    async def add_device(request: web.Request) -> web.Response:
        body = await json_object(request, 'the body must be JSON: {"device_id": ..., "password": ..., "name": ...}')
        device_id = str(body.get("device_id", ""))
        try:
            GbId.parse(device_id)
        except IdError as exc:
            return error_response(400, f"invalid device ID: {exc}")
        charset = str(body.get("charset") or "")
        if charset and charset.upper() not in ("GB2312", "GB18030", "UTF-8"):
            return error_response(400, "charset must be GB2312, GB18030 or UTF-8")
        stream_mode = str(body.get("stream_mode") or "")
        if stream_mode and stream_mode != "default" and stream_mode not in {m.value for m in StreamMode}:
            return error_response(
                400, "stream_mode must be udp, tcp-passive, tcp-active or default (media.stream_mode)"
            )
        refused = await served_by_another(
            device_id, "add", "changed here, it would be dropped: only that node writes it"
        )
        if refused is not None:
            return refused
        created = device_id not in registrar.devices
        device = await registrar.provision(
            device_id,
            password=str(body.get("password") or ""),
            name=str(body.get("name") or ""),
            charset=charset.upper(),
            stream_mode=StreamMode(stream_mode) if stream_mode and stream_mode != "default" else None,
        )
        if stream_mode == "default" and device.stream_mode is not None:
            device.stream_mode = None  # back to following media.stream_mode ("" keeps what it had)
            registrar.changed(device_id)
            await registrar.flush()
        # 201 for a new device, 200 for one that was changed; "created" says it to clients that see only the body
        return json_response({**_device_json(registrar, device), "created": created}, status=201 if created else 200)

    async def served_by_another(device_id: str, verb: str, why: str) -> web.Response | None:
        # a device another live node serves is written by that node only: a change made here is
        # dropped by the fenced write (and this node's record goes back to that node's row with
        # its next read of the shared store), a removal written back by that node's next batch
        if served_elsewhere is None or registrar.cluster.owns(device_id):
            return None
        try:
            node = await served_elsewhere(device_id)
        except StoreError:
            node = None  # Redis away: the store's own write says so
        if node is None:
            return None
        return refused_response(
            RequestRefused(
                f"device {device_id} is served by node {node}: {why}",
                RequestRefused.CONFLICT,
                hint=f"do it at node {node} (gb28181gw device {verb} --admin <its admin address>)",
            )
        )

    async def remove_device(request: web.Request) -> web.Response:
        device_id = request.match_info["device_id"]
        refused = await served_by_another(device_id, "remove", "removed here, it would be written back by that node")
        if refused is not None:
            return refused
        if not await registrar.remove(device_id):
            return _no_device(device_id)
        devices.forget(device_id)
        return json_response({"removed": device_id})

    async def channels(request: web.Request) -> web.StreamResponse:
        device_id = request.query.get("device")
        if device_id is not None and device_id not in registrar.devices and device_id not in devices.channels:
            return _no_device(device_id)
        per_device = devices.channels if device_id is None else {device_id: devices.channels.get(device_id, {})}
        # streamed in chunks, yielding between them: a listing of a million channels must not
        # stop the gateway from serving keepalives while it is written
        resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
        await resp.prepare(request)
        await resp.write(b'{"channels": [')
        first = True
        for dev in list(per_device):
            rows = sorted(per_device.get(dev, {}).values(), key=lambda c: c.channel_id)
            for i in range(0, len(rows), _CHUNK):
                chunk = ", ".join(
                    _dumps(
                        {"channel_id": c.channel_id, "device_id": c.device_id, "name": c.name, "status": c.status,
                         "parent_id": c.parent_id, **c.extra}
                    )
                    for c in rows[i : i + _CHUNK]
                )  # fmt: skip
                await resp.write(("" if first else ", ").encode() + chunk.encode())
                first = False
                await asyncio.sleep(0)
        await resp.write(f'], "partial": {_dumps(sorted(devices.partial))}}}'.encode())
        await resp.write_eof()
        return resp

    async def refresh_catalog(request: web.Request) -> web.Response:
        device_id = request.match_info["device_id"]
        try:
            node = await elsewhere(device_id)
            if node is not None and remote is not None:
                args = {"device": device_id}
                return json_response(await remote.call(node, "device.catalog", args, timeout=QUERY_TIMEOUT))
            result = await devices.catalog(device_id)
        except DeviceError as exc:
            return device_error_response(exc)
        return json_response(
            {"device_id": device_id, "channels": len(result.items), "sum_num": result.sum_num,
             "complete": result.complete, "messages": result.messages}
        )  # fmt: skip

    async def query(request: web.Request) -> web.Response:
        device_id, what = request.match_info["device_id"], request.match_info["what"]
        try:
            node = await elsewhere(device_id)
            if node is not None and remote is not None:
                args = {"device": device_id, "what": what}
                return json_response(await remote.call(node, "device.query", args, timeout=QUERY_TIMEOUT))
            data = await (devices.device_info(device_id) if what == "info" else devices.device_status(device_id))
        except DeviceError as exc:
            return device_error_response(exc)
        return json_response(data)

    async def ptz(request: web.Request) -> web.Response:
        body = await json_object(request, 'the body must be JSON: {"channel_id": ..., "kind": ..., "action": ...}')
        try:
            kind = str(body.get("kind", "move"))
            if kind == "move":
                cmd = ptz_codes.move(str(body["action"]), int(body.get("speed", 0x80)), int(body.get("zoom_speed", 5)))
            elif kind == "preset":
                cmd = ptz_codes.preset(str(body["action"]), int(body["number"]))
            elif kind == "focus-iris":
                cmd = ptz_codes.focus_iris(str(body["action"]), int(body.get("speed", 0x40)))
            elif kind == "cruise":
                cmd = ptz_codes.cruise(str(body["action"]), int(body["group"]), int(body.get("value", 0)))
            elif kind == "scan":
                cmd = ptz_codes.scan(str(body["action"]), int(body["group"]), int(body.get("value", 0)))
            else:
                return error_response(400, f"unknown PTZ kind {kind!r}")
            node = await elsewhere(str(body["channel_id"]))
            if node is not None and remote is not None:
                args = {"channel": str(body["channel_id"]), "cmd": cmd.encode()}
                return json_response(await remote.call(node, "device.ptz", args))
            await devices.ptz(str(body["channel_id"]), cmd)
        except (ValueError, KeyError, TypeError) as exc:
            return error_response(400, f"bad PTZ request: {exc}")
        except DeviceError as exc:
            return device_error_response(exc)
        return json_response({"sent": cmd.encode()})

    async def records(request: web.Request) -> web.Response:
        q = request.query
        usage = "from and to are required, from before to (YYYY-MM-DDTHH:MM:SS, the site's time)"
        try:
            # checked here, not by the device: what it makes of "yesterday" is anyone's guess
            since, until = (datetime.datetime.strptime(q[k], "%Y-%m-%dT%H:%M:%S") for k in ("from", "to"))
        except (KeyError, ValueError):
            return error_response(400, usage)
        if since >= until:
            return error_response(400, usage)
        record_type = q.get("type", "all")
        if record_type not in RECORD_TYPES:
            return error_response(400, f"type must be one of {', '.join(RECORD_TYPES)}, not {record_type!r}")
        try:
            node = await elsewhere(request.match_info["channel_id"])
            if node is not None and remote is not None:
                args = {
                    "channel": request.match_info["channel_id"],
                    "from": q["from"],
                    "to": q["to"],
                    "type": record_type,
                }
                return json_response(await remote.call(node, "device.records", args, timeout=QUERY_TIMEOUT))
            result = await devices.records(
                request.match_info["channel_id"], q["from"], q["to"], record_type=record_type
            )
        except DeviceError as exc:
            return device_error_response(exc)
        items = sorted(
            ({"channel_id": i.device_id, **i.fields} for i in result.items.values()),
            key=lambda r: r.get("StartTime", ""),
        )
        return json_response({"records": items, "sum_num": result.sum_num, "complete": result.complete})

    async def command(request: web.Request) -> web.Response:
        body = await json_object(request, 'the body must be JSON: {"target": ..., "name": ..., "value": ...}')
        try:
            node = await elsewhere(str(body["target"]))
            if node is not None and remote is not None:
                args = {"target": str(body["target"]), "name": str(body["name"]), "value": str(body["value"]),
                        "wait": bool(body.get("wait", True))}  # fmt: skip
                return json_response(await remote.call(node, "device.command", args, timeout=QUERY_TIMEOUT))
            result = await devices.command(
                str(body["target"]), str(body["name"]), str(body["value"]), wait=bool(body.get("wait", True))
            )
        except (ValueError, KeyError, TypeError) as exc:
            return error_response(400, f"bad command: {exc}")
        except DeviceError as exc:
            return device_error_response(exc)
        return json_response(result)

    async def alarms(request: web.Request) -> web.Response:
        text = request.query.get("limit", "100")
        if not text.isdigit() or len(text) > 6 or not 1 <= int(text) <= MAX_LIST:
            return error_response(400, f"limit must be a whole number from 1 to {MAX_LIST}")
        limit = int(text)
        stored = await devices.store.load_alarms(limit, request.query.get("device"))
        return json_response({"alarms": [dataclasses.asdict(a) for a in stored]})

    admin.add_route("GET", "/channels/{channel_id}/records", records, role=Role.OPERATOR)
    admin.add_route("POST", "/control", command, role=Role.OPERATOR)
    admin.add_route("GET", "/alarms", alarms, role=Role.VIEWER)
    admin.add_route("GET", "/channels", channels, role=Role.VIEWER)
    admin.add_route("POST", "/devices/{device_id}/catalog", refresh_catalog, role=Role.OPERATOR)
    admin.add_route("GET", "/devices/{device_id}/{what:info|status}", query, role=Role.OPERATOR)
    admin.add_route("POST", "/ptz", ptz, role=Role.OPERATOR)
    admin.add_route("GET", "/devices", list_devices, role=Role.VIEWER)
    admin.add_route("POST", "/devices", add_device, role=Role.ADMIN)
    admin.add_route("GET", "/devices/{device_id}", show_device, role=Role.VIEWER)
    admin.add_route("DELETE", "/devices/{device_id}", remove_device, role=Role.ADMIN)
    add_housekeeping_routes(admin, registrar, devices, flood)


def add_housekeeping_routes(
    admin: AdminServer, registrar: RegistrarService, devices: DeviceService, flood: FloodGuard | None = None
) -> None:
    """Bans, refused devices and pruning (issue 11).

    - ``GET /bans``: every active ban; ``DELETE /bans/{key}`` lifts one;
      ``DELETE /devices/{device_id}/bans`` lifts every ban of a device, from every address.
    - ``GET /refused``: IDs and addresses the gateway keeps refusing, the latest first.
    - ``POST /devices/prune`` ``{"older_than": seconds, "dry_run": bool, "provisioned": bool}``:
      removes (or with ``dry_run`` only lists) the devices not heard from for that long.
    """

    async def list_bans(request: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        return json_response(
            {
                "bans": [b.to_dict() for b in registrar.bans()],
                "persisted": registrar.persist_bans,
                "flood": [b.as_dict(now) | {"key": FLOOD_KEY + b.host} for b in (flood.bans() if flood else ())],
            }
        )

    async def lift_ban(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key.startswith(FLOOD_KEY):
            lifted = flood.lift(key.removeprefix(FLOOD_KEY)) if flood is not None else None
            # recorded like the registrar's bans: who let a flooding address back in is worth knowing
            if registrar.audit is not None:
                registrar.audit.record(
                    Action.DEVICE_UNBAN,
                    key,
                    {"ban": key, "reason": "lifted by operator"},
                    result=Result.OK if lifted is not None else Result.REFUSED,
                    detail="" if lifted is not None else f"no ban {key}",
                )
            if lifted is None:
                return error_response(404, f"no ban {key}", "see `gb28181gw bans` for the keys of the active bans")
            return json_response({"lifted": [lifted.as_dict(asyncio.get_running_loop().time()) | {"key": key}]})
        ban = registrar.unban(key)
        if ban is None:
            return error_response(404, f"no ban {key}", "see `gb28181gw bans` for the keys of the active bans")
        await registrar.flush()
        return json_response({"lifted": [ban.to_dict()]})

    async def unban_device(request: web.Request) -> web.Response:
        device_id = request.match_info["device_id"]
        lifted = registrar.unban_device(device_id)
        if not lifted and device_id not in registrar.devices:
            return error_response(
                404, f"no device {device_id}", "see `gb28181gw devices`, or `gb28181gw bans` for banned IDs"
            )
        await registrar.flush()
        return json_response({"device_id": device_id, "lifted": [b.to_dict() for b in lifted]})

    async def refused(request: web.Request) -> web.Response:
        log_ = registrar.registrar.refused
        entries = [dataclasses.asdict(r) for r in log_.entries()]
        return json_response({"refused": entries, "forgotten": log_.forgotten, "limit": MAX_REFUSALS})

    async def prune(request: web.Request) -> web.Response:
        usage = 'the body must be JSON: {"older_than": seconds, "dry_run": true|false, "provisioned": true|false}'
        body = await json_object(request, usage)
        older_than = body.get("older_than")
        if isinstance(older_than, bool) or not isinstance(older_than, int | float):
            return error_response(400, usage)
        try:
            seconds = float(older_than)
        except OverflowError:  # an integer of 400 digits
            return error_response(400, usage)
        if not math.isfinite(seconds):
            return error_response(400, usage)
        if seconds <= 0:
            return error_response(400, "older_than must be a positive number of seconds")
        dry_run, provisioned = body.get("dry_run", False), body.get("provisioned", False)
        if not isinstance(dry_run, bool) or not isinstance(provisioned, bool):
            return error_response(400, usage)
        if dry_run:
            chosen = registrar.stale(seconds, provisioned=provisioned)
        else:
            chosen = await registrar.prune(seconds, provisioned=provisioned)
            for device in chosen:
                devices.forget(device.device_id)
        return json_response(
            {"devices": [_device_json(registrar, d) for d in chosen], "dry_run": dry_run, "older_than": older_than}
        )

    admin.add_route("GET", "/bans", list_bans, role=Role.VIEWER)
    admin.add_route("DELETE", "/bans/{key}", lift_ban, role=Role.ADMIN)
    admin.add_route("DELETE", "/devices/{device_id}/bans", unban_device, role=Role.ADMIN)
    admin.add_route("GET", "/refused", refused, role=Role.VIEWER)
    admin.add_route("POST", "/devices/prune", prune, role=Role.ADMIN)


#: RecordInfo's Type values (GB/T 28181 A.2.4.8): anything else is the caller's mistake, not the device's.
RECORD_TYPES = ("all", "time", "alarm", "manual")


def _device_json(registrar: RegistrarService, device: Device) -> dict[str, Any]:
    out = device.to_dict()
    loop_deadline = registrar.liveness.deadline(device.device_id)
    out["offline_in"] = None
    if loop_deadline is not None:
        out["offline_in"] = round(max(0.0, loop_deadline - asyncio.get_running_loop().time()), 1)
    # the ban that refuses it longest (`gb28181gw bans` lists every one), and its last failed
    # authentication: what an installer needs when a device "never registers"
    bans = registrar.bans_of(device)
    ban = bans[-1] if bans else None
    out["banned_until"] = ban.until if ban is not None else None
    out["ban_reason"] = ban.reason if ban is not None else ""
    out["ban_address"] = ban.address if ban is not None else ""
    failure = registrar.last_auth_failure(device.device_id)
    out["last_auth_failure_at"] = failure.at if failure is not None else None
    out["last_auth_failure_from"] = failure.address if failure is not None else ""
    out["last_auth_failure_reason"] = failure.reason if failure is not None else ""
    return out


async def json_object(request: web.Request, usage: str) -> dict[str, Any]:
    """The request's JSON body, which must be an object; else a 400 naming what is expected."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=_dumps({"error": usage}), content_type="application/json")
    return body


_readable = functools.partial(json.dumps, ensure_ascii=False)


def _dumps(data: Any) -> str:
    """JSON as every answer writes it: Chinese names stay readable (``大门口``, not ``\\u5927…``).

    A header a device sent with undecodable bytes (a GB2312 User-Agent) holds them as lone
    surrogates, which UTF-8 cannot carry: such an answer keeps ``\\u`` escapes, still valid JSON.
    """
    text = _readable(data)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data)
    return text


def json_response(data: Any, *, status: int = 200) -> web.Response:
    """The one way an admin route answers with JSON (UTF-8, no ``\\u`` escapes)."""
    return web.json_response(data, status=status, dumps=_dumps)


def error_response(status: int, message: str, hint: str | None = None) -> web.Response:
    """The one error answer: ``{"error": message, "hint": hint}`` (see the module docstring for statuses)."""
    body: dict[str, Any] = {"error": message}
    if hint:
        body["hint"] = hint
    return json_response(body, status=status)


#: HTTP status and hint for each :class:`DeviceError` status.
_DEVICE_HTTP: dict[int, tuple[int, str | None]] = {
    DeviceError.NOT_FOUND: (404, "see `gb28181gw devices` and `gb28181gw channels`"),
    DeviceError.NOT_REGISTERED: (409, "it must register first; `gb28181gw device show ID` says when it last did"),
    DeviceError.NO_ANSWER: (
        504,
        "is it online (`gb28181gw devices`) and can it reach the gateway? devices.query_timeout sets the wait",
    ),
    DeviceError.UNREACHABLE: (502, "is it online (`gb28181gw devices`)?"),
    DeviceError.REFUSED: (502, None),
}


def device_error_response(exc: DeviceError) -> web.Response:
    """A failed request to a device, with the status that says whose fault it is (504 when it timed out)."""
    status, hint = _DEVICE_HTTP.get(exc.status, (502, None))
    return error_response(status, str(exc), exc.hint or hint)


def _no_device(device_id: str) -> web.Response:
    return error_response(404, f"no device {device_id}", "see `gb28181gw devices`")
