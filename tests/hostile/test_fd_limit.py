"""Idle TCP connections cannot take the descriptors the admin API and UDP need (issue 10, defect 8)."""

from __future__ import annotations

import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers import request
from tests.process import free_port, http_get, wait_ready

LIMIT = 1200  # soft = hard: the gateway cannot raise it
MEDIA_PORTS = 200
BUDGET = LIMIT - 256 - MEDIA_PORTS  # app.FD_RESERVE and one descriptor per media port
CONNECTIONS = BUDGET + 100


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def test_tcp_connections_are_cut_to_the_open_file_limit_and_the_rest_keeps_working() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < CONNECTIONS + 200 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (CONNECTIONS + 200, hard))  # room for our own sockets
    sip_port, admin_port = free_port(), free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    store = str(Path(tempfile.mkdtemp(prefix="gb28181gw-fd-")) / "gw.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gb28181gw", "serve", "--set", f"store.path={store}", "--listen", "127.0.0.1",
         "--port", str(sip_port), "--admin-port", str(admin_port), "--set", "media.port_min=30000",
         "--set", f"media.port_max={30000 + MEDIA_PORTS - 1}", "--set", "media.workers=0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_limited,
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        wait_ready(admin, proc)
        for _ in range(CONNECTIONS):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.connect(("127.0.0.1", sip_port))
            held.append(s)
        time.sleep(0.5)
        metrics = http_get(admin + "/metrics")[1].decode()  # the admin API still answers
        open_now = float(re.search(r"^gb28181gw_sip_tcp_connections (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
        assert open_now <= BUDGET
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(request("OPTIONS", "z9hG4bKfd"), ("127.0.0.1", sip_port))
            assert s.recv(65535).startswith(b"SIP/2.0 200 OK")
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert "sip.tcp_max_connections cut to what the open-file limit allows" in out
    assert f"allowed={BUDGET}" in out
    assert proc.returncode == 0, out
