"""The one exception tree of gb28181gw.

Every error the package raises on purpose derives from :class:`Gb28181Error`.
Parsers return a value or raise one of these; anything else escaping a parser is
a bug (the fuzz tests in ``tests/fuzz`` check exactly that).

::

    Gb28181Error
    ├── ProtocolError                 something broke the rules of a protocol
    │   ├── RemoteProtocolError       the peer sent it (answer it, count it, go on)
    │   │   ├── SipParseError         a SIP message that cannot be parsed;
    │   │   │                         .status is the response to send (400, 413, 505, 513)
    │   │   ├── SdpError              an SDP body that cannot be used (answer 488 / BYE)
    │   │   ├── RtpError              an RTP packet or RFC 4571 frame that cannot be parsed (dropped, counted)
    │   │   ├── MansrtspError         a playback-control body (MANSRTSP over INFO) that cannot be parsed (400)
    │   │   ├── SessionError          a device's answer to our INVITE cannot be used; .status 488
    │   │   ├── OfferError            a superior's INVITE we cannot serve as offered; .status is the
    │   │   │                         answer (400 bad SDP or t=, 488 no usable offer)
    │   │   └── DialogError           an in-dialog request out of order (.status 500) or for no
    │   │                             dialog (.status 481), RFC 3261 §12.2.2
    │   └── LocalProtocolError        we were asked to do something illegal in the current
    │                                 state (a bug in our caller, not the peer's fault)
    ├── SipTimeoutError (TimeoutError)        our request got no final answer (Timer B/F); .status 408
    ├── SipTransportError (ConnectionError)   our request could not be delivered; .status 503
    ├── RouteConflict                 two owners for one route (method, role + CmdType, dialog):
    │                                 a wiring bug, raised at start-up and naming both owners
    ├── IdError (ValueError)          a malformed 20-digit GB/T 28181 ID; says which digits and why
    ├── AuthError                     digest credentials that cannot even be parsed
    ├── ConfigError (ValueError)      a bad configuration value; names the key and where it came from
    │   └── ConfigFileMissing         the configuration file named (-c, GB28181GW_CONFIG) does not exist
    ├── StoreError                    the store cannot be opened or used (locked, corrupt, newer schema, disk)
    │   └── StoreRecordError          one record cannot be stored (the store itself still works)
    ├── DeviceError                   a request to a device cannot be made or failed; .status is the
    │                                 SIP status hint (404 unknown, 480 not registered, 408 no answer …)
    ├── AdminApiError                 the CLI's call to the admin API failed: the gateway's own words
    │                                 (.message, .hint) and its HTTP .status (None: not reached)
    ├── ManscdpError (ValueError)     a MANSCDP XML body that cannot be decoded or parsed
    ├── SpanError (ValueError)        a playback/download span that cannot be asked for (end before start,
    │                                 in the future, longer than playback.max_span): 400, before any INVITE
    ├── PortsExhausted                every media port of the range is in use or cooling down (answer 503);
    │                                 defined in media/ports.py, beside the pool
    ├── RelayError                    the media relay cannot carry out a command; .code (RelayFailure)
    │                                 says which way, and survives the pipe to a relay worker
    ├── StreamError                   a live stream cannot be opened or found; .status is the SIP-style
    │                                 code to pass on (404, 408, 480, 486, 488, 502, 503, 504)
    ├── RpcError                      a call to another gateway node failed; .status says how (issue 17)
    │   ├── NodeUnreachable           the node is not live (its node:<id> key is gone) or Redis cannot
    │   │   │                         be reached: failed before waiting (.status 503)
    │   │   └── NodeNotLive           ... the former: Redis answered, the node's claim is absent
    │   ├── RpcTimeout (TimeoutError) no answer by the call's deadline (.status 504)
    │   └── RpcRefused                the node answered with an error: its .status and words
    └── RequestRefused                an operator's request that cannot be carried out; .status is the
        │                             HTTP-style answer, .hint what to do
        ├── UpstreamError             a change to what a superior sees (404 no such superior, 400 a bad ID)
        ├── DoctorError               a conformance run cannot start (404 / 409 / 400)
        ├── AccessDenied              an admin API caller without a valid token (.status 401) or whose
        │                             token's role is too small for the route (.status 403)
        ├── TokenError                a token that cannot be made, found or read (400 / 404 / 409);
        │                             never quotes a secret
        ├── AuditError                an audit listing that cannot be made (a bad filter: 400)
        └── LedgerError               a change to the camera ledger cannot be made (404 / 400)
            ├── LedgerValueError (ValueError)  a value a ledger field cannot take; .field, .reason
            └── FormError             a ledger form file that cannot be used; names the file and key at fault

Local and remote errors are told apart so that the shell can answer a peer's
mistake and keep serving everyone else, while our own mistakes fail loudly.
"""

from __future__ import annotations

import re
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit


class Gb28181Error(Exception):
    """Root of every error raised on purpose by gb28181gw."""


class ProtocolError(Gb28181Error):
    """A protocol rule was broken, by us or by the peer."""


class RemoteProtocolError(ProtocolError):
    """The peer broke a protocol rule: answer, count and carry on."""


class LocalProtocolError(ProtocolError):
    """Our caller asked for something illegal in the current state (a bug)."""


class SipParseError(RemoteProtocolError):
    """A SIP message could not be parsed (RFC 3261 §7, §20).

    Attributes:
        status: the SIP status code to answer with when an answer can be
            addressed: 400 Bad Request for syntax errors, 413 Request Entity
            Too Large for an oversized body, 505 Version Not Supported, 513
            Message Too Large when the message or its header section exceeds
            the configured limits.
        reason: a short human-readable reason, also used as the reason phrase
            and Warning text of the answer.
        partial: the headers that could be read before the error, as a
            :class:`gb28181gw.sip.message.Request` when the start line was a
            request; the endpoint uses it to answer statelessly. ``None`` when
            nothing usable was read.
    """

    def __init__(self, reason: str, status: int = 400, partial: object | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial

    def __repr__(self) -> str:
        return f"SipParseError({self.reason!r}, status={self.status})"


class IdError(Gb28181Error, ValueError):
    """A GB/T 28181 ID is malformed.

    Attributes:
        value: the offending text.
        positions: 1-based inclusive (first, last) positions of the wrong
            digits, or ``None`` when the problem is the whole value (length).
        reason: what is wrong with them.
    """

    def __init__(self, value: str, reason: str, positions: tuple[int, int] | None = None) -> None:
        where = ""
        if positions is not None:
            first, last = positions
            where = f"position {first}: " if first == last else f"positions {first}-{last}: "
        super().__init__(f"{value!r}: {where}{reason}")
        self.value = value
        self.reason = reason
        self.positions = positions


class AuthError(Gb28181Error):
    """Digest credentials or a challenge that cannot be parsed."""


class ConfigError(Gb28181Error, ValueError):
    """A configuration value is invalid.

    Attributes:
        key: the dotted key, e.g. ``sip.port``.
        reason: what is wrong.
        source: where the value came from (file path, environment variable, flag).
    """

    def __init__(self, key: str, reason: str, source: str | None = None) -> None:
        origin = f" (from {source})" if source else ""
        super().__init__(f"config error: {key}: {reason}{origin}")
        self.key = key
        self.reason = reason
        self.source = source


class ConfigFileMissing(ConfigError):
    """The configuration file named with ``-c`` or ``GB28181GW_CONFIG`` does not exist (key ``config``)."""


class StoreError(Gb28181Error):
    """The store cannot be opened or used; the message says what to do about it."""


class StoreRecordError(StoreError):
    """One record could not be stored, though the store works (a value it cannot hold).

    Writers retry the other records of a failed batch one by one, so that one bad record
    never holds back everyone else's.
    """


class ManscdpError(Gb28181Error, ValueError):
    """A MANSCDP body that cannot be decoded or parsed (answered 400)."""


class SdpError(RemoteProtocolError):
    """An SDP body that is malformed or cannot be satisfied (PROTOCOL.md §7.3)."""


class MansrtspError(RemoteProtocolError):
    """A MANSRTSP body (playback control carried by INFO, PROTOCOL.md §7.9) that cannot be parsed
    or asks for what cannot be done (answered 400 to whoever sent it)."""


class SpanError(Gb28181Error, ValueError):
    """A playback or download span that cannot be asked for; the message says why.

    Raised before any INVITE: the end not after the start, a start in the future, a span longer
    than ``playback.max_span``, or a ``t=`` line that is not two epoch seconds (answered 400).
    """


class RtpError(RemoteProtocolError):
    """An RTP packet or an RFC 4571 frame that cannot be parsed."""


class DeviceError(Gb28181Error):
    """A request to a device cannot be made, or the device did not do it; the message is for operators.

    Attributes:
        status: the SIP status that says it best to whoever asked (use it, never the message text):
            404 no such device or channel, 480 the device is not registered (RFC 3261 §21.4.18
            Temporarily Unavailable), 408 it did not answer in time, 503 it cannot be reached,
            502 it answered with an error.
        hint: what to do about it, where the status's usual hint would mislead (``None``: that one).
    """

    NOT_FOUND = 404
    NOT_REGISTERED = 480
    NO_ANSWER = 408
    UNREACHABLE = 503
    REFUSED = 502

    def __init__(self, message: str, status: int = REFUSED, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.hint = hint


class AdminApiError(Gb28181Error):
    """A call to a running gateway's admin API failed (raised by the CLI's client).

    Attributes:
        message: what went wrong, in the gateway's own words when it answered.
        hint: what to do about it, if the gateway (or the client) knows.
        status: the HTTP status of the answer; ``None`` when the gateway was not reached or timed out.
        unreachable: the connection itself was refused or failed (no gateway there), not merely slow.
        answer: the gateway's JSON answer (``{}`` if none): a 410 of an ended stream says more
            than its words (a download's ``complete``, ``position``, ``cause``).
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        status: int | None = None,
        *,
        unreachable: bool = False,
        answer: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status
        self.unreachable = unreachable
        self.answer = answer or {}


class RelayFailure(StrEnum):
    """Why a relay command failed: what callers branch on (the message is for people).

    The values cross the socket pair to relay workers, so they are stable words.
    """

    EXISTS = "exists"  # the stream is already open
    PORT_TAKEN = "port-taken"  # the media port cannot be bound (another program has it): try another
    NO_STREAM = "no-stream"  # no such stream
    CLOSED = "closed"  # the stream closed while the command waited
    DEVICE_UNREACHABLE = "device-unreachable"  # TCP active: every connection attempt to the device failed
    CONSUMER_UNREACHABLE = "consumer-unreachable"  # a TCP consumer could not be connected to
    BAD_COMMAND = "bad-command"  # a command the relay does not take (a bug in the caller)
    WORKER_GONE = "worker-gone"  # the relay worker process is not running (any more)
    INTERNAL = "internal"  # a bug in the relay; the worker logged it


class RelayError(Gb28181Error):
    """A relay command cannot be carried out (unknown stream, port taken …).

    Attributes:
        code: which failure it is, for callers to branch on.
    """

    def __init__(self, code: RelayFailure, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:
        return f"RelayError({self.code.name}, {str(self)!r})"


class StreamError(Gb28181Error):
    """A live stream cannot be opened or found (PROTOCOL.md §7.5-7.7).

    Attributes:
        status: the SIP-style code to pass on: 400 bad request, 404 unknown channel or stream,
            480 device not registered, 486 device busy, 488 answer unusable, 502 device refused
            or failed, 503 no port or SSRC free, 504 device did not answer.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RpcError(Gb28181Error):
    """A call to another gateway node (issue 17, :mod:`gb28181gw.gb.rpc`) failed.

    Attributes:
        status: how, in HTTP/SIP-style codes: 400 a call that cannot be read, 404 no such method,
            500 the callee failed, 503 not reachable, 504 no answer in time; a refusal carries the
            callee's own status (a :class:`StreamError`'s 480, 486 …).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NodeUnreachable(RpcError):
    """The node is not live (its ``node:<id>`` key is absent) or Redis cannot be reached: failed at once."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


class NodeNotLive(NodeUnreachable):
    """Redis answered: the node's ``node:<id>`` claim is absent (dead, or Redis restarted empty a moment ago)."""


class RpcTimeout(RpcError, TimeoutError):
    """No answer by the call's deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(504, message)


class RpcRefused(RpcError):
    """The node answered with an error (its status and words)."""


class SessionError(RemoteProtocolError):
    """A device's answer to our INVITE cannot be used; the message says why.

    The dialog exists by then: the caller ACKs, sends BYE and reports it (GB/T 28181 §9.2).

    Attributes:
        status: what to pass on to whoever asked for the stream: 488 Not Acceptable Here.
    """

    status = 488


class OfferError(RemoteProtocolError):
    """A superior's INVITE (PROTOCOL.md §9.5) that cannot be served as offered; the message says why.

    Attributes:
        status: the final answer to send: 400 (an SDP that cannot be parsed or names no media
            address), 488 (no offer, no video, port 0, no PS), 501 (a session kind we do not
            relay yet: Playback, Download).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DialogError(RemoteProtocolError):
    """An in-dialog request that the dialog refuses (RFC 3261 §12.2.2).

    Attributes:
        status: the response to send: 500 for a CSeq lower than the last one,
            481 when the request belongs to no dialog.
    """

    def __init__(self, reason: str, status: int = 500) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class SipTimeoutError(Gb28181Error, TimeoutError):
    """The peer never answered our request (Timer B or F, or the caller's own timeout).

    Attributes:
        status: the status to pass on upstream: 408 Request Timeout (RFC 3261 §8.1.3.1).
    """

    status = 408


class SipTransportError(Gb28181Error, ConnectionError):
    """Our request could not be delivered (connection refused or lost, RFC 3261 §8.1.3.1).

    Attributes:
        status: the status to pass on upstream: 503 Service Unavailable.
    """

    status = 503


class RouteConflict(Gb28181Error):
    """A second owner was registered for a route that has one (a wiring bug, found at start-up).

    Attributes:
        route: what both want, e.g. ``MESSAGE from DEVICE, CmdType Keepalive``.
        owner: who has it.
        newcomer: who asked for it too.
    """

    def __init__(self, route: str, owner: str, newcomer: str) -> None:
        super().__init__(f"route conflict: {route} is owned by {owner!r}; {newcomer!r} cannot own it too")
        self.route = route
        self.owner = owner
        self.newcomer = newcomer


class RequestRefused(Gb28181Error):
    """An operator's request (admin API, CLI) that cannot be carried out, with what to answer.

    Attributes:
        status: the HTTP-style answer (404 not found, 409 conflict, 400 a bad value …).
        hint: what to do about it.
    """

    NOT_FOUND = 404
    CONFLICT = 409
    BAD_VALUE = 400

    def __init__(self, message: str, status: int = BAD_VALUE, hint: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.hint = hint


class UpstreamError(RequestRefused):
    """An operator's change to what a superior sees (share, unshare, override) cannot be made.

    Attributes:
        status: 404 (no superior of that name) or 400 (an ID or value that is not one).
    """


class LedgerError(RequestRefused):
    """A change to the camera ledger cannot be made.

    Attributes:
        status: 404 (no channel, device or entry with that ID) or 400 (a value, row or file
            that is not acceptable).
    """


class LedgerValueError(LedgerError, ValueError):
    """A value written into a ledger field cannot be read (a date, a coordinate, a yes/no …).

    Attributes:
        field: the field's key.
        reason: why, in words.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class FormError(LedgerError):
    """A ledger form file cannot be used; the message names the file and the key (sheet, column) at fault."""


class DoctorError(RequestRefused):
    """A conformance run (the doctor) cannot start for a device.

    Attributes:
        status: 404 no such device or channel, 409 the device is not registered or is being run
            already, 400 a check that does not exist.
    """


class AccessDenied(RequestRefused):
    """An admin API request refused for who makes it.

    Attributes:
        status: 401 (no token, or one that is malformed, unknown or revoked) or 403 (a valid
            token whose role may not do this).
        reason: a stable word for the metric: ``missing``, ``malformed``, ``unknown``, ``revoked``,
            ``query-string`` (a token sent in the URL), ``proxied`` (no token, and the request came
            through a proxy: the loopback exemption is for local callers), ``cross-site`` (no token,
            and a browser says another site sent it), ``role``.
    """

    UNAUTHENTICATED = 401
    FORBIDDEN = 403

    def __init__(self, message: str, status: int, reason: str, hint: str | None = None) -> None:
        super().__init__(message, status, hint)
        self.reason = reason


class TokenError(RequestRefused):
    """A token that cannot be made, found or read. Its message never holds a secret.

    Attributes:
        status: 400 (a bad name, role or header), 404 (no token of that name), 409 (the name is taken).
    """


class AuditError(RequestRefused):
    """An audit listing or check that cannot be made (a filter that is not one: 400)."""


_QUERY_PASSWORD = re.compile(r"(?<=password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with any password (``user:password@``, ``?password=``) replaced by ``***``.

    Here rather than beside the stores because config (``gb28181gw config``) and the stores
    (logs, ``status``, their messages) both show a ``store.url`` and may import only this far.
    """
    parts = urlsplit(url)
    if parts.password is not None:
        user, _, hostport = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{user.partition(':')[0]}:***@{hostport}")
        url = urlunsplit(parts)
    head, mark, query = url.partition("?")
    return head + mark + _QUERY_PASSWORD.sub("***", query)
