"""Firmware roles through rpiboot-virtual and real libusb: the report says what a role expected
and never received, and warns when a board ignored files the boot directory offers."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from umockdev_support import rpiboot_command


def _recovery_dir(root: Path, with_image: bool = True) -> Path:
    root.mkdir()
    image = b"\x55" * 4096
    files = {"bootcode4.bin": b"recovery.bin " * 40, "config.txt": b"uart_2ndstage=1\n",
             "pieeprom.sig": f"{hashlib.sha256(image).hexdigest()}\nts: 1700000000\n".encode(),
             "boot.conf": b"[all]\nBOOT_UART=1\n", "README.md": b"notes\n"}
    if with_image:
        files["pieeprom.bin"] = image
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _run(tmp_path: Path, pi: str, directory: Path) -> tuple[subprocess.CompletedProcess[str],
                                                             dict[str, Any]]:
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "rpiboot.simulator.umockdev_cli", "--pi", pi,
                           "--report", str(report), "--command-timeout", "30", "--",
                           *rpiboot_command(), "--libusb", "system", "-d", str(directory)],
                          capture_output=True, text=True, timeout=60)
    assert report.exists(), done.stderr
    return done, json.loads(report.read_text())


def test_recovery_role_flashes_and_reports(umockdev_tools: tuple[str, str],
                                           tmp_path: Path) -> None:
    directory = _recovery_dir(tmp_path / "recovery")
    done, report = _run(tmp_path, "2711:1-3,role=recovery", directory)
    assert done.returncode == 0, done.stderr
    pi = report["pis"][0]
    assert list(pi["files"]) == ["config.txt", "pieeprom.sig", "pieeprom.bin"]
    assert "*EEPROM_UPDATE*success" in pi["metadata_acked"]
    assert pi["halted"] and pi["roles"]["stages"][0]["never_received"] == []
    assert pi["roles"]["eeprom_sha256"] == hashlib.sha256(b"\x55" * 4096).hexdigest()
    assert report["warnings"] == []


def test_missing_image_is_named_in_the_report(umockdev_tools: tuple[str, str],
                                              tmp_path: Path) -> None:
    directory = _recovery_dir(tmp_path / "recovery", with_image=False)
    done, report = _run(tmp_path, "2711:1-3,role=recovery", directory)
    assert done.returncode == 0, done.stderr  # as on hardware: recovery.bin signals success
    pi = report["pis"][0]
    assert pi["roles"]["stages"][0]["never_received"] == ["pieeprom.bin"]
    assert "*EEPROM_UPDATE*skipped" in pi["metadata_acked"]


def test_default_board_ignoring_the_eeprom_files_is_warned(umockdev_tools: tuple[str, str],
                                                          tmp_path: Path) -> None:
    directory = _recovery_dir(tmp_path / "recovery")
    done, report = _run(tmp_path, "2711:1-3", directory)
    assert done.returncode == 0, done.stderr
    (warning,) = report["warnings"]
    assert "1-3" in warning and "pieeprom.bin, pieeprom.sig" in warning, warning
    assert "boot.conf" not in warning and "README" not in warning
    assert f"warning: {warning}" in done.stderr


def test_eeprom_reentry_and_gadget_disk(umockdev_tools: tuple[str, str],
                                        tmp_path: Path) -> None:
    """EEPROM + re-entry + write, as the provisioning pipeline rehearses it."""
    import shlex

    recovery = _recovery_dir(tmp_path / "recovery")
    (recovery / "config.txt").write_bytes(b"recovery_reboot=1\n")
    gadget = tmp_path / "msg"
    gadget.mkdir()
    for name, data in {"bootcode4.bin": b"bootloader " * 50, "config.txt": b"boot_ramdisk=1\n",
                       "boot.img": b"ramdisk " * 400}.items():
        (gadget / name).write_bytes(data)
    disk = tmp_path / "emmc.img"
    rpiboot = [*rpiboot_command(), "--libusb", "system"]
    script = (f"{shlex.join([*rpiboot, '-d', str(recovery)])} && "
              f"{shlex.join([*rpiboot, '-d', str(gadget), '--follow', '5'])} && "
              "printf image | dd of=/dev/sda conv=notrunc status=none")
    report_path = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "rpiboot.simulator.umockdev_cli", "--pi",
                           f"2711:1-3,role=recovery+mass-storage-gadget,disk=1M:{disk}",
                           "--report", str(report_path), "--command-timeout", "40", "--",
                           "sh", "-c", script], capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sda" in done.stdout + done.stderr
    pi = json.loads(report_path.read_text())["pis"][0]
    assert [s["never_received"] for s in pi["roles"]["stages"]] == [[], []]
    assert pi["stage_index"] == 4 and not pi["halted"]
    assert disk.read_bytes()[:5] == b"image" and disk.stat().st_size == 1 << 20
    assert pi["disks"][0]["sha256"] == hashlib.sha256(disk.read_bytes()).hexdigest()
