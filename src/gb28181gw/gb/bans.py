"""Who is kept out, and who keeps knocking: bans, authentication failures and refusals, without I/O.

:class:`BanList` counts failed digest authentications and bans (PROTOCOL.md §3.3);
:class:`RefusalLog` remembers the IDs and addresses the gateway keeps refusing (a
REGISTER answered 403, a keepalive from a device that is not registered), so an
operator can see the camera that was given the wrong password or the wrong domain.

Everything here is fed by strangers, so everything is bounded, and the bound never
costs an active ban: failure counters, last failures and refusals forget their oldest
entries first; bans are never evicted, they leave only when they end or an operator
lifts them (past ``max_bans`` a new offender is refused but not remembered).

Bans run on the monotonic clock (``now``), so a wall-clock step neither lifts nor
prolongs them; each also carries wall-clock times (``epoch``) to show and to store.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from .model import Ban

__all__ = ["MAX_REFUSALS", "AuthFailure", "BanList", "Refusal", "RefusalLog", "address_key", "id_key"]

#: Refusals remembered (ID × address pairs); the oldest is forgotten first.
MAX_REFUSALS = 10_000
#: Longest device ID kept in a refusal (what a stranger sends as an ID can be any length).
_MAX_ID = 40
#: Longest refusal detail kept.
_MAX_DETAIL = 200


def address_key(address: str) -> str:
    """The ban key of every REGISTER from ``address``."""
    return f"ip:{address}"


def id_key(device_id: str, address: str) -> str:
    """The ban key of ``device_id`` registering from ``address``."""
    return f"id:{device_id}@{address}"


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """A device ID's last failed digest authentication.

    Attributes:
        at: wall-clock epoch seconds.
        address: the source address it came from.
        reason: what was wrong (``wrong password``, a wrong realm …).
    """

    at: float
    address: str
    reason: str


class BanList:
    """Failed-authentication counting and bans (PROTOCOL.md §3.3), keyed by the caller.

    The registrar counts per source address and per (ID, address) pair, never per ID
    alone: a stranger's wrong passwords must not lock out the real device at its own
    address. Memory is bounded without ever dropping an active ban: failure counters
    are capped at ``max_keys`` (oldest forgotten first); bans are kept in the order they
    expire (every ban lasts ``ban`` seconds) and leave only when they end or are lifted,
    at most ``max_bans`` at once (past that a new offender is refused but not remembered).

    New bans wait in an outbox (:meth:`take_added`) for a shell that stores them.
    """

    def __init__(
        self, *, limit: int, window: float, ban: float, max_keys: int = 100_000, max_bans: int = 200_000
    ) -> None:
        self.limit = limit
        self.window = window
        self.ban = ban
        self._max = max_keys
        self._max_bans = max_bans
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        # key → (banned until on the monotonic clock, the ban), in order of expiry
        self._bans: OrderedDict[str, tuple[float, Ban]] = OrderedDict()
        # device ID → keys of its bans (its own, and the address bans it completed)
        self._by_id: dict[str, set[str]] = {}
        self._last_failure: OrderedDict[str, AuthFailure] = OrderedDict()
        self._added: list[Ban] = []
        self.bans = 0

    # --- counting ----------------------------------------------------------------------

    @property
    def active_count(self) -> int:
        """Bans held (some may have just ended): 0 means nobody is banned, and no key need be checked."""
        return len(self._bans)

    @property
    def failing(self) -> bool:
        """Whether any key has failures counted (else :meth:`succeed` has nothing to forget)."""
        return bool(self._failures)

    def banned(self, key: str, now: float) -> float:
        """Seconds left on ``key``'s ban, 0 if none."""
        entry = self._bans.get(key)
        return max(0.0, entry[0] - now) if entry is not None else 0.0

    def check(self, key: str, now: float) -> Ban | None:
        """``key``'s ban if it is still on (counting the attempt it refuses), else ``None``."""
        entry = self._bans.get(key)
        if entry is None or entry[0] <= now:
            return None
        entry[1].attempts += 1
        return entry[1]

    def fail(
        self,
        key: str,
        now: float,
        *,
        epoch: float | None = None,
        address: str = "",
        device_id: str = "",
        reason: str = "",
    ) -> bool:
        """Count a failure; return whether ``key`` is now banned.

        Args:
            key: what failed (:func:`address_key`, :func:`id_key`).
            now: monotonic seconds.
            epoch: wall-clock epoch seconds (the ban's shown times); ``now`` if not given.
            address / device_id: where it came from and the ID it claimed, kept in the ban.
            reason: why the ban, in words.
        """
        self._expire(now)
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque()
            if len(self._failures) > self._max:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
        while times and now - times[0] > self.window:
            times.popleft()
        times.append(now)
        if len(times) < self.limit:
            return False
        del self._failures[key]
        if len(self._bans) < self._max_bans or key in self._bans:
            wall = now if epoch is None else epoch
            ban = Ban(key, address or key.rpartition("@")[2].removeprefix("ip:"), device_id, wall, wall + self.ban,
                      reason, len(times))  # fmt: skip
            self._insert(now + self.ban, ban)
            self._added.append(ban)
        self.bans += 1
        return True

    def succeed(self, key: str) -> None:
        """Forget ``key``'s failures after a successful authentication (a ban stays until it ends)."""
        self._failures.pop(key, None)

    def note_failure(self, device_id: str, address: str, reason: str, epoch: float) -> None:
        """Remember ``device_id``'s last failed authentication (:meth:`last_failure`)."""
        self._last_failure.pop(device_id, None)
        self._last_failure[device_id] = AuthFailure(epoch, address, reason)
        if len(self._last_failure) > self._max:
            self._last_failure.popitem(last=False)

    def last_failure(self, device_id: str) -> AuthFailure | None:
        """``device_id``'s last failed authentication, if remembered."""
        return self._last_failure.get(device_id)

    # --- bans --------------------------------------------------------------------------

    def _insert(self, until: float, ban: Ban) -> None:
        self._remove(ban.key)
        self._bans[ban.key] = (until, ban)
        if ban.device_id:
            self._by_id.setdefault(ban.device_id, set()).add(ban.key)

    def _remove(self, key: str) -> Ban | None:
        entry = self._bans.pop(key, None)
        if entry is None:
            return None
        ban = entry[1]
        keys = self._by_id.get(ban.device_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_id[ban.device_id]
        return ban

    def _expire(self, now: float) -> None:
        bans = self._bans
        while bans:
            key, (until, _) = next(iter(bans.items()))
            if until > now:
                break
            self._remove(key)

    def take_added(self) -> list[Ban]:
        """The bans made since the last call (for the shell to store); the outbox is emptied."""
        added, self._added = self._added, []
        return added

    def active(self, now: float) -> list[Ban]:
        """Every ban still on, the one ending first first."""
        self._expire(now)
        return [ban for _, ban in self._bans.values()]

    def get(self, key: str, now: float) -> Ban | None:
        """The ban on ``key`` if it is still on."""
        entry = self._bans.get(key)
        return entry[1] if entry is not None and entry[0] > now else None

    def of_device(self, device_id: str, address: str, now: float) -> list[Ban]:
        """The bans that refuse ``device_id``: its own, those it completed, and its ``address``'s.

        The one ending last comes last; of two ending together, its own ID ban (the more telling).
        """
        keys = set(self._by_id.get(device_id, ()))
        if address:
            keys.add(address_key(address))
        found = [entry for key in keys if (entry := self._bans.get(key)) is not None and entry[0] > now]
        found.sort(key=lambda e: (e[0], e[1].key.startswith("id:")))
        return [ban for _, ban in found]

    def lift(self, key: str) -> Ban | None:
        """End the ban on ``key`` now (and forget its failures); the ban, or ``None`` if there was none."""
        self._failures.pop(key, None)
        return self._remove(key)

    def lift_device(self, device_id: str) -> list[Ban]:
        """End every ban that refuses ``device_id``, from every address; the bans lifted.

        Its own bans (``id:<ID>@<address>``) go, and with them the address bans they came with
        (the same wrong passwords ban the address too), and the address bans it completed:
        otherwise the device would stay refused at its address. Its failure counts are forgotten.
        """
        lifted = []
        addresses = set()
        for key in list(self._by_id.get(device_id, ())):
            ban = self._remove(key)
            if ban is not None:
                lifted.append(ban)
                addresses.add(ban.address)
        for address in addresses:
            ban = self._remove(address_key(address))
            if ban is not None:
                lifted.append(ban)
        prefix = f"id:{device_id}@"
        for key in [k for k in self._failures if k.startswith(prefix)]:
            addresses.add(key[len(prefix) :])
            del self._failures[key]
        for address in addresses:
            self._failures.pop(address_key(address), None)
        return lifted

    def restore(self, bans: Iterable[Ban], *, now: float, epoch: float) -> list[Ban]:
        """Take back stored bans at start-up; the ones that ended meanwhile are returned, not kept.

        A ban lasts at most ``ban`` seconds from now (the setting may have shrunk since it was
        stored), which also keeps :attr:`_bans` in order of expiry.
        """
        ended = []
        for ban in sorted(bans, key=lambda b: b.until):
            left = min(ban.until - epoch, self.ban)
            if left <= 0:
                ended.append(ban)
            elif len(self._bans) < self._max_bans:
                ban.until = epoch + left
                self._insert(now + left, ban)
        return ended

    def __len__(self) -> int:
        return len(self._failures) + len(self._bans)


@dataclass(slots=True)
class Refusal:
    """An ID at an address that the gateway refused, and how often.

    Attributes:
        device_id: the ID it claimed ("" if none could be read), cut at 40 characters.
        address: its source address.
        reason: the last refusal's stable word (``bad-password``, ``not-provisioned``, ``not-registered`` …).
        detail: the last refusal in words.
        count: refusals so far.
        first_seen / last_seen: wall-clock epoch seconds.
    """

    device_id: str
    address: str
    reason: str
    detail: str
    count: int
    first_seen: float
    last_seen: float


class RefusalLog:
    """The IDs and addresses refused, newest last, at most ``max_entries`` (oldest forgotten first).

    One entry per (ID, address): a million made-up IDs cost at most ``max_entries`` entries,
    and :attr:`forgotten` says how many were pushed out (a flood, or a busy site).
    """

    def __init__(self, *, max_entries: int = MAX_REFUSALS) -> None:
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], Refusal] = OrderedDict()
        self.forgotten = 0

    def record(self, device_id: str, address: str, reason: str, detail: str, epoch: float) -> None:
        """Count one refusal of ``device_id`` at ``address``."""
        key = (device_id[:_MAX_ID], address)
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = Refusal(key[0], address, reason, detail[:_MAX_DETAIL], 1, epoch, epoch)
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)
                self.forgotten += 1
            return
        self._entries.move_to_end(key)
        entry.count += 1
        entry.last_seen = epoch
        entry.reason = reason
        entry.detail = detail[:_MAX_DETAIL]

    def forget(self, device_id: str, address: str) -> None:
        """``device_id`` got in from ``address``: it no longer knocks."""
        if self._entries:
            self._entries.pop((device_id, address), None)

    def entries(self) -> list[Refusal]:
        """Every entry, the latest refused first."""
        return list(reversed(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)
