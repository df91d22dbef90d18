"""Our catalog toward a superior: a 10,000-channel tree answered in batches of 8 (issue 12 benchmark).

`gb28181gw serve` pinned to CPU 0 with one ``[[upstream]]`` (``catalog_batch = 8``); on CPU 1 an
NVR registers and gives it a catalog of ``--channels`` channels, and a superior (a bare UDP
socket) takes our registration, sends a Catalog Query and answers each Response MESSAGE 200 at
once — the gateway sends the next only after that 200 (PROTOCOL.md §5.5.5). Prints the seconds
from the query to the superior's 200 to the last message, and the items received against SumNum.
Target: < 10 s for 10,000 channels on loopback.

  python benchmarks/bench_cascade_catalog.py --channels 10000 --batch 8
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_catalog import load_catalog, ok_for, register_device  # noqa: E402
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


def bench(channels: int, batch: int) -> None:
    os.sched_setaffinity(0, {1})
    sup = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sup.bind(("127.0.0.1", 0))
    sup.settimeout(30)
    config = Path(tempfile.mkdtemp(prefix="gb28181gw-bench-")) / "gw.toml"
    config.write_text(
        f'[[upstream]]\nname = "district"\nid = "{SUPERIOR}"\nhost = "127.0.0.1"\nport = {sup.getsockname()[1]}\n'
        f"catalog_batch = {batch}\nkeepalive_interval = 3600\n"
    )
    sip_port, admin_port = free_port(socket.SOCK_DGRAM), free_port()
    proc = start_server(
        sip_port, admin_port, 0, "-c", str(config), "--set", "devices.catalog_on_register=false",
        "--set", "devices.subscribe=",
    )  # fmt: skip
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    bench(args.channels, args.batch)


if __name__ == "__main__":
    main()
