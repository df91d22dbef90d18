"""The conformance doctor: a registered device run through what an acceptance engineer checks by hand.

:meth:`DoctorService.run` runs the checks of :data:`~gb28181gw.gb.doctor.CHECKS` in order, each
bounded in time, each ending in a :class:`~gb28181gw.gb.doctor.CheckResult` that says why it
failed, and tells each step to ``emit`` as a line of the progress stream
(:func:`~gb28181gw.gb.doctor.event`). A failed check does not stop the run; a device that goes
offline does: the checks left are skipped, saying so.

What each check does:

- ``register``: registered, with digest (unless registration is open here), for the expiry granted.
- ``keepalive``: the interval between its last keepalives (their arrival times, kept by the
  registrar since it last registered; with fewer than two, the next is awaited for its interval and
  a margin after the last one seen), against its HeartBeatInterval (asked for with ConfigDownload
  when not known yet), else ``registrar.keepalive_interval``.
- ``time``: the device's clock (DeviceStatus ``DeviceTime``) against ours, within
  :data:`TIME_TOLERANCE`: a device that took the Date of our REGISTER 200 OK is in step (§3.5).
- ``device_info``, ``device_status``, ``config_download`` (BasicParam): answered, Result OK, the
  fields the standard makes mandatory present.
- ``catalog``: answered; SumNum the same in every message and equal to the items sent, every ID
  valid, every body in the charset it declares (:func:`~gb28181gw.gb.query.catalog_problems`).
- ``live_udp``, ``live_tcp``: an INVITE of its own (:meth:`StreamService.play_own`) for the first
  video channel that is ON, asking for UDP, then TCP passive (the device connects to us); the first key frame
  within :data:`KEY_FRAME_WAIT` decoded (off the event loop), codec, size and key-frame interval
  reported; the session closed afterwards whatever happened.
- ``ptz``: for a PTZ camera (catalog PTZType 1, 4 or 5), a PTZ stop accepted (the MESSAGE answered 200).
- ``record_info``: RecordInfo of the last 24 hours answered (no recordings is a pass, noted).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gb28181gw import __version__
from gb28181gw.audit import Action
from gb28181gw.errors import DeviceError, DoctorError, RtpError, StreamError
from gb28181gw.gb.doctor import CHECK_BY_KEY, CHECKS, CheckResult, DoctorReport, Outcome, event
from gb28181gw.gb.ledger import CAMERA_TYPES
from gb28181gw.gb.model import Device
from gb28181gw.gb.query import CatalogResult, catalog_problems
from gb28181gw.gb.registrar import DateFormat
from gb28181gw.ids import GbId
from gb28181gw.manscdp.messages import CmdType, flat
from gb28181gw.manscdp.ptz import move
from gb28181gw.media.ps import Frame, PsDemuxer
from gb28181gw.media.rtp import RtpPacket
from gb28181gw.media.tcp_framing import Rfc4571Reader
from gb28181gw.metrics import DOCTOR_CHECKS, Metrics
from gb28181gw.sdp import SessionDescription, StreamMode
from gb28181gw.stopping import stop_task

from .audit import AuditService, audited
from .devices import DeviceService, config_section
from .registrar import RegistrarService
from .streams import StreamService

log = logging.getLogger("gb28181gw.doctor")

#: Told each line of the progress stream (:func:`~gb28181gw.gb.doctor.event`).
Emit = Callable[[bytes], Awaitable[None]]
#: Decodes a key frame into its (width, height); raises ``ValueError`` when it does not decode.
Decoder = Callable[[Frame], tuple[int, int]]

#: How far the device's clock may be from ours (seconds): a query's round trip and a clock read
#: to the second, not a drift (GB/T 28181-2022 §9.10.3 asks < 1 s per registration period).
TIME_TOLERANCE = 5.0
#: Seconds a keepalive may be late on its interval before the check fails.
KEEPALIVE_MARGIN = 5.0
#: Seconds the first key frame may take after the device answered the INVITE.
KEY_FRAME_WAIT = 10.0
#: Seconds to wait after the first key frame for the next (the key-frame interval).
NEXT_KEY_FRAME_WAIT = 6.0
#: Catalog PTZType values of PTZ cameras (§A.2.1, PROTOCOL.md §5.5): 1 dome, 4 PTZ bullet (遥控枪机),
#: 5 PTZ half-dome (2022); 2 half-dome and 3 fixed bullet (固定枪机) have no PTZ.
PTZ_TYPES = ("1", "4", "5")
#: DeviceStatus elements the standard makes mandatory (§A.2.6.7).
STATUS_FIELDS = ("Online", "Status")
#: DeviceInfo elements that are optional but that an acceptance record lists.
INFO_FIELDS = ("Manufacturer", "Model", "Firmware")
#: BasicParam elements the liveness and registration depend on.
BASIC_FIELDS = ("Expiration", "HeartBeatInterval", "HeartBeatCount")
_GB_TIME = "%Y-%m-%dT%H:%M:%S"
#: A dateTime as GB/T 28181 writes it (xs:dateTime: a fraction of a second and a zone may follow).
_XS_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


@dataclass(slots=True)
class _Run:
    """What one run learns as it goes (later checks read it)."""

    device_id: str
    channel: str
    status: dict[str, str] | None = None
    status_at: float = 0.0
    catalog: CatalogResult | None = None
    keepalive_interval: float | None = None
    offline: str = ""
    results: list[CheckResult] = field(default_factory=list)


class _Skip(Exception):
    """A check that does not apply (its reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Fail(Exception):
    """A check that failed, with what was seen (``detail``) and measured (``figures``)."""

    def __init__(self, reason: str, detail: str = "", figures: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.figures = figures or {}


@dataclass(frozen=True, slots=True)
class _Done:
    """How a check that ran to its end ended: pass, or warn with ``reason``."""

    detail: str
    figures: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


class DoctorService:
    """Runs the conformance checks on registered devices, one run per device at a time.

    Args:
        registrar / devices / streams: the services the checks go through.
        our_id: the gateway's ID (the report names who ran it).
        metrics: where ``gb28181gw_doctor_checks`` is counted.
        decode: decodes a key frame (``av``, run in an executor thread).
        audit: where each run (and a run refused) is recorded; the streams, queries and PTZ of its
            checks are recorded by the services they go through.
    """

    def __init__(
        self,
        registrar: RegistrarService,
        devices: DeviceService,
        streams: StreamService,
        *,
        our_id: str,
        metrics: Metrics,
        decode: Decoder,
        audit: AuditService | None = None,
    ) -> None:
        self.audit = audit
        self.registrar = registrar
        self.devices = devices
        self.streams = streams
        self.our_id = our_id
        self.decode = decode
        self.running: dict[str, asyncio.Task[Any]] = {}
        self.counts = metrics.counter(DOCTOR_CHECKS)
        self._checks: dict[str, Callable[[_Run], Awaitable[_Done]]] = {
            "register": self._register,
            "keepalive": self._keepalive,
            "time": self._time,
            "device_info": self._device_info,
            "catalog": self._catalog,
            "device_status": self._device_status,
            "config_download": self._config_download,
            "live_udp": lambda run: self._live(run, StreamMode.UDP),
            "live_tcp": lambda run: self._live(run, StreamMode.TCP_PASSIVE),
            "ptz": self._ptz,
            "record_info": self._record_info,
        }
        assert set(self._checks) == set(CHECK_BY_KEY), "every check of gb/doctor.py has a method"

    # --- the run ---------------------------------------------------------------------------

    def check_start(self, device_id: str, *, channel: str = "", checks: Sequence[str] | None = None) -> None:
        """Raise :class:`DoctorError` if a run of ``device_id`` cannot start (see :meth:`run`)."""
        device = self.registrar.devices.get(device_id)
        if device is None:
            raise DoctorError(f"no device {device_id}", DoctorError.NOT_FOUND, "see `gb28181gw devices`")
        if not device.registered or not device.host:
            raise DoctorError(
                f"device {device_id} is not registered",
                DoctorError.CONFLICT,
                "it must register first; `gb28181gw device show ID` says when it last did",
            )
        if device_id in self.running:
            raise DoctorError(f"device {device_id} is being checked already", DoctorError.CONFLICT)
        unknown = [k for k in checks or () if k not in CHECK_BY_KEY]
        if unknown:
            raise DoctorError(
                f"no check {', '.join(unknown)}", DoctorError.BAD_VALUE, f"checks are {', '.join(CHECK_BY_KEY)}"
            )
        if channel and channel != device_id and channel not in self.devices.channels.get(device_id, {}):
            raise DoctorError(
                f"{channel} is not a channel of device {device_id}",
                DoctorError.NOT_FOUND,
                "see `gb28181gw channels DEVICE` (a catalog refresh may be needed)",
            )

    async def run(
        self, device_id: str, emit: Emit, *, channel: str = "", checks: Sequence[str] | None = None
    ) -> DoctorReport:
        """Run the checks (all, or those named in ``checks``, in :data:`CHECKS` order) on ``device_id``.

        ``channel``: the channel the live, PTZ and RecordInfo checks use (default: the first video
        channel of its catalog). Each step is told to ``emit`` (start, running, result, done).
        Cancelling the run closes the streams it opened.

        Raises:
            DoctorError: 404 no such device or channel, 409 not registered or being run already,
                400 an unknown check.
        """
        asked = {"channel": channel, "checks": list(checks or ())}
        with audited(self.audit, Action.DOCTOR_RUN, device_id, asked) as done:
            self.check_start(device_id, channel=channel, checks=checks)
            task = asyncio.current_task()
            assert task is not None
            self.running[device_id] = task
            try:
                report = await self._run(device_id, emit, channel, checks)
            finally:
                del self.running[device_id]
            done.update(passed=report.passed, failed=len(report.failures))
            return report

    async def stop(self) -> None:
        """Cancel the runs going on (their streams close) and wait for them, each a bounded time."""
        runs = list(self.running.items())
        for _, task in runs:
            task.cancel()
        for device_id, task in runs:
            # not gathered: one run that does not end (a cancellation lost, stopping.py) would hold
            # the gateway's shutdown for ever
            await stop_task(task, what=f"doctor run of {device_id}")

    async def _run(self, device_id: str, emit: Emit, channel: str, keys: Sequence[str] | None) -> DoctorReport:
        started = time.time()
        chosen = [c for c in CHECKS if keys is None or c.key in keys]
        await emit(event("start", device_id=device_id, checks=[{"key": c.key, "title": c.title} for c in chosen]))
        run = _Run(device_id, channel)
        loop = asyncio.get_running_loop()
        for check in chosen:
            await emit(event("running", key=check.key))
            began = loop.time()
            device = self.registrar.devices.get(device_id)
            if not run.offline and (device is None or not device.online):
                reason = device.offline_reason if device is not None else "removed"
                run.offline = f"device went offline ({reason or 'unregistered'})"
            if run.offline:
                result = CheckResult(check.key, Outcome.SKIP, reason=run.offline)
            else:
                result = await self._one(run, check.key)
            result = CheckResult(
                result.key, result.outcome, result.detail, result.reason, loop.time() - began, result.figures
            )
            run.results.append(result)
            self.counts[check.key, result.outcome.value] += 1
            log.info(
                "doctor check",
                extra={"device": device_id, "check": check.key, "outcome": result.outcome.value,
                       "reason": result.reason},
            )  # fmt: skip
            await emit(event("result", result=result.to_json()))
        report = DoctorReport(
            device_id,
            self._device_json(self.registrar.devices.get(device_id)),
            started,
            time.time(),
            tuple(run.results),
            {"id": self.our_id, "version": __version__},
        )
        await emit(event("done", report=report.to_json()))
        return report

    async def _one(self, run: _Run, key: str) -> CheckResult:
        try:
            async with asyncio.timeout(self._bound(key, run.device_id)):
                done = await self._checks[key](run)
        except _Skip as skip:
            return CheckResult(key, Outcome.SKIP, reason=skip.reason)
        except _Fail as fail:
            return CheckResult(key, Outcome.FAIL, fail.detail, fail.reason, figures=fail.figures)
        except DeviceError as exc:
            return CheckResult(key, Outcome.FAIL, reason=str(exc))
        except StreamError as exc:
            return CheckResult(key, Outcome.FAIL, reason=f"{exc} ({exc.status})")
        except TimeoutError:
            return CheckResult(key, Outcome.FAIL, reason=f"no result within {self._bound(key, run.device_id):g} s")
        return CheckResult(
            key, Outcome.WARN if done.reason else Outcome.PASS, done.detail, done.reason, 0.0, done.figures
        )

    def _bound(self, key: str, device_id: str) -> float:
        """The most a check may take (each waits less itself; this catches what hangs)."""
        s = self.devices.settings
        if key == "keepalive":
            # its BasicParam asked first, then none seen yet: two intervals
            return s.query_timeout + 2 * (self._keepalive_expected(device_id)[0] + KEEPALIVE_MARGIN) + 10
        if key == "catalog":
            return s.catalog_total_timeout + 10
        if key.startswith("live_"):
            return self.streams.settings.invite_timeout + KEY_FRAME_WAIT + NEXT_KEY_FRAME_WAIT + 10
        return s.query_timeout * 2 + 10

    @staticmethod
    def _device_json(device: Device | None) -> dict[str, str]:
        if device is None:
            return {}
        return {
            "name": device.display_name,
            "manufacturer": device.manufacturer,
            "model": device.model,
            "firmware": device.firmware,
            "address": f"{device.host}:{device.port}",
            "transport": str(device.transport),
            "user_agent": device.user_agent,
        }

    # --- registration, keepalive, time -------------------------------------------------------

    async def _register(self, run: _Run) -> _Done:
        device = self.devices.registered(run.device_id)
        left = device.expires_at - time.time()
        figures: dict[str, Any] = {"expires": device.expires, "transport": str(device.transport)}
        if device.expires <= 0 or left <= 0:
            raise _Fail(f"registration expired ({device.expires} s granted)", figures=figures)
        detail = (
            f"over {device.transport} from {device.host}:{device.port}, {device.expires} s granted, {left:.0f} s left"
        )
        digest = bool(device.password or self.registrar.policy.password)
        figures["digest"] = digest
        if not digest:
            return _Done(
                detail, figures, "registration is open here (no password): digest authentication was not exercised"
            )
        return _Done(f"digest verified, {detail}", figures)

    async def _keepalive(self, run: _Run) -> _Done:
        device = self.registrar.devices.get(run.device_id)
        if device is not None and not device.keepalive_interval:
            # its own HeartBeatInterval (a device set to 120 s is on time at 120 s), not yet asked for
            with contextlib.suppress(DeviceError):
                await self.devices.config(run.device_id)
        expected, source = self._keepalive_expected(run.device_id)
        loop = asyncio.get_running_loop()
        wait = expected + KEEPALIVE_MARGIN
        started = loop.time()
        arrivals = self.registrar.keepalive_arrivals.get(run.device_id, ())
        # fewer than two since it registered: wait for the next, an interval after the last one seen
        # (or after we started), polled: keepalives are rare
        while len(arrivals) < 2 and loop.time() < max((started, *arrivals)) + wait:
            await asyncio.sleep(0.2)
            arrivals = self.registrar.keepalive_arrivals.get(run.device_id, ())
        figures: dict[str, Any] = {"expected": expected, "seen": len(arrivals)}
        if not arrivals:
            raise _Fail(f"no keepalive within {wait:g} s", figures=figures)
        if len(arrivals) < 2:
            raise _Fail(
                f"one keepalive, then none for {wait:g} s (expected every {expected:g} s)",
                figures=figures,
            )
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        interval = max(gaps)
        run.keepalive_interval = interval
        figures["interval"] = round(interval, 3)
        detail = f"every {interval:.1f} s over the last {len(gaps)} interval(s); {source} is {expected:g} s"
        if interval > expected + KEEPALIVE_MARGIN:
            raise _Fail(f"keepalive every {interval:.1f} s, later than {source} ({expected:g} s)", detail, figures)
        return _Done(detail, figures)

    def _keepalive_expected(self, device_id: str) -> tuple[float, str]:
        """The interval keepalives should come at, and where it comes from."""
        device = self.registrar.devices.get(device_id)
        own = device.keepalive_interval if device is not None else 0
        if own:
            return float(own), "its HeartBeatInterval"
        return float(self.registrar.keepalive_interval), "registrar.keepalive_interval"

    async def _status(self, run: _Run) -> dict[str, str]:
        if run.status is None:
            run.status = await self.devices.device_status(run.device_id)
            run.status_at = time.time()
        return run.status

    async def _time(self, run: _Run) -> _Done:
        policy = self.registrar.policy
        if policy.date_format is DateFormat.OFF:
            raise _Skip("the gateway sends no Date in its 200 OK (registrar.date_header = off)")
        status = await self._status(run)
        text = status.get("DeviceTime", "")
        if not text:
            raise _Skip("the device reports no DeviceTime in DeviceStatus: its clock cannot be read")
        try:
            # X8: milliseconds, a zone (then it counts, not ours), a space for the T are all read
            device_time = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise _Fail(f"DeviceTime {text!r} is not a GB/T 28181 dateTime (YYYY-MM-DDThh:mm:ss)") from None
        if device_time.tzinfo is None:
            device_time = device_time.replace(tzinfo=policy.time_zone)
        offset = device_time.timestamp() - run.status_at
        figures = {"offset": round(offset, 3), "tolerance": TIME_TOLERANCE, "device_time": text}
        way = "ahead of" if offset > 0 else "behind"
        detail = f"device clock {abs(offset):.1f} s {way} ours (tolerance {TIME_TOLERANCE:g} s)"
        if abs(offset) > TIME_TOLERANCE:
            raise _Fail(f"{detail}: it did not take the Date of our REGISTER 200 OK", detail, figures)
        if not _XS_DATE_TIME.fullmatch(text):
            return _Done(detail, figures, f"DeviceTime {text!r} is not a GB/T 28181 dateTime (YYYY-MM-DDThh:mm:ss)")
        return _Done(detail, figures)

    # --- queries -----------------------------------------------------------------------------

    async def _device_info(self, run: _Run) -> _Done:
        info = await self.devices.device_info(run.device_id)
        _result_ok(info, "DeviceInfo")
        detail = " ".join(
            v for v in (info.get("Manufacturer", ""), info.get("Model", ""), info.get("Firmware", "")) if v
        )
        figures = {k: v for k, v in info.items() if k in ("DeviceName", *INFO_FIELDS, "Channel")}
        missing = [f for f in INFO_FIELDS if not info.get(f)]
        if missing:
            return _Done(
                detail or "answered", figures, f"no {', '.join(missing)} (optional, but the record lists them)"
            )
        return _Done(detail, figures)

    async def _device_status(self, run: _Run) -> _Done:
        status = await self._status(run)
        _result_ok(status, "DeviceStatus")
        missing = [f for f in STATUS_FIELDS if not status.get(f)]
        figures = {k: v for k, v in status.items() if k in (*STATUS_FIELDS, "Encode", "Record", "DeviceTime")}
        detail = ", ".join(f"{k} {v}" for k, v in figures.items() if k != "DeviceTime")
        if missing:
            raise _Fail(f"DeviceStatus lacks {', '.join(missing)} (mandatory)", detail, figures)
        return _Done(detail, figures)

    async def _config_download(self, run: _Run) -> _Done:
        env = await self.devices.query(run.device_id, CmdType.CONFIG_DOWNLOAD, [("ConfigType", "BasicParam")])
        top = flat(env)
        if top.get("Result", "OK").upper() != "OK":
            raise _Fail(f"ConfigDownload answered Result {top['Result']}")
        basic = config_section(env, "BasicParam")
        figures = {k: v for k, v in basic.items() if k != "Password"}  # a secret, even when a device sends it
        missing = [f for f in BASIC_FIELDS if not basic.get(f)]
        detail = ", ".join(f"{k} {basic[k]}" for k in BASIC_FIELDS if basic.get(k))
        if missing:
            raise _Fail(f"BasicParam lacks {', '.join(missing)}", detail, figures)
        said = basic["HeartBeatInterval"]
        if run.keepalive_interval is not None and said.isdigit():
            if run.keepalive_interval > int(said) + KEEPALIVE_MARGIN:
                return _Done(
                    detail, figures, f"keepalives came every {run.keepalive_interval:.1f} s, not every {said} s"
                )
        return _Done(detail, figures)

    async def _catalog(self, run: _Run) -> _Done:
        # until it goes quiet: a SumNum smaller than what it sends is seen, and nothing it sent is lost
        result = await self.devices.catalog(run.device_id, linger=True)
        run.catalog = result
        said = sorted({n for n in result.sum_nums if n >= 0})
        figures: dict[str, Any] = {
            "channels": len(result.items),
            "messages": result.messages,
            "sum_num": said[0] if len(said) == 1 else said,
            "skipped": result.skipped_count,
            "complete": result.complete,
        }
        detail = f"{len(result.items)} channels in {result.messages} messages, SumNum {'/'.join(map(str, said)) or '-'}"
        problems = catalog_problems(result)
        if problems:
            figures["problems"] = problems
            raise _Fail("; ".join(problems), detail, figures)
        return _Done(detail, figures)

    # --- the channel's live video, PTZ and recordings --------------------------------------------

    def _channel(self, run: _Run) -> str:
        """The channel the media checks use: the one asked for, else the first video channel that is
        ON (an NVR's empty channels are OFF: they would fail the live checks for nothing), else the
        first whose status is unknown, else the first video channel."""
        if run.channel:
            return run.channel
        known = self.devices.channels.get(run.device_id, {})
        videos = sorted(
            (c.status != "ON", c.status == "OFF", channel_id)
            for channel_id, c in known.items()
            if _is_video(channel_id)
        )
        if videos:
            run.channel = videos[0][2]
            return run.channel
        if _is_video(run.device_id):
            run.channel = run.device_id  # an IPC is its own channel
            return run.device_id
        raise _Skip("no video channel (type 131/132) in its catalog")

    async def _live(self, run: _Run, mode: StreamMode) -> _Done:
        channel = self._channel(run)
        watcher = _MediaWatcher()
        server = await asyncio.start_server(watcher.serve, "127.0.0.1", 0)
        stream_id = ""
        try:
            port = server.sockets[0].getsockname()[1]
            st, _ = await self.streams.play_own(
                channel, mode=mode, transport="tcp", host="127.0.0.1", port=port, label="doctor"
            )
            stream_id = st.id
            # M4: a device may answer another transport or TCP role; if it also sends nothing, say why
            mismatch = _transport_mismatch(st.session.answer, mode)
            said = f"{mismatch}; " if mismatch else ""
            key = await watcher.first_key_frame(KEY_FRAME_WAIT)
            if key is None:
                ended = self.streams.ended_stream(stream_id)
                if ended is not None:
                    raise _Fail(f"the stream ended before a key frame: {ended.reason}", figures=watcher.figures())
                if not watcher.packets:
                    raise _Fail(f"{said}no media within {KEY_FRAME_WAIT:g} s", figures=watcher.figures())
                raise _Fail(
                    f"{watcher.packets} RTP packets but no key frame within {KEY_FRAME_WAIT:g} s",
                    figures=watcher.figures(),
                )
            try:
                width, height = await asyncio.get_running_loop().run_in_executor(None, self.decode, key)
            except Exception as exc:  # av raises its own errors for broken streams
                raise _Fail(f"the first {key.codec or 'video'} key frame does not decode: {exc}") from None
            await watcher.next_key_frame(NEXT_KEY_FRAME_WAIT)
        finally:
            server.close()
            watcher.close()
            if stream_id and stream_id in self.streams.streams:
                await self.streams.stop_stream(stream_id, "the doctor's check is over")
        figures = {**watcher.figures(), "codec": key.codec, "width": width, "height": height, "channel": channel}
        gop = watcher.gop_frames
        if gop:
            seconds = watcher.gop_seconds
            figures.update(key_frame_interval=gop, key_frame_seconds=seconds)
            every = f"key frame every {gop} frames" + (f" ({seconds:.1f} s)" if seconds else "")
        else:
            every = f"no second key frame within {NEXT_KEY_FRAME_WAIT:g} s"
        # the video came all the same (the labels were inverted): a warning, not a failure
        return _Done(f"{key.codec} {width}x{height}, {every}", figures, mismatch)

    async def _ptz(self, run: _Run) -> _Done:
        channel = self._channel(run)
        known = self.devices.channels.get(run.device_id, {}).get(channel)
        ptz_type = known.extra.get("PTZType", "") if known is not None else ""
        if ptz_type not in PTZ_TYPES:
            said = f"PTZType {ptz_type}" if ptz_type else "no PTZType in its catalog"
            raise _Skip(f"{channel}: {said}, not a PTZ camera (1, 4 and 5 are)")
        await self.devices.ptz(channel, move("stop"))
        return _Done(f"PTZ stop to {channel} answered 200", {"channel": channel, "ptz_type": ptz_type})

    async def _record_info(self, run: _Run) -> _Done:
        channel = self._channel(run)
        now = _dt.datetime.now(self.registrar.policy.time_zone)
        start, end = (now - _dt.timedelta(days=1)).strftime(_GB_TIME), now.strftime(_GB_TIME)
        result = await self.devices.records(channel, start, end)
        figures = {"channel": channel, "records": len(result.items), "messages": result.messages}
        if not result.items:
            return _Done(f"answered: no recordings of {channel} in the last 24 h", figures)
        return _Done(f"{len(result.items)} recordings of {channel} in the last 24 h", figures)


def _result_ok(answer: dict[str, str], what: str) -> None:
    result = answer.get("Result", "")
    if not result:
        raise _Fail(f"{what} answer has no Result (mandatory)")
    if result.upper() != "OK":
        raise _Fail(f"{what} answered Result {result}")


def _transport_mismatch(answer: SessionDescription | None, mode: StreamMode) -> str:
    """How the device's SDP answer differs from the transport asked for (M4), in words; "" if not."""
    video = answer.video() if answer is not None else None
    if video is None:
        return ""
    if mode is StreamMode.UDP:
        return f"asked for UDP, the device answered {video.proto}" if video.is_tcp else ""
    if not video.is_tcp:
        return f"asked for TCP passive (the device connects), the device answered {video.proto}"
    if video.setup not in (None, "active"):
        return f"asked for TCP passive (the device connects), the device answered a=setup:{video.setup}"
    return ""


def _is_video(channel_id: str) -> bool:
    try:
        gb = GbId.parse(channel_id)
    except ValueError:
        return False
    return gb.type_code in CAMERA_TYPES


class _MediaWatcher:
    """The doctor's consumer: the gateway connects and sends RTP (RFC 4571); key frames are watched."""

    def __init__(self) -> None:
        self.packets = 0
        self.frames = 0
        self.key: Frame | None = None
        self.gop_frames = 0
        self.gop_seconds = 0.0
        self._key_index = 0
        self._demuxer = PsDemuxer()
        self._first = asyncio.Event()
        self._second = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        framing = Rfc4571Reader()
        try:
            while chunk := await reader.read(256 * 1024):
                for data in framing.feed(chunk):
                    self._packet(data)
        except ConnectionError:
            pass
        finally:
            writer.close()
            self._first.set()  # the stream is gone: whoever waits learns it at once
            self._second.set()

    def _packet(self, data: bytes) -> None:
        try:
            payload = RtpPacket.parse(data).payload
        except RtpError:
            return
        self.packets += 1
        for frame in self._demuxer.feed(payload):
            self.frames += 1
            if not frame.key:
                continue
            if self.key is None:
                self.key, self._key_index = frame, self.frames
                self._first.set()
            elif not self.gop_frames:
                self.gop_frames = self.frames - self._key_index
                if frame.pts is not None and self.key.pts is not None:
                    self.gop_seconds = ((frame.pts - self.key.pts) % (1 << 33)) / 90_000
                self._second.set()

    async def first_key_frame(self, wait: float) -> Frame | None:
        try:
            async with asyncio.timeout(wait):
                await self._first.wait()
        except TimeoutError:
            pass
        return self.key

    async def next_key_frame(self, wait: float) -> None:
        try:
            async with asyncio.timeout(wait):
                await self._second.wait()
        except TimeoutError:
            pass

    def figures(self) -> dict[str, Any]:
        return {"packets": self.packets, "frames": self.frames}

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
