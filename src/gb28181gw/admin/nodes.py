"""``/api/v1/nodes``: the gateway nodes sharing this gateway's Redis store (issue 17).

One row per node listed in Redis (``nodes``), live or not: where devices reach it, whether it
directs, the devices it owns (``owner``), the superiors whose lease it holds and how long ago it
last renewed its claim. With the SQLite store this gateway is the only node: the list is empty
and ``store`` says why.
"""

from __future__ import annotations

from aiohttp import web

from gb28181gw.access import Role
from gb28181gw.admin import AdminServer, error_response, json_response
from gb28181gw.errors import StoreError
from gb28181gw.services.nodes import NodeService

__all__ = ["add_node_routes"]


def add_node_routes(admin: AdminServer, nodes: NodeService, *, backend: str) -> None:
    """The node listing; ``backend`` is ``store.backend``."""

    async def listing(request: web.Request) -> web.Response:
        rows = []
        if backend == "redis":
            try:
                rows = await nodes.overview()
            except StoreError as exc:
                return error_response(
                    503, f"the nodes cannot be read: {exc}", "is Redis up? `gb28181gw status` shows the store's state"
                )
        return json_response({"store": backend, "this": nodes.node_id, "nodes": rows})

    admin.add_route("GET", "/nodes", listing, role=Role.VIEWER)
