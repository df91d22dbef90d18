"""Cut whole SIP messages out of a TCP byte stream (RFC 3261 §18.3).

Over a stream, Content-Length is what frames a message. The framer is fed
whatever ``recv`` returned — half a header, three messages at once, one byte
at a time — and hands back whole messages. CRLF keep-alives (RFC 5626 §3.5.1:
a double CRLF "ping") between messages are reported so the shell can answer
them with a single CRLF "pong".
"""

from __future__ import annotations

import re

from gb28181gw.errors import SipParseError

from .message import DEFAULT_LIMITS, Limits

#: Reported by :meth:`StreamFramer.feed` for each double-CRLF keep-alive ping.
PING = b"\r\n\r\n"
#: What to answer a ping with.
PONG = b"\r\n"

_CONTENT_LENGTH_RE = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)")


class StreamFramer:
    """Accumulates stream bytes and yields whole messages.

    After :meth:`feed` raises :class:`SipParseError` the stream has lost its
    framing: the shell answers if it can and closes the connection.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._buf = bytearray()
        self._limits = limits
        self._scan_from = 0
        self._crlfs = 0

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the whole messages (and :data:`PING` markers) now complete.

        Raises:
            SipParseError: 513 when a header section or message exceeds the limits,
                400 when Content-Length is malformed. Messages completed before the
                error are lost with the stream; the caller closes the connection.
        """
        buf = self._buf
        buf += data
        out: list[bytes] = []
        limits = self._limits
        while buf:
            if self._scan_from == 0:
                # CRLFs between messages: keep-alives (RFC 5626) or stray line ends (§7.5)
                n = 0
                while n + 1 < len(buf) and buf[n] == 13 and buf[n + 1] == 10:
                    n += 2
                if n:
                    del buf[:n]
                    self._crlfs += n // 2
                    while self._crlfs >= 2:
                        self._crlfs -= 2
                        out.append(PING)
                    continue
                if buf[:1] == b"\r" and len(buf) == 1:
                    break
                self._crlfs = 0
            end = buf.find(b"\r\n\r\n", max(0, self._scan_from - 3))
            sep = 4
            if end < 0:
                lf = buf.find(b"\n\n", max(0, self._scan_from - 1))
                if lf >= 0:
                    end, sep = lf, 2
            if end < 0:
                if len(buf) > limits.max_message_size:
                    raise SipParseError(f"header section exceeds {limits.max_message_size} bytes", 513)
                self._scan_from = len(buf)
                break
            self._scan_from = 0
            head = bytes(buf[:end])
            match = _CONTENT_LENGTH_RE.search(head)
            length = 0
            if match is not None:
                text = match.group(1).strip()
                if not text.isdigit() or len(text) > 10:
                    raise SipParseError(f"malformed Content-Length {text[:20]!r} on a stream")
                length = int(text)
            total = end + sep + length
            if length > limits.max_body_size:
                raise SipParseError(f"body of {length} bytes exceeds {limits.max_body_size}", 413)
            if total > limits.max_message_size:
                raise SipParseError(f"message of {total} bytes exceeds {limits.max_message_size}", 513)
            if len(buf) < total:
                # header seen, body incomplete: remember not to rescan the header
                self._scan_from = end + 1 if end else 1
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out
