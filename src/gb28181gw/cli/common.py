"""What every command shares: the root group, the admin API client and the output conventions.

Conventions (issue 11; every command follows them, new ones too):

- **IDs are never truncated.** Tables are printed with :func:`emit`, which folds or wraps any
  column but an ID column, whatever the terminal width.
- **Piped output is plain**: when stdout is not a terminal, :func:`emit` prints tab-separated rows
  (a header line first) with no colour, box or title, so ``gb28181gw devices | grep 3402…`` and
  ``cut -f1`` work.
- **``--json`` on every command that shows something** (:data:`JSON_OPTION`); JSON keeps Chinese
  readable (``ensure_ascii=False``) and is the rows the API gave, not the table's text.
- **One error style**: :func:`fail` prints ``error: <what>`` (and ``hint: <what to do>``) on stderr
  and exits 1; the admin client turns every HTTP and network failure into that, quoting the
  gateway's own message. Usage errors stay click's (exit 2).
- **Times** go through :func:`when`, :func:`ago` and :func:`duration`: one display zone (Beijing by
  default, ``GB28181GW_TIME_ZONE`` to change it) with its offset shown, future times as "in …",
  unset values as "never" or "-".
- **Counts** through :func:`plural` ("1 device", "2 devices").
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time as _time
import urllib.error
import urllib.parse
import urllib.request
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from gb28181gw import __version__

console = Console()
err_console = Console(stderr=True)

DEFAULT_ADMIN_URL = "http://127.0.0.1:8028"
# Longer than any wait the gateway itself bounds (devices.query_timeout, catalog_total_timeout are
# configurable): a slow device must come back as the gateway's reason, never as "cannot reach".
QUERY_HTTP_TIMEOUT = 330.0
CHINA_STANDARD_TIME = _dt.timezone(_dt.timedelta(hours=8), "CST")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gb28181gw")
def main() -> None:
    """gb28181gw: GB/T 28181 signalling gateway and device registrar."""


# --- errors --------------------------------------------------------------------------------


def fail(message: str, hint: str | None = None, *, code: int = 1) -> NoReturn:
    """Say what went wrong (and what to do) in the one style every command uses, and exit."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    if hint:
        err_console.print(f"hint: {hint}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(code)


def warn(message: str) -> None:
    """A warning on stderr, in the same style as :func:`fail`."""
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 device``, ``2 devices`` (``many`` for irregular plurals)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


# --- times ---------------------------------------------------------------------------------


def display_zone() -> _dt.tzinfo:
    """The zone times are shown in: ``GB28181GW_TIME_ZONE`` (an IANA name or ``UTC+8``), else Beijing."""
    name = os.environ.get("GB28181GW_TIME_ZONE", "").strip()
    if not name or name in ("Asia/Shanghai", "PRC"):
        return CHINA_STANDARD_TIME  # fixed: no tz database needed, China has no daylight saving
    upper = name.upper()
    if upper in ("UTC", "Z", "GMT"):
        return _dt.UTC
    if upper.startswith(("UTC+", "UTC-", "GMT+", "GMT-")):
        try:
            return _dt.timezone(_dt.timedelta(hours=float(upper[3:])))
        except ValueError:
            pass
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        fail(f"unknown time zone {name!r} in GB28181GW_TIME_ZONE", "use an IANA name (Asia/Shanghai) or UTC+8")


def when(epoch: float | None, *, relative: bool = True) -> str:
    """``2026-12-02 15:04:05 +08:00 (3 min ago)`` in the display zone; ``never`` when unset."""
    if not epoch:
        return "never"
    stamp = _dt.datetime.fromtimestamp(epoch, display_zone())
    text = stamp.strftime("%Y-%m-%d %H:%M:%S ") + stamp.strftime("%z")[:3] + ":" + stamp.strftime("%z")[3:]
    return f"{text} ({ago(epoch)})" if relative else text


def ago(epoch: float | None, *, now: float | None = None) -> str:
    """``3 min ago`` or ``in 5 min``; ``never`` when unset."""
    if not epoch:
        return "never"
    delta = (now if now is not None else _time.time()) - epoch
    if abs(delta) < 1:
        return "now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(-delta)}"


def duration(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``; ``-`` when unset."""
    if seconds is None:
        return "-"
    s = int(abs(seconds))
    sign = "-" if seconds < 0 else ""
    if s < 120:
        return f"{sign}{s} s"
    if s < 7200:
        return f"{sign}{s // 60} min"
    if s < 172800:
        h, m = divmod(s // 60, 60)
        return f"{sign}{h} h {m} min" if m else f"{sign}{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{sign}{d} d {h} h" if h else f"{sign}{d} d"


# --- output --------------------------------------------------------------------------------


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's rows, UTF-8).")


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a listing: its title, how to get its text from a row, whether it holds an ID."""

    title: str
    value: Callable[[Any], Any] | str
    is_id: bool = False
    style: Callable[[Any], str] | None = None  # rich markup for the terminal only (e.g. a colour)

    def text(self, row: Any) -> str:
        raw = row.get(self.value, "") if isinstance(self.value, str) else self.value(row)
        if raw is None or raw == "":
            return "-"
        return str(raw)


def print_json(data: Any) -> None:
    """JSON on stdout, Chinese kept readable."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def is_terminal() -> bool:
    return sys.stdout.isatty()


def _plain(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")


def emit(
    rows: Sequence[Any],
    columns: Sequence[Column],
    *,
    as_json: bool = False,
    title: str | None = None,
    json_rows: Any = None,
) -> None:
    """Print rows as JSON, a terminal table, or tab-separated lines when piped (see Conventions)."""
    if as_json:
        print_json(list(rows) if json_rows is None else json_rows)
        return
    if not is_terminal():
        click.echo("\t".join(c.title for c in columns))
        for row in rows:
            click.echo("\t".join(_plain(c.text(row)) for c in columns))
        return
    table = Table(title=title, title_justify="left", expand=False)
    for c in columns:
        # an ID keeps all 20 digits on one line; every other column may fold
        table.add_column(c.title, no_wrap=c.is_id, min_width=20 if c.is_id else None, overflow="fold")
    for row in rows:
        table.add_row(*[(c.style(row) if c.style else c.text(row)) for c in columns])
    console.print(table, highlight=False, crop=False)


def emit_fields(
    fields: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    as_json: bool = False,
    title: str | None = None,
    json_data: Any = None,
) -> None:
    """Print one record's fields (``name value`` pairs) in the same three forms as :func:`emit`."""
    pairs = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
    if as_json:
        print_json(dict(pairs) if json_data is None else json_data)
        return
    text = [(str(k), "-" if v is None or v == "" else str(v)) for k, v in pairs]
    if not is_terminal():
        for k, v in text:
            click.echo(f"{k}\t{_plain(v)}")
        return
    table = Table(show_header=False, title=title, title_justify="left")
    table.add_column("field", no_wrap=True, style="bold")
    table.add_column("value", overflow="fold", min_width=20)
    for k, v in text:
        table.add_row(k, v)
    console.print(table, highlight=False, markup=False, crop=False)


# --- the admin API client ------------------------------------------------------------------


def admin_url(value: str) -> str:
    """Accept ``host:port`` as well as ``http://host:port``."""
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = "http://" + value
    parsed = urllib.parse.urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise click.BadParameter(f"{value!r} is not an admin API address (host:port or http://host:port)")
    return value


def _admin_callback(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    return admin_url(value)


ADMIN_OPTION = click.option(
    "--admin",
    envvar="GB28181GW_ADMIN_URL",
    default=DEFAULT_ADMIN_URL,
    show_default=True,
    callback=_admin_callback,
    help="Admin API of the running gateway (host:port or URL).",
)


def request(admin: str, method: str, path: str, body: Any = None, *, timeout: float = QUERY_HTTP_TIMEOUT) -> Any:
    """One admin API call; every failure ends in :func:`fail` with the gateway's own words."""
    url = admin_url(admin) + "/api/v1" + path
    data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            answer = {}
        message = answer.get("error") if isinstance(answer, dict) else None
        hint = answer.get("hint") if isinstance(answer, dict) else None
        fail(message or f"the gateway answered {exc.code} {exc.reason} to {method} {path}", hint)
    except TimeoutError:
        fail(f"the gateway at {admin} did not answer {method} {path} within {timeout:g} s")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            fail(f"the gateway at {admin} did not answer {method} {path} within {timeout:g} s")
        fail(
            f"cannot reach the gateway at {admin}: {reason}",
            "is `gb28181gw serve` running? (--admin or GB28181GW_ADMIN_URL name another one)",
        )


def _api(admin: str, path: str) -> Any:
    """GET through :func:`request` (kept while the commands move over to it)."""
    return request(admin, "GET", path)


def _api_send(
    admin: str, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = QUERY_HTTP_TIMEOUT
) -> Any:
    """Any method through :func:`request` (kept while the commands move over to it)."""
    return request(admin, method, path, body, timeout=timeout)


_ago = ago


def _print_fields(title: str, data: dict[str, Any]) -> None:
    table = Table("field", "value", show_header=False, title=title)
    for key, value in data.items():
        table.add_row(key, str(value))
    console.print(table)


def _rate(bits_per_second: float) -> str:
    if bits_per_second >= 1e6:
        return f"{bits_per_second / 1e6:.1f} Mbit/s"
    return f"{bits_per_second / 1e3:.0f} kbit/s"
