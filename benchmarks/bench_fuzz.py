"""A bounded fuzz run against a real ``gb28181gw serve`` process on 127.0.0.1.

Mutates a seed set of valid GB/T 28181 messages (REGISTER with and without Authorization,
MESSAGE Keepalive/Catalog/Alarm with GB2312 MANSCDP bodies, INVITE with SDP, BYE, NOTIFY,
SUBSCRIBE, OPTIONS) and sends them, mostly over UDP and some over TCP (a new connection each
time, pipelined or cut short), while a well-behaved device on its own socket registers and
sends a Keepalive every ``--keepalive-period`` seconds and must get its 200 within 1 s.

Afterwards it waits ``--settle`` seconds (the gateway runs a full collection every 60 s) and
prints a table: messages by transport, rate, gateway CPU, keepalive misses and latency, RSS
start/peak/end, log volume, and the distinct answers. It exits 1 if the gateway died, a
keepalive was missed, RSS ended above 1.2 × its start or the log exceeded ``--max-log-bytes``.

``--collect DIR`` also keeps, for each distinct answer (status + Warning text with digits
masked, or no answer), the shortest message that produced it, replays each once more over
UDP and TCP against a fresh gateway with a registered device (as ``tests/hostile/
test_fuzz_corpus.py`` does) and writes the ones whose answer is reproducible to DIR with an
``index.json`` of the expected statuses.

    python benchmarks/bench_fuzz.py --messages 1000000 --seed 1
    python benchmarks/bench_fuzz.py --messages 100000 --settle 0 --collect tests/hostile/fixtures/sip
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gb28181gw.sip.auth import Challenge, authorization_for
from gb28181gw.sip.message import Response, parse_message

GATEWAY_ID = "34020000002000000001"
DOMAIN = "3402000000"
#: The well-behaved device: an ID the seed messages never use.
GOOD_DEVICE = "34020000001329999999"
#: Answers must arrive within this many seconds.
KEEPALIVE_DEADLINE = 1.0
#: Bound on the gateway's log over the whole run (issue 10 item 12: 16.8 MB for 132,000 messages before).
MAX_LOG_BYTES = 2_000_000
RSS_RATIO_LIMIT = 1.2

# --- seed messages ---------------------------------------------------------------------------
# {br} branch, {ci} Call-ID, {tag} From tag, {dev} device ID, {cseq}, {sn}, {port}; all filled per message.

SDP = (
    "v=0\r\no={dev} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=video 30000 RTP/AVP 96 98 97\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\na=rtpmap:98 H264/90000\r\n"
    "a=rtpmap:97 MPEG4/90000\r\ny=0100000001\r\nf=\r\n"
)


def _xml(root: str, cmd: str, inner: str) -> str:
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<{root}>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>{{sn}}</SN>\r\n'
        f"<DeviceID>{{dev}}</DeviceID>\r\n{inner}</{root}>\r\n"
    )


KEEPALIVE_XML = _xml("Notify", "Keepalive", "<Status>OK</Status>\r\n")
ALARM_XML = _xml(
    "Notify",
    "Alarm",
    "<AlarmPriority>1</AlarmPriority>\r\n<AlarmMethod>2</AlarmMethod>\r\n<AlarmTime>2026-12-02T10:00:00</AlarmTime>"
    "\r\n<AlarmDescription>\xd2\xc6\xb6\xaf\xd5\xec\xb2\xe2</AlarmDescription>\r\n",
)
CATALOG_XML = _xml(
    "Response",
    "Catalog",
    '<SumNum>2</SumNum>\r\n<DeviceList Num="2">\r\n'
    "<Item>\r\n<DeviceID>34020000001310000001</DeviceID>\r\n<Name>\xc9\xe3\xcf\xf1\xbb\xfa1</Name>\r\n"
    "<Manufacturer>Hikvision</Manufacturer>\r\n<Model>IPC</Model>\r\n<Owner>Owner</Owner>\r\n"
    "<CivilCode>3402000000</CivilCode>\r\n<Address>Address</Address>\r\n<Parental>0</Parental>\r\n"
    "<ParentID>{dev}</ParentID>\r\n<SafetyWay>0</SafetyWay>\r\n<RegisterWay>1</RegisterWay>\r\n"
    "<Secrecy>0</Secrecy>\r\n<Status>ON</Status>\r\n</Item>\r\n"
    "<Item>\r\n<DeviceID>34020000001310000002</DeviceID>\r\n<Name>cam2</Name>\r\n<Status>OFF</Status>\r\n"
    "<Longitude>116.3</Longitude>\r\n<Latitude>39.9</Latitude>\r\n</Item>\r\n</DeviceList>\r\n",
)
NOTIFY_XML = _xml(
    "Notify",
    "Catalog",
    '<SumNum>1</SumNum>\r\n<DeviceList Num="1">\r\n<Item>\r\n<DeviceID>34020000001310000003</DeviceID>\r\n'
    "<Event>ADD</Event>\r\n<Name>new</Name>\r\n<Status>ON</Status>\r\n</Item>\r\n</DeviceList>\r\n",
)
SUBSCRIBE_XML = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n'
    "<DeviceID>{dev}</DeviceID>\r\n</Query>\r\n"
)


def _request(method: str, uri: str, to: str, extra: str, body: str = "", ctype: str = "") -> str:
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch={br}\r\n"
        f"From: <sip:{{dev}}@{DOMAIN}>;tag={{tag}}\r\n"
        f"To: <sip:{to}@{DOMAIN}>{{totag}}\r\n"
        "Call-ID: {ci}\r\n"
        f"CSeq: {{cseq}} {method}\r\n"
        "Max-Forwards: 70\r\n"
        "User-Agent: IP Camera\r\n"
        f"{extra}"
    )
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    return head + "Content-Length: {clen}\r\n\r\n" + body


GW_URI = f"sip:{GATEWAY_ID}@{DOMAIN}"
AUTH = (
    'Authorization: Digest username="{dev}", realm="3402000000", nonce="9bd055a4e4bd8a7d0b0b1a4f5e3c1d2a", '
    'uri="sip:34020000002000000001@3402000000", response="0a4f113b6c9c2e2b8a4f113b6c9c2e2b", algorithm=MD5\r\n'
)
MANSCDP = "Application/MANSCDP+xml"
SEEDS: list[tuple[str, str]] = [
    ("register", _request("REGISTER", GW_URI, "{dev}", "Contact: <sip:{dev}@127.0.0.1:{port}>\r\nExpires: 3600\r\n")),
    (
        "register-auth",
        _request("REGISTER", GW_URI, "{dev}", "Contact: <sip:{dev}@127.0.0.1:{port}>\r\n" + AUTH + "Expires: 3600\r\n"),
    ),
    ("unregister", _request("REGISTER", GW_URI, "{dev}", "Contact: <sip:{dev}@127.0.0.1:{port}>\r\nExpires: 0\r\n")),
    ("keepalive", _request("MESSAGE", GW_URI, GATEWAY_ID, "", KEEPALIVE_XML, MANSCDP)),
    ("keepalive", _request("MESSAGE", GW_URI, GATEWAY_ID, "", KEEPALIVE_XML, MANSCDP)),
    ("catalog", _request("MESSAGE", GW_URI, GATEWAY_ID, "", CATALOG_XML, MANSCDP)),
    ("alarm", _request("MESSAGE", GW_URI, GATEWAY_ID, "", ALARM_XML, MANSCDP)),
    (
        "invite",
        _request(
            "INVITE",
            f"sip:34020000001310000001@{DOMAIN}",
            "34020000001310000001",
            "Contact: <sip:{dev}@127.0.0.1:{port}>\r\nSubject: 34020000001310000001:0100000001,{dev}:0\r\n",
            SDP,
            "application/sdp",
        ),
    ),
    ("bye", _request("BYE", GW_URI, GATEWAY_ID, "")),
    (
        "notify",
        _request(
            "NOTIFY",
            GW_URI,
            GATEWAY_ID,
            "Event: Catalog\r\nSubscription-State: active;expires=3600\r\n",
            NOTIFY_XML,
            MANSCDP,
        ),
    ),
    (
        "subscribe",
        _request("SUBSCRIBE", GW_URI, GATEWAY_ID, "Event: Catalog\r\nExpires: 3600\r\n", SUBSCRIBE_XML, MANSCDP),
    ),
    ("options", _request("OPTIONS", GW_URI, GATEWAY_ID, "Accept: application/sdp\r\n")),
]


class Mutator:
    """Seeded message generator: fill a seed, then apply one to three mutations."""

    HOSTILE_NUMBERS = (
        b"-1", b"0", b"-0", b"4294967296", b"18446744073709551617", b"99999999999999999999999999999", b"NaN",
        b"nan", b"inf", b"-inf", b"1e9", b"0x10", b"+5", b" 5 5", b"", b"\xd9\xa1\xd9\xa2", b"2147483648",
        b"-2147483649", b"1.5", b"5\x00", b"\xff\xfe",
    )  # fmt: skip
    NUMERIC = (b"Content-Length", b"CSeq", b"Expires", b"Max-Forwards")
    GARBAGE_BYTES = b"\x00\x01\x07\x08\x0b\x0c\x0e\x1b\x7f\r\n\t\xa1\xa2\xb0\xa1\xc0\xc1\xf5\xff\xfe\xe4\xbd"
    GB2312 = "摄像机报警中文设备".encode("gb2312")

    def __init__(self, seed: int, ids: int = 64) -> None:
        self.rng = random.Random(seed)
        self.count = 0
        self.ids = [f"3402000000132{n:07d}" for n in range(1, ids + 1)]
        self.ops = (
            self.flip, self.flip, self.flip, self.truncate, self.truncate, self.dup_header, self.number,
            self.number, self.number, self.control, self.gb2312, self.nesting, self.shuffle, self.drop_header,
            self.splice, self.method, self.long_line, self.body_len, self.garbage, self.fold,
        )  # fmt: skip

    def fill(self, template: str, port: int) -> bytes:
        """A valid message from ``template`` with fresh branch, Call-ID and tag."""
        r = self.rng
        n = self.count
        self.count += 1
        dev = r.choice(self.ids)
        head, sep, body = template.partition("\r\n\r\n")
        body = body.format(dev=dev, sn=n % 100000)
        head = head.format(
            dev=dev,
            br=f"z9hG4bKf{n}",
            ci=f"fz{n}@127.0.0.1",
            tag=f"t{n}",
            totag=";tag=gw1" if template.startswith(("BYE", "NOTIFY")) else "",
            cseq=r.randint(1, 9999),
            port=port,
            clen=len(body.encode("latin-1")),
        )
        return (head + sep + body).encode("latin-1")

    def message(self, port: int) -> bytes:
        """One mutated message (a few stay valid: the gateway's normal paths get exercised too)."""
        r = self.rng
        data = self.fill(r.choice(SEEDS)[1], port)
        if r.random() < 0.03:
            return data
        for _ in range(r.choice((1, 1, 1, 2, 2, 3))):
            data = r.choice(self.ops)(data)
        return data[:65000]

    def batch(self, n: int, port: int) -> list[bytes]:
        return [self.message(port) for _ in range(n)]

    # --- operators -----------------------------------------------------------------------
    def flip(self, d: bytes) -> bytes:
        if not d:
            return d
        b = bytearray(d)
        for _ in range(self.rng.choice((1, 1, 2, 4, 8))):
            i = self.rng.randrange(len(b))
            b[i] ^= 1 << self.rng.randrange(8) if self.rng.random() < 0.7 else self.rng.randrange(256)
        return bytes(b)

    def truncate(self, d: bytes) -> bytes:
        return d[: self.rng.randrange(len(d) + 1)]

    def _lines(self, d: bytes) -> tuple[list[bytes], bytes]:
        head, _, body = d.partition(b"\r\n\r\n")
        return head.split(b"\r\n"), body

    @staticmethod
    def _join(lines: list[bytes], body: bytes) -> bytes:
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def dup_header(self, d: bytes) -> bytes:
        lines, body = self._lines(d)
        if len(lines) < 2:
            return d
        i = self.rng.randrange(1, len(lines))
        lines[i + 1 : i + 1] = [lines[i]] * self.rng.choice((1, 1, 2, 5, 200))
        return self._join(lines, body)

    def number(self, d: bytes) -> bytes:
        name = self.rng.choice(self.NUMERIC)
        value = self.rng.choice(self.HOSTILE_NUMBERS)
        return re.sub(rb"(?im)^(" + name + rb":[ \t]*)[^ \r\n]*", lambda m: m.group(1) + value, d, count=1)

    def control(self, d: bytes) -> bytes:
        b = bytearray(d)
        for _ in range(self.rng.choice((1, 2, 3))):
            b.insert(self.rng.randrange(len(b) + 1), self.rng.choice(self.GARBAGE_BYTES))
        return bytes(b)

    def gb2312(self, d: bytes) -> bytes:
        lines, body = self._lines(d)
        r = self.rng
        text = self.GB2312 if r.random() < 0.6 else bytes(r.randrange(0x80, 0x100) for _ in range(r.randrange(1, 9)))
        if body and r.random() < 0.5:
            i = r.randrange(len(body) + 1)
            return self._join(lines, body[:i] + text + body[i:])
        if len(lines) > 1:
            i = r.randrange(1, len(lines))
            lines[i] = lines[i] + text if r.random() < 0.5 else b"User-Agent: " + text
        return self._join(lines, body)

    def nesting(self, d: bytes) -> bytes:
        lines, _ = self._lines(d)
        depth = self.rng.choice((50, 500, 5000, 9000))
        body = b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>' + b"<a>" * depth + b"</a>" * depth + b"</Notify>"
        if self.rng.random() < 0.2:
            body = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><Notify>&e;</Notify>'
        lines = [ln for ln in lines if not ln.lower().startswith(b"content-length")]
        lines.append(b"Content-Length: %d" % len(body))
        return self._join(lines, body)

    def shuffle(self, d: bytes) -> bytes:
        lines, body = self._lines(d)
        rest = lines[1:]
        self.rng.shuffle(rest)
        return self._join(lines[:1] + rest, body)

    def drop_header(self, d: bytes) -> bytes:
        lines, body = self._lines(d)
        if len(lines) < 2:
            return d
        del lines[self.rng.randrange(1, len(lines))]
        return self._join(lines, body)

    def splice(self, d: bytes) -> bytes:
        other = self.fill(self.rng.choice(SEEDS)[1], 5061)
        return d[: self.rng.randrange(len(d) + 1)] + other[self.rng.randrange(len(other) + 1) :]

    def method(self, d: bytes) -> bytes:
        first, sep, rest = d.partition(b"\r\n")
        parts = first.split(b" ")
        r = self.rng
        token = r.choice((b"FOO", b"", b"INVITE", b"register", b"SIP/2.0", b"SIP/3.0", b"sip:", b"<>", b"\x00", b"200"))
        parts[r.randrange(len(parts))] = token
        return b" ".join(parts) + sep + rest

    def long_line(self, d: bytes) -> bytes:
        lines, body = self._lines(d)
        lines.insert(self.rng.randrange(1, len(lines) + 1), b"X-Long: " + b"A" * self.rng.choice((1000, 9000, 40000)))
        return self._join(lines, body)

    def body_len(self, d: bytes) -> bytes:
        delta = self.rng.choice((-1000, -10, -1, 1, 10, 1000, 70000))
        m = re.search(rb"(?im)^Content-Length:[ \t]*(\d+)", d)
        if not m:
            return d
        return d[: m.start(1)] + b"%d" % max(0, int(m.group(1)) + delta) + d[m.end(1) :]

    def garbage(self, d: bytes) -> bytes:
        r = self.rng
        return r.choice((b"", b"\r\n", b"\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n")) + r.randbytes(r.randrange(1, 300))

    def fold(self, d: bytes) -> bytes:
        lines, body = self._lines(d)
        if len(lines) < 2:
            return d
        i = self.rng.randrange(1, len(lines))
        lines[i] = lines[i].replace(b": ", b":\r\n \t ", 1)
        return self._join(lines, body)


# --- answers -------------------------------------------------------------------------------

_STATUS = re.compile(rb"^SIP/2\.0 (\d{3})")
_WARNING = re.compile(rb'(?im)^Warning:[ \t]*\d+ \S+ "(.*?)"[ \t]*\r?$')
_FINAL = re.compile(rb"(?=SIP/2\.0 [2-6]\d\d )")
_WORD = re.compile(r"^[A-Za-z][A-Za-z-]*[:,;]?$")
_INDEX = re.compile(rb"z9hG4bKf(\d+)|fz(\d+)@")


def answer_key(response: bytes) -> str | None:
    """``"400 bad header"``: status and Warning text, digits masked; None for a request."""
    m = _STATUS.match(response)
    if not m:
        return None
    w = _WARNING.search(response)
    text = ""
    if w:
        text = w.group(1).decode("ascii", "replace").split(" XML: ")[0]
        # echoed values (IDs, numbers, the offending bytes) vary; the words around them name the answer
        words = [w if _WORD.match(w) else "…" for w in re.sub(r"'.*'", "…", text).split()]
        text = re.sub(r"(… )+…", "…", " ".join(words))[:60]
    return f"{m.group(1).decode()} {text}".strip()


def message_index(response: bytes) -> int | None:
    m = _INDEX.search(response)
    if not m:
        return None
    return int(m.group(1) or m.group(2))


def slug(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")[:50] or "none"


# --- the gateway ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """A ``gb28181gw serve`` child with its output counted (bytes, lines) and its tail kept."""

    def __init__(self, *overrides: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="gb28181gw-fuzz-")
        self.port, self.admin_port = free_port(), free_port()
        self._port_hex = b":%04X" % self.port
        args = [sys.executable, "-m", "gb28181gw", "serve", "--listen", "127.0.0.1", "--port", str(self.port)]
        args += ["--admin-port", str(self.admin_port), "--set", f"store.path={self.dir}/gw.db"]
        for o in ("media.workers=0", "log.format=json", *overrides):
            args += ["--set", o]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.log_bytes = 0
        self.log_lines = 0
        self.tail: list[bytes] = []
        self.errors: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self._wait_ready()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log_bytes += len(line)
            self.log_lines += 1
            self.tail.append(line)
            del self.tail[:-20]
            if (b'"level": "error"' in line or b"ERROR" in line or b"Traceback" in line) and len(self.errors) < 50:
                self.errors.append(line)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gateway exited: {b''.join(self.tail).decode(errors='replace')}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("gateway did not become ready")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kib(self) -> int:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0
        m = re.search(r"^VmRSS:\s+(\d+)", status, re.M)
        return int(m.group(1)) if m else 0

    def cpu_seconds(self) -> float:
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def udp_socket(self) -> tuple[int, int]:
        """(bytes queued, datagrams dropped) on the gateway's SIP UDP socket, from /proc/net/udp."""
        try:
            with open("/proc/net/udp", "rb") as f:
                for line in f:
                    cols = line.split()
                    if cols[1].endswith(self._port_hex):
                        return int(cols[4].split(b":")[1], 16), int(cols[-1])
        except (OSError, IndexError):
            pass
        return 0, 0

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the well-behaved device -----------------------------------------------------------------


def good_message(kind: str, n: int, port: int, device: str = GOOD_DEVICE) -> bytes:
    """A valid REGISTER or Keepalive MESSAGE of the well-behaved device."""
    body = "" if kind == "register" else KEEPALIVE_XML.format(dev=device, sn=n)
    extra = f"Contact: <sip:{device}@127.0.0.1:{port}>\r\nExpires: 3600\r\n" if kind == "register" else ""
    method = "REGISTER" if kind == "register" else "MESSAGE"
    template = _request(
        method, GW_URI, device if kind == "register" else GATEWAY_ID, extra, body, MANSCDP if body else ""
    )
    return template.format(
        dev=device, br=f"z9hG4bKgood{n}", ci=f"good-{kind}@127.0.0.1", tag="good", totag="", cseq=n, port=port,
        clen=len(body.encode("latin-1")),
    ).encode("latin-1")  # fmt: skip


def ok_reply(request: bytes) -> bytes:
    """200 to a request of the gateway (a query, SUBSCRIBE…), headers copied as RFC 3261 §8.2.6."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = [
        ln for ln in head[1:] if ln.split(b":", 1)[0].strip().lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
    ]
    return b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"


@dataclass
class DeviceStats:
    sent: int = 0
    answered: int = 0
    missed: int = 0
    latencies: list[float] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)


class GoodDevice(threading.Thread):
    """Registers, then sends a Keepalive every ``period`` s; each must get 200 within 1 s."""

    def __init__(self, gw_port: int, period: float) -> None:
        super().__init__(daemon=True)
        self.gw = ("127.0.0.1", gw_port)
        self.period = period
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stats = DeviceStats()
        self.stop_event = threading.Event()
        self.n = 1
        self.answer = b""

    def exchange(self, data: bytes, branch: bytes) -> tuple[str, float] | None:
        """Send, answer the gateway's own requests meanwhile, return (status, latency) or None.

        The answer itself is kept in ``self.answer``.
        """
        start = time.monotonic()
        self.sock.sendto(data, self.gw)
        while (left := start + KEEPALIVE_DEADLINE - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                packet = self.sock.recv(65535)
            except TimeoutError:
                break
            if not packet.startswith(b"SIP/2.0"):
                self.sock.sendto(ok_reply(packet), self.gw)
            elif branch in packet and not packet.startswith(b"SIP/2.0 1"):
                self.answer = packet
                return packet[8:11].decode(), time.monotonic() - start
        return None

    def register(self, password: str = "") -> None:
        got = self.exchange(good_message("register", self.n, self.port), b"z9hG4bKgood%d" % self.n)
        self.n += 1
        if got and got[0] == "401" and password:
            # answer the digest challenge the way a camera does (RFC 2617)
            challenge = parse_message(self.answer)
            assert isinstance(challenge, Response)
            creds = authorization_for(
                Challenge.parse(challenge.headers["www-authenticate"]),
                method="REGISTER", uri=GW_URI, username=GOOD_DEVICE, password=password,
            )  # fmt: skip
            retry = good_message("register", self.n, self.port).replace(
                b"\r\nExpires:", f"\r\nAuthorization: {creds.serialize()}\r\nExpires:".encode(), 1
            )
            got = self.exchange(retry, b"z9hG4bKgood%d" % self.n)
            self.n += 1
        if not got or got[0] != "200":
            raise SystemExit(f"the well-behaved device could not register: {got}")

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            n = self.n
            self.n += 1
            self.stats.sent += 1
            got = self.exchange(good_message("keepalive", n, self.port), b"z9hG4bKgood%d" % n)
            if got and got[0] == "200":
                self.stats.answered += 1
                self.stats.latencies.append(got[1])
            else:
                self.stats.missed += 1
                self.stats.misses.append(f"keepalive {n}: {got}")
            next_at += self.period
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))


# --- the fuzzers -----------------------------------------------------------------------------


class Answers:
    """Distinct answers seen, and for each the shortest message known to produce it."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self.shortest: dict[str, list[bytes]] = {}
        self.recent: dict[int, bytes] = {}
        self.lock = threading.Lock()

    def remember(self, first: int, batch: list[bytes]) -> None:
        """Keep the last batches so an answer can be traced to its message."""
        with self.lock:
            for i, m in enumerate(batch):
                self.recent[first + i] = m
            for k in [k for k in self.recent if k < first - 100_000]:
                del self.recent[k]

    def record(self, response: bytes) -> None:
        key = answer_key(response)
        if key is None:
            self.requests += 1
            return
        self.counts[key] += 1
        if (i := message_index(response)) is None:
            return
        with self.lock:
            msg = self.recent.get(i)
        if msg is not None:
            # the three shortest: the replay on a fresh gateway may answer one of them differently
            kept = self.shortest.setdefault(key, [])
            if msg not in kept and (len(kept) < 3 or len(msg) < len(kept[-1])):
                kept.append(msg)
                kept.sort(key=len)
                del kept[3:]


class UdpReceiver(threading.Thread):
    def __init__(self, sock: socket.socket, answers: Answers) -> None:
        super().__init__(daemon=True)
        self.sock, self.answers = sock, answers
        self.stop_event = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop_event.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.answers.record(data)


class TcpFuzzer(threading.Thread):
    """New connections, each with one to four pipelined messages or one cut short.

    Up to ``CONCURRENT`` connections are open at once; each is closed when the gateway closes
    it or after ``LINGER`` seconds, whatever answers it got by then are counted.
    """

    CONCURRENT = 64
    LINGER = 0.3

    def __init__(self, gw_port: int, seed: int, quota: int, answers: Answers, deadline: float) -> None:
        super().__init__(daemon=True)
        self.gw_port, self.quota, self.answers, self.deadline = gw_port, quota, answers, deadline
        self.mutator = Mutator(seed ^ 0x7C9)
        self.mutator.count = 10**9  # its own index range for answer tracing
        self.sent = 0
        self.connections = 0
        self.stop_event = threading.Event()

    def _open(self, sel: selectors.BaseSelector) -> None:
        r = self.mutator.rng
        msgs = self.mutator.batch(r.choice((1, 1, 2, 4)), 5061)
        self.answers.remember(self.mutator.count - len(msgs), msgs)
        data = b"".join(msgs)
        if r.random() < 0.15:
            data = data[: r.randrange(len(data) + 1)]  # a partial message, then the connection closes
        try:
            s = socket.create_connection(("127.0.0.1", self.gw_port), timeout=1)
        except OSError:
            return
        self.connections += 1
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            s.close()
            return
        self.sent += len(msgs)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, [time.monotonic() + self.LINGER, b""])

    def _close(self, sel: selectors.BaseSelector, s: socket.socket, state: list) -> None:  # type: ignore[type-arg]
        sel.unregister(s)
        s.close()
        for part in re.split(rb"(?=SIP/2\.0 \d{3} )", state[1]):
            if part:
                self.answers.record(part)

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        while time.monotonic() < self.deadline and not (self.stop_event.is_set() and not sel.get_map()):
            while not self.stop_event.is_set() and self.sent < self.quota and len(sel.get_map()) < self.CONCURRENT:
                self._open(sel)
            if self.sent >= self.quota:
                self.stop_event.set()
            for key, _ in sel.select(0.01):
                try:
                    chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except OSError:
                    chunk = b""
                key.data[1] += chunk
                if not chunk:
                    self._close(sel, key.fileobj, key.data)  # type: ignore[arg-type]
            now = time.monotonic()
            for key in list(sel.get_map().values()):
                if key.data[0] < now:
                    self._close(sel, key.fileobj, key.data)  # type: ignore[arg-type]
        for key in list(sel.get_map().values()):
            self._close(sel, key.fileobj, key.data)  # type: ignore[arg-type]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def run(args: argparse.Namespace) -> int:
    password = [f"registrar.password={args.password}"] if args.password else []
    gw = Gateway(*password, *args.set)
    ok = True
    try:
        time.sleep(1.0)
        device = GoodDevice(gw.port, args.keepalive_period)
        device.register(args.password)
        device.start()
        time.sleep(2.0)
        rss_start = rss_peak = gw.rss_kib()
        cpu_start = gw.cpu_seconds()
        log_start = (gw.log_bytes, gw.log_lines)
        answers = Answers()
        tcp_quota = int(args.messages * args.tcp_share)
        udp_quota = args.messages - tcp_quota
        started = time.monotonic()
        deadline = started + args.seconds
        tcp = TcpFuzzer(gw.port, args.seed, tcp_quota, answers, deadline)
        tcp.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        receiver = UdpReceiver(sock, answers)
        receiver.start()
        mutator = Mutator(args.seed)
        my_port = sock.getsockname()[1]
        target = ("127.0.0.1", gw.port)
        udp_sent = 0
        next_sample = started
        while udp_sent < udp_quota and time.monotonic() < deadline and gw.alive():
            first = mutator.count
            batch = mutator.batch(min(args.batch, udp_quota - udp_sent), my_port)
            answers.remember(first, batch)
            # pace the batch over its share of a second so the gateway's socket buffer is not the bottleneck
            t0 = time.monotonic()
            for i, m in enumerate(batch):
                try:
                    sock.sendto(m, target)
                except OSError:
                    pass
                if i % 50 == 49:
                    # back-pressure: a full socket buffer would drop the well-behaved device's keepalive too
                    while gw.udp_socket()[0] > args.max_queue:
                        time.sleep(0.001)
                    if args.rate:
                        ahead = t0 + (i + 1) / args.rate - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
            udp_sent += len(batch)
            if time.monotonic() >= next_sample:
                rss_peak = max(rss_peak, gw.rss_kib())
                next_sample = time.monotonic() + 0.5
        tcp.stop_event.set()
        tcp.join(10)
        flood_seconds = time.monotonic() - started
        rss_peak = max(rss_peak, gw.rss_kib())
        cpu_flood = gw.cpu_seconds() - cpu_start
        time.sleep(1.0)
        receiver.stop_event.set()
        receiver.join(2)
        sock.close()
        rss_after_flood = gw.rss_kib()
        settle_end = time.monotonic() + args.settle
        while time.monotonic() < settle_end and gw.alive():
            rss_peak = max(rss_peak, gw.rss_kib())
            time.sleep(1.0)
        device.stop_event.set()
        device.join(5)
        alive = gw.alive()
        rss_end = gw.rss_kib()
        log_bytes, log_lines = gw.log_bytes - log_start[0], gw.log_lines - log_start[1]
        total = udp_sent + tcp.sent
        st = device.stats
        ratio = rss_end / rss_start if rss_start else float("inf")
        rows = [
            ("command", " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])),
            ("seed", args.seed),
            ("messages sent", f"{total:,} (UDP {udp_sent:,}, TCP {tcp.sent:,} on {tcp.connections:,} connections)"),
            ("flood duration", f"{flood_seconds:.1f} s, {total / flood_seconds:,.0f} messages/s"),
            ("UDP datagrams dropped by the kernel", f"{gw.udp_socket()[1]:,} (gateway socket buffer full)"),
            ("gateway CPU during flood", f"{cpu_flood:.1f} s, {1e6 * cpu_flood / max(total, 1):.0f} µs per message"),
            ("keepalives sent/answered/missed", f"{st.sent}/{st.answered}/{st.missed}"),
            (
                "keepalive answer latency p50/p99/max",
                f"{1e3 * percentile(st.latencies, 0.5):.1f}/{1e3 * percentile(st.latencies, 0.99):.1f}/"
                f"{1e3 * max(st.latencies, default=float('nan')):.1f} ms",
            ),
            (
                "RSS start/peak/after flood/end",
                f"{rss_start / 1024:.1f}/{rss_peak / 1024:.1f}/{rss_after_flood / 1024:.1f}/{rss_end / 1024:.1f} MiB "
                f"(end/start {ratio:.2f}, after {args.settle:.0f} s settle)",
            ),
            ("log volume", f"{log_bytes:,} bytes, {log_lines:,} lines (bound {args.max_log_bytes:,} bytes)"),
            ("gateway alive", "yes" if alive else f"NO (exit {gw.proc.returncode})"),
            ("requests from the gateway to the fuzzer", f"{answers.requests:,}"),
            ("answers by status", ", ".join(f"{k}: {v:,}" for k, v in sorted(_by_status(answers.counts).items()))),
            ("distinct answers (status + Warning)", f"{len(answers.counts)}"),
        ]
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
        if args.verbose:
            for k, v in answers.counts.most_common():
                print(f"  {v:>9,}  {k}")
            for line in gw.errors:
                print(line.decode(errors="replace")[:3000].rstrip())
        failures = []
        if not alive:
            failures.append("the gateway died")
        if st.missed:
            failures.append(f"{st.missed} keepalives missed: {st.misses[:5]}")
        if ratio > RSS_RATIO_LIMIT:
            failures.append(f"RSS end/start {ratio:.2f} > {RSS_RATIO_LIMIT}")
        if log_bytes > args.max_log_bytes:
            failures.append(f"log {log_bytes:,} bytes > {args.max_log_bytes:,}")
        if not alive:
            print(b"".join(gw.tail).decode(errors="replace"), file=sys.stderr)
        for f in failures:
            print(f"FAIL: {f}", file=sys.stderr)
        ok = not failures
        collected = answers.shortest
    finally:
        gw.stop()
    if args.collect and collected:
        collect(Path(args.collect), collected, no_answer_candidates(args.seed))
    return 0 if ok else 1


def _by_status(counts: Counter[str]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for k, v in counts.items():
        out[k[:3]] += v
    return dict(out)


def no_answer_candidates(seed: int) -> list[bytes]:
    """More candidates: short truncations (often no answer at all) and a sample of plain mutations."""
    m = Mutator(seed ^ 0x55)
    short = sorted({m.truncate(m.message(5061)) for _ in range(400)}, key=len)[:20]
    return short + [m.message(5061) for _ in range(200)]


# --- corpus ----------------------------------------------------------------------------------


def variant(msg: bytes, tag: str) -> bytes:
    """``msg`` with its branch and Call-ID made unique by ``tag``: a replay must not be a retransmission.

    ``tests/hostile/test_fuzz_corpus.py`` does the same with tags ``u1`` and ``t1``.
    """
    t = tag.encode()
    return msg.replace(b"z9hG4bKf", b"z9hG4bK" + t + b"f").replace(b"Call-ID: fz", b"Call-ID: " + t + b"fz")


def replay(port: int, msg: bytes, transport: str) -> str:
    """The answer key of ``msg`` sent alone over ``transport`` ("none" for no answer in 0.3 s)."""
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            s.sendto(msg, ("127.0.0.1", port))
            try:
                while True:
                    data = s.recv(65535)
                    if data.startswith(b"SIP/2.0") and not data.startswith(b"SIP/2.0 1"):
                        return answer_key(data) or "none"
            except TimeoutError:
                return "none"
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(msg)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(0.3)
        buf = b""
        try:
            while chunk := s.recv(65536):
                buf += chunk
                if (m := _FINAL.search(buf)) and b"\r\n\r\n" in buf[m.start() :]:
                    break  # a whole final answer is in
        except (TimeoutError, ConnectionResetError):
            pass
    finals = [p for p in _FINAL.split(buf) if _FINAL.match(p)]
    return (answer_key(finals[0]) or "none") if finals else "none"


def collect(out: Path, shortest: dict[str, list[bytes]], extra: list[bytes]) -> None:
    """Replay each candidate twice on a fresh gateway; keep those whose answer is stable, one per answer."""
    gw = Gateway("devices.catalog_on_register=false", "devices.subscribe=")
    try:
        device = GoodDevice(gw.port, 1.0)
        device.register()
        chosen: dict[str, tuple[bytes, str, str]] = {}
        for msg in sorted([*(m for kept in shortest.values() for m in kept), *extra], key=len):
            keys = [
                replay(gw.port, variant(msg, tag), tag[0] == "u" and "udp" or "tcp") for tag in ("u1", "u2", "t1", "t2")
            ]
            if keys[0] in chosen:
                continue
            if keys[0] != keys[1] or keys[2] != keys[3]:
                print(f"unstable, left out: {keys} {msg[:60]!r}", file=sys.stderr)
                continue
            chosen[keys[0]] = (msg, keys[0], keys[2])
    finally:
        gw.stop()
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    for key, (msg, key_udp, key_tcp) in sorted(chosen.items()):
        name = f"{slug(key)}.bin"
        out.joinpath(name).write_bytes(msg)
        index[name] = {"udp": key_udp, "tcp": key_tcp}
    out.joinpath("index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")
    print(f"corpus: {len(index)} fixtures in {out}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1_000_000, help="mutated messages to send (default 1,000,000)")
    p.add_argument("--seconds", type=float, default=900.0, help="stop the flood after this long (default 900)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--rate", type=float, default=0.0, help="UDP messages per second, 0 = as fast as the gateway takes them"
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=256 << 10,
        help="pause while the gateway's UDP socket holds more bytes than this",
    )
    p.add_argument("--batch", type=int, default=2000, help="messages precomputed per batch")
    p.add_argument("--tcp-share", type=float, default=0.03, help="share of messages sent over TCP")
    p.add_argument("--keepalive-period", type=float, default=1.0)
    p.add_argument("--settle", type=float, default=70.0, help="seconds to wait after the flood before the last RSS")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a gateway setting (repeatable)")
    p.add_argument(
        "--password",
        default="fuzz-secret-7",
        help="registrar.password of the fuzzed gateway, as in production (empty: open registration, where "
        "every fuzzed REGISTER with a new ID adds a device the gateway must keep)",
    )
    p.add_argument("--max-log-bytes", type=int, default=MAX_LOG_BYTES)
    p.add_argument("--collect", metavar="DIR", help="write a minimised corpus of the distinct answers to DIR")
    p.add_argument("-v", "--verbose", action="store_true", help="list every distinct answer with its count")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
