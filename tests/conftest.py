"""Fixtures for the boot-engine tests; the helpers themselves live in engine_support.py (a
module name of its own, so it never collides with the conftest.py files of sub-directories)."""

from data_dir_support import http_files, isolated_data_dir, stub_data_dir  # noqa: F401
from engine_support import boot_dir, no_default_dirs  # noqa: F401  (pytest fixtures)
