"""The other gateway nodes, and the director (issue 17; GB/T 28181-2022 §9.1.2.3).

Every node on a Redis store keeps a small view of the live nodes (:class:`NodeService.view`),
read every :data:`REFRESH` seconds in one round trip (:meth:`RedisNodes.live`). A REGISTER never
waits for Redis: a director answers it from the view as last read (:mod:`gb28181gw.gb.director`
says how the node is chosen, and why before digest authentication).

When Redis stops answering, the last view is kept: the nodes in it are most likely still serving
(they cannot renew their claims either), and sending devices to them beats refusing every
device. A node that died meanwhile is found when Redis returns; its devices come back to the
director when their registrations there fail (§9.1.2.3), and are sent on to a survivor.

On a director the quick path (:mod:`gb28181gw.sip.quick`) serves no REGISTER: the director's link
in the REGISTER chain does not say it passes any (it must read the From user first), so REGISTERs
take the general path, where the 302 is answered statelessly, like a challenge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from gb28181gw.errors import StoreError
from gb28181gw.gb.director import RETRY_AFTER, NodeRecord, Verdict, contact_uri, direct
from gb28181gw.gb.registrar import from_user, is_platform_id
from gb28181gw.ids import is_id_prefix
from gb28181gw.metrics import (
    DIRECTOR_REDIRECTS,
    DIRECTOR_UNAVAILABLE,
    NODE_VIEW_ERRORS,
    NODE_VIEW_SECONDS,
    NODES_LIVE,
    Metrics,
)
from gb28181gw.net.router import PASS, Passed
from gb28181gw.net.stack import SipStack
from gb28181gw.sip.events import RequestReceived
from gb28181gw.sip.message import make_response
from gb28181gw.stopping import check_cancelled, stop_task

if TYPE_CHECKING:
    from gb28181gw.store.nodes import RedisNodes  # redis-py: only with the redis store

log = logging.getLogger("gb28181gw.nodes")

#: Seconds between reads of the live nodes.
REFRESH = 1.0


class NodeService:
    """The view of the live nodes; on a director, the REGISTER redirects.

    Args:
        stack: the SIP stack (a director adds its link to the REGISTER chain).
        nodes: the Redis reader, ``None`` with the SQLite store (one node: the view is empty).
        node_id: this node's ``node.id``.
        director: answer devices' REGISTERs with 302 (``node.director``).
        server_id: the ID put in the 302's Contact (``gateway.id``: every node of one platform has it).
        expires: the Expires of a 302 to a REGISTER that asks for none (``registrar.expires_default``).
        metrics: where to count.
        refresh: seconds between reads of the live nodes.
    """

    def __init__(
        self,
        stack: SipStack,
        nodes: RedisNodes | None,
        *,
        node_id: str,
        director: bool,
        server_id: str,
        expires: int,
        metrics: Metrics,
        refresh: float = REFRESH,
    ) -> None:
        self.stack = stack
        self.nodes = nodes
        self.node_id = node_id
        self.director = director
        self.server_id = server_id
        self.expires = expires
        self.refresh = refresh
        #: The live nodes as last read, sorted by ID.
        self.view: tuple[NodeRecord, ...] = ()
        #: When the view was last read (monotonic seconds; 0: never).
        self.read_at = 0.0
        self.redirects: Counter[tuple[str, ...]] = metrics.counter(DIRECTOR_REDIRECTS)
        self.unavailable: Counter[tuple[str, ...]] = metrics.counter(DIRECTOR_UNAVAILABLE)
        self.errors: Counter[tuple[str, ...]] = metrics.counter(NODE_VIEW_ERRORS)
        self._round_trip = metrics.histogram(NODE_VIEW_SECONDS)
        metrics.gauge(NODES_LIVE, lambda: float(len(self.view)))
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        if director:
            # (a director's link passes nothing it has not read: the quick path leaves REGISTERs alone)
            stack.router.consume("REGISTER", self._on_register, owner="director")

    async def start(self) -> None:
        """Read the live nodes once (a director answers from the start), then every ``refresh`` seconds."""
        if self.nodes is None:
            return
        await self.nodes.open()
        await self._read()
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def stop(self) -> None:
        if self._task is not None:
            # not cancel() and await: a read cancelled as its command is sent runs on (stopping.py)
            await stop_task(self._task, what="the live nodes' refresh")
            self._task = None
        if self.nodes is not None:
            await self.nodes.close()

    async def current(self) -> tuple[NodeRecord, ...]:
        """The live nodes read now, for an operator's listing: the refreshed view can lack a node
        that joined in the last :data:`REFRESH` seconds, and its streams would be missing from the
        answer with nobody told. Redis away: the last view, as everywhere else."""
        await self._read()
        return self.view

    async def _read(self) -> None:
        if self.nodes is None:
            return  # SQLite: this gateway is the only node
        started = time.perf_counter()
        try:
            view = await self.nodes.live()
        except StoreError as exc:
            self.errors[()] += 1
            if not self._failing:  # once per outage
                log.warning("live nodes cannot be read; the last view is kept", extra={"error": str(exc)})
            self._failing = True
            return
        self._round_trip.observe(time.perf_counter() - started)
        if self._failing:
            log.info("live nodes read again", extra={"nodes": len(view)})
        self._failing = False
        before = {n.node_id for n in self.view}
        now = {n.node_id for n in view}
        if self.read_at and before != now:
            log.info(
                "live nodes changed",
                extra={"joined": sorted(now - before), "left": sorted(before - now), "nodes": len(now)},
            )
        self.view = tuple(view)
        self.read_at = time.monotonic()

    async def _refresh_loop(self) -> None:
        while True:
            check_cancelled()
            await asyncio.sleep(self.refresh)
            try:
                await self._read()
            except Exception:
                log.exception("reading the live nodes failed; will retry")  # a bug: the loop must outlive it

    # --- the director -----------------------------------------------------------------

    def _on_register(self, event: RequestReceived) -> Passed | None:
        req = event.request
        device_id = from_user(req)
        # platforms (type 200: a lower platform registering by cascade) and IDs that are no GB ID
        # are the registrar's to answer (or refuse) as on any node
        if not (len(device_id) == 20 and is_id_prefix(device_id)) or is_platform_id(device_id):
            return PASS
        direction = direct(device_id, self.view, self.node_id)
        if direction.verdict is Verdict.SERVE:
            return PASS
        tx = event.transaction
        assert tx is not None
        if direction.verdict is Verdict.UNAVAILABLE or direction.node is None:
            resp = make_response(req, 503, to_tag=self.stack.endpoint.new_tag())
            resp.headers.add("Retry-After", str(RETRY_AFTER))
            self.unavailable[()] += 1
            log.warning("no live node to send a device to", extra={"device": device_id, "peer": event.peer})
        else:
            node = direction.node
            resp = make_response(req, 302, to_tag=self.stack.endpoint.new_tag())
            resp.headers.add("Contact", f"<{contact_uri(self.server_id, node.advertised, event.peer.transport)}>")
            resp.headers.add("Expires", str(self._expires(req.headers.get("expires"))))
            self.redirects[(node.node_id,)] += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("device redirected", extra={"device": device_id, "node": node.node_id, "to": node.advertised})
        version = req.headers.get("x-gb-ver")
        if version:
            resp.headers.add("X-GB-ver", version)  # GB/T 28181-2022 Annex I: in every answer to a REGISTER
        # nothing is kept: a retransmitted REGISTER is answered again from the view
        self.stack.respond(tx, resp, stateless=True)
        return None

    def _expires(self, asked: str | None) -> int:
        # how long the Contact may be used (RFC 3261 §21.3.3): the period the device asked for
        text = (asked or "").strip()
        return int(text) if text.isdigit() and text.isascii() and 0 < int(text) <= 2**31 else self.expires

    # --- the operator's view ------------------------------------------------------------

    async def overview(self) -> list[dict[str, Any]]:
        """Every node listed in Redis: live or not, address, role, devices owned, superiors held, heartbeat age.

        Raises:
            StoreError: Redis does not answer (or the store is SQLite: no nodes).
        """
        if self.nodes is None:
            raise StoreError("there are no nodes: the store is SQLite (store.backend = redis shares one)")
        from gb28181gw.store.nodes import claim_ttl, parse_claim  # redis-py: only with the redis store

        claims = {node_id: (raw, ms) for node_id, raw, ms in await self.nodes.live_claims()}
        listed = set(await self.nodes.listed()) | set(claims)
        owned = await self.nodes.owned()
        leases = await self.nodes.leases()
        live = {node_id: parse_claim(node_id, raw, ms) for node_id, (raw, ms) in claims.items()}
        rows = []
        for node_id in sorted(listed | set(owned) | set(leases.values())):
            node = live.get(node_id)
            age: float | None = None
            if node is not None:
                ttl = claim_ttl(claims[node_id][0])
                if ttl is not None:
                    age = round(max(ttl - node.ttl, 0.0), 3)
            rows.append(
                {
                    "node": node_id,
                    "live": node is not None,
                    "advertised": node.advertised if node else "",
                    "director": node.director if node else False,
                    "serves": node.serves if node else False,
                    "devices": owned.get(node_id, 0),
                    "superiors": sorted(name for name, holder in leases.items() if holder == node_id),
                    "heartbeat_age": age,
                    "this": node_id == self.node_id,
                }
            )
        return rows

    async def owners(self, device_ids: list[str]) -> dict[str, str]:
        """Device ID → its node, for those of ``device_ids`` that have one (none with the SQLite store).

        Raises:
            StoreError: Redis does not answer.
        """
        if self.nodes is None:
            return {}
        return dict(await self.nodes.owners_of(device_ids))

    async def served_elsewhere(self, device_id: str) -> str | None:
        """The live node other than this one that ``device_id``'s owner names, if any.

        Raises:
            StoreError: Redis does not answer.
        """
        if self.nodes is None:
            return None
        node = (await self.nodes.owners_of([device_id])).get(device_id)
        if node is None or node == self.node_id or all(n.node_id != node for n in self.view):
            return None  # nobody's, ours, or a dead node's (its janitor leaves the row to be removed)
        return node
