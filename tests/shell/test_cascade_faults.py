"""Faults a superior causes in the field, toward our catalog and requests (issue 12 items 3, 4), over real 127.0.0.1 sockets.

The superiors here misbehave the way real ones do: one asks for the catalog again while
the previous answer is still being paced out (wvp and Hikvision platforms re-query when their
sync timer runs out), one asks our DeviceInfo while devices reported regions and groups
among their channels. The operator pastes a name with a control character into an override,
and a big site changes under a subscribed superior while the loop must keep serving SIP.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gb28181gw.app import tune_gc
from gb28181gw.gb.model import Channel
from gb28181gw.manscdp.messages import CmdType, decode
from gb28181gw.sip.message import Request

from .test_cascade_catalog import TREE, Driver, answering, cli, nvr_with_channels, query_body
from .test_cascade_catalog import site as catalog_site
from .test_cascade_requests import NVR, OURS, Make, query, site
from .test_devices import CH1, CH2
from .test_upstreams import _close_superiors, gateway_under, superior, until

pytestmark = pytest.mark.sipp
__all__ = ["_close_superiors", "site"]  # fixtures used here


def _catalog_parts(drive: Driver, sn: int) -> set[str]:
    """Call-IDs of the catalog Response MESSAGEs with ``sn`` the superior received (not retransmissions)."""
    return {
        r.call_id
        for r in drive.requests("MESSAGE")
        if r.body and decode(r.body).is_cmd(CmdType.CATALOG) and decode(r.body).sn == sn
    }


async def test_a_catalog_query_asked_again_replaces_the_answer_under_way(tmp_path: Path) -> None:
    # the superior takes our registration and keepalives but leaves the catalog parts unanswered,
    # so they go at the fallback pace; it asks again (same DeviceID, new SN) while the first
    # answer is under way. Two answers interleaved halve the pace of the one it waits for, and
    # a superior whose sync timer runs out again asks again: answers pile up without end.
    def slow(req: Request) -> bytes | None:
        if req.method == "MESSAGE" and b"<CmdType>Catalog</CmdType>" in req.body:
            return None
        return answering()(req)

    sup = await superior(slow)
    gw = await gateway_under(tmp_path, sup.port, keepalive_interval=60, catalog_batch=1)
    drive = Driver(sup, gw)
    try:
        await until(lambda: gw.upstreams.links["district"].machine.registered)
        await nvr_with_channels(gw, tmp_path)
        first = drive.send("MESSAGE", body=query_body(OURS, 1))
        assert (await drive.response(first)).status == 200
        await until(lambda: len(_catalog_parts(drive, 1)) == 1)
        again = drive.send("MESSAGE", body=query_body(OURS, 2))
        assert (await drive.response(again)).status == 200
        await until(lambda: len(_catalog_parts(drive, 2)) == len(TREE), timeout=15)
        await asyncio.sleep(0.6)  # one fallback pace more: a first answer still going would send again
        assert len(_catalog_parts(drive, 1)) < len(TREE)  # the first answer stopped
        assert not gw.cascade_catalog._answers  # nothing left under way
    finally:
        await gw.stop()


async def test_device_info_of_our_platform_counts_shared_channels_not_regions_or_groups(site: Make) -> None:
    # PROTOCOL.md §9.4: Channel = the number of shared channels. NVRs and lower platforms report
    # their civil-code regions, business groups and virtual organisations among their catalog
    # items; they are no channels (`gb28181gw upstreams` does not count them either)
    s = await site(["<CmdType>DeviceInfo</CmdType>", "<SN>7101</SN>", "<Channel>2</Channel>"], 1)
    chans = s.gw.devices.channels[NVR]
    for item_id, name in (("340202", "示例区"), ("34020000002150000001", "治安"), ("34020000002160000001", "园区")):
        chans[item_id] = Channel(item_id, NVR, name)
    await s.ask(query("Query", "DeviceInfo", 7101, OURS), 200)
    await until(lambda: s.counted("DeviceInfo", "ok") == 1)
    (row,) = s.gw.upstreams.listing()
    assert row["channels_shared"] == 2 and {CH1, CH2} <= set(chans)
    await s.close()


async def test_an_override_name_xml_cannot_carry_is_refused(tmp_path: Path) -> None:
    # a name pasted from a spreadsheet with a control character in it: written into the catalog
    # answer as is, it makes the superior's XML parser drop the whole part (and the items with it)
    async with catalog_site(tmp_path, catalog_batch=8) as (gw, drive, _):
        bad = await asyncio.to_thread(cli, gw, "upstream", "override", "district", CH1, "--name", "大门\x08口")
        assert bad.returncode != 0 and "name" in bad.stderr
        assert CH1 not in gw.upstreams.links["district"].overrides
        assert await drive.query(OURS, 3) == TREE  # every part still XML


@contextmanager
def collector_as_served() -> Iterator[None]:
    """The garbage collector tuned as ``gb28181gw serve`` tunes it (:func:`gb28181gw.app.tune_gc`).

    With pytest's default thresholds, a full collection walks the whole test process (the
    20,000 channels, their trees, pytest itself) every few hundred thousand allocations, a
    100 ms pause whatever the code under test does; the gateway never runs that way.
    """
    threshold = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_a_change_among_20000_channels_does_not_stall_the_loop(tmp_path: Path) -> None:
    # a site of 200 NVRs of 100 channels under a subscribed superior; one NVR goes offline
    with collector_as_served():
        await _one_change_among_20000(tmp_path)


async def _one_change_among_20000(tmp_path: Path) -> None:
    async with catalog_site(tmp_path, catalog_batch=8) as (gw, drive, _):
        for d in range(200):
            nvr = f"3402000000118{d:07d}"
            gw.devices.channels[nvr] = {
                cid: Channel(cid, nvr, f"通道{c}", "ON", nvr, {"CivilCode": "340200", "Manufacturer": "Hik"})
                for c in range(100)
                for cid in (f"3402000000131{d:03d}{c:04d}",)
            }
        call = drive.send("SUBSCRIBE", body=query_body(OURS, 9), headers="Event: Catalog\r\nExpires: 600\r\n")
        assert (await drive.response(call)).status == 200
        await until(lambda: len(drive.requests("NOTIFY")) > 0, timeout=30)  # its first (offline) NOTIFYs go
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        running = True

        async def ticker() -> None:
            while running:
                before = loop.time()
                await asyncio.sleep(0.002)
                lags.append(loop.time() - before - 0.002)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        lags.clear()
        gw.devices.channels_changed("34020000001180000000")  # one device's channels changed
        await asyncio.sleep(0.6)  # CHANGE_DELAY, the flush, and some
        running = False
        await task
        # a coarse bound, far from the ~300 ms a whole-tree rebuild on the loop took here: the figure
        # itself is the benchmark's (bench_cascade_catalog.py --stalls), not a timed test's
        assert max(lags) < 0.1, f"the loop was blocked {max(lags) * 1000:.0f} ms"


async def test_a_big_catalog_batch_over_udp_still_reaches_the_superior(tmp_path: Path) -> None:
    async with catalog_site(tmp_path, catalog_batch=256) as (gw, drive, _):
        chans = gw.devices.channels[NVR]
        for c in range(300):
            cid = f"340200000013200{c:05d}"
            chans[cid] = Channel(cid, NVR, f"示例路{c}号通道", "ON", NVR, {"CivilCode": "340200", "Address": "示例路"})
        assert len(await drive.query(OURS, 4)) == len(TREE) + 300 + 1  # 340200 too


async def test_a_superiors_alarm_subscription_is_answered_489_not_405(tmp_path: Path) -> None:
    # wvp subscribes to alarms and positions with Event: presence (PROTOCOL.md §11.6 P1); we serve
    # SUBSCRIBE (catalog), so a 405 would contradict our Allow: RFC 6665 §4.2.1.1 says 489
    async with catalog_site(tmp_path) as (_, drive, _):
        body = query_body(OURS, 5).replace("Catalog", "Alarm")
        call = drive.send("SUBSCRIBE", body=body, headers="Event: presence\r\nExpires: 3600\r\n")
        resp = await drive.response(call)
        assert resp.status == 489 and "presence" in (resp.headers.get("warning") or "")
