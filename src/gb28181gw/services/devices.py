"""Talking to registered devices: MANSCDP queries and controls, and the catalog they answer.

A query is a MESSAGE with a ``<Query>`` body; the device answers the MESSAGE with 200
at once and sends the result later as a MESSAGE of its own with the same SN
(PROTOCOL.md §5.1). Pending queries wait on futures keyed (device, CmdType, SN); a
Catalog answer is assembled by :class:`~gb28181gw.gb.query.CatalogCollector` and stored.
Every request goes to the address and transport the device registered from.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Set

from gb28181gw.audit import Action
from gb28181gw.config import DevicesSection
from gb28181gw.errors import DeviceError, StoreError, StoreRecordError
from gb28181gw.gb.catalog import ChannelUpdate, Position, channel_from_item
from gb28181gw.gb.model import Alarm, Channel, Device
from gb28181gw.gb.outbound import device_peer, device_routes, device_uri, to_device
from gb28181gw.gb.query import CatalogCollector, CatalogResult, SnAllocator
from gb28181gw.manscdp.codec import charset_problem
from gb28181gw.manscdp.messages import (
    CONTENT_TYPE,
    CatalogItem,
    CmdType,
    Envelope,
    Fields,
    Root,
    encode,
    flat,
    list_items,
)
from gb28181gw.manscdp.ptz import PtzCmd
from gb28181gw.metrics import (
    ALARMS,
    CATALOG_SYNC_SECONDS,
    CHANNELS,
    INVALID_COORDINATES,
    MANSCDP_UNMATCHED,
    QUERIES,
    Metrics,
    bounded_label,
    code_label,
)
from gb28181gw.net.stack import SipStack, SipTimeoutError, SipTransportError
from gb28181gw.net.tasks import TaskSet
from gb28181gw.store.base import Store

from .audit import AuditService, audited
from .registrar import RegistrarService

log = logging.getLogger("gb28181gw.devices")

#: Seconds between attempts to write what the store could not take (channel lists, alarms).
STORE_RETRY_INTERVAL = 1.0
#: Alarms kept for the store while it cannot be written; beyond, the oldest are dropped.
MAX_UNSAVED_ALARMS = 10_000

#: CmdTypes counted by name in metrics (any other is counted as "other").
_CMD_LABELS = {c.value.lower(): c.value for c in CmdType}

__all__ = ["RECORD_KEYS", "AlarmListener", "BodyBuilder", "DeviceError", "DeviceService", "config_section"]

#: What, with its DeviceID, tells one recording of a RecordInfo answer from another (many share the channel).
RECORD_KEYS = ("StartTime", "EndTime", "FilePath")
#: Writes a request's body for the device given the SN we chose and the device's charset.
BodyBuilder = Callable[[int, str], bytes]
#: Told of every alarm a device reports (after it is recorded): (the device, the Notify).
AlarmListener = Callable[[Device, Envelope], None]


def config_section(env: Envelope, config_type: str) -> dict[str, str]:
    """The fields of a ConfigDownload answer's ``config_type`` section (``BasicParam`` …), or of the
    answer itself when it has no such section."""
    section = env.element
    for child in env.element:
        if isinstance(child.tag, str) and child.tag.lower() == config_type.lower():
            section = child
    return {c.tag: (c.text or "").strip() for c in section if isinstance(c.tag, str) and not len(c)}


class DeviceService:
    """Queries, controls and catalogs of registered devices.

    Args:
        stack / store / registrar: the SIP stack, persistence and the registrar service.
        our_id / domain: our platform ID and domain.
        metrics: where to count.
        settings: the ``[devices]`` section (query and catalog timeouts, catalog on register).
        audit: where queries, controls and PTZ commands sent to devices are recorded.
    """

    def __init__(
        self,
        stack: SipStack,
        store: Store,
        registrar: RegistrarService,
        *,
        our_id: str,
        domain: str,
        metrics: Metrics,
        settings: DevicesSection,
        audit: AuditService | None = None,
    ) -> None:
        self.stack = stack
        self.audit = audit
        self.metrics = metrics
        self.store = store
        self.registrar = registrar
        self.our_id = our_id
        self.domain = domain
        self.settings = settings
        self.channels: dict[str, dict[str, Channel]] = {}
        self.partial: set[str] = set()
        self._sn = SnAllocator(start=random.randint(1, 1_000_000))
        self._pending: dict[tuple[str, str, int], asyncio.Future[Envelope]] = {}
        self._catalogs: dict[tuple[str, int], tuple[CatalogCollector, asyncio.Future[CatalogResult], CmdType]] = {}
        self.alarms: deque[dict[str, str]] = deque(maxlen=1000)
        self._alarm_listeners: list[AlarmListener] = []
        self._reaper: asyncio.Task[None] | None = None
        self._retrier: asyncio.Task[None] | None = None
        self._channels_wanted: set[str] = set()
        self._channel_reader: asyncio.Task[None] | None = None
        # what the store could not take, written once it can (a Redis restart, a full disk): the
        # devices whose whole channel list is to be written, and the alarms
        self._unsaved_channels: set[str] = set()
        self._unsaved_alarms: deque[Alarm] = deque(maxlen=MAX_UNSAVED_ALARMS)
        self._tasks = TaskSet()
        self._channel_listeners: list[Callable[[str], None]] = []
        self.queries = metrics.counter(QUERIES)
        self.unmatched = metrics.counter(MANSCDP_UNMATCHED)
        self.bad_positions = metrics.counter(INVALID_COORDINATES)
        self.alarm_count = metrics.counter(ALARMS)
        self.catalog_seconds = metrics.counter(CATALOG_SYNC_SECONDS)
        metrics.labeled_gauge(CHANNELS, lambda: {("known",): float(sum(map(len, self.channels.values())))})
        registrar.on_manscdp(self.handle_manscdp)
        registrar.on_registered(self._on_registered)
        registrar.on_offline(self._on_offline)
        registrar.on_removed(self.forget)  # another node's device deleted there

    def on_channels_changed(self, listener: Callable[[str], None]) -> None:
        """Be told (with the device ID) whenever the channels kept of a device change: a catalog
        stored, catalog events applied, the device gone offline (what superiors see follows them)."""
        self._channel_listeners.append(listener)

    def channels_changed(self, device_id: str) -> None:
        """Tell the :meth:`on_channels_changed` listeners that the channels of ``device_id`` changed."""
        for listener in self._channel_listeners:
            try:
                listener(device_id)
            except Exception:
                log.exception("channel listener failed", extra={"device": device_id})

    async def start(self) -> None:
        """Load stored channels and start expiring quiet catalog answers."""
        for ch in await self.store.load_channels():
            self.channels.setdefault(ch.device_id, {})[ch.channel_id] = ch
        self._reaper = asyncio.get_running_loop().create_task(self._reap())
        self._retrier = asyncio.get_running_loop().create_task(self._retry_writes())

    async def stop(self) -> None:
        """Stop; pending queries fail; what the store could not take is tried once more."""
        if self._reaper is not None:
            self._reaper.cancel()
        if self._retrier is not None:
            self._retrier.cancel()
        if self._channel_reader is not None:
            self._channel_reader.cancel()
        self._tasks.cancel()
        if self._unsaved_channels or self._unsaved_alarms:
            await self._write_unsaved()
            if self._unsaved_channels or self._unsaved_alarms:
                log.error(
                    "store cannot be written at shutdown: channel lists and alarms lost",
                    extra={"devices": len(self._unsaved_channels), "alarms": len(self._unsaved_alarms)},
                )
        waiting: list[asyncio.Future[Envelope] | asyncio.Future[CatalogResult]] = list(self._pending.values())
        waiting += [fut for _, fut, _ in self._catalogs.values()]
        for fut in waiting:
            fut.cancel()  # whoever waited is being cancelled too; an exception here would go unseen

    # --- sending -----------------------------------------------------------------------

    def registered(self, device_id: str) -> Device:
        """The device, which must be registered (else :class:`DeviceError`)."""
        device = self.registrar.devices.get(device_id)
        if device is None:
            raise DeviceError(f"no device {device_id}", DeviceError.NOT_FOUND)
        if not device.registered or not device.host:
            raise DeviceError(f"device {device_id} is not registered", DeviceError.NOT_REGISTERED)
        if not self.registrar.cluster.owns(device_id):
            # another node's (several nodes): this node knows it as that node wrote it, and a
            # request sent from here would come from a gateway the device is not registered at
            raise DeviceError(
                f"device {device_id} is registered at another node, not this one",
                DeviceError.NOT_REGISTERED,
                hint="ask the node that serves it: `gb28181gw devices` names it",
            )
        return device

    def device_of(self, target_id: str) -> Device:
        """The device a device ID or channel ID belongs to, which must be registered."""
        device_id = self.owner_of(target_id)
        if device_id is None:
            raise DeviceError(f"no device or channel {target_id}", DeviceError.NOT_FOUND)
        return self.registered(device_id)

    def owner_of(self, target_id: str) -> str | None:
        """The ID of the device a device ID (itself) or channel ID belongs to, registered or not."""
        if target_id in self.registrar.devices:
            return target_id  # a device, or an IPC that is its own channel
        for device_id, chans in self.channels.items():
            if target_id in chans:
                return device_id
        return None

    def forget(self, device_id: str) -> None:
        """Drop what is kept in memory of a removed device (its channels)."""
        self.channels.pop(device_id, None)
        self.partial.discard(device_id)
        self.channels_changed(device_id)

    def next_sn(self, device_id: str) -> int:
        """A fresh SN for a request to ``device_id``."""
        return self._sn.next(device_id)

    async def send(self, device: Device, body: bytes) -> None:
        """Send a MANSCDP MESSAGE to ``device`` and wait for its 200, at most ``devices.query_timeout``."""
        req = to_device(
            "MESSAGE",
            device_uri(device.device_id, device),
            our_id=self.our_id,
            domain=self.domain,
            device_id=device.device_id,
            target_id=device.device_id,
            call_id=self.stack.endpoint.new_call_id(),
            cseq=1,
            from_tag=self.stack.endpoint.new_tag(),
            content_type=CONTENT_TYPE,
            body=body,
            routes=device_routes(device),
        )
        try:
            # bounded by query_timeout, not Timer F (32 s): an operator is waiting for this
            resp = await self.stack.request(req, device_peer(device), timeout=self.settings.query_timeout)
        except SipTimeoutError:
            raise DeviceError(
                f"device {device.device_id} did not answer the MESSAGE within {self.settings.query_timeout:g} s",
                DeviceError.NO_ANSWER,
            ) from None
        except SipTransportError as exc:
            raise DeviceError(f"cannot reach device {device.device_id}: {exc}", DeviceError.UNREACHABLE) from None
        if resp.status >= 300:
            raise DeviceError(f"device {device.device_id} answered {resp.status} {resp.reason}", DeviceError.REFUSED)

    async def query(
        self,
        device_id: str,
        cmd: CmdType,
        fields: Fields | None = None,
        *,
        target: str | None = None,
        root: Root = Root.QUERY,
        body: BodyBuilder | None = None,
    ) -> Envelope:
        """Send a ``<Query>`` (or another ``root``) and return the device's ``<Response>`` (one message).

        ``body`` writes the request instead (a superior's request passed on, PROTOCOL.md §9.4):
        ``fields``, ``target`` and ``root`` are then unused.
        """
        device = self.registered(device_id)
        sn = self.next_sn(device_id)
        key = (device_id, cmd.value.lower(), sn)
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.query_timeout
        try:
            if body is not None:
                await self.send(device, body(sn, device.charset))
            else:
                await self.send(device, encode(root, cmd, sn, target or device_id, fields, charset=device.charset))
            env = await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
        except TimeoutError:
            self.queries[cmd.value, "timeout"] += 1
            raise DeviceError(
                f"device {device_id} sent no {cmd.value} response within {self.settings.query_timeout:g} s",
                DeviceError.NO_ANSWER,
            ) from None
        except DeviceError:
            self.queries[cmd.value, "error"] += 1
            raise
        finally:
            self._pending.pop(key, None)
        self.queries[cmd.value, "ok"] += 1
        return env

    async def device_info(self, device_id: str) -> dict[str, str]:
        """DeviceInfo (§5.4.2); the device record learns its name, maker, model and firmware."""
        with audited(self.audit, Action.DEVICE_QUERY, device_id, {"query": "DeviceInfo"}):
            info = flat(await self.query(device_id, CmdType.DEVICE_INFO))
        if info.get("Result", "OK").upper() == "OK":
            self.registrar.update_info(
                device_id,
                reported_name=info.get("DeviceName", ""),
                manufacturer=info.get("Manufacturer", ""),
                model=info.get("Model", ""),
                firmware=info.get("Firmware", ""),
            )
        return info

    async def device_status(self, device_id: str) -> dict[str, str]:
        """DeviceStatus (§5.4.3)."""
        with audited(self.audit, Action.DEVICE_QUERY, device_id, {"query": "DeviceStatus"}):
            return flat(await self.query(device_id, CmdType.DEVICE_STATUS))

    async def catalog(self, device_id: str, *, linger: bool = False) -> CatalogResult:
        """Ask for the whole catalog, assemble it, store it, and return it.

        ``linger``: take parts until the device goes quiet (``catalog_idle_timeout``), not only
        until SumNum items came (see :class:`CatalogCollector`).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        with audited(self.audit, Action.DEVICE_QUERY, device_id, {"query": "Catalog"}) as done:
            result = await self._multi(device_id, CmdType.CATALOG, None, linger=linger)
            done.update(items=len(result.items), complete=result.complete)
        self.catalog_seconds[()] += round(loop.time() - started, 3)  # type: ignore[assignment]  # a float counter
        await self._store_catalog(result)
        return result

    async def records(self, channel_id: str, start: str, end: str, *, record_type: str = "all") -> CatalogResult:
        """RecordInfo (§5.4.4): the recordings of ``channel_id`` between two GB dateTimes."""
        device = self.device_of(channel_id)
        fields: Fields = [("StartTime", start), ("EndTime", end), ("Secrecy", 0), ("Type", record_type)]
        asked = {"query": "RecordInfo", "start": start, "end": end, "type": record_type}
        with audited(self.audit, Action.DEVICE_QUERY, channel_id, asked) as done:
            result = await self._multi(
                device.device_id, CmdType.RECORD_INFO, fields, target=channel_id, key_fields=RECORD_KEYS
            )
            done.update(items=len(result.items))
            return result

    async def presets(self, channel_id: str) -> list[dict[str, str]]:
        """PresetQuery (§5.4.7): the presets of a PTZ camera."""
        device = self.device_of(channel_id)
        with audited(self.audit, Action.DEVICE_QUERY, channel_id, {"query": "PresetQuery"}):
            env = await self.query(device.device_id, CmdType.PRESET_QUERY, target=channel_id)
        return [{"PresetID": i.device_id, **i.fields} for i in list_items(env, "PresetList")[1]]

    async def config(self, device_id: str, config_type: str = "BasicParam") -> dict[str, str]:
        """ConfigDownload (§5.4.6), e.g. BasicParam: HeartBeatInterval, HeartBeatCount, Expiration …"""
        with audited(self.audit, Action.DEVICE_QUERY, device_id, {"query": "ConfigDownload", "type": config_type}):
            env = await self.query(device_id, CmdType.CONFIG_DOWNLOAD, [("ConfigType", config_type)])
        out = config_section(env, config_type)
        if config_type == "BasicParam":
            # the device's own heartbeat settings drive its liveness deadline (PROTOCOL.md §4.1)
            interval, count = out.get("HeartBeatInterval", ""), out.get("HeartBeatCount", "")
            self.registrar.update_heartbeat(
                device_id,
                interval=int(interval) if interval.isdigit() else 0,
                count=int(count) if count.isdigit() else 0,
            )
        return out

    async def collect(
        self, device_id: str, cmd: CmdType, body: BodyBuilder, *, key_fields: tuple[str, ...] = RECORD_KEYS
    ) -> CatalogResult:
        """Send the request ``body`` writes and gather its multi-message answer (RecordInfo passed
        on from a superior, PROTOCOL.md §9.4), as :meth:`records` does."""
        return await self._multi(device_id, cmd, None, key_fields=key_fields, body=body)

    async def _multi(
        self,
        device_id: str,
        cmd: CmdType,
        fields: Fields | None,
        *,
        target: str | None = None,
        key_fields: tuple[str, ...] = (),
        body: BodyBuilder | None = None,
        linger: bool = False,
    ) -> CatalogResult:
        device = self.registered(device_id)
        loop = asyncio.get_running_loop()
        sn = self.next_sn(device_id)
        s = self.settings
        collector = CatalogCollector(
            device_id,
            sn,
            now=loop.time(),
            first_timeout=s.catalog_first_timeout if cmd is CmdType.CATALOG else s.query_timeout,
            idle_timeout=s.catalog_idle_timeout,
            total_timeout=s.catalog_total_timeout,
            max_items=s.max_channels,
            key_fields=key_fields,
            linger=linger,
        )
        fut: asyncio.Future[CatalogResult] = loop.create_future()
        self._catalogs[device_id, sn] = (collector, fut, cmd)
        try:
            if body is not None:
                await self.send(device, body(sn, device.charset))
            else:
                await self.send(
                    device, encode(Root.QUERY, cmd, sn, target or device_id, fields, charset=device.charset)
                )
            result = await fut
        except DeviceError as exc:
            if exc.status != DeviceError.NO_ANSWER or not fut.done():
                self.queries[cmd.value, "error"] += 1  # a timeout was counted where it was seen
            raise
        finally:
            self._catalogs.pop((device_id, sn), None)
        self.queries[cmd.value, "ok" if result.complete else "partial"] += 1
        if result.refused:
            log.warning(
                "answer cut at devices.max_channels",
                extra={"device": device_id, "cmd": cmd.value, "kept": len(result.items), "refused": result.refused},
            )
        return result

    async def _store_catalog(self, result: CatalogResult) -> None:
        if not result.messages:
            return
        chans = {cid: self.channel_from_item(result.device_id, item).channel for cid, item in result.items.items()}
        if not result.complete:
            # a partial answer never removes channels: keep what we knew and add what came
            old = self.channels.get(result.device_id, {})
            room = max(0, self.settings.max_channels - len(chans))
            chans = {**dict(itertools.islice((kv for kv in old.items() if kv[0] not in chans), room)), **chans}
            self.partial.add(result.device_id)
        else:
            self.partial.discard(result.device_id)
        self.channels[result.device_id] = chans
        self.channels_changed(result.device_id)
        await self.write_channels(result.device_id)
        log.info(
            "catalog stored",
            extra={
                "device": result.device_id,
                "channels": len(chans),
                "sum_num": result.sum_num,
                "complete": result.complete,
                "messages": result.messages,
            },
        )

    async def control(self, device_id: str, target: str, fields: Fields) -> None:
        """Send a ``<Control><CmdType>DeviceControl</CmdType>`` to ``target`` (device or channel)."""
        device = self.registered(device_id)
        sn = self.next_sn(device_id)
        await self.send(
            device, encode(Root.CONTROL, CmdType.DEVICE_CONTROL, sn, target, fields, charset=device.charset)
        )
        self.queries["DeviceControl", "ok"] += 1

    async def ptz(self, channel_id: str, cmd: PtzCmd) -> None:
        """Send a PTZCmd to the channel (or device) ``channel_id``."""
        with audited(self.audit, Action.PTZ, channel_id, {"ptz": cmd.encode()}):
            device = self.device_of(channel_id)
            await self.control(
                device.device_id, channel_id, [("PTZCmd", cmd.encode()), ("Info", [("ControlPriority", 5)])]
            )

    # --- receiving ---------------------------------------------------------------------

    def on_alarm(self, listener: AlarmListener) -> None:
        """Be told of every alarm a device reports, by MESSAGE or in a subscription's NOTIFY
        (the cascade passes them up to superiors, PROTOCOL.md §9.8)."""
        self._alarm_listeners.append(listener)

    def handle_manscdp(self, device: Device, env: Envelope) -> None:
        """Take a MANSCDP body from a registered device: a Response to match, or a Notify."""
        if env.root is Root.NOTIFY:
            self._on_notify(device, env)
            return
        if env.root is not Root.RESPONSE:
            log.debug(
                "MANSCDP request from a device not handled", extra={"device": device.device_id, "cmd": env.cmd_type}
            )
            return
        entry = self._catalogs.get((device.device_id, env.sn))
        if entry is not None and env.is_cmd(entry[2]):
            collector, fut, cmd = entry
            sum_num, items = list_items(env, "DeviceList" if cmd is CmdType.CATALOG else "RecordList")
            problem = charset_problem(env.body) if env.body else ""
            if (
                collector.add(sum_num, items, asyncio.get_running_loop().time(), charset_problem=problem)
                and not fut.done()
            ):
                fut.set_result(collector.result)
            return
        if env.is_cmd(CmdType.CATALOG) or env.is_cmd(CmdType.RECORD_INFO):
            self.unmatched[(bounded_label(env.cmd_type, _CMD_LABELS),)] += 1
            log.info(
                "multi-part response matches no query",
                extra={"device": device.device_id, "cmd": env.cmd_type, "sn": env.sn},
            )
            return
        pending = self._pending.get((device.device_id, env.cmd_type.lower(), env.sn))
        if pending is None or pending.done():
            self.unmatched[(bounded_label(env.cmd_type, _CMD_LABELS),)] += 1
            log.info("response matches no query", extra={"device": device.device_id, "cmd": env.cmd_type, "sn": env.sn})
            return
        pending.set_result(env)

    def _on_notify(self, device: Device, env: Envelope) -> None:
        if env.is_cmd(CmdType.ALARM):
            alarm = flat(env)
            info = next((c for c in env.element if isinstance(c.tag, str) and c.tag.lower() == "info"), None)
            if info is not None:
                alarm.update({c.tag: (c.text or "").strip() for c in info if isinstance(c.tag, str) and not len(c)})
            alarm["ReportedBy"] = device.device_id
            self.alarms.append(alarm)
            known = (
                "DeviceID",
                "ReportedBy",
                "AlarmPriority",
                "AlarmMethod",
                "AlarmType",
                "AlarmTime",
                "AlarmDescription",
            )
            record = Alarm(
                env.device_id,
                device.device_id,
                alarm.get("AlarmPriority", ""),
                alarm.get("AlarmMethod", ""),
                alarm.get("AlarmType", ""),
                alarm.get("AlarmTime", ""),
                alarm.get("AlarmDescription", ""),
                time.time(),
                {k: v for k, v in alarm.items() if k not in known and k.lower() not in ("cmdtype", "sn")},
            )
            self._tasks.spawn(self._write_alarm(record))
            self.alarm_count[code_label(alarm.get("AlarmMethod", "")), code_label(alarm.get("AlarmType", ""))] += 1
            log.info(
                "alarm",
                extra={"device": env.device_id, "method": alarm.get("AlarmMethod", ""), "type": alarm.get("AlarmType", ""),
                       "priority": alarm.get("AlarmPriority", ""), "description": alarm.get("AlarmDescription", "")},
            )  # fmt: skip
            # §9.4: the platform answers the alarm with a Response MESSAGE of its own
            body = encode(
                Root.RESPONSE, CmdType.ALARM, env.sn, env.device_id, [("Result", "OK")], charset=device.charset
            )
            self._tasks.spawn(self._send_quietly(device, body))
            for listener in self._alarm_listeners:
                try:
                    listener(device, env)
                except Exception:
                    log.exception("alarm listener failed", extra={"device": device.device_id})
        elif env.is_cmd(CmdType.MOBILE_POSITION):
            pos = flat(env)
            log.info(
                "mobile position",
                extra={"device": env.device_id, "longitude": pos.get("Longitude"), "latitude": pos.get("Latitude")},
            )
        elif env.is_cmd(CmdType.MEDIA_STATUS):
            log.info("media status", extra={"device": env.device_id, "type": env.text("NotifyType")})
        else:
            log.debug("notification not handled", extra={"device": device.device_id, "cmd": env.cmd_type})

    async def _send_quietly(self, device: Device, body: bytes) -> None:
        try:
            await self.send(device, body)
        except DeviceError as exc:
            log.info("answer to device failed", extra={"device": device.device_id, "error": str(exc)})

    async def command(self, target: str, name: str, value: str | Fields, *, wait: bool) -> dict[str, str]:
        """A DeviceControl command other than PTZ (§5.6.1): ``TeleBoot``, ``RecordCmd``, ``GuardCmd``,
        ``AlarmCmd``, ``IFameCmd``, ``HomePosition`` … With ``wait`` the device's Response (its Result)
        is awaited and returned."""
        asked = {"command": name, "value": value if isinstance(value, str) else dict(value)}
        with audited(self.audit, Action.DEVICE_CONTROL, target, asked) as done:
            device = self.device_of(target)
            if not wait:
                await self.control(device.device_id, target, [(name, value)])
                return {}
            env = await self.query(
                device.device_id, CmdType.DEVICE_CONTROL, [(name, value)], target=target, root=Root.CONTROL
            )
            answer = flat(env)
            done["answer"] = answer.get("Result", "")
            return answer

    async def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            now = loop.time()
            for collector, fut, cmd in list(self._catalogs.values()):
                if collector.expired(now) and not fut.done():
                    if collector.result.messages:
                        fut.set_result(collector.result)  # partial: the device went quiet
                    else:
                        # each query kind names itself: a RecordInfo that times out is no "catalog"
                        self.queries[cmd.value, "timeout"] += 1
                        fut.set_exception(
                            DeviceError(
                                f"device {collector.result.device_id} sent no {cmd.value} response "
                                f"within {collector.first_timeout:g} s",
                                DeviceError.NO_ANSWER,
                            )
                        )

    # --- writing behind a store that may be away ---------------------------------------

    @property
    def unsaved_channels(self) -> Set[str]:
        """The devices whose channel list waits for the store to be writable again."""
        return self._unsaved_channels

    async def write_channels(self, device_id: str) -> None:
        """Write the whole channel list kept of ``device_id``; while the store cannot be written it
        is kept for :data:`STORE_RETRY_INTERVAL` retries (a value no store takes still raises
        :class:`StoreRecordError`)."""
        try:
            await self.registrar.flush()  # the device row first: channels reference it
            await self.store.replace_channels(device_id, list(self.channels.get(device_id, {}).values()))
        except StoreRecordError:
            raise
        except StoreError as exc:
            if device_id not in self._unsaved_channels:
                log.warning(
                    "channels kept until the store can be written", extra={"device": device_id, "error": str(exc)}
                )
            self._unsaved_channels.add(device_id)
        else:
            self._unsaved_channels.discard(device_id)

    async def _write_alarm(self, alarm: Alarm) -> None:
        try:
            await self.store.save_alarms([alarm])
        except StoreRecordError:
            raise
        except StoreError:
            self._unsaved_alarms.append(alarm)

    async def _write_unsaved(self) -> None:
        """One attempt at what the store could not take; what still fails stays for the next."""
        if self._unsaved_alarms:
            batch = list(self._unsaved_alarms)
            try:
                await self.store.save_alarms(batch)
            except StoreRecordError:
                for alarm in batch:  # the ones no store takes are dropped (logged), the others written
                    try:
                        await self.store.save_alarms([alarm])
                    except StoreRecordError as exc:
                        log.error("alarm cannot be stored", extra={"device": alarm.device_id, "error": str(exc)})
                    except StoreError:
                        return
            except StoreError:
                return
            for _ in batch:
                self._unsaved_alarms.popleft()
        for device_id in list(self._unsaved_channels):
            try:
                await self.write_channels(device_id)
            except StoreRecordError as exc:
                self._unsaved_channels.discard(device_id)  # its next catalog tries again
                log.error("channels cannot be stored", extra={"device": device_id, "error": str(exc)})
            if device_id in self._unsaved_channels:
                return  # still away

    async def _retry_writes(self) -> None:
        while True:
            await asyncio.sleep(STORE_RETRY_INTERVAL)
            if self._unsaved_channels or self._unsaved_alarms:
                try:
                    await self._write_unsaved()
                except Exception:
                    # a bug; the retrier must outlive it, or nothing would be written again
                    log.exception("writing kept channels and alarms failed; will retry")

    def _on_registered(self, device: Device) -> None:
        if self.registrar.cluster.shared and device.device_id not in self.channels:
            # a device re-homed from another node (issue 17) brings no channels into this node's
            # memory, which held only what was stored at start: the shared store has them, and a
            # superior's INVITE for one must not wait for (or depend on) the device's catalog answer.
            # One reader for all (a storm of REGISTERs took every connection of the pool, one each)
            self._channels_wanted.add(device.device_id)
            if self._channel_reader is None or self._channel_reader.done():
                self._channel_reader = asyncio.get_running_loop().create_task(self._read_wanted_channels())
        if not self.settings.catalog_on_register:
            return

        async def after_register() -> None:
            await asyncio.sleep(0.2)  # let the device see its 200 OK first
            # each on its own: a lower platform (or a terse NVR) that never answers DeviceInfo
            # still has its catalog read (issue 12 item 6)
            for name, query in (("DeviceInfo", self.device_info), ("Catalog", self.catalog)):
                try:
                    await query(device.device_id)
                except DeviceError as exc:
                    log.info(
                        "query after registration failed",
                        extra={"device": device.device_id, "query": name, "error": str(exc)},
                    )

        self._tasks.spawn(after_register())

    async def _read_wanted_channels(self) -> None:
        while self._channels_wanted:
            device_id = self._channels_wanted.pop()
            try:
                stored = await self.store.load_channels(device_id)
            except StoreError as exc:
                log.warning("stored channels cannot be read", extra={"device": device_id, "error": str(exc)})
                continue  # its catalog answer (catalog_on_register) or the next REGISTER brings them
            if stored and device_id not in self.channels:  # a catalog answer that came meanwhile is newer
                # as at start: known already to everyone reading the shared catalog, nothing to announce
                self.channels[device_id] = {ch.channel_id: ch for ch in stored}

    def _on_offline(self, device: Device, reason: str) -> None:
        # channels go OFF with their device, in the store too
        chans = self.channels.get(device.device_id)
        if not chans:
            return
        for ch in chans.values():
            ch.status = "OFF"
        self.channels_changed(device.device_id)
        self._tasks.spawn(self.write_channels(device.device_id))

    def channel_from_item(
        self, device_id: str, item: CatalogItem, *, previous: Channel | None = None, default_status: str = ""
    ) -> ChannelUpdate:
        """:func:`gb28181gw.gb.catalog.channel_from_item`, counting and logging coordinates it dropped."""
        update = channel_from_item(device_id, item, previous=previous, default_status=default_status)
        if update.position is Position.INVALID:
            self.bad_positions[()] += 1
            log.info(
                "invalid coordinates dropped",
                extra={"device": device_id, "channel": item.device_id,
                       "longitude": item.fields.get("Longitude"), "latitude": item.fields.get("Latitude")},
            )  # fmt: skip
        return update
