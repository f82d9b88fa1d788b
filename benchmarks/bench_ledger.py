"""The ledger's added latency per board: 2 processes x 16 boards at once, SQLite and PostgreSQL.

Run either way:

    python3 benchmarks/bench_ledger.py            # plain figures (needs PostgreSQL for that half)
    python3 -m pytest benchmarks/bench_ledger.py  # the same, as a pytest case

Per board, each process makes the calls the pipeline makes: claim, begin_board, next_unit,
take_pool_entry, one record_step for each of six steps, update_board, finish_board: eleven
transactions. Both processes start together (a barrier) and run their boards back to back, so
every call contends with the other host; on a real line boards take minutes and contend far
less. The SQLite ledger is a WAL file on local disk (synchronous=FULL, SQLite's default); the
PostgreSQL ledger is a throwaway cluster (tests/postgres_support.py) with fsync on, reached over
its Unix socket, so the figures include a durable commit per call but no network round trip.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

STEPS = ("eeprom", "boot", "storage", "write", "verify", "customise")
PROCESSES = 2
BOARDS = 16


def provision(target: str, station: str, boards: int, barrier, results) -> None:  # type: ignore[no-untyped-def]
    """One host: the ledger calls of `boards` boards, each timed."""
    from rpiboot.provision.ledger import open_ledger
    ledger = open_ledger(target, station=station)
    durations = []
    barrier.wait()
    for index in range(boards):
        began = time.perf_counter()
        serial = f"{station}-{index:04d}"
        ledger.claim(serial, "bench-profile")
        board_id = ledger.begin_board(port=f"1-1.{index}", chip="2712", serial=serial,
                                      profile_name="bench", profile_id="bench-profile")
        ledger.next_unit(board_id)
        ledger.take_pool_entry(board_id)
        for step in STEPS:
            now = time.time()
            ledger.record_step(board_id, step, result="ok", started=now, finished=now,
                               details={"seconds": 0})
        ledger.update_board(board_id, image_sha256="ab" * 32, bytes_written=4 << 30,
                            verified=True, mac="d8:3a:dd:00:00:01", otp={"revision": "d04170"})
        ledger.finish_board(board_id, result="ok")
        durations.append(time.perf_counter() - began)
    ledger.close()
    results.put(durations)


def measure(target: str, processes: int = PROCESSES, boards: int = BOARDS) -> list[float]:
    """Seconds of ledger work per board, for every board of every process."""
    from rpiboot.provision.ledger import open_ledger
    setup = open_ledger(target, station="setup")
    setup.import_pool([{"tag": f"T{n:05d}"} for n in range(processes * boards)])
    setup.close()
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=provision,
                               args=(target, f"host{n}", boards, barrier, results))
               for n in range(processes)]
    for worker in workers:
        worker.start()
    durations = [d for _ in workers for d in results.get(timeout=600)]
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"benchmark process failed with exit code {worker.exitcode}")
    return durations


def summary(label: str, durations: list[float]) -> str:
    ordered = sorted(durations)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return (f"{label:<34} per board: median {statistics.median(ordered) * 1000:6.1f} ms, "
            f"mean {statistics.mean(ordered) * 1000:6.1f} ms, p95 {p95 * 1000:6.1f} ms, "
            f"max {ordered[-1] * 1000:6.1f} ms ({len(ordered)} boards, 11 calls each)")


def run(sqlite_dir: Path, with_postgres: bool = True) -> list[str]:
    lines = [summary(f"SQLite ({PROCESSES} processes)",
                     measure(str(sqlite_dir / "ledger.sqlite")))]
    if with_postgres:
        from postgres_support import PostgresCluster
        cluster = PostgresCluster(durable=True)
        try:
            url = cluster.start()
            lines.append(summary(f"PostgreSQL ({PROCESSES} processes)", measure(url)))
        finally:
            cluster.stop()
    return lines


def test_bench_ledger_latency(tmp_path):  # type: ignore[no-untyped-def]
    from postgres_support import bin_dir
    for line in run(tmp_path, with_postgres=bin_dir() is not None):
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-postgres", action="store_true", help="only the SQLite ledger")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the SQLite file goes (default: a temporary directory)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=options.dir) as directory:
        for line in run(Path(directory), with_postgres=not options.no_postgres):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
