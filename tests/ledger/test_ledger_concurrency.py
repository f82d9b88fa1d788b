"""Two processes ("hosts") hammering one ledger at once: an SQLite file, a PostgreSQL database."""

from __future__ import annotations

import multiprocessing

from ledger_support import hammer, open_fresh
from rpiboot.provision.ledger import open_ledger

BOARDS = 25        # per process: 25 shared serials + 25 of its own


def test_two_hosts_share_units_claims_and_pool_entries(ledger_target):
    setup = open_ledger(ledger_target, station="setup")
    setup.import_pool([{"tag": f"T{n:03d}"} for n in range(4 * BOARDS)])
    setup.close()

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    hosts = [context.Process(target=hammer, args=(ledger_target, name, BOARDS, barrier, results))
             for name in ("host-a", "host-b")]
    for host in hosts:
        host.start()
    reports = [results.get(timeout=120) for _ in hosts]
    for host in hosts:
        host.join(timeout=30)
        assert host.exitcode == 0

    won = [serial for report in reports for serial in report["won"]]
    shared = [serial for serial in won if serial.startswith("SHARED-")]
    assert sorted(shared) == sorted(f"SHARED-{n}" for n in range(BOARDS))   # each exactly once
    assert len(won) == 3 * BOARDS            # the shared serials once, each host's own
    units = sorted(unit for report in reports for unit in report["units"])
    assert units == list(range(1, len(won) + 1))                           # distinct, gap-free
    entries = [tag for report in reports for tag in report["entries"]]
    assert len(set(entries)) == len(entries) == len(won)                   # never handed out twice

    ledger = open_ledger(ledger_target)
    records = ledger.export()
    assert sorted(r["serial"] for r in records) == sorted(won)
    assert all(r["result"] == "ok" for r in records)
    assert sorted(r["unit"] for r in records) == units
    assert ledger.pool_status()["default"]["free"] == 4 * BOARDS - len(won)
    ledger.close()


def test_two_hosts_create_a_new_ledger_at_the_same_moment(request, tmp_path, ledger_target):
    """The schema is created once, whoever comes first; the other waits and finds it."""
    if ledger_target.startswith("postgresql"):
        from postgres_support import create_schema
        server = request.getfixturevalue("postgres_server")
        targets = [create_schema(server, f"fresh_{n}_{tmp_path.name[-12:]}") for n in range(4)]
    else:
        targets = [str(tmp_path / f"fresh{n}.sqlite") for n in range(4)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    hosts = [context.Process(target=open_fresh, args=(targets, barrier, results))
             for _ in range(2)]
    for host in hosts:
        host.start()
    reports = [results.get(timeout=120) for _ in hosts]
    for host in hosts:
        host.join(timeout=30)
    assert all(isinstance(report, list) for report in reports), reports
    assert [sorted(units) for units in zip(*reports)] == [[1, 2]] * len(targets)
