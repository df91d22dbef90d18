"""A superior's queries and controls, and alarms sent up to superiors (cascade, PROTOCOL.md §9.4, §9.7, §9.8).

Every MANSCDP MESSAGE a configured superior sends (:attr:`~gb28181gw.net.router.Role.PLATFORM`)
other than a Catalog query comes here. :func:`gb28181gw.gb.superior_requests.decide` says what
to do with it; this module does it:

- rejections (404 for what the superior may not see, 403 for a dangerous command it is not
  allowed) are the answer to its MESSAGE, logged with who asked what;
- anything else is answered 200 at once (the two-step pattern, §5.1), then: DeviceInfo and
  DeviceStatus of our platform are answered by us; a request for a device or channel goes to
  the owning device with our own SN, its DeviceID and payload unchanged, and the device's
  Response comes back with the superior's SN, in the superior's charset. The matching of the
  device's answer is :class:`~gb28181gw.services.devices.DeviceService`'s (by device, CmdType
  and our SN), so the SN map of §9.4 is the pair (our SN, the superior's SN) each relay holds
  while it waits. A device that is offline is answered for (DeviceStatus ``Online OFFLINE``,
  else ``Result ERROR``), and so is one that does not answer: the superior never waits in vain.
- an alarm a device reports is sent, as a Notify with its DeviceID unchanged and our SN, to
  every registered superior that may see it; the superior's Response (a MESSAGE, or the body
  of its 200 as Monibuca sends it, §11.6 P4) is matched back to it.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import random

from gb28181gw import __version__
from gb28181gw.audit import Action as AuditAction
from gb28181gw.audit import Actor, Result
from gb28181gw.errors import DeviceError, ManscdpError, SipTimeoutError, SipTransportError
from gb28181gw.gb.cascade_catalog import body_limit
from gb28181gw.gb.model import Device
from gb28181gw.gb.query import SnAllocator
from gb28181gw.gb.superior_requests import Action, Target, Verdict, decide, record_parts
from gb28181gw.manscdp.messages import CmdType, Envelope, Fields, Root, decode, encode, envelope, restamp
from gb28181gw.net.router import ANY, ManscdpRequest, Role
from gb28181gw.net.stack import SipStack
from gb28181gw.net.tasks import TaskSet
from gb28181gw.sip.endpoint import warning_header
from gb28181gw.sip.message import Response, make_response

from .audit import AuditService, acting, result_of
from .devices import DeviceService
from .upstreams import Link, UpstreamService

log = logging.getLogger("gb28181gw.upstream")

#: Seconds an alarm sent up waits for the superior's Response before it is logged as unanswered.
ALARM_RESPONSE_TIMEOUT = 30.0
#: Alarms sent up and not yet answered, kept at most (older ones are forgotten first).
MAX_PENDING_ALARMS = 1000

#: CmdTypes counted by name (any other is counted as "other": the label stays bounded).
_LABELS = {c.value.lower(): c.value for c in CmdType}


class CascadeRequestService:
    """Serves superiors' requests other than Catalog, and sends alarms up (see the module docstring).

    Args:
        stack / upstreams / devices: the SIP stack, the superiors, the devices.
        gateway_id: our platform ID (``gateway.id``); a superior may also use the ``local_id`` we register with.
        name: the DeviceName we give for our platform.
        zone: the site's time zone (DeviceTime).
        audit: where the queries, controls and PTZ commands passed on to our devices, and those
            refused, are recorded in the superior's name.
    """

    def __init__(
        self,
        stack: SipStack,
        upstreams: UpstreamService,
        devices: DeviceService,
        *,
        gateway_id: str,
        name: str = "gb28181gw",
        zone: _dt.tzinfo = _dt.UTC,
        audit: AuditService | None = None,
    ) -> None:
        self.audit = audit
        self.stack = stack
        self.upstreams = upstreams
        self.devices = devices
        self.gateway_id = gateway_id
        self.name = name
        self.zone = zone
        self._sn = SnAllocator(start=random.randint(1, 1_000_000))
        self._alarms: dict[tuple[str, int], str] = {}  # (superior, our SN) → the alarm's DeviceID
        self._tasks = TaskSet()
        stack.router.on_message(Role.PLATFORM, ANY, self._on_message, owner="cascade requests")
        devices.on_alarm(self._on_alarm)

    async def stop(self) -> None:
        """Stop relaying (requests under way are dropped)."""
        self._tasks.cancel()

    # --- requests from a superior ------------------------------------------------------------

    def _on_message(self, msg: ManscdpRequest) -> None:
        event = msg.event
        link = self.upstreams.superior(msg.sender, event.peer)
        if link is None:  # a PLATFORM some other resolver claimed: not a superior of ours
            self._answer(msg, 403, f"{msg.sender} is not a superior of this gateway")
            return
        # what it asks of our devices is recorded in its name, in the tasks started here too
        with acting(Actor.superior(msg.sender, f"{event.peer.host}:{event.peer.port}")):
            self._on_request(msg, link)

    def _on_request(self, msg: ManscdpRequest, link: Link) -> None:
        name = link.machine.settings.name
        try:
            env = envelope(msg.root)
        except ManscdpError as exc:
            self._answer(msg, 400, str(exc))
            self.upstreams.count_request(name, _label(msg.cmd_type), "400")
            return
        target, device_id = self._target(link, env.device_id)
        verdict = decide(env, target, allowed=tuple(link.section.allow_commands))
        label = _label(env.cmd_type)
        extra = {"upstream": name, "superior": msg.sender, "cmd": env.cmd_type, "target": env.device_id, "sn": env.sn}
        if verdict.action is Action.REJECT:
            if verdict.status == 403:
                log.warning(
                    "superior's command refused", extra={**extra, "command": verdict.command, "reason": verdict.reason}
                )
            else:
                log.info(
                    "superior's request refused", extra={**extra, "status": verdict.status, "reason": verdict.reason}
                )
            self._answer(msg, verdict.status, verdict.reason)
            self.upstreams.count_request(name, label, str(verdict.status))
            self._audit(env, name, Result.REFUSED, verdict.reason)
            return
        self._answer(msg, 200)
        if verdict.command:
            log.warning(
                "superior's command allowed by allow_commands",
                extra={**extra, "command": verdict.command, "note": verdict.reason},
            )
        if verdict.action is Action.TAKE:
            if env.root is Root.RESPONSE:
                self._alarm_answered(link, env)
            self.upstreams.count_request(name, label, "ok")
            return
        self._tasks.spawn(self._serve(link, env, verdict, device_id, label))

    def _answer(self, msg: ManscdpRequest, status: int, warning: str = "") -> None:
        tx = msg.event.transaction
        assert tx is not None
        response = make_response(msg.event.request, status, to_tag=self.stack.endpoint.new_tag())
        if warning:
            response.headers.add("Warning", warning_header(warning))
        self.stack.respond(tx, response)

    def _target(self, link: Link, target_id: str) -> tuple[Target, str]:
        """What ``target_id`` is for this superior, and the device it belongs to."""
        if target_id in (link.machine.settings.local_id, self.gateway_id):
            return Target.OURS, ""
        name = link.machine.settings.name
        for device_id, chans in self.devices.channels.items():
            if target_id in chans:
                seen = self.upstreams.may_see(name, target_id, device_id)
                return (Target.VISIBLE if seen else Target.HIDDEN), device_id
        if target_id in self.devices.registrar.devices:
            return (Target.VISIBLE if self.upstreams.may_see(name, target_id) else Target.HIDDEN), target_id
        return Target.UNKNOWN, ""

    async def _serve(self, link: Link, env: Envelope, verdict: Verdict, device_id: str, label: str) -> None:
        name = link.machine.settings.name
        if verdict.action is Action.ANSWER:
            await self._send_up(link, self._our_answer(link, env))
            self.upstreams.count_request(name, label, "ok")
            return
        device = self.devices.registrar.devices.get(device_id)
        if device is None or not device.online:
            # nothing to ask: say what we know at once rather than let the superior wait
            if verdict.response:
                await self._send_up(link, self._offline_answer(link, env, device))
            self.upstreams.count_request(name, label, "offline")
            self._audit(env, name, Result.REFUSED, f"the device {device_id or env.device_id} is offline")
            log.info(
                "superior's request for an offline device answered by us",
                extra={"upstream": name, "cmd": env.cmd_type, "target": env.device_id, "device": device_id},
            )
            return
        try:
            if verdict.action is Action.FORWARD_RECORDS:
                await self._relay_records(link, env, device_id)
            elif verdict.action is Action.FORWARD_CONFIG:
                await self._relay_config(link, env, device_id)
            elif verdict.response:
                answer = await self.devices.query(
                    device_id, _cmd(env), body=lambda sn, charset: restamp(env.element, sn, charset=charset)
                )
                await self._send_up(link, restamp(answer.element, env.sn, charset=link.section.charset))
            else:
                # PTZ, IFrame, TeleBoot …: the device's 200 is all there is (§5.6.1)
                sn = self.devices.next_sn(device_id)
                await self.devices.send(device, restamp(env.element, sn, charset=device.charset))
        except DeviceError as exc:
            result = "timeout" if exc.status == DeviceError.NO_ANSWER else "error"
            self.upstreams.count_request(name, label, result)
            self._audit(env, name, result_of(exc), str(exc))
            log.info(
                "superior's request failed at the device",
                extra={
                    "upstream": name,
                    "cmd": env.cmd_type,
                    "target": env.device_id,
                    "device": device_id,
                    "error": str(exc),
                },
            )
            if verdict.response:
                await self._send_up(link, _error_answer(link, env))
            return
        self.upstreams.count_request(name, label, "ok")
        self._audit(env, name, Result.OK)

    def _audit(self, env: Envelope, upstream: str, result: Result, detail: str = "") -> None:
        """Record the superior's request ``env`` passed on to a device (or refused)."""
        if self.audit is None or env.root not in (Root.QUERY, Root.CONTROL):
            return
        commands = {
            str(child.tag): (child.text or "").strip()
            for child in env.element
            if isinstance(child.tag, str) and child.tag.lower() not in _ENVELOPE_TAGS
        }
        if env.root is Root.QUERY:
            action = AuditAction.DEVICE_QUERY
        else:
            action = AuditAction.PTZ if "PTZCmd" in commands else AuditAction.DEVICE_CONTROL
        params = {"upstream": upstream, "cmd": env.cmd_type, **commands}
        self.audit.record(action, env.device_id, params, result=result, detail=detail)

    async def _relay_records(self, link: Link, env: Envelope, device_id: str) -> None:
        # the device's parts are collected whole (its SumNum is often wrong, C1) and sent up
        # again in catalog_batch items per MESSAGE, each after the previous one's 200, with a
        # SumNum that is what we send
        result = await self.devices.collect(
            device_id, CmdType.RECORD_INFO, lambda sn, charset: restamp(env.element, sn, charset=charset)
        )
        channel = next(
            (c for c in self.devices.channels.get(device_id, {}).values() if c.channel_id == env.device_id), None
        )
        head: Fields = [("Name", channel.name)] if channel is not None and channel.name else []
        parts = record_parts(
            env.device_id,
            env.sn,
            list(result.items.values()),
            batch=link.section.catalog_batch,
            charset=link.section.charset,
            head=head,
            limit=body_limit(link.machine.peer.transport, self.stack.endpoint.limits.max_message_size),
        )
        if parts.skipped:
            log.warning(
                "records too big for any MESSAGE to a superior skipped",
                extra={"upstream": link.machine.settings.name, "target": env.device_id,
                       "items": [f[0][1] for f in parts.skipped if isinstance(f, list)]},
            )  # fmt: skip
        for body in parts.bodies:
            if not await self._send_up(link, body):
                break

    async def _relay_config(self, link: Link, env: Envelope, device_id: str) -> None:
        # a device answers each ConfigType in a Response of its own, all with one SN; asked one
        # type at a time, each answer is matched for sure and relayed with the superior's SN
        types = [t.strip() for t in (env.text("ConfigType") or "").split("/") if t.strip()] or [""]
        for config_type in types:

            def body(sn: int, charset: str, config_type: str = config_type) -> bytes:
                if len(types) == 1:
                    return restamp(env.element, sn, charset=charset)
                fields: Fields = [("ConfigType", config_type)]
                return encode(Root.QUERY, CmdType.CONFIG_DOWNLOAD, sn, env.device_id, fields, charset=charset)

            answer = await self.devices.query(device_id, CmdType.CONFIG_DOWNLOAD, body=body)
            await self._send_up(link, restamp(answer.element, env.sn, charset=link.section.charset))

    def _our_answer(self, link: Link, env: Envelope) -> bytes:
        """Our own Response for our platform ID (§9.4): DeviceInfo, DeviceStatus, else Result ERROR."""
        name = link.machine.settings.name
        fields: Fields
        if env.is_cmd(CmdType.DEVICE_INFO):
            fields = [
                ("DeviceName", self.name),
                ("Result", "OK"),
                ("Manufacturer", "gb28181gw"),
                ("Model", "GB/T 28181 gateway"),
                ("Firmware", __version__),
                ("Channel", self.upstreams.channels_shared(name)),  # channels, not regions or groups
            ]
        elif env.is_cmd(CmdType.DEVICE_STATUS):
            now = _dt.datetime.now(self.zone).strftime("%Y-%m-%dT%H:%M:%S")
            fields = [("Result", "OK"), ("Online", "ONLINE"), ("Status", "OK"), ("DeviceTime", now)]
        else:
            return _error_answer(link, env)
        return encode(Root.RESPONSE, env.cmd_type, env.sn, env.device_id, fields, charset=link.section.charset)

    def _offline_answer(self, link: Link, env: Envelope, device: Device | None) -> bytes:
        if env.is_cmd(CmdType.DEVICE_STATUS):
            reason = "device offline" if device is not None and device.registered else "device not registered"
            fields: Fields = [("Result", "OK"), ("Online", "OFFLINE"), ("Status", "ERROR"), ("Reason", reason)]
            return encode(Root.RESPONSE, env.cmd_type, env.sn, env.device_id, fields, charset=link.section.charset)
        return _error_answer(link, env)

    async def _send_up(self, link: Link, body: bytes) -> Response | None:
        """Send ``body`` to the superior in a MESSAGE; its final response, or ``None`` (logged) when it fails."""
        m = link.machine
        if not self.upstreams.may_send(link):
            log.info(
                "MESSAGE to superior not sent: this node may not hold its lease", extra={"upstream": m.settings.name}
            )
            return None
        try:
            response = await self.stack.request(m.message(body), m.peer, gate=self.upstreams.gate(link))
        except (SipTimeoutError, SipTransportError) as exc:
            # the superior never gets this answer or alarm: worth an operator's attention
            log.warning("MESSAGE to superior failed", extra={"upstream": m.settings.name, "error": str(exc)})
            return None
        if response.status >= 300:
            log.warning(
                "superior refused our MESSAGE",
                extra={"upstream": m.settings.name, "status": response.status, "reason": response.reason},
            )
            return None
        return response

    # --- alarms up (§9.8) -------------------------------------------------------------------

    def _on_alarm(self, device: Device, env: Envelope) -> None:
        for link in self.upstreams.links.values():
            name = link.machine.settings.name
            if not link.machine.registered or not self.upstreams.may_see(name, env.device_id, device.device_id):
                continue
            sn = self._sn.next(name)
            if len(self._alarms) >= MAX_PENDING_ALARMS:
                del self._alarms[next(iter(self._alarms))]
            self._alarms[name, sn] = env.device_id
            self._tasks.spawn(self._alarm_up(link, sn, restamp(env.element, sn, charset=link.section.charset)))

    async def _alarm_up(self, link: Link, sn: int, body: bytes) -> None:
        name = link.machine.settings.name
        response = await self._send_up(link, body)
        if response is None:
            self._alarms.pop((name, sn), None)
            return
        log.info("alarm sent up", extra={"upstream": name, "sn": sn, "target": self._alarms.get((name, sn), "")})
        if response.body:
            # Monibuca answers with the Response in the 200 (PROTOCOL.md §11.6 P4)
            try:
                answered = decode(response.body)
            except ManscdpError:
                answered = None
            if answered is not None and answered.root is Root.RESPONSE:
                self._alarm_answered(link, answered)
        if (name, sn) in self._alarms:
            asyncio.get_running_loop().call_later(ALARM_RESPONSE_TIMEOUT, self._alarm_expired, name, sn)

    def _alarm_answered(self, link: Link, env: Envelope) -> None:
        name = link.machine.settings.name
        target = self._alarms.pop((name, env.sn), None) if env.is_cmd(CmdType.ALARM) else None
        if target is None:
            log.info(
                "superior's Response matches nothing we sent",
                extra={"upstream": name, "cmd": env.cmd_type, "sn": env.sn},
            )
            return
        log.info(
            "superior answered our alarm",
            extra={"upstream": name, "sn": env.sn, "target": target, "result": env.text("Result") or ""},
        )

    def _alarm_expired(self, name: str, sn: int) -> None:
        target = self._alarms.pop((name, sn), None)
        if target is not None:
            log.info("superior never answered our alarm", extra={"upstream": name, "sn": sn, "target": target})


#: Children of a MANSCDP body that are its envelope, not what it asks.
_ENVELOPE_TAGS = frozenset({"cmdtype", "sn", "deviceid"})


def _cmd(env: Envelope) -> CmdType:
    # decide() forwards only the CmdTypes we speak: the pending answer is keyed by this
    return CmdType(_LABELS[env.cmd_type.lower()])


def _label(cmd_type: str) -> str:
    return _LABELS.get(cmd_type.lower(), "other")


def _error_answer(link: Link, env: Envelope) -> bytes:
    """``Result ERROR`` for the superior (§9.4: a target we cannot serve, a device that failed)."""
    fields: Fields = [("Result", "ERROR")]
    if env.is_cmd(CmdType.RECORD_INFO):
        fields.append(("SumNum", 0))
    return encode(Root.RESPONSE, env.cmd_type, env.sn, env.device_id, fields, charset=link.section.charset)
