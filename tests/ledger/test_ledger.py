"""The ledger's public API, the same tests on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time

import pytest

from ledger_support import new_board
from rpiboot.provision.ledger import (AlreadyProvisionedError, ClaimedElsewhereError,
                                      LedgerError, PoolExhaustedError, PoolImportError,
                                      base, open_ledger)
from rpiboot.provision.ledger.migrations import LATEST, Migration

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def finished_board(ledger, serial="10000001", result="ok", **fields):  # type: ignore
    board_id = new_board(ledger, serial)
    if fields:
        ledger.update_board(board_id, **fields)
    ledger.finish_board(board_id, result=result, error=None if result == "ok" else "it broke")
    return board_id


# -- schema --------------------------------------------------------------------------------

def test_open_creates_the_schema_once(ledger_target):
    first = open_ledger(ledger_target)
    assert first.schema_version() == LATEST
    first.close()
    second = open_ledger(ledger_target)          # no migration runs twice (it would fail)
    assert second.schema_version() == LATEST
    second.close()


def test_a_new_migration_upgrades_an_existing_ledger(ledger_target, monkeypatch):
    open_ledger(ledger_target).close()
    extra = Migration(LATEST + 1, "test_column", ("ALTER TABLE boards ADD COLUMN test_note TEXT",))
    monkeypatch.setattr(base, "MIGRATIONS", base.MIGRATIONS + (extra,))
    monkeypatch.setattr(base, "LATEST", LATEST + 1)
    upgraded = open_ledger(ledger_target)
    assert upgraded.schema_version() == LATEST + 1
    with upgraded._transaction() as tx:
        tx.execute("UPDATE boards SET test_note = ? WHERE id = ?", ("x", 0))
    upgraded.close()


def test_a_ledger_from_a_newer_rpiboot_is_refused(ledger_target, monkeypatch):
    open_ledger(ledger_target).close()
    monkeypatch.setattr(base, "LATEST", 0)
    monkeypatch.setattr(base, "MIGRATIONS", ())
    with pytest.raises(LedgerError, match="newer than this rpiboot understands"):
        open_ledger(ledger_target)


# -- boards --------------------------------------------------------------------------------

def test_a_board_reads_in_progress_until_finish_commits(ledger):
    board_id = new_board(ledger)
    ledger.update_board(board_id, image_sha256="ab" * 32, bytes_written=4096, verified=True)
    [record] = ledger.export()
    assert record["result"] == "in_progress" and record["finished"] is None
    ledger.finish_board(board_id, result="ok")
    [record] = ledger.export()
    assert record["result"] == "ok" and ISO_UTC.fullmatch(record["finished"])


def test_export_has_every_documented_field(ledger):
    board_id = new_board(ledger)
    unit = ledger.next_unit(board_id)
    ledger.record_step(board_id, "write", result="ok", started=1000.0, finished=1012.5,
                       details={"bytes": 4096})
    ledger.update_board(board_id, revision="a03140", mac="d8:3a:dd:00:00:01",
                        otp={"customer_key_hash": b"\x01\x02"}, eeprom_sha256="11" * 32,
                        eeprom_config="BOOT_ORDER=0xf25641", image_sha256="22" * 32,
                        bytes_written=4096, verified=1, board={"memory": "4G"})
    ledger.finish_board(board_id, result="ok")
    [record] = ledger.export()
    assert {key: record[key] for key in ("serial", "chip", "port", "result", "bytes_written",
                                         "verified", "unit", "station", "profile_id")} == {
        "serial": "10000001", "chip": "2711", "port": "1-1.2", "result": "ok",
        "bytes_written": 4096, "verified": True, "unit": unit, "station": "station-a",
        "profile_id": "profile-1"}
    assert record["image_sha256"] == "22" * 32 and record["eeprom_sha256"] == "11" * 32
    assert record["otp"] == {"customer_key_hash": "0102"} and record["board"] == {"memory": "4G"}
    assert ISO_UTC.fullmatch(record["started"]) and ISO_UTC.fullmatch(record["finished"])
    assert record["steps"] == [{"step": "write", "result": "ok",
                                "started": "1970-01-01T00:16:40.000Z",
                                "finished": "1970-01-01T00:16:52.500Z", "seconds": 12.5,
                                "details": {"bytes": 4096}}]


def test_the_export_command_reads_either_backend(ledger, ledger_target, capsys):
    """`rpiboot-provision export --ledger PATH|URL`: the records with unit and station."""
    import csv
    import io
    import json
    from rpiboot.provision import cli
    board_id = new_board(ledger, serial="=HYPERLINK(1)")
    unit = ledger.next_unit(board_id)
    ledger.finish_board(board_id, result="ok")
    ledger.finish_board(new_board(ledger, serial="\t=1+1"), result="ok")
    assert cli.main(["export", "--ledger", ledger_target]) == 0
    record, _tab = json.loads(capsys.readouterr().out)
    assert (record["serial"], record["unit"], record["station"], record["result"]) == \
        ("=HYPERLINK(1)", unit, "station-a", "ok")
    assert cli.main(["export", "--ledger", ledger_target, "--format", "csv"]) == 0
    row, tab = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (row["serial"], row["unit"], row["station"]) == ("'=HYPERLINK(1)", str(unit),
                                                            "station-a")
    assert tab["serial"] == "'\t=1+1"  # as the dashboard's CSV: no cell a spreadsheet runs


def test_unverified_board_exports_verified_false(ledger):
    finished_board(ledger, result="write_failed")
    [record] = ledger.export()
    assert record["verified"] is False and record["bytes_written"] == 0
    assert record["error"] == "it broke"


def test_update_board_refuses_unknown_fields(ledger):
    board_id = new_board(ledger)
    with pytest.raises(TypeError, match="result"):
        ledger.update_board(board_id, result="ok")


def test_finish_keeps_the_first_outcome(ledger):
    board_id = new_board(ledger)
    ledger.mark_interrupted([board_id])
    ledger.finish_board(board_id, result="ok")
    assert ledger.export()[0]["result"] == "interrupted"


def test_a_finished_record_is_not_changed(ledger):
    board_id = finished_board(ledger, bytes_written=10, verified=True)
    ledger.update_board(board_id, bytes_written=0, verified=False)
    record = ledger.board(board_id)
    assert (record["bytes_written"], record["verified"]) == (10, True)


def test_mark_interrupted_leaves_finished_boards_alone(ledger):
    done = finished_board(ledger, serial="A")
    running = new_board(ledger, serial="B")
    ledger.mark_interrupted([done, running])
    results = {record["serial"]: record["result"] for record in ledger.export()}
    assert results == {"A": "ok", "B": "interrupted"}


def test_hostile_strings_are_stored_verbatim(ledger):
    serial = "x'; DROP TABLE boards; --\n\"%_\\"
    finished_board(ledger, serial=serial, mac="<script>")
    assert ledger.export()[0]["serial"] == serial
    assert [r["serial"] for r in ledger.recent(search="drop table")] == [serial]


# -- claims --------------------------------------------------------------------------------

def test_two_ledgers_cannot_claim_the_same_serial(ledger, ledger_target):
    other = open_ledger(ledger_target, station="station-b")
    ledger.claim("10000001", "profile-1")
    with pytest.raises(ClaimedElsewhereError, match="station station-a") as raised:
        other.claim("10000001", "profile-1")
    assert raised.value.code == "claimed_elsewhere"
    ledger.claim("10000001", "profile-1")          # the holder may claim again
    other.close()


def test_an_ok_record_refuses_the_same_profile_unless_reprovision(ledger, ledger_target):
    ledger.claim("10000001", "profile-1")
    finished_board(ledger)                          # finish releases the claim
    other = open_ledger(ledger_target, station="station-b")
    with pytest.raises(AlreadyProvisionedError, match="--reprovision") as raised:
        other.claim("10000001", "profile-1")
    assert raised.value.code == "already_provisioned"
    other.claim("10000001", "profile-2")            # another profile is another job
    other.release_claim("10000001")
    other.claim("10000001", "profile-1", reprovision=True)
    other.close()


def test_a_refused_claim_leaves_no_claim_behind(ledger, ledger_target):
    ledger.claim("10000001", "profile-1")
    finished_board(ledger)
    other = open_ledger(ledger_target, station="station-b")
    with pytest.raises(AlreadyProvisionedError):
        other.claim("10000001", "profile-1")
    ledger.claim("10000001", "profile-1", reprovision=True)   # not blocked by station-b
    other.close()


def test_a_failed_board_can_be_claimed_again(ledger, ledger_target):
    ledger.claim("10000001", "profile-1")
    finished_board(ledger, result="verify_mismatch")
    other = open_ledger(ledger_target, station="station-b")
    other.claim("10000001", "profile-1")
    other.close()


def test_a_dead_stations_claim_expires(ledger, ledger_target, monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr(base, "_now", lambda: clock[0])
    ledger.claim("10000001", "profile-1", expires_after=60)
    stale = new_board(ledger)
    other = open_ledger(ledger_target, station="station-b")
    clock[0] += 59
    with pytest.raises(ClaimedElsewhereError):
        other.claim("10000001", "profile-1")
    clock[0] += 2
    other.claim("10000001", "profile-1")
    record = ledger.board(stale)
    assert record["result"] == "abandoned" and "claim expired" in record["error"]
    other.close()


def test_progress_renews_the_claim(ledger, ledger_target, monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr(base, "_now", lambda: clock[0])
    ledger.claim("10000001", "profile-1", expires_after=60)
    board_id = new_board(ledger)
    other = open_ledger(ledger_target, station="station-b")
    for _ in range(3):
        clock[0] += 50
        ledger.record_step(board_id, "write", result="ok", started=clock[0], finished=clock[0])
    with pytest.raises(ClaimedElsewhereError):
        other.claim("10000001", "profile-1")
    clock[0] += 50
    ledger.renew_claims()
    clock[0] += 50
    with pytest.raises(ClaimedElsewhereError):
        other.claim("10000001", "profile-1")
    other.close()


def test_a_live_station_keeps_its_claim_past_the_lease(ledger, ledger_target):
    ledger.claim("10000001", "profile-1", expires_after=1.2)    # the heartbeat renews it
    time.sleep(2.5)                                               # two leases
    other = open_ledger(ledger_target, station="station-b")
    with pytest.raises(ClaimedElsewhereError):
        other.claim("10000001", "profile-1")
    other.close()


def test_a_killed_stations_claim_expires_after_its_lease(ledger_target, monkeypatch):
    script = textwrap.dedent(f"""
        import os
        from rpiboot.provision.ledger import open_ledger
        ledger = open_ledger({ledger_target!r}, station="dying")
        ledger.claim("10000001", "profile-1", expires_after=600)
        os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == 9
    other = open_ledger(ledger_target, station="station-b")
    with pytest.raises(ClaimedElsewhereError, match="station dying"):
        other.claim("10000001", "profile-1")
    with other._transaction() as tx:
        claimed = tx.execute("SELECT claimed FROM claims WHERE serial = ?", ("10000001",)).one()[0]
    monkeypatch.setattr(base, "_now", lambda: claimed + 599)
    with pytest.raises(ClaimedElsewhereError):
        other.claim("10000001", "profile-1")
    monkeypatch.setattr(base, "_now", lambda: claimed + 601)     # nobody renewed it
    other.claim("10000001", "profile-1")
    other.close()


def test_interrupted_and_closed_ledgers_release_their_claims(ledger, ledger_target):
    other = open_ledger(ledger_target, station="station-b")
    ledger.claim("A", "profile-1")
    ledger.mark_interrupted([new_board(ledger, serial="A")])
    other.claim("A", "profile-1")
    other.claim("B", "profile-1")
    other.close()
    ledger.claim("B", "profile-1")


# -- units ---------------------------------------------------------------------------------

def test_units_count_up_and_are_never_reused(ledger, ledger_target):
    board_id = new_board(ledger)
    assert [ledger.next_unit(board_id), ledger.next_unit()] == [1, 2]
    assert ledger.board(board_id)["unit"] == 1
    ledger.close()
    reopened = open_ledger(ledger_target, station="station-b")
    assert reopened.next_unit() == 3
    reopened.close()


# -- pools ---------------------------------------------------------------------------------

def test_pool_entries_are_handed_out_once_in_order(ledger):
    rows = [{"asset": f"A{n}", "hostname": f"line-{n}"} for n in range(3)]
    assert ledger.import_pool(rows, pool="tags") == 3
    boards = [new_board(ledger, serial=str(n)) for n in range(3)]
    assert [ledger.take_pool_entry(b, "tags") for b in boards] == rows
    assert ledger.pool_status() == {"tags": {"total": 3, "free": 0}}
    with pytest.raises(PoolExhaustedError, match="used up") as raised:
        ledger.take_pool_entry(new_board(ledger, serial="4"), "tags")
    assert raised.value.code == "pool_exhausted"
    record = ledger.board(boards[1])
    assert record["pool_name"] == "tags" and record["pool"] == rows[1]


def test_an_unknown_pool_says_how_to_import_one(ledger):
    with pytest.raises(PoolExhaustedError, match="pool import"):
        ledger.take_pool_entry(new_board(ledger), "missing")


@pytest.mark.parametrize("rows, message", [
    ([{"asset": "A1"}, {"asset": "A1"}], "repeats row 1"),
    ([{"asset": "A1"}, {"tag": "A2"}], "has columns tag"),
    ([{"asset": ""}], "is empty"),
    ([{"asset": "A\x1b[2J"}], "control character"),
    ([{"bad name": "x"}], "column name"),
    ([], "no pool rows"),
])
def test_bad_pool_rows_import_nothing(ledger, rows, message):
    with pytest.raises(PoolImportError, match=message):
        ledger.import_pool(rows)
    assert ledger.pool_status() == {}


def test_a_pool_keeps_its_columns_and_refuses_rows_it_has(ledger):
    ledger.import_pool([{"asset": "A1"}])
    with pytest.raises(PoolImportError, match="already holds"):
        ledger.import_pool([{"asset": "A2"}, {"asset": "A1"}])
    with pytest.raises(PoolImportError, match="pool 'default' has asset"):
        ledger.import_pool([{"tag": "T1"}])
    assert ledger.pool_status() == {"default": {"total": 1, "free": 1}}


# -- reading -------------------------------------------------------------------------------

def test_recent_is_newest_first_limited_and_searchable(ledger):
    for n in range(5):
        finished_board(ledger, serial=f"SER{n}", result="ok" if n % 2 else "verify_mismatch")
    assert [r["serial"] for r in ledger.recent(limit=3)] == ["SER4", "SER3", "SER2"]
    assert [r["serial"] for r in ledger.recent(search="ser1")] == ["SER1"]
    assert [r["serial"] for r in ledger.recent(search="MISMATCH")] == ["SER4", "SER2", "SER0"]
    assert ledger.recent(search="%") == [] and ledger.recent(search="s_r") == []  # not wildcards


def test_search_folds_case_beyond_ascii(ledger):
    finished_board(ledger, serial="ÉCRAN-Ω1")
    assert [r["serial"] for r in ledger.recent(search="écran-ω")] == ["ÉCRAN-Ω1"]


def test_totals_count_outcomes_since_a_time(ledger, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(base, "_now", lambda: clock[0])
    finished_board(ledger, serial="old", result="write_failed")
    clock[0] = 2000.0
    for serial, result in (("a", "ok"), ("b", "ok"), ("c", "verify_mismatch"),
                           ("d", "write_failed"), ("a", "skipped")):
        finished_board(ledger, serial=serial, result=result)
    new_board(ledger, serial="e")
    assert ledger.totals(since=1500.0) == {
        "ok": 2, "failed": 2, "skipped": 1, "in_progress": 1,
        "by_code": {"verify_mismatch": 1, "write_failed": 1}}
    assert ledger.totals(since=0)["by_code"]["write_failed"] == 2


# -- crashes -------------------------------------------------------------------------------

def test_a_crash_mid_board_never_reads_as_success(ledger_target):
    script = textwrap.dedent(f"""
        import os
        from rpiboot.provision.ledger import open_ledger
        ledger = open_ledger({ledger_target!r}, station="crashing")
        ledger.claim("CRASH", "profile-1")
        board = ledger.begin_board(port="1-1", chip="2712", serial="CRASH", profile_id="profile-1")
        ledger.update_board(board, bytes_written=1 << 20, verified=True, image_sha256="00" * 32)
        os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == 9
    ledger = open_ledger(ledger_target)
    [record] = ledger.export()
    assert record["result"] == "in_progress" and record["finished"] is None
    assert ledger.totals(0)["ok"] == 0
    ledger.close()
