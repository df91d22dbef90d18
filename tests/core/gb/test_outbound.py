"""Requests toward a device registered through a proxy that put a Path on its REGISTER (RFC 3327 §5.3)."""

from __future__ import annotations

from gb28181gw.gb.model import Device
from gb28181gw.gb.outbound import device_dialog, device_peer, device_routes, device_uri, to_device
from gb28181gw.sip.message import make_response

FRONT = "<sip:10.0.0.9:5060;lr;received=sip:192.168.1.20:5061>"
DEVICE = Device("34020000001320000001", host="10.0.0.9", port=5060, path=f"{FRONT}, <sip:10.0.0.8;lr>")
DIRECT = Device("34020000001320000001", host="192.168.1.20", port=5061)
CH = "34020000001310000001"


def test_the_routes_are_the_path_in_order_and_none_without_one() -> None:
    assert device_routes(DEVICE) == (FRONT, "<sip:10.0.0.8;lr>")
    assert device_routes(DIRECT) == ()


def test_a_message_carries_the_path_as_route_first_and_goes_to_the_front() -> None:
    request = to_device(
        "MESSAGE", device_uri(DEVICE.device_id, DEVICE), our_id="34020000002000000001", domain="3402000000",
        device_id=DEVICE.device_id, target_id=DEVICE.device_id, call_id="c1", cseq=1, from_tag="f1",
        extra=[("X-Other", "1")], routes=device_routes(DEVICE),
    )  # fmt: skip
    assert request.headers.get_all("route") == [FRONT, "<sip:10.0.0.8;lr>"]
    wire = request.serialize().decode()
    assert wire.index("Route: ") < wire.index("X-Other: 1")
    assert (device_peer(DEVICE).host, device_peer(DEVICE).port) == ("10.0.0.9", 5060)


def test_a_direct_devices_message_has_no_route() -> None:
    request = to_device(
        "MESSAGE", device_uri(DIRECT.device_id, DIRECT), our_id="34020000002000000001", domain="3402000000",
        device_id=DIRECT.device_id, target_id=DIRECT.device_id, call_id="c1", cseq=1, from_tag="f1",
        routes=device_routes(DIRECT),
    )  # fmt: skip
    assert request.headers.get_all("route") == []


def test_the_invite_follows_the_path_until_the_answer_s_record_route_replaces_it() -> None:
    dialog = device_dialog(DEVICE, CH, our_id="34020000002000000001", domain="3402000000", call_id="c2", local_tag="g1")
    invite = dialog.request("INVITE")
    assert invite.uri == f"sip:{CH}@10.0.0.9:5060"
    assert invite.headers.get_all("route") == [FRONT, "<sip:10.0.0.8;lr>"]
    ok = make_response(invite, 200, to_tag="d1")
    ok.headers.add("Contact", f"<sip:{CH}@192.168.1.20:5061>")
    ok.headers.add("Record-Route", "<sip:10.0.0.9:5060;lr>")
    dialog.receive_response(ok)
    bye = dialog.request("BYE")
    assert bye.uri == f"sip:{CH}@192.168.1.20:5061"
    assert bye.headers.get_all("route") == ["<sip:10.0.0.9:5060;lr>"]  # the front's Record-Route, not the Path
    assert dialog.peer == device_peer(DEVICE)  # sent to the front still
