"""The embedded default store: one SQLite file, used from one worker thread.

The event loop never blocks on it: every call runs on a single dedicated thread
that owns the connection. WAL journaling keeps readers and the batched writer
apart. The file is locked (``flock`` on ``<file>.lock``) so two gateways cannot
share it, checked with ``PRAGMA quick_check`` when opened, and migrated by
``PRAGMA user_version``; a file from a newer gb28181gw is refused, never rewritten.

Devices send text we cannot always decode (a GB2312 ``User-Agent``); the SIP layer keeps
such bytes as lone surrogates (``surrogateescape``) so they survive byte for byte. SQLite
text must be UTF-8, so such a value is stored as its original bytes (a BLOB in the TEXT
column) and read back as the very same string. A write that fails is rolled back whatever
the exception, so one bad value can never leave a transaction open behind it.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gb28181gw.access import Role, Token
from gb28181gw.audit import Anchor, AuditEntry, AuditQuery, AuditRecord, chain_hash
from gb28181gw.errors import StoreError, StoreRecordError
from gb28181gw.gb.ledger import LedgerEntry
from gb28181gw.gb.model import BAN_FIELDS, DEVICE_FIELDS, Alarm, Ban, Channel, Device, Override, ShareEntry
from gb28181gw.store.base import device_rows, params_json, stored_audit

T = TypeVar("T")
log = logging.getLogger("gb28181gw.store")

DEVICE_COLUMNS = list(DEVICE_FIELDS)

#: Schema migrations; entry i brings user_version i to i + 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        manufacturer TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        firmware TEXT NOT NULL DEFAULT '',
        transport TEXT NOT NULL DEFAULT 'UDP',
        host TEXT NOT NULL DEFAULT '',
        port INTEGER NOT NULL DEFAULT 0,
        local_host TEXT NOT NULL DEFAULT '',
        local_port INTEGER NOT NULL DEFAULT 0,
        charset TEXT NOT NULL DEFAULT 'GB2312',
        stream_mode TEXT NOT NULL DEFAULT 'udp',
        password TEXT NOT NULL DEFAULT '',
        provisioned INTEGER NOT NULL DEFAULT 0,
        registered INTEGER NOT NULL DEFAULT 0,
        online INTEGER NOT NULL DEFAULT 0,
        expires INTEGER NOT NULL DEFAULT 0,
        registered_at REAL NOT NULL DEFAULT 0,
        expires_at REAL NOT NULL DEFAULT 0,
        last_keepalive REAL NOT NULL DEFAULT 0,
        keepalive_interval INTEGER NOT NULL DEFAULT 0,
        keepalive_count INTEGER NOT NULL DEFAULT 0,
        user_agent TEXT NOT NULL DEFAULT '',
        gb_version TEXT NOT NULL DEFAULT '',
        call_id TEXT NOT NULL DEFAULT '',
        offline_reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE channels (
        channel_id TEXT NOT NULL,
        device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
        name TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT '',
        parent_id TEXT NOT NULL DEFAULT '',
        extra TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (device_id, channel_id)
    );
    CREATE INDEX channels_by_id ON channels(channel_id);
    """,
    """
    CREATE TABLE alarms (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id TEXT NOT NULL,
        reported_by TEXT NOT NULL,
        priority TEXT NOT NULL DEFAULT '',
        method TEXT NOT NULL DEFAULT '',
        alarm_type TEXT NOT NULL DEFAULT '',
        alarm_time TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        received_at REAL NOT NULL DEFAULT 0,
        extra TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX alarms_by_device ON alarms(device_id, id);
    """,
    # the device state enum replaces the registered/online pair (registered and not online = offline)
    """
    ALTER TABLE devices ADD COLUMN state TEXT NOT NULL DEFAULT 'unregistered';
    UPDATE devices SET state = CASE WHEN registered AND online THEN 'online' WHEN registered THEN 'offline'
        ELSE 'unregistered' END;
    ALTER TABLE devices DROP COLUMN registered;
    ALTER TABLE devices DROP COLUMN online;
    """,
    # bans kept across restarts (registrar.persist_bans); bounded by the registrar's own bound on
    # active bans, and ended ones are deleted with every write
    """
    CREATE TABLE bans (
        key TEXT PRIMARY KEY,
        address TEXT NOT NULL DEFAULT '',
        device_id TEXT NOT NULL DEFAULT '',
        since REAL NOT NULL DEFAULT 0,
        until REAL NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        failures INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX bans_by_until ON bans(until);
    """,
    # the operator's name and the device's own are kept apart: a device that registered by itself
    # never had an operator's name, so what it holds is the device's; a provisioned device keeps
    # its name as the operator's (its next DeviceInfo fills reported_name). Alarms are also found
    # by the device that reported them (an NVR for its channels).
    """
    ALTER TABLE devices ADD COLUMN reported_name TEXT NOT NULL DEFAULT '';
    UPDATE devices SET reported_name = name, name = '' WHERE NOT provisioned;
    CREATE INDEX alarms_by_reporter ON alarms(reported_by, id);
    """,
    # what the operator shared with or took back from each superior, and what it is told of a
    # channel instead of what the device reported (cascade, issue 12)
    """
    CREATE TABLE upstream_shares (
        upstream TEXT NOT NULL,
        entry TEXT NOT NULL,
        shared INTEGER NOT NULL,
        PRIMARY KEY (upstream, entry)
    );
    CREATE TABLE upstream_overrides (
        upstream TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        civil_code TEXT NOT NULL DEFAULT '',
        parent_id TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (upstream, channel_id)
    );
    """,
    # the camera ledger (一机一档, issue 14): what the authorities' forms ask of each ID besides what the
    # device reports. Its own table, keyed by the 20-digit ID alone: a catalog refresh rewrites the
    # channels and must not take the ledger with it; the fields are JSON so a new form's field needs no
    # migration
    """
    CREATE TABLE ledger (
        id TEXT PRIMARY KEY,
        fields TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL DEFAULT 0
    );
    """,
    # who may use the admin API, and what was done (issue 15). The audit trail is appended to
    # only (retention removes from the front); audit_chain keeps where the stored chain starts
    # (the last record removed) and the last record written, so a cut at either end shows
    """
    CREATE TABLE tokens (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        revoked REAL NOT NULL DEFAULT 0,
        last_used REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        actor TEXT NOT NULL,
        source TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        params TEXT NOT NULL,
        result TEXT NOT NULL,
        detail TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_time ON audit (time);
    CREATE INDEX audit_target ON audit (target);
    CREATE TABLE audit_chain (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        anchor_seq INTEGER NOT NULL,
        anchor_hash TEXT NOT NULL,
        head_seq INTEGER NOT NULL,
        head_hash TEXT NOT NULL
    );
    INSERT INTO audit_chain VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000',
                                    0, '0000000000000000000000000000000000000000000000000000000000000000');
    """,
    # the Path a device's REGISTER came with (RFC 3327: a dispatcher in front of several nodes),
    # kept so that requests to it after a restart still go through that front
    """
    ALTER TABLE devices ADD COLUMN path TEXT NOT NULL DEFAULT '';
    """,
]
#: Alarms kept; older ones are deleted as new ones come.
MAX_ALARMS = 100_000
#: Device rows written (in one transaction) before the writer thread sleeps :data:`WRITE_PAUSE`.
#: Why: binding a row's values holds the GIL, so while the registrar's 30 s write of 10,000
#: rows ran (~200 ms) the event loop's thread had the GIL only every other switch interval
#: (5 ms): under a keepalive load the loop-hold probe saw holds of 10-15 ms with half of that
#: on its CPU, and every keepalive queued behind them. A sleep hands the GIL back at once;
#: 250 rows take ~2 ms of it. The write takes ~80 ms longer; nothing waits on it but the store.
WRITE_STEP = 250
#: Seconds the writer thread sleeps between two steps of :data:`WRITE_STEP` rows.
WRITE_PAUSE = 0.002
SCHEMA_VERSION = len(MIGRATIONS)

_UPSERT_DEVICE = (
    f"INSERT INTO devices ({', '.join(DEVICE_COLUMNS)}) VALUES ({', '.join('?' for _ in DEVICE_COLUMNS)}) "
    f"ON CONFLICT(device_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in DEVICE_COLUMNS[1:])}"
)


def _to_sql(value: object) -> object:
    """``value`` as SQLite can hold it: text with undecodable device bytes goes in as those bytes."""
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            # lone surrogates from surrogateescape stand for the bytes the device sent
            try:
                return value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raise StoreRecordError(f"text {value!r} holds characters that cannot be stored") from None
    return value


def _row_to_sql(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``tuple(map(_to_sql, row))``: the row itself when its text is all ASCII, as almost every
    row's is (only non-ASCII text can need converting). Why: this runs in the writer thread but
    holds the GIL, which the event loop then waits for; calling _to_sql on each of 28 fields
    took 28 ms per 10,000 rows, the check alone 9 ms."""
    for value in row:
        if isinstance(value, str) and not value.isascii():
            return tuple(map(_to_sql, row))
    return row


def _from_sql(value: Any) -> Any:
    """The inverse of :func:`_to_sql`."""
    return value.decode("utf-8", "surrogateescape") if value.__class__ is bytes else value


def _text(row: Sequence[Any], count: int) -> list[str]:
    """The first ``count`` columns of ``row``, all text."""
    return [_from_sql(v) for v in row[:count]]


_UPSERT_BAN = (
    f"INSERT INTO bans ({', '.join(BAN_FIELDS)}) VALUES ({', '.join('?' for _ in BAN_FIELDS)}) "
    f"ON CONFLICT(key) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in BAN_FIELDS[1:])}"
)

_UPSERT_CHANNEL = (
    "INSERT INTO channels (channel_id, device_id, name, status, parent_id, extra) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(device_id, channel_id) DO UPDATE SET name = excluded.name, status = excluded.status, "
    "parent_id = excluded.parent_id, extra = excluded.extra"
)


class SqliteStore:
    """:class:`~gb28181gw.store.base.Store` on a SQLite file.

    Args:
        path: the database file; its directory is created if missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gb28181gw-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self.writable = True
        self.last_error = ""
        self.write_failures: Counter[str] = Counter()

    def _row(self, values: Sequence[object]) -> tuple[object, ...]:
        try:
            return tuple(_to_sql(v) for v in values)
        except StoreRecordError:
            self.write_failures["record"] += 1
            raise

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is not open")
        return self._conn

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {self.path}: {exc.strerror}") from None
        lock_path = f"{self.path}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"store {self.path} is in use by another gb28181gw (pid {holder}); "
                "stop it or give this one its own store.path"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        try:
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            check = conn.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise sqlite3.DatabaseError(check[0] if check else "quick_check returned nothing")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._unlock()
            raise StoreError(
                f"store {self.path} is corrupt or not a gb28181gw database ({exc}); it was left untouched: "
                "move it away or restore a backup"
            ) from None
        if version > SCHEMA_VERSION:
            conn.close()
            self._unlock()
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than this gb28181gw knows "
                f"({SCHEMA_VERSION}); upgrade gb28181gw or use another store.path"
            )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        for v in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[v].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {v + 1}")
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                conn.close()
                self._unlock()
                raise StoreError(f"migrating {self.path} to schema {v + 1} failed: {exc}") from None
        self._conn = conn

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._unlock()

        await self._run(_close)
        self._executor.shutdown(wait=True)

    def _in_transaction(self, work: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``work`` in one transaction on the worker thread; roll back and explain on failure.

        Raises:
            StoreRecordError: a value in the records cannot be stored (the store is fine).
            StoreError: the store itself cannot be written (disk full, I/O error, read-only).
        """
        db = self._db()
        try:
            db.execute("BEGIN")
            result = work(db)
            db.execute("COMMIT")
        except BaseException as exc:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back (a full disk can do that) or the file is gone
            if not isinstance(exc, Exception):
                raise
            if isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError | sqlite3.ProgrammingError):
                self.writable = False
                self.last_error = f"{what} in {self.path} failed: {exc}"
                self.write_failures["store"] += 1
                raise StoreError(self.last_error) from None
            self.write_failures["record"] += 1
            raise StoreRecordError(f"{what} in {self.path} failed: {type(exc).__name__}: {exc}") from None
        self.writable = True
        return result

    async def _many(self, sql: str, rows: list[tuple[object, ...]], what: str) -> None:
        """``sql`` once per row, in one transaction; nothing to do for no rows."""

        def work(db: sqlite3.Connection) -> None:
            db.executemany(sql, rows)

        if rows:
            await self._run(lambda: self._in_transaction(work, what))

    # --- devices ---------------------------------------------------------------------

    def _device(self, row: sqlite3.Row | tuple[Any, ...]) -> Device:
        values = dict(zip(DEVICE_COLUMNS, map(_from_sql, row), strict=True))
        try:
            return Device.from_row(values)
        except ValueError as exc:
            raise StoreError(f"device {values['device_id']} in {self.path} cannot be read: {exc}") from None

    async def load_devices(self) -> list[Device]:
        def load() -> list[Device]:
            cols = ", ".join(DEVICE_COLUMNS)
            return [self._device(r) for r in self._db().execute(f"SELECT {cols} FROM devices ORDER BY device_id")]

        return await self._run(load)

    async def get_device(self, device_id: str) -> Device | None:
        def get() -> Device | None:
            cols = ", ".join(DEVICE_COLUMNS)
            row = self._db().execute(f"SELECT {cols} FROM devices WHERE device_id = ?", (device_id,)).fetchone()
            return self._device(row) if row else None

        return await self._run(get)

    async def save_devices(self, devices: Sequence[Device]) -> None:
        if not devices:
            return
        # taken on the loop (callers go on changing the devices), in steps: see device_rows
        snapshot = await device_rows(devices)

        def save(db: sqlite3.Connection) -> None:
            # converted here, off the event loop: every 30 s the registrar writes the keepalive
            # times of every device, and converting 10,000 rows on the loop held it ~20 ms
            # (a value that cannot be stored is a StoreRecordError all the same)
            for start in range(0, len(snapshot), WRITE_STEP):
                if start:
                    time.sleep(WRITE_PAUSE)  # the GIL to the event loop's thread: see WRITE_STEP
                db.executemany(_UPSERT_DEVICE, [_row_to_sql(row) for row in snapshot[start : start + WRITE_STEP]])

        await self._run(lambda: self._in_transaction(save, f"writing {len(snapshot)} devices"))

    async def delete_device(self, device_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM channels WHERE device_id = ?", (device_id,))
            return bool(db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,)).rowcount)

        return await self._run(lambda: self._in_transaction(delete, f"deleting {device_id}"))

    async def count_devices(self) -> int:
        return await self._run(lambda: int(self._db().execute("SELECT COUNT(*) FROM devices").fetchone()[0]))

    # --- channels --------------------------------------------------------------------

    def _channel_rows(self, device_id: str, channels: Sequence[Channel]) -> list[tuple[object, ...]]:
        return [
            self._row((c.channel_id, device_id, c.name, c.status, c.parent_id, json.dumps(c.extra))) for c in channels
        ]

    async def replace_channels(self, device_id: str, channels: Sequence[Channel]) -> None:
        rows = self._channel_rows(device_id, channels)

        def replace(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM channels WHERE device_id = ?", (device_id,))
            db.executemany(_UPSERT_CHANNEL, rows)

        await self._run(lambda: self._in_transaction(replace, f"writing channels of {device_id}"))

    async def update_channels(self, device_id: str, upserts: Sequence[Channel], deletes: Sequence[str] = ()) -> None:
        rows = self._channel_rows(device_id, upserts)
        gone = [(device_id, channel_id) for channel_id in deletes]

        def update(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM channels WHERE device_id = ? AND channel_id = ?", gone)
            db.executemany(_UPSERT_CHANNEL, rows)

        if rows or gone:
            await self._run(lambda: self._in_transaction(update, f"updating channels of {device_id}"))

    async def load_channels(self, device_id: str | None = None) -> list[Channel]:
        def load() -> list[Channel]:
            sql = "SELECT channel_id, device_id, name, status, parent_id, extra FROM channels"
            args: tuple[str, ...] = ()
            if device_id is not None:
                sql += " WHERE device_id = ?"
                args = (device_id,)
            channels = []
            for row in self._db().execute(sql + " ORDER BY device_id, channel_id", args):
                cid, did, name, status, parent = _text(row, 5)
                channels.append(Channel(cid, did, name, status, parent, json.loads(_from_sql(row[5]))))
            return channels

        return await self._run(load)

    # --- alarms ----------------------------------------------------------------------

    async def save_alarms(self, alarms: Sequence[Alarm]) -> None:
        rows = [
            self._row((a.device_id, a.reported_by, a.priority, a.method, a.alarm_type, a.alarm_time, a.description,
                      a.received_at, json.dumps(a.extra, ensure_ascii=False)))
            for a in alarms
        ]  # fmt: skip

        def save(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO alarms (device_id, reported_by, priority, method, alarm_type, alarm_time, description, "
                "received_at, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("DELETE FROM alarms WHERE id <= (SELECT MAX(id) FROM alarms) - ?", (MAX_ALARMS,))

        if rows:
            await self._run(lambda: self._in_transaction(save, f"writing {len(rows)} alarms"))

    async def load_alarms(self, limit: int = 100, device_id: str | None = None) -> list[Alarm]:
        def load() -> list[Alarm]:
            sql = (
                "SELECT device_id, reported_by, priority, method, alarm_type, alarm_time, description, received_at, extra "
                "FROM alarms"
            )
            args: tuple[object, ...] = (limit,)
            if device_id is not None:
                # of the device itself (or channel), or reported by it (an NVR's channels); each side has its index
                sql += " WHERE device_id = ? OR reported_by = ?"
                args = (device_id, device_id, limit)
            rows = self._db().execute(sql + " ORDER BY id DESC LIMIT ?", args)
            alarms = []
            for row in rows:
                dev, by, prio, method, kind, at, desc = _text(row, 7)
                alarms.append(Alarm(dev, by, prio, method, kind, at, desc, row[7], json.loads(_from_sql(row[8]))))
            return alarms

        return await self._run(load)

    # --- bans ------------------------------------------------------------------------

    async def save_bans(self, bans: Sequence[Ban], *, ended_before: float = 0.0) -> None:
        rows = [self._row(tuple(getattr(b, f) for f in BAN_FIELDS)) for b in bans]

        def save(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM bans WHERE until < ?", (ended_before,))
            db.executemany(_UPSERT_BAN, rows)

        await self._run(lambda: self._in_transaction(save, f"writing {len(rows)} bans"))

    async def load_bans(self) -> list[Ban]:
        def load() -> list[Ban]:
            rows = self._db().execute(f"SELECT {', '.join(BAN_FIELDS)} FROM bans ORDER BY until")
            bans = []
            for row in rows:
                try:
                    bans.append(Ban.from_row([_from_sql(v) for v in row]))
                except (TypeError, ValueError) as exc:
                    # a damaged ban must not stop the gateway from starting: it is only dropped
                    log.warning(
                        "stored ban cannot be read; dropped", extra={"store": str(self.path), "error": str(exc)}
                    )
            return bans

        return await self._run(load)

    async def delete_bans(self, keys: Sequence[str]) -> None:
        await self._many("DELETE FROM bans WHERE key = ?", [(key,) for key in keys], f"deleting {len(keys)} bans")

    # --- superiors: shares and overrides -------------------------------------------------

    async def save_shares(self, entries: Sequence[ShareEntry]) -> None:
        await self._many(
            "INSERT INTO upstream_shares (upstream, entry, shared) VALUES (?, ?, ?) "
            "ON CONFLICT(upstream, entry) DO UPDATE SET shared = excluded.shared",
            [self._row((e.upstream, e.entry, int(e.shared))) for e in entries],
            f"writing {len(entries)} share entries",
        )

    async def load_shares(self) -> list[ShareEntry]:
        def load() -> list[ShareEntry]:
            rows = self._db().execute("SELECT upstream, entry, shared FROM upstream_shares ORDER BY upstream, entry")
            return [ShareEntry(_from_sql(r[0]), _from_sql(r[1]), bool(r[2])) for r in rows]

        return await self._run(load)

    async def save_override(self, override: Override) -> None:
        o = override
        row = self._row((o.upstream, o.channel_id, o.name, o.civil_code, o.parent_id))

        def save(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO upstream_overrides (upstream, channel_id, name, civil_code, parent_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(upstream, channel_id) DO UPDATE SET name = excluded.name, "
                "civil_code = excluded.civil_code, parent_id = excluded.parent_id",
                row,
            )

        await self._run(lambda: self._in_transaction(save, f"writing the override of {o.channel_id}"))

    async def delete_override(self, upstream: str, channel_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            sql = "DELETE FROM upstream_overrides WHERE upstream = ? AND channel_id = ?"
            return bool(db.execute(sql, (upstream, channel_id)).rowcount)

        return await self._run(lambda: self._in_transaction(delete, f"deleting the override of {channel_id}"))

    async def load_overrides(self) -> list[Override]:
        def load() -> list[Override]:
            rows = self._db().execute(
                "SELECT upstream, channel_id, name, civil_code, parent_id FROM upstream_overrides "
                "ORDER BY upstream, channel_id"
            )
            return [Override(*_text(r, 5)) for r in rows]

        return await self._run(load)

    # --- the camera ledger --------------------------------------------------------------

    async def save_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        await self._many(
            "INSERT INTO ledger (id, fields, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET fields = excluded.fields, updated_at = excluded.updated_at",
            [self._row((e.id, json.dumps(dict(e.values), ensure_ascii=False), e.updated_at)) for e in entries],
            f"writing {len(entries)} ledger entries",
        )

    async def delete_ledger(self, ids: Sequence[str]) -> None:
        await self._many("DELETE FROM ledger WHERE id = ?", [(i,) for i in ids], f"deleting {len(ids)} ledger entries")

    async def load_ledger(self) -> list[LedgerEntry]:
        def load() -> list[LedgerEntry]:
            entries = []
            for row in self._db().execute("SELECT id, fields, updated_at FROM ledger ORDER BY id"):
                try:
                    values = json.loads(_from_sql(row[1]))
                    if not isinstance(values, dict):
                        raise ValueError("fields are not an object")
                except ValueError as exc:
                    raise StoreError(f"ledger entry {row[0]} in {self.path} cannot be read: {exc}") from None
                entries.append(LedgerEntry(_from_sql(row[0]), {str(k): str(v) for k, v in values.items()}, row[2]))
            return entries

        return await self._run(load)

    # --- tokens -------------------------------------------------------------------------

    async def save_token(self, token: Token) -> None:
        t = token
        await self._many(
            "INSERT INTO tokens (name, role, digest, created, revoked, last_used) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET role = excluded.role, digest = excluded.digest, "
            "revoked = excluded.revoked, last_used = excluded.last_used",
            [(t.name, str(t.role), t.digest, t.created, t.revoked, t.last_used)],
            f"writing token {t.name}",
        )

    async def load_tokens(self) -> list[Token]:
        def load() -> list[Token]:
            tokens = []
            for name, role, digest, created, revoked, last_used in self._db().execute(
                "SELECT name, role, digest, created, revoked, last_used FROM tokens ORDER BY name"
            ):
                try:
                    tokens.append(Token(name, Role(role), digest, created, revoked, last_used))
                except ValueError:
                    raise StoreError(f"token {name} in {self.path} has role {role!r}, which is none") from None
            return tokens

        return await self._run(load)

    # --- the audit trail ----------------------------------------------------------------

    async def append_audit(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        rows = [
            self._row((e.time, e.actor, e.source, str(e.action), e.target, params_json(e), str(e.result), e.detail))
            for e in entries
        ]

        def append(db: sqlite3.Connection) -> list[AuditRecord]:
            seq, previous = db.execute("SELECT head_seq, head_hash FROM audit_chain WHERE id = 1").fetchone()
            records = []
            for entry, row in zip(entries, rows, strict=True):
                seq += 1
                previous = chain_hash(previous, seq, entry)
                db.execute(
                    "INSERT INTO audit (seq, time, actor, source, action, target, params, result, detail, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, *row, previous),
                )
                records.append(AuditRecord(seq, entry, previous))
            db.execute("UPDATE audit_chain SET head_seq = ?, head_hash = ? WHERE id = 1", (seq, previous))
            return records

        if not entries:
            return []
        return await self._run(lambda: self._in_transaction(append, f"appending {len(entries)} audit records"))

    async def load_audit(self, query: AuditQuery) -> list[AuditRecord]:
        where: list[str] = ["seq > ?"]
        args: list[object] = [query.after]
        if query.since is not None:
            where.append("time >= ?")
            args.append(query.since)
        if query.until is not None:
            where.append("time <= ?")
            args.append(query.until)
        for column, value, prefix_mark in (
            ("actor", query.actor, ":"),
            ("target", query.target, "*"),
            ("action", query.action, "."),
        ):
            if not value:
                continue
            if value.endswith(prefix_mark):
                stem = value[:-1] if prefix_mark == "*" else value
                where.append(f"substr({column}, 1, ?) = ?")
                args += [len(stem), stem]
            else:
                where.append(f"{column} = ?")
                args.append(value)
        if query.result:
            where.append("result = ?")
            args.append(query.result)
        sql = f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        args.append(max(0, query.limit))
        return await self._run(lambda: [self._audit(r) for r in self._db().execute(sql, args)])

    async def audit_chain(self, after: int = 0, limit: int = 10_000) -> list[AuditRecord]:
        sql = f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?"
        return await self._run(lambda: [self._audit(r) for r in self._db().execute(sql, (after, limit))])

    async def audit_ends(self) -> tuple[Anchor, Anchor]:
        def ends() -> tuple[Anchor, Anchor]:
            sql = "SELECT anchor_seq, anchor_hash, head_seq, head_hash FROM audit_chain WHERE id = 1"
            row = self._db().execute(sql).fetchone()
            return Anchor(row[0], row[1]), Anchor(row[2], row[3])

        return await self._run(ends)

    async def prune_audit(self, before: float) -> int:
        def prune(db: sqlite3.Connection) -> int:
            # from the front only, so the chain stays whole: stop at the first record young enough
            row = db.execute("SELECT min(seq) FROM audit WHERE time >= ?", (before,)).fetchone()
            head = db.execute("SELECT head_seq FROM audit_chain WHERE id = 1").fetchone()[0]
            last = (row[0] - 1) if row[0] is not None else head
            cut = db.execute("SELECT seq, hash FROM audit WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (last,)).fetchone()
            if cut is None:
                return 0
            removed = db.execute("DELETE FROM audit WHERE seq <= ?", (cut[0],)).rowcount
            db.execute("UPDATE audit_chain SET anchor_seq = ?, anchor_hash = ? WHERE id = 1", cut)
            return int(removed)

        return await self._run(lambda: self._in_transaction(prune, "removing audit records past their retention"))

    def _audit(self, row: Sequence[Any]) -> AuditRecord:
        seq, *fields, digest = (_from_sql(v) for v in row)
        return stored_audit(seq, fields, digest)


_AUDIT_COLUMNS = "seq, time, actor, source, action, target, params, result, detail, hash"
