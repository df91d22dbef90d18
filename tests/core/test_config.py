"""Config: defaults < TOML file < GB28181GW_* environment < command line; errors name the key."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from gb28181gw.config import SECTIONS, Config, describe_options, load_config, parse_time_zone
from gb28181gw.errors import ConfigError
from tests.helpers import ROOT


def test_defaults() -> None:
    c = load_config(env={})
    assert c.gateway.id == "34020000002000000001"
    assert c.domain == "3402000000"
    assert c.sip.listen == ["0.0.0.0"] and c.sip.port == 5060
    assert c.admin.listen == "127.0.0.1"


def test_example_config_is_valid_and_documents_every_option() -> None:
    path = ROOT / "conf" / "gateway.toml"
    load_config(path, env={})
    text = path.read_text()
    for key, _default, _help in describe_options():
        section, _, name = key.partition(".")
        assert f"[{section}]" in text
        assert f"\n{name} =" in text or f"\n# {name} =" in text, key


def _documented(text: str) -> dict[str, dict[str, Any]]:
    """Every ``key = value`` of a TOML file by section, commented-out ``# key = value`` lines too."""
    documented: dict[str, dict[str, Any]] = {name: dict(table) for name, table in tomllib.loads(text).items()}
    section = ""
    for line in text.splitlines():
        if header := re.fullmatch(r"\[(\w+)\]", line.strip()):
            section = header[1]
            documented.setdefault(section, {})
        elif section and (commented := re.fullmatch(r"#\s*([a-z_][a-z0-9_]*\s*=.*)", line.strip())):
            try:
                value = tomllib.loads(commented[1])
            except tomllib.TOMLDecodeError:
                continue  # prose with an "=" in it
            (key,) = value
            assert key not in documented[section], f"{section}.{key} is documented twice"
            documented[section].update(value)
    return documented


def test_example_config_states_exactly_the_defaults_of_config_py() -> None:
    text = (ROOT / "conf" / "gateway.toml").read_text()
    expected = {name: {f.name: getattr(cls(), f.name) for f in fields(cls)} for name, cls in SECTIONS.items()}
    documented = _documented(text)
    assert documented == expected
    for section, table in expected.items():
        for key, default in table.items():
            # 8 and 8.0 compare equal, but a reader copying the file should see the type config.py takes
            assert type(documented[section][key]) is type(default), f"{section}.{key}"
    assert load_config(ROOT / "conf" / "gateway.toml", env={}) == Config()


def test_commented_out_defaults_count_and_a_wrong_one_is_seen() -> None:
    text = (ROOT / "conf" / "gateway.toml").read_text()
    commented = text.replace("\nport = 5060\n", "\n# port = 5060\n")
    assert _documented(commented) == _documented(text)
    expected = {name: {f.name: getattr(cls(), f.name) for f in fields(cls)} for name, cls in SECTIONS.items()}
    for wrong in (
        text.replace("\nport = 5060\n", "\nport = 5070\n"),
        text.replace("query_timeout = 10.0", "query_timeout = 10"),
        text.replace("[log]\n", "[log]\n# colour = true\n"),
        text.replace("\ntcp_max_connections = 20000\n", "\n"),
    ):
        documented = _documented(wrong)
        same_types = all(
            type(documented.get(s, {}).get(k)) is type(v) for s, table in expected.items() for k, v in table.items()
        )
        assert documented != expected or not same_types


def test_precedence(tmp_path: Path) -> None:
    f = tmp_path / "gw.toml"
    f.write_text('[sip]\nport = 5070\nlisten = ["127.0.0.1"]\n[log]\nlevel = "debug"\n')
    c = load_config(f, env={"GB28181GW_SIP_PORT": "5080"}, overrides={"log.level": "warning"})
    assert c.sip.port == 5080  # env beats file
    assert c.sip.listen == ["127.0.0.1"]  # file beats default
    assert c.log.level == "warning"  # flag beats file
    c = load_config(f, env={"GB28181GW_SIP_PORT": "5080"}, overrides={"sip.port": "5090"})
    assert c.sip.port == 5090


def test_config_file_from_environment(tmp_path: Path) -> None:
    f = tmp_path / "gw.toml"
    f.write_text('[gateway]\nid = "44030000002000000001"\n')
    c = load_config(env={"GB28181GW_CONFIG": str(f)})
    assert c.domain == "4403000000"


def test_lists_from_environment() -> None:
    c = load_config(env={"GB28181GW_SIP_LISTEN": "0.0.0.0, ::", "GB28181GW_SIP_TRANSPORTS": "udp"})
    assert c.sip.listen == ["0.0.0.0", "::"] and c.sip.transports == ["udp"]


@pytest.mark.parametrize(
    ("env", "key", "fragment"),
    [
        ({"GB28181GW_SIP_PORT": "abc"}, "sip.port", "integer"),
        ({"GB28181GW_SIP_PORT": "70000"}, "sip.port", "port number"),
        ({"GB28181GW_SIP_LISTEN": "example.com"}, "sip.listen", "not an IP address"),
        ({"GB28181GW_SIP_TRANSPORTS": "udp,sctp"}, "sip.transports", "sctp"),
        ({"GB28181GW_SIP_T1": "0"}, "sip.t1", "greater than 0"),
        ({"GB28181GW_GATEWAY_ID": "3402000000200000000"}, "gateway.id", "19 digits"),
        ({"GB28181GW_GATEWAY_DOMAIN": "34020"}, "gateway.domain", "10 digits"),
        ({"GB28181GW_LOG_LEVEL": "loud"}, "log.level", "one of"),
        ({"GB28181GW_ADMIN_ENABLED": "maybe"}, "admin.enabled", "true or false"),
        ({"GB28181GW_SIP_NOPE": "1"}, "sip.nope", "unknown setting"),
        ({"GB28181GW_NOPE_X": "1"}, "GB28181GW_NOPE_X", "unknown setting"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env=env)
    assert exc.value.key == key
    assert fragment in str(exc.value)
    if key.startswith(("sip.", "gateway.", "log.", "admin.")):
        assert "environment" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[sip\nport = 1", "config", "not valid TOML"),
        ('[sip]\nport = "5060"', "sip.port", "integer"),
        ('[sip]\nlisten = "0.0.0.0"', "sip.listen", "list of strings"),
        ("[nope]\nx = 1", "nope", "unknown section"),
        ("sip = 3", "sip", "must be a table"),
        ("[sip]\nt1 = 5.0\nt2 = 4.0", "sip.t2", "not be smaller"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    f = tmp_path / "gw.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(f, env={})
    assert exc.value.key == key
    assert fragment in str(exc.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/gw.toml", env={})


def test_time_zone_names_offsets_and_mistakes() -> None:
    assert load_config(env={}).gateway.time_zone == "Asia/Shanghai"
    assert parse_time_zone("Asia/Shanghai").utcoffset(None) == dt.timedelta(hours=8)  # without a tz database
    assert parse_time_zone("UTC+8").utcoffset(None) == dt.timedelta(hours=8)
    assert parse_time_zone("-05:30").utcoffset(None) == -dt.timedelta(hours=5, minutes=30)
    assert parse_time_zone("utc") is dt.UTC
    c = load_config(env={"GB28181GW_GATEWAY_TIME_ZONE": "Europe/Berlin"})
    assert c.gateway.time_zone == "Europe/Berlin"
    with pytest.raises(ConfigError, match=r"gateway\.time_zone.*unknown time zone 'Mars/Olympus'.*UTC\+8"):
        load_config(env={}, overrides={"gateway.time_zone": "Mars/Olympus"})
    with pytest.raises(ConfigError, match="registrar.utc_offset_hours"):  # replaced by gateway.time_zone
        load_config(env={}, overrides={"registrar.utc_offset_hours": "8"})
