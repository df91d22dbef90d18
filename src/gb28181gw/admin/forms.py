"""``/api/v1/ledger/forms``, ``/check`` and ``/export``: the camera ledger in the authorities' forms.

``GET /ledger/forms`` lists every form (shipped and ``[ledger] forms``): name, title, sheets with
their columns, the file it came from, and for a file that cannot be used ``broken`` and why;
``import_titles``: what each column title means when a filled-in form is read back (a field
key, ``id``, or ``null``: known, not imported), for ``ledger import``.
``GET /ledger/check?form=NAME[&sheet=S]`` answers every row that fails the checks
(``{"problems": [{"sheet", "row", "id", "column", "reason"}]}``).
``GET /ledger/export?form=NAME&format=xlsx|csv[&sheet=S][&strict=1]`` answers the file itself
(``Content-Disposition: attachment``) with ``X-Ledger-Problems: N`` (failing rows are marked in it)
and ``X-Ledger-Sheets`` (the sheets it holds, percent-encoded, comma-separated);
under ``strict`` a form with any failing row is 422 with every problem and no file.
404: no such form; 400: a broken form file, an unknown sheet or format.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from gb28181gw.access import Role
from gb28181gw.admin import AdminServer, error_response, json_response, refused_response
from gb28181gw.errors import LedgerError
from gb28181gw.gb.forms import RowProblem, Table
from gb28181gw.services.forms import FORMATS, FormFile, FormService

#: The header an export's problem count is answered in.
PROBLEMS_HEADER = "X-Ledger-Problems"
#: The sheets the file holds, each percent-encoded (UTF-8), separated by commas.
SHEETS_HEADER = "X-Ledger-Sheets"


def problem_json(p: RowProblem) -> dict[str, Any]:
    return {"sheet": p.sheet, "row": p.row, "id": p.id, "column": p.column, "reason": p.reason}


def form_json(f: FormFile) -> dict[str, Any]:
    """One form as the listing shows it."""
    out: dict[str, Any] = {"name": f.name, "source": f.source, "broken": f.form is None}
    if f.form is None:
        return {**out, "error": f.error, "title": "", "sheets": []}
    return {
        **out,
        "title": f.form.title,
        "description": f.form.description,
        "sheets": [{"name": s.name, "rows": s.rows, "columns": s.header} for s in f.form.sheets],
    }


def _checked(tables: list[Table]) -> dict[str, Any]:
    return {
        "sheets": [{"name": t.sheet.name, "rows": len(t.rows)} for t in tables],
        "problems": [problem_json(p) for t in tables for p in t.problems],
    }


def add_form_routes(admin: AdminServer, forms: FormService) -> None:
    """The form routes (see the module docstring)."""

    def failed(exc: LedgerError) -> web.Response:
        return refused_response(exc)

    async def list_forms(request: web.Request) -> web.Response:
        return json_response({"forms": [form_json(f) for f in forms.forms()], "import_titles": forms.import_titles()})

    async def check(request: web.Request) -> web.Response:
        name = request.query.get("form", "")
        if not name:
            return error_response(400, "which form? ?form=NAME", "`gb28181gw ledger forms` lists them")
        try:
            form, tables = await forms.check(name, request.query.get("sheet", ""))
        except LedgerError as exc:
            return failed(exc)
        return json_response({"form": form.name, **_checked(tables)})

    async def export(request: web.Request) -> web.StreamResponse:
        q = request.query
        name, fmt = q.get("form", ""), q.get("format", "xlsx")
        if not name:
            return error_response(400, "which form? ?form=NAME", "`gb28181gw ledger forms` lists them")
        if fmt not in FORMATS:
            return error_response(400, f"no format {fmt!r}", "format=xlsx or format=csv")
        strict = q.get("strict", "") in ("1", "true", "yes")
        try:
            done = await forms.export(name, fmt, sheet=q.get("sheet", ""), strict=strict)
        except LedgerError as exc:
            return failed(exc)
        problems = done.problems
        if strict and problems:
            body = {
                "error": f"{len(problems)} problems in form {done.form.name}: nothing exported (strict)",
                "hint": "fix them (gb28181gw ledger set / import) or export without strict to get them marked",
                "form": done.form.name,
                **_checked(done.tables),
            }
            return json_response(body, status=422)
        quoted = urllib.parse.quote(done.filename)
        return web.Response(
            body=done.data,
            headers={
                "Content-Type": done.content_type,
                "Content-Disposition": f"attachment; filename=\"{done.filename}\"; filename*=UTF-8''{quoted}",
                PROBLEMS_HEADER: str(len(problems)),
                SHEETS_HEADER: ",".join(urllib.parse.quote(t.sheet.name, safe="") for t in done.tables),
            },
        )

    admin.add_route("GET", "/ledger/forms", list_forms, role=Role.VIEWER)
    admin.add_route("GET", "/ledger/check", check, role=Role.VIEWER)
    admin.add_route("GET", "/ledger/export", export, role=Role.VIEWER)
