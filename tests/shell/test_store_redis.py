"""The gateway on the Redis store (``store.backend = "redis"``), against a real redis-server.

``gb28181gw serve`` keeps a SIPp device and the channels of its catalog across its own restart;
a Redis that goes away while the gateway runs (killed: no goodbye) loses nothing: the gateway
goes on serving from memory, ``/readyz`` says the store is not writable, and the registration,
catalog and alarm that came meanwhile reach Redis once it is back (the registrar and the device
service keep what they could not write). The store contract itself is ``tests/contract/test_store.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.process import free_port, http_get, serve, wait_ready
from tests.redis_server import RedisServer

from .conftest import run_sipp, sipp_scenario, start_gateway
from .test_devices import CH1, CH2, NVR, catalog_body, device_scenario, finished, free_udp_port, play_device
from .test_devices import response_message as nvr_message

pytestmark = pytest.mark.sipp

IPC = "34020000001320000001"
ALARM = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>301</SN>\r\n'
    f"<DeviceID>{CH1}</DeviceID>\r\n<AlarmPriority>4</AlarmPriority>\r\n<AlarmMethod>5</AlarmMethod>\r\n"
    "<AlarmTime>2024-05-06T12:40:01</AlarmTime>\r\n<AlarmDescription>motion</AlarmDescription>\r\n</Notify>\r\n"
)


#: the conftest's redis fixture keeps what was written across a restart of the server (killed, not
#: asked to save), as a Redis with persistence does
REDIS_PERSISTENT = True


def cli(admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GB28181GW_TOKEN", "GB28181GW_CA_FILE")}
    return subprocess.run(
        [sys.executable, "-m", "gb28181gw", *args, "--admin", admin],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


async def register(port: int, device: str, sip_port: int, tmp_path: Path) -> None:
    path = tmp_path / f"register-{device}.xml"
    path.write_text(sipp_scenario("register_uac.xml", device=device, expires=3600))
    result = await run_sipp(str(path), sip_port, tmp_path, extra=("-p", str(port)))
    assert result.ok, result.stdout


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


async def test_serve_on_redis_keeps_a_device_and_its_channels_across_a_restart(
    tmp_path: Path, redis: RedisServer
) -> None:
    sip, admin_port = free_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    args = ["--listen", "127.0.0.1", "--port", str(sip), "--admin-port", str(admin_port),
            "--set", "store.backend=redis", "--set", f"store.url={redis.url}", "--set", "node.id=n1", "--set", "media.workers=0",
            "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe="]  # fmt: skip
    proc = serve(*args)
    try:
        wait_ready(f"http://{admin}", proc)
        status, body = http_get(f"http://{admin}/api/v1/status")
        assert status == 200 and json.loads(body)["store"] == redis.url and json.loads(body)["node"] == "n1"
        device_port = free_udp_port()
        await register(device_port, NVR, sip, tmp_path)
        parts = [
            nvr_message(31, catalog_body("GB2312", "[$sn]", CH1, "大门口")),
            nvr_message(32, catalog_body("GB2312", "[$sn]", CH2, "停车场入口")),
        ]
        device = await play_device(device_scenario(parts).encode("gb2312"), device_port, tmp_path, "catalog")
        refreshed = await asyncio.to_thread(cli, admin, "catalog", "refresh", NVR, "--json")
        await finished(device)
        assert refreshed.returncode == 0, refreshed.stderr
    finally:
        out = stop(proc)
    assert "gateway started" in out and redis.url in out
    assert redis.command(b"EXISTS", b"gbgw:node:n1") == b":0"  # stopped: its claim on n1 went with it

    proc = serve(*args)  # the SQLite file serve() names is new and empty: all that comes back is Redis's
    try:
        wait_ready(f"http://{admin}", proc)
        # a second gateway with the same node.id is refused, naming the one running
        other = ["--listen", "127.0.0.1", "--port", str(free_port()), "--admin-port", str(free_port())]
        second = serve(*other, *args[6:])
        out, _ = second.communicate(timeout=30)
        assert second.returncode != 0 and f"node.id n1 is in use by a running gb28181gw (pid {proc.pid}" in out, out
        listed = json.loads((await asyncio.to_thread(cli, admin, "devices", "--json")).stdout)
        assert [(d["device_id"], d["registered"], d["port"]) for d in listed] == [(NVR, True, device_port)]
        channels = json.loads((await asyncio.to_thread(cli, admin, "channels", NVR, "--json")).stdout)
        assert sorted((c["channel_id"], c["name"]) for c in channels) == [(CH1, "大门口"), (CH2, "停车场入口")]
    finally:
        stop(proc)


async def test_redis_killed_and_restarted_mid_run_loses_nothing(tmp_path: Path, redis: RedisServer) -> None:
    on_redis = {"store.backend": "redis", "store.url": redis.url, "node.id": "n1"}
    gw = await start_gateway(**on_redis, **{"store.flush_interval": "0.1"})
    try:
        nvr_port = free_udp_port()
        await register(nvr_port, NVR, gw.stack.port, tmp_path)
        await gw.registrar.flush()
        redis.stop(kill=True)
        # the gateway goes on from memory: a device registers, the NVR sends its catalog and an alarm
        await register(free_udp_port(), IPC, gw.stack.port, tmp_path)
        assert gw.registrar.devices[IPC].registered
        parts = [
            nvr_message(31, catalog_body("GB2312", "[$sn]", CH1, "大门口")),
            nvr_message(32, catalog_body("GB2312", "[$sn]", CH2, "停车场入口")),
        ]
        device = await play_device(device_scenario(parts).encode("gb2312"), nvr_port, tmp_path, "catalog")
        catalog = await gw.devices.catalog(NVR)
        await finished(device)
        assert catalog.complete and NVR in gw.devices.unsaved_channels
        alarm = sipp_scenario("alarm_uac.xml", device=NVR, body=ALARM)
        (tmp_path / "alarm.xml").write_text(alarm)
        sent = await run_sipp(str(tmp_path / "alarm.xml"), gw.stack.port, tmp_path, extra=("-p", str(nvr_port)))
        assert sent.ok, sent.stdout
        deadline = time.monotonic() + 20
        while gw.store.writable:  # the next batch fails: the store says so, /readyz with it
            assert time.monotonic() < deadline, "the failed write was never noticed"
            await asyncio.sleep(0.05)
        assert not gw.ready and gw.store.write_failures["store"] >= 1
        assert gw.admin is not None
        assert (await asyncio.to_thread(http_get, f"http://127.0.0.1:{gw.admin.port}/readyz"))[0] == 503
        redis.start()
        # the registrar's and the device service's next attempts write what they kept
        while not gw.store.writable or gw.devices.unsaved_channels or not await gw.store.load_alarms():
            assert time.monotonic() < deadline, "the kept writes never reached Redis"
            await asyncio.sleep(0.05)
        assert gw.ready
        stored = {d.device_id: d for d in await gw.store.load_devices()}
        assert sorted(stored) == [NVR, IPC] and stored[IPC].registered and stored[NVR].registered
        assert sorted(c.channel_id for c in await gw.store.load_channels(NVR)) == [CH1, CH2]
        assert [(a.device_id, a.reported_by, a.description) for a in await gw.store.load_alarms()] == [
            (CH1, NVR, "motion")
        ]
    finally:
        await gw.stop()
    # and a gateway started afresh on it finds all of it
    gw = await start_gateway(**on_redis)
    try:
        assert sorted(d.device_id for d in gw.registrar.devices.values() if d.registered) == [NVR, IPC]
        assert sorted(gw.devices.channels[NVR]) == [CH1, CH2]
    finally:
        await gw.stop()
