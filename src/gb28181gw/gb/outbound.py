"""Requests from the gateway toward a device, addressed the one way GB/T 28181 expects.

From is our ID at our domain; To is the ID being addressed (the device itself, or one of
its channels) at the device's domain, its first ten digits (GB/T 28181-2022 §6.1.2).
The Request-URI is that ID at the address the device registered from, and requests go
to that address over its transport (PROTOCOL.md §3.4, R3): :func:`device_uri` and
:func:`device_peer` are the one place that says so. MESSAGE, SUBSCRIBE, INVITE and the
requests inside their dialogs all share this. A device registered through a proxy that put a
Path in its REGISTER (RFC 3327) has the proxy's address as that address, and its requests
carry the Path as Route headers (:func:`device_routes`), which the proxy reads to reach it.
"""

from __future__ import annotations

from gb28181gw.sip.dialog import Dialog
from gb28181gw.sip.message import Request, make_request
from gb28181gw.sip.params import split_commas
from gb28181gw.sip.peer import Peer

from .model import Device


def addressed_uri(target_id: str, device_id: str) -> str:
    """``sip:<target>@<device domain>``: the To URI for ``target_id`` on ``device_id``."""
    return f"sip:{target_id}@{device_id[:10]}"


def device_peer(device: Device) -> Peer:
    """Where requests to ``device`` go: the transport, host and port it registered from."""
    return Peer(str(device.transport), device.host, device.port)


def device_routes(device: Device) -> tuple[str, ...]:
    """The Route values of a request to ``device`` outside a dialog: the Path its REGISTER came
    with (RFC 3327 §5.3), in order, so that the proxy in front that asked to stay on the way
    (a dispatcher spreading devices over several nodes) gets it and forwards it to the device.
    Empty for a device that registered directly."""
    return tuple(split_commas(device.path))


def device_uri(target_id: str, device: Device) -> str:
    """The Request-URI for ``target_id`` (the device or one of its channels) at ``device``'s address."""
    host = f"[{device.host}]" if ":" in device.host else device.host
    return f"sip:{target_id}@{host}:{device.port}"


def our_uri(our_id: str, domain: str) -> str:
    """Our From URI: ``sip:<our id>@<our domain>``."""
    return f"sip:{our_id}@{domain}"


def device_dialog(device: Device, target_id: str, *, our_id: str, domain: str, call_id: str, local_tag: str) -> Dialog:
    """A UAC dialog (INVITE or SUBSCRIBE) from us to ``target_id`` on ``device``, not yet sent."""
    return Dialog.uac(
        call_id=call_id,
        local_tag=local_tag,
        local_uri=our_uri(our_id, domain),
        remote_uri=addressed_uri(target_id, device.device_id),
        target=device_uri(target_id, device),
        peer=device_peer(device),
        route_set=device_routes(device),
    )


def to_device(
    method: str,
    uri: str,
    *,
    our_id: str,
    domain: str,
    device_id: str,
    target_id: str,
    call_id: str,
    cseq: int,
    from_tag: str,
    to_tag: str | None = None,
    contact: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    routes: tuple[str, ...] = (),
) -> Request:
    """Build ``method`` from us (``our_id`` at ``domain``) to ``target_id`` on ``device_id``, outside dialogs.

    ``routes``: its Route values (:func:`device_routes`), first, as RFC 3261 §8.1.1.1 puts them.
    """
    if routes:
        extra = [*(("Route", r) for r in routes), *(extra or ())]
    return make_request(
        method,
        uri,
        from_addr=our_uri(our_id, domain),
        to_addr=addressed_uri(target_id, device_id),
        call_id=call_id,
        cseq=cseq,
        from_tag=from_tag,
        to_tag=to_tag,
        contact=contact,
        extra=extra,
        body=body,
        content_type=content_type,
    )
