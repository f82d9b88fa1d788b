"""The ledger: one record per board attempt, its steps, claims, unit numbers and identity pools.

Every public method is one transaction on the backend (SQLite or PostgreSQL) and runs the same
SQL on both; the backend supplies the connection, the parameter style and the few dialect
differences (see ``sqlite.py`` and ``postgres.py``). A method that cannot reach the database
raises :class:`LedgerError` (code ``ledger_unavailable``) and the next call reconnects.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Protocol, Sequence, cast

from ... import __version__
from .errors import (AlreadyProvisionedError, ClaimedElsewhereError, LedgerError,
                     LedgerUsageError, PoolExhaustedError, PoolImportError)
from .migrations import LATEST, MIGRATIONS, SCHEMA_VERSION_TABLE
from .pools import validate_pool_name, validate_rows

IN_PROGRESS = "in_progress"
INTERRUPTED = "interrupted"
SKIPPED = "skipped"          # the pipeline's record of a board already provisioned
_NOT_FAILED = frozenset({"ok", SKIPPED, IN_PROGRESS})

_BOARD_COLUMNS = ("id", "serial", "chip", "port", "revision", "mac", "otp", "board",
                  "eeprom_sha256", "eeprom_config", "image_sha256", "bytes_written", "verified",
                  "unit", "station", "host", "tool_version", "profile_name", "profile_id",
                  "result", "error", "started", "finished")
_JSON_FIELDS = frozenset({"otp", "board"})
# What update_board may set (column names come only from here, never from the caller).
_UPDATABLE = frozenset({"serial", "chip", "port", "revision", "mac", "otp", "board",
                        "eeprom_sha256", "eeprom_config", "image_sha256", "bytes_written",
                        "verified", "unit", "profile_name", "profile_id"})
_now = time.time          # one clock for every stored time (tests replace it)
_SEARCHED = ("serial", "chip", "port", "station", "result", "error", "mac", "profile_name",
             "CAST(unit AS TEXT)")


class Cursor(Protocol):
    def execute(self, query: str, params: Sequence[Any] = ...) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Backend(Protocol):
    """What a database gives the ledger; everything else is shared."""

    name: str                 # "sqlite" | "postgresql"
    target: str               # for messages: the file, or the URL without its password
    tokens: dict[str, str]    # DDL token -> this dialect's text (see migrations.TOKENS)
    lock_free_row: str        # appended to the SELECT that picks a free pool entry
    errors: tuple[type[BaseException], ...]   # the driver's errors that mean "unavailable"

    def transaction(self, write: bool) -> Any: ...   # context manager yielding a Cursor
    def sql(self, query: str) -> str: ...             # "?" placeholders -> the driver's
    def lock_schema(self, cursor: Any) -> None: ...
    def reset(self) -> None: ...                      # drop a broken connection
    def close(self) -> None: ...


def iso_utc(timestamp: float | None) -> str | None:
    """Unix seconds -> ISO 8601 in UTC with millisecond precision, e.g. 2026-12-01T15:04:05.120Z."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _json_value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _printable(text: object) -> str:
    """A device-supplied string made safe for a one-line message."""
    return "".join(c if c.isprintable() else "?" for c in str(text))[:120]


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class _Tx:
    """A cursor that takes portable SQL ("?" placeholders) and speaks the backend's dialect."""

    def __init__(self, cursor: Cursor, backend: Backend) -> None:
        self._cursor = cursor
        self._backend = backend

    def execute(self, query: str, params: Sequence[Any] = ()) -> "_Tx":
        self._cursor.execute(self._backend.sql(query), tuple(params))
        return self

    def one(self) -> Any:
        return self._cursor.fetchone()

    def all(self) -> list[Any]:
        return list(self._cursor.fetchall())


class Ledger:
    """A ledger on one backend, for one station. Thread-safe: calls are serialised."""

    def __init__(self, backend: Backend, *, station: str | None = None) -> None:
        self._backend = backend
        self._lock = threading.RLock()
        self._closed = False
        self._heartbeat = _Heartbeat(self)
        self.host = socket.gethostname()
        self.station = _check_name(station if station is not None else self.host, "station")
        # Claims belong to this open ledger: another process on the same station is another owner.
        self.owner = f"{self.station}/{self.host}/{os.getpid()}/{uuid.uuid4().hex[:12]}"

    # -- plumbing ------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def target(self) -> str:
        return self._backend.target

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[_Tx]:
        with self._lock:
            if self._closed:
                raise LedgerError(f"ledger {self.target} is closed")
            try:
                with self._backend.transaction(write) as cursor:
                    yield _Tx(cursor, self._backend)
            except self._backend.errors as exc:
                self._backend.reset()
                raise LedgerError(f"ledger {self.target} unavailable: {_one_line(exc)}") from exc

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the version now in place."""
        with self._transaction() as tx:
            self._backend.lock_schema(tx)
            tx.execute(SCHEMA_VERSION_TABLE)
            current = tx.execute("SELECT MAX(version) FROM schema_version").one()[0] or 0
            if current > LATEST:
                raise LedgerError(f"ledger {self.target} has schema version {current}, newer than "
                                  f"this rpiboot understands ({LATEST}): upgrade rpiboot")
            for migration in MIGRATIONS:
                if migration.version > current:
                    for statement in migration.statements:
                        tx.execute(statement.format(**self._backend.tokens))
                    tx.execute("INSERT INTO schema_version (version, name, applied)"
                               " VALUES (?, ?, ?)", (migration.version, migration.name, _now()))
        return LATEST

    def schema_version(self) -> int:
        with self._transaction(write=False) as tx:
            return int(tx.execute("SELECT MAX(version) FROM schema_version").one()[0] or 0)

    def close(self) -> None:
        """Release this ledger's remaining claims (best effort) and close the connection."""
        if self._closed:
            return
        try:
            with self._transaction() as tx:
                tx.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
        except LedgerError:
            pass
        self._heartbeat.stop()
        with self._lock:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- claims --------------------------------------------------------------------------

    def claim(self, serial: str, profile_id: str, *, reprovision: bool = False,
              expires_after: float = 900) -> None:
        """Claim a board before writing it; raise if another owner holds it or it is done.

        The claim lasts ``expires_after`` seconds and this ledger's heartbeat (and every call
        about its board) renews it while the process lives, so only a station that stopped
        loses it. finish_board and mark_interrupted release it.
        """
        if not serial:
            raise ValueError("claim needs a serial number")
        if expires_after <= 0:
            raise ValueError("expires_after must be positive")
        now = _now()
        with self._transaction() as tx:
            previous = tx.execute("SELECT owner, board_id FROM claims WHERE serial = ?",
                                  (serial,)).one()
            # Claim first, then look for an ok record: a concurrent finish_board on another
            # host then either blocks this insert (and is seen below) or sees our claim.
            won = tx.execute(
                "INSERT INTO claims (serial, profile_id, owner, station, host, board_id,"
                " claimed, lease, expires) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)"
                " ON CONFLICT (serial) DO UPDATE SET profile_id = excluded.profile_id,"
                " owner = excluded.owner, station = excluded.station, host = excluded.host,"
                " board_id = NULL, claimed = excluded.claimed, lease = excluded.lease,"
                " expires = excluded.expires"
                " WHERE claims.expires < excluded.claimed OR claims.owner = excluded.owner"
                " RETURNING serial",
                (serial, profile_id, self.owner, self.station, self.host, now, expires_after,
                 now + expires_after)).one()
            if won is None:
                self._raise_claimed(tx, serial, now)
            if previous is not None and previous[0] != self.owner and previous[1] is not None:
                self._abandon(tx, previous[1], now)
            if not reprovision:
                self._refuse_if_done(tx, serial, profile_id)
        self._heartbeat.beat_within(expires_after)

    def _raise_claimed(self, tx: _Tx, serial: str, now: float) -> None:
        row = tx.execute("SELECT station, host, claimed, expires FROM claims WHERE serial = ?",
                         (serial,)).one()
        station, host, claimed, expires = row if row else ("?", "?", now, now)
        raise ClaimedElsewhereError(
            f"board {_printable(serial)} is being provisioned by station {_printable(station)}"
            f" (host {_printable(host)}, claimed {now - claimed:.0f} s ago, claim expires in"
            f" {max(0.0, expires - now):.0f} s)")

    def _abandon(self, tx: _Tx, board_id: int, now: float) -> None:
        tx.execute("UPDATE boards SET result = 'abandoned', finished = ?,"
                   " error = 'claim expired: its station stopped recording progress'"
                   " WHERE id = ? AND result = ?", (now, board_id, IN_PROGRESS))

    def _refuse_if_done(self, tx: _Tx, serial: str, profile_id: str) -> None:
        done = tx.execute("SELECT station, finished FROM boards WHERE serial = ? AND profile_id = ?"
                          " AND result = 'ok' ORDER BY id DESC LIMIT 1",
                          (serial, profile_id)).one()
        if done is not None:
            raise AlreadyProvisionedError(
                f"board {_printable(serial)} was already provisioned with this profile"
                f" (station {_printable(done[0])}, {iso_utc(done[1])});"
                " use --reprovision to redo it")

    def release_claim(self, serial: str) -> None:
        """Give up this ledger's claim on a serial (a board skipped after claiming)."""
        with self._transaction() as tx:
            tx.execute("DELETE FROM claims WHERE serial = ? AND owner = ?", (serial, self.owner))

    def renew_claims(self) -> None:
        """Push back the expiry of every claim this ledger holds (the heartbeat does this)."""
        with self._transaction() as tx:
            tx.execute("UPDATE claims SET expires = ? + lease WHERE owner = ?",
                       (_now(), self.owner))

    def _renew_board_claim(self, tx: _Tx, board_id: int) -> None:
        tx.execute("UPDATE claims SET expires = ? + lease WHERE board_id = ? AND owner = ?",
                   (_now(), board_id, self.owner))

    # -- boards --------------------------------------------------------------------------

    def begin_board(self, *, port: str | None, chip: str | None, serial: str | None,
                    profile_name: str | None = None, profile_id: str | None = None,
                    host: str | None = None, tool_version: str | None = None,
                    started: float | None = None) -> int:
        """Insert the board's record as in_progress and return its id."""
        with self._transaction() as tx:
            board_id = tx.execute(
                "INSERT INTO boards (serial, chip, port, station, host, tool_version,"
                " profile_name, profile_id, result, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (serial, chip, port, self.station, host or self.host,
                 tool_version or __version__, profile_name, profile_id, IN_PROGRESS,
                 _now() if started is None else started)).one()[0]
            if serial:
                tx.execute("UPDATE claims SET board_id = ? WHERE serial = ? AND owner = ?",
                           (board_id, serial, self.owner))
            return int(board_id)

    def record_step(self, board_id: int, step: str, *, result: str, started: float,
                    finished: float, details: dict[str, Any] | None = None) -> None:
        with self._transaction() as tx:
            tx.execute("INSERT INTO steps (board_id, step, result, started, finished, details)"
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       (board_id, step, result, started, finished, _json_text(details or {})))
            self._renew_board_claim(tx, board_id)

    def update_board(self, board_id: int, **fields: Any) -> None:
        """Set facts learnt about a board still in progress: revision, mac, otp (dict),
        eeprom_sha256, image_sha256... A finished record is not changed."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f"update_board: unknown field(s) {', '.join(sorted(unknown))}")
        if not fields:
            return
        names = sorted(fields)
        values = [self._column_value(name, fields[name]) for name in names]
        assignments = ", ".join(f"{name} = ?" for name in names)
        with self._transaction() as tx:
            tx.execute(f"UPDATE boards SET {assignments} WHERE id = ? AND result = ?",
                       (*values, board_id, IN_PROGRESS))
            if fields.get("unit") is not None:
                tx.execute("UPDATE units SET board_id = ? WHERE unit = ? AND board_id IS NULL",
                           (board_id, int(fields["unit"])))
            self._renew_board_claim(tx, board_id)

    @staticmethod
    def _column_value(name: str, value: Any) -> Any:
        if name in _JSON_FIELDS:
            return _json_text(value)
        if name == "verified":
            return None if value is None else int(bool(value))
        return value

    def finish_board(self, board_id: int, *, result: str, error: str | None = None) -> None:
        """Commit the board's outcome ("ok" or a failure code) and release its claim, at once.

        Only an in_progress board changes: finishing a board already marked interrupted (or
        finished) leaves the first outcome in place.
        """
        if not result or result == IN_PROGRESS:
            raise ValueError("finish_board needs a final result")
        with self._transaction() as tx:
            tx.execute("UPDATE boards SET result = ?, error = ?, finished = ?"
                       " WHERE id = ? AND result = ?",
                       (result, error, _now(), board_id, IN_PROGRESS))
            tx.execute("DELETE FROM claims WHERE board_id = ? AND owner = ?",
                       (board_id, self.owner))

    def mark_interrupted(self, board_ids: Iterable[int]) -> None:
        """Ctrl-C / SIGTERM: every listed board still in progress becomes "interrupted"."""
        ids = list(board_ids)
        now = _now()
        with self._transaction() as tx:
            for board_id in ids:
                tx.execute("UPDATE boards SET result = ?, error = ?, finished = ?"
                           " WHERE id = ? AND result = ?",
                           (INTERRUPTED, "interrupted before the board was finished", now,
                            board_id, IN_PROGRESS))
                tx.execute("DELETE FROM claims WHERE board_id = ? AND owner = ?",
                           (board_id, self.owner))

    # -- unit numbers --------------------------------------------------------------------

    def next_unit(self, board_id: int | None = None) -> int:
        """The next unit number: atomic across every host on this ledger, never reused.

        With board_id the board's record gets the unit in the same transaction.
        """
        with self._transaction() as tx:
            unit = int(tx.execute("UPDATE counters SET value = value + 1 WHERE name = 'unit'"
                                  " RETURNING value").one()[0])
            tx.execute("INSERT INTO units (unit, board_id, station, taken) VALUES (?, ?, ?, ?)",
                       (unit, board_id, self.station, _now()))
            if board_id is not None:
                tx.execute("UPDATE boards SET unit = ? WHERE id = ?", (unit, board_id))
            return unit

    # -- identity pools ------------------------------------------------------------------

    def import_pool(self, rows: Iterable[dict[str, str]], pool: str = "default") -> int:
        """Add rows to a pool in one transaction; returns how many. Raises PoolImportError."""
        pool = validate_pool_name(pool)
        checked = validate_rows(rows)
        now = _now()
        with self._transaction() as tx:
            existing = tx.execute("SELECT data FROM pools WHERE pool = ? ORDER BY id LIMIT 1",
                                  (pool,)).one()
            columns = sorted(json.loads(existing[0])) if existing else None
            validate_rows(checked, columns=columns, pool=pool)
            for row in checked:
                data = _json_text(row)
                if tx.execute("SELECT id FROM pools WHERE pool = ? AND data = ?",
                              (pool, data)).one() is not None:
                    shown = ", ".join(f"{column}={value}" for column, value in row.items())
                    raise PoolImportError(f"pool {pool!r} already holds the row {shown};"
                                          " nothing was imported")
                tx.execute("INSERT INTO pools (pool, data, imported) VALUES (?, ?, ?)",
                           (pool, data, now))
        return len(checked)

    def take_pool_entry(self, board_id: int, pool: str = "default") -> dict[str, str]:
        """Hand the next free entry of the pool to this board, atomically, once ever."""
        with self._transaction() as tx:
            row = tx.execute(
                "UPDATE pools SET board_id = ?, station = ?, taken = ? WHERE id = ("
                " SELECT id FROM pools WHERE pool = ? AND board_id IS NULL ORDER BY id LIMIT 1"
                f"{self._backend.lock_free_row}) RETURNING data",
                (board_id, self.station, _now(), pool)).one()
            if row is None:
                total = tx.execute("SELECT COUNT(*) FROM pools WHERE pool = ?", (pool,)).one()[0]
                if total == 0:
                    raise PoolExhaustedError(
                        f"identity pool {_printable(pool)!r} is empty or does not exist:"
                        " import one with `rpiboot-provision pool import`")
                raise PoolExhaustedError(f"identity pool {_printable(pool)!r} is used up"
                                         f" (all {total} entries taken)")
            self._renew_board_claim(tx, board_id)
            return dict(json.loads(row[0]))

    def pool_status(self) -> dict[str, dict[str, int]]:
        """{pool: {"total": n, "free": m}} for every pool."""
        with self._transaction(write=False) as tx:
            rows = tx.execute("SELECT pool, COUNT(*), COUNT(board_id) FROM pools GROUP BY pool"
                              " ORDER BY pool").all()
        return {pool: {"total": int(total), "free": int(total) - int(taken)}
                for pool, total, taken in rows}

    # -- reading -------------------------------------------------------------------------

    def export(self) -> list[dict[str, Any]]:
        """Every record, oldest first, with its steps (see docs/provision-ledger.md)."""
        return self._records("", (), "ORDER BY id", whole=True)

    def recent(self, limit: int = 50, search: str | None = None) -> list[dict[str, Any]]:
        """The newest records first; search matches serial, chip, port, station, result, error,
        MAC, profile name or unit (case-insensitive substring)."""
        limit = max(0, int(limit))
        where, params = "", cast("tuple[str, ...]", ())
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where = "WHERE " + " OR ".join(f"LOWER({column}) LIKE ? ESCAPE '\\'"
                                           for column in _SEARCHED)
            params = (f"%{escaped}%",) * len(_SEARCHED)
        return self._records(where, params, f"ORDER BY id DESC LIMIT {limit}", whole=False)

    def board(self, board_id: int) -> dict[str, Any] | None:
        records = self._records("WHERE id = ?", (board_id,), "", whole=False)
        return records[0] if records else None

    def totals(self, since: float) -> dict[str, Any]:
        """Boards finished since a time: {"ok", "failed", "skipped", "in_progress",
        "by_code": {failure code: n}}. "skipped" (already provisioned) is not a failure."""
        with self._transaction(write=False) as tx:
            rows = tx.execute("SELECT result, COUNT(*) FROM boards"
                              " WHERE COALESCE(finished, started) >= ? GROUP BY result",
                              (since,)).all()
        counts = {str(result): int(count) for result, count in rows}
        by_code = {result: count for result, count in counts.items() if result not in _NOT_FAILED}
        return {"ok": counts.get("ok", 0), "failed": sum(by_code.values()),
                "skipped": counts.get(SKIPPED, 0), "in_progress": counts.get(IN_PROGRESS, 0),
                "by_code": by_code}

    def _records(self, where: str, params: Sequence[Any], order: str,
                 whole: bool) -> list[dict[str, Any]]:
        with self._transaction(write=False) as tx:
            boards = tx.execute(f"SELECT {', '.join(_BOARD_COLUMNS)} FROM boards {where} {order}",
                                params).all()
            ids = [row[0] for row in boards]
            steps = self._children(tx, "SELECT board_id, step, result, started, finished, details"
                                   " FROM steps", ids, whole, "ORDER BY id")
            pools = self._children(tx, "SELECT board_id, pool, data FROM pools", ids, whole,
                                   "ORDER BY id")
        records = [self._record(row) for row in boards]
        by_id = {record["id"]: record for record in records}
        for board_id, step, result, started, finished, details in steps:
            by_id[board_id]["steps"].append({
                "step": step, "result": result, "started": iso_utc(started),
                "finished": iso_utc(finished), "seconds": _seconds(started, finished),
                "details": _json_value(details) or {}})
        for board_id, pool, data in pools:
            by_id[board_id]["pool_name"] = pool
            by_id[board_id]["pool"] = json.loads(data)
        return records

    @staticmethod
    def _children(tx: _Tx, select: str, ids: list[int], whole: bool, order: str) -> list[Any]:
        if whole:
            return tx.execute(f"{select} WHERE board_id IS NOT NULL {order}").all()
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        return tx.execute(f"{select} WHERE board_id IN ({marks}) {order}", ids).all()

    @staticmethod
    def _record(row: Sequence[Any]) -> dict[str, Any]:
        raw = dict(zip(_BOARD_COLUMNS, row))
        record: dict[str, Any] = {
            "id": int(raw["id"]), "serial": raw["serial"], "chip": raw["chip"],
            "port": raw["port"], "result": raw["result"], "error": raw["error"],
            "image_sha256": raw["image_sha256"], "bytes_written": int(raw["bytes_written"] or 0),
            "verified": bool(raw["verified"]), "started": iso_utc(raw["started"]),
            "finished": iso_utc(raw["finished"]),
            "seconds": _seconds(raw["started"], raw["finished"]),
            "unit": None if raw["unit"] is None else int(raw["unit"]),
            "station": raw["station"], "host": raw["host"], "tool_version": raw["tool_version"],
            "profile_name": raw["profile_name"], "profile_id": raw["profile_id"],
            "revision": raw["revision"], "mac": raw["mac"], "otp": _json_value(raw["otp"]),
            "board": _json_value(raw["board"]), "eeprom_sha256": raw["eeprom_sha256"],
            "eeprom_config": raw["eeprom_config"], "pool_name": None, "pool": None,
            "steps": [],
        }
        return record


class _Heartbeat:
    """Renews a live ledger's claims a few times per lease, from a daemon thread, so a station
    that is busy (a long write) keeps its boards and only one that stopped loses them."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._interval: float | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def beat_within(self, lease: float) -> None:
        interval = max(0.05, lease / 3)
        if self._interval is None or interval < self._interval:
            self._interval = interval
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rpiboot-ledger-heartbeat",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._ledger.renew_claims()
            except LedgerError:
                pass            # the next beat (or the board's own next call) tries again

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _seconds(started: float | None, finished: float | None) -> float | None:
    if started is None or finished is None:
        return None
    return round(finished - started, 3)


def _check_name(name: str, what: str) -> str:
    name = str(name).strip()
    if not name or len(name) > 128 or not name.isprintable():
        raise LedgerUsageError(f"{what} name must be 1-128 printable characters")
    return name
