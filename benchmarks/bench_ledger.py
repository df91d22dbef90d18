"""The camera ledger at a large site: exporting the forms and importing a filled-in table (issue 14).

A real ``gb28181gw serve`` pinned to CPU 0; this process, on CPU 1, plays an NVR that registers and
answers its catalog with ``--channels`` cameras (``bench_catalog.load_catalog``). Then:

export   ``GET /api/v1/ledger/export`` of the integration list's camera sheet as XLSX and as CSV:
         seconds, the gateway's CPU seconds and its RSS growth. While each export runs the NVR sends
         a keepalive every 10 ms and times the 200 OK: the SIP latency percentiles during the export
         beside the same measured idle just before, so a stalled event loop shows. Baseline in the
         same run: openpyxl writing the same rows in this process (what the format alone costs).
import   ``gb28181gw ledger import`` of a CSV filling five fields of every camera (the real command,
         a process): seconds end to end and the gateway's CPU; baseline: reading the same CSV with
         the csv module alone.

    python benchmarks/bench_ledger.py
    python benchmarks/bench_ledger.py --channels 10000
"""

from __future__ import annotations

import argparse
import csv
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]
from bench_catalog import NVR, load_catalog, nvr_site, sip  # noqa: E402
from bench_options import cpu_seconds, rss_mib  # noqa: E402

OURS = "34020000002000000001"


class Keepalives:
    """The NVR's keepalives every 10 ms from its own socket, each 200 OK timed (milliseconds)."""

    def __init__(self, dest: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.dest = dest
        self.n = 100_000

    def run(self, stop: threading.Event, out: list[float]) -> None:
        port = self.sock.getsockname()[1]
        while not stop.is_set():
            self.n += 1
            body = (
                f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
                f"<SN>{self.n}</SN>\r\n<DeviceID>{NVR}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
            ).encode()
            t0 = time.perf_counter()
            self.sock.sendto(sip("MESSAGE", f"sip:{OURS}@3402000000", port, self.n, body), self.dest)
            try:
                while not self.sock.recv(65535).startswith(b"SIP/2.0 200"):
                    pass
                out.append((time.perf_counter() - t0) * 1000)
            except TimeoutError:
                out.append(2000.0)
            time.sleep(0.01)

    def during(self, work: threading.Thread | None, seconds: float = 0.0) -> list[float]:
        """Latencies while ``work`` runs (or for ``seconds``)."""
        stop, out = threading.Event(), []
        t = threading.Thread(target=self.run, args=(stop, out))
        t.start()
        if work is not None:
            work.start()
            work.join()
        else:
            time.sleep(seconds)
        stop.set()
        t.join()
        return out


def pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return (values or [float("nan")])[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def latency_text(values: list[float]) -> str:
    return (
        f"{len(values)} keepalives, p50 {pct(values, 50):.2f} ms, p99 {pct(values, 99):.2f} ms, "
        f"max {max(values):.2f} ms"
    )


def fetch(url: str, into: dict[str, float | bytes]) -> None:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as resp:
        into["data"] = resp.read()
    into["seconds"] = time.perf_counter() - t0


def bare_xlsx(rows: list[list[str]]) -> float:
    import openpyxl

    t0 = time.perf_counter()
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    for row in rows:
        ws.append(row)
    wb.save(io.BytesIO())
    return time.perf_counter() - t0


def bench(channels: int) -> None:
    with nvr_site() as site:
        proc, dest = site.proc, site.dest
        admin = f"http://127.0.0.1:{site.admin_port}"
        seconds = load_catalog(site.dev, dest, site.admin_port, channels, 10)
        print(f"{channels} cameras in the catalog ({seconds:.2f} s); gateway RSS {rss_mib(proc.pid):.1f} MiB")
        keepalives = Keepalives(dest)
        idle = keepalives.during(None, 3.0)
        print(f"idle SIP latency:        {latency_text(idle)}")
        for fmt in ("xlsx", "csv"):
            got: dict[str, float | bytes] = {}
            url = f"{admin}/api/v1/ledger/export?form=integration-list&sheet=%E6%91%84%E5%83%8F%E6%9C%BA&format={fmt}"
            rss0, cpu0 = rss_mib(proc.pid), cpu_seconds(proc.pid)
            during = keepalives.during(threading.Thread(target=fetch, args=(url, got)))
            data = got["data"]
            assert isinstance(data, bytes)
            print(
                f"export {fmt:4}: {got['seconds']:.2f} s ({channels / float(got['seconds']):,.0f} rows/s), "
                f"{len(data) / 1e6:.1f} MB, gateway CPU {cpu_seconds(proc.pid) - cpu0:.2f} s, "
                f"RSS +{rss_mib(proc.pid) - rss0:.1f} MiB"
            )
            print(f"  SIP latency meanwhile: {latency_text(during)}")
            if fmt == "csv":
                rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
                print(f"  baseline: openpyxl writing the same {len(rows)} rows here: {bare_xlsx(rows):.2f} s")
        # a filled-in table: five fields of every camera
        table = Path(tempfile.mkdtemp(prefix="gb28181gw-bench-")) / "ledger.csv"
        with table.open("w", encoding="utf-8-sig", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["20位编码", "安装位置", "所属派出所", "建设时间", "是否以租代建", "经度"])
            for n in range(1, channels + 1):
                w.writerow([f"3402000000131{n:07d}", f"示例路{n}号", "镜湖派出所", "2020.03", "否", "118.376451"])
        t0 = time.perf_counter()
        with table.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
        bare = time.perf_counter() - t0
        cpu0 = cpu_seconds(proc.pid)
        result: dict[str, object] = {}

        def run_import() -> None:
            t0 = time.perf_counter()
            result["done"] = subprocess.run(
                [sys.executable, "-m", "gb28181gw", "ledger", "import", str(table), "--admin", admin],
                capture_output=True,
                text=True,
            )
            result["seconds"] = time.perf_counter() - t0

        during = keepalives.during(threading.Thread(target=run_import))
        done = result["done"]
        assert isinstance(done, subprocess.CompletedProcess)
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()
        print(
            f"import of {channels} rows (the CLI, a process): {result['seconds']:.2f} s end to end, gateway CPU "
            f"{cpu_seconds(proc.pid) - cpu0:.2f} s; {summary}"
        )
        print(f"  SIP latency meanwhile: {latency_text(during)}")
        print(f"  baseline: the csv module reading the same {len(rows) - 1} rows: {bare * 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=5000)
    args = ap.parse_args()
    bench(args.channels)


if __name__ == "__main__":
    main()
