"""REGISTER, server side (GB/T 28181 §9.1, PROTOCOL.md §3), without I/O.

:meth:`Registrar.handle` takes a REGISTER, where it came from, the device record
(if any) and the time, and returns the response to send, the updated record and
what happened. Policy — passwords, ID strictness, Expires bounds, allow/deny lists,
brute-force bans — comes from :class:`RegistrarPolicy`.

Error answers carry a ``Warning: 399 gb28181gw "..."`` naming the problem, so an
installer looking at a capture knows what to fix on the device.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from gb28181gw.errors import AuthError, IdError, SipParseError
from gb28181gw.ids import GbId
from gb28181gw.sip.auth import Credentials, NonceStore, Verdict
from gb28181gw.sip.endpoint import Peer, warning_header
from gb28181gw.sip.headers import NameAddr
from gb28181gw.sip.message import Request, Response, make_response
from gb28181gw.sip.params import split_commas
from gb28181gw.sip.uri import SipUri

from .bans import BanList, RefusalLog, address_key, id_key
from .devices import Change, DeviceEvent, transition
from .model import Device

__all__ = [
    "PLATFORM_TYPE",
    "Accepted",
    "BanList",
    "DateFormat",
    "Outcome",
    "RefusalLog",
    "RegisterResult",
    "Registrar",
    "RegistrarPolicy",
    "format_date",
    "from_user",
    "is_platform_id",
    "parse_networks",
    "path_address",
    "policy_address",
]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Largest Expires we parse (RFC 3261 §20.19: 2**32 - 1); anything else is absurd.
MAX_EXPIRES = 2**32 - 1


class DateFormat(StrEnum):
    """How the Date header of a successful REGISTER is written (PROTOCOL.md §3.5)."""

    MILLISECONDS = "milliseconds"  # 2024-05-06T12:34:56.789 (GB/T 28181-2022 §9.10.3, wvp)
    SECONDS = "seconds"  # 2024-05-06T12:34:56 (Monibuca)
    OFF = "off"  # no Date: the device keeps its own clock


#: Type code of a platform's central signalling server (GB/T 28181-2016 Annex D).
PLATFORM_TYPE = 200
ALL_ZERO_ID = "0" * 20
#: Characters of a REGISTER's Path (RFC 3327) kept at most, its values comma-joined: a front or two
#: take a hundred or so. The Path is kept with the device and sent as Route on every request to it,
#: so a longer one (the whole message, from any device that put one) is refused, not kept.
MAX_PATH = 1024
#: IDs remembered as having passed the policy's ID checks (see :meth:`Registrar._check_id`).
PASSED_IDS_KEPT = 8192


def is_platform_id(text: str) -> bool:
    """Whether ``text`` is a 20-digit ID of type 200 (a platform's central signalling server)."""
    return len(text) == 20 and text.isdigit() and int(text[10:13]) == PLATFORM_TYPE


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    """What the registrar accepts.

    Attributes:
        domain: our SIP domain, also the digest realm.
        password: the global digest password; empty (with no per-device password) = no auth.
        require_provisioned: refuse devices an operator has not added first.
        strict_ids: refuse IDs with structural oddities instead of logging them.
        expires_min / expires_max / expires_default: bounds on the registration period;
            below min is 423 with Min-Expires, above max is granted max.
        date_format: the Date header of a successful REGISTER.
        time_zone: its time zone, the site's (``gateway.time_zone``; GB/T 28181 sites use Beijing time).
        check_request_domain: refuse a REGISTER addressed to another 10-digit domain.
        max_auth_failures / failure_window / ban_seconds: after that many failures within
            the window, from one address or for one ID, answer 403 for ban_seconds.
        allow_ids / deny_ids: ID prefixes (empty allow list = all allowed).
        allow_networks / deny_networks: source networks (empty allow list = all allowed).
        trusted_proxies: networks of SIP fronts whose Path ``received`` names the device's address
            (see :func:`policy_address`): the address the allow/deny networks and the bans judge.
        gateway_id: our own ID, which no device may register with.
        accept_platforms: let IDs of type 200 (platform SIP servers) register as devices.
    """

    domain: str
    password: str = ""
    require_provisioned: bool = False
    strict_ids: bool = False
    expires_min: int = 60
    expires_max: int = 86400
    expires_default: int = 3600
    date_format: DateFormat = DateFormat.MILLISECONDS
    time_zone: _dt.tzinfo = _dt.timezone(_dt.timedelta(hours=8))
    check_request_domain: bool = True
    max_auth_failures: int = 5
    failure_window: float = 300.0
    ban_seconds: float = 600.0
    allow_ids: tuple[str, ...] = ()
    deny_ids: tuple[str, ...] = ()
    allow_networks: tuple[IpNetwork, ...] = ()
    deny_networks: tuple[IpNetwork, ...] = ()
    trusted_proxies: tuple[IpNetwork, ...] = ()
    gateway_id: str = ""
    accept_platforms: bool = False


class Outcome(StrEnum):
    """What a REGISTER did (the ``result`` label of the registrations metric)."""

    REGISTERED = "registered"  # a device that was not registered now is
    REFRESHED = "refreshed"  # a registered device renewed
    UNREGISTERED = "unregistered"  # Expires: 0
    CHALLENGED = "challenged"  # 401 sent
    REJECTED = "rejected"  # 4xx other than 401


@dataclass(frozen=True, slots=True, init=False)
class Accepted:
    """A registration accepted by :meth:`Registrar.accept`: the new record, its transition, the
    outcome (registered or refreshed), the log's detail, and whether the device moved."""

    device: Device
    change: Change
    outcome: Outcome
    detail: str
    address_changed: bool

    # written out for mypyc, as Change's (gb/devices.py says why): one per accepted REGISTER
    def __init__(self, device: Device, change: Change, outcome: Outcome, detail: str, address_changed: bool) -> None:
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "change", change)
        object.__setattr__(self, "outcome", outcome)
        object.__setattr__(self, "detail", detail)
        object.__setattr__(self, "address_changed", address_changed)


@dataclass(frozen=True, slots=True, init=False)
class RegisterResult:
    """The registrar's answer to one REGISTER.

    Attributes:
        response: what to send.
        outcome: what happened.
        reason: a short stable word for logs and metrics (``bad-password``, ``invalid-id`` …).
        device: the record to keep (a new or updated copy), or ``None`` if nothing changed.
        detail: a human sentence for the log.
        address_changed: the device now registers from another address than stored.
        change: the device transition the REGISTER made (applied to ``device``), or ``None``
            when nothing changed.
    """

    response: Response
    outcome: Outcome
    reason: str = ""
    device: Device | None = None
    detail: str = ""
    address_changed: bool = False
    change: Change | None = None

    # written out for mypyc, as Change's (gb/devices.py says why): one per REGISTER the general path answers
    def __init__(
        self,
        response: Response,
        outcome: Outcome,
        reason: str = "",
        device: Device | None = None,
        detail: str = "",
        address_changed: bool = False,
        change: Change | None = None,
    ) -> None:
        object.__setattr__(self, "response", response)
        object.__setattr__(self, "outcome", outcome)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "detail", detail)
        object.__setattr__(self, "address_changed", address_changed)
        object.__setattr__(self, "change", change)


_DATE_CACHE: dict[int, str] = {}
_OFFSET_CACHE: dict[_dt.tzinfo, tuple[int, float]] = {}


def format_date(epoch: float, fmt: DateFormat, zone: _dt.tzinfo | float = 8.0) -> str | None:
    """The GB/T 28181 Date header value for ``epoch`` in local time (Beijing: +8, no zone).

    ``zone`` is the site's zone, or its offset east of UTC in hours. ``None`` when the Date
    is switched off. The seconds part is formatted once per second.
    """
    if fmt is DateFormat.OFF:
        return None
    if isinstance(zone, _dt.tzinfo):
        # asked of the instant, so a zone with daylight saving gets the offset of that day; once
        # per second and zone (an offset changes on a whole second), not per REGISTER
        whole = int(epoch // 1)
        cached = _OFFSET_CACHE.get(zone)
        if cached is None or cached[0] != whole:
            offset = _dt.datetime.fromtimestamp(whole, zone).utcoffset() or _dt.timedelta()
            if len(_OFFSET_CACHE) > 64:
                _OFFSET_CACHE.clear()
            cached = _OFFSET_CACHE[zone] = (whole, offset.total_seconds())
        local = epoch + cached[1]
    else:
        local = epoch + zone * 3600
    second = int(local // 1)
    text = _DATE_CACHE.get(second)
    if text is None:
        if len(_DATE_CACHE) > 64:
            _DATE_CACHE.clear()
        text = _DATE_CACHE[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    if fmt is DateFormat.MILLISECONDS:
        return f"{text}.{min(999, int((local - second) * 1000 + 0.5)):03d}"
    return text


#: Registration periods whose ``int`` the devices granted them share (see :meth:`Registrar.accept`).
PERIODS_SHARED = 64


class Registrar:
    """The REGISTER procedure.

    Besides answering, it keeps who failed to authenticate and who is banned
    (:attr:`bans`), and who it refused (:attr:`refused`: every REJECTED outcome, by ID
    and address, until that ID registers from that address).

    Args:
        policy: what to accept.
        nonces: issues and checks digest nonces (realm = ``policy.domain``).
    """

    def __init__(self, policy: RegistrarPolicy, nonces: NonceStore) -> None:
        self.policy = policy
        self.nonces = nonces
        self.bans = BanList(limit=policy.max_auth_failures, window=policy.failure_window, ban=policy.ban_seconds)
        self.refused = RefusalLog()
        self._passed_ids: dict[str, GbId] = {}
        self._passed_before: dict[str, GbId] = {}
        self._passed_uris: set[str] = set()
        # registration periods granted, each value one int object (see accept)
        self._periods: dict[int, int] = {}

    def handle(
        self,
        request: Request,
        peer: Peer,
        device: Device | None,
        *,
        now: float,
        epoch: float,
        tag: str,
        device_id: str | None = None,
    ) -> RegisterResult:
        """Answer one REGISTER.

        Args:
            request: the REGISTER (its top Via already stamped by the endpoint).
            peer: where it came from: the address we will use for this device. Through a trusted
                proxy (``policy.trusted_proxies``) the policy judges the device's own address
                instead (:func:`policy_address`); the nonce and the replies stay with ``peer``.
            device: the stored record for the From-user ID, if any.
            now: monotonic seconds (nonces, bans).
            epoch: wall-clock epoch seconds (stored times, the Date header).
            tag: a fresh To tag.
            device_id: :func:`from_user` of ``request``, if the caller has it already.
        """
        if device_id is None:
            device_id = from_user(request)
        origin = policy_address(request, peer.host, self.policy.trusted_proxies)
        result = self._handle(request, peer, device, device_id, now=now, epoch=epoch, tag=tag, origin=origin)
        if result.outcome is Outcome.REJECTED:
            self.refused.record(device_id, origin, result.reason, result.detail, epoch)
        elif result.device is not None and result.outcome is not Outcome.UNREGISTERED:
            self.refused.forget(device_id, origin)
            if origin != peer.host:
                # through a trusted proxy: its MESSAGEs, which carry no Path, were refused under
                # the proxy's address; it got in through it too
                self.refused.forget(device_id, peer.host)
        return result

    def _handle(
        self,
        request: Request,
        peer: Peer,
        device: Device | None,
        device_id: str,
        *,
        now: float,
        epoch: float,
        tag: str,
        origin: str,
    ) -> RegisterResult:
        # origin: the address the policy judges (peer.host unless a trusted proxy names the device's)
        p = self.policy

        def reject(status: int, reason: str, detail: str, outcome: Outcome = Outcome.REJECTED) -> RegisterResult:
            resp = make_response(request, status, to_tag=tag)
            resp.headers.add("Warning", warning_header(detail))
            self._version(request, resp)
            return RegisterResult(resp, outcome, reason, None, detail)

        if not device_id:
            try:
                request.from_  # noqa: B018 - to say what is wrong with it
            except SipParseError as exc:
                return reject(400, "bad-from", f"malformed From: {exc.reason}")
            return reject(400, "bad-from", "From has no user part: it must be the device's 20-digit ID")

        checked = self._admit(request.uri, origin, device, device_id, now)
        if not isinstance(checked, GbId):
            return reject(*checked)
        gid = checked

        # authenticate before examining the rest: an unauthenticated REGISTER learns nothing more
        password = device.password if device is not None and device.password else p.password
        if password:
            auth = self._authenticate(request, peer, device_id, password, now, epoch, tag, reject, origin=origin)
            if auth is not None:
                return auth

        try:
            # splitting the list already parses quotes: an unterminated one is the device's error, not ours
            contacts = request.headers.get_all("contact")
            if not contacts:
                return reject(400, "no-contact", "REGISTER without a Contact header")
            contact = NameAddr.parse(contacts[0])
        except SipParseError as exc:
            return reject(400, "bad-contact", f"malformed Contact: {exc.reason}")
        try:
            path = request.headers.get_all("path")
        except SipParseError as exc:  # an unterminated quote: the sender's error, not a 500 of ours
            return reject(400, "bad-path", f"malformed Path: {exc.reason}")
        path_text = ", ".join(path)
        if len(path_text) > MAX_PATH:
            return reject(400, "path-too-long", f"Path of {len(path_text)} characters: at most {MAX_PATH} are kept")

        expires_text = request.headers.get("expires")
        if expires_text is None:
            expires_text = contact.params.get("expires")
        if expires_text is None:
            expires = p.expires_default
        else:
            expires_text = expires_text.strip()
            if not expires_text.isdigit() or not expires_text.isascii() or int(expires_text) > MAX_EXPIRES:
                return reject(400, "bad-expires", f"Expires {expires_text[:20]!r} is not a number of seconds")
            expires = int(expires_text)
        if contact.uri == "*" and expires != 0:
            return reject(400, "bad-contact", "Contact: * is only allowed with Expires: 0")
        if 0 < expires < p.expires_min:
            result = reject(423, "interval-too-brief", f"Expires {expires} is below the minimum {p.expires_min}")
            result.response.headers.add("Min-Expires", str(p.expires_min))
            return result
        expires = min(expires, p.expires_max)

        if expires == 0:
            self.bans.succeed(address_key(origin))
            self.bans.succeed(id_key(device_id, origin))
            record = device.copy() if device is not None else Device(device_id=device_id, created_at=epoch)
            resp = make_response(request, 200, to_tag=tag)
            self._version(request, resp)
            record.expires = 0
            record.expires_at = epoch
            change = transition(record, DeviceEvent.UNREGISTERED, epoch=epoch, reason="unregistered (Expires: 0)")
            return RegisterResult(resp, Outcome.UNREGISTERED, "ok", record, "unregistered", change=change)

        h = request.headers
        accepted = self.accept(
            device, device_id, peer, gid, expires,
            user_agent=h.get("user-agent"), gb_version=h.get("x-gb-ver"), call_id=h.get("call-id"), epoch=epoch,
            path=path_text, origin=origin,
        )  # fmt: skip
        resp = make_response(request, 200, to_tag=tag)
        self._version(request, resp)
        resp.headers.add("Contact", f"<{contact.uri}>;expires={expires}")
        if path and "path" in (h.get("supported") or "").lower():
            # RFC 3327 §5.3: the Path kept is told back to a UA that said it supports the extension
            for value in path:
                resp.headers.add("Path", value)
        resp.headers.add("Expires", str(expires))
        date = format_date(epoch, p.date_format, p.time_zone)
        if date is not None:
            resp.headers.add("Date", date)
        return RegisterResult(
            resp, accepted.outcome, "ok", accepted.device, accepted.detail,
            address_changed=accepted.address_changed, change=accepted.change,
        )  # fmt: skip

    def _admit(
        self, uri: str, host: str, device: Device | None, device_id: str, now: float, *, peek: bool = False
    ) -> GbId | tuple[int, str, str]:
        """The policy's checks before authentication: the ID, or (status, reason, detail) to refuse.

        With ``peek`` a ban refuses without counting the attempt (the quick path, which then leaves
        the request to :meth:`handle`: it must count it once).
        """
        p = self.policy
        source = _ip(host) if (p.allow_networks or p.deny_networks) else None
        if source is not None:
            if any(source in net for net in p.deny_networks):
                return 403, "denied-address", f"address {host} is denied"
            if p.allow_networks and not any(source in net for net in p.allow_networks):
                return 403, "denied-address", f"address {host} is not in the allowed networks"

        checked = self._check_id(device_id)
        if not isinstance(checked, GbId):
            return checked

        if self.bans.active_count:
            for key, what in ((address_key(host), "address"), (id_key(device_id, host), "ID from this address")):
                if peek:
                    if self.bans.banned(key, now):
                        return 403, "banned", f"too many failed authentications for this {what}"
                    continue
                ban = self.bans.check(key, now)
                if ban is not None:
                    left = self.bans.banned(key, now)
                    return 403, "banned", f"too many failed authentications for this {what}; retry in {left:.0f} s"

        if p.check_request_domain and uri not in self._passed_uris:
            target = _uri_host(uri)
            if target is None:
                try:
                    target = SipUri.parse(uri).host
                except SipParseError as exc:
                    return 400, "bad-request-uri", f"malformed Request-URI: {exc.reason}"
            domain = target.split(".", 1)[0] if target.endswith(".spvmn.cn") else target
            if len(domain) == 10 and domain.isdigit() and domain != p.domain:
                return 403, "foreign-domain", f"this REGISTER is for domain {domain}; this server is {p.domain}"
            # devices of a site all send the same Request-URI: checked once (see _check_id)
            if len(self._passed_uris) >= PASSED_IDS_KEPT:
                self._passed_uris.clear()
            self._passed_uris.add(uri)

        if p.require_provisioned and (device is None or not device.provisioned):
            return 403, "not-provisioned", f"device {device_id} has not been added to this gateway"
        return checked

    def accept(
        self,
        device: Device | None,
        device_id: str,
        peer: Peer,
        gid: GbId,
        expires: int,
        *,
        user_agent: str | None,
        gb_version: str | None,
        call_id: str | None,
        epoch: float,
        path: str = "",
        origin: str = "",
    ) -> Accepted:
        """A registration (``expires`` > 0, within the policy's bounds) that passed every check:
        the device's new record and transition. Shared by :meth:`handle` and the quick path
        (:mod:`gb28181gw.gb.quick`), which answer it each in their own way.

        ``path``: the REGISTER's Path values (RFC 3327 §5.3), comma-joined; each registration
        replaces the last one's, so a device that now registers directly has none (the quick
        path takes no REGISTER with a Path header).

        ``origin``: the address the policy judged it by (:func:`policy_address`), when not
        ``peer.host``: its failures are the ones forgotten, not the proxy's."""
        if self.bans.failing:  # nothing to forget otherwise: spare every registration two keys
            judged = origin or peer.host
            self.bans.succeed(address_key(judged))
            self.bans.succeed(id_key(device_id, judged))
        record = device.copy() if device is not None else Device(device_id=device_id, created_at=epoch)
        was_registered = record.registered and record.expires_at > epoch
        # thousands of devices ask for the same few periods, an int above 256 is an object of
        # its own (28 bytes a device: issue 16's memory per device); a device asking for
        # others than the first PERIODS_SHARED values keeps its own. (Compiled by mypyc, the
        # record holds the int unboxed and this changes nothing.)
        period = self._periods.get(expires)
        if period is None:
            period = expires
            if len(self._periods) < PERIODS_SHARED:
                self._periods[expires] = expires
        record.expires = period
        record.registered_at = epoch
        record.expires_at = epoch + expires
        # interned: thousands of devices share these few values
        record.user_agent = sys.intern(user_agent or record.user_agent)
        record.gb_version = sys.intern(gb_version or record.gb_version)
        record.call_id = call_id or ""
        record.path = path
        event = DeviceEvent.REFRESHED if was_registered else DeviceEvent.REGISTERED
        change = transition(record, event, epoch=epoch, peer=peer)
        detail = "registered" if not was_registered else "refreshed"
        if gid.warnings:
            detail += f" (ID warnings: {'; '.join(gid.warnings)})"
        outcome = Outcome.REFRESHED if was_registered else Outcome.REGISTERED
        moved = change.moved_from is not None and was_registered
        return Accepted(record, change, outcome, detail, moved)

    def _check_id(self, device_id: str) -> GbId | tuple[int, str, str]:
        """The policy's checks of an ID: the ID, or (status, reason, detail) to refuse it.

        An ID that passes is remembered (the last 8,192 to 16,384): the challenge and the
        authenticated retry of one registration come milliseconds apart, and the policy
        cannot change meanwhile (it is fixed for the registrar's life).
        """
        gid = self._passed_ids.get(device_id) or self._passed_before.get(device_id)
        if gid is not None:
            return gid
        p = self.policy
        try:
            gid = GbId.parse(device_id, strict=p.strict_ids)
        except IdError as exc:
            return 403, "invalid-id", f"invalid device ID: {exc}"
        if device_id == p.gateway_id:
            return 403, "own-id", f"{device_id} is this gateway's own ID"
        if device_id == ALL_ZERO_ID:
            return 403, "invalid-id", "the all-zero ID is no device's"
        if gid.type_code == PLATFORM_TYPE and not p.accept_platforms:
            return (
                403,
                "platform-id",
                f"{device_id} is a platform's ID (type {PLATFORM_TYPE}); set registrar.accept_platforms to let it register as a device",
            )
        if any(device_id.startswith(prefix) for prefix in p.deny_ids):
            return 403, "denied-id", f"device ID {device_id} is denied"
        if p.allow_ids and not any(device_id.startswith(prefix) for prefix in p.allow_ids):
            return 403, "denied-id", f"device ID {device_id} is not in the allowed ID prefixes"
        if len(self._passed_ids) >= PASSED_IDS_KEPT:
            # two generations: an ID checked just before the turn is still found after it
            self._passed_before, self._passed_ids = self._passed_ids, {}
        self._passed_ids[device_id] = gid
        return gid

    def _authenticate(
        self,
        request: Request,
        peer: Peer,
        device_id: str,
        password: str,
        now: float,
        epoch: float,
        tag: str,
        reject: Callable[[int, str, str], RegisterResult],
        *,
        origin: str,
    ) -> RegisterResult | None:
        """Digest check (PROTOCOL.md §3.3); ``None`` when authenticated, else the answer.

        The nonce is bound to the source (``peer.host``: where the challenge went); failures count
        against ``origin``, the address the policy judges (see :func:`policy_address`)."""

        def challenge(stale: bool, reason: str, detail: str) -> RegisterResult:
            resp = make_response(request, 401, to_tag=tag)
            resp.headers.add("WWW-Authenticate", self.nonces.challenge(peer.host, now, stale=stale).serialize())
            self._version(request, resp)
            return RegisterResult(resp, Outcome.CHALLENGED, reason, None, detail)

        header = request.headers.get("authorization")
        if header is None:
            return challenge(False, "challenge", "challenged")
        try:
            creds = Credentials.parse(header)
        except AuthError as exc:
            return reject(400, "bad-authorization", f"malformed Authorization: {exc}")
        verdict = self.nonces.verify(creds, method="REGISTER", password=password, host=peer.host, now=now)
        if verdict is Verdict.OK:
            return None
        if verdict is Verdict.STALE:
            return challenge(True, "stale-nonce", "nonce expired, unknown or already used")
        reason = {
            Verdict.WRONG_REALM: "wrong-realm",
            Verdict.BAD_ALGORITHM: "bad-algorithm",
            Verdict.BAD_RESPONSE: "bad-password",
        }[verdict]
        detail = {
            Verdict.WRONG_REALM: f"realm {creds.realm!r} is not {self.nonces.realm!r}",
            Verdict.BAD_ALGORITHM: f"digest algorithm {creds.algorithm} is not {self.nonces.algorithm}",
            Verdict.BAD_RESPONSE: "wrong password",
        }[verdict]
        self.bans.note_failure(device_id, origin, detail, epoch)
        if verdict is not Verdict.BAD_RESPONSE:
            # a wrong realm or algorithm guesses no password: refuse it, count nothing
            return reject(403, reason, detail)
        # a wrong answer to a live nonce we gave this address: a real guess
        limit, window = self.policy.max_auth_failures, self.policy.failure_window
        why = f"{limit} wrong passwords within {window:.0f} s"
        banned = self.bans.fail(
            address_key(origin), now, epoch=epoch, address=origin, device_id=device_id,
            reason=f"{why} from this address",
        ) | self.bans.fail(
            id_key(device_id, origin), now, epoch=epoch, address=origin, device_id=device_id,
            reason=f"{why} for this ID from this address",
        )  # fmt: skip
        if banned:
            return reject(403, "banned", f"{detail}; too many failures: banned for {self.policy.ban_seconds:.0f} s")
        # a wrong password is challenged again until the limit, then 403
        result = challenge(False, reason, detail)
        return RegisterResult(result.response, Outcome.REJECTED, reason, None, detail)

    @staticmethod
    def _version(request: Request, response: Response) -> None:
        # GB/T 28181-2022 Annex I: answer X-GB-ver to a REGISTER that carries it
        version = request.headers.get("x-gb-ver")
        if version:
            response.headers.add("X-GB-ver", version)


def from_user(request: Request) -> str:
    """The user part of From (the device's ID), or "" when there is none or From is malformed."""
    h = request.headers
    try:
        value = h._values[h._keys.index("from")]
    except ValueError:
        return ""
    start = value.find("sip:")
    at = value.find("@", start)
    if start >= 0 and at > start and '"' not in value[:start]:
        user = value[start + 4 : at]
        if user.isalnum():
            return user
    try:
        return request.from_.user or ""
    except SipParseError:
        return ""


def policy_address(request: Request, source: str, trusted_proxies: tuple[IpNetwork, ...]) -> str:
    """The address a REGISTER's policy checks judge: allow/deny networks, bans, failures, refusals.

    ``source`` (where the REGISTER came from), unless it is in ``trusted_proxies`` and the first
    Path value — the one the proxy next to us put (RFC 3327 §4.2: each proxy adds its own at the
    top) — carries a ``received`` URI parameter naming an IP address: then that address, the
    device's as the proxy saw it. Kamailio's ``add_path_received()`` writes
    ``<sip:FRONT;lr;received=sip:IP:PORT>`` (``[IP]`` for IPv6, ``%3Btransport%3Dtcp`` after the
    port over TCP). Behind a front every device comes from the front's address: judged by it, one
    camera's wrong passwords would ban them all.

    A device cannot choose the address it is judged by: from a source outside ``trusted_proxies``
    the Path is not read, and a trusted proxy's own Path comes before any the device put — provided
    the proxy puts one on every REGISTER it relays: one relayed without lets a Path of the device's
    own come first (``tests/shell/kamailio/dispatcher.cfg`` refuses a device's Path and sends every
    REGISTER through ``add_path_received()``). No Path, or no usable ``received``, is judged by
    ``source``, as without a proxy.
    """
    if not trusted_proxies:
        return source  # no header lookup for every REGISTER when no proxy is trusted (the default)
    return path_address(request.headers.get("path"), source, trusted_proxies)


def path_address(path: str | None, source: str, trusted_proxies: tuple[IpNetwork, ...]) -> str:
    """:func:`policy_address` of a REGISTER from ``source`` whose first Path line (or the Path
    values a device record keeps, comma-joined: the same first value) is ``path``.

    Also the address a registered device's bans are looked up by (its record's ``host`` is the
    proxy's: where requests go), so that its view shows the bans that refuse it."""
    if not trusted_proxies or not path:
        return source
    address = _ip(source)
    if address is None or not any(address in net for net in trusted_proxies):
        return source
    # only the first Path line is read: those after it are forwarded unread by the proxy, and one
    # of the device's that cannot be parsed must not make the proxy's address the one judged
    try:
        first = split_commas(path)
        uri = NameAddr.parse(first[0]).uri if first else ""
    except SipParseError:
        return source  # refused later (bad-path), judged by its source meanwhile
    received = _received_address(uri)
    return received if received is not None else source


def _received_address(uri: str) -> str | None:
    """The IP address of a Path URI's ``received`` parameter (``sip:IP:PORT``, ``sip:[IPv6]:PORT``,
    a bare ``IP``, percent-escaped or not), normalised; ``None`` without a usable one."""
    for param in uri.split("?", 1)[0].split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() != "received":
            continue
        value = urllib.parse.unquote(value.strip()).strip('"').split(";", 1)[0]
        scheme, colon, rest = value.partition(":")
        if colon and scheme.lower() in ("sip", "sips"):
            value = rest.rpartition("@")[2]
        if value.startswith("["):
            host = value[1 : value.find("]")] if "]" in value else ""
        elif value.count(":") == 1:
            host = value.partition(":")[0]  # IPv4 with its port
        else:
            host = value  # IPv4 alone, or IPv6 without brackets or port
        address = _ip(host)
        return str(address) if address is not None else None
    return None


def _uri_host(uri: str) -> str | None:
    """The host of a plain ``sip:user@host[:port][;params]`` URI, or ``None`` to parse it properly."""
    if not uri.startswith("sip:") or "[" in uri:
        return None
    rest = uri[4:].rpartition("@")[2]
    host = rest.split(";", 1)[0].split("?", 1)[0].split(":", 1)[0]
    return host if host and (host.replace(".", "").replace("-", "").isalnum()) else None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_networks(items: list[str]) -> tuple[IpNetwork, ...]:
    """CIDR strings → networks (a bare address is a /32 or /128).

    Raises:
        ValueError: naming the bad item.
    """
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network (CIDR)") from None
    return tuple(out)
