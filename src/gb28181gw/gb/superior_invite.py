"""A superior's live INVITE (GB/T 28181 §9.2 in a cascade, PROTOCOL.md §9.5), without I/O.

The superior asks us, a lower platform, for a channel's live video. This module reads its
request and writes our answer; the shell (:mod:`gb28181gw.services.cascade_media`) opens or
joins the device stream and sends the media.

- :func:`target_channel`: which channel: the Subject's sender ID (Annex K/L), else the
  Request-URI user, else the SDP ``u=``; for ``s=Playback`` / ``Download`` ``u=`` first (it
  names the recorded channel, §7.1), then the Subject, then the Request-URI.
- :func:`parse_offer`: the offer as a :class:`SuperiorOffer`: where media goes (``c=``,
  ``m=``), how (UDP, or TCP with the roles of RFC 4145 ``a=setup``, §7.5), the SSRC it wants
  (``y=``, §7.4.1), whether PS is offered, and for a recorded kind (PROTOCOL.md §9.6) its
  span (``t=``) and ``a=downloadspeed`` (1 when absent). What cannot be served raises
  :class:`~gb28181gw.errors.OfferError` carrying the answer to send.
- :func:`answer_sdp`: our 200's SDP: ``o=`` the channel ID, ``c=`` our media address,
  ``a=sendonly``, PS, the TCP role opposite to the superior's, ``y=`` the SSRC we send
  with, ``f=``; CRLF lines ending in CRLF (:meth:`SessionDescription.serialize`). A recorded
  kind echoes ``s=`` as the superior wrote it, ``t=`` and ``u=``, and passes up the device's
  ``a=filesize`` as the device wrote it (``-1`` included, M8).

The answers chosen where the standard leaves a choice (documented in the README):

============================================  ======  ==================================================
What is wrong                                 Answer  Why
============================================  ======  ==================================================
a ``y=`` that is no GB SSRC (9 or 11 digits)  served  ignored (``ignored_ssrc``): we send with our own
                                                      SSRC and say so in our ``y=``
no SDP (a delayed offer)                      488     valid SIP, but we never make the offer (GB superiors
                                                      always do); 488 says the negotiation is refused
SDP that cannot be parsed, or no ``c=``       400     the request itself is malformed
``s=Playback`` / ``Download`` with a ``t=``    400     the request is malformed (a span is its
that is not two epoch seconds, end > start            subject)
no ``m=video``, port 0, unknown transport     488     RFC 3261 §21.4.26, PROTOCOL.md §7.10
no PS (PT 96 ``PS/90000``)                    488     wvp answers 415, but 415 is about the body's
                                                      Content-Type (§21.4.13); an SDP we read and cannot
                                                      satisfy is 488 (§21.4.26)
============================================  ======  ==================================================

TCP roles (PROTOCOL.md §7.5; ``a=setup`` is the role of the SDP's author): the superior's
``passive`` makes us ``active`` (we connect to its ``c=``:``m=``); its ``active`` makes us
``passive`` (we listen, our port in our ``m=``). ``actpass`` or no ``a=setup`` is taken as
``passive``: GB/T 28181-2022 Annex D has the receiver be the TCP server between media
servers, and the superior is the receiver.

:class:`ServedState` and :data:`TRANSITIONS` are the life of one served INVITE, in the style
of :mod:`gb28181gw.sip.transaction`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum, auto

from gb28181gw.errors import LocalProtocolError, OfferError, SdpError, SipParseError, SpanError
from gb28181gw.gb.playback import Span
from gb28181gw.sdp import Media, SessionDescription, SessionKind, download_speed
from gb28181gw.sip.message import Request
from gb28181gw.sip.transaction import render_digraph
from gb28181gw.sip.uri import SipUri

__all__ = [
    "TRANSITIONS",
    "ConsumerTransport",
    "ServedInput",
    "ServedState",
    "SuperiorOffer",
    "answer_sdp",
    "next_state",
    "parse_offer",
    "subject_sender",
    "target_candidates",
    "target_channel",
]

#: The payload type GB/T 28181 gives PS (Annex C.1), assumed when the offer has no rtpmap for it (M6).
PS_PAYLOAD_TYPE = 96


class ConsumerTransport(StrEnum):
    """How we send to the superior, named as the stream service's consumer transports."""

    UDP = "udp"
    TCP = "tcp"  # we connect (our a=setup:active)
    TCP_PASSIVE = "tcp-passive"  # we listen, it connects (our a=setup:passive)


@dataclass(frozen=True, slots=True)
class SuperiorOffer:
    """What a superior's INVITE asks for.

    Attributes:
        channel_id: the channel to play (:func:`target_channel`).
        subject: the Subject's sender part (``channel:seq``), ``""`` without one; the same
            value on a new INVITE means the same stream (Annex K c).
        kind: ``s=`` as sent (``Play``, ``playback`` …); :attr:`session` is what it means.
        transport: how we send (:class:`ConsumerTransport`).
        host / port: the superior's media address (``c=`` and ``m=``); for ``tcp-passive``
            the port is nominal.
        payload_type: the payload type the superior gave PS (``None``: PS not offered).
        ssrc: its ``y=`` as RTP carries it; ``None`` when absent or zero (M2, wvp PR #817).
        sdp: the whole offer.
        candidates: every channel ID the request names, in :func:`target_channel`'s order
            (the shell plays the first it knows: a superior that fills Subject wrongly still
            names the channel in its Request-URI).
        ignored_ssrc: a ``y=`` that is no GB SSRC (not 10 digits), ignored: we send with ours.
        session: live, playback or download (:meth:`SessionKind.of` of ``s=``; live when it names none).
        span: a recorded kind's ``t=``; ``None`` for live.
        download_speed: Download's ``a=downloadspeed`` (1 when absent); ``None`` otherwise.
    """

    channel_id: str
    subject: str
    kind: str
    transport: ConsumerTransport
    host: str
    port: int
    payload_type: int | None
    ssrc: int | None
    sdp: SessionDescription = field(repr=False, compare=False)
    candidates: tuple[str, ...] = ()
    ignored_ssrc: str = ""
    session: SessionKind = SessionKind.PLAY
    span: Span | None = None
    download_speed: int | None = None

    def require_ps(self) -> int:
        """The PS payload type to answer with.

        Raises:
            OfferError: 488, PS is not among the offered formats.
        """
        if self.payload_type is None:
            video = self.sdp.video()
            names = sorted(set(video.rtpmap.values())) if video is not None else []
            raise OfferError(
                488, f"no PS/90000 offered (offered: {', '.join(names) or 'nothing named'}); we send PS only"
            )
        return self.payload_type


def subject_sender(subject: str | None) -> str:
    """The sender part (``channel:seq``) of a Subject header (Annex K/L), ``""`` without one."""
    return (subject or "").split(",", 1)[0].strip()


def target_channel(subject: str | None, request_uri: str, sdp_uri: str | None) -> str:
    """The channel a superior's INVITE is for (PROTOCOL.md §9.5 step 1).

    The Subject's first ID (``<channel>:<seq>,<receiver>:<seq>``), else the Request-URI's
    user, else the ID before ``:`` in ``u=`` (``<channel>:<type>``); ``""`` when none names one.
    """
    candidates = target_candidates(subject, request_uri, sdp_uri)
    return candidates[0] if candidates else ""


def target_candidates(
    subject: str | None, request_uri: str, sdp_uri: str | None, *, recorded: bool = False
) -> tuple[str, ...]:
    """Every channel ID the request names, in :func:`target_channel`'s order, each once;
    ``recorded`` (``s=Playback`` / ``Download``) puts ``u=`` first."""
    sender = subject_sender(subject).split(":", 1)[0].strip()
    try:
        user = SipUri.parse(request_uri).user or ""
    except SipParseError:
        user = ""
    named = (sdp_uri or "").split(":", 1)[0].strip() if sdp_uri and "/" not in sdp_uri else ""
    order = (named, sender, user.strip()) if recorded else (sender, user.strip(), named)
    return tuple(dict.fromkeys(x for x in order if x))


def parse_offer(request: Request) -> SuperiorOffer:
    """Read a superior's INVITE (see the module docstring for the answers chosen).

    Raises:
        OfferError: it cannot be served as offered; ``.status`` is the answer.
    """
    if not request.body.strip():
        raise OfferError(488, "INVITE without an SDP offer: this gateway does not make the offer")
    ignored_ssrc = ""
    try:
        sdp = SessionDescription.parse(request.body)
    except SdpError as exc:
        # a y= that is no GB SSRC (9 or 11 digits, letters) costs the superior its own SSRC, not
        # the call: we send with ours and say so in our answer's y=
        bad = _y_line.search(request.body)
        if bad is None:
            raise OfferError(400, f"SDP cannot be used: {exc}") from None
        try:
            sdp = SessionDescription.parse(_y_line.sub(b"", request.body))
        except SdpError as again:
            raise OfferError(400, f"SDP cannot be used: {again}") from None
        ignored_ssrc = bad.group(1).decode("ascii", "replace").strip()
    session = SessionKind.of(sdp.name) or SessionKind.PLAY
    candidates = target_candidates(request.headers.get("subject"), request.uri, sdp.uri, recorded=session.recorded)
    channel = candidates[0] if candidates else ""
    if not channel:
        raise OfferError(400, "no channel ID in Subject, Request-URI or u=")
    span: Span | None = None
    if session.recorded:
        try:
            span = Span.from_sdp(sdp.time)
        except SpanError as exc:
            raise OfferError(400, f"s={sdp.name}: {exc}") from None
    video = sdp.video()
    if video is None:
        raise OfferError(488, "the offer has no m=video")
    if video.port == 0:
        raise OfferError(488, "the offer refuses video (m=video port 0)")
    host = sdp.media_address(video)
    transport = _transport(video)
    if not host or _unusable(host):
        if transport is not ConsumerTransport.TCP_PASSIVE:
            raise OfferError(400, f"the offer names no usable media address (c={host or ''})")
        host = ""  # it connects to us (a=setup:active): its c= is not used; the shell expects its SIP host
    return SuperiorOffer(
        channel_id=channel,
        subject=subject_sender(request.headers.get("subject")),
        kind=sdp.name,
        transport=transport,
        host=host,
        port=video.port,
        payload_type=_ps_payload_type(video),
        ssrc=sdp.ssrc_value or None,
        sdp=sdp,
        candidates=candidates,
        ignored_ssrc=ignored_ssrc,
        session=session,
        span=span,
        download_speed=download_speed(sdp) if session is SessionKind.DOWNLOAD else None,
    )


#: A ``y=`` line of an SDP body (its value in group 1).
_y_line = re.compile(rb"^y=([^\r\n]*)\r?\n?", re.MULTILINE)


def _unusable(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: the relay resolves it or fails, and says so
    return address.is_unspecified or address.is_multicast


def _transport(video: Media) -> ConsumerTransport:
    proto = video.proto.upper()
    if proto in ("RTP/AVP", "RTP/AVPF"):
        return ConsumerTransport.UDP
    if proto not in ("TCP/RTP/AVP", "TCP/RTP/AVPF"):
        raise OfferError(488, f"media transport {video.proto} is neither RTP/AVP nor TCP/RTP/AVP")
    # the superior's role; ours is the other one (actpass or none: it listens, Annex D)
    return ConsumerTransport.TCP_PASSIVE if video.setup == "active" else ConsumerTransport.TCP


def _ps_payload_type(video: Media) -> int | None:
    rtpmap = video.rtpmap
    for fmt in video.formats:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        name = rtpmap.get(pt)
        if name == "PS" or (name is None and pt == PS_PAYLOAD_TYPE):
            return pt
    return None


def answer_sdp(
    offer: SuperiorOffer, *, channel_id: str, media_ip: str, port: int, ssrc: int, file_size: str | None = None
) -> SessionDescription:
    """Our 200's SDP for ``offer`` (PROTOCOL.md §9.5 step 5, §9.6).

    Args:
        channel_id: the channel sent (``o=``: the SDP's author is the channel, as devices write it).
        media_ip: our media address as the superior reaches it.
        port: our sending port (UDP), our listening port (``tcp-passive``), or our nominal
            port when we connect (``tcp``; RFC 4145 lets an active side put any).
        ssrc: the SSRC the media carries (``y=``, §7.4.1).
        file_size: a recorded kind's ``a=filesize`` as the device's answer wrote it (``None``: none).

    Raises:
        OfferError: 488, the offer has no PS.
    """
    pt = offer.require_ps()
    tcp = offer.transport is not ConsumerTransport.UDP
    attributes: list[tuple[str, str | None]] = [("sendonly", None), ("rtpmap", f"{pt} PS/90000")]
    if tcp:
        role = "passive" if offer.transport is ConsumerTransport.TCP_PASSIVE else "active"
        attributes += [("setup", role), ("connection", "new")]
    recorded = offer.span is not None
    if recorded and file_size is not None:
        attributes.append(("filesize", file_size))
    family = "IP6" if ":" in media_ip else "IP4"
    return SessionDescription(
        origin=f"{channel_id} 0 0 IN {family} {media_ip}",
        # a recorded kind's s= as the superior wrote it (some match their own spelling), t= and u= echoed
        name=offer.kind.strip() if recorded else "Play",
        connection=media_ip,
        time=offer.span.sdp_time if offer.span is not None else "0 0",
        uri=(offer.sdp.uri or f"{channel_id}:0") if recorded else None,
        media=[Media("video", port, "TCP/RTP/AVP" if tcp else "RTP/AVP", [str(pt)], attributes=attributes)],
        ssrc=f"{ssrc:010d}",
        format="",
    )


class ServedState(IntEnum):
    """Where a served INVITE is."""

    PROCEEDING = auto()  # 100 sent; the device stream is being opened or joined
    ACCEPTED = auto()  # 200 sent (retransmitted over UDP), waiting for the ACK (RFC 3261 §13.3.1.4)
    SENDING = auto()  # ACKed: media flows to the superior
    ENDED = auto()  # refused, cancelled, or its dialog over: the consumer is gone


class ServedInput(IntEnum):
    """What can happen to a served INVITE."""

    ANSWERED = auto()  # our 200 went out
    ACKED = auto()  # the superior's ACK came
    REFUSED = auto()  # we answered 300-699, or it cancelled before our 200
    END = auto()  # BYE either way, no ACK in 64*T1, consumer gone, superior lost, shutdown


_S, _I = ServedState, ServedInput

#: ``(state, input) -> state``; anything else is a bug in the shell.
TRANSITIONS: dict[tuple[ServedState, ServedInput], ServedState] = {
    (_S.PROCEEDING, _I.ANSWERED): _S.ACCEPTED,
    (_S.PROCEEDING, _I.REFUSED): _S.ENDED,
    (_S.PROCEEDING, _I.END): _S.ENDED,
    (_S.ACCEPTED, _I.ACKED): _S.SENDING,
    (_S.ACCEPTED, _I.END): _S.ENDED,
    (_S.SENDING, _I.ACKED): _S.SENDING,  # a retransmitted ACK, or the ACK of a re-INVITE
    (_S.SENDING, _I.END): _S.ENDED,
    (_S.ENDED, _I.END): _S.ENDED,  # every teardown path may ask again
    (_S.ENDED, _I.ACKED): _S.ENDED,  # a late ACK
}


def next_state(state: ServedState, event: ServedInput) -> ServedState:
    """The state ``event`` leads to.

    Raises:
        LocalProtocolError: the table does not list ``(state, event)``.
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(f"served INVITE in state {state.name} cannot take {event.name}") from None


def render_table() -> str:
    """The served-INVITE machine as a Graphviz ``digraph``."""
    return render_digraph("superior_invite", TRANSITIONS)
