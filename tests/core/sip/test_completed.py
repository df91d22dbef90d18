"""The table of completed non-INVITE server transactions (RFC 3261 §17.2.2, Timer J)."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from gb28181gw.sip.completed import (
    CHUNK_BYTES,
    EXPIRE_STEP,
    INDEX_SHARDS,
    SHRINK_STEP,
    SPARE_CHUNKS,
    CompletedResponses,
)
from gb28181gw.sip.peer import Peer

PEERS = [Peer("UDP", "127.0.0.1", 5060 + i) for i in range(3)]


class Model:
    """What the table stands in for: a dict and a FIFO of deadlines (the endpoint's former table)."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, ...], tuple[bytes, Peer]] = {}
        self.fifo: list[tuple[float, tuple[str, ...], bytes]] = []

    def add(self, key: tuple[str, ...], data: bytes, peer: Peer, until: float) -> None:
        self.table[key] = (data, peer)
        self.fifo.append((until, key, data))

    def expire(self, now: float, most: int | None = None) -> None:
        while self.fifo and self.fifo[0][0] <= now and (most is None or most > 0):
            if most is not None:
                most -= 1
            _, key, data = self.fifo.pop(0)
            if self.table.get(key, (None,))[0] is data:
                del self.table[key]


# (key number, response size, peer, time step) or an expiry at some time ahead
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 30), st.integers(0, 70_000), st.integers(0, 2), st.floats(0, 3)),
        st.tuples(st.just("expire"), st.floats(0, 40), st.none() | st.integers(0, 5)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_same_answers_as_a_dict_with_a_fifo(script: list[tuple]) -> None:  # type: ignore[type-arg]
    table, model = CompletedResponses(), Model()
    now = 0.0
    for n, op in enumerate(script):
        if op[0] == "add":
            _, k, size, p, step = op
            now += step
            key = ("z9hG4bK" + str(k), "127.0.0.1:5060", "REGISTER")
            data = bytes([n % 251]) * size
            table.add(key, data, PEERS[p], now + 32.0)
            model.add(key, data, PEERS[p], now + 32.0)
        else:
            left = table.expire(now + op[1], op[2])
            model.expire(now + op[1], op[2])
            # entries due are left only when the bound stopped it
            assert left == bool(model.fifo and model.fifo[0][0] <= now + op[1])
        assert len(table) == len(model.table)
        for key, (data, peer) in model.table.items():
            assert table.get(key) == (data, peer)
        deadlines = [until for until, key, data in model.fifo]
        # the earliest pending Timer J, counting a replaced answer's (the former FIFO did too)
        assert table.next_deadline() == (min(deadlines) if deadlines else None)


def test_expired_chunks_are_unmapped() -> None:
    table = CompletedResponses()
    answer = b"SIP/2.0 200 OK\r\n" + b"x" * 400
    count = 3 * CHUNK_BYTES // len(answer)
    for n in range(count):
        table.add((f"z9hG4bK{n}", "127.0.0.1:5060", "REGISTER"), answer, PEERS[0], 32.0 + n / 1000)
    assert len(table._chunks) >= 3
    table.expire(32.0 + count / 2000)  # about half
    assert 1 <= len(table._chunks) < 3 and 0 < len(table) < count
    table.expire(1e9)
    assert len(table) == 0 and not table._chunks and table.next_deadline() is None
    assert table.get(("z9hG4bK0", "127.0.0.1:5060", "REGISTER")) is None
    # all unmapped but the spare kept for the next chunk
    assert len(table._spare) == SPARE_CHUNKS and all(not m.closed for m in table._spare)


def test_an_emptied_chunk_is_reused_with_its_old_bytes_never_read() -> None:
    table = CompletedResponses()
    old = b"SIP/2.0 200 OK\r\n" + b"o" * 400
    count = 2 * CHUNK_BYTES // len(old)
    for n in range(count):
        table.add((f"z9hG4bK{n}", "127.0.0.1:5060", "MESSAGE"), old, PEERS[0], 32.0 + n / 1000)
    table.expire(1e9)
    spare = table._spare[-1]
    new = b"SIP/2.0 200 OK\r\n" + b"n" * 10
    table.add(("z9hG4bKnew", "127.0.0.1:5060", "MESSAGE"), new, PEERS[1], 2e9)
    table.add(("z9hG4bKnew2", "127.0.0.1:5060", "MESSAGE"), new + b"!", PEERS[0], 2e9)
    assert table._chunks[-1].memory is spare and not table._spare
    assert table.get(("z9hG4bKnew", "127.0.0.1:5060", "MESSAGE")) == (new, PEERS[1])
    assert table.get(("z9hG4bKnew2", "127.0.0.1:5060", "MESSAGE")) == (new + b"!", PEERS[0])


def _dicts(table: CompletedResponses) -> list[dict]:  # type: ignore[type-arg]
    """Every dict the table holds directly or in a list (its index, however it is split)."""
    found = []
    for name in ("_index", "_chunks", "_spare"):  # not __slots__: a mypyc-compiled class has none
        value = getattr(table, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                found.append(item)
    return found


def test_no_dict_holds_more_than_a_shard_of_the_keys() -> None:
    # a dict is rebuilt whole when it grows or its deleted slots run out: one dict of every
    # key held the event loop 30 ms under load at a time; each shard is rebuilt alone
    table = CompletedResponses()
    count = 100_000
    for n in range(count):
        table.add((f"z9hG4bK{n}", "127.0.0.1:5060", "MESSAGE"), b"SIP/2.0 200 OK\r\n\r\n", PEERS[0], 32.0)
    sizes = [len(d) for d in _dicts(table)]
    assert sum(sizes) == count == len(table)
    assert max(sizes) <= 2 * count // INDEX_SHARDS
    assert table.get(("z9hG4bK99999", "127.0.0.1:5060", "MESSAGE")) == (b"SIP/2.0 200 OK\r\n\r\n", PEERS[0])


def test_a_bounded_expiry_takes_at_most_its_bound_each_call() -> None:
    table = CompletedResponses()
    answer = b"SIP/2.0 200 OK\r\n" + b"x" * 400
    count = 3 * CHUNK_BYTES // len(answer)  # several chunks
    for n in range(count):
        table.add((f"z9hG4bK{n}", "127.0.0.1:5060", "REGISTER"), answer, PEERS[0], 32.0 + n / 1e6)
    steps = 0
    while table.expire(40.0, 500):
        steps += 1
        assert len(table) == count - 500 * steps
        deadline = table.next_deadline()
        assert deadline is not None and deadline <= 40.0
    assert len(table) == 0 and steps == (count - 1) // 500 and table.next_deadline() is None
    assert len(table._spare) == SPARE_CHUNKS
    assert EXPIRE_STEP > 0


def test_a_full_chunk_leaves_nothing_for_the_collector_to_walk() -> None:
    # under a keepalive load young collections come seconds apart: chunks filled meanwhile were
    # walked, every key and peer, by the middle generation's collection (16.6 ms under load)
    import gc

    table = CompletedResponses()
    answer = b"SIP/2.0 200 OK\r\n" + b"x" * 400
    count = 3 * CHUNK_BYTES // len(answer)
    for n in range(count):
        table.add((f"z9hG4bK{n}", "127.0.0.1:5060", "MESSAGE"), answer, PEERS[n % 3], 32.0 + n / 1e6)
    full = list(table._chunks)[:-1]
    assert len(full) >= 2
    gc.collect()
    gc.collect()
    for chunk in full:
        held = [
            getattr(chunk, name, None) for name in ("keys", "peers", "sealed_keys", "sealed_transports", "sealed_hosts")
        ]
        assert not [v for v in held if isinstance(v, (list, tuple)) and v and gc.is_tracked(v)]
    # what a retransmission gets back is the same answer and the same Peer
    for n in (0, count // 2, count - 1):
        got = table.get((f"z9hG4bK{n}", "127.0.0.1:5060", "MESSAGE"))
        assert got == (answer, PEERS[n % 3]) and type(got[1]) is type(PEERS[0])


def test_sealing_a_chunk_allocates_no_object_per_entry() -> None:
    # sealing runs in the middle of a registration storm, among the devices' long-lived records:
    # an object per entry made then (a (transport, host, port) tuple: 72 bytes) pinned its arena
    # after Timer J freed it, ~70 bytes of RSS per device registered at 3,000/s
    import tracemalloc

    table = CompletedResponses()
    answer = b"SIP/2.0 200 OK\r\n" + b"x" * 400
    count = CHUNK_BYTES // len(answer) + 1  # the first chunk full, the next one started
    peers = [Peer("UDP", f"10.1.{n >> 8}.{n & 255}", 5060 + n % 7) for n in range(count)]
    for n in range(count - 1):
        table.add((f"z9hG4bK{n}", "127.0.0.1:5060", "REGISTER"), answer, peers[n], 32.0)
    chunk = table._chunks[0]
    entries = len(chunk.keys)
    assert entries > 500 and not chunk.sealed
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table.add((f"z9hG4bK{count}", "127.0.0.1:5060", "REGISTER"), answer, peers[-1], 32.0)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert chunk.sealed
    # pointers into strings the peers already held, and two bytes of port: ~26 bytes an entry,
    # less the two lists given back; a tuple per entry made it ~64
    assert grown / entries < 40, grown / entries
    for n in (0, entries // 2, entries - 1):
        assert table.get((f"z9hG4bK{n}", "127.0.0.1:5060", "REGISTER")) == (answer, peers[n])


def _index_bytes(table: CompletedResponses) -> int:
    return sum(sys.getsizeof(d) for d in _dicts(table))


def test_the_index_shrinks_after_a_storm_and_still_finds_what_is_left() -> None:
    # a dict keeps the room it grew to until an insertion finds it full: after a storm and
    # no traffic, the shards held ~30 bytes per entry of the peak for good (issue 16)
    table = CompletedResponses()
    answer = b"SIP/2.0 200 OK\r\n" + b"x" * 100
    count = 60_000
    for n in range(count):
        table.add((f"z9hG4bK{n}", "127.0.0.1:5060", "REGISTER"), answer, PEERS[n % 3], 32.0 + n / 1000)
    empty = _index_bytes(CompletedResponses())
    peak = _index_bytes(table)
    kept = count // 10
    table.expire(32.0 + (count - kept - 0.5) / 1000)  # nine tenths expired
    assert len(table) == kept
    calls = 0
    while _index_bytes(table) > empty + (peak - empty) // 4:  # rebuilt a few shards per call
        table.expire(0.0)
        calls += 1
        assert calls <= INDEX_SHARDS // SHRINK_STEP
    for n in range(count - kept, count):
        assert table.get((f"z9hG4bK{n}", "127.0.0.1:5060", "REGISTER")) == (answer, PEERS[n % 3])
    assert table.get((f"z9hG4bK{count - kept - 1}", "127.0.0.1:5060", "REGISTER")) is None
    # new answers go on being added and found among the rebuilt shards
    table.add(("z9hG4bKnew", "127.0.0.1:5060", "REGISTER"), answer, PEERS[1], 1000.0)
    assert table.get(("z9hG4bKnew", "127.0.0.1:5060", "REGISTER")) == (answer, PEERS[1])
    assert len(table) == kept + 1
    table.expire(1e9)
    assert len(table) == 0 and _index_bytes(table) == empty  # let go whole once empty


def test_a_steady_table_is_not_rebuilt() -> None:
    # adds and expiries balancing: the entries held never fall to a quarter of the peak
    table = CompletedResponses()
    answer = b"SIP/2.0 200 OK\r\n" + b"x" * 400
    for n in range(20_000):
        table.add((f"z9hG4bK{n}", "127.0.0.1:5060", "MESSAGE"), answer, PEERS[0], 32.0 + n / 100)
        table.expire(n / 100)
        assert table._shrink == INDEX_SHARDS
