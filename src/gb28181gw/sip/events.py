"""Events the SIP endpoint reports, one frozen record per thing that happened."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .message import Request, Response
from .peer import Peer
from .transaction import Transaction


class DropReason(StrEnum):
    """Why :class:`MessageDropped` input was not passed up; the values are metric labels."""

    PARSE = "parse"  # unparseable (answered 4xx/5xx statelessly when it could be addressed)
    STRAY_RESPONSE = "stray-response"  # a response that matches no client transaction (§17.1.3)
    STRAY_ACK = "stray-ack"  # an ACK that matches nothing


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of endpoint events."""


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """A new request arrived (retransmissions are absorbed, not reported).

    Attributes:
        request: the request; its top Via already carries ``received``/``rport``.
        peer: where it came from (answers go back there).
        transaction: its server transaction, to pass to ``respond``; ``None`` for
            an ACK to a 2xx, which has no transaction (RFC 3261 §17.2.1).
    """

    request: Request
    peer: Peer
    transaction: Transaction | None


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A response to one of our requests (retransmissions absorbed, except 2xx to INVITE).

    Attributes:
        response: the response.
        peer: where it came from.
        transaction: the client transaction it belongs to.
    """

    response: Response
    peer: Peer
    transaction: Transaction


@dataclass(frozen=True, slots=True)
class TransactionTimedOut(Event):
    """Timer B, F or H fired: the peer never answered (or never ACKed).

    Attributes:
        transaction: the transaction that gave up.
    """

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class TransactionFailed(Event):
    """The transport could not deliver for this transaction (RFC 3261 §17.1.4, §17.2.4).

    Attributes:
        transaction: the transaction that failed.
        reason: what the transport said.
    """

    transaction: Transaction
    reason: str


@dataclass(frozen=True, slots=True)
class RequestCancelled(Event):
    """A CANCEL matched a pending INVITE; the endpoint already answered 200 and 487.

    Attributes:
        transaction: the INVITE server transaction that was cancelled.
        cancel: the CANCEL request.
    """

    transaction: Transaction
    cancel: Request


@dataclass(frozen=True, slots=True)
class MessageDropped(Event):
    """Input that was not passed up: unparseable, a stray response, an ACK to nothing.

    Attributes:
        peer: where it came from.
        reason: why it was dropped (its value is the metric label).
        status: the status of the stateless answer we sent, or 0 if none could be addressed.
        detail: what exactly was wrong, for the log.
    """

    peer: Peer
    reason: DropReason
    status: int = 0
    detail: str = ""
