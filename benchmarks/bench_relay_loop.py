"""The relay's batched loop alone: its own CPU per packet, without system calls.

    python benchmarks/bench_relay_loop.py [--rounds 20000] [--packets 32] [--compiled as-is|off|on|both]

One stream, one UDP consumer, ``--packets`` (up to 32; a blasting stream brings about 13 a wake-up
at 200,000/s, pinned) in-sequence 1,400-byte RTP packets of one frame placed in a
:class:`~gb28181gw.relay.mmsg.Batch` as ``recvmmsg`` leaves them, relayed again and again by
``Forwarder._relay_batch`` with a ``sendmmsg`` that sends nothing (a Python function returning the
count): what the per-packet checks, the statistics and the queued sends cost, apart from the two
system calls and the wake-ups that ``bench_relay.py`` measures with them. Twice: with nothing kept
for joining consumers, and with every packet copied into the GOP cache (``media.gop_cache``).
``--compiled`` as in ``bench_relay.py`` (the build of ``gb28181gw accelerate``, or the sources).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src")]  # this checkout's gateway, not an installed one

from gb28181gw import compiled  # noqa: E402
from gb28181gw.relay import mmsg  # noqa: E402
from gb28181gw.relay.forwarder import Forwarder, RelaySettings  # noqa: E402
from gb28181gw.relay.msghdr import Mmsghdr, Msghdr  # noqa: E402
from gb28181gw.sdp import StreamMode  # noqa: E402

SSRC, SIZE = 200000123, 1400
#: Where the kernel writes each received header's sender length (the batch's lengths seen as 32-bit words).
NAMELEN_AT = (Mmsghdr.msg_hdr.offset + Msghdr.msg_namelen.offset) // 4


async def per_packet(rounds: int, gop: bool, packets: int) -> float:
    """Nanoseconds of ``_relay_batch`` per packet, the best of three repetitions."""
    b = mmsg.Batch(mmsg.Libc(lambda *a: 0, lambda fd, ptr, count, flags: count))
    f = Forwarder(RelaySettings("127.0.0.1", 1 << 20, 1 << 20, 1.0, 4 << 20 if gop else 0), batch=b)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    f.open("s", port, StreamMode.UDP, SSRC, source="127.0.0.1")
    # the consumer's SSRC is the stream's: its rewrite leaves the batch as it was for the next round
    f.add_consumer("s", "c", "udp", "127.0.0.1", 9, SSRC)
    st = f.streams["s"]
    st.source = ("127.0.0.1", 5555)
    raw = mmsg.sockaddr(socket.AF_INET, st.source)
    assert raw is not None
    ts, first = 90000, 1000
    for j in range(b.vlen):
        packet = struct.pack("!BBHII", 0x80, 96, first + j, ts, SSRC) + bytes([1]) * (SIZE - 12)
        b.buf[b.offset(j) : b.offset(j) + SIZE] = packet
        b.lengths[mmsg.LEN_AT + b.stride * j] = SIZE
        b.lengths[NAMELEN_AT + b.stride * j] = len(raw)
        b.names[j * mmsg.NAME : (j + 1) * mmsg.NAME] = raw.ljust(mmsg.NAME, b"\0")
    st.stats.packet(first - 1, SIZE, 0.0)
    st.last_ts, st.ts_open = ts, False
    best = float("inf")
    try:
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(rounds):
                st.stats.highest_seq = first - 1  # the same batch is next in sequence again
                if gop:
                    st.gop, st.gop_bytes = [], 0
                f._relay_batch(st, b, packets, 1.0)
            best = min(best, (time.perf_counter() - t0) / (rounds * packets) * 1e9)
        assert st.consumers[0].packets == 3 * rounds * packets  # every packet went the fast path
    finally:
        f.close_all()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20000)
    parser.add_argument("--packets", type=int, default=mmsg.VLEN, help="packets a batch (1 to 32)")
    parser.add_argument("--compiled", choices=["as-is", "off", "on", "both"], default="as-is")
    args = parser.parse_args()
    if args.compiled == "both":
        for value in ("off", "on"):
            argv = [sys.executable, __file__, "--rounds", str(args.rounds), "--packets", str(args.packets)]
            argv += ["--compiled", value]
            subprocess.run(argv, check=True, env={**os.environ, "GB28181GW_COMPILED": value})
        return
    if args.compiled in ("off", "on") and os.environ.get("GB28181GW_COMPILED") != args.compiled:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GB28181GW_COMPILED": args.compiled})
    import gb28181gw.relay.forwarder as forwarder_module

    label = compiled.label()
    if args.compiled == "on" and "relay.forwarder" not in label.split(","):
        raise SystemExit("--compiled on: the relay runs no compiled module (`gb28181gw accelerate --check` says why)")
    built = "compiled" if forwarder_module.__file__ and not forwarder_module.__file__.endswith(".py") else "pure"
    if not 1 <= args.packets <= mmsg.VLEN:
        raise SystemExit(f"--packets: 1 to {mmsg.VLEN}")
    plain = asyncio.run(per_packet(args.rounds, False, args.packets))
    kept = asyncio.run(per_packet(args.rounds, True, args.packets))
    print(
        f"relay loop ({built}, {args.packets} packets a batch): {plain:.0f} ns a packet,"
        f" {kept:.0f} ns with every packet kept for joiners"
    )


if __name__ == "__main__":
    main()
