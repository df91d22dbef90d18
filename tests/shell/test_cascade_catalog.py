"""Our catalog toward a superior over real 127.0.0.1 sockets (issue 12 item 3, PROTOCOL.md §9.3, §6.6).

An NVR played by SIPp registers to the gateway and answers its Catalog (a region and three
channels). A superior — SIPp, or a bare UDP socket where the test must act between its
requests — queries the gateway's catalog and gets the exact tree in paced batches; queries
an ID we do not have (404); is refused when it is not our superior (403); sees the channels
the operator shares or takes back with the CLI; and, holding a catalog subscription, is
NOTIFYd when the NVR goes offline (OFF) and when a channel is unshared (DEL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gb28181gw.app import Gateway
from gb28181gw.manscdp.messages import CmdType, catalog, decode
from gb28181gw.sip.message import Request, Response, make_response, parse_message

from .conftest import require_sipp, sipp_scenario
from .test_devices import finished, free_udp_port, play_device, register, register_expires_zero, response_message
from .test_upstreams import OURS, UPPER, Policy, Superior, _close_superiors, gateway_under, superior, until

pytestmark = pytest.mark.sipp
__all__ = ["_close_superiors"]  # its autouse fixture closes the superiors' sockets

NVR = "34020000001180000001"
CH1, CH2, CH3 = "34020000001310000001", "34020000001310000002", "34020000001310000003"
#: The tree the superior may see: our platform, the regions of 340202, the three channels.
TREE = [OURS, "34", "3402", "340202", CH1, CH2, CH3]


def nvr_catalog_body() -> str:
    items = [("340202", "示例区", "")] + [
        (ch, name, "ON") for ch, name in ((CH1, "大门口"), (CH2, "后门"), (CH3, "车库"))
    ]
    xml = "".join(
        f"<Item>\r\n<DeviceID>{i}</DeviceID>\r\n<Name>{n}</Name>\r\n"
        + (f"<CivilCode>340202</CivilCode>\r\n<Parental>0</Parental>\r\n<ParentID>{NVR}</ParentID>\r\n<Status>{s}</Status>\r\n" if s else "")
        + "</Item>\r\n"
        for i, n, s in items
    )  # fmt: skip
    return (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>[$sn]</SN>\r\n'
        f'<DeviceID>{NVR}</DeviceID>\r\n<SumNum>4</SumNum>\r\n<DeviceList Num="4">\r\n{xml}</DeviceList>\r\n</Response>\r\n'
    )


async def nvr_with_channels(gw: Gateway, tmp_path: Path) -> int:
    """Register the NVR and read its catalog; its SIP port."""
    port = free_udp_port()
    await register(gw, tmp_path, port, device=NVR)
    scenario = sipp_scenario("message_uas.xml", check="", parts=response_message(31, nvr_catalog_body()), refs="all,sn")
    proc = await play_device(scenario.encode("gb2312"), port, tmp_path, "nvr-catalog")
    result = await gw.devices.catalog(NVR)
    await finished(proc)
    assert result.complete and len(gw.devices.channels[NVR]) == 4
    return port


def trace_items(trace: bytes) -> list[list[str]]:
    """The item IDs of every catalog Response MESSAGE in a SIPp message trace, message by message."""
    text = trace.decode("gb18030", errors="replace")
    parts = re.findall(r"<Response>.*?</Response>", text, re.S)
    return [re.findall(r"<Item>\s*<DeviceID>(\d+)</DeviceID>", p) for p in parts if "<CmdType>Catalog" in p]


@pytest.mark.parametrize(
    ("target", "answer", "tree"),
    [(OURS, 200, TREE), ("340202", 200, TREE[3:]), ("34020000001310009999", 404, [])],
    ids=["our-id", "civil-code", "unknown-id"],
)
async def test_sipp_superior_gets_the_exact_tree_in_paced_batches(
    tmp_path: Path, target: str, answer: int, tree: list[str]
) -> None:
    port = free_udp_port()  # the superior's: nobody listens yet, so the gateway backs off
    gw = await gateway_under(tmp_path, port, catalog_batch=2, keepalive_interval=60)
    try:
        await nvr_with_channels(gw, tmp_path)
        batches = -(-len(tree) // 2)
        scenario = tmp_path / "superior.xml"
        scenario.write_text(sipp_scenario("superior_catalog.xml", target=target, answer=answer, sum=len(tree), batch=2))
        got = trace_items(await _superior(scenario, port, tmp_path, calls=1 + batches))
        assert [i for part in got for i in part] == tree
        assert [len(part) for part in got] == [2] * (len(tree) // 2) + [1] * (len(tree) % 2)
        metrics = gw.metrics.render().decode()
        sent = 'gb28181gw_upstream_catalog_items_total{upstream="district"}'
        assert f"{sent} {float(len(tree))}" in metrics if tree else sent not in metrics
        result_label = "ok" if answer == 200 else "404"
        assert f'request="Catalog",result="{result_label}",upstream="district"' in metrics
    finally:
        await gw.stop()


async def _superior(scenario: Path, port: int, tmp_path: Path, *, calls: int) -> bytes:
    """Run SIPp as the superior (a server on ``port``) until it has taken ``calls`` calls; its trace."""
    sipp = require_sipp()
    trace = tmp_path / "superior.msg"
    proc = await asyncio.create_subprocess_exec(
        sipp, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-m", str(calls), "-timeout", "20s",
        "-timeout_error", "-nostdin", "-trace_msg", "-message_file", str(trace),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    return trace.read_bytes()


# --- a superior the test drives request by request -------------------------------------------------


def answering() -> Policy:
    """A superior policy: 200 to everything (REGISTER, keepalives, catalog parts, NOTIFYs)."""

    def answer(req: Request) -> bytes:
        resp = make_response(req, 200, to_tag="sup1")
        if req.method == "REGISTER":
            resp.headers.add("Expires", "3600")
        return bytes(resp)

    return answer


class Driver:
    """Sends the superior's own requests from its socket and reads what the gateway sent it."""

    def __init__(self, sup: Superior, gw: Gateway) -> None:
        self.sup = sup
        self.gw = gw
        self.n = 0

    def send(self, method: str, *, body: str = "", headers: str = "", from_id: str = UPPER, to_tag: str = "") -> str:
        self.n += 1
        call_id = f"sup-{method.lower()}-{self.n}"
        self.send_raw(method, call_id, body=body, headers=headers, from_id=from_id, to_tag=to_tag)
        return call_id

    def send_raw(
        self, method: str, call_id: str, *, body: str = "", headers: str = "", from_id: str = UPPER, to_tag: str = "",
        cseq: int = 1, sock: socket.socket | None = None,
    ) -> None:  # fmt: skip
        data = body.encode("gb2312")
        to = f"<sip:{OURS}@3402000000>" + (f";tag={to_tag}" if to_tag else "")
        port = self.sup.port if sock is None else sock.getsockname()[1]
        host = "127.0.0.1" if sock is None else sock.getsockname()[0]
        text = (
            f"{method} sip:{OURS}@127.0.0.1:{self.gw.stack.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{call_id}{cseq}\r\n"
            f"From: <sip:{from_id}@3401000000>;tag=s{self.n}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContact: <sip:{from_id}@{host}:{port}>\r\n{headers}"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        if sock is not None:
            sock.sendto(text, ("127.0.0.1", self.gw.stack.port))
        else:
            assert self.sup.transport is not None
            self.sup.transport.sendto(text, ("127.0.0.1", self.gw.stack.port))

    async def response(self, call_id: str, cseq: int = 1) -> Response:
        def found() -> Response | None:
            return next(
                (r for r in self.sup.responses if r.call_id == call_id and r.cseq.number == cseq and r.status >= 200),
                None,
            )

        await until(lambda: found() is not None)
        answer = found()
        assert answer is not None
        return answer

    def requests(self, method: str) -> list[Request]:
        return [r for _, r in self.sup.requests if r.method == method]

    async def query(self, target: str, sn: int) -> list[str]:
        """A Catalog query; the item IDs of the whole answer, once every part has come."""
        call_id = self.send("MESSAGE", body=query_body(target, sn))
        assert (await self.response(call_id)).status == 200

        def parts() -> list[tuple[int, list[str]]]:
            out = []
            for req in self.requests("MESSAGE"):
                env = decode(req.body)
                if env.sn == sn and env.is_cmd(CmdType.CATALOG):
                    sum_num, items = catalog(env)
                    out.append((sum_num, [i.device_id for i in items]))
            return out

        await until(lambda: bool(parts()) and sum(len(p) for _, p in parts()) >= parts()[0][0])
        return [i for _, part in parts() for i in part]


@contextlib.asynccontextmanager
async def site(tmp_path: Path, **upstream: object) -> AsyncIterator[tuple[Gateway, Driver, int]]:
    """A gateway registered to a superior the test drives, with the NVR and its channels; the NVR's port."""
    sup = await superior(answering())
    gw = await gateway_under(tmp_path, sup.port, keepalive_interval=60, **upstream)
    try:
        await until(lambda: gw.upstreams.links["district"].machine.registered)
        yield gw, Driver(sup, gw), await nvr_with_channels(gw, tmp_path)
    finally:
        await gw.stop()


def cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    assert gw.admin is not None
    return subprocess.run(
        [sys.executable, "-m", "gb28181gw", *args, "--admin", f"127.0.0.1:{gw.admin.port}"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "GB28181GW_TIME_ZONE": "UTC+8"},
    )


def query_body(target: str, sn: int) -> str:
    return (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n'
        f"<SN>{sn}</SN>\r\n<DeviceID>{target}</DeviceID>\r\n</Query>\r\n"
    )


SUBSCRIBE_BODY = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>7</SN>\r\n'
    f"<DeviceID>{OURS}</DeviceID>\r\n</Query>\r\n"
)


async def test_shares_subscription_and_refusals(tmp_path: Path) -> None:
    async with site(tmp_path, catalog_batch=4) as (gw, drive, nvr_port):
        assert await drive.query(OURS, 1) == TREE

        # the operator takes one channel back, and shares it again, with the CLI
        done = await asyncio.to_thread(cli, gw, "upstream", "unshare", "district", CH2, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["unshared"] == [CH2]
        assert await drive.query(OURS, 2) == [i for i in TREE if i != CH2]
        unshared = drive.send("MESSAGE", body=query_body(CH2, 3))
        assert (await drive.response(unshared)).status == 404  # as if we did not have it
        (row,) = json.loads((await asyncio.to_thread(cli, gw, "upstreams", "--json")).stdout)
        assert row["channels_shared"] == 2
        done = await asyncio.to_thread(cli, gw, "upstream", "share", "district", CH2)
        assert done.returncode == 0 and "district now sees: all" in done.stdout
        assert await drive.query(OURS, 4) == TREE
        # an override changes the name the superior sees, never the ID
        done = await asyncio.to_thread(cli, gw, "upstream", "override", "district", CH1, "--name", "正门")
        assert done.returncode == 0, done.stderr
        assert await drive.query(CH1, 5) == [CH1]
        (part,) = [r for r in drive.requests("MESSAGE") if b"<SN>5</SN>" in r.body]
        assert "正门".encode("gb18030") in part.body
        # mistakes: an unknown superior (404 with a hint) and an ID that is none (400)
        bad = await asyncio.to_thread(cli, gw, "upstream", "share", "city", CH1)
        assert bad.returncode != 0 and "no superior named 'city'" in bad.stderr and "district" in bad.stderr
        bad = await asyncio.to_thread(cli, gw, "upstream", "unshare", "district", "34020000001310000001x")
        assert bad.returncode != 0 and "not a device ID" in bad.stderr

        # a catalog subscription: 200 with Expires and a Result OK body, in a dialog
        sub_call = drive.send(
            "SUBSCRIBE",
            body=SUBSCRIBE_BODY,
            headers="Event: Catalog;id=7\r\nExpires: 600\r\nContent-Type: Application/MANSCDP+xml\r\n",
        )
        ok = await drive.response(sub_call)
        assert ok.status == 200 and ok.headers.get("expires") == "600" and ok.headers.get("event") == "Catalog;id=7"
        assert b"<Result>OK</Result>" in ok.body and ok.to.tag

        # the operator unshares a channel: NOTIFY DEL in the subscription's dialog
        assert (await asyncio.to_thread(cli, gw, "upstream", "unshare", "district", CH3)).returncode == 0
        await until(lambda: any(b"<Event>DEL</Event>" in r.body for r in drive.requests("NOTIFY")))
        (dele,) = [r for r in drive.requests("NOTIFY") if b"<Event>DEL</Event>" in r.body]
        assert dele.call_id == sub_call and dele.from_.tag == ok.to.tag
        assert (dele.headers.get("subscription-state") or "").startswith("active;expires=")
        assert [i.device_id for i in catalog(decode(dele.body))[1]] == [CH3]

        # the NVR unregisters: its channels go OFF, and the superior is told
        await register_expires_zero(gw, tmp_path, nvr_port)
        await until(lambda: any(b"<Event>OFF</Event>" in r.body for r in drive.requests("NOTIFY")))
        offs = [r for r in drive.requests("NOTIFY") if b"<Event>OFF</Event>" in r.body]
        got = [(i.device_id, i.fields["Event"]) for r in offs for i in catalog(decode(r.body))[1]]
        assert got == [(CH1, "OFF"), (CH2, "OFF")]
        assert 'gb28181gw_upstream_notifies_total{upstream="district"} 2.0' in gw.metrics.render().decode()

        # unsubscribe (Expires: 0 in the dialog): no more NOTIFYs
        drive.send_raw(
            "SUBSCRIBE", sub_call, body=SUBSCRIBE_BODY, headers="Event: Catalog;id=7\r\nExpires: 0\r\n",
            to_tag=ok.to.tag or "", cseq=2,
        )  # fmt: skip
        assert (await drive.response(sub_call, cseq=2)).status == 200
        assert gw.cascade_catalog.feeds["district"].subscription is None

        # strangers: a catalog SUBSCRIBE from a platform that is not our superior, and a
        # MESSAGE with our superior's ID from another address, are refused (403)
        stranger = drive.send(
            "SUBSCRIBE",
            body=SUBSCRIBE_BODY,
            headers="Event: Catalog\r\nExpires: 600\r\n",
            from_id="34030000002000000001",
        )
        assert (await drive.response(stranger)).status == 403
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.2", 0))
            other.setblocking(False)
            drive.send_raw("MESSAGE", "impostor-1", body=query_body(OURS, 9), sock=other)
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(other, 65536), 5)
            answer = parse_message(data)
        assert isinstance(answer, Response) and answer.status == 403


async def test_catalog_push_without_a_subscription(tmp_path: Path) -> None:
    async with site(tmp_path, catalog_batch=8, catalog_push=True) as (gw, drive, port):
        # the catalog read is pushed as ADDs, parents first
        await until(lambda: bool(drive.requests("NOTIFY")))
        (add,) = drive.requests("NOTIFY")
        items = catalog(decode(add.body))[1]
        assert [(i.device_id, i.fields["Event"]) for i in items] == [(i, "ADD") for i in TREE[1:]]
        assert add.headers.get("event") == "Catalog" and add.headers.get("subscription-state") == "active"
        assert add.to.tag  # a dialog of our making (wvp's auto push), not an out-of-dialog NOTIFY
        await register_expires_zero(gw, tmp_path, port)
        await until(lambda: len(drive.requests("NOTIFY")) == 2)
        off = drive.requests("NOTIFY")[1]
        assert [(i.device_id, i.fields["Event"]) for i in catalog(decode(off.body))[1]] == [
            (CH1, "OFF"),
            (CH2, "OFF"),
            (CH3, "OFF"),
        ]
        assert off.call_id == add.call_id and off.cseq.number == add.cseq.number + 1


async def test_subscription_starts_with_what_is_offline_is_refreshed_and_expires(tmp_path: Path) -> None:
    async with site(tmp_path, catalog_batch=2) as (gw, drive, port):
        await register_expires_zero(gw, tmp_path, port)
        # Monibuca sends no Event header (PROTOCOL.md §11.6 P5): a Catalog body is enough
        call = drive.send("SUBSCRIBE", body=SUBSCRIBE_BODY, headers="Expires: 2\r\n")
        ok = await drive.response(call)
        assert ok.status == 200 and ok.headers.get("expires") == "2" and ok.headers.get("event") == "Catalog"
        # 2022 N.2.1.2.1: the subscriber assumes all online; the offline ones are NOTIFYd at once
        await until(lambda: len(drive.requests("NOTIFY")) == 2)
        got = [i.device_id for r in drive.requests("NOTIFY") for i in catalog(decode(r.body))[1]]
        assert got == [CH1, CH2, CH3]
        drive.send_raw("SUBSCRIBE", call, body=SUBSCRIBE_BODY, headers="Expires: 3\r\n", to_tag=ok.to.tag or "", cseq=2)
        refreshed = await drive.response(call, cseq=2)
        assert refreshed.status == 200 and refreshed.headers.get("expires") == "3"
        feed = gw.cascade_catalog.feeds["district"]
        assert feed.subscription is not None
        await until(lambda: feed.subscription is None, timeout=6)  # not refreshed again: it ends
        # a re-SUBSCRIBE in the ended dialog is no longer ours
        drive.send_raw("SUBSCRIBE", call, body=SUBSCRIBE_BODY, headers="Expires: 3\r\n", to_tag=ok.to.tag or "", cseq=3)
        assert (await drive.response(call, cseq=3)).status == 481


async def test_shares_and_overrides_outlast_a_restart(tmp_path: Path) -> None:
    sup = await superior(answering())
    gw = await gateway_under(tmp_path, sup.port, keepalive_interval=60, share=[NVR])
    try:
        assert (await asyncio.to_thread(cli, gw, "upstream", "unshare", "district", CH2)).returncode == 0
        done = await asyncio.to_thread(
            cli, gw, "upstream", "override", "district", CH1, "--civil-code", "340203", "--parent", OURS
        )
        assert done.returncode == 0, done.stderr
        bad = await asyncio.to_thread(cli, gw, "upstream", "override", "district", CH1, "--civil-code", "34020")
        assert bad.returncode != 0 and "civil code '34020' is not 2, 4, 6 or 8 digits" in bad.stderr
        nothing = await asyncio.to_thread(cli, gw, "upstream", "override", "district", CH3, "--clear")
        assert nothing.returncode != 0 and "no override of" in nothing.stderr
    finally:
        await gw.stop()
    gw = await gateway_under(tmp_path, sup.port, keepalive_interval=60, share=[NVR])
    try:
        link = gw.upstreams.links["district"]
        assert link.rule.describe() == f"{NVR} except {CH2}"
        assert link.overrides[CH1].civil_code == "340203" and link.overrides[CH1].parent_id == OURS
        listed = json.loads((await asyncio.to_thread(cli, gw, "upstream", "overrides", "district", "--json")).stdout)
        assert listed == [
            {"upstream": "district", "channel_id": CH1, "name": "", "civil_code": "340203", "parent_id": OURS}
        ]
        assert (await asyncio.to_thread(cli, gw, "upstream", "override", "district", CH1, "--clear")).returncode == 0
        assert CH1 not in link.overrides
    finally:
        await gw.stop()


async def test_an_answer_under_way_stops_when_the_superior_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def forgetful(req: Request) -> bytes | None:
        # takes our registration, never answers the catalog parts, and forgets us (403 to a keepalive)
        if req.method == "REGISTER":
            return answering()(req)
        if b"<CmdType>Keepalive</CmdType>" in req.body:
            return bytes(make_response(req, 403, to_tag="sup1"))
        return None

    sup = await superior(forgetful)
    gw = await gateway_under(tmp_path, sup.port, keepalive_interval=1, catalog_batch=1)
    drive = Driver(sup, gw)
    try:
        await until(lambda: gw.upstreams.links["district"].machine.registered)
        await nvr_with_channels(gw, tmp_path)
        with caplog.at_level("INFO", logger="gb28181gw.upstream.catalog"):
            call = drive.send("MESSAGE", body=query_body(OURS, 88))
            assert (await drive.response(call)).status == 200
            await until(lambda: "catalog messages to a superior stopped" in caplog.text)
        (line,) = [r for r in caplog.records if r.getMessage() == "catalog messages to a superior stopped"]
        assert str(getattr(line, "reason", "")).startswith("superior lost")
        parts = {r.call_id for r in drive.requests("MESSAGE") if b"<SN>88</SN>" in r.body}  # not retransmissions
        # unanswered, each went 0.5 s after the one before (the fallback pace) until the loss
        assert 1 <= len(parts) < len(TREE)
        assert vars(line)["unsent"] == len(TREE) - len(parts)  # the log line's count of what it never sent
    finally:
        await gw.stop()


async def test_a_devices_catalog_events_reach_the_subscribed_superior(tmp_path: Path) -> None:
    async with site(tmp_path, catalog_batch=8) as (gw, drive, nvr_port):
        call = drive.send("SUBSCRIBE", body=SUBSCRIBE_BODY, headers="Event: Catalog;id=7\r\nExpires: 600\r\n")
        assert (await drive.response(call)).status == 200
        # the NVR's own catalog subscription brings CH1 OFF, CH2 DEL, CH3 again (ADD, without
        # its civil code) and an event for a channel it never reported
        scenario = sipp_scenario("subscribe_uas.xml", nvr=NVR, ch1=CH1, ch2=CH2, new_name="新车库")
        proc = await play_device(scenario.encode("gb2312"), nvr_port, tmp_path, "nvr-events")
        await gw.subscriptions.subscribe(NVR, "catalog")
        await finished(proc)
        await until(lambda: bool(drive.requests("NOTIFY")))
        (notify,) = drive.requests("NOTIFY")
        got = [(i.device_id, i.fields["Event"]) for i in catalog(decode(notify.body))[1]]
        assert got == [("340200", "ADD"), (CH1, "OFF"), (CH3, "UPDATE"), (CH2, "DEL")]
        (update,) = [i for i in catalog(decode(notify.body))[1] if i.device_id == CH3]
        assert update.fields["Name"] == "新车库" and update.fields["CivilCode"] == "340200"  # ours, as it has none
        await gw.subscriptions.stop()
