"""``/api/v1/ledger``: the camera ledger (一机一档) of every channel and device, read, edited and imported.

``GET /ledger/{id}`` gives one ID's row as forms print it (``row``: the ledger over what the device
reports) and what the ledger itself holds (``fields``); ``PATCH /ledger/{id}`` with
``{"fields": {"location": "北门岗亭", "built": "2020.03"}}`` changes fields (``""`` clears one) and
answers the changes, 400 naming the field whose value cannot be read, 404 for an ID the gateway
does not know.

``GET /ledger`` lists every channel's entry the same way (``?kind=device``, ``platform``, ``all``,
or ``orphaned``: entries of IDs the gateway no longer has; ``?device=ID`` for one device's
channels), streamed like ``/channels``. ``DELETE /ledger/{id}`` forgets an entry (an orphaned one too).

``POST /ledger/import`` applies a file's rows (read by the CLI, ``gb/ledger_file.py``):
``{"rows": [{"line": 2, "id": "3402…", "values": {"location": "北门岗亭"}}], "strict": false,
"dry_run": false, "source": "ledger.xlsx"}`` answers ``{"changes", "problems", "applied"}``.
A row with any problem is left out whole; under ``strict`` any problem leaves everything out and
the answer is 422 (with the same body and an ``error``). Its body may be up to
:data:`MAX_IMPORT_BODY` bytes (the other routes: ``MAX_BODY``), :data:`MAX_IMPORT_ROWS` rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from gb28181gw.access import Role
from gb28181gw.admin import AdminServer, _dumps, error_response, json_object, json_response, refused_response
from gb28181gw.errors import LedgerError, StoreError
from gb28181gw.gb.ledger import Change
from gb28181gw.services.ledger import Edit, LedgerService, Problem

log = logging.getLogger("gb28181gw.admin")

#: Largest import body (bytes): 10,000 rows of every field written out are about 8 MiB.
MAX_IMPORT_BODY = 32 * 1024 * 1024
#: Most rows one import may hold.
MAX_IMPORT_ROWS = 50_000
#: Entries of a listing written between two yields to the event loop.
_CHUNK = 500
_KINDS = ("channel", "device", "platform", "all", "orphaned")
_IMPORT_USAGE = (
    'the body must be JSON: {"rows": [{"line": 2, "id": "34020000001310000001", "values": {"location": "北门岗亭"}}], '
    '"strict": false, "dry_run": false, "source": "ledger.csv"}'
)


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


def store_error(exc: StoreError) -> web.Response:
    """A store that cannot be written (disk full, read-only): the operator's to fix, not a bug."""
    return error_response(503, f"the ledger could not be stored: {exc}; nothing was changed", "see the gateway's log")


def problem_json(p: Problem) -> dict[str, Any]:
    return {"line": p.line, "id": p.id, "field": p.field, "reason": p.reason}


def import_edits(body: dict[str, Any]) -> list[Edit]:
    """The edits an import body names.

    Raises:
        LedgerError: (400) naming the first row that is not ``{"line", "id", "values"}``.
    """
    rows = body.get("rows")
    if not isinstance(rows, list):
        raise LedgerError(f'"rows" must be a list of rows; {_IMPORT_USAGE}')
    if len(rows) > MAX_IMPORT_ROWS:
        raise LedgerError(f"{len(rows)} rows; one import takes at most {MAX_IMPORT_ROWS}", hint="split the file")
    for key in ("strict", "dry_run"):
        if not isinstance(body.get(key, False), bool):
            raise LedgerError(f'"{key}" must be true or false')
    edits: list[Edit] = []
    for n, row in enumerate(rows):
        line = row.get("line", 0) if isinstance(row, dict) else None
        values = row.get("values", {}) if isinstance(row, dict) else None
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("id"), str)
            or not isinstance(line, int)
            or isinstance(line, bool)
            or line < 0
            or not isinstance(values, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())
        ):
            raise LedgerError(
                f'rows[{n}] is not {{"line": N, "id": "...", "values": {{field: text}}}}',
                hint="every value is a string; an empty one clears the field",
            )
        edits.append(Edit(row["id"], values, line))
    return edits


def _ids(ledger: LedgerService, kind: str, device: str | None) -> Iterator[str]:
    """The IDs a listing of ``kind`` shows, in order: the platform, devices, then channels."""
    if kind in ("platform", "all") and device is None:
        yield ledger.platform_id
    if kind in ("device", "all"):
        yield from (d for d in sorted(ledger.registrar.devices) if device in (None, d))
    if kind in ("channel", "all"):
        yield from (ch.channel_id for ch in ledger.channels() if device in (None, ch.device_id))
    if kind == "orphaned" and device is None:
        yield from ledger.orphans()


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
            return refused_response(exc)
        except StoreError as exc:
            return store_error(exc)
        return json_response({**entry_json(ledger, id_), "changes": [change_json(c) for c in changes]})

    async def remove(request: web.Request) -> web.Response:
        # also of an ID the gateway no longer has: that is what an orphaned entry is
        id_ = request.match_info["id"]
        try:
            entry = await ledger.remove(id_)
        except StoreError as exc:
            return store_error(exc)
        if entry is None:
            return error_response(404, f"no ledger entry for {id_}", "`gb28181gw ledger list --kind orphaned`")
        return json_response({"id": id_, "removed": True, "fields": dict(entry.values)})

    async def listing(request: web.Request) -> web.StreamResponse:
        kind = request.query.get("kind", "channel")
        device = request.query.get("device")
        if kind not in _KINDS:
            return error_response(400, f"kind must be one of {', '.join(_KINDS)}, not {kind!r}")
        if device is not None and ledger.kind_of(device) != "device":
            return error_response(404, f"{device} is not a device of this gateway", "see `gb28181gw devices`")
        # streamed in chunks, yielding between them: ten thousand rows must not stall keepalives
        resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
        await resp.prepare(request)
        await resp.write(b'{"entries": [')
        ids = list(_ids(ledger, kind, device))
        for i in range(0, len(ids), _CHUNK):
            chunk = ", ".join(_dumps(entry_json(ledger, id_)) for id_ in ids[i : i + _CHUNK])
            await resp.write(("" if i == 0 else ", ").encode() + chunk.encode())
            await asyncio.sleep(0)
        await resp.write(b"]}")
        await resp.write_eof()
        return resp

    async def import_rows(request: web.Request) -> web.Response:
        # a file of thousands of rows is larger than any other request: this route alone takes more
        big = request.clone(client_max_size=MAX_IMPORT_BODY)
        try:
            body = await json_object(big, _IMPORT_USAGE)
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, f"the import is larger than {MAX_IMPORT_BODY:,} bytes", "split the file")
        try:
            edits = import_edits(body)
        except LedgerError as exc:
            return refused_response(exc)
        strict, dry_run = body.get("strict", False), body.get("dry_run", False)
        try:
            result = await ledger.apply(edits, strict=strict, dry_run=dry_run)
        except StoreError as exc:
            return store_error(exc)
        source = body.get("source")
        log.info(
            "ledger import",
            extra={"source": source if isinstance(source, str) else "", "rows": len(edits),
                   "changes": len(result.changes), "problems": len(result.problems), "applied": result.applied},
        )  # fmt: skip
        answer: dict[str, Any] = {
            "changes": [change_json(c) for c in result.changes],
            "problems": [problem_json(p) for p in result.problems],
            "applied": result.applied,
        }
        if strict and result.problems:
            answer["error"] = f"{len(result.problems)} problem(s) and strict: nothing was applied"
            return json_response(answer, status=422)
        return json_response(answer)

    admin.add_route("GET", "/ledger", listing, role=Role.VIEWER)
    admin.add_route("POST", "/ledger/import", import_rows, role=Role.ADMIN)
    admin.add_route("GET", "/ledger/{id:[0-9]{20}}", show, role=Role.VIEWER)
    admin.add_route("PATCH", "/ledger/{id:[0-9]{20}}", edit, role=Role.ADMIN)
    admin.add_route("DELETE", "/ledger/{id:[0-9]{20}}", remove, role=Role.ADMIN)
