"""rpi-eeprom-config: golden outputs, synthetic images and error handling."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rpiboot.eeprom import image as img
from rpiboot.eeprom.config_tool import main
from rpiboot.eeprom.signing import load_rsa_key, pubkey_bin

from eeprom_helpers import (IMAGE_2711, IMAGE_2712, IMAGE_2712_OLD, PRIVATE_PEM, PUBLIC_PEM,
                            RECOVERY_CONF, SBR5_CONF, SBR_CONF, build_image)

MIB2 = 2 * 1024 * 1024


@pytest.mark.parametrize("image,gold", [(IMAGE_2711, "2711-2026-08-04.bootconf.txt"),
                                        (IMAGE_2712, "2712-2026-08-12.bootconf.txt")])
def test_print_config_golden(upstream, golden, capsysbinary, image: str, gold: str) -> None:
    assert main([str(upstream / image)]) == 0
    assert capsysbinary.readouterr().out == (golden / gold).read_bytes()


@pytest.mark.parametrize("image,gold", [(IMAGE_2711, "2711-2026-08-04.recovery-conf.bin"),
                                        (IMAGE_2712, "2712-2026-08-12.recovery-conf.bin")])
def test_replace_config_golden(upstream, golden, tmp_path, image: str, gold: str) -> None:
    out = tmp_path / "out.bin"
    assert main(["--config", str(upstream / RECOVERY_CONF), "--out", str(out), str(upstream / image)]) == 0
    assert out.read_bytes() == (golden / gold).read_bytes()


@pytest.mark.parametrize("image,conf,sig,key,gold", [
    (IMAGE_2711, SBR_CONF, "sbr-boot-conf.signed.sig", PUBLIC_PEM, "2711-2026-08-04.signed-conf.bin"),
    (IMAGE_2712, SBR5_CONF, "sbr5-boot-conf.signed.sig", PUBLIC_PEM, "2712-2026-08-12.signed-conf.bin"),
    (IMAGE_2712, SBR5_CONF, "sbr5-boot-conf.signed.sig", PRIVATE_PEM, "2712-2026-08-12.signed-conf.bin"),
])
def test_signed_config_golden(upstream, golden, tmp_path, image, conf, sig, key, gold) -> None:
    out = tmp_path / "out.bin"
    argv = ["-c", str(upstream / conf), "-d", str(golden / sig), "-p", str(upstream / key),
            "-o", str(out), str(upstream / image)]
    assert main(argv) == 0
    assert out.read_bytes() == (golden / gold).read_bytes()


def test_extract_real_ab_image(upstream, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["-x", str(upstream / IMAGE_2712)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["bootcode.bin", "bootsys", "updatetime", "pubkey.bin", "cacert.der",
                            "bootconf.sig", "bootconf.txt"])
    assert (tmp_path / "bootcode.bin").stat().st_size == 25984


def test_old_2712_image_config_and_bootcode(upstream, tmp_path, capsysbinary) -> None:
    src = str(upstream / IMAGE_2712_OLD)
    out = tmp_path / "o.bin"
    assert main(["-c", str(upstream / RECOVERY_CONF), "-o", str(out), src]) == 0
    assert img.EepromImage(out.read_bytes()).config == (upstream / RECOVERY_CONF).read_bytes()
    bootcode = tmp_path / "bc.bin"
    bootcode.write_bytes(b"x" * 100)
    out.unlink()
    assert main(["--bootcode", str(bootcode), "-o", str(out), src]) == 1
    assert not out.exists()
    assert b"128K" in capsysbinary.readouterr().err


def test_synthetic_full_update(tmp_path, key_files, capsysbinary) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(build_image(size=MIB2, ab=True, last_pad_to=img.PARTITION_END,
                                files={"pubkey.bin": b"\0" * 264, "cacert.der": b"c",
                                       "bootconf.sig": b"s"}))
    conf, sig, cert, bootsys, bootcode = (tmp_path / n for n in ("c.txt", "c.sig", "ca.der", "bs", "bc"))
    conf.write_bytes(b"[all]\nBOOT_ORDER=0xf41\n")
    sig.write_bytes(b"abc\nts: 1\n")
    cert.write_bytes(b"\x30" * 700)
    bootsys.write_bytes(b"\x44" * 4000)
    bootcode.write_bytes(b"\x55" * 2000)
    out = tmp_path / "out.bin"
    argv = ["-c", str(conf), "-d", str(sig), "-p", str(key_files["private_pkcs1"]), "--cacertder", str(cert),
            "--bootsys", str(bootsys), "--bootcode", str(bootcode), "-t", "1700000000", "-o", str(out), str(src)]
    assert main(argv) == 0
    image = img.EepromImage(out.read_bytes())
    assert image.config == conf.read_bytes()
    assert image.get_file("bootconf.sig") == sig.read_bytes()
    assert image.get_file("cacert.der") == cert.read_bytes()
    assert image.get_file("bootsys") == bootsys.read_bytes()
    assert image.get_file("bootcode.bin") == bootcode.read_bytes()
    assert image.get_file("pubkey.bin") == pubkey_bin(load_rsa_key(str(key_files["public"])))
    # Reading back through the tool prints the new config.
    capsysbinary.readouterr()
    assert main([str(out)]) == 0
    assert capsysbinary.readouterr().out == conf.read_bytes()


def test_extract_synthetic(tmp_path, monkeypatch) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(build_image())
    work = tmp_path / "x"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["--extract", str(src)]) == 0
    assert (work / "bootconf.txt").read_bytes() == b"[all]\nBOOT_UART=1\n"
    assert (work / "bootcode.bin").read_bytes() == b"\x11" * 1000
    assert (work / "pubkey.bin").read_bytes() == b"\0" * 264


def test_out_without_changes_writes_config(tmp_path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(build_image())
    out = tmp_path / "boot.conf"
    assert main(["--out", str(out), str(src)]) == 0
    assert out.read_bytes() == b"[all]\nBOOT_UART=1\n"


def _error(capsys, argv: list[str], code: int = 1) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    # In-process a traceback would propagate, so check the form of the message instead:
    # one line, or for argparse usage errors the usage text followed by that line.
    lines = err.splitlines()
    assert lines and lines[-1].startswith("rpi-eeprom-config: error: "), err
    assert len(lines) == 1 or (code == 2 and lines[0].startswith("usage: ")), err
    return err


def test_error_wrong_size(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff" * 1000)
    err = _error(capsys, [str(bad)])
    assert err.startswith("rpi-eeprom-config: error:") and "expected image size" in err
    assert err.count("\n") == 1


def test_error_missing_files(tmp_path, capsys) -> None:
    assert "not found" in _error(capsys, [str(tmp_path / "nope.bin")], 3)
    src = tmp_path / "src.bin"
    src.write_bytes(build_image())
    out = tmp_path / "o.bin"
    assert "not found" in _error(capsys, ["-c", str(tmp_path / "nope.conf"), "-o", str(out), str(src)], 3)
    assert not out.exists()


def test_error_corrupt_magic(tmp_path, capsys) -> None:
    data = bytearray(build_image())
    data[128 * 1024:128 * 1024 + 4] = b"\x12\x34\x56\x78"
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(data))
    assert "corrupted" in _error(capsys, [str(src)])


def test_error_config_too_large_leaves_no_output(tmp_path, capsys) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(build_image())
    conf = tmp_path / "big.conf"
    conf.write_bytes(b"#" * 5000)
    out = tmp_path / "o.bin"
    assert "too large" in _error(capsys, ["-c", str(conf), "-o", str(out), str(src)])
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_error_oversized_digest_does_not_corrupt_next_section(tmp_path, capsys) -> None:
    # A 4073-byte file passes upstream's n + 20 check but needs n + 24 bytes.
    src = tmp_path / "src.bin"
    src.write_bytes(build_image())
    conf, sig = tmp_path / "c", tmp_path / "s"
    conf.write_bytes(b"[all]\n")
    sig.write_bytes(b"s" * 4073)
    assert "too large" in _error(capsys, ["-c", str(conf), "-d", str(sig), "-o", str(tmp_path / "o"), str(src)])


def test_error_key_not_rsa2048(tmp_path, key_files, capsys) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(build_image())
    conf = tmp_path / "c"
    conf.write_bytes(b"[all]\n")
    argv = ["-c", str(conf), "-p", str(key_files["small"]), "-o", str(tmp_path / "o"), str(src)]
    assert "2048" in _error(capsys, argv)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")
    argv[3] = str(garbage)
    assert "not a PEM" in _error(capsys, argv)


def test_error_bad_timestamp_and_usage(tmp_path, capsys) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(build_image())
    assert "invalid timestamp" in _error(capsys, ["-t", "soon", "-o", str(tmp_path / "o"), str(src)])
    _error(capsys, ["-d", "x.sig", str(src)], code=2)
    _error(capsys, [], code=2)
    _error(capsys, ["--bogus"], code=2)


def test_edit_with_editor(tmp_path, monkeypatch) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(build_image())
    editor = tmp_path / "editor.py"
    editor.write_text("import sys\nopen(sys.argv[1], 'a').write('BOOT_ORDER=0x1\\n')\n")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    out = tmp_path / "new.bin"
    assert main(["--edit", "--out", str(out), str(src)]) == 0
    assert img.EepromImage(out.read_bytes()).config == b"[all]\nBOOT_UART=1\nBOOT_ORDER=0x1\n"


def test_entry_point_subprocess(tmp_path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(build_image())
    result = subprocess.run([sys.executable, "-m", "rpiboot.eeprom.config_tool", str(src)],
                            capture_output=True, check=False)
    assert result.returncode == 0
    assert result.stdout == b"[all]\nBOOT_UART=1\n"


def test_extract_is_all_or_nothing(tmp_path, monkeypatch, capsys) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(build_image())
    work = tmp_path / "x"
    work.mkdir()
    (work / "pubkey.bin").mkdir()      # a later target that cannot be written
    monkeypatch.chdir(work)
    err = _error(capsys, ["--extract", str(src)])
    assert "pubkey.bin" in err
    assert sorted(p.name for p in work.iterdir()) == ["pubkey.bin"]


def test_edit_with_unparsable_editor(tmp_path, monkeypatch, capsys) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(build_image())
    monkeypatch.setenv("EDITOR", "vi 'unterminated")
    err = _error(capsys, ["--edit", "--out", str(tmp_path / "new.bin"), str(src)])
    assert "EDITOR" in err
    assert not (tmp_path / "new.bin").exists()


@pytest.mark.parametrize("argv,code", [(["--config"], 2), (["/nonexistent/pieeprom.bin"], 3)])
def test_errors_subprocess_single_line(tmp_path, argv, code) -> None:
    result = subprocess.run([sys.executable, "-m", "rpiboot.eeprom.config_tool", *argv],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("rpi-eeprom-config: error:")
