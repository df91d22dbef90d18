"""Media port pool and per-stream RTP statistics."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as hst

from gb28181gw.media.ports import PortPool, PortsExhausted
from gb28181gw.media.stats import StreamStats


def test_even_ports_quarantine_and_exhaustion() -> None:
    pool = PortPool(30001, 30008, quarantine=5.0, rng=random.Random(1))
    assert pool.capacity == 3
    ports = [pool.allocate(0.0) for _ in range(3)]
    assert sorted(ports) == [30002, 30004, 30006]  # picked at random since issue 10
    with pytest.raises(PortsExhausted, match="3 in use"):
        pool.allocate(0.0)
    pool.release(30004, 1.0)
    pool.release(30004, 1.0)  # twice: harmless
    pool.release(12345, 1.0)  # never allocated: ignored
    with pytest.raises(PortsExhausted, match="1 cooling down"):
        pool.allocate(2.0)
    assert pool.allocate(6.0) == 30004 and pool.in_use == 3


def test_open_close_many_leaks_nothing() -> None:
    pool = PortPool(30000, 30100, quarantine=0.0, rng=random.Random(2))
    for i in range(10_000):
        pool.release(pool.allocate(float(i)), float(i))
    assert pool.in_use == 0


def test_stats_loss_reorder_duplicate_wrap() -> None:
    s = StreamStats()
    for seq in (65533, 65534, 65535, 0, 1, 3, 2, 2, 6):
        s.packet(seq, 1400, 10.0)
    assert s.packets == 9 and s.bytes == 9 * 1400
    assert s.cycles == 1
    assert s.reordered == 1 and s.duplicates == 1
    assert s.lost == 2  # 4 and 5 (2 arrived late)
    assert s.idle(12.5) == 2.5


def test_bitrate_over_a_second() -> None:
    s = StreamStats()
    for i in range(101):
        s.packet(i, 500, i * 0.02)  # 50 packets/s of 500 bytes = 200 kbit/s
    assert s.bitrate == pytest.approx(200_000, rel=0.05)


class TestInOrderRuns:
    """StreamStats.in_order (the relay's batches, issue 16) does what one packet() a packet would."""

    @given(
        hst.lists(hst.integers(0, 0xFFFF), min_size=1, max_size=20),
        hst.integers(1, 300),
        hst.integers(0, 300),
        hst.floats(0.0, 3.0),
    )
    def test_a_run_equals_its_packets_one_by_one(self, before: list[int], count: int, size: int, later: float) -> None:
        one, run = StreamStats(), StreamStats()
        for i, seq in enumerate(before):
            one.packet(seq, 100, i * 0.3)
            run.packet(seq, 100, i * 0.3)
        now = len(before) * 0.3 + later
        for k in range(count):
            one.packet((one.highest_seq + 1) & 0xFFFF, size if k == 0 else 0, now)
        run.in_order(count, size, now)
        assert run == one
