"""``gb28181gw config`` checks what ``serve`` would run: effective values, sources, secrets, warnings.

Every test runs the real command line in a subprocess, as an integrator would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from gb28181gw.cli.serve import config_cmd
from gb28181gw.cli.serve import serve as serve_cmd
from tests.process import free_port, serve, wait_ready

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GB28181GW_")}


def gb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``gb28181gw ARGS`` with stdout piped (plain rows), in an environment without our variables."""
    return subprocess.run(
        [sys.executable, "-m", "gb28181gw", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**CLEAN_ENV, **(env or {})},
    )


def rows(stdout: str) -> dict[str, list[str]]:
    lines = [line.split("\t") for line in stdout.splitlines()]
    assert lines[0] == ["key", "value", "source", "meaning"]
    return {cells[0]: cells[1:] for cells in lines[1:]}


def test_config_shows_effective_values_and_where_each_came_from(tmp_path: Path) -> None:
    conf = tmp_path / "gw.toml"
    conf.write_text('[sip]\nport = 5070\n[registrar]\npassword = "s3cret-file"\n')
    result = gb(
        "config", "-c", str(conf), "--set", "log.level=debug", "--admin-port", "9001",
        env={"GB28181GW_SIP_T1": "0.25", "GB28181GW_REGISTRAR_PASSWORD": "s3cret-env"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert table["gateway.domain"][:2] == ["3402000000", "default; derived: the first 10 digits of gateway.id"]
    assert table["gateway.id"][0] == "34020000002000000001"  # whole, never truncated
    assert table["sip.port"][:2] == ["5070", str(conf)]
    assert table["sip.t1"][:2] == ["0.25", "environment GB28181GW_SIP_T1"]
    assert table["log.level"][:2] == ["debug", "command line --set"]
    assert table["admin.port"][:2] == ["9001", "command line --admin-port"]
    assert table["sip.listen"][:2] == ["0.0.0.0", "default"]
    assert table["media.workers"][0] == str(os.cpu_count() or 1)
    assert table["registrar.password"][:2] == ["********", "environment GB28181GW_REGISTRAR_PASSWORD"]
    assert "s3cret" not in result.stdout + result.stderr
    assert "registration is open" not in result.stderr


def test_config_warns_on_stderr_and_keeps_stdout_plain() -> None:
    result = gb("config", "--set", "sip.advertised_address=127.0.0.1", "--id", "34020000001320000001")
    assert result.returncode == 0, result.stderr
    assert "registration is open" in result.stderr
    assert "sip.advertised_address 127.0.0.1 is a loopback address while listening on 0.0.0.0" in result.stderr
    assert "has type 132" in result.stderr and "not 200" in result.stderr
    assert "3 warnings" in result.stderr
    assert not [line for line in result.stdout.splitlines() if "warning:" in line or line == "3 warnings"]
    assert rows(result.stdout)["sip.advertised_address"][:2] == ["127.0.0.1", "command line --set"]


def test_config_json() -> None:
    result = gb("config", "--json", "--set", "admin.listen=0.0.0.0", "--set", "registrar.password=pw123456")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    settings = {s["key"]: s for s in data["settings"]}
    assert settings["gateway.domain"]["value"] == "3402000000" and settings["gateway.domain"]["configured"] == ""
    assert settings["sip.port"]["value"] == 5060 and settings["sip.listen"]["value"] == ["0.0.0.0"]
    assert settings["registrar.password"]["value"] == "********" and settings["registrar.password"]["secret"]
    assert "pw123456" not in result.stdout
    assert [(w["concern"], w["key"]) for w in data["warnings"]] == [("admin-exposed", "admin.listen")]


def test_a_missing_config_file_is_exit_3_like_serve(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    for command in ("config", "serve"):
        result = gb(command, "-c", missing)
        assert result.returncode == 3, (command, result.stderr)
        assert f"configuration file {missing!r} does not exist" in result.stderr
        assert "hint:" in result.stderr
    result = gb("config", env={"GB28181GW_CONFIG": missing})
    assert result.returncode == 3


def test_a_typo_names_the_nearest_key_wherever_it_was_made(tmp_path: Path) -> None:
    conf = tmp_path / "gw.toml"
    conf.write_text("[sip]\nprot = 5070\n")
    for args, env, expected in (
        (["-c", str(conf)], {}, "sip.prot: unknown setting — did you mean sip.port?"),
        ([], {"GB28181GW_SIP_PROT": "5070"}, "did you mean GB28181GW_SIP_PORT?"),
        (["--set", "sip.prot=5070"], {}, "sip.prot: unknown setting — did you mean sip.port?"),
    ):
        result = gb("config", *args, env=env)
        assert result.returncode == 3, result.stderr
        assert expected in result.stderr


def test_config_takes_every_option_serve_takes() -> None:
    def options(command: object) -> set[str]:
        return {opt for p in command.params for opt in p.opts}  # type: ignore[attr-defined]

    assert options(serve_cmd) <= options(config_cmd)
    assert options(config_cmd) - options(serve_cmd) == {"--json"}


def test_serve_logs_the_warnings_at_start_up() -> None:
    admin_port = free_port()
    proc = serve(
        "--listen", "127.0.0.1", "--port", "0", "--admin-port", str(admin_port), "--id", "34020000001320000001",
        env={"GB28181GW_LOG_FORMAT": "json"},
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{admin_port}", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    logged = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    concerns = [(entry.get("concern"), entry["level"]) for entry in logged if "concern" in entry]
    assert ("gateway-id-type", "warning") in concerns
    assert ("open-registration", "warning") in concerns
    assert ("loopback-only", "warning") in concerns
    assert sum("registration is open" in entry.get("msg", "") for entry in logged) == 1  # said once
