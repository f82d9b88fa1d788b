"""Identity pools: pre-allocated values (asset tag, hostname, MAC label...) imported from CSV.

The first line names the columns; each column becomes ``{pool.COLUMN}`` in profile templates,
so names must be identifiers. Every value must be non-empty and free of control characters
(they end up in hostnames and files on the board), and no row may appear twice. Any problem
rejects the whole file: an import is all or nothing.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterable

from .errors import PoolImportError

_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_VALUE = 1024


def validate_pool_name(pool: str) -> str:
    if not isinstance(pool, str) or not _COLUMN.fullmatch(pool):
        raise PoolImportError(f"pool name {pool!r} must be a letter or _ then letters, digits or _")
    return pool


def read_pool_csv(path: str | Path) -> list[dict[str, str]]:
    """Parse and validate a pool CSV (UTF-8, optional BOM, header line first)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            return _parse(csv.reader(stream), path.name)
    except OSError as exc:
        raise PoolImportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PoolImportError(f"{path.name}: not UTF-8 text (byte {exc.start})") from exc
    except csv.Error as exc:
        raise PoolImportError(f"{path.name}: not valid CSV: {exc}") from exc


def _parse(reader: Iterable[list[str]], name: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for cells in reader:
        line = getattr(reader, "line_num", len(rows) + 2)
        if not any(cell.strip() for cell in cells):
            continue                                     # blank line
        if header is None:
            header = _check_header([cell.strip() for cell in cells], name)
            continue
        if len(cells) != len(header):
            raise PoolImportError(f"{name} line {line}: {len(cells)} values, the header has"
                                  f" {len(header)} columns")
        rows.append(_check_row(dict(zip(header, (cell.strip() for cell in cells))), f"{name} line {line}"))
    if header is None:
        raise PoolImportError(f"{name}: empty file (the first line must name the columns)")
    if not rows:
        raise PoolImportError(f"{name}: no rows below the header")
    _check_duplicates(rows, name)
    return rows


def _check_header(columns: list[str], where: str) -> list[str]:
    for column in columns:
        if not _COLUMN.fullmatch(column):
            raise PoolImportError(f"{where}: column name {column!r} must be a letter or _ then"
                                  " letters, digits or _ (it is used as {pool.NAME})")
    seen = set()
    for column in columns:
        if column in seen:
            raise PoolImportError(f"{where}: column {column!r} appears twice in the header")
        seen.add(column)
    return columns


def _check_row(row: dict[str, str], where: str) -> dict[str, str]:
    for column, value in row.items():
        if not isinstance(value, str) or not value:
            raise PoolImportError(f"{where}: column {column!r} is empty")
        if len(value) > MAX_VALUE:
            raise PoolImportError(f"{where}: column {column!r} is longer than {MAX_VALUE} characters")
        if not value.isprintable():
            raise PoolImportError(f"{where}: column {column!r} holds a control character")
    return row


def _check_duplicates(rows: list[dict[str, str]], where: str) -> None:
    seen: dict[tuple[tuple[str, str], ...], int] = {}
    for index, row in enumerate(rows, 1):
        key = tuple(sorted(row.items()))
        if key in seen:
            raise PoolImportError(f"{where}: row {index} repeats row {seen[key]}")
        seen[key] = index


def validate_rows(rows: Iterable[dict[str, str]], *, columns: list[str] | None = None,
                  pool: str = "") -> list[dict[str, str]]:
    """Check rows given through the API as read_pool_csv checks a file; all share one column set
    (``columns``, when the pool already has entries)."""
    checked: list[dict[str, str]] = []
    for index, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row:
            raise PoolImportError(f"pool row {index} is not a mapping of column to value")
        names = sorted(row)
        _check_header(names, f"pool row {index}")
        expected = columns if columns is not None else (sorted(checked[0]) if checked else names)
        if names != expected:
            where = f"pool {pool!r} has" if columns is not None else "the first row has"
            raise PoolImportError(f"pool row {index} has columns {', '.join(names)}; {where}"
                                  f" {', '.join(expected)}")
        checked.append(_check_row(dict(row), f"pool row {index}"))
    if not checked:
        raise PoolImportError("no pool rows to import")
    _check_duplicates(checked, "pool rows")
    return checked
