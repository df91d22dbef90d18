"""Our own addresses: which one to tell a peer (Via sent-by, Contact, SDP ``c=``/``o=``), and bind errors.

A gateway listening on a wildcard (``0.0.0.0``, ``::``) has no single address: a camera on
the LAN reaches it at 192.168.1.10, one over a VPN at 10.8.0.1, a test on 127.0.0.2. What we
tell a device must be the address *that device* reached us on, or it sends its video where
it cannot (issue 11: the quick-start defaults told real cameras 127.0.0.1). The convention,
applied by :meth:`~gb28181gw.net.stack.SipStack.local_address` for every Via, Contact and
SDP offer toward a peer, in this order:

1. ``sip.advertised_address`` when set (NAT, Docker's bridge network: the operator knows);
2. the listen address, when it is not a wildcard;
3. the address the peer's packets arrived at: the destination of its UDP datagrams
   (``IP_PKTINFO`` / ``IPV6_RECVPKTINFO`` with ``recvmsg``, see :mod:`.sip_udp`) or the local
   end of its TCP connection (``getsockname``, see :mod:`.sip_tcp`);
4. for a peer not heard from yet (our first request to it), the source address the kernel's
   routing picks toward it: :class:`RouteCache` (a connected UDP socket sends nothing).

Answers and requests over UDP also leave *from* that address (``IP_PKTINFO`` on
``sendmsg``): a device that checks where its answers come from sees the address it sent to.
The sans-I/O core only ever receives the chosen address as data
(``SipEndpoint.send_request(..., local=...)``).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable

#: ``IP_PKTINFO`` (Linux ``<linux/in.h>``); the socket module only names it from Python 3.13.
IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8)
#: Ancillary buffer for one ``in_pktinfo`` (12 bytes) or ``in6_pktinfo`` (20 bytes).
PKTINFO_SPACE = socket.CMSG_SPACE(20)

#: Seconds a routed source address is trusted before the kernel is asked again.
ROUTE_TTL = 60.0
#: Destinations whose routed source is remembered (the table is emptied when full).
MAX_ROUTES = 10_000


def enable_pktinfo(sock: socket.socket) -> None:
    """Have ``recvmsg`` on the UDP ``sock`` report each datagram's destination address."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


def pktinfo_local(family: int, data: bytes) -> tuple[str, list[tuple[int, int, bytes]]] | None:
    """The local address a datagram arrived at, from its pktinfo ``data``, and the ancillary
    data that makes ``sendmsg`` send from that address; ``None`` if ``data`` is not pktinfo.

    IPv4 ``in_pktinfo`` is (ifindex, spec_dst, addr): ``spec_dst`` is the local address (for a
    broadcast, the interface's); the reply names only it, with ifindex 0, because a non-zero
    ifindex makes the kernel use that interface's primary address instead (ip(7)). IPv6
    ``in6_pktinfo`` is (addr, ifindex) and goes back as it came (a link-local source needs it).
    """
    if family == socket.AF_INET6:
        if len(data) < 20:
            return None
        return socket.inet_ntop(socket.AF_INET6, data[:16]), [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, data[:20])]
    if len(data) < 12:
        return None
    spec_dst = data[4:8]
    return socket.inet_ntoa(spec_dst), [(socket.IPPROTO_IP, IP_PKTINFO, b"\0\0\0\0" + spec_dst + b"\0\0\0\0")]


def route_source(host: str, port: int = 5060) -> str | None:
    """The source address the kernel would use toward ``host`` (``None``: no route).

    Connecting a UDP socket only looks the route up; nothing is sent.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port or 9))
            return str(probe.getsockname()[0])
    except OSError:
        return None


class RouteCache:
    """:func:`route_source` per destination host, remembered for :data:`ROUTE_TTL` seconds.

    Args:
        clock: monotonic seconds (default :func:`time.monotonic`).
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        self._routes: dict[str, tuple[str | None, float]] = {}

    def source_for(self, host: str, port: int = 5060) -> str | None:
        """Our routed source address toward ``host``, or ``None`` when there is no route."""
        now = self._clock()
        hit = self._routes.get(host)
        if hit is not None and hit[1] > now:
            return hit[0]
        if len(self._routes) >= MAX_ROUTES:
            self._routes.clear()
        source = route_source(host, port)
        self._routes[host] = (source, now + ROUTE_TTL)
        return source


def bind_error(exc: OSError, transport: str, host: str, port: int) -> OSError:
    """The one way a listener that cannot bind is reported (SIP UDP and TCP alike).

    The same errno (the stack retries ``EADDRINUSE`` when the kernel picked the port) and a
    message naming the transport and address, e.g. ``cannot listen on UDP 0.0.0.0:5060:
    address already in use``: start-up fails with it (``app.run``, exit status 3).
    """
    code = exc.errno or 0
    reason = "address already in use" if code == errno.EADDRINUSE else (exc.strerror or os.strerror(code)).lower()
    shown = f"[{host}]" if ":" in host else host
    return OSError(code, f"cannot listen on {transport} {shown}:{port}: {reason}")
