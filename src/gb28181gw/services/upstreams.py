"""Upward registration to every configured superior (cascade, PROTOCOL.md §9.2): the shell around :mod:`gb28181gw.gb.upstream`.

One :class:`~gb28181gw.gb.upstream.Upstream` machine per ``[[upstream]]`` table, each
independent of the others. This module only pumps them: it sends the requests a machine
queues through the :class:`~gb28181gw.net.stack.SipStack` (which owns retransmission and
Timer F), feeds back each final response or failure with the loop's time, re-arms one
``call_at`` per machine at its :meth:`~gb28181gw.gb.upstream.Upstream.get_timer`, and turns
the machine's events into log lines, metrics and listener calls. Every protocol decision
(challenge, refresh, back-off, keepalive misses, redirect) is the machine's.

A configured superior's MESSAGEs are claimed as :attr:`~gb28181gw.net.router.Role.PLATFORM`
(when they come from its address), so that they are not told to register (404) like an
unknown device; its OPTIONS probes get the router's 200 (PROTOCOL.md §11.6: superiors drop a
platform that leaves them unanswered).

:meth:`UpstreamService.on_lost` tells the stream side when a superior is lost (keepalives
unanswered, refresh refused, shutdown): what is served to it must be released.

**Several nodes** (issue 17: a Redis store, ``leases`` given): a superior must see one
registration, so each link runs only while this node holds ``lease:upstream:<name>``
(:mod:`gb28181gw.gb.lease`; Redis side :mod:`gb28181gw.store.leases`). Gaining it starts a
fresh registration (a new machine: new Call-ID, tag and CSeq); losing it, or fencing itself
because renewals went unconfirmed, stops the link without an Expires: 0 (which would take the
new holder's registration away). A renewal that finds the lease missing (Redis restarted
empty) is not a loss: the lease machine takes it again at once and, if nobody else did first,
reports :class:`~gb28181gw.gb.lease.Retaken`: the link, its dialogs and streams carry on. Every request upward first asks the lease
(:meth:`~gb28181gw.gb.lease.Lease.may_send` with the loop's time), so that a process resumed
after a pause sends nothing on a lease that may have expired meanwhile. On a clean stop the
holder unregisters, then releases the lease: another node takes over at its next try (a third
of the lease) rather than when the lease would have expired.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gb28181gw.audit import Action
from gb28181gw.config import Config, UpstreamSection
from gb28181gw.errors import SipTimeoutError, SipTransportError, StoreError, UpstreamError
from gb28181gw.gb.lease import (
    RENEW_FRACTION,
    Fenced,
    Gained,
    Lease,
    LeaseEvent,
    LeaseLost,
    LeaseOp,
    LeaseRequest,
    LeaseSettings,
    Released,
    Retaken,
    epoch_of,
    holder_of,
)
from gb28181gw.gb.model import Override, ShareEntry
from gb28181gw.gb.share import ShareRule
from gb28181gw.gb.upstream import (
    KeepaliveAnswered,
    KeepaliveMissed,
    Lost,
    Outgoing,
    Redirected,
    Registered,
    RegisterFailed,
    Stopped,
    Upstream,
    UpstreamSettings,
    UpstreamState,
)
from gb28181gw.ids import is_id_prefix
from gb28181gw.metrics import (
    UPSTREAM_KEEPALIVE_FAILURES,
    UPSTREAM_LEASE_CHANGES,
    UPSTREAM_LEASE_HELD,
    UPSTREAM_REGISTER_FAILURES,
    UPSTREAM_REGISTERED,
    UPSTREAM_REQUESTS,
    Metrics,
)
from gb28181gw.net.router import Role
from gb28181gw.net.stack import SipStack
from gb28181gw.net.tasks import TaskSet
from gb28181gw.sip.peer import Peer
from gb28181gw.store.base import LEASE_DEFERRED as DEFERRED
from gb28181gw.store.base import Store

from .audit import AuditService, audited

log = logging.getLogger("gb28181gw.upstream")

#: Seconds a clean shutdown waits for the superiors to confirm our Expires: 0.
UNREGISTER_TIMEOUT = 5.0

#: Seconds a clean shutdown waits for Redis to confirm the release of the superiors' leases.
RELEASE_TIMEOUT = 2.0

#: Listener told that a superior was lost: (its name, why).
LostListener = Callable[[str, str], None]
#: Listener told that what a superior may see changed by the operator's hand (its name).
ViewListener = Callable[[str], None]


class LeaseKeeper(Protocol):
    """Where leases are kept (:class:`gb28181gw.store.leases.RedisLeases`); each call raises StoreError when it cannot."""

    async def acquire(
        self, name: str, node: str, token: str, ttl: float, *, known_epoch: int = 0, defer: bool = False
    ) -> tuple[int, str, float | None]: ...

    async def renew(self, name: str, token: str, ttl: float) -> str | None: ...

    async def release(self, name: str, token: str) -> bool: ...


def upstream_settings(config: Config, up: UpstreamSection) -> UpstreamSettings:
    """The machine's view of one ``[[upstream]]`` table, derived values worked out."""
    return UpstreamSettings(
        name=up.name,
        server_id=up.id,
        domain=config.upstream_domain(up),
        peer=Peer(up.transport.upper(), up.host, up.port),
        local_id=config.upstream_local_id(up),
        local_domain=config.upstream_local_domain(up),
        username=config.upstream_username(up),
        password=up.password,
        expires=up.expires,
        keepalive_interval=float(up.keepalive_interval),
        keepalive_misses=up.keepalive_misses,
        retry_interval=up.retry_interval,
        retry_max=up.retry_max,
        charset=up.charset,
        gb_version=up.gb_version,
        user_agent=config.gateway.user_agent,
    )


@dataclass(eq=False, slots=True)
class Link:
    """One superior: its machine and what the shell keeps about it.

    Attributes:
        machine: the registration state machine.
        section: its ``[[upstream]]`` table (charset, catalog_batch, catalog_push …).
        rule: what it may see (:mod:`gb28181gw.gb.share`): the configured ``share`` with the
            operator's stored share/unshare entries applied.
        overrides: what it is told of a channel instead of what the device reported, by channel ID.
        timer: the armed ``call_at``, if any.
        last_register / last_keepalive: wall-clock epoch of the last success (``None``: never).
        register_failures / keepalive_failures: totals since start.
        last_error: why the last attempt failed (``""`` once registered).
        lease: this node's hold on the superior's lease (``None``: a single node, no lease).
        lease_timer: the lease machine's armed ``call_at``.
        released: set once the lease machine stopped (on shutdown).
    """

    machine: Upstream
    section: UpstreamSection
    rule: ShareRule
    overrides: dict[str, Override] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    last_register: float | None = None
    last_keepalive: float | None = None
    register_failures: int = 0
    keepalive_failures: int = 0
    last_error: str = ""
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    lease: Lease | None = None
    lease_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    released: asyncio.Event = field(default_factory=asyncio.Event)


class UpstreamService:
    """Keeps this gateway registered with every configured superior.

    Args:
        stack: the SIP stack.
        config: the configuration (its ``upstreams`` and our identity).
        metrics: where the per-superior families go.
        zone: the site's time zone (a superior's Date carries no zone).
        rng: jitter source in [0, 1) (tests pass a fixed one).
        store: where the operator's shares and overrides are kept (``None``: in memory only).
        audit: where share and override changes are recorded.
        leases: where superiors' leases are kept (several nodes on Redis); ``None``: this node
            registers with every superior, no lease.
    """

    def __init__(
        self,
        stack: SipStack,
        config: Config,
        *,
        metrics: Metrics,
        zone: _dt.tzinfo = _dt.UTC,
        rng: Callable[[], float] = random.random,
        store: Store | None = None,
        audit: AuditService | None = None,
        leases: LeaseKeeper | None = None,
    ) -> None:
        self.audit = audit
        self._config = config
        self._zone = zone
        self._rng = rng
        self._leases = leases
        self._stopping = False
        self.node = config.node.id
        self.stack = stack
        self.store = store
        self._view_listeners: list[ViewListener] = []
        self._channel_ids: Callable[[], Iterable[tuple[str, str]]] = lambda: ()
        self.links: dict[str, Link] = {}
        self._tasks = TaskSet()
        self._lost: list[LostListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        for up in config.upstreams:
            link = self.links[up.name] = Link(self._machine(up), up, ShareRule.from_config(up.share))
            if leases is not None:
                settings = LeaseSettings(f"upstream:{up.name}", config.node.id, config.node.lease_seconds)
                link.lease = Lease(settings, token=secrets.token_hex)
        self._lease_changes = metrics.counter(UPSTREAM_LEASE_CHANGES)
        metrics.labeled_gauge(
            UPSTREAM_LEASE_HELD,
            lambda: {(n,): float(k.lease.held) for n, k in self.links.items() if k.lease is not None},
        )
        self._register_failures = metrics.counter(UPSTREAM_REGISTER_FAILURES)
        self._keepalive_failures = metrics.counter(UPSTREAM_KEEPALIVE_FAILURES)
        self._requests = metrics.counter(UPSTREAM_REQUESTS)
        self._streams_served: Callable[[str], int] = lambda name: 0
        metrics.labeled_gauge(
            UPSTREAM_REGISTERED,
            lambda: {(name,): float(link.machine.registered) for name, link in self.links.items()},
        )
        if self.links:
            # with no superior configured (the links are fixed at start-up) _role answers None to
            # every sender: then it is not asked, an interpreted call per MESSAGE (each keepalive)
            stack.router.add_role_resolver(self._role, owner="upstreams")

    def _machine(self, up: UpstreamSection) -> Upstream:
        """A fresh registration machine: its own Call-ID, tag and CSeq."""
        return Upstream(upstream_settings(self._config, up), token=secrets.token_hex, random=self._rng, zone=self._zone)

    def on_lost(self, listener: LostListener) -> None:
        """Be told when a superior is lost (keepalives unanswered, refresh refused, shutdown)."""
        self._lost.append(listener)

    def _role(self, sender: str, peer: Peer) -> Role | None:
        # asked of every MESSAGE (each keepalive too): one pass over the links, as superior() and
        # then the refusal below would make it
        refused = False
        for link in self.links.values():
            m = link.machine
            if sender == m.server_id:
                if peer.host == m.peer.host:
                    return Role.PLATFORM
                refused = True
        # a superior's ID from another address: not our superior, whatever it claims (403)
        return Role.REFUSED if refused else None

    def superior(self, sender: str, peer: Peer) -> Link | None:
        """The superior a request comes from: its ID (From user) at its configured (or redirected) host."""
        for link in self.links.values():
            m = link.machine
            if sender == m.server_id and peer.host == m.peer.host:
                return link
        return None

    def count_streams(self, served: Callable[[str], int]) -> None:
        """Say how many streams are served to a superior now (the INVITE side knows; listings show it)."""
        self._streams_served = served

    def count_request(self, name: str, request: str, result: str) -> None:
        """Count a request from superior ``name`` (a method or CmdType) and how it ended (``ok``, ``403`` …)."""
        self._requests[(name, request, result)] += 1

    def may_see(self, name: str, *ids: str) -> bool:
        """Whether superior ``name`` may see the item with ``ids`` (a channel's and its device's)."""
        link = self.links.get(name)
        return link is not None and link.rule.allows(*ids)

    # --- what each superior sees -------------------------------------------------------------

    def on_view_changed(self, listener: ViewListener) -> None:
        """Be told when the operator changes what a superior sees (share, unshare, override)."""
        self._view_listeners.append(listener)

    def set_channel_source(self, source: Callable[[], Iterable[tuple[str, str]]]) -> None:
        """Where the (channel ID, device ID) pairs counted as "channels shared" come from."""
        self._channel_ids = source

    def channels_shared(self, name: str) -> int:
        """How many channels (no regions, groups or organisations) superior ``name`` may see."""
        link = self.links.get(name)
        return 0 if link is None else sum(1 for c, d in self._channel_ids() if link.rule.allows(c, d))

    def link(self, name: str) -> Link:
        """The superior called ``name``.

        Raises:
            UpstreamError: there is none (404).
        """
        link = self.links.get(name)
        if link is None:
            known = ", ".join(sorted(self.links)) or "none configured"
            raise UpstreamError(
                f"no superior named {name!r}",
                UpstreamError.NOT_FOUND,
                f"superiors are the [[upstream]] tables of the configuration ({known}); see `gb28181gw upstreams`",
            )
        return link

    async def share(self, name: str, entries: Iterable[str], *, shared: bool = True) -> ShareRule:
        """Share ``entries`` (device IDs, channel IDs or ID prefixes) with superior ``name``, or take them back.

        Kept in the store, so that it outlasts a restart; the superior is sent the NOTIFYs it implies.

        Raises:
            UpstreamError: no such superior (404) or an entry that is no ID or prefix (400).
        """
        wanted = list(dict.fromkeys(entries))
        with audited(self.audit, Action.SHARE_CHANGE, name, {"entries": wanted, "shared": shared}):
            link = self.link(name)
            bad = [e for e in wanted if not is_id_prefix(e)]
            if bad or not wanted:
                raise UpstreamError(
                    f"not a device ID, channel ID or ID prefix: {', '.join(bad)}" if bad else "no ID given",
                    UpstreamError.BAD_VALUE,
                    "IDs and prefixes are 1-20 digits (a 20-digit ID, or e.g. 340202 for a district)",
                )
            if self.store is not None:
                await self.store.save_shares([ShareEntry(name, e, shared) for e in wanted])
            link.rule = link.rule.share(wanted) if shared else link.rule.unshare(wanted)
            log.info(
                "shared with superior" if shared else "unshared from superior",
                extra={"upstream": name, "entries": wanted, "rule": link.rule.describe()},
            )
            self._view_changed(name)
            return link.rule

    async def set_override(self, override: Override) -> Override:
        """Tell superior ``override.upstream`` a channel's name, civil code or parent instead of the reported ones.

        Raises:
            UpstreamError: no such superior (404), or a bad channel ID, civil code or parent (400).
        """
        asked = {"upstream": override.upstream, **override.to_dict()}
        with audited(self.audit, Action.OVERRIDE_SET, override.channel_id, asked):
            link = self.link(override.upstream)
            problems = []
            if not _digits(override.channel_id, (20,)):
                problems.append(f"channel {override.channel_id!r} is not a 20-digit ID")
            if override.civil_code and not _digits(override.civil_code, (2, 4, 6, 8)):
                problems.append(f"civil code {override.civil_code!r} is not 2, 4, 6 or 8 digits")
            if any(_not_xml(c) for c in override.name):
                # the superior's parser would drop the whole catalog part the name is written into
                problems.append(f"name {override.name!r} has characters XML cannot carry (control characters)")
            if override.parent_id and not all(_digits(p, (20,)) for p in override.parent_id.split("/")):
                problems.append(f"parent {override.parent_id!r} is not a 20-digit ID (or several joined by /)")
            if problems:
                raise UpstreamError("; ".join(problems), UpstreamError.BAD_VALUE)
            if not (override.name or override.civil_code or override.parent_id):
                raise UpstreamError(
                    "an override needs a name, a civil code or a parent", UpstreamError.BAD_VALUE, "clear it instead"
                )
            if self.store is not None:
                await self.store.save_override(override)
            link.overrides[override.channel_id] = override
            log.info("override set", extra={"upstream": override.upstream, **override.to_dict()})
            self._view_changed(override.upstream)
            return override

    async def clear_override(self, name: str, channel_id: str) -> bool:
        """Tell superior ``name`` what the device reported of ``channel_id`` again; whether there was an override.

        Raises:
            UpstreamError: no such superior (404).
        """
        with audited(self.audit, Action.OVERRIDE_REMOVE, channel_id, {"upstream": name}) as done:
            link = self.link(name)
            had = link.overrides.pop(channel_id, None) is not None
            if self.store is not None:
                had = await self.store.delete_override(name, channel_id) or had
            if had:
                log.info("override cleared", extra={"upstream": name, "channel": channel_id})
                self._view_changed(name)
            done["had"] = had
            return had

    def _view_changed(self, name: str) -> None:
        for listener in self._view_listeners:
            try:
                listener(name)
            except Exception:
                log.exception("view listener failed", extra={"upstream": name})

    async def _load(self) -> None:
        """Apply the stored shares and overrides (of superiors still configured)."""
        if self.store is None:
            return
        shares: dict[str, dict[bool, list[str]]] = {}
        for entry in await self.store.load_shares():
            shares.setdefault(entry.upstream, {}).setdefault(entry.shared, []).append(entry.entry)
        for o in await self.store.load_overrides():
            if o.upstream in self.links:
                self.links[o.upstream].overrides[o.channel_id] = o
        for name, by_kind in shares.items():
            link = self.links.get(name)
            if link is not None:
                link.rule = link.rule.share(by_kind.get(True, ())).unshare(by_kind.get(False, ()))

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Apply the stored shares and overrides, then send the first REGISTER to every superior
        (the stack must be listening)."""
        self._loop = asyncio.get_running_loop()
        await self._load()
        for link in self.links.values():
            if link.lease is not None:
                # several nodes: register only once this node holds the superior's lease
                link.lease.start(self._loop.time())
                self._lease_pump(link)
            else:
                self._begin(link)

    def _begin(self, link: Link) -> None:
        assert self._loop is not None
        s = link.machine.settings
        log.info(
            "registering upward",
            extra={"upstream": s.name, "server": s.server_id, "peer": str(s.peer), "local_id": s.local_id},
        )
        self._locate(link.machine)
        link.machine.start(self._loop.time())
        self._pump(link)

    async def stop(self, timeout: float = UNREGISTER_TIMEOUT) -> None:
        """Unregister from every superior we are registered with (Expires: 0), waiting at most ``timeout``."""
        loop = self._loop
        if loop is None:
            return
        self._stopping = True  # a lease gained from now on is released, not registered with
        for link in self.links.values():
            self._locate(link.machine)
            link.machine.stop(loop.time())
            self._pump(link)
        waits = [asyncio.create_task(link.stopped.wait()) for link in self.links.values()]
        if waits:
            done, pending = await asyncio.wait(waits, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("superiors did not confirm our unregistration in time", extra={"waiting": len(pending)})
        # unregistered (or not holding): let another node take over at once, not after the TTL
        leased = [link for link in self.links.values() if link.lease is not None]
        for link in leased:
            assert link.lease is not None
            link.lease.stop(loop.time())
            self._lease_pump(link)
        if leased:
            waits = [asyncio.create_task(link.released.wait()) for link in leased]
            _, pending = await asyncio.wait(waits, timeout=RELEASE_TIMEOUT)
            for task in pending:
                task.cancel()
        for link in self.links.values():
            for handle in (link.timer, link.lease_timer):
                if handle is not None:
                    handle.cancel()
            link.timer = link.lease_timer = None
        self._tasks.cancel()

    # --- pumping ---------------------------------------------------------------------------

    def _pump(self, link: Link) -> None:
        """Send what the machine queued, handle its events, re-arm its timer."""
        loop = self._loop
        assert loop is not None
        m = link.machine
        for out in m.requests_to_send():
            self._tasks.spawn(self._send(link, out))
        while (event := m.next_event()) is not None:
            self._on_event(link, event)
        if link.timer is not None:
            link.timer.cancel()
            link.timer = None
        when = m.get_timer()
        if when is not None:
            link.timer = loop.call_at(when, self._on_timer, link)

    def _locate(self, m: Upstream) -> None:
        # before every input: a REGISTER it queues names, as Contact, the address the superior
        # reaches us at (SipStack.local_address, the one convention; a redirect changes the peer)
        m.set_local_address(*self.stack.local_address(m.peer))

    def _on_timer(self, link: Link) -> None:
        link.timer = None
        assert self._loop is not None
        m = link.machine
        self._locate(m)
        m.handle_timer(self._loop.time())
        self._pump(link)

    async def _send(self, link: Link, out: Outgoing) -> None:
        assert self._loop is not None
        m = link.machine
        if link.lease is not None and not self._may_send(link):
            return  # not (or no longer surely) the holder: nothing goes upward; the machine is abandoned
        try:
            response = await self.stack.request(out.request, out.peer, gate=self._gate(link, m))
        except (SipTimeoutError, SipTransportError) as exc:
            self._locate(m)
            m.receive_failure(out.ref, str(exc), self._loop.time())
        else:
            self._locate(m)
            m.receive_response(out.ref, response, self._loop.time(), wall=time.time())
        self._pump(link)

    # --- the superior's lease (several nodes) -----------------------------------------------

    def _may_send(self, link: Link) -> bool:
        """Whether this node may still send upward to ``link``'s superior (the clock checked now)."""
        assert self._loop is not None and link.lease is not None
        ok = link.lease.may_send(self._loop.time())
        if not ok:
            self._lease_pump(link)  # an overdue fence just ran: stop the link
        return ok

    def may_send(self, link: Link) -> bool:
        """Whether anything may go to ``link``'s superior now (always, without a lease): every
        service sending upward asks first, then passes :meth:`gate` to the stack. After a pause
        a device's alarm (socket input) runs before any timer, the lease's fence included."""
        return link.lease is None or self._may_send(link)

    def gate(self, link: Link) -> Callable[[float], bool] | None:
        """The retransmission gate of a request to ``link``'s superior (see :meth:`_gate`)."""
        return self._gate(link, link.machine)

    def _gate(self, link: Link, machine: Upstream) -> Callable[[float], bool] | None:
        """What the endpoint asks before retransmitting ``machine``'s request: still its link's
        machine, and the lease still surely ours. After a pause the retransmission timer may run
        before the lease's fence timer: the fence runs here first (issue 17: a resumed holder
        sends nothing upward)."""
        lease = link.lease
        if lease is None:
            return None

        def gate(now: float) -> bool:
            if link.machine is machine and lease.may_send(now):
                return True
            assert self._loop is not None
            self._loop.call_soon(self._lease_pump, link)  # a fence that just ran stops the link
            return False

        return gate

    def _lease_pump(self, link: Link) -> None:
        """Send what the lease machine queued, handle its events, re-arm its timer."""
        loop = self._loop
        lease = link.lease
        assert loop is not None and lease is not None
        for request in lease.requests_to_send():
            self._tasks.spawn(self._lease_op(link, request))
        while (event := lease.next_event()) is not None:
            self._on_lease_event(link, event)
        if link.lease_timer is not None:
            link.lease_timer.cancel()
            link.lease_timer = None
        when = lease.get_timer()
        if when is not None:
            link.lease_timer = loop.call_at(when, self._on_lease_timer, link)

    def _on_lease_timer(self, link: Link) -> None:
        assert self._loop is not None and link.lease is not None
        link.lease_timer = None
        link.lease.handle_timer(self._loop.time())
        self._lease_pump(link)

    async def _lease_op(self, link: Link, request: LeaseRequest) -> None:
        loop, lease, keeper = self._loop, link.lease, self._leases
        assert loop is not None and lease is not None and keeper is not None
        # an answer later than this is no use: the machine has asked again or fenced itself meanwhile
        timeout = request.ttl * RENEW_FRACTION
        try:
            if request.op in (LeaseOp.ACQUIRE, LeaseOp.RETAKE):
                taken = keeper.acquire(
                    request.name, request.node, request.token, request.ttl,
                    known_epoch=request.known_epoch, defer=request.defer,
                )  # fmt: skip
                epoch, value, left = await asyncio.wait_for(taken, timeout)
                if epoch == DEFERRED:
                    lease.vacant(request.ref, loop.time())
                elif epoch:
                    lease.taken(request.ref, epoch, loop.time())
                else:
                    lease.busy(request.ref, holder_of(value), left, loop.time(), epoch=epoch_of(value))
            elif request.op is LeaseOp.RENEW:
                found = await asyncio.wait_for(keeper.renew(request.name, request.token, request.ttl), timeout)
                if found is None:
                    lease.renewed(request.ref, loop.time())
                elif not found:
                    lease.missing(request.ref, loop.time())  # Redis lost it: taken again at once
                else:
                    lease.gone(request.ref, holder_of(found), loop.time())
            else:
                await asyncio.wait_for(keeper.release(request.name, request.token), timeout)
                lease.released(request.ref, loop.time())
        except (StoreError, TimeoutError) as exc:
            log.debug("lease request failed", extra={"upstream": link.section.name, "op": request.op.value,
                                                     "error": str(exc) or "timeout"})  # fmt: skip
            lease.failed(request.ref, loop.time())
        self._lease_pump(link)

    def _on_lease_event(self, link: Link, event: LeaseEvent) -> None:
        assert self._loop is not None
        name = link.section.name
        if isinstance(event, Gained):
            self._lease_changes[(name, "gained")] += 1
            if self._stopping:
                return  # shutting down: stop() releases it
            log.info(
                "took the superior's lease: this node registers upward",
                extra={"upstream": name, "node": self.node, "epoch": event.epoch},
            )
            self._abandon(link)  # (stopped already, unless a bug left it running)
            link.machine = self._machine(link.section)  # a fresh registration: a new Call-ID
            link.stopped = asyncio.Event()
            self._begin(link)
        elif isinstance(event, Retaken):
            # Redis lost the lease (restarted empty) while it was ours, unbroken, and we took it
            # again before anyone else: the superior saw nothing change, so the registration,
            # its dialogs and the streams served to it all carry on
            self._lease_changes[(name, "retaken")] += 1
            log.warning(
                "the superior's lease was missing from Redis: taken again, the registration kept",
                extra={"upstream": name, "node": self.node, "epoch": event.epoch},
            )
        elif isinstance(event, Fenced):
            self._lease_changes[(name, "fenced")] += 1
            log.warning(
                "the superior's lease went unconfirmed: this node stops sending upward",
                extra={"upstream": name, "node": self.node, "unconfirmed_for": round(event.unconfirmed_for, 3)},
            )
            self._abandon(link)
        elif isinstance(event, LeaseLost):
            self._lease_changes[(name, "lost")] += 1
            log.warning(
                "the superior's lease is held by another node",
                extra={"upstream": name, "node": self.node, "holder": event.holder or "nobody"},
            )
            self._abandon(link)
        elif isinstance(event, Released):
            self._lease_changes[(name, "released")] += 1
            log.info("released the superior's lease", extra={"upstream": name, "node": self.node})
            link.released.set()

    def _abandon(self, link: Link) -> None:
        """Stop ``link``'s machine without a word upward (its Lost and Stopped are handled)."""
        assert self._loop is not None
        if link.machine.state not in (UpstreamState.IDLE, UpstreamState.STOPPED):
            link.machine.abandon(self._loop.time())
            self._pump(link)

    # --- events ----------------------------------------------------------------------------

    def _on_event(self, link: Link, event: object) -> None:
        name = link.machine.settings.name
        if isinstance(event, Registered):
            link.last_register = time.time()
            link.last_error = ""
            extra: dict[str, Any] = {"upstream": name, "expires": event.expires, "peer": str(event.peer)}
            if event.clock_offset is not None:
                extra["clock_offset"] = round(event.clock_offset, 3)
            if event.refreshed:
                log.debug("registration refreshed", extra=extra)
            else:
                log.info("registered upward", extra=extra)
            if event.clock_offset is not None and abs(event.clock_offset) >= 1.0:
                log.warning(
                    "our clock differs from the superior's",
                    extra={"upstream": name, "clock_offset": round(event.clock_offset, 3)},
                )
        elif isinstance(event, RegisterFailed):
            link.register_failures += 1
            link.last_error = event.detail
            self._register_failures[(name, event.reason.value)] += 1
            log.warning(
                "upward registration failed",
                extra={
                    "upstream": name,
                    "reason": event.reason.value,
                    "status": event.status,
                    "detail": event.detail,
                    "failures": event.failures,
                    "retry_in": round(event.retry_in, 1),
                },
            )
        elif isinstance(event, KeepaliveAnswered):
            link.last_keepalive = time.time()
        elif isinstance(event, KeepaliveMissed):
            link.keepalive_failures += 1
            self._keepalive_failures[(name,)] += 1
            log.info("keepalive unanswered", extra={"upstream": name, "misses": event.misses, "detail": event.detail})
        elif isinstance(event, Lost):
            log.warning("superior lost", extra={"upstream": name, "reason": event.reason})
            for listener in self._lost:
                try:
                    listener(name, event.reason)
                except Exception:
                    log.exception("superior-lost listener failed", extra={"upstream": name})
        elif isinstance(event, Redirected):
            log.info(
                "registration redirected", extra={"upstream": name, "peer": str(event.peer), "server": event.server_id}
            )
        elif isinstance(event, Stopped):
            log.info(
                "unregistered upward" if event.unregistered else "upward registration stopped", extra={"upstream": name}
            )
            link.stopped.set()

    # --- what the operator sees ------------------------------------------------------------

    @staticmethod
    def _state_name(link: Link) -> str:
        m = link.machine
        if link.lease is not None and not link.lease.held and m.state in (UpstreamState.IDLE, UpstreamState.STOPPED):
            return "standby"  # another node holds the superior's lease (or Redis cannot say)
        return _STATE_NAMES[m.state]

    def listing(self) -> list[dict[str, Any]]:
        """Every superior as ``gb28181gw upstreams`` and ``GET /api/v1/upstreams`` show it."""
        rows = []
        for name, link in self.links.items():
            m = link.machine
            s = m.settings
            rows.append(
                {
                    "name": name,
                    "id": m.server_id,
                    "address": f"{m.peer.transport.lower()}:{m.peer.host}:{m.peer.port}",
                    "local_id": s.local_id,
                    "state": self._state_name(link),
                    "registered": m.registered,
                    "expires": m.granted if m.registered else None,
                    "last_register": link.last_register,
                    "last_keepalive": link.last_keepalive,
                    "clock_offset": None if m.clock_offset is None else round(m.clock_offset, 3),
                    "register_failures": link.register_failures,
                    "keepalive_failures": link.keepalive_failures,
                    "failures_in_a_row": m.failures,
                    "last_error": link.last_error,
                    "share": link.rule.describe(),
                    "channels_shared": self.channels_shared(name),
                    "overrides": len(link.overrides),
                    "streams_served": self._streams_served(name),
                    "holder": None if link.lease is None else (link.lease.holder or None),
                }
            )
        return rows


def _not_xml(c: str) -> bool:
    # XML 1.0 Char: no C0 control but tab, LF and CR; no surrogates, U+FFFE or U+FFFF
    return (c < " " and c not in "\t\n\r") or "\ud800" <= c <= "\udfff" or c in "\ufffe\uffff"


def _digits(text: str, lengths: tuple[int, ...]) -> bool:
    return len(text) in lengths and text.isascii() and text.isdigit()


_STATE_NAMES = {
    UpstreamState.IDLE: "idle",
    UpstreamState.REGISTERING: "registering",
    UpstreamState.REGISTERED: "registered",
    UpstreamState.REFRESHING: "registered",  # a refresh under way is still registered
    UpstreamState.BACKOFF: "backing-off",
    UpstreamState.UNREGISTERING: "unregistering",
    UpstreamState.STOPPED: "stopped",
}
