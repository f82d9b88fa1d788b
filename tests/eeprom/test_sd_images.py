"""make-pi4-rpiboot-gpio-sd and make-eeprom-update-sd, checked with independent tools:
the MBR parsed here byte by byte (and by file(1) where installed), the FAT32 partition by
fsck.fat -n and mtools (mdir / mtype / mcopy at the partition's offset)."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from rpiboot.eeprom import image as img
from rpiboot.eeprom.eeprom_update_sd_tool import main as update_sd_main
from rpiboot.eeprom.rpiboot_gpio_sd_tool import main as gpio_main
from rpiboot.eeprom.signing import (load_private_key, pubkey_bin, sig_file_signature,
                                    sign_bootcode_2712, key_signer, verify_pkcs1v15)

from eeprom_helpers import build_image, require_tool

MIB = 1024 * 1024
PART_OFFSET = 2048 * 512
PART_BYTES = 524288 * 512
RECOVERY = bytes(range(256)) * 200          # 51200 bytes standing in for recovery.bin


def extract(zip_path: Path, tmp: Path) -> tuple[Path, Path]:
    """Unzip the one disk image; copy its partition out sparsely for fsck.fat."""
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert len(names) == 1 and names[0].endswith(".img")
        disk = tmp / names[0]
        part = tmp / "partition.img"
        with archive.open(names[0]) as src, open(disk, "wb") as whole, open(part, "wb") as fat:
            offset = 0
            while chunk := src.read(MIB):
                for out, start in ((whole, 0), (fat, PART_OFFSET)):
                    if offset + len(chunk) > start and chunk.count(0) != len(chunk):
                        skip = max(0, start - offset)
                        out.seek(offset + skip - start)
                        out.write(chunk[skip:])
                offset += len(chunk)
            whole.truncate(offset)
            fat.truncate(PART_BYTES)
    return disk, part


def partition_of(disk: Path, tmp: Path) -> Path:
    """Copy the partition of a raw (sparse) disk image out for fsck.fat, data extents only."""
    part = tmp / "partition.img"
    with open(disk, "rb") as src, open(part, "wb") as out:
        fd = src.fileno()
        end = PART_OFFSET + PART_BYTES
        position = PART_OFFSET
        while position < end:
            try:
                data_at = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                break
            if data_at >= end:
                break
            hole_at = min(os.lseek(fd, data_at, os.SEEK_HOLE), end)
            src.seek(data_at)
            out.seek(data_at - PART_OFFSET)
            out.write(src.read(hole_at - data_at))
            position = hole_at
        out.truncate(PART_BYTES)
    return part


def check_disk_layout(disk: Path) -> None:
    assert disk.stat().st_size == 258 * MIB
    with open(disk, "rb") as f:
        mbr = f.read(512)
    assert mbr[510:] == b"\x55\xaa"
    assert struct.unpack_from("<I", mbr, 440)[0] == 0x0A7B5AC5
    boot_flag, ptype = mbr[446], mbr[446 + 4]
    start, sectors = struct.unpack_from("<II", mbr, 446 + 8)
    assert (boot_flag, ptype, start, sectors) == (0, 0x0C, 2048, 524288)
    assert mbr[462:510] == bytes(48)                       # no other partition
    if shutil.which("file"):
        described = subprocess.run(["file", "-b", str(disk)], capture_output=True, text=True).stdout
        assert "ID=0xc" in described and "startsector 2048, 524288 sectors" in described, described


def check_fat32(part: Path) -> None:
    fsck = require_tool("fsck.fat")
    result = subprocess.run([fsck, "-n", str(part)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(part, "rb") as f:
        boot = f.read(512)
    assert boot[13] == 1                                     # one sector per cluster
    assert boot[82:90] == b"FAT32   "
    assert struct.unpack_from("<I", boot, 32)[0] == 524288


def mtools_files(disk: Path, tmp: Path) -> dict[str, bytes]:
    """Every root file of the partition, read by mtools at the partition offset."""
    require_tool("mdir")
    image = f"{disk}@@{PART_OFFSET}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    listing = subprocess.run(["mdir", "-b", "-i", image, "::"], capture_output=True, text=True,
                             env=env, check=True).stdout.split()
    files = {}
    for entry in listing:
        name = entry.removeprefix("::/")
        out = tmp / f"mtools-{name}"
        subprocess.run(["mcopy", "-n", "-i", image, f"::{name}", str(out)], check=True, env=env)
        files[name] = out.read_bytes()
    return files


@pytest.fixture(scope="module")
def gpio_card(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("gpio")
    recovery = tmp / "recovery.bin"
    recovery.write_bytes(RECOVERY)
    out = tmp / "out"
    assert gpio_main(["--recovery", str(recovery), "-o", str(out), "--yes", "6"]) == 0
    return tmp, out / "pi4-program-rpiboot-gpio6.zip"


def test_gpio_card_layout_and_contents(gpio_card: tuple[Path, Path]) -> None:
    tmp, zip_path = gpio_card
    assert zip_path.is_file()
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == ["pi4-program-rpiboot-gpio6.img"]
    disk, part = extract(zip_path, tmp)
    check_disk_layout(disk)
    check_fat32(part)
    files = mtools_files(disk, tmp)
    assert files == {"config.txt": b"uart_2ndstage=1\nrecovery_wait=1\nprogram_rpiboot_gpio=6\n",
                     "recovery.bin": RECOVERY}


def test_gpio_default_output_dir(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "firmware-2711" / "latest").mkdir(parents=True)
    (tmp_path / "firmware-2711" / "latest" / "recovery.bin").write_bytes(RECOVERY)
    assert gpio_main(["--yes", "--img", "2"]) == 0
    disk = tmp_path / "images-2711" / "pi4-program-rpiboot-gpio2.img"
    check_disk_layout(disk)
    check_fat32(partition_of(disk, tmp_path))
    assert mtools_files(disk, tmp_path)["config.txt"].endswith(b"program_rpiboot_gpio=2\n")
    captured = capsys.readouterr()
    assert "PERMANENTLY" in captured.err and "GPIO 2" in captured.err
    assert "program_rpiboot_gpio=2" in captured.out


@pytest.mark.parametrize("gpio", ["0", "1", "3", "9", "27", "x", "-1", "6.0", "٦"])
def test_gpio_not_supported_is_a_usage_error(tmp_path: Path, capsys, gpio: str) -> None:
    recovery = tmp_path / "recovery.bin"
    recovery.write_bytes(RECOVERY)
    assert gpio_main(["--recovery", str(recovery), "-o", str(tmp_path / "out"), "--yes", "--", gpio]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2, 4, 5, 6, 7, 8" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("answer,code", [("no", 1), ("", 1), ("y", 1), ("yes", 0), (" YES ", 0)])
def test_gpio_terminal_confirmation(tmp_path: Path, capsys, answer: str, code: int) -> None:
    recovery = tmp_path / "recovery.bin"
    recovery.write_bytes(RECOVERY)
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return answer
    out = tmp_path / "out"
    assert gpio_main(["--recovery", str(recovery), "-o", str(out), "--img", "4"], ask=ask) == code
    assert len(asked) == 1
    assert "PERMANENTLY" in capsys.readouterr().err
    assert (out / "pi4-program-rpiboot-gpio4.img").exists() == (code == 0)


def test_gpio_question_is_asked_where_the_warning_is(tmp_path: Path, monkeypatch) -> None:
    """The question goes to stderr with the warning, so `make-pi4-rpiboot-gpio-sd 4 > log` on a
    terminal does not wait for an answer to a prompt hidden in the log."""
    import io

    from rpiboot.eeprom import rpiboot_gpio_sd_tool as tool

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True
    recovery = tmp_path / "recovery.bin"
    recovery.write_bytes(RECOVERY)
    stdin, stderr, stdout = Tty("yes\n"), Tty(), io.StringIO()
    monkeypatch.setattr("sys.stdin", stdin)
    monkeypatch.setattr("sys.stderr", stderr)
    monkeypatch.setattr("sys.stdout", stdout)
    assert tool.main(["--recovery", str(recovery), "-o", str(tmp_path), "--img", "4"]) == 0
    assert "Type 'yes'" in stderr.getvalue() and "Type 'yes'" not in stdout.getvalue()


def test_gpio_yes_skips_the_question(tmp_path: Path) -> None:
    recovery = tmp_path / "recovery.bin"
    recovery.write_bytes(RECOVERY)

    def ask(prompt: str) -> str:
        raise AssertionError("asked despite --yes")
    assert gpio_main(["--recovery", str(recovery), "-o", str(tmp_path), "--yes", "--img", "5"], ask=ask) == 0


def test_gpio_recovery_missing_or_broken(tmp_path: Path, capsys, key_files) -> None:
    out = tmp_path / "out"
    assert gpio_main(["--recovery", str(tmp_path / "none.bin"), "-o", str(out), "--yes", "6"]) == 3
    assert "not found" in capsys.readouterr().err
    assert gpio_main(["--checkout", str(tmp_path), "-o", str(out), "--yes", "6"]) == 3
    assert "--recovery" in capsys.readouterr().err
    # usbboot cloned without its submodule: firmware/2711/recovery.bin dangles.
    usbboot = tmp_path / "usbboot"
    (usbboot / "firmware" / "2711").mkdir(parents=True)
    (usbboot / "firmware" / "2711" / "recovery.bin").symlink_to("../../rpi-eeprom/firmware-2711/latest/recovery.bin")
    assert gpio_main(["--checkout", str(usbboot), "-o", str(out), "--yes", "6"]) == 3
    assert "submodule" in capsys.readouterr().err
    # The same link checked out as a text file.
    (usbboot / "firmware" / "2711" / "recovery.bin").unlink()
    (usbboot / "firmware" / "2711" / "recovery.bin").write_text("../../rpi-eeprom/firmware-2711/latest/recovery.bin")
    assert gpio_main(["--checkout", str(usbboot), "-o", str(out), "--yes", "6"]) == 1
    assert "symlink checked out as a file" in capsys.readouterr().err
    # A BCM2712 recovery.bin (2712 signature trailer) is refused.
    signed = sign_bootcode_2712(RECOVERY, key_signer(load_private_key(str(key_files["private"]))),
                                pubkey_bin(load_private_key(str(key_files["private"]))), keynum=0)
    bad = tmp_path / "recovery5.bin"
    bad.write_bytes(signed)
    assert gpio_main(["--recovery", str(bad), "-o", str(out), "--yes", "6"]) == 1
    assert "BCM2712 recovery.bin" in capsys.readouterr().err
    assert not out.exists()


def test_update_card_2711(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    source = tmp_path / "pieeprom-2026-01-01.bin"
    source.write_bytes(build_image())
    conf = tmp_path / "boot.conf"
    conf.write_bytes(b"[all]\nBOOT_ORDER=0xf14\n")
    recovery = tmp_path / "recovery.bin"
    recovery.write_bytes(RECOVERY)
    vl805 = tmp_path / "vl805-000138c0.bin"
    vl805.write_bytes(b"\x05" * 4096)
    out = tmp_path / "card.zip"
    assert update_sd_main(["-i", str(source), "-c", str(conf), "--recovery", str(recovery),
                           "--vl805", str(vl805), "-o", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        assert [(i.filename, i.date_time) for i in archive.infolist()] == [
            ("card.img", (2023, 11, 14, 22, 13, 20))]                 # SOURCE_DATE_EPOCH
    disk, part = extract(out, tmp_path)
    check_disk_layout(disk)
    check_fat32(part)
    files = mtools_files(disk, tmp_path)
    assert sorted(files) == ["README.txt", "pieeprom.bin", "pieeprom.sig", "recovery.bin",
                             "vl805.bin", "vl805.sig"]
    eeprom = files["pieeprom.bin"]
    assert img.EepromImage(eeprom).config == conf.read_bytes()
    assert files["pieeprom.sig"] == (f"{hashlib.sha256(eeprom).hexdigest()}\nts: 1700000000\n"
                                     "target-soc: 2711\n").encode()
    assert files["recovery.bin"] == RECOVERY
    assert files["vl805.sig"] == (hashlib.sha256(vl805.read_bytes()).hexdigest() + "\n").encode()
    assert b"BOOT_ORDER=0xf14" in files["README.txt"]


def test_update_card_2712_signed_from_checkout(tmp_path: Path, monkeypatch, key_files, capsys) -> None:
    checkout = tmp_path / "rpi-eeprom"
    latest = checkout / "firmware-2712" / "latest"
    latest.mkdir(parents=True)
    ab = build_image(size=2 * MIB, ab=True, last_pad_to=img.PARTITION_END)
    (latest / "pieeprom-2025-01-01.bin").write_bytes(b"\0")        # older: must not be chosen
    (latest / "pieeprom-2026-02-03.bin").write_bytes(ab)
    (latest / "recovery.bin").write_bytes(RECOVERY)
    conf = tmp_path / "boot.conf"
    conf.write_bytes(b"[all]\nSIGNED_BOOT=1\n")
    monkeypatch.chdir(tmp_path)
    disk = tmp_path / "card.img"
    assert update_sd_main(["--checkout", str(checkout), "--chip", "2712", "-c", str(conf),
                           "-k", str(key_files["private"]), "--uart", "-o", str(disk)]) == 0
    check_disk_layout(disk)
    files = mtools_files(disk, tmp_path)
    assert files["config.txt"] == b"uart_2ndstage=1\n"
    assert b"target-soc: 2712" in files["pieeprom.sig"]
    eeprom = img.EepromImage(files["pieeprom.bin"])
    key = load_private_key(str(key_files["private"]))
    assert eeprom.get_file(img.PUBKEY_BIN) == pubkey_bin(key)
    signature = sig_file_signature(eeprom.get_file(img.BOOTCONF_SIG).decode())
    assert signature and verify_pkcs1v15(key, conf.read_bytes(), signature)


def test_raw_image_is_reproducible(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    recovery = tmp_path / "recovery.bin"
    recovery.write_bytes(RECOVERY)
    digests = set()
    for attempt in ("a", "b"):
        assert gpio_main(["--recovery", str(recovery), "-o", str(tmp_path / attempt), "--yes", "--img", "7"]) == 0
        with open(tmp_path / attempt / "pi4-program-rpiboot-gpio7.img", "rb") as f:
            digests.add(hashlib.file_digest(f, "sha256").hexdigest() if hasattr(hashlib, "file_digest")
                        else hashlib.sha256(f.read()).hexdigest())
    assert len(digests) == 1


def test_update_card_refusals(tmp_path: Path, capsys) -> None:
    recovery = tmp_path / "recovery.bin"
    recovery.write_bytes(RECOVERY)
    ab = tmp_path / "pieeprom.bin"
    ab.write_bytes(build_image(size=2 * MIB, ab=True, last_pad_to=img.PARTITION_END))
    out = tmp_path / "card.zip"
    assert update_sd_main(["--recovery", str(recovery), "-o", str(out)]) == 2          # no image, no chip
    assert update_sd_main(["-i", str(ab), "--vl805", str(recovery), "--recovery", str(recovery),
                           "-o", str(out)]) == 2
    assert update_sd_main(["-i", str(ab), "--recovery", str(recovery), "-o", str(tmp_path / "c.raw")]) == 2
    assert update_sd_main(["-i", str(tmp_path / "none.bin"), "--recovery", str(recovery), "-o", str(out)]) == 3
    assert update_sd_main(["-i", str(ab), "-c", str(tmp_path / "none.conf"), "--recovery", str(recovery),
                           "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 5 and all(line.startswith("make-eeprom-update-sd: error: ")
                                         for line in err.splitlines())
    assert not out.exists()


def test_update_card_from_usbboot_clone_without_submodule(tmp_path: Path, capsys) -> None:
    """--chip in a usbboot clone made without --recurse-submodules: the empty rpi-eeprom
    submodule is named, not "run in an rpi-eeprom checkout"."""
    checkout = tmp_path / "usbboot"
    (checkout / "rpi-eeprom").mkdir(parents=True)
    (checkout / "firmware" / "2711").mkdir(parents=True)
    (checkout / "firmware" / "2711" / "pieeprom.bin").symlink_to(
        "../../rpi-eeprom/firmware-2711/latest/pieeprom-2026-05-17.bin")
    assert update_sd_main(["--chip", "2711", "--checkout", str(checkout),
                           "-o", str(tmp_path / "card.zip")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "submodule" in err and "git submodule update --init" in err


def test_real_recovery_files_are_told_apart(upstream, tmp_path, capsys) -> None:
    from rpiboot.eeprom.firmware_files import recovery_chip
    r2711 = upstream / "rpi-eeprom/firmware-2711/recovery.bin"
    r2712 = upstream / "rpi-eeprom/firmware-2712/recovery.bin"
    assert recovery_chip(r2711.read_bytes()) == "2711"
    assert recovery_chip(r2712.read_bytes()) == "2712"
    assert gpio_main(["--recovery", str(r2712), "-o", str(tmp_path / "out"), "--yes", "6"]) == 1
    assert "is a BCM2712 recovery.bin" in capsys.readouterr().err
    image = upstream / "rpi-eeprom/firmware-2712/pieeprom-2026-08-12.bin"
    assert update_sd_main(["-i", str(image), "--recovery", str(r2711), "-o", str(tmp_path / "c.img")]) == 1
    assert "is a BCM2711 recovery.bin" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "c.img").exists()
