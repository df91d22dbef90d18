"""``/api/v1/streams`` and ``/api/v1/playbacks``: viewers' live streams, playbacks and downloads,
on this node and, with several nodes on Redis (issue 17), on the node that owns the device.

Every action is :class:`StreamApi`'s, answered as a :data:`Reply` (an HTTP status and a JSON
body): the route answers it, and so does the RPC handler another node's forwarded request runs.
A request for another node's device therefore gets exactly what that node's own API would
answer, its errors included.

Several nodes (issue 17): transactions, dialogs and media never leave the node that owns the
device's socket (the device's INVITE, its RTP, the relay), so an API call at node X for a stream
of a device node Y owns is made at Y by RPC (:mod:`gb28181gw.store.rpc`, an idempotency id per
call), and Y sends the media straight to the viewer's address, as it sends a superior's. The
viewer asked for the media at its address and port (or, ``tcp-passive``, connects to the port
answered): Y's answer names that port and Y's media address (``consumer.local_address``) and
the ``node``. Media relayed through X would cost X a port pair and the bandwidth twice, and
would die with X as well as with Y.

=============================  ==================================================  ======================
API at X                       made at Y                                           RPC method
=============================  ==================================================  ======================
POST /streams, /playbacks      the channel's device owned by Y (``owner`` hash)    ``stream.open``
GET  /streams                  every live node's streams, each with its ``node``   ``stream.list``
GET/DELETE /streams/ID, and    the stream found at Y (``?node=Y`` says where;      ``stream.show``, …
its consumers and control      else the nodes are asked)                           ``stream.stop`` …
=============================  ==================================================  ======================

Opening waits ``media.invite_timeout`` (the device's time to answer Y's INVITE) plus
:data:`~gb28181gw.gb.rpc.INVITE_MARGIN`; a playback with a speed also a control's time. A
node that is not live (its claim expired: killed) or Redis unreachable is 503 at once, naming
the node; no answer by the deadline is 504, naming it; another refusal of Y's (an older node
without the method) 502. The stream IDs are Y's (its SSRCs: nodes sharing ``gateway.id`` use
disjoint ``media.ssrc_min``-``ssrc_max``), so one found on two nodes (misconfigured ranges) is
409 naming both, and ``?node=`` picks one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gb28181gw.access import Role
from gb28181gw.admin import AdminServer, error_response, json_object, json_response
from gb28181gw.audit import Actor
from gb28181gw.errors import IdError, MansrtspError, NodeUnreachable, RpcError, RpcTimeout
from gb28181gw.gb import mansrtsp
from gb28181gw.gb.mansrtsp import RtspResponse
from gb28181gw.gb.playback import Span
from gb28181gw.gb.registrar import IpNetwork
from gb28181gw.gb.rpc import CONTROL_TIMEOUT, INVITE_MARGIN, Call
from gb28181gw.ids import GbId
from gb28181gw.relay.records import RelaySnapshot, StreamFigures
from gb28181gw.sdp import SessionKind
from gb28181gw.services.audit import ACTOR, acting
from gb28181gw.services.remote import RemoteDevices
from gb28181gw.services.streams import Stream, StreamError, StreamService, StreamState
from gb28181gw.sip.peer import Peer

if TYPE_CHECKING:  # redis-py, imported with store.rpc, is needed only with the redis store
    from gb28181gw.store.rpc import RedisRpc

__all__ = [
    "CONTROL_ACTIONS",
    "StreamApi",
    "add_stream_routes",
    "consumer_allowed",
    "parse_moment",
    "stream_json",
    "streams_json",
]

log = logging.getLogger("gb28181gw.admin")

#: An answer: HTTP status and JSON body.
Reply = tuple[int, dict[str, Any]]
#: Seconds another node may take to list its streams (or say whether it has one): a listing
#: that waits long for a node is worse than one that says which node did not answer.
LIST_TIMEOUT = 3.0
#: Stream IDs remembered with the node they were found at (opened or listed through this node).
PLACED_SIZE = 4096

#: HTTP status for each StreamError status (SIP codes from the device are passed on as 502).
_STREAM_HTTP = {400: 400, 404: 404, 409: 409, 480: 409, 486: 409, 488: 502, 502: 502, 503: 503, 504: 504}
_CONSUMER_USAGE = (
    '"consumer": {"transport": "udp"|"tcp"|"tcp-passive", "host": ..., "port": ... (not for tcp-passive: it '
    'connects to the local_port answered), "ssrc": optional, "ttl": optional seconds, "label": optional}'
)
#: What ``POST /streams/{id}/control`` takes: its ``action`` and the MANSRTSP request it makes (§7.9).
CONTROL_ACTIONS = ("pause", "resume", "seek", "speed", "teardown")
_CONTROL_USAGE = (
    'the body must be JSON: {"action": "pause"|"resume"|"seek"|"speed"|"teardown", '
    '"position": seconds from the span\'s start (seek), "scale": 0.25|0.5|1|2|4 … (speed)}'
)


@dataclasses.dataclass(frozen=True, slots=True)
class ConsumerArgs:
    """A consumer a request names, checked where the request came in (its ``request.remote``)."""

    transport: str
    host: str
    port: int
    ssrc: int | None
    ttl: float | None
    label: str

    def keywords(self) -> dict[str, Any]:
        """As the keyword arguments of StreamService.play, open_recorded and join (and a call's JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, c: Mapping[str, Any]) -> ConsumerArgs:
        """Read back from a forwarded call (checked by the node the request came to).

        Raises:
            KeyError, TypeError, ValueError: not what :meth:`keywords` wrote.
        """
        ssrc, ttl = c.get("ssrc"), c.get("ttl")
        return cls(
            str(c["transport"]),
            str(c["host"]),
            int(c["port"]),
            None if ssrc is None else int(ssrc),
            None if ttl is None else float(ttl),
            str(c.get("label") or ""),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Recorded:
    """What a playback or download asks for: its kind, its span and its speed (``None``: as configured)."""

    kind: SessionKind
    span: Span
    speed: float | None


def _consumer_args(
    request: web.Request, c: Any, consumer_networks: tuple[IpNetwork, ...], usage: str
) -> ConsumerArgs | web.Response:
    """The consumer a request names, checked (an error answer otherwise)."""
    if not isinstance(c, dict):
        return error_response(400, usage)
    transport = str(c.get("transport") or "udp").lower()
    passive = transport == "tcp-passive"
    try:
        host = str(c.get("host") or request.remote or "127.0.0.1")
        port = int(c["port"]) if not passive or c.get("port") is not None else 0
        ssrc = int(c["ssrc"]) if c.get("ssrc") is not None else None
        ttl = float(c["ttl"]) if c.get("ttl") is not None else None
        ipaddress.ip_address(host)  # a host that is no address: the usage
    except (KeyError, TypeError, ValueError, OverflowError):
        return error_response(400, usage)
    if ttl is not None and not (math.isfinite(ttl) and ttl > 0):
        return error_response(400, "consumer ttl must be a positive number of seconds")
    if not 0 < port < 65536 and not (passive and port == 0):
        return error_response(400, "consumer port must be 1-65535")
    if not consumer_allowed(host, request.remote or "", consumer_networks):
        return error_response(403, _not_allowed(host))
    if ssrc is not None and not 0 <= ssrc <= 0xFFFFFFFF:
        return error_response(400, "consumer ssrc must fit 32 bits")
    return ConsumerArgs(transport, host, port, ssrc, ttl, str(c.get("label") or ""))


def consumer_allowed(host: str, requester: str, consumer_networks: tuple[IpNetwork, ...]) -> bool:
    """Whether media may go to ``host`` for a request from ``requester``: a loopback address, the
    requester's own, or one of ``media.consumer_networks``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (
        address.is_loopback
        or host == requester
        or any(address in net for net in consumer_networks if net.version == address.version)
    )


def _not_allowed(host: str) -> str:
    return f"streams go to the requester's own address or media.consumer_networks, not {host}"


async def _channel_body(request: web.Request, usage: str) -> tuple[dict[str, Any], str] | web.Response:
    """A JSON object naming a ``channel_id`` that is a valid ID: (the object, the ID), or the 400 to answer."""
    try:
        body = await request.json()
    except ValueError:
        return error_response(400, usage)
    if not isinstance(body, dict):
        return error_response(400, usage)
    channel_id = str(body.get("channel_id", ""))
    try:
        GbId.parse(channel_id)
    except IdError as exc:
        return error_response(400, f"invalid channel ID: {exc}")
    return body, channel_id


def _stream_error(exc: StreamError) -> Reply:
    return _STREAM_HTTP.get(exc.status, 502), {"error": str(exc), "sip_status": exc.status}


def _error(status: int, message: str, hint: str | None = None) -> Reply:
    """As :func:`~gb28181gw.admin.error_response`'s body."""
    return status, {"error": message, **({"hint": hint} if hint else {})}


def _respond(reply: Reply) -> web.Response:
    return json_response(reply[1], status=reply[0])


def parse_moment(value: Any, zone: datetime.tzinfo) -> datetime.datetime:
    """A time of a span as the API takes it: ISO 8601 (``2024-05-06T08:00:00``; without an offset, in
    the site's zone, ``gateway.time_zone``) or seconds since the epoch.

    Raises:
        ValueError: saying what is accepted.
    """
    if isinstance(value, bool):
        raise ValueError("a time is ISO 8601 text or epoch seconds, not true/false")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not epoch seconds")
        try:
            return datetime.datetime.fromtimestamp(value, datetime.UTC)
        except (OverflowError, OSError, ValueError):  # beyond year 9999 or the platform's time_t
            raise ValueError(f"{value!r} is not epoch seconds (after year 9999)") from None
    if not isinstance(value, str):
        raise ValueError("a time is ISO 8601 text (2024-05-06T08:00:00) or epoch seconds")
    try:
        moment = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not a time: use ISO 8601 (2024-05-06T08:00:00) or epoch seconds") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _control_request(body: Mapping[str, Any]) -> mansrtsp.RtspRequest | Reply:
    """The MANSRTSP request a control body asks for, or the 400 to answer."""
    action = str(body.get("action") or "").lower()
    try:
        if action == "pause":
            return mansrtsp.pause(0)
        if action == "resume":
            return mansrtsp.resume(0)
        if action == "seek":
            return mansrtsp.seek(0, float(body["position"]))
        if action == "speed":
            return mansrtsp.speed(0, float(body["scale"]))
        if action == "teardown":
            return mansrtsp.teardown(0)
    except (KeyError, TypeError, ValueError, OverflowError, MansrtspError) as exc:
        words = str(exc) if isinstance(exc, MansrtspError) else f"{action} needs a number"
        return _error(400, words, _CONTROL_USAGE)
    return _error(400, f"unknown action {action!r}: one of {', '.join(CONTROL_ACTIONS)}", _CONTROL_USAGE)


def _rtsp_json(answer: RtspResponse | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    return {"status": answer.status, "reason": answer.reason, "cseq": answer.cseq, "headers": dict(answer.headers)}


#: The state word of the JSON: three words since the first release (clients match on them), so
#: a lingering stream is "live" and an abandoned one still "inviting".
_STATE_JSON = {
    StreamState.INVITING: "inviting",
    StreamState.ABANDONED: "inviting",
    StreamState.LIVE: "live",
    StreamState.LINGERING: "live",
    StreamState.CLOSED: "closed",
}


def stream_json(streams: StreamService, st: Stream, snapshot: RelaySnapshot | None = None) -> dict[str, Any]:
    """A stream as the admin API (and so ``gb28181gw streams``) shows it.

    Args:
        streams: the service it belongs to (for the clock and the media address).
        st: the stream.
        snapshot: its relay's figures, if at hand (a listing takes one per relay).
    """
    figures = (snapshot or st.relay.snapshot()).streams.get(st.id)
    now = streams.loop.time()
    consumers = []
    for c in st.consumers.values():
        sent = figures.consumers.get(c.id) if figures is not None else None
        consumers.append(
            {
                "id": c.id,
                "transport": c.transport,
                "address": f"{c.host}:{c.port}",
                "local_port": c.local_port,  # tcp-passive: the port it connects to; udp: the one we send from
                "paused": c.paused,
                "ssrc": f"{c.ssrc:010d}",
                "label": c.label,
                "packets": sent.packets if sent else 0,
                "bytes": sent.bytes if sent else 0,
                "dropped": sent.dropped if sent else 0,
                "expires_in": round(c.expires_at - now, 1) if c.expires_at is not None else None,
            }
        )
    session = st.session
    return {
        "id": st.id,
        "channel_id": st.channel_id,
        "device_id": st.device_id,
        "state": _STATE_JSON[st.state],
        "mode": str(st.mode),
        "port": st.port,
        "worker": st.relay.index,
        "ssrc": session.ssrc,
        "media_address": session.media_ip,  # where the device was told to send (per device by default)
        "device_media": f"{session.media_host}:{session.media_port}" if session.media_port else "",
        "age": round(now - st.created, 1),
        "setup_seconds": round(st.first_packet_at - st.invite_at, 3) if st.first_packet_at else None,
        "consumers": consumers,
        "relay": _relay_json(figures) if figures is not None else {},
        "kind": st.kind.word,
        **(_recorded_json(st) if st.span is not None else {}),
    }


def _recorded_json(st: Stream) -> dict[str, Any]:
    """A playback's or download's span, where it is, and how it plays."""
    assert st.span is not None and st.control is not None
    span, control, session = st.span, st.control, st.session
    position = control.clock.position
    return {
        "span": {"start": span.start, "end": span.end, "seconds": span.seconds},
        "position": round(position, 1),
        "progress": round(min(1.0, position / span.seconds), 4) if span.seconds else None,
        "paused": control.paused,
        "scale": control.scale,
        "download_speed": session.download_speed,
        "file_size": session.file_size,
        "complete": st.complete,
    }


def streams_json(streams: StreamService) -> list[dict[str, Any]]:
    """Every stream, oldest first (one snapshot per relay)."""
    snapshots = {relay.index: relay.snapshot() for relay in streams.relays}
    return [
        stream_json(streams, st, snapshots[st.relay.index])
        for st in sorted(streams.streams.values(), key=lambda st: st.created)
    ]


def _relay_json(f: StreamFigures) -> dict[str, Any]:
    out = {name: getattr(f, name) for name in StreamFigures.__slots__ if name != "consumers"}
    out["mode"] = str(f.mode)
    out["source"] = list(f.source) if f.source is not None else None
    out["ps"] = dataclasses.asdict(f.ps)
    return out


async def _no_peers() -> Iterable[str]:
    return ()


class StreamApi:
    """The stream actions of the admin API, on this node or forwarded to the device's node.

    Args:
        streams: this node's streams.
        zone: the site's (``gateway.time_zone``): span times without an offset are read in it.
        remote: with several nodes, the forwarding of device requests (which node owns what).
        peers: the live nodes' IDs, this one's or not, read when asked (:meth:`~gb28181gw.services.nodes.NodeService.current`):
            a node that joined since the view's last refresh is listed and asked too.
        media_address: ``Config.media_address`` (``""``: the address routing picks toward the consumer).
        consumer_networks: ``media.consumer_networks``: where this node sends a forwarded request's media.
    """

    def __init__(
        self,
        streams: StreamService,
        *,
        zone: datetime.tzinfo = datetime.UTC,
        remote: RemoteDevices | None = None,
        peers: Callable[[], Awaitable[Iterable[str]]] = _no_peers,
        media_address: str = "",
        consumer_networks: tuple[IpNetwork, ...] = (),
    ) -> None:
        self.streams = streams
        # checked again for another node's request: this node sends the media, and where its
        # media may go is its operator's word (the asking node's networks may be wider)
        self.consumer_networks = consumer_networks
        self.zone = zone
        self.remote = remote
        self.rpc: RedisRpc | None = remote.rpc if remote is not None else None
        self.node = self.rpc.node if self.rpc is not None else ""
        self.peers = peers
        self.media_address = media_address
        # stream ID → the node it was opened or listed at: no asking around for the streams a viewer
        # opened through this node
        self.placed: OrderedDict[str, str] = OrderedDict()
        self._late: set[asyncio.Task[None]] = set()  # removals of consumers added past their call's deadline
        if self.rpc is not None:
            handlers: dict[str, Callable[[Call], Awaitable[Mapping[str, Any]]]] = {
                "stream.open": self._serve_open,
                "stream.list": self._serve_list,
                "stream.show": self._serve_by_id,
                "stream.stop": self._serve_by_id,
                "stream.join": self._serve_by_id,
                "stream.control": self._serve_by_id,
                "stream.renew": self._serve_by_id,
                "stream.leave": self._serve_by_id,
            }
            for method, handler in handlers.items():
                self.rpc.handle(method, handler)

    # --- what this node does ----------------------------------------------------------------

    def _json(self, st: Stream, snapshot: RelaySnapshot | None = None) -> dict[str, Any]:
        out = stream_json(self.streams, st, snapshot)
        if self.node:
            out["node"] = self.node
        return out

    def _missing(self, stream_id: str) -> Reply:
        ended = self.streams.ended_stream(stream_id)
        if ended is None:
            return _error(404, f"no stream {stream_id}", "see `gb28181gw streams`")
        body = {
            "error": f"stream {stream_id} ended: {ended.reason}",
            "reason": ended.reason,
            "cause": ended.cause,
            "channel_id": ended.channel_id,
            "ended_at": round(ended.ended_at, 3),
            "kind": ended.kind.word,
            "complete": ended.complete,
            "position": ended.position,
        }
        if self.node:
            body["node"] = self.node
        return 410, body

    def _opened(self, st: Stream, consumer_id: str) -> Reply:
        out = self._json(st)
        consumer = next(x for x in out["consumers"] if x["id"] == consumer_id)
        # our end of its media: where a tcp-passive viewer connects, where a UDP one hears from
        host, port = consumer["address"].rsplit(":", 1)
        peer = Peer("UDP", host.strip("[]") or "127.0.0.1", int(port) or 9)
        consumer["local_address"] = self.media_address or self.streams.stack.local_address(peer)[0]
        out["consumer"] = consumer
        return 201, out

    async def open_here(self, channel_id: str, c: ConsumerArgs, recorded: Recorded | None) -> Reply:
        """Open (or join) ``channel_id``'s live stream, or open a playback or download, for ``c``."""
        try:
            if recorded is None:
                st, consumer = await self.streams.play(channel_id, **c.keywords())
                return self._opened(st, consumer.id)
            kind, speed = recorded.kind, recorded.speed
            st, consumer = await self.streams.open_recorded(
                channel_id,
                kind=kind,
                span=recorded.span,
                download_speed=int(speed) if kind is SessionKind.DOWNLOAD and speed is not None else None,
                **c.keywords(),
            )
        except StreamError as exc:
            return _stream_error(exc)
        if kind is SessionKind.PLAYBACK and speed is not None and speed != 1:
            # the INVITE plays at 1x: the speed asked for is the first control (§7.9)
            try:
                result = await self.streams.control(st.id, mansrtsp.speed(0, float(speed)))
            except StreamError as exc:
                log.warning("playback opened, its speed not set", extra={"stream": st.id, "reason": str(exc)})
            else:
                if not result.ok:
                    log.warning(
                        "playback opened, its speed refused", extra={"stream": st.id, "answer": result.describe()}
                    )
        return self._opened(st, consumer.id)

    def list_here(self) -> list[dict[str, Any]]:
        """Every stream of this node, oldest first (one snapshot per relay)."""
        snapshots = {relay.index: relay.snapshot() for relay in self.streams.relays}
        return [
            self._json(st, snapshots[st.relay.index])
            for st in sorted(self.streams.streams.values(), key=lambda st: st.created)
        ]

    async def by_id_here(self, op: str, stream_id: str, args: Mapping[str, Any]) -> Reply:
        """``op`` (show, stop, join, control, renew, leave) on stream ``stream_id`` of this node."""
        streams = self.streams
        st = streams.streams.get(stream_id)
        if st is None:
            return self._missing(stream_id)
        if op == "show":
            return 200, self._json(st)
        if op == "stop":
            await streams.stop_stream(stream_id)
            return 200, {"stopped": stream_id}
        if op == "join":
            try:
                st, consumer = await streams.join(stream_id, **ConsumerArgs.from_json(args["consumer"]).keywords())
            except StreamError as exc:
                return _stream_error(exc)
            return self._opened(st, consumer.id)
        if op == "renew":
            try:
                streams.renew_consumer(stream_id, str(args["consumer"]), float(args["ttl"]))
            except StreamError as exc:
                return _error(404, str(exc))
            return 200, {"renewed": args["consumer"], "expires_in": float(args["ttl"])}
        if op == "leave":
            try:
                await streams.remove_consumer(stream_id, str(args["consumer"]))
            except StreamError as exc:
                return _error(404, str(exc))
            return 200, {"removed": args["consumer"]}
        if op == "control":
            return await self._control_here(stream_id, args.get("body") or {})
        raise ValueError(f"no stream operation {op!r}")  # a bug of the routes

    async def _control_here(self, stream_id: str, body: Mapping[str, Any]) -> Reply:
        rtsp = _control_request(body)
        if isinstance(rtsp, tuple):
            return rtsp
        try:
            result = await self.streams.control(stream_id, rtsp)
        except StreamError as exc:
            return _stream_error(exc)
        answer: dict[str, Any] = {
            "control": result.request.describe(),
            "cseq": result.request.cseq,
            "device_status": result.status,
            "device_reason": result.reason,
            "rtsp": _rtsp_json(result.answer),
        }
        st = self.streams.streams.get(stream_id)
        if st is not None:
            answer["stream"] = self._json(st)
        if not result.ok:
            answer["error"] = f"device answered {result.request.describe()} with {result.describe()}"
            answer["hint"] = "the session goes on as it was; some NVRs refuse speed or seek (PROTOCOL.md §11.5 M10)"
            return 502, answer
        return 200, answer

    # --- what the admin API asks (here, or at the device's node) ------------------------------

    async def open(self, channel_id: str, c: ConsumerArgs, recorded: Recorded | None, *, requester: str = "") -> Reply:
        """:meth:`open_here` at the node owning ``channel_id``'s device (``requester``: the
        requester's address, for that node's check of the consumer's)."""
        node = await self.remote.node_of(channel_id) if self.remote is not None else None
        if node is None:
            return await self.open_here(channel_id, c, recorded)
        args: dict[str, Any] = {"channel": channel_id, "consumer": c.keywords(), "requester": requester}
        # the device has media.invite_timeout to answer the owner's INVITE; the calls' round trips on top
        timeout = self.streams.settings.invite_timeout + INVITE_MARGIN
        if recorded is not None:
            span = recorded.span
            args["recorded"] = {"kind": recorded.kind.word, "span": [span.start, span.end], "speed": recorded.speed}
            if recorded.speed is not None:
                timeout += self.streams.playback.control_timeout  # the speed's control after the INVITE
        reply = await self._forward(node, "stream.open", args, timeout, f"channel {channel_id}")
        if reply[0] == 201 and isinstance(reply[1].get("id"), str):
            self._place(reply[1]["id"], node)
        return reply

    async def listing(self, node: str | None) -> Reply:
        """Every live node's streams (``node``: that node's only), each naming its ``node``."""
        if self.rpc is None or node == self.node:
            return 200, {"streams": self.list_here()}
        nodes = [node] if node else [n for n in await self.peers() if n != self.node]
        rows = self.list_here() if not node else []
        answers = await asyncio.gather(
            *(self._forward(n, "stream.list", {}, LIST_TIMEOUT, "its streams") for n in nodes)
        )
        unanswered = []
        for n, (status, body) in zip(nodes, answers, strict=True):
            if status != 200:
                unanswered.append({"node": n, "status": status, "error": body.get("error", "")})
                continue
            for row in body.get("streams", []):
                if isinstance(row, dict) and isinstance(row.get("id"), str):
                    row.setdefault("node", n)
                    self._place(row["id"], n)
                    rows.append(row)
        if node and unanswered:  # that node only: its failure is the answer
            return answers[0]
        return 200, {"streams": rows, "unanswered": unanswered}

    async def by_id(self, op: str, stream_id: str, args: Mapping[str, Any], *, node: str | None = None) -> Reply:
        """``op`` on stream ``stream_id``: here, at ``node``, or where it is found."""
        if self.rpc is None:  # one node: ?node= names nothing else
            return await self.by_id_here(op, stream_id, args)
        where = node if node else await self._locate(stream_id)
        if isinstance(where, tuple):
            return where
        if not where or where == self.node:
            return await self.by_id_here(op, stream_id, args)
        timeout = CONTROL_TIMEOUT
        if op == "join":
            timeout = self.streams.settings.invite_timeout + INVITE_MARGIN  # joining waits for a stream's INVITE
        elif op == "control":
            timeout = self.streams.playback.control_timeout + INVITE_MARGIN
        reply = await self._forward(
            where, f"stream.{op}", {"stream": stream_id, **args}, timeout, f"stream {stream_id}"
        )
        if reply[0] == 404 and self.placed.get(stream_id) == where:
            del self.placed[stream_id]  # forgotten there (restarted): asked around next time
        return reply

    async def _locate(self, stream_id: str) -> str | Reply | None:
        """The node holding stream ``stream_id``: ``None`` here (or nowhere: answered here, 404), a
        node's ID, or the answer to give (found at two nodes)."""
        if self.rpc is None or stream_id in self.streams.streams:
            return None
        placed = self.placed.get(stream_id)
        if placed is not None:
            return placed
        nodes = [n for n in await self.peers() if n != self.node]
        answers = await asyncio.gather(
            *(
                self._forward(n, "stream.show", {"stream": stream_id}, LIST_TIMEOUT, f"stream {stream_id}")
                for n in nodes
            )
        )
        found = [n for n, (status, _body) in zip(nodes, answers, strict=True) if status == 200]
        if len(found) > 1:
            return _error(
                409,
                f"stream {stream_id} is on nodes {', '.join(found)}: their media.ssrc_min-ssrc_max ranges overlap",
                f"name the node: ?node={found[0]}",
            )
        if found:
            self._place(stream_id, found[0])
            return found[0]
        if self.streams.ended_stream(stream_id) is not None:
            return None  # it ended here: our 410 says why
        ended = [n for n, (status, _body) in zip(nodes, answers, strict=True) if status == 410]
        if ended:
            return ended[0]
        silent = [n for n, (status, _body) in zip(nodes, answers, strict=True) if status not in (404, 410)]
        if silent:
            return _error(
                404,
                f"no stream {stream_id} here nor at the nodes that answered; {', '.join(silent)} did not answer",
                f"ask again, or name the node: ?node={silent[0]}",
            )
        return None

    def _place(self, stream_id: str, node: str) -> None:
        self.placed[stream_id] = node
        self.placed.move_to_end(stream_id)
        while len(self.placed) > PLACED_SIZE:
            self.placed.popitem(last=False)

    async def _forward(self, node: str, method: str, args: Mapping[str, Any], timeout: float, what: str) -> Reply:
        """``method`` at ``node``: its answer as it gave it, or why there is none, naming the node."""
        assert self.rpc is not None
        actor = ACTOR.get()
        try:
            got = await self.rpc.call(node, method, {**args, "actor": [actor.name, actor.source]}, timeout=timeout)
        except RpcTimeout as exc:
            return 504, {
                "error": f"{what}: {exc}",
                "node": node,
                "hint": f"is node {node} overloaded? `gb28181gw nodes`",
            }
        except NodeUnreachable as exc:
            hint = (
                f"node {node} owns it; `gb28181gw nodes` shows whether it is live (its devices re-register elsewhere)"
            )
            return 503, {"error": f"{what}: {exc}", "node": node, "hint": hint}
        except RpcError as exc:
            return 502, {"error": f"{what}: {exc}", "node": node}
        status, body = got.get("status"), got.get("body")
        if not isinstance(status, int) or not isinstance(body, dict):
            return 502, {"error": f"{what}: node {node} answered {method} unreadably", "node": node}
        body.setdefault("node", node)
        return status, body

    # --- another node's requests ------------------------------------------------------------

    @staticmethod
    def _actor(call: Call) -> Actor:
        name, source = call.args.get("actor") or ("", "")
        return Actor(str(name or f"node:{call.caller}"), f"{source} via node {call.caller}".strip())

    def _refused_here(self, call: Call, c: ConsumerArgs) -> dict[str, Any] | None:
        if consumer_allowed(c.host, str(call.args.get("requester") or ""), self.consumer_networks):
            return None
        return {"status": 403, "body": {"error": _not_allowed(c.host), "node": self.node}}

    async def _serve_open(self, call: Call) -> dict[str, Any]:
        a = call.args
        try:
            c = ConsumerArgs.from_json(a["consumer"])
            channel, actor = str(a["channel"]), self._actor(call)
            recorded = None
            if a.get("recorded") is not None:
                r = a["recorded"]
                kind = SessionKind.of(str(r["kind"]))
                if kind is None or not kind.recorded:
                    raise StreamError(400, f"no recorded kind {r['kind']!r}")
                speed = r.get("speed")
                recorded = Recorded(
                    kind, Span(int(r["span"][0]), int(r["span"][1])), None if speed is None else float(speed)
                )
        except _MALFORMED as exc:
            raise _malformed(call, exc) from None
        refused = self._refused_here(call, c)
        if refused is not None:
            return refused
        with acting(actor):
            opening = asyncio.ensure_future(self.open_here(channel, c, recorded))
        try:
            status, body = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # the call's deadline passed (its caller answered 504): a consumer added after it is
            # taken away again, or the stream would be sent to a viewer who was told it failed
            opening.add_done_callback(self._release_late)
            raise
        return {"status": status, "body": body}

    def _release_late(self, opening: asyncio.Future[Reply]) -> None:
        if opening.cancelled() or opening.exception() is not None:
            return
        status, body = opening.result()
        if status == 201:
            stream_id, consumer_id = str(body["id"]), str(body["consumer"]["id"])
            log.info("stream opened past its call's deadline: consumer removed", extra={"stream": stream_id})
            task = asyncio.get_running_loop().create_task(self._leave_quietly(stream_id, consumer_id))
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    async def _leave_quietly(self, stream_id: str, consumer_id: str) -> None:
        with contextlib.suppress(StreamError):  # gone already
            await self.streams.remove_consumer(stream_id, consumer_id)

    async def _serve_list(self, call: Call) -> dict[str, Any]:
        return {"status": 200, "body": {"streams": self.list_here()}}

    async def _serve_by_id(self, call: Call) -> dict[str, Any]:
        op, a = call.method.removeprefix("stream."), call.args
        try:  # read as by_id_here will, so that a peer's malformed call is a 400 naming it, not a 500
            stream, actor = a["stream"], self._actor(call)
            if not isinstance(stream, str):
                raise TypeError(f"stream {stream!r} is not a stream ID")
            if op == "join":
                refused = self._refused_here(call, ConsumerArgs.from_json(a["consumer"]))
                if refused is not None:
                    return refused
            elif op in ("renew", "leave"):
                str(a["consumer"])
                if op == "renew" and not (math.isfinite(float(a["ttl"])) and float(a["ttl"]) > 0):
                    raise ValueError(f"ttl {a['ttl']!r} is not a positive number of seconds")
            elif op == "control" and not isinstance(a.get("body") or {}, dict):
                raise TypeError(f"control body {a['body']!r} is not an object")
        except _MALFORMED as exc:
            raise _malformed(call, exc) from None
        with acting(actor):
            status, body = await self.by_id_here(op, stream, a)
        return {"status": status, "body": body}


#: What reading a peer's malformed arguments raises.
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError)


def _malformed(call: Call, exc: Exception) -> RpcError:
    words = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
    return RpcError(400, f"{call.method} from node {call.caller}: arguments not as a node writes them: {words}")


def add_stream_routes(admin: AdminServer, api: StreamApi, *, consumer_networks: tuple[IpNetwork, ...]) -> None:
    """Streams: list, open (live, or a playback or download of a span), join, control, renew a
    consumer's lease, leave, stop: each made by :class:`StreamApi`, here or at the device's node.

    A stream that ended lately answers 410 with why (``{"error": "stream … ended: <reason>",
    "reason", "cause", "ended_at", "kind", "complete", "position"}``), one never known 404: a
    client polling its stream learns why it is gone (and a download's client whether it is whole).
    Every route taking a stream ID takes ``?node=ID`` too: the node it is at (else found).
    """
    zone = api.zone

    async def list_streams(request: web.Request) -> web.Response:
        return _respond(await api.listing(request.query.get("node") or None))

    async def by_id(request: web.Request, op: str, args: Mapping[str, Any]) -> web.Response:
        node = request.query.get("node") or None
        return _respond(await api.by_id(op, request.match_info["stream_id"], args, node=node))

    async def show_stream(request: web.Request) -> web.Response:
        return await by_id(request, "show", {})

    async def play(request: web.Request) -> web.Response:
        usage = f'the body must be JSON: {{"channel_id": ..., {_CONSUMER_USAGE}}}'
        asked = await _channel_body(request, usage)
        if isinstance(asked, web.Response):
            return asked
        body, channel_id = asked
        c = _consumer_args(request, body.get("consumer"), consumer_networks, usage)
        if isinstance(c, web.Response):
            return c
        return _respond(await api.open(channel_id, c, None, requester=request.remote or ""))

    async def open_recorded(request: web.Request) -> web.Response:
        usage = (
            'the body must be JSON: {"channel_id": ..., "kind": "playback"|"download", "start": TIME, "end": TIME, '
            '"speed": optional (download: a=downloadspeed; playback: the Scale to play at), '
            f"{_CONSUMER_USAGE}}}; TIME is ISO 8601 (in the site's zone without an offset) or epoch seconds"
        )
        asked = await _channel_body(request, usage)
        if isinstance(asked, web.Response):
            return asked
        body, channel_id = asked
        kind = SessionKind.of(str(body.get("kind") or ""))
        if kind is None or not kind.recorded:
            return error_response(400, 'kind must be "playback" or "download"', usage)
        try:
            span = Span.from_local(parse_moment(body.get("start"), zone), parse_moment(body.get("end"), zone), zone)
        except (ValueError, OverflowError) as exc:
            return error_response(400, f"start/end: {exc}", usage)
        speed = body.get("speed")
        if speed is not None:
            if isinstance(speed, bool) or not isinstance(speed, int | float) or not math.isfinite(speed) or speed <= 0:
                return error_response(400, f"speed must be a number more than 0, not {speed!r}")
            if kind is SessionKind.DOWNLOAD and (speed != int(speed) or speed > 256):
                return error_response(
                    400, f"a download's speed is a whole number 1-256 (a=downloadspeed), not {speed!r}"
                )
            if kind is SessionKind.PLAYBACK and not 1 / mansrtsp.MAX_SCALE <= speed <= mansrtsp.MAX_SCALE:
                # refused before the INVITE: the Scale control after it could not be written
                return error_response(400, f"a playback's speed is 1/256 to 256 (Scale), not {speed!r}")
        c = _consumer_args(request, body.get("consumer"), consumer_networks, usage)
        if isinstance(c, web.Response):
            return c
        recorded = Recorded(kind, span, None if speed is None else float(speed))
        return _respond(await api.open(channel_id, c, recorded, requester=request.remote or ""))

    async def join(request: web.Request) -> web.Response:
        usage = f"the body must be JSON: {{{_CONSUMER_USAGE}}}"
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, usage)
        c = _consumer_args(
            request, body.get("consumer", body) if isinstance(body, dict) else None, consumer_networks, usage
        )
        if isinstance(c, web.Response):
            return c
        return await by_id(request, "join", {"consumer": c.keywords(), "requester": request.remote or ""})

    async def control(request: web.Request) -> web.Response:
        body = await json_object(request, _CONTROL_USAGE)
        rtsp = _control_request(body)  # refused here, before any node is asked
        if isinstance(rtsp, tuple):
            return _respond(rtsp)
        return await by_id(request, "control", {"body": body})

    async def stop_stream(request: web.Request) -> web.Response:
        return await by_id(request, "stop", {})

    async def renew(request: web.Request) -> web.Response:
        body = await json_object(request, 'the body must be JSON: {"ttl": seconds}')
        try:
            ttl = float(body["ttl"])
        except (KeyError, TypeError, ValueError, OverflowError):
            ttl = math.nan
        if not (math.isfinite(ttl) and ttl > 0):
            return error_response(400, "ttl must be a positive number of seconds")
        return await by_id(request, "renew", {"consumer": request.match_info["consumer_id"], "ttl": ttl})

    async def leave(request: web.Request) -> web.Response:
        return await by_id(request, "leave", {"consumer": request.match_info["consumer_id"]})

    admin.add_route("GET", "/streams", list_streams, role=Role.VIEWER)
    admin.add_route("POST", "/streams", play, role=Role.OPERATOR)
    admin.add_route("POST", "/playbacks", open_recorded, role=Role.OPERATOR)
    admin.add_route("GET", "/streams/{stream_id}", show_stream, role=Role.VIEWER)
    admin.add_route("DELETE", "/streams/{stream_id}", stop_stream, role=Role.OPERATOR)
    admin.add_route("POST", "/streams/{stream_id}/consumers", join, role=Role.OPERATOR)
    admin.add_route("POST", "/streams/{stream_id}/control", control, role=Role.OPERATOR)
    admin.add_route("PATCH", "/streams/{stream_id}/consumers/{consumer_id}", renew, role=Role.OPERATOR)
    admin.add_route("DELETE", "/streams/{stream_id}/consumers/{consumer_id}", leave, role=Role.OPERATOR)
