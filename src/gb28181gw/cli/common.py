"""What every command shares: the root group, the admin API client, output helpers."""

from __future__ import annotations

import json
import sys
import time as _time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from gb28181gw import __version__

console = Console()
err_console = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gb28181gw")
def main() -> None:
    """gb28181gw: GB/T 28181 signalling gateway and device registrar."""


def _api(ctx_admin: str, path: str) -> Any:
    url = ctx_admin.rstrip("/") + "/api/v1" + path
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        err_console.print(f"[red]{url}: HTTP {exc.code} {exc.reason}[/red]")
    except (urllib.error.URLError, OSError) as exc:
        err_console.print(f"[red]cannot reach the gateway at {ctx_admin}: {exc}. Is `gb28181gw serve` running?[/red]")
    sys.exit(1)


ADMIN_OPTION = click.option(
    "--admin",
    envvar="GB28181GW_ADMIN_URL",
    default="http://127.0.0.1:8028",
    show_default=True,
    help="Admin API of the running gateway.",
)


def _api_send(admin: str, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 10.0) -> Any:
    url = admin.rstrip("/") + "/api/v1" + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read().decode("utf-8")).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        err_console.print(f"[red]{message}[/red]", highlight=False)
    except (urllib.error.URLError, OSError) as exc:
        err_console.print(f"[red]cannot reach the gateway at {admin}: {exc}. Is `gb28181gw serve` running?[/red]")
    sys.exit(1)


def _ago(epoch: float) -> str:
    if not epoch:
        return "never"
    seconds = max(0, int(_time.time() - epoch))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _print_fields(title: str, data: dict[str, Any]) -> None:
    table = Table("field", "value", show_header=False, title=title)
    for key, value in data.items():
        table.add_row(key, str(value))
    console.print(table)


def _rate(bits_per_second: float) -> str:
    if bits_per_second >= 1e6:
        return f"{bits_per_second / 1e6:.1f} Mbit/s"
    return f"{bits_per_second / 1e3:.0f} kbit/s"
