"""Every Prometheus metric of the gateway (``gb28181gw_*``), on a registry per gateway.

Every family — its name, type, help text and label names — is a :class:`Family`
constant below (``FAMILIES`` lists them all); services only supply values: they
register a family with a value source (a counter dictionary, a histogram, or a
callback read at scrape time) and never name a metric themselves. Registering a
family twice, or as the wrong type, is an error at start-up.

Hot-path counters (one increment per SIP message) are plain dictionaries read
by a collector at scrape time: a ``prometheus_client`` labelled increment costs
more than parsing a small SIP header, and the scrape happens every few seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gb28181gw import __version__, compiled


class Kind(StrEnum):
    """Prometheus metric types (the ``# TYPE`` line)."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family as a scrape shows it.

    Attributes:
        name: the family name; a counter's samples add ``_total``.
        kind: its Prometheus type.
        help: the ``# HELP`` text.
        labels: label names, in the order a value source gives label values.
        buckets: a histogram's upper bounds, in the family's unit.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


# --- the SIP shell (net/) ----------------------------------------------------------------
SIP_REQUESTS = Family(
    "gb28181gw_sip_requests", Kind.COUNTER, "SIP requests received and sent", ("direction", "transport", "method")
)
SIP_RESPONSES = Family(
    "gb28181gw_sip_responses", Kind.COUNTER, "SIP responses received and sent", ("direction", "transport", "status")
)
SIP_PARSE_ERRORS = Family(
    "gb28181gw_sip_parse_errors", Kind.COUNTER, "Unparseable SIP input, by the status answered", ("transport", "answer")
)
SIP_DROPPED = Family("gb28181gw_sip_dropped", Kind.COUNTER, "SIP input or output dropped, by reason", ("reason",))
SIP_TRANSACTIONS_IN_FLIGHT = Family(
    "gb28181gw_sip_transactions_in_flight", Kind.GAUGE, "SIP transactions not yet terminated"
)
SIP_TCP_CONNECTIONS = Family("gb28181gw_sip_tcp_connections", Kind.GAUGE, "Open SIP TCP connections")
BUILD = Family(
    "gb28181gw_build",
    Kind.INFO,
    "Version of the running gateway; compiled: its modules compiled by mypyc in use, or none",
    ("version", "compiled"),
)
LOG_LINES_SUPPRESSED = Family(
    "gb28181gw_log_lines_suppressed",
    Kind.COUNTER,
    "Log lines held back by the per-kind rate limit (a summary line says which)",
)
STORE_WRITABLE = Family(
    "gb28181gw_store_writable",
    Kind.GAUGE,
    "1 while the last store write succeeded, 0 while the store cannot be written",
)
STORE_WRITE_FAILURES = Family(
    "gb28181gw_store_write_failures",
    Kind.COUNTER,
    "Failed store writes: store (could not write at all) or record (a value the store refuses)",
    ("kind",),
)

# --- the process: event-loop stalls and what causes them (app.py) -----------------------
#: Bounds of the stall histograms: a keepalive's answer waits for every stall in its way.
STALL_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
EVENT_LOOP_LAG = Family(
    "gb28181gw_event_loop_lag_seconds",
    Kind.HISTOGRAM,
    "How late a callback due every 20 ms ran: the event loop's stalls (everything waits for them)",
    buckets=STALL_BUCKETS,
)
GC_PAUSES = Family(
    "gb28181gw_gc_pause_seconds",
    Kind.HISTOGRAM,
    "Garbage collections by how long they held the event loop",
    buckets=STALL_BUCKETS,
)

# --- registration and keepalive (services/registrar.py) ---------------------------------
REGISTRATIONS = Family("gb28181gw_registrations", Kind.COUNTER, "REGISTER requests by result", ("result", "reason"))
KEEPALIVES = Family("gb28181gw_keepalives", Kind.COUNTER, "Keepalive MESSAGEs by result", ("result",))
KEEPALIVE_TIMEOUTS = Family("gb28181gw_keepalive_timeouts", Kind.COUNTER, "Devices gone offline by cause", ("cause",))
AUTH_FAILURES = Family("gb28181gw_auth_failures", Kind.COUNTER, "Failed authentications by reason", ("reason",))
BANS = Family("gb28181gw_bans", Kind.COUNTER, "Addresses or IDs banned for failed authentication")
DEVICES = Family(
    "gb28181gw_devices",
    Kind.GAUGE,
    "Devices by state (several nodes on Redis: online, offline and registered count those this node serves "
    "and the unregistered; known, every device it holds)",
    ("state",),
)
DEVICES_OWNED = Family(
    "gb28181gw_devices_owned",
    Kind.GAUGE,
    "Registered devices this node serves (several nodes on Redis: those whose ownership epoch names it)",
)
OWNERSHIP_LOST = Family(
    "gb28181gw_ownership_lost",
    Kind.COUNTER,
    "Devices another node claimed from this one (this node stopped watching them and writes nothing for them)",
)
ADOPTIONS = Family(
    "gb28181gw_adoptions",
    Kind.COUNTER,
    "Devices of dead nodes this node's janitor handled: offline (marked once), reclaimed (registered elsewhere "
    "since: left alone), finished (dead nodes whose devices were all handled)",
    ("result",),
)
OWNERSHIP_ERRORS = Family(
    "gb28181gw_ownership_errors",
    Kind.COUNTER,
    "Failed Redis operations of device ownership and liveness (write: the batch is kept and sent again; janitor)",
    ("operation",),
)

# --- queries, catalogs and subscriptions (services/devices.py, subscriptions.py) --------
QUERIES = Family(
    "gb28181gw_queries", Kind.COUNTER, "MANSCDP queries to devices by CmdType and result", ("cmd", "result")
)
MANSCDP_UNMATCHED = Family(
    "gb28181gw_manscdp_unmatched", Kind.COUNTER, "Responses that matched no pending query", ("cmd",)
)
INVALID_COORDINATES = Family(
    "gb28181gw_invalid_coordinates", Kind.COUNTER, "Catalog items whose coordinates were dropped"
)
ALARMS = Family("gb28181gw_alarms", Kind.COUNTER, "Alarms received by AlarmMethod and AlarmType", ("method", "type"))
CATALOG_SYNC_SECONDS = Family("gb28181gw_catalog_sync_seconds", Kind.COUNTER, "Seconds spent assembling catalogs")
CHANNELS = Family("gb28181gw_channels", Kind.GAUGE, "Catalog channels known", ("state",))
CATALOG_EVENTS = Family("gb28181gw_catalog_events", Kind.COUNTER, "Catalog NOTIFY item events by event", ("event",))
CATALOG_ITEMS_REFUSED = Family(
    "gb28181gw_catalog_items_refused", Kind.COUNTER, "Catalog NOTIFY ADDs refused at devices.max_channels"
)

# --- live streams and the relay (services/streams.py) -----------------------------------
STREAM_SETUPS = Family("gb28181gw_stream_setups", Kind.COUNTER, "Stream setups by result", ("result",))
STREAM_CLOSES = Family("gb28181gw_stream_closes", Kind.COUNTER, "Streams closed by cause", ("cause",))
STREAM_SETUP_SECONDS = Family(
    "gb28181gw_stream_setup_seconds",
    Kind.HISTOGRAM,
    "INVITE sent to first RTP packet relayed",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0),
)
MEDIA_SESSIONS_ACTIVE = Family(
    "gb28181gw_media_sessions_active",
    Kind.GAUGE,
    "Device media sessions open, by kind (live, playback, download)",
    ("kind",),
)
MEDIA_SESSIONS = Family(
    "gb28181gw_media_sessions",
    Kind.COUNTER,
    "Device media sessions ended or failed, by kind and result (ok, refused, timeout, incomplete …)",
    ("kind", "result"),
)
PLAYBACK_CONTROLS = Family(
    "gb28181gw_playback_controls",
    Kind.COUNTER,
    "Playback controls sent to devices (MANSRTSP over INFO), by verb and result",
    ("verb", "result"),
)
DOWNLOAD_BYTES = Family(
    "gb28181gw_download_bytes", Kind.COUNTER, "RTP bytes received from devices in Download sessions"
)
DOWNLOADS = Family(
    "gb28181gw_downloads", Kind.COUNTER, "Downloads ended, by result (complete, incomplete)", ("result",)
)
STREAMS_ACTIVE = Family("gb28181gw_streams_active", Kind.GAUGE, "Live streams (and streams being set up)")
STREAM_CONSUMERS = Family("gb28181gw_stream_consumers", Kind.GAUGE, "Consumers of all streams")
RTP_PACKETS = Family("gb28181gw_rtp_packets", Kind.COUNTER, "RTP packets relayed", ("direction",))
RTP_BYTES = Family("gb28181gw_rtp_bytes", Kind.COUNTER, "RTP bytes relayed", ("direction",))
RTP_LOST = Family("gb28181gw_rtp_lost", Kind.COUNTER, "RTP packets lost on the way from devices")
RTP_DROPPED = Family("gb28181gw_rtp_dropped", Kind.COUNTER, "RTP packets dropped, by reason", ("reason",))
GOP_EVICTIONS = Family(
    "gb28181gw_relay_gop_evictions",
    Kind.COUNTER,
    "Key-frame caches dropped because media.gop_cache_total was reached (joiners then wait for a key frame)",
)
RELAY_STREAMS = Family("gb28181gw_relay_streams", Kind.GAUGE, "Streams per relay worker", ("worker",))

# --- superiors (services/upstreams.py) ------------------------------------------------------
UPSTREAM_REGISTERED = Family(
    "gb28181gw_upstream_registered", Kind.GAUGE, "Whether we are registered with each superior (0/1)", ("upstream",)
)
UPSTREAM_REGISTER_FAILURES = Family(
    "gb28181gw_upstream_register_failures",
    Kind.COUNTER,
    "Failed registrations to superiors by reason",
    ("upstream", "reason"),
)
UPSTREAM_KEEPALIVE_FAILURES = Family(
    "gb28181gw_upstream_keepalive_failures",
    Kind.COUNTER,
    "Keepalives to superiors unanswered or refused",
    ("upstream",),
)
UPSTREAM_CATALOG_ITEMS = Family(
    "gb28181gw_upstream_catalog_items",
    Kind.COUNTER,
    "Catalog items sent to superiors (query answers and NOTIFYs)",
    ("upstream",),
)
UPSTREAM_NOTIFIES = Family(
    "gb28181gw_upstream_notifies", Kind.COUNTER, "Catalog NOTIFYs sent to superiors", ("upstream",)
)
UPSTREAM_STREAMS = Family(
    "gb28181gw_upstream_streams", Kind.GAUGE, "Streams served to each superior now", ("upstream",)
)
UPSTREAM_LEASE_HELD = Family(
    "gb28181gw_upstream_lease_held",
    Kind.GAUGE,
    "Whether this node holds each superior's lease (several nodes on Redis: the holder registers upward; 0/1)",
    ("upstream",),
)
UPSTREAM_LEASE_CHANGES = Family(
    "gb28181gw_upstream_lease_changes",
    Kind.COUNTER,
    "Changes of this node's hold on superiors' leases (gained, retaken, fenced, lost, released)",
    ("upstream", "change"),
)
UPSTREAM_REQUESTS = Family(
    "gb28181gw_upstream_requests",
    Kind.COUNTER,
    "Requests received from superiors, by method or MANSCDP CmdType, and how they ended",
    ("upstream", "request", "result"),
)

# --- several nodes on one Redis store: the live nodes and the director (services/nodes.py) --
NODES_LIVE = Family(
    "gb28181gw_nodes_live", Kind.GAUGE, "Gateway nodes live on the shared Redis store, as this node last read them"
)
NODE_VIEW_SECONDS = Family(
    "gb28181gw_node_view_seconds",
    Kind.HISTOGRAM,
    "Redis round trip of a read of the live nodes (every second on every node of a Redis store)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
NODE_VIEW_ERRORS = Family(
    "gb28181gw_node_view_errors", Kind.COUNTER, "Reads of the live nodes Redis did not answer (the last view is kept)"
)
DIRECTOR_REDIRECTS = Family(
    "gb28181gw_director_redirects",
    Kind.COUNTER,
    "Device REGISTERs a director answered 302 Moved Temporarily, by the node it named",
    ("node",),
)
DIRECTOR_UNAVAILABLE = Family(
    "gb28181gw_director_unavailable",
    Kind.COUNTER,
    "Device REGISTERs a director answered 503 (no live node serves devices)",
)

# --- several nodes on Redis (issue 17) ------------------------------------------------------
RPC_CALLS = Family(
    "gb28181gw_rpc_calls",
    Kind.COUNTER,
    "Calls this node made to other nodes, by method and result (ok, refused, timeout, unreachable, bad)",
    ("method", "result"),
)
RPC_SERVED = Family(
    "gb28181gw_rpc_served",
    Kind.COUNTER,
    "Calls from other nodes this node read, by method and result (ok, error, expired, replayed)",
    ("method", "result"),
)
RPC_SECONDS = Family(
    "gb28181gw_rpc_call_seconds",
    Kind.HISTOGRAM,
    "Round trip of answered calls to other nodes (sent to answer read), seconds",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0),
)

# --- the conformance doctor (services/doctor.py) ------------------------------------------
DOCTOR_CHECKS = Family(
    "gb28181gw_doctor_checks",
    Kind.COUNTER,
    "Conformance checks the doctor ran on devices, by check and outcome",
    ("check", "outcome"),
)

# --- who may do what: the admin API's tokens, the audit trail, SIP flood limits (issue 15) --
AUDIT_RECORDS = Family(
    "gb28181gw_audit_records", Kind.COUNTER, "Audit records written, by action and result", ("action", "result")
)
AUDIT_UNWRITTEN = Family(
    "gb28181gw_audit_unwritten", Kind.GAUGE, "Audit records waiting for the store (they are kept until written)"
)
ADMIN_REFUSED = Family(
    "gb28181gw_admin_refused",
    Kind.COUNTER,
    "Admin API requests refused for who made them: 401 (no valid token) or 403 (role too small), by reason",
    ("status", "reason"),
)
SIP_FLOOD_BANS = Family(
    "gb28181gw_sip_flood_bans",
    Kind.COUNTER,
    "Source addresses banned for sending SIP requests too fast, by whether the gateway knew them",
    ("kind",),
)
SIP_FLOOD_DROPPED = Family(
    "gb28181gw_sip_flood_dropped", Kind.COUNTER, "SIP input dropped from flood-banned addresses", ("transport",)
)
SIP_FLOOD_BANNED = Family("gb28181gw_sip_flood_banned", Kind.GAUGE, "Source addresses flood-banned now")
#: The label value for device-supplied text outside the values a family knows.
OTHER = "other"


def bounded_label(value: str, known: dict[str, str]) -> str:
    """``value`` as a label only if ``known`` (lower-case → canonical) lists it, else :data:`OTHER`.

    Devices choose what they send; a label per distinct value would let one device
    create a time series per message. Unknown values are counted together instead.
    """
    return known.get(value.lower(), OTHER) if value else ""


def code_label(value: str) -> str:
    """A GB/T 28181 numeric code (AlarmMethod, AlarmType: 0-99) as a label, anything else :data:`OTHER`."""
    return value if len(value) <= 2 and value.isdigit() and value.isascii() else (OTHER if value else "")


#: Every family the gateway exports, besides the process, platform and GC collectors'.
FAMILIES: tuple[Family, ...] = (
    SIP_REQUESTS, SIP_RESPONSES, SIP_PARSE_ERRORS, SIP_DROPPED, SIP_TRANSACTIONS_IN_FLIGHT, SIP_TCP_CONNECTIONS, BUILD,
    LOG_LINES_SUPPRESSED, STORE_WRITABLE, STORE_WRITE_FAILURES, EVENT_LOOP_LAG, GC_PAUSES,
    REGISTRATIONS, KEEPALIVES, KEEPALIVE_TIMEOUTS, AUTH_FAILURES, BANS, DEVICES,
    DEVICES_OWNED, OWNERSHIP_LOST, ADOPTIONS, OWNERSHIP_ERRORS,
    QUERIES, MANSCDP_UNMATCHED, INVALID_COORDINATES, ALARMS, CATALOG_SYNC_SECONDS, CHANNELS, CATALOG_EVENTS, CATALOG_ITEMS_REFUSED,
    STREAM_SETUPS, STREAM_CLOSES, STREAM_SETUP_SECONDS, STREAMS_ACTIVE, STREAM_CONSUMERS,
    RTP_PACKETS, RTP_BYTES, RTP_LOST, RTP_DROPPED, RELAY_STREAMS, GOP_EVICTIONS,
    MEDIA_SESSIONS_ACTIVE, MEDIA_SESSIONS, PLAYBACK_CONTROLS, DOWNLOAD_BYTES, DOWNLOADS,
    UPSTREAM_REGISTERED, UPSTREAM_REGISTER_FAILURES, UPSTREAM_KEEPALIVE_FAILURES,
    UPSTREAM_CATALOG_ITEMS, UPSTREAM_NOTIFIES, UPSTREAM_STREAMS, UPSTREAM_REQUESTS,
    UPSTREAM_LEASE_HELD, UPSTREAM_LEASE_CHANGES,
    NODES_LIVE, NODE_VIEW_SECONDS, NODE_VIEW_ERRORS, DIRECTOR_REDIRECTS, DIRECTOR_UNAVAILABLE,
    RPC_CALLS, RPC_SERVED, RPC_SECONDS,
    DOCTOR_CHECKS,
    AUDIT_RECORDS, AUDIT_UNWRITTEN, ADMIN_REFUSED, SIP_FLOOD_BANS, SIP_FLOOD_DROPPED, SIP_FLOOD_BANNED,
)  # fmt: skip


K = TypeVar("K", bound=Hashable)


class Counts(Counter[K]):
    """A :class:`collections.Counter` whose ``c[key] += 1`` runs in C both ways.

    ``Counter`` defines ``__delitem__`` in Python (to ignore a missing key), and CPython gives
    item assignment and deletion one slot: so every ``c[key] = n`` of a ``Counter`` went through
    a Python-level lookup of ``__setitem__`` and a call of its wrapper, ~50 ns more than a dict's
    (measured 2026-12-04; three such increments per keepalive, tens of thousands a second). Here
    both are ``dict``'s own, so the slot is the dict's again; ``del c[missing]`` raises
    ``KeyError`` as a dict's does (nothing deletes from these counters).
    """

    __slots__ = ()
    __setitem__ = dict.__setitem__
    __delitem__ = dict.__delitem__  # type: ignore[assignment]  # Counter types it (object) -> None


class SipCounters:
    """Plain counters the SIP shell increments; exported by :class:`_SipCollector`.

    Attributes:
        requests: ("in", transport, method) → count, for what we receive.
        responses: ("in", transport, status) → count.
        requests_out / responses_out: (transport, method or status as bytes) → count, for what we send.
        parse_errors: (transport, status answered or "dropped") → count.
        dropped: reason word → count (stray responses, unanswerable garbage, send failures).
        flood_dropped: transport → input dropped unread from flood-banned addresses.
    """

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counts()
        self.responses: Counter[tuple[str, str, str]] = Counts()
        self.parse_errors: Counter[tuple[str, str]] = Counts()
        # what we send is counted from the wire bytes (method or status as bytes), decoded at scrape time
        self.requests_out: Counter[tuple[str, bytes]] = Counts()
        self.responses_out: Counter[tuple[str, bytes]] = Counts()
        self.dropped: Counter[str] = Counts()
        self.flood_dropped: Counter[str] = Counts()


LabeledGauge = Callable[[], dict[tuple[str, ...], float]]


class Histogram:
    """A histogram kept as plain counts, exported at scrape time."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.count += 1
        self.sum += value
        for i, le in enumerate(self.buckets):
            if value <= le:
                self.counts[i] += 1
                break

    def family(self, name: str, help_text: str) -> HistogramMetricFamily:
        """Cumulative buckets, as Prometheus wants them."""
        cumulative, running = [], 0
        for le, n in zip(self.buckets, self.counts, strict=True):
            running += n
            cumulative.append((repr(float(le)), running))
        cumulative.append(("+Inf", self.count))
        return HistogramMetricFamily(name, help_text, buckets=cumulative, sum_value=self.sum)


class _SipCollector(Collector):
    """Reads the plain counters and the registered value sources at scrape time."""

    def __init__(self, counters: SipCounters) -> None:
        self._c = counters
        self.counters: dict[Family, Counter[tuple[str, ...]]] = {}
        self.gauges: dict[Family, Callable[[], float]] = {}
        self.labeled_gauges: dict[Family, LabeledGauge] = {}
        self.labeled_counters: dict[Family, LabeledGauge] = {}
        self.histograms: dict[Family, Histogram] = {}

    def collect(self) -> Iterable[Metric]:
        c = self._c
        req = CounterMetricFamily(SIP_REQUESTS.name, SIP_REQUESTS.help, labels=SIP_REQUESTS.labels)
        for labels, n in c.requests.items():
            req.add_metric(list(labels), n)
        for (transport, method), n in c.requests_out.items():
            req.add_metric(["out", transport, method.decode("ascii", "replace")], n)
        yield req
        resp = CounterMetricFamily(SIP_RESPONSES.name, SIP_RESPONSES.help, labels=SIP_RESPONSES.labels)
        for labels, n in c.responses.items():
            resp.add_metric(list(labels), n)
        for (transport, status), n in c.responses_out.items():
            resp.add_metric(["out", transport, status.decode("ascii", "replace")], n)
        yield resp
        perr = CounterMetricFamily(SIP_PARSE_ERRORS.name, SIP_PARSE_ERRORS.help, labels=SIP_PARSE_ERRORS.labels)
        for perr_labels, n in c.parse_errors.items():
            perr.add_metric(list(perr_labels), n)
        yield perr
        drop = CounterMetricFamily(SIP_DROPPED.name, SIP_DROPPED.help, labels=SIP_DROPPED.labels)
        for reason, n in c.dropped.items():
            drop.add_metric([reason], n)
        yield drop
        for family, value_of in self.gauges.items():
            yield GaugeMetricFamily(family.name, family.help, value=value_of())
        for family, counter in self.counters.items():
            fam = CounterMetricFamily(family.name, family.help, labels=family.labels)
            for label_values, n in counter.items():
                fam.add_metric(list(label_values), n)
            yield fam
        for family, values_of in self.labeled_gauges.items():
            g = GaugeMetricFamily(family.name, family.help, labels=family.labels)
            for label_values, v in values_of().items():
                g.add_metric(list(label_values), v)
            yield g
        for family, values_of in self.labeled_counters.items():
            fam = CounterMetricFamily(family.name, family.help, labels=family.labels)
            for label_values, v in values_of().items():
                fam.add_metric(list(label_values), v)
            yield fam
        for family, histogram in self.histograms.items():
            yield histogram.family(family.name, family.help)
        info = InfoMetricFamily(BUILD.name, BUILD.help)
        info.add_metric([], {"version": __version__, "compiled": compiled.label()})
        yield info


class Metrics:
    """The registry of one gateway and the value sources its components register.

    Each ``Family`` of this module is registered once, by the component that owns its
    values, with the method of its kind; the SIP counters and the build info are built in.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.sip = SipCounters()
        self._collector = _SipCollector(self.sip)
        self._registered: set[Family] = {SIP_REQUESTS, SIP_RESPONSES, SIP_PARSE_ERRORS, SIP_DROPPED, BUILD}
        self.registry.register(self._collector)

    def _register(self, family: Family, kind: Kind, *, labelled: bool = True) -> None:
        if family.kind is not kind:
            raise ValueError(f"{family.name} is a {family.kind.value}, not a {kind.value}")
        if not labelled and family.labels:
            raise ValueError(f"{family.name} has labels ({', '.join(family.labels)}): give values per label set")
        if family in self._registered:
            raise ValueError(f"{family.name} is registered twice")
        self._registered.add(family)

    def counter(self, family: Family) -> Counter[tuple[str, ...]]:
        """A counter for ``family``; increment ``c[(label value, …)] += 1`` in label order."""
        self._register(family, Kind.COUNTER)
        counter: Counter[tuple[str, ...]] = Counts()
        self._collector.counters[family] = counter
        return counter

    def labeled_gauge(self, family: Family, fn: LabeledGauge) -> None:
        """Export ``fn()`` (label values → value) as gauge ``family`` at every scrape."""
        self._register(family, Kind.GAUGE)
        self._collector.labeled_gauges[family] = fn

    def labeled_counter(self, family: Family, fn: LabeledGauge) -> None:
        """Export ``fn()`` (label values → running total) as counter ``family`` at every scrape."""
        self._register(family, Kind.COUNTER)
        self._collector.labeled_counters[family] = fn

    def histogram(self, family: Family) -> Histogram:
        """A histogram with ``family``'s buckets; call ``observe(value)`` on it."""
        self._register(family, Kind.HISTOGRAM)
        histogram = Histogram(family.buckets)
        self._collector.histograms[family] = histogram
        return histogram

    def gauge(self, family: Family, fn: Callable[[], float]) -> None:
        """Export ``fn()`` as gauge ``family`` (one without labels) at every scrape."""
        self._register(family, Kind.GAUGE, labelled=False)
        self._collector.gauges[family] = fn

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
