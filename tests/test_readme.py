"""The README's event table is the schema the code validates against, not a copy that drifts."""

from __future__ import annotations

import re
from pathlib import Path

from rpiboot.event_schema import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_event_table_matches_the_schema() -> None:
    assert markdown_table() in README.read_text(encoding="utf-8"), (
        "README's event table is out of date; regenerate it with "
        "python3 -c 'from rpiboot.event_schema import markdown_table; print(markdown_table())'")


def test_readme_commands_run_rpiboot_under_sudo_by_a_path_sudo_finds() -> None:
    """Debian's sudo has a fixed PATH: a bare `sudo rpiboot ...` command in the README fails for
    the venv, pipx and uv installs the README itself recommends."""
    text = README.read_text(encoding="utf-8")
    commands = re.findall(r"`(sudo rpiboot [^`]*)`", text)
    assert commands == [], commands
