"""Our catalog toward a superior: a 10,000-channel tree answered in batches of 8 (issue 12 benchmark).

`gb28181gw serve` pinned to CPU 0 with one ``[[upstream]]`` (``catalog_batch = 8``); on CPU 1 an
NVR registers and gives it a catalog of ``--channels`` channels, and a superior (a bare UDP
socket) takes our registration, sends a Catalog Query and answers each Response MESSAGE 200 at
once — the gateway sends the next only after that 200 (PROTOCOL.md §5.5.5). Prints the seconds
from the query to the superior's 200 to the last message, and the items received against SumNum.
Target: < 10 s for 10,000 channels on loopback.

  python benchmarks/bench_cascade_catalog.py --channels 10000 --batch 8

``--stalls``: how long the gateway's event loop is held while it serves the catalog. Two
superiors register and subscribe to our catalog; ``--devices`` NVRs share ``--channels``
channels (catalogs answered when the gateway asks on registration); a prober sends an OPTIONS
every 2 ms and the longest wait for its 200 is the loop's longest stall. Printed for a
Catalog query of the whole tree (until its last part) and for a burst of 100 changes (100
NVRs unregister at once; until the NOTIFYs stop).

  python benchmarks/bench_cascade_catalog.py --stalls --channels 10000 --devices 100
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_catalog import load_catalog, ok_for, register_device, sip  # noqa: E402
from bench_options import cpu_seconds, free_port, start_server  # noqa: E402

SUPERIOR = "34010000002000000001"
OURS = "34020000002000000001"


def query(sip_port: int, port: int, sn: int) -> bytes:
    body = (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n'
        f"<DeviceID>{OURS}</DeviceID>\r\n</Query>\r\n"
    ).encode()
    return (
        f"MESSAGE sip:{OURS}@127.0.0.1:{sip_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-q{sn}\r\n"
        f"From: <sip:{SUPERIOR}@3401000000>;tag=q{sn}\r\nTo: <sip:{OURS}@3402000000>\r\nCall-ID: q{sn}@127.0.0.1\r\n"
        f"CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: Application/MANSCDP+xml\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _gateway(superiors: list[tuple[str, str, int]], batch: int) -> tuple[int, int, subprocess.Popen[bytes]]:
    """``gb28181gw serve`` with one ``[[upstream]]`` per (name, ID, UDP port): its SIP and admin ports."""
    config = Path(tempfile.mkdtemp(prefix="gb28181gw-bench-")) / "gw.toml"
    config.write_text(
        "".join(
            f'[[upstream]]\nname = "{name}"\nid = "{sid}"\nhost = "127.0.0.1"\nport = {port}\n'
            f"catalog_batch = {batch}\nkeepalive_interval = 3600\n"
            for name, sid, port in superiors
        )
    )
    sip_port, admin_port = free_port(socket.SOCK_DGRAM), free_port()
    proc = start_server(
        sip_port, admin_port, 0, "-c", str(config), "--set", "devices.catalog_on_register=false",
        "--set", "devices.subscribe=",
    )  # fmt: skip
    return sip_port, admin_port, proc


def bench(channels: int, batch: int) -> None:
    os.sched_setaffinity(0, {1})
    sup = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sup.bind(("127.0.0.1", 0))
    sup.settimeout(30)
    sip_port, admin_port, proc = _gateway([("district", SUPERIOR, sup.getsockname()[1])], batch)
    dest = ("127.0.0.1", sip_port)
    dev = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dev.bind(("127.0.0.1", 0))
    dev.settimeout(30)
    try:
        register = sup.recv(65535)  # our upward REGISTER
        assert register.startswith(b"REGISTER"), register[:80]
        sup.sendto(ok_for(register, "sup").replace(b"Content-Length: 0", b"Expires: 3600\r\nContent-Length: 0"), dest)
        register_device(dev, dest)
        stored = load_catalog(dev, dest, admin_port, channels, 10)
        c0 = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        sup.sendto(query(sip_port, sup.getsockname()[1], 88), dest)
        items = messages = 0
        sum_num = -1
        last = t0
        while sum_num < 0 or items < sum_num:
            data = sup.recv(65535)
            if data.startswith(b"SIP/2.0"):
                continue  # the 200 to our query
            sup.sendto(ok_for(data, "sup"), dest)
            last = time.perf_counter()
            if b"<CmdType>Catalog</CmdType>" not in data or b"<SN>88</SN>" not in data:
                continue  # a keepalive
            messages += 1
            sum_num = int(re.search(rb"<SumNum>(\d+)</SumNum>", data).group(1))  # type: ignore[union-attr]
            items += data.count(b"<Item>")
        print(
            f"catalog of {channels} channels to a superior, batch {batch}: {last - t0:.3f} s from query to the last "
            f"200 ({items} items = SumNum {sum_num}, {messages} MESSAGEs), gateway CPU {cpu_seconds(proc.pid) - c0:.2f} s "
            f"(the device's catalog stored in {stored:.2f} s before)"
        )
    finally:
        dev.close()
        sup.close()
        proc.terminate()
        proc.wait(15)


CITY = "34000000002000000001"


def _nvr(d: int) -> str:
    return f"3402000000118{d:07d}"


def _catalog_part(device: str, d: int, sn: int, first: int, count: int, total: int) -> bytes:
    items = "".join(
        f"<Item>\r\n<DeviceID>3402000000131{d:03d}{n:04d}</DeviceID>\r\n<Name>通道{n}号</Name>\r\n"
        f"<Manufacturer>Hikvision</Manufacturer>\r\n<CivilCode>340202</CivilCode>\r\n<ParentID>{device}</ParentID>\r\n"
        "<Status>ON</Status>\r\n</Item>\r\n"
        for n in range(first, first + count)
    )
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n'
        f'<DeviceID>{device}</DeviceID>\r\n<SumNum>{total}</SumNum>\r\n<DeviceList Num="{count}">\r\n{items}'
        "</DeviceList>\r\n</Response>\r\n"
    ).encode("gb18030")


class _Peer(threading.Thread):
    """A UDP socket that answers every request 200 and hands each to ``seen``."""

    def __init__(self, seen: object = None) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.seen = seen
        self.running = True
        self.dest: tuple[str, int] = ("127.0.0.1", 0)
        self.last = time.perf_counter()
        self.notifies = 0
        self.parts: dict[int, int] = {}  # catalog answer SN -> items received

    def run(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if data.startswith(b"SIP/2.0"):
                continue
            extra = b"Expires: 3600\r\n" if data.startswith(b"REGISTER") else b""
            self.sock.sendto(ok_for(data, "p").replace(b"Content-Length: 0", extra + b"Content-Length: 0"), addr)
            self.last = time.perf_counter()
            if data.startswith(b"NOTIFY"):
                self.notifies += 1
            elif data.startswith(b"MESSAGE") and b"<Response>" in data and b"<CmdType>Catalog" in data:
                sn = int(re.search(rb"<SN>(\d+)</SN>", data).group(1))  # type: ignore[union-attr]
                self.parts[sn] = self.parts.get(sn, 0) + data.count(b"<Item>")
            if callable(self.seen):
                self.seen(self, data)


class _Prober(threading.Thread):
    """OPTIONS to the gateway every 2 ms; the longest wait for a 200 within a window."""

    def __init__(self, dest: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2)
        self.dest = dest
        self.worst = 0.0
        self.running = True

    def run(self) -> None:
        port, n = self.sock.getsockname()[1], 0
        while self.running:
            n += 1
            probe = (
                f"OPTIONS sip:{OURS}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-o{n}\r\n"
                f"From: <sip:probe@127.0.0.1>;tag=o\r\nTo: <sip:{OURS}@127.0.0.1>\r\nCall-ID: o{n}@probe\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            t0 = time.perf_counter()
            self.sock.sendto(probe, self.dest)
            try:
                while f"o{n}@probe".encode() not in self.sock.recv(65535):
                    pass
            except TimeoutError:
                pass
            self.worst = max(self.worst, time.perf_counter() - t0)
            time.sleep(0.002)

    def window(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst


def _quiet(peers: list[_Peer], seconds: float, limit: float = 60) -> None:
    """Wait until none of ``peers`` got anything for ``seconds``."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline and time.perf_counter() - max(p.last for p in peers) < seconds:
        time.sleep(0.05)


def bench_stalls(channels: int, devices: int, batch: int) -> None:
    os.sched_setaffinity(0, {1})
    per_device = channels // devices

    def device_side(peer: _Peer, data: bytes) -> None:
        # the gateway asks each NVR for its catalog on registration: answered in parts of 10
        if not data.startswith(b"MESSAGE") or b"<CmdType>Catalog</CmdType>" not in data or b"<Query>" not in data:
            return
        device = re.search(rb"<DeviceID>(\d+)</DeviceID>", data).group(1).decode()  # type: ignore[union-attr]
        sn = int(re.search(rb"<SN>(\d+)</SN>", data).group(1))  # type: ignore[union-attr]
        d = int(device[-7:])
        for m in range(0, per_device, 10):
            body = _catalog_part(device, d, sn, m, min(10, per_device - m), per_device)
            message = sip("MESSAGE", f"sip:{OURS}@3402000000", peer.port, 10_000 * (d + 1) + m, body)
            peer.sock.sendto(message.replace(NVR_ID, device.encode(), 1), peer.dest)  # From: the NVR

    district, city, dev = _Peer(), _Peer(), _Peer(device_side)
    sip_port, admin_port, proc = _gateway([("district", SUPERIOR, district.port), ("city", CITY, city.port)], batch)
    dest = ("127.0.0.1", sip_port)
    for peer in (district, city, dev):
        peer.dest = dest
        peer.start()
    prober = _Prober(dest)
    try:
        for d in range(devices):
            contact = f"Contact: <sip:{_nvr(d)}@127.0.0.1:{dev.port}>\r\nExpires: 3600\r\n"
            register = sip("REGISTER", "sip:34020000002000000001@3402000000", dev.port, 100_000 + d, extra=contact)
            dev.sock.sendto(register.replace(NVR_ID, _nvr(d).encode()), dest)
        _quiet([dev], 0.5)
        for d in range(devices):  # the catalogs, one NVR after the other (the admin API waits for each)
            req = urllib.request.Request(
                f"http://127.0.0.1:{admin_port}/api/v1/devices/{_nvr(d)}/catalog", method="POST",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()
        for n, (peer, sid) in enumerate(((district, SUPERIOR), (city, CITY))):
            body = query(sip_port, peer.port, 7 + n).split(b"\r\n\r\n", 1)[1]
            subscribe = (
                f"SUBSCRIBE sip:{OURS}@127.0.0.1:{sip_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK-s{n}\r\n"
                f"From: <sip:{sid}@3401000000>;tag=s{n}\r\nTo: <sip:{OURS}@3402000000>\r\nCall-ID: s{n}@sup\r\n"
                f"CSeq: 1 SUBSCRIBE\r\nContact: <sip:{sid}@127.0.0.1:{peer.port}>\r\nMax-Forwards: 70\r\nEvent: Catalog\r\n"
                f"Expires: 600\r\nContent-Type: Application/MANSCDP+xml\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            peer.sock.sendto(subscribe, dest)
        time.sleep(1)
        _quiet([district, city], 1)
        prober.start()
        time.sleep(0.5)
        idle = prober.window()
        t0 = time.perf_counter()
        district.sock.sendto(query(sip_port, district.port, 88), dest)
        while district.parts.get(88, 0) < channels and time.perf_counter() - t0 < 60:
            time.sleep(0.01)
        during_query = prober.window()
        query_seconds = time.perf_counter() - t0
        notifies = district.notifies + city.notifies
        t0 = time.perf_counter()
        for d in range(devices):
            contact = f"Contact: <sip:{_nvr(d)}@127.0.0.1:{dev.port}>\r\nExpires: 0\r\n"
            register = sip("REGISTER", "sip:34020000002000000001@3402000000", dev.port, 5000 + d, extra=contact)
            dev.sock.sendto(register.replace(NVR_ID, _nvr(d).encode()), dest)
        time.sleep(0.5)
        _quiet([district, city], 1)
        during_burst = prober.window()
        print(
            f"loop stalls, {channels} channels on {devices} NVRs, 2 subscribed superiors, batch {batch}: "
            f"idle {idle * 1000:.1f} ms; during a Catalog query of the whole tree {during_query * 1000:.1f} ms "
            f"({district.parts.get(88, 0)} channels' items in {query_seconds:.2f} s); during a burst of {devices} "
            f"changes (NVRs unregistering) {during_burst * 1000:.1f} ms "
            f"({district.notifies + city.notifies - notifies} NOTIFYs to the two superiors)"
        )
    finally:
        prober.running = False
        for peer in (district, city, dev):
            peer.running = False
        proc.terminate()
        proc.wait(15)


NVR_ID = b"34020000001180000001"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--stalls", action="store_true", help="the loop's longest stall during a query and 100 changes")
    ap.add_argument("--devices", type=int, default=100, help="NVRs the channels are spread over (--stalls)")
    args = ap.parse_args()
    if args.stalls:
        bench_stalls(args.channels, args.devices, args.batch)
    else:
        bench(args.channels, args.batch)


if __name__ == "__main__":
    main()
