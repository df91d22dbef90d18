"""``GET /api/v1/openapi.json``: the admin API described in OpenAPI 3.1.

The document is ``openapi.json`` beside this module, kept by hand with the routes: every
route, its parameters, bodies and answers (JSON Schema 2020-12), the role each needs
(``x-role``) and the bearer token scheme. ``tests/shell/test_openapi.py`` checks that it lists
exactly the routes a running gateway has and that their real answers match it, so a route
changed without its description fails there.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from gb28181gw.access import Role
from gb28181gw.admin import AdminServer

#: The document's file name inside the package.
DOCUMENT = "openapi.json"


def document() -> bytes:
    """The OpenAPI document as stored (UTF-8 JSON)."""
    return resources.files(__package__ or "gb28181gw.admin").joinpath(DOCUMENT).read_bytes()


def add_openapi_route(admin: AdminServer) -> None:
    """Serve the document at ``/api/v1/openapi.json`` (read once, at start-up)."""
    body = document()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    admin.add_route("GET", "/openapi.json", openapi, role=Role.VIEWER)
