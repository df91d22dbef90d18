"""Our catalog toward each superior (cascade, PROTOCOL.md §9.3, §6.6, §9.8): the shell around :mod:`gb28181gw.gb.cascade_catalog`.

- **Catalog query** (a superior's ``<Query><CmdType>Catalog``): answered 200 at once, then
  the tree it may see (:func:`~gb28181gw.gb.cascade_catalog.build_view`, scoped to the
  queried DeviceID) goes to it as Response MESSAGEs of ``catalog_batch`` items, each after
  the previous one's 2xx (:class:`~gb28181gw.gb.cascade_catalog.Pacer`). A DeviceID we do not
  have is answered 404 with a Warning, not a ``Result ERROR`` Response: the superior's
  transaction ends at once with the reason, where a Response without SumNum leaves a
  superior that collects by SN (wvp, §5.5.6) waiting for parts until its timeout. The same
  DeviceID asked again stops the answer still under way: the superior waits for the new SN only.
- **Catalog SUBSCRIBE** from a superior (``Event: Catalog``; one without Event but with a
  Catalog body is taken too: Monibuca, §11.6 P5): 200 with Expires and a ``Result OK`` body, a
  UAS dialog, the offline items as the first NOTIFY (2022 N.2.1.2.1), refreshes and
  ``Expires: 0`` inside the dialog, and the end of it when it is not refreshed in time. A
  SUBSCRIBE for Catalog from anyone who is not a superior is refused with 403; other event
  packages are passed on to whoever else consumes SUBSCRIBE.
- **Changes** (ADD, DEL, UPDATE, ON, OFF): whenever channels change (a catalog stored,
  catalog events, a device online or offline) or the operator changes a share or override,
  each superior that holds a subscription — or has ``catalog_push`` on and is registered — is
  sent the difference between what it was last shown and what it may see now, as NOTIFYs of
  ``catalog_batch`` events, serially. Changes within :data:`CHANGE_DELAY` are sent together.
  A superior with ``catalog_push`` and no subscription gets them as NOTIFYs in a dialog of
  our own making, as wvp's "auto push" does (§9.8, §11.6 P8): superiors that take catalog
  changes unprompted take them as NOTIFY, the form they also get from subscribed peers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gb28181gw.errors import DialogError, ManscdpError, SipParseError, SipTimeoutError, SipTransportError, StoreError
from gb28181gw.gb.cascade_catalog import (
    Change,
    Identity,
    Pacer,
    PacerState,
    Parts,
    Steps,
    View,
    body_limit,
    build_view_steps,
    diff_steps,
    notify_steps,
    offline_changes,
    response_steps,
    run_steps,
)
from gb28181gw.gb.model import Channel, DeviceState
from gb28181gw.gb.registrar import from_user
from gb28181gw.manscdp.codec import parse_xml
from gb28181gw.manscdp.messages import CONTENT_TYPE, CmdType, Envelope, Root, encode, envelope
from gb28181gw.metrics import UPSTREAM_CATALOG_ITEMS, UPSTREAM_NOTIFIES, Metrics
from gb28181gw.net.router import PASS, ManscdpRequest, Passed, Role
from gb28181gw.net.stack import SipStack
from gb28181gw.net.tasks import TaskSet
from gb28181gw.sip.dialog import Dialog, DialogState
from gb28181gw.sip.endpoint import warning_header
from gb28181gw.sip.events import RequestReceived
from gb28181gw.sip.message import Request, Response, make_response
from gb28181gw.stopping import STOP_TIMEOUT, check_cancelled, stop_task

from .devices import DeviceService
from .registrar import RegistrarService
from .upstreams import Link, UpstreamService

log = logging.getLogger("gb28181gw.upstream.catalog")

#: Seconds changes are gathered before they are sent (an NVR's catalog arrives as one burst).
CHANGE_DELAY = 0.2
#: Seconds between reads of the devices other nodes keep in the shared store (issue 17): their changes
#: reach subscribed superiors within this; a Catalog query reads them anew.
SHARED_INTERVAL = 30.0
#: Expires of a catalog SUBSCRIBE that states none (2022 Annex N default).
DEFAULT_EXPIRES = 600
#: Longest subscription granted (s); a superior asking more is told this in the 200.
MAX_EXPIRES = 86400

T = TypeVar("T")


async def _stepped(steps: Steps[T]) -> T:
    """Run a stepped core computation, letting the loop handle other work between steps.

    A 10,000-channel tree is built, diffed and encoded in ~150 ms per superior; in steps of
    :data:`~gb28181gw.gb.cascade_catalog.STEP` items no SIP message waits more than a few ms.
    """
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        await asyncio.sleep(0)


@dataclass(eq=False, slots=True)
class _Stream:
    """One serial stream of messages to a superior: a query's answer, or its NOTIFYs."""

    owner: str = ""  # the superior's name
    target: str = ""  # the DeviceID a query's answer is for ("": NOTIFYs)
    pacer: Pacer = field(default_factory=Pacer)
    queue: deque[tuple[bytes, int]] = field(default_factory=deque)  # (body, items in it)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def push(self, bodies: list[tuple[bytes, int]]) -> None:
        self.queue.extend(bodies)
        self.pacer.push(len(bodies))
        self.wake.set()

    def stop(self, reason: str) -> None:
        self.pacer.lose(reason)
        self.wake.set()  # its sender is waiting for an answer or a timer: let it see the end


@dataclass(eq=False, slots=True)
class CatalogSubscription:
    """A superior's catalog subscription to us.

    Attributes:
        dialog: the UAS dialog its SUBSCRIBE created.
        event: its Event header value, echoed in every NOTIFY.
        target: the DeviceID it subscribed to (the scope of what it is told).
        expires_at: monotonic time it ends unless refreshed.
    """

    dialog: Dialog
    event: str
    target: str
    expires_at: float
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


@dataclass(eq=False, slots=True)
class _Feed:
    """What one superior is told of our catalog."""

    link: Link
    subscription: CatalogSubscription | None = None
    push_dialog: Dialog | None = None
    shown: View | None = None  # what it was last told (None: nothing to compare with yet)
    # the whole tree it may see as last built (None: build anew), the devices changed since
    # (with the number of the change, so that a build only clears what it saw), and the
    # number of share or override changes (a build from before one is not kept)
    built: View | None = None
    dirty: dict[str, int] = field(default_factory=dict)
    epoch: int = 0
    notifies: _Stream = field(default_factory=_Stream)
    sn: int = 0

    def next_sn(self) -> int:
        self.sn += 1
        return self.sn


class CascadeCatalogService:
    """Answers superiors' Catalog queries and subscriptions, and tells them of changes (module docstring).

    Args:
        stack / upstreams / registrar / devices: the SIP stack and the services it reads.
        metrics: where ``gb28181gw_upstream_catalog_items`` and ``gb28181gw_upstream_notifies`` go.
        name: our platform's name in the superiors' trees.
    """

    def __init__(
        self,
        stack: SipStack,
        upstreams: UpstreamService,
        registrar: RegistrarService,
        devices: DeviceService,
        *,
        metrics: Metrics,
        name: str,
        shared: bool = False,
    ) -> None:
        self.stack = stack
        # several nodes on a Redis store (issue 17): the devices other nodes own are in the
        # shared store, not in our memory; a snapshot of them is added to every superior's tree
        self.shared = shared
        self._others: dict[str, dict[str, Channel]] = {}
        self._others_online: set[str] = set()
        self._others_task: asyncio.Task[None] | None = None
        self.upstreams = upstreams
        self.registrar = registrar
        self.devices = devices
        self.name = name
        self.feeds = {n: _Feed(link, notifies=_Stream(n)) for n, link in upstreams.links.items()}
        self._tasks = TaskSet()
        self._pending: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._again = False  # changes came in while a flush was running
        self._change_count = 0
        self._answers: set[_Stream] = set()
        self._drains: set[asyncio.Task[None]] = set()
        self._items = metrics.counter(UPSTREAM_CATALOG_ITEMS)
        self._notifies = metrics.counter(UPSTREAM_NOTIFIES)
        router = stack.router
        router.on_message(Role.PLATFORM, CmdType.CATALOG, self._on_query, owner="cascade-catalog")
        router.consume("SUBSCRIBE", self._on_subscribe, owner="cascade-catalog")
        devices.on_channels_changed(self._changed)
        registrar.on_registered(lambda device: self._changed(device.device_id))
        registrar.on_offline(lambda device, reason: self._changed(device.device_id))
        upstreams.on_view_changed(lambda name: self._changed(""))
        upstreams.on_lost(self._on_lost)
        upstreams.set_channel_source(self._channel_pairs)

    async def start(self) -> None:
        """Take what each pushed-to superior sees now as what it knows (it queries the rest)."""
        if self.shared:
            await self.refresh_shared()
            self._others_task = asyncio.get_running_loop().create_task(self._keep_shared())
        for feed in self.feeds.values():
            if feed.link.section.catalog_push:
                feed.shown = self.view(feed.link)

    async def stop(self) -> None:
        """Stop sending; subscriptions are forgotten (superiors subscribe again)."""
        if self._others_task is not None:
            self._others_task.cancel()
        if self._pending is not None:
            self._pending.cancel()
        if self._flushing is not None:
            self._flushing.cancel()
        for feed in self.feeds.values():
            if feed.subscription is not None:
                self._end(feed, "shutting down")
            feed.notifies.stop("shutting down")
        for stream in self._answers:
            stream.stop("shutting down")
        self._tasks.cancel()
        for task in list(self._drains):
            task.cancel()
        # awaited, each bounded: a task cancelled but left running would go on reading the shared
        # catalog from a store that is closing, or sending to a superior we have said goodbye to
        for stopping in [self._others_task, self._flushing, *self._drains]:
            if stopping is not None:
                await stop_task(stopping)
        self._others_task = self._flushing = None
        await self._tasks.wait(STOP_TIMEOUT)

    # --- the tree ---------------------------------------------------------------------------

    def view(self, link: Link, target: str | None = None) -> View:
        """What superior ``link`` may see now; with ``target``, only that subtree."""
        return run_steps(self._view_steps(link, target))

    async def view_async(self, link: Link, target: str | None = None) -> View:
        """:meth:`view`, built in steps that let the loop serve SIP between them."""
        return await _stepped(self._view_steps(link, target))

    def _view_steps(self, link: Link, target: str | None) -> Steps[View]:
        # built from the last whole tree of this superior: only the devices changed since
        # are built again (gb.cascade_catalog.build_view_steps)
        feed = self.feeds.get(link.machine.settings.name)
        previous, changed, epoch = (feed.built, dict(feed.dirty), feed.epoch) if feed is not None else (None, {}, 0)
        settings = link.machine.settings
        devices = self.registrar.devices

        def online(device_id: str) -> bool:
            # ours, or online at another node as the shared store says (issue 17)
            device = devices.get(device_id)
            return (device is not None and device.online) or device_id in self._others_online

        # a list: the stored dicts may change between steps
        channels = [ch for chans in self.devices.channels.values() for ch in chans.values()]
        channels += [ch for d, chans in self._others.items() if d not in self.devices.channels for ch in chans.values()]
        view = yield from build_view_steps(
            Identity(
                settings.local_id,
                self.name,
                platform_item=link.section.platform_item,
                single_parent=settings.gb_version != "3.0",  # 2016 superiors (or unsaid) take one ParentID
            ),
            channels,
            online=online,
            rule=link.rule,
            overrides=link.overrides,
            previous=previous,
            changed=changed,
        )
        if feed is not None and feed.epoch == epoch:
            feed.built = view
            for device_id, change in changed.items():
                if feed.dirty.get(device_id) == change:  # not changed again while this was built
                    del feed.dirty[device_id]
        if target is None or target == view.local_id:
            return view
        return View(view.local_id, {i.device_id: i for i in view.scope(target) or ()})

    # --- other nodes' devices (issue 17) -----------------------------------------------------

    async def refresh_shared(self) -> None:
        """Read the devices and channels other nodes keep in the shared store; a device whose channels or
        state changed since the last read is a change for the superiors (NOTIFY to subscribers)."""
        store = self.devices.store
        try:
            stored = await store.load_channels()
            rows = await store.load_devices()
        except StoreError as exc:
            log.warning("shared catalog cannot be read; the last one kept", extra={"error": str(exc)})
            return
        others: dict[str, dict[str, Channel]] = {}
        for ch in stored:
            if ch.device_id not in self.devices.channels:
                others.setdefault(ch.device_id, {})[ch.channel_id] = ch
        online = {d.device_id for d in rows if d.state is DeviceState.ONLINE}
        for device_id in set(others) | set(self._others):
            if others.get(device_id) != self._others.get(device_id) or (device_id in online) != (
                device_id in self._others_online
            ):
                self._changed(device_id)
        self._others, self._others_online = others, online

    async def _keep_shared(self) -> None:
        while True:
            check_cancelled()  # a stop lost in the store's client (see stopping.py)
            await asyncio.sleep(SHARED_INTERVAL)
            await self.refresh_shared()

    def _channel_pairs(self) -> list[tuple[str, str]]:
        return [
            (cid, ch.device_id)
            for chans in self.devices.channels.values()
            for cid, ch in chans.items()
            if len(cid) == 20 and cid[10:13] not in ("215", "216")
        ]

    # --- Catalog query ----------------------------------------------------------------------

    def _on_query(self, msg: ManscdpRequest) -> None:
        event = msg.event
        tx = event.transaction
        assert tx is not None
        link = self.upstreams.superior(msg.sender, event.peer)
        if link is None:  # pragma: no cover - the role resolver said PLATFORM for a superior only
            self._answer(event, 403, "not a superior of ours")
            return
        name = link.machine.settings.name
        try:
            env = envelope(msg.root)
        except ManscdpError as exc:
            self.upstreams.count_request(name, "Catalog", "400")
            self._answer(event, 400, str(exc))
            return
        if env.root is not Root.QUERY:
            self.upstreams.count_request(name, "Catalog", "400")
            self._answer(event, 400, f"a Catalog {env.root.value} is not a query")
            return
        # the tree is built and encoded in steps (a big one takes 100s of ms): the transaction
        # absorbs the superior's retransmissions meanwhile
        self._tasks.spawn(self._answer_query(event, link, env))

    async def _answer_query(self, event: RequestReceived, link: Link, env: Envelope) -> None:
        name = link.machine.settings.name
        if self.shared:
            await self.refresh_shared()  # a query sees other nodes' devices as they are now
        items = (await self.view_async(link)).scope(env.device_id)
        if items is None:
            self.upstreams.count_request(name, "Catalog", "404")
            self._answer(event, 404, f"no catalog item {env.device_id} here")
            log.info("catalog query for an unknown ID", extra={"upstream": name, "target": env.device_id})
            return
        self._answer(event, 200)
        self.upstreams.count_request(name, "Catalog", "ok")
        parts = await _stepped(
            response_steps(
                items,
                sn=env.sn,
                device_id=env.device_id,
                batch=link.section.catalog_batch,
                charset=link.machine.settings.charset,
                limit=self._limit(link),
            )
        )
        self._skipped(link, parts)
        for under_way in self._answers:
            if under_way.owner == name and under_way.target == env.device_id:
                # the superior asks again (its sync timer ran out): it waits for this answer only,
                # and two answers paced side by side would each take twice as long
                under_way.stop(f"replaced by the query with SN {env.sn}")
        stream = _Stream(name, env.device_id)
        self._answers.add(stream)
        stream.push(list(zip(parts.bodies, parts.counts, strict=True)))
        log.info(
            "catalog query answered",
            extra={"upstream": name, "target": env.device_id, "sn": env.sn, "items": len(items),
                   "messages": len(parts.bodies)},
        )  # fmt: skip
        self._start(stream, link, lambda body: self._message(link, body), done=self._answers.discard)

    def _answer(self, event: RequestReceived, status: int, warning: str | None = None) -> None:
        assert event.transaction is not None
        response = make_response(event.request, status, to_tag=self.stack.endpoint.new_tag())
        if warning:
            response.headers.add("Warning", warning_header(warning))
        self.stack.respond(event.transaction, response)

    def _limit(self, link: Link) -> int:
        return body_limit(link.machine.peer.transport, self.stack.endpoint.limits.max_message_size)

    def _skipped(self, link: Link, parts: Parts) -> None:
        if parts.skipped:
            ids = [getattr(getattr(x, "item", x), "device_id", "") for x in parts.skipped]
            log.warning(
                "catalog items too big for any message to a superior skipped",
                extra={"upstream": link.machine.settings.name, "items": ids, "limit": self._limit(link)},
            )

    async def _message(self, link: Link, body: bytes) -> int | None:
        return await self._send(link.machine.message(body), link)

    async def _send(self, request: Request, link: Link, dialog: Dialog | None = None) -> int | None:
        """The final status, or ``None`` when nothing came (the caller logs what was lost)."""
        if not self.upstreams.may_send(link):
            return None  # this node may no longer hold the superior's lease: nothing goes upward
        try:
            peer = dialog.peer if dialog is not None else link.machine.peer
            response = await self.stack.request(request, peer, gate=self.upstreams.gate(link))
        except (SipTimeoutError, SipTransportError) as exc:
            log.debug(
                "superior did not take a catalog message",
                extra={"upstream": link.machine.settings.name, "method": request.method, "error": str(exc)},
            )
            return None
        return response.status

    # --- serial sending ---------------------------------------------------------------------

    def _start(
        self,
        stream: _Stream,
        link: Link,
        send: Callable[[bytes], Awaitable[int | None]],
        *,
        done: Callable[[_Stream], None] | None = None,
    ) -> None:
        if stream.task is None or stream.task.done():
            task = stream.task = asyncio.get_running_loop().create_task(self._drain(stream, link, send, done))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)

    async def _drain(
        self,
        stream: _Stream,
        link: Link,
        send: Callable[[bytes], Awaitable[int | None]],
        done: Callable[[_Stream], None] | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        pacer = stream.pacer
        try:
            while True:
                if pacer.ready:
                    body, count = stream.queue.popleft()
                    index = pacer.sent(loop.time())
                    self._tasks.spawn(self._one(stream, link, index, body, count, send))
                    continue
                if pacer.finished:
                    break
                stream.wake.clear()
                when = pacer.get_timer()
                try:
                    await asyncio.wait_for(stream.wake.wait(), None if when is None else max(0.0, when - loop.time()))
                except TimeoutError:
                    pass
                pacer.handle_timer(loop.time())
            if pacer.state is PacerState.STOPPED:
                stream.queue.clear()
                log.info(
                    "catalog messages to a superior stopped",
                    extra={"upstream": link.machine.settings.name, "reason": pacer.stop_reason,
                           "sent": pacer.next_index, "unsent": pacer.queued - pacer.next_index},
                )  # fmt: skip
        finally:
            if done is not None:
                done(stream)

    async def _one(
        self,
        stream: _Stream,
        link: Link,
        index: int,
        body: bytes,
        count: int,
        send: Callable[[bytes], Awaitable[int | None]],
    ) -> None:
        status = await send(body)
        if status is not None and status < 300:
            self._items[(link.machine.settings.name,)] += count
        elif status is None:
            # a constant message: the log's rate limit (logs.RATE_LIMIT) sums up a dead superior's flood
            log.warning(
                "catalog message to a superior lost",
                extra={"upstream": link.machine.settings.name, "items": count, "stream": stream.target or "NOTIFY"},
            )
        stream.pacer.receive(index, status)
        stream.wake.set()

    # --- SUBSCRIBE --------------------------------------------------------------------------

    def _on_subscribe(self, event: RequestReceived) -> Passed | None:
        req, tx = event.request, event.transaction
        assert tx is not None
        header = (req.headers.get("event") or "").strip()
        package = header.split(";", 1)[0].strip().lower()
        body: Envelope | None = None
        if req.body:
            try:
                body = envelope(parse_xml(req.body))
            except ManscdpError as exc:
                if package == "catalog":
                    self._answer(event, 400, str(exc))
                    return None
                return PASS
        if package != "catalog" and not (not package and body is not None and body.is_cmd(CmdType.CATALOG)):
            return PASS  # another package (Alarm, MobilePosition): someone else's
        link = self.upstreams.superior(from_user(req), event.peer)
        if link is None:
            self._answer(event, 403, "only a superior of ours may subscribe to our catalog")
            log.info(
                "catalog SUBSCRIBE from a stranger refused", extra={"from": from_user(req), "peer": str(event.peer)}
            )
            return None
        name = link.machine.settings.name
        feed = self.feeds[name]
        expires = self._expires(req)
        if expires is None:
            self.upstreams.count_request(name, "SUBSCRIBE", "400")
            self._answer(event, 400, "Expires is not a number")
            return None
        local_id = link.machine.settings.local_id
        target = (body.device_id if body is not None else "") or local_id
        # the tree is built in steps (the transaction absorbs retransmissions meanwhile)
        self._tasks.spawn(self._subscribe(event, feed, header or "Catalog", expires, target, body.sn if body else 0))
        return None

    async def _subscribe(
        self, event: RequestReceived, feed: _Feed, header: str, expires: int, target: str, sn: int
    ) -> None:
        req, tx = event.request, event.transaction
        assert tx is not None
        link = feed.link
        name = link.machine.settings.name
        view = await self.view_async(link, target)
        if target != view.local_id and not view.items:
            self.upstreams.count_request(name, "SUBSCRIBE", "404")
            self._answer(event, 404, f"no catalog item {target} here")
            return
        response = self._subscribe_response(event, link, header, expires, sn)
        self.upstreams.count_request(name, "SUBSCRIBE", "ok")
        if expires == 0:
            self.stack.respond(tx, response)
            return
        try:
            dialog = Dialog.uas(req, response, event.peer)
        except SipParseError as exc:
            self._answer(event, 400, exc.reason)
            return
        self.stack.respond(tx, response)
        if feed.subscription is not None:
            self._end(feed, "replaced by a new SUBSCRIBE")
        loop = asyncio.get_running_loop()
        sub = CatalogSubscription(dialog, header, target, loop.time() + expires)
        feed.subscription = sub
        self.stack.router.add_dialog(dialog.id, lambda ev: self._in_dialog(feed, sub, ev), owner="cascade-catalog")
        self._arm(feed, sub, expires)
        feed.shown = view
        log.info("superior subscribed to our catalog", extra={"upstream": name, "target": target, "expires": expires})
        changes = offline_changes(view)
        if changes:
            parts = await _stepped(self._notify_steps(feed, changes))
            if feed.subscription is sub:
                self._push_notifies(feed, parts, len(changes))

    def _expires(self, req: Request) -> int | None:
        text = (req.headers.get("expires") or "").strip()
        if not text:
            return DEFAULT_EXPIRES
        if not text.isdigit():
            return None
        return min(int(text), MAX_EXPIRES)

    def _subscribe_response(self, event: RequestReceived, link: Link, header: str, expires: int, sn: int) -> Response:
        s = link.machine.settings
        response = make_response(event.request, 200, to_tag=self.stack.endpoint.new_tag())
        response.headers.extend(
            (
                ("Contact", f"<{self.stack.contact(s.local_id, event.peer)}>"),
                ("Expires", str(expires)),
                ("Event", header),
                ("Content-Type", CONTENT_TYPE),
            )
        )
        response.body = encode(Root.RESPONSE, CmdType.CATALOG, sn, s.local_id, [("Result", "OK")], charset=s.charset)
        return response

    def _in_dialog(self, feed: _Feed, sub: CatalogSubscription, event: RequestReceived) -> None:
        req, tx = event.request, event.transaction
        if tx is None:
            return
        try:
            sub.dialog.receive_request(req)
        except DialogError as exc:
            self._answer(event, exc.status, exc.reason)
            return
        if req.method != "SUBSCRIBE":
            self._answer(event, 405)
            return
        link = feed.link
        expires = self._expires(req)
        if expires is None:
            self._answer(event, 400, "Expires is not a number")
            return
        self.stack.respond(tx, self._subscribe_response(event, link, sub.event, expires, 0))
        self.upstreams.count_request(link.machine.settings.name, "SUBSCRIBE", "ok")
        if expires == 0:
            self._end(feed, "unsubscribed")
            return
        sub.expires_at = asyncio.get_running_loop().time() + expires
        self._arm(feed, sub, expires)

    def _arm(self, feed: _Feed, sub: CatalogSubscription, expires: int) -> None:
        if sub.timer is not None:
            sub.timer.cancel()
        sub.timer = asyncio.get_running_loop().call_later(expires, self._expired, feed, sub)

    def _expired(self, feed: _Feed, sub: CatalogSubscription) -> None:
        sub.timer = None
        if feed.subscription is sub:
            self._end(feed, "not refreshed")

    def _end(self, feed: _Feed, reason: str) -> None:
        sub = feed.subscription
        if sub is None:
            return
        feed.subscription = None
        if sub.timer is not None:
            sub.timer.cancel()
        self.stack.router.remove_dialog(sub.dialog.id)
        if sub.dialog.state is not DialogState.TERMINATED:
            sub.dialog.terminate()
        feed.notifies.stop(reason)
        feed.shown = self.view(feed.link) if feed.link.section.catalog_push else None
        log.info("catalog subscription ended", extra={"upstream": feed.link.machine.settings.name, "reason": reason})

    def _on_lost(self, name: str, reason: str) -> None:
        feed = self.feeds.get(name)
        if feed is None:
            return
        self._end(feed, f"superior lost: {reason}")
        feed.notifies.stop(f"superior lost: {reason}")
        for stream in list(self._answers):
            if stream.owner == name:
                stream.stop(f"superior lost: {reason}")

    # --- changes ----------------------------------------------------------------------------

    def _changed(self, device_id: str) -> None:
        self._change_count += 1
        for feed in self.feeds.values():
            if device_id:
                feed.dirty[device_id] = self._change_count
            else:  # a share or override: everything may look different
                feed.built = None
                feed.dirty.clear()
                feed.epoch += 1
        if self._pending is None and any(f.subscription or f.link.section.catalog_push for f in self.feeds.values()):
            self._pending = asyncio.get_running_loop().call_later(CHANGE_DELAY, self._flush)

    def _flush(self) -> None:
        self._pending = None
        if self._flushing is not None and not self._flushing.done():
            self._again = True  # the running flush goes once more when it is done
            return
        self._flushing = asyncio.get_running_loop().create_task(self._flush_all())

    async def _flush_all(self) -> None:
        # one flush at a time, each feed in steps; changes meanwhile make it go once more, so
        # every superior ends up told the last state
        while True:
            self._again = False
            for feed in self.feeds.values():
                await self._flush_feed(feed)
            if not self._again:
                return

    async def _flush_feed(self, feed: _Feed) -> None:
        sub = feed.subscription
        pushing = sub is None and feed.link.section.catalog_push
        if sub is None and not pushing:
            return
        new = await self.view_async(feed.link, sub.target if sub is not None else None)
        if feed.subscription is not sub:
            return  # subscribed, ended or replaced meanwhile: that set what it was shown
        old, feed.shown = feed.shown, new
        if old is None or (pushing and not feed.link.machine.registered):
            return  # it learns the state from its next query
        changes = await _stepped(diff_steps(old, new))
        if changes:
            parts = await _stepped(self._notify_steps(feed, changes))
            self._push_notifies(feed, parts, len(changes))

    def _notify_steps(self, feed: _Feed, changes: list[Change]) -> Steps[Parts]:
        link = feed.link
        s = link.machine.settings
        return notify_steps(
            changes,
            next_sn=feed.next_sn,
            device_id=s.local_id,
            batch=link.section.catalog_batch,
            charset=s.charset,
            limit=self._limit(link),
        )

    def _push_notifies(self, feed: _Feed, parts: Parts, events: int) -> None:
        link = feed.link
        s = link.machine.settings
        self._skipped(link, parts)
        if feed.notifies.pacer.state is PacerState.STOPPED:
            feed.notifies = _Stream(s.name)
        feed.notifies.push(list(zip(parts.bodies, parts.counts, strict=True)))
        log.info("catalog changes for a superior", extra={"upstream": s.name, "events": events})
        self._start(feed.notifies, link, lambda body: self._notify_one(feed, body))

    async def _notify_one(self, feed: _Feed, body: bytes) -> int | None:
        link = feed.link
        s = link.machine.settings
        sub = feed.subscription
        loop = asyncio.get_running_loop()
        if sub is not None:
            dialog = sub.dialog
            state = f"active;expires={max(0, round(sub.expires_at - loop.time()))}"
            event_header = sub.event
        else:
            dialog = self._push_dialog(feed)
            state = "active"
            event_header = "Catalog"
        if dialog.terminated:
            return None
        request = dialog.request(
            "NOTIFY",
            contact=self.stack.contact(s.local_id, dialog.peer),
            extra=[("Event", event_header), ("Subscription-State", state)],
            content_type=CONTENT_TYPE,
            body=body,
        )
        status = await self._send(request, link, dialog)
        if status is not None and status < 300:
            self._notifies[(s.name,)] += 1
        elif status is not None and sub is not None and feed.subscription is sub:
            self._end(feed, f"NOTIFY answered {status}")  # RFC 6665 §4.2.2: the subscriber is gone
        return status

    def _push_dialog(self, feed: _Feed) -> Dialog:
        # wvp's "auto push": NOTIFYs in a dialog the superior never made (one per superior and
        # run; the To tag is ours too, as wvp's fake subscription has one)
        m = feed.link.machine
        if feed.push_dialog is None or feed.push_dialog.peer != m.peer:
            s = m.settings
            ep = self.stack.endpoint
            target = f"sip:{m.server_id}@{s.domain}"
            feed.push_dialog = Dialog(
                call_id=ep.new_call_id(),
                local_tag=ep.new_tag(),
                remote_tag=ep.new_tag(),
                local_uri=f"sip:{s.local_id}@{s.local_domain}",
                remote_uri=target,
                remote_target=target,
                peer=m.peer,
                state=DialogState.CONFIRMED,
                is_uac=False,
                local_cseq=int(time.time()) % 100_000,
            )
        return feed.push_dialog
