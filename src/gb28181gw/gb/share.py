"""What each superior may see (cascade, PROTOCOL.md §9.3: "share only channels configured for that superior").

A :class:`ShareRule` is the configured ``share`` of one ``[[upstream]]`` (``"all"`` or a
list of device IDs, channel IDs and ID prefixes) with the operator's later
``gb28181gw upstream share|unshare`` applied. An item (a channel, with its device's ID
beside its own) follows the **most specific** entry that matches it: the longest shared or
unshared prefix of either ID, and on a tie the entry matching the item's own ID over the
one matching its device's. No entry matches: shared when the share is ``"all"``, hidden
otherwise. So sharing an NVR's ID shares all its channels, sharing ``340202`` shares a
district, unsharing one channel of a shared NVR hides just that channel, and sharing one
camera back after its NVR (or its district) was unshared shows just that camera — what an
operator who types ``upstream share NAME CHANNEL`` expects, whatever came before.

Every check is a handful of set lookups (one per distinct entry length, per ID), whatever
the number of entries: the catalog of 10,000 channels is filtered per superior on each query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

__all__ = ["ShareRule"]


@dataclass(frozen=True, slots=True)
class ShareRule:
    """The IDs one superior may see.

    Attributes:
        everything: ``share = "all"``: everything no entry hides.
        shared: IDs and prefixes shared (configured and added by the operator).
        unshared: IDs and prefixes the operator took back. An entry is in one set at most
            (sharing takes it out of ``unshared`` and the other way round); between entries
            that match one item, the most specific wins (module docstring).
    """

    everything: bool = True
    shared: frozenset[str] = frozenset()
    unshared: frozenset[str] = frozenset()
    # the entry lengths there are, longest first: a lookup tries only those
    _lengths: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lengths = tuple(sorted({len(e) for e in self.shared | self.unshared}, reverse=True))
        object.__setattr__(self, "_lengths", lengths)

    @classmethod
    def from_config(cls, share: object) -> ShareRule:
        """The rule of a ``share`` option as :mod:`gb28181gw.config` validated it."""
        if share == "all":
            return cls()
        assert isinstance(share, list | tuple)
        return cls(everything=False, shared=frozenset(str(x) for x in share))

    def _match(self, full: str) -> tuple[int, bool] | None:
        """The length and verdict (shared?) of the longest entry ``full`` starts with."""
        for n in self._lengths:
            if n <= len(full):
                prefix = full[:n]
                if prefix in self.unshared:
                    return n, False
                if prefix in self.shared:
                    return n, True
        return None

    def allows(self, *ids: str) -> bool:
        """Whether an item whose IDs are ``ids`` (its own first, then its device's) is shared."""
        best: tuple[int, bool] | None = None
        for full in ids:
            found = self._match(full)
            # strictly longer only: on a tie the earlier ID (the item's own) keeps its verdict
            if found is not None and (best is None or found[0] > best[0]):
                best = found
        return self.everything if best is None else best[1]

    def share(self, entries: Iterable[str]) -> ShareRule:
        """This rule with ``entries`` (IDs or prefixes) shared again or for the first time."""
        added = frozenset(entries)
        return replace(self, shared=self.shared | added, unshared=self.unshared - added)

    def unshare(self, entries: Iterable[str]) -> ShareRule:
        """This rule with ``entries`` taken back."""
        taken = frozenset(entries)
        return replace(self, shared=self.shared - taken, unshared=self.unshared | taken)

    def describe(self) -> str:
        """How ``gb28181gw upstreams`` shows the rule.

        ``all except A, B`` when entries were taken back, ``… but C`` for those shared back
        within them (a shared entry of an ``"all"`` rule matters only there); ``X, Y except Z``
        for a list.
        """
        if not self.everything:
            text = ", ".join(sorted(self.shared)) or "nothing"
            return text + (" except " + ", ".join(sorted(self.unshared)) if self.unshared else "")
        if not self.unshared:
            return "all"
        text = "all except " + ", ".join(sorted(self.unshared))
        return text + (" but " + ", ".join(sorted(self.shared)) if self.shared else "")
