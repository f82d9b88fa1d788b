"""Tests never read the user's data directory (where `rpiboot --fetch-boot-files` puts boot
directories): every test gets RPIBOOT_DATA_DIR pointing at stub default directories, so runs
without -d behave the same on every machine. Also the local HTTP server fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from http_support import http_files  # noqa: F401  (re-exported for conftest.py)


@pytest.fixture(scope="session")
def stub_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Default boot directories for runs without -d, in place of the user's data directory (which
    the tests must neither read nor depend on). Tests about missing ones use no_default_dirs."""
    root = tmp_path_factory.mktemp("rpiboot-data")
    for relative in ("msd/bootcode.bin", "mass-storage-gadget64/2711/bootcode4.bin",
                     "mass-storage-gadget64/2712/bootcode5.bin"):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stub second stage for " + relative.encode())
    return root


@pytest.fixture(autouse=True)
def isolated_data_dir(stub_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPIBOOT_DATA_DIR", str(stub_data_dir))
