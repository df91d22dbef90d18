"""Config: defaults < TOML file < GB28181GW_* environment < command line; errors name the key."""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from gb28181gw.config import (
    DEFAULT_SOURCE,
    DERIVED,
    PER_DEVICE,
    REDACTED,
    SECTIONS,
    Concern,
    Config,
    ConfigWarning,
    config_warnings,
    describe_options,
    effective_settings,
    load_config,
    parse_time_zone,
    suggest_key,
)
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
        ({"GB28181GW_AUDIT_RETENTION_DAYS": "0"}, "audit.retention_days", "from 1 to 36500"),
        # past a hundred years the pruning cut-off falls before year 1 and the gateway would crash at its first pass
        ({"GB28181GW_AUDIT_RETENTION_DAYS": "1000000000"}, "audit.retention_days", "from 1 to 36500"),
        ({"GB28181GW_STORE_BACKEND": "postgres"}, "store.backend", "one of sqlite, redis"),
        ({"GB28181GW_STORE_URL": "127.0.0.1:6379"}, "store.url", "must start with redis://"),
        ({"GB28181GW_STORE_URL": "http://127.0.0.1:6379/0"}, "store.url", "must start with redis://"),
        ({"GB28181GW_STORE_URL": "redis://127.0.0.1:port/0"}, "store.url", "not a Redis URL"),
        ({"GB28181GW_STORE_URL": "redis:///0"}, "store.url", "names no host"),
        ({"GB28181GW_STORE_URL": "redis://127.0.0.1:6379/zero"}, "store.url", "must be a number"),
        ({"GB28181GW_STORE_URL": "unix://"}, "store.url", "no socket path"),
        ({"GB28181GW_NODE_ID": "node 1"}, "node.id", "letters, digits"),
        ({"GB28181GW_NODE_ID": "-n1"}, "node.id", "starting with a letter or digit"),
        ({"GB28181GW_NODE_LEASE_SECONDS": "0.5"}, "node.lease_seconds", "at least 1"),
        ({"GB28181GW_NODE_ADVERTISED_ADDRESS": "127.0.0.1"}, "node.advertised_address", "must be host:port"),
        ({"GB28181GW_NODE_ADVERTISED_ADDRESS": ":5060"}, "node.advertised_address", "must be host:port"),
        ({"GB28181GW_NODE_ADVERTISED_ADDRESS": "127.0.0.1:0"}, "node.advertised_address", "port number from 1"),
        ({"GB28181GW_NODE_ADVERTISED_ADDRESS": "127.0.0.1:http"}, "node.advertised_address", "port number from 1"),
        ({"GB28181GW_NODE_ADVERTISED_ADDRESS": "192.168.1.300:5060"}, "node.advertised_address", "not an IP"),
        ({"GB28181GW_NODE_ADVERTISED_ADDRESS": "::1:5060"}, "node.advertised_address", "in brackets"),
        ({"GB28181GW_NODE_ADVERTISED_ADDRESS": "[::g]:5060"}, "node.advertised_address", "not an IPv6"),
        ({"GB28181GW_NODE_CLAIM_SECONDS": "1"}, "node.claim_seconds", "at least 3"),
        ({"GB28181GW_NODE_DIRECTOR": "true"}, "node.director", "needs store.backend = redis"),
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
    "url",
    ["redis://127.0.0.1:6379/0", "redis://:pw@redis.lan", "rediss://user:pw@10.0.0.5:6380/2", "unix:///run/redis.sock"],
)
def test_redis_urls_redis_py_takes_are_accepted(url: str) -> None:
    config = load_config(
        env={"GB28181GW_STORE_BACKEND": "redis", "GB28181GW_STORE_URL": url, "GB28181GW_NODE_ID": "n1"}
    )
    assert (config.store.backend, config.store.url, config.node.id) == ("redis", url, "n1")


def test_the_redis_store_needs_a_node_id() -> None:
    with pytest.raises(ConfigError, match=r"node\.id: is required with store\.backend = redis"):
        load_config(env={"GB28181GW_STORE_BACKEND": "redis"})
    assert load_config(env={}).node.id == ""  # SQLite needs none


@pytest.mark.parametrize(
    ("env", "advertised"),
    [
        ({"GB28181GW_SIP_LISTEN": "10.0.0.5", "GB28181GW_SIP_PORT": "5061"}, "10.0.0.5:5061"),
        ({"GB28181GW_SIP_ADVERTISED_ADDRESS": "gw1.example", "GB28181GW_SIP_PORT": "5062"}, "gw1.example:5062"),
        ({"GB28181GW_SIP_LISTEN": "::1"}, "[::1]:5060"),
        ({}, ""),  # a wildcard listen address: each device is told its own; no director can name this node
        ({"GB28181GW_NODE_ADVERTISED_ADDRESS": "[2001:db8::1]:5070"}, "[2001:db8::1]:5070"),
        ({"GB28181GW_NODE_ADVERTISED_ADDRESS": "gw-1.example:5070"}, "gw-1.example:5070"),
    ],
)
def test_a_nodes_advertised_address_is_explicit_or_what_sip_advertises(env: dict[str, str], advertised: str) -> None:
    assert load_config(env=env).node_advertised == advertised


def test_a_director_needs_the_redis_store_and_is_off_unless_set() -> None:
    assert load_config(env={}).node.director is False
    env = {"GB28181GW_STORE_BACKEND": "redis", "GB28181GW_NODE_ID": "d", "GB28181GW_NODE_DIRECTOR": "true"}
    config = load_config(env=env)
    assert config.node.director and not config.node.director_serves and config.node.claim_seconds == 15.0


def test_the_superior_lease_lasts_ten_seconds_unless_set() -> None:
    assert load_config(env={}).node.lease_seconds == 10.0
    assert load_config(env={"GB28181GW_NODE_LEASE_SECONDS": "2.5"}).node.lease_seconds == 2.5


@pytest.mark.parametrize("value", ["192.168.1.300", "192.168.1", "camera lan", "gw_1.example.com"])
def test_an_advertised_address_must_be_an_ip_or_a_host_name(value: str) -> None:
    # a typo here starts a gateway that tells every camera to send its video nowhere
    with pytest.raises(ConfigError) as exc:
        load_config(env={"GB28181GW_SIP_ADVERTISED_ADDRESS": value})
    assert exc.value.key == "sip.advertised_address" and "not an IP address" in str(exc.value)
    for fine in ("", "192.168.1.10", "fe80::1", "gw.example.com"):
        assert load_config(env={"GB28181GW_SIP_ADVERTISED_ADDRESS": fine}).sip.advertised_address == fine


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


# --- what `gb28181gw config` checks (issue 11, defect 10) ------------------------------------


def test_sources_name_the_default_the_file_the_variable_and_the_flag(tmp_path: Path) -> None:
    f = tmp_path / "gw.toml"
    f.write_text('[sip]\nport = 5070\n[log]\nlevel = "debug"\n')
    c = load_config(
        f,
        env={"GB28181GW_LOG_LEVEL": "warning", "GB28181GW_SIP_T1": "0.25"},
        overrides={"log.level": "error", "admin.port": "9000"},
        flags={"admin.port": "--admin-port"},
    )
    assert c.source("sip.port") == str(f)
    assert c.source("sip.t1") == "environment GB28181GW_SIP_T1"
    assert c.source("log.level") == "command line --set"
    assert c.source("admin.port") == "command line --admin-port"
    assert c.source("sip.listen") == DEFAULT_SOURCE
    by_key = {s.key: s for s in effective_settings(c)}
    assert by_key["sip.port"].source == str(f) and by_key["sip.port"].value == 5070


def test_every_derived_option_shows_the_value_the_gateway_runs_with() -> None:
    c = load_config(env={})
    by_key = {s.key: s for s in effective_settings(c)}
    assert set(DERIVED) <= set(by_key)
    domain = by_key["gateway.domain"]
    assert (domain.configured, domain.value, domain.source) == ("", "3402000000", "default")
    assert domain.derived and "gateway.id" in domain.derived
    workers = by_key["media.workers"]
    assert workers.configured == -1 and workers.value == c.relay_workers == (os.cpu_count() or 1)
    # a wildcard listen address: each device is told the address it reached
    assert c.advertised_address == "" and by_key["sip.advertised_address"].value == PER_DEVICE
    assert by_key["media.address"].value == PER_DEVICE
    # one specific listen address is the advertised one, and media follows SIP
    c = load_config(env={}, overrides={"sip.listen": "192.0.2.7", "gateway.id": "44030000002000000001"})
    by_key = {s.key: s for s in effective_settings(c)}
    assert by_key["sip.advertised_address"].value == c.advertised_address == "192.0.2.7"
    assert by_key["media.address"].value == c.media_address == "192.0.2.7"
    assert by_key["gateway.domain"].value == c.domain == "4403000000"
    # set explicitly: shown as set, nothing derived
    c = load_config(
        env={}, overrides={"gateway.domain": "4403000000", "media.workers": "2", "media.address": "192.0.2.9"}
    )
    by_key = {s.key: s for s in effective_settings(c)}
    assert all(by_key[k].derived is None for k in ("gateway.domain", "media.workers", "media.address"))
    assert c.relay_workers == 2 and c.media_address == "192.0.2.9"


def test_secrets_are_marked_in_the_metadata_and_never_shown() -> None:
    secret = {f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in fields(cls) if f.metadata["secret"]}
    assert "registrar.password" in secret
    c = load_config(env={"GB28181GW_REGISTRAR_PASSWORD": "hunter2"})
    assert c.registrar.password == "hunter2"  # the gateway still gets it
    shown = {s.key: s for s in effective_settings(c)}["registrar.password"]
    assert shown.value == shown.configured == REDACTED and shown.secret
    assert "hunter2" not in repr(effective_settings(c))
    # not set: shown as empty, which is no secret
    assert {s.key: s for s in effective_settings(load_config(env={}))}["registrar.password"].value == ""


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://gw:hunter2@redis.example:6380/1", "redis://gw:***@redis.example:6380/1"),
        ("rediss://:hunter2@[::1]:6379/0", "rediss://:***@[::1]:6379/0"),
        ("redis://127.0.0.1:6379/0?password=hunter2", "redis://127.0.0.1:6379/0?password=***"),
        ("unix:///run/redis.sock?db=0&password=hunter2", "unix:///run/redis.sock?db=0&password=***"),
    ],
)
def test_a_password_in_store_url_is_never_shown(tmp_path: Path, url: str, shown: str) -> None:
    c = load_config(env={"GB28181GW_STORE_BACKEND": "redis", "GB28181GW_STORE_URL": url, "GB28181GW_NODE_ID": "n1"})
    assert c.store.url == url  # the gateway still gets it
    row = {s.key: s for s in effective_settings(c)}["store.url"]
    assert row.value == row.configured == shown and row.secret
    assert "hunter2" not in repr(effective_settings(c))
    # in a file every user can read: warned about like any other secret
    f = tmp_path / "gw.toml"
    f.write_text(f'[store]\nbackend = "redis"\nurl = "{url}"\n[node]\nid = "n1"\n')
    f.chmod(0o644)
    assert [w.key for w in config_warnings(load_config(f, env={})) if w.concern is Concern.READABLE_SECRET] == [
        "store.url"
    ]


def test_a_store_url_without_a_password_is_shown_and_no_secret(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:6379/2"
    f = tmp_path / "gw.toml"
    f.write_text(f'[store]\nbackend = "redis"\nurl = "{url}"\n[node]\nid = "n1"\n')
    f.chmod(0o644)
    c = load_config(f, env={})
    row = {s.key: s for s in effective_settings(c)}["store.url"]
    assert row.value == url and not row.secret
    assert not [w for w in config_warnings(c) if w.concern is Concern.READABLE_SECRET]


def test_an_error_about_a_secret_does_not_quote_it(tmp_path: Path) -> None:
    f = tmp_path / "gw.toml"
    f.write_text("[registrar]\npassword = 12345678\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f, env={})
    assert exc.value.key == "registrar.password" and "must be a string" in str(exc.value)
    assert "12345678" not in str(exc.value)


@pytest.mark.parametrize(
    ("where", "setting", "suggestion"),
    [
        ("file", "[sip]\nprot = 5070\n", "did you mean sip.port?"),
        ("file", '[sip]\npassword = "x"\n', "did you mean registrar.password?"),
        ("file", '[gatway]\nid = "34020000002000000001"\n', "did you mean [gateway]?"),
        ("env", {"GB28181GW_SIP_PROT": "5070"}, "did you mean GB28181GW_SIP_PORT?"),
        ("env", {"GB28181GW_GATWAY_ID": "34020000002000000001"}, "did you mean GB28181GW_GATEWAY_ID?"),
        ("set", {"sip.prot": "5070"}, "did you mean sip.port?"),
        ("set", {"media.worker": "2"}, "did you mean media.workers?"),
        ("set", {"gatway.id": "34020000002000000001"}, "did you mean gateway.id?"),
    ],
)
def test_an_unknown_key_names_the_nearest_one(tmp_path: Path, where: str, setting: Any, suggestion: str) -> None:
    f = tmp_path / "gw.toml"
    with pytest.raises(ConfigError) as exc:
        if where == "file":
            f.write_text(setting)
            load_config(f, env={})
        elif where == "env":
            load_config(env=setting)
        else:
            load_config(env={}, overrides=setting)
    assert suggestion in str(exc.value)
    assert suggest_key("sip.zzzzzz") is None  # nothing near: the known keys are listed instead


def test_the_display_zone_variable_is_no_setting() -> None:
    load_config(env={"GB28181GW_TIME_ZONE": "UTC", "GB28181GW_ADMIN_URL": "127.0.0.1:8028"})


def test_a_port_range_too_small_for_the_relay_workers_is_an_error() -> None:
    with pytest.raises(ConfigError, match="fewer than the 4 relay workers"):
        load_config(env={}, overrides={"media.port_min": "30000", "media.port_max": "30005", "media.workers": "4"})
    load_config(env={}, overrides={"media.port_min": "30000", "media.port_max": "30007", "media.workers": "4"})


def test_an_ssrc_range_of_a_node_is_checked() -> None:
    # issue 17: nodes sharing a gateway.id take disjoint ranges of the SSRCs' last four digits
    config = load_config(env={}, overrides={"media.ssrc_min": "5000", "media.ssrc_max": "9999"})
    assert (config.media.ssrc_min, config.media.ssrc_max) == (5000, 9999)
    with pytest.raises(ConfigError, match="media.ssrc_max"):
        load_config(env={}, overrides={"media.ssrc_min": "5000", "media.ssrc_max": "4999"})
    with pytest.raises(ConfigError, match="from 1 to 9999"):
        load_config(env={}, overrides={"media.ssrc_min": "0"})


def _concerns(**overrides: str) -> list[Concern]:
    return [w.concern for w in config_warnings(load_config(env={}, overrides=overrides))]


PROTECTED = {"registrar.password": "secret"}


def test_the_defaults_warn_only_about_open_registration() -> None:
    assert _concerns() == [Concern.OPEN_REGISTRATION]
    assert _concerns(**PROTECTED) == []
    assert _concerns(**{"registrar.require_provisioned": "true"}) == []
    warning = config_warnings(load_config(env={}))[0]
    assert warning.key == "registrar.password" and "registration is open" in warning.message


@pytest.mark.parametrize(
    ("overrides", "concern", "key"),
    [
        ({"sip.advertised_address": "127.0.0.1"}, Concern.LOOPBACK_ADVERTISED, "sip.advertised_address"),
        ({"sip.advertised_address": "::1", "sip.listen": "::"}, Concern.LOOPBACK_ADVERTISED, "sip.advertised_address"),
        ({"sip.advertised_address": "127.0.0.2"}, Concern.LOOPBACK_ADVERTISED, "sip.advertised_address"),
        ({"media.address": "127.0.0.1"}, Concern.LOOPBACK_ADVERTISED, "media.address"),
        ({"sip.advertised_address": "0.0.0.0"}, Concern.UNUSABLE_ADDRESS, "sip.advertised_address"),
        ({"sip.advertised_address": "gw.example.com"}, Concern.UNUSABLE_ADDRESS, "media.address"),
        ({"sip.listen": "127.0.0.1"}, Concern.LOOPBACK_ONLY, "sip.listen"),
        ({"gateway.id": "34020000001320000001"}, Concern.GATEWAY_ID_TYPE, "gateway.id"),
        ({"gateway.id": "99020000002000000001"}, Concern.GATEWAY_ID_ODDITY, "gateway.id"),
        ({"gateway.domain": "3402000001"}, Concern.DOMAIN_MISMATCH, "gateway.domain"),
        ({"admin.listen": "0.0.0.0"}, Concern.ADMIN_EXPOSED, "admin.listen"),
        ({"admin.listen": "192.0.2.1"}, Concern.ADMIN_EXPOSED, "admin.listen"),
        ({"sip.listen": "0.0.0.0,192.0.2.1"}, Concern.LISTEN_OVERLAP, "sip.listen"),
        ({"sip.listen": "192.0.2.1,192.0.2.1"}, Concern.LISTEN_OVERLAP, "sip.listen"),
        ({"sip.port": "30002"}, Concern.PORT_CLASH, "media.port_min"),
        ({"admin.port": "5060"}, Concern.PORT_CLASH, "admin.port"),
        ({"registrar.digest_algorithm": "SHA-256"}, Concern.DIGEST_ALGORITHM, "registrar.digest_algorithm"),
    ],
)
def test_each_warning(overrides: dict[str, str], concern: Concern, key: str) -> None:
    warnings = config_warnings(load_config(env={}, overrides={**PROTECTED, **overrides}))
    assert [(w.concern, w.key) for w in warnings] == [(concern, key)]
    assert all(isinstance(w, ConfigWarning) and w.message for w in warnings)


@pytest.mark.parametrize(
    "overrides",
    [
        {"sip.advertised_address": ""},  # derived per device: fine
        {"sip.advertised_address": "192.0.2.1"},
        {"sip.listen": "127.0.0.1,192.0.2.1", "sip.advertised_address": "127.0.0.1"},  # not a wildcard
        {"media.address": "127.0.0.1", "media.listen": "127.0.0.1"},
        {"sip.listen": "0.0.0.0,::"},
        {"admin.listen": "::1"},
        {"admin.listen": "0.0.0.0", "admin.enabled": "false"},
        {"gateway.id": "44030000002000000001"},
        {"gateway.domain": "3402000000"},
    ],
)
def test_no_warning_where_nothing_is_wrong(overrides: dict[str, str]) -> None:
    assert config_warnings(load_config(env={}, overrides={**PROTECTED, **overrides})) == []


def test_warnings_are_small_frozen_records() -> None:
    w = config_warnings(load_config(env={}))[0]
    with pytest.raises(AttributeError):
        w.key = "x"  # type: ignore[misc]


def test_a_password_in_a_file_every_user_can_read_is_warned_about(tmp_path: Path) -> None:
    f = tmp_path / "gw.toml"
    f.write_text('[registrar]\npassword = "s3cret"\n')
    f.chmod(0o644)
    [warning] = config_warnings(load_config(f, env={}))
    assert (warning.concern, warning.key) == (Concern.READABLE_SECRET, "registrar.password")
    assert str(f) in warning.message and "chmod 600" in warning.message and "s3cret" not in warning.message
    f.chmod(0o640)
    assert config_warnings(load_config(f, env={})) == []
    # the secret from the environment: the readable file holds none
    f.write_text("[sip]\nport = 5070\n")
    f.chmod(0o644)
    assert config_warnings(load_config(f, env={"GB28181GW_REGISTRAR_PASSWORD": "x"})) == []


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


def test_a_replaced_setting_says_what_replaced_it(tmp_path: Path) -> None:
    f = tmp_path / "gw.toml"
    f.write_text("[registrar]\nutc_offset_hours = 8\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f, env={})
    assert "use gateway.time_zone" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_config(env={"GB28181GW_REGISTRAR_UTC_OFFSET_HOURS": "8"})
    assert "use gateway.time_zone" in str(exc.value)


@pytest.mark.parametrize("value", ["", "v/2/6/25/1/4096a///", "v/////a/1/8/1", "v/2/2560x1440/25/2/8192", "a/1/8/1"])
def test_offer_format_takes_the_f_line_grammar(value: str) -> None:
    assert load_config(None, env={}, overrides={"media.offer_format": value}).media.offer_format == value


@pytest.mark.parametrize(
    "value", ["H264", "v/2/6/25", "v/2/6/25/1/4096a/1", "f=v/2/6/25/1/4096a///", "v/2/6/25/1/4096a///\r\nx=1"]
)
def test_offer_format_refuses_what_is_no_f_line(value: str) -> None:
    with pytest.raises(ConfigError, match="media.offer_format"):
        load_config(None, env={}, overrides={"media.offer_format": value})
