"""The ledger's schema, as numbered migrations applied in order and recorded in schema_version.

Each migration is a module ``vNNNN_name.py`` holding ``STATEMENTS``: portable SQL that runs
unchanged on SQLite and PostgreSQL, except for the tokens a backend substitutes (see
:data:`TOKENS`). A released migration is never edited; a schema change is a new module added
to :data:`MIGRATIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from . import v0001_initial

# The only dialect differences in the DDL. Each backend gives its own text for each token.
TOKENS = ("id_pk",)

SCHEMA_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " applied DOUBLE PRECISION NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def _migration(module: ModuleType) -> Migration:
    stem = module.__name__.rsplit(".", 1)[-1]           # "v0001_initial"
    number, _, name = stem[1:].partition("_")
    return Migration(int(number), name, tuple(module.STATEMENTS))


MIGRATIONS: tuple[Migration, ...] = tuple(_migration(m) for m in (v0001_initial,))
LATEST = MIGRATIONS[-1].version
