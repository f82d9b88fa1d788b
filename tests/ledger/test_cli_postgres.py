"""`rpiboot-provision pool import` and `export --ledger URL` on a PostgreSQL ledger."""

from __future__ import annotations

import json

from ledger_support import new_board
from rpiboot.provision import cli
from rpiboot.provision.ledger import open_ledger


def test_pool_import_and_export_through_a_url(tmp_path, postgres_url, capsys):
    (tmp_path / "tags.csv").write_text("asset,hostname\nA-1,line-1\nA-2,line-2\n")
    assert cli.main(["pool", "import", str(tmp_path / "tags.csv"), "--pool", "tags",
                     "--ledger", postgres_url]) == 0
    assert "2 entries" in capsys.readouterr().out
    ledger = open_ledger(postgres_url, station="bench-2")
    board_id = new_board(ledger, serial="e0000001")
    ledger.next_unit(board_id)
    ledger.take_pool_entry(board_id, "tags")
    ledger.update_board(board_id, bytes_written=512, verified=True)
    ledger.finish_board(board_id, result="ok")
    ledger.close()

    assert cli.main(["export", "--ledger", postgres_url, "--format", "json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert {k: record[k] for k in ("serial", "result", "unit", "station", "verified",
                                   "bytes_written", "pool")} == {
        "serial": "e0000001", "result": "ok", "unit": 1, "station": "bench-2",
        "verified": True, "bytes_written": 512, "pool": {"asset": "A-1", "hostname": "line-1"}}


def test_an_unreachable_url_is_exit_9_in_one_line(tmp_path, postgres_server, capsys):
    url = f"postgresql:///ledger?host={tmp_path}&connect_timeout=2"
    assert cli.main(["export", "--ledger", url]) == 9
    err = capsys.readouterr().err.strip()
    assert "cannot connect to the ledger" in err and "\n" not in err
