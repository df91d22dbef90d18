"""The media forwarder: receives a device's RTP and sends it to every consumer of the stream.

One :class:`Forwarder` runs in each relay worker process (or in the gateway's own process
when ``media.workers = 0``) and owns the sockets of its streams. Everything here is on the
hot path, so it works on raw non-blocking sockets with ``loop.add_reader``:

* each stream has one preallocated buffer; UDP packets are received into it at offset 2
  with ``recvfrom_into``, TCP bytes are read into it with ``recv_into`` and framed in place
  by :class:`~gb28181gw.media.tcp_framing.FrameScanner`; no packet is ever copied into a
  new ``bytes`` object on the way through. On Linux UDP goes in batches instead (issue 16):
  ``recvmmsg`` into the slots of one buffer shared by the forwarder's streams, and ``sendmmsg``
  from those slots to a stream's one UDP consumer (:mod:`.mmsg`, :meth:`Forwarder._relay_batch`,
  the same output as the per-packet path, which remains where libc lacks the calls);
* for each consumer the SSRC is rewritten in place and the packet is sent straight from
  that buffer: ``sendto`` for UDP, ``send`` of the packet with its RFC 4571 length written
  into the two bytes before it for TCP. Only when a TCP consumer's socket is full is the
  unsent rest copied into that consumer's own bounded queue; beyond the bound its packets
  are dropped and counted, so a slow consumer never stalls the others;
* media is taken only from the device's host (``source`` of :meth:`Forwarder.open` and
  :meth:`Forwarder.expect`: its SIP host, then the one its answer names): packets from any
  other host are dropped and counted (``wrong_source``) and TCP connections from one are
  closed at once (``refused_connections``), so a stranger spraying our port range cannot
  take a stream over before the device's first packet (issue 10). The source is checked
  first, once per packet: against the expected host string until the first good packet,
  then against that packet's stored ``(host, port)`` tuple;
* packets with the wrong SSRC or from another source than the first good one are dropped
  and counted; a device that sends a single SSRC other than the negotiated one and nothing
  else, from its own host, is followed after :data:`SSRC_LATCH_PACKETS` packets
  (PROTOCOL.md §11.5 M1);
* a consumer joining an open stream gets a picture at once (issue 12): each stream keeps a
  copy of its packets since the last key frame (``gop_cache`` bytes and
  :data:`GOP_CACHE_PACKETS` packets at most; past either bound the copy is dropped until the
  next key frame; past ``gop_cache_total`` for all streams together, checked once a frame, the
  largest copies go). A frame starts at a new RTP timestamp or at a PS pack header (audio
  packs and key frames may share a timestamp with what came before): such a packet is
  inspected (:meth:`~gb28181gw.media.ps.PsInspector.inspect`, which also feeds the
  statistics), and when it ends before the video's first NAL units say whether it is a key
  frame (a PSM alone, a pack header cut short), so are the next few packets of that frame; a
  key frame restarts the copy where the frame started. Other packets cost one byte compared,
  one copy and one append. A joining consumer is sent the copy, with its SSRC, and put among
  the live consumers in the same step, with no await in between, so it sees the device's
  packets in order with none twice or missing: a TCP one at once (the socket and its queue
  pace it), a UDP one paced (:class:`CatchingUp`, at a multiple of the stream's rate: one
  burst overflows receivers), the live packets queued behind until it has caught up. Joining
  a stream with media but no copy is reported (:class:`~.records.KeyFrameWanted`);
* a TCP-passive consumer (a superior that connects to us, §7.5, §9.5) gets its own listening
  port: one connection is taken, from its host or the few others allowed with it (a superior
  behind NAT connects from its SIP source, not its ``c=``; others are closed and counted in
  ``refused_connections``); none within its timeout drops it (``ConsumerLost``). It may be
  added paused: connected or not, it is sent nothing until :meth:`Forwarder.start_consumer`
  (the superior's ACK, §9.5 step 6). Other consumers added paused are not here until started.

Stream events (first packet, media connection up or lost, consumer lost) go to ``on_event``
and figures to :meth:`Forwarder.snapshot` as the frozen records of :mod:`.records`, which
cross a worker's pipe in their wire form, so the same forwarder serves in-process and in a
worker. Events and figures are built off the per-packet path (the first packet's event once).
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import errno
import logging
import os
import resource
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gb28181gw.errors import RelayError, RelayFailure
from gb28181gw.media.ps import PsInspector
from gb28181gw.media.stats import StreamStats
from gb28181gw.media.tcp_framing import MAX_FRAME, FrameScanner
from gb28181gw.sdp import StreamMode
from gb28181gw.stopping import stop_reading, stop_writing

from . import mmsg
from .demux import Demux
from .mmsg import NAME
from .records import (
    ConsumerFigures,
    ConsumerLost,
    FirstPacket,
    KeyFrameWanted,
    MediaClosed,
    MediaConnected,
    PsFigures,
    RelayEvent,
    RelaySnapshot,
    RelayTotals,
    StreamFigures,
)

__all__ = ["Forwarder", "RelayError", "RelayFailure", "RelaySettings"]

log = logging.getLogger("gb28181gw.relay")

#: Packets taken from one socket per wake-up before others get their turn.
BATCH = 256
#: Packets of one wake-up after which a stream's next wake-up reads with ``recvmmsg`` from the first
#: packet on (a blasting stream), and below which it reads its first with ``recvfrom_into`` again.
BURST = 8
#: Packets of one foreign SSRC, with none of the negotiated one, after which the stream follows it.
SSRC_LATCH_PACKETS = 50
#: Linux's SO_RCVBUFFORCE (Python's socket module does not name it): SO_RCVBUF past net.core.rmem_max.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
#: The shared port's SO_RCVBUF, in ``media.udp_receive_buffer`` (a stream's): many streams' bursts wait there.
SHARED_BUFFERS = 16
#: Size of a stream's receive buffer: room for the largest TCP frame, a read's worth more.
BUFFER_SIZE = 2 + MAX_FRAME + 65536
#: Packets kept since the last key frame, at most, whatever their size: the byte bound
#: (``media.gop_cache``) alone would let a stream of tiny packets grow a long list.
GOP_CACHE_PACKETS = 8192
#: PS packs looked into per RTP timestamp: a video frame and the audio pack or the frame before that
#: share its timestamp; more packs of one timestamp are the pieces of a frame cut into several.
PACKS_PER_TIMESTAMP = 4
#: RTP ticks between two frames' timestamps (back, or ahead by more: 10 s at 90 kHz) that are a jump in
#: the recording, not its pace: a playback's seek or a device's restart (the position counts from it).
JUMP_TICKS = 10 * 90_000
#: Packets of a frame looked into, and bytes of them kept to look into, before deciding that it
#: is no key frame (a pack header, system header and PSM alone, then the video: two suffice).
PROBE_PACKETS, PROBE_BYTES = 4, 8192
#: A joining UDP consumer's backlog (the kept packets, then what arrives meanwhile) goes out in
#: ticks of CATCH_UP_TICK seconds at CATCH_UP_FACTOR times the stream's own rate, and at least
#: at the rate that sends the kept packets in CATCH_UP_SECONDS: a 4 Mbit/s camera with a key frame
#: every 2 s is caught up in 0.7 s, 20 KB a tick (a tenth of a default receive buffer), where
#: all at once (1 MB) overflows receivers and holds the loop. The pace also follows what joins the
#: backlog meanwhile (CATCH_UP_FACTOR times it, averaged over CATCH_UP_SECONDS at least): a stream
#: joined before its rate is known (a download at 4x, in its first second) would else outrun it.
CATCH_UP_TICK, CATCH_UP_FACTOR, CATCH_UP_SECONDS = 0.01, 4, 0.5
CATCH_UP_MIN_RATE = 250_000  # bytes/s (2 Mbit/s): the floor before the stream's rate is known
_PACK_START = b"\x00\x00\x01\xba"

_HEAD = struct.Struct("!BBHII")
#: An RTP header's first twelve bytes (first byte, second, sequence number, timestamp, SSRC), typed
#: as what they are: compiled, each is then compared as a machine integer, not as an object.
_head: Callable[[bytearray, int], tuple[int, int, int, int, int]] = _HEAD.unpack_from
_SSRC = struct.Struct("!I")
_LEN = struct.Struct("!H")
_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How a relay runs, from the ``[media]`` section (built once, in ``app.build_relays``).

    Attributes:
        host: the address media sockets bind to.
        tcp_queue_limit: bytes a slow TCP consumer may have queued before its packets are dropped.
        udp_receive_buffer: SO_RCVBUF asked for each stream's UDP socket.
        stats_interval: seconds between the figures a relay worker sends back.
        gop_cache: bytes of a stream's packets since its last key frame kept for joining consumers (0: none).
        gop_cache_total: bytes kept that way by all of the relay's streams together (0: no bound);
            past it the largest stream's packets are let go.
        batch: UDP media received with ``recvmmsg`` and sent with ``sendmmsg`` where libc has them
            (:mod:`.mmsg`); false: ``recvfrom_into`` and ``sendto`` always (the benchmark's "before").
    """

    host: str
    tcp_queue_limit: int
    udp_receive_buffer: int
    stats_interval: float
    gop_cache: int
    gop_cache_total: int = 0
    batch: bool = True

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Sent to each relay worker process. Compiled by mypyc (``gb28181gw accelerate``), a frozen
        # class is unpickled by setting its fields one by one, which it refuses: rebuilt whole instead.
        return RelaySettings, (
            self.host, self.tcp_queue_limit, self.udp_receive_buffer, self.stats_interval,
            self.gop_cache, self.gop_cache_total, self.batch,
        )  # fmt: skip


class UdpOut:
    """A consumer reached over UDP, sent from the stream's own port."""

    __slots__ = ("id", "ssrc", "addr", "to", "sock", "packets", "bytes", "dropped", "errors", "dest", "destlen",
                 "columns")  # fmt: skip
    transport = "udp"

    def __init__(self, consumer_id: str, ssrc: int, addr: tuple[str, int], sock: socket.socket) -> None:
        self.id, self.ssrc, self.addr, self.sock = consumer_id, ssrc, addr, sock
        self.packets = self.bytes = self.dropped = self.errors = 0
        # where it is sent: an IPv4 consumer of a relay on an IPv6 socket (media.listen "::", which
        # takes IPv4 devices too) as IPv4-mapped, which is all such a socket sends to
        self.to = _mapped(sock.family, addr)
        # its address as sendmmsg takes it (None: a name, or a scope; sent to with sendto only)
        raw = mmsg.sockaddr(sock.family, self.to)
        self.dest: Any = None if raw is None else ctypes.create_string_buffer(raw, len(raw))
        self.destlen = 0 if raw is None else len(raw)
        # its SSRC's two 16-bit halves, each repeated once a slot of a batch (_queue_run)
        self.columns: list[memoryview] = []

    def send(self, buf: bytearray, view: memoryview, off: int, n: int) -> None:
        _SSRC.pack_into(buf, off + 8, self.ssrc)
        try:
            self.sock.sendto(view[off : off + n], self.to)
        except BlockingIOError:
            self.dropped += 1  # the socket's send buffer is full: losing one datagram beats waiting
            return
        except OSError:
            self.errors += 1  # e.g. ICMP unreachable reported on a later send
            return
        self.packets += 1
        self.bytes += n

    def close(self) -> None:
        """Nothing to close: the stream owns the socket."""


class SharedUdpOut(UdpOut):
    """A UDP consumer of a stream on a shared port (``media.shared_port``): the packets of a batch
    being relayed are queued (:class:`SendQueue`) and go with one ``sendmmsg`` for the whole
    batch, whichever streams they belong to; any other packet (a joiner's kept ones) with ``sendto``."""

    __slots__ = ("queue", "dest_at")

    def __init__(
        self, consumer_id: str, ssrc: int, addr: tuple[str, int], sock: socket.socket, queue: SendQueue | None
    ) -> None:
        super().__init__(consumer_id, ssrc, addr, sock)
        self.queue = queue if self.dest is not None else None
        self.dest_at = ctypes.addressof(self.dest) if self.dest is not None else 0

    def send(self, buf: bytearray, view: memoryview, off: int, n: int) -> None:
        q = self.queue
        if q is None or buf is not q.buf:
            UdpOut.send(self, buf, view, off, n)
        else:
            q.add(self, buf, off, n)


class SendQueue:
    """The sends of one batch read from a shared port, to many consumers: one ``sendmmsg`` for them
    all (:meth:`flush`, at the end of the batch). Each packet is still sent straight from its slot
    with its consumer's SSRC written in place; a slot queued already with another SSRC (a stream's
    second consumer) has what is queued sent first, so the rewrite cannot change a queued packet.
    A TCP consumer of the same stream writes its SSRC into the slot after it was queued and sends
    at once: what :meth:`add` queued is stamped again with its own SSRC before it goes."""

    __slots__ = ("batch", "buf", "fd", "count", "outs", "last_off", "last_ssrc", "stamps")

    def __init__(self, batch: mmsg.Batch) -> None:
        self.batch, self.buf = batch, batch.buf
        self.fd = -1
        self.count = 0
        self.outs: list[SharedUdpOut] = []
        self.last_off, self.last_ssrc = -1, -1
        self.stamps: list[tuple[int, int]] = []  # (slot offset, SSRC) of what add() queued

    def add(self, out: SharedUdpOut, buf: bytearray, off: int, n: int) -> None:
        ssrc = out.ssrc
        if self.count == self.batch.vlen or (off == self.last_off and ssrc != self.last_ssrc):
            self.flush()
        _SSRC.pack_into(buf, off + 8, ssrc)
        self.batch.put(self.count, off, n, out.dest_at, out.destlen)
        self.stamps.append((off, ssrc))
        self.outs.append(out)
        self.count += 1
        self.last_off, self.last_ssrc = off, ssrc
        out.packets += 1  # counted as sent; flush() takes back what did not go
        out.bytes += n

    def flush(self) -> None:
        count = self.count
        if not count:
            return
        self.count, self.last_off = 0, -1
        if self.stamps:
            for off, ssrc in self.stamps:
                _SSRC.pack_into(self.buf, off + 8, ssrc)
            self.stamps.clear()
        failed = self.batch.send_each(self.fd, count)
        for j, code in failed:
            out = self.outs[j]
            out.packets -= 1
            out.bytes -= self.batch.send_iov[2 * j + 1]
            if code in mmsg.RETRY:
                out.dropped += 1
            else:
                out.errors += 1
        self.outs.clear()


class SharedPort:
    """The one UDP port the shared streams of a forwarder receive on and send from, with what tells
    their packets apart (:class:`~.demux.Demux`) and a buffer for where ``recvmmsg`` is missing."""

    __slots__ = ("port", "sock", "demux", "buf", "view")

    def __init__(self, port: int, sock: socket.socket) -> None:
        self.port, self.sock = port, sock
        self.demux: Demux[RelayStream] = Demux()
        self.buf = bytearray(2 + 65536)
        self.view = memoryview(self.buf)


class CatchingUp:
    """A UDP consumer that joined a stream with packets kept: in the stream's consumers in its place
    until its backlog (the kept packets, then the live ones queued behind them) has gone out, paced
    by :meth:`Forwarder._catch_up`; then the consumer itself takes its place."""

    __slots__ = ("out", "backlog", "rate", "allowance", "last", "timer", "since", "queued")
    transport = "udp"

    def __init__(self, out: UdpOut, backlog: deque[bytes], rate: float, now: float) -> None:
        self.out, self.backlog, self.rate, self.last = out, backlog, rate, now
        self.allowance = rate * CATCH_UP_TICK  # bytes it may be sent now
        self.timer: asyncio.TimerHandle | None = None
        self.since, self.queued = now, 0  # live bytes queued behind the kept ones since it joined

    def __getattr__(self, name: str) -> Any:
        return getattr(self.out, name)  # id, ssrc, addr and its figures: the consumer's own

    def send(self, buf: bytearray, view: memoryview, off: int, n: int) -> None:
        if len(self.backlog) >= GOP_CACHE_PACKETS:
            self.out.dropped += 1  # the stream outruns the pace (not expected: it is a multiple of it)
            return
        self.backlog.append(bytes(view[off : off + n]))  # behind the kept packets, in order
        self.queued += n

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.backlog.clear()
        self.out.close()


class TcpOut:
    """A consumer reached over TCP (RFC 4571 framing), with a bounded queue for when it is slow."""

    __slots__ = ("id", "ssrc", "addr", "sock", "loop", "limit", "base_limit", "pending", "packets", "bytes", "dropped",
                 "errors", "on_lost", "_writing")  # fmt: skip
    transport = "tcp"

    def __init__(
        self,
        consumer_id: str,
        ssrc: int,
        addr: tuple[str, int],
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        limit: int,
        on_lost: Callable[[TcpOut, str], None],
    ) -> None:
        self.id, self.ssrc, self.addr, self.sock, self.loop = consumer_id, ssrc, addr, sock, loop
        self.limit = self.base_limit = limit  # limit: raised for a join's burst while it is queued
        self.pending = bytearray()
        self.packets = self.bytes = self.dropped = self.errors = 0
        self.on_lost = on_lost
        self._writing = False
        loop.add_reader(sock.fileno(), self._on_readable)

    def send(self, buf: bytearray, view: memoryview, off: int, n: int) -> None:
        if self.pending and len(self.pending) + n + 2 > self.limit:
            self.dropped += 1  # behind by more than the bound: this packet is lost to it
            return
        _SSRC.pack_into(buf, off + 8, self.ssrc)
        _LEN.pack_into(buf, off - 2, n)
        if self.pending:
            self.pending += view[off - 2 : off + n]  # behind already: queue a copy, in order
        else:
            try:
                sent = self.sock.send(view[off - 2 : off + n])
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.errors += 1
                self.on_lost(self, f"send failed: {exc.strerror or exc}")
                return
            if sent < n + 2:
                self.pending += view[off - 2 + sent : off + n]
                self._want_write()
        self.packets += 1
        self.bytes += n

    def _want_write(self) -> None:
        if not self._writing:
            self._writing = True
            self.loop.add_writer(self.sock.fileno(), self._flush)

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.pending)
        except BlockingIOError:
            return
        except OSError as exc:
            self.on_lost(self, f"send failed: {exc.strerror or exc}")
            return
        del self.pending[:sent]
        if self.limit > self.base_limit:  # the room made for a join's burst shrinks as it goes out
            self.limit = max(self.base_limit, self.limit - sent)
        if not self.pending:
            self._writing = False
            stop_writing(self.loop, self.sock.fileno())

    def _on_readable(self) -> None:
        # consumers send nothing we use (RTCP at most); EOF or an error means they left
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self.on_lost(self, f"connection error: {exc.strerror or exc}")
            return
        if not data:
            self.on_lost(self, "the consumer closed the connection")

    def close(self) -> None:
        """Close the connection."""
        fd = self.sock.fileno()
        if fd >= 0:
            stop_reading(self.loop, fd)
            if self._writing:
                stop_writing(self.loop, fd)
        self._writing = False
        self.sock.close()


class Waiting:
    """A TCP-passive consumer not sent to yet: listening for its connection (``listener``), or
    connected (``out``) but not ``started`` (added before the superior's ACK)."""

    __slots__ = ("id", "hosts", "ssrc", "listener", "timer", "out", "started")

    def __init__(
        self, consumer_id: str, hosts: frozenset[str], ssrc: int, listener: socket.socket, started: bool
    ) -> None:
        self.id, self.hosts, self.ssrc, self.listener, self.started = consumer_id, hosts, ssrc, listener, started
        self.timer: asyncio.TimerHandle | None = None
        self.out: TcpOut | None = None

    def close(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        fd = self.listener.fileno()
        if fd >= 0:
            if loop is not None:
                stop_reading(loop, fd)
            self.listener.close()
        if self.out is not None:
            self.out.close()


class RelayStream:
    """One device stream: its sockets, what it expects, its consumers and its statistics."""

    def __init__(
        self, stream_id: str, port: int, mode: StreamMode, ssrc: int, now: float, source_host: str | None = None
    ) -> None:
        self.id = stream_id
        self.port = port
        self.mode = mode
        self.ssrc = ssrc
        self.created = now
        self.buf = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buf)
        self.udp: socket.socket | None = None
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None
        self.peer: tuple[str, int] | None = None
        self.scanner = FrameScanner()
        self.spans: list[tuple[int, int]] = []
        self.fill = 2  # TCP: where the next read goes (the first two bytes stay free)
        self.source: Any = None
        # the batched path's copy of ``source`` as the kernel writes it, once per slot of a batch's
        # names (valid while ``source_names_of`` is ``source``)
        self.source_names = b""
        self.source_names_of: Any = None
        self.bursting = False  # its last wake-up brought BURST packets or more (the batched path)
        self.source_host = source_host  # media only from this host (None: from the first sender)
        self.consumers: list[UdpOut | TcpOut | CatchingUp] = []
        self.waiting: dict[str, Waiting] = {}  # TCP-passive consumers not connected or not started
        self.gop: list[bytes] | None = None  # the packets since the last key frame (None: no key frame)
        self.gop_bytes = 0
        self.gop_evictions = 0
        self.gop_counted = 0  # what of gop_bytes the relay's total holds (brought up to date once a frame)
        self.stats = StreamStats()
        self.inspector = PsInspector()
        self.last_ts = -1
        self.ts_packs = 0  # PS packs looked into at this timestamp
        self.ts_open = True  # packs at this timestamp still looked into (no key frame found, not too many)
        # a frame not yet told key or not: its bytes so far, packets left to look into, where it
        # starts among the kept packets (index, bytes before), or its packets when none are kept
        self.probe: bytearray | None = None
        self.probe_left = 0
        self.frame_at = self.frame_bytes = 0
        self.spare: list[bytes] | None = None
        self.first_at = 0.0
        self.first_ts = -1
        self.jumps = 0  # timestamp jumps seen (JUMP_TICKS), and the timestamp the last one jumped to
        self.jump_ts = -1
        self.wrong_ssrc = 0
        self.wrong_source = 0
        self.malformed = 0
        self.refused_connections = 0
        self.foreign_ssrc = -1
        self.foreign_count = 0
        self.ssrc_latched = False
        self.connect_task: asyncio.Task[tuple[RelayFailure, str] | None] | None = None
        # on a shared port: that port, and ``source`` as the kernel writes a sender (valid while
        # ``source_name_of`` is ``source``), compared with each packet's sender on the fast path
        self.shared: SharedPort | None = None
        self.source_name = b""
        self.source_name_of: Any = None


class Forwarder:
    """Streams of one relay worker.

    Args:
        settings: bind address, TCP queue bound, receive buffer size.
        on_event: called with each stream event (a :class:`~.records.RelayEvent`).
        worker: the relay's index, for its snapshots (0 for the in-process relay).
        batch: this :class:`~.mmsg.Batch` for UDP media (tests), or none (``False``); by default
            as ``settings.batch`` says.
    """

    def __init__(
        self,
        settings: RelaySettings,
        *,
        on_event: Callable[[RelayEvent], None] | None = None,
        worker: int = 0,
        batch: mmsg.Batch | bool | None = None,
    ) -> None:
        self.settings = settings
        self.host = settings.host
        self.on_event: Callable[[RelayEvent], None] = on_event or (lambda event: None)
        self.tcp_queue_limit = settings.tcp_queue_limit
        self.udp_receive_buffer = settings.udp_receive_buffer
        self.gop_limit = settings.gop_cache
        self.gop_budget = settings.gop_cache_total or 1 << 62
        self.gop_held = 0  # bytes kept by all streams, brought up to date once a frame (exact after evictions)
        self.gop_evictions = 0
        self._scratch = bytearray(2 + MAX_FRAME)  # kept packets are copied here to be sent
        self._scratch_view = memoryview(self._scratch)
        self.worker = worker
        self.pid = os.getpid()
        self.streams: dict[str, RelayStream] = {}
        # figures of streams and consumers that are gone, so the totals never go backwards
        self._gone: dict[str, int] = dict.fromkeys(RelayTotals.__slots__, 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        if batch is None:
            batch = settings.batch
        if batch is True:
            libc = mmsg.load()
            batch = mmsg.Batch(libc) if libc is not None else False
        self._batch: mmsg.Batch | None = batch if isinstance(batch, mmsg.Batch) else None
        self._shared: dict[int, SharedPort] = {}  # shared ports by number (media.shared_port)
        self._queue = SendQueue(self._batch) if self._batch is not None else None
        self._shared_gone = [0, 0]  # unknown, ambiguous packets of shared ports closed

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # --- commands ----------------------------------------------------------------------

    def open(
        self, stream_id: str, port: int, mode: StreamMode, ssrc: int, *, source: str | None = None, shared: bool = False
    ) -> None:
        """Bind ``port`` for a new stream: UDP always (to receive, or to send to UDP consumers), and a TCP
        listener for TCP passive — before the INVITE goes out, since devices may connect at once (§7.5).

        ``source`` is the only host media and TCP connections are taken from (``None``: the first sender).
        ``shared`` (a UDP stream): ``port`` is the forwarder's shared port (bound with its first stream),
        where the stream's packets are told from others' by SSRC and sender (:mod:`.demux`).

        Raises:
            RelayError: the stream exists, or the port cannot be bound (the message names it).
        """
        if stream_id in self.streams:
            raise RelayError(RelayFailure.EXISTS, f"stream {stream_id} is already open")
        loop = self.loop
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        st = RelayStream(stream_id, port, mode, ssrc, loop.time(), self._as_peer_host(source))
        if shared and mode is StreamMode.UDP:
            sp = self._shared.get(port) or self._bind_shared(port, family)
            st.udp, st.shared = sp.sock, sp
            sp.demux.add(st)
            self.streams[stream_id] = st
            return
        try:
            udp = socket.socket(family, socket.SOCK_DGRAM)
            st.udp = udp
            udp.setblocking(False)
            try:
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.udp_receive_buffer)
            except OSError:  # pragma: no cover - capped by the kernel, not fatal
                pass
            udp.bind((self.host, port))
            if mode is StreamMode.TCP_PASSIVE:
                listener = socket.socket(family, socket.SOCK_STREAM)
                st.listener = listener
                # SO_REUSEADDR: the port's last stream may have left connections in TIME_WAIT, which
                # would refuse the bind for minutes; on TCP it never lets two listeners share a port.
                # The UDP socket above has none: there it would let another socket share the port.
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.setblocking(False)
                listener.bind((self.host, port))
                listener.listen(4)
        except OSError as exc:
            self._close_sockets(st)
            raise RelayError(RelayFailure.PORT_TAKEN, f"cannot bind media port {port}: {exc.strerror or exc}") from None
        if mode is not StreamMode.TCP_ACTIVE:
            # TCP passive too: some devices answer a TCP offer with RTP/AVP and send UDP (M4);
            # whichever arrives first is the stream
            loop.add_reader(udp.fileno(), self._on_udp if self._batch is None else self._on_udp_batched, st)
        else:
            loop.add_reader(udp.fileno(), self._drain_udp, st)  # sockets must not fill up unread
        if st.listener is not None:
            loop.add_reader(st.listener.fileno(), self._on_accept, st)
        self.streams[stream_id] = st

    def expect(self, stream_id: str, ssrc: int, *, source: str | None = None) -> None:
        """The SSRC to expect from now on (the device's answer may carry its own) and, unless
        ``source`` is ``None``, the only host to take media from (the one its answer names)."""
        st = self._stream(stream_id)
        st.ssrc = ssrc
        host = self._as_peer_host(source)
        if host is not None and host != st.source_host:
            st.source_host = host
            if st.conn is None and st.source is not None and st.source[0] != host:
                st.source = None  # latched on the SIP host's packets; the answer names another
        if st.shared is not None:
            st.shared.demux.update(st)

    def _bind_shared(self, port: int, family: int) -> SharedPort:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # every stream's packets wait here: room for many streams' bursts. SO_RCVBUFFORCE passes
            # net.core.rmem_max where the process may (CAP_NET_ADMIN); else SO_RCVBUF, capped by it
            for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
                try:
                    if option is not None:
                        sock.setsockopt(socket.SOL_SOCKET, option, SHARED_BUFFERS * self.udp_receive_buffer)
                        break
                except OSError:
                    continue
            sock.bind((self.host, port))
        except OSError as exc:
            sock.close()
            raise RelayError(
                RelayFailure.PORT_TAKEN, f"cannot bind the shared media port {port}: {exc.strerror or exc}"
            ) from None
        sp = SharedPort(port, sock)
        self.loop.add_reader(sock.fileno(), self._on_shared if self._batch is not None else self._on_shared_plain, sp)
        self._shared[port] = sp
        return sp

    def _as_peer_host(self, host: str | None) -> str | None:
        # an IPv6 socket reports IPv4 senders as IPv4-mapped addresses: compare like with like
        if host is not None and ":" in self.host:
            return _mapped_host(host)
        return host

    async def connect(self, stream_id: str, host: str, port: int, *, attempts: int, interval: float) -> None:
        """TCP active: connect to the device's media port, retrying (2022 Annex D: ≥ 3 times, ≥ 1 s apart).

        Raises:
            RelayError: every attempt failed (the message has the last reason), or the stream closed meanwhile.
        """
        st = self._stream(stream_id)
        task = self.loop.create_task(self._connect(st, host, port, attempts, interval))
        st.connect_task = task
        try:
            error = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            raise RelayError(RelayFailure.CLOSED, f"stream {stream_id} closed while connecting to the device") from None
        finally:
            st.connect_task = None
        if error:
            raise RelayError(*error)

    def add_consumer(self, stream_id: str, consumer_id: str, transport: str, host: str, port: int, ssrc: int) -> None:
        """Start sending the stream to a UDP consumer (at once). TCP consumers: :meth:`add_tcp_consumer`."""
        st = self._stream(stream_id)
        if transport != "udp":
            raise RelayError(
                RelayFailure.BAD_COMMAND, "add_consumer() is for UDP consumers; TCP ones need add_tcp_consumer()"
            )
        self._remove(st, consumer_id)
        assert st.udp is not None
        if st.shared is not None:
            self._join(st, SharedUdpOut(consumer_id, ssrc, (host, port), st.udp, self._queue))
        else:
            self._join(st, UdpOut(consumer_id, ssrc, (host, port), st.udp))

    async def add_tcp_consumer(
        self, stream_id: str, consumer_id: str, host: str, port: int, ssrc: int, *, timeout: float = 5.0
    ) -> None:
        """Connect to a consumer listening on TCP and start sending it the stream (RFC 4571).

        Raises:
            RelayError: the connection could not be made (the message says why).
        """
        st = self._stream(stream_id)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(self.loop.sock_connect(sock, (host, port)), timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            raise RelayError(
                RelayFailure.CONSUMER_UNREACHABLE,
                f"cannot connect to consumer {host}:{port}: {getattr(exc, 'strerror', None) or exc}",
            ) from None
        if self.streams.get(stream_id) is not st:
            sock.close()
            raise RelayError(RelayFailure.CLOSED, f"stream {stream_id} closed while connecting to its consumer")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._remove(st, consumer_id)
        self._join(
            st, TcpOut(consumer_id, ssrc, (host, port), sock, self.loop, self.tcp_queue_limit, self._consumer_lost(st))
        )

    def add_passive_consumer(
        self,
        stream_id: str,
        consumer_id: str,
        host: str,
        port: int,
        ssrc: int,
        *,
        timeout: float,
        started: bool,
        also_from: tuple[str, ...] = (),
    ) -> None:
        """Listen on ``port`` for one TCP connection from ``host`` (or one of ``also_from``) and send the
        stream over it (RFC 4571); paused (``started`` false) until :meth:`start_consumer`. No connection
        within ``timeout`` seconds: the consumer is dropped (:class:`~.records.ConsumerLost`).

        Raises:
            RelayError: no such stream, or the port cannot be bound (:attr:`RelayFailure.PORT_TAKEN`).
        """
        st = self._stream(stream_id)
        self._remove(st, consumer_id)
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of the port's last use
            listener.setblocking(False)
            listener.bind((self.host, port))
            listener.listen(4)
        except OSError as exc:
            listener.close()
            raise RelayError(
                RelayFailure.PORT_TAKEN, f"cannot listen on media port {port}: {exc.strerror or exc}"
            ) from None
        hosts = frozenset(self._as_peer_host(h) or h for h in (host, *also_from))
        w = Waiting(consumer_id, hosts, ssrc, listener, started)
        loop = self.loop
        loop.add_reader(listener.fileno(), self._on_consumer_accept, st, w)
        w.timer = loop.call_later(timeout, self._never_connected, st, w, timeout)
        st.waiting[consumer_id] = w

    def start_consumer(self, stream_id: str, consumer_id: str) -> None:
        """Start sending to a paused TCP-passive consumer (at once if it is connected, else once it is).

        Raises:
            RelayError: no such stream or waiting consumer (:attr:`RelayFailure.NO_STREAM`).
        """
        st = self._stream(stream_id)
        w = st.waiting.get(consumer_id)
        if w is None:
            if any(c.id == consumer_id for c in st.consumers):
                return  # started already
            raise RelayError(RelayFailure.NO_STREAM, f"no consumer {consumer_id} of stream {stream_id}")
        w.started = True
        if w.out is not None:
            del st.waiting[consumer_id]
            self._join(st, w.out)

    def remove_consumer(self, stream_id: str, consumer_id: str) -> None:
        """Stop sending to a consumer (no error if it is already gone)."""
        st = self.streams.get(stream_id)
        if st is not None:
            self._remove(st, consumer_id)

    def close(self, stream_id: str) -> None:
        """Close a stream and every socket it holds (no error if it is already closed)."""
        st = self.streams.pop(stream_id, None)
        if st is None:
            return
        if st.connect_task is not None:
            st.connect_task.cancel()
        for c in st.consumers:
            c.close()
        self._count_consumers(st.consumers)
        st.consumers = []
        for w in st.waiting.values():
            w.close(self._loop)
        st.waiting.clear()
        self._drop_gop(st)
        self._close_sockets(st)

    def close_all(self) -> None:
        """Close every stream, and the shared ports."""
        for stream_id in list(self.streams):
            self.close(stream_id)
        for sp in self._shared.values():
            self._shared_gone[0] += sp.demux.unknown
            self._shared_gone[1] += sp.demux.ambiguous
            fd = sp.sock.fileno()
            if fd >= 0 and self._loop is not None:
                stop_reading(self._loop, fd)
            sp.sock.close()
        self._shared.clear()

    # --- statistics --------------------------------------------------------------------

    def snapshot(self) -> RelaySnapshot:
        """Every stream's figures and the relay's running totals."""
        now = self.loop.time()
        streams = {}
        for st in self.streams.values():
            s, ps = st.stats, st.inspector.stats
            streams[st.id] = StreamFigures(
                port=st.port,
                mode=st.mode,
                ssrc=st.ssrc,
                ssrc_latched=st.ssrc_latched,
                source=st.source,
                connected=st.conn is not None if st.mode is not StreamMode.UDP else None,
                packets=s.packets,
                bytes=s.bytes,
                bitrate=s.bitrate if now - s.last_packet_at < 2.0 else 0.0,
                lost=s.lost,
                reordered=s.reordered,
                duplicates=s.duplicates,
                idle=round(now - (s.last_packet_at if s.packets else st.created), 3),
                age=round(now - st.created, 3),
                wrong_ssrc=st.wrong_ssrc,
                wrong_source=st.wrong_source,
                malformed=st.malformed,
                refused_connections=st.refused_connections,
                tcp_resyncs=st.scanner.resyncs,
                ps=PsFigures(
                    video_codec=ps.video_codec,
                    audio_codec=ps.audio_codec,
                    frames=ps.frames,
                    key_frames=ps.key_frames,
                    key_frame_interval=ps.key_frame_interval,
                    errors=ps.errors,
                ),
                timestamp=st.last_ts,
                first_timestamp=st.first_ts,
                jumps=st.jumps,
                jump_timestamp=st.jump_ts,
                consumers={
                    c.id: ConsumerFigures(c.transport, c.addr, c.ssrc, c.packets, c.bytes, c.dropped, c.errors)
                    for c in st.consumers
                },
            )
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return RelaySnapshot(
            streams, self.totals(), worker=self.worker, pid=self.pid, cpu_seconds=usage.ru_utime + usage.ru_stime
        )

    def totals(self) -> RelayTotals:
        """Running totals over every stream and consumer, closed ones included (counters never go back)."""
        t = dict(self._gone)
        t["gop_evictions"] += self.gop_evictions
        t["unknown_source"] += self._shared_gone[0] + sum(sp.demux.unknown for sp in self._shared.values())
        t["ambiguous_source"] += self._shared_gone[1] + sum(sp.demux.ambiguous for sp in self._shared.values())
        for st in self.streams.values():
            _add_stream(t, st)
            for c in st.consumers:
                _add_consumer(t, c)
        return RelayTotals(**t)

    # --- the hot path ------------------------------------------------------------------

    def _on_udp(self, st: RelayStream) -> None:
        recv = st.udp.recvfrom_into  # type: ignore[union-attr]
        target = st.view[2:]
        buf, view = st.buf, st.view
        now = self.loop.time()
        relay = self._relay
        for _ in range(BATCH):
            try:
                n, addr = recv(target)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error for something we sent earlier
            relay(st, buf, view, 2, n, addr, now)

    def _on_udp_batched(self, st: RelayStream) -> None:
        # _on_udp with recvmmsg. A paced stream brings one or two packets a wake-up, and for one
        # packet recvfrom_into costs less than recvmmsg through ctypes: its first packet is read so,
        # the rest in batches of up to VLEN until one comes back short (no read but the first raises
        # to end a wake-up; the loop wakes us again if more came meanwhile). A stream whose last
        # wake-up brought BURST packets or more (blasting) is read with recvmmsg from its first
        # packet on: the first read alone would cost two more system calls (its sendto) a wake-up.
        udp, batch = st.udp, self._batch
        assert udp is not None and batch is not None
        got = 0
        if not st.bursting:
            try:
                n, addr = udp.recvfrom_into(st.view[2:])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n = -1  # an ICMP error for something we sent earlier
            now = self.loop.time()
            if n >= 0:
                self._relay(st, st.buf, st.view, 2, n, addr, now)
                got = 1
        else:
            now = self.loop.time()
        fd, vlen = udp.fileno(), batch.vlen
        for _ in range(BATCH // vlen):
            if st.udp is None:
                return  # the stream closed meanwhile (a handler of an event, in-process)
            try:
                k = batch.receive(fd)
            except OSError:
                continue
            got += k
            if k:
                self._relay_batch(st, batch, k, now)
            if k < vlen:
                break
        st.bursting = got >= BURST

    def _relay_batch(self, st: RelayStream, b: mmsg.Batch, k: int, now: float) -> None:
        # A fast path beside _relay, for speed (issue 16). A packet from the latched source, with
        # the expected SSRC, next in sequence, is relayed here as _relay would (frame starts and
        # key frames looked into by the same _frame and _probe, kept for joiners the same way), but
        # counted with the others of its run in one step (StreamStats.in_order) and, to a stream's
        # one UDP consumer, sent with one sendmmsg for the batch, its SSRC rewritten in place. Any
        # other packet goes through _relay itself, after what the batch counted and queued so far
        # is settled, so that it sees the same state and its sends keep their order; then what the
        # fast path holds is read again. Both paths give the same output (tests/shell/test_relay_batch.py).
        buf, view, stride, slot = b.buf, b.view, b.stride, b.slot
        at_len, capacity, head = mmsg.LEN_AT, b.capacity, _head
        stats, gop_limit = st.stats, self.gop_limit
        # the batch's lengths, read at once (a list: compiled, indexing it allocates nothing)
        lens: list[int] = b.lengths[at_len : at_len + stride * k : stride].tolist()
        run = run_bytes = 0  # packets of the fast path not yet counted (and, with ``out``, not yet sent)
        i = 0
        _source_names(st, b)
        while i < k:
            # what the fast path holds: read once a batch, and again after each general packet
            fast = (
                st.source is not None
                and st.source_names_of is st.source
                and stats.highest_seq >= 0
                # every sender from i on is the source: one comparison of the names, as a view (no
                # copy) against the source repeated (its prefix of any length of whole names)
                and st.source_names.startswith(b.names_view[NAME * i : NAME * k])
            )
            # one sendmmsg for the batch to a stream's one UDP consumer; a packet alone goes with
            # sendto (UdpOut.send), a cheaper call from Python than sendmmsg through ctypes
            consumers = st.consumers
            out = consumers[0] if len(consumers) == 1 and type(consumers[0]) is UdpOut and k - i > 1 else None
            if out is not None and out.dest is None:
                out = None
            want, expect = st.ssrc, (stats.highest_seq + 1) & 0xFFFF
            last_ts, ts_open, probe, gop, spare = st.last_ts, st.ts_open, st.probe, st.gop, st.spare
            first = i  # the run's first slot: send header j carries slot first + j
            while fast and i < k:
                off, n = i * slot + 2, lens[i]
                if n < 12 or n >= capacity:
                    break
                b0, _, seq, ts, ssrc = head(buf, off)
                if b0 >> 6 != 2 or ssrc != want or seq != expect:
                    break
                expect = (seq + 1) & 0xFFFF
                if ts != last_ts or (ts_open and (b0 & 0x10 or buf[off + 15 + 4 * (b0 & 0x0F)] == 0xBA)):
                    self._frame(st, buf, view, b0, off, n, ts)
                    last_ts, ts_open, probe, gop, spare = st.last_ts, st.ts_open, st.probe, st.gop, st.spare
                elif probe is not None:
                    self._probe(st, view, _payload(buf, b0, off, n), off + n)
                    last_ts, ts_open, probe, gop, spare = st.last_ts, st.ts_open, st.probe, st.gop, st.spare
                if gop is not None:  # as in _relay: copied before the SSRC is written
                    st.gop_bytes += n
                    if st.gop_bytes > gop_limit or len(gop) >= GOP_CACHE_PACKETS:
                        st.gop = gop = None
                    else:
                        gop.append(bytes(view[off : off + n]))
                elif spare is not None:
                    spare.append(bytes(view[off : off + n]))
                if out is None:
                    # the stream's consumers now, as _relay reads them: a TCP consumer's failed send
                    # removes it at once, and a handler of its event (in-process) may change others
                    for c in st.consumers:
                        c.send(buf, view, off, n)
                # else: queued for one sendmmsg when the run is settled (_queue_run)
                run += 1
                run_bytes += n
                i += 1
            if run:  # packet i takes the general path: settle the batch so far first
                stats.in_order(run, run_bytes, now)
                if out is not None:
                    _queue_run(b, first, run, out)
                    self._send_queued(b, st, out, run, run_bytes)
                run = run_bytes = 0
            if i == k:
                return
            off, n = i * slot + 2, lens[i]
            if n >= capacity and b.truncated(i):
                st.malformed += 1  # longer than a slot (only with slots made small): not relayed cut short
            else:
                addr = b.sender(i)
                self._relay(st, buf, view, off, n, addr, now)
                if st.udp is None:
                    return  # closed by a handler of the packet's event (in-process)
                _source_names(st, b)  # latched on this packet, maybe
            i += 1

    def _on_shared(self, sp: SharedPort) -> None:
        # The shared port (media.shared_port, issue 16): recvmmsg takes the packets of many streams
        # in one call, where a port per stream wakes the loop for each paced stream's one or two.
        batch, queue = self._batch, self._queue
        assert batch is not None and queue is not None
        fd, vlen = sp.sock.fileno(), batch.vlen
        now = self.loop.time()
        for _ in range(BATCH // vlen):
            try:
                k = batch.receive(fd)
            except OSError:
                continue  # an ICMP error for something we sent earlier
            if not k:
                return
            queue.fd = fd
            try:
                self._demux_batch(sp, batch, k, now)
            finally:
                queue.flush()
            if k < vlen or sp.sock.fileno() < 0:
                return

    def _demux_batch(self, sp: SharedPort, b: mmsg.Batch, k: int, now: float) -> None:
        # A fast path beside _relay, for speed (issue 16), as _relay_batch is for a port of one's own:
        # a packet whose SSRC is one latched stream's, from that stream's source (the raw address
        # compared as bytes), next in sequence, is counted, looked into (frame starts, by the same
        # _frame and _probe) and kept for joiners as _relay would, and queued for its stream's one
        # UDP consumer (SendQueue: one sendmmsg for the batch, the SSRC rewritten in place). Any other
        # packet of a known stream goes through _relay itself; one of no stream known is resolved by
        # the demultiplexer (its rules: demux.py) and, when that names a stream, relayed by _relay,
        # after which what the stream latched is indexed. Both give the per-stream port's output
        # (tests/shell/test_relay_shared.py). The caller flushes the queue.
        buf, view, names, lengths, stride, slot = b.buf, b.view, b.names, b.lengths, b.stride, b.slot
        at_len, capacity, head, relay = mmsg.LEN_AT, b.capacity, _head, self._relay
        queue = self._queue
        assert queue is not None
        iov, h64, h32, hdr64, hdr32, name_at, namelen_at = (
            b.send_iov,
            b.h64,
            b.h32,
            b.hdr64,
            b.hdr32,
            b.name_at,
            b.namelen_at,
        )
        base, vlen, pack_ssrc = b.slot_at - 2, b.vlen, _SSRC.pack_into
        demux = sp.demux
        fast = demux.fast
        lens: list[int] = lengths[at_len : at_len + stride * k : stride].tolist()  # as in _relay_batch
        for i in range(k):
            off, n = i * slot + 2, lens[i]
            if n < 12 or (n >= capacity and b.truncated(i)):
                demux.unknown += 1  # no RTP header, or cut short: no stream to count it on
                continue
            b0, _, seq, ts, ssrc = head(buf, off)
            st = fast.get(ssrc)
            if st is None or names[NAME * i : NAME * i + NAME] != st.source_name:
                addr = b.sender(i)
                found = demux.resolve(ssrc, addr, now)
                if found is not None:
                    relay(found, buf, view, off, n, addr, now)
                    self._learned(found)
                continue
            stats = st.stats
            if b0 >> 6 != 2 or seq != (stats.highest_seq + 1) & 0xFFFF or stats.highest_seq < 0:
                relay(st, buf, view, off, n, st.source, now)
                continue
            stats.in_order(1, n, now)
            if ts != st.last_ts or (st.ts_open and (b0 & 0x10 or buf[off + 15 + 4 * (b0 & 0x0F)] == 0xBA)):
                self._frame(st, buf, view, b0, off, n, ts)
            elif st.probe is not None:
                self._probe(st, view, _payload(buf, b0, off, n), off + n)
            if st.gop is not None or st.spare is not None:
                self._keep(st, view, off, n)
            consumers = st.consumers
            out = consumers[0] if len(consumers) == 1 else None
            if type(out) is SharedUdpOut and out.queue is queue and queue.count < vlen:
                # SendQueue.add written out (a stream's one consumer: its slot is queued once)
                j = queue.count
                pack_ssrc(buf, off + 8, out.ssrc)
                if j != i:  # header j carries another slot than its own (restored after the send)
                    iov[2 * j] = base + off
                    b.moved = True
                iov[2 * j + 1] = n
                hdr64[j * h64 + name_at] = out.dest_at
                hdr32[j * h32 + namelen_at] = out.destlen
                queue.outs.append(out)
                queue.count = j + 1
                queue.last_off, queue.last_ssrc = off, out.ssrc
                out.packets += 1
                out.bytes += n
            else:
                for c in consumers:
                    c.send(buf, view, off, n)
        if queue.count:
            b.forget_dest()

    def _keep(self, st: RelayStream, view: memoryview, off: int, n: int) -> None:
        # _relay's copy of a packet for joining consumers (or for the frame being looked into)
        gop = st.gop
        if gop is not None:
            st.gop_bytes += n
            if st.gop_bytes > self.gop_limit or len(gop) >= GOP_CACHE_PACKETS:
                st.gop = None
            else:
                gop.append(bytes(view[off : off + n]))
        elif st.spare is not None:
            st.spare.append(bytes(view[off : off + n]))

    def _on_shared_plain(self, sp: SharedPort) -> None:
        # _on_shared where libc lacks recvmmsg: one packet a call, the same demultiplexing
        recv, demux, buf, view = sp.sock.recvfrom_into, sp.demux, sp.buf, sp.view
        target = view[2:]
        now = self.loop.time()
        for _ in range(BATCH):
            try:
                n, addr = recv(target)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            if n < 12:
                demux.unknown += 1
                continue
            ssrc = _SSRC.unpack_from(buf, 10)[0]
            st = demux.fast.get(ssrc)
            if st is None or addr != st.source:
                st = demux.resolve(ssrc, addr, now)
                if st is None:
                    continue
            self._relay(st, buf, view, 2, n, addr, now)
            self._learned(st)
            if sp.sock.fileno() < 0:
                return

    def _learned(self, st: RelayStream) -> None:
        # what a packet taken the slow way may have changed (a latched source, a followed SSRC)
        sp = st.shared
        if sp is None or st.udp is None:
            return  # closed meanwhile
        src = st.source
        if src is not None and st.source_name_of is not src:
            raw = mmsg.sockaddr(sp.sock.family, src)
            st.source_name = raw.ljust(NAME, b"\0") if raw is not None else b""
            st.source_name_of = src
        sp.demux.update(st)

    def _send_queued(self, b: mmsg.Batch, st: RelayStream, out: UdpOut, count: int, nbytes: int) -> None:
        assert st.udp is not None
        sent, nbytes, dropped, errors = b.send(st.udp.fileno(), count, out.dest, out.destlen, nbytes)
        out.packets += sent
        out.bytes += nbytes
        out.dropped += dropped
        out.errors += errors

    def _relay(
        self, st: RelayStream, buf: bytearray, view: memoryview, off: int, n: int, addr: Any, now: float
    ) -> None:
        if n < 12 or buf[off] >> 6 != 2:
            st.malformed += 1
            return
        b0, _, seq, ts, ssrc = _head(buf, off)
        # the source before the SSRC, so that a stranger can neither win the stream nor make it
        # follow its SSRC; once latched, one tuple comparison per packet
        if addr is not None:
            source = st.source
            if addr != source:
                if source is not None or (st.source_host is not None and addr[0] != st.source_host):
                    st.wrong_source += 1
                    return
                if ssrc != st.ssrc and not self._foreign(st, ssrc):
                    return
                st.source = addr  # the device's first good packet: its (host, port) from now on
            elif ssrc != st.ssrc and not self._foreign(st, ssrc):
                return
        elif ssrc != st.ssrc and not self._foreign(st, ssrc):
            return  # TCP: the connection was accepted from the device's host only
        stats = st.stats
        stats.packet(seq, n, now)
        # A frame starts at a new timestamp or at a PS pack (audio first, key frames that keep the
        # timestamp of the frame before): other packets cost one byte compared (without a header
        # extension: with one, _frame finds where the payload starts), while the timestamp's
        # frame is not yet known for a key frame; or the next step of one not yet told.
        if ts != st.last_ts or (st.ts_open and (b0 & 0x10 or buf[off + 15 + 4 * (b0 & 0x0F)] == 0xBA)):
            self._frame(st, buf, view, b0, off, n, ts)
        elif st.probe is not None:
            self._probe(st, view, _payload(buf, b0, off, n), off + n)  # (once a frame or so)
        gop = st.gop
        if gop is not None:
            # copied before the consumers' SSRCs are written into the buffer
            st.gop_bytes += n
            if st.gop_bytes > self.gop_limit or len(gop) >= GOP_CACHE_PACKETS:
                st.gop = None  # no key frame for too long: keep nothing until the next one
            else:
                gop.append(bytes(view[off : off + n]))
        elif st.spare is not None:
            st.spare.append(bytes(view[off : off + n]))  # a frame being looked into while nothing is kept
        if stats.packets == 1:
            st.first_at, st.first_ts = now, ts
            self.on_event(FirstPacket(st.id, ssrc))
        for c in st.consumers:
            c.send(buf, view, off, n)

    def _frame(self, st: RelayStream, buf: bytearray, view: memoryview, b0: int, off: int, n: int, ts: int) -> None:
        # A frame may start in this packet: note where among the kept packets, and tell whether it
        # is a key frame, from this packet or (PSM alone, pack header cut short …) the next few.
        # Once a frame, so written out rather than split into calls.
        start, end = off + 12 + 4 * (b0 & 0x0F), off + n
        if b0 & 0x10 and start + 4 <= end:
            start += 4 + 4 * ((buf[start + 2] << 8) | buf[start + 3])
        new = ts != st.last_ts
        if not new and not (start + 4 <= end and buf.startswith(_PACK_START, start)):
            if st.probe is not None:  # not a pack after all: the next step of the frame being told
                self._probe(st, view, start, end)
            return
        if st.probe is not None:  # the frame before is all seen: told with what it showed
            self._probe_done(st, st.inspector.frame_start(st.probe, 0, len(st.probe)))
            if not new and not st.ts_open:
                return  # it was a key frame: this pack is a piece of it
        gop = st.gop
        if new:
            if st.last_ts >= 0 and (ts - st.last_ts) & 0xFFFFFFFF > JUMP_TICKS:
                st.jumps, st.jump_ts = st.jumps + 1, ts
            st.last_ts, st.ts_packs = ts, 0
            # the relay's total of kept bytes, brought up to date once a frame (not a packet)
            kept = st.gop_bytes if gop is not None else 0
            if kept != st.gop_counted:
                held = self.gop_held = self.gop_held + kept - st.gop_counted
                st.gop_counted = kept
                if held > self.gop_budget:
                    self._evict(st)  # each stream overshoots by a frame at most
                    gop = st.gop
        st.ts_packs += 1
        st.ts_open = st.ts_packs < PACKS_PER_TIMESTAMP  # more are pieces of a frame cut into packs
        if gop is not None:
            st.frame_at, st.frame_bytes = len(gop), st.gop_bytes
        elif self.gop_limit:
            st.spare = []
        inspector = st.inspector
        key = inspector.inspect(buf, start, end)
        if key is None:
            st.probe, st.probe_left = bytearray(view[start : min(end, start + PROBE_BYTES)]), PROBE_PACKETS - 1
        elif key:
            self._probe_done(st, key)
        else:
            st.spare = None
            if not inspector.units:
                st.ts_open = False  # no PS unit in this pack (or no pack): nothing here to follow

    def _probe(self, st: RelayStream, view: memoryview, start: int, end: int) -> None:
        # the next packet of a frame not told yet: look at its bytes so far
        probe = st.probe
        assert probe is not None
        probe += view[start : max(start, min(end, start + PROBE_BYTES - len(probe)))]
        st.probe_left -= 1
        if st.probe_left and len(probe) < PROBE_BYTES:
            key = st.inspector.inspect(probe, 0, len(probe))
            if key is None:
                return
        else:
            key = st.inspector.frame_start(probe, 0, len(probe))  # what was seen is all there will be
        self._probe_done(st, key)

    def _probe_done(self, st: RelayStream, key: bool) -> None:
        st.probe = None
        spare, st.spare = st.spare, None
        if not key:
            return
        st.ts_open = False  # this timestamp's other packs are pieces of its key frame
        if not self.gop_limit:
            return
        # a key frame: what a joining consumer needs starts where it started
        gop = st.gop
        if gop is not None:
            del gop[: st.frame_at]
            st.gop_bytes -= st.frame_bytes
        elif spare is not None:
            st.gop, st.gop_bytes = spare, sum(map(len, spare))
        # else: the packets kept were let go after the frame started; its start is lost with them

    def _drop_gop(self, st: RelayStream) -> None:
        self.gop_held -= st.gop_counted
        st.gop, st.gop_bytes, st.gop_counted, st.spare = None, 0, 0, None

    def _evict(self, st: RelayStream) -> None:
        # their streams' next joiners wait for a key frame, asked of the device
        held = {s: s.gop_bytes if s.gop is not None else 0 for s in (*self.streams.values(), st)}
        for s, kept in held.items():
            s.gop_counted = kept
        total = sum(held.values())
        while total > self.gop_budget:
            victim = max(held, key=held.__getitem__)
            total -= held.pop(victim)
            victim.gop, victim.gop_bytes, victim.gop_counted = None, 0, 0
            victim.gop_evictions += 1
            self.gop_evictions += 1
            log.info(
                "packets kept for joining consumers let go: over media.gop_cache_total", extra={"stream": victim.id}
            )
        self.gop_held = total

    def _foreign(self, st: RelayStream, ssrc: int) -> bool:
        # A device that sends one SSRC of its own and never the negotiated one is followed
        # (M1); once a stream has carried good packets, strangers are dropped.
        if st.stats.packets == 0 and not st.ssrc_latched:
            if ssrc == st.foreign_ssrc:
                st.foreign_count += 1
                if st.foreign_count >= SSRC_LATCH_PACKETS:
                    log.warning(
                        "device sends another SSRC than negotiated: following it",
                        extra={"stream": st.id, "expected": st.ssrc, "actual": ssrc},
                    )
                    st.ssrc = ssrc
                    st.ssrc_latched = True
                    st.wrong_ssrc -= SSRC_LATCH_PACKETS - 1  # the counted ones were the device's stream after all
                    return True
            else:
                st.foreign_ssrc, st.foreign_count = ssrc, 1
        st.wrong_ssrc += 1
        return False

    def _drain_udp(self, st: RelayStream) -> None:
        # TCP streams keep their UDP port only to send from; whatever arrives there is not theirs
        for _ in range(BATCH):
            try:
                st.udp.recv_into(st.view[2:])  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            st.wrong_source += 1

    def _on_tcp(self, st: RelayStream) -> None:
        conn = st.conn
        if conn is None:
            return
        buf, view = st.buf, st.view
        try:
            n = conn.recv_into(view[st.fill :])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._media_lost(st, f"media connection error: {exc.strerror or exc}")
            return
        if n == 0:
            self._media_lost(st, "the device closed the media connection")
            return
        end = st.fill + n
        spans = st.spans
        pos = st.scanner.scan(buf, 2, end, spans)
        if spans:
            now = self.loop.time()
            relay = self._relay
            for start, length in spans:
                relay(st, buf, view, start, length, None, now)
            spans.clear()
        rest = end - pos
        if rest and pos > 2:
            buf[2 : 2 + rest] = view[pos:end]  # the unfinished frame moves to the front (once per read)
        st.fill = 2 + rest
        if st.fill >= len(buf) - 1024:  # pragma: no cover - the scanner bounds frames below this
            st.fill = 2

    def _on_accept(self, st: RelayStream) -> None:
        listener = st.listener
        if listener is None:
            return
        try:
            conn, addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if st.conn is not None or st.source is not None or (st.source_host is not None and addr[0] != st.source_host):
            # one media connection per session (§8.6), none once the device sends UDP, none from strangers
            st.refused_connections += 1
            conn.close()
            return
        # (host, port): over IPv6 accept gives four items, which compiled code refuses as a tuple[str, int]
        self._attach(st, conn, (addr[0], addr[1]))

    def _attach(self, st: RelayStream, conn: socket.socket, addr: tuple[str, int]) -> None:
        conn.setblocking(False)
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.udp_receive_buffer)
        except OSError:  # pragma: no cover
            pass
        st.conn = conn
        st.peer = (addr[0], addr[1])
        st.source = st.peer
        if st.udp is not None:
            stop_reading(self.loop, st.udp.fileno())
            self.loop.add_reader(st.udp.fileno(), self._drain_udp, st)
        self.loop.add_reader(conn.fileno(), self._on_tcp, st)
        self.on_event(MediaConnected(st.id, st.peer))

    async def _connect(
        self, st: RelayStream, host: str, port: int, attempts: int, interval: float
    ) -> tuple[RelayFailure, str] | None:
        last = ""
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(interval)
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(self.loop.sock_connect(sock, (host, port)), max(interval, 1.0) * 3)
            except (OSError, TimeoutError) as exc:
                sock.close()
                last = getattr(exc, "strerror", None) or str(exc) or "timed out"
                continue
            except asyncio.CancelledError:
                sock.close()
                raise
            if self.streams.get(st.id) is not st:
                sock.close()
                return RelayFailure.CLOSED, f"stream {st.id} closed while connecting"
            self._attach(st, sock, (host, port))
            return None
        return (
            RelayFailure.DEVICE_UNREACHABLE,
            f"cannot connect to the device's media port {host}:{port} ({attempts} attempts): {last}",
        )

    def _media_lost(self, st: RelayStream, reason: str) -> None:
        conn = st.conn
        if conn is not None:
            stop_reading(self.loop, conn.fileno())
            conn.close()
            st.conn = None
        self._closed_event(st, reason)

    def _closed_event(self, st: RelayStream, reason: str) -> None:
        self.on_event(MediaClosed(st.id, reason))

    def _consumer_lost(self, st: RelayStream) -> Callable[[TcpOut, str], None]:
        def lost(consumer: TcpOut, reason: str) -> None:
            waiting = st.waiting.get(consumer.id)
            if consumer in st.consumers or (waiting is not None and waiting.out is consumer):
                self._remove(st, consumer.id)
                self.on_event(ConsumerLost(st.id, consumer.id, reason))

        return lost

    def _join(self, st: RelayStream, out: UdpOut | TcpOut) -> None:
        # The copy and the live packets in one step: no packet can arrive in between.
        gop = st.gop
        if not gop:
            if st.stats.packets:
                self.on_event(KeyFrameWanted(st.id))
            st.consumers.append(out)
        elif isinstance(out, TcpOut):
            # TCP paces itself: the socket takes what the consumer reads, the rest waits in its queue
            out.limit += st.gop_bytes  # the copy is bounded already; its burst must not be dropped
            for packet in gop:
                self._send_copy(out, packet)
            out.limit = out.base_limit + len(out.pending)  # room for what of it is still queued
            st.consumers.append(out)
        else:
            rate = max(CATCH_UP_FACTOR * st.stats.bitrate / 8, st.gop_bytes / CATCH_UP_SECONDS, CATCH_UP_MIN_RATE)
            catching = CatchingUp(out, deque(gop), rate, self.loop.time())
            st.consumers.append(catching)
            self._catch_up(st, catching)

    def _catch_up(self, st: RelayStream, c: CatchingUp) -> None:
        # one tick of a joining UDP consumer's backlog: what the pace allows since the last one
        # (a late tick sends at most four ticks' worth), BATCH packets at most
        c.timer = None
        if not any(x is c for x in st.consumers):
            return  # removed meanwhile
        now = self.loop.time()
        c.rate = max(c.rate, CATCH_UP_FACTOR * c.queued / max(now - c.since, CATCH_UP_SECONDS))
        c.allowance = min(c.allowance + (now - c.last) * c.rate, 4 * CATCH_UP_TICK * c.rate)
        c.last = now
        backlog, out = c.backlog, c.out
        for _ in range(BATCH):
            if not backlog or c.allowance <= 0:
                break
            packet = backlog.popleft()
            c.allowance -= len(packet)
            self._send_copy(out, packet)
        if backlog:
            c.timer = self.loop.call_later(CATCH_UP_TICK, self._catch_up, st, c)
        else:  # caught up: from the next packet on it is sent to directly, like the others
            st.consumers = [out if x is c else x for x in st.consumers]

    def _send_copy(self, out: UdpOut | TcpOut, packet: bytes) -> None:
        n = len(packet)
        self._scratch[2 : 2 + n] = packet
        out.send(self._scratch, self._scratch_view, 2, n)

    def _on_consumer_accept(self, st: RelayStream, w: Waiting) -> None:
        try:
            conn, addr = w.listener.accept()
        except OSError:  # BlockingIOError, InterruptedError, ECONNABORTED …
            return
        if addr[0] not in w.hosts:
            st.refused_connections += 1  # only the consumer we were told of may connect
            conn.close()
            return
        stop_reading(self.loop, w.listener.fileno())
        w.listener.close()  # one connection per consumer (§8.6): the port is closed to anyone else
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        w.out = TcpOut(w.id, w.ssrc, (addr[0], addr[1]), conn, self.loop, self.tcp_queue_limit, self._consumer_lost(st))
        if w.started:
            del st.waiting[w.id]
            self._join(st, w.out)

    def _never_connected(self, st: RelayStream, w: Waiting, timeout: float) -> None:
        w.timer = None
        if st.waiting.get(w.id) is w and w.out is None:
            self._remove(st, w.id)
            self.on_event(ConsumerLost(st.id, w.id, f"the consumer did not connect within {timeout:g} s"))

    # --- helpers -----------------------------------------------------------------------

    def _stream(self, stream_id: str) -> RelayStream:
        st = self.streams.get(stream_id)
        if st is None:
            raise RelayError(RelayFailure.NO_STREAM, f"no stream {stream_id}")
        return st

    def _remove(self, st: RelayStream, consumer_id: str) -> None:
        w = st.waiting.pop(consumer_id, None)
        if w is not None:
            w.close(self._loop)
            if w.out is not None:
                self._count_consumers([w.out])
        gone = [c for c in st.consumers if c.id == consumer_id]
        if gone:
            st.consumers = [c for c in st.consumers if c.id != consumer_id]
            for c in gone:
                c.close()
            self._count_consumers(gone)

    def _count_consumers(self, consumers: list[UdpOut | TcpOut | CatchingUp]) -> None:
        # a departing consumer's figures stay in the totals (counters never go backwards)
        for c in consumers:
            _add_consumer(self._gone, c)

    def _close_sockets(self, st: RelayStream) -> None:
        _add_stream(self._gone, st)  # a closed stream's figures stay in the totals
        loop = self._loop
        if st.shared is not None:
            st.shared.demux.remove(st, self.loop.time())
            st.udp = None  # the shared port's: it stays open for the other streams
        for sock in (st.udp, st.listener, st.conn):
            if sock is None:
                continue
            fd = sock.fileno()
            if fd >= 0 and loop is not None:
                stop_reading(loop, fd)
            sock.close()
        st.udp = st.listener = st.conn = None


def _source_names(st: RelayStream, b: mmsg.Batch) -> None:
    # the latched source as the kernel writes it into a batch's names, once a slot (b"" where it has
    # no such spelling: its packets take the general path)
    src = st.source
    if src is not None and st.source_names_of is not src and st.udp is not None:
        raw = mmsg.sockaddr(st.udp.family, src)
        st.source_names = raw.ljust(NAME, b"\0") * b.vlen if raw is not None else b""
        st.source_names_of = src


def _mapped(family: int, addr: tuple[str, int]) -> tuple[str, int]:
    """``addr`` as a socket of ``family`` sends to it: an IPv4 address IPv4-mapped for an IPv6 socket."""
    return (_mapped_host(addr[0]), addr[1]) if family == socket.AF_INET6 else addr


def _mapped_host(host: str) -> str:
    """``host`` as an IPv6 socket sees it: an IPv4 address IPv4-mapped, anything else as it is."""
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return host  # IPv6 already, or a name
    return f"::ffff:{host}"


def _queue_run(b: mmsg.Batch, first: int, count: int, out: UdpOut) -> None:
    # Send headers 0..count carry the run's packets, slots first..first+count, to ``out``: their
    # lengths as received and ``out``'s SSRC written in place. Each a column of the batch at once
    # (strided copies: two for the SSRC, one for the lengths), not a write a packet: for a blasting
    # stream's batch of 32, what the per-packet writes cost was a tenth of the relay's user time.
    # The SSRC as two 16-bit columns (a packet's SSRC lies on an even offset: slots are an even
    # number of bytes apart), not four of bytes: each strided copy costs about as much as the
    # header reads of three packets, and at 13 packets a batch the four took a third of its time.
    if len(out.columns) != 2 or len(out.columns[0]) < b.vlen:
        raw = out.ssrc.to_bytes(4, "big")
        out.columns = [memoryview(array.array("H", [int.from_bytes(raw[h : h + 2], sys.byteorder)]) * b.vlen)
                       for h in (0, 2)]  # fmt: skip
    halves, step = b.halves, b.slot // 2
    at = (first * b.slot + 2 + 8) // 2  # the first packet's SSRC, in 16-bit words
    halves[at : at + step * count : step] = out.columns[0][:count]
    halves[at + 1 : at + 1 + step * count : step] = out.columns[1][:count]
    stride = b.stride
    at_len = mmsg.LEN_AT + stride * first
    b.send_lengths[: 4 * count : 4] = b.lengths[at_len : at_len + stride * count : stride]
    if first:  # header j carries another slot than its own (packets before went the general path)
        b.send_iov[: 2 * count : 2] = b.addresses[first : first + count]
        b.moved = True


def _payload(buf: bytearray, b0: int, off: int, n: int) -> int:
    """Where the payload of the RTP packet ``buf[off:off+n]`` (first byte ``b0``) starts."""
    start = off + 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10 and start + 4 <= off + n:
        start += 4 + 4 * ((buf[start + 2] << 8) | buf[start + 3])
    return start


def _add_stream(t: dict[str, int], st: RelayStream) -> None:
    t["packets_in"] += st.stats.packets
    t["bytes_in"] += st.stats.bytes
    t["lost"] += st.stats.lost
    t["wrong_ssrc"] += st.wrong_ssrc
    t["wrong_source"] += st.wrong_source
    t["malformed"] += st.malformed
    t["ps_errors"] += st.inspector.stats.errors
    t["tcp_resyncs"] += st.scanner.resyncs


def _add_consumer(t: dict[str, int], c: UdpOut | TcpOut | CatchingUp) -> None:
    t["packets_out"] += c.packets
    t["bytes_out"] += c.bytes
    t["slow_consumer"] += c.dropped
    t["send_errors"] += c.errors
