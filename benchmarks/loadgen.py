"""A small paced SIP load generator over UDP (one core, no dependencies).

One SIPp process tops out well below what we need to offer on this machine, and
several SIPp processes would compete with the server for the second core. This
generator builds each request from a template (unique branch and Call-ID), paces
sends on a 1 ms grid across many sockets (as many "devices"), never retransmits
(a lost answer counts as a failure), and matches answers by the request number
carried in the branch.

    python benchmarks/loadgen.py --port 5060 --rate 20000 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import time
from dataclasses import asdict, dataclass

TEMPLATE = (
    "{method} sip:34020000002000000001@{host}:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{lport};rport;branch=z9hG4bK-lg-{n}-\r\n"
    "From: <sip:3402000000132{dev:07d}@3402000000>;tag=lg{n}\r\n"
    "To: <sip:34020000002000000001@3402000000>\r\n"
    "Call-ID: lg-{n}@127.0.0.1\r\n"
    "CSeq: 1 {method}\r\n"
    "Max-Forwards: 70\r\n"
    "User-Agent: IP Camera\r\n"
    "Content-Length: 0\r\n\r\n"
)


@dataclass
class Result:
    offered_rate: float
    sent: int
    answered: int
    failures: int
    failure_pct: float
    achieved_rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def run(
    host: str, port: int, rate: float, seconds: float, *, sockets: int = 64, method: str = "OPTIONS", wait: float = 2.0
) -> Result:
    socks = []
    sel = selectors.DefaultSelector()
    for _ in range(sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ)
    ports = [s.getsockname()[1] for s in socks]
    total = int(rate * seconds)
    sent_at = [0.0] * total
    answered_at = [0.0] * total
    answered = 0
    sent = 0
    dest = (host, port)
    start = time.perf_counter()
    end_send = start + seconds
    marker = b"branch=z9hG4bK-lg-"

    def drain(timeout: float) -> None:
        nonlocal answered
        for key, _ in sel.select(timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            while True:
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    break
                if not data.startswith(b"SIP/2.0 2"):
                    continue
                i = data.find(marker)
                if i < 0:
                    continue
                j = data.find(b"-", i + len(marker))
                n = int(data[i + len(marker) : j])
                if answered_at[n] == 0.0:
                    answered_at[n] = time.perf_counter()
                    answered += 1

    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        while sent < due:
            k = sent % sockets
            msg = TEMPLATE.format(method=method, host=host, port=port, lport=ports[k], n=sent, dev=sent % 10_000_000)
            try:
                socks[k].sendto(msg.encode(), dest)
            except BlockingIOError:
                pass  # counted as a failure: never answered
            sent_at[sent] = time.perf_counter()
            sent += 1
        drain(0)
        if now > end_send + 5:
            break
        remaining = start + (sent + 1) / rate - time.perf_counter()
        if remaining > 0:
            drain(min(remaining, 0.001))
    last = time.perf_counter()
    while answered < sent and time.perf_counter() - last < wait:
        drain(0.05)
    duration = max(sent_at[sent - 1] - start, 1e-9) if sent else 1e-9
    latencies = sorted((a - s) * 1000 for a, s in zip(answered_at, sent_at, strict=True) if a)
    for s in socks:
        s.close()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    failures = sent - answered
    return Result(
        offered_rate=rate,
        sent=sent,
        answered=answered,
        failures=failures,
        failure_pct=100.0 * failures / sent if sent else 0.0,
        achieved_rate=answered / duration,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        max_ms=latencies[-1] if latencies else float("nan"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5060)
    ap.add_argument("--rate", type=float, default=10000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--sockets", type=int, default=64)
    ap.add_argument("--method", default="OPTIONS")
    ap.add_argument("--cpu", type=int, default=None, help="pin the generator to this CPU")
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(
        json.dumps(asdict(run(args.host, args.port, args.rate, args.seconds, sockets=args.sockets, method=args.method)))
    )


if __name__ == "__main__":
    main()
