"""PostgreSQL only: a lost connection fails one call cleanly, the next call reconnects, and a
finished record is never lost; the errors a station's operator sees when the server is away."""

from __future__ import annotations

import sys
import threading

import pytest

from ledger_support import new_board
from rpiboot.provision.ledger import LedgerError, open_ledger
from rpiboot.provision.ledger.postgres import redact



def _terminate(admin_url: str, pid: int) -> None:
    import psycopg
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _backend_pid(ledger) -> int:  # type: ignore[no-untyped-def]
    return ledger._backend._connection.info.backend_pid


def test_a_killed_connection_fails_one_call_then_reconnects(postgres_url):
    ledger = open_ledger(postgres_url)
    done = new_board(ledger, serial="DONE")
    ledger.finish_board(done, result="ok")
    live = new_board(ledger, serial="LIVE")
    _terminate(postgres_url, _backend_pid(ledger))
    with pytest.raises(LedgerError) as raised:
        ledger.record_step(live, "write", result="ok", started=0.0, finished=1.0)
    assert raised.value.code == "ledger_unavailable" and "\n" not in str(raised.value)
    ledger.finish_board(live, result=raised.value.code, error=str(raised.value))   # reconnected
    results = {r["serial"]: r["result"] for r in ledger.export()}
    assert results == {"DONE": "ok", "LIVE": "ledger_unavailable"}
    ledger.close()


def test_a_connection_killed_inside_finish_leaves_the_board_in_progress(postgres_url):
    import psycopg
    ledger = open_ledger(postgres_url)
    board_id = new_board(ledger, serial="MID")
    ledger.update_board(board_id, bytes_written=4096, verified=True)
    pid = _backend_pid(ledger)
    outcome: list[BaseException | None] = []

    def finish() -> None:
        try:
            ledger.finish_board(board_id, result="ok")
            outcome.append(None)
        except LedgerError as exc:
            outcome.append(exc)

    with psycopg.connect(postgres_url) as blocker:           # hold the row so finish waits
        blocker.execute("SELECT id FROM boards WHERE id = %s FOR UPDATE", (board_id,))
        worker = threading.Thread(target=finish)
        worker.start()
        _wait_until_waiting(postgres_url, pid)
        _terminate(postgres_url, pid)
        worker.join(timeout=30)
        blocker.rollback()
    assert isinstance(outcome[0], LedgerError)
    assert ledger.board(board_id)["result"] == "in_progress"    # not half a record, not ok
    ledger.finish_board(board_id, result="ok")
    assert ledger.board(board_id)["result"] == "ok"
    ledger.close()


def _wait_until_waiting(url: str, pid: int) -> None:
    import time
    import psycopg
    deadline = time.monotonic() + 20
    with psycopg.connect(url, autocommit=True) as admin:
        while time.monotonic() < deadline:
            row = admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                (pid,)).fetchone()
            if row and row[0] == "Lock":
                return
            time.sleep(0.02)
    raise AssertionError("finish_board never waited for the row lock")


def test_an_unreachable_server_is_one_line(tmp_path):
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'rpiboot[line]')")
    with pytest.raises(LedgerError, match="cannot connect to the ledger") as raised:
        open_ledger(f"postgresql:///db?host={tmp_path}&connect_timeout=2")
    assert "\n" not in str(raised.value)


def test_without_psycopg_the_url_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(LedgerError, match=r"pip install 'rpiboot\[line\]'"):
        open_ledger("postgresql://user@localhost/ledger")


def test_messages_never_show_the_password():
    assert redact("postgresql://line:s3cret@db.example:5432/ledger") == \
        "postgresql://line:***@db.example:5432/ledger"
    assert redact("postgresql://line@db/ledger") == "postgresql://line@db/ledger"


def test_a_password_in_the_query_is_hidden_too():
    assert redact("postgresql:///ledger?host=db&password=s3cret&user=line") == \
        "postgresql:///ledger?host=db&password=***&user=line"


def test_run_and_check_never_print_the_ledger_password(postgres_url, tmp_path, capsys,
                                                       monkeypatch):
    """The start line / start event and check's notes name the ledger without its password
    (the test cluster trusts local connections, so any password is accepted)."""
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parents[1] /
                                    "provision"))
    from provision_support import make_boot_dirs, os_image, write_profile
    from rpiboot.provision import cli
    make_boot_dirs(tmp_path)
    os_image(tmp_path / "os.img", 1 << 20)
    profile = write_profile(tmp_path / "p.toml", '[boot]\ndirectory = "gadget"\n[os]\n'
                                                 'image = "os.img"\n')
    url = f"{postgres_url}&password=s3cret"
    assert cli.main(["check", str(profile), "--ledger", url]) == 0
    assert cli.main(["run", str(profile), "--json", "--timeout", "0.2", "--ledger", url]) == 4
    assert cli.main(["run", str(profile), "--plain", "--timeout", "0.2", "--ledger", url]) == 4
    printed = capsys.readouterr()
    assert "password=***" in printed.out + printed.err
    assert "s3cret" not in printed.out + printed.err
