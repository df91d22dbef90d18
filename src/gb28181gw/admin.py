"""The HTTP admin API: health, readiness, Prometheus metrics and JSON status.

Bound to 127.0.0.1 by default. The CLI talks to a running gateway through it;
later services add their routes with :meth:`AdminServer.add_route`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gb28181gw import __version__
from gb28181gw.metrics import Metrics

log = logging.getLogger("gb28181gw.admin")

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_PREFIX = "/api/v1"


class AdminServer:
    """aiohttp application serving ``/healthz``, ``/readyz``, ``/metrics`` and ``/api/v1/*``.

    Args:
        metrics: the gateway's metrics.
        status: returns the JSON body of ``/api/v1/status``.
        ready: returns whether the gateway is ready to serve (``/readyz``).
    """

    def __init__(self, metrics: Metrics, *, status: Callable[[], dict[str, Any]], ready: Callable[[], bool]) -> None:
        self._metrics = metrics
        self._status = status
        self._ready = ready
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics_page)
        self.app.router.add_get(f"{API_PREFIX}/status", self._status_page)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def add_route(self, method: str, path: str, handler: Route) -> None:
        """Add an API route under ``/api/v1`` (before :meth:`start`)."""
        self.app.router.add_route(method, f"{API_PREFIX}{path}", handler)

    async def start(self, host: str, port: int) -> None:
        """Serve on ``host``:``port`` (0 picks a free port, see :attr:`port`)."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("admin API listening", extra={"address": f"http://{host}:{self.port}"})

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = self._ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})

    async def _status_page(self, request: web.Request) -> web.Response:
        body = self._status()
        body.setdefault("time", time.time())
        return web.json_response(body)
