"""The SIP UDP transport on real sockets: bursts, flood drops, destination addresses, send errors.

Real sockets on loopback. The tests play the event loop's wake-ups themselves (the transport's
reader is removed and called directly), so what one wake-up does is deterministic: a burst sent
before the call is waiting in the socket's queue when it reads. (Written for issue 16's trial of
``recvmmsg``/``sendmmsg`` for SIP, which measured slower than these one-datagram calls and was
left out: the same tests held both ways.)
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from gb28181gw.metrics import SipCounters
from gb28181gw.net.addresses import IP_PKTINFO
from gb28181gw.net.sip_udp import BATCH, UdpTransport
from gb28181gw.sip.flood import FloodGuard
from gb28181gw.sip.peer import Peer

#: A part of a burst: sizes beyond one wake-up's BATCH and not a multiple of it.
PART = 32


class _Sink:
    """A MessageSink that records what it is fed (with the local address the transport knows for
    the peer at that moment) and, when asked to, answers every datagram at the next pump."""

    def __init__(self, *, answer: bool = False) -> None:
        self.udp: UdpTransport | None = None
        self.fed: list[tuple[bytes, tuple[str, int], str | None]] = []
        self.pumps = 0
        self.answer = answer
        self._pending: list[tuple[bytes, Peer]] = []

    def feed(self, data: bytes, peer: Peer, now: float | None = None) -> None:
        assert self.udp is not None
        self.fed.append((data, (peer.host, peer.port), self.udp.local_host(peer)))
        if self.answer:
            self._pending.append((b"answer to " + data[:40], peer))

    def pump(self) -> None:
        assert self.udp is not None
        self.pumps += 1
        out, self._pending = self._pending, []
        for data, peer in out:
            self.udp.send(data, peer)

    def transport_failed(self, peer: Peer, reason: str) -> None:  # pragma: no cover - UDP has no connections
        pass


@contextmanager
def _transport(
    host: str, *, sink: _Sink, counters: SipCounters, flood: FloodGuard | None = None
) -> Iterator[tuple[UdpTransport, Callable[[], None]]]:
    udp = UdpTransport.bind(sink, host, 0, receive_buffer=4 << 20, counters=counters, flood=flood)
    sink.udp = udp
    asyncio.get_running_loop().remove_reader(udp._sock.fileno())  # we play the loop's wake-ups
    readable = udp._readable_learning if udp.wildcard else udp._readable
    try:
        yield udp, readable
    finally:
        udp.close()


def _wake_until_drained(readable: Callable[[], None], sink: _Sink, counters: SipCounters, sent: int) -> int:
    """Wake the reader until every one of ``sent`` datagrams was fed or dropped: how many wake-ups."""
    wake_ups = 0
    while len(sink.fed) + counters.flood_dropped["UDP"] < sent:
        before = len(sink.fed) + counters.flood_dropped["UDP"]
        readable()
        wake_ups += 1
        assert len(sink.fed) + counters.flood_dropped["UDP"] > before, "a wake-up read nothing: datagrams lost"
    return wake_ups


async def _received(sock: socket.socket, count: int) -> list[tuple[bytes, tuple[str, int]]]:
    """``count`` datagrams from ``sock`` (loopback delivers at once; the deadline is only a guard)."""
    sock.setblocking(False)
    got: list[tuple[bytes, tuple[str, int]]] = []
    deadline = asyncio.get_running_loop().time() + 10
    while len(got) < count and asyncio.get_running_loop().time() < deadline:
        try:
            got.append(sock.recvfrom(65535))
        except BlockingIOError:
            await asyncio.sleep(0.01)
    return got


def _udp(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return s


def _payload(n: int) -> bytes:
    """Mixed sizes and kinds: SIP-like text, binary garbage, one empty datagram, a few large ones."""
    if n == 57:
        return b""
    if n % 50 == 11:
        return (b"MESSAGE big %d " % n) + bytes(range(256)) * 200  # 51 KB: far beyond a typical datagram
    if n % 7 == 3:
        return bytes((n * 37 + i) % 256 for i in range(n % 97 + 1))  # garbage, NULs and all
    return b"REGISTER sip:%d SIP/2.0\r\n" % n + b"x" * (n * 13 % 1400)


def _guard() -> FloodGuard:
    # 127.0.0.1 is a "known" address with a high limit; 127.0.0.2 a stranger banned after 20
    return FloodGuard(window=3600, limit=20, known_limit=1_000_000, ban=3600, known=lambda host: host == "127.0.0.1")


async def test_a_burst_is_fed_whole_in_order_and_answered_in_order() -> None:
    # more than two wake-ups' BATCH, with an empty datagram and garbage; a flooder banned mid-burst
    count = 2 * BATCH + PART + 5
    counters = SipCounters()
    sink = _Sink(answer=True)
    twin = _guard()  # the same guard fed the same sources says what must be dropped
    with (
        _transport("127.0.0.1", sink=sink, counters=counters, flood=_guard()) as (udp, readable),
        _udp("127.0.0.1") as a,
        _udp("127.0.0.1") as b,
        _udp("127.0.0.2") as flooder,
    ):
        senders = [a, b, flooder]
        expected: list[tuple[bytes, tuple[str, int], str | None]] = []
        answers: dict[socket.socket, list[bytes]] = {a: [], b: [], flooder: []}
        banned = 0
        for n in range(count):
            s = senders[n % 3] if n % 10 else flooder
            data = _payload(n)
            s.sendto(data, ("127.0.0.1", udp.port))
            source = s.getsockname()
            if twin.admit(source[0], 0.0):
                expected.append((data, source, "127.0.0.1"))
                answers[s].append(b"answer to " + data[:40])
            else:
                banned += 1
        assert banned > 0  # the test covers the flood guard's drops
        wake_ups = _wake_until_drained(readable, sink, counters, count)
        assert sink.fed == expected
        assert counters.flood_dropped["UDP"] == banned
        assert wake_ups >= 2 and sink.pumps == wake_ups  # one pump per wake-up, as before
        for s, texts in answers.items():
            got = await _received(s, len(texts))
            assert [data for data, _ in got] == texts
            assert {source for _, source in got} == {("127.0.0.1", udp.port)}


async def test_a_wildcard_socket_knows_each_datagrams_own_destination() -> None:
    # IP_PKTINFO per datagram: one peer alternating between two of our addresses is fed each
    # datagram with the address it went to; peers that stay on one address are answered from it
    counters = SipCounters()
    sink = _Sink(answer=True)
    with (
        _transport("0.0.0.0", sink=sink, counters=counters) as (udp, readable),
        _udp("127.0.0.1") as one,
        _udp("127.0.0.1") as three,
        _udp("127.0.0.1") as both,
    ):
        expected: list[tuple[bytes, tuple[str, int], str | None]] = []
        answered: dict[socket.socket, list[bytes]] = {one: [], three: [], both: []}
        count = BATCH + PART + 3
        for n in range(count):
            s, to = [(one, "127.0.0.1"), (three, "127.0.0.3"), (both, ("127.0.0.1", "127.0.0.4")[n % 2])][n % 3]
            data = _payload(n)
            s.sendto(data, (to, udp.port))
            expected.append((data, s.getsockname(), to))
            answered[s].append(b"answer to " + data[:40])
        _wake_until_drained(readable, sink, counters, count)
        assert sink.fed == expected
        for s, texts in answered.items():
            got = await _received(s, len(texts))
            assert [data for data, _ in got] == texts
            if s is one:
                assert {source for _, source in got} == {("127.0.0.1", udp.port)}
            elif s is three:
                assert {source for _, source in got} == {("127.0.0.3", udp.port)}
        assert counters.dropped["udp-send-error"] == 0


async def test_a_send_error_for_one_destination_loses_none_of_the_others() -> None:
    # port 0 is refused (EINVAL), the broadcast address without SO_BROADCAST too (EACCES): each
    # such answer is counted and logged, and every other one still leaves, in order
    counters = SipCounters()
    with _transport("127.0.0.1", sink=_Sink(), counters=counters) as (udp, _), _udp("127.0.0.1") as rx:
        port = rx.getsockname()[1]
        out: list[tuple[bytes, Peer]] = []
        good: list[bytes] = []
        bad = 0
        for n in range(2 * PART + 7):
            if n % 10 == 3:
                out.append((b"to port 0", Peer("UDP", "127.0.0.1", 0)))
                bad += 1
            elif n % 10 == 7:
                out.append((b"to everyone", Peer("UDP", "255.255.255.255", 5060)))
                bad += 1
            else:
                data = b"answer %d " % n + b"y" * (n * 31 % 1200)
                out.append((data, Peer("UDP", "127.0.0.1", port)))
                good.append(data)
        out.append((b"last", Peer("UDP", "127.0.0.1", 0)))  # a failure last
        bad += 1
        for data, peer in out:
            udp.send(data, peer)
        got = await _received(rx, len(good))
        assert [data for data, _ in got] == good
        assert counters.dropped["udp-send-error"] == bad
        assert counters.dropped["udp-send-full"] == 0


async def test_an_address_no_longer_ours_falls_back_to_routing() -> None:
    # sending from a learnt local address that the kernel refuses (EINVAL: here a multicast one
    # stands for an address removed from its interface) forgets it and sends as routing chooses
    counters = SipCounters()
    sink = _Sink()
    with _transport("0.0.0.0", sink=sink, counters=counters) as (udp, readable), _udp("127.0.0.1") as peer:
        peer.sendto(b"hello", ("127.0.0.1", udp.port))
        _wake_until_drained(readable, sink, counters, 1)
        host, port = peer.getsockname()
        info = struct.pack("=I4s4s", 0, socket.inet_aton("224.0.0.1"), bytes(4))
        udp._local[host, port] = ("224.0.0.1", [(socket.IPPROTO_IP, IP_PKTINFO, info)])
        texts = [b"answer %d" % n for n in range(5)]
        for text in texts:
            udp.send(text, Peer("UDP", host, port))
        got = await _received(peer, len(texts))
        assert [data for data, _ in got] == texts
        assert (host, port) not in udp._local
        assert counters.dropped["udp-send-error"] == 0


@pytest.mark.parametrize("host", ["::1", "::"])
async def test_ipv6_bursts_keep_the_addresses_recvfrom_gives(host: str) -> None:
    # an IPv6 sender is the 4-tuple recvfrom gives (host, port, flowinfo, scope), in the peer
    # cache as before; a wildcard socket learns ::1 from IPV6_PKTINFO and answers from it
    counters = SipCounters()
    sink = _Sink(answer=True)
    with (
        _transport(host, sink=sink, counters=counters) as (udp, readable),
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s,
    ):
        s.bind(("::1", 0))
        count = PART * 2 + 1
        sent = [_payload(n) for n in range(count)]
        for data in sent:
            s.sendto(data, ("::1", udp.port))
        _wake_until_drained(readable, sink, counters, count)
        source = s.getsockname()[:2]
        assert sink.fed == [(data, source, "::1") for data in sent]
        assert list(udp._peers) == [(source[0], source[1], 0, 0)]
        got = await _received(s, count)
        assert [data for data, _ in got] == [b"answer to " + data[:40] for data in sent]
        assert {sender[:2] for _, sender in got} == {("::1", udp.port)}
