"""Requests from the gateway toward a device, addressed the one way GB/T 28181 expects.

From is our ID at our domain; To is the ID being addressed (the device itself, or one of
its channels) at the device's domain, its first ten digits (GB/T 28181-2022 §6.1.2).
MESSAGE, SUBSCRIBE, INVITE and the requests inside their dialogs all share this.
"""

from __future__ import annotations

from gb28181gw.sip.message import Request, make_request


def addressed_uri(target_id: str, device_id: str) -> str:
    """``sip:<target>@<device domain>``: the To URI for ``target_id`` on ``device_id``."""
    return f"sip:{target_id}@{device_id[:10]}"


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
) -> Request:
    """Build ``method`` from us (``our_id`` at ``domain``) to ``target_id`` on ``device_id``."""
    return make_request(
        method,
        uri,
        from_addr=f"sip:{our_id}@{domain}",
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
