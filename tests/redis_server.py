"""A real ``redis-server`` for the tests, on 127.0.0.1 and a free port, in a directory of the test's.

``.ci/run`` installs Debian's redis-server; a machine without it skips the tests that need one,
except under CI (``CI=1``), where a missing server fails them (as with promtool and SIPp).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import free_port

REDIS_SERVER = shutil.which("redis-server")
#: Seconds a server has to start answering PING.
START_TIMEOUT = 10.0


def require_redis_server() -> str:
    """The path of redis-server, or skip (fail under CI) when it is missing."""
    if REDIS_SERVER is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: .ci/run installs it")
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    return REDIS_SERVER


def require_redis_py() -> None:
    """Skip (fail under CI) when redis-py is missing: ``pip install -e '.[test]'`` brings it."""
    try:
        import redis  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("redis-py is missing: .ci/run installs it (pip install -e '.[test]')")
        pytest.skip("redis-py is not installed (pip install -e '.[test]')")


class RedisServer:
    """One redis-server process; :meth:`restart` brings it back on the same port (and data, if ``persistent``).

    Args:
        directory: where it keeps its log (and its append-only file when ``persistent``).
        persistent: keep the data across :meth:`restart` (append-only file, fsync at every write);
            otherwise nothing is written to disk.
    """

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        self.binary = require_redis_server()
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--logfile", str(self.directory / "redis.log"), "--daemonize", "no"]  # fmt: skip
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while self.command(b"PING") != b"+PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        """Stop it (SIGTERM, or SIGKILL: gone without a word); the port is free afterwards."""
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def command(self, *words: bytes) -> bytes | None:
        """Send one command; the first line of the answer (a bulk string's value), or ``None`` when it does not answer."""
        request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as s:
                s.sendall(request)
                lines = s.recv(65536).split(b"\r\n")
                return lines[1] if lines[0].startswith(b"$") and lines[0] != b"$-1" else lines[0]
        except OSError:
            return None

    def flush(self) -> None:
        assert self.command(b"FLUSHALL") == b"+OK"


def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for a whole test module (a module fixture yields from it): starting one
    takes ~20 ms, but a hundred of them add up; the tests empty it as they need."""
    require_redis_py()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
