"""Catalog benchmarks: parsing speed, and an NVR's 1,000-channel catalog end to end.

parse  Catalog items parsed per second on one core (decode + items of a 10-item GB2312 body).
sync   `gb28181gw serve` pinned to CPU 0; a device on CPU 1 registers, is asked for its catalog
       through the admin API, answers 200 and sends 100 MESSAGEs of 10 items each. Prints the
       seconds from the request to the catalog stored.

  python benchmarks/bench_catalog.py parse
  python benchmarks/bench_catalog.py sync --channels 1000 --per-message 10
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from bench_options import cpu_seconds, free_port, start_server  # noqa: E402
from gb28181gw.manscdp.messages import catalog, decode  # noqa: E402

NVR = "34020000001180000001"


def catalog_body(sn: int, first: int, count: int, total: int) -> bytes:
    items = "".join(
        f"<Item>\r\n<DeviceID>3402000000131{n:07d}</DeviceID>\r\n<Name>通道{n}号 大门口</Name>\r\n<Manufacturer>Hikvision</Manufacturer>\r\n"
        f"<Model>DS-2CD3T46</Model>\r\n<Owner>Owner</Owner>\r\n<CivilCode>340202</CivilCode>\r\n<Address>示例路{n}号</Address>\r\n"
        f"<Parental>0</Parental>\r\n<ParentID>{NVR}</ParentID>\r\n<SafetyWay>0</SafetyWay>\r\n<RegisterWay>1</RegisterWay>\r\n"
        f"<Secrecy>0</Secrecy>\r\n<Status>ON</Status>\r\n<Longitude>118.376</Longitude>\r\n<Latitude>31.326</Latitude>\r\n"
        "<Info>\r\n<PTZType>1</PTZType>\r\n</Info>\r\n</Item>\r\n"
        for n in range(first, first + count)
    )
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n'
        f'<DeviceID>{NVR}</DeviceID>\r\n<SumNum>{total}</SumNum>\r\n<DeviceList Num="{count}">\r\n{items}</DeviceList>\r\n</Response>\r\n'
    ).encode("gb18030")


def bench_parse(rounds: int) -> None:
    os.sched_setaffinity(0, {0})
    body = catalog_body(1, 1, 10, 10)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(rounds):
            catalog(decode(body))
        best = max(best, rounds * 10 / (time.perf_counter() - t0))
    print(f"catalog items parsed: {best:,.0f} items/s on one core ({len(body)}-byte bodies of 10 items, GB2312)")


def sip(method: str, uri: str, port: int, n: int, body: bytes = b"", extra: str = "") -> bytes:
    head = (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-c{n}\r\n"
        f"From: <sip:{NVR}@3402000000>;tag=c{n}\r\nTo: <sip:{'34020000002000000001' if method != 'REGISTER' else NVR}@3402000000>\r\n"
        f"Call-ID: c{n}@127.0.0.1\r\nCSeq: {n} {method}\r\nMax-Forwards: 70\r\n{extra}"
        f"{'Content-Type: Application/MANSCDP+xml' + chr(13) + chr(10) if body else ''}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def register_device(dev: socket.socket, dest: tuple[str, int]) -> None:
    """The NVR registers (open registration) from ``dev``."""
    port = dev.getsockname()[1]
    contact = f"Contact: <sip:{NVR}@127.0.0.1:{port}>\r\nExpires: 3600\r\n"
    dev.sendto(sip("REGISTER", "sip:34020000002000000001@3402000000", port, 1, extra=contact), dest)
    assert dev.recv(65535).startswith(b"SIP/2.0 200")


def load_catalog(dev: socket.socket, dest: tuple[str, int], admin_port: int, channels: int, per_message: int) -> float:
    """Ask the gateway (admin API) for the NVR's catalog and answer it from ``dev``; seconds to stored."""
    port = dev.getsockname()[1]
    result: dict[str, float] = {}

    def refresh() -> None:
        t0 = time.perf_counter()
        req = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}/api/v1/devices/{NVR}/catalog",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
        result["seconds"] = time.perf_counter() - t0

    api = threading.Thread(target=refresh)
    api.start()
    query = dev.recv(65535)
    sn = int(re.search(rb"<SN>(\d+)</SN>", query).group(1))  # type: ignore[union-attr]
    dev.sendto(ok_for(query), dest)
    for m in range(channels // per_message):
        body = catalog_body(sn, m * per_message + 1, per_message, channels)
        dev.sendto(sip("MESSAGE", "sip:34020000002000000001@3402000000", port, 100 + m, body), dest)
    answered = 0
    while answered < channels // per_message:
        if dev.recv(65535).startswith(b"SIP/2.0 200"):
            answered += 1
    api.join()
    return result["seconds"]


def ok_for(request: bytes, tag: str = "dev") -> bytes:
    """A 200 OK to ``request`` (its Via, From, To with ``tag``, Call-ID and CSeq)."""
    head = request.split(b"\r\n\r\n", 1)[0].decode()
    hdr = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:]}
    return (
        f"SIP/2.0 200 OK\r\nVia: {hdr['via']}\r\nFrom: {hdr['from']}\r\nTo: {hdr['to']};tag={tag}\r\n"
        f"Call-ID: {hdr['call-id']}\r\nCSeq: {hdr['cseq']}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@dataclass
class Site:
    """A gateway pinned to CPU 0 and an NVR (this process, CPU 1) registered with it."""

    proc: subprocess.Popen[bytes]
    dev: socket.socket
    dest: tuple[str, int]
    admin_port: int


@contextlib.contextmanager
def nvr_site() -> Iterator[Site]:
    """:class:`Site` with the NVR registered; the gateway stopped after."""
    os.sched_setaffinity(0, {1})
    sip_port, admin_port = free_port(socket.SOCK_DGRAM), free_port()
    proc = start_server(
        sip_port, admin_port, 0, "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe="
    )
    dev = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dev.bind(("127.0.0.1", 0))
    dev.settimeout(10)
    dest = ("127.0.0.1", sip_port)
    try:
        register_device(dev, dest)
        yield Site(proc, dev, dest, admin_port)
    finally:
        dev.close()
        proc.terminate()
        proc.wait(15)


def bench_sync(channels: int, per_message: int) -> None:
    with nvr_site() as site:
        c0 = cpu_seconds(site.proc.pid)
        seconds = load_catalog(site.dev, site.dest, site.admin_port, channels, per_message)
        url = f"http://127.0.0.1:{site.admin_port}/api/v1/channels?device={NVR}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            stored = resp.read().count(b'"channel_id"')
        print(
            f"catalog of {channels} channels in {channels // per_message} MESSAGEs: {seconds:.3f} s from query to stored "
            f"({stored} channels listed), gateway CPU {cpu_seconds(site.proc.pid) - c0:.2f} s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["parse", "sync"])
    ap.add_argument("--channels", type=int, default=1000)
    ap.add_argument("--per-message", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5000)
    args = ap.parse_args()
    if args.mode == "parse":
        bench_parse(args.rounds)
    else:
        bench_sync(args.channels, args.per_message)


if __name__ == "__main__":
    main()
