"""rpi-bootloader-key-convert: PEM <-> pubkey.bin and the customer key hash."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from rpiboot.eeprom.key_convert_tool import main
from rpiboot.eeprom.signing import load_rsa_key

from eeprom_helpers import PRIVATE_PEM, PUBLIC_PEM

EXAMPLE_KEY_HASH = "8251a63a2edee9d8f710d63e9da5d639064929ce15a2238986a189ac6fcd3cee"


@pytest.mark.parametrize("key", [PUBLIC_PEM, PRIVATE_PEM])
def test_golden_pem_to_bin(upstream, golden, tmp_path, key: str) -> None:
    out = tmp_path / "pubkey.bin"
    assert main(["--output", str(out), str(upstream / key)]) == 0
    assert out.read_bytes() == (golden / "example-public.pubkey.bin").read_bytes()


def test_golden_bin_to_pem(golden, tmp_path) -> None:
    out = tmp_path / "k.pem"
    assert main(["--inform", "bin", "--output", str(out), str(golden / "example-public.pubkey.bin")]) == 0
    assert out.read_bytes() == (golden / "example-public.roundtrip.pem").read_bytes()


def test_golden_key_hash(upstream, capsys) -> None:
    assert main(["--print-key-hash", str(upstream / PRIVATE_PEM)]) == 0
    assert capsys.readouterr().out == EXAMPLE_KEY_HASH + "\n"


def test_round_trip_generated_key(tmp_path, key_files, capsysbinary) -> None:
    assert main([str(key_files["private"])]) == 0
    binary = capsysbinary.readouterr().out
    numbers = load_rsa_key(str(key_files["public"])).public_numbers()
    assert binary == numbers.n.to_bytes(256, "little") + numbers.e.to_bytes(8, "little")
    path = tmp_path / "pubkey.bin"
    path.write_bytes(binary)
    assert main(["--inform", "bin", str(path)]) == 0
    assert capsysbinary.readouterr().out == key_files["public"].read_bytes().rstrip(b"\n")
    assert main(["--inform", "bin", "--print-key-hash", str(path)]) == 0
    assert capsysbinary.readouterr().out.decode().strip() == hashlib.sha256(binary).hexdigest()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("rpi-bootloader-key-convert: error: ") and err.count("\n") == 1, err
    return err


def test_errors(tmp_path, key_files, capsys) -> None:
    short = tmp_path / "short.bin"
    short.write_bytes(b"\x01" * 100)
    assert main(["--inform", "bin", str(short)]) == 1
    _one_line_error(capsys)
    assert main([str(key_files["small"])]) == 1
    _one_line_error(capsys)
    assert main([str(tmp_path / "missing.pem")]) == 3
    _one_line_error(capsys)
    assert main(["--inform", "der", str(key_files["public"])]) == 2
    _one_line_error(capsys)


def test_bin_must_be_exactly_264_bytes_and_2048_bits(tmp_path, key_files, capsys) -> None:
    good = tmp_path / "good.bin"
    assert main(["--output", str(good), str(key_files["public"])]) == 0
    longer = tmp_path / "long.bin"
    longer.write_bytes(good.read_bytes() + b"\0")
    assert main(["--inform", "bin", str(longer)]) == 1
    assert "264" in _one_line_error(capsys)
    small_n = tmp_path / "small_n.bin"
    small_n.write_bytes(good.read_bytes()[:128] + b"\0" * 128 + good.read_bytes()[256:])
    assert main(["--inform", "bin", str(small_n)]) == 1
    assert "2048" in _one_line_error(capsys)


def test_error_subprocess_single_line(tmp_path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x01" * 300)
    result = subprocess.run([sys.executable, "-m", "rpiboot.eeprom.key_convert_tool", "--inform", "bin",
                             str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("rpi-bootloader-key-convert: error: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_entry_point_subprocess(key_files) -> None:
    result = subprocess.run([sys.executable, "-m", "rpiboot.eeprom.key_convert_tool",
                             str(key_files["public"])], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 264
