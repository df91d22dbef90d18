"""A second gateway on a busy SIP port fails start-up; the first keeps its devices (issue 11, defect 2).

With ``SO_REUSEADDR`` on the UDP socket a second instance bound the same port and received the
devices' datagrams while the first watched them drift offline. Now both transports report a
busy port the same way: ``cannot listen on UDP 0.0.0.0:5060: address already in use``, exit
status 3.
"""

from __future__ import annotations

import socket
import subprocess

import pytest

from gb28181gw.app import STARTUP_FAILURE
from tests.process import free_port, serve, wait_ready


def free_sip_port() -> int:
    """A port free for UDP and TCP on every address."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port


def options(port: int) -> bytes:
    """Our OPTIONS over UDP to 127.0.0.1:``port`` and the answer's first line."""
    msg = (
        f"OPTIONS sip:34020000002000000001@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bKbusy1\r\n"
        "From: <sip:34020000001320000001@3402000000>;tag=b1\r\nTo: <sip:34020000002000000001@3402000000>\r\n"
        "Call-ID: busy-port-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(msg, ("127.0.0.1", port))
        return s.recv(65535).split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    ("transports", "failing"), [("udp", "UDP"), ("udp,tcp", "UDP"), ("tcp", "TCP")], ids=["udp", "both", "tcp"]
)
def test_second_gateway_on_the_same_port_fails_and_the_first_serves_on(transports: str, failing: str) -> None:
    port, admin = free_sip_port(), free_port()
    common = ("--listen", "0.0.0.0", "--port", str(port), "--set", f"sip.transports={transports}")
    first = serve(*common, "--admin-port", str(admin))
    second: subprocess.Popen[str] | None = None
    try:
        wait_ready(f"http://127.0.0.1:{admin}", first)
        second = serve(*common, "--admin-port", str(free_port()))
        try:
            out, _ = second.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("the second gateway started on a port the first holds")
        assert second.returncode == STARTUP_FAILURE, out
        assert f"start-up failed: cannot listen on {failing} 0.0.0.0:{port}: address already in use" in out
        assert first.poll() is None
        if "udp" in transports:
            assert options(port) == b"SIP/2.0 200 OK"  # the devices' datagrams still reach the first
        else:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        for proc in (second, first):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.communicate(timeout=15)
