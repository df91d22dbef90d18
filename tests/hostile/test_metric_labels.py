"""What devices send cannot make time series (issue 10, defect 11)."""

from __future__ import annotations

import asyncio

from gb28181gw.app import Gateway
from tests.hostile.test_hijack import DEVICE, Peer
from tests.hostile.test_persistence import register
from tests.shell.test_registrar import _message

DISTINCT = 300


def _alarm(n: int) -> bytes:
    return (
        b'<?xml version="1.0"?><Notify><CmdType>Alarm</CmdType><SN>%d</SN><DeviceID>34020000001320000001</DeviceID>'
        b"<AlarmPriority>1</AlarmPriority><AlarmMethod>m%d</AlarmMethod><AlarmType>%d</AlarmType></Notify>" % (n, n, n)
    )


def _response(n: int) -> bytes:
    return (
        b'<?xml version="1.0"?><Response><CmdType>Made%dUp</CmdType><SN>%d</SN>'
        b"<DeviceID>34020000001320000001</DeviceID><Result>OK</Result></Response>" % (n, n)
    )


def _answer(camera: Peer, port: int, data: bytes) -> bytes:
    """Send ``data`` and return the response to it, passing over the gateway's own MESSAGEs (alarm answers).

    Resent every second as a device's UDP transaction would (Timer A): one of 600 answers took
    longer than a single 5 s wait once, on a loaded machine; the gateway answers a retransmission
    from its transaction, so a resend cannot count twice."""
    for _ in range(20):
        camera.sock.sendto(data, ("127.0.0.1", port))
        try:
            while not (got := camera.sock.recv(65535)).startswith(b"SIP/2.0 "):
                pass
            return got
        except TimeoutError:
            continue
    raise AssertionError(f"no answer to {data[:60]!r} in 20 tries")


async def test_distinct_cmd_and_alarm_types_share_one_other_series(gateway: Gateway) -> None:
    port = gateway.stack.port
    camera = Peer("127.0.0.1")
    try:
        assert (await asyncio.to_thread(camera.exchange, port, register(DEVICE, 1))).startswith(b"SIP/2.0 200")
        camera.sock.settimeout(1)
        for n in range(DISTINCT):
            for kind, body in (("a", _alarm(n)), ("r", _response(n))):
                answer = await asyncio.to_thread(_answer, camera, port, _message(DEVICE, body, f"z9hG4bK{kind}{n}"))
                assert answer.startswith(b"SIP/2.0 200")
    finally:
        camera.close()
    text = gateway.metrics.render().decode()
    unmatched = [line for line in text.splitlines() if line.startswith("gb28181gw_manscdp_unmatched_total{")]
    alarms = [line for line in text.splitlines() if line.startswith("gb28181gw_alarms_total{")]
    assert unmatched == [f'gb28181gw_manscdp_unmatched_total{{cmd="other"}} {float(DISTINCT)}']
    # AlarmType 0-99 are codes of the standard; the rest and every made-up AlarmMethod are "other"
    assert len(alarms) <= 101, len(alarms)
    assert f'gb28181gw_alarms_total{{method="other",type="other"}} {float(DISTINCT - 100)}' in alarms
