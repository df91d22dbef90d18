"""Bans, refused devices, pruning and alarms (issue 11 defects 5, 6, 11): the real ``gb28181gw``
commands against a real ``gb28181gw serve`` process, with devices on real UDP sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gb28181gw.sip.auth import Challenge, authorization_for
from gb28181gw.sip.message import Response, parse_message
from tests.helpers import KEEPALIVE_BODY
from tests.hostile.test_hijack import ALARM_BODY
from tests.hostile.test_lockout import URI, attempt
from tests.hostile.test_persistence import register
from tests.process import free_port, http_get, serve, wait_ready

from .test_registrar import _message, _register

CAMERA = "34020000001320000001"
NVR = "34020000001110000001"
STRANGER = "34020000001320000077"


@dataclass
class Gw:
    proc: subprocess.Popen[str]
    sip: int
    admin: str
    store: str


def start(*settings: str, store: str | None = None) -> Gw:
    store = store or str(Path(tempfile.mkdtemp(prefix="gb28181gw-hk-")) / "gw.db")
    sip, admin = free_port(), free_port()
    args = ["--listen", "127.0.0.1", "--port", str(sip), "--admin-port", str(admin)]
    for s in settings:
        args += ["--set", s]
    proc = serve(*args, "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=", store=store)
    gw = Gw(proc, sip, f"http://127.0.0.1:{admin}", store)
    wait_ready(gw.admin, proc)
    return gw


def stop(gw: Gw) -> str:
    gw.proc.send_signal(signal.SIGTERM)
    out, _ = gw.proc.communicate(timeout=15)
    assert gw.proc.returncode == 0, out
    return out


@pytest.fixture
def gateways() -> Iterator[list[Gw]]:
    started: list[Gw] = []
    yield started
    for gw in started:
        if gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.communicate(timeout=15)


def cli(gw: Gw, *args: str, code: int = 0) -> str:
    """``gb28181gw ARGS --admin …`` as a process, stdout piped (plain rows); its stdout, or stderr on failure."""
    done = subprocess.run(
        [sys.executable, "-m", "gb28181gw", *args, "--admin", gw.admin],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GB28181GW_TIME_ZONE": "UTC+8"},
    )
    assert done.returncode == code, (done.stdout, done.stderr)
    return done.stdout if code == 0 else done.stderr


def cli_json(gw: Gw, *args: str) -> object:
    return json.loads(cli(gw, *args, "--json"))


def show(gw: Gw, device_id: str) -> dict[str, Any]:
    """The device as the API gives it (what ``device show`` prints, field by field)."""
    status, body = http_get(f"{gw.admin}/api/v1/devices/{device_id}")
    assert status == 200, body
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


def listed_devices(gw: Gw, *args: str) -> list[str]:
    """IDs ``gb28181gw devices`` lists."""
    data = cli_json(gw, "devices", *args)
    assert isinstance(data, list)
    return sorted(d["device_id"] for d in data)


def send(port: int, data: bytes, source: str = "127.0.0.1") -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(5)
        s.sendto(data, ("127.0.0.1", port))
        return s.recv(65535)


def rows(text: str) -> list[list[str]]:
    """Piped output: a header line, then tab-separated rows."""
    return [line.split("\t") for line in text.splitlines()[1:] if line]


# --- defect 5: bans --------------------------------------------------------------------------


def test_a_ban_is_shown_listed_and_lifted_by_unban_and_by_a_new_password(gateways: list[Gw]) -> None:
    gw = start("registrar.password=global-pw", "registrar.max_auth_failures=3")
    gateways.append(gw)
    cli(gw, "device", "add", CAMERA, "--password", "camera-pw", "--name", "南门")
    assert [attempt(gw.sip, CAMERA, "wrong", n) for n in range(4)] == [401, 401, 403, 403]

    shown = show(gw, CAMERA)
    assert isinstance(shown, dict)
    assert shown["banned_until"] > time.time() + 500 and shown["ban_address"] == "127.0.0.1"
    assert shown["ban_reason"] == "3 wrong passwords within 300 s for this ID from this address"
    assert shown["last_auth_failure_from"] == "127.0.0.1" and shown["last_auth_failure_reason"] == "wrong password"
    assert abs(shown["last_auth_failure_at"] - time.time()) < 30

    listed = {r[0]: r for r in rows(cli(gw, "bans"))}
    assert set(listed) == {"ip:127.0.0.1", f"id:{CAMERA}@127.0.0.1"}
    key, address, device_id, since, until, reason, failures, attempts = listed[f"id:{CAMERA}@127.0.0.1"]
    assert (address, device_id, failures, attempts) == ("127.0.0.1", CAMERA, "3", "0")
    assert listed["ip:127.0.0.1"][7] == "1"  # the 4th REGISTER was refused by the address ban
    assert "+08:00" in since and "in 9 min" in until and "wrong passwords" in reason
    as_json = cli_json(gw, "bans")
    assert isinstance(as_json, list) and {b["key"] for b in as_json} == set(listed)

    assert cli(gw, "device", "unban", CAMERA).startswith(f"lifted 2 bans of {CAMERA}")
    assert cli(gw, "bans").splitlines()[1:] == []
    assert cli(gw, "device", "unban", CAMERA) == f"{CAMERA} was not banned\n"
    assert show(gw, CAMERA)["banned_until"] is None
    assert attempt(gw.sip, CAMERA, "camera-pw", 10) == 200

    # banned again; the installer sets the password the camera really has: that lifts it
    assert [attempt(gw.sip, CAMERA, "other", n) for n in range(20, 23)] == [401, 401, 403]
    assert len(rows(cli(gw, "bans"))) == 2
    cli(gw, "device", "add", CAMERA, "--password", "other")
    assert rows(cli(gw, "bans")) == []
    assert attempt(gw.sip, CAMERA, "other", 30) == 200
    shown = show(gw, CAMERA)
    assert isinstance(shown, dict) and shown["name"] == "南门" and shown["online"]


def front_attempt(port: int, device_id: str, password: str, n: int, device_address: str | None) -> int:
    """:func:`attempt` as a front on 127.0.0.1 relays it: with the Path its ``add_path_received()``
    puts, naming ``device_address`` (none: the front's own REGISTER, without a Path)."""
    path = f"Path: <sip:127.0.0.1;lr;received=sip:{device_address}:5070>\r\n" if device_address else ""

    def exchange(s: socket.socket, data: bytes, extra: str) -> Response:
        s.sendto(data.replace(b"Content-Length: 0", f"{extra}Content-Length: 0".encode()), ("127.0.0.1", port))
        answer = parse_message(s.recv(65535))
        assert isinstance(answer, Response)
        return answer

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        first = exchange(s, register(device_id, n), path)
        if first.status != 401:
            return first.status
        ch = Challenge.parse(first.headers["www-authenticate"])
        creds = authorization_for(ch, method="REGISTER", uri=URI, username=device_id, password=password)
        return exchange(s, register(device_id, n + 1000), f"{path}Authorization: {creds.serialize()}\r\n").status


def test_behind_a_trusted_front_a_device_is_shown_the_bans_of_its_own_address(gateways: list[Gw]) -> None:
    # a node judges a device behind a trusted front by the address in the front's Path, not by the
    # front's (which is the device's host: where requests go): its view must name the bans that
    # refuse it, which are that address's
    gw = start("registrar.password=pw", "registrar.max_auth_failures=3", "registrar.trusted_proxies=127.0.0.1/32")
    gateways.append(gw)
    assert front_attempt(gw.sip, CAMERA, "pw", 1, "127.0.0.5") == 200
    assert front_attempt(gw.sip, NVR, "pw", 2, "127.0.0.6") == 200
    # another ID guesses from the camera's address (behind the same NAT): that address is banned
    assert [front_attempt(gw.sip, STRANGER, "wrong", 10 + n, "127.0.0.5") for n in range(3)] == [401, 401, 403]
    assert front_attempt(gw.sip, CAMERA, "pw", 20, "127.0.0.5") == 403
    shown = show(gw, CAMERA)
    assert shown["host"] == "127.0.0.1"
    assert shown["banned_until"] is not None and shown["ban_address"] == "127.0.0.5", shown
    # a stranger's guesses from the front's own address (no Path) ban that address, which refuses
    # none of the devices behind the front: their views show no ban
    assert [front_attempt(gw.sip, STRANGER, "wrong", 30 + n, None) for n in range(3)] == [401, 401, 403]
    assert front_attempt(gw.sip, NVR, "pw", 40, "127.0.0.6") == 200
    assert show(gw, NVR)["banned_until"] is None
    assert {r[0] for r in rows(cli(gw, "bans"))} == {
        "ip:127.0.0.5",
        f"id:{STRANGER}@127.0.0.5",
        "ip:127.0.0.1",
        f"id:{STRANGER}@127.0.0.1",
    }


def test_bans_lift_one_key_and_unknown_keys_and_devices_are_errors(gateways: list[Gw]) -> None:
    gw = start("registrar.password=pw", "registrar.max_auth_failures=2")
    gateways.append(gw)
    assert [attempt(gw.sip, STRANGER, "guess", n) for n in range(2)] == [401, 403]
    assert cli(gw, "bans", "lift", f"id:{STRANGER}@127.0.0.1") == f"lifted id:{STRANGER}@127.0.0.1\n"
    assert [r[0] for r in rows(cli(gw, "bans"))] == ["ip:127.0.0.1"]
    err = cli(gw, "bans", "lift", "ip:10.9.9.9", code=1)
    assert "error: no ban ip:10.9.9.9" in err and "gb28181gw bans" in err
    err = cli(gw, "device", "unban", "34020000001320000099", code=1)
    assert "no device 34020000001320000099" in err
    assert "not a device ID" in cli(gw, "device", "unban", "12345", code=2)
    # a banned ID that was never added is still unbanned by its ID
    assert cli(gw, "device", "unban", STRANGER).startswith("lifted 1 ban of")
    assert rows(cli(gw, "bans")) == []


@pytest.mark.parametrize("persist", [True, False])
def test_bans_survive_a_restart_only_when_configured(gateways: list[Gw], persist: bool) -> None:
    settings = (
        "registrar.password=pw",
        "registrar.max_auth_failures=2",
        f"registrar.persist_bans={str(persist).lower()}",
    )
    gw = start(*settings)
    gateways.append(gw)
    assert [attempt(gw.sip, CAMERA, "wrong", n) for n in range(2)] == [401, 403]
    assert attempt(gw.sip, CAMERA, "pw", 3) == 403  # refused by the address ban: counted on it
    assert attempt(gw.sip, STRANGER, "wrong", 5, source="127.0.0.2") == 401
    assert attempt(gw.sip, STRANGER, "wrong", 6, source="127.0.0.2") == 403
    cli(gw, "bans", "lift", "ip:127.0.0.2")  # a lifted ban stays lifted
    before = cli_json(gw, "bans")
    stop(gw)
    again = start(*settings, store=gw.store)
    gateways.append(again)
    after = cli_json(again, "bans")
    if persist:
        assert isinstance(before, list) and len(before) == 3 and isinstance(after, list)
        assert [b for b in after if b["key"] != "ip:127.0.0.1"] == [b for b in before if b["key"] != "ip:127.0.0.1"]
        # every field, the end time too; and the REGISTER it refused since it was first written
        (address_ban,) = [b for b in after if b["key"] == "ip:127.0.0.1"]
        assert address_ban == {**next(b for b in before if b["key"] == "ip:127.0.0.1"), "attempts": 1}
        assert attempt(again.sip, CAMERA, "pw", 10) == 403
    else:
        assert after == [] and attempt(again.sip, CAMERA, "pw", 10) == 200


# --- defect 6: names -------------------------------------------------------------------------


def test_the_operators_name_survives_registration_and_a_restart(gateways: list[Gw]) -> None:
    gw = start()
    gateways.append(gw)
    cli(gw, "device", "add", CAMERA, "--name", "南门 一号")
    assert send(gw.sip, _register(CAMERA, "z9hG4bKn1")).startswith(b"SIP/2.0 200")
    shown = show(gw, CAMERA)
    assert isinstance(shown, dict) and (shown["name"], shown["reported_name"]) == ("南门 一号", "")
    stop(gw)
    again = start(store=gw.store)
    gateways.append(again)
    shown = show(again, CAMERA)
    assert isinstance(shown, dict) and shown["name"] == "南门 一号"


# --- defect 11: refused devices, pruning, alarms ------------------------------------------------


def test_devices_refused_lists_who_keeps_knocking(gateways: list[Gw]) -> None:
    gw = start("registrar.require_provisioned=true")
    gateways.append(gw)
    for n in range(3):
        assert send(gw.sip, register(STRANGER, n)).startswith(b"SIP/2.0 403")
    # a camera that believes it is registered (our store was lost) keeps sending keepalives
    for n in range(2):
        assert send(gw.sip, _message(CAMERA, KEEPALIVE_BODY, f"z9hG4bKk{n}"), "127.0.0.2").startswith(b"SIP/2.0 404")
    listed = rows(cli(gw, "devices", "refused"))
    assert [r[:4] for r in listed] == [
        [CAMERA, "127.0.0.2", "not-registered", "2"],
        [STRANGER, "127.0.0.1", "not-provisioned", "3"],
    ]
    assert "has not been added" in listed[1][6]
    data = cli_json(gw, "devices", "refused", "--limit", "1")
    assert isinstance(data, list) and [r["device_id"] for r in data] == [CAMERA]
    # once added, it registers and leaves the list
    cli(gw, "device", "add", STRANGER)
    assert send(gw.sip, register(STRANGER, 9)).startswith(b"SIP/2.0 200")
    assert [r[0] for r in rows(cli(gw, "devices", "refused"))] == [CAMERA]
    # `devices` alone still lists, with its options
    assert listed_devices(gw, "--online") == [STRANGER]


def test_a_device_that_registers_through_a_trusted_front_leaves_the_refused_list(gateways: list[Gw]) -> None:
    # its keepalives came through the front, refused under the front's address (a MESSAGE carries
    # no Path); its REGISTER through the front is judged by its own address: getting in, it no
    # longer knocks at either
    gw = start("registrar.trusted_proxies=127.0.0.1/32")
    gateways.append(gw)
    for n in range(2):
        assert send(gw.sip, _message(CAMERA, KEEPALIVE_BODY, f"z9hG4bKk{n}")).startswith(b"SIP/2.0 404")
    assert [r[:4] for r in rows(cli(gw, "devices", "refused"))] == [[CAMERA, "127.0.0.1", "not-registered", "2"]]
    assert front_attempt(gw.sip, CAMERA, "", 1, "127.0.0.5") == 200
    assert rows(cli(gw, "devices", "refused")) == []


def test_devices_prune_removes_only_the_long_silent(gateways: list[Gw]) -> None:
    gw = start()
    gateways.append(gw)
    old, online, provisioned = "34020000001320000011", "34020000001320000012", "34020000001320000013"
    assert send(gw.sip, _register(old, "z9hG4bKp1")).startswith(b"SIP/2.0 200")
    assert send(gw.sip, _register(old, "z9hG4bKp2", expires=0)).startswith(b"SIP/2.0 200")
    assert send(gw.sip, _register(online, "z9hG4bKp3")).startswith(b"SIP/2.0 200")
    cli(gw, "device", "add", provisioned, "--password", "pw")
    assert rows(cli(gw, "devices", "prune", "--older-than", "1h", "--dry-run")) == []
    time.sleep(2.1)
    dry = cli(gw, "devices", "prune", "--older-than", "2s", "--dry-run")
    assert [r[0] for r in rows(dry)] == [old]
    with_provisioned = cli_json(gw, "devices", "prune", "--older-than", "2s", "--dry-run", "--provisioned")
    assert isinstance(with_provisioned, dict) and with_provisioned["dry_run"] is True
    assert [d["device_id"] for d in with_provisioned["devices"]] == [old, provisioned]
    assert listed_devices(gw) == [old, online, provisioned]  # a dry run removes nothing
    assert [r[0] for r in rows(cli(gw, "devices", "prune", "--older-than", "2s"))] == [old]
    assert listed_devices(gw) == [online, provisioned]
    assert rows(cli(gw, "devices", "prune", "--older-than", "2s")) == []
    assert "not an age" in cli(gw, "devices", "prune", "--older-than", "soon", code=2)
    assert "longer than 0" in cli(gw, "devices", "prune", "--older-than", "0d", code=2)


def test_alarms_lists_stored_alarms_newest_first(gateways: list[Gw]) -> None:
    gw = start()
    gateways.append(gw)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nvr:
        nvr.bind(("127.0.0.1", 0))
        nvr.settimeout(5)

        def exchange(data: bytes) -> bytes:
            nvr.sendto(data, ("127.0.0.1", gw.sip))
            while True:  # skip the gateway's own Alarm response MESSAGEs
                answer = nvr.recv(65535)
                if answer.startswith(b"SIP/2.0"):
                    return answer

        assert exchange(_register(NVR, "z9hG4bKa0")).startswith(b"SIP/2.0 200")
        for n, source in enumerate((CAMERA, NVR, CAMERA)):
            body = ALARM_BODY.replace(CAMERA.encode(), source.encode()).replace(b"<SN>9", f"<SN>{n + 10}".encode())
            body = body.replace(b"10:00:00", f"10:00:0{n}".encode())
            assert exchange(_message(NVR, body, f"z9hG4bKa{n + 1}")).startswith(b"SIP/2.0 200")
    deadline = time.monotonic() + 10
    while len(rows(cli(gw, "alarms"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    listed = rows(cli(gw, "alarms"))
    assert [(r[1], r[2], r[4], r[6]) for r in listed] == [
        (CAMERA, NVR, "2 (device)", "2026-12-02T10:00:02"),
        (NVR, NVR, "2 (device)", "2026-12-02T10:00:01"),
        (CAMERA, NVR, "2 (device)", "2026-12-02T10:00:00"),
    ]
    assert [r[6] for r in rows(cli(gw, "alarms", NVR, "--limit", "2"))] == [
        "2026-12-02T10:00:02",
        "2026-12-02T10:00:01",
    ]
    data = cli_json(gw, "alarms", CAMERA)
    assert isinstance(data, list) and [a["alarm_time"] for a in data] == ["2026-12-02T10:00:02", "2026-12-02T10:00:00"]
    assert "+08:00" in listed[0][0]
    assert "not a device ID" in cli(gw, "alarms", "nope", code=2)


def test_the_prune_endpoint_refuses_what_is_not_an_age(gateways: list[Gw]) -> None:
    gw = start()
    gateways.append(gw)
    for body in ([], {"older_than": "30d"}, {"older_than": True}, {"older_than": -1}, {"older_than": 0},
                 {"older_than": 60, "dry_run": "yes"}):  # fmt: skip
        req = urllib.request.Request(
            gw.admin + "/api/v1/devices/prune",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 400 and "older_than" in json.loads(err.value.read())["error"], body
