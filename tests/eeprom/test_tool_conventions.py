"""Conventions every EEPROM tool shares (issue 12): --help, the exit status for a missing input,
no `cryptography` import unless a key is used, and `-f` refused on a BCM2711 image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from rpiboot.eeprom import (boot_image_tool, config_tool, digest_tool, eeprom_update_sd_tool,
                            key_convert_tool, rpiboot_gpio_sd_tool, secure_boot_check_tool,
                            sign_bootcode_tool, update_pieeprom_tool)
from rpiboot.eeprom.common import EXIT_MISSING_INPUT

from eeprom_helpers import build_image

TOOLS: dict[str, Callable[[list[str]], int]] = {
    "rpi-eeprom-config": config_tool.main,
    "rpi-eeprom-digest": digest_tool.main,
    "rpi-sign-bootcode": sign_bootcode_tool.main,
    "rpi-bootloader-key-convert": key_convert_tool.main,
    "update-pieeprom": update_pieeprom_tool.main,
    "rpi-make-boot-image": boot_image_tool.main,
    "make-pi4-rpiboot-gpio-sd": rpiboot_gpio_sd_tool.main,
    "make-eeprom-update-sd": eeprom_update_sd_tool.main,
    "rpi-secure-boot-check": secure_boot_check_tool.main,
}


@pytest.mark.parametrize("prog", sorted(TOOLS))
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_works_in_both_spellings(prog: str, flag: str, capsys) -> None:
    assert TOOLS[prog]([flag]) == 0
    captured = capsys.readouterr()
    assert "usage:" in captured.out and captured.err == ""


def _missing_input_cases(tmp: Path, key: Path) -> list[tuple[str, list[str]]]:
    missing = str(tmp / "missing")
    out = str(tmp / "out.bin")
    card = str(tmp / "card.zip")
    image = tmp / "pieeprom.bin"
    image.write_bytes(build_image())
    source = tmp / "src"
    source.mkdir(exist_ok=True)
    return [
        ("rpi-eeprom-config", [missing]),
        ("rpi-eeprom-config", ["-c", missing, "-o", out, str(image)]),
        ("rpi-eeprom-config", ["-c", str(tmp / "boot.conf"), "-d", missing, "-o", out, str(image)]),
        ("rpi-eeprom-digest", ["-i", missing, "-o", out]),
        ("rpi-eeprom-digest", ["-k", missing, "-i", str(image), "-o", out]),
        ("rpi-eeprom-digest", ["-H", missing, "-i", str(image), "-o", out]),
        ("rpi-sign-bootcode", ["-c", "2712", "-i", missing, "-o", out, "-k", str(key)]),
        ("rpi-sign-bootcode", ["-c", "2712", "-i", str(image), "-o", out, "-k", missing]),
        ("rpi-bootloader-key-convert", [missing]),
        ("update-pieeprom", ["-i", missing, "-c", str(tmp / "boot.conf"), "-o", out]),
        ("update-pieeprom", ["-i", str(image), "-c", missing, "-o", out]),
        ("update-pieeprom", ["-i", str(image), "-c", str(tmp / "boot.conf"), "-k", missing, "-o", out]),
        ("rpi-make-boot-image", ["-d", missing, "-o", out]),
        ("rpi-make-boot-image", ["-d", str(source), "-o", out, "-k", missing]),
        ("make-pi4-rpiboot-gpio-sd", ["--recovery", missing, "-o", str(tmp / "gpio"), "--yes", "6"]),
        ("make-pi4-rpiboot-gpio-sd", ["--checkout", missing, "-o", str(tmp / "gpio"), "--yes", "6"]),
        ("make-eeprom-update-sd", ["-i", missing, "--recovery", str(image), "-o", card]),
        ("make-eeprom-update-sd", ["-i", str(image), "--recovery", missing, "-o", card]),
        ("make-eeprom-update-sd", ["-i", str(image), "-c", missing, "--recovery", str(image), "-o", card]),
        ("make-eeprom-update-sd", ["--chip", "2711", "--checkout", missing, "-o", card]),
        ("rpi-secure-boot-check", [missing]),
        ("rpi-secure-boot-check", [str(source), "-k", missing]),
        ("rpi-secure-boot-check", [str(source), "--boot-image", missing]),
    ]


def test_missing_input_has_one_exit_status_everywhere(tmp_path: Path, key_files, capsys) -> None:
    (tmp_path / "boot.conf").write_bytes(b"[all]\nBOOT_UART=1\n")
    for prog, argv in _missing_input_cases(tmp_path, key_files["private"]):
        assert TOOLS[prog](argv) == EXIT_MISSING_INPUT, (prog, argv)
        err = capsys.readouterr().err
        assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1, (prog, err)
        assert "missing" in err, (prog, err)
        assert not (tmp_path / "out.bin").exists() and not (tmp_path / "card.zip").exists()
        assert not (tmp_path / "gpio").exists()


def test_reading_an_image_does_not_import_cryptography(tmp_path: Path) -> None:
    image = tmp_path / "pieeprom.bin"
    image.write_bytes(build_image())
    code = ("import sys, contextlib, io\n"
            "from rpiboot.eeprom.config_tool import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    assert main([sys.argv[1]]) == 0\n"
            "assert 'BOOT_UART=1' in out.getvalue()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))\n")
    result = subprocess.run([sys.executable, "-c", code, str(image)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_using_a_key_still_works_after_lazy_import(tmp_path: Path, key_files) -> None:
    image = tmp_path / "pieeprom.bin"
    image.write_bytes(build_image())
    code = ("import sys\n"
            "from rpiboot.eeprom.digest_tool import main\n"
            "sys.exit(main(['-k', sys.argv[1], '-i', sys.argv[2], '-o', sys.argv[3]]))\n")
    sig = tmp_path / "pieeprom.sig"
    result = subprocess.run([sys.executable, "-c", code, str(key_files["private"]), str(image), str(sig)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "rsa2048: " in sig.read_text()


@pytest.mark.parametrize("argv", [["-f"], ["-f", "-r"], ["-fr"]])
def test_firmware_signing_refused_on_bcm2711(tmp_path: Path, monkeypatch, key_files, capsys,
                                             argv: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pieeprom.original.bin").write_bytes(build_image())
    (tmp_path / "boot.conf").write_bytes(b"[all]\nBOOT_UART=1\n")
    (tmp_path / "recovery.original.bin").write_bytes(b"\x33" * 4000)
    assert update_pieeprom_tool.main(argv + ["-k", str(key_files["private"])]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1
    assert "-f is for BCM2712" in err and "BCM2711" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "boot.conf", "pieeprom.original.bin", "recovery.original.bin"]


def test_sign_firmware_environment_refused_on_bcm2711(tmp_path: Path, monkeypatch, key_files, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIGN_FIRMWARE", "1")
    (tmp_path / "pieeprom.original.bin").write_bytes(build_image())
    (tmp_path / "boot.conf").write_bytes(b"[all]\nBOOT_UART=1\n")
    assert update_pieeprom_tool.main(["-k", str(key_files["private"])]) == 2
    assert "SIGN_FIRMWARE=1 is for BCM2712" in capsys.readouterr().err
