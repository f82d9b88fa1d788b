"""Where the default SQLite ledger lives: rpiboot's user data directory."""

from __future__ import annotations

from pathlib import Path


def default_ledger_path() -> Path:
    """``ledger.sqlite`` in the directory ``rpiboot --fetch-boot-files`` also uses:
    ``RPIBOOT_DATA_DIR`` when set, else the platform's user data directory for rpiboot
    (``$XDG_DATA_HOME/rpiboot``, by default ``~/.local/share/rpiboot``, on Linux)."""
    from ...boot_files import user_data_dir
    return user_data_dir() / "ledger.sqlite"
