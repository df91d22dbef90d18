"""What each superior may see (cascade, PROTOCOL.md §9.3: "share only channels configured for that superior").

A :class:`ShareRule` is the configured ``share`` of one ``[[upstream]]`` (``"all"`` or a
list of device IDs, channel IDs and ID prefixes) with the operator's later
``gb28181gw upstream share|unshare`` applied. A channel is shared when its own ID or its
device's ID starts with a shared entry and with no unshared one: so sharing an NVR's ID
shares all its channels, sharing ``340202`` shares a district, and unsharing one channel
of a shared NVR hides just that channel.

Every check is a handful of set lookups (one per prefix length of each ID), whatever the
number of entries: the catalog of 10,000 channels is filtered per superior on each query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

__all__ = ["ShareRule"]

#: The longest ID (and so prefix) there is.
_ID_LENGTH = 20


def _covered(ids: Iterable[str], entries: frozenset[str]) -> bool:
    if not entries:
        return False
    for full in ids:
        for n in range(1, min(len(full), _ID_LENGTH) + 1):
            if full[:n] in entries:
                return True
    return False


@dataclass(frozen=True, slots=True)
class ShareRule:
    """The IDs one superior may see.

    Attributes:
        everything: ``share = "all"``: everything not unshared.
        shared: IDs and prefixes shared (configured and added by the operator).
        unshared: IDs and prefixes the operator took back; they win over ``shared``.
    """

    everything: bool = True
    shared: frozenset[str] = frozenset()
    unshared: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, share: object) -> ShareRule:
        """The rule of a ``share`` option as :mod:`gb28181gw.config` validated it."""
        if share == "all":
            return cls()
        assert isinstance(share, list | tuple)
        return cls(everything=False, shared=frozenset(str(x) for x in share))

    def allows(self, *ids: str) -> bool:
        """Whether an item whose IDs (a channel's and its device's) are ``ids`` is shared."""
        if _covered(ids, self.unshared):
            return False
        return self.everything or _covered(ids, self.shared)

    def share(self, entries: Iterable[str]) -> ShareRule:
        """This rule with ``entries`` (IDs or prefixes) shared again or for the first time."""
        added = frozenset(entries)
        return replace(self, shared=self.shared | added, unshared=self.unshared - added)

    def unshare(self, entries: Iterable[str]) -> ShareRule:
        """This rule with ``entries`` taken back."""
        taken = frozenset(entries)
        return replace(self, shared=self.shared - taken, unshared=self.unshared | taken)

    def describe(self) -> str:
        """How ``gb28181gw upstreams`` shows the rule."""
        text = "all" if self.everything else ", ".join(sorted(self.shared)) or "nothing"
        if self.unshared:
            text += " except " + ", ".join(sorted(self.unshared))
        return text
