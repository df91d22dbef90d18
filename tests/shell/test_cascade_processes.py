"""Two gateway processes chained (issue 12 item 2): site A registers upward to district B.

B runs with ``registrar.accept_platforms`` (a platform ID, type 200, may register to it as a
device) and a password; A has an ``[[upstream]]`` pointing at B. B's ``gb28181gw devices``
lists A online; B is killed and started again on the same ports, and A, never restarted,
backs off and registers again. The commands are the real binary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.process import free_port, serve, wait_ready

from .conftest import require_sipp

SIPP_DIR = Path(__file__).parent / "sipp"

SITE = "34020000002000000001"
DISTRICT = "34010000002000000001"
PASSWORD = "district-pass"


def cli(admin: str, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "gb28181gw", *args, "--json", "--admin", admin],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "GB28181GW_TIME_ZONE": "UTC+8"},
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout)


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def start_district(sip: int, admin: int, store: str) -> subprocess.Popen[str]:
    proc = serve(
        "--id", DISTRICT, "--listen", "127.0.0.1", "--port", str(sip), "--admin-port", str(admin),
        "--set", "registrar.accept_platforms=true", "--set", f"registrar.password={PASSWORD}",
        "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=", "--set", "media.workers=0",
        store=store,
    )  # fmt: skip
    wait_ready(f"http://127.0.0.1:{admin}", proc)
    return proc


def site_config(tmp_path: Path, district_port: int) -> Path:
    """Site A's config: district B as its superior, with keepalives and retries quick enough for a test."""
    config = tmp_path / "site.toml"
    config.write_text(
        "[[upstream]]\n"
        'name = "district"\n'
        f'id = "{DISTRICT}"\n'
        'host = "127.0.0.1"\n'
        f"port = {district_port}\n"
        f'password = "{PASSWORD}"\n'
        "keepalive_interval = 1\n"
        "keepalive_misses = 2\n"
        "retry_interval = 1.0\n"
        "retry_max = 2.0\n"
    )
    config.chmod(0o600)
    return config


def site_online(admin: str) -> bool:
    devices = cli(admin, "devices")
    return any(d["device_id"] == SITE and d.get("online") for d in devices)


def test_site_registers_to_district_and_again_after_the_district_restarts(tmp_path: Path) -> None:
    b_sip, b_admin, a_sip, a_admin = free_port(), free_port(), free_port(), free_port()
    b_url, a_url = f"http://127.0.0.1:{b_admin}", f"http://127.0.0.1:{a_admin}"
    config = site_config(tmp_path, b_sip)
    b_store = str(tmp_path / "b.db")
    b = start_district(b_sip, b_admin, b_store)
    a = serve(
        "-c", str(config), "--id", SITE, "--listen", "127.0.0.1", "--port", str(a_sip), "--admin-port", str(a_admin),
        "--set", "sip.t1=0.05", "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=",
        "--set", "media.workers=0",
        store=str(tmp_path / "a.db"),
    )  # fmt: skip
    try:
        wait_ready(a_url, a)
        until(lambda: site_online(b_url), 15, "B to list A online")
        (row,) = cli(a_url, "upstreams")
        assert row["name"] == "district" and row["state"] == "registered" and row["id"] == DISTRICT
        assert row["last_register"] and row["register_failures"] == 0
        # B answers A's keepalives
        until(lambda: bool(cli(a_url, "upstreams")[0]["last_keepalive"]), 10, "a keepalive answered")

        b.kill()  # no goodbye: A must notice by itself
        b.communicate(timeout=10)
        until(lambda: cli(a_url, "upstreams")[0]["state"] != "registered", 20, "A to notice B is gone")
        b = start_district(b_sip, b_admin, b_store)
        until(lambda: cli(a_url, "upstreams")[0]["state"] == "registered", 30, "A to register with the restarted B")
        assert site_online(b_url)
        (row,) = cli(a_url, "upstreams")
        assert row["keepalive_failures"] >= 2 or row["register_failures"] >= 1
        assert a.poll() is None  # the same process all along
        a.send_signal(signal.SIGTERM)  # a clean shutdown unregisters (Expires: 0)
        a_out = a.communicate(timeout=15)[0]
        assert "unregistered upward" in a_out, a_out[-3000:]
        assert not site_online(b_url)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            except ValueError:
                pass  # already read to the end


def test_sipp_superior_challenges_gets_keepalives_probes_and_sees_us_unregister(tmp_path: Path) -> None:
    """A SIPp superior (tests/shell/sipp/superior_uas.xml) checks every message of ours."""
    sipp = require_sipp()
    sup_port, a_sip, a_admin = free_port(), free_port(), free_port()
    trace = tmp_path / "superior.msg"
    superior = subprocess.Popen(
        [sipp, "-sf", str(SIPP_DIR / "superior_uas.xml"), "-i", "127.0.0.1", "-p", str(sup_port),
         "-timeout", "60s", "-nostdin", "-trace_msg", "-message_file", str(trace),
         "-trace_err", "-error_file", str(tmp_path / "superior.err")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    time.sleep(0.3)  # let it bind
    config = tmp_path / "site.toml"
    config.write_text(
        "[[upstream]]\n"
        'name = "district"\n'
        f'id = "{DISTRICT}"\n'
        'domain = "3401000000"\n'
        'host = "127.0.0.1"\n'
        f"port = {sup_port}\n"
        'password = "upper-pass"\n'
        'gb_version = "3.0"\n'
        "keepalive_interval = 1\n"
    )
    config.chmod(0o600)
    a = serve(
        "-c", str(config), "--id", SITE, "--listen", "127.0.0.1", "--port", str(a_sip), "--admin-port", str(a_admin),
        "--set", "media.workers=0", store=str(tmp_path / "a.db"),
    )  # fmt: skip
    a_url = f"http://127.0.0.1:{a_admin}"
    try:
        wait_ready(a_url, a)
        until(lambda: bool(cli(a_url, "upstreams")[0]["last_keepalive"]), 15, "a keepalive answered")
        until(lambda: "CSeq: 1 OPTIONS" in received(trace), 10, "our 200 to the superior's OPTIONS")
        (row,) = cli(a_url, "upstreams")
        assert row["state"] == "registered" and row["clock_offset"] < -1e7  # its Date says 2024
        plain = subprocess.run(
            [sys.executable, "-m", "gb28181gw", "upstreams", "--admin", a_url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        header, line = plain.stdout.splitlines()
        assert header.split("\t")[:4] == ["name", "ID", "address", "state"]
        assert line.split("\t")[:4] == ["district", DISTRICT, f"udp:127.0.0.1:{sup_port}", "registered"]
        assert "s ago" in line or "now" in line
        a.send_signal(signal.SIGTERM)
        out = a.communicate(timeout=15)[0]
        assert "unregistered upward" in out, out[-3000:]
        superior.send_signal(signal.SIGUSR1)  # SIPp: stop gracefully; exit 0 only if every call passed
        sipp_out = superior.communicate(timeout=15)[0]
        assert superior.returncode == 0, sipp_out[-3000:] + (tmp_path / "superior.err").read_text(errors="replace")
        assert "Expires: 0" in trace.read_text(errors="replace")
    finally:
        for proc in (a, superior):
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=10)
            except ValueError:
                pass


def received(trace: Path) -> str:
    """The responses SIPp received (its -trace_msg file), to find our answer to its OPTIONS."""
    text = trace.read_text(errors="replace") if trace.exists() else ""
    blocks = text.split("message received")
    return "\n".join(
        b.split("-----", 1)[0] for b in blocks[1:] if b.lstrip(" [0123456789]bytes:\n").startswith("SIP/2.0 200")
    )


def test_config_command_shows_each_superior_with_its_password_redacted(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(
        '[[upstream]]\nname = "district"\nid = "34010000002000000001"\nhost = "192.0.2.1"\npassword = "upper-pass"\n'
        '[[upstream]]\nname = "city"\nid = "34000000002000000001"\nhost = "192.0.2.2"\nport = 5070\n'
    )
    config.chmod(0o600)
    done = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "config", "-c", str(config)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in done.stdout.splitlines()}
    assert rows["upstream.district.password"][1] == "********"
    assert "upper-pass" not in done.stdout
    assert rows["upstream.city.port"][1] == "5070"
    assert rows["upstream.city.local_id"][1] == "34020000002000000001"  # derived: gateway.id
    bad = tmp_path / "bad.toml"
    bad.write_text('[[upstream]]\nname = "city"\nid = "34000000002000000001"\nhost = "192.0.2.2"\nport = 0.5\n')
    done = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "config", "-c", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 3 and "upstream.city.port" in done.stderr, done.stderr
