"""rpi-eeprom-digest: .sig files, signing, HSM wrapper, verification."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpiboot.eeprom.digest_tool import main
from rpiboot.eeprom.signing import load_rsa_key, verify_pkcs1v15

from eeprom_helpers import PRIVATE_PEM, PUBLIC_PEM, RECOVERY_CONF, SBR5_CONF, SBR_CONF


@pytest.mark.parametrize("extra,conf,gold", [
    ([], RECOVERY_CONF, "recovery-boot-conf.sig"),
    (["-k", PRIVATE_PEM], RECOVERY_CONF, "recovery-boot-conf.signed.sig"),
    (["-c", "2712"], RECOVERY_CONF, "recovery-boot-conf.c2712.sig"),
    (["-k", PRIVATE_PEM], SBR_CONF, "sbr-boot-conf.signed.sig"),
    (["-k", PRIVATE_PEM], SBR5_CONF, "sbr5-boot-conf.signed.sig"),
])
def test_golden_sig_files(upstream, golden, golden_env, tmp_path, extra, conf, gold) -> None:
    extra = [str(upstream / a) if a.endswith(".pem") else a for a in extra]
    out = tmp_path / "out.sig"
    assert main(extra + ["-i", str(upstream / conf), "-o", str(out)]) == 0
    assert out.read_bytes() == (golden / gold).read_bytes()


def test_golden_verify_ok_and_failure(upstream, golden, capsys) -> None:
    sig = str(golden / "recovery-boot-conf.signed.sig")
    pub = str(upstream / PUBLIC_PEM)
    assert main(["-k", pub, "-i", str(upstream / RECOVERY_CONF), "-v", sig]) == 0
    assert capsys.readouterr().out == "Verified OK\n"
    assert main(["-k", pub, "-i", str(upstream / SBR_CONF), "-v", sig]) == 1
    captured = capsys.readouterr()
    assert captured.out == "Verification failure\n"
    assert captured.err == (f"rpi-eeprom-digest: error: the signature in {sig} does not match "
                            f"{upstream / SBR_CONF}\n")


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "boot.conf"
    data.write_bytes(b"[all]\nBOOT_UART=1\n")
    return data


def test_sig_format_and_signature(tmp_path, key_files, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "42")
    data = _data(tmp_path)
    out = tmp_path / "o.sig"
    assert main(["-c", "2711", "-k", str(key_files["private"]), "-i", str(data), "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert lines[1:3] == ["ts: 42", "target-soc: 2711"]
    assert lines[3].startswith("rsa2048: ") and len(lines) == 4
    signature = bytes.fromhex(lines[3].split(" ")[1])
    assert verify_pkcs1v15(load_rsa_key(str(key_files["public"])), data.read_bytes(), signature)
    assert main(["-k", str(key_files["public"]), "-i", str(data), "-v", str(out)]) == 0


def test_timestamp_falls_back_to_now_when_empty(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "")
    out = tmp_path / "o.sig"
    before = int(time.time())
    assert main(["-i", str(_data(tmp_path)), "-o", str(out)]) == 0
    ts = int(out.read_text().splitlines()[1].split(" ")[1])
    assert before <= ts <= int(time.time())


def _wrapper(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "hsm-wrapper"
    script.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    script.chmod(0o755)
    return script


def test_hsm_wrapper(tmp_path, key_files, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "7")
    wrapper = _wrapper(tmp_path, f"""
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
assert sys.argv[1:3] == ['-a', 'rsa2048-sha256'], sys.argv
key = serialization.load_pem_private_key(open({str(key_files['private'])!r}, 'rb').read(), None)
print(key.sign(open(sys.argv[3], 'rb').read(), padding.PKCS1v15(), hashes.SHA256()).hex())
""")
    data = _data(tmp_path)
    via_hsm, via_key = tmp_path / "h.sig", tmp_path / "k.sig"
    assert main(["-H", str(wrapper), "-i", str(data), "-o", str(via_hsm)]) == 0
    assert main(["-k", str(key_files["private"]), "-i", str(data), "-o", str(via_key)]) == 0
    assert via_hsm.read_bytes() == via_key.read_bytes()


@pytest.mark.parametrize("body,message", [
    ("sys.exit(3)", "exit code 3"),
    ("print('zz-not-hex')", "hex signature"),
    ("print('abcd')", "2-byte signature"),
])
def test_hsm_wrapper_failures(tmp_path, capsys, body: str, message: str) -> None:
    out = tmp_path / "o.sig"
    assert main(["-H", str(_wrapper(tmp_path, body)), "-i", str(_data(tmp_path)), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rpi-eeprom-digest: error:") and message in err
    assert not out.exists()


def test_errors(tmp_path, key_files, capsys) -> None:
    data = _data(tmp_path)
    out = tmp_path / "o.sig"
    assert main(["-i", str(tmp_path / "missing"), "-o", str(out)]) == 3
    assert main(["-k", str(key_files["small"]), "-i", str(data), "-o", str(out)]) == 1
    assert "2048" in capsys.readouterr().err
    assert main(["-k", str(key_files["public"]), "-i", str(data), "-o", str(out)]) == 1
    assert main(["-k", str(tmp_path / "nokey.pem"), "-i", str(data), "-o", str(out)]) == 3
    assert main(["-H", str(tmp_path / "no-wrapper"), "-i", str(data), "-o", str(out)]) == 3
    assert not out.exists()
    assert main(["-i", str(data), "-v", str(out)]) == 2
    assert main(["-i", str(data)]) == 2
    assert main(["-x"]) == 2
    unsigned = tmp_path / "u.sig"
    unsigned.write_text("abc\nts: 1\n")
    assert main(["-k", str(key_files["public"]), "-i", str(data), "-v", str(unsigned)]) == 1
    assert "No RSA signature".lower() in capsys.readouterr().err.lower()
    assert main(["-h"]) == 0


def test_entry_point_subprocess(tmp_path) -> None:
    out = tmp_path / "o.sig"
    result = subprocess.run([sys.executable, "-m", "rpiboot.eeprom.digest_tool", "-i", str(_data(tmp_path)),
                             "-o", str(out)], capture_output=True, check=False,
                            env={**os.environ, "SOURCE_DATE_EPOCH": "5"})
    assert result.returncode == 0, result.stderr
    assert out.read_text().endswith("\nts: 5\n")


@pytest.mark.parametrize("value", ["1\nrsa2048: 00", "12 ", "-5", "1e3", "\u0661\u0662"])
def test_source_date_epoch_cannot_inject_lines(tmp_path, monkeypatch, capsys, value: str) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    out = tmp_path / "o.sig"
    assert main(["-i", str(_data(tmp_path)), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rpi-eeprom-digest: error: SOURCE_DATE_EPOCH") and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("soc", ["2711\nrsa2048: 00", "2710", "bcm2712"])
def test_target_soc_must_be_2711_or_2712(tmp_path, capsys, soc: str) -> None:
    out = tmp_path / "o.sig"
    assert main(["-c", soc, "-i", str(_data(tmp_path)), "-o", str(out)]) == 2
    assert capsys.readouterr().err.startswith("rpi-eeprom-digest: error: -c takes 2711 or 2712")
    assert not out.exists()
