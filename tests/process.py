"""A real ``gb28181gw serve`` process for tests: start it, wait until it is ready, talk HTTP to it."""

from __future__ import annotations

import fcntl
import os
import pty
import random
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

#: Where tests take the ports they hand to servers: below the kernel's range for the ports it
#: assigns itself (``ip_local_port_range``, 32768-60999), and below the gateway's default media
#: ports (30000-31999). A port bound to 0 comes from the kernel's range, and once closed to be handed
#: on, any connect() or unbound sendto() on the machine could take it as its local port before the
#: server bound it: a cluster node's admin port was taken so under ``-n 2`` (the node's own
#: connection to Redis, opened first, may have been the one). Each pytest worker has its own share,
#: so two workers never pick one port (tests/helpers.py ``media_port`` keeps its blocks from 12000 up).
_PORTS = range(20000, 30000)
_rng = random.Random()  # not the module's: tests seed that one
_given: set[int] = set()


def _share() -> range:
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) % count if worker.isdigit() else 0
    size = len(_PORTS) // count
    return range(_PORTS.start + index * size, _PORTS.start + (index + 1) * size)


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port(*, pair: bool = False) -> int:
    """A port of this worker's share (see ``_PORTS``) free on 127.0.0.1 for TCP and UDP, and not
    handed out by this process lately; with ``pair``, an even one whose odd neighbour is free too (an
    RTP/RTCP pair, as the relay binds)."""
    share = _share()
    for _ in range(1000):
        port = _rng.randrange(share.start, share.stop - 1)
        ports = (port & ~1, port | 1) if pair else (port,)
        if _given.intersection(ports) or not all(map(_bindable, ports)):
            continue
        if len(_given) > len(share) // 2:
            _given.clear()  # long enough ago: a port still in use fails _bindable
        _given.update(ports)
        return ports[0]
    raise RuntimeError(f"no free port in {share.start}-{share.stop - 1} on 127.0.0.1")


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
