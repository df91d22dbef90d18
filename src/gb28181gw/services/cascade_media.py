"""Live video and recordings for superiors (cascade, PROTOCOL.md §9.5, §9.6): the shell around
:mod:`gb28181gw.gb.superior_invite`.

A superior's INVITE becomes one *consumer* of the channel's device stream, opened or joined
through :class:`~gb28181gw.services.streams.StreamService` (the device sees one INVITE
however many superiors and local viewers watch, Annex L). In order:

1. The endpoint has sent 100 Trying already (:mod:`gb28181gw.sip.endpoint`). An INVITE from
   anyone but a configured superior is refused 403 (devices never INVITE us).
2. The offer is read (:func:`~gb28181gw.gb.superior_invite.parse_offer`: 400/488), then
   the channel checked: unknown or not shared with that superior 404, its device not online
   480, no PS offered 488; a recorded span that cannot be asked for (in the future, longer
   than ``playback.max_span``) 400.
3. The consumer is added *paused* (nothing is sent before the ACK) toward the superior's
   ``c=``:``m=``: UDP, TCP where we connect, or TCP where we listen. Its SSRC is the
   superior's ``y=`` when ``[[upstream]] ssrc = "echo"`` and it sent one, else ours.
   :meth:`StreamService.play` returns once the device answered (or the joined stream is live);
   ``s=Playback`` / ``Download`` opens a device session of its own for the same span
   (:meth:`StreamService.open_recorded`: one device dialog per superior dialog, never shared);
   its errors go up mapped (:data:`UPWARD`). Past ``media.invite_timeout`` we answer 408, a
   CANCEL has been answered 487 by the endpoint; either way whatever ``play`` still yields
   is released when it does (no port, SSRC, consumer or task is left).
4. 200 with our SDP creates a UAS dialog (:meth:`Dialog.uas`, routed by the router); over UDP
   the 200 is retransmitted until the ACK (RFC 3261 §13.3.1.4: T1 doubling to T2). The ACK
   starts the consumer. No ACK in 64*T1: BYE.
5. In the dialog: BYE → 200 and only that consumer goes (the stream lingers or serves
   others); a re-INVITE gets 200 with the same SDP (488 if its offer moves the media); a new INVITE with the same Subject sender
   part from the same superior, for the same kind and span, replaces the old one (Annex K c). A consumer gone for any
   other reason (the stream ended, the device went offline, its TCP connection dropped) →
   BYE to the superior. A superior lost (:meth:`UpstreamService.on_lost`) loses all its
   consumers and dialogs; shutdown sends BYE in every dialog.
6. Recorded kinds (§9.6): the superior's INFO (MANSRTSP; another Content-Type 415, a body we
   cannot read 400) is relayed in the device's dialog (:meth:`StreamService.control` numbers
   it there) and answered once the device answered: its SIP status (2xx as 200) and its RTSP
   answer numbered with the superior's own body CSeq; the device silent 408 (as its silence to
   an INVITE, :data:`UPWARD`), the session gone 481. The device's MediaStatus 121 becomes our
   own MediaStatus MESSAGE in the superior's dialog; a BYE of ours that follows (the device
   session closes a moment after) waits for that MESSAGE's answer, so the superior hears the
   end of the recording before the end of the call. Its dialog ending stops the device session.

7. Several nodes on Redis (issue 17): the node holding the superior's lease gets its INVITEs
   for every node's devices. A channel whose device another node owns (``owner`` hash; a
   channel not in memory is looked up in the shared store) is served by that node: the
   ``cascade.open`` call (:mod:`gb28181gw.store.rpc`) adds the paused consumer there, toward the
   superior's address, and answers with that node's media address and port for our 200; the
   ACK is ``cascade.start`` there, the superior's BYE ``cascade.close``. The SIP dialog stays
   here (transactions never leave their node). The owner tells us ``cascade.gone`` when the
   consumer goes (the device's stream ended, it shuts down) and we BYE upward; the owner's
   claim expiring (killed) is seen by :meth:`CascadeMediaService._watch_nodes`, which BYEs too,
   and on the owner removes consumers of a holder that is gone. Recorded kinds of another
   node's device cross too: ``cascade.open`` opens the session of its own there (its span,
   kind and download speed; a=filesize comes back for our 200), the superior's INFO is
   ``cascade.control`` (relayed in the device's dialog there, the device's answer back: a
   silent node 408 as a silent device, one gone 502), the device's MediaStatus 121 is
   ``cascade.media_status`` to us, which sends our MESSAGE upward before the BYE that the
   session's end (``cascade.gone``) brings, and the superior's BYE stops that session. Redis
   unreachable when the INVITE comes: the local path answers, as with one node.

The life of one served INVITE is a :class:`~gb28181gw.gb.superior_invite.ServedState`
changed only through :func:`~gb28181gw.gb.superior_invite.next_state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gb28181gw.audit import Action, Actor
from gb28181gw.errors import (
    DialogError,
    LocalProtocolError,
    MansrtspError,
    NodeNotLive,
    NodeUnreachable,
    OfferError,
    RpcError,
    RpcTimeout,
    SipTimeoutError,
    SipTransportError,
    SpanError,
    StreamError,
)
from gb28181gw.gb import mansrtsp
from gb28181gw.gb.playback import Span
from gb28181gw.gb.registrar import from_user
from gb28181gw.gb.rpc import INVITE_MARGIN, Call
from gb28181gw.gb.superior_invite import (
    ConsumerTransport,
    ServedInput,
    ServedState,
    SuperiorOffer,
    answer_sdp,
    next_state,
    parse_offer,
)
from gb28181gw.manscdp.messages import CONTENT_TYPE as MANSCDP_TYPE
from gb28181gw.manscdp.messages import CmdType, Root, encode
from gb28181gw.metrics import UPSTREAM_STREAMS, Metrics
from gb28181gw.net.stack import SipStack
from gb28181gw.net.tasks import TaskSet
from gb28181gw.sdp import SessionKind, file_size_text
from gb28181gw.sip.dialog import Dialog, DialogId
from gb28181gw.sip.endpoint import warning_header
from gb28181gw.sip.events import RequestCancelled, RequestReceived
from gb28181gw.sip.message import Request, Response, make_response
from gb28181gw.sip.peer import Peer
from gb28181gw.sip.transaction import Transaction
from gb28181gw.stopping import check_cancelled, stop_task

from .audit import AuditService, acting, result_of
from .registrar import RegistrarService
from .streams import Consumer, ControlResult, Stream, StreamService
from .upstreams import Link, UpstreamService

if TYPE_CHECKING:  # redis-py, imported with store.rpc, is needed only with the redis store
    from gb28181gw.store.rpc import RedisRpc

__all__ = ["UPWARD", "CascadeMediaService", "Served"]

log = logging.getLogger("gb28181gw.cascade")

#: A :class:`StreamError` status → what the superior is answered. The device's own 404, 486
#: and 488 pass as they are; its silence (504) is 408 (PROTOCOL.md §7.10); a bad consumer
#: request of ours is our fault (500); 502 (refused otherwise, or our TCP connection to the
#: superior failed) and 503 (no port or SSRC free) stay.
UPWARD = {400: 500, 404: 404, 408: 408, 480: 480, 486: 486, 488: 488, 502: 502, 503: 503, 504: 408}

#: A :class:`StreamError` of :meth:`StreamService.control` → what the superior's INFO is
#: answered: a control the session cannot take (a seek past the span's end, or in a download)
#: 400, the session gone or torn down 481 (RFC 3261 §12.2.2), the device silent 408 (as
#: :data:`UPWARD` says for an INVITE), unreachable 502.
CONTROL_UPWARD = {400: 400, 404: 481, 409: 481, 502: 502, 504: 408}

#: Seconds between looks at whether the nodes our superiors' streams depend on are still live
#: (a node's claim expires NODE_TTL, 15 s, after it died: the BYE upward follows within that and this).
WATCH_INTERVAL = 2.0
#: Seconds a node's claim must stay missing before the node counts as gone: longer than the
#: claims' renewal interval (NODE_TTL / 3, 5 s), so that a Redis restarted empty, whose nodes
#: claim again at their next renewal, cuts no stream.
GONE_AFTER = 7.0
#: Times the start of the sending is asked of the owning node while Redis cannot be reached (every
#: WATCH_INTERVAL: within the time the paused consumer waits there, 64*T1).
START_ATTEMPTS = 5
#: Times a close is asked of the owning node before giving up (every WATCH_INTERVAL: 30 s).
CLOSE_ATTEMPTS = 15

#: Seconds a BYE to a superior is given (best effort: when it is lost it cannot answer).
BYE_TIMEOUT = 5.0


@dataclass(eq=False, slots=True)
class Served:
    """One superior INVITE and the consumer serving it.

    Attributes:
        upstream: the superior's name.
        offer: what it asked for.
        request / transaction: its INVITE and server transaction.
        peer: where our requests in its dialog go: where its INVITE came from.
        state: changed only through :func:`~gb28181gw.gb.superior_invite.next_state`.
        stream_id / consumer_id / ssrc: the consumer, once added.
        dialog: the UAS dialog, once answered 200.
        answer: our SDP (a re-INVITE gets it again).
        unacked: the 2xx being retransmitted until an ACK (RFC 3261 §13.3.1.4).
        stop_waiting: resolved with a status when the wait for the stream must end (CANCEL: 487,
            superior lost, shutdown).
        notified: recorded kinds: done once our MediaStatus MESSAGE is answered (or given up);
            our BYE waits for it.
        node: the node owning the channel's device when it is another's (issue 17): its stream
            and consumer are there, asked for by RPC; "" for our own devices.
    """

    upstream: str
    offer: SuperiorOffer
    request: Request
    transaction: Transaction
    peer: Peer
    state: ServedState = ServedState.PROCEEDING
    stream_id: str = ""
    consumer_id: str = ""
    ssrc: int = 0
    dialog: Dialog | None = None
    answer: bytes = b""
    unacked: tuple[Transaction, Response] | None = None
    retransmit: asyncio.TimerHandle | None = None
    ack_timer: asyncio.TimerHandle | None = None
    stop_waiting: asyncio.Future[int] | None = field(default=None, repr=False)
    notified: asyncio.Future[None] | None = field(default=None, repr=False)
    node: str = ""

    def fire(self, event: ServedInput) -> None:
        self.state = next_state(self.state, event)


class CascadeMediaService:
    """Serves superiors' live INVITEs (see the module docstring).

    Args:
        stack / upstreams / streams / registrar: the SIP stack and the services it builds on.
        metrics: where ``gb28181gw_upstream_streams`` goes.
        media_address: ``Config.media_address`` (``""``: the address each superior reached us at).
        invite_timeout: ``media.invite_timeout``: the longest a superior waits for our 200.
        audit: where INVITEs refused before any stream is asked for are recorded (the stream
            service records the rest; both under the superior's name: :func:`acting`).
    """

    def __init__(
        self,
        stack: SipStack,
        upstreams: UpstreamService,
        streams: StreamService,
        registrar: RegistrarService,
        *,
        metrics: Metrics,
        media_address: str,
        invite_timeout: float,
        audit: AuditService | None = None,
        rpc: RedisRpc | None = None,
    ) -> None:
        self.stack = stack
        self.rpc = rpc
        # issue 17: superiors' streams of devices other nodes own, by (node, its stream, its consumer)
        self.remote: dict[tuple[str, str, str], Served] = {}
        # ... and, on the owning node, the consumers added for another node: (stream, consumer) → that node
        self.exported: dict[tuple[str, str], str] = {}
        self._watch: asyncio.Task[None] | None = None
        self.audit = audit
        self.upstreams = upstreams
        self.streams = streams
        self.registrar = registrar
        self.media_address = media_address
        self.invite_timeout = invite_timeout
        self.pending: dict[Transaction, Served] = {}
        self.dialogs: dict[DialogId, Served] = {}
        self.by_consumer: dict[tuple[str, str], Served] = {}
        self._tasks = TaskSet()
        self._sn = itertools.count(1)
        stack.router.handle("INVITE", self._on_invite, owner="cascade-media")
        stack.router.expect_in_dialog("BYE")
        stack.router.expect_in_dialog("INFO")  # a control for a dialog we no longer have: 481
        stack.on_cancel(self._on_cancel, owner="cascade-media")
        upstreams.on_lost(self._on_lost)
        streams.on_consumer_gone(self._on_consumer_gone)
        streams.on_media_status(self._on_media_status)
        metrics.labeled_gauge(UPSTREAM_STREAMS, self._per_upstream)
        if rpc is not None:
            rpc.handle("cascade.open", self._rpc_open)
            rpc.handle("cascade.start", self._rpc_start)
            rpc.handle("cascade.close", self._rpc_close)
            rpc.handle("cascade.gone", self._rpc_gone)
            rpc.handle("cascade.control", self._rpc_control)
            rpc.handle("cascade.media_status", self._rpc_media_status)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """With other nodes (issue 17): watch the nodes our streams depend on."""
        if self.rpc is not None and self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_nodes())

    async def stop(self) -> None:
        """Refuse INVITEs still waiting (503), BYE every superior dialog, release every consumer."""
        if self._watch is not None:
            # not cancel() and await: a look cancelled as its command is sent runs on (stopping.py)
            await stop_task(self._watch, what="the watch on the nodes serving streams")
            self._watch = None
        for served in list(self.pending.values()):
            self._stop_waiting(served, 503)
        for served in list(self.dialogs.values()):
            self._end(served, "gateway shutting down", bye=True)
        for (stream_id, consumer_id), holder in list(self.exported.items()):
            del self.exported[(stream_id, consumer_id)]
            if self.rpc is not None:  # its holder sends BYE upward now, not when our claim is gone
                args = {"stream": stream_id, "consumer": consumer_id, "reason": "the owning node is shutting down"}
                self.rpc.notify(holder, "cascade.gone", args)
            self._tasks.spawn(self._remove_exported(stream_id, consumer_id))
        await self._tasks.wait(timeout=BYE_TIMEOUT)
        self._tasks.cancel()

    # --- the INVITE --------------------------------------------------------------------

    def _on_invite(self, event: RequestReceived) -> Awaitable[None] | None:
        request = event.request
        link = self.upstreams.superior(from_user(request), event.peer)
        if link is None:
            log.info("INVITE from a stranger refused", extra={"peer": str(event.peer), "from": from_user(request)})
            self._refuse(event, 403, "only a configured superior may INVITE this gateway")
            return None
        return self._serve(event, link)

    async def _serve(self, event: RequestReceived, link: Link) -> None:
        with acting(_superior(event.request, event.peer)):  # the streams it opens name it
            await self._serve_invite(event, link)

    async def _serve_invite(self, event: RequestReceived, link: Link) -> None:
        request, tx = event.request, event.transaction
        assert tx is not None
        name = link.machine.settings.name
        try:
            offer = await self._settle(parse_offer(request), event)
            owner = await self._other_owner(offer.channel_id)
            if owner is not None:
                device_id, node = owner
                if not self.upstreams.may_see(name, offer.channel_id, device_id):
                    raise StreamError(404, f"no channel {offer.channel_id} here")
                offer.require_ps()
            else:
                self._check_channel(name, offer.channel_id)
                offer.require_ps()
            if offer.span is not None:
                try:
                    offer.span.check(now=time.time(), max_span=self.streams.playback.max_span)
                except SpanError as exc:
                    raise OfferError(400, str(exc)) from None
        except (OfferError, StreamError) as exc:
            log.info("superior INVITE refused", extra={"upstream": name, "status": exc.status, "reason": str(exc)})
            if self.audit is not None:
                asked = {"upstream": name, "status": exc.status}
                self.audit.record(Action.STREAM_OPEN, "", asked, result=result_of(exc), detail=str(exc))
            self._refuse(event, exc.status, str(exc))
            self.upstreams.count_request(name, "INVITE", str(exc.status))
            return
        if owner is not None:
            await self._serve_remote(event, link, offer, owner[1])
            return
        loop = asyncio.get_running_loop()
        # our requests in its dialog go where its INVITE came from: its SIP socket, found through NAT too
        served = Served(name, offer, request, tx, event.peer, stop_waiting=loop.create_future())
        self.pending[tx] = served
        ssrc = offer.ssrc if link.section.ssrc == "echo" else None
        to: dict[str, Any] = {
            "transport": str(offer.transport),
            "host": offer.host,
            "port": offer.port,
            "ssrc": ssrc,
            "label": f"upstream:{name}",
            "paused": True,  # nothing before its ACK (and for tcp no connection)
            "start_within": self.stack.endpoint.timers.h,  # as long as we wait for that ACK
            # behind NAT it connects from its SIP source; a media server apart from it, from c=
            "also_from": (event.peer.host,) if offer.transport == "tcp-passive" else (),
        }
        if offer.span is not None:
            # a session of its own: another superior's (or viewer's) pauses and seeks are not its
            opening = self.streams.open_recorded(
                offer.channel_id, kind=offer.session, span=offer.span, download_speed=offer.download_speed, **to
            )
        else:
            opening = self.streams.play(offer.channel_id, **to)
        play = asyncio.ensure_future(opening)
        assert served.stop_waiting is not None
        waits: set[asyncio.Future[Any]] = {play, served.stop_waiting}
        try:
            done, _ = await asyncio.wait(waits, timeout=self.invite_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.pending.pop(tx, None)
        if play not in done or served.stop_waiting.done():
            # whatever play() still yields is released when it comes (nothing leaks)
            play.add_done_callback(functools.partial(self._release_late, recorded=offer.span is not None))
            if served.stop_waiting.done():
                status = served.stop_waiting.result()
                if status != 487:  # the endpoint answered the CANCEL's INVITE itself
                    self._refuse(event, status, "the superior is lost" if status == 480 else "gateway shutting down")
            else:
                status = 408
                self._refuse(event, 408, f"the stream of {offer.channel_id} was not ready in {self.invite_timeout:g} s")
            served.fire(ServedInput.REFUSED)
            self.upstreams.count_request(name, "INVITE", "cancelled" if status == 487 else str(status))
            return
        try:
            st, consumer = play.result()
        except StreamError as exc:
            status = UPWARD.get(exc.status, 502)
            log.info("superior INVITE failed", extra={"upstream": name, "status": status, "reason": str(exc)})
            self._refuse(event, status, str(exc))
            served.fire(ServedInput.REFUSED)
            self.upstreams.count_request(name, "INVITE", str(status))
            return
        self._answer(served, event, link, st, consumer)

    async def _settle(self, offer: SuperiorOffer, event: RequestReceived) -> SuperiorOffer:
        """The offer as we serve it: the channel we know among those it names, a host to send to."""
        known = [c for c in offer.candidates if self.streams.devices.owner_of(c) is not None]
        if known and known[0] != offer.channel_id:
            # Subject names a channel we do not have, the Request-URI one we do (a superior
            # that fills Subject its own way): serve what it can only mean
            offer = replace(offer, channel_id=known[0])
        if offer.ignored_ssrc:
            log.info(
                "superior's y= is no GB SSRC: sending with ours",
                extra={"peer": str(event.peer), "y": offer.ignored_ssrc[:20]},
            )
        host = offer.host or event.peer.host  # it connects to us and named no address: its SIP host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            # a name in c=: resolved once here, not by the relay at every packet sent
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM)
            except OSError as exc:
                raise OfferError(488, f"the offer's media host {host[:60]!r} cannot be resolved: {exc}") from None
            host = str(infos[0][4][0])
        return replace(offer, host=host) if host != offer.host else offer

    def _check_channel(self, name: str, channel_id: str) -> None:
        device_id = self.streams.devices.owner_of(channel_id)
        if device_id is None or not self.upstreams.may_see(name, channel_id, device_id):
            # an unshared channel is not told apart from an unknown one (wvp answers 404 too)
            raise StreamError(404, f"no channel {channel_id} here")
        device = self.registrar.devices.get(device_id)
        if device is None or not device.online:
            state = "not registered" if device is None or not device.registered else "offline"
            raise StreamError(480, f"the device of channel {channel_id} is {state}")
        if not self.registrar.cluster.owns(device_id):
            # known here as another node wrote it (Redis could not say which node, or named this one
            # while another serves it): its INVITE would come from a gateway it is not registered at
            raise StreamError(480, f"the device of channel {channel_id} is not registered at this node")

    def _answer(self, served: Served, event: RequestReceived, link: Link, st: Stream, consumer: Consumer) -> None:
        media_ip = self.media_address or self.stack.local_address(event.peer)[0]
        self._answer_with(
            served,
            event,
            stream_id=st.id,
            consumer_id=consumer.id,
            ssrc=consumer.ssrc,
            media_ip=media_ip,
            # UDP: our sending port; tcp-passive: where we listen; tcp: nominal (RFC 4145, we connect)
            port=consumer.local_port or st.port,
            file_size=file_size_text(st.session.answer) if st.session.answer is not None else None,
        )

    def _answer_with(
        self,
        served: Served,
        event: RequestReceived,
        *,
        stream_id: str,
        consumer_id: str,
        ssrc: int,
        media_ip: str,
        port: int,
        file_size: str | None = None,
    ) -> None:
        request, tx, offer = event.request, served.transaction, served.offer
        served.stream_id, served.consumer_id, served.ssrc = stream_id, consumer_id, ssrc
        sdp = answer_sdp(
            offer, channel_id=offer.channel_id, media_ip=media_ip, port=port, ssrc=ssrc, file_size=file_size
        )
        served.answer = sdp.serialize().encode()
        response = self._ok(served, request, to_tag=self.stack.endpoint.new_tag(), event=event)
        dialog = Dialog.uas(request, response, served.peer)
        served.dialog = dialog
        self.dialogs[dialog.id] = served
        if served.node:
            self.remote[(served.node, stream_id, consumer_id)] = served
        else:
            self.by_consumer[(stream_id, consumer_id)] = served
        self.stack.router.add_dialog(
            dialog.id, functools.partial(self._on_dialog_request, served), owner="cascade-media"
        )
        try:
            self.stack.respond(tx, response)
        except LocalProtocolError:
            # its transaction died while we waited (its SIP TCP connection went): nobody gets
            # the 200, so nothing may wait 32 s for an ACK that cannot come
            self._end(served, "its INVITE transaction is gone (connection lost)", bye=False)
            self.upstreams.count_request(served.upstream, "INVITE", "lost")
            return
        served.fire(ServedInput.ANSWERED)
        self._await_ack(served, tx, response, event.peer)
        self.upstreams.count_request(served.upstream, "INVITE", "ok")
        log.info(
            "serving a superior",
            extra={
                "upstream": served.upstream,
                "channel": offer.channel_id,
                "stream": stream_id,
                "consumer": consumer_id,
                "node": served.node or None,
                "kind": offer.session.word,
                "to": f"{offer.transport}:{offer.host}:{offer.port}",
                "ssrc": f"{ssrc:010d}",
            },
        )
        if offer.subject:
            # Annex K c: the same stream asked for again replaces the one being sent; a superior
            # that writes one Subject for all it asks of a channel does not ask for its live view
            # again by playing a span back (nor for one span by another)
            for old in [s for s in self.dialogs.values() if s is not served and s.upstream == served.upstream]:
                was = old.offer
                if (was.subject, was.session, was.span) == (offer.subject, offer.session, offer.span):
                    self._end(old, "replaced by a new INVITE for the same stream (Annex K c)", bye=True)

    def _ok(self, served: Served, request: Request, *, to_tag: str | None, event: RequestReceived) -> Response:
        response = make_response(request, 200, to_tag=to_tag)
        # the channel answers, as devices do (PROTOCOL.md §9.5): its ID in Contact, like in o=
        response.headers.add("Contact", f"<{self.stack.contact(served.offer.channel_id, event.peer)}>")
        response.headers.add("Content-Type", "application/sdp")
        response.body = served.answer
        return response

    def _await_ack(self, served: Served, tx: Transaction, response: Response, via: Peer) -> None:
        loop = asyncio.get_running_loop()
        timers = self.stack.endpoint.timers
        served.unacked = (tx, response)
        if served.ack_timer is None:
            served.ack_timer = loop.call_later(timers.h, self._no_ack, served)
        if via.transport == "UDP":
            served.retransmit = loop.call_later(timers.t1, self._retransmit, served, timers.t1)

    def _retransmit(self, served: Served, interval: float) -> None:
        served.retransmit = None
        if served.unacked is None:
            return
        tx, response = served.unacked
        try:
            self.stack.respond(tx, response)
        except LocalProtocolError:
            return  # the transaction is over (Timer L): the ACK timer decides
        interval = min(interval * 2, self.stack.endpoint.timers.t2)
        served.retransmit = asyncio.get_running_loop().call_later(interval, self._retransmit, served, interval)

    def _no_ack(self, served: Served) -> None:
        served.ack_timer = None
        if served.state is ServedState.ACCEPTED:
            self._end(served, "no ACK to our 200 (RFC 3261 §13.3.1.4)", bye=True)

    def _acked(self, served: Served) -> None:
        served.unacked = None
        if served.retransmit is not None:
            served.retransmit.cancel()
            served.retransmit = None
        if served.state is ServedState.ACCEPTED:
            if served.ack_timer is not None:
                served.ack_timer.cancel()
                served.ack_timer = None
            served.fire(ServedInput.ACKED)
            self._tasks.spawn(self._start(served))
        else:
            served.fire(ServedInput.ACKED)

    async def _start(self, served: Served) -> None:
        try:
            if served.node:
                assert self.rpc is not None
                args = {"stream": served.stream_id, "consumer": served.consumer_id}
                for attempt in range(START_ATTEMPTS):
                    try:
                        await self.rpc.call(served.node, "cascade.start", args)
                        break
                    except NodeUnreachable:
                        # Redis away a moment: the consumer waits there paused (start_within) meanwhile
                        if attempt == START_ATTEMPTS - 1 or served.state is ServedState.ENDED:
                            raise
                        await asyncio.sleep(WATCH_INTERVAL)
            else:
                await self.streams.start_consumer(served.stream_id, served.consumer_id)
        except (StreamError, RpcError) as exc:
            self._end(served, f"sending could not start: {exc}", bye=True)

    def _release_late(self, play: asyncio.Future[tuple[Stream, Consumer]], *, recorded: bool) -> None:
        if play.cancelled() or play.exception() is not None:
            return
        st, consumer = play.result()
        # a recorded session was opened for this INVITE alone: stopped, not left to linger
        self._tasks.spawn(self._remove(st.id, consumer.id, recorded=recorded))

    async def _remove(self, stream_id: str, consumer_id: str, *, recorded: bool = False) -> None:
        with contextlib.suppress(StreamError):  # gone already
            await self.streams.remove_consumer(stream_id, consumer_id)
        st = self.streams.streams.get(stream_id)
        if recorded and st is not None and not st.consumers:
            # its own device session: nobody else watches it, and a lingering one would hold the device's dialog
            await self.streams.stop_stream(stream_id, "the superior's playback ended")

    async def _remove_exported(self, stream_id: str, consumer_id: str) -> None:
        """A consumer served for another node's superior removed; a recorded session, opened for it alone, stopped."""
        st = self.streams.streams.get(stream_id)
        await self._remove(stream_id, consumer_id, recorded=st is not None and st.span is not None)

    def _refuse(self, event: RequestReceived, status: int, warning: str) -> None:
        tx = event.transaction
        if tx is None or tx.last_status >= 200:
            return  # answered already (487 to a CANCEL)
        response = make_response(event.request, status, to_tag=self.stack.endpoint.new_tag())
        response.headers.add("Warning", warning_header(warning))
        self.stack.respond(tx, response)

    # --- CANCEL, the dialog, and ending ------------------------------------------------

    def _on_cancel(self, event: RequestCancelled) -> None:
        served = self.pending.get(event.transaction)
        if served is not None:
            log.info("superior cancelled its INVITE", extra={"upstream": served.upstream})
            self._stop_waiting(served, 487)

    @staticmethod
    def _stop_waiting(served: Served, status: int) -> None:
        if served.stop_waiting is not None and not served.stop_waiting.done():
            served.stop_waiting.set_result(status)

    def _on_dialog_request(self, served: Served, event: RequestReceived) -> None:
        with acting(_superior(served.request, event.peer)):  # its BYE closes, its INFO controls, in its name
            self._dialog_request(served, event)

    def _dialog_request(self, served: Served, event: RequestReceived) -> None:
        request, tx = event.request, event.transaction
        if tx is None:  # the ACK of our 2xx (or of a re-INVITE's)
            if request.method == "ACK":
                self._acked(served)
            return
        dialog = served.dialog
        assert dialog is not None
        try:
            dialog.receive_request(request)
        except DialogError as exc:
            response = make_response(request, exc.status)
            response.headers.add("Warning", warning_header(exc.reason))
            self.stack.respond(tx, response)
            return
        method = request.method
        if method == "BYE":
            self.stack.respond(tx, make_response(request, 200))
            self._end(served, "the superior ended it (BYE)", bye=False)
        elif method == "INVITE":
            # a re-INVITE (session refresh, or the same Subject again, Annex K c): the media
            # goes on as it was, and the answer says so
            if served.state is ServedState.ENDED:
                self.stack.respond(tx, make_response(request, 481))
                return
            moved = self._moved(served, request)
            if moved:
                # our unchanged answer would say we follow it (RFC 3264 §8): refused, the
                # session goes on as it was (RFC 3261 §14.2)
                response = make_response(request, 488)
                response.headers.add("Warning", warning_header(moved))
                self.stack.respond(tx, response)
                return
            response = self._ok(served, request, to_tag=None, event=event)
            self.stack.respond(tx, response)
            self._await_ack(served, tx, response, event.peer)
        elif method == "OPTIONS":
            self.stack.respond(tx, make_response(request, 200))
        elif method == "INFO" and served.offer.span is not None:
            self._on_info(served, event)
        else:
            response = make_response(request, 405)
            allow = "ACK, BYE, INFO, INVITE, OPTIONS" if served.offer.span is not None else "ACK, BYE, INVITE, OPTIONS"
            response.headers.add("Allow", allow)
            self.stack.respond(tx, response)

    # --- recorded kinds: controls and the end of the recording -------------------------

    def _on_info(self, served: Served, event: RequestReceived) -> None:
        request, tx = event.request, event.transaction
        assert tx is not None
        if not mansrtsp.is_mansrtsp(request.headers.get("content-type")):
            response = make_response(request, 415)
            response.headers.add("Accept", mansrtsp.CONTENT_TYPE)
            self.stack.respond(tx, response)
            self.upstreams.count_request(served.upstream, "INFO", "415")
            return
        try:
            rtsp = mansrtsp.parse_request(request.body)
        except MansrtspError as exc:
            response = make_response(request, 400)
            response.headers.add("Warning", warning_header(f"unreadable MANSRTSP body: {exc}"))
            self.stack.respond(tx, response)
            self.upstreams.count_request(served.upstream, "INFO", "400")
            return
        self._tasks.spawn(self._relay_control(served, tx, request, rtsp))

    async def _relay_control(
        self, served: Served, tx: Transaction, request: Request, rtsp: mansrtsp.RtspRequest
    ) -> None:
        """The superior's control to the device, then the device's answer to the superior's INFO."""
        try:
            if served.node:
                result = await self._control_remote(served, rtsp)
            else:
                result = await self.streams.control(served.stream_id, rtsp)
        except StreamError as exc:
            status = CONTROL_UPWARD.get(exc.status, 500)
            response = make_response(request, status)
            response.headers.add("Warning", warning_header(str(exc)))
        else:
            status = 200 if 200 <= result.status < 300 else result.status
            response = make_response(request, status, None if status == 200 else result.reason or None)
            # the device's answer, numbered as the superior numbered its request
            body = result.answer.with_cseq(rtsp.cseq).serialize() if result.answer is not None else result.body
            if body.strip():
                response.headers.add("Content-Type", mansrtsp.CONTENT_TYPE)
                response.body = body
        try:
            self.stack.respond(tx, response)
        except LocalProtocolError:
            return  # its transaction is gone (its connection dropped): nobody to tell
        self.upstreams.count_request(served.upstream, "INFO", "ok" if status == 200 else str(status))
        log.info(
            "superior's playback control relayed",
            extra={
                "upstream": served.upstream,
                "stream": served.stream_id,
                "control": rtsp.describe(),
                "status": status,
            },
        )

    async def _control_remote(self, served: Served, rtsp: mansrtsp.RtspRequest) -> ControlResult:
        """The superior's control relayed in the device's dialog on the device's node: its answer.

        Raises:
            StreamError: as :meth:`StreamService.control` there; the node silent 504, unreachable 502.
        """
        assert self.rpc is not None
        args = {"stream": served.stream_id, "consumer": served.consumer_id, "rtsp": rtsp.serialize().decode()}
        timeout = self.streams.playback.control_timeout + INVITE_MARGIN  # the device's time to answer there
        try:
            got = await self.rpc.call(served.node, "cascade.control", args, timeout=timeout)
        except RpcTimeout as exc:
            raise StreamError(504, str(exc)) from None
        except NodeUnreachable as exc:
            raise StreamError(502, str(exc)) from None
        except RpcError as exc:
            raise StreamError(exc.status, str(exc)) from None
        body = str(got.get("body") or "").encode()
        answer = None
        if body.strip():
            with contextlib.suppress(MansrtspError):  # relayed as it came (see StreamService.control)
                answer = mansrtsp.parse_response(body)
        return ControlResult(rtsp, int(got["status"]), str(got.get("reason") or ""), answer, body)

    async def _rpc_control(self, call: Call) -> dict[str, Any]:
        """Another node's superior controls the recorded session served for it here."""
        key = (str(call.args["stream"]), str(call.args["consumer"]))
        if self.exported.get(key) != call.caller:
            raise StreamError(404, f"no session {key[0]} served here for node {call.caller}")
        try:
            rtsp = mansrtsp.parse_request(str(call.args["rtsp"]))
        except MansrtspError as exc:
            raise StreamError(400, f"unreadable MANSRTSP body: {exc}") from None
        result = await self.streams.control(key[0], rtsp)
        return {"status": result.status, "reason": result.reason, "body": result.body.decode("utf-8", "replace")}

    async def _rpc_media_status(self, call: Call) -> dict[str, Any]:
        """The device on another node sent its whole span: our MediaStatus to the superior (before the BYE)."""
        served = self.remote.get((call.caller, str(call.args["stream"]), str(call.args["consumer"])))
        if served is not None:
            self._tell_media_status(served)
        return {}

    def _on_media_status(self, st: Stream) -> None:
        for (stream_id, consumer_id), holder in list(self.exported.items()):
            if stream_id == st.id and self.rpc is not None:
                # the superior's dialog is at that node: it sends the MESSAGE (and waits for its answer
                # before the BYE that follows our close, which comes COMPLETE_DRAIN later)
                self.rpc.notify(holder, "cascade.media_status", {"stream": stream_id, "consumer": consumer_id})
        for served in [s for s in self.dialogs.values() if s.stream_id == st.id and not s.node]:
            self._tell_media_status(served)

    def _tell_media_status(self, served: Served) -> None:
        """MediaStatus 121 in the superior's dialog (once)."""
        dialog = served.dialog
        if dialog is None or dialog.terminated or served.notified is not None:
            return
        link = self.upstreams.links.get(served.upstream)
        charset = link.section.charset if link is not None else "GB2312"
        body = encode(
            Root.NOTIFY,
            CmdType.MEDIA_STATUS,
            next(self._sn),
            served.offer.channel_id,  # IDs go up unchanged (PROTOCOL.md §9.9)
            [("NotifyType", "121")],
            charset=charset,
        )
        # built now, so its CSeq comes before that of any BYE of ours that follows
        message = dialog.request("MESSAGE", body=body, content_type=MANSCDP_TYPE)
        served.notified = asyncio.get_running_loop().create_future()
        self._tasks.spawn(self._notify(served, message, served.notified))

    async def _notify(self, served: Served, message: Request, done: asyncio.Future[None]) -> None:
        try:
            response = await self.stack.request(message, served.peer, timeout=BYE_TIMEOUT)
        except (SipTimeoutError, SipTransportError) as exc:
            log.warning(
                "MediaStatus to the superior not answered", extra={"upstream": served.upstream, "reason": str(exc)}
            )
        else:
            log.info(
                "recording end told to the superior (MediaStatus 121)",
                extra={"upstream": served.upstream, "stream": served.stream_id, "status": response.status},
            )
        finally:
            done.set_result(None)

    @staticmethod
    def _moved(served: Served, request: Request) -> str:
        """Why a re-INVITE's offer cannot be answered as before (``""``: it can, or it has none)."""
        if not request.body.strip():
            return ""
        try:
            offer = parse_offer(request)
        except OfferError as exc:
            return str(exc)
        was = served.offer
        # when it connects to us, its c= and m= are nominal: only the direction could move
        where = (
            (offer.transport,)
            if offer.transport is ConsumerTransport.TCP_PASSIVE
            else (offer.transport, offer.host, offer.port)
        )
        if where != (
            (was.transport,) if was.transport is ConsumerTransport.TCP_PASSIVE else (was.transport, was.host, was.port)
        ):
            return (
                f"a re-INVITE moving the media ({was.transport}:{was.host}:{was.port} to "
                f"{offer.transport}:{offer.host}:{offer.port}) is not supported: INVITE anew"
            )
        return ""

    def _on_consumer_gone(self, stream_id: str, consumer: Consumer, reason: str) -> None:
        holder = self.exported.pop((stream_id, consumer.id), None)
        if holder is not None and self.rpc is not None:
            # a superior's stream served for another node: that node answers for its dialog
            args = {"stream": stream_id, "consumer": consumer.id, "reason": reason or "its consumer is gone"}
            self.rpc.notify(holder, "cascade.gone", args)
            return
        served = self.by_consumer.get((stream_id, consumer.id))
        if served is not None:
            self._end(served, reason or "its consumer is gone", bye=True, remove=False)

    def _on_lost(self, name: str, reason: str) -> None:
        for served in [s for s in self.pending.values() if s.upstream == name]:
            self._stop_waiting(served, 480)
        for served in [s for s in self.dialogs.values() if s.upstream == name]:
            self._end(served, f"the superior is lost: {reason}", bye=True)

    def _end(self, served: Served, reason: str, *, bye: bool, remove: bool = True) -> None:
        """End ``served``: its consumer removed (unless gone already), BYE when ``bye`` and ours to send."""
        if served.state is ServedState.ENDED:
            return
        served.fire(ServedInput.END)
        served.unacked = None
        for handle in (served.retransmit, served.ack_timer):
            if handle is not None:
                handle.cancel()
        served.retransmit = served.ack_timer = None
        key = (served.stream_id, served.consumer_id)
        if self.by_consumer.get(key) is served:
            del self.by_consumer[key]
        if served.node:
            self.remote.pop((served.node, *key), None)
        dialog = served.dialog
        if dialog is not None:
            self.dialogs.pop(dialog.id, None)
            self.stack.router.remove_dialog(dialog.id)
            if bye and not dialog.terminated:
                self._tasks.spawn(self._bye(served, dialog))
            elif not dialog.terminated:
                dialog.terminate()
        if remove and served.consumer_id and served.node:
            self._tasks.spawn(self._close_remote(served.node, served.stream_id, served.consumer_id))
        elif remove and served.consumer_id:
            self._tasks.spawn(
                self._remove(served.stream_id, served.consumer_id, recorded=served.offer.span is not None)
            )
        log.info(
            "superior stream ended",
            extra={"upstream": served.upstream, "channel": served.offer.channel_id, "reason": reason},
        )

    async def _bye(self, served: Served, dialog: Dialog) -> None:
        if served.notified is not None:
            # the end of the recording first, then the end of the call (PROTOCOL.md §9.6)
            await asyncio.wait({served.notified}, timeout=BYE_TIMEOUT)
        try:
            response = await self.stack.request(dialog.request("BYE"), served.peer, timeout=BYE_TIMEOUT)
        except (SipTimeoutError, SipTransportError) as exc:
            log.info("BYE to the superior not answered", extra={"upstream": served.upstream, "reason": str(exc)})
            return
        if response.status >= 300:
            log.info("BYE refused by the superior", extra={"upstream": served.upstream, "status": response.status})

    # --- devices of other nodes (issue 17) -------------------------------------------------

    async def _other_owner(self, channel_id: str) -> tuple[str, str] | None:
        """(device, node) when ``channel_id``'s device is owned by another live node; ``None``
        for ours, for one nobody owns, and when Redis cannot say (then the local path answers)."""
        if self.rpc is None:
            return None
        device_id = self.streams.devices.owner_of(channel_id)
        try:
            if device_id is None:
                # another node's device is not in our memory: its channels are in the shared store
                device_id = await self.rpc.device_of(channel_id)
            if device_id is None:
                return None
            node = await self.rpc.owner(device_id)
        except NodeUnreachable as exc:
            log.warning(
                "owner of a channel cannot be read; served as ours", extra={"channel": channel_id, "error": str(exc)}
            )
            return None
        if node is None or node == self.rpc.node:
            return None
        return device_id, node

    async def _serve_remote(self, event: RequestReceived, link: Link, offer: SuperiorOffer, node: str) -> None:
        """The superior's INVITE for a device of ``node``: that node sends the media straight to
        the superior's address; we keep the SIP dialog (transactions never leave their node)."""
        assert self.rpc is not None
        request, tx = event.request, event.transaction
        assert tx is not None
        name = link.machine.settings.name
        loop = asyncio.get_running_loop()
        served = Served(name, offer, request, tx, event.peer, stop_waiting=loop.create_future(), node=node)
        self.pending[tx] = served
        args: dict[str, Any] = {
            "channel": offer.channel_id,
            "transport": str(offer.transport),
            "host": offer.host,
            "port": offer.port,
            "ssrc": offer.ssrc if link.section.ssrc == "echo" else None,
            "label": f"upstream:{name}@{self.rpc.node}",
            "start_within": self.stack.endpoint.timers.h,
            "also_from": [event.peer.host] if offer.transport == "tcp-passive" else [],
        }
        if offer.span is not None:
            # a session of its own there, as here (one device dialog per superior dialog)
            args["recorded"] = {
                "kind": offer.session.word,
                "span": [offer.span.start, offer.span.end],
                "download_speed": offer.download_speed,
            }
        # the device on its node has media.invite_timeout to answer; the calls' round trips come on top
        timeout = self.invite_timeout + INVITE_MARGIN
        opening = asyncio.ensure_future(self.rpc.call(node, "cascade.open", args, timeout=timeout))
        assert served.stop_waiting is not None
        waits: set[asyncio.Future[Any]] = {opening, served.stop_waiting}
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.pending.pop(tx, None)
        if opening not in done or served.stop_waiting.done():
            opening.add_done_callback(functools.partial(self._release_remote_late, node))
            status = served.stop_waiting.result() if served.stop_waiting.done() else 408
            if status != 487:
                self._refuse(event, status, f"node {node} did not open the stream of {offer.channel_id} in time")
            served.fire(ServedInput.REFUSED)
            self.upstreams.count_request(name, "INVITE", "cancelled" if status == 487 else str(status))
            return
        try:
            got = opening.result()
            stream_id, consumer_id = str(got["stream"]), str(got["consumer"])
            ssrc, port, media_ip = int(got["ssrc"]), int(got["port"]), str(got["media_ip"])
            file_size = None if got.get("file_size") is None else str(got["file_size"])
        except RpcError as exc:
            # the node gone or Redis away: the device cannot be reached now (480); its silence 408;
            # its refusal passes as a local one would (UPWARD)
            status = (
                408
                if isinstance(exc, RpcTimeout)
                else 480
                if isinstance(exc, NodeUnreachable)
                else UPWARD.get(exc.status, 502)
            )
            log.info(
                "superior INVITE failed on the device's node",
                extra={"upstream": name, "node": node, "status": status, "reason": str(exc)},
            )
            self._refuse(event, status, str(exc))
            served.fire(ServedInput.REFUSED)
            self.upstreams.count_request(name, "INVITE", str(status))
            return
        except (KeyError, TypeError, ValueError) as exc:
            self._refuse(event, 502, f"node {node} answered the stream's opening unreadably: {exc!r}")
            served.fire(ServedInput.REFUSED)
            self.upstreams.count_request(name, "INVITE", "502")
            return
        self._answer_with(
            served,
            event,
            stream_id=stream_id,
            consumer_id=consumer_id,
            ssrc=ssrc,
            media_ip=media_ip,
            port=port,
            file_size=file_size,
        )

    def _release_remote_late(self, node: str, opening: asyncio.Future[dict[str, Any]]) -> None:
        if opening.cancelled() or opening.exception() is not None or self.rpc is None:
            return
        got = opening.result()
        self.rpc.notify(node, "cascade.close", {"stream": got.get("stream"), "consumer": got.get("consumer")})

    async def _close_remote(self, node: str, stream_id: str, consumer_id: str) -> None:
        """Stop the sending on ``node``; asked again while Redis is away (a lost close would leave
        the node sending to the superior until the device's stream ends)."""
        assert self.rpc is not None
        not_live = 0
        for _ in range(CLOSE_ATTEMPTS):
            try:
                await self.rpc.call(node, "cascade.close", {"stream": stream_id, "consumer": consumer_id})
                return
            except NodeNotLive:
                not_live += 1
                if not_live * WATCH_INTERVAL >= GONE_AFTER:
                    return  # the node is gone, and its consumers with it
            except (RpcTimeout, NodeUnreachable):
                not_live = 0  # Redis away or slow: ask again
            except RpcError:
                return  # refused: nothing to close there
            await asyncio.sleep(WATCH_INTERVAL)
        log.warning("sending on another node could not be stopped", extra={"node": node, "stream": stream_id})

    async def _rpc_open(self, call: Call) -> dict[str, Any]:
        """Another node's superior asks for a channel of ours: a paused consumer toward the superior."""
        a = call.args
        host, port = str(a["host"]), int(a["port"])
        to: dict[str, Any] = {
            "transport": str(a["transport"]),
            "host": host,
            "port": port,
            "ssrc": None if a.get("ssrc") is None else int(a["ssrc"]),
            "label": str(a.get("label", f"node:{call.caller}")),
            "paused": True,  # nothing before the superior's ACK reaches its node
            "start_within": float(a.get("start_within", 32.0)),
            "also_from": tuple(str(h) for h in a.get("also_from", ())),
        }
        recorded = a.get("recorded")
        if recorded is not None:
            kind = SessionKind.of(str(recorded["kind"]))
            if kind is None or not kind.recorded:
                raise StreamError(400, f"no recorded kind {recorded['kind']!r}")
            speed = recorded.get("download_speed")
            opening = self.streams.open_recorded(
                str(a["channel"]),
                kind=kind,
                span=Span(int(recorded["span"][0]), int(recorded["span"][1])),
                download_speed=None if speed is None else int(speed),
                **to,
            )
        else:
            opening = self.streams.play(str(a["channel"]), **to)
        playing = asyncio.ensure_future(opening)
        try:
            st, consumer = await asyncio.shield(playing)
        except asyncio.CancelledError:
            # the call's deadline passed: whatever play() still yields is released when it does
            playing.add_done_callback(functools.partial(self._release_late, recorded=recorded is not None))
            raise
        self.exported[(st.id, consumer.id)] = call.caller
        media_ip = self.media_address or self.stack.local_address(Peer("UDP", host or "127.0.0.1", port or 5060))[0]
        log.info(
            "serving another node's superior",
            extra={"node": call.caller, "label": a.get("label"), "stream": st.id, "consumer": consumer.id},
        )
        return {
            "stream": st.id,
            "consumer": consumer.id,
            "ssrc": consumer.ssrc,
            "port": consumer.local_port or st.port,
            "media_ip": media_ip,
            "file_size": file_size_text(st.session.answer) if st.session.answer is not None else None,
        }

    async def _rpc_start(self, call: Call) -> dict[str, Any]:
        await self.streams.start_consumer(str(call.args["stream"]), str(call.args["consumer"]))
        return {}

    async def _rpc_close(self, call: Call) -> dict[str, Any]:
        key = (str(call.args["stream"]), str(call.args["consumer"]))
        if self.exported.pop(key, None) is not None:
            await self._remove_exported(*key)
        return {}

    async def _rpc_gone(self, call: Call) -> dict[str, Any]:
        served = self.remote.get((call.caller, str(call.args["stream"]), str(call.args["consumer"])))
        if served is not None:
            self._end(
                served, f"node {call.caller}: {call.args.get('reason', 'the stream ended')}", bye=True, remove=False
            )
        return {}

    async def _watch_nodes(self) -> None:
        """End what depends on a node that is no longer live: our superiors' streams it served
        (BYE upward), and the consumers we serve for it (its dialogs are gone with it)."""
        assert self.rpc is not None
        loop = asyncio.get_running_loop()
        missing: dict[str, float] = {}  # node → when its claim was first seen missing
        while True:
            check_cancelled()
            await asyncio.sleep(WATCH_INTERVAL)
            nodes = {node for node, _, _ in self.remote} | set(self.exported.values())
            if not nodes:
                missing.clear()
                continue
            try:
                present = await self.rpc.live(nodes)
            except NodeUnreachable:
                continue  # Redis away: keep every stream as it is (no node's death can be told)
            now = loop.time()
            for node in present:
                missing.pop(node, None)
            for node in nodes - present:
                missing.setdefault(node, now)
            # a claim missing for a moment is a Redis restarted empty (the nodes claim again
            # within their renewal interval), not a dead node: no stream is cut for it
            live = {n for n in nodes if now - missing.get(n, now) < GONE_AFTER}
            for (node, _, _), served in list(self.remote.items()):
                if node not in live:
                    self._end(served, f"node {node}, which served it, is gone", bye=True, remove=False)
            for key, holder in list(self.exported.items()):
                if holder not in live:
                    del self.exported[key]
                    log.info("consumer of a gone node removed", extra={"node": holder, "stream": key[0]})
                    self._tasks.spawn(self._remove_exported(*key))

    # --- figures -----------------------------------------------------------------------

    def _per_upstream(self) -> dict[tuple[str, ...], float]:
        counts = Counter(s.upstream for s in self.dialogs.values())
        return {(name,): float(counts[name]) for name in self.upstreams.links}

    def served_to(self, name: str) -> int:
        """Streams served to superior ``name`` now (answered, not ended)."""
        return sum(1 for s in self.dialogs.values() if s.upstream == name)


def _superior(request: Request, peer: Peer) -> Actor:
    """The superior a request came from, as the audit trail names it."""
    return Actor.superior(from_user(request), f"{peer.host}:{peer.port}")
