"""Where the default SQLite ledger lives: the user's data directory, per platform."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def user_data_dir() -> Path:
    """XDG_DATA_HOME (or ~/.local/share) on Linux; the platform's equivalent elsewhere."""
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    if sys.platform == "darwin":
        return home / "Library" / "Application Support"
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    return Path(xdg) if os.path.isabs(xdg) else home / ".local" / "share"


def default_ledger_path() -> Path:
    return user_data_dir() / "rpiboot" / "ledger.sqlite"
