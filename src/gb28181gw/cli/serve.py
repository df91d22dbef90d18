"""``serve`` and ``config``: run the gateway, check a configuration.

Both take the same options and load the configuration the same way (:func:`load`), so
``gb28181gw config`` checks exactly what ``gb28181gw serve`` with those options would run,
and both stop with exit status 3 (``app.STARTUP_FAILURE``) on a configuration error.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.markup import escape

from gb28181gw.cli.common import JSON_OPTION, Column, emit, fail, main, plural, print_json, warn
from gb28181gw.config import (
    ENV_PREFIX,
    Config,
    Setting,
    config_warnings,
    effective_settings,
    load_config,
)
from gb28181gw.errors import ConfigError, ConfigFileMissing

#: The shorthand flags of :func:`config_options`: parameter name → (flag, the option it sets).
_SHORTHANDS = {
    "listen": ("--listen", "sip.listen"),
    "port": ("--port", "sip.port"),
    "admin_port": ("--admin-port", "admin.port"),
    "gateway_id": ("--id", "gateway.id"),
    "log_level": ("--log-level", "log.level"),
    "wire": ("--wire", "log.wire"),
}


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The configuration options of ``serve``, for every command that loads a configuration."""
    options = [
        click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file."),
        click.option(
            "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting, e.g. sip.port=5070."
        ),
        click.option("--listen", multiple=True, help="SIP listen address (repeat for several). [sip.listen]"),
        click.option("--port", type=int, help="SIP port for UDP and TCP. [sip.port]"),
        click.option("--admin-port", type=int, help="Admin API port. [admin.port]"),
        click.option("--id", "gateway_id", help="Our 20-digit platform ID. [gateway.id]"),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="[log.level]"),
        click.option("--wire", is_flag=True, default=None, help="Log every SIP message (debug). [log.wire]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _startup_failure(message: str, hint: str | None = None) -> NoReturn:
    from gb28181gw.app import STARTUP_FAILURE

    fail(message, hint, code=STARTUP_FAILURE)


def load(config_path: str | None, sets: tuple[str, ...], **shorthands: Any) -> Config:
    """The configuration :func:`config_options` describe; a bad one ends the command with status 3."""
    overrides: dict[str, str] = {}
    flags: dict[str, str] = {}
    for pair in sets:
        key, eq, value = pair.partition("=")
        if not eq:
            raise click.BadParameter(f"{pair!r}: expected section.key=value", param_hint="--set")
        overrides[key.strip()] = value
        flags[key.strip()] = "--set"
    for name, value in shorthands.items():
        if value is None or value == ():
            continue
        flag, key = _SHORTHANDS[name]
        overrides[key] = ",".join(value) if isinstance(value, tuple) else str(value)
        flags[key] = flag
    try:
        return load_config(config_path, overrides=overrides, flags=flags)
    except ConfigError as exc:
        origin = f" (from {exc.source})" if exc.source else ""
        if exc.key == "config":  # the file itself: its reason names it
            _startup_failure(
                f"configuration {exc.reason}",
                f"give the file's path with -c or {ENV_PREFIX}CONFIG (conf/gateway.toml documents every option)"
                if isinstance(exc, ConfigFileMissing)
                else None,
            )
        _startup_failure(f"{exc.key}: {exc.reason}{origin}")


@main.command()
@config_options
def serve(config_path: str | None, sets: tuple[str, ...], **shorthands: Any) -> None:
    """Run the gateway (defaults: SIP on 0.0.0.0:5060 UDP+TCP, admin API on 127.0.0.1:8028)."""
    from gb28181gw.app import run
    from gb28181gw.config import parse_time_zone
    from gb28181gw.logs import setup_logging

    config = load(config_path, sets, **shorthands)
    setup_logging(
        config.log.level, config.log.format, wire=config.log.wire, time_zone=parse_time_zone(config.gateway.time_zone)
    )
    log = logging.getLogger("gb28181gw.config")
    for w in config_warnings(config):
        log.warning(w.message, extra={"key": w.key, "concern": w.concern.value})
    sys.exit(run(config))


def show_value(value: Any) -> str:
    """An option's value as ``gb28181gw config`` prints it: lists comma-separated, as in the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value) if value else "[]"
    if value == "":
        return '""'
    return str(value)


def _source(s: Setting) -> str:
    return f"{s.source}; derived: {s.derived}" if s.derived else s.source


@main.command("config")
@config_options
@JSON_OPTION
def config_cmd(config_path: str | None, sets: tuple[str, ...], as_json: bool, **shorthands: Any) -> None:
    """Check a configuration as `serve` with the same options would run it.

    Prints every option's effective value (derived ones worked out, secrets redacted) and
    where it came from (default, file, environment variable, flag), then warns about what
    will probably not work. Exit status 3 when the configuration is invalid, like `serve`.
    """
    config = load(config_path, sets, **shorthands)
    settings = effective_settings(config)
    warnings = config_warnings(config)
    if as_json:
        print_json(
            {
                "settings": [
                    {
                        "key": s.key,
                        "value": s.value,
                        "configured": s.configured,
                        "source": s.source,
                        "derived": s.derived,
                        "secret": s.secret,
                        "help": s.help,
                    }
                    for s in settings
                ],
                "warnings": [{"concern": w.concern.value, "key": w.key, "message": w.message} for w in warnings],
            }
        )
        return
    emit(
        settings,
        [
            Column("key", lambda s: s.key, is_id=True),  # whole, so it can be copied into --set
            Column("value", lambda s: show_value(s.value), is_id=True),  # may be an ID: never folded
            Column("source", _source),
            Column("meaning", lambda s: s.help),
        ],
        title="effective configuration",
    )
    for w in warnings:
        warn(escape(w.message))
    if warnings:
        click.echo(f"{plural(len(warnings), 'warning')}", err=True)
