"""Real-socket fixtures: an in-process gateway on 127.0.0.1 and a SIPp runner."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.config import SipSection, load_config
from tests.redis_server import RedisServer, require_redis_py

SIPP_DIR = Path(__file__).parent / "sipp"
SIPP = shutil.which("sipp")


def require_sipp() -> str:
    """SIPp's path; a test that needs it fails without it, naming the package (``.ci/run`` installs it,
    and a test that skipped would pass without having tested anything)."""
    if SIPP is None:
        pytest.fail("sipp is not installed: .ci/run installs it (apt-get install sip-tester)")
    return SIPP


async def start_gateway(**overrides: str) -> Gateway:
    """A gateway on 127.0.0.1 with fast SIP timers, started."""
    return await start_gateway_from(None, overrides)


async def start_gateway_from(config_file: Path | None, overrides: dict[str, str]) -> Gateway:
    """:func:`start_gateway` with a configuration file, for what only a file sets (``[[upstream]]``)."""
    settings = {
        "store.path": str(Path(tempfile.mkdtemp(prefix="gb28181gw-test-")) / "gw.db"),
        "sip.listen": "127.0.0.1",
        "sip.port": "0",
        "admin.port": "0",
        "sip.t1": "0.1",
        "sip.t2": "0.4",
        "sip.t4": "0.5",
        "devices.catalog_on_register": "false",
        "devices.subscribe": "",
        "media.workers": "0",
    }
    settings.update(overrides)
    gw = Gateway(load_config(config_file, env={}, overrides=settings))
    await gw.start()
    return gw


def loopback_sip(hosts: list[str] | None = None) -> SipSection:
    """config.py's ``[sip]`` section on ``hosts`` (default 127.0.0.1) and port 0, for a bare SipStack."""
    return replace(SipSection(), listen=hosts or ["127.0.0.1"], port=0)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = await start_gateway()
    try:
        yield gw
    finally:
        await gw.stop()


_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def sipp_scenario(name: str, **values: object) -> str:
    """The scenario (or part of one) ``tests/shell/sipp/<name>``, each ``{key}`` in it replaced by ``values[key]``.

    Only a lower-case name in braces is a placeholder, so regex counts such as ``[0-9]{9}`` stay
    as they are, and inserted values are not searched again. A placeholder without a value or a
    value without a placeholder is an error: a typo would otherwise change what SIPp sends.
    """
    return filled(SIPP_DIR / name, **values)


def filled(path: Path, **values: object) -> str:
    """The file at ``path`` with its placeholders filled as :func:`sipp_scenario` fills a scenario's
    (also a Kamailio configuration's: ``tests/shell/kamailio/``)."""
    used: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        if match[1] not in values:
            raise KeyError(f"{path.name}: no value for {match[0]}")
        used.add(match[1])
        return str(values[match[1]])

    text = _PLACEHOLDER.sub(fill, path.read_text(encoding="utf-8"))
    if unused := set(values) - used:
        raise KeyError(f"{path.name} has no placeholder for {', '.join(sorted(unused))}")
    return text


@dataclass
class SippResult:
    returncode: int
    stdout: str
    messages: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


async def run_sipp(
    scenario: str,
    port: int,
    tmp_path: Path,
    *,
    transport: str = "u1",
    calls: int = 1,
    rate: int = 10,
    timeout: float = 10.0,
    extra: tuple[str, ...] = (),
) -> SippResult:
    """Run a SIPp client scenario against 127.0.0.1:``port``; messages are traced to a file."""
    sipp = require_sipp()
    trace = tmp_path / f"{Path(scenario).stem}-{transport}.msg"
    proc = await asyncio.create_subprocess_exec(
        sipp,
        "-sf",
        str(SIPP_DIR / scenario),
        f"127.0.0.1:{port}",
        "-i",
        "127.0.0.1",
        "-p",
        "0",
        "-t",
        transport,
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-nostdin",
        "-trace_msg",
        "-message_file",
        str(trace),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout + 10)
    messages = trace.read_text(errors="replace") if trace.exists() else ""
    return SippResult(proc.returncode or 0, out.decode(errors="replace"), messages)


@pytest.fixture
def redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A private redis-server for one test, stopped after it. Persistent (restarted from its
    append-only file, as a Redis with persistence is) when parametrized indirectly with ``True``
    or when the test's module sets ``REDIS_PERSISTENT = True``."""
    require_redis_py()
    persistent = getattr(request, "param", getattr(request.module, "REDIS_PERSISTENT", False))
    server = RedisServer(tmp_path / "redis", persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()
