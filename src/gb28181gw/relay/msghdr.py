"""The C structures ``recvmmsg`` and ``sendmmsg`` take (Linux, 64-bit), as ctypes layouts.

Apart from :mod:`.mmsg` so that it can be compiled by mypyc (``gb28181gw accelerate``), which
cannot compile a subclass of ``ctypes.Structure``: this module stays interpreted.
"""

from __future__ import annotations

import ctypes

__all__ = ["FLAGS_AT", "HDR", "IOV", "LEN_AT", "NAMELEN_AT", "NAME_AT", "Iovec", "Mmsghdr", "Msghdr"]


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint)]


HDR = ctypes.sizeof(Mmsghdr)
IOV = ctypes.sizeof(Iovec)
# the fields read and written per packet, as indexes into the arrays seen as 32- or 64-bit words
LEN_AT = Mmsghdr.msg_len.offset // 4
FLAGS_AT = (Mmsghdr.msg_hdr.offset + Msghdr.msg_flags.offset) // 4
NAME_AT = Msghdr.msg_name.offset // 8
NAMELEN_AT = Msghdr.msg_namelen.offset // 4
