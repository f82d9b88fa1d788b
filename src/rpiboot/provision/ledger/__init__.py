"""The provisioning ledger: every board, every step, claims, unit numbers, identity pools.

``open_ledger(None)`` opens the default SQLite file in the user's data directory, a path opens
that SQLite file, and a ``postgresql://`` URL a PostgreSQL database shared by several stations
(psycopg 3, ``pip install 'rpiboot[line]'``). The schema is created or upgraded on open. See
docs/provision-ledger.md.
"""

from __future__ import annotations

from pathlib import Path

from .base import IN_PROGRESS, INTERRUPTED, Ledger, iso_utc
from .errors import (AlreadyProvisionedError, ClaimedElsewhereError, LedgerError,
                     PoolExhaustedError, PoolImportError)
from .paths import default_ledger_path
from .pools import read_pool_csv

__all__ = ["AlreadyProvisionedError", "ClaimedElsewhereError", "IN_PROGRESS", "INTERRUPTED",
           "Ledger", "LedgerError", "PoolExhaustedError", "PoolImportError",
           "default_ledger_path", "import_pool_csv", "is_url", "iso_utc", "open_ledger",
           "read_pool_csv"]

_POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_url(target: str | Path | None) -> bool:
    return isinstance(target, str) and "://" in target


def open_ledger(target: str | Path | None = None, *, station: str | None = None) -> Ledger:
    """Open (creating or upgrading its schema) the ledger at a path or URL; None: the default file.

    Raises LedgerError (code ``ledger_unavailable``) with a one-line message when it cannot be
    opened or written.
    """
    backend = _backend(target)
    try:
        ledger = Ledger(backend, station=station)
        ledger.migrate()
    except BaseException:
        backend.close()
        raise
    return ledger


def _backend(target: str | Path | None):  # type: ignore[no-untyped-def]
    if is_url(target):
        scheme = str(target).split("://", 1)[0].lower()
        if scheme not in _POSTGRES_SCHEMES:
            raise LedgerError(f"unsupported ledger URL scheme {scheme!r}: give a file path or a"
                              " postgresql:// URL")
        from .postgres import PostgresBackend
        return PostgresBackend(str(target))
    from .sqlite import SQLiteBackend
    path = default_ledger_path() if target is None else Path(target).expanduser()
    return SQLiteBackend(path)


def import_pool_csv(ledger: Ledger, path: str | Path, pool: str = "default") -> int:
    """`rpiboot-provision pool import FILE.csv`: validate the file, then import it all or nothing."""
    return ledger.import_pool(read_pool_csv(path), pool=pool)
