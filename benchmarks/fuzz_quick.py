"""The quick path against the general one, whole: two gateways in one process, mutated devices' traffic.

Two real :class:`~gb28181gw.app.Gateway` s (SQLite in a temporary directory, digest password,
127.0.0.1, port 0), one with ``registrar.quick_path = true`` and one with ``false``, their UDP
sockets replaced by sinks (as ``bench_quick.py`` does). For each of ``--devices`` devices (an
address of its own, so that bans stay apart), both are fed the same datagrams, mutated alike:
a REGISTER, the authenticated REGISTER answering each gateway's own challenge, the same again
(a retransmission: absorbed), again on a new branch (a replay: refused), and a keepalive. Every
answer must be the same bytes on both once To tags, nonces, responses and Date are masked, and
afterwards the registrar's counters, bans and the device's record must be the same.

Mutations (1 to 3 a message): a token inserted or a character replaced (blanks, CR, LF, quotes,
backslash, commas, Unicode white space, header lines, digest parameters), a span deleted, a line
repeated or moved, a header name's case changed, a value replaced; Content-Length mostly fixed up
after. Exits 1 at the first difference, printing the datagram.

    python benchmarks/fuzz_quick.py --devices 20000 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import random
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quick import Sink  # noqa: E402
from gb28181gw.app import Gateway  # noqa: E402
from gb28181gw.config import load_config  # noqa: E402
from gb28181gw.sip.peer import Peer  # noqa: E402

PASSWORD = "12345678"
REALM = "3402000000"
URI = "sip:34020000002000000001@3402000000"

TOKENS = [
    " ", "\t", "  ", "\r\n", "\r", "\n", "\r\n ", ",", ";", '"', "\\", "<", ">", ":", "=", "@", ";tag=x", ";rport",
    "é", "\x00", "\x0b", "\x7f", "\xa0", "\u3000", "\x85", "\u2028", "\x1c", "sip:", "SIP/2.0/UDP ", "tag", "0", "65536",
    "\r\nVia: SIP/2.0/UDP 1.1.1.1;branch=z9hG4bKq", "\r\nContent-Length: 0", "\r\nTo: <sip:x@y>", "\r\nCSeq: 2 REGISTER",
    "\r\nExpires: 1", "received=1.1.1.1", "REGISTER", "MESSAGE", " " * 20, '\\"', ",qop=auth", ",algorithm=MD5-sess",
    ",algorithm=SHA-256", ',opaque="o"', "Digest", "<CmdType>Keepalive</CmdType>", "<![CDATA[", "]]>",
]  # fmt: skip
VALUES = [
    "", " ", "  \t ", " x y ", " \u00e9", ' "q" <sip:a@b>', " <sip:a@b>;tag=1", " sip:a@b", " SIP/2.0/TCP h;branch=z9hG4bKx",
    " SIP/2.0/UDP h;branch=z9hG4bK", " 1 register", " 2147483648 REGISTER", " 256", " 00070", " \u0661", " *", " 0", " 30",
    " 99999999999",
]  # fmt: skip


def mutate(rnd: random.Random, text: str) -> str:
    head, sep, body = text.partition("\r\n\r\n")
    for _ in range(rnd.randint(1, 3)):
        lines = head.split("\r\n")
        op = rnd.randrange(9)
        i = rnd.randrange(1, len(lines)) if len(lines) > 1 else 0
        name, colon, value = lines[i].partition(":")
        if op == 0 and head:
            at = rnd.randrange(len(head))
            head = head[:at] + rnd.choice(TOKENS) + head[at + 1 :]
            continue
        if op == 1:
            at = rnd.randrange(len(head) + 1)
            head = head[:at] + rnd.choice(TOKENS) + head[at:]
            continue
        if op == 2 and head:
            at = rnd.randrange(len(head))
            head = head[:at] + head[at + rnd.randint(1, 8) :]
            continue
        if op == 3:
            lines.insert(rnd.randrange(1, len(lines) + 1), lines[i])
        elif op == 4 and len(lines) > 2:
            j = rnd.randrange(1, len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 5:
            name = rnd.choice([name.lower(), name.upper(), name.swapcase(), name + " ", name.title()])
            lines[i] = name + colon + value
        elif op == 6:
            lines[i] = name + colon + rnd.choice(VALUES)
        elif op == 7:
            at = rnd.randrange(len(value) + 1)
            lines[i] = name + colon + value[:at] + rnd.choice(TOKENS) + value[at:]
        elif op == 8:
            body = rnd.choice([body, body + "x", body[:-1], body.replace("Keepalive", " Keepalive ")])
        head = "\r\n".join(lines)
    if sep and rnd.random() < 0.8:
        n = len(body.encode("utf-8", "surrogateescape"))
        head = "\r\n".join(
            f"Content-Length: {n}" if x.lower().startswith("content-length:") else x for x in head.split("\r\n")
        )
    return head + sep + body


def device_id(n: int) -> str:
    return f"3402000000132{n:07d}"


def register(n: int, host: str, branch: str, cseq: int, auth: str = "") -> str:
    return (
        f"REGISTER {URI} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:5060;rport;branch=z9hG4bK{branch}\r\n"
        f"From: <sip:{device_id(n)}@{REALM}>;tag=f{n}\r\nTo: <sip:{device_id(n)}@{REALM}>\r\n"
        f"Call-ID: reg-{n}@{host}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{device_id(n)}@{host}:5060>\r\n{auth}"
        "Max-Forwards: 70\r\nUser-Agent: IP Camera\r\nExpires: 3600\r\nX-GB-ver: 3.0\r\nContent-Length: 0\r\n\r\n"
    )


def keepalive(n: int, host: str) -> str:
    body = (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n'
        f"<DeviceID>{device_id(n)}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
    )
    return (
        f"MESSAGE {URI} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:5060;rport;branch=z9hG4bKk{n}\r\n"
        f"From: <sip:{device_id(n)}@{REALM}>;tag=k{n}\r\nTo: <{URI}>\r\nCall-ID: ka-{n}@{host}\r\nCSeq: 20 MESSAGE\r\n"
        f"Content-Type: Application/MANSCDP+xml\r\nMax-Forwards: 70\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )


def authorization(n: int, answer: bytes) -> str:
    nonce = answer.split(b'nonce="', 1)[1].split(b'"', 1)[0].decode()
    ha1 = hashlib.md5(f"{device_id(n)}:{REALM}:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{URI}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    return (
        f'Authorization: Digest username="{device_id(n)}",realm="{REALM}",nonce="{nonce}",uri="{URI}",'
        f'response="{response}",algorithm=MD5\r\n'
    )


#: The gateways' To tags (12 hex digits) are their own; nonces, responses and Date are made alike
#: (one MAC key, one clock: see run)
_MASKS = [(re.compile(rb";tag=[0-9a-f]{12}(?=[;\r])"), b";tag=T")]


def masked(data: bytes) -> bytes:
    for pattern, replacement in _MASKS:
        data = pattern.sub(replacement, data)
    return data


class Sinks(Sink):
    """Keeps every datagram sent."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []

    def send(self, data: bytes, peer: Peer) -> None:
        self.out.append(data)

    def sendto(self, data: bytes, addr: object) -> None:
        self.out.append(data)


async def start(tmp: str, quick: bool) -> tuple[Gateway, Sinks]:
    settings = {
        "store.path": f"{tmp}/{quick}.db", "sip.listen": "127.0.0.1", "sip.port": "0", "admin.port": "0",
        "registrar.password": PASSWORD, "registrar.quick_path": "true" if quick else "false",
        "devices.catalog_on_register": "false", "devices.subscribe": "", "media.workers": "0",
    }  # fmt: skip
    gw = Gateway(load_config(None, env={}, overrides=settings))
    await gw.start()
    sink = Sinks()
    for t in gw.stack._udp:
        t.close()
    gw.stack._udp = [sink]  # type: ignore[list-item]
    gw.stack._udp4 = sink  # type: ignore[assignment]
    return gw, sink


def record(gw: Gateway, device: str) -> dict[str, Any] | None:
    d = gw.registrar.devices.get(device)
    if d is None:
        return None
    out = dataclasses.asdict(d)
    # times read from the clock by each gateway a few µs apart: to the second
    del out["local_port"]  # each gateway's own
    return {k: (round(v) if isinstance(v, float) else v) for k, v in out.items()}


async def run(args: argparse.Namespace) -> int:
    rnd = random.Random(args.seed)
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        (gq, sq), (gg, sg) = await start(tmp, True), await start(tmp, False)
        # one MAC key and one clock for both registrars: the same challenges get the same nonces
        clock = [loop.time(), 1_800_000_000.0]
        for gw in (gq, gg):
            gw.registrar.registrar.nonces._secret = b"k" * 32
            gw.registrar._now = lambda: (clock[0], clock[1])  # type: ignore[method-assign]
        try:
            stats = {"sent": 0, "200": 0}
            quick_answers = gq.stack.counters.requests

            sent: list[bytes] = [b"", b""]

            def both(n: int, texts: tuple[str, str], peer: Peer, *, odd: bool = True) -> tuple[bytes, bytes]:
                state = rnd.getstate()
                outs = []
                for k, ((gw, sink), text) in enumerate(zip(((gq, sq), (gg, sg)), texts, strict=True)):
                    rnd.setstate(state)
                    if odd and rnd.random() < args.rate:
                        text = mutate(rnd, text)
                    data = sent[k] = text.encode("utf-8", "surrogateescape")
                    del sink.out[:]
                    gw.stack.feed(data, peer, loop.time())
                    gw.stack.pump()
                    outs.append((data, b"\n".join(masked(x) for x in sink.out)))
                stats["sent"] += 1
                clock[0] += 0.01
                clock[1] += 0.01
                (dq, aq), (_, ag) = outs
                if aq != ag:
                    print(f"DIFFERENT ANSWERS, device {n}\nsent {dq!r}\nquick   {aq!r}\ngeneral {ag!r}")
                    raise SystemExit(1)
                return sq.out[-1] if sq.out else b"", sg.out[-1] if sg.out else b""

            for n in range(args.devices):
                host = f"127.{1 + n // 65000 % 250}.{n // 250 % 260 % 256}.{1 + n % 250}"
                peer = Peer("UDP", host, 5060)
                first = register(n, host, f"a{n}", 1)
                aq, ag = both(n, (first, first), peer)
                if b'nonce="' in aq and b'nonce="' in ag:
                    signed = (register(n, host, f"b{n}", 2, authorization(n, aq)),
                              register(n, host, f"b{n}", 2, authorization(n, ag)))  # fmt: skip
                    state = rnd.getstate()
                    aq, ag = both(n, signed, peer)
                    rnd.setstate(state)  # the same datagram again: a retransmission
                    both(n, signed, peer)
                    stats["200"] += aq.startswith(b"SIP/2.0 200")
                    rq = b""
                    if aq.startswith(b"SIP/2.0 200") and f"z9hG4bKb{n};".encode() in sent[0]:
                        # what was accepted, again on a new branch: a replay of its nonce (without
                        # the branch it would be a retransmission, answered the same again)
                        replay = tuple(d.replace(f"z9hG4bKb{n}".encode(), f"z9hG4bKc{n}".encode()) for d in sent)
                        texts = (
                            replay[0].decode("utf-8", "surrogateescape"),
                            replay[1].decode("utf-8", "surrogateescape"),
                        )
                        rq, _ = both(n, texts, peer, odd=False)
                    if aq.startswith(b"SIP/2.0 200") and rq.startswith(b"SIP/2.0 200"):
                        print(f"REPLAY ACCEPTED, device {n}\n{sent[0]!r}\n{rq!r}")
                        raise SystemExit(1)
                ka = keepalive(n, host)
                both(n, (ka, ka), peer)
                if record(gq, device_id(n)) != record(gg, device_id(n)):
                    print(f"DIFFERENT RECORDS, device {n}\n{record(gq, device_id(n))}\n{record(gg, device_id(n))}")
                    return 1
                if n % 2000 == 0:
                    print(n, stats, dict(quick_answers), flush=True)
            rq_, rg_ = gq.registrar, gg.registrar
            for name in ("registrations", "keepalives", "auth_failures", "ban_count"):
                if getattr(rq_, name) != getattr(rg_, name):
                    print(f"DIFFERENT {name}\n{getattr(rq_, name)}\n{getattr(rg_, name)}")
                    return 1
            if {b.key for b in rq_.registrar.bans.active(loop.time())} != {
                b.key for b in rg_.registrar.bans.active(loop.time())
            }:
                print("DIFFERENT BANS")
                return 1
            print("same:", stats, "quick path answered:", dict(quick_answers))
            return 0
        finally:
            await gq.stop()
            await gg.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=0.7, help="share of datagrams mutated")
    sys.exit(asyncio.run(run(p.parse_args())))


if __name__ == "__main__":
    main()
