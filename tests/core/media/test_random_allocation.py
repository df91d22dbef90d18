"""Media ports and GB SSRC digits are picked at random (issue 10, defect 3: a stranger who can
guess the next stream's port and SSRC sprays it with RTP and wins the stream)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gb28181gw.errors import SdpError
from gb28181gw.media.ports import PortPool, PortsExhausted
from gb28181gw.sdp import SsrcAllocator, expected_media_host

OUR_ID = "34020000002000000001"


class TestPortPoolRandom:
    def test_same_seed_same_ports_other_seed_other_ports(self) -> None:
        def picks(seed: int) -> list[int]:
            pool = PortPool(30000, 30999, quarantine=5.0, rng=random.Random(seed))
            return [pool.allocate(0.0) for _ in range(20)]

        assert picks(1) == picks(1)
        assert picks(1) != picks(2)

    def test_not_in_sequence(self) -> None:
        pool = PortPool(30000, 30999, quarantine=5.0, rng=random.Random(3))
        ports = [pool.allocate(0.0) for _ in range(50)]
        steps = Counter(b - a for a, b in zip(ports, ports[1:], strict=False))
        assert steps[2] < 5  # handed out in sequence, every step would be +2

    def test_spread_over_the_range(self) -> None:
        # allocate and release one port 20,000 times: each of the 50 ports is picked about
        # 400 times (no quarantine, so every pick is from all 50)
        pool = PortPool(40000, 40099, quarantine=0.0, rng=random.Random(4))
        counts: Counter[int] = Counter()
        for i in range(20_000):
            port = pool.allocate(float(i))
            counts[port] += 1
            pool.release(port, float(i))
        assert set(counts) == set(range(40000, 40100, 2))
        assert 300 < min(counts.values()) and max(counts.values()) < 500

    def test_no_repeat_while_in_use_even_ports_then_exhausted(self) -> None:
        pool = PortPool(30001, 30200, quarantine=5.0, rng=random.Random(5))
        ports = [pool.allocate(0.0) for _ in range(pool.capacity)]
        assert len(set(ports)) == len(ports) == 99
        assert all(p % 2 == 0 and 30002 <= p < 30200 for p in ports)
        with pytest.raises(PortsExhausted, match="99 in use"):
            pool.allocate(0.0)

    def test_quarantine_kept(self) -> None:
        pool = PortPool(30000, 30019, quarantine=5.0, rng=random.Random(6))
        ports = [pool.allocate(0.0) for _ in range(10)]
        for p in ports[:5]:
            pool.release(p, 1.0)
        with pytest.raises(PortsExhausted, match="5 cooling down"):
            pool.allocate(5.9)
        back = {pool.allocate(6.0) for _ in range(5)}
        assert back == set(ports[:5])

    def test_a_pick_does_not_scan_the_range(self) -> None:
        # a whole 16-bit range: a pick that scanned it would make this take seconds
        pool = PortPool(2, 65534, quarantine=0.0, rng=random.Random(8))
        ports = {pool.allocate(0.0) for _ in range(32_000)}
        assert len(ports) == 32_000


class TestSsrcRandom:
    def test_free_digits_random_and_seeded(self) -> None:
        def picks(seed: int) -> list[str]:
            alloc = SsrcAllocator(OUR_ID, rng=random.Random(seed))
            return [alloc.allocate(0.0) for _ in range(20)]

        a = picks(1)
        assert a == picks(1) and a != picks(2)
        assert all(s[:6] == "020000" and len(s) == 10 and s[6:] != "0000" for s in a)
        seqs = [int(s[6:]) for s in a]
        assert sum(1 for x, y in zip(seqs, seqs[1:], strict=False) if y == x + 1) < 3

    def test_spread_and_no_repeat_while_in_use(self) -> None:
        alloc = SsrcAllocator(OUR_ID, quarantine=0.0, rng=random.Random(9))
        live = [alloc.allocate(0.0) for _ in range(5000)]
        assert len(set(live)) == 5000
        thousands = Counter(int(s[6:]) // 1000 for s in live)
        assert set(thousands) == set(range(10)) and min(thousands.values()) > 350

    def test_quarantine_and_exhaustion_per_kind(self) -> None:
        alloc = SsrcAllocator(OUR_ID, quarantine=15.0, rng=random.Random(10))
        live = {alloc.allocate(0.0) for _ in range(9999)}
        assert len(live) == 9999
        with pytest.raises(SdpError, match="no free SSRC"):
            alloc.allocate(0.0)
        assert alloc.allocate(0.0, history=True)[0] == "1"  # the other kind has its own digits
        gone = sorted(live)[:3]
        for s in gone:
            alloc.release(s, 1.0)
            alloc.release(s, 1.0)  # twice: harmless
        assert alloc.active == 9997 and len(alloc) == 10000
        with pytest.raises(SdpError):
            alloc.allocate(15.9)
        assert {alloc.allocate(16.0) for _ in range(3)} == set(gone)
        with pytest.raises(SdpError):
            alloc.allocate(16.0)


class TestExpectedMediaHost:
    def test_the_answers_address_when_usable(self) -> None:
        assert expected_media_host("192.168.1.64", "192.168.1.64") == "192.168.1.64"
        assert expected_media_host("192.168.1.65", "192.168.1.64") == "192.168.1.65"
        assert expected_media_host("203.0.113.9", "198.51.100.7") == "203.0.113.9"
        assert expected_media_host("127.0.0.1", "127.0.0.1") == "127.0.0.1"

    def test_the_sip_host_when_the_answer_names_nothing_usable(self) -> None:
        for named in ("", "0.0.0.0", "224.1.2.3", "240.0.0.1", "camera.local", "::"):
            assert expected_media_host(named, "198.51.100.7") == "198.51.100.7", named

    def test_the_sip_host_when_the_answer_is_private_behind_nat(self) -> None:
        assert expected_media_host("192.168.1.64", "58.20.1.7") == "58.20.1.7"
        assert expected_media_host("10.0.0.5", "121.4.8.9") == "121.4.8.9"
        assert expected_media_host("121.4.8.10", "121.4.8.9") == "121.4.8.10"
