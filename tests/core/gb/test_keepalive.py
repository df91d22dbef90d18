"""Liveness deadlines and the keepalive decision (GB/T 28181 §9.6, PROTOCOL.md §4)."""

from __future__ import annotations

import pytest

from gb28181gw.gb.devices import DeviceEvent, DeviceTable
from gb28181gw.gb.keepalive import (
    Liveness,
    MessageResult,
    deadline_event,
    decide,
    keepalive_timeout,
    liveness_timeout,
)
from gb28181gw.gb.model import Device, DeviceState
from gb28181gw.sip.endpoint import Peer


def test_defaults_guard_against_missing_values() -> None:
    assert keepalive_timeout(0, 0) == 180.0
    assert keepalive_timeout(30, 2) == 60.0


def test_touch_moves_the_deadline_and_due_reports_once() -> None:
    live = Liveness()
    live.touch("a", 0.0, 180.0)
    live.touch("b", 0.0, 180.0)
    live.touch("a", 100.0, 180.0)  # keepalive: a's deadline moves to 280
    assert live.next_deadline() == 180.0
    assert live.due(179.0) == []
    assert live.due(181.0) == ["b"]
    assert live.deadline("a") == 280.0
    assert live.due(281.0) == ["a"]
    assert live.due(1000.0) == [] and len(live) == 0


def test_forget() -> None:
    live = Liveness()
    live.touch("a", 0.0, 10.0)
    live.forget("a")
    assert live.due(100.0) == [] and live.next_deadline() is None


# --- the keepalive decision (PROTOCOL.md §4.1) -------------------------------------------

ID = "34020000001320000001"
EPOCH = 1_714_970_000.0
HERE = Peer("UDP", "10.0.0.5", 5060)
KEEPALIVE = (
    b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>7</SN>\r\n'
    b"<DeviceID>34020000001320000001</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
)
ALARM = KEEPALIVE.replace(b"Keepalive", b"Alarm")


def registered(state: DeviceState = DeviceState.ONLINE, **kw: object) -> Device:
    fields: dict[str, object] = {"host": HERE.host, "port": HERE.port, "expires_at": EPOCH + 3600, **kw}
    return Device(ID, state=state, **fields)  # type: ignore[arg-type]


class TestDecide:
    """K4: 404 to anyone without a registration; 400 for a body that is no MANSCDP; 200 otherwise."""

    @pytest.mark.parametrize(
        "device",
        [None, Device(ID), registered(expires_at=EPOCH), registered(DeviceState.OFFLINE, expires_at=EPOCH - 1)],
        ids=["unknown", "unregistered", "expired-just-now", "offline-expired"],
    )
    def test_not_registered_is_404(self, device: Device | None) -> None:
        d = decide(device, ID, KEEPALIVE, HERE, EPOCH, accept_port_change=True)
        assert (d.status, d.result, d.event, d.root) == (404, MessageResult.UNREGISTERED, None, None)
        assert d.warning == f"device {ID} is not registered here"

    def test_no_id_says_so(self) -> None:
        assert (
            decide(None, "", KEEPALIVE, HERE, EPOCH, accept_port_change=True).warning
            == "device (no ID) is not registered here"
        )

    def test_bad_body_is_400(self) -> None:
        d = decide(registered(), ID, b"<Notify><CmdType>Keep", HERE, EPOCH, accept_port_change=True)
        assert (d.status, d.result, d.event) == (400, MessageResult.BAD_BODY, None) and d.warning

    def test_other_cmd_is_200_with_the_body_and_no_transition(self) -> None:
        d = decide(registered(), ID, ALARM, HERE, EPOCH, accept_port_change=True)
        assert (d.status, d.result, d.event) == (200, MessageResult.OTHER, None)
        assert d.root is not None and d.root.tag == "Notify"

    @pytest.mark.parametrize("state", [DeviceState.ONLINE, DeviceState.OFFLINE])
    def test_keepalive_is_200_and_a_keepalive_transition(self, state: DeviceState) -> None:
        d = decide(
            registered(state), ID, KEEPALIVE.replace(b"Keepalive", b"keepalive"), HERE, EPOCH, accept_port_change=True
        )
        assert (d.status, d.result, d.event, d.peer, d.root) == (
            200,
            MessageResult.OK,
            DeviceEvent.KEEPALIVE,
            HERE,
            None,
        )

    def test_offline_device_comes_back_from_its_new_address(self) -> None:
        table = DeviceTable()
        table.adopt(registered(DeviceState.OFFLINE, offline_reason="no keepalive for 180 s"))
        nat = Peer("UDP", "10.0.0.5", 61000)
        d = decide(table.get(ID), ID, KEEPALIVE, nat, EPOCH, accept_port_change=True)
        assert d.event is not None
        change = table.apply(ID, d.event, epoch=EPOCH, peer=d.peer)
        assert change.went_online and change.moved_from == HERE
        assert table[ID].port == 61000 and table[ID].offline_reason == ""

    def test_decide_changes_nothing(self) -> None:
        dev = registered()
        before = dev.copy()
        decide(dev, ID, KEEPALIVE, Peer("TCP", "10.1.1.1", 1), EPOCH, accept_port_change=True)
        assert dev == before


class TestOnlyTheRegisteredAddress:
    """Anyone can put a device's ID in a MESSAGE: only its registered address is believed (issue 10, defect 2)."""

    @pytest.mark.parametrize("body", [KEEPALIVE, ALARM])
    def test_another_ip_is_404_and_moves_nothing(self, body: bytes) -> None:
        stranger = Peer("UDP", "10.6.6.6", 5060)
        d = decide(registered(), ID, body, stranger, EPOCH, accept_port_change=True)
        assert (d.status, d.result, d.event, d.root) == (404, MessageResult.WRONG_ADDRESS, None, None)
        assert "register again" in d.warning

    def test_a_new_port_on_the_same_ip_is_nat_rebinding_unless_refused(self) -> None:
        rebound = Peer("UDP", HERE.host, 61000)
        d = decide(registered(), ID, KEEPALIVE, rebound, EPOCH, accept_port_change=True)
        assert (d.status, d.event, d.peer) == (200, DeviceEvent.KEEPALIVE, rebound)
        d = decide(registered(), ID, KEEPALIVE, rebound, EPOCH, accept_port_change=False)
        assert (d.status, d.result, d.event) == (404, MessageResult.WRONG_ADDRESS, None)


class TestDeadlines:
    def test_online_deadline_is_the_nearer_of_keepalive_window_and_registration_end(self) -> None:
        assert liveness_timeout(registered(), EPOCH) == 180.0
        assert liveness_timeout(registered(keepalive_interval=10, keepalive_count=2), EPOCH) == 20.0
        assert liveness_timeout(registered(), EPOCH, interval=30, count=2) == 60.0
        assert liveness_timeout(registered(expires_at=EPOCH + 50), EPOCH) == 50.0

    def test_offline_deadline_is_the_registration_end(self) -> None:
        assert liveness_timeout(registered(DeviceState.OFFLINE), EPOCH) == 3600.0
        assert liveness_timeout(registered(DeviceState.OFFLINE, expires_at=EPOCH - 5), EPOCH) == 0.0

    def test_what_a_passed_deadline_means(self) -> None:
        assert deadline_event(registered(), EPOCH) is DeviceEvent.TIMED_OUT
        assert deadline_event(registered(expires_at=EPOCH + 0.4), EPOCH) is DeviceEvent.EXPIRED
        assert deadline_event(registered(DeviceState.OFFLINE, expires_at=EPOCH), EPOCH) is DeviceEvent.EXPIRED
        assert deadline_event(registered(DeviceState.OFFLINE), EPOCH) is None  # early: watch again
        assert deadline_event(Device(ID), EPOCH) is None
