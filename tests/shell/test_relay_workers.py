"""Relay worker processes are named in ``ps``: one title per worker, the index its log lines use."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.process import free_port, serve, wait_ready


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
        if int(text.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_each_relay_worker_carries_its_name_in_cmdline() -> None:
    admin_port = free_port()
    proc = serve(
        "--listen", "127.0.0.1", "--port", "0", "--admin-port", str(admin_port), "--set", "media.workers=2"
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{admin_port}", proc)
        titles = sorted(Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode() for pid in _children(proc.pid))
        assert [t for t in titles if "relay" in t] == ["gb28181gw relay worker 0", "gb28181gw relay worker 1"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
