"""The registrar service: REGISTER and keepalive over the SIP stack, device state, persistence.

Working state is the in-memory :class:`~gb28181gw.gb.devices.DeviceTable`: the
registrar (REGISTER), :func:`~gb28181gw.gb.keepalive.check_sender` (MESSAGE) and the
liveness deadlines turn what happens into device transitions, and this service
applies the outputs of each (persist, watch, count, tell the listeners). The
store is written behind the table (changed devices in one batch every
``store.flush_interval``), so a registration storm or 20,000 keepalives a second
never wait for the disk. Liveness deadlines live in one
:class:`~gb28181gw.gb.keepalive.Liveness` driven by one event-loop timer.

On start-up every stored device is loaded; one whose registration has not expired
is still registered and gets a full keepalive window (interval × count) to show it
is alive — its heartbeats were lost while we were down, not missed.

Bans (:class:`~gb28181gw.gb.bans.BanList`) live in memory; with ``registrar.persist_bans``
new and lifted ones are written with the device batch and the active ones are taken
back at start-up. The registrar also keeps who it refused
(:class:`~gb28181gw.gb.bans.RefusalLog`): REGISTERs it rejected and MESSAGEs from IDs
that are not registered, for the operator's ``devices refused``.

With several nodes on one Redis store (issue 17) the batch goes through a
:class:`~gb28181gw.store.base.Cluster`: every accepted REGISTER claims its device, rows are
written only while this node owns the device, each online device's liveness deadline is kept in
``live:<node>`` (rewritten only when it passes what is there, see :meth:`RegistrarService._watch`)
and online/offline events go to the ``events`` stream; a device another node claimed is let go
(:meth:`RegistrarService._forget`) and its MESSAGEs answered 404. What other nodes write is
learnt while running (:meth:`RegistrarService._learn`: every second the rows of the devices the
shared ``events`` stream names, see :meth:`~gb28181gw.store.ownership.RedisCluster.news`): a device
registering at another node, moving, going offline there, is in this node's table as the shared
store has it, never served here unless it registers here; a device deleted at another node is
dropped here too (:meth:`RegistrarService._drop`), with what the ``on_removed`` listeners keep. With one node (SQLite) the cluster is
:class:`~gb28181gw.store.base.SingleNode` and none of that is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gb28181gw.audit import GATEWAY, Action, Result
from gb28181gw.config import RegistrarSection
from gb28181gw.errors import ManscdpError, StoreError, StoreRecordError
from gb28181gw.gb.bans import AuthFailure
from gb28181gw.gb.devices import KEEPALIVE_OUTPUTS, Change, DeviceEvent, DeviceTable, Output
from gb28181gw.gb.keepalive import (
    Liveness,
    MessageResult,
    check_sender,
    deadline_event,
    keepalive_timeout,
    liveness_timeout,
)
from gb28181gw.gb.model import Ban, Device, DeviceState
from gb28181gw.gb.quick import QuickRegister, quick_register
from gb28181gw.gb.registrar import (
    Outcome,
    RegisterResult,
    Registrar,
    RegistrarPolicy,
    from_user,
    is_platform_id,
    path_address,
)
from gb28181gw.manscdp.codec import KEEPALIVE_MARK, Element, is_keepalive
from gb28181gw.manscdp.messages import CmdType, Envelope, envelope
from gb28181gw.metrics import (
    ADOPTIONS,
    AUTH_FAILURES,
    BANS,
    DEVICES,
    DEVICES_OWNED,
    KEEPALIVE_TIMEOUTS,
    KEEPALIVES,
    OWNERSHIP_ERRORS,
    OWNERSHIP_LOST,
    REGISTRATIONS,
    Metrics,
)
from gb28181gw.net.router import ANY, ManscdpRequest, Role
from gb28181gw.net.stack import SipStack
from gb28181gw.net.timer import EarliestTimer
from gb28181gw.sdp import StreamMode
from gb28181gw.sip.auth import NonceStore
from gb28181gw.sip.events import RequestReceived
from gb28181gw.sip.message import make_response
from gb28181gw.sip.peer import Peer
from gb28181gw.sip.quick import QuickRequest
from gb28181gw.stopping import check_cancelled, stop_task
from gb28181gw.store.base import Cluster, DeviceNotice, SingleNode, Store, in_steps

from .audit import AuditService

log = logging.getLogger("gb28181gw.registrar")

OfflineListener = Callable[[Device, str], None]
#: Keepalive arrival times kept per device (a tuple of floats each: small for 100,000 devices).
KEEPALIVES_KEPT = 4
#: The keepalives counter's labels for one answered 200 (built once: counted per keepalive).
_KEEPALIVE_OK = (MessageResult.OK.value,)
# _kept_alive's fast path does these outputs of the table itself: it must learn if they change
assert KEEPALIVE_OUTPUTS == (Output.WATCH, Output.HEARTBEAT), KEEPALIVE_OUTPUTS
#: The registrations counter's first label per outcome (an enum's ``.value`` costs a descriptor call per REGISTER).
_OUTCOME_LABEL = {outcome: outcome.value for outcome in Outcome}
#: Registration reasons counted as authentication failures.
_AUTH_FAILURES = frozenset({"bad-password", "wrong-realm", "bad-algorithm", "banned"})
#: Seconds between walks of the table for :meth:`RegistrarService.knows_address` once a device has
#: registered, per device in it: a walk costs ~0.1 µs a device, so walks take at most ~10 % of the loop.
KNOWN_RECHECK = 1e-6
#: Online/offline events kept while the store cannot be written (several nodes); the oldest go beyond it.
MAX_NOTICES = 100_000
#: Seconds between reads of what other nodes wrote (several nodes; the shared events stream).
LEARN_INTERVAL = 1.0
#: Learnt rows taken into the table between two yields to the event loop.
LEARN_STEP = 1000
#: Devices a liveness timer call takes offline at most; the rest after a turn of the loop. A site
#: losing power (or this gateway's clock jumping) makes thousands due at once, each a transition,
#: a log line and the offline listeners (tens of µs): all in one call held the loop for seconds.
SWEEP_STEP = 200
#: Called with the device and the decoded body of every MANSCDP MESSAGE other than a keepalive.
ManscdpHandler = Callable[[Device, Envelope], None]


class RegistrarService:
    """Devices registering and heart-beating.

    Args:
        stack: the SIP stack to serve on.
        store: persistence.
        policy: registration policy.
        metrics: where to count.
        settings: the ``[registrar]`` section: digest options, and the keepalive interval and
            count of devices whose own are unknown.
        flush_interval: seconds between batched writes (``store.flush_interval``).
        clock: wall-clock epoch seconds (tests pass their own).
        audit: where devices added, removed and pruned, and bans set and lifted, are recorded.
        cluster: which devices this node serves and how their rows are written (several nodes on
            Redis: fenced by ownership epochs, with liveness deadlines and events); by default
            every device is this node's and rows go to ``store``.
    """

    def __init__(
        self,
        stack: SipStack,
        store: Store,
        policy: RegistrarPolicy,
        *,
        metrics: Metrics,
        settings: RegistrarSection,
        flush_interval: float,
        clock: Callable[[], float] = time.time,
        audit: AuditService | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.stack = stack
        self.store = store
        self.cluster: Cluster = cluster if cluster is not None else SingleNode(store)
        # a single node serves every device (SingleNode.owns is True for any): then not asked per
        # keepalive, through a call of an interpreted method (~0.1 µs)
        self._owns_all = type(self.cluster) is SingleNode
        # several nodes: devices whose liveness deadline changed (written to live:<node> with the
        # next batch, not per keepalive) and online/offline events waiting for it
        self._touched: set[str] = set()
        # the deadline (loop time) each online device has in live:<node>, written with slack (see _watch)
        self._live_score: dict[str, float] = {}
        self._notices: list[DeviceNotice] = []
        self.audit = audit
        self.policy = policy
        self.registrar = Registrar(
            policy,
            NonceStore(
                realm=policy.domain,
                algorithm=settings.digest_algorithm,
                qop=settings.digest_qop,
                lifetime=settings.nonce_lifetime,
            ),
        )
        self.devices = DeviceTable()
        self.liveness = Liveness()
        self.settings = settings
        self.keepalive_interval = settings.keepalive_interval
        self.keepalive_count = settings.keepalive_count
        self.flush_interval = flush_interval
        self._clock = clock
        self._dirty: set[str] = set()
        # held by a write of devices and by a device's deletion from the store: a write takes its
        # records and rows with loop turns between, and a device removed in one of them had its row
        # deleted before the write, which then put it back (see _remove); two writes at once could
        # finish the other way round from how they took their rows (see flush)
        self._write_lock = asyncio.Lock()
        # devices whose only change is a newer keepalive time: written at most every
        # keepalive_flush_interval, since a restart gives every device a fresh window anyway
        self._heartbeats: set[str] = set()
        self.keepalive_flush_interval = max(flush_interval, 30.0)
        self._deleted: set[str] = set()
        self.persist_bans = settings.persist_bans
        self._bans_to_save: dict[str, Ban] = {}
        self._bans_to_delete: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._learner: asyncio.Task[None] | None = None
        self._timer = EarliestTimer(self._on_deadline)
        self._offline_listeners: list[OfflineListener] = []
        self._registered_listeners: list[Callable[[Device], None]] = []
        self._removed_listeners: list[Callable[[str], None]] = []
        self._manscdp_handlers: list[ManscdpHandler] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        #: loop times of each device's last :data:`KEEPALIVES_KEPT` keepalives (the doctor measures the interval)
        self.keepalive_arrivals: dict[str, tuple[float, ...]] = {}
        self._hosts: frozenset[str] = frozenset()  # of registered devices, as of _hosts_at (see knows_address)
        self._hosts_at = float("-inf")
        self._hosts_registered = 0  # registrations counted as of _hosts_at
        # what the router gives this service, as of its version _routes_seen (see _quick_routes)
        self._routes_seen = -1
        self._registers_mine = False
        self._keepalives_mine = False
        self.registrations = metrics.counter(REGISTRATIONS)
        self.keepalives = metrics.counter(KEEPALIVES)
        self.timeouts = metrics.counter(KEEPALIVE_TIMEOUTS)
        self.auth_failures = metrics.counter(AUTH_FAILURES)
        self.ban_count = metrics.counter(BANS)
        metrics.labeled_gauge(DEVICES, self._states)
        metrics.gauge(DEVICES_OWNED, self._owned)
        metrics.labeled_counter(OWNERSHIP_LOST, lambda: {(): float(self.cluster.lost)})
        metrics.labeled_counter(ADOPTIONS, lambda: {k: float(v) for k, v in self.cluster.adoptions.items()})
        metrics.labeled_counter(OWNERSHIP_ERRORS, lambda: {k: float(v) for k, v in self.cluster.errors.items()})

    # --- lifecycle ---------------------------------------------------------------------

    def on_offline(self, listener: OfflineListener) -> None:
        """Be told when a device goes offline or unregisters (streams release on it)."""
        self._offline_listeners.append(listener)

    def on_registered(self, listener: Callable[[Device], None]) -> None:
        """Be told when a device registers (not on refreshes): time to ask for its catalog."""
        self._registered_listeners.append(listener)

    def on_removed(self, listener: Callable[[str], None]) -> None:
        """Be told (with its ID) of another node's device dropped because its row was deleted: forget it too."""
        self._removed_listeners.append(listener)

    def on_manscdp(self, handler: ManscdpHandler) -> None:
        """Receive every MANSCDP MESSAGE from registered devices other than keepalives."""
        self._manscdp_handlers.append(handler)

    async def start(self) -> None:
        """Load devices, take over REGISTER and MESSAGE, start the flusher and the liveness timer."""
        self._loop = asyncio.get_running_loop()
        devices = await self.store.load_devices()
        now, epoch = self._loop.time(), self._clock()
        if self.persist_bans:
            ended = self.registrar.bans.restore(await self.store.load_bans(), now=now, epoch=epoch)
            if ended:
                await self.store.save_bans([], ended_before=epoch)
            kept = len(self.registrar.bans.active(now))
            if kept:
                log.info("bans restored", extra={"bans": kept, "ended": len(ended)})
        expired = self.devices.load(devices, epoch=epoch)
        # several nodes: which of them are this node's (the others are watched by their own node)
        await self.cluster.start(devices)
        owns = self.cluster.owns
        for device in self.devices.values():
            if device.registered and owns(device.device_id):
                # its heartbeats were lost while we were down, not missed: a full window
                self._watch(device, now, epoch)
        expired = [c for c in expired if owns(c.device_id)]
        if expired:
            await self.cluster.write([self.devices[c.device_id] for c in expired], {}, [])
        registered = sum(1 for d in self.devices.values() if d.registered)
        log.info("devices loaded", extra={"devices": len(self.devices), "registered": registered})
        router = self.stack.router
        router.handle("REGISTER", self._on_register, owner="registrar")
        # MESSAGE (PROTOCOL.md §4.1, §5): registered devices are DEVICEs; the router answers the others
        router.add_role_resolver(self._role, owner="registrar")
        router.on_message(Role.DEVICE, CmdType.KEEPALIVE, self._on_keepalive, owner="registrar")
        router.on_message(Role.DEVICE, ANY, self._on_device_message, owner="registrar")
        router.on_rejected(self._on_rejected)
        if self.settings.quick_path:
            self.stack.on_quick("REGISTER", self._quick_register)
            self.stack.on_quick("MESSAGE", self._quick_message, needs=KEEPALIVE_MARK)
        self.stack.on_connection_lost(self._on_connection_lost)
        self._flusher = self._loop.create_task(self._flush_loop())
        if self.cluster.shared:
            self._learner = self._loop.create_task(self._learn_loop())
        self._arm()

    async def stop(self) -> None:
        """Write everything still pending and stop the timers."""
        self._timer.cancel()
        if self._learner is not None:
            await stop_task(self._learner, what="the learner of other nodes' devices")
            self._learner = None
        await self.cluster.stop()
        if self.persist_bans and self._loop is not None:
            # once more, with the attempts each refused since it was written
            for ban in self.registrar.bans.active(self._loop.time()):
                self._bans_to_save[ban.key] = ban
        if self._flusher is not None:
            # not cancel() and await: a batch cancelled as it is sent to Redis runs on (stopping.py)
            await stop_task(self._flusher, what="the registrar's write-behind")
            self._flusher = None
        try:
            await self.flush()
        except StoreError as exc:
            # shutting down goes on; the devices re-register with the next gateway
            log.error("store write failed at shutdown", extra={"devices": len(self._dirty), "error": str(exc)})

    # --- persistence -------------------------------------------------------------------

    def changed(self, device_id: str) -> None:
        """Mark a device as changed: it is written with the next batch."""
        self._dirty.add(device_id)

    async def flush(self, *, heartbeats: bool = True) -> None:
        """Write changed devices now (one batch); with ``heartbeats``, keepalive times too.

        A device the store refuses (:class:`StoreRecordError`) is logged and left out, never
        holding back the others; when the store itself cannot be written every change is kept
        for the next attempt and :class:`StoreError` is raised. One write at a time: a write
        takes its rows in steps, so one asked for meanwhile (an operator's, a catalog's) wrote a
        device's newer row and this one its older row after it, which the store then kept.
        """
        async with self._write_lock:
            await self._flush(heartbeats=heartbeats)

    async def _flush(self, *, heartbeats: bool) -> None:
        await self._flush_bans()
        dirty, self._dirty = self._dirty, set()
        if heartbeats:
            dirty |= self._heartbeats
            self._heartbeats = set()
        try:
            batch = await self._records(dirty)
        except BaseException:
            self._dirty |= dirty  # cancelled while taking them: kept for the next attempt
            raise
        touched, self._touched = self._touched, set()
        notices, self._notices = self._notices, []
        now, epoch = self._now()
        deadlines = {i: self._wall_deadline(i, now, epoch) for i in touched}
        try:
            try:
                result = await self.cluster.write(batch, deadlines, notices)
            except StoreRecordError:
                await self._save_one_by_one(batch)
                return
        except BaseException:
            # keep them for the next attempt; nothing is lost
            self._dirty |= dirty
            self._touched |= touched
            self._notices[:0] = notices
            if len(self._notices) > MAX_NOTICES:
                dropped = len(self._notices) - MAX_NOTICES
                del self._notices[:dropped]
                log.warning("device events dropped: the store has been away too long", extra={"events": dropped})
            raise
        for device_id in result.lost:
            self._forget(device_id)
        # marked offline by a janitor while this node was away: its row says so until written again
        self._dirty.update(i for i in result.back if i in self.devices)
        if result.resync:
            # Redis lost what we wrote, or some of it (restarted, away a while): all of ours again
            owned = [d for d in self.devices if self.cluster.owns(d)]
            self._dirty.update(owned)
            self._touched.update(d for d in owned if self.liveness.deadline(d) is not None)
            self._live_score.clear()

    async def _records(self, device_ids: set[str]) -> list[Device]:
        """The records of ``device_ids`` still known, taken in steps with a
        turn of the loop between (as the store's ``device_rows`` takes their rows).

        Why: the 30 s write of keepalive times takes every online device, and 10,000 lookups in
        one go held the loop ~10 ms under load (the records spread over a large heap: a cache
        miss each), which every keepalive behind them waited out. A device removed meanwhile is
        left out, as it was when removed before the batch was taken.
        """
        return await in_steps(list(device_ids), self.devices.get)

    def _wall_deadline(self, device_id: str, now: float, epoch: float) -> float | None:
        """The score of ``device_id`` in live:<node> (wall seconds): its deadline plus a third of its
        keepalive window (see :meth:`_watch`); ``None`` when it is not online (taken out of the set)."""
        device = self.devices.get(device_id)
        when = self.liveness.deadline(device_id)
        if device is None or when is None or device.state is not DeviceState.ONLINE:
            self._live_score.pop(device_id, None)
            return None
        score = when + self._keepalive_timeout(device) / 3
        self._live_score[device_id] = score
        return epoch + (score - now)

    def _forget(self, device_id: str) -> None:
        """Another node owns ``device_id`` now: stop watching it and write nothing more for it."""
        self.liveness.forget(device_id)
        self._dirty.discard(device_id)
        self._heartbeats.discard(device_id)
        self._touched.discard(device_id)
        self._live_score.pop(device_id, None)
        self.keepalive_arrivals.pop(device_id, None)

    async def _flush_bans(self) -> None:
        if not (self._bans_to_save or self._bans_to_delete):
            return
        save, self._bans_to_save = self._bans_to_save, {}
        delete, self._bans_to_delete = self._bans_to_delete, set()
        try:
            await self.store.delete_bans(sorted(delete))
            await self.store.save_bans(list(save.values()), ended_before=self._clock())
        except BaseException:
            # kept for the next attempt, unless lifted or banned again meanwhile
            self._bans_to_save = {**save, **self._bans_to_save}
            self._bans_to_delete |= delete - self._bans_to_save.keys()
            raise

    async def _save_one_by_one(self, batch: list[Device]) -> None:
        for device in batch:
            try:
                await self.store.save_devices([device])
            except StoreRecordError as exc:
                # its next change tries again; everyone else is written meanwhile
                log.error("device cannot be stored", extra={"device": device.device_id, "error": str(exc)})

    async def _flush_loop(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        next_heartbeats = loop.time() + self.keepalive_flush_interval
        while True:
            check_cancelled()
            await asyncio.sleep(self.flush_interval)
            heartbeats = loop.time() >= next_heartbeats
            if heartbeats:
                next_heartbeats = loop.time() + self.keepalive_flush_interval
            if (
                self.cluster.shared  # every interval: devices claimed away are learnt of with it
                or self._dirty
                or (heartbeats and self._heartbeats)
                or self._bans_to_save
                or self._bans_to_delete
            ):
                try:
                    await self.flush(heartbeats=heartbeats)
                except StoreError as exc:
                    log.error("store write failed; will retry", extra={"error": str(exc)})
                except Exception:
                    # a bug; the flusher must outlive it, or nothing would be written again
                    log.exception("writing devices failed; will retry")

    # --- other nodes' devices (several nodes) ---------------------------------------------

    async def _learn_loop(self) -> None:
        failing = False
        while True:
            check_cancelled()
            try:
                while await self._learn():
                    pass  # a full chunk: more entries wait
                failing = False
            except StoreError as exc:
                if not failing:
                    log.warning("other nodes' device events cannot be read; will retry", extra={"error": str(exc)})
                failing = True
            except Exception:
                # a bug; the learner must outlive it, or this node's view would stop moving
                log.exception("learning other nodes' devices failed; will retry")
            await asyncio.sleep(LEARN_INTERVAL)

    async def _learn(self) -> bool:
        """Take the rows other nodes wrote since the last call into the table; whether to call again at once.

        A device this node serves is left alone: its record here is the one that counts, and a claim
        by another node reaches it with its next batch (then its row is read again). Nor are the
        listeners told: another node's device is that node's to release streams or query.

        A device whose row was deleted (a ``removed`` event, or missing from an exact full read:
        see :attr:`~gb28181gw.store.base.Learnt.exact`) is dropped, never one served here.
        """
        started = self._clock()
        learnt = await self.cluster.news()
        owns = self.cluster.owns
        changed = 0
        seen: set[str] = set()
        for n, device in enumerate(learnt.devices, 1):
            if n % LEARN_STEP == 0:
                await asyncio.sleep(0)  # a full read (100,000 rows) must not hold SIP up meanwhile
            device_id = device.device_id
            seen.add(device_id)
            if owns(device_id):
                continue
            current = self.devices.get(device_id)
            if current is not None and current.row() == device.row():
                continue
            self.devices.adopt(device)
            self.keepalive_arrivals.pop(device_id, None)
            changed += 1
        gone = list(learnt.removed)
        if learnt.whole and learnt.exact:
            # missing from every row there is: deleted without this node reading its event (trimmed
            # away, or it came before this node's cursor). Not one changed here since the read began
            # (provisioned meanwhile, or its write still waiting): its row is not there yet
            gone += [
                d.device_id
                for d in self.devices.values()
                if d.device_id not in seen and d.updated_at < started and d.device_id not in self._dirty
            ]
        dropped = [device_id for device_id in gone if self._drop(device_id)]
        if changed or dropped:
            log.debug(
                "other nodes' devices learnt",
                extra={"devices": changed, "removed": len(dropped), "whole": learnt.whole},
            )
        if dropped:
            log.info("devices deleted at other nodes dropped", extra={"devices": dropped[:20], "count": len(dropped)})
        return learnt.more

    def _drop(self, device_id: str) -> bool:
        """Forget another node's device whose row was deleted; whether it was known (and not served here)."""
        if self.cluster.owns(device_id) or device_id in self._dirty:
            return False  # served (or just written) here: this node's record counts, written back with its next batch
        if self.devices.remove(device_id, epoch=self._clock()) is None:
            return False
        self._forget(device_id)
        for listener in self._removed_listeners:
            try:
                listener(device_id)
            except Exception:
                log.exception("removed listener failed", extra={"device": device_id})
        return True

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
            req, event.peer, existing, now=now, epoch=epoch, tag=self.stack.endpoint.new_tag(), device_id=device_id
        )
        # a challenge or a refusal keeps no transaction: a retransmitted REGISTER is answered
        # again (a fresh challenge), and a flood of them holds nothing for 32 s
        self.stack.respond(tx, result.response, stateless=result.response.status >= 300)
        self._registered(device_id, event.peer, result.response.status, result, bans_before, now, epoch)

    def _quick_routes(self) -> None:
        """Whether the router gives REGISTER and device keepalives to this service's handlers, as
        of its current :attr:`~gb28181gw.net.router.Router.version` (asked per version, not per request)."""
        router = self.stack.router
        self._routes_seen = router.version
        self._registers_mine = router.owner_of("REGISTER") == self._on_register
        self._keepalives_mine = router.message_owner(Role.DEVICE, "keepalive") == self._on_keepalive

    def _quick_register(self, q: QuickRequest, peer: Peer) -> tuple[int, bytes] | None:
        # the quick path (gb/quick.py): REGISTER answered without the general stack, or declined
        router = self.stack.router
        if router.version != self._routes_seen:
            self._quick_routes()
        if not self._registers_mine or not router.chain_passes("REGISTER", q.call_id):
            return None
        now, epoch = self._now()
        endpoint = self.stack.endpoint
        result = quick_register(
            self.registrar, q, peer, self.devices.get(q.sender),
            now=now, epoch=epoch, tag=endpoint.new_tag(), server=endpoint.user_agent,
        )  # fmt: skip
        if result is None:
            return None
        self._registered(q.sender, peer, result.status, result, self.registrar.bans.bans, now, epoch)
        return result.status, result.data

    def _registered(
        self,
        device_id: str,
        peer: Peer,
        status: int,
        result: RegisterResult | QuickRegister,
        bans_before: int,
        now: float,
        epoch: float,
    ) -> None:
        """What a REGISTER answered (by either path) changes: counts, bans, logs, the device."""
        self.registrations[_OUTCOME_LABEL[result.outcome], result.reason] += 1
        if self.registrar.bans.bans != bans_before:
            self.ban_count[()] += self.registrar.bans.bans - bans_before
            for ban in self.registrar.bans.take_added():
                log.warning(
                    "banned",
                    extra={"key": ban.key, "device": ban.device_id, "peer": ban.address, "reason": ban.reason,
                           "seconds": round(ban.until - ban.since)},
                )  # fmt: skip
                seconds = round(ban.until - ban.since)
                self._audit(Action.DEVICE_BAN, _ban_target(ban), {"ban": ban.key, "reason": ban.reason, "seconds": seconds}, actor=GATEWAY)  # fmt: skip
                if self.persist_bans:
                    self._bans_to_save[ban.key] = ban
                    self._bans_to_delete.discard(ban.key)
        if result.reason in _AUTH_FAILURES:
            self.auth_failures[(result.reason,)] += 1
        outcome = result.outcome
        if outcome is Outcome.CHALLENGED:
            return  # the first half of every registration: nothing to log, nothing changed
        extra = {"device": device_id, "peer": peer, "reason": result.detail}
        if outcome is Outcome.REJECTED:
            if status == 401:
                log.warning("authentication failed", extra=extra)
            else:
                log.warning("registration refused", extra={**extra, "status": status})
        device, change = result.device, result.change
        if device is None or change is None:
            return
        event = change.event
        # a REGISTER (a rebooted device's comes as a refresh) starts its keepalives again: the gap
        # before it is no interval of theirs
        self.keepalive_arrivals.pop(device_id, None)
        self.devices.adopt(device)
        # several nodes: a device held here only as another node last wrote it (loaded at start, or
        # let go since), "online" perhaps, whose REGISTER reads as a refresh
        gained = self.cluster.shared and not self.cluster.owns(device_id)
        # every REGISTER accepted here (refresh and unregister too) claims the device with the next batch
        self.cluster.registered(device_id, epoch)
        if event is not DeviceEvent.UNREGISTERED:
            # the address it is told (Via, Contact, SDP): `device show` says it, for the installer
            # whose camera sends its video nowhere
            local = self.stack.local_address(peer)
            if (device.local_host, device.local_port) != local:
                device.local_host, device.local_port = local
                self.changed(device.device_id)
        if event is DeviceEvent.UNREGISTERED:
            log.info("device unregistered", extra=extra)
        elif result.address_changed and change.moved_from is not None:
            log.warning(
                "device registered from a new address (NAT rebinding, or two devices sharing one ID)",
                extra={**extra, "old": str(change.moved_from)},
            )
        if event is DeviceEvent.REGISTERED or change.went_online:
            log.info("device online", extra={**extra, "expires": device.expires, "transport": device.transport})
        # the listeners are told "unregistered", the record keeps the longer offline_reason
        self._apply(change, device, now, epoch, reason="unregistered" if event is DeviceEvent.UNREGISTERED else "")
        if gained and device.online:
            # to this node and to the event stream it comes online here (after the offline of the
            # node it left, its janitor's perhaps), and is asked for its catalog and subscribed here
            if not change.went_online:
                self._notices.append(DeviceNotice(device_id, "online"))
            if Output.ANNOUNCE not in change.outputs:
                for listener in self._registered_listeners:
                    try:
                        listener(device)
                    except Exception:
                        log.exception("registered listener failed", extra={"device": device_id})

    def _apply(self, change: Change, device: Device, now: float, epoch: float, *, reason: str = "") -> None:
        """Carry out what a transition asks of the shell (:class:`~gb28181gw.gb.devices.Output`)."""
        device_id = change.device_id
        if self.cluster.shared and change.old is not change.new:  # not on a plain keepalive
            if change.went_online:
                self._notices.append(DeviceNotice(device_id, "online"))
            elif change.went_offline:
                self._notices.append(DeviceNotice(device_id, "offline", reason or change.reason))
                self._touched.add(device_id)
        for output in change.outputs:
            if output is Output.SAVE:
                self.changed(device_id)
            elif output is Output.HEARTBEAT:
                if device_id not in self._dirty:
                    self._heartbeats.add(device_id)
            elif output is Output.WATCH:
                self._watch(device, now, epoch)
                self._arm()
            elif output is Output.UNWATCH:
                self.liveness.forget(device_id)
                if self.cluster.shared:
                    self._touched.add(device_id)
            elif output is Output.ANNOUNCE:
                for listener in self._registered_listeners:
                    try:
                        listener(device)
                    except Exception:
                        log.exception("registered listener failed", extra={"device": device_id})
            elif output is Output.RELEASE:
                self.keepalive_arrivals.pop(device_id, None)  # its silence is no keepalive interval
                self._went_offline(device, reason or change.reason)
            elif output is Output.DELETE:
                self._dirty.discard(device_id)
                self._heartbeats.discard(device_id)

    def _keepalive_timeout(self, device: Device) -> float:
        return keepalive_timeout(
            device.keepalive_interval or self.keepalive_interval, device.keepalive_count or self.keepalive_count
        )

    def _watch(self, device: Device, now: float, epoch: float) -> None:
        timeout = liveness_timeout(device, epoch, interval=self.keepalive_interval, count=self.keepalive_count)
        when = self.liveness.touch(device.device_id, now, timeout)
        # several nodes: live:<node> holds each online device's deadline plus a third of its window,
        # rewritten only once the deadline passes what it holds (a keepalive every interval writes
        # about every other one, not each): a janitor marks a dead node's device offline late by
        # at most that third, never early
        if self.cluster.shared and when > self._live_score.get(device.device_id, -1.0):
            self._touched.add(device.device_id)

    # --- MESSAGE (keepalive and what registered devices send) --------------------------------

    def _role(self, sender: str, peer: Peer) -> Role | None:
        # the router asks who sent a MESSAGE: the registered device at its address, its ID from
        # elsewhere, or (by the ID deny list) a refused sender
        device = self.devices.get(sender)
        if (
            device is not None
            and device.port == peer.port
            and device.host == peer.host
            and device.state is not DeviceState.UNREGISTERED
            and device.expires_at > self._clock()
            and (self._owns_all or self.cluster.owns(sender))
        ):
            # asked of every keepalive: its common answer (check_sender's OK, from its very
            # address) without the general checks below
            return Role.DEVICE
        if device is not None and not self.cluster.owns(sender):
            device = None  # another node's: 404, and a device that believes it is registered here registers again
        result = check_sender(device, peer, self._clock(), accept_port_change=self.settings.accept_port_change)
        if result is MessageResult.OK:
            return Role.DEVICE
        if result is MessageResult.WRONG_ADDRESS:
            return Role.MOVED
        if sender and any(sender.startswith(prefix) for prefix in self.policy.deny_ids):
            return Role.REFUSED
        if is_platform_id(sender) and not self.policy.accept_platforms:
            # a platform that is none of our superiors (their resolver claimed those) and that
            # could not register here: 404 would tell it to register, so it is refused (issue 12)
            return Role.REFUSED
        return None

    def _on_rejected(self, event: RequestReceived, role: Role, status: int) -> None:
        # the router answered 404/403 (sender not registered, or not from its address) or 400
        # (a registered device's bad body)
        if role is Role.DEVICE:
            if status == 400:
                self.keepalives[(MessageResult.BAD_BODY.value,)] += 1
            return
        if role is Role.PLATFORM:
            return
        if role is Role.MOVED:
            self.keepalives[(MessageResult.WRONG_ADDRESS.value,)] += 1
            reason, detail = (
                "wrong-address",
                f"MESSAGE from another address than it registered from (answered {status})",
            )
        else:
            self.keepalives[(MessageResult.UNREGISTERED.value,)] += 1
            reason, detail = "not-registered", f"MESSAGE from a device that is not registered (answered {status})"
            if role is Role.REFUSED and is_platform_id(from_user(event.request)):
                reason, detail = "platform-id", f"MESSAGE from a platform that is not our superior (answered {status})"
            elif role is Role.REFUSED:
                reason, detail = "denied-id", f"MESSAGE from a refused ID (answered {status})"
        # a device that keeps knocking: one that believes it is registered (our store was lost,
        # or it registered to another gateway), or a stranger
        self.registrar.refused.record(from_user(event.request), event.peer.host, reason, detail, self._clock())

    def _on_device_message(self, msg: ManscdpRequest) -> None:
        tx = msg.event.transaction
        assert tx is not None
        self.stack.respond(tx, make_response(msg.event.request, 200, to_tag=self.stack.endpoint.new_tag()))
        self._dispatch_manscdp(self.devices[msg.sender], msg.root, msg.event.request.body)

    def _on_keepalive(self, msg: ManscdpRequest) -> None:
        event = msg.event
        tx = event.transaction
        assert tx is not None
        now, epoch = self._now()
        self.stack.respond(tx, make_response(event.request, 200, to_tag=self.stack.endpoint.new_tag()))
        self._kept_alive(msg.sender, event.peer, now, epoch)

    def _quick_message(self, q: QuickRequest, peer: Peer) -> tuple[int, bytes] | None:
        # the quick path (sip/quick.py): a plain Keepalive from a registered device, answered
        # without the general stack when the router would hand it to _on_keepalive; else declined
        router = self.stack.router
        if router.version != self._routes_seen:
            self._quick_routes()
        if (
            not self._keepalives_mine
            or not is_keepalive(q.body)
            or not router.chain_passes("MESSAGE", q.call_id)
            or router.role_of(q.sender, peer) is not Role.DEVICE
        ):
            return None
        now, epoch = self._now()
        endpoint = self.stack.endpoint
        data = q.answer(200, endpoint.new_tag(), server=endpoint.user_agent)
        # the ID as the device table holds it rather than as this request spelt it: the tables
        # _kept_alive looks it up in (arrivals, liveness, heartbeats) were filled with that same
        # string, and a dict finds its own key by identity, where an equal string is compared
        # (the stored one read from memory: a cache miss each at a large site)
        device = self.devices.get(q.sender)
        device_id = device.device_id if device is not None and device.device_id == q.sender else q.sender
        self._kept_alive(device_id, peer, now, epoch)
        return 200, data

    def _kept_alive(self, device_id: str, peer: Peer, now: float, epoch: float) -> None:
        """What a keepalive answered 200 (by either path) changes."""
        self.keepalives[_KEEPALIVE_OK] += 1
        arrivals = self.keepalive_arrivals
        kept = arrivals.get(device_id)
        if kept is not None and len(kept) == KEEPALIVES_KEPT == 4:
            # the common case written out: one tuple built rather than a slice, a list and a tuple
            arrivals[device_id] = (kept[1], kept[2], kept[3], now)
        else:
            arrivals[device_id] = (*(kept or ())[1 - KEEPALIVES_KEPT :], now)
        device = self.devices.keepalive(device_id, peer, epoch=epoch)
        if device is not None:
            # the common case (an online device at its address): the table's KEEPALIVE_OUTPUTS,
            # WATCH and HEARTBEAT, done here as _apply would do them, without a Change to walk.
            # WATCH is _watch and _arm written out for an ONLINE device (liveness_timeout's online
            # branch; tests/core/test_keepalive_fast.py holds it to them): three calls fewer per
            # keepalive, tens of thousands a second
            timeout = min(
                max(device.expires_at - epoch, 0.0),
                keepalive_timeout(
                    device.keepalive_interval or self.keepalive_interval, device.keepalive_count or self.keepalive_count
                ),
            )
            when = self.liveness.touch(device_id, now, timeout)
            if self.cluster.shared and when > self._live_score.get(device_id, -1.0):
                self._touched.add(device_id)
            self._timer.arm(self.liveness.next_deadline())
            if device_id not in self._dirty:
                self._heartbeats.add(device_id)
            return
        device = self.devices[device_id]
        change = self.devices.apply(device_id, DeviceEvent.KEEPALIVE, epoch=epoch, peer=peer)
        if change.moved_from is not None:
            # K5: NAT rebinding shows up in keepalives first
            log.info(
                "device address changed",
                extra={"device": device_id, "old": f"{change.moved_from.host}:{change.moved_from.port}",
                       "new": str(peer)},
            )  # fmt: skip
        if change.went_online:
            log.info("device online again", extra={"device": device_id, "reason": "keepalive"})
        self._apply(change, device, now, epoch)

    def _on_connection_lost(self, peer: Peer, reason: str) -> None:
        # GB/T 28181-2022 §9.1.1 f: a device that registered over TCP is reachable only on that
        # connection; when it closes the device is offline until it connects and registers again
        if peer.transport != "TCP":
            return
        loop = self._loop or asyncio.get_running_loop()
        now, epoch = loop.time(), self._clock()
        for device_id in self.devices.on_connection(peer):
            if not self.cluster.owns(device_id):
                continue  # another node's, on a connection of its own (as last written, or learnt)
            change = self.devices.apply(
                device_id, DeviceEvent.CONNECTION_LOST, epoch=epoch, reason=f"TCP connection closed ({reason})"
            )
            self.timeouts[("connection closed",)] += 1
            log.info("device offline", extra={"device": device_id, "reason": change.reason})
            self._apply(change, self.devices[device_id], now, epoch)

    def _dispatch_manscdp(self, device: Device, root: Element, body: bytes) -> None:
        # answered 200 already: a MANSCDP body we cannot use is logged, never an error to the device
        try:
            env = envelope(root, body=body)
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
        now, epoch = loop.time(), self._clock()
        # at most SWEEP_STEP: the rest stay due, and _arm below calls again after a loop turn
        for device_id in self.liveness.due(now, SWEEP_STEP):
            device = self.devices.get(device_id)
            if device is None:
                continue
            event = deadline_event(device, epoch)
            if event is None:
                if device.registered:
                    self._watch(device, now, epoch)  # fired a little early: not yet
                continue
            if event is DeviceEvent.EXPIRED:
                cause = reason = "registration expired"
            else:
                cause = "keepalive timeout"
                reason = f"no keepalive for {self._keepalive_timeout(device):.0f} s"
            change = self.devices.apply(device_id, event, epoch=epoch, reason=reason)
            if change.went_offline:
                self.timeouts[(cause,)] += 1
                log.info("device offline", extra={"device": device_id, "reason": reason})
            else:
                log.info("device registration expired", extra={"device": device_id})
            self._apply(change, device, now, epoch)
        self._arm()

    def _went_offline(self, device: Device, reason: str) -> None:
        for listener in self._offline_listeners:
            try:
                listener(device, reason)
            except Exception:
                log.exception("offline listener failed", extra={"device": device.device_id})

    # --- operator surface --------------------------------------------------------------

    def _owned(self) -> float:
        if not self.cluster.shared:
            # one node owns every registered device: the kept counts, no walk (see DeviceTable)
            counts = self.devices.counts()
            return float(counts[DeviceState.ONLINE] + counts[DeviceState.OFFLINE])
        owns = self.cluster.owns
        return float(sum(1 for d in self.devices.values() if d.registered and owns(d.device_id)))

    def counts(self) -> dict[str, int]:
        """Devices known, registered here and online here (``gb28181gw status``): what the metrics count.

        With several nodes another node's device is known here but counted by its own node; the
        status counted it "online" at every node, the metrics at its own only.
        """
        states = self._states()
        return {k: int(states[(k,)]) for k in ("known", "registered", "online")}

    def _states(self) -> dict[tuple[str, ...], float]:
        total = len(self.devices)
        if self.cluster.shared:
            # several nodes: a device registered at another node (loaded at start, or let go since)
            # is that node's to count; its record here is only as last known, "online" perhaps
            owns = self.cluster.owns
            counts = dict.fromkeys(DeviceState, 0)
            for d in self.devices.values():
                if not d.registered or owns(d.device_id):
                    counts[d.state] += 1
            held = sum(counts.values())
        else:
            counts = self.devices.counts()
            held = total
        online = counts[DeviceState.ONLINE]
        registered = online + counts[DeviceState.OFFLINE]
        return {("online",): online, ("offline",): held - online, ("registered",): registered, ("known",): total}

    async def provision(
        self,
        device_id: str,
        *,
        password: str = "",
        name: str = "",
        charset: str = "",
        stream_mode: StreamMode | None = None,
    ) -> Device:
        """Add (or update) a device by hand: its password, name, MANSCDP charset and media mode.

        A new password lifts the device's bans: they were earned with the old one.
        """
        created = device_id not in self.devices
        asked = {"name": name, "charset": charset, "stream_mode": stream_mode or "", "digest_changed": bool(password)}
        self._audit(Action.DEVICE_ADD, device_id, {**asked, "created": created})
        change = self.devices.provision(
            device_id, epoch=self._clock(), password=password, name=name, charset=charset, stream_mode=stream_mode
        )
        device = self.devices[device_id]
        now, epoch = self._now()
        self._apply(change, device, now, epoch)
        if password:
            self.unban_device(device_id, why="password changed")
        await self.flush()
        return device

    def knows_address(self, host: str) -> bool:
        """Whether a device registered from ``host``, now or before (the flood guard's higher limit).

        Registered before counts too: after a site's power cut its cameras (often hundreds behind
        one router) all register at once, their registrations expired; as strangers they would
        be banned together. A walk of the table, at most once a second, or sooner (after
        :data:`KNOWN_RECHECK` s per device in it) when a device has registered since: an NVR answers the catalog
        query that follows its registration with a burst of MESSAGEs, and an answer a second
        stale would ban it as a stranger. The guard asks only when an address passes the
        strangers' limit within a window, and a flood of them shares the walks.
        """
        if host in self._hosts:
            return True
        now = self._now()[0]
        registered = sum(n for labels, n in self.registrations.items() if labels[0] == Outcome.REGISTERED.value)
        age = now - self._hosts_at
        if age >= 1.0 or (registered != self._hosts_registered and age >= KNOWN_RECHECK * len(self.devices)):
            self._hosts = frozenset(d.host for d in self.devices.values() if d.host)
            self._hosts_at = now
            self._hosts_registered = registered
        return host in self._hosts

    # --- bans and refusals -------------------------------------------------------------------

    def bans(self) -> list[Ban]:
        """Every active ban, the one ending first first."""
        return self.registrar.bans.active(self._now()[0])

    def bans_of(self, device: Device) -> list[Ban]:
        """The active bans that refuse ``device`` (its own, from any address, and its address's:
        behind a trusted proxy the address in the proxy's Path, which its REGISTERs are judged by)."""
        address = path_address(device.path, device.host, self.registrar.policy.trusted_proxies)
        return self.registrar.bans.of_device(device.device_id, address, self._now()[0])

    def last_auth_failure(self, device_id: str) -> AuthFailure | None:
        """The device ID's last failed digest authentication, if remembered."""
        return self.registrar.bans.last_failure(device_id)

    def unban(self, key: str) -> Ban | None:
        """Lift the ban on ``key`` (``ip:<address>`` or ``id:<ID>@<address>``); the ban, or ``None``."""
        ban = self.registrar.bans.lift(key)
        if ban is not None:
            self._lifted([ban], "lifted by operator")
        else:
            self._audit(Action.DEVICE_UNBAN, key, {"ban": key}, result=Result.REFUSED, detail=f"no ban {key}")
        return ban

    def unban_device(self, device_id: str, *, why: str = "lifted by operator") -> list[Ban]:
        """Lift every ban that refuses ``device_id``, from every address (see :meth:`~gb28181gw.gb.bans.BanList.lift_device`)."""
        lifted = self.registrar.bans.lift_device(device_id)
        self._lifted(lifted, why)
        return lifted

    def _lifted(self, bans: list[Ban], why: str) -> None:
        for ban in bans:
            log.info("ban lifted", extra={"key": ban.key, "device": ban.device_id, "reason": why})
            self._audit(Action.DEVICE_UNBAN, _ban_target(ban), {"ban": ban.key, "reason": why})
            if self.persist_bans:
                self._bans_to_save.pop(ban.key, None)
                self._bans_to_delete.add(ban.key)

    # --- housekeeping ------------------------------------------------------------------

    def stale(self, older_than: float, *, provisioned: bool = False) -> list[Device]:
        """Devices not heard from for ``older_than`` seconds (see :meth:`DeviceTable.stale`)."""
        return self.devices.stale(before=self._clock() - older_than, provisioned=provisioned)

    async def prune(self, older_than: float, *, provisioned: bool = False) -> list[Device]:
        """Remove the devices not heard from for ``older_than`` seconds; the removed ones.

        Never a device holding a registration (see :meth:`DeviceTable.stale`).
        """
        pruned = self.stale(older_than, provisioned=provisioned)
        for device in pruned:
            await self._remove(device.device_id)
            # one record each: `audit --target ID` finds the removal (the summary can name only so many)
            self._audit(Action.DEVICE_REMOVE, device.device_id, {"pruned": True})
        if pruned:
            log.info("devices pruned", extra={"devices": len(pruned), "older_than": older_than})
        asked = {"older_than": older_than, "provisioned": provisioned}
        self._audit(
            Action.DEVICE_PRUNE, "", {**asked, "removed": len(pruned), "devices": [d.device_id for d in pruned]}
        )
        return pruned

    async def remove(self, device_id: str) -> bool:
        """Forget a device entirely (it must register again)."""
        removed = await self._remove(device_id)
        detail = "" if removed else f"no device {device_id}"
        self._audit(Action.DEVICE_REMOVE, device_id, result=Result.OK if removed else Result.REFUSED, detail=detail)
        return removed

    async def _remove(self, device_id: str) -> bool:
        now, epoch = self._now()
        removed = self.devices.remove(device_id, epoch=epoch)
        self.keepalive_arrivals.pop(device_id, None)
        if removed is not None:
            self._apply(removed[1], removed[0], now, epoch)
        async with self._write_lock:  # after a write in flight, which may hold this device's record
            stored = await self.store.delete_device(device_id)
        return stored or removed is not None

    def _audit(self, action: Action, target: str, params: dict[str, object] | None = None, **how: Any) -> None:
        if self.audit is not None:
            self.audit.record(action, target, params, **how)

    def update_info(
        self, device_id: str, *, reported_name: str = "", manufacturer: str = "", model: str = "", firmware: str = ""
    ) -> None:
        """Keep what the device said about itself (DeviceInfo); written with the next batch.

        Its name is kept as ``reported_name``, beside the operator's ``name``.
        """
        if self.devices.describe(
            device_id,
            epoch=self._clock(),
            reported_name=reported_name,
            manufacturer=manufacturer,
            model=model,
            firmware=firmware,
        ):
            self.changed(device_id)

    def update_heartbeat(self, device_id: str, *, interval: int = 0, count: int = 0) -> None:
        """Keep the device's own heartbeat settings (they drive its liveness deadline from its next keepalive)."""
        if self.devices.set_heartbeat(device_id, epoch=self._clock(), interval=interval, count=count):
            self.changed(device_id)


def _ban_target(ban: Ban) -> str:
    """What a ban refuses, as the audit trail names it: the device ID, or the address for an address ban."""
    return ban.device_id if ban.key.startswith("id:") else ban.address
