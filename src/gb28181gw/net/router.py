"""Request routing for the SIP stack: dialogs by ID, other requests through consumer chains.

Every new request the endpoint reports goes through :meth:`Router.dispatch`, in this order
(pjsip's module chain, sipgo's ``OnX`` handlers):

1. **In a dialog** (a To tag, RFC 3261 §12.2.2): one dictionary lookup by
   :class:`~gb28181gw.sip.dialog.DialogId` finds the dialog's owner, which gets the request.
   Owners register their dialogs with :meth:`Router.add_dialog` while they last (a play
   session, a subscription). A request of a dialog-only method (BYE, NOTIFY, INFO …) that
   no dialog owns is answered 481 here; others (MESSAGE, OPTIONS) go on as if outside a
   dialog, as they always have for devices that tag their keepalives.
2. **Outside a dialog**: the method's chain of consumers, in registration order. Each
   returns :data:`PASS` to pass the request on, or consumes it (returns ``None`` after
   answering, or an awaitable that answers later and runs as a task). A method has at
   most one *owner* (:meth:`Router.handle`), the last link of its chain.
3. **The end of the chain** gives the default: OPTIONS is answered 200 with Allow
   (§11.2); MESSAGE is dispatched by the sender's role and then by CmdType (below);
   a dialog-only method outside a dialog gets 481; anything else 405 with Allow (§8.2.1).

MESSAGE bodies are MANSCDP. The sender's role comes from the resolvers services register
(:meth:`Router.add_role_resolver`: the registrar knows registered devices; cascade will know
configured platforms); a sender nobody claims is :attr:`Role.UNKNOWN` and gets 404 — a
device that is not registered registers again on it (PROTOCOL.md §4.1, K4) — or 403 when a
resolver says :attr:`Role.REFUSED` and none claims it (a claim wins over a refusal, in whatever
order the resolvers were added: the registrar refuses platform IDs it would not register, and
the cascade claims the configured superiors among them). The body is parsed once, its CmdType read once, and the
request goes to the owner of (role, CmdType), else of (role, :data:`ANY`).

Registering a second owner for a method, a (role, CmdType) or a dialog raises
:class:`~gb28181gw.errors.RouteConflict` naming both: a wiring bug fails at start-up
instead of one handler silently replacing another.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Container
from enum import Enum, StrEnum
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from gb28181gw.errors import ManscdpError, RouteConflict, SipParseError
from gb28181gw.gb.registrar import from_user
from gb28181gw.manscdp.codec import Element, child_text, keepalive_fast, parse_xml
from gb28181gw.sip.dialog import DialogId, dialog_id_of
from gb28181gw.sip.endpoint import warning_header
from gb28181gw.sip.events import RequestReceived
from gb28181gw.sip.message import Response, make_response
from gb28181gw.sip.peer import Peer
from gb28181gw.sip.transaction import Transaction

log = logging.getLogger("gb28181gw.sip")


class Passed(Enum):
    """The type of :data:`PASS`."""

    PASS = "pass"


#: What a consumer returns to pass a request on to the next one.
PASS = Passed.PASS

#: A request handler: answers now (``None``) or later (an awaitable, run as a task).
Handler = Callable[[RequestReceived], Awaitable[None] | None]
#: A chain link: like a :data:`Handler`, or :data:`PASS` to let the next link have it.
Consumer = Callable[[RequestReceived], Awaitable[None] | Passed | None]


class Role(StrEnum):
    """Who sent a MESSAGE, as the role resolvers see it."""

    DEVICE = "device"  # a registered device (IPC, NVR, lower platform registered to us)
    PLATFORM = "platform"  # a configured superior or lower platform (cascade)
    UNKNOWN = "unknown"  # nobody claims it: 404, it should register
    MOVED = "moved"  # a registered device's ID, but not from its address: 404, register again from there
    REFUSED = "refused"  # a sender the policy refuses: 403


#: The CmdType key that matches every CmdType of a role not owned on its own.
ANY = "*"

#: Methods that only make sense inside a dialog: with no dialog they are answered 481 (§12.2.2).
DIALOG_METHODS = frozenset({"BYE", "NOTIFY", "INFO", "UPDATE", "PRACK", "REFER"})
#: Methods that may create a dialog but, with a To tag, belong to one (re-INVITE, re-SUBSCRIBE).
REFRESH_METHODS = frozenset({"INVITE", "SUBSCRIBE"})
#: Methods the stack answers itself, listed in Allow whatever else is registered.
BUILTIN_METHODS = ("ACK", "CANCEL", "OPTIONS")


class ManscdpRequest(NamedTuple):
    """A MESSAGE with a parsed MANSCDP body, as handed to the owner of its (role, CmdType).

    A named tuple rather than a frozen dataclass: one is made per keepalive, and it is
    four times cheaper to build.

    Attributes:
        event: the request event (its transaction is to be answered by the owner).
        role: the sender's role.
        sender: the sender's ID (the user part of From).
        parsed: the parsed body, or ``None`` when the router read a plain keepalive without
            building a tree (:func:`~gb28181gw.manscdp.codec.keepalive_fast`): read :attr:`root`.
        cmd_type: the CmdType as sent (compare case-insensitively).
    """

    event: RequestReceived
    role: Role
    sender: str
    parsed: Element | None
    cmd_type: str

    @property
    def root(self) -> Element:
        """The parsed body (a plain keepalive is parsed now, at each call: its owner never asks)."""
        return self.parsed if self.parsed is not None else parse_xml(self.event.request.body)


#: The owner of a (role, CmdType).
MessageHandler = Callable[[ManscdpRequest], Awaitable[None] | None]
#: Says what role the sender ID at the peer has, or ``None`` when it does not know it.
RoleResolver = Callable[[str, Peer], Role | None]
#: Told of every MESSAGE the router refused itself: (event, role, status sent).
RejectListener = Callable[[RequestReceived, Role, int], None]


F = TypeVar("F")


class _Owned(Generic[F]):
    """A registered callable with the name of who registered it (and, for a chain link, what it passes)."""

    __slots__ = ("fn", "owner", "passes", "passes_unless_in")

    def __init__(
        self,
        fn: F,
        owner: str,
        passes: Callable[[str], bool] | None = None,
        passes_unless_in: Container[str] | None = None,
    ) -> None:
        self.fn = fn
        self.owner = owner
        self.passes = passes
        self.passes_unless_in = passes_unless_in


#: How the stack runs a handler: ``run(fn, arg, event)`` calls ``fn(arg)``; a failure is logged
#: and ``event`` answered 500 (the result is then ``None``); an awaitable runs as a task.
Runner = Callable[[Callable[[Any], object], Any, RequestReceived], object]


class Responder(Protocol):
    """How the router answers: the stack's :meth:`~gb28181gw.net.stack.SipStack.respond`."""

    def __call__(self, tx: Transaction, response: Response, *, stateless: bool = False) -> None: ...


class Router:
    """Routes the requests of one :class:`~gb28181gw.net.stack.SipStack` (see the module docstring).

    Args:
        respond: sends a response in a server transaction.
        new_tag: a fresh To tag.
        run: runs a handler with the stack's error handling (500 and a log line on a
            failure, a task for an awaitable).
    """

    def __init__(
        self,
        *,
        respond: Responder,
        new_tag: Callable[[], str],
        run: Runner,
    ) -> None:
        self._respond = respond
        self._new_tag = new_tag
        self._run = run
        self._chains: dict[str, list[_Owned[Consumer]]] = {}
        self._owners: dict[str, _Owned[Handler]] = {}
        self._messages: dict[tuple[Role, str], _Owned[MessageHandler]] = {}
        self._resolvers: list[_Owned[RoleResolver]] = []
        self._resolver_fns: tuple[RoleResolver, ...] = ()  # the same, as role_of calls them: per MESSAGE
        #: counts changes to who is registered for what (owners, chains, message owners, resolvers):
        #: the quick paths check who owns a request once per version, not per request
        self.version = 0
        self._rejected: list[RejectListener] = []
        self._dialogs: dict[DialogId, _Owned[Handler]] = {}
        self._in_dialog: set[str] = set()
        self._allow = ""
        self._update_allow()

    # --- registration ----------------------------------------------------------------

    def handle(self, method: str, handler: Handler, *, owner: str) -> None:
        """Make ``owner`` the owner of ``method`` outside dialogs: the last link of its chain.

        Raises:
            RouteConflict: ``method`` has an owner already (the stack owns ACK, CANCEL,
                OPTIONS and MESSAGE; MESSAGE owners are per role and CmdType: :meth:`on_message`).
        """
        method = method.upper()
        builtin = method in BUILTIN_METHODS or method == "MESSAGE"
        if builtin or method in self._owners:
            held = "the SIP stack (built in)" if builtin else self._owners[method].owner
            raise RouteConflict(f"{method} outside dialogs", held, owner)
        self._owners[method] = _Owned(handler, owner)
        self._update_allow()

    def consume(
        self,
        method: str,
        consumer: Consumer,
        *,
        owner: str,
        passes: Callable[[str], bool] | None = None,
        passes_unless_in: Container[str] | None = None,
    ) -> None:
        """Add ``consumer`` to the chain of ``method``, after those already there.

        ``passes(call_id)``, if given, says without the request that the consumer would pass any
        request with that Call-ID: the shell's quick path (:mod:`gb28181gw.sip.quick`) serves a
        method only when every link of its chain says so (:meth:`chain_passes`).
        ``passes_unless_in``, instead, says the consumer passes any request whose Call-ID it does
        not hold (a live container the consumer keeps, asked in place: no call per request).

        Raises:
            RouteConflict: ``owner`` has a consumer in this chain already.
        """
        method = method.upper()
        chain = self._chains.setdefault(method, [])
        if any(link.owner == owner for link in chain):
            raise RouteConflict(f"a {method} chain link", owner, owner)
        chain.append(_Owned(consumer, owner, passes, passes_unless_in))
        self._update_allow()

    def on_message(self, role: Role, cmd_type: str, handler: MessageHandler, *, owner: str) -> None:
        """Make ``owner`` the owner of MESSAGEs from ``role`` with ``cmd_type`` (or :data:`ANY`).

        Raises:
            RouteConflict: that (role, CmdType) has an owner already.
        """
        key = (role, ANY if cmd_type == ANY else str(cmd_type).lower())
        held = self._messages.get(key)
        if held is not None:
            raise RouteConflict(f"MESSAGE from {role.name}, CmdType {cmd_type}", held.owner, owner)
        self._messages[key] = _Owned(handler, owner)
        self._update_allow()

    def add_role_resolver(self, resolver: RoleResolver, *, owner: str) -> None:
        """Ask ``resolver`` who MESSAGE senders are; the first that claims one wins, in registration order
        (:attr:`Role.REFUSED` only when none claims it)."""
        self._resolvers.append(_Owned(resolver, owner))
        self._resolver_fns = tuple(r.fn for r in self._resolvers)
        self.version += 1

    def on_rejected(self, listener: RejectListener) -> None:
        """Be told of MESSAGEs the router answers itself (403/404 unknown sender, 400 bad body, 501)."""
        self._rejected.append(listener)

    def expect_in_dialog(self, method: str) -> None:
        """Declare that dialogs registered later take ``method`` (so Allow lists it)."""
        self._in_dialog.add(method.upper())
        self._update_allow()

    def add_dialog(self, dialog_id: DialogId, handler: Handler, *, owner: str) -> None:
        """Send requests of the dialog ``dialog_id`` to ``handler`` until :meth:`remove_dialog`.

        A UAC whose dialog has no remote tag yet may register ``remote_tag=""``: requests with
        that Call-ID and our tag and any remote tag reach it until the full ID is registered
        (RFC 6665 §4.1.2.4: a NOTIFY may come before the 2xx to the SUBSCRIBE).
        Registering the same handler again is harmless.

        Raises:
            RouteConflict: another handler owns that dialog.
        """
        held = self._dialogs.get(dialog_id)
        if held is not None:
            if held.fn == handler:
                return
            raise RouteConflict(
                f"dialog {dialog_id.call_id} ({dialog_id.local_tag}/{dialog_id.remote_tag})", held.owner, owner
            )
        self._dialogs[dialog_id] = _Owned(handler, owner)

    def remove_dialog(self, dialog_id: DialogId) -> None:
        """Stop routing ``dialog_id`` (its requests get 481 from then on)."""
        self._dialogs.pop(dialog_id, None)

    @property
    def dialog_count(self) -> int:
        """Dialogs registered."""
        return len(self._dialogs)

    @property
    def allowed_methods(self) -> list[str]:
        """What we answer to: the built-in methods, the chains, the owners and the dialogs' methods."""
        methods = set(BUILTIN_METHODS) | set(self._owners) | set(self._in_dialog)
        methods |= {m for m, chain in self._chains.items() if chain}
        if self._messages:
            methods.add("MESSAGE")
        return sorted(methods)

    @property
    def allow(self) -> str:
        """The Allow header value."""
        return self._allow

    def _update_allow(self) -> None:
        # called by every registration of an owner, chain link or message owner
        self.version += 1
        self._allow = ", ".join(self.allowed_methods)

    # --- what the quick path asks (it serves only what dispatch would give the same owner) ---

    def chain_passes(self, method: str, call_id: str) -> bool:
        """Whether every consumer in ``method``'s chain surely passes a request with ``call_id``."""
        for link in self._chains.get(method, ()):
            unless_in = link.passes_unless_in
            if unless_in is not None:
                if call_id in unless_in:
                    return False
            elif link.passes is None or not link.passes(call_id):
                return False
        return True

    def owner_of(self, method: str) -> Handler | None:
        """The owner of ``method`` outside dialogs, if any."""
        owned = self._owners.get(method)
        return owned.fn if owned is not None else None

    def message_owner(self, role: Role, cmd_type: str) -> MessageHandler | None:
        """Who gets MESSAGEs from ``role`` with ``cmd_type`` (lower case), as :meth:`dispatch` finds it."""
        owned = self._messages.get((role, cmd_type)) or self._messages.get((role, ANY))
        return owned.fn if owned is not None else None

    def role_of(self, sender: str, peer: Peer) -> Role | None:
        """The role of a MESSAGE's sender: the first resolver's claim, else :attr:`Role.REFUSED` if
        one refused it, else ``None``."""
        role: Role | None = None
        for resolver in self._resolver_fns:
            said = resolver(sender, peer)
            if said is Role.REFUSED:
                role = said  # unless another resolver claims it: a configured superior is no stranger
            elif said is not None:
                return said
        return role

    # --- dispatch --------------------------------------------------------------------

    def dispatch(self, event: RequestReceived) -> None:
        """Route one new request (ACK to a 2xx included) to whoever owns it."""
        request = event.request
        method = request.method
        h = request.headers
        to = h._values[h._keys.index("to")]  # the endpoint passes up no request without To
        if "tag" in to or "Tag" in to or "TAG" in to:  # cheaper than parsing To for every keepalive
            try:
                dialog_id = dialog_id_of(request)
            except SipParseError:  # pragma: no cover - the endpoint checked From and To
                dialog_id = None
            if dialog_id is not None:
                owned = self._dialogs.get(dialog_id)
                if owned is None:
                    owned = self._dialogs.get(DialogId(dialog_id.call_id, dialog_id.local_tag, ""))
                if owned is not None:
                    self._run(owned.fn, event, event)
                    return
                if method == "ACK":
                    return  # an ACK to a 2xx of no dialog: nothing to answer (§17.2.1)
                if method in DIALOG_METHODS or method in REFRESH_METHODS:
                    self._answer(event, 481, "no such dialog")
                    return
        if event.transaction is None:
            return  # an ACK outside any dialog we know
        chain = self._chains.get(method)
        if chain:
            for link in chain:
                if self._run(link.fn, event, event) is not PASS:
                    return
        owner = self._owners.get(method)
        if owner is not None:
            self._run(owner.fn, event, event)
        elif method == "MESSAGE":
            self._message(event)
        elif method == "OPTIONS":
            # RFC 3261 §11.2: OPTIONS tells what we support
            assert event.transaction is not None
            response = make_response(request, 200, to_tag=self._new_tag())
            response.headers.extend((("Allow", self._allow), ("Accept", "Application/MANSCDP+xml, application/sdp")))
            self._respond(event.transaction, response)
        elif method in DIALOG_METHODS and method in self._in_dialog:
            self._answer(event, 481, "no such dialog")
        elif method == "SUBSCRIBE" and chain:
            # SUBSCRIBE is served, but no consumer takes this event package (a superior's Alarm or
            # MobilePosition subscription): RFC 6665 §4.2.1.1 says 489, listing the ones we take
            event_name = (request.headers.get("event") or "").split(";")[0].strip() or "none"
            self._answer(event, 489, f"event package {event_name!r} is not served here")
        else:
            response = make_response(request, 405, to_tag=self._new_tag())
            response.headers.add("Allow", self._allow)
            assert event.transaction is not None
            self._respond(event.transaction, response, stateless=True)

    def _answer(self, event: RequestReceived, status: int, warning: str | None = None) -> None:
        assert event.transaction is not None
        response = make_response(event.request, status, to_tag=self._new_tag())
        if warning:
            response.headers.add("Warning", warning_header(warning))
        # the router's own answers are rejections that answering again repeats: no state kept
        self._respond(event.transaction, response, stateless=True)

    def _message(self, event: RequestReceived) -> None:
        sender = from_user(event.request)
        role = self.role_of(sender, event.peer)
        if role is None or role is Role.UNKNOWN or role is Role.REFUSED or role is Role.MOVED:
            if role is Role.REFUSED:
                self._reject(event, Role.REFUSED, 403, f"{sender or '(no ID)'} is refused here")
            elif role is Role.MOVED:
                # not the device, or the device from a new address: either way it must register
                # (with digest) from where it is before anything it says is believed
                self._reject(
                    event,
                    Role.MOVED,
                    404,
                    f"device {sender} is registered from another address; register again from here",
                )
            else:
                # PROTOCOL.md §4.1, K4: never 200 to an unregistered device, or it believes it is
                # registered; 404 makes real devices register again
                self._reject(event, Role.UNKNOWN, 404, f"device {sender or '(no ID)'} is not registered here")
            return
        body = event.request.body
        # most MESSAGEs are keepalives, whose owner needs no tree: read them without lxml
        root: Element | None = None
        if keepalive_fast(body) is not None:
            cmd_type = "Keepalive"
        else:
            try:
                root = parse_xml(body)
            except ManscdpError as exc:
                log.info("unparseable MANSCDP body", extra={"device": sender, "error": str(exc)})
                self._reject(event, role, 400, str(exc))
                return
            cmd_type = child_text(root, "CmdType") or ""
        messages = self._messages
        owned = messages.get((role, cmd_type.lower())) or messages.get((role, ANY))
        if owned is None:
            self._reject(event, role, 501, f"no {cmd_type or 'CmdType'} service for a {role.value} here")
            return
        self._run(owned.fn, ManscdpRequest(event, role, sender, root, cmd_type), event)

    def _reject(self, event: RequestReceived, role: Role, status: int, warning: str) -> None:
        self._answer(event, status, warning)
        for listener in self._rejected:
            try:
                listener(event, role, status)
            except Exception:
                log.exception("rejected-MESSAGE listener failed")
