"""``recvmmsg``/``sendmmsg`` (Linux) through ctypes: one system call for many datagrams.

The relay spends most of a packet's cost on two system calls, ``recvfrom_into`` and ``sendto``,
and the exception that ends each wake-up's reads (issue 16). A :class:`Batch` receives up to
:data:`VLEN` datagrams with one ``recvmmsg`` into fixed slots of one buffer (each packet at
``SLOT * i + 2``: two bytes free before it, as in a stream's own buffer, for an RFC 4571 length),
and sends queued slots with one ``sendmmsg``, straight from those slots: no packet is copied.

A :class:`Batch` is reused by every stream of a forwarder: a batch is relayed before the next
one is read, so one buffer serves them all. Where libc lacks the calls (not Linux, not glibc or
musl), :func:`load` returns ``None`` and the forwarder keeps ``recvfrom_into``/``sendto``.
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
import socket
import struct
import sys
from typing import Any

from .msghdr import FLAGS_AT, HDR, IOV, LEN_AT, NAME_AT, NAMELEN_AT, Iovec, Mmsghdr

__all__ = ["LEN_AT", "NAME", "RETRY", "SLOT", "VLEN", "Batch", "Libc", "load", "peer", "sockaddr"]

#: Datagrams per ``recvmmsg``/``sendmmsg``.
VLEN = 32
#: Bytes a slot holds: the largest UDP payload (65,507 over IPv4, 65,527 over IPv6) and the two
#: bytes before it, so that no datagram is ever cut short (``recvfrom_into`` never cuts one either);
#: and 1,344 more so that slots are not a multiple of 4 KiB apart, where every packet's header
#: would fall into the same few cache sets.
SLOT = 2 + 65536 + 1344
#: Room for a sender's address: ``sockaddr_in6`` (an IPv4 socket writes the first 16 bytes only).
NAME = 28
MSG_TRUNC = 0x20
#: What "the socket has no room now" looks like (the datagram is dropped, not an error).
RETRY = _RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


class Libc:
    """The two calls, as ctypes functions; tests put fakes in their place (errors, short batches)."""

    def __init__(self, recvmmsg: Any, sendmmsg: Any) -> None:
        self.recvmmsg, self.sendmmsg = recvmmsg, sendmmsg


def load() -> Libc | None:
    """libc's ``recvmmsg`` and ``sendmmsg``, or ``None`` where it has not both (or pointers are
    not 64 bits wide: :class:`Batch` writes the send headers' addresses as 64-bit words)."""
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols, libc's among them
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    # no argtypes: converting each argument through them costs 0.4 µs a call; the ints go as C ints
    # and the pointers as the c_void_p objects Batch makes once
    recv.restype = send.restype = ctypes.c_int
    return Libc(recv, send)


def sockaddr(family: int, addr: tuple[Any, ...]) -> bytes | None:
    """``addr`` (a numeric host and a port) as the socket address the kernel takes, or ``None``
    when it is not one ``sendmmsg`` can take as is (a name, an IPv6 scope, another family)."""
    host, port = addr[0], addr[1]
    try:
        if family == socket.AF_INET:
            return struct.pack("=H", socket.AF_INET) + struct.pack(
                "!H4s8x", port, socket.inet_pton(socket.AF_INET, host)
            )
        if family == socket.AF_INET6 and "%" not in host:
            packed = socket.inet_pton(socket.AF_INET6, host)
            return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI16sI", port, 0, packed, 0)
    except (OSError, TypeError, struct.error):
        return None
    return None


def peer(name: bytes | bytearray | memoryview) -> Any:
    """The sender's address, as ``recvfrom_into`` gives it, from a raw ``sockaddr``."""
    family = int.from_bytes(name[:2], sys.byteorder)
    port = int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET:
        return (socket.inet_ntop(socket.AF_INET, bytes(name[4:8])), port)
    flowinfo, scope = int.from_bytes(name[4:8], "big"), int.from_bytes(name[24:28], sys.byteorder)
    host = socket.inet_ntop(socket.AF_INET6, bytes(name[8:24]))
    if scope:  # as Python spells it: with the interface (getnameinfo)
        host = socket.getnameinfo((host, port, flowinfo, scope), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
    return (host, port, flowinfo, scope)


class Batch:
    """Buffers and headers for a batch of ``vlen`` datagrams of up to ``slot - 2`` bytes each.

    Received datagram ``i`` lies at ``buf[offset(i) : offset(i) + length(i)]``; its sender's raw
    address at ``names[NAME * i : NAME * i + namelen]``. Send header ``j`` carries slot ``j``'s
    packet; the caller writes its length at ``send_iov[2 * j + 1]`` (and another slot's address at
    ``send_iov[2 * j]``, setting :attr:`moved`), then :meth:`send` sends headers ``0..count``.
    """

    def __init__(self, libc: Libc, vlen: int = VLEN, slot: int = SLOT) -> None:
        if slot % 2:
            raise ValueError(
                f"slot {slot}: slots must lie an even number of bytes apart (SSRCs are written as 16-bit words)"
            )
        self.libc, self.vlen, self.slot = libc, vlen, slot
        self.capacity = slot - 2
        self.buf = bytearray(vlen * slot)
        self.view = memoryview(self.buf)
        # the buffer as native 16-bit words: a packet starts, and so its SSRC lies, on an even offset
        self.halves = self.view.cast("H")
        self.names = bytearray(vlen * NAME)
        self.names_view = memoryview(self.names)
        base = ctypes.addressof((ctypes.c_char * len(self.buf)).from_buffer(self.buf))
        names = ctypes.addressof((ctypes.c_char * len(self.names)).from_buffer(self.names))
        # receiving: each header's one iovec is its slot (past the two free bytes), its name a NAME slot
        self._rhdr = bytearray(vlen * HDR)
        self._riov = bytearray(vlen * IOV)
        rhdr = (Mmsghdr * vlen).from_buffer(self._rhdr)
        riov = (Iovec * vlen).from_buffer(self._riov)
        for i in range(vlen):
            riov[i].iov_base, riov[i].iov_len = base + i * slot + 2, self.capacity
            h = rhdr[i].msg_hdr
            h.msg_name, h.msg_namelen = names + i * NAME, NAME
            h.msg_iov, h.msg_iovlen = ctypes.addressof(riov[i]), 1
        # The kernel writes back each header's msg_len, msg_flags and msg_namelen (the size of the
        # family's address: the same for every socket of one forwarder, whose streams bind one
        # host), and reads nothing that it writes: the headers are not reset between calls.
        self._rptr = ctypes.c_void_p(ctypes.addressof(rhdr))
        self.lengths = memoryview(self._rhdr).cast("I")  # length(i) = lengths[LEN_AT + stride * i]
        self.stride = HDR // 4
        # sending: header j sends slot j's packet (its iovec's length set per packet) to one destination
        self._shdr = bytearray(vlen * HDR)
        self._siov = bytearray(vlen * IOV)
        shdr = (Mmsghdr * vlen).from_buffer(self._shdr)
        siov = (Iovec * vlen).from_buffer(self._siov)
        for i in range(vlen):
            siov[i].iov_base = base + i * slot + 2
            shdr[i].msg_hdr.msg_iov, shdr[i].msg_hdr.msg_iovlen = ctypes.addressof(siov[i]), 1
        self._sptr = ctypes.c_void_p(ctypes.addressof(shdr))
        self._sat = ctypes.addressof(shdr)
        self._shdr64 = memoryview(self._shdr).cast("Q")
        self._shdr32 = memoryview(self._shdr).cast("I")
        # where :meth:`put` writes (send header j's name at hdr64[j * h64 + name_at], its length at
        # hdr32[j * h32 + namelen_at]): for a caller that writes them itself, once a packet
        self.hdr64, self.hdr32, self.h64, self.h32 = self._shdr64, self._shdr32, HDR // 8, HDR // 4
        self.name_at, self.namelen_at = NAME_AT, NAMELEN_AT
        self._dest: Any = None  # the ctypes buffer the send headers' names point at now
        self._dest_upto = 0  # how many send headers point at it
        self.slot_at = base + 2  # the address of slot 0's packet
        self.send_iov = memoryview(self._siov).cast("Q")  # header j's (address, length) at 2j, 2j + 1
        # header j's length as a 32-bit word (its upper half stays 0) at 4j, for strided copies from
        # :attr:`lengths`; and each slot's packet address, for strided copies into :attr:`send_iov`
        self.send_lengths = memoryview(self._siov).cast("I")[2 if sys.byteorder == "little" else 3 :]
        self.addresses = memoryview(array.array("Q", [base + i * slot + 2 for i in range(vlen)]))
        self.moved = False  # a send header carries another slot than its own
        self._hold = (rhdr, riov, shdr, siov)  # the ctypes views keep the buffers' exports alive

    def offset(self, i: int) -> int:
        """Where datagram ``i`` starts in :attr:`buf`."""
        return i * self.slot + 2

    def length(self, i: int) -> int:
        """Bytes of datagram ``i`` (of the last :meth:`receive`)."""
        return int(self.lengths[LEN_AT + self.stride * i])

    def truncated(self, i: int) -> bool:
        """Datagram ``i`` was longer than a slot (cut short: ``MSG_TRUNC``)."""
        return bool(self.lengths[FLAGS_AT + self.stride * i] & MSG_TRUNC)

    def sender(self, i: int) -> Any:
        """Datagram ``i``'s sender, as ``recvfrom_into`` gives it."""
        namelen = self.lengths[NAMELEN_AT + self.stride * i]
        return peer(self.names[i * NAME : i * NAME + namelen])

    def receive(self, fd: int) -> int:
        """Read up to ``vlen`` datagrams from ``fd`` (non-blocking): how many (0: none waiting).

        Raises:
            OSError: an error other than "would block" (e.g. an ICMP error for something sent earlier).
        """
        k: int = self.libc.recvmmsg(fd, self._rptr, self.vlen, socket.MSG_DONTWAIT, None)
        if k >= 0:
            return k
        code = ctypes.get_errno()
        if code in _RETRY:
            return 0
        raise OSError(code, os.strerror(code))

    def send(self, fd: int, count: int, dest: Any, destlen: int, total: int) -> tuple[int, int, int, int]:
        """Send the ``count`` queued datagrams to ``dest`` (a ctypes buffer holding a ``sockaddr``
        of ``destlen`` bytes); ``total`` is their size in all. As ``sendto`` one by one would: a
        datagram the socket has no room for is dropped, one that fails otherwise counted as an error,
        and the others still go. Returns (sent, bytes sent, dropped, errors)."""
        if self._dest is not dest or self._dest_upto < count:
            address, h64, h32 = ctypes.addressof(dest), self._shdr64, self._shdr32
            for j in range(count):
                h64[j * (HDR // 8) + NAME_AT] = address
                h32[j * (HDR // 4) + NAMELEN_AT] = destlen
            if self._dest is not dest:
                self._dest, self._dest_upto = dest, count
            else:
                self._dest_upto = count
        failed = self._transmit(fd, count)
        if not failed:  # all went (the common case)
            return count, total, 0, 0
        dropped = sum(1 for _, code in failed if code in _RETRY)
        lost = sum(self.send_iov[2 * j + 1] for j, _ in failed)
        return count - len(failed), total - lost, dropped, len(failed) - dropped

    def put(self, j: int, off: int, n: int, dest_at: int, destlen: int) -> None:
        """Point send header ``j`` at the packet ``buf[off : off + n]`` and at the destination whose
        ``sockaddr`` of ``destlen`` bytes lies at address ``dest_at`` (a batch to many destinations:
        the shared port's, :meth:`send_each`)."""
        self.send_iov[2 * j] = self.slot_at - 2 + off
        self.send_iov[2 * j + 1] = n
        self._shdr64[j * (HDR // 8) + NAME_AT] = dest_at
        self._shdr32[j * (HDR // 4) + NAMELEN_AT] = destlen
        self.moved = True
        self._dest = None  # :meth:`send` writes its destination into every header again

    def forget_dest(self) -> None:
        """The send headers' destinations were written (as :meth:`put` does): :meth:`send` writes its own again."""
        self._dest = None

    def send_each(self, fd: int, count: int) -> list[tuple[int, int]]:
        """Send headers ``0..count`` as :meth:`put` set them: the ones that did not go, as
        (header, errno: ``EAGAIN`` when the socket had no room, then the datagram is dropped)."""
        return self._transmit(fd, count)

    def _transmit(self, fd: int, count: int) -> list[tuple[int, int]]:
        # sendmmsg until every header has gone or failed; a failed datagram is skipped, as sendto
        # one by one would (which retries EINTR). Returns the failed ones (header, errno).
        m = self.libc.sendmmsg(fd, self._sptr, count, socket.MSG_DONTWAIT)
        failed: list[tuple[int, int]] = []
        if m != count:
            done = 0
            again = False  # the first call's answer is in m already
            while done < count:
                if again:
                    m = self.libc.sendmmsg(
                        fd, ctypes.c_void_p(self._sat + done * HDR), count - done, socket.MSG_DONTWAIT
                    )
                again = True
                if m > 0:
                    done += m
                    continue
                code = ctypes.get_errno() if m < 0 else 0
                if code == errno.EINTR:
                    continue
                failed.append((done, code))
                done += 1
        self._restore(count)
        return failed

    def _restore(self, count: int) -> None:
        if self.moved:  # headers point back at their own slots
            self.moved = False
            self.send_iov[: 2 * count : 2] = self.addresses[:count]
