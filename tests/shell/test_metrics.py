"""metrics.py owns every gb28181gw_* family: what a running gateway exports is exactly its table."""

from __future__ import annotations

import asyncio
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gb28181gw import metrics
from gb28181gw.app import Gateway
from gb28181gw.metrics import FAMILIES, Family, Kind, Metrics
from tests.helpers import request


def _exported(gateway: Gateway) -> dict[str, tuple[str, str, set[str]]]:
    """gb28181gw_* family name → (type, help, label names seen in its samples)."""
    out = {}
    for fam in text_string_to_metric_families(gateway.metrics.render().decode()):
        if fam.name.startswith("gb28181gw_"):
            labels = {name for s in fam.samples for name in s.labels if name != "le"}
            out[fam.name] = (fam.type, fam.documentation, labels)
    return out


def _as_exposed(f: Family) -> tuple[str, str, str]:
    """(name, type, help) as the text format shows ``f``: an info family is a ``_info`` gauge there."""
    if f.kind is Kind.INFO:
        return f.name + "_info", "gauge", f.help
    return f.name, f.kind.value, f.help


async def test_a_gateway_exports_exactly_the_families_of_metrics_py(gateway: Gateway) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_sendto(sock, request("OPTIONS"), ("127.0.0.1", gateway.stack.port))
        # a request in and a response out: the SIP families have samples
        await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 5)
    exported = _exported(gateway)
    assert {(name, kind, help_text) for name, (kind, help_text, _) in exported.items()} == {
        _as_exposed(f) for f in FAMILIES
    }
    for f in FAMILIES:
        seen = exported[_as_exposed(f)[0]][2]
        if f.kind is Kind.INFO:
            assert seen == set(f.labels) == {"version", "compiled"}
        elif seen:  # families without samples yet show no labels
            assert seen == set(f.labels), f.name
    assert exported["gb28181gw_sip_requests"][2] == {"direction", "transport", "method"}
    # the suite runs the .py sources (tests/conftest.py): tests/test_compiled.py has the compiled label
    assert 'compiled="none"' in gateway.metrics.render().decode()


def test_the_table_lists_every_family_of_the_module_once() -> None:
    declared = [v for v in vars(metrics).values() if isinstance(v, Family)]
    assert sorted(f.name for f in declared) == sorted(f.name for f in FAMILIES)
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)
    assert all(f.name.startswith("gb28181gw_") and f.help for f in FAMILIES)
    assert all(bool(f.buckets) == (f.kind is Kind.HISTOGRAM) for f in FAMILIES)


def test_a_family_is_registered_once_and_as_its_type() -> None:
    m = Metrics()
    m.counter(metrics.REGISTRATIONS)
    with pytest.raises(ValueError, match="gb28181gw_registrations is registered twice"):
        m.counter(metrics.REGISTRATIONS)
    with pytest.raises(ValueError, match="gb28181gw_devices is a gauge, not a counter"):
        m.counter(metrics.DEVICES)
    with pytest.raises(ValueError, match="gb28181gw_devices has labels"):
        m.gauge(metrics.DEVICES, lambda: 1.0)
    with pytest.raises(ValueError, match="gb28181gw_sip_requests is registered twice"):
        m.counter(metrics.SIP_REQUESTS)  # built in: the SIP shell's plain counters
    m.labeled_gauge(metrics.DEVICES, lambda: {("online",): 2.0})
    m.histogram(metrics.STREAM_SETUP_SECONDS).observe(0.3)
    text = m.render().decode()
    assert 'gb28181gw_devices{state="online"} 2.0' in text
    assert 'gb28181gw_stream_setup_seconds_bucket{le="0.5"} 1.0' in text


def test_the_hot_counters_count_like_a_counter_with_the_dicts_own_item_assignment() -> None:
    """metrics.Counts: a Counter (a missing key reads 0, ``+=`` counts) whose item assignment and
    deletion are the dict's own, so that CPython keeps the dict's C slot for ``c[key] = n``."""
    from collections import Counter

    from gb28181gw.metrics import Counts, SipCounters

    c: Counts[tuple[str, ...]] = Counts()
    assert c["in", "UDP", "MESSAGE"] == 0 and not c
    c["in", "UDP", "MESSAGE"] += 1
    c["in", "UDP", "MESSAGE"] += 1
    assert c == Counter({("in", "UDP", "MESSAGE"): 2}) and isinstance(c, Counter)
    assert type(c).__setitem__ is dict.__setitem__ and type(c).__delitem__ is dict.__delitem__
    del c["in", "UDP", "MESSAGE"]
    with pytest.raises(KeyError):
        del c["in", "UDP", "MESSAGE"]  # as a dict's (Counter's own would ignore it; nothing deletes)
    assert isinstance(SipCounters().requests, Counts)
