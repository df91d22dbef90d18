"""A pjsua2 user agent that registers with digest auth, run as a subprocess by test_pjsua.py.

Usage: pjsua_register.py HOST PORT TRANSPORT(udp|tcp) USER PASSWORD [KEEPALIVES]
Prints ``REGISTER <code>`` for the final answer, then sends KEEPALIVES GB/T 28181 keepalive
MESSAGEs and prints ``MESSAGE <code>`` for each; exits 0 (or 2 on timeout).
"""

from __future__ import annotations

import sys
import time

import pjsua2 as pj


class Account(pj.Account):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.code = 0

        self.message_codes: list[int] = []

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802 - pjsua2's name
        if prm.code >= 200:
            self.code = prm.code

    def onInstantMessageStatus(self, prm: pj.OnInstantMessageStatusParam) -> None:  # noqa: N802
        self.message_codes.append(prm.code)


KEEPALIVE = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
    "<SN>{sn}</SN>\r\n<DeviceID>{device}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
)


def main() -> int:
    host, port, transport, user, password = sys.argv[1:6]
    keepalives = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    kind = pj.PJSIP_TRANSPORT_TCP if transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
    ep.transportCreate(kind, tcfg)
    ep.libStart()

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{user}@3402000000"
    acfg.regConfig.registrarUri = f"sip:34020000002000000001@{host}:{port};transport={transport}"
    acfg.regConfig.timeoutSec = 3600
    acfg.regConfig.retryIntervalSec = 0
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
    acc = Account()
    acc.create(acfg)
    deadline = time.monotonic() + 10
    while acc.code == 0 and time.monotonic() < deadline:
        ep.libHandleEvents(20)
    print(f"REGISTER {acc.code}", flush=True)
    code = acc.code
    if code == 200 and keepalives:
        bcfg = pj.BuddyConfig()
        bcfg.uri = f"sip:34020000002000000001@{host}:{port};transport={transport}"
        bcfg.subscribe = False
        buddy = pj.Buddy()
        buddy.create(acc, bcfg)
        for sn in range(1, keepalives + 1):
            prm = pj.SendInstantMessageParam()
            prm.content = KEEPALIVE.format(sn=sn, device=user)
            prm.contentType = "Application/MANSCDP+xml"
            buddy.sendInstantMessage(prm)
            deadline = time.monotonic() + 5
            while len(acc.message_codes) < sn and time.monotonic() < deadline:
                ep.libHandleEvents(20)
            print(f"MESSAGE {acc.message_codes[-1] if len(acc.message_codes) >= sn else 0}", flush=True)
    acc.shutdown()
    ep.libDestroy()
    return 0 if code else 2


if __name__ == "__main__":
    sys.exit(main())
