"""Helpers shared by the ledger tests."""

from __future__ import annotations

from rpiboot.provision.ledger import Ledger


def new_board(ledger: Ledger, serial: str = "10000001", profile_id: str = "profile-1",
              port: str = "1-1.2") -> int:
    return ledger.begin_board(port=port, chip="2711", serial=serial, profile_name="line",
                              profile_id=profile_id, host="host-a", tool_version="test")


def hammer(target: str, station: str, boards: int, barrier, results) -> None:  # type: ignore
    """One "host" of the concurrency tests (runs in a child process): for each i it claims the
    serial SHARED-i that the other host also claims, and provisions it when the claim is won,
    plus a serial of its own; every provisioned board takes a unit and a pool entry."""
    from rpiboot.provision.ledger import (AlreadyProvisionedError, ClaimedElsewhereError,
                                          open_ledger)
    ledger = open_ledger(target, station=station)
    won, lost, units, entries = [], [], [], []
    barrier.wait(timeout=60)
    for index in range(boards):
        for serial in (f"SHARED-{index}", f"{station}-{index}"):
            try:
                ledger.claim(serial, "profile-1")
            except (ClaimedElsewhereError, AlreadyProvisionedError):
                lost.append(serial)
                continue
            board_id = new_board(ledger, serial=serial)
            units.append(ledger.next_unit(board_id))
            entries.append(ledger.take_pool_entry(board_id)["tag"])
            ledger.record_step(board_id, "write", result="ok", started=0.0, finished=1.0)
            ledger.finish_board(board_id, result="ok")
            won.append(serial)
    ledger.close()
    results.put({"station": station, "won": won, "lost": lost, "units": units, "entries": entries})


def run_station(root, profile, serials, url, station, barrier, results,
                small=()) -> None:  # type: ignore
    """One "host" of the two-station test (a child process): its own virtual boards on its own
    virtual bus, provisioned through the pipeline into the shared ledger. Boards whose serial is
    in ``small`` get a 1 MiB disk, too small for the image."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "provision"))
    from provision_support import board, run_virtual
    pis = [board("2712", port, serial, root / f"disk{port}.img",
                 (1 << 20) if serial in small else (64 << 20))
           for port, serial in enumerate(serials, 1)]
    barrier.wait(timeout=60)
    run = run_virtual(root, profile, pis, ledger=url, station=station)
    if run.error is not None:
        results.put({"station": station, "error": repr(run.error)})
        return
    results.put({"station": station, "error": None,
                 "boards": [{"serial": b.serial, "result": b.result, "unit": b.unit,
                             "port": b.port} for b in run.outcome.boards]})


def open_fresh(targets, barrier, results) -> None:  # type: ignore
    """Open each new ledger at the same moment as the other process, take a unit, close."""
    from rpiboot.provision.ledger import open_ledger
    units = []
    try:
        for target in targets:
            barrier.wait(timeout=60)
            ledger = open_ledger(target)
            units.append(ledger.next_unit())
            ledger.close()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        barrier.abort()
        results.put(f"{type(exc).__name__}: {exc}")
        return
    results.put(units)
