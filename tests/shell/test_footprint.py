"""What a gateway holds that it does not use: issue 16's memory per device and at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# A whole gateway started in a fresh interpreter (modules import once per process), on the SQLite
# store, then asked which of the redis-py modules it imported.
_START = """
import asyncio, sys
from gb28181gw.app import Gateway
from gb28181gw.config import load_config

async def main() -> None:
    gw = Gateway(load_config(None, env={}, overrides={
        "store.path": sys.argv[1], "sip.listen": "127.0.0.1", "sip.port": "0", "admin.port": "0",
        "media.workers": "0", "devices.subscribe": "",
    }))
    await gw.start()
    try:
        print(sorted(m for m in sys.modules if m == "redis" or m.startswith("redis.")))
    finally:
        await gw.stop()

asyncio.run(main())
"""


def test_a_gateway_on_the_sqlite_store_does_not_import_redis_py(tmp_path: Path) -> None:
    # redis-py and the modules it pulls in (importlib.metadata among them) are ~4 MiB of every
    # gateway's RSS at start; only the redis store, its leases, nodes and calls need them
    done = subprocess.run(
        [sys.executable, "-c", _START, str(tmp_path / "gw.db")],
        capture_output=True,
        text=True,
        timeout=120,
        close_fds=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
