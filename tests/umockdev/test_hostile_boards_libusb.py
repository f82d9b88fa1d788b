"""Issue 12, "Hostile and faulty boards", behind real libusb (umockdev): re-enumeration glitches
retried, no false success, short ROM return codes, names ending in '/', impostor serials with
-j DIR, metadata file modes, --json failures on stderr, a second stage of 2 GiB.
The same cases run in-process in tests/test_hostile_boards.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from umockdev_support import Runner, assert_booted, blob

pytestmark = pytest.mark.umockdev

SYSTEM_ONLY = pytest.mark.parametrize("libusb", ["system"], indirect=True)


def test_glitches_are_retried_and_success_means_served(run_virtual: Runner, boot_dir: Path,
                                                        libusb: str) -> None:
    boards = [{"chip": "2711", "port": "1-1", "glitch_after": 20_000},
              {"chip": "2711", "port": "1-2", "server_glitch": True},
              {"chip": "2712", "port": "1-3", "files": ["config.txt/", "boot.img/.",
                                                        "config.txt"]}]
    run = run_virtual(boards, "-d", str(boot_dir), "--json", "--retries", "3")
    assert run.returncode == 0, run.describe()
    assert_booted(run, "1-1", "2711", boot_dir=boot_dir)
    assert_booted(run, "1-2", "2711", boot_dir=boot_dir)
    assert run.pi("1-3")["files"].keys() == {"config.txt"}
    assert run.pi("1-3")["sizes"]["config.txt/"] == 0
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    retried = [e["port"] for e in events if e["event"] == "device_retrying"]
    assert retried == ["1-1"], run.describe()
    summary = next(e for e in events if e["event"] == "summary")
    assert {d["port"]: d["files"] for d in summary["devices"]} == {"1-1": 2, "1-2": 2, "1-3": 1}


@SYSTEM_ONLY
def test_impostor_serial_keeps_both_records_readable(run_virtual: Runner, boot_dir: Path,
                                                     tmp_path: Path, libusb: str) -> None:
    meta = tmp_path / "meta" / "new"
    boards = [{"chip": "2711", "port": "1-1", "serial": "10000000d3adb33f",
               "meta": {"MAC_ADDR": "d8:3a:dd:00:00:01"}},
              {"chip": "2711", "port": "1-2", "serial": "10000000d3adb33f",
               "meta": {"MAC_ADDR": "66:66:66:66:66:66"}},
              {"chip": "2712", "port": "1-3", "serial": "-rf", "meta": {"MAC_ADDR": "x"}}]
    run = run_virtual(boards, "-d", str(boot_dir), "-j", str(meta))
    assert run.returncode == 9, run.describe()
    names = sorted(p.name for p in meta.iterdir())
    assert names[:2] == ["10000000d3adb33f-2.json", "10000000d3adb33f.json"]
    assert not names[2].startswith("-")
    macs = sorted(json.loads((meta / name).read_text())["MAC_ADDR"] for name in names[:2])
    assert macs == ["66:66:66:66:66:66", "d8:3a:dd:00:00:01"]
    assert all((meta / name).stat().st_mode & 0o777 == 0o644 for name in names)
    assert "rpiboot: warning:" in run.stderr


@SYSTEM_ONLY
def test_faulty_roms_fail_cleanly_and_json_failures_reach_stderr(run_virtual: Runner,
                                                                boot_dir: Path,
                                                                libusb: str) -> None:
    boards = [{"chip": "2711", "port": "1-1", "return_code_size": 2},
              {"chip": "2712", "port": "1-2", "return_code": 1}]
    run = run_virtual(boards, "-d", str(boot_dir), "--json", "--retries", "1")
    assert run.returncode == 6, run.describe()  # refused (6) outranks the protocol error (5)
    assert "rpiboot: error: 1-1: the boot ROM answered with a 2-byte return code" in run.stderr
    assert "rpiboot: error: 1-2: device refused the second stage" in run.stderr
    assert "internal error" not in run.stdout + run.stderr


@SYSTEM_ONLY
def test_second_stage_of_2_gib_is_a_boot_directory_error(run_virtual: Runner, boot_dir: Path,
                                                         libusb: str) -> None:
    with open(boot_dir / "bootcode4.bin", "r+b") as stream:
        stream.truncate(2 ** 31)
    run = run_virtual([{"chip": "2711", "port": "1-1"}], "-d", str(boot_dir))
    assert run.returncode == 3, run.describe()
    assert "2 GiB" in run.stderr and "internal error" not in run.stderr
    assert run.pi("1-1")["second_stage"] is None
    assert blob("config.txt")  # the rest of the directory is untouched


@SYSTEM_ONLY
def test_list_shows_the_bcm2711_rom_serial_through_libusb(run_virtual: Runner,
                                                          libusb: str) -> None:
    run = run_virtual([{"chip": "2711", "port": "1-3", "rom_serial": "10000000c0ffee11"},
                       {"chip": "2712", "port": "1-4"}], "--list")
    assert run.returncode == 0, run.describe()
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines()[1:]}
    assert rows["1-3"][2] == "rom" and rows["1-3"][-1] == "10000000c0ffee11", run.stdout
    assert rows["1-4"][-1] == "-"
    assert all(pi["received"] == [] for pi in run.pis)
