"""Device selection (-p, -N, -i) and faults: unplugging, refusing open(), stalls, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from umockdev_support import Runner, assert_booted, assert_untouched

pytestmark = pytest.mark.umockdev

EXIT_TRANSFER, EXIT_REFUSED, EXIT_ACCESS = 5, 6, 7


def test_select_by_usb_path(run_virtual: Runner, boot_dir: Path,
                            request: pytest.FixtureRequest, libusb: str) -> None:
    run = run_virtual([{"chip": "2711", "port": "1-3"}, {"chip": "2712", "port": "1-1.4"}],
                      "-d", str(boot_dir), "-p", "1-1.4")
    assert run.returncode == 0, run.describe()
    assert_booted(run, "1-1.4", "2712", boot_dir=boot_dir)
    assert_untouched(run, "1-3")


def test_select_by_port_number(run_virtual: Runner, boot_dir: Path,
                               request: pytest.FixtureRequest, libusb: str) -> None:
    run = run_virtual([{"chip": "2711", "port": "1-3"}, {"chip": "2711", "port": "1-2.4"}],
                      "-d", str(boot_dir), "-4")
    assert run.returncode == 0, run.describe()
    assert_booted(run, "1-2.4", "2711", boot_dir=boot_dir)
    assert_untouched(run, "1-3")


def test_select_by_serial(run_virtual: Runner, boot_dir: Path,
                          request: pytest.FixtureRequest, libusb: str) -> None:
    boards = [{"chip": "2711", "port": "1-3", "serial": "aaaa0001", "rom_serial": "aaaa0001"},
              {"chip": "2711", "port": "1-4", "serial": "bbbb0002", "rom_serial": "bbbb0002"}]
    run = run_virtual(boards, "-d", str(boot_dir), "-i", "bbbb0002")
    assert run.returncode == 0, run.describe()
    assert_booted(run, "1-4", "2711", boot_dir=boot_dir)
    assert_untouched(run, "1-3")


def test_unplugged_during_second_stage_transfer(run_virtual: Runner, boot_dir: Path) -> None:
    run = run_virtual([{"chip": "2711", "port": "1-3", "unplug_after": 20_000}],
                      "-d", str(boot_dir))
    assert run.returncode == EXIT_TRANSFER, run.describe()
    pi = run.pi("1-3")
    assert pi["second_stage"] is None and pi["stage_index"] == 0


def test_unplugged_during_file_transfer(run_virtual: Runner, boot_dir: Path,
                                        request: pytest.FixtureRequest, libusb: str) -> None:
    run = run_virtual([{"chip": "2711", "port": "1-3", "unplug_after": 500_000}],
                      "-d", str(boot_dir))
    assert run.returncode == EXIT_TRANSFER, run.describe()
    pi = run.pi("1-3")
    assert pi["stage_index"] == 1 and "boot.img" not in pi["files"]
    assert "config.txt" in pi["files"]


def test_open_permission_denied(run_virtual: Runner, boot_dir: Path) -> None:
    """EACCES from open(): the node has mode 0 and the runner drops CAP_DAC_OVERRIDE from the
    command when it runs as root."""
    run = run_virtual([{"chip": "2711", "port": "1-3", "open_error": "access"}],
                      "-d", str(boot_dir), "--timeout", "3")
    assert run.returncode == EXIT_ACCESS, run.describe()
    assert_untouched(run, "1-3")


def test_open_io_error(run_virtual: Runner, boot_dir: Path) -> None:
    run = run_virtual([{"chip": "2711", "port": "1-3", "open_error": "io"}],
                      "-d", str(boot_dir), "--timeout", "3")
    assert run.returncode == EXIT_TRANSFER, run.describe()
    assert_untouched(run, "1-3")


def test_rom_refuses_second_stage(run_virtual: Runner, boot_dir: Path) -> None:
    run = run_virtual([{"chip": "2712", "port": "1-3", "return_code": 1}],
                      "-d", str(boot_dir))
    assert run.returncode == EXIT_REFUSED, run.describe()


def test_file_server_stops_answering(run_virtual: Runner, boot_dir: Path,
                                     request: pytest.FixtureRequest, libusb: str) -> None:
    """The request read is never answered: libusb times out, discards the URB, and the CLI
    gives up after --stall-timeout."""
    run = run_virtual([{"chip": "2711", "port": "1-3", "stall_at": 2}],
                      "-d", str(boot_dir), "--stall-timeout", "1.5")
    assert run.returncode == EXIT_TRANSFER, run.describe()
    pi = run.pi("1-3")
    assert pi["stage_index"] == 1 and list(pi["files"]) == ["config.txt"]
