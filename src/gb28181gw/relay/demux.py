"""Which stream a packet on a shared media port belongs to (``media.shared_port``, issue 16).

With one UDP port per relay worker, the port no longer says whose a packet is: the stream is
found by the packet's SSRC and its sender's address. The ``y=`` SSRC we offer is unique among
live streams, so a device that sends it is found at once; a device that sends another SSRC
than it was told (PROTOCOL.md §11.5 M1) can only be told by where it sends from. This module
holds that decision and nothing else: no sockets, no clock (the forwarder feeds it the
packet's SSRC and sender, and tells it when a stream's SSRC or source changes).

The rules, in order (``resolve``):

1. A stream expects this SSRC. One from this very sender (its latched source) is it; else the
   one still waiting for its first packet from the sender's host (two devices that answered the
   same ``y=``), more than one being *ambiguous*. None of them can be the sender's: the sender
   may be a device sending that SSRC as its own wrong one (two cameras of one make with one
   constant SSRC, the first one's stream following it already), found as in rule 2 when its host
   is none of theirs (from their host it is one of them sending from a new port); if rule 2 finds
   none and one stream expects the SSRC, it is given the packet and counts it as ``wrong_source``
   exactly as on a port of its own.
2. No stream expects the SSRC (a device sending a wrong one). The streams that could be its
   sender's are those expecting media from the sender's host that have no source yet, and
   those whose latched source is this sender. Exactly one: it is given the packet (and, as
   on a port of its own, follows that SSRC after ``SSRC_LATCH_PACKETS`` packets of it and
   nothing else). More than one (two streams of one NVR from one host, one of them or both
   sending wrong SSRCs): *ambiguous*: dropped, counted and logged, never guessed.
3. Nothing matches: a stranger's packet, dropped and counted (``unknown``); it is never sent on.

A closed stream's SSRC from its sender (its latched source, or its host when it had none) stays
its own for ``GONE_SECONDS`` (``remove``): its device may send on a while after the BYE (or ignore
it), and on a port of its own those packets reach a closed port. Here they would be rule 2's wrong
SSRC for a stream of the same host awaiting media (the NVR's next channel), followed after
``SSRC_LATCH_PACKETS``: so they are strangers' (``unknown``) until then.

What this costs against per-stream ports: a stream whose device sends a wrong SSRC is found
only while it is the one stream of its device's host that could be; the ambiguous case, which
per-stream ports tell apart by port, gets no media here (the metric says so, and the log names
the host and streams: such a device wants ``media.shared_port = false``).
"""

from __future__ import annotations

import logging
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Demux", "Demuxed"]

log = logging.getLogger("gb28181gw.relay")

#: (host, SSRC) pairs whose ambiguity was logged already (then only counted), at most this many.
WARNED_MAX = 1024
#: Seconds a closed stream's SSRC from its sender is nobody's (never a wrong SSRC of a neighbour's):
#: as long as a closed stream's own port rests before reuse (``media.port_quarantine``'s default).
GONE_SECONDS = 5.0


class Demuxed(Protocol):
    """What the demultiplexer reads of a stream (the forwarder's ``RelayStream``)."""

    id: str
    ssrc: int  # the SSRC expected now
    source: Any  # the (host, port) latched on its first good packet, or None
    source_host: str | None  # the only host media is taken from (None: the first sender's)


S = TypeVar("S", bound=Demuxed)


class Demux(Generic[S]):
    """The streams of one shared port, indexed by SSRC and by expected host.

    Attributes:
        fast: SSRC → the one stream expecting it, once that stream has a latched source (the
            forwarder's per-packet lookup; it still compares the sender with the source).
        unknown: packets no stream could be found for (strangers), dropped.
        ambiguous: packets more than one stream could be for, dropped.
    """

    def __init__(self) -> None:
        self.fast: dict[int, S] = {}
        self._by_ssrc: dict[int, list[S]] = {}
        self._by_host: dict[str, list[S]] = {}
        self._keys: dict[str, tuple[int, str | None, Any]] = {}  # what each stream is indexed under now
        self._warned: set[tuple[str, int]] = set()
        # (SSRC, host) of closed streams → (their source port, None: any; until when), oldest first
        self._gone: dict[tuple[int, str], tuple[int | None, float]] = {}
        self.unknown = 0
        self.ambiguous = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, st: S) -> None:
        """Index a new stream of the port."""
        self._keys[st.id] = (st.ssrc, st.source_host, st.source)
        self._by_ssrc.setdefault(st.ssrc, []).append(st)
        if st.source_host is not None:
            self._by_host.setdefault(st.source_host, []).append(st)
        self._refresh(st.ssrc)

    def remove(self, st: S, now: float) -> None:
        """Forget a stream (closed at ``now``): none of its packets finds it after this, nor, for
        ``GONE_SECONDS``, a stream of its host that awaits media (the module's docstring)."""
        key = self._keys.get(st.id)
        if key is None:
            return
        self._unindex(st)
        ssrc, host, source = key
        gone = self._gone
        while gone:  # the oldest first: drop what has expired
            oldest = next(iter(gone))
            if gone[oldest][1] > now:
                break
            del gone[oldest]
        at = source[0] if source is not None else host
        if at is not None:
            where = (ssrc, at)
            gone.pop(where, None)  # to the end: the newest
            gone[where] = (source[1] if source is not None else None, now + GONE_SECONDS)

    def _unindex(self, st: S) -> None:
        key = self._keys.pop(st.id, None)
        if key is None:
            return
        ssrc, host, _ = key
        _discard(self._by_ssrc, ssrc, st)
        if host is not None:
            _discard(self._by_host, host, st)
        self._refresh(ssrc)

    def update(self, st: S) -> None:
        """The stream's SSRC, expected host or latched source may have changed: index it anew."""
        key = self._keys.get(st.id)
        if key is None or key == (st.ssrc, st.source_host, st.source):
            return
        self._unindex(st)
        self.add(st)
        if key[0] != st.ssrc:
            self._refresh(key[0])

    def resolve(self, ssrc: int, addr: Any, now: float) -> S | None:
        """The stream a packet of ``ssrc`` from ``addr`` (host, port, …) received at ``now`` is for,
        or ``None`` (counted)."""
        host = addr[0]
        same = self._by_ssrc.get(ssrc)
        if same:
            exact = [s for s in same if s.source == addr]
            if not exact:
                exact = [s for s in same if s.source is None and s.source_host in (None, host)]
            if exact:
                return self._one(ssrc, addr, exact)
            # none of its streams can be this sender's: a device of another host may send it as its
            # own wrong SSRC (M1: cameras of one make sending one constant SSRC), found by its host
            # (rule 2); from a host of its streams it is theirs from a new port (a device restarting
            # its sender): its one stream counts it as from a wrong source, as on a port of its own
            theirs = any(s.source_host == host or (s.source is not None and s.source[0] == host) for s in same)
            senders = None if theirs else self._senders(ssrc, addr, now)
            if senders or len(same) > 1:
                return self._one(ssrc, addr, senders or [])
            return same[0]
        senders = self._senders(ssrc, addr, now)
        if senders is None:
            self.unknown += 1  # a closed stream's: never a neighbour's wrong SSRC
            return None
        return self._one(ssrc, addr, senders)

    def _senders(self, ssrc: int, addr: Any, now: float) -> list[S] | None:
        # rule 2, a wrong SSRC (M1): the streams the sender can be the device of, or None when the
        # SSRC from this sender is a closed stream's (GONE_SECONDS)
        host = addr[0]
        if self._gone:
            gone = self._gone.get((ssrc, host))
            if gone is not None and gone[0] in (None, addr[1]):
                if gone[1] > now:
                    return None
                del self._gone[(ssrc, host)]
        return [s for s in self._by_host.get(host, ()) if s.source is None or s.source == addr]

    def _one(self, ssrc: int, addr: Any, streams: list[S]) -> S | None:
        # the stream if there is one; none is a stranger, several are ambiguous (counted, not guessed)
        if len(streams) == 1:
            return streams[0]
        if streams:
            self._ambiguous(ssrc, addr, streams)
        else:
            self.unknown += 1
        return None

    def _ambiguous(self, ssrc: int, addr: Any, streams: list[S]) -> None:
        self.ambiguous += 1
        key = (addr[0], ssrc)
        if key not in self._warned:
            if len(self._warned) >= WARNED_MAX:
                self._warned.clear()
            self._warned.add(key)
            log.warning(
                "shared media port: packets from one source could be any of several streams (a device sending "
                "a wrong SSRC, PROTOCOL.md §11.5 M1): dropped, never guessed; give this device per-stream ports "
                "(media.shared_port = false)",
                extra={"source": f"{addr[0]}:{addr[1]}", "ssrc": ssrc, "streams": ",".join(s.id for s in streams)},
            )

    def _refresh(self, ssrc: int) -> None:
        same = self._by_ssrc.get(ssrc)
        if same is not None and len(same) == 1 and same[0].source is not None:
            self.fast[ssrc] = same[0]
        else:
            self.fast.pop(ssrc, None)


def _discard(index: dict[Any, list[S]], key: Any, st: S) -> None:
    entries = index.get(key)
    if entries is None:
        return
    entries[:] = [s for s in entries if s is not st]
    if not entries:
        del index[key]
