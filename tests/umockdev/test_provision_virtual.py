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

from rpiboot.provision.event_schema import validate

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
    pis = [{"chip": "2711", "port": f"1-{n}", "serial": f"5eed000{n}",
            "disks": [{"size": "8M", "file": str(disk)}]} for n, disk in enumerate(disks, start=1)]
    ledger = tmp_path / "ledger.sqlite"
    done, report = _run_behind_umockdev(tmp_path, profile, pis, 4, ledger, "--json")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [e["exit_code"] for e in events if e["event"] == "summary"] == [0], output
    assert [problem for e in events for problem in validate(e)] == []
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
    assert all(pi["violations"] == [] for pi in report["pis"])


def test_eeprom_reentry_write_and_customise(umockdev_tools: tuple[str, str],
                                            tmp_path: Path) -> None:
    """One board whose firmware acts like recovery.bin then the mass-storage gadget: the
    EEPROM built from boot.conf, the re-entry at the same port, the image written, and the
    customisation read back from the disk with mtools."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "provision"))
    from customise_support import pi_disk
    from provision_support import make_boot_dirs
    gadget, _recovery = make_boot_dirs(tmp_path)
    (gadget / "config.txt").write_bytes(b"[all]\nboot_ramdisk=1\n")
    disk = pi_disk(tmp_path, name="os.img")
    profile = tmp_path / "line.toml"
    profile.write_text('[boot]\ndirectory = "gadget"\n[eeprom]\nrecovery = "recovery"\n'
                       'boot_conf = "boot.conf"\n[os]\nimage = "os.img"\n[customise]\n'
                       'hostname = "cm4-{serial}"\ninit = "cloud-init"\n')
    target = tmp_path / "emmc.img"
    pis = [{"chip": "2711", "port": "1-3", "serial": "c0ffee01",
            "role": ["recovery", "mass-storage-gadget"],
            "disks": [{"size": "64M", "file": str(target)}]}]
    ledger = tmp_path / "ledger.sqlite"
    done, report = _run_behind_umockdev(tmp_path, profile, pis, 1, ledger, "--plain")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("board arrived") == 1, done.stdout  # the re-entry is no new board
    user_data = subprocess.run(["mtype", "-i", f"{target}@@{disk.offset}", "::user-data"],
                               check=True, capture_output=True).stdout.decode()
    assert 'hostname: "cm4-c0ffee01"' in user_data
    records = json.loads(subprocess.run([*provision_command(), "export", "--ledger",
                                         str(ledger)], capture_output=True, text=True,
                                        check=True).stdout)
    (record,) = records
    assert record["result"] == "ok" and record["otp"]["EEPROM_UPDATE"] == "success"
    (pi,) = report["pis"]
    assert pi["violations"] == []
    assert pi["roles"]["eeprom_sha256"] == record["eeprom_sha256"], pi["roles"]


def _run_behind_umockdev(tmp_path: Path, profile: Path, pis: list[dict], count: int,
                         ledger: Path, *run_options: str
                         ) -> tuple[subprocess.CompletedProcess, dict]:
    """`rpiboot-provision run` (``--json`` unless ``run_options`` say otherwise) under
    rpiboot-virtual with these boards; the run's result and the virtual boards' report."""
    (tmp_path / "scenario.json").write_text(json.dumps({"pis": pis}))
    command = [sys.executable, "-m", "rpiboot.simulator.umockdev_cli", "--scenario",
               str(tmp_path / "scenario.json"), "--report", str(tmp_path / "report.json"),
               "--command-timeout", "90", "--", *provision_command(), "run", str(profile),
               "--count", str(count), "--ledger", str(ledger), "--timeout", "60",
               "--libusb", "system", *(run_options or ("--json", "--gather", "0.5"))]
    env = {key: value for key, value in os.environ.items() if key != "RPIBOOT_LIBUSB"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env)
    return done, json.loads((tmp_path / "report.json").read_text())


def test_bad_input_through_the_installed_command(umockdev_tools: tuple[str, str],
                                                 tmp_path: Path, boot_dir: Path) -> None:
    """Issue 9's bad inputs end to end with real libusb: a disk smaller than the image fails
    that board only (its disk untouched), a truncated image and a profile typo stop the run
    before any board is touched; every one a one-line error and its documented status."""
    image = b"".join(blob(f"os-{n}", 64 * 1024) + bytes(64 * 1024) for n in range(24))
    (tmp_path / "os.img.xz").write_bytes(lzma.compress(image, preset=1))
    profile = tmp_path / "line.toml"
    profile.write_text(f'[boot]\ndirectory = "{boot_dir}"\n[os]\nimage = "os.img.xz"\n')
    small, big = tmp_path / "small.img", tmp_path / "big.img"
    pis = [{"chip": "2711", "port": "1-1", "serial": "5ma11001",
            "disks": [{"size": "2M", "file": str(small)}]},
           {"chip": "2712", "port": "1-2", "serial": "b1900002",
            "disks": [{"size": "8M", "file": str(big)}]}]
    ledger = tmp_path / "ledger.sqlite"
    done, _report = _run_behind_umockdev(tmp_path, profile, pis, 2, ledger)
    assert done.returncode == 5, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [problem for e in events for problem in validate(e)] == []
    assert [(e["port"], e["code"]) for e in events if e["event"] == "board_failed"] == \
        [("1-1", "image_too_large")]
    assert small.read_bytes() == bytes(2 * MiB)
    assert big.read_bytes()[:len(image)] == image

    for name, text, status in [
            ("typo.toml", f'[boot]\ndirectory = "{boot_dir}"\n[os]\nimgae = "os.img.xz"\n', 3),
            ("cut.toml", f'[boot]\ndirectory = "{boot_dir}"\n[os]\nimage = "cut.img.xz"\n', 3)]:
        packed = (tmp_path / "os.img.xz").read_bytes()
        (tmp_path / "cut.img.xz").write_bytes(packed[:len(packed) // 2])
        (tmp_path / name).write_text(text)
        small.write_bytes(bytes(2 * MiB))
        big.write_bytes(bytes(8 * MiB))
        done, report = _run_behind_umockdev(tmp_path, tmp_path / name, pis, 2, ledger)
        assert done.returncode == status, done.stdout + done.stderr
        errors = [e for e in map(json.loads, done.stdout.splitlines()) if e["event"] == "error"]
        assert len(errors) == 1 and errors[0]["exit_code"] == status, done.stdout
        assert all(pi["received"] == [] for pi in report["pis"]), report
        assert small.read_bytes() == bytes(2 * MiB) and big.read_bytes() == bytes(8 * MiB)
