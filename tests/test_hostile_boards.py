"""Issue 12, "Hostile and faulty boards": each campaign finding as a test against the virtual
board, in-process (tests/umockdev/test_hostile_boards_libusb.py runs some behind real libusb)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rpiboot.simulator import RomStage, ServerStage, VirtualPi, typical_pi
from rpiboot.simulator.script import done, load

from engine_support import fast_options, run_boot, run_cli

FAST_CLI = ["--timeout", "3", "--run-timeout", "20", "--stall-timeout", "0.3",
            "--retry-delay", "0.01", "--reenumerate-timeout", "1"]


def _session(run, port: str = "1-1"):  # type: ignore[no-untyped-def]
    return next(s for s in run.result.sessions if s.port == port)


def test_short_rom_return_code_is_a_protocol_error(boot_dir: Path) -> None:
    pi = VirtualPi("2711", stages=[RomStage(serial_index=3, return_code_size=2)])
    run = run_boot([pi], fast_options(boot_dir, retries=1))
    assert run.exit_code == 5
    session = _session(run)
    assert session.error is not None and session.error.code == "protocol"
    assert "2-byte return code" in str(session.error)
    assert "internal error" not in str(session.error)


def test_second_stage_of_2_gib_is_a_boot_directory_error(boot_dir: Path) -> None:
    huge = boot_dir / "2711" / "bootcode4.bin"
    with open(huge, "r+b") as stream:
        stream.truncate(2 ** 31)  # sparse: nothing is sent before the size is refused
    run = run_boot([typical_pi("2711")], fast_options(boot_dir))
    assert run.exit_code == 3
    session = _session(run)
    assert session.error is not None and session.error.code == "boot_directory"
    assert "2 GiB" in str(session.error)
    assert run.bus.pis[0].received == []


@pytest.mark.parametrize("name", ["config.txt/", "config.txt/.", "2711/config.txt/",
                                  "start4.elf/.", "/."[1:]])
def test_names_ending_in_a_slash_or_slash_dot_are_missing(boot_dir: Path, name: str) -> None:
    pi = VirtualPi("2711", stages=[RomStage(serial_index=3),
                                   ServerStage(load(name) + load("config.txt") + [done()])])
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert pi.sizes()[name] == 0
    assert list(pi.files()) == ["config.txt"]
    assert [e.data["name"] for e in run.events.of("file_missing")] == [name]


def test_json_device_failures_also_go_to_stderr(boot_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pi = VirtualPi("2712", stages=[RomStage(return_code=1)])
    code, out, err = run_cli(monkeypatch, capsys, [pi], ["-d", str(boot_dir), "--json"]
                             + FAST_CLI)
    assert code == 6
    assert all(json.loads(line) for line in out.splitlines())
    assert "rpiboot: error: 1-1: device refused the second stage" in err


def _board(port: int, mac: str) -> VirtualPi:
    return typical_pi("2711", (port,), serial="10000000d3adb33f", files=("config.txt",),
                      meta={"MAC_ADDR": mac})


def test_impostor_serial_never_overwrites_the_first_record(
        boot_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    meta = tmp_path / "meta"
    genuine = _board(1, "d8:3a:dd:00:00:01")
    code, _, _ = run_cli(monkeypatch, capsys, [genuine],
                         ["-d", str(boot_dir), "-j", str(meta), "--json"] + FAST_CLI)
    assert code == 0
    impostor = _board(2, "66:66:66:66:66:66")
    code, out, err = run_cli(monkeypatch, capsys, [impostor],
                             ["-d", str(boot_dir), "-j", str(meta), "--json"] + FAST_CLI)
    assert code == 9
    assert sorted(p.name for p in meta.iterdir()) == ["10000000d3adb33f-2.json",
                                                      "10000000d3adb33f.json"]
    assert json.loads((meta / "10000000d3adb33f.json").read_text())["MAC_ADDR"].endswith("01")
    events = [json.loads(line) for line in out.splitlines()]
    conflict = [e for e in events if e["event"] == "metadata_conflict"]
    assert conflict and conflict[0]["existing"].endswith("10000000d3adb33f.json")
    assert events[-1]["event"] == "summary" and events[-1]["exit_code"] == 9
    assert events[-1]["devices"][0]["warning"] == "duplicate_serial"
    assert "rpiboot: warning: 1-2:" in err


def test_two_boards_with_one_serial_in_one_run_keep_both_records(boot_dir: Path,
                                                                 tmp_path: Path) -> None:
    pis = [_board(1, "d8:3a:dd:00:00:01"), _board(2, "66:66:66:66:66:66")]
    meta = tmp_path / "meta"
    run = run_boot(pis, fast_options(boot_dir, metadata=True, metadata_dir=meta))
    assert run.exit_code == 9
    macs = sorted(json.loads(p.read_text())["MAC_ADDR"] for p in meta.iterdir())
    assert macs == ["66:66:66:66:66:66", "d8:3a:dd:00:00:01"]
    assert len(run.events.of("metadata_conflict")) == 1


def test_metadata_files_honour_the_umask(boot_dir: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        run = run_boot([_board(1, "d8:3a:dd:00:00:01")],
                       fast_options(boot_dir, metadata=True, metadata_dir=tmp_path))
    finally:
        os.umask(old)
    assert run.exit_code == 0
    assert (tmp_path / "10000000d3adb33f.json").stat().st_mode & 0o777 == 0o644


def test_serial_starting_with_a_dash_gives_a_safe_file_name(boot_dir: Path,
                                                           tmp_path: Path) -> None:
    pis = [typical_pi("2711", (1,), serial="-rf", files=(), meta={"MAC_ADDR": "x"}),
           typical_pi("2712", (2,), serial="CON", files=(), meta={"MAC_ADDR": "y"})]
    meta = tmp_path / "meta"
    run = run_boot(pis, fast_options(boot_dir, metadata=True, metadata_dir=meta))
    assert run.exit_code == 0
    names = [p.name for p in meta.iterdir()]
    assert len(names) == 2
    assert not any(name.startswith("-") or name.split(".")[0].upper() == "CON"
                   for name in names)


# --- re-enumeration glitches and false success ---------------------------------------------------

def test_board_that_glitches_during_the_second_stage_is_retried(boot_dir: Path) -> None:
    pi = typical_pi("2711", glitch_after_bytes=3000)
    run = run_boot([pi], fast_options(boot_dir, retries=3))
    assert run.exit_code == 0, [e.data for e in run.events.of("device_failed")]
    retries = run.events.of("device_retrying")
    assert len(retries) == 1 and retries[0].data["code"] == "device_gone"
    assert retries[0].data["attempt"] == 2 and retries[0].data["attempts"] == 3
    assert pi.files() and pi.violations == []
    assert _session(run).summary()["stages"] == ["rom", "rom", "server"]


def test_glitches_are_bounded_by_retries(boot_dir: Path) -> None:
    pi = typical_pi("2711", glitch_after_bytes=3000, glitch_count=10)
    run = run_boot([pi], fast_options(boot_dir, retries=3))
    assert run.exit_code == 5
    assert len(run.events.of("device_retrying")) == 2
    assert _session(run).error.code == "device_gone"


def test_board_that_leaves_and_does_not_come_back_fails_after_the_wait(boot_dir: Path) -> None:
    pi = typical_pi("2711", unplug_after_bytes=3000)
    run = run_boot([pi], fast_options(boot_dir, retries=3, reenumerate_timeout=0.3))
    assert run.exit_code == 5
    error = _session(run).error
    assert error.code == "device_gone" and "did not come back within 0.3 s" in str(error)


def test_file_server_that_glitches_before_asking_is_not_a_success(boot_dir: Path) -> None:
    real = load("config.txt") + load("start4.elf") + [done()]
    pi = VirtualPi("2711", stages=[RomStage(serial_index=3),
                                   ServerStage([], leave_at_request=0),
                                   ServerStage(real)])
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert sorted(pi.files()) == ["config.txt", "start4.elf"]
    assert _session(run).summary()["files"] == 2


def test_file_server_that_leaves_before_asking_and_never_returns_fails(boot_dir: Path) -> None:
    pi = VirtualPi("2711", stages=[RomStage(serial_index=3), ServerStage([], leave_at_request=0)])
    run = run_boot([pi], fast_options(boot_dir, reenumerate_timeout=0.3))
    assert run.exit_code == 5
    assert _session(run).error.code == "device_gone"
    assert run.events.of("stage_done") == []
