"""``doctor``: put a registered device (or every online one) through the conformance checks.

The gateway runs the checks (``POST /devices/{id}/doctor``) and streams its progress as JSON
lines (the events :mod:`gb28181gw.gb.doctor` fixes); this command shows them as a progress bar,
then a pass/fail table with the reason of each failure, and writes the report a person hands in
(``-o report.html`` or ``.json``, :mod:`gb28181gw.gb.doctor_report`). Exit status: 0 when every
check of every device passed (a warning or a skipped check is no failure), 1 otherwise (a
device that could not be checked included), 130 on Ctrl-C, which closes the request so that the
gateway stops the run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from gb28181gw.cli.common import (
    ADMIN_OPTION,
    JSON_OPTION,
    Column,
    console,
    display_zone,
    emit,
    err_console,
    fail,
    is_terminal,
    main,
    plural,
    print_json,
    printable,
    request,
    segment,
    stream_lines,
    when,
)
from gb28181gw.errors import AdminApiError
from gb28181gw.gb.doctor import CHECK_BY_KEY, CHECKS, CheckResult, DoctorReport, Outcome
from gb28181gw.gb.doctor_report import NotRun, ReportFormat, SiteReport, render_html, render_json

#: Exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130

_COLOURS = {Outcome.PASS: "green", Outcome.FAIL: "red", Outcome.WARN: "yellow", Outcome.SKIP: "dim"}


@dataclass(frozen=True, slots=True)
class _Stopped:
    """A run that began but ended without a report: the gateway's error event, a broken connection,
    a line that is not one of the doctor's events. ``results`` are the checks that ended before."""

    message: str
    hint: str | None = None
    results: tuple[CheckResult, ...] = ()


@dataclass
class _Bar:
    """The progress shown while a device is checked: a task for its checks (and one for the devices)."""

    progress: Progress
    checks: TaskID
    step: str = ""  # "[2/5] " before the check's title when several devices run
    titles: dict[str, str] = field(default_factory=dict)
    done: int = 0

    def begin(self, step: str) -> None:
        """A device's run is asked for (``step`` names it when several run)."""
        self.step, self.titles, self.done = step, {}, 0
        self.progress.reset(self.checks, total=None, description=escape(printable(f"{step}starting")))

    def start(self, checks: Any) -> None:
        self.titles = {}
        for c in checks if isinstance(checks, list) else ():
            if isinstance(c, dict) and isinstance(c.get("key"), str):
                self.titles[c["key"]] = str(c.get("title") or c["key"])
        self.done = 0
        self.progress.update(self.checks, total=len(self.titles) or None)

    def running(self, key: str) -> None:
        title = self.titles.get(key) or (CHECK_BY_KEY[key].title if key in CHECK_BY_KEY else key)
        total = len(self.titles)
        self.progress.update(
            self.checks, description=escape(printable(f"{self.step}[{self.done + 1}/{total}] {title}"))
        )

    def ended(self) -> None:
        self.done += 1
        self.progress.advance(self.checks)


def _events(lines: Iterator[bytes], what: str) -> Iterator[dict[str, Any]]:
    """The doctor's events from the answer's lines.

    Raises:
        ValueError: a line that is not a JSON object with an ``event`` (saying which and why).
    """
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue  # a blank line keeps nothing from going on
        try:
            data = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"line {number} of {what} is not JSON ({exc}): {line[:80]!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise ValueError(f'line {number} of {what} is not one of the doctor\'s events (no "event"): {line[:80]!r}')
        yield data


def _run(admin: str, device_id: str, body: dict[str, Any], bar: _Bar) -> DoctorReport | _Stopped:
    """Run the doctor on ``device_id`` and follow it to its report.

    Raises:
        AdminApiError: the run did not begin (an unknown device, one not registered, a run already
            going, no gateway there): the gateway's own words.
    """
    path = f"/devices/{segment(device_id)}/doctor"
    results: list[CheckResult] = []
    what = f"the doctor's answer for {device_id}"
    with stream_lines(admin, "POST", path, body) as lines:
        try:
            for event in _events(lines, what):
                kind = event["event"]
                if kind == "start":
                    bar.start(event.get("checks"))
                elif kind == "running":
                    bar.running(str(event.get("key", "")))
                elif kind == "result":
                    results.append(CheckResult.from_json(event.get("result") or {}))
                    bar.ended()
                elif kind == "done":
                    return DoctorReport.from_json(event.get("report") or {})
                elif kind == "error":
                    message = str(event.get("message") or f"the gateway stopped the doctor's run of {device_id}")
                    return _Stopped(message, str(event.get("hint") or "") or None, tuple(results))
                # another kind: a newer gateway's; what this command needs is all above
        except ValueError as exc:  # a line, or a result or report in it, that cannot be read
            return _Stopped(
                f"the gateway's answer cannot be read: {exc}",
                "is --admin a gateway of the same version as this command?",
                tuple(results),
            )
        except AdminApiError as exc:  # the connection broke
            return _Stopped(_after(results, exc.message), exc.hint, tuple(results))
    return _Stopped(_after(results, f"the gateway ended the doctor's run of {device_id} before its report"))


def _after(results: Sequence[CheckResult], message: str) -> str:
    return f"{message} (after {plural(len(results), 'check')})"


# --- output ----------------------------------------------------------------------------------


def _outcome_style(row: dict[str, Any]) -> str:
    outcome = Outcome(row["outcome"])
    return f"[{_COLOURS[outcome]}]{escape(outcome.value)}[/{_COLOURS[outcome]}]"


CHECK_COLUMNS = (
    Column("check", "title"),
    Column("result", "outcome", style=_outcome_style),
    Column("seen", "detail"),
    Column("reason", "reason"),
    Column("seconds", lambda r: f"{r['seconds']:.1f}"),
)


def _identity(report: DoctorReport) -> str:
    d = report.device
    made = " ".join(x for x in (d.get("manufacturer", ""), d.get("model", "")) if x)
    name = d.get("name", "")
    return " ".join(x for x in (report.device_id, name, f"({made})" if made else "") if x)


def _verdict(report: DoctorReport) -> str:
    counts = {o: sum(r.outcome is o for r in report.results) for o in Outcome}
    extra = ", ".join(
        plural(counts[o], w) for o, w in ((Outcome.WARN, "warning"), (Outcome.SKIP, "skipped")) if counts[o]
    )
    extra = f" ({extra})" if extra else ""
    if report.passed:
        return f"{report.device_id}: all {plural(len(report.results), 'check')} passed{extra}"
    failed = ", ".join(r.key for r in report.failures) or "no check ran"
    return (
        f"{report.device_id}: {len(report.failures)} of {plural(len(report.results), 'check')} failed: {failed}{extra}"
    )


def _show(report: DoctorReport) -> None:
    click.echo(printable(f"{_identity(report)}, {when(report.started_at, relative=False)}"))
    emit([r.to_json() for r in report.results], CHECK_COLUMNS, title=plural(len(report.results), "check"))
    click.echo(printable(_verdict(report)))


def _summary_row(item: DoctorReport | NotRun) -> dict[str, Any]:
    if isinstance(item, NotRun):
        return {**item.device, "device_id": item.device_id, "result": "not checked", "failed": item.reason}
    failed = ", ".join(r.key for r in item.failures)
    return {
        **item.device,
        "device_id": item.device_id,
        "result": "passed" if item.passed else "failed",
        "failed": failed or ("no check ran" if not item.passed else ""),
    }


def _result_style(row: dict[str, Any]) -> str:
    colour = "green" if row["result"] == "passed" else "red"
    return f"[{colour}]{escape(row['result'])}[/{colour}]"


SUMMARY_COLUMNS = (
    Column("device", "device_id", is_id=True),
    Column("name", "name"),
    Column("model", "model"),
    Column("result", "result", style=_result_style),
    Column("failed checks / reason", "failed"),
)


def _check_output(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is None:
        return None
    try:
        ReportFormat.of(value.name)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not value.parent.is_dir():
        raise click.BadParameter(f"{value}: no directory {value.parent} to write it in")
    return value


def _write(output: Path, site: SiteReport, force: bool, *, quiet: bool) -> None:
    zone = display_zone()
    text = render_html(site, zone) if ReportFormat.of(output.name) is ReportFormat.HTML else render_json(site, zone)
    try:
        with output.open("w" if force else "x", encoding="utf-8", newline="\n") as f:
            f.write(text)
    except FileExistsError:
        fail(f"{output} appeared while the doctor ran: not overwritten", "--force overwrites it")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    message = f"report written to {output}"
    if quiet:
        click.echo(printable(message), err=True)
    else:
        click.echo(printable(message))


def _gateway(admin: str) -> dict[str, str]:
    """Who runs the checks, for the report's header (asking also learns the site's zone)."""
    status = request(admin, "GET", "/status")
    status = status if isinstance(status, dict) else {}
    return {"id": str(status.get("gateway_id") or ""), "version": str(status.get("version") or "")}


def _progress(live: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not live,
    )


# --- the command -----------------------------------------------------------------------------


@main.command()
@ADMIN_OPTION
@JSON_OPTION
@click.argument("device_id", required=False)
@click.option("--all", "all_devices", is_flag=True, help="Every online device, one after the other.")
@click.option("--channel", default=None, help="The camera channel to play and move (default: the gateway's choice).")
@click.option(
    "--check",
    "checks",
    multiple=True,
    type=click.Choice([c.key for c in CHECKS]),
    help="Run only this check (again for more).  [default: every check]",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    callback=_check_output,
    help="Write the report: .html (a page to print and hand in) or .json.",
)
@click.option("--force", is_flag=True, help="Overwrite the -o file if it exists.")
def doctor(
    admin: str,
    as_json: bool,
    device_id: str | None,
    all_devices: bool,
    channel: str | None,
    checks: tuple[str, ...],
    output: Path | None,
    force: bool,
) -> None:
    """Check that DEVICE_ID (or --all online devices) conforms to GB/T 28181.

    Registration, keepalive, time, DeviceInfo, Catalog, DeviceStatus, ConfigDownload, live video
    over UDP and TCP, PTZ and RecordInfo: a progress bar while it runs, then a pass/fail table
    with the reason of each failure. Exit status 1 if any check failed (or a device could not be
    checked), 0 when all passed; 130 on Ctrl-C, which stops the run on the gateway.
    """
    if all_devices == bool(device_id):
        raise click.UsageError("give a DEVICE_ID or --all")
    if all_devices and channel:
        raise click.UsageError("--channel names one device's camera: give a DEVICE_ID with it, not --all")
    if output is not None and output.exists() and not force:
        raise click.BadParameter(f"{output} exists: --force overwrites it", param_hint="'-o'")
    body: dict[str, Any] = {}
    if channel:
        body["channel"] = channel
    if checks:
        body["checks"] = list(dict.fromkeys(checks))
    live = is_terminal() and not as_json
    try:
        if device_id:
            _one(admin, device_id, body, as_json=as_json, output=output, force=force, live=live)
        else:
            _every(admin, body, as_json=as_json, output=output, force=force, live=live)
    except KeyboardInterrupt:
        # the request is closed by now (stream_lines), and the gateway cancels the run with it
        err_console.print("stopped: the doctor's run was cancelled", highlight=False, markup=False, soft_wrap=True)
        sys.exit(INTERRUPTED)


def _one(
    admin: str, device_id: str, body: dict[str, Any], *, as_json: bool, output: Path | None, force: bool, live: bool
) -> None:
    gateway = _gateway(admin) if output else {}
    try:
        with _progress(live) as progress:
            outcome = _run(admin, device_id, body, _Bar(progress, progress.add_task("starting", total=None)))
    except AdminApiError as exc:  # not begun: an unknown device, one not registered, a run already going
        fail(exc.message, exc.hint)
    if isinstance(outcome, _Stopped):
        if outcome.results and not as_json:  # what was seen before it broke off
            emit([r.to_json() for r in outcome.results], CHECK_COLUMNS, title="checks before the run stopped")
        fail(outcome.message, outcome.hint)
    report = outcome
    if as_json:
        print_json(report.to_json())
    else:
        _show(report)
    if output:
        _write(output, SiteReport((report,), (), gateway or dict(report.gateway), time.time()), force, quiet=as_json)
    sys.exit(0 if report.passed else 1)


def _every(admin: str, body: dict[str, Any], *, as_json: bool, output: Path | None, force: bool, live: bool) -> None:
    gateway = _gateway(admin)
    listed = request(admin, "GET", "/devices?state=online")["devices"]
    targets = [d for d in listed if d.get("online", True)]
    done: list[DoctorReport | NotRun] = []
    with _progress(live) as progress:
        devices = progress.add_task("devices", total=len(targets))
        bar = _Bar(progress, progress.add_task("checks", total=None))
        gone: AdminApiError | None = None  # no gateway there any more: the rest are not checked
        for i, row in enumerate(targets, 1):
            target = str(row["device_id"])
            known = {k: str(row.get(k) or "") for k in ("manufacturer", "model", "firmware", "transport")}
            known["name"] = str(row.get("name") or row.get("reported_name") or "")
            bar.begin(f"[{i}/{len(targets)}] {target} ")
            progress.update(devices, description=escape(printable(f"device {i} of {len(targets)}: {target}")))
            if gone is not None:
                outcome: DoctorReport | _Stopped = _Stopped(gone.message, gone.hint)
            else:
                try:
                    outcome = _run(admin, target, body, bar)
                except AdminApiError as exc:
                    if exc.status is None:  # the others would fail the same way; those checked are kept
                        gone = exc
                    outcome = _Stopped(exc.message, exc.hint)  # gone offline, removed, a run already going
            item = NotRun(target, outcome.message, known) if isinstance(outcome, _Stopped) else outcome
            done.append(item)
            line = _step_line(i, len(targets), item)
            if live:  # above the bar, which owns the terminal
                progress.console.print(line, highlight=False, markup=False, crop=False, soft_wrap=True)
            else:
                click.echo(line, err=True)
            progress.advance(devices)
    site = SiteReport(
        tuple(x for x in done if isinstance(x, DoctorReport)),
        tuple(x for x in done if isinstance(x, NotRun)),
        gateway,
        time.time(),
    )
    if as_json:
        print_json(site.to_json(display_zone()))
    elif targets:
        rows = [_summary_row(x) for x in done]
        emit(rows, SUMMARY_COLUMNS, title=plural(len(rows), "device"))
        counts = site.summary()
        click.echo(f"{counts['passed']} passed, {counts['failed']} failed, {counts['not_run']} not checked")
    else:
        click.echo("no device is online: nothing to check")
    if output:
        _write(output, site, force, quiet=as_json)
    sys.exit(0 if site.passed else 1)


def _step_line(i: int, total: int, item: DoctorReport | NotRun) -> str:
    if isinstance(item, NotRun):
        return printable(f"[{i}/{total}] {item.device_id}: not checked: {item.reason}")
    return printable(f"[{i}/{total}] {_verdict(item)}")
