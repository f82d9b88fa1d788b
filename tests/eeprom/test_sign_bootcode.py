"""rpi-sign-bootcode: 2712 trailers, counter-signing, 2711 format, -e dump."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from rpiboot.eeprom.sign_bootcode_tool import main
from rpiboot.eeprom.signing import (load_rsa_key, pubkey_bin, signature_blocks_2712,
                                    verify_pkcs1v15)
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from eeprom_helpers import BOOTFILES_TAR, PRIVATE_PEM


@pytest.fixture(scope="module")
def bootcode5(upstream, tmp_path_factory) -> Path:
    with tarfile.open(upstream / BOOTFILES_TAR) as tar:
        member = tar.extractfile("2712/bootcode5.bin")
        assert member is not None
        data = member.read()
    path = tmp_path_factory.mktemp("bc") / "bootcode5.bin"
    path.write_bytes(data)
    return path


def test_golden_countersign(upstream, golden, bootcode5, tmp_path) -> None:
    out = tmp_path / "signed.bin"
    argv = ["-c", "2712", "-i", str(bootcode5), "-o", str(out), "-k", str(upstream / PRIVATE_PEM),
            "-n", "16", "-v", "0"]
    assert main(argv) == 0
    assert out.read_bytes() == (golden / "bootcode5.signed.bin").read_bytes()


def test_golden_extract(golden, capsys) -> None:
    assert main(["-c", "2712", "-e", str(golden / "bootcode5.signed.bin")]) == 0
    assert capsys.readouterr().out == (golden / "bootcode5.signed.extract.txt").read_text()


def _payload(tmp_path: Path, size: int = 5000) -> Path:
    path = tmp_path / "bootcode.bin"
    path.write_bytes(bytes(range(256)) * (size // 256) + b"\x01" * (size % 256))
    return path


def test_2712_trailer_layout_and_signature(tmp_path, key_files) -> None:
    src, out = _payload(tmp_path), tmp_path / "s.bin"
    assert main(["-c", "2712", "-i", str(src), "-o", str(out), "-k", str(key_files["private"]),
                 "-n", "2", "-v", "5"]) == 0
    data, payload = out.read_bytes(), src.read_bytes()
    assert len(data) == len(payload) + 12 + 256 + 264
    assert struct.unpack_from("<iii", data, len(payload)) == (len(payload), 2, 5)
    key = load_rsa_key(str(key_files["public"]))
    body_end = len(payload) + 12
    assert verify_pkcs1v15(key, data[:body_end], data[body_end:body_end + 256])
    assert data[-264:] == pubkey_bin(key)


def test_countersign_twice_and_extract(tmp_path, key_files, capsys) -> None:
    src, rpi, customer = _payload(tmp_path), tmp_path / "rpi.bin", tmp_path / "cust.bin"
    assert main(["-c", "2712", "-i", str(src), "-o", str(rpi), "-k", str(key_files["private"]), "-v", "1"]) == 0
    assert main(["-c", "2712", "-i", str(rpi), "-o", str(customer), "-k", str(key_files["private"]),
                 "-n", "16"]) == 0
    blocks = signature_blocks_2712(customer.read_bytes())
    assert [(b.sig_type, b.keynum, b.version) for b in blocks] == [("customer", 16, 0), ("rpi", 0, 1)]
    assert blocks[0].length == rpi.stat().st_size
    capsys.readouterr()
    assert main(["-c", "2712", "-e", str(customer)]) == 0
    out = capsys.readouterr().out
    assert out.count("-----BEGIN PUBLIC KEY-----") == 2
    assert out.startswith("sig_type: customer\n") and "\n\nsig_type: rpi\n" in out


def test_2711_format(tmp_path, key_files) -> None:
    src, out = _payload(tmp_path), tmp_path / "s.bin"
    hmac_file = tmp_path / "hmac.key"
    hmac_file.write_text("00112233445566778899AABBCCDDEEFF00112233\n")
    assert main(["-c", "2711", "-i", str(src), "-o", str(out), "-k", str(key_files["private"]),
                 "-m", str(hmac_file), "-n", "1"]) == 0
    data, payload = out.read_bytes(), src.read_bytes()
    assert struct.unpack_from("<ii", data, len(payload)) == (len(payload), 1)
    body = data[:len(payload) + 8]
    signature = data[len(body):len(body) + 256]
    load_rsa_key(str(key_files["public"])).verify(signature, body, padding.PKCS1v15(), hashes.SHA1())
    key = bytes.fromhex("00112233445566778899AABBCCDDEEFF00112233")
    assert data[-20:] == hmac.new(key, data[:-20], hashlib.sha1).digest()


def test_base64_stdin_stdout(tmp_path, key_files, monkeypatch, capsysbinary) -> None:
    src = _payload(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(base64.b64encode(src.read_bytes()).decode()))
    assert main(["-c", "2712", "-k", str(key_files["private"])]) == 0
    signed = base64.b64decode(capsysbinary.readouterr().out)
    assert signed[:len(src.read_bytes())] == src.read_bytes()


def _wrapper(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "hsm-wrapper"
    script.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    script.chmod(0o755)
    return script


def test_hsm_wrapper_matches_key_signing(tmp_path, key_files) -> None:
    wrapper = _wrapper(tmp_path, f"""
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
key = serialization.load_pem_private_key(open({str(key_files['private'])!r}, 'rb').read(), None)
print(key.sign(open(sys.argv[3], 'rb').read(), padding.PKCS1v15(), hashes.SHA256()).hex())
""")
    src, a, b = _payload(tmp_path), tmp_path / "a", tmp_path / "b"
    assert main(["-c", "2712", "-i", str(src), "-o", str(a), "-p", str(key_files["public"]),
                 "-H", str(wrapper), "-n", "16"]) == 0
    assert main(["-c", "2712", "-i", str(src), "-o", str(b), "-k", str(key_files["private"]), "-n", "16"]) == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("args,message,code", [
    (["-n", "5"], "key number", 1),
    (["-v", "33"], "version", 1),
    (["-k", "SMALL"], "2048", 1),
    (["-k", "MISSING"], "not found", 3),
    (["-H", "FAILING", "-p", "PUBLIC"], "exit code 4", 1),
])
def test_errors(tmp_path, key_files, capsys, args: list[str], message: str, code: int) -> None:
    replacements = {"SMALL": str(key_files["small"]), "MISSING": str(tmp_path / "none.pem"),
                    "PUBLIC": str(key_files["public"]),
                    "FAILING": str(_wrapper(tmp_path, "sys.exit(4)"))}
    args = [replacements.get(a, a) for a in args]
    if "-k" not in args and "-H" not in args:
        args += ["-k", str(key_files["private"])]
    out = tmp_path / "o.bin"
    assert main(["-c", "2712", "-i", str(_payload(tmp_path)), "-o", str(out)] + args) == code
    err = capsys.readouterr().err
    assert err.startswith("rpi-sign-bootcode: error:") and message in err
    assert not out.exists()


def test_too_large_and_usage_errors(tmp_path, key_files, capsys) -> None:
    big, out = _payload(tmp_path, 110 * 1024), tmp_path / "o.bin"
    assert main(["-c", "2712", "-i", str(big), "-o", str(out), "-k", str(key_files["private"])]) == 1
    assert "too large" in capsys.readouterr().err and not out.exists()
    assert main(["-c", "2711", "-i", str(big), "-k", str(key_files["private"])]) == 2
    assert main(["-c", "2712", "-i", str(big), "-H", "x"]) == 2
    assert main(["-c", "2712", "-i", str(big)]) == 2
    assert main(["-c", "2837", "-i", str(big)]) == 2
    assert main(["-i", str(big)]) == 2


def test_entry_point_subprocess(tmp_path, key_files) -> None:
    out = tmp_path / "o.bin"
    result = subprocess.run([sys.executable, "-m", "rpiboot.eeprom.sign_bootcode_tool", "-c", "2712",
                             "-i", str(_payload(tmp_path)), "-o", str(out), "-k", str(key_files["private"])],
                            capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size == 5000 + 532


@pytest.mark.parametrize("chip", ["2711", "2712"])
def test_extract_unsigned_file_is_an_error(tmp_path, capsys, chip: str) -> None:
    unsigned = _payload(tmp_path, 6000)
    assert main(["-c", chip, "-e", str(unsigned)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"rpi-sign-bootcode: error: no signature block found in '{unsigned}'\n"


def test_extract_2711_signed_file(tmp_path, key_files, capsys) -> None:
    src, out = _payload(tmp_path), tmp_path / "s.bin"
    hmac_file = tmp_path / "hmac.key"
    hmac_file.write_text("00112233445566778899AABBCCDDEEFF00112233\n")
    assert main(["-c", "2711", "-i", str(src), "-o", str(out), "-k", str(key_files["private"]),
                 "-m", str(hmac_file), "-n", "1"]) == 0
    assert main(["-c", "2711", "-e", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"length: {len(src.read_bytes())}\nkeynum: 1\n")
