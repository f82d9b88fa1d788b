"""The rpiboot-provision command line: check, exit codes, one-line errors, export, pool import,
the event schema and its documentation."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rpiboot.provision import cli, preflight
from rpiboot.provision.errors import ExitCode
from rpiboot.provision.event_schema import markdown_table, validate

from provision_support import board, make_boot_dirs, os_image, run_virtual, write_profile

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


def test_docs_carry_the_current_event_table():
    text = (ROOT / "docs" / "provision.md").read_text(encoding="utf-8")
    assert f"<!-- provision-events -->\n{markdown_table()}\n<!-- /provision-events -->" in text, \
        "regenerate with: python3 -c 'from rpiboot.provision.event_schema import " \
        "markdown_table; print(markdown_table())'"


def test_schema_rejects_what_it_does_not_document():
    assert validate({"event": "board_arrived", "time": 1.0, "port": "1-1", "chip": "x"}) == []
    assert validate({"event": "board_arrived", "time": 1.0, "port": "1-1"}) != []
    assert validate({"event": "board_arrived", "time": 1.0, "port": "1-1", "chip": "x",
                     "extra": 1}) != []
    assert validate({"event": "step_started", "time": 1, "port": "1-1", "step": "bake"}) != []
    assert validate({"event": "nope", "time": 1}) != []


@pytest.fixture
def line(tmp_path):
    make_boot_dirs(tmp_path)
    os_image(tmp_path / "os.img", 2 * MiB)
    return tmp_path


def test_check_accepts_a_good_profile_and_names_what_it_checked(line, capsys):
    profile = write_profile(line / "p.toml", '[boot]\ndirectory = "gadget"\n[os]\nimage = '
                                             '"os.img"\n[eeprom]\nrecovery = "recovery"\n'
                                             'boot_conf = "boot.conf"\n')
    assert cli.main(["check", str(profile)]) == 0
    out = capsys.readouterr().out
    assert "image os.img: raw, 2097152 bytes" in out and "eeprom: pieeprom.bin sha256" in out
    assert out.rstrip().endswith(": OK")
    assert cli.main(["check", "--json", str(profile)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


@pytest.mark.parametrize("text, status, words", [
    ('[boot]\ndirectory = "gadget"\n[os]\nimage = "os.img"\nverfy = 1\n', 3, "did you mean"),
    ('[boot]\ndirectory = "nowhere"\n[os]\nimage = "os.img"\n', 3, "nowhere"),
    ('[boot]\ndirectory = "recovery"\n[os]\nimage = "os.img"\nstorage = "../sda"\n', 3,
     "storage"),
    ('[boot]\ndirectory = "gadget"\n[os]\nimage = "os.img"\n[customise]\nhostname = "a_b!"\n',
     3, "hostname"),
    ('[boot]\ndirectory = "gadget"\n[os]\nimage = "os.img"\n[customise]\nhostname = "{mac}"\n',
     3, "[eeprom]"),
    ('[boot]\ndirectory = "gadget"\n[os]\nimage = "os.img"\n[eeprom]\nrecovery = "recovery"\n'
     'boot_conf = "boot.conf"\nkey = "boot.conf"\n', 3, "key"),
])
def test_check_failures_are_one_line_with_status_3(line, capsys, text, status, words):
    assert cli.main(["check", str(write_profile(line / "p.toml", text))]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rpiboot-provision: error:")
    assert words in err


def test_usage_errors_and_missing_profile(line, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["run"])
    assert caught.value.code == ExitCode.USAGE
    with pytest.raises(SystemExit) as caught:
        cli.main(["run", "p.toml", "--count", "0"])
    assert caught.value.code == ExitCode.USAGE
    assert cli.main([]) == ExitCode.USAGE
    capsys.readouterr()
    assert cli.main(["check", str(line / "missing.toml")]) == ExitCode.PROFILE
    assert "does not exist" in capsys.readouterr().err


def test_run_without_a_board_times_out_with_status_4_and_valid_json(line, capsys,
                                                                      monkeypatch):
    from rpiboot.provision import api
    from rpiboot.simulator.in_process import VirtualBus
    monkeypatch.setattr(api, "open_usb", lambda _library: VirtualBus([]))
    profile = write_profile(line / "p.toml", '[boot]\ndirectory = "gadget"\n[os]\nimage = '
                                             '"os.img"\n')
    status = cli.main(["run", str(profile), "--json", "--timeout", "0.3", "--ledger",
                       str(line / "l.sqlite")])
    assert status == ExitCode.NO_BOARD
    events = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["start", "waiting", "error", "summary"]
    assert all(validate(e) == [] for e in events)
    assert events[2]["code"] == "no_board" and events[-1]["exit_code"] == 4


def test_export_csv_and_json_and_pool_import(line, capsys):
    rows = "hostname,asset\nline-a,A-1\nline-b,A-2\n"
    (line / "pool.csv").write_text(rows)
    ledger = line / "ledger.sqlite"
    assert cli.main(["pool", "import", str(line / "pool.csv"), "--ledger", str(ledger)]) == 0
    assert "2 entries" in capsys.readouterr().out
    (line / "bad.csv").write_bytes(b"\xff\xfe")
    assert cli.main(["pool", "import", str(line / "bad.csv"), "--ledger", str(ledger)]) == 3
    assert capsys.readouterr().err.count("\n") == 1
    pis = [board("2711", n, f"=cmd|{n}", line / f"d{n}.img", 8 * MiB) for n in (1, 2)]
    run = run_virtual(line, write_profile(line / "p.toml", '[boot]\ndirectory = "gadget"\n'
                                                           '[os]\nimage = "os.img"\n'), pis,
                      ledger=ledger)
    assert run.outcome.exit_code == 0
    assert cli.main(["export", "--ledger", str(ledger)]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(r["serial"] for r in records) == ["=cmd|1", "=cmd|2"]
    assert cli.main(["export", "--ledger", str(ledger), "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(r["serial"] for r in table) == ["'=cmd|1", "'=cmd|2"]  # no formula
    assert {r["result"] for r in table} == {"ok"}


def test_pool_and_unit_values_reach_the_board(tmp_path, capsys):
    from customise_support import pi_disk
    make_boot_dirs(tmp_path)
    disk = pi_disk(tmp_path, name="os.img")
    (tmp_path / "pool.csv").write_text("name\nalpha\nbravo\n")
    ledger = tmp_path / "ledger.sqlite"
    assert cli.main(["pool", "import", str(tmp_path / "pool.csv"), "--ledger", str(ledger)]) == 0
    profile = write_profile(tmp_path / "p.toml", '[boot]\ndirectory = "gadget"\n[os]\n'
                                                 'image = "os.img"\n[customise]\n'
                                                 'hostname = "{pool.name}-{unit:03d}"\n'
                                                 'init = "cloud-init"\n')
    pis = [board("2712", n, f"p00{n}", tmp_path / f"t{n}.img", 64 * MiB) for n in (1, 2)]
    run = run_virtual(tmp_path, profile, pis, ledger=ledger)
    assert run.outcome.exit_code == 0, [b.message for b in run.outcome.boards]
    hostnames = {}
    for record in run.outcome.boards:
        text = subprocess.run(["mtype", "-i", f"{tmp_path / f't{record.port[-1]}.img'}"
                               f"@@{disk.offset}", "::user-data"], check=True,
                              capture_output=True).stdout.decode()
        hostnames[record.unit] = re.search(r'hostname: "([^"]+)"', text).group(1)
    assert sorted(hostnames) == [1, 2]  # unit numbers from the ledger, distinct
    assert sorted(name.rsplit("-", 1)[0] for name in hostnames.values()) == ["alpha", "bravo"]
    assert all(name.endswith(f"-{unit:03d}") for unit, name in hostnames.items())


def test_example_profile_is_valid(tmp_path, monkeypatch, capsys):
    example = ROOT / "examples" / "provision" / "cm4-line.toml"
    shutil.copy(example, tmp_path / "cm4-line.toml")
    os_image(tmp_path / "2025-11-24-raspios-trixie-arm64-lite.img.xz", 4096)
    gadget, _recovery = make_boot_dirs(tmp_path)
    monkeypatch.setattr(preflight, "find_default_directory", lambda _target: gadget)
    mbr = bytearray(8192)  # one FAT32 (LBA) partition, as Raspberry Pi OS images start
    mbr[446 + 4], mbr[446 + 8:446 + 16] = 0x0C, (8192).to_bytes(4, "little") * 2
    mbr[510:512] = b"\x55\xaa"
    (tmp_path / "2025-11-24-raspios-trixie-arm64-lite.img.xz").write_bytes(
        __import__("lzma").compress(bytes(mbr)))
    assert cli.main(["check", str(tmp_path / "cm4-line.toml")]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("head, problem", [
    (b"\0" * 8192, "no partition table"),
    (bytes(446) + bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") * 2
     + bytes(48) + b"\x55\xaa" + bytes(7680), "partition types: 0x83")])
def test_check_refuses_an_image_without_a_boot_partition_to_customise(line, capsys, head,
                                                                       problem):
    """Without this, every board would be written in full and then fail at customise."""
    (line / "plain.img").write_bytes(head)
    profile = write_profile(line / "p.toml", '[boot]\ndirectory = "gadget"\n[os]\nimage = '
                                             '"plain.img"\n[customise]\nhostname = "x"\n')
    assert cli.main(["check", str(profile)]) == ExitCode.PROFILE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err
    (line / "p2.toml").write_text('[boot]\ndirectory = "gadget"\n[os]\nimage = "plain.img"\n')
    assert cli.main(["check", str(line / "p2.toml")]) == 0  # nothing to customise: fine


def test_demo_provisions_virtual_boards_end_to_end(tmp_path, capsys):
    assert cli.main(["demo", "--boards", "2", "--json", "--keep", str(tmp_path)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(validate(e) == [] for e in events)
    done = [e for e in events if e["event"] == "board_done"]
    assert sorted(e["unit"] for e in done) == [1, 2] and all(e["verified"] for e in done)
    assert [e["event"] for e in events][-1] == "summary"
    for number in (1, 2):  # the demo image's boot partition got the board's hostname
        text = subprocess.run(["mtype", "-i", f"{tmp_path / f'board{number}.img'}@@{8192 * 512}",
                               "::user-data"], check=True, capture_output=True).stdout.decode()
        assert re.search(r'hostname: "demo-00[12]"', text), text


def test_check_opens_the_ledger_it_is_given(line, capsys):
    profile = write_profile(line / "p.toml", '[boot]\ndirectory = "gadget"\n[os]\nimage = '
                                             '"os.img"\n')
    (line / "a-directory").mkdir()
    assert cli.main(["check", str(profile), "--ledger", str(line / "a-directory")]) == \
        ExitCode.LEDGER
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.main(["check", str(profile), "--ledger", str(line / "ok.sqlite")]) == 0
    assert "writable" in capsys.readouterr().out


def test_sigterm_marks_the_boards_in_progress_interrupted(tmp_path):
    """The installed command, stopped with SIGTERM while writing: status 130, the summary is
    printed, and every board in progress is recorded as interrupted."""
    import signal
    import sys
    command = Path(sys.executable).with_name("rpiboot-provision")
    args = [str(command)] if command.exists() else [sys.executable, "-m", "rpiboot.provision.cli"]
    process = subprocess.Popen([*args, "demo", "--boards", "3", "--json", "--keep",
                                str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(json.loads(line))
        if lines[-1]["event"] == "step_started" and lines[-1]["step"] == "write":
            process.send_signal(signal.SIGTERM)
            break
    lines += [json.loads(line) for line in process.stdout]
    assert process.wait(timeout=60) == ExitCode.INTERRUPTED
    assert lines[-1]["event"] == "summary" and lines[-1]["exit_code"] == 130
    from rpiboot.provision.ledger import open_ledger
    ledger = open_ledger(tmp_path / "demo-ledger.sqlite")
    try:
        results = [record["result"] for record in ledger.export()]
    finally:
        ledger.close()
    assert results and set(results) == {"interrupted"}


def test_export_of_a_missing_ledger_file_is_an_error_not_an_empty_ledger(tmp_path, capsys):
    missing = tmp_path / "no-such-dir" / "typo.sqlite"
    assert cli.main(["export", "--ledger", str(missing)]) == ExitCode.LEDGER
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no ledger at" in err
    assert not missing.parent.exists()  # nothing created by a read


@pytest.mark.parametrize("kind", ["file", "non-empty directory"])
def test_demo_keep_refuses_a_path_that_holds_something(tmp_path, capsys, kind):
    """Running the demo twice with the same --keep was a traceback-free internal error
    (FileExistsError, status 1); it is a usage error that leaves the files alone."""
    keep = tmp_path / "kept"
    if kind == "file":
        keep.write_text("mine")
    else:
        keep.mkdir()
        (keep / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as caught:
        cli.main(["demo", "--boards", "1", "--plain", "--keep", str(keep)])
    assert caught.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an empty directory" in err
    assert (keep.read_text() if kind == "file" else (keep / "notes.txt").read_text()) == "mine"
    assert kind == "file" or sorted(p.name for p in keep.iterdir()) == ["notes.txt"]


def test_run_json_reports_a_profile_error_as_an_error_event(line, capsys):
    """As rpiboot --json: a run that cannot start still says why on stdout, as an event."""
    profile = write_profile(line / "p.toml", '[boot]\ndirectory = "gadget"\n[os]\nimgae = '
                                             '"os.img"\n')
    assert cli.main(["run", str(profile), "--json", "--ledger", str(line / "l.sqlite")]) == \
        ExitCode.PROFILE
    events = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert [(e["event"], e["code"], e["exit_code"]) for e in events] == \
        [("error", "profile_invalid", 3)]
    assert validate(events[0]) == [] and "imgae" in events[0]["message"]


@pytest.mark.parametrize("argv, message", [
    (["run", "p.toml", "--count", "x"], "--count: expected a whole number, not 'x'"),
    (["run", "p.toml", "--gather", "soon"], "--gather: expected a number, not 'soon'"),
    (["demo", "--boards", "1.5"], "--boards: expected a whole number, not '1.5'")])
def test_a_value_that_is_not_a_number_is_a_plain_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert message in err and "_positive" not in err and err.count("\n") == 1
