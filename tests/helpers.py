"""Shared test helpers: a fake clock, bytewise feeding, fixtures, message builders."""

from __future__ import annotations

import asyncio
import itertools
import os
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from gb28181gw.sip.endpoint import Peer, SipEndpoint
from gb28181gw.sip.events import Event

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

DEVICE_UDP = Peer("UDP", "127.0.0.1", 5061)
DEVICE_TCP = Peer("TCP", "127.0.0.1", 40001)


def media_port(offset: int) -> int:
    """A media port ``offset`` into this pytest worker's own block of 1,500 (12000-13499 for the first).

    Tests that set a media range or expect a port number take it from here: files run in parallel
    (``pytest -n``) then never bind each other's ports, and the block lies below 32768, outside the
    kernel's range for automatically assigned ports, so no client socket can be holding one either
    (a shared port once failed to bind because another file's gateway had the same range).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return 12000 + 1500 * (int(worker) if worker.isdigit() else 0) + offset


_T = TypeVar("_T")


async def most_between_turns(count: Callable[[], int], work: Awaitable[_T]) -> tuple[_T, int]:
    """``work``'s result, and the most ``count()`` grew between two turns of a task beside it.

    Counted, not timed: how much of something (rows decoded, records taken) was done without the
    event loop turning, i.e. what every datagram waiting behind it waited for.
    """
    gaps: list[int] = []
    done = False

    async def beside() -> None:
        seen = 0
        while True:
            now = count()
            gaps.append(now - seen)
            seen = now
            if done:
                return
            await asyncio.sleep(0)

    task = asyncio.create_task(beside())
    try:
        result = await work
    finally:
        done = True
        await task
    return result, max(gaps)


class FakeClock:
    """Monotonic time that moves only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def counter_token() -> object:
    """A deterministic ``token(nbytes)`` for the endpoint: 0001, 0002, …"""
    counter = itertools.count(1)
    return lambda n: f"{next(counter):0{2 * n}x}"


def new_endpoint(**kwargs: object) -> SipEndpoint:
    ep = SipEndpoint(token=counter_token(), **kwargs)  # type: ignore[arg-type]
    ep.set_local_address("UDP", "127.0.0.1", 5060)
    ep.set_local_address("TCP", "127.0.0.1", 5060)
    return ep


def drain_events(ep: SipEndpoint) -> list[Event]:
    out = []
    while (ev := ep.next_event()) is not None:
        out.append(ev)
    return out


def feed_bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def load_fixture(*parts: str) -> bytes:
    return FIXTURES.joinpath(*parts).read_bytes()


def load_expected(*parts: str) -> dict[str, int | str]:
    return tomllib.loads(FIXTURES.joinpath(*parts, "expected.toml").read_text())


def crlf(text: str) -> bytes:
    """Message text written with LF in a test, sent with CRLF."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


REGISTER = crlf(
    """REGISTER sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;rport;branch=z9hG4bK1843296217
From: <sip:34020000001320000001@3402000000>;tag=1520488418
To: <sip:34020000001320000001@3402000000>
Call-ID: 1926390155@127.0.0.1
CSeq: 1 REGISTER
Contact: <sip:34020000001320000001@127.0.0.1:5061>
Max-Forwards: 70
User-Agent: IP Camera
Expires: 3600
X-GB-ver: 3.0
Content-Length: 0

"""
)

KEEPALIVE_BODY = (
    b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>43</SN>\r\n'
    b"<DeviceID>34020000001320000001</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
)

MESSAGE = (
    crlf(
        f"""MESSAGE sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;rport;branch=z9hG4bK0470227384
From: <sip:34020000001320000001@3402000000>;tag=0908167762
To: <sip:34020000002000000001@3402000000>
Call-ID: 1387504191@127.0.0.1
CSeq: 20 MESSAGE
Content-Type: Application/MANSCDP+xml
Max-Forwards: 70
User-Agent: IP Camera
Content-Length: {len(KEEPALIVE_BODY)}

"""
    )
    + KEEPALIVE_BODY
)


def request(method: str, branch: str = "z9hG4bKabc1", *, cseq: int = 1, via_host: str = "127.0.0.1:5061") -> bytes:
    """A minimal valid request of ``method``."""
    return crlf(
        f"""{method} sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP {via_host};rport;branch={branch}
From: <sip:34020000001320000001@3402000000>;tag=f1
To: <sip:34020000002000000001@3402000000>
Call-ID: call-{branch}
CSeq: {cseq} {method}
Max-Forwards: 70
Content-Length: 0

"""
    )
