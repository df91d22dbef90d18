"""``gb28181gw nodes`` on a gateway with the SQLite store: one node, said in words (issue 17)."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from gb28181gw.cli import main

from .conftest import start_gateway


async def test_nodes_on_sqlite_says_this_gateway_is_the_only_node() -> None:
    gw = await start_gateway()
    try:
        assert gw.admin is not None
        admin = f"http://127.0.0.1:{gw.admin.port}"
        result = await asyncio.to_thread(CliRunner().invoke, main, ["nodes", "--admin", admin])
        assert result.exit_code == 0, result.output
        assert "one node: this gateway's store is SQLite" in result.output
        result = await asyncio.to_thread(CliRunner().invoke, main, ["nodes", "--json", "--admin", admin])
        assert result.exit_code == 0 and json.loads(result.output) == []
        # and devices has no node column there
        result = await asyncio.to_thread(CliRunner().invoke, main, ["devices", "--admin", admin])
        assert result.exit_code == 0 and "node" not in result.output.splitlines()[0]
    finally:
        await gw.stop()
