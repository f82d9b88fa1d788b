"""The migration list is complete and numbered, and its dialect tokens are all supplied."""

from __future__ import annotations

import re
from pathlib import Path

from rpiboot.provision.ledger import migrations
from rpiboot.provision.ledger.postgres import PostgresBackend
from rpiboot.provision.ledger.sqlite import SQLiteBackend


def test_every_migration_file_is_listed_in_order():
    directory = Path(migrations.__file__).parent
    files = sorted(path.stem for path in directory.glob("v[0-9][0-9][0-9][0-9]_*.py"))
    assert [f"v{m.version:04d}_{m.name}" for m in migrations.MIGRATIONS] == files
    assert [m.version for m in migrations.MIGRATIONS] == list(range(1, len(files) + 1))
    assert migrations.LATEST == len(files)


def test_statements_use_only_tokens_every_backend_supplies():
    used = {token for migration in migrations.MIGRATIONS for statement in migration.statements
            for token in re.findall(r"\{(\w+)\}", statement)}
    assert used <= set(migrations.TOKENS)
    for backend in (SQLiteBackend, PostgresBackend):
        assert set(backend.tokens) == set(migrations.TOKENS)
