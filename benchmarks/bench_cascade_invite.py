"""Superior INVITE → first RTP packet at the superior (issue 12 item 5, PROTOCOL.md §9.5).

A gateway (in this process, its own loop) with one ``[[upstream]]``; a device (a UDP socket
here) registers, answers every INVITE at once with 200 and, from its ACK on, sends RTP (PS,
one packet every 2 ms) to where the offer said; a superior (another UDP socket) INVITEs the
channel, ACKs, waits for the first RTP packet at its receiver, then BYEs.

warm  the device stream is already open (a local viewer holds it): the INVITE joins it.
      Target p50 < 50 ms.
cold  nobody watches; each INVITE opens the device stream (linger 0 closes it after the BYE).
      Our share is the total minus what the device takes: from our INVITE to its 200, and from
      our ACK to its first packet. Target p50 < 300 ms.

  python benchmarks/bench_cascade_invite.py --rounds 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from gb28181gw.app import Gateway  # noqa: E402
from gb28181gw.config import load_config  # noqa: E402
from gb28181gw.gb.model import Channel  # noqa: E402
from gb28181gw.sdp import SessionDescription  # noqa: E402
from gb28181gw.sip.message import Request, Response, make_response, parse_message  # noqa: E402

SUPERIOR, OURS = "34010000002000000001", "34020000002000000001"
NVR, CH = "34020000001180000001", "34020000001310000001"
RTP_INTERVAL = 0.002


def rtp(seq: int, ssrc: int) -> bytes:
    header = bytes([0x80, 96]) + seq.to_bytes(2, "big") + (seq * 3600).to_bytes(4, "big") + ssrc.to_bytes(4, "big")
    return header + b"\x00\x00\x01\xba" + b"\x00" * 996


class Device(asyncio.DatagramProtocol):
    """Registers; answers INVITE with 200 at once; sends RTP from its ACK to its BYE."""

    def __init__(self, gateway: tuple[str, int]) -> None:
        self.gateway = gateway
        self.transport: asyncio.DatagramTransport | None = None
        self.registered = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None
        self.target: tuple[str, int] = ("", 0)
        self.ssrc = 0
        self.answer_times: list[float] = []  # INVITE received → 200 sent (the device's share)
        self.ack_at = 0.0
        self.first_sent_after_ack: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.gateway)

    def register(self) -> None:
        port = self.transport.get_extra_info("sockname")[1] if self.transport else 0
        self.send(
            (
                f"REGISTER sip:{OURS}@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-r1\r\n"
                f"From: <sip:{NVR}@3402000000>;tag=r1\r\nTo: <sip:{NVR}@3402000000>\r\nCall-ID: reg-1\r\n"
                f"CSeq: 1 REGISTER\r\nContact: <sip:{NVR}@127.0.0.1:{port}>\r\nExpires: 3600\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        t0 = time.perf_counter()
        msg = parse_message(data)
        if isinstance(msg, Response):
            if msg.cseq.method == "REGISTER" and msg.status == 200:
                self.registered.set()
            return
        assert isinstance(msg, Request)
        if msg.method == "INVITE":
            offer = SessionDescription.parse(msg.body)
            video = offer.video()
            assert video is not None
            self.target = (offer.media_address(video) or "127.0.0.1", video.port)
            self.ssrc = offer.ssrc_value or 1
            port = self.transport.get_extra_info("sockname")[1] if self.transport else 0
            resp = make_response(msg, 200, to_tag="dev1")
            resp.headers.add("Contact", f"<sip:{CH}@127.0.0.1:{port}>")
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = (
                f"v=0\r\no={CH} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny={offer.ssrc}\r\nf=\r\n"
            ).encode()
            self.send(bytes(resp))
            self.answer_times.append(time.perf_counter() - t0)
        elif msg.method == "ACK":
            self.ack_at = t0
            if self.pump is None or self.pump.done():
                self.pump = asyncio.ensure_future(self._pump())
        elif msg.method == "BYE":
            if self.pump is not None:
                self.pump.cancel()
            self.send(bytes(make_response(msg, 200)))
        else:
            self.send(bytes(make_response(msg, 200)))

    async def _pump(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            seq = 0
            while True:
                sock.sendto(rtp(seq & 0xFFFF, self.ssrc), self.target)
                if seq == 0:
                    self.first_sent_after_ack.append(time.perf_counter() - self.ack_at)
                seq += 1
                await asyncio.sleep(RTP_INTERVAL)
        finally:
            sock.close()


class Superior(asyncio.DatagramProtocol):
    """INVITEs the channel, ACKs the 200, BYEs when told."""

    def __init__(self, gateway: tuple[str, int]) -> None:
        self.gateway = gateway
        self.transport: asyncio.DatagramTransport | None = None
        self.answers: asyncio.Queue[Response] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        if isinstance(msg, Response):
            if msg.status >= 200:
                self.answers.put_nowait(msg)
        elif isinstance(msg, Request) and msg.method != "ACK":
            assert self.transport is not None
            self.transport.sendto(bytes(make_response(msg, 200)), addr)

    def request(self, method: str, n: int, media_port: int, to_tag: str = "", cseq: int = 20) -> None:
        port = self.transport.get_extra_info("sockname")[1] if self.transport else 0
        body = b""
        if method == "INVITE":
            body = (
                f"v=0\r\no={SUPERIOR} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=video {media_port} RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny=0100{n:06d}\r\nf=\r\n"
            ).encode()
        head = (
            f"{method} sip:{CH}@127.0.0.1:{self.gateway[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-{method}{n}\r\n"
            f"From: <sip:{SUPERIOR}@3401000000>;tag=up{n}\r\nTo: <sip:{CH}@3402000000>{';tag=' + to_tag if to_tag else ''}\r\n"
            f"Call-ID: sup-{n}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{SUPERIOR}@127.0.0.1:{port}>\r\n"
            f"Subject: {CH}:0100{n:06d},{SUPERIOR}:0\r\nMax-Forwards: 70\r\n"
            f"{'Content-Type: application/sdp' + chr(13) + chr(10) if body else ''}Content-Length: {len(body)}\r\n\r\n"
        )
        assert self.transport is not None
        self.transport.sendto(head.encode() + body, self.gateway)


class Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.first: asyncio.Future[float] | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.first is not None and not self.first.done():
            self.first.set_result(time.perf_counter())


async def gateway(tmp: Path, superior_port: int) -> Gateway:
    table = {"name": "district", "id": SUPERIOR, "host": "127.0.0.1", "port": superior_port, "password": "x"}
    (tmp / "gw.toml").write_text("[[upstream]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()))
    overrides = {
        "store.path": str(tmp / "gw.db"),
        "gateway.id": OURS,
        "sip.listen": "127.0.0.1",
        "sip.port": "0",
        "admin.enabled": "false",
        "devices.catalog_on_register": "false",
        "devices.subscribe": "",
        "media.workers": "0",
        "media.port_min": "41000",
        "media.port_max": "41999",
        "media.linger": "0",
    }
    gw = Gateway(load_config(tmp / "gw.toml", env={}, overrides=overrides))
    await gw.start()
    return gw


async def run(rounds: int) -> None:
    logging.disable(logging.WARNING)
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        _, sup = await loop.create_datagram_endpoint(lambda: Superior(("127.0.0.1", 0)), local_addr=("127.0.0.1", 0))
        gw = await gateway(Path(tmp), sup.transport.get_extra_info("sockname")[1] if sup.transport else 0)
        target = ("127.0.0.1", gw.stack.port)
        sup.gateway = target
        _, device = await loop.create_datagram_endpoint(lambda: Device(target), local_addr=("127.0.0.1", 0))
        media, receiver = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
        media_port = media.get_extra_info("sockname")[1]
        device.register()
        await asyncio.wait_for(device.registered.wait(), 5)
        gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
        viewer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        viewer.bind(("127.0.0.1", 0))
        n = 0
        try:
            for mode in ("warm", "cold"):
                held = None
                if mode == "warm":
                    held = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=viewer.getsockname()[1])
                    await asyncio.sleep(0.2)  # media flowing
                totals, shares = [], []
                for _ in range(rounds):
                    n += 1
                    receiver.first = loop.create_future()
                    answered_before = len(device.answer_times)
                    firsts_before = len(device.first_sent_after_ack)
                    t0 = time.perf_counter()
                    sup.request("INVITE", n, media_port)
                    ok = await asyncio.wait_for(sup.answers.get(), 10)
                    assert ok.status == 200, ok.status
                    tag = ok.to.tag or ""
                    sup.request("ACK", n, media_port, tag)
                    first = await asyncio.wait_for(receiver.first, 10)
                    total = first - t0
                    device_share = sum(device.answer_times[answered_before:]) + sum(
                        device.first_sent_after_ack[firsts_before:]
                    )
                    totals.append(total)
                    shares.append(total - device_share)
                    sup.request("BYE", n, media_port, tag, cseq=21)
                    bye = await asyncio.wait_for(sup.answers.get(), 5)
                    assert bye.status == 200
                    await asyncio.sleep(0.05 if mode == "warm" else 0.2)  # cold: the stream closes
                figures = shares if mode == "cold" else totals
                q = statistics.quantiles(figures, n=100)
                what = "our share (device's answer and ACK→media excluded)" if mode == "cold" else "total"
                print(
                    f"{mode}: superior INVITE → first RTP at the superior, {what}: "
                    f"p50 {statistics.median(figures) * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms ({rounds} rounds)"
                )
                if held is not None:
                    st, consumer = held
                    await gw.streams.remove_consumer(st.id, consumer.id)
                    await asyncio.sleep(0.3)
        finally:
            viewer.close()
            media.close()
            await gw.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.rounds))


if __name__ == "__main__":
    main()
