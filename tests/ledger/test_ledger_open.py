"""Opening a ledger: the default file, and one-line errors for everything that can go wrong."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from rpiboot.provision.ledger import (LedgerError, LedgerUsageError, default_ledger_path,
                                      open_ledger)


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG layout is Linux's")
def test_the_default_ledger_lives_in_the_users_data_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("RPIBOOT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_ledger_path() == tmp_path / "data" / "rpiboot" / "ledger.sqlite"
    ledger = open_ledger(None)
    ledger.close()
    assert (tmp_path / "data" / "rpiboot" / "ledger.sqlite").is_file()


def test_rpiboot_data_dir_moves_the_default_ledger(tmp_path, monkeypatch):
    monkeypatch.setenv("RPIBOOT_DATA_DIR", str(tmp_path / "elsewhere"))
    assert default_ledger_path() == tmp_path / "elsewhere" / "ledger.sqlite"


def test_sqlite_ledger_uses_wal(tmp_path):
    open_ledger(tmp_path / "ledger.sqlite").close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not an SQLite database, just a text file\n" * 100)
    return path


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "ledger.sqlite"


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp, "is a directory"),
    (_not_a_database, "not a database"),
    (_under_a_file, "cannot create the ledger"),
])
def test_an_unusable_path_is_one_line(tmp_path, make, message):
    with pytest.raises(LedgerError, match=message) as raised:
        open_ledger(make(tmp_path))
    assert raised.value.code == "ledger_unavailable" and "\n" not in str(raised.value)


def test_an_unknown_url_scheme_is_refused():
    with pytest.raises(LedgerError, match="unsupported ledger URL scheme 'mysql'"):
        open_ledger("mysql://user@host/db")


def test_an_empty_station_name_is_a_usage_error(tmp_path):
    with pytest.raises(LedgerUsageError, match="station name") as raised:
        open_ledger(tmp_path / "ledger.sqlite", station=" ")
    assert raised.value.code == "usage"
