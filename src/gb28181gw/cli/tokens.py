"""``gb28181gw token create|list|revoke``: the admin API's tokens.

Through the admin API of the running gateway when one answers (that needs an admin token, or a
loopback API without ``admin.require_tokens``); when none answers (connection refused), directly
on the store file of the configuration (``-c`` / ``GB28181GW_CONFIG``, ``store.path``), the change
recorded in the audit trail as done by ``cli``. That is how the first admin token is made: with
the gateway stopped, since a gateway that needs tokens refuses to start without one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from gb28181gw.access import Role, looks_like_token
from gb28181gw.audit import Actor
from gb28181gw.cli.common import (
    ADMIN_OPTION,
    JSON_OPTION,
    TOKEN_ENV,
    Column,
    call,
    done,
    emit,
    fail,
    main,
    print_json,
    segment,
    when,
)
from gb28181gw.cli.serve import load
from gb28181gw.config import Config
from gb28181gw.errors import AdminApiError, StoreError, TokenError, redact_url

_T = TypeVar("_T")


@main.group("token")
def token() -> None:
    """Admin API tokens: make one (shown once), list them, revoke one."""


def _store_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting (store.path=…)."
    )(command)
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="The gateway's TOML config: its store.path is used when no gateway answers.",
    )(command)


def _where(config: Config) -> str:
    """The store of ``config``, for people (a Redis URL without its password)."""
    if config.store.backend == "redis":
        return redact_url(config.store.url)
    return config.store.path


def _offline(config: Config, admin: str, work: Callable[[Any], Awaitable[_T]]) -> _T:
    """Run ``work(access)`` on the store file itself, recording the audit as ``cli``."""
    from gb28181gw.app import make_store
    from gb28181gw.services.access import AccessService
    from gb28181gw.services.audit import AuditService, acting

    async def run() -> _T:
        store = make_store(config.store)
        await store.open()
        try:
            audit = AuditService(store, retention_days=config.audit.retention_days)
            access = AccessService(store, audit)
            await access.start()
            with acting(Actor("cli")):
                result = await work(access)
            await audit.flush()
            return result
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except TokenError as exc:
        fail(str(exc), exc.hint)
    except StoreError as exc:
        fail(
            f"no gateway answers at {admin}, and the store {_where(config)!r} cannot be used: {exc}",
            "if a gateway is running on that store, its admin API is elsewhere or disabled: name it with --admin "
            "(or GB28181GW_ADMIN_URL), or set admin.enabled; tokens are changed on the store itself only with the "
            "gateway stopped. Is -c (or GB28181GW_CONFIG) the gateway's config?",
        )


def _api_or_store(
    admin: str, config_path: str | None, sets: tuple[str, ...], method: str, path: str, body: Any = None
) -> tuple[Any, Config | None]:
    """The API's answer, or ``(None, config)`` when no gateway answers at ``admin``."""
    try:
        return call(admin, method, path, body), None
    except AdminApiError as exc:
        if not exc.unreachable:
            fail(exc.message, exc.hint)
    config = load(config_path, sets)
    click.echo(f"no gateway answers at {admin}: working on the store {_where(config)}", err=True)
    return None, config


@token.command("create")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]), help="What the token may do.")
@_store_options
@ADMIN_OPTION
@JSON_OPTION
def create(name: str, role: str, config_path: str | None, sets: tuple[str, ...], admin: str, as_json: bool) -> None:
    """Make a token NAME with ROLE and print its secret (this once only)."""
    answer, config = _api_or_store(admin, config_path, sets, "POST", "/tokens", {"name": name, "role": role})
    if config is not None:

        async def make(access: Any) -> dict[str, Any]:
            made, secret = await access.create(name, Role.parse(role))
            return {"name": made.name, "role": str(made.role), "created": made.created, "token": secret}

        answer = _offline(config, admin, make)
    if as_json:
        print_json(answer)
        return
    click.echo(f"token {answer['name']} ({answer['role']}):\n\n    {answer['token']}\n")
    click.echo(
        "It cannot be shown again: keep it now (a password manager, a secret store). Use it with\n"
        f"    export {TOKEN_ENV}={answer['token']}\n"
        "or send 'Authorization: Bearer <token>' to the admin API."
    )


@token.command("list")
@_store_options
@ADMIN_OPTION
@JSON_OPTION
def listing(config_path: str | None, sets: tuple[str, ...], admin: str, as_json: bool) -> None:
    """The tokens (never their secrets): name, role, made, last used, revoked."""
    answer, config = _api_or_store(admin, config_path, sets, "GET", "/tokens")
    if config is not None:
        from gb28181gw.services.access import token_json

        async def read(access: Any) -> dict[str, Any]:
            return {"tokens": [token_json(t) for t in access.listing()]}

        answer = _offline(config, admin, read)
    rows = answer["tokens"]
    emit(
        rows,
        [
            Column("NAME", "name", is_id=True),
            Column("ROLE", "role"),
            Column("CREATED", lambda r: when(r["created"], relative=False)),
            Column("LAST USED", lambda r: when(r["last_used"] or None)),
            Column("STATE", lambda r: "active" if r["active"] else f"revoked {when(r['revoked'], relative=False)}"),
        ],
        as_json=as_json,
        json_rows=answer,
        title="Admin API tokens",
    )


@token.command("revoke")
@click.argument("name")
@_store_options
@ADMIN_OPTION
@JSON_OPTION
def revoke(name: str, config_path: str | None, sets: tuple[str, ...], admin: str, as_json: bool) -> None:
    """Revoke the token NAME: it is refused from its next request on (its name stays used)."""
    if looks_like_token(name):
        fail(
            "that is a token's secret, not its name (it is not sent anywhere)",
            "`gb28181gw token list` shows the names; revoke this one by its name: whoever saw this command "
            "line (shell history, process list) may have seen the secret",
        )
    answer, config = _api_or_store(admin, config_path, sets, "DELETE", f"/tokens/{segment(name)}")
    if config is not None:

        async def drop(access: Any) -> dict[str, Any]:
            gone = await access.revoke(name)
            return {"name": gone.name, "revoked": gone.revoked}

        answer = _offline(config, admin, drop)
    done(answer, as_json, f"token {answer['name']} revoked")
