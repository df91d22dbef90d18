"""The camera ledger (一机一档) service: entries kept in memory and in the store, edited whole or not at all.

Every 20-digit ID the gateway knows may have a ledger entry: a channel (a camera, the rows of
most forms), a device (an NVR), or the gateway itself (the platform sheet of the integration list).
An edit names IDs and field values as people write them; it is checked in full (every ID known,
every value readable) before anything is written, then written in one store transaction, so an
import is applied whole or not at all. :meth:`LedgerService.row` gives what a form prints: the
ledger over what the device reports (``gb/ledger.py`` :func:`~gb28181gw.gb.ledger.merge`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gb28181gw.audit import Action, Result
from gb28181gw.config import Config
from gb28181gw.divisions import area_of
from gb28181gw.errors import IdError, LedgerError, LedgerValueError
from gb28181gw.gb.ledger import Change, LedgerEntry, diff, merge, normalise_all, same_value
from gb28181gw.gb.model import Channel, Device
from gb28181gw.ids import GbId, type_name
from gb28181gw.services.audit import AuditService
from gb28181gw.services.devices import DeviceService
from gb28181gw.services.registrar import RegistrarService
from gb28181gw.store.base import Store

log = logging.getLogger("gb28181gw.ledger")

#: Edits checked between two yields to the event loop.
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one edit (an import's row, an API call's entry) cannot be applied.

    Attributes:
        id: the ID it names ("" if it names none).
        field: the field at fault ("" for the whole row: an unknown ID).
        reason: in words.
        line: the row of the file it came from (0 when not from a file).
    """

    id: str
    field: str
    reason: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class Edit:
    """Values for one ID as people write them (``""`` clears a field).

    Attributes:
        id: the 20-digit ID.
        values: field key → text.
        line: the row of the file it came from (0 when not from a file).
    """

    id: str
    values: Mapping[str, str]
    line: int = 0


@dataclass(frozen=True, slots=True)
class EditResult:
    """What :meth:`LedgerService.apply` did or would do.

    Attributes:
        changes: every field changed (or that would change), in the order of the edits.
        problems: every edit that cannot be applied, with its reason.
        applied: whether the changes were written (not on a dry run, not when there are problems
            under ``strict``).
    """

    changes: list[Change]
    problems: list[Problem]
    applied: bool


class LedgerService:
    """Keeps the ledger; see the module docstring.

    Args:
        config: the gateway's configuration (its own ID is the platform entry's).
        registrar: the devices.
        devices: their channels.
        store: where entries are kept.
        clock: wall-clock epoch seconds (``updated_at``).
        audit: where edits, imports (one record each, with counts) and removals are recorded.
    """

    def __init__(
        self,
        config: Config,
        registrar: RegistrarService,
        devices: DeviceService,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        audit: AuditService | None = None,
    ) -> None:
        self.audit = audit
        self.config = config
        self.registrar = registrar
        self.devices = devices
        self.store = store
        self._clock = clock
        self.entries: dict[str, LedgerEntry] = {}
        # an entry is written whole, computed from what memory holds: two edits of one ID must not
        # both start from the same old entry while the first is still being stored (a lost field)
        self._writing = asyncio.Lock()

    async def start(self) -> None:
        """Load every entry."""
        self.entries = {e.id: e for e in await self.store.load_ledger()}
        log.info("ledger loaded", extra={"entries": len(self.entries)})

    # --- what there is ----------------------------------------------------------------------

    @property
    def platform_id(self) -> str:
        """The gateway's own ID: the entry the platform sheet of a form is filled from."""
        return self.config.gateway.id

    def channel(self, channel_id: str) -> Channel | None:
        """The channel of that ID, of whichever device reported it."""
        owner = self.devices.owner_of(channel_id)
        if owner is None or owner == channel_id:
            return None
        return self.devices.channels.get(owner, {}).get(channel_id)

    def kind_of(self, id_: str) -> str:
        """``channel``, ``device`` or ``platform`` (the gateway itself); "" for an ID the gateway does not know."""
        if id_ == self.platform_id:
            return "platform"
        if id_ in self.registrar.devices:
            return "device"
        return "channel" if self.channel(id_) is not None else ""

    def channels(self) -> Iterator[Channel]:
        """Every channel of every device that is a 20-digit ID (civil-code and group nodes are not rows)."""
        for device_id in sorted(self.devices.channels):
            for channel_id, ch in sorted(self.devices.channels[device_id].items()):
                if len(channel_id) == 20:
                    yield ch

    def entry(self, id_: str) -> LedgerEntry:
        """The entry of ``id_`` (empty if none was written)."""
        return self.entries.get(id_) or LedgerEntry(id_)

    def reported(self, id_: str) -> dict[str, str]:
        """What the gateway knows of ``id_`` by itself (:data:`~gb28181gw.gb.ledger.REPORTED`)."""
        kind = self.kind_of(id_)
        out = {"id": id_, "kind": kind}
        try:
            out["type"] = type_name(GbId.parse(id_).type_code)
        except IdError:
            pass
        if kind == "device":
            d = self.registrar.devices[id_]
            out.update(self._device_values(d))
            out["status"] = "online" if d.online else "offline"
            out["reported_name"] = d.reported_name or d.name
            out["civil_code"] = id_[:6]
        elif kind == "channel":
            ch = self.channel(id_)
            assert ch is not None
            device = self.registrar.devices.get(ch.device_id)
            if device is not None:
                out.update(self._device_values(device))
            x = ch.extra
            civil = x.get("CivilCode", "")
            out.update(
                status=ch.status,
                reported_name=ch.name,
                civil_code=civil if civil.isdigit() and len(civil) in (2, 4, 6, 8) else id_[:6],
                manufacturer=x.get("Manufacturer", "") or out.get("manufacturer", ""),
                reported_model=x.get("Model", "") or out.get("reported_model", ""),
                address=x.get("Address", ""),
                reported_ip=x.get("IPAddress", ""),
                reported_port=x.get("Port", ""),
                reported_longitude=x.get("Longitude", ""),
                reported_latitude=x.get("Latitude", ""),
            )
        elif kind == "platform":
            out.update(device_id=id_, civil_code=id_[:6], status="online")
        return out

    @staticmethod
    def _device_values(d: Device) -> dict[str, str]:
        return {
            "device_id": d.device_id,
            "device_name": d.name or d.reported_name,
            "manufacturer": d.manufacturer,
            "reported_model": d.model,
            "reported_ip": d.host,
            "reported_port": str(d.port) if d.port else "",
        }

    def row(self, id_: str) -> dict[str, str]:
        """What a form prints for ``id_``: the ledger over what the gateway knows, with area names."""
        reported = self.reported(id_)
        area = area_of(reported.get("civil_code", "") or id_)
        return merge(self.entry(id_).values, reported, (area.province, area.city, area.district))

    # --- changing it --------------------------------------------------------------------------

    async def edit(self, id_: str, values: Mapping[str, str]) -> list[Change]:
        """Change one entry; the fields it changed.

        Raises:
            LedgerError: the ID is unknown (404) or a value cannot be read (400, a LedgerValueError).
        """
        async with self._writing:
            result = await self._apply([Edit(id_, values)], strict=True, dry_run=False)
        changed = {c.field: c.new for c in result.changes}
        if result.problems:
            p = result.problems[0]
            self._audit(Action.LEDGER_EDIT, id_, {"fields": sorted(values)}, result=Result.REFUSED, detail=p.reason)
            if not p.field:
                raise LedgerError(p.reason, LedgerError.NOT_FOUND, "see `gb28181gw channels` for the IDs there are")
            raise LedgerValueError(p.field, p.reason)
        self._audit(Action.LEDGER_EDIT, id_, {"changed": changed})
        return result.changes

    def check(self, edits: list[Edit]) -> tuple[dict[str, dict[str, str]], list[Problem]]:
        """Read ``edits``: the kept values per ID (later edits of an ID over earlier ones), and every problem."""
        kept: dict[str, dict[str, str]] = {}
        problems: list[Problem] = []
        for _ in self._checking(edits, kept, problems):
            pass
        return kept, problems

    def _checking(self, edits: list[Edit], kept: dict[str, dict[str, str]], problems: list[Problem]) -> Iterator[None]:
        """:meth:`check`, pausing after each edit (so :meth:`apply` can let the event loop run)."""
        first: dict[str, int] = {}
        for e in edits:
            yield
            if e.line and e.id in first:
                # two rows of one file for one camera: which is meant cannot be told
                problems.append(Problem(e.id, "", f"{e.id} is also on line {first[e.id]}", e.line))
                continue
            first.setdefault(e.id, e.line)
            if not self.kind_of(e.id):
                problems.append(Problem(e.id, "", f"{e.id} is not a channel or device of this gateway", e.line))
                continue
            values: dict[str, str] = {}
            entry, shown = self.entry(e.id), self.row(e.id)
            for key, text in e.values.items():
                if text.strip() and text.strip() == shown.get(key) and not entry.values.get(key):
                    # what the device reports, exported and read back: not the ledger's to judge (a
                    # camera's own 5-decimal position is flagged on export, never a failed import)
                    continue
                try:
                    values.update(normalise_all({key: text}))
                except LedgerValueError as exc:
                    problems.append(Problem(e.id, exc.field, exc.reason, e.line))
            kept.setdefault(e.id, {}).update(values)

    def orphans(self) -> list[str]:
        """IDs whose ledger entry names no channel or device the gateway has now (an NVR's channels
        renumbered when cameras were re-added, a device removed): kept until removed, never lost."""
        return sorted(id_ for id_ in self.entries if not self.kind_of(id_))

    async def remove(self, id_: str) -> LedgerEntry | None:
        """Forget the entry of ``id_``; what it held, or ``None`` if there was none.

        Raises:
            StoreError: the store cannot be written (the entry is kept in memory too).
        """
        async with self._writing:
            entry = self.entries.get(id_)
            if entry is None:
                self._audit(Action.LEDGER_REMOVE, id_, result=Result.REFUSED, detail=f"no ledger entry {id_}")
                return None
            await self.store.delete_ledger([id_])
            del self.entries[id_]
            log.info("ledger entry removed", extra={"id": id_, "fields": len(entry.values)})
            self._audit(Action.LEDGER_REMOVE, id_, {"fields": sorted(entry.values)})
            return entry

    async def apply(self, edits: list[Edit], *, strict: bool = False, dry_run: bool = False) -> EditResult:
        """Check ``edits`` and, unless ``dry_run`` (or ``strict`` and any problem), write their changes at once.

        Without ``strict`` the edits that can be read are applied and the others reported; a value
        that cannot be read leaves its whole edit (its row) out, never half a row.

        Raises:
            StoreError: the store cannot be written (nothing changed in memory either).
        """
        async with self._writing:
            result = await self._apply(edits, strict=strict, dry_run=dry_run)
        if not dry_run:  # one record for the whole file, however many rows it had
            counts = {
                "rows": len(edits),
                "entries": len({c.id for c in result.changes}) if result.applied else 0,
                "fields": len(result.changes) if result.applied else 0,
                "problems": len(result.problems),
                "strict": strict,
            }
            how = Result.OK if result.applied or not result.problems else Result.REFUSED
            detail = result.problems[0].reason if result.problems else ""
            self._audit(Action.LEDGER_IMPORT, "", counts, result=how, detail=detail)
        return result

    def _audit(self, action: Action, target: str, params: dict[str, Any] | None = None, **how: Any) -> None:
        if self.audit is not None:
            self.audit.record(action, target, params, **how)

    async def _apply(self, edits: list[Edit], *, strict: bool, dry_run: bool) -> EditResult:
        kept: dict[str, dict[str, str]] = {}
        problems: list[Problem] = []
        # thousands of rows are seconds of work: keepalives and relayed media share this loop
        for n, _ in enumerate(self._checking(edits, kept, problems), 1):
            if n % _CHUNK == 0:
                await asyncio.sleep(0)
        bad = {p.id for p in problems}  # an ID with any problem is left out whole
        changes: list[Change] = []
        entries: dict[str, LedgerEntry] = {}
        now = self._clock()
        for n, (id_, values) in enumerate(kept.items(), 1):
            if n % _CHUNK == 0:
                await asyncio.sleep(0)
            if id_ in bad:
                continue
            entry = self.entry(id_)
            shown = self.row(id_)
            # what the row already shows is no change: a file exported and imported again (the
            # device's own name, a date written to the month only) must leave the ledger as it was
            values = {
                k: v for k, v in values.items() if not same_value(k, v, entry.values.get(k, ""), shown.get(k, ""))
            }
            found = diff(entry, values)
            if found:
                changes.extend(found)
                entries[id_] = entry.changed({c.field: c.new for c in found}, now)
        if dry_run or (strict and problems) or not entries:
            return EditResult(changes, problems, applied=False)
        await self.store.save_ledger(list(entries.values()))
        self.entries.update(entries)
        log.info("ledger changed", extra={"entries": len(entries), "fields": len(changes)})
        return EditResult(changes, problems, applied=True)
