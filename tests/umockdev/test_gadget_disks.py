"""The mass-storage gadget's disks behind umockdev: /dev/sdX under the wrapper is the disk's
backing file, rpiboot --follow names it, the report gives its size and SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from umockdev_support import rpiboot_command

WRITER = ("import os, sys; fd = os.open('/dev/sda', os.O_RDWR); "
          "os.pwrite(fd, b'written under umockdev', 1024); "
          "print('lseek', os.lseek(fd, 0, os.SEEK_END)); os.close(fd); "
          "print('sysfs', open('/sys/block/sda/size').read().strip(), "
          "open('/sys/block/sda/device/vendor').read().rstrip('\\n'), sep='|')")


def run_shell(tmp_path: Path, boards: list[dict[str, Any]], script: str,
              timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    scenario, report = tmp_path / "scenario.json", tmp_path / "report.json"
    scenario.write_text(json.dumps({"pis": boards}))
    done = subprocess.run([sys.executable, "-m", "rpiboot.simulator.umockdev_cli",
                           "--scenario", str(scenario), "--report", str(report),
                           "--command-timeout", str(timeout), "--", "sh", "-c", script],
                          capture_output=True, text=True, timeout=timeout + 30)
    assert report.exists(), f"no report\n{done.stdout}\n{done.stderr}"
    result = json.loads(report.read_text())
    assert not result["bridge"]["errors"], result["bridge"]
    return done, result


def test_command_writes_the_disk_through_dev_sda(umockdev_tools: tuple[str, str],
                                                 tmp_path: Path, boot_dir: Path) -> None:
    backing = tmp_path / "emmc.img"
    rpiboot = shlex.join([*rpiboot_command(), "--libusb", "system", "-d", str(boot_dir),
                          "--follow", "5"])
    script = f"{rpiboot} && {shlex.quote(sys.executable)} -c {shlex.quote(WRITER)}"
    done, report = run_shell(tmp_path, [{"chip": "2711", "port": "1-3",
                                         "disks": [{"size": "1M", "file": str(backing)}]}],
                             script)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "sda" in output and "0a5c:0104" in output, output  # --follow named the disk
    assert "lseek 1048576" in done.stdout and "sysfs|2048|mmcblk0 " in done.stdout, output
    expected = bytearray(1 << 20)
    expected[1024:1024 + 22] = b"written under umockdev"
    assert backing.read_bytes() == expected
    (disk,) = report["pis"][0]["disks"]
    assert disk == {"file": str(backing), "size": 1 << 20, "read_only": False,
                    "sha256": hashlib.sha256(expected).hexdigest()}
    assert not os.stat(backing).st_mode & stat.S_ISVTX  # umockdev's block marker removed


def test_two_disks_from_the_pi_option(umockdev_tools: tuple[str, str], tmp_path: Path,
                                      boot_dir: Path) -> None:
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    command = [sys.executable, "-m", "rpiboot.simulator.umockdev_cli", "--report",
               str(tmp_path / "r.json"), "--pi", f"2712:1-1.4,disk=64K:{first},disk=2M:{second}",
               "--", *rpiboot_command(), "--libusb", "system", "-d", str(boot_dir),
               "--follow", "5", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    followed = [json.loads(line) for line in done.stdout.splitlines()
                if '"device_followed"' in line]
    assert followed and followed[0]["block_devices"] == ["sda", "sdb"], done.stdout
    disks = json.loads((tmp_path / "r.json").read_text())["pis"][0]["disks"]
    assert [(d["file"], d["size"]) for d in disks] == [(str(first), 65536),
                                                        (str(second), 2 << 20)]
    assert first.stat().st_size == 65536
