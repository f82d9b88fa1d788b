"""Fixtures for the boot-engine tests; the helpers themselves live in engine_support.py (a
module name of its own, so it never collides with the conftest.py files of sub-directories)."""

from engine_support import boot_dir, no_default_dirs  # noqa: F401  (pytest fixtures)
from http_support import http_files  # noqa: F401
