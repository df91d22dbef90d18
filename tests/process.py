"""A real ``gb28181gw serve`` process for tests: start it, wait until it is ready, talk HTTP to it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(*args: str, env: dict[str, str] | None = None, store: str | None = None) -> subprocess.Popen[str]:
    store = store or str(Path(tempfile.mkdtemp(prefix="gb28181gw-cli-")) / "gw.db")
    return subprocess.Popen(
        [sys.executable, "-m", "gb28181gw", "serve", "--set", f"store.path={store}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(admin: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read() if proc.stdout else "exited")
        try:
            if http_get(admin + "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway did not become ready")


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_terminal(argv: list[str], *, columns: int, timeout: float = 30) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal ``columns`` wide (so rich draws its tables and progress
    bars): its exit status and everything it showed, colour codes removed (``\\r`` kept)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child is gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout), _ANSI.sub("", b"".join(chunks).decode())
