"""Tests for the rpi-make-boot-image command (rpiboot.eeprom.boot_image_tool)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from rpiboot.eeprom.boot_image_tool import main
from rpiboot.eeprom.fat_image import read_fat_image

from eeprom_helpers import require_tool

SRC_ROOT = Path(__file__).resolve().parents[2] / "src"
EPOCH = "1700000000"

BOOT_FILES = {
    "config.txt": b"arm_64bit=1\n",
    "cmdline.txt": b"console=serial0,115200\n",
    "kernel8.img": b"k8" * 3000,
    "kernel7l.img": b"k7l" * 2000,
    "kernel.img": b"k" * 100,
    "start.elf": b"old firmware",
    "start4.elf": b"pi4 firmware" * 100,
    "start4x.elf": b"pi4 x firmware",
    "fixup4x.dat": b"fixup x",
    "bcm2710-rpi-3-b.dtb": b"pi3 dtb",
    "bcm2711-rpi-4-b.dtb": b"pi4 dtb",
    ".top-level-hidden": b"not copied",
}



@pytest.fixture
def bootfs(tmp_path: Path) -> Path:
    src = tmp_path / "bootfs"
    src.mkdir()
    for name, data in BOOT_FILES.items():
        (src / name).write_bytes(data)
    overlays = src / "overlays"
    overlays.mkdir()
    (overlays / "disable-bt.dtbo").write_bytes(b"overlay")
    (overlays / ".nested-hidden").write_bytes(b"kept")
    return src


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMAGE_SIZE", "SECTOR_SIZE", "SECTORS_PER_CLUSTER", "ROOT_DIR_ENTRIES",
                 "FAT_SIZE", "FAT_OVERHEAD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)


@pytest.fixture(scope="module")
def private_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys") / "private.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    return path, key


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def only_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_default_build(bootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "boot.img"
    assert main(["-d", str(bootfs), "-o", str(out)]) == 0
    contents = read_fat_image(out)
    # Default -a 32 drops kernel8.img; top-level dot files are skipped like upstream.
    expected = {k: v for k, v in BOOT_FILES.items()
                if k not in ("kernel8.img", ".top-level-hidden")}
    expected["overlays/disable-bt.dtbo"] = b"overlay"
    expected["overlays/.nested-hidden"] = b"kept"
    assert contents.files == expected
    assert contents.label == "BOOT"
    assert out.stat().st_size % 1024 == 0


def test_board_and_arch_pruning(bootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "boot.img"
    assert main(["-b", "pi400", "-a", "64", "-d", str(bootfs), "-o", str(out)]) == 0
    names = set(read_fat_image(out).files)
    assert "kernel8.img" in names and "kernel7l.img" not in names
    for gone in ("kernel.img", "start.elf", "bcm2710-rpi-3-b.dtb", "start4x.elf", "fixup4x.dat"):
        assert gone not in names
    assert {"start4.elf", "bcm2711-rpi-4-b.dtb", "config.txt"} <= names


def test_pi4_keeps_start4x(bootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "boot.img"
    assert main(["-b", "pi4", "-d", str(bootfs), "-o", str(out)]) == 0
    names = set(read_fat_image(out).files)
    assert "start4x.elf" not in names  # pi4 prunes start4x too (upstream list)
    assert "start4.elf" in names


def test_fsck_and_mtools_accept_tool_output(bootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "boot.img"
    assert main(["-a", "64", "-d", str(bootfs), "-o", str(out)]) == 0
    fsck = subprocess.run([require_tool("fsck.fat"), "-n", str(out)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    for rel in ("kernel8.img", "overlays/disable-bt.dtbo", "bcm2711-rpi-4-b.dtb"):
        got = subprocess.run([require_tool("mcopy"), "-n", "-i", str(out), f"::/{rel}", "-"],
                             capture_output=True)
        assert got.returncode == 0, got.stderr
        assert got.stdout == (bootfs / rel).read_bytes()


def test_signing_writes_verifiable_sig(bootfs: Path, tmp_path: Path, private_key) -> None:
    key_path, key = private_key
    out = tmp_path / "boot.img"
    assert main(["-d", str(bootfs), "-o", str(out), "-k", str(key_path)]) == 0
    lines = (tmp_path / "boot.sig").read_text().splitlines()
    assert len(lines) == 3
    image = out.read_bytes()
    assert lines[0] == hashlib.sha256(image).hexdigest()
    assert lines[1] == f"ts: {EPOCH}"
    tag, sig_hex = lines[2].split(" ")
    assert tag == "rsa2048:" and len(sig_hex) == 512
    key.public_key().verify(bytes.fromhex(sig_hex), image, padding.PKCS1v15(), hashes.SHA256())


def test_signing_without_epoch_uses_now(bootfs: Path, tmp_path: Path, private_key,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    out = tmp_path / "img"
    assert main(["-d", str(bootfs), "-o", str(out), "-k", str(private_key[0])]) == 0
    ts = int((tmp_path / "img.sig").read_text().splitlines()[1].removeprefix("ts: "))
    assert abs(ts - time.time()) < 60


def test_reproducible(bootfs: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    assert main(["-d", str(bootfs), "-o", str(a)]) == 0
    os.utime(bootfs / "config.txt", (5, 5))
    assert main(["-d", str(bootfs), "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_image_size_env(bootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_SIZE", "3000")
    out = tmp_path / "boot.img"
    assert main(["-d", str(bootfs), "-o", str(out)]) == 0
    assert out.stat().st_size == 3000 * 1024
    assert read_fat_image(out).fat_type == 16


def test_fat_size_env(bootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAT_SIZE", "32")
    out = tmp_path / "boot.img"
    assert main(["-d", str(bootfs), "-o", str(out)]) == 0
    assert read_fat_image(out).fat_type == 32


def test_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-d", str(tmp_path / "nope"), "-o", str(tmp_path / "boot.img")]) == 3
    assert "source directory not found" in one_line_error(capsys)
    assert only_files(tmp_path) == []


def test_too_large_for_size(bootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "boot.img"
    out.write_bytes(b"old image")
    monkeypatch.setenv("IMAGE_SIZE", "20")
    assert main(["-d", str(bootfs), "-o", str(out)]) == 4
    one_line_error(capsys)
    assert out.read_bytes() == b"old image"
    assert only_files(out_dir) == ["boot.img"]


def test_unwritable_output(bootfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           private_key) -> None:
    assert main(["-d", str(bootfs), "-o", str(tmp_path / "missing" / "boot.img")]) == 5
    one_line_error(capsys)
    target = tmp_path / "out"
    (target / "boot.img").mkdir(parents=True)  # os.replace onto a directory fails
    assert main(["-d", str(bootfs), "-o", str(target / "boot.img"), "-k", str(private_key[0])]) == 5
    assert "is a directory" in one_line_error(capsys)
    assert only_files(target) == ["boot.img"]


def test_bad_key(bootfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    key = tmp_path / "small.pem"
    key.write_bytes(small.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    out = tmp_path / "boot.img"
    assert main(["-d", str(bootfs), "-o", str(out), "-k", str(key)]) == 6
    assert "2048" in one_line_error(capsys)
    assert main(["-d", str(bootfs), "-o", str(out), "-k", str(tmp_path / "none.pem")]) == 3
    one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("argv", [["-d", "x"], ["-a", "48", "-d", "x", "-o", "y"], ["--bogus"]])
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    one_line_error(capsys)


def test_bad_env_value(bootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("IMAGE_SIZE", "big")
    assert main(["-d", str(bootfs), "-o", str(tmp_path / "boot.img")]) == 2
    assert "IMAGE_SIZE" in one_line_error(capsys)


def test_unrepresentable_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a:b").write_text("x")
    assert main(["-d", str(src), "-o", str(tmp_path / "boot.img")]) == 3
    one_line_error(capsys)


def test_python_dash_m(bootfs: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC_ROOT)}
    cmd = [sys.executable, "-m", "rpiboot.eeprom.boot_image_tool"]
    assert subprocess.run(cmd + ["-h"], env=env, capture_output=True).returncode == 0
    ok = subprocess.run(cmd + ["-d", str(bootfs), "-o", str(tmp_path / "b.img")], env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(cmd + ["-d", str(tmp_path / "none"), "-o", str(tmp_path / "c.img")],
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 3
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_output_directory_or_empty_is_a_clean_error(bootfs: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    assert main(["-d", str(bootfs), "-o", str(outdir)]) == 5
    assert "is a directory" in one_line_error(capsys)
    assert main(["-d", str(bootfs), "-o", str(tmp_path / "newdir") + "/"]) == 5
    assert "is a directory" in one_line_error(capsys)
    assert main(["-d", str(bootfs), "-o", ""]) == 2
    assert "empty" in one_line_error(capsys)
    assert list(outdir.iterdir()) == [] and not (tmp_path / "newdir").exists()


def test_output_directory_subprocess_has_no_traceback(bootfs: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC_ROOT)}
    result = subprocess.run([sys.executable, "-m", "rpiboot.eeprom.boot_image_tool", "-d", str(bootfs),
                             "-o", str(tmp_path)], env=env, capture_output=True, text=True)
    assert result.returncode == 5
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("rpi-make-boot-image: error:")


def test_sig_path_directory_is_refused(bootfs: Path, tmp_path: Path, private_key,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "boot.sig").mkdir()
    assert main(["-d", str(bootfs), "-o", str(tmp_path / "boot.img"), "-k", str(private_key[0])]) == 5
    assert "boot.sig" in one_line_error(capsys)
    assert not (tmp_path / "boot.img").exists()


def test_write_failure_is_reported_as_output_error(bootfs: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from rpiboot.eeprom import fat_image

    real_copy = fat_image._copy_file

    class FullDisk:
        def __init__(self, inner):
            self._inner = inner

        def seek(self, *a):
            return self._inner.seek(*a)

        def write(self, data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(fat_image, "_copy_file", lambda node, out, off: real_copy(node, FullDisk(out), off))
    assert main(["-d", str(bootfs), "-o", str(tmp_path / "boot.img")]) == 5
    err = one_line_error(capsys)
    assert "No space left" in err and "cannot read" not in err
    assert not (tmp_path / "boot.img").exists()
