"""A throwaway PostgreSQL cluster for the tests and benchmarks, and the pytest fixtures on it.

The cluster is initdb'd into a fresh temporary directory, listens only on a Unix socket in that
directory (no TCP port, nothing shared with a system PostgreSQL), trusts local connections, and
is stopped and deleted afterwards. Running as root, the server runs as the ``postgres`` user
(PostgreSQL refuses to run as root). Debian keeps the binaries in /usr/lib/postgresql/N/bin.

``RPIBOOT_TEST_POSTGRES_URL`` points the tests at an existing server instead (its role must be
allowed to CREATE DATABASE). Outside CI a missing PostgreSQL or psycopg skips the PostgreSQL
cases with the install hint; under ``CI=true`` it fails them.

Run by hand: ``python3 tests/postgres_support.py`` starts a cluster, prints its URL and stops it
on Enter.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest

INSTALL_HINT = "apt-get install postgresql"
PSYCOPG_HINT = "pip install 'rpiboot[line]'"
SUPERUSER = "rpiboot"


def bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's newest version."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


class PostgresCluster:
    """initdb + pg_ctl start in a temporary directory; stop() removes everything."""

    def __init__(self, *, durable: bool = False) -> None:
        binaries = bin_dir()
        if binaries is None:
            raise FileNotFoundError(f"PostgreSQL is not installed ({INSTALL_HINT})")
        self.bin = binaries
        self.durable = durable          # fsync on: for benchmarks; tests run without it
        self.root = Path(tempfile.mkdtemp(prefix="rpiboot-pg-"))
        self.data = self.root / "data"
        self._run_as = self._server_user()
        self._names = itertools.count(1)
        self.running = False

    def _server_user(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        user = pwd.getpwnam("postgres")
        os.chown(self.root, user.pw_uid, user.pw_gid)
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self._run_as, *command], capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed: {result.stderr.strip()[-2000:]}")

    def start(self) -> str:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                  "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
        settings = [f"-c unix_socket_directories={self.root}", "-c listen_addresses=''",
                    "-c max_connections=50"]
        if not self.durable:
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                  "-o", " ".join(settings), "-w", "-t", "60", "start")
        self.running = True
        atexit.register(self.stop)
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql:///{database}?host={quote(str(self.root), safe='/')}&user={SUPERUSER}"

    def stop(self) -> None:
        if self.running:
            self.running = False
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                          "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def create_schema(admin_url: str, name: str) -> str:
    """A fresh schema on the server; returns a URL whose connections use it (search_path)."""
    import psycopg
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        connection.execute(f'CREATE SCHEMA "{name}"')
    separator = "&" if "?" in admin_url else "?"
    return f"{admin_url}{separator}options={quote(f'-csearch_path={name}', safe='')}"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL ledger tests skipped: {reason}")


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """The admin URL of a PostgreSQL server for this test session (a throwaway cluster)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable(f"psycopg is not installed ({PSYCOPG_HINT})")
    existing = os.environ.get("RPIBOOT_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    if bin_dir() is None:
        _unavailable(f"PostgreSQL is not installed ({INSTALL_HINT})")
    cluster = PostgresCluster()
    try:
        url = cluster.start()
    except (RuntimeError, OSError, KeyError, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        _unavailable(f"cannot start a throwaway cluster: {exc}")
    yield url
    cluster.stop()


_schema_numbers = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty schema on the session's server for one test (cheaper than a database)."""
    return create_schema(postgres_server, f"rpiboot_test_{os.getpid()}_{next(_schema_numbers)}")


if __name__ == "__main__":
    cluster = PostgresCluster()
    print(cluster.start(), flush=True)
    try:
        input("PostgreSQL is running; press Enter to stop it.\n")
    finally:
        cluster.stop()
