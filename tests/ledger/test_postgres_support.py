"""The throwaway-cluster fixture: skipped outside CI, a failure under CI=true."""

from __future__ import annotations

import pytest

from postgres_support import _unavailable, bin_dir


def test_missing_postgresql_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI=true"):
        _unavailable("PostgreSQL is not installed (apt-get install postgresql)")


def test_missing_postgresql_skips_elsewhere_with_the_hint(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        _unavailable("PostgreSQL is not installed (apt-get install postgresql)")


def test_debian_binaries_are_found_off_the_path(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    found = bin_dir()
    if found is None:
        pytest.skip("PostgreSQL is not installed here (apt-get install postgresql)")
    assert (found / "initdb").exists() and (found / "pg_ctl").exists()
