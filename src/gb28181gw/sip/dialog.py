"""SIP dialogs (RFC 3261 §12), without I/O: the state two parties share between requests.

A :class:`Dialog` holds what RFC 3261 §12 lists — Call-ID, local and remote tag, local
and remote CSeq, local and remote URI, remote target, route set, secure flag — and is
the only keeper of them: the INVITE sessions and subscriptions built on it keep none of
their own.

- UAC side (we sent the INVITE or SUBSCRIBE): :meth:`Dialog.uac` before sending, then
  :meth:`Dialog.request` builds the initial request, and :meth:`Dialog.receive_response`
  takes the answers (a 1xx with a To tag makes it early, a 2xx confirms it, §12.1.2);
  or :meth:`Dialog.uac_from` from a request and its answer after the fact.
- UAS side (they sent it): :meth:`Dialog.uas` from their request and our response (§12.1.1).
- Either side then builds in-dialog requests (BYE, INFO, NOTIFY, re-SUBSCRIBE) with
  :meth:`Dialog.request`, each with the next local CSeq (§12.2.1.1), and the ACK for a 2xx
  with :meth:`Dialog.ack` (the INVITE's CSeq number, §13.2.2.4), and checks the other
  side's requests with :meth:`Dialog.receive_request` (§12.2.2: a lower CSeq is answered 500).

:func:`dialog_id_of` gives the :class:`DialogId` an incoming request belongs to, so that
the shell can find the dialog's owner with one dictionary lookup; a request for no known
dialog is answered 481 there (§12.2.2).

States change only through :data:`TRANSITIONS`, in the style of
:mod:`gb28181gw.sip.transaction`: an input the table does not list for the current state
raises :class:`~gb28181gw.errors.LocalProtocolError` naming the state.
"""

from __future__ import annotations

from enum import IntEnum, auto
from typing import NamedTuple

from gb28181gw.errors import DialogError, LocalProtocolError, SipParseError

from .headers import NameAddr
from .message import Request, Response, make_request
from .peer import Peer
from .transaction import render_digraph


class DialogState(IntEnum):
    """Dialog states (RFC 3261 §12; PENDING is pjsip's NULL state).

    PENDING: UAC only: the dialog-creating request is out, no answer with a To tag yet.
    EARLY: a provisional response with a To tag arrived (§12.1.2) or was sent (§12.1.1).
    CONFIRMED: a 2xx arrived or was sent.
    TERMINATED: a BYE, a non-2xx final answer to the creating request, or the end of the usage.
    """

    PENDING = auto()
    EARLY = auto()
    CONFIRMED = auto()
    TERMINATED = auto()


class DialogInput(IntEnum):
    """What can happen to a dialog."""

    R_1XX = auto()  # a provisional answer with a To tag to the creating request (UAC)
    R_2XX = auto()  # a 2xx to the creating request (UAC), or a 2xx to a refresh in the dialog
    R_FINAL = auto()  # a 300-699 to the creating request (UAC, §12.3)
    R_NOTIFY = auto()  # a NOTIFY that overtook the 2xx to our SUBSCRIBE (RFC 6665 §4.1.2.4)
    END = auto()  # BYE sent or received, subscription ended, the owner gave up (§15)


S = DialogState
I = DialogInput  # noqa: E741

#: (state, input) → new state. Anything else is a bug in the dialog's user.
TRANSITIONS: dict[tuple[DialogState, DialogInput], DialogState] = {
    (S.PENDING, I.R_1XX): S.EARLY,
    (S.PENDING, I.R_2XX): S.CONFIRMED,
    (S.PENDING, I.R_FINAL): S.TERMINATED,
    (S.PENDING, I.R_NOTIFY): S.CONFIRMED,
    (S.PENDING, I.END): S.TERMINATED,
    (S.EARLY, I.R_1XX): S.EARLY,
    (S.EARLY, I.R_2XX): S.CONFIRMED,
    (S.EARLY, I.R_FINAL): S.TERMINATED,
    (S.EARLY, I.R_NOTIFY): S.CONFIRMED,
    (S.EARLY, I.END): S.TERMINATED,
    # a retransmitted 2xx, or the 2xx to a re-SUBSCRIBE inside the dialog
    (S.CONFIRMED, I.R_2XX): S.CONFIRMED,
    (S.CONFIRMED, I.END): S.TERMINATED,
    (S.TERMINATED, I.END): S.TERMINATED,
}


class DialogId(NamedTuple):
    """What identifies a dialog at our side (RFC 3261 §12): Call-ID, our tag, their tag."""

    call_id: str
    local_tag: str
    remote_tag: str


def dialog_id_of(request: Request) -> DialogId | None:
    """The dialog an incoming request claims to belong to, or ``None`` when it is outside any.

    For a request we receive, our tag is in To and theirs in From (§12.2.2). A request
    without a To tag is not in a dialog (it may create one).

    Raises:
        SipParseError: From or To cannot be parsed.
    """
    to_tag = request.to.tag
    if not to_tag:
        return None
    return DialogId(request.call_id, to_tag, request.from_.tag or "")


def _uri(value: str | None) -> str:
    return NameAddr.parse(value).uri if value else ""


class Dialog:
    """One dialog, UAC or UAS side (see the module docstring).

    Attributes:
        call_id / local_tag / remote_tag: the dialog ID (``remote_tag`` empty while PENDING).
        local_cseq: the CSeq number of the last request we sent in it (§12.2.1.1).
        remote_cseq: the CSeq number of the last request they sent in it; ``None`` until
            one arrives (the UAC's remote sequence number starts empty, §12.1.2).
        local_uri / remote_uri: the URIs of our From and our To in requests we send.
        remote_target: their Contact URI: the Request-URI of our in-dialog requests.
        route_set: Record-Route values, in the order our requests carry them as Route
            (reversed for the UAC, §12.1.2; as received for the UAS, §12.1.1).
        secure: created over TLS with a ``sips`` Request-URI.
        peer: where requests in this dialog are sent.
        state: a :class:`DialogState`, changed only through :data:`TRANSITIONS`.
        is_uac: whether we sent the request that created it.
        invite_cseq: CSeq number of the creating INVITE (its ACK reuses it), 0 otherwise.
    """

    __slots__ = (
        "call_id",
        "local_tag",
        "remote_tag",
        "local_cseq",
        "remote_cseq",
        "local_uri",
        "remote_uri",
        "remote_target",
        "route_set",
        "secure",
        "peer",
        "state",
        "is_uac",
        "invite_cseq",
    )

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: str,
        remote_uri: str,
        remote_target: str,
        peer: Peer,
        state: DialogState,
        is_uac: bool,
        local_cseq: int = 0,
        remote_cseq: int | None = None,
        route_set: tuple[str, ...] = (),
        secure: bool = False,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.secure = secure
        self.peer = peer
        self.state = state
        self.is_uac = is_uac
        self.invite_cseq = 0

    # --- creation ----------------------------------------------------------------------

    @classmethod
    def uac(
        cls,
        *,
        call_id: str,
        local_tag: str,
        local_uri: str,
        remote_uri: str,
        target: str,
        peer: Peer,
        first_cseq: int = 1,
        route_set: tuple[str, ...] = (),
    ) -> Dialog:
        """The dialog of a request we are about to send (PENDING until answered with a tag).

        Args:
            call_id / local_tag: fresh values from the endpoint (§8.1.1.4, §8.1.1.3).
            local_uri / remote_uri: our From and our To URIs.
            target: the Request-URI of the creating request; the remote target until the
                answer's Contact replaces it.
            peer: where the requests go.
            first_cseq: the CSeq number of the creating request.
            route_set: the Route values of the creating request (a registered Path, RFC 3327
                §5.3), until the answer's Record-Route replaces them (§12.1.2).
        """
        return cls(
            call_id=call_id,
            local_tag=local_tag,
            remote_tag="",
            local_uri=local_uri,
            remote_uri=remote_uri,
            remote_target=target,
            peer=peer,
            state=S.PENDING,
            is_uac=True,
            local_cseq=first_cseq - 1,  # request() counts it up to first_cseq
            route_set=route_set,
            secure=target.lower().startswith("sips:"),
        )

    @classmethod
    def uac_from(cls, request: Request, response: Response, peer: Peer) -> Dialog:
        """The dialog that ``response`` (a 1xx with a To tag, or a 2xx) to our ``request`` creates (§12.1.2).

        For a request that was built without :meth:`uac` (the usual way is :meth:`uac` before
        sending, which keeps the dialog from the start).

        Raises:
            LocalProtocolError: ``response`` cannot create a dialog (no To tag, a final non-2xx).
            SipParseError: the headers cannot be parsed.
        """
        status = response.status
        if not response.to.tag or status < 101 or status >= 300:
            raise LocalProtocolError(f"a {status} without a To tag cannot create a dialog")
        from_ = request.from_
        dialog = cls.uac(
            call_id=request.call_id,
            local_tag=from_.tag or "",
            local_uri=from_.uri,
            remote_uri=request.to.uri,
            target=request.uri,
            peer=peer,
            first_cseq=request.cseq.number,
        )
        dialog.local_cseq += 1  # the request was sent
        if request.method == "INVITE":
            dialog.invite_cseq = dialog.local_cseq
        dialog.receive_response(response)
        return dialog

    @classmethod
    def uas(cls, request: Request, response: Response, peer: Peer) -> Dialog:
        """The dialog our ``response`` (1xx with a tag, or 2xx) to their ``request`` creates (§12.1.1).

        Raises:
            LocalProtocolError: ``response`` cannot create a dialog (no To tag, a final non-2xx).
            SipParseError: their request's headers cannot be parsed.
        """
        status = response.status
        local_tag = response.to.tag
        if not local_tag or status < 101 or status >= 300:
            raise LocalProtocolError(f"a {status} without a To tag cannot create a dialog")
        h = request.headers
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local_uri=request.to.uri,
            remote_uri=request.from_.uri,
            remote_target=_uri(h.get("contact")) or request.from_.uri,
            peer=peer,
            state=S.CONFIRMED if status >= 200 else S.EARLY,
            is_uac=False,
            remote_cseq=request.cseq.number,
            route_set=tuple(h.get_all("record-route")),
            secure=request.uri.lower().startswith("sips:"),
        )

    # --- state -------------------------------------------------------------------------

    @property
    def id(self) -> DialogId:
        """The :class:`DialogId` at our side."""
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    def _fire(self, inp: DialogInput) -> None:
        new = TRANSITIONS.get((self.state, inp))
        if new is None:
            raise LocalProtocolError(f"dialog {self.call_id} in state {self.state.name} cannot take {inp.name}")
        self.state = new

    def receive_response(self, response: Response) -> None:
        """Take an answer to the request that created the dialog, or to a request in it (UAC, §12.1.2).

        A 1xx with a To tag makes a PENDING dialog EARLY; a 2xx confirms it, fixing the remote
        tag, the remote target (its Contact) and the route set (its Record-Route, reversed);
        a 300-699 to the creating request ends it (§12.3). Later answers inside a confirmed
        dialog only refresh the remote target (§12.2.1.2).

        Raises:
            LocalProtocolError: the dialog is not a UAC dialog in a state that takes this answer.
            SipParseError: To or Contact cannot be parsed.
        """
        status = response.status
        if status < 101:
            return
        establishing = self.state is S.PENDING or self.state is S.EARLY
        if not establishing:
            if 200 <= status < 300:
                contact = response.headers.get("contact")
                if contact:
                    self.remote_target = _uri(contact)  # a target refresh (§12.2.1.2)
                self._fire(I.R_2XX)
            return
        if status >= 300:
            self._fire(I.R_FINAL)
            return
        tag = response.to.tag
        if not tag:
            if status >= 200:
                raise SipParseError("a 2xx that creates a dialog has no To tag")
            return  # a provisional without a tag creates no dialog (§12.1)
        if self.remote_tag and tag != self.remote_tag and self.state is S.EARLY and status < 200:
            return  # another fork's early dialog: not modelled, the first one is kept
        self.remote_tag = tag
        contact = response.headers.get("contact")
        if contact:
            self.remote_target = _uri(contact)
        self.route_set = tuple(reversed(response.headers.get_all("record-route")))
        self._fire(I.R_2XX if status >= 200 else I.R_1XX)

    def receive_notify(self, request: Request) -> None:
        """Take a NOTIFY that arrived before the 2xx to our SUBSCRIBE: it creates the dialog (RFC 6665 §4.1.2.4).

        The remote tag is the NOTIFY's From tag, the remote target its Contact, the route
        set its Record-Route (as a UAS takes them, §12.1.1). Check its CSeq with
        :meth:`receive_request` afterwards, like any request in the dialog.

        Raises:
            LocalProtocolError: the dialog is not waiting for its first answer.
            SipParseError: From or Contact cannot be parsed.
        """
        if not self.is_uac:
            raise LocalProtocolError(f"dialog {self.call_id} is a UAS dialog: a NOTIFY does not create it")
        tag = request.from_.tag or ""
        contact = request.headers.get("contact")
        self._fire(I.R_NOTIFY)
        self.remote_tag = tag
        if contact:
            self.remote_target = _uri(contact)
        self.route_set = tuple(request.headers.get_all("record-route"))

    def terminate(self) -> None:
        """End the dialog (BYE sent or received, subscription over)."""
        self._fire(I.END)

    @property
    def terminated(self) -> bool:
        """Whether the dialog has ended."""
        return self.state is S.TERMINATED

    # --- requests ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        *,
        contact: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A request in the dialog (or the creating one while PENDING) with the next local CSeq.

        RFC 3261 §12.2.1.1: To carries the remote tag (once known), From ours; Request-URI
        and Route follow the route set (loose routing, or strict when its first entry has
        no ``lr``). BYE ends the dialog at once (§15.1.1). ACK is built by :meth:`ack`.

        Raises:
            LocalProtocolError: the dialog is terminated, or ``method`` is ACK.
        """
        if method == "ACK":
            raise LocalProtocolError("the ACK of a 2xx reuses the INVITE's CSeq: use ack()")
        if self.state is S.TERMINATED:
            raise LocalProtocolError(f"dialog {self.call_id} is TERMINATED: no {method} in it")
        self.local_cseq += 1
        if method == "INVITE" and self.state is S.PENDING:
            self.invite_cseq = self.local_cseq
        request = self._build(method, self.local_cseq, contact, extra, body, content_type)
        if method == "BYE":
            self._fire(I.END)
        return request

    def ack(self) -> Request:
        """The ACK for the 2xx to our INVITE: a new transaction with the INVITE's CSeq number (§13.2.2.4).

        Raises:
            LocalProtocolError: no INVITE created this dialog, or its answer has not come.
        """
        if not self.invite_cseq or not self.remote_tag:
            raise LocalProtocolError(f"dialog {self.call_id} in state {self.state.name} has no 2xx to ACK")
        return self._build("ACK", self.invite_cseq, None, None, b"", None)

    def _build(
        self,
        method: str,
        cseq: int,
        contact: str | None,
        extra: list[tuple[str, str]] | None,
        body: bytes,
        content_type: str | None,
    ) -> Request:
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and ";lr" not in routes[0].lower():
            # a strict router (RFC 2543): it gets the Request-URI, the target goes last (§12.2.1.1)
            uri = _uri(routes[0])
            routes = [*routes[1:], f"<{self.remote_target}>"]
        headers = [("Route", r) for r in routes]
        return make_request(
            method,
            uri,
            from_addr=self.local_uri,
            to_addr=self.remote_uri,
            call_id=self.call_id,
            cseq=cseq,
            from_tag=self.local_tag,
            to_tag=self.remote_tag or None,
            contact=contact,
            extra=headers + (extra or []),
            body=body,
            content_type=content_type,
        )

    def receive_request(self, request: Request) -> None:
        """Check a request the other side sent in this dialog and take its CSeq (§12.2.2).

        ACK and CANCEL carry the CSeq number of what they acknowledge or cancel and are not
        checked. A BYE ends the dialog. A Contact in a target-refresh request (re-INVITE,
        UPDATE, SUBSCRIBE, NOTIFY) updates the remote target.

        Raises:
            DialogError: status 500 when its CSeq is lower than the last one (§12.2.2),
                481 when the dialog is terminated.
            SipParseError: its CSeq cannot be parsed.
        """
        method = request.method
        if method in ("ACK", "CANCEL"):
            return
        if self.state is S.TERMINATED:
            raise DialogError(f"dialog {self.call_id} has ended", 481)
        number = request.cseq.number
        # only a lower number is out of order (§12.2.2); an equal one is let through, since some
        # devices number every NOTIFY alike and their retransmissions never get here anyway
        if self.remote_cseq is not None and number < self.remote_cseq:
            raise DialogError(f"CSeq {number} is below {self.remote_cseq}", 500)
        self.remote_cseq = number
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"):
            contact = request.headers.get("contact")
            if contact:
                self.remote_target = _uri(contact)
        if method == "BYE":
            self._fire(I.END)

    def __repr__(self) -> str:
        side = "UAC" if self.is_uac else "UAS"
        return f"<Dialog {side} {self.state.name} {self.call_id} {self.local_tag}/{self.remote_tag}>"


def render_table() -> str:
    """The dialog machine as a Graphviz ``digraph`` (for docs and reviews)."""
    return render_digraph("dialog", TRANSITIONS)
