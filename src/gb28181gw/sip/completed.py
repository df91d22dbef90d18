"""Completed non-INVITE server transactions, kept only to absorb retransmissions (RFC 3261 §17.2.2).

Over UDP a non-INVITE server transaction stays COMPLETED for Timer J (64·T1 = 32 s) after its
final response, and all it does then is send that response again when the request comes again.
So all that is kept is what that needs: the request's transaction key, the response's bytes and
where it went. Every keepalive, REGISTER and OPTIONS passes through here, so at 3,000 requests a
second about 100,000 of them are held at once.

Held as Python objects (a key tuple and its strings, the response ``bytes``, a value tuple and a
FIFO entry: ~850 bytes each) they were scattered through the heap between the long-lived objects
created at the same time (the devices that registered), and CPython cannot give an arena back
while one object in it lives: after a registration storm the process kept the high-water mark of
this table for good (2.6 KiB per device registered at 3,000/s, 1.1 KiB at 500/s). Here the
response bytes go into anonymous memory maps of :data:`CHUNK_BYTES`, filled in order; Timer J is
the same for all of them, so they expire in that order too, and a chunk whose entries have all
expired is unmapped, its memory returned to the system — all but one (:data:`SPARE_CHUNKS`), kept
for the next chunk: under a steady load one chunk empties as another fills, and fresh pages cost
the kernel their zeroing (populated when mapped, :data:`_MAP_FLAGS`; a page fault each before, ~0.4 µs
a response). What stays on the Python heap per entry
is the key (one string) and one small int locating the entry.

Nothing here may hold the event loop long, since every request waits behind it (issue 16):

- The index is split by the key's hash into :data:`INDEX_SHARDS` dicts. One dict of every key
  (640,000 at 20,000 keepalives a second) is rebuilt by CPython whenever its deleted slots run
  out — every few seconds under a steady load, adds and expiries balancing — and that rebuild
  walked every entry in one go: 30 ms on the loop, measured under load. A shard is rebuilt
  alone, at 1/:data:`INDEX_SHARDS` of that.
- :meth:`CompletedResponses.expire` takes a bound: the endpoint expires at most
  :data:`EXPIRE_STEP` entries per call and its next timer is then due at once, so a backlog
  (the loop was late, or a burst's Timer J all falls due together: 50,000 took 13–15 ms) is
  expired in slices with a loop turn between. An entry expired a slice late answers a
  retransmission a little longer than Timer J, which RFC 3261 allows (J is the least time
  a completed transaction absorbs retransmissions, §17.2.2).

A dict never gives back the room it grew to when its entries are deleted, only when an insertion
finds its table full. So after a registration storm with nothing much coming after it (the
usual case: devices register together after a power cut, then only keepalive) the shards stayed
sized for the storm's peak: ~30 bytes held per entry of the peak, ~30 bytes per device
registered at 3,000/s (issue 16: ≤ 1 KiB per device). They are rebuilt to fit once the entries
held fell to a quarter of the peak, :data:`SHRINK_STEP` shards per call of :meth:`expire` (a
rebuild walks its shard's entries), and let go whole, at no cost, once the table is empty.
"""

from __future__ import annotations

import mmap
from array import array
from collections import deque
from collections.abc import Sequence

from .peer import Peer

__all__ = ["CHUNK_BYTES", "EXPIRE_STEP", "INDEX_SHARDS", "SHRINK_STEP", "SPARE_CHUNKS", "CompletedResponses"]

#: Bytes of responses per memory map (about 600 REGISTER 200s).
CHUNK_BYTES = 256 * 1024
#: Emptied chunks kept mapped for reuse rather than unmapped (so at most this many × CHUNK_BYTES idle bytes).
SPARE_CHUNKS = 1
#: Dicts the index is split into, by the key's hash (a power of two; see the module docstring).
INDEX_SHARDS = 256
_SHARD_MASK = INDEX_SHARDS - 1
#: Entries the endpoint expires per call at most (about 0.5 ms; a steady 20,000 requests a second
#: fall due at 200 per 10 ms tick, well within one call).
EXPIRE_STEP = 2_000
#: Shards rebuilt to fit per call of :meth:`CompletedResponses.expire` once the table shrank (a
#: sixteenth of the entries: at 640,000 held before, under 0.3 ms).
SHRINK_STEP = 16
#: Entries of one chunk are numbered in the low bits of their locator, the chunk in the high ones.
_INDEX_BITS = 24
#: How a chunk is mapped: private (anonymous shared memory is the kernel's shmem, whose page
#: faults cost twice a private page's) and, where the system has it, populated at once: one
#: system call fills the chunk's pages rather than a page fault every ten or so responses
#: written into it (measured 2026-12-04: 178 ns a 400-byte response written into a fresh
#: shared chunk, 107 into a private populated one, 115 into a reused one).
_MAP_FLAGS = mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)


class _Chunk:
    """Responses completed one after the other, their keys, peers and expiry times."""

    __slots__ = (
        "serial",
        "memory",
        "used",
        "ends",
        "keys",
        "peers",
        "until",
        "head",
        "sealed",
        "sealed_keys",
        "sealed_transports",
        "sealed_hosts",
        "sealed_ports",
    )

    def __init__(self, serial: int, memory: mmap.mmap) -> None:
        self.serial = serial
        self.memory = memory
        self.used = 0
        self.ends = array("L")  # where each entry's bytes end (the next one starts there)
        self.keys: list[str] = []
        self.peers: list[Peer] = []
        self.until = array("d")  # its Timer J deadline
        self.head = 0  # first entry not yet expired
        # once full (see seal): keys and peers as plain tuples; keys and peers are emptied then
        self.sealed = False
        self.sealed_keys: tuple[str, ...] = ()
        self.sealed_transports: tuple[str, ...] = ()
        self.sealed_hosts: tuple[str, ...] = ()
        self.sealed_ports = array("H")

    def seal(self) -> None:
        """No more entries come: hold keys and peers in plain tuples of plain values, which the
        garbage collector stops tracking the first time it sees them.

        Why: a list is walked, every item of it, by each collection of the generation it is in,
        and under a keepalive load the gateway allocates so little that young collections come
        seconds apart: the chunks filled meanwhile (550 of them, 470,000 entries at 24,000/s)
        were all in the middle generation together, and its collection walked every key and
        peer of them, 16.6 ms on the loop (loop-hold probe, issue 16). A peer is kept as a plain
        ``(transport, host, port)`` (a :class:`Peer` is a tuple subclass, which the collector
        never stops tracking) and made a :class:`Peer` again when a retransmission asks. Held in
        attributes of their own, each of one type (the module may be compiled by mypyc, which
        checks an attribute's type on every assignment).

        A peer is held as three columns (transports, hosts, ports), not as a ``(transport, host,
        port)`` tuple per entry: the columns point at the strings the peer already held, so sealing
        allocates nothing per entry but a pointer (and two bytes of port), where a tuple per entry
        was 72 bytes more. Those tuples were allocated in the middle of a registration storm, among
        the devices' long-lived records, and outlived by them: their arenas stayed pinned once
        Timer J had expired them (about 70 bytes of RSS per device registered at 3,000/s, measured
        2026-12-03 with benchmarks/bench_register.py memory).
        """
        self.sealed_keys = tuple(self.keys)
        peers = self.peers
        self.sealed_transports = tuple([p[0] for p in peers])
        self.sealed_hosts = tuple([p[1] for p in peers])
        self.sealed_ports = array("H", [p[2] for p in peers])
        self.sealed = True
        self.keys = []
        self.peers = []

    def room(self, n: int) -> bool:
        return self.used + n <= len(self.memory) and len(self.keys) < 1 << _INDEX_BITS


class CompletedResponses:
    """Transaction key → (response bytes, peer) until a deadline, deadlines added in order.

    Deadlines must not decrease from one :meth:`add` to the next (they are ``now`` plus the
    one Timer J of unreliable transports); :meth:`expire` drops what is due.
    """

    __slots__ = ("_index", "_chunks", "_next_serial", "_spare", "_peak", "_shrink", "_asked", "_asked_key")

    def __init__(self) -> None:
        # key → locator, split by hash(key) & _SHARD_MASK (see the module docstring)
        self._index: list[dict[str, int]] = [{} for _ in range(INDEX_SHARDS)]
        self._chunks: deque[_Chunk] = deque()
        self._next_serial = 0
        self._spare: list[mmap.mmap] = []  # emptied chunks' memory, kept for reuse (SPARE_CHUNKS)
        # entries held at most (read as each chunk starts) since the shards were last rebuilt
        self._peak = 0
        # the next shard to rebuild to fit; INDEX_SHARDS when none is waiting (see the module docstring)
        self._shrink = INDEX_SHARDS
        # the transaction key last asked about (__contains__) and its string: the quick path asks
        # of every request, then adds the same tuple, whose string (its hash computed) is then not
        # joined and hashed again. Held, so no other tuple can be this one while it is
        self._asked: tuple[str, ...] = ()
        self._asked_key = ""

    @staticmethod
    def key(tx_key: tuple[str, ...]) -> str:
        """One string for a transaction key: a single object on the heap rather than a tuple of several."""
        return "\x00".join(tx_key)

    def __len__(self) -> int:
        return sum(map(len, self._index))

    def add(self, tx_key: tuple[str, ...], data: bytes, peer: Peer, until: float) -> None:
        """Remember ``data`` sent to ``peer`` as the answer for ``tx_key`` until ``until``."""
        key = self._asked_key if tx_key is self._asked else "\x00".join(tx_key)  # key(), inlined
        chunks = self._chunks
        chunk = chunks[-1] if chunks else None
        if chunk is None or not chunk.room(len(data)):
            if len(data) <= CHUNK_BYTES and self._spare:
                memory = self._spare.pop()
            else:
                memory = mmap.mmap(-1, max(CHUNK_BYTES, len(data)), flags=_MAP_FLAGS)
            if chunk is not None:
                chunk.seal()
                held = len(self)  # once a chunk (hundreds of entries): the peak the shards grew to
                if held > self._peak:
                    self._peak = held
            chunk = _Chunk(self._next_serial, memory)
            self._next_serial += 1
            chunks.append(chunk)
        start = chunk.used
        end = start + len(data)
        chunk.memory[start:end] = data
        chunk.used = end
        # a second answer for one key (RFC 2543 keys can repeat) replaces the first: expire()
        # then leaves the newer one in the index when the older one's time comes
        self._index[hash(key) & _SHARD_MASK][key] = chunk.serial << _INDEX_BITS | len(chunk.keys)
        chunk.ends.append(end)
        chunk.keys.append(key)
        chunk.peers.append(peer)
        chunk.until.append(until)

    def __contains__(self, tx_key: tuple[str, ...]) -> bool:
        key = "\x00".join(tx_key)  # key(), inlined: asked of every quick request
        self._asked = tx_key
        self._asked_key = key
        return key in self._index[hash(key) & _SHARD_MASK]

    def get(self, tx_key: tuple[str, ...]) -> tuple[bytes, Peer] | None:
        """The answer kept for ``tx_key`` and where it went, or ``None``."""
        key = self.key(tx_key)
        where = self._index[hash(key) & _SHARD_MASK].get(key)
        if where is None:
            return None
        chunk = self._chunks[(where >> _INDEX_BITS) - self._chunks[0].serial]
        i = where & ((1 << _INDEX_BITS) - 1)
        start = chunk.ends[i - 1] if i else 0
        if chunk.sealed:
            peer = Peer(chunk.sealed_transports[i], chunk.sealed_hosts[i], chunk.sealed_ports[i])
            return chunk.memory[start : chunk.ends[i]], peer
        return chunk.memory[start : chunk.ends[i]], chunk.peers[i]

    def next_deadline(self) -> float | None:
        """The earliest deadline kept, or ``None``."""
        for chunk in self._chunks:
            if chunk.head < len(chunk.until):
                return chunk.until[chunk.head]
        return None

    def expire(self, now: float, most: int | None = None) -> bool:
        """Drop the entries whose deadline is ``now`` or earlier, the ``most`` earliest of them
        if given; unmap the chunks emptied. Whether entries due at ``now`` are left (only
        when ``most`` stopped it): :meth:`next_deadline` is then ``now`` or earlier."""
        chunks = self._chunks
        index = self._index
        if self._shrink < INDEX_SHARDS:
            self._rebuild()
        left = -1 if most is None else most
        while chunks:
            chunk = chunks[0]
            keys: Sequence[str] = chunk.sealed_keys if chunk.sealed else chunk.keys
            until = chunk.until
            i, n = chunk.head, len(until)
            first = chunk.serial << _INDEX_BITS
            stop = n if left < 0 else min(n, i + left)
            while i < stop and until[i] <= now:
                key = keys[i]
                shard = index[hash(key) & _SHARD_MASK]
                if shard.get(key) == first | i:  # not replaced by a newer answer since
                    del shard[key]
                i += 1
            if left >= 0:
                left -= i - chunk.head
            chunk.head = i
            if i < n:
                return i == stop and until[i] <= now
            chunks.popleft()
            self._emptied()
            if len(self._spare) < SPARE_CHUNKS and len(chunk.memory) == CHUNK_BYTES:
                self._spare.append(chunk.memory)
            else:
                chunk.memory.close()
            if left == 0:
                return bool(chunks) and chunks[0].until[chunks[0].head] <= now
        return False

    def _emptied(self) -> None:
        """A chunk expired: let the shards go if nothing is left, or start rebuilding them to
        fit if a quarter of the peak is (see the module docstring)."""
        held = len(self)
        if held == 0:
            index = self._index
            for i in range(INDEX_SHARDS):
                index[i] = {}
            self._peak = 0
            self._shrink = INDEX_SHARDS
        elif held * 4 < self._peak:
            self._peak = held
            self._shrink = 0

    def _rebuild(self) -> None:
        """Rebuild the next :data:`SHRINK_STEP` shards waiting, each to the size of what it holds."""
        index = self._index
        stop = min(self._shrink + SHRINK_STEP, INDEX_SHARDS)
        for i in range(self._shrink, stop):
            # a dict copied from a dict with deleted entries is built at the size of what it holds
            index[i] = dict(index[i])
        self._shrink = stop
