"""Helpers shared by the ledger tests."""

from __future__ import annotations

from rpiboot.provision.ledger import Ledger


def new_board(ledger: Ledger, serial: str = "10000001", profile_id: str = "profile-1",
              port: str = "1-1.2") -> int:
    return ledger.begin_board(port=port, chip="2711", serial=serial, profile_name="line",
                              profile_id=profile_id, host="host-a", tool_version="test")


def hammer(target: str, station: str, boards: int, barrier, results) -> None:  # type: ignore[no-untyped-def]
    """One "host" of the concurrency tests (runs in a child process): for each i it claims the
    serial SHARED-i that the other host also claims, and provisions it when the claim is won,
    plus a serial of its own; every provisioned board takes a unit and a pool entry."""
    from rpiboot.provision.ledger import (AlreadyProvisionedError, ClaimedElsewhereError,
                                          open_ledger)
    ledger = open_ledger(target, station=station)
    won, lost, units, entries = [], [], [], []
    barrier.wait()
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
