"""Instructions per request, the gateway's and the bare responder's: a measure of the work the code does
that the machine's noise cannot move.

Why: on a shared virtual machine the CPU time of one request moves by a third within the hour
(``benchmarks/bench_register.py --repeat``) and doubles after an idle spell (``benchmarks/bench_wake.py``),
so a change worth a few per cent cannot be seen in it. The number of instructions executed is the same
from run to run (to 0.3 % and better here): valgrind's cachegrind counts them. It does not
see what the machine adds (cache misses, the host's share of the core), only the code's own work, and
the two columns are that work for the gateway and for the bare responder
(``benchmarks/bare_responder.py``) on the same messages, in the same kind of process.

How: each figure is the difference between two runs of one child process under ``valgrind
--tool=cachegrind`` (start-up, imports and the registering of devices cancel out): registrations,
``--devices`` devices against twice as many; keepalives, one round from every device against
``1 + --rounds``. Every run builds the same messages and computes the same digest answers, fed or not,
so the generator's own work cancels too. The gateway is the in-process one of ``benchmarks/bench_quick.py``
(a real :class:`~gb28181gw.app.Gateway`, its UDP socket replaced by a sink), compiled or not as the
environment says (``GB28181GW_COMPILED``; the first line says which). Python's hash seed is fixed, so
the dicts behave alike in every run. About two minutes a gateway run (valgrind is ~50 times slower).

    python benchmarks/bench_instructions.py
    python benchmarks/bench_instructions.py --devices 2000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop  # noqa: E402

import bench_quick as bq  # noqa: E402
from bare_responder import Responder  # noqa: E402
from gb28181gw import compiled  # noqa: E402
from gb28181gw.sip.peer import Peer  # noqa: E402

#: Nonces as long as each target's (the gateway's: a 20-digit stamp and a 32-digit MAC; the bare
#: responder's: 12 random bytes in hex), for the digest answers computed but not sent (see child).
_NONCE = {"gateway": "0" * 52, "bare": "0" * 24}
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def child(target: str, fed: int, devices: int, rounds: int, total_rounds: int) -> None:
    """Build messages for ``devices`` devices and ``total_rounds`` keepalive rounds; feed the
    registrations of the first ``fed`` devices and then ``rounds`` rounds of keepalives to ``target``."""
    challenges = [bq.register(n, 1) for n in range(devices)]
    # for every device, fed or not: what is built must not depend on ``fed``, or the building of the
    # keepalives would count in the registrations' difference (it did: ~85,000 instructions each)
    rounds_msgs = [[bq.keepalive(n, r) for n in range(devices)] for r in range(total_rounds)]
    peers = [Peer("UDP", "127.0.0.1", 20000 + p) for p in range(bq.PORTS)]
    dummy = f'nonce="{_NONCE[target]}"'.encode()

    if target == "bare":
        responder = Responder(bq.PASSWORD)
        sink = bq.Sink()
        responder.transport = sink  # type: ignore[assignment]
        for n in range(devices):
            if n < fed:
                responder.datagram_received(challenges[n], ("127.0.0.1", 20000 + n % bq.PORTS))
                answer = bq.register(n, 2, bq.authorization(n, sink.last))
                responder.datagram_received(answer, ("127.0.0.1", 20000 + n % bq.PORTS))
                if not sink.last.startswith(b"SIP/2.0 200"):
                    raise SystemExit(f"bare: expected a 200, got {sink.last[:40]!r}")
            else:
                bq.register(n, 2, bq.authorization(n, dummy))
        for msgs in rounds_msgs[:rounds]:
            for n, data in enumerate(msgs[:fed]):
                responder.datagram_received(data, ("127.0.0.1", 20000 + n % bq.PORTS))
        return

    async def gateway() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
            # the write-behind only at stop(), once, whatever the run's length: its timer would
            # otherwise fire at the sleep below in one run and not in another (valgrind's pace)
            gw = await bq.start_gateway(tmp, quick=True, extra={"store.flush_interval": "3600"})
            print(f"compiled: {compiled.label()}")  # what the gateway imported it with (see instructions)
            try:
                stack = gw.stack
                sink: bq.Sink = stack._udp4  # type: ignore[assignment]
                loop = asyncio.get_running_loop()
                for n in range(devices):
                    if n < fed:
                        peer = peers[n % bq.PORTS]
                        stack.feed(challenges[n], peer, loop.time())
                        stack.pump()
                        stack.feed(bq.register(n, 2, bq.authorization(n, sink.last)), peer, loop.time())
                        stack.pump()
                        if not sink.last.startswith(b"SIP/2.0 200"):
                            raise SystemExit(f"device {n}: expected a 200, got {sink.last[:40]!r}")
                    else:
                        bq.register(n, 2, bq.authorization(n, dummy))
                await asyncio.sleep(0)  # the write-behind and listeners get their turn, as between wake-ups
                for msgs in rounds_msgs[:rounds]:
                    for n, data in enumerate(msgs[:fed]):
                        stack.feed(data, peers[n % bq.PORTS], loop.time())
                        stack.pump()
                    if not sink.last.startswith(b"SIP/2.0 200"):
                        raise SystemExit(f"keepalive: expected a 200, got {sink.last[:40]!r}")
            finally:
                await gw.stop()

    uvloop.run(gateway())


def instructions(target: str, fed: int, devices: int, rounds: int, total_rounds: int) -> tuple[int, str]:
    """Instructions one child run executes, counted by cachegrind, and the modules compiled by mypyc
    that the gateway ran with (``""`` for the bare responder)."""
    cmd = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, __file__, "--child", target,
        "--fed", str(fed), "--devices", str(devices), "--rounds", str(rounds), "--total-rounds", str(total_rounds),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    found = _REFS.findall(done.stderr)
    if done.returncode != 0 or not found:
        tail = done.stderr.strip().splitlines()[-5:]
        raise SystemExit(f"{target} run failed (exit {done.returncode}): " + " | ".join(tail))
    label = next((line[10:] for line in done.stdout.splitlines() if line.startswith("compiled: ")), "")
    return int(found[-1].replace(",", "")), label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1_000, help="registrations told apart (each run has this many more)")
    ap.add_argument("--rounds", type=int, default=2, help="keepalive rounds told apart (from every device)")
    ap.add_argument("--child", choices=["gateway", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--fed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--total-rounds", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.fed, args.devices, args.rounds, args.total_rounds)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found (apt-get install valgrind)")
    d, r = args.devices, args.rounds
    mode = os.environ.get("GB28181GW_COMPILED", "as-is")
    print(f"instructions per request (cachegrind), {d:,} registrations and {d * r:,} keepalives told apart; "
          f"GB28181GW_COMPILED={mode}")  # fmt: skip
    figures: dict[str, tuple[float, float]] = {}
    for target in ("gateway", "bare"):
        # every run builds messages for 2d devices and 1 + r rounds: only what is fed differs
        reg_small, label = instructions(target, d, 2 * d, 0, 1 + r)
        if target == "gateway":
            print(f"gateway modules compiled by mypyc: {label}")
            if mode == "on" and label == "none":
                raise SystemExit(
                    "GB28181GW_COMPILED=on: the gateway runs no compiled module (`gb28181gw accelerate --check`)"
                )
        reg_large = instructions(target, 2 * d, 2 * d, 0, 1 + r)[0]
        ka_small = instructions(target, d, 2 * d, 1, 1 + r)[0]
        ka_large = instructions(target, d, 2 * d, 1 + r, 1 + r)[0]
        figures[target] = ((reg_large - reg_small) / d, (ka_large - ka_small) / (d * r))
        print(
            f"{target:8} registration (both requests) {figures[target][0]:>10,.0f}   keepalive {figures[target][1]:>9,.0f}"
        )
    (gw_reg, gw_ka), (bare_reg, bare_ka) = figures["gateway"], figures["bare"]
    print(f"gateway ÷ bare: registration {gw_reg / bare_reg:.2f}×, keepalive {gw_ka / bare_ka:.2f}×")


if __name__ == "__main__":
    main()
