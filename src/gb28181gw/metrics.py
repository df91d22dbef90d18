"""Every Prometheus metric of the gateway (``gb28181gw_*``), on a registry per gateway.

Hot-path counters (one increment per SIP message) are plain dictionaries read
by a collector at scrape time: a ``prometheus_client`` labelled increment costs
more than parsing a small SIP header, and the scrape happens every few seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gb28181gw import __version__


class SipCounters:
    """Plain counters the SIP shell increments; exported by :class:`_SipCollector`.

    Attributes:
        requests: ("in", transport, method) → count, for what we receive.
        responses: ("in", transport, status) → count.
        requests_out / responses_out: (transport, method or status as bytes) → count, for what we send.
        parse_errors: (transport, status answered or "dropped") → count.
        dropped: reason word → count (stray responses, unanswerable garbage, send failures).
    """

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.responses: Counter[tuple[str, str, str]] = Counter()
        self.parse_errors: Counter[tuple[str, str]] = Counter()
        # what we send is counted from the wire bytes (method or status as bytes), decoded at scrape time
        self.requests_out: Counter[tuple[str, bytes]] = Counter()
        self.responses_out: Counter[tuple[str, bytes]] = Counter()
        self.dropped: Counter[str] = Counter()


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
    def __init__(
        self,
        counters: SipCounters,
        gauges: dict[str, tuple[str, Callable[[], float]]],
        families: dict[str, tuple[str, list[str], Counter[tuple[str, ...]]]],
        labeled_gauges: dict[str, tuple[str, list[str], LabeledGauge]],
        labeled_counters: dict[str, tuple[str, list[str], LabeledGauge]],
        histograms: dict[str, tuple[str, Histogram]],
    ) -> None:
        self._c = counters
        self._labeled_counters = labeled_counters
        self._histograms = histograms
        self._gauges = gauges
        self._families = families
        self._labeled = labeled_gauges

    def collect(self) -> Iterable[Metric]:
        c = self._c
        req = CounterMetricFamily(
            "gb28181gw_sip_requests", "SIP requests received and sent", labels=["direction", "transport", "method"]
        )
        for labels, n in c.requests.items():
            req.add_metric(list(labels), n)
        for (transport, method), n in c.requests_out.items():
            req.add_metric(["out", transport, method.decode("ascii", "replace")], n)
        yield req
        resp = CounterMetricFamily(
            "gb28181gw_sip_responses", "SIP responses received and sent", labels=["direction", "transport", "status"]
        )
        for labels, n in c.responses.items():
            resp.add_metric(list(labels), n)
        for (transport, status), n in c.responses_out.items():
            resp.add_metric(["out", transport, status.decode("ascii", "replace")], n)
        yield resp
        perr = CounterMetricFamily(
            "gb28181gw_sip_parse_errors",
            "Unparseable SIP input, by the status answered",
            labels=["transport", "answer"],
        )
        for perr_labels, n in c.parse_errors.items():
            perr.add_metric(list(perr_labels), n)
        yield perr
        drop = CounterMetricFamily("gb28181gw_sip_dropped", "SIP input or output dropped, by reason", labels=["reason"])
        for reason, n in c.dropped.items():
            drop.add_metric([reason], n)
        yield drop
        for name, (help_text, value_of) in self._gauges.items():
            yield GaugeMetricFamily(name, help_text, value=value_of())
        for name, (help_text, names, counter) in self._families.items():
            fam = CounterMetricFamily(name, help_text, labels=names)
            for label_values, n in counter.items():
                fam.add_metric(list(label_values), n)
            yield fam
        for name, (help_text, names, values_of) in self._labeled.items():
            g = GaugeMetricFamily(name, help_text, labels=names)
            for label_values, v in values_of().items():
                g.add_metric(list(label_values), v)
            yield g
        for name, (help_text, names, values_of) in self._labeled_counters.items():
            fam = CounterMetricFamily(name, help_text, labels=names)
            for label_values, v in values_of().items():
                fam.add_metric(list(label_values), v)
            yield fam
        for name, (help_text, histogram) in self._histograms.items():
            yield histogram.family(name, help_text)
        info = InfoMetricFamily("gb28181gw_build", "Version of the running gateway")
        info.add_metric([], {"version": __version__})
        yield info


class Metrics:
    """The registry of one gateway and the counters its components update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.sip = SipCounters()
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self._families: dict[str, tuple[str, list[str], Counter[tuple[str, ...]]]] = {}
        self._labeled: dict[str, tuple[str, list[str], LabeledGauge]] = {}
        self._labeled_counters: dict[str, tuple[str, list[str], LabeledGauge]] = {}
        self._histograms: dict[str, tuple[str, Histogram]] = {}
        self.registry.register(
            _SipCollector(
                self.sip, self._gauges, self._families, self._labeled, self._labeled_counters, self._histograms
            )
        )

    def counter(self, name: str, help_text: str, labels: list[str] | None = None) -> Counter[tuple[str, ...]]:
        """A counter family exported as ``name`` (``_total`` is added); increment ``c[(label, …)] += 1``."""
        counter: Counter[tuple[str, ...]] = Counter()
        self._families[name] = (help_text, labels or [], counter)
        return counter

    def labeled_gauge(self, name: str, help_text: str, labels: list[str], fn: LabeledGauge) -> None:
        """Export ``fn()`` (label values → value) as gauge family ``name`` at every scrape."""
        self._labeled[name] = (help_text, labels, fn)

    def labeled_counter(self, name: str, help_text: str, labels: list[str], fn: LabeledGauge) -> None:
        """Export ``fn()`` (label values → running total) as counter family ``name`` at every scrape."""
        self._labeled_counters[name] = (help_text, labels, fn)

    def histogram(self, name: str, help_text: str, buckets: tuple[float, ...]) -> Histogram:
        """A histogram exported as ``name``; call ``observe(value)`` on it."""
        histogram = Histogram(buckets)
        self._histograms[name] = (help_text, histogram)
        return histogram

    def gauge(self, name: str, help_text: str, fn: Callable[[], float]) -> None:
        """Export ``fn()`` as gauge ``name`` at every scrape."""
        self._gauges[name] = (help_text, fn)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
