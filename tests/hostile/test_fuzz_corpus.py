"""Replay the minimised fuzz corpus: each kept mutation gets the answer it got when recorded (issue 10).

``benchmarks/bench_fuzz.py --collect tests/hostile/fixtures/sip`` keeps, for each distinct answer
(status and Warning text with the echoed values masked, or no answer), the shortest mutated
message that produced it, and records in ``index.json`` what it got over UDP and over TCP.
The gateway must answer each the same way again, stay up, and keep serving a well-behaved
device's keepalive.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.bench_fuzz import answer_key as bench_answer_key

from gb28181gw.app import Gateway
from tests.helpers import KEEPALIVE_BODY
from tests.hostile.test_persistence import register
from tests.shell.test_registrar import _message

CORPUS = Path(__file__).parent / "fixtures" / "sip"
DEVICE = "34020000001329999999"
#: Seconds to wait for an answer before calling it "none".
QUIET = 0.5

_FINAL = re.compile(rb"(?=SIP/2\.0 [2-6]\d\d )")


def answer_key(response: bytes) -> str:
    """The benchmark's key of a final answer: status plus the Warning's words, echoed values masked."""
    key = bench_answer_key(response)
    assert key is not None, response[:80]
    return key


def variant(msg: bytes, tag: str) -> bytes:
    """As in bench_fuzz.py: a unique branch and Call-ID, so a replay is never a retransmission."""
    t = tag.encode()
    return msg.replace(b"z9hG4bKf", b"z9hG4bK" + t + b"f").replace(b"Call-ID: fz", b"Call-ID: " + t + b"fz")


def over_udp(port: int, msg: bytes) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(QUIET)
        s.sendto(msg, ("127.0.0.1", port))
        try:
            while True:
                data = s.recv(65535)
                if _FINAL.match(data):
                    return answer_key(data)
        except TimeoutError:
            return "none"


def over_tcp(port: int, msg: bytes) -> str:
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(msg)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(QUIET)
        try:
            while (chunk := s.recv(65536)) and not _final_in(buf := buf + chunk):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
    finals = [p for p in _FINAL.split(buf) if _FINAL.match(p)]
    return answer_key(finals[0]) if finals else "none"


def _final_in(buf: bytes) -> bool:
    # a whole final response: its status line and the blank line after its headers
    m = _FINAL.search(buf)
    return m is not None and b"\r\n\r\n" in buf[m.start() :]


def test_the_corpus_covers_distinct_answers() -> None:
    index = json.loads((CORPUS / "index.json").read_text())
    assert len(index) >= 20
    assert set(index) == {p.name for p in CORPUS.glob("*.bin")}
    assert all(CORPUS.joinpath(name).stat().st_size <= 65000 for name in index)
    assert len({v["udp"] for v in index.values()}) == len(index)


async def test_every_fixture_gets_its_recorded_answer_and_the_device_is_still_served(gateway: Gateway) -> None:
    port = gateway.stack.port
    index: dict[str, dict[str, str]] = json.loads((CORPUS / "index.json").read_text())
    camera = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    camera.bind(("127.0.0.1", 0))
    camera.settimeout(5)
    try:
        camera.sendto(register(DEVICE, 1), ("127.0.0.1", port))
        assert (await asyncio.to_thread(camera.recv, 65535)).startswith(b"SIP/2.0 200")

        def replay(name: str) -> tuple[str, dict[str, str]]:
            msg = CORPUS.joinpath(name).read_bytes()
            return name, {"udp": over_udp(port, variant(msg, "u1")), "tcp": over_tcp(port, variant(msg, "t1"))}

        # in parallel: a fixture without an answer costs QUIET seconds
        with ThreadPoolExecutor(16) as pool:
            got = dict(await asyncio.to_thread(lambda: list(pool.map(replay, sorted(index)))))
        assert {n: v for n, v in got.items() if v != index[n]} == {}, "answers differ from the recorded ones"

        camera.sendto(
            _message(DEVICE, KEEPALIVE_BODY.replace(b"34020000001320000001", DEVICE.encode()), "z9hG4bKka"),
            ("127.0.0.1", port),
        )
        assert (await asyncio.to_thread(camera.recv, 65535)).startswith(b"SIP/2.0 200")
        assert gateway.registrar.devices[DEVICE].port == camera.getsockname()[1]
    finally:
        camera.close()


async def test_an_unterminated_quote_in_contact_is_the_devices_error_not_ours(gateway: Gateway) -> None:
    # found by the fuzz run: splitting the Contact list raised inside the handler, answered 500
    bad = register(DEVICE, 7).replace(b"Contact: <sip:3402", b'Contact: <sip:340"2')
    answer = await asyncio.to_thread(over_udp, gateway.stack.port, bad)
    assert answer == "400 malformed Contact: unterminated quoted string in …"
