"""Subscriptions toward devices (GB/T 28181 §9.11, PROTOCOL.md §6) and the NOTIFYs they bring.

A SUBSCRIBE creates a dialog (:class:`~gb28181gw.sip.dialog.Dialog`, RFC 6665 §4.1.2); the
subscription is refreshed inside it at 80 % of the granted Expires, dropped when the device
goes offline and made again when it registers. Each subscription registers its dialog with
the stack's router, so the device's NOTIFYs reach it by dialog ID — also a NOTIFY that
overtakes the 2xx to the SUBSCRIBE (RFC 6665 §4.1.2.4), which the router finds under the
dialog's ID without remote tag. NOTIFYs for Catalog carry item events (ON, OFF, VLOST, DEFECT,
ADD, DEL, UPDATE) applied to the stored channels; Alarm and MobilePosition NOTIFYs go
where their MESSAGE twins go.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gb28181gw.config import DevicesSection
from gb28181gw.errors import (
    DialogError,
    ManscdpError,
    SipParseError,
    SipTimeoutError,
    SipTransportError,
    StoreError,
    StoreRecordError,
)
from gb28181gw.gb.model import Channel, Device
from gb28181gw.gb.outbound import device_dialog
from gb28181gw.manscdp.messages import CONTENT_TYPE, CmdType, Root, decode, encode, list_items
from gb28181gw.metrics import CATALOG_EVENTS, CATALOG_ITEMS_REFUSED, bounded_label
from gb28181gw.net.stack import SipStack
from gb28181gw.net.tasks import TaskSet
from gb28181gw.sip.dialog import Dialog, DialogState
from gb28181gw.sip.endpoint import warning_header
from gb28181gw.sip.events import RequestReceived
from gb28181gw.sip.message import make_response

from .devices import DeviceError, DeviceService
from .registrar import RegistrarService

#: Catalog events of GB/T 28181-2016 §9.6.2 counted by name (any other as "other").
_EVENT_LABELS = {e.lower(): e for e in ("ON", "OFF", "VLOST", "DEFECT", "ADD", "DEL", "UPDATE")}

log = logging.getLogger("gb28181gw.subscriptions")

#: The events a subscription can be for, and the Event header package names (wvp uses presence
#: for Alarm and MobilePosition, PROTOCOL.md §14 item 5).
PACKAGES = {"catalog": ("Catalog", CmdType.CATALOG), "alarm": ("presence", CmdType.ALARM), "mobile-position": ("presence", CmdType.MOBILE_POSITION)}  # fmt: skip


@dataclass(eq=False, slots=True)
class Subscription:
    """One subscription dialog toward a device.

    Attributes:
        device_id / kind: whose events, and which (a key of :data:`PACKAGES`).
        dialog: the SUBSCRIBE dialog (Call-ID, tags, CSeq, where the device is).
        expires: the period the device granted.
        sn: the SN of the last SUBSCRIBE's body.
        refresh: the timer of the next refresh.
        handler: what the router calls with the dialog's requests.
    """

    device_id: str
    kind: str
    dialog: Dialog
    expires: int = 3600
    sn: int = 0
    refresh: asyncio.TimerHandle | None = field(default=None, repr=False)
    handler: Callable[[RequestReceived], None] | None = field(default=None, repr=False)

    @property
    def remote_tag(self) -> str:
        """The device's tag (empty until it answers)."""
        return self.dialog.remote_tag

    @property
    def cseq(self) -> int:
        """The CSeq number of our last SUBSCRIBE."""
        return self.dialog.local_cseq


class SubscriptionService:
    """Keeps the configured subscriptions alive and applies what they report.

    Args:
        stack / registrar / devices: the SIP stack and the device services.
        settings: the ``[devices]`` section: which subscriptions (``subscribe``) and the
            Expires asked for them (``subscribe_expires``).
    """

    def __init__(
        self,
        stack: SipStack,
        registrar: RegistrarService,
        devices: DeviceService,
        *,
        settings: DevicesSection,
    ) -> None:
        self.stack = stack
        self.registrar = registrar
        self.devices = devices
        self.kinds = list(settings.subscribe)
        self.expires = settings.subscribe_expires
        self.subs: dict[tuple[str, str], Subscription] = {}
        self._tasks = TaskSet()
        self.events = devices.metrics.counter(CATALOG_EVENTS)
        self.refused = devices.metrics.counter(CATALOG_ITEMS_REFUSED)
        self.max_channels = settings.max_channels
        self._persisting = asyncio.Lock()
        stack.router.expect_in_dialog("NOTIFY")
        # a NOTIFY belongs in a subscription dialog we made (RFC 6665 §4.1.3, PROTOCOL.md §6);
        # the router answers 481 to any other, even from a registered device: anyone can put
        # a device's ID in a NOTIFY, and one would add or delete its channels
        registrar.on_registered(self._on_registered)
        registrar.on_offline(self._on_offline)

    async def stop(self) -> None:
        """Forget every subscription (devices let them expire)."""
        for sub in self.subs.values():
            self._forget(sub)
        self._tasks.cancel()
        self.subs.clear()

    def _forget(self, sub: Subscription) -> None:
        if sub.refresh is not None:
            sub.refresh.cancel()
            sub.refresh = None
        router = self.stack.router
        router.remove_dialog(sub.dialog.id)
        router.remove_dialog(sub.dialog.id._replace(remote_tag=""))
        if not sub.dialog.terminated:
            sub.dialog.terminate()

    # --- SUBSCRIBE -------------------------------------------------------------------------

    async def subscribe(self, device_id: str, kind: str, *, expires: int | None = None) -> Subscription:
        """Subscribe to ``kind`` (catalog, alarm, mobile-position) of ``device_id``, or refresh it.

        Raises:
            DeviceError: the device refused, did not answer, or cannot be reached.
        """
        device = self.devices.registered(device_id)
        package, cmd = PACKAGES[kind]
        ep = self.stack.endpoint
        router = self.stack.router
        sub = self.subs.get((device_id, kind))
        if sub is None or sub.dialog.terminated:
            dialog = device_dialog(
                device,
                device_id,
                our_id=self.devices.our_id,
                domain=self.devices.domain,
                call_id=ep.new_call_id(),
                local_tag=ep.new_tag(),
            )
            sub = Subscription(device_id, kind, dialog)
            sub.handler = functools.partial(self._on_dialog_request, sub)
            # a NOTIFY may overtake the 2xx (RFC 6665 §4.1.2.4): route the dialog before it has a remote tag
            router.add_dialog(dialog.id, sub.handler, owner="subscriptions")
        sub.expires = self.expires if expires is None else expires
        sub.sn = self.devices.next_sn(device_id)
        req = sub.dialog.request(
            "SUBSCRIBE",
            contact=self.stack.contact(self.devices.our_id, sub.dialog.peer),
            extra=[("Event", f"{package};id={sub.sn}"), ("Expires", str(sub.expires))],
            content_type=CONTENT_TYPE,
            body=encode(Root.QUERY, cmd, sub.sn, device_id, charset=device.charset),
        )
        try:
            resp = await self.stack.request(req, sub.dialog.peer)
        except (SipTimeoutError, SipTransportError) as exc:
            if self.subs.get((device_id, kind)) is not sub:
                self._forget(sub)
            raise DeviceError(f"SUBSCRIBE {kind} to {device_id}: {exc}") from None
        try:
            sub.dialog.receive_response(resp)
            refused = f"{resp.status} {resp.reason}" if resp.status >= 300 else ""
        except SipParseError as exc:
            refused = f"{resp.status} without a usable dialog ({exc.reason})"
        if refused:
            self.subs.pop((device_id, kind), None)
            self._forget(sub)
            raise DeviceError(f"device {device_id} refused the {kind} subscription: {refused}")
        router.remove_dialog(sub.dialog.id._replace(remote_tag=""))
        assert sub.handler is not None
        router.add_dialog(sub.dialog.id, sub.handler, owner="subscriptions")
        granted = (resp.headers.get("expires") or "").strip()
        if granted.isdigit():
            sub.expires = int(granted)
        if sub.refresh is not None:
            sub.refresh.cancel()
            sub.refresh = None
        if sub.expires == 0:
            self.subs.pop((device_id, kind), None)
            self._forget(sub)
            return sub
        self.subs[device_id, kind] = sub
        sub.refresh = asyncio.get_running_loop().call_later(sub.expires * 0.8, self._refresh, device_id, kind)
        log.info("subscribed", extra={"device": device_id, "kind": kind, "expires": sub.expires})
        return sub

    def _refresh(self, device_id: str, kind: str) -> None:
        async def again() -> None:
            try:
                await self.subscribe(device_id, kind)
            except DeviceError as exc:
                log.info("subscription refresh failed", extra={"device": device_id, "kind": kind, "error": str(exc)})

        self._tasks.spawn(again())

    def _on_registered(self, device: Device) -> None:
        async def subscribe_all() -> None:
            await asyncio.sleep(0.5)
            for kind in self.kinds:
                try:
                    await self.subscribe(device.device_id, kind)
                except DeviceError as exc:
                    log.info("subscription failed", extra={"device": device.device_id, "kind": kind, "error": str(exc)})

        if self.kinds:
            self._tasks.spawn(subscribe_all())

    def _on_offline(self, device: Device, reason: str) -> None:
        for kind in list(PACKAGES):
            sub = self.subs.pop((device.device_id, kind), None)
            if sub is not None:
                self._forget(sub)

    # --- NOTIFY ----------------------------------------------------------------------------

    def _on_dialog_request(self, sub: Subscription, event: RequestReceived) -> None:
        # a request in a subscription's dialog, found by the router by its dialog ID
        req, tx = event.request, event.transaction
        if tx is None:
            return  # an ACK has no business in a subscription
        dialog = sub.dialog
        try:
            if dialog.state is DialogState.PENDING and req.method == "NOTIFY":
                # the NOTIFY overtook the 2xx: it establishes the dialog (RFC 6665 §4.1.2.4)
                dialog.receive_notify(req)
                assert sub.handler is not None
                self.stack.router.add_dialog(dialog.id, sub.handler, owner="subscriptions")
            dialog.receive_request(req)
        except DialogError as exc:
            resp = make_response(req, exc.status)
            resp.headers.add("Warning", warning_header(exc.reason))
            self.stack.respond(tx, resp)
            return
        if req.method != "NOTIFY":
            self.stack.respond(tx, make_response(req, 405))
            return
        self._notify(event, self.registrar.devices.get(sub.device_id))

    def _notify(self, event: RequestReceived, device: Device | None) -> None:
        req, tx = event.request, event.transaction
        assert tx is not None
        tag = self.stack.endpoint.new_tag()
        if device is None or not device.registered:
            resp = make_response(req, 481, to_tag=tag)
            resp.headers.add("Warning", warning_header("no subscription: the sender is not a registered device"))
            self.stack.respond(tx, resp)
            return
        try:
            env = decode(req.body)
        except ManscdpError as exc:
            resp = make_response(req, 400, to_tag=tag)
            resp.headers.add("Warning", warning_header(str(exc)))
            self.stack.respond(tx, resp)
            return
        self.stack.respond(tx, make_response(req, 200, to_tag=tag))
        if env.is_cmd(CmdType.CATALOG):
            self._apply_catalog_events(device, env)
        else:
            self.devices.handle_manscdp(device, env)

    def _apply_catalog_events(self, device: Device, env: object) -> None:
        # each event changes one channel: only those are written (a device with thousands of
        # channels sending ADDs must not make us rewrite all of them for each)
        _, items = list_items(env, "DeviceList")  # type: ignore[arg-type]
        chans = self.devices.channels.setdefault(device.device_id, {})
        upserts: dict[str, Channel] = {}
        deletes: set[str] = set()
        for item in items:
            ev = item.fields.get("Event", "").upper()
            self.events[(bounded_label(ev, _EVENT_LABELS) or "none",)] += 1
            ch = chans.get(item.device_id)
            if ev in ("ON", "OFF", "VLOST", "DEFECT"):
                if ch is None:
                    log.info(
                        "catalog event for an unknown channel",
                        extra={"device": device.device_id, "channel": item.device_id, "event": ev},
                    )
                    continue
                ch.status = "ON" if ev == "ON" else "OFF"
                ch.extra["LastEvent"] = ev
                upserts[item.device_id] = ch
            elif ev in ("ADD", "UPDATE"):
                if ch is None and len(chans) >= self.max_channels:
                    self.refused[()] += 1
                    log.warning(
                        "catalog ADD past devices.max_channels refused",
                        extra={"device": device.device_id, "channel": item.device_id, "channels": len(chans)},
                    )
                    continue
                item.fields.pop("Event", None)
                ch = self.devices.channel_from_item(device.device_id, item, previous=ch, default_status="ON").channel
                chans[item.device_id] = upserts[item.device_id] = ch
                deletes.discard(item.device_id)
            elif ev == "DEL":
                if chans.pop(item.device_id, None) is None:
                    continue
                upserts.pop(item.device_id, None)
                deletes.add(item.device_id)
            else:
                log.info("unknown catalog event", extra={"device": device.device_id, "event": ev})
        if upserts or deletes:
            self.devices.channels_changed(device.device_id)
            self._tasks.spawn(self._persist(device.device_id, list(upserts.values()), sorted(deletes)))

    async def _persist(self, device_id: str, upserts: list[Channel], deletes: list[str]) -> None:
        # one at a time, in the order the events came: an ADD written after its DEL would
        # bring the channel back in the store
        async with self._persisting:
            if device_id in self.devices.unsaved_channels:
                # an earlier change did not reach the store: the whole list it keeps is written instead
                await self.devices.write_channels(device_id)
                return
            try:
                await self.registrar.flush()  # the device row first: channels reference it
                await self.devices.store.update_channels(device_id, upserts, deletes)
            except StoreRecordError:
                raise
            except StoreError:
                await self.devices.write_channels(device_id)  # kept whole for the retries if the store is away
