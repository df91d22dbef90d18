"""Media port allocation from a configured range (sans-I/O; the shell binds them).

RTP takes even ports and leaves the odd one above for RTCP (RFC 3550 §11). A released
port is not handed out again for a quarantine period, so late packets of a finished
stream do not land in a new one. Exhaustion is an error the caller turns into a 503.

Ports are picked at random among the free ones (a random source passed in, so tests are
deterministic): handed out in sequence, the next stream's port is known in advance and a
stranger spraying it with RTP can be there before the device (issue 10, defect 3). A pick
is O(1): the free ports sit in a list and the chosen one swaps places with the last.
"""

from __future__ import annotations

import random
from collections import deque

from gb28181gw.errors import Gb28181Error


class PortsExhausted(Gb28181Error):
    """Every port of the range is in use or cooling down (answer 503 to the requester)."""


class PortPool:
    """Even ports in ``[first, last]``.

    Args:
        first / last: the range (inclusive); ``first`` is rounded up to even.
        quarantine: seconds a released port rests before reuse (``media.port_quarantine``).
        rng: the random source ports are picked with (the shell passes :class:`random.SystemRandom`).
    """

    def __init__(self, first: int, last: int, *, quarantine: float, rng: random.Random) -> None:
        if not 0 < first <= last <= 65535:
            raise ValueError(f"bad port range {first}-{last}")
        first += first % 2
        self.first, self.last = first, last
        self.quarantine = quarantine
        self.rng = rng
        # descending, so that a source always answering ``n - 1`` hands ports out in order (tests)
        self._free: list[int] = list(range(first, last, 2))[::-1]
        self._cooling: deque[tuple[float, int]] = deque()
        self._used: set[int] = set()

    @property
    def capacity(self) -> int:
        """How many ports the range holds."""
        return len(range(self.first, self.last, 2))

    def allocate(self, now: float) -> int:
        """A free even port, picked at random.

        Raises:
            PortsExhausted: with the range and how many are in use.
        """
        while self._cooling and self._cooling[0][0] <= now:
            self._free.append(self._cooling.popleft()[1])
        if not self._free:
            raise PortsExhausted(
                f"no free media port in {self.first}-{self.last}: {len(self._used)} in use, "
                f"{len(self._cooling)} cooling down"
            )
        free = self._free
        i = self.rng.randrange(len(free))
        free[i], free[-1] = free[-1], free[i]
        port = free.pop()
        self._used.add(port)
        return port

    def release(self, port: int, now: float) -> None:
        """Give ``port`` back (ignored if it was not allocated: every teardown path may call it)."""
        if port in self._used:
            self._used.discard(port)
            self._cooling.append((now + self.quarantine, port))

    @property
    def in_use(self) -> int:
        """Ports allocated now."""
        return len(self._used)
