"""The command line: offline ID tools, and `serve` as a real process (signals, admin API, errors)."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

from click.testing import CliRunner

from gb28181gw.cli import main
from tests.helpers import request
from tests.process import free_port, http_get, serve, wait_ready


def test_id_decode() -> None:
    result = CliRunner().invoke(main, ["id", "decode", "34020000001320000001"])
    assert result.exit_code == 0, result.output
    assert "安徽" in result.output and "IPC" in result.output and "15-20" in result.output


def test_id_decode_json_and_civil_code() -> None:
    result = CliRunner().invoke(main, ["id", "decode", "340202", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["kind"] == "civil-code"


def test_id_decode_invalid_says_where() -> None:
    result = CliRunner().invoke(main, ["id", "decode", "3402000000132000000X"])
    assert result.exit_code == 1
    assert "position 20" in result.output and "not a digit" in result.output


def test_id_check_lines(tmp_path: Path) -> None:
    f = tmp_path / "ids.txt"
    f.write_text("34020000001320000001\n3402000000132000001\n\n34020000001310000002\n34020000001310000A02\n")
    result = CliRunner().invoke(main, ["id", "check", str(f)])
    assert result.exit_code == 1
    assert "line 2:" in result.output and "19 digits" in result.output
    assert "line 5:" in result.output and "position 18" in result.output
    assert "4 IDs checked, 2 invalid" in result.output


def test_id_check_csv_column(tmp_path: Path) -> None:
    f = tmp_path / "ledger.csv"
    f.write_text("名称,设备编码\n南门,34020000001320000001\n北门,34020000001320000002\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["id", "check", str(f), "--column", "设备编码"])
    assert result.exit_code == 0, result.output
    assert "2 IDs checked, 0 invalid" in result.output
    result = CliRunner().invoke(main, ["id", "check", str(f), "--column", "nope"])
    assert result.exit_code == 2


def test_id_check_strict_turns_warnings_into_errors(tmp_path: Path) -> None:
    f = tmp_path / "ids.txt"
    f.write_text("99020000001320000001\n")
    assert CliRunner().invoke(main, ["id", "check", str(f)]).exit_code == 0
    result = CliRunner().invoke(main, ["id", "check", str(f), "--strict"])
    assert result.exit_code == 1 and "positions 1-2" in result.output


def test_serve_runs_answers_and_stops_on_sigterm() -> None:
    sip_port, admin_port = free_port(), free_port()
    proc = serve("--listen", "127.0.0.1", "--port", str(sip_port), "--admin-port", str(admin_port))
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        wait_ready(admin, proc)
        assert json.loads(http_get(admin + "/healthz")[1])["status"] == "ok"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(request("OPTIONS", "z9hG4bKcli"), ("127.0.0.1", sip_port))
            assert s.recv(65535).startswith(b"SIP/2.0 200 OK")
        metrics = http_get(admin + "/metrics")[1].decode()
        assert 'gb28181gw_sip_requests_total{direction="in",method="OPTIONS",transport="UDP"} 1.0' in metrics
        assert "process_resident_memory_bytes" in metrics
        status = CliRunner().invoke(main, ["status", "--admin", admin, "--json"])
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["sip"]["port"] == sip_port
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "gateway stopped" in out


def test_status_without_a_gateway_says_so() -> None:
    result = CliRunner().invoke(main, ["status", "--admin", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert "cannot reach the gateway" in result.output


def test_bad_config_stops_startup_naming_the_key(tmp_path: Path) -> None:
    proc = serve("--set", "sip.port=abc")
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 3
    assert "sip.port" in out and "integer" in out
    conf = tmp_path / "gw.toml"
    conf.write_text('[sip]\nlisten = ["nowhere"]\n')
    proc = serve("-c", str(conf))
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 3 and "sip.listen" in out and "not an IP address" in out
    proc = serve(env={"GB28181GW_LOG_LEVEL": "chatty"})
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 3 and "GB28181GW_LOG_LEVEL" in out


def test_port_in_use_is_a_startup_failure() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        proc = serve("--listen", "127.0.0.1", "--port", str(port), "--admin-port", str(free_port()))
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 3
    assert "start-up failed" in out


def test_corrupt_store_is_a_clear_startup_error(tmp_path: Path) -> None:
    store = tmp_path / "gw.db"
    store.write_bytes(b"definitely not sqlite" * 50)
    proc = serve("--listen", "127.0.0.1", "--port", "0", "--admin-port", "0", store=str(store))
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 3
    assert "corrupt" in out and "left untouched" in out
    assert store.read_bytes() == b"definitely not sqlite" * 50


def test_store_in_use_by_another_gateway(tmp_path: Path) -> None:
    store = str(tmp_path / "gw.db")
    admin_port = free_port()
    first = serve("--listen", "127.0.0.1", "--port", "0", "--admin-port", str(admin_port), store=store)
    try:
        wait_ready(f"http://127.0.0.1:{admin_port}", first)
        second = serve("--listen", "127.0.0.1", "--port", "0", "--admin-port", "0", store=store)
        out, _ = second.communicate(timeout=15)
        assert second.returncode == 3
        assert "in use by another gb28181gw" in out
        metrics = http_get(f"http://127.0.0.1:{admin_port}/metrics")[1].decode()
        assert 'gb28181gw_devices{state="known"} 0.0' in metrics
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=15)


def test_channel_tree_puts_items_under_their_parents() -> None:
    from rich.console import Console

    from gb28181gw.cli import _channel_tree

    rows = [
        {
            "channel_id": "34020000002150000001",
            "device_id": "34020000001180000001",
            "name": "一组",
            "status": "ON",
            "parent_id": "34020000002000000001",
        },
        {
            "channel_id": "34020000001310000001",
            "device_id": "34020000001180000001",
            "name": "大门口",
            "status": "ON",
            "parent_id": "34020000002150000001",
        },
        {
            "channel_id": "34020000001310000002",
            "device_id": "34020000001180000001",
            "name": "后门",
            "status": "OFF",
            "parent_id": "",
        },
    ]
    console = Console(record=True, width=100)
    console.print(_channel_tree(rows))
    text = console.export_text()
    lines = [line for line in text.splitlines() if line.strip()]
    group = next(i for i, line in enumerate(lines) if "一组" in line)
    gate = next(i for i, line in enumerate(lines) if "大门口" in line)
    assert gate == group + 1 and lines[gate].index("3402") > lines[group].index("3402")
    assert "后门" in text
