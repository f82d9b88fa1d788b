"""The ledger's added latency per board: 2 processes x 16 boards at once, SQLite and PostgreSQL.

Run either way:

    python3 benchmarks/bench_ledger.py            # plain figures (needs PostgreSQL for that half)
    python3 -m pytest benchmarks/bench_ledger.py  # the same, as a pytest case

Two measurements. **Ledger calls alone** (below). **Through the pipeline**: two processes
("hosts"), each provisioning 16 virtual boards on its own virtual bus (boot, mass-storage
gadget, a 1 MiB image written and verified) into the shared ledger, with the time spent inside
the ledger's transactions summed and divided by the boards; that is the latency the ledger adds
to a board in a real run, where the calls are spread over the board's steps.

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
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

STEPS = ("eeprom", "boot", "storage", "write", "verify", "customise")
PROCESSES = 2
BOARDS = 16


def provision(target: str, station: str, boards: int, barrier, results) -> None:  # type: ignore
    """One host: the ledger calls of `boards` boards, each timed."""
    from rpiboot.provision.ledger import open_ledger
    ledger = open_ledger(target, station=station)
    durations = []
    barrier.wait(timeout=120)
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


def pipeline_station(root: Path, profile: Path, target: str, station: str, boards: int,
                     barrier, results) -> None:  # type: ignore
    """One host through the pipeline (a child process): time spent in ledger transactions."""
    import contextlib
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "provision"))
    from provision_support import board, run_virtual
    from rpiboot.provision.ledger import base
    spent = [0.0, 0]
    lock = __import__("threading").Lock()
    original = base.Ledger._transaction

    @contextlib.contextmanager
    def timed(self, write=True):  # type: ignore[no-untyped-def]
        began = time.perf_counter()
        with original(self, write) as tx:
            yield tx
        with lock:
            spent[0] += time.perf_counter() - began
            spent[1] += 1

    base.Ledger._transaction = timed
    pis = [board("2712", port, f"{station[-1]}{port:07x}", root / f"disk{port}.img", 4 << 20)
           for port in range(1, boards + 1)]
    barrier.wait(timeout=120)
    began = time.perf_counter()
    run = run_virtual(root, profile, pis, ledger=target, station=station, gather=0.2)
    wall = time.perf_counter() - began
    ok = sum(1 for b in run.outcome.boards if b.result == "ok") if run.outcome else 0
    results.put({"ledger": spent[0], "calls": spent[1], "wall": wall, "ok": ok,
                 "error": repr(run.error) if run.error else None})


def measure_pipeline(root: Path, target: str, boards: int = BOARDS) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "provision"))
    from provision_support import make_boot_dirs, os_image, write_profile
    make_boot_dirs(root)
    os_image(root / "os.img", 1 << 20)
    profile = write_profile(root / "p.toml", '[boot]\ndirectory = "gadget"\n[os]\n'
                                             'image = "os.img"\n')
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    workers = []
    for n in range(PROCESSES):
        (root / f"host{n}").mkdir()
        workers.append(context.Process(target=pipeline_station, args=(
            root / f"host{n}", profile, target, f"host{n}", boards, barrier, results)))
        workers[-1].start()
    reports = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    problems = [r["error"] for r in reports if r["error"]] + \
        [f"{boards - r['ok']} boards failed" for r in reports if r["ok"] != boards]
    if problems:
        raise RuntimeError(f"pipeline benchmark failed: {problems}")
    total = PROCESSES * boards
    return {"per_board": sum(r["ledger"] for r in reports) / total,
            "calls": sum(r["calls"] for r in reports) / total,
            "wall": max(r["wall"] for r in reports)}


def pipeline_summary(label: str, figures: dict) -> str:
    return (f"{label:<34} ledger time per board {figures['per_board'] * 1000:6.1f} ms"
            f" ({figures['calls']:.0f} transactions), whole run {figures['wall']:.1f} s for"
            f" {PROCESSES} x {BOARDS} boards")


def summary(label: str, durations: list[float]) -> str:
    ordered = sorted(durations)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return (f"{label:<34} per board: median {statistics.median(ordered) * 1000:6.1f} ms, "
            f"mean {statistics.mean(ordered) * 1000:6.1f} ms, p95 {p95 * 1000:6.1f} ms, "
            f"max {ordered[-1] * 1000:6.1f} ms ({len(ordered)} boards, 11 calls each)")


def run(work: Path, with_postgres: bool = True) -> list[str]:
    targets = [("SQLite", lambda name: str(work / f"{name}.sqlite"))]
    cluster = None
    if with_postgres:
        from postgres_support import PostgresCluster, create_schema
        cluster = PostgresCluster(durable=True)
        admin = cluster.start()
        targets.append(("PostgreSQL", lambda name: create_schema(admin, name)))
    try:
        lines = []
        for label, target in targets:
            lines.append(summary(f"{label}, ledger calls", measure(target("calls"))))
            (work / label).mkdir()
            lines.append(pipeline_summary(f"{label}, through the pipeline",
                                          measure_pipeline(work / label, target("pipeline"))))
        return lines
    finally:
        if cluster is not None:
            cluster.stop()


def test_bench_ledger_latency(tmp_path):  # type: ignore[no-untyped-def]
    import importlib.util
    from postgres_support import bin_dir
    postgres = bin_dir() is not None and importlib.util.find_spec("psycopg") is not None
    for line in run(tmp_path, with_postgres=postgres):
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
