"""Per-source-address request limits, like Kamailio's pike: who sends too fast is ignored a while.

:class:`FloodGuard` counts what each source address sends over a fixed ``window``; an
address past its limit is banned for ``ban`` seconds, and everything from it is dropped
before it is parsed. The limit is ``limit`` for strangers and ``known_limit`` for the
address of a registered device or a configured superior (asked of ``known`` only when a
stranger's limit is passed: rare, so it may cost a table walk); ``exempt`` networks are
never limited (a trusted proxy in front of many devices).

A known address past its limit is throttled, never banned: the rest of its window is dropped
and the next window admits it again. UDP source addresses are trivially spoofed, so banning a
superior's or a site router's address (hundreds of cameras behind one NAT) would hand any
attacker a five-minute outage of that peer for the price of ``known_limit`` datagrams; a
throttle costs it no more than the flood itself does.

:meth:`FloodGuard.admit` runs once per datagram or TCP message, on the hot path: a ban
lookup, a counter lookup and an increment. Time comes in as ``now`` (monotonic seconds).

Everything here is fed by strangers, who may spoof any source address, so memory is
bounded: at most ``max_addresses`` counters (the one whose window began longest ago is
forgotten first) and ``max_bans`` bans. A ban is never forgotten before it ends, unless
``max_bans`` is reached: then the oldest goes and :attr:`FloodGuard.bans_forgotten` counts it.

What happened comes out as events (:meth:`FloodGuard.take_events`): a ban begun, a ban
ended with what it dropped. The shell logs each once; nothing is logged per packet.

This is separate from the REGISTER digest brute-force bans (:mod:`gb28181gw.gb.bans`).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["FloodBanEnded", "FloodBanned", "FloodGuard", "FloodKind", "FloodThrottled", "SourceBan", "parse_exempt"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Source addresses counted at once (a spoofing flood sends from any number).
MAX_ADDRESSES = 65_536
#: Bans held at once.
MAX_BANS = 16_384
#: A limit nothing reaches (an exempt address).
_UNLIMITED = 1 << 62


class FloodKind(StrEnum):
    """Whom a limit was for: the label of ``gb28181gw_sip_flood_bans``."""

    STRANGER = "stranger"  # banned
    KNOWN = "known"  # a registered device's address, or a configured superior's: throttled, never banned


@dataclass(slots=True)
class SourceBan:
    """An address banned for flooding.

    Attributes:
        host: the source address.
        kind: whether the gateway knew it.
        since, until: monotonic seconds.
        sent: what it sent in the window that got it banned (the last one over the limit).
        dropped: what has been dropped from it since, that last one included.
    """

    host: str
    kind: FloodKind
    since: float
    until: float
    sent: int
    dropped: int = 0

    def as_dict(self, now: float) -> dict[str, object]:
        """For listings: the seconds left instead of monotonic times."""
        return {
            "address": self.host,
            "kind": self.kind.value,
            "seconds_left": round(max(0.0, self.until - now), 1),
            "sent": self.sent,
            "dropped": self.dropped,
        }


@dataclass(frozen=True, slots=True)
class FloodBanned:
    """``ban.host`` passed its limit and is ignored until ``ban.until``."""

    ban: SourceBan
    limit: int


@dataclass(frozen=True, slots=True)
class FloodBanEnded:
    """A ban ended (it ran out, or ``forgotten``: pushed out by ``max_bans``); ``ban.dropped`` is its toll."""

    ban: SourceBan
    forgotten: bool = False


@dataclass(frozen=True, slots=True)
class FloodThrottled:
    """Known ``host`` passed ``limit`` in the window that began at ``since``: the rest of it is dropped."""

    host: str
    limit: int
    since: float


FloodEvent = FloodBanned | FloodBanEnded | FloodThrottled


def parse_exempt(networks: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings (validated by the config) as networks."""
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


class FloodGuard:
    """Counts requests per source address and bans the ones that send too fast.

    Args:
        window: seconds over which an address's requests are counted (a fixed window each).
        limit: requests per window allowed to a stranger.
        known_limit: the same for an address ``known`` says is a device's or a superior's.
        ban: seconds an address over its limit is ignored.
        exempt: networks never limited.
        known: whether an address belongs to a registered device or a configured superior.
        max_addresses, max_bans: the memory bounds.
    """

    def __init__(
        self,
        *,
        window: float,
        limit: int,
        known_limit: int,
        ban: float,
        exempt: tuple[Network, ...] = (),
        known: Callable[[str], bool] = lambda host: False,
        max_addresses: int = MAX_ADDRESSES,
        max_bans: int = MAX_BANS,
    ) -> None:
        self.window = window
        self.limit = limit
        self.known_limit = known_limit
        self.ban_seconds = ban
        self.exempt = exempt
        self.known = known
        self.max_addresses = max_addresses
        self.max_bans = max_bans
        # OrderedDicts, not dicts: both are emptied from the front, and a dict's next(iter(d)) walks
        # the slots left by every earlier deletion (21 µs a datagram under a spoofing flood, not 0.3)
        # host -> [window start, requests in it, its limit]; oldest window first
        self._counts: OrderedDict[str, list[float]] = OrderedDict()
        # host -> ban, in the order they end (every ban lasts ban_seconds on a monotonic clock)
        self._bans: OrderedDict[str, SourceBan] = OrderedDict()
        self._events: list[FloodEvent] = []
        #: bans begun (strangers) and throttles begun (known addresses), by kind (the metric)
        self.bans_begun: dict[FloodKind, int] = dict.fromkeys(FloodKind, 0)
        #: input dropped from banned addresses, in total
        self.dropped = 0
        #: bans pushed out by ``max_bans`` before they ended
        self.bans_forgotten = 0

    def admit(self, host: str, now: float) -> bool:
        """Whether to handle one request (datagram, TCP message) from ``host``; ``False``: drop it."""
        if self._bans:
            ban = self._bans.get(host)
            if ban is not None:
                if now < ban.until:
                    ban.dropped += 1
                    self.dropped += 1
                    return False
                self._end(ban)
        entry = self._counts.get(host)
        if entry is None or now - entry[0] >= self.window:
            self._start_window(host, now)
            return True
        entry[1] += 1
        if entry[1] <= entry[2]:
            return True
        return self._over(host, entry, now)

    def _start_window(self, host: str, now: float) -> None:
        counts = self._counts
        # moved to the end, so that the first entry is always the one counted longest ago
        if counts.pop(host, None) is None and len(counts) >= self.max_addresses:
            counts.popitem(last=False)
        counts[host] = [now, 1, self.limit]

    def _over(self, host: str, entry: list[float], now: float) -> bool:
        limit = int(entry[2])
        if limit == self.limit:  # a stranger's limit passed: is it a stranger? (once per window)
            raised = self._limit_of(host)
            if raised > limit:
                entry[2] = raised
                if entry[1] <= raised:
                    return True
                limit = raised
        if limit != self.limit:  # known: the rest of the window is dropped, never a ban (see the module)
            self.dropped += 1
            if entry[1] == limit + 1:
                self.bans_begun[FloodKind.KNOWN] += 1
                self._events.append(FloodThrottled(host, limit, entry[0]))
            return False
        kind = FloodKind.STRANGER
        if len(self._bans) >= self.max_bans:
            self._end(next(iter(self._bans.values())), forgotten=True)
        # the request that passed the limit is the ban's first drop
        ban = self._bans[host] = SourceBan(host, kind, now, now + self.ban_seconds, int(entry[1]), dropped=1)
        self.dropped += 1
        del self._counts[host]
        self.bans_begun[kind] += 1
        self._events.append(FloodBanned(ban, limit))
        return False

    def _limit_of(self, host: str) -> int:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return self.limit
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
        if any(address in net for net in self.exempt):
            return _UNLIMITED
        return self.known_limit if self.known(host) else self.limit

    def is_exempt(self, host: str) -> bool:
        """Whether ``host`` is in an exempt network (never limited)."""
        return self._limit_of(host) == _UNLIMITED if self.exempt else False

    def trusted(self, host: str) -> bool:
        """Whether ``host`` is exempt or known (the TCP per-address cap is for strangers)."""
        return self._limit_of(host) > self.limit

    def banned(self, host: str, now: float) -> bool:
        """Whether ``host`` is banned now (without counting anything)."""
        ban = self._bans.get(host)
        return ban is not None and now < ban.until

    def _end(self, ban: SourceBan, *, forgotten: bool = False) -> None:
        del self._bans[ban.host]
        if forgotten:
            self.bans_forgotten += 1
        self._events.append(FloodBanEnded(ban, forgotten))

    def expire(self, now: float) -> None:
        """End the bans that ran out by ``now`` (their events follow); call it now and then."""
        bans = self._bans
        while bans:
            ban = next(iter(bans.values()))
            if ban.until > now:
                break
            self._end(ban)

    @property
    def has_events(self) -> bool:
        """Whether :meth:`take_events` has something."""
        return bool(self._events)

    def take_events(self) -> list[FloodEvent]:
        """Bans begun and ended since the last call, in order."""
        events, self._events = self._events, []
        return events

    def bans(self) -> list[SourceBan]:
        """The bans in force (or run out but not yet expired), the soonest to end first."""
        return list(self._bans.values())

    @property
    def banned_count(self) -> int:
        """Addresses banned now (after the last :meth:`expire`)."""
        return len(self._bans)

    @property
    def tracked(self) -> int:
        """Addresses being counted."""
        return len(self._counts)

    def lift(self, host: str) -> SourceBan | None:
        """End ``host``'s ban now (an operator's decision); its event follows."""
        ban = self._bans.get(host)
        if ban is not None:
            self._end(ban)
        return ban
