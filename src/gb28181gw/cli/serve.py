"""``serve`` and ``config``: run the gateway, check a configuration."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table

from gb28181gw.cli.common import console, err_console, main
from gb28181gw.config import describe_options, load_config
from gb28181gw.errors import ConfigError


def _overrides(pairs: tuple[str, ...], **shorthands: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise click.BadParameter(f"{pair!r}: expected section.key=value", param_hint="--set")
        out[key.strip()] = value
    for key, value in shorthands.items():
        if value is not None:
            out[key] = ",".join(value) if isinstance(value, tuple) else str(value)
    return out


@main.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting, e.g. sip.port=5070.")
@click.option("--listen", multiple=True, help="SIP listen address (repeat for several). [sip.listen]")
@click.option("--port", type=int, help="SIP port for UDP and TCP. [sip.port]")
@click.option("--admin-port", type=int, help="Admin API port. [admin.port]")
@click.option("--id", "gateway_id", help="Our 20-digit platform ID. [gateway.id]")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="[log.level]")
@click.option("--wire", is_flag=True, default=None, help="Log every SIP message (debug). [log.wire]")
def serve(
    config_path: str | None,
    sets: tuple[str, ...],
    listen: tuple[str, ...],
    port: int | None,
    admin_port: int | None,
    gateway_id: str | None,
    log_level: str | None,
    wire: bool | None,
) -> None:
    """Run the gateway (defaults: SIP on 0.0.0.0:5060 UDP+TCP, admin API on 127.0.0.1:8028)."""
    from gb28181gw.app import STARTUP_FAILURE, run
    from gb28181gw.config import parse_time_zone
    from gb28181gw.logs import setup_logging

    try:
        config = load_config(
            config_path,
            overrides=_overrides(
                sets,
                **{
                    "sip.listen": listen or None,
                    "sip.port": port,
                    "admin.port": admin_port,
                    "gateway.id": gateway_id,
                    "log.level": log_level,
                    "log.wire": wire,
                },
            ),
        )
    except ConfigError as exc:
        err_console.print(f"[red]{exc}[/red]", highlight=False)
        sys.exit(STARTUP_FAILURE)
    setup_logging(
        config.log.level, config.log.format, wire=config.log.wire, time_zone=parse_time_zone(config.gateway.time_zone)
    )
    sys.exit(run(config))


@main.command("config")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="Check this TOML file.")
def config_cmd(config_path: str | None) -> None:
    """Check a configuration (file + environment) and print every effective option."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        err_console.print(f"[red]{exc}[/red]", highlight=False)
        sys.exit(1)
    table = Table("key", "value", "meaning")
    for key, _default, help_text in describe_options():
        section, _, name = key.partition(".")
        table.add_row(key, repr(getattr(getattr(config, section), name)), help_text)
    console.print(table)
