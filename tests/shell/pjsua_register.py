"""A pjsua2 user agent that registers with digest auth, run as a subprocess by test_pjsua.py.

Usage: pjsua_register.py HOST PORT TRANSPORT(udp|tcp) USER PASSWORD
Prints ``REGISTER <code>`` for the final answer and exits 0 (or 2 on timeout).
"""

from __future__ import annotations

import sys
import time

import pjsua2 as pj


class Account(pj.Account):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.code = 0

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802 - pjsua2's name
        if prm.code >= 200:
            self.code = prm.code


def main() -> int:
    host, port, transport, user, password = sys.argv[1:6]
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
    acc.shutdown()
    ep.libDestroy()
    return 0 if code else 2


if __name__ == "__main__":
    sys.exit(main())
