"""The registrar over real sockets: SIPp IPCs, a thousand devices across a restart, bad input."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gb28181gw.app import Gateway
from gb28181gw.cli import main
from gb28181gw.gb.model import DeviceState
from gb28181gw.services.registrar import SWEEP_STEP
from tests.helpers import KEEPALIVE_BODY, crlf, most_between_turns

from .conftest import run_sipp, start_gateway

PASSWORD = "12345678"


def devices_file(tmp_path: Path, ids: list[str], password: str = PASSWORD) -> Path:
    path = tmp_path / "devices.csv"
    # SIPp expands keywords inside injected fields, so field1 carries the whole auth keyword
    path.write_text("SEQUENTIAL\n" + "".join(f"{i};[authentication username={i} password={password}];\n" for i in ids))
    return path


def ipc_ids(n: int, start: int = 1) -> list[str]:
    return [f"3402000000132{i:07d}" for i in range(start, start + n)]


async def cli(gateway: Gateway, *args: str) -> str:
    admin = f"http://127.0.0.1:{gateway.admin.port}" if gateway.admin else ""
    result = await asyncio.to_thread(CliRunner().invoke, main, [*args, "--admin", admin])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.sipp
@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_ipc_registers_keeps_alive_and_unregisters(tmp_path: Path, transport: str) -> None:
    gw = await start_gateway(**{"registrar.password": PASSWORD})
    try:
        ids = ipc_ids(3)
        inf = devices_file(tmp_path, ids)
        result = await run_sipp(
            "ipc_register_uac.xml", gw.stack.port, tmp_path, transport=transport, calls=3, extra=("-inf", str(inf))
        )
        assert result.ok, result.stdout
        listed = json.loads(await cli(gw, "devices", "--json"))
        assert [d["device_id"] for d in listed] == ids
        if transport == "u1":
            assert all(d["online"] and d["registered"] for d in listed)
        else:
            # SIPp closed its TCP connection when it finished: devices on TCP are offline then
            assert all(d["registered"] and not d["online"] for d in listed)
            assert all(d["offline_reason"].startswith("TCP connection closed") for d in listed)
        assert all(d["transport"] == ("UDP" if transport == "u1" else "TCP") for d in listed)
        assert all(d["last_keepalive"] >= d["registered_at"] for d in listed)
        assert gw.registrar.keepalives[("ok",)] == 6
        assert "online" in await cli(gw, "devices")
        shown = await cli(gw, "device", "show", ids[0])
        assert "IP Camera" in shown and "3.0" in shown

        result = await run_sipp(
            "ipc_unregister_uac.xml", gw.stack.port, tmp_path, transport=transport, calls=3, extra=("-inf", str(inf))
        )
        assert result.ok, result.stdout
        listed = json.loads(await cli(gw, "devices", "--json"))
        assert not any(d["online"] or d["registered"] for d in listed)
        assert all(d["offline_reason"].startswith("unregistered") for d in listed)
        assert "offline" in await cli(gw, "devices")
    finally:
        await gw.stop()


@pytest.mark.sipp
async def test_thousand_devices_survive_a_restart_then_time_out(tmp_path: Path) -> None:
    store = str(tmp_path / "gw.db")
    settings = {"store.path": store, "registrar.password": PASSWORD}
    # short heartbeat settings after the restart, so the timeout shows within the test
    short = {**settings, "registrar.keepalive_interval": "1", "registrar.keepalive_count": "2"}
    gw = await start_gateway(**settings)
    ids = ipc_ids(1000)
    try:
        result = await run_sipp(
            "ipc_register_uac.xml",
            gw.stack.port,
            tmp_path,
            calls=1000,
            rate=250,
            timeout=60,
            extra=("-inf", str(devices_file(tmp_path, ids)), "-l", "400"),
        )
        assert result.ok, result.stdout
        assert sum(d.registered for d in gw.registrar.devices.values()) == 1000
    finally:
        await gw.stop()

    gw = await start_gateway(**short)
    try:
        devices = gw.registrar.devices
        assert sorted(devices) == ids, "devices were lost across the restart"
        assert all(d.registered and d.online for d in devices.values())
        assert gw.status()["devices"] == {"known": 1000, "registered": 1000, "online": 1000}
        # nobody sends keepalives any more: all go offline after interval x count (2 s), together,
        # SWEEP_STEP at most before the loop turns (counted by a task beside it, not timed)
        went: list[str] = []
        gw.registrar.on_offline(lambda device, reason: went.append(device.device_id))
        gaps: list[int] = []

        async def beside() -> None:
            seen = 0
            while len(went) < 1000:
                gaps.append(len(went) - seen)
                seen = len(went)
                await asyncio.sleep(0)
            gaps.append(len(went) - seen)

        await asyncio.wait_for(beside(), 30)
        assert sorted(went) == ids
        assert max(gaps) <= SWEEP_STEP, f"{max(gaps)} devices taken offline without a turn of the loop"
        assert not any(d.online for d in devices.values())
        assert all(d.registered for d in devices.values())  # their registrations have not expired
        assert gw.registrar.timeouts[("keepalive timeout",)] == 1000
        # the counts kept as states change (what a scrape reads) are a walk's
        assert (
            devices.counts()
            == devices.count_all()
            == {DeviceState.UNREGISTERED: 0, DeviceState.ONLINE: 0, DeviceState.OFFLINE: 1000}
        )
        assert gw.status()["devices"] == {"known": 1000, "registered": 1000, "online": 0}
        await gw.registrar.flush()
    finally:
        await gw.stop()

    gw = await start_gateway(**short)
    try:
        assert not any(d.online for d in gw.registrar.devices.values())
        assert len(gw.registrar.devices) == 1000
    finally:
        await gw.stop()


async def _udp_exchange(port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        await loop.sock_sendto(sock, data, ("127.0.0.1", port))
        reply, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 5)
        return reply
    finally:
        sock.close()


def _message(device: str, body: bytes, branch: str) -> bytes:
    return (
        crlf(
            f"""MESSAGE sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;rport;branch={branch}
From: <sip:{device}@3402000000>;tag=k1
To: <sip:34020000002000000001@3402000000>
Call-ID: {branch}@127.0.0.1
CSeq: 20 MESSAGE
Content-Type: Application/MANSCDP+xml
Max-Forwards: 70
Content-Length: {len(body)}

"""
        )
        + body
    )


def _register(device: str, branch: str, expires: int = 3600) -> bytes:
    return crlf(
        f"""REGISTER sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;rport;branch={branch}
From: <sip:{device}@3402000000>;tag=r1
To: <sip:{device}@3402000000>
Call-ID: reg-{branch}@127.0.0.1
CSeq: 1 REGISTER
Contact: <sip:{device}@127.0.0.1:5061>
Max-Forwards: 70
Expires: {expires}
Content-Length: 0

"""
    )


async def test_keepalive_from_an_unregistered_device_is_404(gateway: Gateway) -> None:
    reply = await _udp_exchange(gateway.stack.port, _message("34020000001320000009", KEEPALIVE_BODY, "z9hG4bKnr1"))
    assert reply.startswith(b"SIP/2.0 404 ")
    assert "34020000001320000009" not in gateway.registrar.devices


async def test_keepalive_that_is_not_xml_is_400_and_changes_nothing(gateway: Gateway) -> None:
    device = "34020000001320000001"
    assert (await _udp_exchange(gateway.stack.port, _register(device, "z9hG4bKreg1"))).startswith(b"SIP/2.0 200 ")
    before = gateway.registrar.devices[device].last_keepalive
    reply = await _udp_exchange(gateway.stack.port, _message(device, b"this is <not xml", "z9hG4bKbad1"))
    assert reply.startswith(b"SIP/2.0 400 ") and b"Warning: 399" in reply
    assert gateway.registrar.devices[device].last_keepalive == before
    bomb = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><Notify>&b;</Notify>'
    assert (await _udp_exchange(gateway.stack.port, _message(device, bomb, "z9hG4bKbomb"))).startswith(b"SIP/2.0 400 ")
    ok = await _udp_exchange(gateway.stack.port, _message(device, KEEPALIVE_BODY, "z9hG4bKgood1"))
    assert ok.startswith(b"SIP/2.0 200 ")
    assert gateway.registrar.devices[device].last_keepalive > before


async def test_bad_registers_over_the_wire(gateway: Gateway) -> None:
    port = gateway.stack.port
    reply = await _udp_exchange(port, _register("3402000000132000000X", "z9hG4bKid"))
    assert reply.startswith(b"SIP/2.0 403 ") and b"position 20" in reply
    reply = await _udp_exchange(port, _register("34020000001320000001", "z9hG4bKshort", expires=5))
    assert reply.startswith(b"SIP/2.0 423 ") and b"Min-Expires: 60" in reply
    reply = await _udp_exchange(
        port,
        _register("34020000001320000001", "z9hG4bKdom").replace(
            b"REGISTER sip:34020000002000000001@3402000000", b"REGISTER sip:34010000002000000001@3401000000"
        ),
    )
    assert reply.startswith(b"SIP/2.0 403 ") and b"domain 3401000000" in reply
    assert not gateway.registrar.devices


async def test_device_add_and_remove_through_the_cli(gateway: Gateway) -> None:
    out = await cli(gateway, "device", "add", "34020000001180000001", "--password", "nvr-pass", "--name", "一号NVR")
    assert "added" in out
    device = gateway.registrar.devices["34020000001180000001"]
    assert device.provisioned and device.password == "nvr-pass" and device.name == "一号NVR"
    assert "nvr-pass" not in await cli(gateway, "devices", "--json")  # passwords never leave the gateway
    assert "removed" in await cli(gateway, "device", "remove", "34020000001180000001")
    assert "34020000001180000001" not in gateway.registrar.devices
    assert await gateway.store.get_device("34020000001180000001") is None


async def test_device_on_tcp_goes_offline_when_its_connection_closes(gateway: Gateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.stack.port)
    device = "34020000001320000007"
    writer.write(_register(device, "z9hG4bKtcpreg").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"SIP/2.0 200 ")
    assert gateway.registrar.devices[device].online
    assert gateway.registrar.devices[device].transport == "TCP"
    writer.close()
    await writer.wait_closed()
    for _ in range(50):
        if not gateway.registrar.devices[device].online:
            break
        await asyncio.sleep(0.02)
    d = gateway.registrar.devices[device]
    assert not d.online and d.registered
    assert d.offline_reason.startswith("TCP connection closed")


async def test_device_states_over_the_wire() -> None:
    """ONLINE -> OFFLINE (keepalive timeout) -> ONLINE (keepalive) -> OFFLINE -> UNREGISTERED (registration ran out)."""
    gw = await start_gateway(
        **{"registrar.expires_min": "1", "registrar.keepalive_interval": "1", "registrar.keepalive_count": "1"}
    )
    device = "34020000001320000005"
    released: list[str] = []
    gw.registrar.on_offline(lambda d, reason: released.append(reason))
    try:
        port = gw.stack.port
        assert (await _udp_exchange(port, _register(device, "z9hG4bKst1", expires=3))).startswith(b"SIP/2.0 200 ")
        d = gw.registrar.devices[device]
        assert d.state is DeviceState.ONLINE

        async def until(state: DeviceState, limit: float) -> None:
            for _ in range(int(limit / 0.05)):
                if gw.registrar.devices[device].state is state:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{device} is {gw.registrar.devices[device].state}, not {state}")

        def counted() -> dict[str, int]:
            # kept as states change, no walk: checked against one at every step
            assert gw.registrar.devices.counts() == gw.registrar.devices.count_all()
            text = gw.metrics.render().decode()
            assert f"gb28181gw_devices_owned {float(gw.status()['devices']['registered'])}" in text
            return gw.status()["devices"]

        assert counted() == {"known": 1, "registered": 1, "online": 1}
        await until(DeviceState.OFFLINE, 2.0)
        assert d.offline_reason == "no keepalive for 1 s" and released == ["no keepalive for 1 s"]
        assert counted() == {"known": 1, "registered": 1, "online": 0}
        ok = await _udp_exchange(port, _message(device, KEEPALIVE_BODY, "z9hG4bKst2"))
        assert ok.startswith(b"SIP/2.0 200 ") and d.state is DeviceState.ONLINE and d.offline_reason == ""
        assert counted() == {"known": 1, "registered": 1, "online": 1}
        await until(DeviceState.OFFLINE, 2.0)
        await until(DeviceState.UNREGISTERED, 3.0)
        assert counted() == {"known": 1, "registered": 0, "online": 0}
        assert d.offline_reason == "registration expired" and len(released) == 2  # released once per going offline
        late = await _udp_exchange(port, _message(device, KEEPALIVE_BODY, "z9hG4bKst3"))
        assert late.startswith(b"SIP/2.0 404 ")
        await gw.registrar.flush()
        stored = await gw.store.get_device(device)
        assert stored is not None and stored.state is DeviceState.UNREGISTERED
    finally:
        await gw.stop()


async def test_a_write_of_many_devices_takes_their_records_with_the_loop_turning_between(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 30 s write of keepalive times takes every online device's record: 10,000 in one go held
    the loop ~10 ms under load. Counted, not timed: records taken between two turns of a task beside
    it; and every one of them written."""
    from gb28181gw.gb.devices import DeviceTable
    from gb28181gw.store.base import ROWS_PER_STEP

    registrar = gateway.registrar
    count = 2 * ROWS_PER_STEP + 5
    ids = [f"3402000000132{i:07d}" for i in range(count)]
    for device_id in ids:
        await registrar.provision(device_id, name="n")
    for device_id in ids:
        registrar.changed(device_id)
    taken = 0
    get = DeviceTable.get

    def counting(self: DeviceTable, device_id: str, default: Any = None) -> Any:
        nonlocal taken
        taken += 1
        return get(self, device_id, default)

    monkeypatch.setattr(DeviceTable, "get", counting)
    _, most = await most_between_turns(lambda: taken, registrar.flush())
    assert taken >= count
    assert most <= ROWS_PER_STEP, f"{most} records taken without a turn of the loop"
    assert {d.device_id for d in await registrar.store.load_devices()} >= set(ids)


async def stored_and_changed(registrar: Any, count: int) -> list[str]:
    """``count`` devices provisioned and written, then each marked changed: the next write takes them all."""
    ids = ipc_ids(count)
    for device_id in ids:
        await registrar.provision(device_id, name="n")
    await registrar.flush()
    for device_id in ids:
        registrar.changed(device_id)
    return ids


async def first_noted(noted: list[str], write: asyncio.Task[None]) -> str:
    """The first device ``write`` noted, the loop turned until it has; the write still under way."""
    for _ in range(10_000):
        if noted or write.done():
            break
        await asyncio.sleep(0)
    assert not write.done(), "the write took everything without a turn of the loop"
    return noted[0]


async def test_a_device_removed_while_a_write_takes_its_records_stays_removed(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write-behind takes its records and rows in steps with loop turns between: a device
    removed in such a turn (``gb28181gw device remove``) after its record was taken had its row
    deleted first and then written back by the write, there again at the next start."""
    from gb28181gw.gb.devices import DeviceTable
    from gb28181gw.store.base import ROWS_PER_STEP

    registrar = gateway.registrar
    ids = await stored_and_changed(registrar, 2 * ROWS_PER_STEP + 5)
    taken: list[str] = []
    get = DeviceTable.get

    def noting(self: DeviceTable, device_id: str, default: Any = None) -> Any:
        taken.append(device_id)
        return get(self, device_id, default)

    monkeypatch.setattr(DeviceTable, "get", noting)
    write = asyncio.create_task(registrar.flush())
    victim = await first_noted(taken, write)
    monkeypatch.setattr(DeviceTable, "get", get)
    assert await registrar.remove(victim)
    await write
    stored = {d.device_id for d in await registrar.store.load_devices()}
    assert victim not in stored, "a removed device was written back by the write in flight"
    assert stored == set(ids) - {victim}


async def test_a_write_started_while_another_is_under_way_is_not_overwritten_by_it(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writes at once (the 30 s write-behind and one an operator's command or a catalog asks
    for): the first takes its rows in steps with loop turns between, so a device changed after
    its row was taken went out newer in the second write and then older in the first, finishing
    last; nothing marked it again, and the store kept the old row."""
    from gb28181gw.gb.model import Device
    from gb28181gw.store.base import ROWS_PER_STEP

    registrar = gateway.registrar
    await stored_and_changed(registrar, 2 * ROWS_PER_STEP + 5)
    rows: list[str] = []
    row = Device.row

    def noting(self: Device) -> Any:
        rows.append(self.device_id)
        return row(self)

    monkeypatch.setattr(Device, "row", noting)
    first = asyncio.create_task(registrar.flush())
    changed = await first_noted(rows, first)
    monkeypatch.setattr(Device, "row", row)
    registrar.update_info(changed, manufacturer="newer")
    await registrar.flush()
    await first
    stored = await registrar.store.get_device(changed)
    assert stored is not None and stored.manufacturer == "newer"
