"""The CLI's conventions (issue 11: defects 3, 7, 8, 9 and the polish of 13), proven with the real
``gb28181gw`` binary against a real ``gb28181gw serve`` process.

The device is a loopback UDP socket that registers, answers every MESSAGE with 200 OK and then
never sends the Response: a device too busy (or too broken) to answer queries, which is where
the CLI used to blame the gateway. Output is read piped (plain rows) and through a 40-column
pseudo-terminal (rich's tables), where all 20 digits of an ID must stay on one line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gb28181gw.sip.message import Request, make_response, parse_message
from tests.hostile.test_persistence import GB2312_AGENT, register
from tests.process import free_port, http_get, on_terminal, serve, wait_ready

BIN = str(Path(sys.executable).parent / "gb28181gw")
DEVICE = "34020000001320000001"
UNKNOWN = "34020000001320009999"
NVR = "34020000001180000007"
CHANNELS = ("34020000001310000071", "34020000001310000072")
QUERY_TIMEOUT = 6  # longer than the 5 s the CLI used to give up after


class QuietDevice:
    """Registers from a loopback socket, then answers every MESSAGE 200 OK and nothing more
    (but a Catalog query, when it is given ``channels`` to answer with)."""

    def __init__(self, gw_port: int, device_id: str = DEVICE, *, channels: tuple[str, ...] = ()) -> None:
        self.device_id = device_id
        self.channels = channels
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.sock.sendto(register(device_id, int(device_id[-4:])), ("127.0.0.1", gw_port))
        assert self.sock.recv(65535).startswith(b"SIP/2.0 200")
        self.sock.settimeout(0.2)
        self.messages: list[bytes] = []  # bodies of the MESSAGEs the gateway sent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            msg = parse_message(data)
            if isinstance(msg, Request) and msg.method == "MESSAGE":
                self.messages.append(msg.body)
                self.sock.sendto(make_response(msg, 200, to_tag="quiet").serialize(), addr)
                sn = re.search(rb"<SN>(\d+)</SN>", msg.body)
                if self.channels and b"<CmdType>Catalog</CmdType>" in msg.body and sn:
                    self.sock.sendto(self._catalog(int(sn[1])), addr)

    def _catalog(self, sn: int) -> bytes:
        items = "".join(
            f"<Item><DeviceID>{ch}</DeviceID><Name>大门口</Name><Status>ON</Status>"
            f"<ParentID>{self.device_id}</ParentID></Item>"
            for ch in self.channels
        )
        body = (
            f'<?xml version="1.0" encoding="GB2312"?>\r\n<Response><CmdType>Catalog</CmdType><SN>{sn}</SN>'
            f"<DeviceID>{self.device_id}</DeviceID><SumNum>{len(self.channels)}</SumNum>"
            f'<DeviceList Num="{len(self.channels)}">{items}</DeviceList></Response>\r\n'
        ).encode("gb2312")
        port = self.sock.getsockname()[1]
        head = (
            f"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKcat{sn}\r\n"
            f"From: <sip:{self.device_id}@3402000000>;tag=cat{sn}\r\nTo: <sip:34020000002000000001@3402000000>\r\n"
            f"Call-ID: catalog-{sn}@127.0.0.1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
            f"Content-Type: Application/MANSCDP+xml\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@dataclass
class Gw:
    admin: str
    sip_port: int
    device: QuietDevice  # never answers a query
    nvr: QuietDevice  # answers a Catalog query with its channels


@pytest.fixture(scope="module")
def gw() -> Iterator[Gw]:
    sip_port, admin_port = free_port(), free_port()
    proc = serve(
        "--listen", "127.0.0.1", "--port", str(sip_port), "--admin-port", str(admin_port),
        "--set", f"devices.query_timeout={QUERY_TIMEOUT}", "--set", "devices.catalog_first_timeout=1",
        "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=", "--set", "media.workers=0",
    )  # fmt: skip
    admin = f"http://127.0.0.1:{admin_port}"
    devices: list[QuietDevice] = []
    try:
        wait_ready(admin, proc)
        devices.append(QuietDevice(sip_port))
        devices.append(QuietDevice(sip_port, NVR, channels=CHANNELS))
        yield Gw(admin, sip_port, *devices)
    finally:
        for device in devices:
            device.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)


@dataclass
class Run:
    code: int
    out: str
    err: str


def cli(gw: Gw | str, *args: str, env: dict[str, str] | None = None) -> Run:
    """The binary with stdout and stderr piped (not a terminal)."""
    admin = gw if isinstance(gw, str) else gw.admin
    done = subprocess.run(
        [BIN, *args, "--admin", admin], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )
    return Run(done.returncode, done.stdout, done.stderr)


def tty(gw: Gw, *args: str, columns: int = 40) -> list[str]:
    """The binary on a pseudo-terminal ``columns`` wide; its lines without colour codes."""
    code, shown = on_terminal([BIN, *args, "--admin", gw.admin], columns=columns)
    assert code == 0, shown
    return shown.replace("\r", "").splitlines()


# --- defect 3: a slow device is the device's fault, in the gateway's words ----------------


def test_a_silent_device_is_reported_by_the_gateways_reason_not_as_a_dead_gateway(gw: Gw) -> None:
    started = time.monotonic()
    r = cli(gw, "device", "status", DEVICE)
    assert time.monotonic() - started >= QUERY_TIMEOUT  # the CLI waited for the gateway's verdict
    assert r.code == 1, r
    assert f"error: device {DEVICE} sent no DeviceStatus response within {QUERY_TIMEOUT} s" in r.err
    assert "hint: is it online" in r.err and "devices.query_timeout" in r.err
    assert "cannot reach" not in r.err and r.out == ""


def test_the_api_answers_a_device_timeout_with_504(gw: Gw) -> None:
    status, body = http_get_long(gw.admin + f"/api/v1/devices/{DEVICE}/info")
    assert status == 504
    assert json.loads(body)["error"] == f"device {DEVICE} sent no DeviceInfo response within {QUERY_TIMEOUT} s"


def test_a_record_search_that_times_out_names_record_info(gw: Gw) -> None:
    r = cli(gw, "records", DEVICE, "--from", "2024-05-06", "--to", "2024-05-06")
    assert r.code == 1
    assert f"device {DEVICE} sent no RecordInfo response within {QUERY_TIMEOUT} s" in r.err
    assert "catalog" not in r.err
    # the day went to the device as GB dateTimes, its first and last second
    body = gw.device.messages[-1].decode("gb2312")
    assert "<StartTime>2024-05-06T00:00:00</StartTime>" in body and "<EndTime>2024-05-06T23:59:59</EndTime>" in body


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--from", "yesterday", "--to", "2020-01-01"], "is not before --to 2020-01-01T23:59:59"),
        (["--from", "2024-05-06T10:00", "--to", "2024-05-06T09:00"], "is not before"),
        (["--from", "2024-13-01"], "'2024-13-01' is not a time"),
        (["--from", "last tuesday"], "YYYY-MM-DD[THH:MM[:SS]], today, yesterday"),
        (["--from", "2024-05-06", "--to", "soon"], "'soon' is not a time"),
    ],
)
def test_record_dates_are_checked_before_anything_reaches_the_device(gw: Gw, args: list[str], says: str) -> None:
    before = len(gw.device.messages)
    r = cli(gw, "records", DEVICE, *args)
    assert r.code == 2 and says in r.err, r
    assert len(gw.device.messages) == before


@pytest.mark.parametrize(
    "query", ["from=yesterday&to=now", "from=2024-05-06T00:00:00&to=2024-05-01T00:00:00", "from=2024-05-06T00:00:00"]
)
def test_the_api_checks_record_dates_too_before_the_device_sees_them(gw: Gw, query: str) -> None:
    status, body = http_get(f"{gw.admin}/api/v1/channels/{DEVICE}/records?{query}")
    assert status == 400 and "YYYY-MM-DDTHH:MM:SS" in json.loads(body)["error"], body


def test_relative_record_times_are_the_sites_clock(gw: Gw) -> None:
    before = len(gw.device.messages)
    cli(gw, "records", DEVICE, "--from", "-2h")
    body = gw.device.messages[before].decode("gb2312")
    start = re.search(r"<StartTime>(.*)</StartTime>", body)
    end = re.search(r"<EndTime>(.*)</EndTime>", body)
    assert start and end
    beijing = time.gmtime(time.time() + 8 * 3600)
    assert end[1].startswith(time.strftime("%Y-%m-%dT%H", beijing)[:13])
    spans = time.mktime(time.strptime(end[1], "%Y-%m-%dT%H:%M:%S")) - time.mktime(
        time.strptime(start[1], "%Y-%m-%dT%H:%M:%S")
    )
    assert spans == 2 * 3600


def http_get_long(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=QUERY_TIMEOUT + 10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- defect 8: one error style, 404 for what does not exist ------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["channels", UNKNOWN],
        ["device", "show", UNKNOWN],
        ["device", "info", UNKNOWN],
        ["device", "status", UNKNOWN],
        ["device", "remove", UNKNOWN],
        ["catalog", "refresh", UNKNOWN],
        ["records", UNKNOWN, "--from", "today"],
        ["ptz", UNKNOWN, "stop"],
        ["preset", UNKNOWN, "call", "1"],
        ["control", UNKNOWN, "reboot"],
    ],
)
def test_an_unknown_id_is_one_error_with_a_hint(gw: Gw, args: list[str]) -> None:
    r = cli(gw, *args)
    assert r.code == 1, r
    assert r.out == ""
    first, second = r.err.splitlines()[:2]
    assert first.startswith(f"error: no device {UNKNOWN}") or first == f"error: no device or channel {UNKNOWN}"
    assert second.startswith("hint: see `gb28181gw devices`")
    assert "HTTP" not in r.err and "502" not in r.err


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/devices/{UNKNOWN}",
        f"/api/v1/channels?device={UNKNOWN}",
        f"/api/v1/devices/{UNKNOWN}/info",
        f"/api/v1/devices/{UNKNOWN}/status",
        f"/api/v1/channels/{UNKNOWN}/records?from=2024-05-06T00:00:00&to=2024-05-06T01:00:00",
        "/api/v1/no-such-thing",
    ],
)
def test_the_api_answers_404_in_json_for_what_does_not_exist(gw: Gw, path: str) -> None:
    status, body = http_get(gw.admin + path)
    assert status == 404
    answer = json.loads(body)
    assert answer["error"]


def test_the_api_refuses_a_record_type_the_standard_does_not_have(gw: Gw) -> None:
    status, body = http_get(
        gw.admin + f"/api/v1/channels/{UNKNOWN}/records?from=2024-05-06T00:00:00&to=2024-05-06T01:00:00&type=motion"
    )
    assert status == 400 and "type must be one of all, time, alarm, manual" in json.loads(body)["error"]


def test_admin_without_a_scheme_and_a_gateway_that_is_not_there() -> None:
    port = free_port()
    r = cli(f"127.0.0.1:{port}", "devices")
    assert r.code == 1 and r.err.startswith(f"error: cannot reach the gateway at http://127.0.0.1:{port}")
    assert "hint: is `gb28181gw serve` running?" in r.err
    assert cli("ftp://127.0.0.1:1", "devices").code == 2  # a usage error, before any request


def test_an_admin_address_that_accepts_but_never_answers_is_an_error_not_an_endless_wait() -> None:
    # e.g. --admin naming the SIP port: a device request (which waits as long as the gateway
    # bounds it) must first learn that a gateway answers at all
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        started = time.monotonic()
        r = cli(f"127.0.0.1:{silent.getsockname()[1]}", "device", "status", DEVICE)
    assert r.code == 1 and "did not answer GET /healthz within 5 s" in r.err, r.err
    assert "not its SIP port?" in r.err and time.monotonic() - started < 30


def test_control_characters_a_stranger_sends_never_reach_the_terminal(gw: Gw) -> None:
    # an unauthenticated REGISTER whose "ID" sets the operator's window title and rewrites the line
    evil = "\x1b]0;pwned\x07\r"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        data = register(DEVICE, 4242).replace(f"sip:{DEVICE}@".encode(), f"sip:{evil}@".encode())
        s.sendto(data, ("127.0.0.1", gw.sip_port))
        assert s.recv(65535).startswith(b"SIP/2.0 403")
    r = cli(gw, "devices", "refused")
    assert r.code == 0 and "\\x1b]0;pwned\\x07\\x0d" in r.out, r.out
    assert not any(ch in r.out for ch in "\x1b\x07\r")


def test_a_name_typed_in_a_gbk_terminal_is_an_error_not_a_traceback(gw: Gw) -> None:
    # 大门 in GBK, given to a UTF-8 locale: Python holds the bytes as lone surrogates
    done = subprocess.run(
        [BIN, "device", "add", UNKNOWN, "--name", b"\xb4\xf3\xc3\xc5", "--admin", gw.admin],
        capture_output=True, text=True, timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8"},
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "not UTF-8 text (\\xb4\\xf3\\xc3\\xc5)" in done.stderr and "hint: set the terminal to UTF-8" in done.stderr
    assert cli(gw, "device", "show", UNKNOWN).code == 1  # nothing was added


def test_an_id_with_a_slash_names_nothing_never_another_route(gw: Gw) -> None:
    # `device remove ID/bans` used to send DELETE /devices/ID/bans (lift its bans) and say "removed"
    r = cli(gw, "device", "remove", f"{DEVICE}/bans")
    assert r.code == 1 and f"no device {DEVICE}/bans" in r.err, r.out + r.err
    r = cli(gw, "device", "show", "..")
    assert r.code == 1 and "no device .." in r.err
    assert cli(gw, "device", "show", DEVICE).code == 0


def test_admin_host_port_reaches_the_gateway(gw: Gw) -> None:
    r = cli(gw.admin.removeprefix("http://"), "devices", "--json")
    assert r.code == 0 and DEVICE in r.out


# --- defect 7: IDs whole, plain rows when piped, --json everywhere -------------------------


def test_piped_listings_are_tab_separated_rows_with_whole_ids(gw: Gw) -> None:
    r = cli(gw, "devices", env={"COLUMNS": "40"})
    assert r.code == 0
    header, *rows = r.out.splitlines()
    assert header.split("\t")[0] == "ID" and "\t" in header
    assert any(row.split("\t")[0] == DEVICE for row in rows)
    shown = cli(gw, "device", "show", DEVICE, env={"COLUMNS": "40"})
    assert f"device_id\t{DEVICE}" in shown.out.splitlines()
    assert "\x1b[" not in r.out + shown.out


def test_a_narrow_terminal_never_cuts_an_id(gw: Gw) -> None:
    cli(gw, "device", "add", "34020000001320000002", "--name", "东门停车场出口高清球机带很长的名字")
    for args in (["devices"], ["device", "show", DEVICE], ["status"]):
        lines = tty(gw, *args, columns=40)
        assert any(DEVICE in line or "34020000002000000001" in line for line in lines), lines
    lines = tty(gw, "devices", columns=40)
    assert any(DEVICE in line for line in lines) and any("34020000001320000002" in line for line in lines)
    assert "3 devices" in lines
    wide = tty(gw, "devices", columns=200)
    assert any(DEVICE in line and "│" in line for line in wide)  # a table where there is room
    cli(gw, "device", "remove", "34020000001320000002")


def test_device_show_info_and_status_take_json(gw: Gw) -> None:
    cli(gw, "device", "add", DEVICE, "--name", "大门口")
    r = cli(gw, "device", "show", DEVICE, "--json")
    assert r.code == 0 and json.loads(r.out)["name"] == "大门口" and "大门口" in r.out
    for what in ("info", "status"):
        assert "--json" in cli(gw, "device", what, "--help").out


def test_api_json_keeps_chinese_readable(gw: Gw) -> None:
    cli(gw, "device", "add", DEVICE, "--name", "大门口")
    status, body = http_get(gw.admin + f"/api/v1/devices/{DEVICE}")
    assert status == 200 and "大门口".encode() in body and b"\\u" not in body


# --- defect 9: times --------------------------------------------------------------------------


def test_status_shows_times_and_durations_not_epoch_floats(gw: Gw) -> None:
    r = cli(gw, "status")
    assert r.code == 0
    assert not re.search(r"\b1[0-9]{9}\.[0-9]", r.out), r.out
    fields = dict(line.split("\t", 1) for line in r.out.splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+08:00 \(now\)", fields["time"])
    assert re.fullmatch(r"\d+ (s|min)", fields["uptime_seconds"])
    assert fields["time_zone"] == "Asia/Shanghai"


def test_device_times_in_the_site_zone_future_ones_as_in(gw: Gw) -> None:
    fields = dict(line.split("\t", 1) for line in cli(gw, "device", "show", DEVICE).out.splitlines())
    assert re.fullmatch(r".* \+08:00 \(in 59 min\)", fields["expires_at"]), fields["expires_at"]
    assert re.fullmatch(r".* \+08:00 \((now|\d+ s ago|\d+ min ago)\)", fields["registered_at"])
    utc = cli(gw, "device", "show", DEVICE, env={"GB28181GW_GATEWAY_TIME_ZONE": "UTC"}).out
    assert re.search(r"expires_at\t.* \+00:00 \(in 59 min\)", utc)
    assert cli(gw, "status", env={"GB28181GW_GATEWAY_TIME_ZONE": "Mars/Olympus"}).code == 1


def test_logs_and_the_cli_follow_the_gateways_zone() -> None:
    admin_port = free_port()
    proc = serve(
        "--listen", "127.0.0.1", "--port", "0", "--admin-port", str(admin_port),
        "--set", "gateway.time_zone=UTC-05:00", "--set", "media.workers=0",
    )  # fmt: skip
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        wait_ready(admin, proc)
        time_line = next(line for line in cli(admin, "status").out.splitlines() if line.startswith("time\t"))
        assert " -05:00 (now)" in time_line
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    stamps = [line.split(" ", 1)[0] for line in out.splitlines() if line[:2] == "20"]
    assert stamps and all(s.endswith("-05:00") for s in stamps), out


# --- issue 13: the polish ---------------------------------------------------------------------


def test_device_add_twice_says_updated_and_stream_mode_default_resets(gw: Gw) -> None:
    other = "34020000001320000003"
    assert cli(gw, "device", "add", other).out == f"added {other}\n"
    assert cli(gw, "device", "add", other, "--stream-mode", "tcp-active").out == f"updated {other}\n"
    assert json.loads(cli(gw, "device", "show", other, "--json").out)["stream_mode"] == "tcp-active"
    assert cli(gw, "device", "add", other, "--stream-mode", "default").code == 0
    assert json.loads(cli(gw, "device", "show", other, "--json").out)["stream_mode"] == ""
    cli(gw, "device", "remove", other)


def test_catalog_refresh_all_reports_each_device_and_fails_at_the_end(gw: Gw) -> None:
    r = cli(gw, "catalog", "refresh", "--all")
    assert r.code == 1
    assert r.out == f"[1/2] {NVR}: 2 channels in 1 message\n1 catalog refreshed, 1 failed\n"
    assert r.err == f"[2/2] error: device {DEVICE} sent no Catalog response within 1 s\n"
    one = cli(gw, "catalog", "refresh", NVR)
    assert (one.code, one.out) == (0, f"{NVR}: 2 channels in 1 message\n")


def test_channels_piped_narrow_and_filtered_case_insensitively(gw: Gw) -> None:
    cli(gw, "catalog", "refresh", NVR)
    header, *rows = cli(gw, "channels", NVR).out.splitlines()
    assert header.split("\t")[:3] == ["channel", "name", "device"]
    assert [row.split("\t")[:4] for row in rows] == [[ch, "大门口", NVR, "ON"] for ch in CHANNELS]
    lines = tty(gw, "channels", NVR, columns=40)
    assert "2 channels" in lines and all(any(ch in line for line in lines) for ch in (*CHANNELS, NVR))
    for word, count in (("on", 2), ("ON", 2), ("Off", 0)):
        r = cli(gw, "channels", NVR, "--status", word, "--json")
        assert r.code == 0 and len(json.loads(r.out)) == count


def test_a_device_whose_user_agent_is_not_utf8_is_listed_and_shown(gw: Gw) -> None:
    odd = "34020000001320000004"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(register(odd, 4, GB2312_AGENT), ("127.0.0.1", gw.sip_port))
        assert s.recv(65535).startswith(b"SIP/2.0 200")
    status, body = http_get(gw.admin + f"/api/v1/devices/{odd}")
    assert status == 200 and json.loads(body)["user_agent"].encode("utf-8", "surrogateescape") == GB2312_AGENT
    listed = cli(gw, "devices", "--json")
    assert listed.code == 0 and odd in listed.out
    shown = cli(gw, "device", "show", odd)
    assert shown.code == 0 and "user_agent\t\\xba\\xa3\\xbf\\xb5" in shown.out
    assert cli(gw, "device", "show", odd, "--json").code == 0
    cli(gw, "device", "remove", odd)
