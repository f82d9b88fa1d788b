"""Fixtures for the boot-engine tests; the helpers themselves live in engine_support.py (a
module name of its own, so it never collides with the conftest.py files of sub-directories)."""

from engine_support import boot_dir, no_default_dirs  # noqa: F401  (pytest fixtures)
from http_support import http_files  # noqa: F401


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def _stub_data_dir(tmp_path_factory: pytest.TempPathFactory):
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
def _isolated_data_dir(_stub_data_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPIBOOT_DATA_DIR", str(_stub_data_dir))
