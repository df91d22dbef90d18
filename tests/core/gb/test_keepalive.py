"""Liveness deadlines and the keepalive decision (GB/T 28181 §9.6, PROTOCOL.md §4)."""

from __future__ import annotations

import random

import pytest

from gb28181gw.deadlines import Deadline, TimerQueue
from gb28181gw.gb.devices import DeviceEvent, DeviceTable
from gb28181gw.gb.keepalive import (
    Liveness,
    MessageResult,
    check_sender,
    deadline_event,
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


def test_keepalives_leave_one_queued_entry_per_device() -> None:
    # a keepalive only notes the later deadline; the queued entry fires and queues the rest
    live = Liveness()
    for t in range(1000):
        live.touch("a", float(t), 180.0)
        live.touch("b", float(t), 180.0)
    assert live.queued() == 2 and len(live) == 2
    assert live.deadline("a") == 1179.0
    assert live.next_deadline() == 180.0  # the first entries: no later than any deadline
    assert live.due(180.5) == []  # both heard from since: queued again for the rest
    assert live.next_deadline() == 1179.0
    assert live.due(1178.9) == [] and live.due(1179.0) == ["a", "b"]
    assert live.queued() == 0 and live.next_deadline() is None


def test_due_takes_at_most_its_bound_and_leaves_the_rest_due() -> None:
    # the registrar takes devices offline a slice at a time (a site losing power: thousands at once)
    live, bounded = Liveness(), Liveness()
    for n in range(7):
        for lv in (live, bounded):
            lv.touch(f"d{n}", float(n) / 10, 180.0)
            if n == 3:
                lv.touch("d0", 5.0, 180.0)  # heard from since: queued again, not due
    everything = live.due(500.0)
    slices = []
    while (taken := bounded.due(500.0, 2)) or (bounded.next_deadline() or 1e9) <= 500.0:
        assert len(taken) <= 2
        assert bounded.next_deadline() is None or len(taken) < 2 or bounded.next_deadline() <= 500.0
        slices.append(taken)
    assert [d for s in slices for d in s] == everything and len(everything) == 7
    assert [len(s) for s in slices] == [2, 2, 2, 1]
    assert bounded.due(500.0, 0) == [] and len(bounded) == 0


def test_a_deadline_moved_earlier_is_queued_at_once() -> None:
    # a registration about to end: min(registration left, keepalive window) shrinks
    live = Liveness()
    live.touch("a", 0.0, 180.0)
    live.touch("a", 10.0, 5.0)
    assert live.deadline("a") == 15.0 and live.next_deadline() == 15.0
    assert live.due(14.9) == [] and live.due(15.0) == ["a"]


def test_forget() -> None:
    live = Liveness()
    live.touch("a", 0.0, 10.0)
    live.forget("a")
    assert live.due(100.0) == [] and live.next_deadline() is None


def test_an_entry_no_longer_live_is_dropped_and_reports_nothing() -> None:
    # forgotten, then watched again with the very same deadline: two queued entries, one report
    live = Liveness()
    live.touch("a", 0.0, 10.0)
    live.forget("a")
    live.touch("a", 0.0, 10.0)
    assert live.queued() == 2 and len(live) == 1
    assert live.due(10.0) == ["a"] and live.due(100.0) == []
    assert live.queued() == 0 and live.next_deadline() is None
    # queued again earlier: the later entry is dropped when reached, not reported twice
    live.touch("b", 0.0, 180.0)
    live.touch("b", 1.0, 5.0)
    assert live.next_deadline() == 6.0 and live.due(6.0) == ["b"]
    live.touch("b", 7.0, 180.0)
    assert live.due(180.0) == [] and live.due(187.0) == ["b"]
    assert live.next_deadline() is None and live.queued() == 0


class _ReferenceLiveness:
    """The Liveness held as a TimerQueue of Deadline objects (before issue 16's memory work):
    what the compact one must report, call for call."""

    def __init__(self) -> None:
        self._queue: TimerQueue[str] = TimerQueue(resolution=1.0)
        self._entries: dict[str, Deadline[str]] = {}
        self._wanted: dict[str, float] = {}

    def touch(self, device_id: str, now: float, timeout: float) -> float:
        when = now + max(timeout, 0.0)
        self._wanted[device_id] = when
        old = self._entries.get(device_id)
        if old is not None and old.alive:
            if old.when <= when:
                return when
            old.cancel()
        self._entries[device_id] = self._queue.schedule(now, when - now, device_id)
        return when

    def forget(self, device_id: str) -> None:
        self._wanted.pop(device_id, None)
        entry = self._entries.pop(device_id, None)
        if entry is not None:
            entry.cancel()

    def next_deadline(self) -> float | None:
        return self._queue.next_deadline()

    def due(self, now: float, most: int | None = None) -> list[str]:
        out: list[str] = []
        if most is not None and most <= 0:
            return out
        for device_id in self._queue.pop_due(now):
            wanted = self._wanted.get(device_id, now)
            if wanted > now:
                self._entries[device_id] = self._queue.schedule(now, wanted - now, device_id)
                continue
            self._entries.pop(device_id, None)
            self._wanted.pop(device_id, None)
            out.append(device_id)
            if len(out) == most:
                break
        return out


@pytest.mark.parametrize("seed", range(20))
def test_the_compact_queue_reports_what_deadline_objects_did(seed: int) -> None:
    # random keepalives, registrations ending early, forgets and bounded sweeps, whole seconds
    # (the reference's entries fire at now + (when - now), which whole numbers keep exact)
    rng = random.Random(seed)
    live, ref = Liveness(), _ReferenceLiveness()
    now = 0.0
    for _ in range(3000):
        now += rng.choice((0.0, 1.0, 1.0, 2.0, 7.0))
        device = f"d{rng.randrange(40)}"
        op = rng.random()
        if op < 0.6:
            timeout = float(rng.choice((180, 180, 60, 5, 0, 30)))
            assert live.touch(device, now, timeout) == ref.touch(device, now, timeout)
        elif op < 0.7:
            live.forget(device)
            ref.forget(device)
        else:
            most = rng.choice((None, 1, 3))
            assert live.due(now, most) == ref.due(now, most)
        assert live.next_deadline() == ref.next_deadline()
        assert live.deadline(device) == ref._wanted.get(device)
        assert len(live) == len(ref._entries)


# --- the keepalive decision (PROTOCOL.md §4.1) -------------------------------------------

ID = "34020000001320000001"
EPOCH = 1_714_970_000.0
HERE = Peer("UDP", "10.0.0.5", 5060)


def registered(state: DeviceState = DeviceState.ONLINE, **kw: object) -> Device:
    fields: dict[str, object] = {"host": HERE.host, "port": HERE.port, "expires_at": EPOCH + 3600, **kw}
    return Device(ID, state=state, **fields)  # type: ignore[arg-type]


class TestCheckSender:
    """K4: only the registered device, at the address it registered from, is served (issue 10, defect 2)."""

    @pytest.mark.parametrize(
        "device",
        [None, Device(ID), registered(expires_at=EPOCH), registered(DeviceState.OFFLINE, expires_at=EPOCH - 1)],
        ids=["unknown", "unregistered", "expired-just-now", "offline-expired"],
    )
    def test_not_registered(self, device: Device | None) -> None:
        assert check_sender(device, HERE, EPOCH, accept_port_change=True) is MessageResult.UNREGISTERED

    @pytest.mark.parametrize("state", [DeviceState.ONLINE, DeviceState.OFFLINE])
    def test_the_registered_device_at_its_address(self, state: DeviceState) -> None:
        assert check_sender(registered(state), HERE, EPOCH, accept_port_change=False) is MessageResult.OK

    def test_another_ip_is_not_the_device(self) -> None:
        stranger = Peer("UDP", "10.6.6.6", 5060)
        assert check_sender(registered(), stranger, EPOCH, accept_port_change=True) is MessageResult.WRONG_ADDRESS

    def test_a_new_port_on_the_same_ip_is_nat_rebinding_unless_refused(self) -> None:
        rebound = Peer("UDP", HERE.host, 61000)
        assert check_sender(registered(), rebound, EPOCH, accept_port_change=True) is MessageResult.OK
        assert check_sender(registered(), rebound, EPOCH, accept_port_change=False) is MessageResult.WRONG_ADDRESS

    def test_offline_device_comes_back_from_its_rebound_port(self) -> None:
        table = DeviceTable()
        table.adopt(registered(DeviceState.OFFLINE, offline_reason="no keepalive for 180 s"))
        nat = Peer("UDP", "10.0.0.5", 61000)
        assert check_sender(table.get(ID), nat, EPOCH, accept_port_change=True) is MessageResult.OK
        change = table.apply(ID, DeviceEvent.KEEPALIVE, epoch=EPOCH, peer=nat)
        assert change.went_online and change.moved_from == HERE
        assert table[ID].port == 61000 and table[ID].offline_reason == ""

    def test_checking_changes_nothing(self) -> None:
        dev = registered()
        before = dev.copy()
        check_sender(dev, Peer("TCP", "10.1.1.1", 1), EPOCH, accept_port_change=True)
        assert dev == before


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
