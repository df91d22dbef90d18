"""``/api/v1/audit``: the audit trail, listed and checked.

- ``GET /audit``: records, oldest first, filtered by ``since`` / ``until`` (ISO 8601 with its zone,
  or epoch seconds), ``actor`` (exact, or a prefix ending in ``:``: ``token:``, ``superior:``),
  ``target`` (exact, or an ID prefix ending in ``*``), ``action`` (exact, or a family ending in
  ``.``: ``stream.``), ``result`` (ok, refused, failed), ``after`` (a record number: the next page)
  and ``limit`` (default 1000, at most 10,000). The answer is ``{"records": [...], "more": bool}``;
  ``more`` says a next page starts after the last record's ``seq``.
- ``GET /audit/verify``: the whole chain checked (:class:`~gb28181gw.services.audit.ChainReport`):
  200 also when it is broken, with ``"ok": false`` and each problem.

Both are the admin role's: the trail says who did what, to whom.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Mapping

from aiohttp import web

from gb28181gw.access import Role
from gb28181gw.admin import AdminServer, json_response, refused_response
from gb28181gw.audit import AuditQuery, Result
from gb28181gw.errors import AuditError
from gb28181gw.services.audit import AuditService

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "add_audit_routes", "audit_query"]

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
_FILTERS = ("since", "until", "actor", "target", "action", "result", "after", "limit")


def add_audit_routes(admin: AdminServer, audit: AuditService) -> None:
    """The audit trail's routes (see the module docstring)."""

    async def listing(request: web.Request) -> web.Response:
        try:
            query = audit_query(request.query)
        except AuditError as exc:
            return refused_response(exc)
        # one more than asked: whether a next page exists, without counting the table
        records = await audit.query(dataclasses.replace(query, limit=query.limit + 1))
        return json_response(
            {"records": [r.as_dict() for r in records[: query.limit]], "more": len(records) > query.limit}
        )

    async def verify(request: web.Request) -> web.Response:
        return json_response((await audit.verify()).as_dict())

    admin.add_route("GET", "/audit", listing, role=Role.ADMIN)
    admin.add_route("GET", "/audit/verify", verify, role=Role.ADMIN)


def audit_query(params: Mapping[str, str]) -> AuditQuery:
    """The :class:`AuditQuery` a listing's query string asks for.

    Raises:
        AuditError: an unknown filter or a value it cannot take (400), naming it.
    """
    unknown = sorted(set(params) - set(_FILTERS))
    if unknown:
        raise AuditError(f"unknown filter {', '.join(unknown)}", hint=f"filters are {', '.join(_FILTERS)}")
    result = params.get("result", "")
    if result and result not in {r.value for r in Result}:
        raise AuditError(f"result {result[:40]!r} is not one", hint="ok, refused or failed")
    return AuditQuery(
        since=_moment(params, "since"),
        until=_moment(params, "until"),
        actor=params.get("actor", ""),
        target=params.get("target", ""),
        action=params.get("action", ""),
        result=result,
        after=_whole(params, "after", 0, 0, 2**63 - 1),
        limit=_whole(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
    )


def _moment(params: Mapping[str, str], name: str) -> float | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise AuditError(f"{name} {text[:40]!r} is not a time")
        return value
    try:
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise AuditError(
            f"{name} {text[:40]!r} is not a time",
            hint="ISO 8601 with its zone (2026-01-31T08:00:00+08:00) or epoch seconds",
        ) from None
    if moment.tzinfo is None:
        raise AuditError(
            f"{name} {text[:40]!r} has no time zone",
            hint="add it (+08:00, Z): the gateway cannot guess whose time it is",
        )
    return moment.timestamp()


def _whole(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise AuditError(f"{name} {text[:40]!r} is not a whole number from {low} to {high}")
    return int(text)
