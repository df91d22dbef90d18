"""Hostile input must not stop persistence (issue 10, defect 1).

One REGISTER whose ``User-Agent`` carries GB2312 bytes (Chinese firmware does this) used to
make every later store write fail for good: the text reached SQLite as lone surrogates, the
transaction stayed open and the flusher died without a word. Here a real ``gb28181gw serve``
process takes that device and twenty ordinary ones, is killed with SIGKILL after one flush
interval, and the store must hold all of them, the odd User-Agent byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.store.sqlite import SqliteStore
from tests.helpers import crlf
from tests.process import free_port, http_get, serve, wait_ready

GB2312_AGENT = "海康威视 IPC V5.5".encode("gb2312")


def register(device_id: str, n: int, user_agent: bytes = b"IP Camera") -> bytes:
    head, tail = crlf(
        f"""REGISTER sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;rport;branch=z9hG4bKgb{n}
From: <sip:{device_id}@3402000000>;tag=t{n}
To: <sip:{device_id}@3402000000>
Call-ID: reg-{n}@127.0.0.1
CSeq: 1 REGISTER
Contact: <sip:{device_id}@127.0.0.1:5061>
Max-Forwards: 70
User-Agent: @UA@
Expires: 3600
Content-Length: 0

"""
    ).split(b"@UA@")
    return head + user_agent + tail


def exchange(port: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(data, ("127.0.0.1", port))
        return s.recv(65535)


def test_gb2312_user_agent_survives_kill_9_with_everyone_registered_after_it() -> None:
    store = str(Path(tempfile.mkdtemp(prefix="gb28181gw-hostile-")) / "gw.db")
    sip_port, admin_port = free_port(), free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    proc = serve("--listen", "127.0.0.1", "--port", str(sip_port), "--admin-port", str(admin_port), store=store)
    ids = [f"340200000013200{n:05d}" for n in range(1, 22)]
    try:
        wait_ready(admin, proc)
        assert exchange(sip_port, register(ids[0], 0, GB2312_AGENT)).startswith(b"SIP/2.0 200 OK")
        for n, device_id in enumerate(ids[1:], 1):
            assert exchange(sip_port, register(device_id, n)).startswith(b"SIP/2.0 200 OK")
        time.sleep(1.5)  # three flush intervals (store.flush_interval = 0.5 s)
        status, body = http_get(admin + "/readyz")
        assert (status, json.loads(body)) == (200, {"ready": True})
        metrics = http_get(admin + "/metrics")[1].decode()
        assert "gb28181gw_store_writable 1.0" in metrics
        assert "gb28181gw_store_write_failures_total{" not in metrics
    finally:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=15)
    assert "Traceback" not in out and "ERROR" not in out, out

    async def load() -> dict[str, str]:
        s = SqliteStore(store)
        await s.open()
        try:
            return {d.device_id: d.user_agent for d in await s.load_devices()}
        finally:
            await s.close()

    agents = asyncio.run(load())
    assert sorted(agents) == ids
    assert agents[ids[0]].encode("utf-8", "surrogateescape") == GB2312_AGENT
    assert all(agents[i] == "IP Camera" for i in ids[1:])


async def _flushed(gw: Gateway) -> None:
    await asyncio.sleep(gw.config.store.flush_interval * 3)


async def test_a_device_the_store_refuses_does_not_hold_back_the_others(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    registrar = gateway.registrar
    await asyncio.to_thread(exchange, gateway.stack.port, register("34020000001320000001", 1))
    poisoned = registrar.devices["34020000001320000001"]
    poisoned.name = "\ud800"  # stands for no byte a device can send: no store can hold it
    registrar.changed(poisoned.device_id)
    await asyncio.to_thread(exchange, gateway.stack.port, register("34020000001320000002", 2))
    await _flushed(gateway)
    stored = {d.device_id for d in await gateway.store.load_devices()}
    assert "34020000001320000002" in stored
    assert "device cannot be stored" in caplog.text
    assert gateway.ready and gateway.store.write_failures["record"] >= 1
    # the flusher is alive: later registrations are still written
    await asyncio.to_thread(exchange, gateway.stack.port, register("34020000001320000003", 3))
    await _flushed(gateway)
    assert await gateway.store.get_device("34020000001320000003") is not None


async def test_while_the_store_cannot_write_nothing_is_lost_and_readyz_fails(gateway: Gateway) -> None:
    store = gateway.store
    assert isinstance(store, SqliteStore)
    conn = store._conn
    assert conn is not None
    # the database goes away under the gateway (as with a failing disk); writes fail as the store's fault
    await asyncio.to_thread(exchange, gateway.stack.port, register("34020000001320000001", 1))
    await store._run(conn.close)
    await asyncio.to_thread(exchange, gateway.stack.port, register("34020000001320000002", 2))
    await _flushed(gateway)
    assert not gateway.ready and store.write_failures["store"] >= 1
    assert gateway.admin is not None
    status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{gateway.admin.port}/readyz")
    assert status == 503 and json.loads(body) == {"ready": False}
    # the disk comes back: every registration acknowledged meanwhile is written, and readyz recovers
    store._conn = await store._run(lambda: sqlite3.connect(store.path, isolation_level=None, check_same_thread=False))
    await _flushed(gateway)
    assert gateway.ready
    assert {d.device_id for d in await store.load_devices()} >= {"34020000001320000001", "34020000001320000002"}


async def test_channels_and_alarms_that_came_while_the_store_could_not_write_are_written_later(
    gateway: Gateway,
) -> None:
    from gb28181gw.gb.model import Alarm, Channel

    store, devices = gateway.store, gateway.devices
    assert isinstance(store, SqliteStore) and store._conn is not None
    nvr = "34020000001180000001"
    await asyncio.to_thread(exchange, gateway.stack.port, register(nvr, 1))
    await gateway.registrar.flush()
    await store._run(store._conn.close)  # the disk goes away
    devices.channels[nvr] = {"34020000001310000001": Channel("34020000001310000001", nvr, "大门")}
    await devices.write_channels(nvr)  # as after a catalog: no error, kept
    devices._tasks.spawn(devices._write_alarm(Alarm("34020000001310000001", nvr, description="motion")))
    await asyncio.sleep(0)
    assert nvr in devices.unsaved_channels and not store.writable
    store._conn = await store._run(lambda: sqlite3.connect(store.path, isolation_level=None, check_same_thread=False))
    deadline = time.monotonic() + 20
    while devices.unsaved_channels or not await store.load_alarms():
        assert time.monotonic() < deadline, "the kept channels and alarm were never written"
        await asyncio.sleep(0.1)
    assert [c.name for c in await store.load_channels(nvr)] == ["大门"]
    assert [a.description for a in await store.load_alarms()] == ["motion"]
