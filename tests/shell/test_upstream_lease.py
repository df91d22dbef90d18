"""Two gateway nodes on one Redis, one superior: exactly one registers upward (issue 17).

Both ``gb28181gw serve`` processes have the same ``[[upstream]]``; the node holding
``gbgw:lease:upstream:district`` registers, the other waits. A SIPp superior
(``tests/shell/sipp/superior_count_uas.xml``) answers everything with 200 and keeps a trace of
what it received: each request's sender (its Via port: each node has its own), time and
Call-ID. Killed (``kill -9``), the holder's lease runs out and the survivor registers with a
new Call-ID; stopped (``kill -STOP``) for longer than the lease and then continued, the old
holder sends nothing more upward: it fences itself before its lease can have expired, and looks
at the clock before sending anything after resuming.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gb28181gw.sip.message import Response, make_response, parse_message
from tests.process import free_port, serve, wait_ready
from tests.redis_server import RedisServer

from .conftest import SIPP_DIR, require_sipp

pytestmark = pytest.mark.sipp

SITE = "34020000002000000001"
DISTRICT = "34010000002000000001"
LEASE = 3.0  # node.lease_seconds: renewed every 1 s, fenced 2.4 s after the last confirmed renewal (loaded CI margin)


@dataclass(frozen=True)
class Received:
    at: float  # epoch seconds (SIPp's trace time)
    port: int  # the sender's Via port: which node
    method: str
    call_id: str
    expires: str


class Superior:
    """The SIPp superior and what it received."""

    def __init__(self, tmp_path: Path) -> None:
        sipp = require_sipp()
        self.port = free_port()
        self.trace = tmp_path / "superior.msg"
        self.proc = subprocess.Popen(
            [sipp, "-sf", str(SIPP_DIR / "superior_count_uas.xml"), "-i", "127.0.0.1", "-p", str(self.port),
             "-timeout", "120s", "-nostdin", "-trace_msg", "-message_file", str(self.trace)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
        )  # fmt: skip
        time.sleep(0.3)  # let it bind

    def received(self) -> list[Received]:
        text = self.trace.read_text(errors="replace") if self.trace.exists() else ""
        out = []
        for block in text.split("----------------------------------------------- ")[1:]:
            stamp, _, rest = block.partition("\n")
            if "message received" not in rest.split("\n", 1)[0]:
                continue
            message = rest.split("\n\n", 1)[1] if "\n\n" in rest else ""
            via = re.search(r"^Via: SIP/2.0/UDP [^:;]+:(\d+)", message, re.M)
            call_id = re.search(r"^Call-ID: *(\S+)", message, re.M)
            expires = re.search(r"^Expires: *(\d+)", message, re.M)
            if via is None or call_id is None:
                continue
            at = _dt.datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            method = message.split(" ", 1)[0]
            out.append(Received(at, int(via[1]), method, call_id[1], expires[1] if expires else ""))
        return out

    def registers(self, port: int | None = None) -> list[Received]:
        return [r for r in self.received() if r.method == "REGISTER" and (port is None or r.port == port)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class MutingSuperior:
    """A superior in this process: 200 to every request, except keepalives from the nodes whose
    SIP port is in :attr:`unanswered`, left in flight (their retransmissions are what is counted).
    The responses to what the test sends (:meth:`send`) are kept in :attr:`responses`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.unanswered: set[int] = set()
        self._received: list[Received] = []
        self.responses: list[Response] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                data, address = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            message = parse_message(data)
            if isinstance(message, Response):
                with self._lock:
                    self.responses.append(message)
                continue
            port = message.top_via.port or 5060
            with self._lock:
                self._received.append(
                    Received(time.time(), port, message.method, message.call_id, message.headers.get("Expires") or "")
                )
            if message.method == "ACK" or (message.method == "MESSAGE" and port in self.unanswered):
                continue
            response = make_response(message, 200, to_tag="sup")
            if message.method == "REGISTER":
                response.headers.add("Expires", "3600")
            self.sock.sendto(response.serialize(), address)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def registers(self, port: int | None = None) -> list[Received]:
        return [r for r in self.received() if r.method == "REGISTER" and (port is None or r.port == port)]

    def send(self, data: bytes, port: int) -> None:
        """Send a request of the test's to a node's SIP port on 127.0.0.1."""
        self.sock.sendto(data, ("127.0.0.1", port))

    def final(self, call_id: str) -> Response | None:
        with self._lock:
            return next((m for m in self.responses if m.status >= 200 and m.call_id == call_id), None)

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.sock.close()


@dataclass
class Node:
    name: str
    sip: int
    admin: str
    proc: subprocess.Popen[str]

    def upstream(self) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "gb28181gw", "upstreams", "--json", "--admin", self.admin],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        (row,) = json.loads(done.stdout)
        return dict(row)

    def end(self) -> str:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        try:
            return self.proc.communicate(timeout=15)[0]
        except (ValueError, OSError):
            return ""  # read to the end by the test already


@pytest.fixture
def superior(tmp_path: Path) -> Iterator[Superior]:
    sup = Superior(tmp_path)
    try:
        yield sup
    finally:
        sup.stop()


def start_node(tmp_path: Path, name: str, redis: RedisServer, superior: Superior | MutingSuperior) -> Node:
    """A gateway node, not waited for (two start at the same instant)."""
    config = tmp_path / f"{name}.toml"
    config.write_text(
        "[[upstream]]\n"
        'name = "district"\n'
        f'id = "{DISTRICT}"\n'
        'host = "127.0.0.1"\n'
        f"port = {superior.port}\n"
        'password = "district-pass"\n'
        "keepalive_interval = 1\n"
        "retry_interval = 1.0\n"
        "retry_max = 2.0\n"
    )
    config.chmod(0o600)
    sip, admin = free_port(), free_port()
    proc = serve(
        "-c", str(config), "--id", SITE, "--listen", "127.0.0.1", "--port", str(sip), "--admin-port", str(admin),
        "--set", "store.backend=redis", "--set", f"store.url={redis.url}", "--set", f"node.id={name}",
        "--set", f"node.lease_seconds={LEASE}", "--set", "media.workers=0",
        "--set", "devices.catalog_on_register=false", "--set", "devices.subscribe=",
        store=str(tmp_path / f"{name}.db"),
    )  # fmt: skip
    return Node(name, sip, f"http://127.0.0.1:{admin}", proc)


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    # a guard against hanging, not a measurement (failover times are for benchmarks/)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def two_nodes(tmp_path: Path, redis: RedisServer, superior: Superior) -> Iterator[tuple[Node, Node]]:
    """Both started at the same instant, both ready, and one of them registered upward."""
    nodes = (start_node(tmp_path, "n1", redis, superior), start_node(tmp_path, "n2", redis, superior))
    try:
        for node in nodes:
            wait_ready(node.admin, node.proc)
        until(lambda: bool(superior.registers()), 30, "a REGISTER at the superior")
        yield nodes
    finally:
        for node in nodes:
            node.end()


def holder_and_other(nodes: tuple[Node, Node], superior: Superior | MutingSuperior) -> tuple[Node, Node]:
    first = superior.registers()[0]
    holder = next(n for n in nodes if n.sip == first.port)
    return holder, next(n for n in nodes if n is not holder)


def test_two_nodes_started_together_make_exactly_one_registration(
    two_nodes: tuple[Node, Node], superior: Superior
) -> None:
    holder, other = holder_and_other(two_nodes, superior)
    # several renewals and several takes tried by the other node
    until(lambda: sum(r.method == "MESSAGE" for r in superior.received()) >= 3, 15, "three keepalives")
    registers = superior.registers()
    assert len(registers) == 1, registers
    assert {r.port for r in superior.received()} == {holder.sip}  # the other node sent nothing upward
    assert holder.upstream()["state"] == "registered" and holder.upstream()["holder"] == holder.name
    row = other.upstream()
    assert row["state"] == "standby" and row["holder"] == holder.name


def test_the_survivor_of_a_kill_9_registers_with_a_new_call_id(
    two_nodes: tuple[Node, Node], superior: Superior
) -> None:
    holder, other = holder_and_other(two_nodes, superior)
    first = superior.registers()[0]
    holder.proc.kill()  # no goodbye: its lease runs out by itself
    holder.proc.wait(timeout=10)
    until(lambda: bool(superior.registers(other.sip)), 15, "the survivor's REGISTER")
    (taken,) = superior.registers(other.sip)
    assert taken.call_id != first.call_id and taken.expires == "3600"
    until(lambda: other.upstream()["state"] == "registered", 10, "the survivor registered")
    assert other.upstream()["holder"] == other.name


def test_a_holder_stopped_longer_than_its_lease_sends_nothing_upward_after_it_continues(
    two_nodes: tuple[Node, Node], superior: Superior
) -> None:
    holder, other = holder_and_other(two_nodes, superior)
    os.kill(holder.proc.pid, signal.SIGSTOP)
    stopped = time.time()
    until(lambda: bool(superior.registers(other.sip)), 15, "the other node's REGISTER")
    time.sleep(max(0.0, stopped + 2 * LEASE - time.time()))  # stopped for longer than the lease
    os.kill(holder.proc.pid, signal.SIGCONT)
    resumed = time.time()
    # a few of its keepalive intervals: the old holder has every chance to send
    until(lambda: sum(r.method == "MESSAGE" and r.port == other.sip for r in superior.received()) >= 3, 15,
          "the new holder's keepalives")  # fmt: skip
    assert holder.upstream()["holder"] == other.name
    late = [r for r in superior.received() if r.port == holder.sip and r.at >= resumed]
    assert late == []
    assert superior.registers(holder.sip)[0].call_id != superior.registers(other.sip)[0].call_id
    assert holder.proc.poll() is None
    out = holder.end()
    assert "stops sending upward" in out or "held by another node" in out, out[-3000:]


def test_a_holder_stopped_with_a_keepalive_in_flight_does_not_retransmit_it_after_it_continues(
    tmp_path: Path, redis: RedisServer
) -> None:
    # the endpoint's retransmission timer (Timer E) and the lease's fence are both due when it
    # resumes; the retransmission must not go first (issue 17)
    superior = MutingSuperior()
    nodes = (start_node(tmp_path, "n1", redis, superior), start_node(tmp_path, "n2", redis, superior))
    try:
        for node in nodes:
            wait_ready(node.admin, node.proc)
        until(lambda: bool(superior.registers()), 30, "a REGISTER at the superior")
        holder, other = holder_and_other(nodes, superior)
        until(lambda: holder.upstream()["state"] == "registered", 10, "the holder registered")
        superior.unanswered.add(holder.sip)
        muted = time.time()
        until(lambda: any(r.method == "MESSAGE" and r.port == holder.sip and r.at > muted
                          for r in superior.received()), 5, "a keepalive left unanswered")  # fmt: skip
        os.kill(holder.proc.pid, signal.SIGSTOP)  # its keepalive in flight: retransmitted every 0.5 s+
        stopped = time.time()
        until(lambda: bool(superior.registers(other.sip)), 15, "the other node's REGISTER")
        time.sleep(max(0.0, stopped + 2 * LEASE - time.time()))
        os.kill(holder.proc.pid, signal.SIGCONT)
        resumed = time.time()
        until(lambda: sum(r.method == "MESSAGE" and r.port == other.sip and r.at > resumed
                          for r in superior.received()) >= 2, 15, "the new holder's keepalives")  # fmt: skip
        assert holder.upstream()["holder"] == other.name
        late = [r for r in superior.received() if r.port == holder.sip and r.at >= resumed]
        assert late == []
    finally:
        for node in nodes:
            node.end()
        superior.stop()


def test_a_clean_stop_unregisters_then_hands_the_superior_over_at_once(
    two_nodes: tuple[Node, Node], superior: Superior
) -> None:
    holder, other = holder_and_other(two_nodes, superior)
    first = superior.registers()[0]
    holder.proc.send_signal(signal.SIGTERM)
    out = holder.proc.communicate(timeout=15)[0]
    assert holder.proc.returncode == 0, out[-3000:]
    assert "unregistered upward" in out and "released the superior's lease" in out, out[-3000:]
    until(lambda: bool(superior.registers(other.sip)), 15, "the other node's REGISTER")
    unregister = next(r for r in superior.registers(holder.sip) if r.expires == "0")
    (taken,) = superior.registers(other.sip)
    assert unregister.call_id == first.call_id and taken.call_id != first.call_id
    assert unregister.at <= taken.at  # the superior never had two registrations of us


def test_without_redis_the_holder_fences_itself_and_registers_afresh_when_it_is_back(
    tmp_path: Path, redis: RedisServer, superior: Superior
) -> None:
    node = start_node(tmp_path, "n1", redis, superior)
    try:
        wait_ready(node.admin, node.proc)
        until(lambda: node.upstream()["state"] == "registered", 15, "registered")
        first = superior.registers()[0]
        redis.stop(kill=True)
        until(lambda: node.upstream()["state"] != "registered", 15, "the fence")
        fenced = time.time()
        time.sleep(3 * 1.0)  # three keepalive intervals: none goes while Redis is away
        assert [r for r in superior.received() if r.at > fenced] == []
        assert node.upstream()["holder"] == "n1"  # as last known: nobody else could take it either
        redis.start()  # empty: the lease is gone; the node takes it anew
        until(lambda: len(superior.registers()) >= 2, 15, "a new REGISTER")
        again = superior.registers()[1]
        assert again.call_id != first.call_id and again.expires == "3600"
    finally:
        out = node.end()
    assert "the superior's lease went unconfirmed" in out, out[-3000:]


def test_redis_restarted_empty_the_holder_takes_its_lease_again_and_the_superior_sees_nothing(
    two_nodes: tuple[Node, Node], superior: Superior, redis: RedisServer
) -> None:
    # no persistence: the lease and its epoch counter are gone; the holder's next renewal finds
    # no value, takes it again at once and keeps its registration (issue 17: no stream cut)
    holder, other = holder_and_other(two_nodes, superior)
    until(lambda: holder.upstream()["state"] == "registered", 10, "the holder registered")
    until(lambda: other.upstream()["holder"] == holder.name, 10, "the other node seeing the holder")
    first = superior.registers()[0]
    for _ in range(2):  # twice: the second restart finds the epoch counter carried over
        redis.stop(kill=True)
        redis.start()
        until(lambda: redis.command(b"EXISTS", b"gbgw:lease:upstream:district") == b":1", 10, "the lease again")
        value = redis.command(b"GET", b"gbgw:lease:upstream:district") or b""
        assert value.startswith(holder.name.encode() + b" "), value
    restarted = time.time()
    # several renewals and several tries of the other node's: it never takes over
    until(lambda: sum(r.method == "MESSAGE" and r.at > restarted for r in superior.received()) >= 4, 20,
          "the holder's keepalives after the restarts")  # fmt: skip
    assert superior.registers() == [first]  # no new REGISTER: the same registration, Call-ID and all
    assert {r.port for r in superior.received()} == {holder.sip}
    assert holder.upstream()["state"] == "registered" and holder.upstream()["holder"] == holder.name
    row = other.upstream()
    assert row["state"] == "standby" and row["holder"] == holder.name
    # the epoch kept growing across both empty restarts (taken once, then re-taken twice)
    value = redis.command(b"GET", b"gbgw:lease:upstream:district") or b""
    assert int(value.split()[1]) == 3, value
    out = holder.end()
    assert out.count("taken again, the registration kept") == 2, out[-3000:]
    assert "stops sending upward" not in out and "held by another node" not in out, out[-3000:]
    assert "took the superior's lease" not in other.end()


async def test_redis_leases_take_renew_and_release_by_token(redis: RedisServer) -> None:
    from gb28181gw.errors import StoreError
    from gb28181gw.store.leases import DEFERRED, RedisLeases

    leases = RedisLeases(redis.url)
    await leases.open()
    try:
        assert await leases.acquire("upstream:d", "n1", "aaaa", 5.0) == (1, "", None)
        assert await leases.acquire("upstream:d", "n1", "aaaa", 5.0) == (1, "", None)  # a retried take: still ours
        epoch, value, left = await leases.acquire("upstream:d", "n2", "bbbb", 5.0)
        assert epoch == 0 and value == "n1 1 aaaa" and left is not None and 4.0 < left <= 5.0
        assert await leases.renew("upstream:d", "bbbb", 5.0) == "n1 1 aaaa"  # not n2's
        assert not await leases.release("upstream:d", "bbbb")
        assert await leases.renew("upstream:d", "aaaa", 5.0) is None
        assert await leases.release("upstream:d", "aaaa")
        assert await leases.renew("upstream:d", "aaaa", 5.0) == ""  # gone
        assert await leases.acquire("upstream:d", "n2", "bbbb", 5.0) == (2, "", None)  # a new epoch
    finally:
        await leases.close()
    redis.stop(kill=True)
    redis.start()  # empty: the value and the epoch counter are gone
    leases = RedisLeases(redis.url)
    await leases.open()
    try:
        assert await leases.renew("upstream:d", "bbbb", 5.0) == ""  # missing, not another's
        # a node that never saw an epoch has nothing to defer to: it takes at once
        assert await leases.acquire("upstream:e", "n3", "eeee", 5.0, defer=True) == (1, "", None)
        # a standby that saw epoch 2 defers: the counter is put back, nothing is taken
        assert await leases.acquire("upstream:d", "n1", "cccc", 5.0, known_epoch=2, defer=True) == (DEFERRED, "", None)
        assert redis.command(b"GET", b"gbgw:lease:upstream:d:epoch") == b"2"
        assert redis.command(b"EXISTS", b"gbgw:lease:upstream:d") == b":0"
        # the holder's re-take (never deferred) counts on from the largest epoch known
        assert await leases.acquire("upstream:d", "n2", "bbbb", 5.0, known_epoch=2) == (3, "", None)
        redis.flush()
        assert await leases.acquire("upstream:d", "n2", "bbbb", 5.0, known_epoch=3, defer=False) == (4, "", None)
        # the counter ahead of what the caller knows: counted from the counter
        redis.flush()
        assert redis.command(b"SET", b"gbgw:lease:upstream:d:epoch", b"10") == b"+OK"
        assert await leases.acquire("upstream:d", "n1", "dddd", 5.0, known_epoch=4, defer=True) == (11, "", None)
    finally:
        await leases.close()
    redis.stop(kill=True)
    away = RedisLeases(redis.url, timeout=0.5)
    await away.open()
    try:
        with pytest.raises(StoreError, match="lease operation"):
            await away.acquire("upstream:d", "n1", "cccc", 5.0)
    finally:
        await away.close()
