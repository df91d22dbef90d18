"""Who may call the admin API (issue 15): tokens, roles, refusals, start-up refusal, TLS, the CLI's token.

In-process for the route-by-route checks (every route of ``admin.routes()``, so a route added
later is covered without touching this file); one real process for start-up and the CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import multidict
import pytest

from gb28181gw.access import Role, new_secret
from gb28181gw.app import STARTUP_FAILURE, Gateway
from gb28181gw.audit import Action, AuditQuery, Result
from gb28181gw.config import Concern, config_warnings, load_config
from gb28181gw.errors import ConfigError
from tests.helpers import ROOT
from tests.process import free_port, serve, wait_ready
from tests.shell.conftest import start_gateway

ANY_ID = "34020000001320000001"


def concrete(path: str) -> str:
    """``path`` with each ``{placeholder}`` filled with something it accepts."""

    def fill(m: re.Match[str]) -> str:
        name, _, pattern = m[1].partition(":")
        if pattern == "info|status":
            return "info"
        return ANY_ID if "id" in name or pattern else "nobody"

    return re.sub(r"\{([^{}]*(?:\{[0-9]+\}[^{}]*)?)\}", fill, path)


class Client:
    """Requests to one gateway's admin API, with or without a token."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def ask(
        self, method: str, path: str, token: str | None = None, *, header: str | None = None, body: Any = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["Authorization"] = header
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps({} if body is None else body) if method in ("POST", "PUT", "PATCH") else None
        async with self.session.request(method, self.base + path, headers=headers, data=data) as resp:
            text = await resp.text()
            try:
                answer = json.loads(text) if text else {}  # NDJSON (the doctor) is not one object: {}
            except ValueError:
                answer = {}
            return resp.status, answer if isinstance(answer, dict) else {}, dict(resp.headers)


@pytest.fixture
async def locked() -> AsyncIterator[tuple[Gateway, Client, dict[str, str]]]:
    """A gateway whose admin API asks every caller for a token, with one token of each role and a revoked one."""
    gw = await start_gateway()
    assert gw.admin is not None
    secrets = {}
    for role in Role:
        _, secrets[str(role)] = await gw.access.create(f"t-{role}", role)
    _, secrets["revoked"] = await gw.access.create("t-gone", Role.ADMIN)
    await gw.access.revoke("t-gone")
    gw.admin.require_tokens = True
    try:
        async with aiohttp.ClientSession() as session:
            yield gw, Client(session, f"http://127.0.0.1:{gw.admin.port}"), secrets
    finally:
        await gw.stop()


def refused(gw: Gateway) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for line in gw.metrics.render().decode().splitlines():
        m = re.match(r'gb28181gw_admin_refused_total\{reason="([a-z-]+)",status="(\d+)"\} (\S+)', line)
        if m:
            counts[m[2], m[1]] = float(m[3])
    return counts


async def test_every_route_refuses_a_caller_without_a_valid_token(
    locked: tuple[Gateway, Client, dict[str, str]],
) -> None:
    gw, client, secrets = locked
    assert gw.admin is not None
    routes = gw.admin.routes()
    assert len(routes) > 40 and all(isinstance(role, Role) for _, _, role in routes)
    for method, path, _ in routes:
        assert path.startswith("/api/v1/"), path
        url = concrete(path)
        what = f"{method} {url}"
        status, answer, headers = await client.ask(method, url)
        assert status == 401, what
        assert headers.get("WWW-Authenticate") == 'Bearer realm="gb28181gw"', what
        assert answer["error"] and "token" in answer["hint"], what
        for header in ("Basic dXNlcjpwYXNz", "Bearer " + "x" * 20, f"Bearer {secrets['admin']}x"):
            assert (await client.ask(method, url, header=header))[0] == 401, (what, header)
        assert (await client.ask(method, url, new_secret()))[0] == 401, what  # well-formed, unknown
        status, answer, _ = await client.ask(method, url, secrets["revoked"])
        assert status == 401 and "revoked" in answer["error"], what
        # in the URL it is refused even when valid: URLs end up in logs
        status, answer, _ = await client.ask(method, f"{url}?token={secrets['admin']}")
        assert status == 401 and "Authorization" in answer["hint"], what
        assert secrets["admin"] not in json.dumps(answer)
    n = len(routes)
    counts = refused(gw)
    assert counts[("401", "missing")] == n
    assert counts[("401", "malformed")] == 3 * n
    assert counts[("401", "unknown")] == n
    assert counts[("401", "revoked")] == n
    assert counts[("401", "query-string")] == n


async def test_each_role_gets_its_routes_and_no_more(locked: tuple[Gateway, Client, dict[str, str]]) -> None:
    gw, client, secrets = locked
    assert gw.admin is not None
    forbidden = 0
    for method, path, needed in gw.admin.routes():
        url = concrete(path)
        for role in Role:
            status, answer, _ = await client.ask(method, url, secrets[str(role)])
            what = f"{role} {method} {url} ({needed})"
            if role.allows(needed):
                assert status not in (401, 403), (what, answer)
            else:
                forbidden += 1
                assert status == 403, what
                assert f"needs the role {needed}" in answer["error"] and str(role) in answer["error"], what
    assert forbidden > 20
    assert refused(gw)[("403", "role")] == forbidden
    # every 403 is in the audit trail, naming the caller and the role it lacked
    records = await gw.audit.query(AuditQuery(action=str(Action.ACCESS_REFUSED), limit=10_000))
    assert len(records) == forbidden
    first = records[0].entry
    assert first.actor.startswith("token:t-") and first.source == "127.0.0.1" and first.result == "refused"
    assert set(first.params) == {"method", "path", "role"}


async def test_the_roles_the_issue_gives_the_routes(locked: tuple[Gateway, Client, dict[str, str]]) -> None:
    gw, _, _ = locked
    assert gw.admin is not None
    role = {(m, p.removeprefix("/api/v1")): r for m, p, r in gw.admin.routes()}
    assert role["GET", "/devices"] is Role.VIEWER and role["GET", "/whoami"] is Role.VIEWER
    assert role["POST", "/streams"] is Role.OPERATOR and role["POST", "/ptz"] is Role.OPERATOR
    assert role["GET", "/devices/{device_id}/{what:info|status}"] is Role.OPERATOR
    assert role["GET", "/channels/{channel_id}/records"] is Role.OPERATOR
    assert role["POST", "/devices"] is Role.ADMIN and role["DELETE", "/bans/{key}"] is Role.ADMIN
    assert role["POST", "/tokens"] is Role.ADMIN and role["POST", "/ledger/import"] is Role.ADMIN


async def test_open_pages_and_whoami(locked: tuple[Gateway, Client, dict[str, str]]) -> None:
    gw, client, secrets = locked
    assert gw.admin is not None
    for path in ("/healthz", "/readyz", "/metrics"):
        async with client.session.get(client.base.replace("/api/v1", "") + path) as resp:
            assert resp.status == 200, path
    gw.admin.open_metrics = False
    async with client.session.get(client.base + "/metrics") as resp:
        assert resp.status == 401
    async with client.session.get(
        client.base + "/metrics", headers={"Authorization": "Bearer " + secrets["viewer"]}
    ) as r:
        assert r.status == 200
    status, answer, _ = await client.ask("GET", "/api/v1/whoami", secrets["operator"])
    assert status == 200 and answer == {"name": "t-operator", "role": "operator", "source": "127.0.0.1", "how": "token"}
    # the token's last use is remembered
    (used,) = [t for t in gw.access.listing() if t.name == "t-operator"]
    assert used.last_used > 0


async def test_tokens_are_made_listed_and_revoked_through_the_api(
    locked: tuple[Gateway, Client, dict[str, str]],
) -> None:
    gw, client, secrets = locked
    boss = secrets["admin"]
    status, made, _ = await client.ask("POST", "/api/v1/tokens", boss, body={"name": "grafana", "role": "viewer"})
    assert status == 201 and made["name"] == "grafana" and made["role"] == "viewer"
    assert (await client.ask("GET", "/api/v1/whoami", made["token"]))[1]["name"] == "grafana"
    status, answer, _ = await client.ask("POST", "/api/v1/tokens", boss, body={"name": "grafana", "role": "admin"})
    assert status == 409
    status, answer, _ = await client.ask("POST", "/api/v1/tokens", boss, body={"name": "t-gone", "role": "admin"})
    assert status == 409 and "revoked" in answer["error"]  # a revoked name is never reused
    assert (await client.ask("POST", "/api/v1/tokens", boss, body={"name": "a b", "role": "viewer"}))[0] == 400
    assert (await client.ask("POST", "/api/v1/tokens", boss, body={"name": "x", "role": "root"}))[0] == 400
    status, listing, _ = await client.ask("GET", "/api/v1/tokens", boss)
    assert status == 200 and {t["name"] for t in listing["tokens"]} >= {"grafana", "t-gone"}
    assert made["token"] not in json.dumps(listing) and "digest" not in json.dumps(listing)
    status, answer, _ = await client.ask("DELETE", "/api/v1/tokens/grafana", boss)
    assert status == 200 and answer["revoked"] > 0
    assert (await client.ask("GET", "/api/v1/whoami", made["token"]))[0] == 401
    assert (await client.ask("DELETE", "/api/v1/tokens/nobody", boss))[0] == 404
    # the changes are audited, by whom, without the secret
    records = await gw.audit.query(AuditQuery(action="token.", limit=100))
    mine = [r.entry for r in records if r.entry.target == "grafana"]
    assert [(e.action, e.result) for e in mine] == [
        (Action.TOKEN_CREATE, Result.OK),
        (Action.TOKEN_CREATE, Result.REFUSED),  # the name taken: refused changes are recorded too
        (Action.TOKEN_REVOKE, Result.OK),
    ]
    assert all(e.actor == "token:t-admin" for e in mine)
    assert [e.params for e in mine] == [
        {"name": "grafana", "role": "viewer"},
        {"name": "grafana", "role": "admin"},
        {"name": "grafana", "role": "viewer"},
    ]
    assert "exists already" in mine[1].detail
    (probe,) = [r.entry for r in records if r.entry.target == "nobody"]
    assert probe.action == Action.TOKEN_REVOKE and probe.result == Result.REFUSED
    assert made["token"] not in json.dumps([r.as_dict() for r in records])


async def test_loopback_without_require_tokens_lets_a_tokenless_caller_in_as_local() -> None:
    gw = await start_gateway()
    try:
        assert gw.admin is not None
        _, secret = await gw.access.create("v", Role.VIEWER)
        base = f"http://127.0.0.1:{gw.admin.port}/api/v1"
        async with aiohttp.ClientSession() as session:
            client = Client(session, base)
            status, answer, _ = await client.ask("GET", "/whoami")
            assert status == 200 and answer["how"] == "local" and answer["name"] == "local"
            assert answer["role"] == "admin"
            assert (await client.ask("POST", "/devices/prune", body={}))[0] not in (401, 403)
            # a header sent is checked even here
            assert (await client.ask("GET", "/whoami", header="Bearer nonsense"))[0] == 401
            assert (await client.ask("POST", "/devices/prune", secret, body={}))[0] == 403
    finally:
        await gw.stop()


async def test_start_up_needs_an_admin_token_where_tokens_are_required() -> None:
    store = str(Path(tempfile.mkdtemp(prefix="gb28181gw-test-")) / "gw.db")
    settings = {"store.path": store, "sip.listen": "127.0.0.1", "sip.port": "0", "admin.port": "0",
                "media.workers": "0", "admin.require_tokens": "true"}  # fmt: skip

    async def start_with(*tokens: tuple[str, Role]) -> Gateway:
        if tokens:  # put them in the store as `token create` does with the gateway stopped
            gw = Gateway(load_config(None, env={}, overrides=settings))
            await gw.store.open()
            for name, role in tokens:
                await gw.access.create(name, role)
            await gw.store.close()
        gw = Gateway(load_config(None, env={}, overrides=settings))
        try:
            await gw.start()
        finally:
            await gw.stop()
        return gw

    with pytest.raises(ConfigError, match=r"no active admin token.*gb28181gw token create NAME --role admin"):
        await start_with()
    with pytest.raises(ConfigError, match="no active admin token"):  # a viewer's is not enough
        await start_with(("v", Role.VIEWER))
    await start_with(("boss", Role.ADMIN))


def test_tls_needs_both_files() -> None:
    with pytest.raises(ConfigError, match="admin.tls_key"):
        load_config(None, env={}, overrides={"admin.tls_cert": "cert.pem"})
    with pytest.raises(ConfigError, match="admin.tls_cert"):
        load_config(None, env={}, overrides={"admin.tls_key": "key.pem"})


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("GB28181GW_TOKEN", "GB28181GW_CA_FILE")}
    return subprocess.run(
        [sys.executable, "-m", "gb28181gw", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "GB28181GW_TIME_ZONE": "UTC+8", **(env or {})},
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_the_cli_reaches_an_https_admin_api_with_a_private_ca(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    gw = await start_gateway(**{"admin.tls_cert": str(cert), "admin.tls_key": str(key)})
    try:
        assert gw.admin is not None and gw.admin.scheme == "https"
        url = f"https://127.0.0.1:{gw.admin.port}"
        untrusted = await asyncio.to_thread(cli, "status", "--admin", url)
        assert untrusted.returncode == 1 and "--ca-file" in untrusted.stderr
        done = await asyncio.to_thread(cli, "status", "--json", "--admin", url, env={"GB28181GW_CA_FILE": str(cert)})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["gateway_id"] == gw.config.gateway.id
    finally:
        await gw.stop()


def test_a_gateway_beyond_loopback_needs_an_admin_token_and_the_cli_uses_one(tmp_path: Path) -> None:
    store = str(tmp_path / "gw.db")
    admin_port = free_port()
    args = ["--listen", "127.0.0.1", "--port", str(free_port()), "--admin-port", str(admin_port),
            "--set", "admin.listen=0.0.0.0", "--set", "media.workers=0"]  # fmt: skip
    proc = serve(*args, store=store)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == STARTUP_FAILURE, out
    assert "gb28181gw token create NAME --role admin" in out and "no active admin token" in out

    # no gateway answers: the CLI makes the first token on the store itself
    admin = f"127.0.0.1:{admin_port}"
    made = cli("token", "create", "boss", "--role", "admin", "--set", f"store.path={store}", "--admin", admin)
    assert made.returncode == 0, made.stderr
    assert "cannot be shown again" in made.stdout and "export GB28181GW_TOKEN=gbgw_" in made.stdout
    (boss,) = re.findall(r"gbgw_[A-Za-z0-9_-]{43}", made.stdout)[:1]

    proc = serve(*args, store=store)
    try:
        wait_ready(f"http://{admin}", proc)
        bare = cli("devices", "--admin", admin)
        assert bare.returncode == 1 and "GB28181GW_TOKEN" in bare.stderr and "token create" in bare.stderr
        assert "Traceback" not in bare.stderr
        ok = cli("devices", "--json", "--admin", admin, env={"GB28181GW_TOKEN": boss})
        assert ok.returncode == 0 and json.loads(ok.stdout) == [], ok.stderr
        # through the API now: a viewer's token, which may read and not add devices
        made = cli("token", "create", "watcher", "--role", "viewer", "--json", "--admin", admin,
                   env={"GB28181GW_TOKEN": boss})  # fmt: skip
        assert made.returncode == 0, made.stderr
        watcher = json.loads(made.stdout)["token"]
        assert cli("devices", "--admin", admin, "--token", watcher).returncode == 0
        added = cli("device", "add", ANY_ID, "--admin", admin, env={"GB28181GW_TOKEN": watcher})
        assert added.returncode == 1 and "needs the role admin" in added.stderr, added.stderr
        listing = cli("token", "list", "--json", "--admin", admin, env={"GB28181GW_TOKEN": boss})
        assert {t["name"] for t in json.loads(listing.stdout)["tokens"]} == {"boss", "watcher"}
        assert cli("token", "revoke", "watcher", "--admin", admin, env={"GB28181GW_TOKEN": boss}).returncode == 0
        gone = cli("devices", "--admin", admin, env={"GB28181GW_TOKEN": watcher})
        assert gone.returncode == 1 and "revoked" in gone.stderr
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_beyond_loopback_only_plain_http_is_warned_about() -> None:
    plain = load_config(None, env={}, overrides={"admin.listen": "0.0.0.0"})
    (warning,) = [w for w in config_warnings(plain) if w.concern is Concern.ADMIN_EXPOSED]
    assert "in clear" in warning.message and "admin.tls_cert" in warning.message
    tls = load_config(None, env={}, overrides={"admin.listen": "0.0.0.0", "admin.tls_cert": "c", "admin.tls_key": "k"})
    assert not [w for w in config_warnings(tls) if w.concern is Concern.ADMIN_EXPOSED]


# --- a hostile review's findings (each failed before its fix) --------------------------------


async def test_a_token_in_the_query_string_is_refused_under_any_name(
    locked: tuple[Gateway, Client, dict[str, str]],
) -> None:
    gw, client, secrets = locked
    for query in (f"?t={secrets['admin']}", f"?state=online&x=Bearer%20{secrets['viewer']}", f"?{secrets['admin']}"):
        status, answer, _ = await client.ask("GET", "/api/v1/devices" + query, secrets["admin"])
        assert status == 401 and "Authorization" in answer["hint"], query
        assert secrets["admin"] not in json.dumps(answer)
    assert refused(gw)[("401", "query-string")] == 3


async def test_a_route_added_behind_add_routes_back_needs_the_admin_role(
    locked: tuple[Gateway, Client, dict[str, str]],
) -> None:
    from gb28181gw.admin import AdminServer, json_response
    from gb28181gw.metrics import Metrics

    gw, _, secrets = locked
    admin = AdminServer(Metrics(), status=dict, ready=lambda: True, allowed_hosts=[], access=gw.access)

    async def sneaky(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return json_response({"secret": "stuff"})

    admin.app.router.add_get("/api/v1/sneaky", sneaky)  # no role stated: only an admin may call it
    await admin.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(session, f"http://127.0.0.1:{admin.port}")
            assert (await client.ask("GET", "/api/v1/sneaky", secrets["viewer"]))[0] == 403
            assert (await client.ask("GET", "/api/v1/sneaky", secrets["operator"]))[0] == 403
            assert (await client.ask("GET", "/api/v1/sneaky", secrets["admin"]))[0] == 200
            # a path that names nothing is still 404 to any valid token, not 403
            assert (await client.ask("GET", "/api/v1/nothing-here", secrets["viewer"]))[0] == 404
            assert (await client.ask("GET", "/api/v1//status", secrets["viewer"]))[0] == 404
    finally:
        await admin.stop()


async def test_a_proxied_request_without_a_token_is_not_taken_for_a_local_caller() -> None:
    gw = await start_gateway()
    try:
        assert gw.admin is not None and not gw.admin.auth_required
        _, secret = await gw.access.create("v", Role.VIEWER)
        async with aiohttp.ClientSession() as session:
            client = Client(session, f"http://127.0.0.1:{gw.admin.port}")
            for name, value in (("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=203.0.113.9"),
                                ("X-Real-IP", "203.0.113.9")):  # fmt: skip
                async with session.get(client.base + "/api/v1/whoami", headers={name: value}) as resp:
                    answer = await resp.json()
                    assert resp.status == 401 and "proxy" in answer["error"], name
                headers = {name: value, "Authorization": f"Bearer {secret}"}
                async with session.get(client.base + "/api/v1/whoami", headers=headers) as resp:
                    assert resp.status == 200 and (await resp.json())["name"] == "v", name
        assert refused(gw)[("401", "proxied")] == 3
    finally:
        await gw.stop()


async def test_the_last_admin_token_is_not_revoked_over_the_api_where_tokens_are_required(
    locked: tuple[Gateway, Client, dict[str, str]],
) -> None:
    gw, client, secrets = locked
    boss = secrets["admin"]
    status, answer, _ = await client.ask("DELETE", "/api/v1/tokens/t-admin", boss)
    assert status == 409 and "last admin token" in answer["error"] and "token create" in answer["hint"]
    assert (await client.ask("GET", "/api/v1/whoami", boss))[0] == 200
    status, made, _ = await client.ask("POST", "/api/v1/tokens", boss, body={"name": "boss2", "role": "admin"})
    assert status == 201
    assert (await client.ask("DELETE", "/api/v1/tokens/t-admin", made["token"]))[0] == 200
    assert (await client.ask("DELETE", "/api/v1/tokens/boss2", made["token"]))[0] == 409


async def test_a_store_that_fails_leaves_tokens_as_they_were_and_says_so(
    locked: tuple[Gateway, Client, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gb28181gw.errors import StoreError

    gw, client, secrets = locked

    async def broken(token: Any) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(gw.store, "save_token", broken)
    status, answer, _ = await client.ask("DELETE", "/api/v1/tokens/t-viewer", secrets["admin"])
    assert status == 503 and "disk full" in answer["error"] and "not revoked" in answer["error"]
    assert (await client.ask("GET", "/api/v1/whoami", secrets["viewer"]))[0] == 200  # as the store says
    status, answer, _ = await client.ask(
        "POST", "/api/v1/tokens", secrets["admin"], body={"name": "n", "role": "viewer"}
    )
    assert status == 503 and "not made" in answer["error"] and "token" not in answer
    assert "n" not in {t.name for t in gw.access.listing()}


def test_the_cli_refuses_a_malformed_token_before_any_request() -> None:
    port = free_port()
    for bad in ("gbgw_short", "gbgw_" + "a" * 40 + "\nSECRETPART", "jeton-é" + "a" * 44):
        result = cli("status", "--admin", f"127.0.0.1:{port}", env={"GB28181GW_TOKEN": bad})
        assert result.returncode != 0, bad
        assert "GB28181GW_TOKEN" in result.stderr and "cannot reach" not in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "SECRETPART" not in result.stderr + result.stdout
    result = cli("status", "--admin", f"127.0.0.1:{port}", "--token", "nope", env={"GB28181GW_TOKEN": new_secret()})
    assert "--token" in result.stderr and "cannot reach" not in result.stderr, result.stderr


def test_an_offline_token_command_on_a_store_a_gateway_holds_says_what_to_do(tmp_path: Path) -> None:
    from gb28181gw.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "gw.db")

    async def hold() -> None:
        await store.open()

    asyncio.run(hold())
    try:
        port = free_port()
        result = cli("token", "create", "boss", "--role", "admin", "--admin", f"127.0.0.1:{port}",
                     "--set", f"store.path={tmp_path / 'gw.db'}")  # fmt: skip
        assert result.returncode != 0
        assert "in use by another gb28181gw" in result.stderr, result.stderr
        assert "if a gateway is running on that store" in result.stderr and "--admin" in result.stderr, result.stderr
    finally:
        asyncio.run(store.close())


async def test_two_authorization_headers_are_refused(locked: tuple[Gateway, Client, dict[str, str]]) -> None:
    gw, client, secrets = locked
    for first, second in ((secrets["viewer"], secrets["admin"]), (secrets["admin"], secrets["viewer"])):
        headers = [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]
        async with client.session.get(client.base + "/api/v1/tokens", headers=multidict.CIMultiDict(headers)) as resp:
            assert resp.status == 401 and "one Authorization header" in (await resp.json())["error"]
    assert refused(gw)[("401", "malformed")] == 2


async def test_two_tokens_made_at_once_under_one_name_are_not_both_made(
    locked: tuple[Gateway, Client, dict[str, str]],
) -> None:
    gw, client, secrets = locked
    body = {"name": "twin", "role": "viewer"}
    answers = await asyncio.gather(
        *(client.ask("POST", "/api/v1/tokens", secrets["admin"], body=body) for _ in range(2))
    )
    assert sorted(status for status, _, _ in answers) == [201, 409]
    (made,) = [answer["token"] for status, answer, _ in answers if status == 201]
    assert (await client.ask("DELETE", "/api/v1/tokens/twin", secrets["admin"]))[0] == 200
    assert (await client.ask("GET", "/api/v1/whoami", made))[0] == 401
    # nor are the last two admin tokens both revoked at once where every caller needs one
    _, boss2 = await gw.access.create("boss2", Role.ADMIN)
    answers = await asyncio.gather(
        client.ask("DELETE", "/api/v1/tokens/t-admin", secrets["admin"]),
        client.ask("DELETE", "/api/v1/tokens/boss2", boss2),
    )
    assert sorted(status for status, _, _ in answers) == [200, 409]
    assert gw.access.has_admin()


async def test_a_token_in_the_path_is_refused_and_not_logged(
    locked: tuple[Gateway, Client, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    gw, client, secrets = locked
    for who in ("viewer", "admin"):  # `token revoke <secret>` instead of its name
        status, answer, _ = await client.ask("DELETE", f"/api/v1/tokens/{secrets['operator']}", secrets[who])
        assert status == 401 and secrets["operator"] not in json.dumps(answer), who
    assert secrets["operator"] not in caplog.text
    records = await gw.audit.query(AuditQuery(limit=1000))
    assert secrets["operator"] not in json.dumps([r.as_dict() for r in records])
    assert (await client.ask("GET", "/api/v1/whoami", secrets["operator"]))[0] == 200  # not revoked either
    result = cli("token", "revoke", secrets["operator"], "--admin", f"127.0.0.1:{free_port()}")
    assert result.returncode != 0 and "not its name" in result.stderr and "token list" in result.stderr
    assert secrets["operator"] not in result.stderr + result.stdout and "no gateway answers" not in result.stderr


async def test_a_web_pages_request_is_not_taken_for_a_local_caller() -> None:
    gw = await start_gateway()
    try:
        assert gw.admin is not None and not gw.admin.auth_required
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{gw.admin.port}/api/v1/channels/{ANY_ID}/records"  # reaches a camera
            for site in ("cross-site", "same-site"):  # what a browser adds to an <img src=...> of a page
                async with session.get(url, headers={"Sec-Fetch-Site": site}) as resp:
                    assert resp.status == 401 and "web page" in (await resp.json())["error"], site
            async with session.get(url.replace("channels", "devices"), headers={"Sec-Fetch-Site": "none"}) as resp:
                assert resp.status not in (401, 403)  # typed in the address bar: the user's own
        assert refused(gw)[("401", "cross-site")] == 2
    finally:
        await gw.stop()


def healthcheck(port: int) -> int:
    """Run the Dockerfile's HEALTHCHECK command (through a shell, as Docker does) against ``port``."""
    line = next(t for t in (ROOT / "Dockerfile").read_text().splitlines() if t.startswith("HEALTHCHECK "))
    command = line.split(" CMD ", 1)[1].replace("127.0.0.1:8028", f"127.0.0.1:{port}")
    assert command.startswith("python ")
    command = shlex.quote(sys.executable) + command.removeprefix("python")
    return subprocess.run(["sh", "-c", command], capture_output=True, timeout=30).returncode


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_the_docker_health_check_passes_over_http_and_https_and_fails_on_nothing(tmp_path: Path) -> None:
    # with admin.tls_cert the port speaks only TLS: a check asking plain HTTP would call a healthy gateway dead
    cert, key = self_signed(tmp_path)
    for settings in ({}, {"admin.tls_cert": str(cert), "admin.tls_key": str(key)}):
        gw = await start_gateway(**settings)
        try:
            assert gw.admin is not None
            assert await asyncio.to_thread(healthcheck, gw.admin.port) == 0, settings
        finally:
            await gw.stop()
    assert await asyncio.to_thread(healthcheck, free_port()) == 1
