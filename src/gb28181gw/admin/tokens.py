"""``/api/v1/tokens`` (list, make, revoke: admin) and ``/api/v1/whoami`` (any caller)."""

from __future__ import annotations

from aiohttp import web

from gb28181gw.access import Role
from gb28181gw.admin import AdminServer, error_response, json_object, json_response, refused_response
from gb28181gw.errors import StoreError, TokenError
from gb28181gw.services.access import AccessService, token_json
from gb28181gw.services.audit import ACTOR

__all__ = ["add_token_routes"]

_STORE_HINT = "the gateway's log says more (a full disk, a store file not writable); try again once it is fixed"


def add_token_routes(admin: AdminServer, access: AccessService) -> None:
    """The token routes; ``/whoami`` says who the API takes the caller for."""

    async def listing(request: web.Request) -> web.Response:
        return json_response({"tokens": [token_json(t) for t in access.listing()]})

    async def create(request: web.Request) -> web.Response:
        body = await json_object(request, 'the body must be JSON: {"name": ..., "role": "viewer|operator|admin"}')
        name, role = body.get("name"), body.get("role")
        try:
            if not isinstance(name, str) or not isinstance(role, str):
                raise TokenError('"name" and "role" must be strings')
            token, secret = await access.create(name, Role.parse(role))
        except TokenError as exc:
            return refused_response(exc)
        except StoreError as exc:
            return error_response(503, f"the token {name!r} was not made: the store failed: {exc}", _STORE_HINT)
        shown = token_json(token)
        return json_response(
            {"name": shown["name"], "role": shown["role"], "created": shown["created"], "token": secret}, status=201
        )

    async def revoke(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            token = await access.revoke(name, keep_an_admin=admin.auth_required)
        except TokenError as exc:
            return refused_response(exc)
        except StoreError as exc:
            # not revoked in memory either: the token works exactly as long as the store says it does
            return error_response(503, f"the token {name!r} was not revoked: the store failed: {exc}", _STORE_HINT)
        return json_response({"name": token.name, "revoked": token.revoked})

    async def whoami(request: web.Request) -> web.Response:
        actor = ACTOR.get()
        if actor.name.startswith("token:"):
            name = actor.name.removeprefix("token:")
            token = next((t for t in access.listing() if t.name == name), None)
            role = str(token.role) if token else ""
            return json_response({"name": name, "role": role, "source": actor.source, "how": "token"})
        return json_response({"name": actor.name, "role": str(Role.ADMIN), "source": actor.source, "how": "local"})

    admin.add_route("GET", "/tokens", listing, role=Role.ADMIN)
    admin.add_route("POST", "/tokens", create, role=Role.ADMIN)
    admin.add_route("DELETE", "/tokens/{name}", revoke, role=Role.ADMIN)
    admin.add_route("GET", "/whoami", whoami, role=Role.VIEWER)
