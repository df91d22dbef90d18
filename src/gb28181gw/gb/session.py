"""Live-play INVITE sessions toward devices (GB/T 28181 §9.2, PROTOCOL.md §7.5-7.7, §7.10), without I/O.

:meth:`PlaySession.start` makes a session and its UAC :class:`~gb28181gw.sip.dialog.Dialog`
(the one keeper of Call-ID, tags and CSeq); :func:`invite` builds the INVITE (SDP offer,
Subject, Contact); :meth:`PlaySession.answered` checks the device's 2xx — SDP present, a
usable port, the SSRC to expect (the answer's ``y=`` wins, M1), the TCP role — and returns
the ACK to send (RFC 3261 §13.2.2.4: a new transaction, same CSeq number);
:meth:`PlaySession.bye` ends it from our side and :meth:`PlaySession.matches` recognises
requests of its dialog (the shell's router finds them by :attr:`PlaySession.dialog_id`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

from gb28181gw.errors import LocalProtocolError, SdpError, SessionError, SipParseError
from gb28181gw.sdp import SessionDescription, SessionKind, StreamMode, file_size, play_offer
from gb28181gw.sip.dialog import Dialog, DialogId, dialog_id_of
from gb28181gw.sip.message import Request, Response

from .model import Device
from .outbound import device_dialog

__all__ = ["PlaySession", "PlayState", "SessionError", "invite"]  # SessionError: re-exported from errors.py


class PlayState(Enum):
    """Where a session is."""

    INVITING = auto()
    ESTABLISHED = auto()
    TERMINATED = auto()


@dataclass(slots=True)
class PlaySession:
    """One INVITE dialog for live video of a channel.

    Attributes:
        channel_id / device_id: what is played, and the device that serves it.
        our_id / domain: our platform ID and SIP domain.
        media_ip / port / mode: where we receive, and how (UDP, TCP passive or active).
        ssrc: the SSRC offered; after the answer, the one to expect.
        dialog: the INVITE dialog: Call-ID, tags, CSeq, the device's Contact (Request-URI
            of ACK and BYE) and where requests go.
        media_host / media_port: the device's media address from its answer (TCP active connects there).
        kind: live, Playback or Download (PROTOCOL.md §7.8): a recorded kind offers ``u=``, ``t=``
            ``span`` and a history SSRC (the caller allocates it), Download ``a=downloadspeed``.
        span: (start, end) epoch seconds of a recorded kind; (0, 0) for live.
        download_speed: Download's ``a=downloadspeed``.
        file_size: Download: the answer's ``a=filesize`` in bytes, ``None`` when unknown (M8).
        format: the offer's ``f=`` value (``media.offer_format``; empty: ``f=`` alone).
    """

    channel_id: str
    device_id: str
    our_id: str
    domain: str
    media_ip: str
    port: int
    ssrc: str
    mode: StreamMode
    dialog: Dialog
    media_host: str = ""
    media_port: int = 0
    state: PlayState = PlayState.INVITING
    answer: SessionDescription | None = field(default=None, repr=False)
    kind: SessionKind = SessionKind.PLAY
    span: tuple[int, int] = (0, 0)
    download_speed: int | None = None
    file_size: int | None = None
    format: str = ""

    @classmethod
    def start(
        cls,
        channel_id: str,
        device: Device,
        *,
        our_id: str,
        domain: str,
        media_ip: str,
        port: int,
        ssrc: str,
        mode: StreamMode,
        call_id: str,
        local_tag: str,
        kind: SessionKind = SessionKind.PLAY,
        span: tuple[int, int] = (0, 0),
        download_speed: int | None = None,
        format: str = "",
    ) -> PlaySession:
        """A session for ``channel_id`` of ``device``, with a fresh dialog (``call_id``, ``local_tag``)."""
        dialog = device_dialog(device, channel_id, our_id=our_id, domain=domain, call_id=call_id, local_tag=local_tag)
        return cls(
            channel_id,
            device.device_id,
            our_id,
            domain,
            media_ip,
            port,
            ssrc,
            mode,
            dialog,
            kind=kind,
            span=span,
            download_speed=download_speed,
            format=format,
        )

    @property
    def dialog_id(self) -> DialogId:
        """The dialog's ID (its remote tag is empty until the device answers)."""
        return self.dialog.id

    @property
    def call_id(self) -> str:
        """The dialog's Call-ID."""
        return self.dialog.call_id

    @property
    def remote_tag(self) -> str:
        """The device's tag; empty until it answers."""
        return self.dialog.remote_tag

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
        try:
            self.dialog.receive_response(response)
        except SipParseError as exc:
            raise SessionError(f"the device's 200 cannot start a dialog: {exc.reason}") from None
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
        if self.kind is SessionKind.DOWNLOAD:
            self.file_size = file_size(sdp)
        if self.mode is StreamMode.TCP_ACTIVE and not video.is_tcp:
            raise SessionError("asked for TCP active, the device answered UDP")
        self.state = PlayState.ESTABLISHED
        return ack

    def ack(self) -> Request:
        """The ACK for the 2xx (RFC 3261 §13.2.2.4: a new transaction, the INVITE's CSeq number)."""
        return self.dialog.ack()

    def bye(self) -> Request:
        """The BYE that ends the session from our side (the next CSeq of the dialog, §15.1.1)."""
        self.state = PlayState.TERMINATED
        return self.dialog.request("BYE")

    def info(self, body: bytes, content_type: str = "Application/MANSRTSP") -> Request:
        """An INFO in the dialog carrying ``body`` (playback control, PROTOCOL.md §7.9).

        Raises:
            LocalProtocolError: the session is not established (or has ended).
        """
        if self.state is not PlayState.ESTABLISHED:
            raise LocalProtocolError(f"cannot send INFO in a session in state {self.state.name}")
        return self.dialog.request("INFO", content_type=content_type, body=body)

    def receive_request(self, request: Request) -> None:
        """A request of the device in the dialog (its BYE): check it (§12.2.2); a BYE ends the session.

        Raises:
            DialogError: its CSeq is out of order (500) or the dialog has ended (481).
        """
        self.dialog.receive_request(request)
        if request.method == "BYE":
            self.state = PlayState.TERMINATED

    def matches(self, request: Request) -> bool:
        """Whether an in-dialog request (the device's BYE, INFO or MediaStatus) belongs to this session."""
        try:
            return dialog_id_of(request) == self.dialog.id
        except SipParseError:  # malformed headers simply do not match
            return False


def invite(session: PlaySession, *, contact: str) -> Request:
    """The INVITE for ``session`` (PROTOCOL.md §7.7, §7.8), to the device at its registered address.

    Subject: ``<channel>:<ssrc>,<our id>:0`` — the sender's stream sequence is the SSRC, as
    wvp and Monibuca do, so a device seeing the same Subject twice knows it is one stream (a
    history SSRC starts with 1, so a playback's Subject does too, §7.8.1).
    """
    offer = play_offer(
        channel_id=session.channel_id,
        our_id=session.our_id,
        media_ip=session.media_ip,
        port=session.port,
        ssrc=session.ssrc,
        mode=session.mode,
        kind=session.kind,
        span=session.span,
        download_speed=session.download_speed,
        format=session.format,
    )
    return session.dialog.request(
        "INVITE",
        contact=contact,
        extra=[("Subject", f"{session.channel_id}:{session.ssrc},{session.our_id}:0")],
        content_type="application/sdp",
        body=offer.serialize().encode(),
    )
