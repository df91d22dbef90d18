"""The ``[[upstream]]`` tables of the configuration (issue 12 item 1): parsed, derived, checked, redacted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gb28181gw.config import REDACTED, load_config
from gb28181gw.config import effective_settings as settings_of
from gb28181gw.errors import ConfigError
from tests.helpers import ROOT

DISTRICT = """
[gateway]
id = "34020000002000000001"

[[upstream]]
name = "district"
id = "34010000002000000001"
host = "192.0.2.10"
password = "upper-pass"

[[upstream]]
name = "city"
id = "34000000002000000001"
domain = "3400000099"
host = "192.0.2.20"
port = 5070
transport = "tcp"
local_id = "34020000002000000009"
username = "gw"
password = ""
expires = 7200
keepalive_interval = 30
keepalive_misses = 5
retry_interval = 5.0
retry_max = 60.0
gb_version = "3.0"
charset = "UTF-8"
catalog_batch = 8
share = ["3402000000131", "34020000001320000001"]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gw.toml"
    p.write_text(text)
    p.chmod(0o600)
    return p


def test_no_upstream_by_default() -> None:
    assert load_config(env={}).upstreams == ()


def test_two_superiors_with_defaults_and_derivations(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, DISTRICT), env={})
    district, city = c.upstreams
    assert (district.name, district.port, district.transport, district.expires) == ("district", 5060, "udp", 3600)
    assert (district.keepalive_interval, district.keepalive_misses, district.charset) == (60, 3, "GB2312")
    assert district.share == "all" and district.catalog_batch == 4
    assert c.upstream_domain(district) == "3401000000"
    assert c.upstream_local_id(district) == "34020000002000000001"
    assert c.upstream_username(district) == "34020000002000000001"
    assert c.upstream_local_domain(district) == "3402000000"
    assert c.upstream_domain(city) == "3400000099"
    assert c.upstream_local_id(city) == "34020000002000000009" and c.upstream_username(city) == "gw"
    assert (city.port, city.transport, city.expires, city.gb_version, city.catalog_batch) == (
        5070,
        "tcp",
        7200,
        "3.0",
        8,
    )
    assert city.share == ["3402000000131", "34020000001320000001"]


def test_config_shows_every_key_with_the_password_redacted(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, DISTRICT), env={})
    rows = {s.key: s for s in settings_of(c)}
    assert rows["upstream.district.password"].value == REDACTED
    assert "upper-pass" not in repr(settings_of(c))
    assert rows["upstream.district.local_id"].value == "34020000002000000001"
    assert rows["upstream.district.local_id"].derived == "gateway.id"
    assert rows["upstream.city.port"].value == 5070
    assert rows["upstream.city.password"].value == ""  # not set: shown empty
    for key in ("name", "id", "domain", "host", "port", "transport", "local_id", "username", "password", "expires",
                "keepalive_interval", "keepalive_misses", "charset", "catalog_batch", "share"):  # fmt: skip
        assert f"upstream.district.{key}" in rows, key


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('name = "d"\nhost = "192.0.2.1"', "upstream.d.id", "is required"),
        ('name = "d"\nid = "34010000002000000001"', "upstream.d.host", "is required"),
        ('id = "34010000002000000001"\nhost = "192.0.2.1"', "upstream[0].name", "is required"),
        ('name = "d"\nid = "3401"\nhost = "192.0.2.1"', "upstream.d.id", ""),
        ('name = "d"\nid = "34010000002000000001"\nhost = "192.0.2.1"\nport = 70000', "upstream.d.port", "port"),
        (
            'name = "d"\nid = "34010000002000000001"\nhost = "192.0.2.1"\ntransport = "sctp"',
            "upstream.d.transport",
            "udp",
        ),
        ('name = "d"\nid = "34010000002000000001"\nhost = "not-an-ip"', "upstream.d.host", "IP address"),
        ('name = "d"\nid = "34010000002000000001"\nhost = "192.0.2.1"\nexpires = 10', "upstream.d.expires", "60"),
        (
            'name = "d"\nid = "34010000002000000001"\nhost = "192.0.2.1"\ncatalog_batch = 3',
            "upstream.d.catalog_batch",
            "1, 2, 4",
        ),
        ('name = "d"\nid = "34010000002000000001"\nhost = "192.0.2.1"\nshare = "some"', "upstream.d.share", "all"),
        ('name = "d"\nid = "34010000002000000001"\nhost = "192.0.2.1"\nshare = ["34x"]', "upstream.d.share", "digits"),
        (
            'name = "d"\nid = "34010000002000000001"\nhost = "192.0.2.1"\nkeepalive_intervall = 5',
            "upstream.d.keepalive_intervall",
            "keepalive_interval",
        ),
        ('name = "d"\nid = "34010000002000000001"\nhost = "192.0.2.1"\nport = "5060"', "upstream.d.port", "integer"),
        ('name = "d"\nid = "34010000002000000001"\nhost = "192.0.2.1"\nlocal_id = "1"', "upstream.d.local_id", ""),
    ],
)
def test_errors_name_the_upstream_and_the_key(tmp_path: Path, table: str, key: str, words: str) -> None:
    path = write(tmp_path, f"[[upstream]]\n{table}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == key
    assert words in str(err.value) and str(path) in str(err.value)


def test_a_wrong_password_type_does_not_quote_it(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[[upstream]]\nname = "d"\nid = "34010000002000000001"\nhost = "192.0.2.1"\npassword = 123456\n'
    )
    with pytest.raises(ConfigError, match="upstream.d.password") as err:
        load_config(path, env={})
    assert "123456" not in str(err.value)


def test_names_are_unique(tmp_path: Path) -> None:
    one = '[[upstream]]\nname = "d"\nid = "34010000002000000001"\nhost = "192.0.2.1"\n'
    with pytest.raises(ConfigError, match=r"upstream\.d\.name.*unique"):
        load_config(write(tmp_path, one + one), env={})


def test_upstream_must_be_an_array_of_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[\[upstream\]\]"):
        load_config(write(tmp_path, '[upstream]\nname = "d"\n'), env={})


def test_the_commented_example_in_gateway_toml_is_valid() -> None:
    text = (ROOT / "conf" / "gateway.toml").read_text()
    block = re.search(r"^# \[\[upstream\]\]\n((?:#.*\n)+?)\n", text, re.M)
    assert block is not None
    body = "\n".join(line[2:] for line in ("# [[upstream]]\n" + block[1]).splitlines())
    import tomllib

    from gb28181gw.config import _load_upstreams  # the loader the file goes through

    (up,) = _load_upstreams(tomllib.loads(body)["upstream"], "gateway.toml")
    assert up.name == "district" and up.expires == 3600 and up.share == "all"
