"""RFC 3261 transaction timers (§17, Table 4), derived from T1, T2 and T4.

A :class:`TimerConfig` is passed to the endpoint; there are no module globals,
so two stacks (or two tests) never share timer values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1/T2/T4 and the timers derived from them, in seconds.

    Attributes:
        t1: RTT estimate, initial retransmission interval (default 500 ms).
        t2: maximum retransmission interval for non-INVITE requests and INVITE responses (4 s).
        t4: maximum time a message stays in the network (5 s).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2):
            raise ValueError("timers: need 0 < T1 <= T2")
        if self.t4 <= 0:
            raise ValueError("timers: need T4 > 0")

    @property
    def a(self) -> float:
        """Timer A: initial INVITE retransmit interval (UDP), doubles each time."""
        return self.t1

    @property
    def b(self) -> float:
        """Timer B: INVITE client transaction timeout, 64·T1."""
        return 64 * self.t1

    def d(self, reliable: bool) -> float:
        """Timer D: wait for response retransmits, ≥ 32 s on UDP, 0 on TCP."""
        return 0.0 if reliable else max(32.0, 64 * self.t1)

    @property
    def e(self) -> float:
        """Timer E: initial non-INVITE retransmit interval (UDP)."""
        return self.t1

    @property
    def f(self) -> float:
        """Timer F: non-INVITE client transaction timeout, 64·T1."""
        return 64 * self.t1

    @property
    def g(self) -> float:
        """Timer G: initial INVITE final-response retransmit interval (UDP)."""
        return self.t1

    @property
    def h(self) -> float:
        """Timer H: wait time for ACK receipt, 64·T1."""
        return 64 * self.t1

    def i(self, reliable: bool) -> float:
        """Timer I: wait time for ACK retransmits, T4 on UDP, 0 on TCP."""
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool) -> float:
        """Timer J: wait time for non-INVITE request retransmits, 64·T1 on UDP, 0 on TCP."""
        return 0.0 if reliable else 64 * self.t1

    def k(self, reliable: bool) -> float:
        """Timer K: wait time for response retransmits, T4 on UDP, 0 on TCP."""
        return 0.0 if reliable else self.t4

    @property
    def l(self) -> float:  # noqa: E743 - RFC 6026 names it L
        """Timer L (RFC 6026): INVITE server stays Accepted, 64·T1."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """Timer M (RFC 6026): INVITE client stays Accepted, 64·T1."""
        return 64 * self.t1
