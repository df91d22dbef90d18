"""The Dockerfile's run lines agree with conf/gateway.toml (issue 11, defect 12).

The example once published 30000-30500 while the configured media range is 30000-31999 (the
second relay worker's streams start at 31000), published no TCP media port, and let the
container advertise 127.0.0.1. What a device is told (the SDP port, the advertised address)
is only reachable if the run line publishes exactly that.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass

import pytest

from gb28181gw.config import is_loopback, load_config
from tests.helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Published:
    """One ``-p [ip:]host:container[/proto]``, ranges as (first, last)."""

    host: tuple[int, int]
    container: tuple[int, int]
    proto: str
    ip: str


def _range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    return int(first), int(last or first)


def parse_publish(spec: str) -> Published:
    ports, _, proto = spec.partition("/")
    parts = ports.split(":")
    ip = parts[0] if len(parts) == 3 else ""
    host, container = parts[-2], parts[-1]
    return Published(_range(host), _range(container), proto or "tcp", ip)


def all_run_lines() -> list[list[str]]:
    """Every ``docker run`` command in the Dockerfile's comments, as argument lists."""
    commands: list[list[str]] = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            current = ""
            continue
        text = line.lstrip("#").strip()
        if current:
            current += " " + text
        elif text.startswith("docker run "):
            current = text
        else:
            continue
        if current.endswith("\\"):
            current = current[:-1]
        else:
            commands.append(shlex.split(current))
            current = ""
    return commands


def run_lines() -> list[list[str]]:
    """The ``docker run`` commands that run the gateway (not the one-off ``token create``)."""
    return [a for a in all_run_lines() if "token" not in a]


def options(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def env_of(argv: list[str]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in options(argv, "-e"))


def covers(published: list[Published], proto: str, first: int, last: int) -> bool:
    """Some ``-p`` of ``proto`` maps ports ``first``..``last`` to the same numbers on the host."""
    return any(
        p.proto == proto and p.host == p.container and p.container[0] <= first and last <= p.container[1]
        for p in published
    )


@pytest.fixture(scope="module")
def example() -> dict[str, dict[str, object]]:
    return tomllib.loads((ROOT / "conf" / "gateway.toml").read_text())


def test_there_is_a_bridge_and_a_host_network_run_line() -> None:
    lines = run_lines()
    assert len([a for a in lines if "--network" not in a]) == 1
    assert [options(a, "--network") for a in lines if "--network" in a] == [["host"]]


def test_bridge_run_line_publishes_sip_and_the_whole_media_range_for_udp_and_tcp(
    example: dict[str, dict[str, object]],
) -> None:
    (bridge,) = [a for a in run_lines() if "--network" not in a]
    published = [parse_publish(spec) for spec in options(bridge, "-p")]
    media, sip = example["media"], example["sip"]
    first, last = int(media["port_min"]), int(media["port_max"])  # type: ignore[call-overload]
    for proto in ("udp", "tcp"):
        # the SDP tells devices the container's port numbers: the host must use the same
        assert covers(published, proto, first, last), f"media {first}-{last}/{proto} not published"
        assert covers(published, proto, int(sip["port"]), int(sip["port"])), f"SIP/{proto}"  # type: ignore[call-overload]
    expose = re.search(r"^EXPOSE (.*)$", DOCKERFILE.read_text(), re.M)
    assert expose is not None
    exposed = [parse_publish(f"{p.split('/')[0]}:{p}") for p in expose[1].split()]
    for proto in ("udp", "tcp"):
        assert covers(exposed, proto, first, last)


def test_bridge_run_line_keeps_the_admin_api_on_the_hosts_loopback() -> None:
    (bridge,) = [a for a in run_lines() if "--network" not in a]
    admin = [p for p in map(parse_publish, options(bridge, "-p")) if p.container == (8028, 8028)]
    assert admin and all(p.ip == "127.0.0.1" for p in admin)


def test_run_lines_set_real_settings_and_the_bridge_one_advertises_the_hosts_address() -> None:
    # inside a bridge network the gateway sees only its container address: the run line must
    # name the host's, through the environment variable config.py reads for sip.advertised_address
    (bridge,) = [a for a in run_lines() if "--network" not in a]
    env = env_of(bridge)
    assert "GB28181GW_SIP_ADVERTISED_ADDRESS" in env
    assert load_config(env=env).sip.advertised_address == env["GB28181GW_SIP_ADVERTISED_ADDRESS"]
    (host,) = [a for a in run_lines() if "--network" in a]
    image_env = dict(re.findall(r"(GB28181GW_\w+)=(\S+)", DOCKERFILE.read_text().split("\nENV ", 1)[1]))
    # on the host network the image's 0.0.0.0 admin listen would expose the API: the line overrides it
    assert image_env.get("GB28181GW_ADMIN_LISTEN") == "0.0.0.0"
    assert "COPY conf/gateway.toml " + image_env["GB28181GW_CONFIG"] in DOCKERFILE.read_text()
    image_env["GB28181GW_CONFIG"] = str(ROOT / "conf" / "gateway.toml")  # what the image copies there
    assert load_config(env={**image_env, **env_of(host)}).admin.listen == "127.0.0.1"


def test_the_image_asks_for_tokens_and_says_how_to_make_the_first_in_the_volume() -> None:
    image_env = dict(re.findall(r"(GB28181GW_\w+)=(\S+)", DOCKERFILE.read_text().split("\nENV ", 1)[1]))
    image_env["GB28181GW_CONFIG"] = str(ROOT / "conf" / "gateway.toml")
    # beyond loopback: the gateway requires tokens and refuses to start without an admin token
    assert not is_loopback(load_config(env=image_env).admin.listen)
    (make,) = [a for a in all_run_lines() if "token" in a]
    assert make[make.index("token") :] == ["token", "create", "admin", "--role", "admin"]
    assert make[make.index("token") - 1] == "gb28181gw"  # the image, whose entry point is gb28181gw
    (bridge,) = [a for a in run_lines() if "--network" not in a]
    assert options(make, "-v") == options(bridge, "-v")  # the store the gateway will read
    # the health check needs no token: it asks an open page
    check = re.search(r"^HEALTHCHECK .*$", DOCKERFILE.read_text(), re.M)
    assert check is not None and "/readyz" in check[0] and "Authorization" not in check[0]
