"""rpiboot-provision through the installed command and real libusb, against virtual boards
behind umockdev whose mass-storage gadget disks are /dev/sdX backed by files."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

from umockdev_support import blob

MiB = 1 << 20


def provision_command() -> list[str]:
    beside = Path(sys.executable).with_name("rpiboot-provision")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "rpiboot.provision.cli"]


def test_four_boards_with_an_xz_image(umockdev_tools: tuple[str, str], tmp_path: Path,
                                      boot_dir: Path) -> None:
    image = b"".join(blob(f"os-{n}", 64 * 1024) + bytes(64 * 1024) for n in range(24))
    (tmp_path / "os.img.xz").write_bytes(lzma.compress(image, preset=1))
    profile = tmp_path / "line.toml"
    profile.write_text(f'[boot]\ndirectory = "{boot_dir}"\n[os]\nimage = "os.img.xz"\n')
    disks = [tmp_path / f"disk{n}.img" for n in range(1, 5)]
    scenario = {"pis": [{"chip": "2711", "port": f"1-{n}", "serial": f"5eed000{n}",
                         "disks": [{"size": "8M", "file": str(disk)}]}
                        for n, disk in enumerate(disks, start=1)]}
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    ledger = tmp_path / "ledger.sqlite"
    command = [sys.executable, "-m", "rpiboot.simulator.umockdev_cli", "--scenario",
               str(tmp_path / "scenario.json"), "--report", str(tmp_path / "report.json"),
               "--command-timeout", "90", "--", *provision_command(), "run", str(profile),
               "--count", "4", "--json", "--ledger", str(ledger), "--timeout", "60",
               "--libusb", "system"]
    env = {key: value for key, value in os.environ.items() if key != "RPIBOOT_LIBUSB"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [e["exit_code"] for e in events if e["event"] == "summary"] == [0], output
    writes = [e["details"] for e in events if e["event"] == "step_done" and e["step"] == "write"]
    assert len(writes) == 4 and {w["boards"] for w in writes} <= {1, 2, 3, 4}
    for disk in disks:
        data = disk.read_bytes()
        assert data[:len(image)] == image and not data[len(image):].strip(b"\0")
    exported = subprocess.run([*provision_command(), "export", "--ledger", str(ledger)],
                              capture_output=True, text=True, check=True).stdout
    records = json.loads(exported)
    digest = hashlib.sha256(image).hexdigest()
    assert sorted((r["serial"], r["result"], r["image_sha256"], r["verified"])
                  for r in records) == [(f"5eed000{n}", "ok", digest, True) for n in range(1, 5)]
    report = json.loads((tmp_path / "report.json").read_text())
    assert all(pi["violations"] == [] for pi in report["pis"])
