"""Live-play INVITE sessions toward devices (GB/T 28181 §9.2, PROTOCOL.md §7.5-7.7, §7.10), without I/O.

:func:`invite` builds the INVITE (SDP offer, Subject, Contact) for a :class:`PlaySession`;
:meth:`PlaySession.answered` checks the device's 2xx — SDP present, a usable port, the
SSRC to expect (the answer's ``y=`` wins, M1), the TCP role — and returns the ACK to send
(RFC 3261 §13.2.2.4: a new transaction, same CSeq number); :meth:`PlaySession.bye` ends
it from our side and :meth:`PlaySession.matches` recognises the device's BYE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

from gb28181gw.errors import LocalProtocolError, SdpError
from gb28181gw.sdp import SessionDescription, StreamMode, play_offer
from gb28181gw.sip.headers import NameAddr
from gb28181gw.sip.message import Request, Response

from .outbound import addressed_uri, to_device


class PlayState(Enum):
    """Where a session is."""

    INVITING = auto()
    ESTABLISHED = auto()
    TERMINATED = auto()


class SessionError(Exception):
    """The device's answer cannot be used; the message says why (the caller sends BYE and reports it)."""


@dataclass(slots=True)
class PlaySession:
    """One INVITE dialog for live video of a channel.

    Attributes:
        channel_id / device_id: what is played, and the device that serves it.
        our_id / domain: our platform ID and SIP domain.
        media_ip / port / mode: where we receive, and how (UDP, TCP passive or active).
        ssrc: the SSRC offered; after the answer, the one to expect.
        call_id / local_tag / remote_tag / cseq: the dialog.
        remote_target: the device's Contact URI (Request-URI of ACK and BYE).
        media_host / media_port: the device's media address from its answer (TCP active connects there).
    """

    channel_id: str
    device_id: str
    our_id: str
    domain: str
    media_ip: str
    port: int
    ssrc: str
    mode: StreamMode
    call_id: str
    local_tag: str
    cseq: int = 1
    remote_tag: str = ""
    remote_target: str = ""
    media_host: str = ""
    media_port: int = 0
    state: PlayState = PlayState.INVITING
    answer: SessionDescription | None = field(default=None, repr=False)

    @property
    def offered_ssrc(self) -> int:
        """The SSRC we offered, as RTP carries it."""
        return int(self.ssrc)

    def use_port(self, port: int) -> None:
        """Offer ``port`` instead of the one first chosen (another program had bound it).

        Raises:
            LocalProtocolError: the device answered already: the offer is settled.
        """
        if self.state is not PlayState.INVITING:
            raise LocalProtocolError(f"cannot change the media port of a session in state {self.state.name}")
        self.port = port

    def answered(self, response: Response) -> Request:
        """Take the device's 2xx; return the ACK to send.

        Raises:
            SessionError: no SDP, no video, port 0 (refused), a proprietary payload, or a bad SDP.
                The dialog is known by then: send :meth:`ack`, then :meth:`bye`.
        """
        if not 200 <= response.status < 300:
            raise ValueError("answered() takes a 2xx")
        self.remote_tag = response.to.tag or ""
        contact = response.headers.get("contact")
        self.remote_target = NameAddr.parse(contact).uri if contact else addressed_uri(self.channel_id, self.device_id)
        ack = self.ack()
        if not response.body.strip():
            raise SessionError("the device answered 200 with no SDP")
        try:
            sdp = SessionDescription.parse(response.body)
        except SdpError as exc:
            raise SessionError(f"the device's SDP is unusable: {exc}") from None
        video = sdp.video()
        if video is None:
            raise SessionError("the device's SDP has no video")
        if video.port == 0:
            raise SessionError("the device refused the video stream (port 0)")
        names = set(video.rtpmap.values())
        if names and not names & {"PS", "H264", "H265", "MPEG4"}:
            raise SessionError(f"the device offers {', '.join(sorted(names))}, not a GB/T 28181 stream (M5)")
        self.answer = sdp
        self.media_host = sdp.media_address(video) or ""
        self.media_port = video.port
        if sdp.ssrc:
            self.ssrc = sdp.ssrc  # M1: the answer's y= wins
        if self.mode is StreamMode.TCP_ACTIVE and not video.is_tcp:
            raise SessionError("asked for TCP active, the device answered UDP")
        self.state = PlayState.ESTABLISHED
        return ack

    def ack(self) -> Request:
        """The ACK for the 2xx (RFC 3261 §13.2.2.4: a new transaction, the INVITE's CSeq number)."""
        return self._in_dialog("ACK", self.cseq)

    def bye(self) -> Request:
        """The BYE that ends the session from our side."""
        self.cseq += 1
        self.state = PlayState.TERMINATED
        return self._in_dialog("BYE", self.cseq)

    def matches(self, request: Request) -> bool:
        """Whether an in-dialog request (the device's BYE) belongs to this session."""
        try:
            return (
                request.call_id == self.call_id
                and request.from_.tag == self.remote_tag
                and request.to.tag == self.local_tag
            )
        except Exception:  # noqa: BLE001 - malformed headers simply do not match
            return False

    def _in_dialog(self, method: str, cseq: int) -> Request:
        return to_device(
            method,
            self.remote_target or addressed_uri(self.channel_id, self.device_id),
            our_id=self.our_id,
            domain=self.domain,
            device_id=self.device_id,
            target_id=self.channel_id,
            call_id=self.call_id,
            cseq=cseq,
            from_tag=self.local_tag,
            to_tag=self.remote_tag or None,
        )


def invite(session: PlaySession, *, device_host: str, device_port: int, contact: str) -> Request:
    """The INVITE for ``session`` (PROTOCOL.md §7.7), to the device at its registered address.

    Subject: ``<channel>:<ssrc>,<our id>:0`` — the sender's stream sequence is the SSRC, as
    wvp and Monibuca do, so a device seeing the same Subject twice knows it is one stream.
    """
    offer = play_offer(
        channel_id=session.channel_id,
        our_id=session.our_id,
        media_ip=session.media_ip,
        port=session.port,
        ssrc=session.ssrc,
        mode=session.mode,
    )
    return to_device(
        "INVITE",
        f"sip:{session.channel_id}@{device_host}:{device_port}",
        our_id=session.our_id,
        domain=session.domain,
        device_id=session.device_id,
        target_id=session.channel_id,
        call_id=session.call_id,
        cseq=session.cseq,
        from_tag=session.local_tag,
        contact=contact,
        extra=[("Subject", f"{session.channel_id}:{session.ssrc},{session.our_id}:0")],
        content_type="application/sdp",
        body=offer.serialize().encode(),
    )
