"""Every ledger test runs on both backends: an SQLite file and a PostgreSQL schema."""

from __future__ import annotations

import pytest

from rpiboot.provision.ledger import open_ledger


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_target(request, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """Where a ledger lives: a file path, or a postgresql:// URL of an empty schema."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ledger(ledger_target):  # type: ignore[no-untyped-def]
    opened = open_ledger(ledger_target, station="station-a")
    yield opened
    opened.close()
