"""``/api/v1/ledger``: the camera ledger (一机一档) of every channel and device, read and edited.

``GET /ledger/{id}`` gives one ID's row as forms print it (``row``: the ledger over what the device
reports) and what the ledger itself holds (``fields``); ``PATCH /ledger/{id}`` with
``{"fields": {"location": "北门岗亭", "built": "2020.03"}}`` changes fields (``""`` clears one) and
answers the changes, 400 naming the field whose value cannot be read, 404 for an ID the gateway
does not know.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gb28181gw.admin import AdminServer, error_response, json_object, json_response
from gb28181gw.errors import LedgerError
from gb28181gw.gb.ledger import Change
from gb28181gw.services.ledger import LedgerService


def change_json(c: Change) -> dict[str, str]:
    return {"id": c.id, "field": c.field, "old": c.old, "new": c.new}


def entry_json(ledger: LedgerService, id_: str) -> dict[str, Any]:
    """One ID's ledger as the API shows it."""
    entry = ledger.entry(id_)
    return {
        "id": id_,
        "kind": ledger.kind_of(id_),
        "fields": dict(entry.values),
        "updated_at": entry.updated_at or None,
        "row": ledger.row(id_),
    }


def ledger_error(exc: LedgerError) -> web.Response:
    return error_response(exc.status, str(exc), exc.hint)


def add_ledger_routes(admin: AdminServer, ledger: LedgerService) -> None:
    """The ledger's routes (see the module docstring)."""

    async def show(request: web.Request) -> web.Response:
        id_ = request.match_info["id"]
        if not ledger.kind_of(id_):
            return error_response(404, f"{id_} is not a channel or device of this gateway", "see `gb28181gw channels`")
        return json_response(entry_json(ledger, id_))

    async def edit(request: web.Request) -> web.Response:
        id_ = request.match_info["id"]
        usage = 'the body must be JSON: {"fields": {"location": "北门岗亭", "built": "2020.03", ...}}'
        body = await json_object(request, usage)
        fields = body.get("fields")
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            return error_response(400, usage, "every value is a string; an empty one clears the field")
        try:
            changes = await ledger.edit(id_, fields)
        except LedgerError as exc:
            return ledger_error(exc)
        return json_response({**entry_json(ledger, id_), "changes": [change_json(c) for c in changes]})

    admin.add_route("GET", "/ledger/{id:[0-9]{20}}", show)
    admin.add_route("PATCH", "/ledger/{id:[0-9]{20}}", edit)
