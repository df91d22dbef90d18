"""The composition root: builds the gateway from a Config, runs it, shuts it down cleanly.

Only this module instantiates concrete transports (and, in later issues,
stores). Start-up order: metrics → SIP endpoint and stack → transports → admin
API → ready. Shutdown (SIGINT/SIGTERM) reverses it, giving in-flight handlers
``runtime.shutdown_timeout`` seconds; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import resource
import signal
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gb28181gw import __version__, compiled
from gb28181gw.admin import AdminServer, add_device_routes, add_upstream_routes
from gb28181gw.admin.audit import add_audit_routes
from gb28181gw.admin.doctor import add_doctor_routes
from gb28181gw.admin.forms import add_form_routes
from gb28181gw.admin.ledger import add_ledger_routes
from gb28181gw.admin.nodes import add_node_routes
from gb28181gw.admin.openapi import add_openapi_route
from gb28181gw.admin.streams import StreamApi, add_stream_routes
from gb28181gw.admin.tokens import add_token_routes
from gb28181gw.config import Config, StoreSection, is_loopback, parse_time_zone
from gb28181gw.errors import ConfigError, StoreError
from gb28181gw.gb.registrar import DateFormat, RegistrarPolicy, parse_networks
from gb28181gw.logs import RATE_LIMIT
from gb28181gw.metrics import (
    EVENT_LOOP_LAG,
    GC_PAUSES,
    LOG_LINES_SUPPRESSED,
    RPC_CALLS,
    RPC_SECONDS,
    RPC_SERVED,
    SIP_FLOOD_BANNED,
    SIP_FLOOD_BANS,
    SIP_FLOOD_DROPPED,
    SIP_TCP_CONNECTIONS,
    SIP_TRANSACTIONS_IN_FLIGHT,
    STORE_WRITABLE,
    STORE_WRITE_FAILURES,
    Metrics,
)
from gb28181gw.net.stack import SipStack
from gb28181gw.net.timer import LagProbe
from gb28181gw.pull import picture_size
from gb28181gw.relay.forwarder import Forwarder, RelaySettings
from gb28181gw.relay.workers import LocalRelay, Relay, WorkerRelay
from gb28181gw.sdp import StreamMode
from gb28181gw.services.access import AccessService
from gb28181gw.services.audit import AuditService
from gb28181gw.services.cascade_catalog import CascadeCatalogService
from gb28181gw.services.cascade_media import CascadeMediaService
from gb28181gw.services.cascade_requests import CascadeRequestService
from gb28181gw.services.devices import DeviceService
from gb28181gw.services.doctor import DoctorService
from gb28181gw.services.forms import FormService
from gb28181gw.services.ledger import LedgerService
from gb28181gw.services.nodes import NodeService
from gb28181gw.services.registrar import RegistrarService
from gb28181gw.services.remote import RemoteDevices
from gb28181gw.services.streams import MediaSettings, StreamService
from gb28181gw.services.subscriptions import SubscriptionService
from gb28181gw.services.upstreams import UpstreamService
from gb28181gw.sip.endpoint import SipEndpoint
from gb28181gw.sip.flood import FloodGuard, parse_exempt
from gb28181gw.sip.message import Limits
from gb28181gw.sip.timers import TimerConfig
from gb28181gw.store.base import Cluster, SingleNode, Store
from gb28181gw.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from gb28181gw.store.leases import RedisLeases
    from gb28181gw.store.nodes import RedisNodes
    from gb28181gw.store.rpc import RedisRpc

log = logging.getLogger("gb28181gw.app")

#: Exit status when start-up fails (bad config, port in use …).
STARTUP_FAILURE = 3


class Gateway:
    """One running gateway: SIP stack, services and admin API built from ``config``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        sip = config.sip
        self.endpoint = SipEndpoint(
            timers=TimerConfig(t1=sip.t1, t2=sip.t2, t4=sip.t4),
            limits=Limits(
                max_message_size=sip.max_message_size,
                max_headers=sip.max_headers,
                max_line_length=sip.max_line_length,
                max_body_size=sip.max_body_size,
            ),
            user_agent=config.gateway.user_agent or None,
        )
        self.flood = build_flood_guard(config, known=self._known_address)
        self.stack = SipStack(
            self.endpoint,
            counters=self.metrics.sip,
            flood=self.flood,
            log_interval=config.flood.log_interval,
            tcp_per_address=config.flood.tcp_per_address if config.flood.enabled else 0,
        )
        self._superior_hosts = frozenset(up.host for up in config.upstreams)
        self.store = make_store(
            config.store, node=config.node.id, about=node_claim(config), claim_ttl=config.node.claim_seconds
        )
        self.audit = AuditService(self.store, self.metrics, retention_days=config.audit.retention_days)
        self.access = AccessService(self.store, self.audit)
        self.registrar = RegistrarService(
            self.stack,
            self.store,
            registrar_policy(config),
            metrics=self.metrics,
            settings=config.registrar,
            flush_interval=config.store.flush_interval,
            audit=self.audit,
            cluster=make_cluster(self.store, config.node.id),
        )
        self.devices = DeviceService(
            self.stack,
            self.store,
            self.registrar,
            our_id=config.gateway.id,
            domain=config.domain,
            metrics=self.metrics,
            settings=config.devices,
            audit=self.audit,
        )
        self.subscriptions = SubscriptionService(self.stack, self.registrar, self.devices, settings=config.devices)
        m = config.media
        self.streams = StreamService(
            self.stack,
            self.registrar,
            self.devices,
            build_relays(config),
            our_id=config.gateway.id,
            domain=config.domain,
            metrics=self.metrics,
            settings=MediaSettings(
                address=config.media_address,
                port_range=(m.port_min, m.port_max),
                shared_port=m.shared_port,
                stream_mode=StreamMode(m.stream_mode),
                invite_timeout=m.invite_timeout,
                rtp_timeout=m.rtp_timeout,
                linger=m.linger,
                tcp_connect_attempts=m.tcp_connect_attempts,
                tcp_connect_interval=m.tcp_connect_interval,
                consumer_connect_timeout=m.consumer_connect_timeout,
                keyframe_request=m.keyframe_request,
                port_quarantine=m.port_quarantine,
                ssrc_quarantine=m.ssrc_quarantine,
                ssrc_sequences=range(m.ssrc_min, m.ssrc_max + 1),
                check_interval=min(1.0, m.stats_interval),
                offer_format=m.offer_format,
            ),
            playback=config.playback,
            audit=self.audit,
        )
        zone = parse_time_zone(config.gateway.time_zone)
        self.leases = make_leases(config)
        self.upstreams = UpstreamService(
            self.stack, config, metrics=self.metrics, zone=zone, store=self.store, audit=self.audit, leases=self.leases
        )
        self.cascade_requests = CascadeRequestService(
            self.stack, self.upstreams, self.devices, gateway_id=config.gateway.id, zone=zone, audit=self.audit
        )
        self.cascade_catalog = CascadeCatalogService(
            self.stack,
            self.upstreams,
            self.registrar,
            self.devices,
            metrics=self.metrics,
            name=config.gateway.user_agent or "gb28181gw",
            shared=config.store.backend == "redis",
        )
        self.rpc = make_rpc(config)
        # exported by every gateway (zero without other nodes): one set of families for all
        self.metrics.labeled_counter(RPC_CALLS, lambda: _floats(self.rpc.calls if self.rpc else {}))
        self.metrics.labeled_counter(RPC_SERVED, lambda: _floats(self.rpc.served if self.rpc else {}))
        rpc_seconds = self.metrics.histogram(RPC_SECONDS)
        if self.rpc is not None:
            self.rpc.observe = rpc_seconds.observe
        self.remote = RemoteDevices(self.rpc, self.devices) if self.rpc is not None else None
        self.cascade_media = CascadeMediaService(
            self.stack,
            self.upstreams,
            self.streams,
            self.registrar,
            metrics=self.metrics,
            media_address=config.media_address,
            invite_timeout=m.invite_timeout,
            audit=self.audit,
            rpc=self.rpc,
        )
        self.upstreams.count_streams(self.cascade_media.served_to)
        self.nodes = NodeService(
            self.stack,
            make_nodes(config),
            node_id=config.node.id,
            director=config.node.director,
            server_id=config.gateway.id,
            expires=config.registrar.expires_default,
            metrics=self.metrics,
        )
        # the stream actions of the API: also what another node's forwarded request runs here, so
        # built (and its calls handled) whether or not this node serves the admin API itself
        self.stream_api = StreamApi(
            self.streams,
            zone=parse_time_zone(config.gateway.time_zone),
            remote=self.remote,
            peers=self._peer_ids,
            media_address=config.media_address,
            consumer_networks=parse_networks(config.media.consumer_networks),
        )
        self.ledger = LedgerService(config, self.registrar, self.devices, self.store, audit=self.audit)
        self.doctor = DoctorService(
            self.registrar,
            self.devices,
            self.streams,
            our_id=config.gateway.id,
            metrics=self.metrics,
            decode=picture_size,
            audit=self.audit,
        )
        self.forms = FormService(config, self.ledger)
        self.admin: AdminServer | None = None
        self.started_at = 0.0
        self._ready = False
        self._stop = asyncio.Event()
        self.metrics.gauge(SIP_TRANSACTIONS_IN_FLIGHT, lambda: float(self.endpoint.transactions_in_flight))
        self.metrics.gauge(SIP_TCP_CONNECTIONS, lambda: float(self.stack.tcp_connections))
        self.metrics.labeled_counter(LOG_LINES_SUPPRESSED, lambda: {(): float(RATE_LIMIT.total_suppressed)})
        self.metrics.labeled_counter(SIP_FLOOD_BANS, self._flood_bans)
        self.metrics.labeled_counter(
            SIP_FLOOD_DROPPED, lambda: {(k,): float(v) for k, v in self.metrics.sip.flood_dropped.items()}
        )
        self.metrics.gauge(SIP_FLOOD_BANNED, lambda: float(self.flood.banned_count if self.flood else 0))
        self.metrics.gauge(STORE_WRITABLE, lambda: float(self.store.writable))
        self.metrics.labeled_counter(
            STORE_WRITE_FAILURES, lambda: {(k,): float(v) for k, v in self.store.write_failures.items()}
        )
        self.lag_probe = LagProbe(LAG_PROBE_INTERVAL, self.metrics.histogram(EVENT_LOOP_LAG).observe)
        self.gc_timer = GcTimer(self.metrics.histogram(GC_PAUSES).observe)

    def _known_address(self, host: str) -> bool:
        # asked only when an address passes the strangers' limit within a window
        return host in self._superior_hosts or self.registrar.knows_address(host)

    def _flood_bans(self) -> dict[tuple[str, ...], float]:
        begun = self.flood.bans_begun if self.flood is not None else {}
        return {(kind.value,): float(n) for kind, n in begun.items()}

    @property
    def ready(self) -> bool:
        """Listening, not shutting down, and the store takes writes."""
        return self._ready and self.store.writable

    async def _peer_ids(self) -> list[str]:
        return [n.node_id for n in await self.nodes.current()]

    def status(self) -> dict[str, Any]:
        """What ``/api/v1/status`` and ``gb28181gw status`` show."""
        c = self.config
        # a device another node serves (several nodes) is that node's to count, as in the metrics
        counts = self.registrar.counts()
        return {
            "version": __version__,
            "gateway_id": c.gateway.id,
            "domain": c.domain,
            "time_zone": c.gateway.time_zone,
            "sip": {
                "listen": c.sip.listen,
                "port": self.stack.port or c.sip.port,
                # what devices are told to reach us at (Via, Contact, SDP): see SipStack.local_address
                "advertised": self.stack.advertised or "per device",
                "transports": c.sip.transports,
                "transactions_in_flight": self.endpoint.transactions_in_flight,
                "tcp_connections": self.stack.tcp_connections,
            },
            "devices": counts,
            "streams": {
                "active": len(self.streams.streams),
                "consumers": sum(len(st.consumers) for st in self.streams.streams.values()),
                "relay_workers": len(self.streams.relays),
            },
            "store": self.store.location,
            # the hot path compiled by `gb28181gw accelerate`, or why not (gb28181gw/compiled.py)
            "compiled": compiled.state(),
            "node": c.node.id,
            "store_writable": self.store.writable,
            "store_error": self.store.last_error,
            "uptime_seconds": round(time.monotonic() - self.started_at, 3) if self.started_at else 0.0,
            "pid": os.getpid(),
        }

    async def start(self) -> None:
        """Open the store and bind everything; raises ``StoreError`` or ``OSError`` when it cannot."""
        c = self.config
        await self.store.open()
        await self.audit.start()
        await self.access.start()
        admin_tls = self._admin_preflight()  # before binding anything: a refusal leaves no port taken
        await self.registrar.start()
        await self.devices.start()
        await self.ledger.start()
        self.forms.start()
        await self.stack.listen(replace(c.sip, tcp_max_connections=tcp_connection_budget(c)))
        announce = getattr(self.store, "announce", None)
        if announce is not None and c.sip.port == 0 and not c.node.advertised_address and c.node_advertised:
            # the port the kernel chose is where devices are sent (the claim named no address so far)
            await announce(advertised=replace(c, sip=replace(c.sip, port=self.stack.port)).node_advertised)
        await self.nodes.start()  # a director answers from its first REGISTER with a view of the nodes
        await self.streams.start()
        if self.rpc is not None:
            await self.rpc.open()  # once the stream service can take calls for our devices
            self.cascade_media.start()
        if self.leases is not None:
            await self.leases.open()
        await self.upstreams.start()  # once listening: the superiors answer to our SIP port
        await self.cascade_catalog.start()
        if c.admin.enabled:
            self.admin = AdminServer(
                self.metrics,
                status=self.status,
                ready=lambda: self.ready,
                allowed_hosts=c.admin.allowed_hosts,
                access=self.access,
                audit=self.audit,
                require_tokens=c.admin.require_tokens,
                open_metrics=c.admin.open_metrics,
            )
            add_device_routes(
                self.admin,
                self.registrar,
                self.devices,
                self.flood,
                owners=self.nodes.owners if c.store.backend == "redis" else None,
                remote=self.remote,
                served_elsewhere=self.nodes.served_elsewhere if c.store.backend == "redis" else None,
            )
            add_node_routes(self.admin, self.nodes, backend=c.store.backend)
            add_stream_routes(self.admin, self.stream_api, consumer_networks=parse_networks(c.media.consumer_networks))
            add_upstream_routes(self.admin, self.upstreams)
            add_ledger_routes(self.admin, self.ledger)
            add_doctor_routes(self.admin, self.doctor)
            add_form_routes(self.admin, self.forms)
            add_token_routes(self.admin, self.access)
            add_openapi_route(self.admin)
            add_audit_routes(self.admin, self.audit)
            await self.admin.start(c.admin.listen, c.admin.port, ssl_context=admin_tls)
        self.started_at = time.monotonic()
        self.lag_probe.start()
        self.gc_timer.install()
        self._ready = True
        log.info(
            "gateway started",
            extra={
                "id": c.gateway.id,
                "domain": c.domain,
                "sip_port": self.stack.port,
                "version": __version__,
                "store": self.store.location,
                "node": c.node.id,
                "compiled": compiled.label(),
            },  # fmt: skip
        )

    def _admin_preflight(self) -> ssl.SSLContext | None:
        """Refuse to serve an admin API nobody could administer, and load its TLS certificate.

        Where every caller needs a token (beyond loopback, or ``admin.require_tokens``) and no
        active admin token exists, the API would lock everyone out, or (before tokens existed)
        tempt a reader to turn authentication off: start-up stops and says how to make one.

        Raises:
            ConfigError: no admin token where one is needed; a certificate or key that cannot be loaded.
        """
        a = self.config.admin
        if not a.enabled:
            return None
        if (a.require_tokens or not is_loopback(a.listen)) and not self.access.has_admin():
            why = "admin.require_tokens is true" if a.require_tokens else f"it listens on {a.listen}, beyond loopback"
            raise ConfigError(
                "admin.listen" if not a.require_tokens else "admin.require_tokens",
                f"the admin API needs tokens ({why}) and no active admin token exists: make one with "
                "`gb28181gw token create NAME --role admin` (same config: -c or GB28181GW_CONFIG) while the "
                "gateway is stopped (it then writes to the store file), or while it listens on loopback without "
                "admin.require_tokens; then start it again",
            )
        if not a.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(a.tls_cert, a.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "admin.tls_cert",
                f"cannot load the certificate {a.tls_cert!r} with the key {a.tls_key!r}: "
                f"{getattr(exc, 'strerror', None) or exc} (both must be readable PEM files and belong together)",
            ) from None
        return context

    def request_stop(self) -> None:
        """Ask :meth:`serve` to shut down."""
        self._stop.set()

    async def stop(self) -> None:
        """Shut down in reverse order of start-up."""
        self._ready = False
        self.lag_probe.stop()
        self.gc_timer.remove()
        await self.doctor.stop()  # its streams close while the stack still runs
        if self.admin is not None:
            await self.admin.stop()
        await self.cascade_media.stop()  # BYE in every superior's dialog, first: its consumers go
        if self.rpc is not None:
            await self.rpc.close()  # the calls that BYE made have gone out
        await self.streams.stop()  # BYE to every device while the stack still runs
        await self.cascade_catalog.stop()
        await self.upstreams.stop()  # Expires: 0 to every superior while the stack still runs, then leases released
        await self.nodes.stop()
        if self.leases is not None:
            await self.leases.close()
        await self.cascade_requests.stop()
        await self.stack.close(timeout=self.config.runtime.shutdown_timeout)
        await self.subscriptions.stop()
        await self.devices.stop()
        await self.registrar.stop()
        await self.audit.stop()  # last: everything before it may still have recorded an action
        await self.store.close()
        log.info("gateway stopped")

    async def serve(self) -> None:
        """Start, run until SIGINT/SIGTERM (or :meth:`request_stop`), then stop."""
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(sig: signal.Signals) -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                log.warning("second %s: exiting now", sig.name)
                os._exit(1)
            log.info("%s received: shutting down (again to force)", sig.name)
            self._stop.set()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
                pass
        chores = loop.create_task(_housekeeping())
        try:
            await self.start()
            freeze_started()
            await self._stop.wait()
        finally:
            chores.cancel()
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()


#: Seconds between runs of the event-loop stall probe (50 wake-ups a second: nothing to a busy
#: loop, and a stall of 20 ms or more cannot slip between two of them).
LAG_PROBE_INTERVAL = 0.02


class GcTimer:
    """Times every garbage collection (``gc.callbacks``): the collector runs on the loop's thread,
    so each collection is a stall of the event loop, and this says which stalls it causes."""

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._observe(time.perf_counter() - self._started)

    def install(self) -> None:
        """Start timing (collections in this process, by whatever thread)."""
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        """Stop timing."""
        if self in gc.callbacks:
            gc.callbacks.remove(self)


#: Seconds between full garbage collections (see :func:`tune_gc`).
FULL_COLLECTION_INTERVAL = 60.0
#: Young collections in one such interval below which the gateway counts as quiet (one every
#: 2,000 net allocations: 10,000 devices keeping alive once a minute make ~25 a minute).
QUIET_COLLECTIONS = 120


async def _housekeeping() -> None:
    """Periodic chores of a long-running process.

    Say how many log lines the rate limit held back, once their burst is over; and run a
    full garbage collection now and then. :func:`tune_gc` makes full collections rare, so
    a reference cycle (none is known; parse errors used to make them) would otherwise keep
    memory at a burst's high-water mark for hours. A full collection walks everything the
    gateway holds, a stall of its own under load (100-200 ms with 18,000 keepalives a second:
    the transactions of the last 32 s): so it runs only when the last interval was quiet
    (fewer than :data:`QUIET_COLLECTIONS` young collections), when there is little to walk
    and nobody waits; while busy, CPython's own rule collects cycles (see :func:`tune_gc`).
    """
    loop = asyncio.get_running_loop()
    next_collection = loop.time() + FULL_COLLECTION_INTERVAL
    young = gc.get_stats()[0]["collections"]
    while True:
        await asyncio.sleep(RATE_LIMIT.window)
        RATE_LIMIT.summarize(time.time())
        if loop.time() >= next_collection:
            now_young = gc.get_stats()[0]["collections"]
            if now_young - young < QUIET_COLLECTIONS:
                gc.collect()
                if _MALLOC_TRIM is not None:
                    # hand freed heap back to the system: after a burst, glibc keeps it otherwise
                    _MALLOC_TRIM(0)
            young = gc.get_stats()[0]["collections"]
            next_collection = loop.time() + FULL_COLLECTION_INTERVAL


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, where there is one."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


def make_store(
    section: StoreSection, *, node: str = "", about: dict[str, object] | None = None, claim_ttl: float | None = None
) -> Store:
    """The store ``store.backend`` names (SQLite unless it says redis); ``node`` is the gateway's
    ``node.id``, claimed in a Redis store while it is open (the CLI claims none), the claim saying
    ``about`` it (:func:`node_claim`) and living ``claim_ttl`` seconds unless renewed.

    Raises:
        StoreError: the redis backend without redis-py installed.
    """
    if section.backend == "redis":
        try:
            from gb28181gw.store.redis import RedisStore  # redis-py is needed only with this backend
        except ImportError as exc:
            raise StoreError(f"store.backend = redis needs redis-py ({exc}): pip install 'gb28181gw[redis]'") from None
        return RedisStore(section.url, node=node, about=about, claim_ttl=claim_ttl)
    return SqliteStore(section.path)


def node_claim(config: Config) -> dict[str, object]:
    """What this node's claim tells the others (gb.director.NodeRecord): where devices reach it, its role."""
    n = config.node
    # port 0: the kernel picks it at bind time, and the claim says it then (Gateway.start); until then
    # the node has no address, so no director sends devices to "host:0"
    advertised = config.node_advertised if n.advertised_address or config.sip.port else ""
    return {"advertised": advertised, "director": n.director, "serves": n.director_serves or not n.director}


def make_nodes(config: Config) -> RedisNodes | None:
    """The reader of the live nodes: with a Redis store (with SQLite this gateway is the only node)."""
    if config.store.backend != "redis":
        return None
    from gb28181gw.store.nodes import RedisNodes  # redis-py: checked by make_store already

    return RedisNodes(config.store.url)


def make_cluster(store: Store, node: str) -> Cluster:
    """Which devices this node serves: with a Redis store and a ``node.id``, those whose ownership
    epoch names it (several nodes on one database, issue 17); otherwise all of them."""
    if node:
        try:
            from gb28181gw.store.redis import RedisStore
        except ImportError:
            return SingleNode(store)
        if isinstance(store, RedisStore):
            from gb28181gw.store.ownership import RedisCluster

            return RedisCluster(store, node)
    return SingleNode(store)


def make_leases(config: Config) -> RedisLeases | None:
    """Where superiors' leases are kept: with several nodes on a Redis store and superiors configured (issue 17)."""
    if config.store.backend != "redis" or not config.upstreams:
        return None
    from gb28181gw.store.leases import RedisLeases  # redis-py: checked by make_store already

    # an answer later than a tenth of the lease is of no use to it (the lease asks again)
    return RedisLeases(config.store.url, timeout=min(1.0, config.node.lease_seconds / 10))


def _floats(counts: Mapping[tuple[str, str], int]) -> dict[tuple[str, ...], float]:
    return {k: float(v) for k, v in counts.items()}


def make_rpc(config: Config) -> RedisRpc | None:
    """Calls between nodes (issue 17): with a Redis store and a node.id."""
    if config.store.backend != "redis" or not config.node.id:
        return None
    from gb28181gw.store.rpc import RedisRpc  # redis-py: checked by make_store already

    return RedisRpc(config.store.url, config.node.id)


def build_relays(config: Config) -> list[Relay]:
    """The relay workers ``media.workers`` asks for: -1 one per core, 0 the gateway's own loop."""
    m = config.media
    count = config.relay_workers
    settings = RelaySettings(
        host=m.listen,
        tcp_queue_limit=m.tcp_queue,
        udp_receive_buffer=m.udp_receive_buffer,
        stats_interval=m.stats_interval,
        gop_cache=m.gop_cache,
        gop_cache_total=m.gop_cache_total,
    )
    if count == 0:
        return [LocalRelay(Forwarder(settings))]
    return [WorkerRelay(i, settings) for i in range(count)]


def startup_reason(exc: Exception) -> str:
    """Why start-up failed, in words: an ``OSError``'s own sentence without its ``[Errno N]``
    (``cannot listen on UDP 0.0.0.0:5060: address already in use``), unless it names a file."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is None:
        return exc.strerror
    return str(exc)


def build_flood_guard(config: Config, *, known: Callable[[str], bool]) -> FloodGuard | None:
    """The per-address request limits of the ``[flood]`` section (``None`` when disabled)."""
    f = config.flood
    if not f.enabled:
        return None
    return FloodGuard(
        window=f.window,
        limit=f.limit,
        known_limit=f.known_limit,
        ban=f.ban,
        exempt=parse_exempt(f.exempt),
        known=known,
    )


def registrar_policy(config: Config) -> RegistrarPolicy:
    """The registrar policy from the ``[registrar]`` section."""
    r = config.registrar
    return RegistrarPolicy(
        domain=config.domain,
        password=r.password,
        require_provisioned=r.require_provisioned,
        gateway_id=config.gateway.id,
        accept_platforms=r.accept_platforms,
        strict_ids=config.gateway.strict_ids,
        expires_min=r.expires_min,
        expires_max=r.expires_max,
        expires_default=r.expires_default,
        date_format=DateFormat(r.date_header),
        time_zone=parse_time_zone(config.gateway.time_zone),
        check_request_domain=r.check_request_domain,
        max_auth_failures=r.max_auth_failures,
        failure_window=r.failure_window,
        ban_seconds=r.ban_seconds,
        allow_ids=tuple(r.allow_ids),
        deny_ids=tuple(r.deny_ids),
        allow_networks=parse_networks(r.allow_networks),
        deny_networks=parse_networks(r.deny_networks),
        trusted_proxies=parse_networks(r.trusted_proxies),
    )


#: Descriptors kept for everything but SIP TCP connections: the admin API and its clients, the
#: store, relay worker pipes, logs, listening sockets.
FD_RESERVE = 256


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the limit now in force.

    Many distributions start services with a soft limit of 1,024, which a few hundred TCP
    devices and streams exhaust; the hard limit is there to be asked for.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit", extra={"soft": soft, "hard": hard, "error": str(exc)})
    return soft


def tcp_connection_budget(config: Config) -> int:
    """``sip.tcp_max_connections``, cut to what the open-file limit leaves (with a warning).

    Past the limit, accept() fails and — worse — the admin API and the store cannot open
    anything either; so SIP TCP gets what is left after every stream's media sockets
    (two per port pair of the range: ours and a TCP consumer's or device's) and a reserve.
    """
    limit = raise_fd_limit()
    media = config.media.port_max - config.media.port_min + 1
    budget = max(16, limit - FD_RESERVE - media)
    wanted = config.sip.tcp_max_connections
    if wanted > budget:
        log.warning(
            "sip.tcp_max_connections cut to what the open-file limit allows",
            extra={"configured": wanted, "allowed": budget, "open_file_limit": limit,
                   "fix": "raise the limit (LimitNOFILE= in systemd, ulimit -n) or lower the setting"},
        )  # fmt: skip
        return budget
    return wanted


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap and short for a long-running server.

    The collector runs on the event loop's thread: every collection is a stall that every
    datagram waits behind. So:

    - Everything allocated while starting (modules, config, tables) is moved out of its sight
      (``gc.freeze``), here and again once the gateway has started (:func:`freeze_started`:
      the devices and channels loaded from the store).
    - Young collections run every 2,000 net allocations, not 700 (the default collects
      hundreds of times a second for nothing at thousands of messages a second; reference
      counting frees almost everything at once) and not 50,000: a collection's pause grows
      with the objects it walks (~0.4 µs each under load: they point into a heap of hundreds
      of megabytes, every visit a cache miss), and under keepalive load a 50,000 one held the
      loop 20-50 ms a few times a second, which p99 latency sees. Measured 2026-12-03
      (100,000 keepalives in process, 10,000 devices): young pauses 2-3 ms instead of 34-47 ms,
      in all 1.7-2.3 µs per keepalive as before (1.9-3.0).
    - The middle generation is collected every 5 young collections (at most ~10,000 objects:
      6-9 ms; every 10 gave 13-14 ms).
    - Full collections walk everything (100-200 ms under a load of 18,000 keepalives a
      second), so CPython considers one only every 1,000 middle ones (10 million net
      allocations, not 1 million), and then only if the long-lived objects grew by a quarter
      since the last; :func:`_housekeeping` runs one when the gateway is quiet.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(2_000, 5, 1_000)


def freeze_started() -> None:
    """Move what start-up loaded (devices, channels, bans) out of the collector's sight:
    it lives as long as the process, and a full collection need not walk it every time."""
    gc.collect()
    gc.freeze()


def run(config: Config) -> int:
    """Run a gateway in this process until it is told to stop; return the exit status."""
    try:
        gateway = Gateway(config)
    except StoreError as exc:
        log.error("start-up failed: %s", startup_reason(exc))
        return STARTUP_FAILURE
    tune_gc()

    async def main() -> None:
        await gateway.serve()

    try:
        if config.runtime.uvloop:
            try:
                import uvloop
            except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
                asyncio.run(main())
            else:
                uvloop.run(main())
        else:
            asyncio.run(main())
    except (OSError, StoreError, ConfigError) as exc:
        log.error("start-up failed: %s", startup_reason(exc))
        return STARTUP_FAILURE
    return 0
