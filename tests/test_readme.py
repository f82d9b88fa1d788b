"""The README's event table is the schema the code validates against, not a copy that drifts."""

from __future__ import annotations

from pathlib import Path

from rpiboot.event_schema import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_event_table_matches_the_schema() -> None:
    assert markdown_table() in README.read_text(encoding="utf-8"), (
        "README's event table is out of date; regenerate it with "
        "python3 -c 'from rpiboot.event_schema import markdown_table; print(markdown_table())'")
