"""Issue 10: losing the PostgreSQL connection in the middle of a run fails the board whose call
hit it, cleanly (recorded with its code once the next call reconnects); the other board and
every finished record are unaffected."""

from __future__ import annotations

import threading
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


def _terminate_station_connections(admin_url: str) -> None:
    import psycopg
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE application_name = 'rpiboot-provision'"
                      " AND pid <> pg_backend_pid()")


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

    def on_event(item) -> None:  # type: ignore[no-untyped-def]
        data = item.to_dict()
        events.append(data)
        if data["event"] == "step_done" and data.get("step") == "write" and not cut.is_set():
            cut.set()
            _terminate_station_connections(postgres_url)

    options = RunOptions(count=2, timeout=20.0, gather=1.0, follow_seconds=10.0,
                         reentry_timeout=10.0, sysfs_root=tmp_path / "sys",
                         dev_root=tmp_path / "dev", mountinfo=tmp_path / "mountinfo",
                         swaps=tmp_path / "swaps", poll_interval=0.01, station="line-1")
    outcome = provision(profile, options, on_event=on_event,
                        transport=VirtualBus(pis, sysfs_root=tmp_path / "sys",
                                             dev_root=tmp_path / "dev"),
                        ledger=postgres_url)
    assert cut.is_set()
    assert sorted(board.result for board in outcome.boards) == ["ledger_unavailable", "ok"]
    failed = [e for e in events if e["event"] == "board_failed"]
    assert [e["code"] for e in failed] == ["ledger_unavailable"]

    ledger = open_ledger(postgres_url)
    records = {r["serial"]: r for r in ledger.export()}
    ledger.close()
    assert records["0ld00001"]["result"] == "ok"
    line = sorted(r["result"] for serial, r in records.items() if serial.startswith("c0nn"))
    assert line == ["ledger_unavailable", "ok"]           # recorded once the call reconnected
    ok = next(r for r in records.values() if r["station"] == "line-1" and r["result"] == "ok")
    assert ok["verified"] is True and ok["bytes_written"] == 1 << 20
