"""``POST /api/v1/devices/{id}/doctor``: a device's conformance run, streamed as it goes.

The optional JSON body picks the channel the media checks use and which checks run:
``{"channel": "34020000001310000001", "checks": ["catalog", "live_udp"]}``. The answer is
``application/x-ndjson``: one line per step, the events of :mod:`gb28181gw.gb.doctor` (start,
running, result, done). What stops a run from starting is a plain JSON error before any line:
404 unknown device or channel, 409 not registered or being checked already, 400 a bad body or an
unknown check. A client that goes away cancels the run, which closes the streams it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from gb28181gw.access import Role
from gb28181gw.admin import AdminServer, error_response, json_object, refused_response
from gb28181gw.errors import DoctorError
from gb28181gw.gb.doctor import event
from gb28181gw.services.doctor import DoctorService

log = logging.getLogger("gb28181gw.doctor")

#: How often a run checks that its client is still there (seconds).
CLIENT_POLL = 0.25


def add_doctor_routes(admin: AdminServer, doctor: DoctorService) -> None:
    """The doctor's route (see the module docstring)."""

    async def run(request: web.Request) -> web.StreamResponse:
        device_id = request.match_info["id"]
        usage = 'the body, if any, is JSON: {"channel": "ID", "checks": ["register", "catalog", ...]}'
        body: dict[str, Any] = await json_object(request, usage) if request.can_read_body else {}
        channel, checks = body.get("channel", ""), body.get("checks")
        if not isinstance(channel, str) or not (
            checks is None or (isinstance(checks, list) and all(isinstance(k, str) for k in checks))
        ):
            return error_response(400, usage)
        try:
            doctor.check_start(device_id, channel=channel, checks=checks)
        except DoctorError as exc:
            return refused_response(exc)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson; charset=utf-8"})
        await resp.prepare(request)

        async def emit(line: bytes) -> None:
            await resp.write(line)

        task = asyncio.ensure_future(doctor.run(device_id, emit, channel=channel, checks=checks))
        try:
            while not task.done():
                # aiohttp does not cancel a handler whose client left: look, and cancel the run
                if request.transport is None or request.transport.is_closing():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await task
                    return resp
                await asyncio.wait({task}, timeout=CLIENT_POLL)
            try:
                if task.cancelled():  # not by us: the gateway is stopping (DoctorService.stop)
                    await resp.write(
                        event(
                            "error",
                            message="the gateway is stopping: the run was cancelled, its streams closed",
                            hint="run it again once the gateway is back",
                        )
                    )
                else:
                    task.result()
            except DoctorError as exc:  # it changed between the check and the start (a run began)
                await resp.write(event("error", message=str(exc), hint=exc.hint or ""))
            except ConnectionError:
                return resp  # the client left while a line was written
            except Exception as exc:  # a bug: the client hears of it, the log has the trace
                log.exception("doctor run failed", extra={"device": device_id})
                await resp.write(event("error", message=f"the run failed: {exc}", hint="see the gateway's log"))
        finally:
            if not task.done():
                task.cancel()
        await resp.write_eof()
        return resp

    admin.add_route("POST", "/devices/{id:[0-9]{20}}/doctor", run, role=Role.OPERATOR)
