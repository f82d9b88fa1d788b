"""Collect benchmarks/bench_*.py when running ``python3 -m pytest benchmarks`` (the default
``python3 -m pytest`` run only looks in tests/, so benchmarks never slow it down)."""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):  # type: ignore[no-untyped-def]
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
