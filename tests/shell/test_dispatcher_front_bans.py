"""Behind the SIP front, one camera's wrong passwords ban that camera's address, not the front's.

To a node every device behind the Kamailio dispatcher (``tests/shell/kamailio/dispatcher.cfg``)
comes from the front's address, so the brute-force bans, counted by source address, banned the
front after one misconfigured camera's five wrong passwords and locked out every device the front
sent to that node. With ``registrar.trusted_proxies`` naming the front, a node judges a REGISTER
from it by the device's address the front put in its Path (``add_path_received()``:
``<sip:FRONT;lr;received=sip:DEVICE:PORT>``).

Real processes, as in ``test_dispatcher_front.py`` (whose fixtures this reuses): one
``redis-server``, two ``gb28181gw serve`` nodes, Kamailio, and SIPp IPCs. The camera with the
wrong password (``ipc_wrong_password_uac.xml``) registers from 127.0.0.2 (Linux routes all of
127/8 to the loopback), the others from 127.0.0.1, all at the front's address. Proven: with the
front trusted, the fifth wrong password bans 127.0.0.2 (``gb28181gw bans`` and the admin API list
the ban under that address, the refusal too), the camera stays refused with the right password,
and all the other devices register through the front, those of the camera's node included.
Without it (the default) the same five wrong passwords ban the front's address, and a device of
that node is refused.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.redis_server import RedisServer

from .conftest import SIPP_DIR, require_sipp
from .test_director import PASSWORD, Node
from .test_dispatcher_front import (
    DEVICES,
    Front,
    first_line,
    front_cluster,
    http,
    register,
    require_kamailio,
    sip_answer,
)
from .test_dispatcher_front import ds_hash as front_hash

pytestmark = pytest.mark.sipp

#: The camera given the wrong password, and where it registers from.
BAD = "34020000001320000299"
BAD_SOURCE = "127.0.0.2"
#: Wrong passwords that ban (``registrar.max_auth_failures``'s default).
LIMIT = 5


def attempts(tmp_path: Path, front: Front, password: str, calls: int, name: str) -> list[str]:
    """BAD registering at the front from BAD_SOURCE with ``password``, ``calls`` attempts one after
    another (``ipc_wrong_password_uac.xml``): the status of every answer it got, in order."""
    require_kamailio()
    binary = require_sipp()
    inf = tmp_path / f"{name}.csv"
    # SIPp expands keywords inside injected fields, so field1 carries the whole auth keyword
    inf.write_text(f"SEQUENTIAL\n{BAD};[authentication username={BAD} password={password}];\n")
    trace = tmp_path / f"{name}.msg"
    done = subprocess.run(
        [binary, "-sf", str(SIPP_DIR / "ipc_wrong_password_uac.xml"), f"127.0.0.1:{front.port}",
         "-i", BAD_SOURCE, "-p", "0", "-t", "u1", "-m", str(calls), "-l", "1", "-nr", "-timeout", "60s",
         "-timeout_error", "-nostdin", "-inf", str(inf), "-trace_msg", "-message_file", str(trace)],
        capture_output=True, text=True, timeout=90, cwd=tmp_path, close_fds=True,
    )  # fmt: skip
    messages = trace.read_text(errors="replace") if trace.exists() else ""
    assert done.returncode == 0, done.stdout[-3000:] + messages[-4000:]
    return re.findall(r"^SIP/2\.0 (\d{3}) ", messages, re.MULTILINE)


#: What the wrong-password attempts get: challenged, and challenged again until the fifth, which
#: bans; the next is refused at once.
BANNED_BY_THE_FIFTH = ["401", "401"] * (LIMIT - 1) + ["401", "403"] + ["403"]


def bans_of(node: Node) -> list[dict[str, object]]:
    listed = node.cli("bans")
    assert isinstance(listed, list)
    return listed


def the_banning_node(nodes: list[Node]) -> Node:
    """The node the front sent BAD to: the only one with bans."""
    (banning,) = [n for n in nodes if bans_of(n)]
    return banning


def test_a_cameras_wrong_passwords_through_a_trusted_front_ban_its_address_not_the_fronts(
    tmp_path: Path, redis: RedisServer
) -> None:
    with front_cluster(tmp_path, redis, "registrar.trusted_proxies=127.0.0.1/32") as (front, nodes):
        assert attempts(tmp_path, front, "wrong", LIMIT + 1, "wrong") == BANNED_BY_THE_FIFTH
        banning = the_banning_node(nodes)
        bans = bans_of(banning)
        assert {b["key"] for b in bans} == {f"ip:{BAD_SOURCE}", f"id:{BAD}@{BAD_SOURCE}"}
        assert {(b["address"], b["device_id"]) for b in bans} == {(BAD_SOURCE, BAD)}
        # the admin API lists the same, and the refusals under the camera's address
        status, listed = http(banning, "GET", "/bans")
        assert status == 200 and {b["key"] for b in listed["bans"]} == {b["key"] for b in bans}
        status, refused = http(banning, "GET", "/refused")
        assert status == 200
        assert {(r["device_id"], r["address"]) for r in refused["refused"]} == {(BAD, BAD_SOURCE)}

        # every other device behind the front registers, those the front sends to the same node too
        register(tmp_path, front, nodes, DEVICES)
        online = {n.name: n.online() for n in nodes}
        assert sorted(d for s in online.values() for d in s) == sorted(DEVICES)
        assert {d for d in DEVICES if front_hash(d) % 2 == front_hash(BAD) % 2} == online[banning.name]
        # the camera itself stays banned, even with the right password: refused at once
        assert attempts(tmp_path, front, PASSWORD, 1, "right") == ["403"]
        assert BAD not in banning.online()


def test_without_trusted_proxies_the_fronts_address_is_banned(tmp_path: Path, redis: RedisServer) -> None:
    # the default, as before: what registrar.trusted_proxies is for
    with front_cluster(tmp_path, redis) as (front, nodes):
        assert attempts(tmp_path, front, "wrong", LIMIT + 1, "wrong") == BANNED_BY_THE_FIFTH
        banning = the_banning_node(nodes)
        assert {b["key"] for b in bans_of(banning)} == {"ip:127.0.0.1", f"id:{BAD}@127.0.0.1"}
        # so a device the front sends to that node, from any address, is refused
        (neighbour, *_) = [d for d in DEVICES if front_hash(d) % 2 == front_hash(BAD) % 2]
        answer = sip_answer(front.port, "REGISTER", neighbour, timeout=5)
        assert first_line(answer).startswith("SIP/2.0 403 "), answer
        assert "too many failed authentications" in (answer or "")


#: An address no device has: what a device's own Path names as its received address.
FORGED = "127.0.0.77"


def register_from(front: Front, source: str, extra: str, *, to_tag: str = "") -> str | None:
    """A REGISTER from ``source`` (BAD's, without credentials) at the front, ``extra`` header lines
    (each ending in CRLF) added: its final answer, ``None`` if none came."""
    return sip_answer(front.port, "REGISTER", BAD, timeout=10, source=source, extra=extra, to_tag=to_tag)


def test_a_device_cannot_name_the_address_it_is_judged_by_with_a_path_of_its_own(
    tmp_path: Path, redis: RedisServer
) -> None:
    # A node reads the device's address from the first Path of a REGISTER from the trusted front,
    # so that Path must always be the front's: a device that put its own there would choose the
    # address its allow/deny networks and bans judge (escaping its own, banning another's). With a
    # To tag and a Route through the front to a node, the front took the REGISTER for an in-dialog
    # request and relayed it without adding its Path: the device's came first, and a device denied
    # by address was challenged as if it came from the address it named.
    with front_cluster(
        tmp_path, redis, "registrar.trusted_proxies=127.0.0.1/32", f"registrar.deny_networks={BAD_SOURCE}/32"
    ) as (front, nodes):
        # without a Path of its own, the camera is judged by its address through the front: denied
        answer = register_from(front, BAD_SOURCE, "")
        assert first_line(answer).startswith("SIP/2.0 403 "), answer
        own_path = f"Path: <sip:127.0.0.1:{front.port};lr;received=sip:{FORGED}:5060>\r\n"
        for node in nodes:
            route = f"Route: <sip:127.0.0.1:{front.port};lr>, <sip:127.0.0.1:{node.sip};lr>\r\n"
            for extra, to_tag in ((own_path, ""), (route + own_path, ";tag=x1"), (route, ";tag=x2")):
                answer = register_from(front, BAD_SOURCE, extra, to_tag=to_tag)
                # refused (by the front, or by the node for the camera's own address), never challenged
                assert first_line(answer).startswith("SIP/2.0 403 "), (extra, to_tag, answer)
        for node in nodes:
            status, refused = http(node, "GET", "/refused")
            assert status == 200
            assert {r["address"] for r in refused["refused"]} <= {BAD_SOURCE}, refused
