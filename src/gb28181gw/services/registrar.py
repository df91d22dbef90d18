"""The registrar service: REGISTER and keepalive over the SIP stack, device state, persistence.

Working state is an in-memory table of :class:`~gb28181gw.gb.model.Device`; the
store is written behind it (changed devices in one batch every
``store.flush_interval``), so a registration storm or 20,000 keepalives a second
never wait for the disk. Liveness deadlines live in one
:class:`~gb28181gw.gb.keepalive.Liveness` driven by one event-loop timer.

On start-up every stored device is loaded; one whose registration has not expired
is still registered and gets a full keepalive window (interval × count) to show it
is alive — its heartbeats were lost while we were down, not missed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable

from gb28181gw.errors import ManscdpError, StoreError
from gb28181gw.gb.keepalive import Liveness, keepalive_timeout
from gb28181gw.gb.model import Device
from gb28181gw.gb.registrar import Outcome, Registrar, RegistrarPolicy, from_user
from gb28181gw.manscdp.codec import Element
from gb28181gw.manscdp.messages import CmdType, Envelope, envelope
from gb28181gw.metrics import Metrics
from gb28181gw.net.router import ANY, ManscdpRequest, Role
from gb28181gw.net.stack import SipStack
from gb28181gw.net.timer import EarliestTimer
from gb28181gw.sip.auth import NonceStore
from gb28181gw.sip.events import RequestReceived
from gb28181gw.sip.message import make_response
from gb28181gw.sip.peer import Peer
from gb28181gw.store.base import Store

log = logging.getLogger("gb28181gw.registrar")

OfflineListener = Callable[[Device, str], None]
#: Called with the device and the decoded body of every MANSCDP MESSAGE other than a keepalive.
ManscdpHandler = Callable[[Device, Envelope], None]


class RegistrarService:
    """Devices registering and heart-beating.

    Args:
        stack: the SIP stack to serve on.
        store: persistence.
        policy: registration policy.
        metrics: where to count.
        keepalive_interval / keepalive_count: defaults for devices whose own are unknown.
        flush_interval: seconds between batched writes.
        clock: wall-clock epoch seconds (tests pass their own).
    """

    def __init__(
        self,
        stack: SipStack,
        store: Store,
        policy: RegistrarPolicy,
        *,
        metrics: Metrics,
        digest_algorithm: str = "MD5",
        digest_qop: bool = False,
        nonce_lifetime: float = 300.0,
        keepalive_interval: int = 60,
        keepalive_count: int = 3,
        flush_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stack = stack
        self.store = store
        self.policy = policy
        self.registrar = Registrar(
            policy,
            NonceStore(realm=policy.domain, algorithm=digest_algorithm, qop=digest_qop, lifetime=nonce_lifetime),
        )
        self.devices: dict[str, Device] = {}
        self.liveness = Liveness()
        self.keepalive_interval = keepalive_interval
        self.keepalive_count = keepalive_count
        self.flush_interval = flush_interval
        self._clock = clock
        self._dirty: set[str] = set()
        # devices whose only change is a newer keepalive time: written at most every
        # keepalive_flush_interval, since a restart gives every device a fresh window anyway
        self._heartbeats: set[str] = set()
        self.keepalive_flush_interval = max(flush_interval, 30.0)
        self._deleted: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._timer = EarliestTimer(self._on_deadline)
        self._offline_listeners: list[OfflineListener] = []
        self._registered_listeners: list[Callable[[Device], None]] = []
        self._manscdp_handlers: list[ManscdpHandler] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.registrations = metrics.counter(
            "gb28181gw_registrations", "REGISTER requests by result", ["result", "reason"]
        )
        self.keepalives = metrics.counter("gb28181gw_keepalives", "Keepalive MESSAGEs by result", ["result"])
        self.timeouts = metrics.counter("gb28181gw_keepalive_timeouts", "Devices gone offline by cause", ["cause"])
        self.auth_failures = metrics.counter("gb28181gw_auth_failures", "Failed authentications by reason", ["reason"])
        self.ban_count = metrics.counter("gb28181gw_bans", "Addresses or IDs banned for failed authentication")
        metrics.labeled_gauge("gb28181gw_devices", "Devices by state", ["state"], self._states)

    # --- lifecycle ---------------------------------------------------------------------

    def on_offline(self, listener: OfflineListener) -> None:
        """Be told when a device goes offline or unregisters (streams release on it)."""
        self._offline_listeners.append(listener)

    def on_registered(self, listener: Callable[[Device], None]) -> None:
        """Be told when a device registers (not on refreshes): time to ask for its catalog."""
        self._registered_listeners.append(listener)

    def on_manscdp(self, handler: ManscdpHandler) -> None:
        """Receive every MANSCDP MESSAGE from registered devices other than keepalives."""
        self._manscdp_handlers.append(handler)

    async def start(self) -> None:
        """Load devices, take over REGISTER and MESSAGE, start the flusher and the liveness timer."""
        self._loop = asyncio.get_running_loop()
        devices = await self.store.load_devices()
        now, epoch = self._loop.time(), self._clock()
        changed = []
        for device in devices:
            self.devices[device.device_id] = device
            if device.registered and device.expires_at > epoch:
                self.liveness.touch(device.device_id, now, min(device.expires_at - epoch, self._timeout(device)))
            elif device.registered or device.online:
                device.registered = device.online = False
                device.offline_reason = "registration expired while the gateway was down"
                changed.append(device)
        if changed:
            await self.store.save_devices(changed)
        registered = sum(1 for d in self.devices.values() if d.registered)
        log.info("devices loaded", extra={"devices": len(self.devices), "registered": registered})
        router = self.stack.router
        router.handle("REGISTER", self._on_register, owner="registrar")
        # MESSAGE (PROTOCOL.md §4.1, §5): registered devices are DEVICEs; the router answers the others
        router.add_role_resolver(self._role, owner="registrar")
        router.on_message(Role.DEVICE, CmdType.KEEPALIVE, self._on_keepalive, owner="registrar")
        router.on_message(Role.DEVICE, ANY, self._on_device_message, owner="registrar")
        router.on_rejected(self._on_rejected)
        self.stack.on_connection_lost(self._on_connection_lost)
        self._flusher = self._loop.create_task(self._flush_loop())
        self._arm()

    async def stop(self) -> None:
        """Write everything still pending and stop the timers."""
        self._timer.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None
        await self.flush()

    # --- persistence -------------------------------------------------------------------

    def changed(self, device_id: str) -> None:
        """Mark a device as changed: it is written with the next batch."""
        self._dirty.add(device_id)

    async def flush(self, *, heartbeats: bool = True) -> None:
        """Write changed devices now (one batch); with ``heartbeats``, keepalive times too."""
        dirty, self._dirty = self._dirty, set()
        if heartbeats:
            dirty |= self._heartbeats
            self._heartbeats = set()
        batch = [self.devices[i] for i in dirty if i in self.devices]
        try:
            await self.store.save_devices(batch)
        except StoreError:
            self._dirty |= dirty  # keep them for the next attempt; nothing is lost
            raise

    async def _flush_loop(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        next_heartbeats = loop.time() + self.keepalive_flush_interval
        while True:
            await asyncio.sleep(self.flush_interval)
            heartbeats = loop.time() >= next_heartbeats
            if heartbeats:
                next_heartbeats = loop.time() + self.keepalive_flush_interval
            if self._dirty or (heartbeats and self._heartbeats):
                try:
                    await self.flush(heartbeats=heartbeats)
                except StoreError as exc:
                    log.error("store write failed; will retry", extra={"error": str(exc)})

    # --- REGISTER ----------------------------------------------------------------------

    def _now(self) -> tuple[float, float]:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time(), self._clock()

    def _on_register(self, event: RequestReceived) -> None:
        tx = event.transaction
        assert tx is not None
        req = event.request
        device_id = from_user(req)
        now, epoch = self._now()
        existing = self.devices.get(device_id)
        bans_before = self.registrar.bans.bans
        result = self.registrar.handle(
            req, event.peer, existing, now=now, epoch=epoch, tag=self.stack.endpoint.new_tag()
        )
        self.stack.respond(tx, result.response)
        self.registrations[result.outcome.value, result.reason] += 1
        if self.registrar.bans.bans != bans_before:
            self.ban_count[()] += self.registrar.bans.bans - bans_before
        if result.reason in ("bad-password", "wrong-realm", "bad-algorithm", "banned"):
            self.auth_failures[(result.reason,)] += 1
        extra = {"device": device_id, "peer": event.peer, "reason": result.detail}
        if result.outcome is Outcome.REJECTED:
            if result.response.status == 401:
                log.warning("authentication failed", extra=extra)
            else:
                log.warning("registration refused", extra={**extra, "status": result.response.status})
        device = result.device
        if device is None:
            return
        self.devices[device_id] = device
        self.changed(device_id)
        if result.outcome is Outcome.UNREGISTERED:
            self.liveness.forget(device_id)
            log.info("device unregistered", extra=extra)
            self._went_offline(device, "unregistered")
            return
        if result.address_changed and existing is not None:
            log.warning(
                "device registered from a new address (NAT rebinding, or two devices sharing one ID)",
                extra={**extra, "old": f"{existing.transport} {existing.host}:{existing.port}"},
            )
        self.liveness.touch(device_id, now, min(float(device.expires), self._timeout(device)))
        self._arm()
        if result.outcome is Outcome.REGISTERED or (existing is not None and not existing.online):
            log.info("device online", extra={**extra, "expires": device.expires, "transport": device.transport})
        if result.outcome is Outcome.REGISTERED:
            for listener in self._registered_listeners:
                try:
                    listener(device)
                except Exception:
                    log.exception("registered listener failed", extra={"device": device_id})

    def _timeout(self, device: Device) -> float:
        return keepalive_timeout(
            device.keepalive_interval or self.keepalive_interval, device.keepalive_count or self.keepalive_count
        )

    # --- MESSAGE (keepalive and what registered devices send) --------------------------------

    def _role(self, sender: str, peer: Peer) -> Role | None:
        # the router asks who sent a MESSAGE: a registered device, or (by the ID deny list) a refused one
        device = self.devices.get(sender)
        if device is not None and device.registered and device.expires_at > self._clock():
            return Role.DEVICE
        if sender and any(sender.startswith(prefix) for prefix in self.policy.deny_ids):
            return Role.REFUSED
        return None

    def _on_rejected(self, event: RequestReceived, role: Role, status: int) -> None:
        # the router answered 404/403 (sender not registered) or 400 (a registered device's bad body)
        if role is Role.DEVICE:
            if status == 400:
                self.keepalives[("bad-body",)] += 1
        elif role is not Role.PLATFORM:
            self.keepalives[("unregistered",)] += 1

    def _on_device_message(self, msg: ManscdpRequest) -> None:
        tx = msg.event.transaction
        assert tx is not None
        self.stack.respond(tx, make_response(msg.event.request, 200, to_tag=self.stack.endpoint.new_tag()))
        self._dispatch_manscdp(self.devices[msg.sender], msg.root)

    def _on_keepalive(self, msg: ManscdpRequest) -> None:
        event = msg.event
        tx = event.transaction
        assert tx is not None
        req = event.request
        tag = self.stack.endpoint.new_tag()
        device_id = msg.sender
        device = self.devices[device_id]
        now, epoch = self._now()
        self.stack.respond(tx, make_response(req, 200, to_tag=tag))
        self.keepalives[("ok",)] += 1
        device.last_keepalive = epoch
        device.updated_at = epoch
        peer = event.peer
        if (device.host, device.port, device.transport) != (peer.host, peer.port, peer.transport):
            # K5: NAT rebinding shows up in keepalives first
            log.info(
                "device address changed",
                extra={"device": device_id, "old": f"{device.host}:{device.port}", "new": str(peer)},
            )
            device.host, device.port, device.transport = sys.intern(peer.host), peer.port, peer.transport
            self.changed(device_id)
        if not device.online:
            device.online = True
            device.offline_reason = ""
            log.info("device online again", extra={"device": device_id, "reason": "keepalive"})
            self.changed(device_id)
        elif device_id not in self._dirty:
            self._heartbeats.add(device_id)
        self.liveness.touch(device_id, now, min(device.expires_at - epoch, self._timeout(device)))
        self._arm()

    def _on_connection_lost(self, peer: Peer, reason: str) -> None:
        # GB/T 28181-2022 §9.1.1 f: a device that registered over TCP is reachable only on that
        # connection; when it closes the device is offline until it connects and registers again
        if peer.transport != "TCP":
            return
        epoch = self._clock()
        for device in self.devices.values():
            if device.online and device.transport == "TCP" and device.host == peer.host and device.port == peer.port:
                device.online = False
                device.offline_reason = f"TCP connection closed ({reason})"
                device.updated_at = epoch
                self.liveness.forget(device.device_id)
                self.timeouts[("connection closed",)] += 1
                self.changed(device.device_id)
                log.info("device offline", extra={"device": device.device_id, "reason": device.offline_reason})
                self._went_offline(device, device.offline_reason)

    def _dispatch_manscdp(self, device: Device, root: Element) -> None:
        # answered 200 already: a MANSCDP body we cannot use is logged, never an error to the device
        try:
            env = envelope(root)
        except ManscdpError as exc:
            log.info("MANSCDP message ignored", extra={"device": device.device_id, "error": str(exc)})
            return
        if not self._manscdp_handlers:
            log.debug("MANSCDP message not handled", extra={"device": device.device_id, "cmd": env.cmd_type})
        for handler in self._manscdp_handlers:
            try:
                handler(device, env)
            except Exception:
                log.exception("MANSCDP handler failed", extra={"device": device.device_id, "cmd": env.cmd_type})

    # --- liveness ----------------------------------------------------------------------

    def _arm(self) -> None:
        self._timer.arm(self.liveness.next_deadline())

    def _on_deadline(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        epoch = self._clock()
        for device_id in self.liveness.due(loop.time()):
            device = self.devices.get(device_id)
            if device is None or not device.online and not device.registered:
                continue
            if device.expires_at <= epoch + 0.5:
                device.registered = False
                reason = cause = "registration expired"
            else:
                cause = "keepalive timeout"
                reason = f"no keepalive for {self._timeout(device):.0f} s"
            self.timeouts[(cause,)] += 1
            device.online = False
            device.offline_reason = reason
            device.updated_at = epoch
            self.changed(device_id)
            log.info("device offline", extra={"device": device_id, "reason": reason})
            self._went_offline(device, reason)
        self._arm()

    def _went_offline(self, device: Device, reason: str) -> None:
        for listener in self._offline_listeners:
            try:
                listener(device, reason)
            except Exception:
                log.exception("offline listener failed", extra={"device": device.device_id})

    # --- operator surface --------------------------------------------------------------

    def _states(self) -> dict[tuple[str, ...], float]:
        online = sum(1 for d in self.devices.values() if d.online)
        registered = sum(1 for d in self.devices.values() if d.registered)
        total = len(self.devices)
        return {("online",): online, ("offline",): total - online, ("registered",): registered, ("known",): total}

    async def provision(
        self, device_id: str, *, password: str = "", name: str = "", charset: str = "", stream_mode: str = ""
    ) -> Device:
        """Add (or update) a device by hand: its password, name, MANSCDP charset and media mode."""
        epoch = self._clock()
        device = self.devices.get(device_id)
        if device is None:
            device = self.devices[device_id] = Device(device_id=device_id, created_at=epoch)
        device.provisioned = True
        if password:
            device.password = password
        if name:
            device.name = name
        if charset:
            device.charset = charset
        if stream_mode:
            device.stream_mode = stream_mode
        device.updated_at = epoch
        self.changed(device_id)
        await self.flush()
        return device

    async def remove(self, device_id: str) -> bool:
        """Forget a device entirely (it must register again)."""
        device = self.devices.pop(device_id, None)
        self.liveness.forget(device_id)
        self._dirty.discard(device_id)
        self._heartbeats.discard(device_id)
        removed = await self.store.delete_device(device_id)
        if device is not None and device.online:
            self._went_offline(device, "removed by operator")
        return removed or device is not None
