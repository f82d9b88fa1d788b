"""The two ways a usbboot checkout is commonly broken (issue 12 "First run", issue 11 §4): symbolic
links into the rpi-eeprom submodule left dangling (cloned without --recurse-submodules), and
symbolic links checked out as small text files. Both are named, and never sent to a board."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rpiboot.errors import BootDirectoryError
from rpiboot.file_source import check_boot_directory, link_text
from rpiboot.simulator import typical_pi

from engine_support import can_create_symlinks, content, fast_options, run_boot, write

LINK = "../firmware/2711/recovery.bin"  # what usbboot's recovery/bootcode4.bin points to (29 bytes)


def shallow_clone(root: Path) -> Path:
    """usbboot's recovery/ as `git clone --depth=1` leaves it: the links are there, the
    rpi-eeprom submodule they end in is an empty directory."""
    (root / "rpi-eeprom").mkdir(parents=True)
    firmware = root / "firmware" / "2711"
    firmware.mkdir(parents=True)
    os.symlink("../../rpi-eeprom/firmware-2711/latest/recovery.bin", firmware / "recovery.bin")
    recovery = root / "recovery"
    recovery.mkdir()
    os.symlink(LINK, recovery / "bootcode4.bin")
    write(recovery / "config.txt", b"uart_2ndstage=1\n")
    return recovery


def test_dangling_link_into_the_submodule_is_named(tmp_path: Path) -> None:
    if not can_create_symlinks(tmp_path):
        pytest.skip("no symbolic links here")
    recovery = shallow_clone(tmp_path / "usbboot")
    with pytest.raises(BootDirectoryError) as caught:
        check_boot_directory(recovery)
    message = str(caught.value)
    assert "bootcode4.bin" in message and "rpi-eeprom" in message
    assert "--recurse-submodules" in message and "No 'bootcode' files" not in message
    assert "\n" not in message


def test_dangling_link_elsewhere_says_the_file_is_missing(tmp_path: Path) -> None:
    if not can_create_symlinks(tmp_path):
        pytest.skip("no symbolic links here")
    directory = tmp_path / "boot"
    directory.mkdir()
    os.symlink("../nowhere/bootcode.bin", directory / "bootcode.bin")
    with pytest.raises(BootDirectoryError, match="broken symbolic link") as caught:
        check_boot_directory(directory)
    assert "rpi-eeprom submodule" not in str(caught.value)


def test_symlink_checked_out_as_text_is_refused_at_start(tmp_path: Path) -> None:
    recovery = tmp_path / "recovery"
    write(recovery / "bootcode4.bin", LINK.encode())  # 29 bytes, no newline, as git writes it
    write(recovery / "config.txt", b"uart_2ndstage=1\n")
    with pytest.raises(BootDirectoryError) as caught:
        check_boot_directory(recovery)
    message = str(caught.value)
    assert "29-byte" in message and LINK in message and "symbolic link" in message


def test_archive_checked_out_as_text_is_explained(tmp_path: Path) -> None:
    gadget = tmp_path / "mass-storage-gadget64"
    write(gadget / "bootfiles.bin", b"../firmware/bootfiles.bin")
    with pytest.raises(BootDirectoryError, match="symbolic link checked out"):
        check_boot_directory(gadget)


def test_link_text_file_is_never_sent_to_a_board(boot_dir: Path) -> None:
    write(boot_dir / "2711" / "pieeprom.bin", b"../firmware/2711/pieeprom.bin")
    pi = typical_pi("2711", (1,), files=("config.txt", "pieeprom.bin"))
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 3
    assert "pieeprom.bin" not in pi.files()
    assert all(b"../firmware" not in r.data for r in pi.received if r.data)
    [failed] = run.events.of("device_failed")
    assert "symbolic link checked out" in failed.data["message"]


@pytest.mark.parametrize("data", [b"uart_2ndstage=1\n", b"console=serial0 root=/dev/mmcblk0p2",
                                  b"../a b", b"\x00/x", content("config", 200), b"/" * 2000])
def test_ordinary_small_files_are_not_mistaken_for_links(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path / "f", data)
    assert link_text(path) is None


@pytest.mark.parametrize("data", [b"../firmware/2711/recovery.bin", b"./x", b"/usr/share/x.bin",
                                  b"../../rpi-eeprom/firmware-2712/latest/pieeprom-2026-05-26.bin"])
def test_link_texts_are_recognised(tmp_path: Path, data: bytes) -> None:
    assert link_text(write(tmp_path / "f", data)) == data.decode()
