"""The operations kit in ``conf/``: the Grafana dashboard, the Prometheus alerts and the systemd unit.

A dashboard or an alert that names a metric the gateway does not export shows nothing and never
fires, silently: every ``gb28181gw_*`` name they use must be in a running gateway's ``/metrics``.
The rules must pass ``promtool check rules`` and their unit tests (``promtool test rules``); .ci/run
installs promtool, so only a machine without it skips those.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT
from tests.shell.conftest import start_gateway

DASHBOARD = ROOT / "conf" / "grafana" / "gb28181gw.json"
ALERTS = ROOT / "conf" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "conf" / "prometheus" / "alerts_test.yml"
UNIT = ROOT / "conf" / "systemd" / "gb28181gw.service"
PROMTOOL = shutil.which("promtool")

_NAME = re.compile(r"\bgb28181gw_[a-z0-9_]*[a-z0-9]\b")
#: The sample names each family type exposes besides the family's own name.
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}


def _dashboard() -> dict[str, object]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, object]) -> list[dict[str, object]]:
    out = []
    for panel in dashboard["panels"]:  # type: ignore[attr-defined]
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p["type"] != "row"]


def _dashboard_names() -> set[str]:
    dashboard = _dashboard()
    exprs = [t["expr"] for p in _panels(dashboard) for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]  # type: ignore[index]
    return {name for e in exprs for name in _NAME.findall(e)}


def _alert_names() -> set[str]:
    text = "\n".join(
        line for line in ALERTS.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")
    )
    return set(_NAME.findall(text))


async def _exported() -> dict[str, str]:
    """Every sample name a running gateway exports → the type of its family."""
    gw = await start_gateway()
    try:
        text = gw.metrics.render().decode()
    finally:
        await gw.stop()
    names = {}
    for fam in text_string_to_metric_families(text):
        for name in (
            fam.name,
            *(fam.name + suffix for suffix in _SUFFIXES.get(fam.type, ())),
            *(s.name for s in fam.samples),
        ):
            names[name] = fam.type
    return names


#: rate(), irate() and increase() applied to a series: only a counter's (or a histogram's) make sense
_RATE = re.compile(r"\b(?:rate|irate|increase)\((gb28181gw_\w+)")


def _misused(exprs: str, types: dict[str, str]) -> list[str]:
    """What is wrong in ``exprs``: a gauge's rate, a counter read without a rate, a quantile not by le."""
    wrong = [f"rate of the gauge {n}" for n in _RATE.findall(exprs) if types.get(n) not in ("counter", "histogram")]
    rated = set(_RATE.findall(exprs))
    wrong += [
        f"{n} without rate() or increase()"
        for n in set(_NAME.findall(exprs))
        if n.endswith(("_total", "_bucket")) and n not in rated
    ]
    for quantile in re.findall(r"histogram_quantile\(.*", exprs):
        if "_bucket" not in quantile or not re.search(r"by \([^)]*\ble\b", quantile):
            wrong.append(f"a quantile not over _bucket by le: {quantile}")
    return wrong


async def test_every_metric_the_dashboard_and_the_alerts_name_is_exported() -> None:
    types = await _exported()
    referenced = _dashboard_names() | _alert_names()
    assert referenced - types.keys() == set(), "names no gateway exports"
    dashboard = _dashboard()
    exprs = "\n".join(t["expr"] for p in _panels(dashboard) for t in p["targets"])
    alerts = "\n".join(line for line in ALERTS.read_text(encoding="utf-8").splitlines() if "#" not in line)
    assert _misused(exprs, types) == [] and _misused(alerts, types) == []
    # and it can fail
    assert _misused(
        "rate(gb28181gw_devices[5m])\nsum(gb28181gw_rtp_lost_total)\n"
        "histogram_quantile(0.9, sum by (instance) (rate(gb28181gw_stream_setup_seconds_bucket[5m])))",
        types,
    ) == [
        "rate of the gauge gb28181gw_devices",
        "gb28181gw_rtp_lost_total without rate() or increase()",
        "a quantile not over _bucket by le: histogram_quantile(0.9, sum by (instance) "
        "(rate(gb28181gw_stream_setup_seconds_bucket[5m])))",
    ]
    # what the issue asks them to show
    for name in (
        "gb28181gw_devices", "gb28181gw_registrations_total", "gb28181gw_keepalive_timeouts_total",
        "gb28181gw_media_sessions_active", "gb28181gw_rtp_bytes_total", "gb28181gw_rtp_lost_total",
        "gb28181gw_upstream_registered", "gb28181gw_audit_records_total", "gb28181gw_admin_refused_total",
        "gb28181gw_sip_flood_bans_total", "gb28181gw_sip_flood_dropped_total",
    ):  # fmt: skip
        assert name in _dashboard_names(), name


def test_the_name_check_can_fail() -> None:
    assert _NAME.findall('sum(rate(gb28181gw_rtp_lost_totl{instance=~"$instance"}[5m]))') == ["gb28181gw_rtp_lost_totl"]
    assert "gb28181gw_devices" in _alert_names() and "gb28181gw_build_info" in _dashboard_names()


def test_the_dashboard_is_importable_and_every_panel_has_a_query() -> None:
    dashboard = _dashboard()
    # provisioned from a file nothing replaces ${DS_...} inputs: the datasource variable chooses
    assert "__inputs" not in dashboard and "DS_PROMETHEUS" not in DASHBOARD.read_text(encoding="utf-8")
    assert 10 <= dashboard["schemaVersion"] <= 41  # type: ignore[operator]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}  # type: ignore[index]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    assert len(panels) >= 15
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:  # type: ignore[attr-defined]
            assert target["expr"].strip() and target["refId"], panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_the_alerts_cover_what_the_issue_asks() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", ALERTS.read_text(encoding="utf-8"), re.M))
    assert {
        "GatewayDown", "DeviceOffline", "SuperiorUnregistered", "RtpLossHigh", "DeviceAuthFailuresSpike",
        "SipFloodBans", "AdminRefusalsBurst", "StoreNotWritable",
    } <= alerts  # fmt: skip
    assert 'up{job="gb28181gw"} == 0' in ALERTS.read_text(encoding="utf-8")
    # up == 0 needs an up series: a lost target or a missing job has none
    assert 'absent(up{job="gb28181gw"})' in ALERTS.read_text(encoding="utf-8")


def _alert_cases(text: str) -> dict[str, set[bool]]:
    """alertname → whether alerts_test.yml expects it firing (True), quiet (False), or both."""
    cases: dict[str, set[bool]] = {}
    for name, expected in re.findall(r"alertname: (\w+)\n\s*exp_alerts:(.*)", text):
        cases.setdefault(name, set()).add(expected.strip() != "[]")
    return cases


def test_every_alert_is_tested_firing_and_quiet() -> None:
    alerts = re.findall(r"^\s*- alert: (\w+)$", ALERTS.read_text(encoding="utf-8"), re.M)
    cases = _alert_cases(ALERT_TESTS.read_text(encoding="utf-8"))
    assert {name: cases.get(name, set()) for name in alerts} == {name: {True, False} for name in alerts}
    assert _alert_cases("alertname: A\n  exp_alerts: []\nalertname: A\n  exp_alerts:\n - x") == {"A": {False, True}}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if PROMTOOL is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs it")
        pytest.skip("promtool is not installed (.ci/run installs it)")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=ALERTS.parent)


def test_promtool_checks_the_rules() -> None:
    done = _promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    done = _promtool("test", "rules", str(ALERT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text(encoding="utf-8").replace("== 0", "== = 0", 1), encoding="utf-8")
    assert _promtool("check", "rules", str(broken)).returncode != 0


def _unit() -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", UNIT.read_text(encoding="utf-8"), re.M))


def test_the_unit_runs_unprivileged_hardened_and_restarts_instead_of_reloading() -> None:
    unit = _unit()
    assert unit["User"] != "root" and unit["StateDirectory"] == "gb28181gw"
    assert unit["ConfigurationDirectory"] == "gb28181gw"
    # root owns a configuration directory systemd creates: the service's user must enter it
    assert int(unit.get("ConfigurationDirectoryMode", "0755"), 8) & 0o005 == 0o005
    assert unit["WorkingDirectory"] == "/var/lib/gb28181gw"  # the relative default store.path lands there
    assert unit["CapabilityBoundingSet"] == "" and unit["AmbientCapabilities"] == ""
    assert unit["NoNewPrivileges"] == "yes" and unit["ProtectSystem"] == "strict"
    assert unit["ProtectHome"] == "yes" and unit["PrivateTmp"] == "yes"
    assert set(unit["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    assert unit["Restart"] == "on-failure"
    assert "ExecReload" not in unit and "no reload" in UNIT.read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # ExecStart as installed (/opt/gb28181gw/bin/gb28181gw) does not exist here: point it at this venv's
    binary = Path(sys.executable).parent / "gb28181gw"
    unit = tmp_path / "gb28181gw.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/opt/gb28181gw/bin/gb28181gw", str(binary)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0 and "gb28181gw.service" not in done.stderr, done.stderr

    # and its exposure stays what the hardening gives ("OK", 2.9 here; 9.0 without the sandboxing)
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=35", str(unit)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
