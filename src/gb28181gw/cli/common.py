"""What every command shares: the root group, the admin API client and the output conventions.

Conventions (issue 11; every command follows them, new ones too):

- **IDs are never truncated.** Tables are printed with :func:`emit` (mark ID columns
  ``Column(..., is_id=True)``), which folds any column but an ID column; on a terminal too narrow
  for the table with its IDs whole, each row becomes a block of ``title value`` lines, ID first.
- **Piped output is plain**: when stdout is not a terminal, :func:`emit` and :func:`emit_fields`
  print tab-separated rows (a header line first) with no colour, box or title, so
  ``gb28181gw devices | grep 3402…`` and ``cut -f1`` work.
- **``--json`` on every command that shows something** (:data:`JSON_OPTION`); JSON keeps Chinese
  readable (``ensure_ascii=False``) and is what the API gave, not the table's text.
- **One error style**: :func:`fail` prints ``error: <what>`` (and ``hint: <what to do>``) on stderr
  and exits 1; :func:`request` turns every HTTP and network failure into that, quoting the
  gateway's own message and hint (:func:`call` raises :class:`AdminApiError` instead, for a
  command that goes on after one failure). Usage errors stay click's (exit 2), raised before
  any request.
- **Waiting on a device**: a command whose request waits for a device passes ``timeout=None``:
  the gateway bounds every device wait itself (``devices.query_timeout``, the catalog timeouts)
  and answers 504 with its reason, which the CLI prints; the CLI never gives up first. It asks
  ``/healthz`` first (:data:`CONNECT_TIMEOUT`), so an ``--admin`` that accepts but never answers
  (the SIP port, a hung process) is an error, not an endless wait.
- **Times** go through :func:`when`, :func:`ago` and :func:`duration`: one display zone, the
  site's (``gateway.time_zone``, Beijing by default; ``GB28181GW_GATEWAY_TIME_ZONE`` overrides,
  else the running gateway's), with its offset shown, future times as "in …", unset values as
  "never" or "-". :func:`field_text` applies them to a record's fields by name (``*_at``,
  ``last_*``, ``*_until`` are times, ``*_seconds`` durations, ``*_in`` countdowns), so a field
  the API adds later is shown right without touching the command.
- **Counts** through :func:`plural` ("1 device", "2 devices").
- **Times an operator types** (``--from``/``--to``) are a :class:`TimeParam`, read by
  :func:`parse_time` in the site's zone: checked before any request.
- **Bytes a device sent undecodable** (lone surrogates in its header text) and **control
  characters** (a stranger's REGISTER can carry ESC sequences in its ID) are shown as ``\\xNN``
  (:func:`printable`, applied by :class:`Column`, :func:`field_text` and :func:`fail`), never a
  crash and never obeyed by the operator's terminal.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import http.client
import json
import os
import re
import ssl
import sys
import time as _time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gb28181gw import __version__
from gb28181gw.access import PREFIX, looks_like_token
from gb28181gw.config import BEIJING, ENV_PREFIX, parse_time_zone
from gb28181gw.errors import AdminApiError

console = Console()
err_console = Console(stderr=True)

DEFAULT_ADMIN_URL = "http://127.0.0.1:8028"
#: Read timeout of a call that does not wait on a device (the gateway answers those at once).
QUERY_HTTP_TIMEOUT = 30.0
#: How long to try to connect to the admin API.
CONNECT_TIMEOUT = 5.0
#: The variable the gateway reads ``gateway.time_zone`` from; the CLI honours it too.
TIME_ZONE_ENV = ENV_PREFIX + "GATEWAY_TIME_ZONE"
#: Beijing time (UTC+8 all year).
CHINA_STANDARD_TIME = BEIJING


_zone: _dt.tzinfo | None = None
_gateway_zone: str | None = None  # what the gateway said in /status
_last_admin: str | None = None  # the gateway this command talks to
_token: str | None = None  # --token / GB28181GW_TOKEN
_ca_file: str | None = None  # --ca-file / GB28181GW_CA_FILE


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gb28181gw")
def main() -> None:
    """gb28181gw: GB/T 28181 signalling gateway and device registrar."""
    global _zone, _gateway_zone, _last_admin, _token, _ca_file
    _zone = _gateway_zone = _last_admin = None  # each invocation learns its gateway's zone afresh
    _token = _ca_file = None


# --- errors --------------------------------------------------------------------------------


def fail(message: str, hint: str | None = None, *, code: int = 1) -> NoReturn:
    """Say what went wrong (and what to do) in the one style every command uses, and exit."""
    # the message is the gateway's or a device's words: never markup
    err_console.print(f"[red]error:[/red] {escape(printable(message))}", highlight=False, markup=True, soft_wrap=True)
    if hint:
        err_console.print(f"hint: {printable(hint)}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(code)


def warn(message: str) -> None:
    """A warning on stderr, in the same style as :func:`fail`."""
    err_console.print(f"[yellow]warning:[/yellow] {escape(printable(message))}", highlight=False, soft_wrap=True)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 device``, ``2 devices`` (``many`` for irregular plurals)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


# --- times ---------------------------------------------------------------------------------


def display_zone(admin: str | None = None) -> _dt.tzinfo:
    """The site's zone, times are shown and read in: ``GB28181GW_GATEWAY_TIME_ZONE``, else the
    running gateway's ``gateway.time_zone`` (asked of ``admin``, or of the gateway this command
    talked to), else Beijing."""
    global _zone, _gateway_zone
    if _zone is not None:
        return _zone
    name = os.environ.get(TIME_ZONE_ENV, "").strip()
    source = TIME_ZONE_ENV
    ask = admin or _last_admin
    if not name and _gateway_zone is None and ask is not None:
        try:  # the site's zone is the gateway's setting: ask it (once)
            answer = call(ask, "GET", "/status", timeout=CONNECT_TIMEOUT)
            _gateway_zone = str(answer.get("time_zone") or "") if isinstance(answer, dict) else ""
        except AdminApiError:
            _gateway_zone = ""
    if not name:
        name, source = _gateway_zone or "", "the gateway's gateway.time_zone"
    try:
        _zone = parse_time_zone(name) if name else BEIJING
    except ValueError as exc:
        fail(f"{exc} (from {source})")
    return _zone


def when(epoch: float | None, *, relative: bool = True) -> str:
    """``2026-12-02 15:04:05 +08:00 (3 min ago)`` in the display zone; ``never`` when unset."""
    if not epoch:
        return "never"
    stamp = _dt.datetime.fromtimestamp(epoch, display_zone())
    offset = stamp.strftime("%z")
    text = stamp.strftime("%Y-%m-%d %H:%M:%S ") + offset[:3] + ":" + offset[3:5]
    return f"{text} ({ago(epoch)})" if relative else text


_RELATIVE_RE = re.compile(r"-(\d{1,6})\s*([smhd])")
_RELATIVE_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")
TIME_FORMS = "YYYY-MM-DD[THH:MM[:SS]], today, yesterday, now, or -90s/-30m/-2h/-7d"


def parse_time(text: str, *, now: _dt.datetime, end_of_day: bool = False) -> _dt.datetime:
    """A time an operator typed, as a naive datetime in the site's zone (what devices speak).

    Accepts :data:`TIME_FORMS`. A bare day (``2024-05-06``, ``today``, ``yesterday``) is its
    first second, or its last with ``end_of_day`` (so ``--from D --to D`` is the whole day).

    Raises:
        ValueError: naming the forms accepted.
    """
    value = text.strip().lower()
    if value == "now":
        return now
    day: _dt.date | None = None
    if value in ("today", "yesterday"):
        day = now.date() - _dt.timedelta(days=value == "yesterday")
    elif m := _RELATIVE_RE.fullmatch(value):
        try:
            return now - _dt.timedelta(seconds=int(m[1]) * _RELATIVE_UNIT[m[2]])
        except OverflowError:  # -999999d: before year 1
            raise ValueError(f"{text!r} is too far back: use {TIME_FORMS}") from None
    else:
        try:
            day = _dt.datetime.strptime(value, "%Y-%m-%d").date()
        except ValueError:
            for fmt in _TIME_FORMATS:
                try:
                    return _dt.datetime.strptime(value.upper(), fmt)
                except ValueError:
                    continue
            raise ValueError(f"{text!r} is not a time: use {TIME_FORMS}") from None
    return _dt.datetime.combine(day, _dt.time(23, 59, 59) if end_of_day else _dt.time())


class TimeParam(click.ParamType[str, Any]):
    """A ``--from``/``--to`` option: checked when parsed (a usage error, exit 2, before any request);
    the command turns it into a time with :func:`parse_time` once it knows the site's zone."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            parse_time(str(value), now=_dt.datetime(2000, 1, 1))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


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
        return printable(str(raw))


_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# control characters (C0, DEL, C1) and lone surrogates
_UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _hex(m: re.Match[str]) -> str:
    code = ord(m[0])
    return f"\\x{(code - 0xDC00) & 0xFF if code >= 0xD800 else code:02x}"


def printable(text: str) -> str:
    """``text`` with what a terminal must not be given shown as ``\\xNN``: the bytes a device sent
    undecodable (lone surrogates), and control characters, which anyone who sends a REGISTER could
    otherwise aim at the operator's terminal (colours, cursor moves, a window title, ``\\r``)."""
    if not _UNPRINTABLE_RE.search(text):
        return text
    return _UNPRINTABLE_RE.sub(_hex, text)


_TIME_SUFFIXES = ("_at", "_until", "_since")


#: Numeric fields whose 0 means "not known yet" (a device that never registered), shown as "-".
_UNSET_WHEN_ZERO = frozenset({"expires", "keepalive_interval", "keepalive_count"})


def field_text(key: str, value: Any) -> str:
    """A record's field as people read it, chosen by the field's name (see Conventions).

    ``*_at``, ``*_until``, ``*_since``, ``last_*`` and ``time`` holding a number are epoch times
    (:func:`when`), ``*_seconds`` durations, ``*_in`` countdowns; booleans are yes/no, lists are
    joined, unset values are "-" (or "never" for a time; a port or registration figure of 0 too).
    """
    name = key.rsplit(".", 1)[-1]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and (name.endswith(_TIME_SUFFIXES) or name.startswith("last_") or name == "time"):
        return when(value)
    if name.endswith("_seconds") and (number or value is None):
        return duration(value)
    if name.endswith("_in") and (number or value is None):
        return "-" if value is None else f"in {duration(value)}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == "" or (value == 0 and (name.endswith("port") or name in _UNSET_WHEN_ZERO)):
        return "-"
    if isinstance(value, list | tuple):
        return printable(", ".join(str(v) for v in value)) or "-"
    return printable(str(value))


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"sip": {"port": 5060}}`` → ``[("sip.port", 5060)]``: nested records as dotted fields."""
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def done(answer: Any, as_json: bool, text: str) -> None:
    """What a command that changed something prints: the API's answer with ``--json``, else one line."""
    if as_json:
        print_json(answer)
    else:
        click.echo(printable(text))


def print_json(data: Any) -> None:
    """JSON on stdout, Chinese kept readable (``\\u`` escapes only for bytes a device sent undecodable)."""
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if _SURROGATE_RE.search(text):
        text = json.dumps(data, indent=2)
    click.echo(text)


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
        # an ID keeps all its digits on one line; every other column may fold
        if c.is_id:
            least = max((len(c.text(row)) for row in rows), default=0)
        else:  # folded, but never so far that its title breaks inside a word
            least = max(len(word) for word in c.title.split() or [""])
        table.add_column(c.title, no_wrap=c.is_id, min_width=least, overflow="fold")
    for row in rows:
        table.add_row(*[(c.style(row) if c.style else escape(c.text(row))) for c in columns])
    if _fits(table):
        console.print(table, highlight=False, crop=False)
        return
    # rich would shrink every column, IDs too, to fit a narrow terminal: one block per row instead
    if title:
        console.print(title, style="italic", highlight=False, markup=False)
    width = max(len(c.title) for c in columns[1:]) if len(columns) > 1 else 0
    for row in rows:
        console.print(columns[0].text(row), style="bold", highlight=False, markup=False, soft_wrap=True)
        for c in columns[1:]:
            console.print(f"  {c.title:<{width}}  {c.text(row)}", highlight=False, markup=False, soft_wrap=True)


def _fits(table: Table) -> bool:
    """Whether ``table`` fits the terminal with its ``min_width`` columns (IDs) whole.

    rich narrows a table to the terminal by folding the other columns first, but once that is
    not enough it cuts every column, IDs too.
    """
    need = sum((c.min_width or 1) + 3 for c in table.columns) + 1
    return need <= console.width


def emit_fields(
    fields: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    as_json: bool = False,
    title: str | None = None,
    json_data: Any = None,
) -> None:
    """Print one record's fields (``name value`` pairs) in the same three forms as :func:`emit`.

    A mapping's nested records become dotted fields, and values are shown by :func:`field_text`
    (an ID, a value without spaces, is never folded).
    """
    if as_json:
        print_json((dict(fields) if isinstance(fields, Mapping) else dict(fields)) if json_data is None else json_data)
        return
    pairs = flatten(fields) if isinstance(fields, Mapping) else list(fields)
    text = [(str(k), field_text(str(k), v)) for k, v in pairs]
    if not is_terminal():
        for k, v in text:
            click.echo(f"{k}\t{_plain(v)}")
        return
    table = Table(show_header=False, title=title, title_justify="left")
    table.add_column("field", no_wrap=True, style="bold", min_width=max((len(k) for k, _ in text), default=1))
    table.add_column("value", overflow="fold", min_width=min(20, max((len(v) for _, v in text), default=1)))
    for k, v in text:
        table.add_row(k, v)
    if _fits(table):
        console.print(table, highlight=False, markup=False, crop=False)
        return
    if title:  # too narrow for two columns: a line per field, which the terminal may wrap
        console.print(title, style="italic", highlight=False, markup=False)
    for k, v in text:
        console.print(f"{k}: {v}", highlight=False, markup=False, soft_wrap=True)


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


_admin_option = click.option(
    "--admin",
    envvar="GB28181GW_ADMIN_URL",
    default=DEFAULT_ADMIN_URL,
    show_default=True,
    callback=_admin_callback,
    help="Admin API of the running gateway (host:port or URL; https:// with admin.tls_cert).",
)
#: The variable the CLI reads its admin API token from (``--token`` overrides it).
TOKEN_ENV = ENV_PREFIX + "TOKEN"
#: The variable naming a CA bundle (PEM) to trust for an ``https://`` admin URL (``--ca-file``).
CA_FILE_ENV = ENV_PREFIX + "CA_FILE"


def _token_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    global _token
    _token = (value or "").strip() or None
    if _token is not None and not looks_like_token(_token):
        # before any request, and never quoted: it may be a real secret pasted with a stray character
        source = ctx.get_parameter_source(param.name or "")
        given = TOKEN_ENV if source is click.core.ParameterSource.ENVIRONMENT else "--token"
        fail(
            f"{given} is not a token: a token is {PREFIX} and 43 more letters, digits, '-' or '_'",
            "copy it again exactly as `gb28181gw token create` printed it (one line, nothing around it)",
        )


def _ca_callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    global _ca_file
    _ca_file = value or None


_token_option = click.option(
    "--token",
    envvar=TOKEN_ENV,
    expose_value=False,
    callback=_token_callback,
    help=f"Admin API token, sent as 'Authorization: Bearer' (default ${TOKEN_ENV}; prefer the variable: "
    "a command line is visible to other users).",
)
_ca_option = click.option(
    "--ca-file",
    envvar=CA_FILE_ENV,
    expose_value=False,
    callback=_ca_callback,
    type=click.Path(exists=True, dir_okay=False),
    help=f"CA certificate(s) (PEM) to trust for an https:// --admin with a private CA (default ${CA_FILE_ENV}).",
)


def ADMIN_OPTION(command: Callable[..., Any]) -> Callable[..., Any]:  # noqa: N802 (used as @ADMIN_OPTION)
    """``--admin``, ``--token`` and ``--ca-file``: what every command that calls the admin API takes."""
    return _admin_option(_token_option(_ca_option(command)))


def segment(value: str) -> str:
    """``value`` (an ID the operator typed) as one segment of an API path: every command builds its
    paths with it, so ``ID/bans`` or ``..`` names nothing rather than another route."""
    return urllib.parse.quote(value, safe="")


def call(admin: str, method: str, path: str, body: Any = None, *, timeout: float | None = QUERY_HTTP_TIMEOUT) -> Any:
    """One admin API call, returning its JSON; raises :class:`AdminApiError` with the gateway's own words.

    Args:
        admin: the admin API's address (``host:port`` or a URL).
        method / path: e.g. ``GET``, ``/devices`` (under ``/api/v1``).
        body: sent as JSON.
        timeout: seconds to wait for the answer once connected; ``None`` for a request that
            waits on a device (the gateway bounds that wait itself and says why it ended).
    """
    conn, resp = _send(admin, method, path, body, timeout=timeout)
    try:
        raw = _reading(admin, method, path, timeout, resp.read)
    finally:
        conn.close()
    answer = _json_of(raw)
    if resp.status >= 400:
        raise _refusal(resp, answer, method, path)
    if answer is None and raw:
        raise AdminApiError(
            f"the answer of {admin} to {method} {path} is not JSON", "is --admin the gateway's admin API?", resp.status
        )
    if path == "/status" and isinstance(answer, dict) and answer.get("time_zone"):
        _remember_zone(str(answer["time_zone"]))
    return answer


def call_file(admin: str, path: str) -> tuple[bytes, dict[str, str]]:
    """``GET`` a file the admin API answers (a ledger export): its bytes and its headers (lower-case names).

    Raises:
        AdminApiError: as :func:`call`, in the gateway's own words, its JSON answer kept (a 422's problems).
    """
    conn, resp = _send(admin, "GET", path, None, timeout=QUERY_HTTP_TIMEOUT)
    try:
        raw = _reading(admin, "GET", path, QUERY_HTTP_TIMEOUT, resp.read)
    finally:
        conn.close()
    if resp.status >= 400:
        raise _refusal(resp, _json_of(raw), "GET", path)
    return raw, {k.lower(): v for k, v in resp.getheaders()}


_T = TypeVar("_T")

#: The longest line :func:`stream_lines` reads (a whole report is one line).
MAX_STREAM_LINE = 8 * 1024 * 1024


@contextlib.contextmanager
def stream_lines(admin: str, method: str, path: str, body: Any = None) -> Iterator[Iterator[bytes]]:
    """An admin API call whose answer is read a line at a time as the gateway writes it (NDJSON).

    Waits on the gateway as long as it goes on (``timeout=None``: it bounds the device waits
    itself). Leaving the ``with`` block closes the connection, which is how an interrupted
    command (Ctrl-C) tells the gateway to stop the work it streams.

    Raises:
        AdminApiError: as :func:`call` before the answer begins (a refusal in the gateway's words);
            while iterating, when the connection breaks or a line is longer than
            :data:`MAX_STREAM_LINE`. A clean end of the answer just ends the iteration.
    """
    conn, resp = _send(admin, method, path, body, timeout=None)
    try:
        if resp.status >= 400:
            raise _refusal(resp, _json_of(_reading(admin, method, path, None, resp.read)), method, path)

        def lines() -> Iterator[bytes]:
            # read1, not readline: http.client's readline takes a chunked answer cut short for its end
            buffer = b""
            while True:
                cut = buffer.find(b"\n") + 1
                if cut:
                    yield buffer[:cut]
                    buffer = buffer[cut:]
                    continue
                if len(buffer) > MAX_STREAM_LINE:
                    raise AdminApiError(
                        f"a line of the answer to {method} {path} is longer than {MAX_STREAM_LINE} bytes"
                    )
                data = _reading(admin, method, path, None, lambda: resp.read1(65536))
                if not data:
                    if resp.length:  # a Content-Length the connection did not carry
                        raise AdminApiError(
                            f"the gateway at {admin} broke off {method} {path}: the answer is cut short"
                        )
                    if buffer:
                        yield buffer
                    return
                buffer += data

        yield lines()
    finally:
        conn.close()


def _send(
    admin: str, method: str, path: str, body: Any, *, timeout: float | None
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Connect (asking ``/healthz`` first when ``timeout`` is ``None``), send, and read the answer's
    head; the caller reads the body and closes the connection."""
    global _last_admin
    base = urllib.parse.urlsplit(admin_url(admin))
    _last_admin = admin
    conn: http.client.HTTPConnection
    if base.scheme == "https":
        context = ssl.create_default_context(cafile=_ca_file)
        conn = http.client.HTTPSConnection(base.hostname or "", base.port, timeout=CONNECT_TIMEOUT, context=context)
    else:
        conn = http.client.HTTPConnection(base.hostname or "", base.port, timeout=CONNECT_TIMEOUT)
    try:
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
    except UnicodeEncodeError as exc:  # an argument typed in a terminal that is not UTF-8 (GBK bytes)
        bad = printable(exc.object[exc.start : exc.end]) if isinstance(exc.object, str) else "?"
        raise AdminApiError(
            f"an argument holds bytes that are not UTF-8 text ({bad})",
            "set the terminal to UTF-8 (LANG=zh_CN.UTF-8 or C.UTF-8) and type it again",
        ) from None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if _token:
        headers["Authorization"] = f"Bearer {_token}"
    where = f"the gateway at {admin}"
    try:
        try:
            conn.connect()
        except TimeoutError:
            raise AdminApiError(f"cannot reach {where}: no answer within {CONNECT_TIMEOUT:g} s", _REACH_HINT) from None
        except ssl.SSLError as exc:
            raise AdminApiError(f"cannot reach {where} over HTTPS: {exc.reason or exc}", _TLS_HINT) from None
        except OSError as exc:
            raise AdminApiError(f"cannot reach {where}: {exc.strerror or exc}", _REACH_HINT, unreachable=True) from None
        assert conn.sock is not None
        if timeout is None:
            # an answer may take as long as the gateway's own bound on the device: first make sure
            # a gateway is answering at all, or a wrong --admin (the SIP port, a hung process)
            # would be waited on forever
            _probe(conn, where)
            if conn.sock is None:  # the probe's answer closed the connection
                conn.connect()
        conn.sock.settimeout(timeout)

        def answer() -> http.client.HTTPResponse:
            conn.request(method, base.path + "/api/v1" + path, body=data, headers=headers)
            return conn.getresponse()

        return conn, _reading(admin, method, path, timeout, answer)
    except BaseException:
        conn.close()
        raise


def _reading(admin: str, method: str, path: str, timeout: float | None, step: Callable[[], _T]) -> _T:
    """``step()`` (a part of the exchange with the gateway), its failures as :class:`AdminApiError`."""
    where = f"the gateway at {admin}"
    try:
        return step()
    except TimeoutError:
        raise AdminApiError(
            f"{where} did not answer {method} {path} within {timeout or 0:g} s", _NOT_GATEWAY_HINT
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise AdminApiError(f"{where} broke off {method} {path}: {exc}", _REACH_HINT) from None


def _json_of(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None


def _refusal(resp: http.client.HTTPResponse, answer: Any, method: str, path: str) -> AdminApiError:
    """The gateway's refusal (an answer of 400 or more) in its own words."""
    message = answer.get("error") if isinstance(answer, dict) else None
    hint = answer.get("hint") if isinstance(answer, dict) else None
    if resp.status == 401:
        hint = (
            f"{'the token given is not accepted: ' if _token else ''}set {TOKEN_ENV} (or --token) to a valid "
            "token; an admin makes one with `gb28181gw token create NAME --role viewer|operator|admin`"
        )
    elif resp.status == 403:
        hint = f"{hint + '; ' if hint else ''}`gb28181gw token list` (as an admin) shows each token's role"
    return AdminApiError(
        str(message or f"the gateway answered {resp.status} {resp.reason} to {method} {path}"),
        str(hint) if hint else None,
        resp.status,
        answer=answer if isinstance(answer, dict) else None,
    )


_TLS_HINT = (
    f"is the certificate trusted? A private CA's certificate goes in --ca-file or {CA_FILE_ENV}; "
    "the host of --admin must be one the certificate names"
)
_REACH_HINT = "is `gb28181gw serve` running? (--admin or GB28181GW_ADMIN_URL name another one)"
_NOT_GATEWAY_HINT = "is --admin the gateway's admin API (admin.port, 8028 by default), not its SIP port?"


def _probe(conn: http.client.HTTPConnection, where: str) -> None:
    """Ask ``/healthz`` on the open ``conn`` (kept open) and raise :class:`AdminApiError` unless
    a gateway answers it within :data:`CONNECT_TIMEOUT`."""
    assert conn.sock is not None
    conn.sock.settimeout(CONNECT_TIMEOUT)
    hint = _NOT_GATEWAY_HINT
    try:
        conn.request("GET", "/healthz", headers={"Accept": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read().decode("utf-8"))
    except TimeoutError:
        raise AdminApiError(f"{where} did not answer GET /healthz within {CONNECT_TIMEOUT:g} s", hint) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise AdminApiError(f"{where} does not answer as a gateway: {exc}", hint) from None
    if not isinstance(answer, dict) or answer.get("status") != "ok":
        raise AdminApiError(f"{where} does not answer as a gateway (GET /healthz: {resp.status})", hint)


def _remember_zone(name: str) -> None:
    global _gateway_zone
    _gateway_zone = name


def request(admin: str, method: str, path: str, body: Any = None, *, timeout: float | None = QUERY_HTTP_TIMEOUT) -> Any:
    """:func:`call`, ending in :func:`fail` (exit 1) with the gateway's own words on any failure."""
    try:
        return call(admin, method, path, body, timeout=timeout)
    except AdminApiError as exc:
        fail(exc.message, exc.hint)


def rate_text(bits_per_second: float) -> str:
    """``850 kbit/s``, ``4.1 Mbit/s``."""
    if bits_per_second >= 1e6:
        return f"{bits_per_second / 1e6:.1f} Mbit/s"
    return f"{bits_per_second / 1e3:.0f} kbit/s"
