"""The asyncio shell over real loopback sockets, with our own core or raw sockets as the peer."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gb28181gw.app import Gateway
from gb28181gw.net.stack import SipStack, SipTimeoutError
from gb28181gw.sip.endpoint import Peer, SipEndpoint
from gb28181gw.sip.events import RequestReceived
from gb28181gw.sip.message import make_request, make_response, parse_message
from gb28181gw.sip.timers import TimerConfig
from tests.helpers import REGISTER, request

from .conftest import loopback_sip, start_gateway


def _options(ep: SipEndpoint, host: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    return make_request(
        "OPTIONS",
        f"sip:34020000002000000001@{host}",
        from_addr="sip:34020000001320000001@3402000000",
        to_addr="sip:34020000002000000001@3402000000",
        call_id=ep.new_call_id(),
        cseq=1,
        from_tag=ep.new_tag(),
    )


async def _client(hosts: list[str] | None = None) -> SipStack:
    stack = SipStack(SipEndpoint(timers=TimerConfig(t1=0.1, t2=0.4, t4=0.5)))
    await stack.listen(loopback_sip(hosts))
    return stack


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_our_own_uac_gets_200(gateway: Gateway, transport: str) -> None:
    client = await _client()
    try:
        resp = await client.request(_options(client.endpoint), Peer(transport, "127.0.0.1", gateway.stack.port))
        assert resp.status == 200
        assert "OPTIONS" in (resp.headers.get("allow") or "")
        if transport == "TCP":
            assert gateway.stack.tcp_connections == 1
            # a second request reuses the connection
            await client.request(_options(client.endpoint), Peer("TCP", "127.0.0.1", gateway.stack.port))
            assert gateway.stack.tcp_connections == 1
    finally:
        await client.close()


async def test_request_to_silence_times_out() -> None:
    client = await _client()
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(SipTimeoutError):
            await client.request(_options(client.endpoint), Peer("UDP", "127.0.0.1", quiet.getsockname()[1]))
        # Timer E retransmitted over UDP while waiting (T1 = 0.1 s here)
        quiet.setblocking(False)
        copies = 0
        while True:
            try:
                quiet.recv(65535)
                copies += 1
            except BlockingIOError:
                break
        assert copies >= 5
    finally:
        quiet.close()
        await client.close()


async def test_tcp_connect_failure_fails_the_request() -> None:
    client = await _client()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    try:
        with pytest.raises(ConnectionError):
            await client.request(_options(client.endpoint), Peer("TCP", "127.0.0.1", port))
    finally:
        await client.close()


async def test_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback")
    gw = await start_gateway(**{"sip.listen": "127.0.0.1,::1"})
    client = await _client(["::1"])
    try:
        for transport in ("UDP", "TCP"):
            resp = await client.request(_options(client.endpoint, "[::1]"), Peer(transport, "::1", gw.stack.port))
            assert resp.status == 200
            assert "received=::1" in (resp.headers.get("via") or "") or "[::1]" in (resp.headers.get("via") or "")
    finally:
        await client.close()
        await gw.stop()


async def _tcp(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head


async def test_tcp_answers_on_the_same_connection_and_pongs(gateway: Gateway) -> None:
    reader, writer = await _tcp(gateway.stack.port)
    try:
        writer.write(b"\r\n\r\n")  # RFC 5626 ping
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        # two requests in one write, split awkwardly
        data = request("OPTIONS", "z9hG4bKtcp1") + request("OPTIONS", "z9hG4bKtcp2")
        writer.write(data[:50])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(data[50:])
        await writer.drain()
        first = await _read_response(reader)
        second = await _read_response(reader)
        assert first.startswith(b"SIP/2.0 200") and b"z9hG4bKtcp1" in first
        assert second.startswith(b"SIP/2.0 200") and b"z9hG4bKtcp2" in second
    finally:
        writer.close()


async def test_tcp_framing_error_closes_only_that_connection(gateway: Gateway) -> None:
    bad_r, bad_w = await _tcp(gateway.stack.port)
    good_r, good_w = await _tcp(gateway.stack.port)
    try:
        bad_w.write(REGISTER.replace(b"Content-Length: 0", b"Content-Length: lots"))
        await bad_w.drain()
        assert await asyncio.wait_for(bad_r.read(), 5) == b""  # closed by the gateway
        good_w.write(request("OPTIONS", "z9hG4bKstill"))
        await good_w.drain()
        assert (await _read_response(good_r)).startswith(b"SIP/2.0 200")
    finally:
        bad_w.close()
        good_w.close()


async def test_one_megabyte_header_over_tcp(gateway: Gateway) -> None:
    reader, writer = await _tcp(gateway.stack.port)
    try:
        writer.write(b"OPTIONS sip:a@b SIP/2.0\r\nX-Huge: " + b"a" * (1024 * 1024) + b"\r\n\r\n")
        await writer.drain()
    except ConnectionError:
        pass  # closed while we were still writing: also fine
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionError:
        pass
    finally:
        writer.close()
    assert gateway.metrics.sip.parse_errors["TCP", "dropped"] == 1
    # still serving
    client = await _client()
    try:
        resp = await client.request(_options(client.endpoint), Peer("UDP", "127.0.0.1", gateway.stack.port))
        assert resp.status == 200
    finally:
        await client.close()


async def test_udp_parse_error_is_answered_to_the_source(gateway: Gateway) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        bad = request("MESSAGE", "z9hG4bKbadcseq").replace(b"CSeq: 1 MESSAGE", b"CSeq: 1 INVITE")
        sock.sendto(bad, ("127.0.0.1", gateway.stack.port))
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 5)
        assert data.startswith(b"SIP/2.0 400 ")
        assert b"Warning: 399 gb28181gw" in data
        sock.sendto(b"\x00\xff" * 40, ("127.0.0.1", gateway.stack.port))
        sock.sendto(request("OPTIONS", "z9hG4bKafter"), ("127.0.0.1", gateway.stack.port))
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 5)
        assert data.startswith(b"SIP/2.0 200 ")
    finally:
        sock.close()
    assert gateway.metrics.sip.parse_errors["UDP", "400"] == 1
    assert gateway.metrics.sip.parse_errors["UDP", "dropped"] == 1


async def test_handler_failure_is_answered_500_and_service_goes_on(gateway: Gateway) -> None:
    def broken(event: RequestReceived) -> None:
        raise RuntimeError("boom")

    async def slow_then_broken(event: RequestReceived) -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom later")

    gateway.stack.router.consume("MESSAGE", broken, owner="test")
    gateway.stack.router.handle("INFO", slow_then_broken, owner="test")
    client = await _client()
    try:
        target = Peer("UDP", "127.0.0.1", gateway.stack.port)
        for method in ("MESSAGE", "INFO"):
            req = _options(client.endpoint)
            req.method = method
            req.headers.set("CSeq", f"1 {method}")
            assert (await client.request(req, target)).status == 500
        assert (await client.request(_options(client.endpoint), target)).status == 200
    finally:
        await client.close()


async def test_async_handler_answers_later(gateway: Gateway) -> None:
    async def later(event: RequestReceived) -> None:
        await asyncio.sleep(0.3)  # longer than T1: the client retransmits meanwhile
        assert event.transaction is not None
        gateway.stack.respond(event.transaction, make_response(event.request, 202, to_tag="x"))

    gateway.stack.router.consume("MESSAGE", later, owner="test")
    client = await _client()
    try:
        req = _options(client.endpoint)
        req.method = "MESSAGE"
        req.headers.set("CSeq", "1 MESSAGE")
        resp = await client.request(req, Peer("UDP", "127.0.0.1", gateway.stack.port))
        assert resp.status == 202
        assert gateway.metrics.sip.requests["in", "UDP", "MESSAGE"] == 1  # retransmissions absorbed
        assert parse_message(resp.serialize()).status == 202  # type: ignore[union-attr]
    finally:
        await client.close()


async def test_a_second_cancel_owner_is_a_wiring_bug_found_at_once() -> None:
    from gb28181gw.errors import RouteConflict

    stack = SipStack(SipEndpoint())
    stack.on_cancel(lambda event: None, owner="first")
    with pytest.raises(RouteConflict, match="first"):
        stack.on_cancel(lambda event: None, owner="second")


class _Sink:
    """A MessageSink that only counts: what one wake-up of the UDP reader hands up."""

    def __init__(self) -> None:
        self.fed: list[bytes] = []
        self.pumps = 0

    def feed(self, data: bytes, peer: Peer, now: float | None = None) -> None:
        self.fed.append(data)

    def pump(self) -> None:
        self.pumps += 1

    def transport_failed(self, peer: Peer, reason: str) -> None:  # pragma: no cover - UDP has no connections
        pass


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
async def test_one_wake_up_reads_one_datagram_or_drains_a_burst(host: str) -> None:
    # after the first datagram the reader asks the kernel whether another waits (FIONREAD)
    # instead of reading until EAGAIN: a burst must still be read in one wake-up, in order
    from gb28181gw.metrics import SipCounters
    from gb28181gw.net.sip_udp import BATCH, UdpTransport

    sink = _Sink()
    udp = UdpTransport.bind(sink, host, 0, receive_buffer=1 << 20, counters=SipCounters())
    asyncio.get_running_loop().remove_reader(udp._sock.fileno())  # we play the loop's wake-ups
    readable = udp._readable_learning if udp.wildcard else udp._readable
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for count in (1, 5, 1, 0, 3, 200):
                sink.fed.clear()
                pumps = sink.pumps
                for n in range(count):
                    peer.sendto(b"datagram %d" % n, ("127.0.0.1", udp.port))
                await asyncio.sleep(0.02)  # loopback delivers at once
                readable()
                first = min(count, BATCH)  # the rest waits for the next wake-up
                assert sink.fed == [b"datagram %d" % n for n in range(first)]
                assert sink.pumps == pumps + (1 if count else 0)
                if count > first:
                    readable()
                    assert len(sink.fed) == count
    finally:
        udp.close()


async def test_timers_fire_on_ticks_at_most_one_tick_late() -> None:
    # the endpoint's exact earliest deadline, rounded up to the next TIMER_TICK: wake-ups for
    # many deadlines close together (Timer J of every request) are taken together
    from gb28181gw.net.stack import TIMER_TICK

    client = await _client()
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.0.0.1", 0))
    try:
        task = asyncio.ensure_future(
            client.request(_options(client.endpoint), Peer("UDP", "127.0.0.1", quiet.getsockname()[1]))
        )
        await asyncio.sleep(0)
        exact = client.endpoint.get_timer()
        assert exact is not None and client._timer.armed
        assert exact <= client._timer.when < exact + TIMER_TICK + 1e-9
        ticks = client._timer.when / TIMER_TICK
        assert abs(ticks - round(ticks)) < 1e-6
        task.cancel()
    finally:
        quiet.close()
        await client.close()
