"""The registration director: which gateway node a device registers at (issue 17; GB/T 28181-2022 §9.1.2.3).

Several nodes share one Redis store, each listening on its own address. A node with
``node.director = true`` answers a device's REGISTER with **302 Moved Temporarily** and a Contact
naming the node chosen for that device (PROTOCOL.md §3.7); the device then registers there
directly, and comes back to the director when that node stops answering (GB/T 28181-2022
§9.1.2.3: "if that server later goes offline … the device goes back to the redirect server").

**Choosing the node: rendezvous (highest random weight) hashing** of the device ID over the live
nodes that serve devices. Every (node, device) pair gets a pseudo-random weight from a stable hash
of both names; the device goes to the node of highest weight. So:

- any number of directors agree without talking to each other (the weights are pure functions of
  the names; Python's own ``hash()`` is salted per process and is not used);
- a node that dies takes away only its own devices, which spread over the survivors; the others
  keep their node (no re-registration storm on the nodes that stay);
- a node that joins takes about 1/n of the devices, from every node alike.

**Which nodes are candidates.** A node's claim (``node:<id>`` in Redis) says whether it serves
devices: every node but a director does, and a director only with ``node.director_serves = true``
(then it is one of the candidates, and a device the hash gives it is served on the spot). A node
with no advertised address (a wildcard listen address and no ``sip.advertised_address``) cannot be
named in a Contact and is no candidate.

**Before digest authentication, not after.** The redirect is answered to the first REGISTER,
without a 401 first (§9.1.2.3 makes the director's challenge optional). A redirect tells an
unauthenticated sender only which address to register at, which the nodes' addresses are anyway
(any device is given one); authenticating at the director would cost every device one more round
trip and the director a nonce per device, and the node it is sent to authenticates it anyway.

**No node:** 503 Service Unavailable with ``Retry-After``, so the device retries (it would
otherwise wait its usual ≥ 60 s failure back-off, PROTOCOL.md §3.1).

This module is pure: names in, a :class:`Direction` out. The shell
(:mod:`gb28181gw.services.director`) keeps the view of the live nodes and answers the REGISTER.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "RETRY_AFTER",
    "Direction",
    "NodeRecord",
    "Verdict",
    "choose",
    "contact_uri",
    "direct",
    "weight",
]

#: Seconds a device is told to wait (Retry-After) when no node can take it.
RETRY_AFTER = 30


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One live gateway node, as its claim in Redis describes it.

    Attributes:
        node_id: its ``node.id``.
        advertised: ``host:port`` where devices reach it (``node.advertised_address``); ``""`` if it has none.
        director: whether it answers REGISTERs with redirects.
        serves: whether devices may be sent to it (every node but a director; a director with
            ``node.director_serves``).
        ttl: seconds its claim had left when read (it is renewed every third of its life): its heartbeat age
            is the claim's time to live minus this.
    """

    node_id: str
    advertised: str
    director: bool = False
    serves: bool = True
    ttl: float = 0.0


class Verdict(Enum):
    """What the director does with a device's REGISTER."""

    SERVE = "serve"  # the device's node is this one: the registrar answers it
    REDIRECT = "redirect"  # 302 to :attr:`Direction.node`
    UNAVAILABLE = "unavailable"  # no node can take devices: 503 with Retry-After


@dataclass(frozen=True, slots=True)
class Direction:
    """The director's answer for one device.

    Attributes:
        verdict: serve, redirect or unavailable.
        node: the node chosen (``None`` when unavailable).
    """

    verdict: Verdict
    node: NodeRecord | None = None


def weight(node_id: str, device_id: str) -> int:
    """The rendezvous weight of ``device_id`` on ``node_id``: 64 bits of BLAKE2b of both names.

    Stable across processes, hosts and Python versions; the NUL between the names keeps
    ("n1", "2…") and ("n12", "…") apart.
    """
    digest = hashlib.blake2b(f"{node_id}\x00{device_id}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def choose(device_id: str, nodes: Iterable[NodeRecord]) -> NodeRecord | None:
    """The node of highest weight for ``device_id`` among ``nodes`` (``None`` if there is none).

    Ties (a 2**-64 chance) go to the smaller node ID, so every director picks the same node.
    """
    best: NodeRecord | None = None
    best_key = (-1, "")
    for node in nodes:
        key = (weight(node.node_id, device_id), node.node_id)
        if best is None or key[0] > best_key[0] or (key[0] == best_key[0] and key[1] < best_key[1]):
            best, best_key = node, key
    return best


def candidates(nodes: Iterable[NodeRecord]) -> list[NodeRecord]:
    """The nodes devices may be sent to: those that serve devices and have an address to be named by."""
    return [n for n in nodes if n.serves and n.advertised]


def direct(device_id: str, nodes: Sequence[NodeRecord], self_id: str) -> Direction:
    """Where the device ``device_id`` registers, given the live ``nodes`` and this node's ID.

    Args:
        device_id: the REGISTER's From user.
        nodes: the live nodes (this one included, if it is live), as last read.
        self_id: this node's ``node.id``.
    """
    node = choose(device_id, candidates(nodes))
    if node is None:
        return Direction(Verdict.UNAVAILABLE)
    if node.node_id == self_id:
        return Direction(Verdict.SERVE, node)
    return Direction(Verdict.REDIRECT, node)


def contact_uri(server_id: str, advertised: str, transport: str = "UDP") -> str:
    """The 302's Contact URI: ``sip:<server ID>@<host:port>`` (PROTOCOL.md §3.7), an IPv6 host in brackets.

    A REGISTER that came over TCP is sent on with ``;transport=tcp``: a ``sip:`` URI without it
    means UDP (RFC 3263 §4.1), and a device registering over TCP (GB/T 28181-2022: TCP behind NAT)
    must stay on it.
    """
    host, _, port = advertised.rpartition(":")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    tail = ";transport=tcp" if transport.upper() == "TCP" else ""
    return f"sip:{server_id}@{host}:{port}{tail}"
