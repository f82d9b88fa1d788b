"""SQLite backend: one file, WAL journal, writers serialised by BEGIN IMMEDIATE.

Several processes on one host may share the file (WAL lets readers run beside the writer; a
writer waits up to BUSY_TIMEOUT for another). Not for a file on a network share: SQLite's
locking is unreliable there, which is what the PostgreSQL backend is for.
"""

from __future__ import annotations

import random
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import LedgerError

BUSY_TIMEOUT = 30.0          # seconds a statement waits for another process's lock
# SQLite's own busy handler backs off to 100 ms sleeps, so a process writing back to back can
# starve another for the whole burst; BEGIN IMMEDIATE instead runs without the handler and is
# retried about every millisecond (the handler still serves every other statement).
MIN_VERSION = (3, 35, 0)     # UPDATE/INSERT ... RETURNING


def _retry_locked(statement: Callable[[], object]) -> None:
    """Run a statement, retrying about every millisecond while the file is locked."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(random.uniform(0.0005, 0.002))


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class SQLiteBackend:
    name = "sqlite"
    tokens = {"id_pk": "INTEGER PRIMARY KEY AUTOINCREMENT"}   # AUTOINCREMENT: ids never reused
    lock_free_row = ""       # BEGIN IMMEDIATE already excludes every other writer
    errors = (sqlite3.OperationalError, sqlite3.DatabaseError)

    def __init__(self, path: Path) -> None:
        if sqlite3.sqlite_version_info < MIN_VERSION:
            raise LedgerError(f"the SQLite ledger needs SQLite 3.35 or newer; this Python has"
                              f" {sqlite3.sqlite_version}")
        self.path = path
        self.target = str(path)
        self._connection = self._connect(path)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            if path.is_dir():
                raise LedgerError(f"ledger {path} is a directory, not a ledger file")
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                         check_same_thread=False)
            # Switching a new file to WAL needs the exclusive lock, and SQLite answers "locked"
            # at once (no busy handler: it would deadlock) when another process is doing the same.
            _retry_locked(lambda: connection.execute("PRAGMA journal_mode=WAL"))
            connection.execute("PRAGMA foreign_keys=ON")
            # SQLite's LOWER() folds ASCII only; PostgreSQL's folds every letter. Same search.
            connection.create_function("lower", 1, _lower, deterministic=True)
            return connection
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger at {path}: {exc.strerror or exc}") from exc
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {path}: {exc}") from exc

    @contextmanager
    def transaction(self, write: bool) -> Iterator[sqlite3.Cursor]:
        cursor = self._connection.cursor()
        if write:
            self._begin_immediate(cursor)
        else:
            cursor.execute("BEGIN")
        try:
            yield cursor
        except BaseException:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    @staticmethod
    def _begin_immediate(cursor: sqlite3.Cursor) -> None:
        cursor.execute("PRAGMA busy_timeout = 0")
        try:
            _retry_locked(lambda: cursor.execute("BEGIN IMMEDIATE"))
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")

    def sql(self, query: str) -> str:
        return query

    def lock_schema(self, cursor: object) -> None:
        """BEGIN IMMEDIATE holds the write lock already."""

    def reset(self) -> None:
        """A file connection does not drop; a failed transaction was rolled back."""
        if self._connection.in_transaction:
            try:
                self._connection.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def close(self) -> None:
        self._connection.close()
