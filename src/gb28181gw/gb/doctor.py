"""The conformance doctor's checks and verdicts: what an acceptance engineer checks of a site's device.

Before a site's NVR is accepted onto the police network someone proves it speaks GB/T 28181:
it registers and keeps alive at its interval, takes the time we give it, answers DeviceInfo,
Catalog, DeviceStatus, ConfigDownload and RecordInfo, streams live video over UDP and TCP, and
obeys PTZ. :data:`CHECKS` lists those checks in the order they run; each ends in a
:class:`CheckResult`, and a device's run in a :class:`DoctorReport` a person can hand in.

The admin API streams a run as JSON lines (:func:`event`), one per step, so the CLI can show a
progress bar; their shapes are fixed here so that both ends read them the same way::

    {"event": "start", "device_id": …, "checks": [{"key": …, "title": …}, …]}
    {"event": "running", "key": …}
    {"event": "result", "result": {CheckResult.to_json()}}
    {"event": "done", "report": {DoctorReport.to_json()}}
    {"event": "error", "message": …, "hint": …}          (the run could not go on)

Pure records: the shell (``services/doctor.py``) runs the checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """How one check ended."""

    PASS = "pass"
    FAIL = "fail"
    #: not applicable (PTZ of a fixed camera) or impossible after an earlier failure; never a failure
    SKIP = "skip"
    #: passed with something an engineer should look at (open registration, a video that came over another
    #: transport than asked, a DeviceTime without its T)
    WARN = "warn"

    @property
    def failed(self) -> bool:
        return self is Outcome.FAIL


@dataclass(frozen=True, slots=True)
class Check:
    """One check the doctor runs.

    Attributes:
        key: its name in JSON and reports.
        title: what it checks, in a few words (the table's first column).
        standard: the clause of GB/T 28181-2022 (and PROTOCOL.md section) it checks.
    """

    key: str
    title: str
    standard: str


#: Every check, in the order they run.
CHECKS: tuple[Check, ...] = (
    Check("register", "Registration (digest, expiry)", "§9.1 (PROTOCOL.md §3)"),
    Check("keepalive", "Keepalive at its interval", "§9.6 (PROTOCOL.md §4)"),
    Check("time", "Date accepted (clock in step)", "§9.10 (PROTOCOL.md §3.5)"),
    Check("device_info", "DeviceInfo answered", "§9.5.3 (PROTOCOL.md §5.4.2)"),
    Check("catalog", "Catalog (count, SumNum, IDs, charset)", "§9.5.2, Annex M (PROTOCOL.md §5.4.1, §5.5)"),
    Check("device_status", "DeviceStatus answered", "§9.5.4 (PROTOCOL.md §5.4.3)"),
    Check("config_download", "ConfigDownload answered", "§9.5.6 (PROTOCOL.md §5.4.6)"),
    Check("live_udp", "Live video over UDP", "§9.2, Annex C (PROTOCOL.md §7.7, §8)"),
    Check("live_tcp", "Live video over TCP (passive)", "§9.2, Annex D (PROTOCOL.md §7.5, §8.6)"),
    Check("ptz", "PTZ stop accepted", "§9.3.2, Annex A.3 (PROTOCOL.md §5.6.2)"),
    Check("record_info", "RecordInfo answered", "§9.7 (PROTOCOL.md §5.4.4)"),
)

CHECK_BY_KEY: dict[str, Check] = {c.key: c for c in CHECKS}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """How one check ended.

    Attributes:
        key: the :class:`Check`.
        outcome: pass, fail, skip or warn.
        detail: what was seen, in a line (``12 channels in 3 messages``, ``H.264 1920x1080, key frame every 50``).
        reason: why it failed, was skipped or warned ("" when it passed cleanly).
        seconds: how long it took.
        figures: what was measured, by name (for the JSON report): interval, channels, codec, width …
    """

    key: str
    outcome: Outcome
    detail: str = ""
    reason: str = ""
    seconds: float = 0.0
    figures: Mapping[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        check = CHECK_BY_KEY.get(self.key)
        return check.title if check else self.key

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "figures": dict(self.figures),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckResult:
        """Read :meth:`to_json`'s output.

        Raises:
            ValueError: not a check result.
        """
        try:
            return cls(
                str(data["key"]),
                Outcome(data["outcome"]),
                str(data.get("detail", "")),
                str(data.get("reason", "")),
                float(data.get("seconds", 0.0)),
                dict(data.get("figures") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a doctor check result: {exc}") from None


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """One device's run.

    Attributes:
        device_id: the device.
        device: what is known of it: name, manufacturer, model, firmware, address, transport, user_agent.
        started_at / finished_at: wall-clock epoch seconds.
        results: one per check run, in :data:`CHECKS` order.
        gateway: who ran it: the gateway's ID and version.
    """

    device_id: str
    device: Mapping[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0
    results: tuple[CheckResult, ...] = ()
    gateway: Mapping[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """No check failed (and at least one ran)."""
        return bool(self.results) and not any(r.outcome.failed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome.failed]

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "device": dict(self.device),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "passed": self.passed,
            "results": [r.to_json() for r in self.results],
            "gateway": dict(self.gateway),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DoctorReport:
        """Read :meth:`to_json`'s output.

        Raises:
            ValueError: not a report.
        """
        try:
            return cls(
                str(data["device_id"]),
                {str(k): str(v) for k, v in dict(data.get("device") or {}).items()},
                float(data.get("started_at", 0.0)),
                float(data.get("finished_at", 0.0)),
                tuple(CheckResult.from_json(r) for r in data.get("results") or ()),
                {str(k): str(v) for k, v in dict(data.get("gateway") or {}).items()},
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a doctor report: {exc}") from None


def event(kind: str, **fields: Any) -> bytes:
    """One line of a run's progress stream (see the module docstring)."""
    return json.dumps({"event": kind, **fields}, ensure_ascii=False).encode() + b"\n"
