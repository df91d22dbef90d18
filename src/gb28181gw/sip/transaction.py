"""The four RFC 3261 §17 transaction state machines, as transition tables.

Each machine is one ``dict[(State, Input)] -> (State, actions)``; the
:class:`~gb28181gw.sip.endpoint.SipEndpoint` looks the pair up and runs the
actions. RFC 6026 replaces the INVITE machines' 2xx handling with an ACCEPTED
state, so that 2xx retransmissions reach the TU instead of a dead transaction.

States, inputs and actions are ``IntEnum`` so that the table lookups hash in C.

A timer input that its current state does not list is a timer armed in an
earlier state (H after the ACK came, F after the final response came): it is
stale and ignored. A TU input that the state does not list is a bug in the TU
and raises :class:`LocalProtocolError` naming the state.

:func:`render_tables` prints every table as a Graphviz graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum, IntEnum, auto
from typing import Any, TypeVar

from gb28181gw.deadlines import Deadline
from gb28181gw.errors import LocalProtocolError

from .message import Request, Response
from .peer import Peer

_S = TypeVar("_S", bound=Enum)
_I = TypeVar("_I", bound=Enum)
_T = TypeVar("_T")


class State(IntEnum):
    """Transaction states, named as in RFC 3261 §17 and RFC 6026."""

    CALLING = auto()
    TRYING = auto()
    PROCEEDING = auto()
    COMPLETED = auto()
    CONFIRMED = auto()
    ACCEPTED = auto()
    TERMINATED = auto()


class Input(IntEnum):
    """What can happen to a transaction."""

    REQUEST = auto()  # a retransmission of the request that created a server transaction
    ACK = auto()  # ACK for a non-2xx final response (server INVITE)
    TU_1XX = auto()  # the TU sends a provisional response
    TU_2XX = auto()  # the TU sends a 2xx
    TU_FINAL = auto()  # the TU sends a 300-699 (or, for non-INVITE, any final) response
    TU_REJECT = auto()  # the TU rejects statelessly: a 300-699 sent once, no state kept (§8.2.7)
    R_1XX = auto()  # a provisional response arrived (client)
    R_2XX = auto()  # a 2xx arrived (client)
    R_FINAL = auto()  # a 300-699 arrived (client INVITE), or any final (client non-INVITE)
    TIMER_A = auto()
    TIMER_B = auto()
    TIMER_D = auto()
    TIMER_E = auto()
    TIMER_F = auto()
    TIMER_G = auto()
    TIMER_H = auto()
    TIMER_I = auto()
    TIMER_J = auto()
    TIMER_K = auto()
    TIMER_L = auto()
    TIMER_M = auto()
    TRANSPORT_ERROR = auto()


class Action(IntEnum):
    """What the endpoint does on a transition."""

    SEND_RESPONSE = auto()  # send the TU's response and remember it
    RESEND_RESPONSE = auto()  # send the remembered response again
    RETRANSMIT = auto()  # send the request again and double the interval (A, E)
    PASS_RESPONSE = auto()  # hand the response to the TU
    SEND_ACK = auto()  # ACK a non-2xx final response (§17.1.1.3)
    START_A = auto()
    START_B = auto()
    START_D = auto()
    START_E = auto()
    START_F = auto()
    START_G = auto()
    START_H = auto()
    START_I = auto()
    START_J = auto()
    START_K = auto()
    START_L = auto()
    START_M = auto()
    RESTART_G = auto()
    REPORT_TIMEOUT = auto()
    REPORT_TRANSPORT_ERROR = auto()
    DELETE = auto()


class Kind(IntEnum):
    """Which of the four machines a transaction runs."""

    INVITE_CLIENT = auto()
    NON_INVITE_CLIENT = auto()
    INVITE_SERVER = auto()
    NON_INVITE_SERVER = auto()


S = State
I = Input  # noqa: E741
A = Action

Table = dict[tuple[State, Input], tuple[State, tuple[Action, ...]]]

_FAIL = (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR, A.DELETE))

#: RFC 3261 §17.1.1 with RFC 6026 §8.4 (Accepted state).
INVITE_CLIENT: Table = {
    (S.CALLING, I.TIMER_A): (S.CALLING, (A.RETRANSMIT,)),
    (S.CALLING, I.TIMER_B): (S.TERMINATED, (A.REPORT_TIMEOUT, A.DELETE)),
    (S.CALLING, I.R_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.CALLING, I.R_2XX): (S.ACCEPTED, (A.PASS_RESPONSE, A.START_M)),
    (S.CALLING, I.R_FINAL): (S.COMPLETED, (A.PASS_RESPONSE, A.SEND_ACK, A.START_D)),
    (S.CALLING, I.TRANSPORT_ERROR): _FAIL,
    (S.PROCEEDING, I.R_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.PROCEEDING, I.R_2XX): (S.ACCEPTED, (A.PASS_RESPONSE, A.START_M)),
    (S.PROCEEDING, I.R_FINAL): (S.COMPLETED, (A.PASS_RESPONSE, A.SEND_ACK, A.START_D)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): _FAIL,
    (S.ACCEPTED, I.R_1XX): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.R_2XX): (S.ACCEPTED, (A.PASS_RESPONSE,)),
    (S.ACCEPTED, I.R_FINAL): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, (A.DELETE,)),
    (S.COMPLETED, I.R_1XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.R_2XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.R_FINAL): (S.COMPLETED, (A.SEND_ACK,)),
    (S.COMPLETED, I.TIMER_D): (S.TERMINATED, (A.DELETE,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): _FAIL,
}

#: RFC 3261 §17.1.2.
NON_INVITE_CLIENT: Table = {
    (S.TRYING, I.TIMER_E): (S.TRYING, (A.RETRANSMIT,)),
    (S.TRYING, I.TIMER_F): (S.TERMINATED, (A.REPORT_TIMEOUT, A.DELETE)),
    (S.TRYING, I.R_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.TRYING, I.R_2XX): (S.COMPLETED, (A.PASS_RESPONSE, A.START_K)),
    (S.TRYING, I.R_FINAL): (S.COMPLETED, (A.PASS_RESPONSE, A.START_K)),
    (S.TRYING, I.TRANSPORT_ERROR): _FAIL,
    (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, (A.RETRANSMIT,)),
    (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, (A.REPORT_TIMEOUT, A.DELETE)),
    (S.PROCEEDING, I.R_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.PROCEEDING, I.R_2XX): (S.COMPLETED, (A.PASS_RESPONSE, A.START_K)),
    (S.PROCEEDING, I.R_FINAL): (S.COMPLETED, (A.PASS_RESPONSE, A.START_K)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): _FAIL,
    (S.COMPLETED, I.R_1XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.R_2XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.R_FINAL): (S.COMPLETED, ()),
    (S.COMPLETED, I.TIMER_K): (S.TERMINATED, (A.DELETE,)),
}

#: RFC 3261 §17.2.1 with RFC 6026 §7.1 (Accepted state).
INVITE_SERVER: Table = {
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (A.RESEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_2XX): (S.ACCEPTED, (A.SEND_RESPONSE, A.START_L)),
    (S.PROCEEDING, I.TU_FINAL): (S.COMPLETED, (A.SEND_RESPONSE, A.START_G, A.START_H)),
    (S.PROCEEDING, I.TU_REJECT): (S.TERMINATED, (A.SEND_RESPONSE, A.DELETE)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): _FAIL,
    (S.ACCEPTED, I.REQUEST): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.TU_2XX): (S.ACCEPTED, (A.SEND_RESPONSE,)),
    (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, (A.DELETE,)),
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (A.RESEND_RESPONSE,)),
    (S.COMPLETED, I.TIMER_G): (S.COMPLETED, (A.RESEND_RESPONSE, A.RESTART_G)),
    (S.COMPLETED, I.TIMER_H): (S.TERMINATED, (A.REPORT_TIMEOUT, A.DELETE)),
    (S.COMPLETED, I.ACK): (S.CONFIRMED, (A.START_I,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): _FAIL,
    (S.CONFIRMED, I.REQUEST): (S.CONFIRMED, ()),
    (S.CONFIRMED, I.ACK): (S.CONFIRMED, ()),
    (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, (A.DELETE,)),
}

#: RFC 3261 §17.2.2.
NON_INVITE_SERVER: Table = {
    (S.TRYING, I.REQUEST): (S.TRYING, ()),
    (S.TRYING, I.TU_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.TRYING, I.TU_2XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.TRYING, I.TU_FINAL): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.TRYING, I.TU_REJECT): (S.TERMINATED, (A.SEND_RESPONSE, A.DELETE)),
    (S.TRYING, I.TRANSPORT_ERROR): _FAIL,
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (A.RESEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_2XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.PROCEEDING, I.TU_FINAL): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.PROCEEDING, I.TU_REJECT): (S.TERMINATED, (A.SEND_RESPONSE, A.DELETE)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): _FAIL,
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (A.RESEND_RESPONSE,)),
    (S.COMPLETED, I.TIMER_J): (S.TERMINATED, (A.DELETE,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): _FAIL,
}

TABLES: dict[Kind, Table] = {
    Kind.INVITE_CLIENT: INVITE_CLIENT,
    Kind.NON_INVITE_CLIENT: NON_INVITE_CLIENT,
    Kind.INVITE_SERVER: INVITE_SERVER,
    Kind.NON_INVITE_SERVER: NON_INVITE_SERVER,
}

INITIAL_STATE = {
    Kind.INVITE_CLIENT: S.CALLING,
    Kind.NON_INVITE_CLIENT: S.TRYING,
    Kind.INVITE_SERVER: S.PROCEEDING,
    Kind.NON_INVITE_SERVER: S.TRYING,
}

TIMER_INPUTS = frozenset(i for i in Input if i.name.startswith("TIMER_"))
TU_INPUTS = frozenset({Input.TU_1XX, Input.TU_2XX, Input.TU_FINAL, Input.TU_REJECT})

MAGIC_COOKIE = "z9hG4bK"

TxKey = tuple[str, ...]


class Transaction:
    """One transaction, client or server; the endpoint drives it through its table.

    Attributes:
        kind: which machine runs it.
        client: whether we sent the request (client transaction).
        key: the matching key (RFC 3261 §17.1.3 / §17.2.3).
        state: its current :class:`State`.
        request: the request that created it (dropped once no longer needed).
        peer: where the other side is.
        last_response: the last response a server transaction sent, serialized.
        response: the last response a client transaction received.
        user_data: free for the transaction user (e.g. a future to resolve).
        ack: the ACK the user sent for an INVITE's 2xx, serialized; resent for each retransmitted 2xx.
        gate: for a client transaction, asked ``gate(now)`` before each retransmission (``None``:
            always sent); once it says no, the request is not sent again and the transaction ends
            by its timeout (Timer B/F).
    """

    __slots__ = (
        "kind",
        "client",
        "key",
        "state",
        "request",
        "method",
        "peer",
        "wire",
        "last_response",
        "last_status",
        "response",
        "interval",
        "reliable",
        "deadlines",
        "cancel_pending",
        "user_data",
        "ack",
        "gate",
    )

    def __init__(self, kind: Kind, key: TxKey, request: Request, peer: Peer, reliable: bool) -> None:
        self.kind = kind
        self.client = kind is Kind.INVITE_CLIENT or kind is Kind.NON_INVITE_CLIENT
        self.key = key
        self.state = INITIAL_STATE[kind]
        self.request: Request | None = request
        self.method = request.method
        self.peer = peer
        self.wire: bytes | None = None
        self.last_response: bytes | None = None
        self.last_status = 0
        self.response: Response | None = None
        self.ack: bytes | None = None
        self.interval = 0.0
        self.reliable = reliable
        self.deadlines: list[Deadline[Any]] = []
        self.cancel_pending = False
        self.user_data: Any = None
        self.gate: Callable[[float], bool] | None = None

    @property
    def is_client(self) -> bool:
        """Whether we sent the request."""
        return self.client

    def __repr__(self) -> str:
        return f"<Transaction {self.kind.name} {self.method} {self.state.name} {self.key!r}>"


def server_key(request: Request) -> TxKey:
    """The key matching a request to its server transaction (RFC 3261 §17.2.3).

    With an RFC 3261 branch (magic cookie) the key is branch, sent-by and method
    (ACK and CANCEL match their INVITE by branch; CANCEL gets its own key too).
    Without the cookie it falls back to RFC 2543 matching on Call-ID, From tag,
    CSeq number and the top Via (devices with ``z3hG9bK``-style branches do this).
    """
    via = request._via or request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.params.get("branch")
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return (branch, via.sent_by, method)
    cseq_number = str(request.cseq.number)
    from_tag = request.from_.tag or ""
    return ("2543", request.call_id, from_tag, cseq_number, via.sent_by, branch or "", method)


def client_key(branch: str, method: str) -> TxKey:
    """The key matching a response to its client transaction (RFC 3261 §17.1.3)."""
    return (branch, "INVITE" if method == "ACK" else method)


def look_up(what: str, table: Mapping[tuple[_S, _I], _T], state: _S, inp: _I) -> _T:
    """``table[state, inp]`` of a state machine's transition table.

    Raises:
        LocalProtocolError: the pair is not in the table (a bug of the caller), naming ``what`` and the state.
    """
    try:
        return table[state, inp]
    except KeyError:
        raise LocalProtocolError(f"{what}: {inp.name} is not possible in state {state.name}") from None


def render_digraph(name: str, table: Mapping[tuple[Any, Any], Any]) -> str:
    """A ``(state, input) → state`` or ``→ (state, actions)`` table as a Graphviz ``digraph``.

    Every state machine of the package (dialogs, devices, streams) draws itself with this.
    """
    out = [f"digraph {name} {{", "  rankdir=LR;"]
    for (state, inp), target in table.items():
        new, actions = target if isinstance(target, tuple) else (target, ())
        label = inp.name + ("\\n" + ", ".join(a.name for a in actions) if actions else "")
        out.append(f'  "{state.name}" -> "{new.name}" [label="{label}"];')
    out.append("}")
    return "\n".join(out)


def render_tables() -> str:
    """All four machines as one Graphviz ``digraph`` (for docs and reviews)."""
    out = ["digraph transactions {", "  rankdir=LR;"]
    for kind, table in TABLES.items():
        out.append(f"  subgraph cluster_{kind.name} {{ label={kind.name!r};")
        for (state, inp), (new, actions) in table.items():
            acts = ", ".join(a.name for a in actions)
            out.append(f'    "{kind.name}.{state.name}" -> "{kind.name}.{new.name}" [label="{inp.name}\\n{acts}"];')
        out.append("  }")
    out.append("}")
    return "\n".join(out)
