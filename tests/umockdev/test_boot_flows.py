"""Whole boots through real libusb: every chip, bootfiles.bin, overlays, metadata, loop mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine_support import tar_bytes
from umockdev_support import (FILES, SECOND_STAGE, Runner, assert_booted, blob)

pytestmark = pytest.mark.umockdev

CHIP_CASES = [("2835", False), ("2837", False), ("2837", True), ("2711", False),
              ("2712", False)]


@pytest.mark.parametrize(("chip", "two_interfaces"), CHIP_CASES,
                         ids=["2835", "2837", "2837-two-interfaces", "2711", "2712"])
def test_chip_full_flow(run_virtual: Runner, boot_dir: Path, request: pytest.FixtureRequest,
                        libusb: str, chip: str, two_interfaces: bool) -> None:
    run = run_virtual([{"chip": chip, "port": "1-3", "two_interfaces": two_interfaces,
                        "files": FILES[chip]}], "-d", str(boot_dir))
    assert run.returncode == 0, run.describe()
    assert_booted(run, "1-3", chip, boot_dir=boot_dir)
    stages = [e for e in run.report["bridge"]["enumerations"] if e["port"] == "1-3"]
    assert [e["stage"] for e in stages] == [0, 1]
    assert stages[0]["devnum"] != stages[1]["devnum"]  # a new address at the same port path


def test_rom_stage_alone(run_virtual: Runner, boot_dir: Path) -> None:
    """What every libusb build can do under umockdev: the first enumeration, seen at start-up."""
    run = run_virtual([{"chip": "2711", "port": "1-3"}], "-d", str(boot_dir),
                      "--reenumerate-timeout", "0.5")
    pi = run.pi("1-3")
    assert pi["second_stage"]["size"] == len((boot_dir / "bootcode4.bin").read_bytes())
    assert [r["kind"] for r in pi["received"] if r["stage"] == 0] == [
        "boot_message", "second_stage", "return_code_read"]
    assert pi["violations"] == []




def test_bootfiles_bin(run_virtual: Runner, tmp_path: Path, request: pytest.FixtureRequest,
                       libusb: str) -> None:
    directory = tmp_path / "archive"
    (directory / "2712").mkdir(parents=True)
    members = {f"{prefix}/{name}": blob(f"{prefix}-{name}", 30_000 + len(name))
               for prefix in ("2711", "2712")
               for name in ("bootcode4.bin", "bootcode5.bin", "config.txt", "boot.img")}
    (directory / "bootfiles.bin").write_bytes(tar_bytes(members))
    beside = blob("beside-config", 333)
    (directory / "2712" / "config.txt").write_bytes(beside)  # DIR/<chip>/NAME beats the archive
    run = run_virtual([{"chip": "2711", "port": "1-3"}, {"chip": "2712", "port": "1-4"}],
                      "-d", str(directory))
    assert run.returncode == 0, run.describe()
    assert_booted(run, "1-3", "2711", second_stage=members["2711/bootcode4.bin"],
                  files={"config.txt": members["2711/config.txt"],
                         "boot.img": members["2711/boot.img"]})
    assert_booted(run, "1-4", "2712", second_stage=members["2712/bootcode5.bin"],
                  files={"config.txt": beside, "boot.img": members["2712/boot.img"]})


def test_overlay_by_usb_path(run_virtual: Runner, boot_dir: Path,
                             request: pytest.FixtureRequest, libusb: str) -> None:
    overlay = boot_dir / "1-1.4"
    overlay.mkdir()
    special = blob("overlay-config", 64)
    (overlay / "config.txt").write_bytes(special)
    (overlay / "bootcode4.bin").write_bytes(blob("never-from-overlay"))
    run = run_virtual([{"chip": "2711", "port": "1-1.4"}, {"chip": "2711", "port": "1-3"}],
                      "-d", str(boot_dir), "-o")
    assert run.returncode == 0, run.describe()
    boot_img = (boot_dir / "boot.img").read_bytes()
    assert_booted(run, "1-1.4", "2711", boot_dir=boot_dir,
                  files={"config.txt": special, "boot.img": boot_img})
    assert_booted(run, "1-3", "2711", boot_dir=boot_dir)


def test_metadata_json(run_virtual: Runner, boot_dir: Path, tmp_path: Path,
                       request: pytest.FixtureRequest, libusb: str) -> None:
    meta = {"MAC_ADDR": "d8:3a:dd:01:02:03", "BOOT_ROM": "0x1234", "USER_SERIAL_NUM": "42"}
    out = tmp_path / "metadata"
    out.mkdir()
    run = run_virtual([{"chip": "2711", "port": "1-3", "serial": "c0ffee01", "meta": meta}],
                      "-d", str(boot_dir), "-j", str(out))
    assert run.returncode == 0, run.describe()
    assert_booted(run, "1-3", "2711", boot_dir=boot_dir)
    assert json.loads((out / "c0ffee01.json").read_text()) == meta
    assert len(run.pi("1-3")["metadata_acked"]) == len(meta)


def test_loop_mode_late_arrivals(run_virtual: Runner, boot_dir: Path,
                                 request: pytest.FixtureRequest, libusb: str) -> None:
    boards = [{"chip": "2711", "port": "1-3"},
              {"chip": "2712", "port": "1-4", "arrive": 0.6},
              {"chip": "2835", "port": "1-1.2", "arrive": 1.2, "files": FILES["2835"]}]
    run = run_virtual(boards, "-d", str(boot_dir), "-l", "--timeout", "1.5")
    assert run.returncode == 0, run.describe()
    for board in boards:
        assert_booted(run, board["port"], board["chip"], boot_dir=boot_dir)


def test_several_boards_at_once(run_virtual: Runner, boot_dir: Path,
                                request: pytest.FixtureRequest, libusb: str) -> None:
    boards = [{"chip": chip, "port": port, "files": FILES[chip]} for chip, port in
              [("2835", "1-1"), ("2837", "1-2"), ("2711", "1-3"), ("2712", "2-1.4"),
               ("2711", "1-5.1.2")]]
    run = run_virtual(boards, "-d", str(boot_dir))
    assert run.returncode == 0, run.describe()
    for board in boards:
        assert_booted(run, board["port"], board["chip"], boot_dir=boot_dir)
    assert {SECOND_STAGE[b["chip"]] for b in boards} == {"bootcode.bin", "bootcode4.bin",
                                                          "bootcode5.bin"}


def test_same_port_replugged_in_loop_mode(run_virtual: Runner, boot_dir: Path,
                                          request: pytest.FixtureRequest, libusb: str) -> None:
    run = run_virtual([{"chip": "2711", "port": "1-3", "serial": "first001"},
                       {"chip": "2711", "port": "1-3", "serial": "second02", "arrive": 1.5}],
                      "-d", str(boot_dir), "-l", "--timeout", "2.5")
    assert run.returncode == 0, run.describe()
    assert all(pi["finished"] and not pi["violations"] for pi in run.pis), run.describe()
    devnums = [e["devnum"] for e in run.report["bridge"]["enumerations"]]
    assert len(devnums) == 4 and len(set(devnums)) == 4


def test_follow_to_the_gadget(run_virtual: Runner, boot_dir: Path,
                              request: pytest.FixtureRequest, libusb: str) -> None:
    run = run_virtual([{"chip": "2711", "port": "1-3", "gadget": True}],
                      "-d", str(boot_dir), "--follow", "3")
    assert run.returncode == 0, run.describe()
    assert_booted(run, "1-3", "2711", boot_dir=boot_dir)
    assert "0a5c:0104" in run.stdout + run.stderr


def test_list_without_booting(run_virtual: Runner) -> None:
    run = run_virtual([{"chip": "2711", "port": "1-3"}, {"chip": "2712", "port": "1-1.4"}],
                      "--list")
    assert run.returncode == 0, run.describe()
    lines = run.stdout.splitlines()
    assert any(line.split()[:3] == ["1-3", "BCM2711", "rom"] for line in lines), run.stdout
    assert any(line.split()[:3] == ["1-1.4", "BCM2712", "rom"] for line in lines), run.stdout
    assert all(pi["received"] == [] for pi in run.pis)
