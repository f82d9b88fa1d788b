"""Issue 10: losing the PostgreSQL connection in the middle of a run fails the board whose call
hit it, cleanly (recorded with its code once the next call reconnects); the next board and every
finished record are unaffected.

The connection is cut while the first board is between its write and its final record, and the
second board is plugged in only once the first has failed: which board's call meets the dead
connection is then decided, not left to the race between two boards' threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rpiboot.provision.api import provision
from rpiboot.provision.ledger import open_ledger
from rpiboot.provision.pipeline import RunOptions
from rpiboot.simulator.in_process import VirtualBus

PROVISION_TESTS = Path(__file__).resolve().parents[1] / "provision"


@pytest.fixture
def support(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(PROVISION_TESTS))
    import provision_support
    return provision_support


STATION_BACKENDS = ("FROM pg_stat_activity WHERE application_name = 'rpiboot-provision'"
                    " AND pid <> pg_backend_pid()")


def _terminate_station_connections(admin_url: str) -> None:
    """Cut the station's connections and wait until their backends are gone (termination is
    signalled, not synchronous)."""
    import psycopg
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"SELECT pg_terminate_backend(pid) {STATION_BACKENDS}")
        for _ in range(500):
            if admin.execute(f"SELECT count(*) {STATION_BACKENDS}").fetchone()[0] == 0:
                return
            time.sleep(0.01)
    raise AssertionError("the station's PostgreSQL connections did not end")


def test_a_lost_connection_fails_one_board_and_loses_nothing(tmp_path, support, postgres_url):
    support.make_boot_dirs(tmp_path)
    support.os_image(tmp_path / "os.img", 1 << 20)
    profile = support.write_profile(tmp_path / "p.toml", '[boot]\ndirectory = "gadget"\n'
                                                         '[os]\nimage = "os.img"\n')
    earlier = open_ledger(postgres_url, station="earlier")       # a record finished before
    earlier.finish_board(earlier.begin_board(port="1-9", chip="2711", serial="0ld00001"),
                         result="ok")
    earlier.close()

    pis = [support.board("2712", n, f"c0nn000{n}", tmp_path / f"d{n}.img", 4 << 20)
           for n in (1, 2)]
    (tmp_path / "sys").mkdir()
    (tmp_path / "dev").mkdir()
    (tmp_path / "mountinfo").write_text("")
    (tmp_path / "swaps").write_text("Filename Type Size Used Priority\n")
    events: list[dict] = []
    cut = threading.Event()
    second_plugged = threading.Event()
    bus = VirtualBus([pis[0]], sysfs_root=tmp_path / "sys", dev_root=tmp_path / "dev")

    def on_event(item) -> None:  # type: ignore[no-untyped-def]
        data = item.to_dict()
        events.append(data)
        if data["event"] == "step_done" and data.get("step") == "write" and not cut.is_set():
            cut.set()
            _terminate_station_connections(postgres_url)
        if data["event"] in ("board_failed", "board_done") and not second_plugged.is_set():
            second_plugged.set()
            bus.plug_in(pis[1])

    options = RunOptions(count=2, timeout=20.0, gather=1.0, follow_seconds=10.0,
                         reentry_timeout=10.0, sysfs_root=tmp_path / "sys",
                         dev_root=tmp_path / "dev", mountinfo=tmp_path / "mountinfo",
                         swaps=tmp_path / "swaps", poll_interval=0.01, station="line-1")
    outcome = provision(profile, options, on_event=on_event,
                        transport=bus, ledger=postgres_url)
    assert cut.is_set()
    results = {board.serial: board.result for board in outcome.boards}
    assert results == {"c0nn0001": "ledger_unavailable", "c0nn0002": "ok"}
    failed = [e for e in events if e["event"] == "board_failed"]
    assert [(e["port"], e["code"]) for e in failed] == [("1-1", "ledger_unavailable")]

    ledger = open_ledger(postgres_url)
    records = {r["serial"]: r for r in ledger.export()}
    ledger.close()
    assert records["0ld00001"]["result"] == "ok"
    # the failure is recorded once the next call reconnected; the next board is complete
    assert records["c0nn0001"]["result"] == "ledger_unavailable"
    ok = records["c0nn0002"]
    assert (ok["result"], ok["station"], ok["verified"], ok["bytes_written"]) == (
        "ok", "line-1", True, 1 << 20)
