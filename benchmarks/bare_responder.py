"""A bare uvloop UDP responder: the floor a Python registrar can reach, for the benchmarks' same-run baseline.

What it does per datagram, and nothing more:

  REGISTER without Authorization  401 with ``WWW-Authenticate: Digest realm, nonce`` (a fresh random
                                  nonce, remembered)
  REGISTER with Authorization     checks that the nonce is one it issued (and takes it: one use) and
                                  that the MD5 response is right for the username, realm, nonce and
                                  uri (RFC 2617 without qop: MD5(HA1:nonce:HA2)); 200 if so, else 403
  MESSAGE                         200
  anything else                   405

Responses copy Via, From, Call-ID and CSeq and add a To tag, as RFC 3261 §8.2.6 asks; no
transactions, no retransmission absorption, no store, no metrics. Same pinning as the gateway
(``benchmarks/bench_register.py --target bare|both`` starts it on CPU 0):

    python benchmarks/bare_responder.py --port 5060 --password 12345678
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket

import uvloop

REALM = "3402000000"
#: Issued nonces kept at most: a storm of 100,000 devices stays inside it, and a flood cannot grow it.
MAX_NONCES = 1 << 20


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data).hexdigest().encode()


def _param(auth: bytes, name: bytes) -> bytes:
    """A parameter of a Digest Authorization header, quoted or not."""
    i = auth.find(name + b"=")
    while i > 0 and auth[i - 1] not in b" ,\t":
        i = auth.find(name + b"=", i + 1)
    if i < 0:
        return b""
    i += len(name) + 1
    if auth[i : i + 1] == b'"':
        return auth[i + 1 : auth.find(b'"', i + 1)]
    end = auth.find(b",", i)
    return auth[i : end if end >= 0 else len(auth)].strip()


class Responder(asyncio.DatagramProtocol):
    def __init__(self, password: str) -> None:
        self.password = password.encode()
        self.nonces: dict[bytes, None] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.tag = os.urandom(4).hex().encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's UDPTransport is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        head, _, _ = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] != b"SIP/2.0":
            return  # a response, or garbage: nothing to answer
        method = parts[0]
        copied: list[bytes] = []
        auth = b""
        to = b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key in (b"via", b"v", b"from", b"f", b"call-id", b"i", b"cseq"):
                copied.append(line)
            elif key in (b"to", b"t"):
                to = value.strip()
            elif key == b"authorization":
                auth = value.strip()
        if b";tag=" not in to:
            to += b";tag=" + self.tag
        if method == b"REGISTER":
            if not auth:
                nonce = os.urandom(12).hex().encode()
                if len(self.nonces) >= MAX_NONCES:
                    del self.nonces[next(iter(self.nonces))]
                self.nonces[nonce] = None
                status = b"401 Unauthorized"
                extra = (
                    b'WWW-Authenticate: Digest realm="' + REALM.encode() + b'",nonce="' + nonce + b'",algorithm=MD5\r\n'
                )
            else:
                status, extra = self._verify(auth, method), b""
        elif method == b"MESSAGE":
            status, extra = b"200 OK", b""
        else:
            status, extra = b"405 Method Not Allowed", b""
        out = b"SIP/2.0 " + status + b"\r\n" + b"\r\n".join(copied) + b"\r\nTo: " + to + b"\r\n" + extra
        out += b"Content-Length: 0\r\n\r\n"
        assert self.transport is not None
        self.transport.sendto(out, addr)

    def _verify(self, auth: bytes, method: bytes) -> bytes:
        nonce = _param(auth, b"nonce")
        if nonce not in self.nonces:
            return b"401 Unauthorized"  # not ours, or already used: replay
        del self.nonces[nonce]
        username, realm, uri = _param(auth, b"username"), _param(auth, b"realm"), _param(auth, b"uri")
        ha1 = _md5(username + b":" + realm + b":" + self.password)
        ha2 = _md5(method + b":" + uri)
        if _param(auth, b"response") != _md5(ha1 + b":" + nonce + b":" + ha2):
            return b"403 Forbidden"
        return b"200 OK"


async def serve(host: str, port: int, password: str) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((host, port))
    await loop.create_datagram_endpoint(lambda: Responder(password), sock=sock)
    await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--password", default="12345678")
    args = ap.parse_args()
    uvloop.run(serve(args.host, args.port, args.password))


if __name__ == "__main__":
    main()
