"""update-pieeprom: the usbboot update-pieeprom.sh flow in Python."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rpiboot.eeprom import common
from rpiboot.eeprom import image as img
from rpiboot.eeprom.signing import signature_blocks_2712
from rpiboot.eeprom.update_pieeprom_tool import main, sig_path_for

from eeprom_helpers import (IMAGE_2711, IMAGE_2712, PRIVATE_PEM, RECOVERY_2712, SBR5_CONF, SBR_CONF,
                            build_image, copy_into)


def _setup(upstream: Path, tmp_path: Path, image: str, conf: str, recovery: bool) -> Path:
    copy_into(upstream / conf, tmp_path, "boot.conf")
    copy_into(upstream / image, tmp_path, "pieeprom.original.bin")
    copy_into(upstream / PRIVATE_PEM, tmp_path, "example-private.pem")
    if recovery:
        copy_into(upstream / RECOVERY_2712, tmp_path, "recovery.original.bin")
    return tmp_path


def _sig_block(sig: str) -> str:
    return f"Signing bootloader config\n{sig}"


def test_golden_2711(upstream, golden, golden_env, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(_setup(upstream, tmp_path, IMAGE_2711, SBR_CONF, False))
    assert main(["-k", "example-private.pem"]) == 0
    assert (tmp_path / "pieeprom.bin").read_bytes() == (golden / "2711-2026-08-04.update.pieeprom.bin").read_bytes()
    assert (tmp_path / "pieeprom.sig").read_bytes() == (golden / "2711-2026-08-04.update.pieeprom.sig").read_bytes()
    expected = (_sig_block((golden / "sbr-boot-conf.signed.sig").read_text())
                + "new-image: pieeprom.bin\nsource-image: pieeprom.original.bin\nconfig: boot.conf\n")
    assert capsys.readouterr().out == expected


def test_golden_2712_f(upstream, golden, golden_env, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(_setup(upstream, tmp_path, IMAGE_2712, SBR5_CONF, True))
    assert main(["-f", "-k", "example-private.pem"]) == 0
    assert (tmp_path / "pieeprom.bin").read_bytes() == (golden / "2712-2026-08-12.update-f.pieeprom.bin").read_bytes()
    assert (tmp_path / "pieeprom.sig").read_bytes() == (golden / "2712-2026-08-12.update-f.pieeprom.sig").read_bytes()
    assert (tmp_path / "bootcode5.bin").read_bytes() == (upstream / RECOVERY_2712).read_bytes()
    expected = ("SIGN_RECOVERY: 0\nUsing unsigned recovery.bin\n'recovery.original.bin' -> 'bootcode5.bin'\n"
                "Signing pieeprom.original.bin as pieeprom.signed_boot.bin\n"
                + _sig_block((golden / "sbr5-boot-conf.signed.sig").read_text())
                + "new-image: pieeprom.bin\nsource-image: pieeprom.signed_boot.bin\nconfig: boot.conf\n")
    assert capsys.readouterr().out == expected
    signed_boot = img.EepromImage((tmp_path / "pieeprom.signed_boot.bin").read_bytes())
    blocks = signature_blocks_2712(signed_boot.get_file("bootcode.bin"))
    assert [(b.sig_type, b.keynum) for b in blocks] == [("customer", 16), ("rpi", 0)]


def test_golden_2712_fr(upstream, golden, golden_env, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(_setup(upstream, tmp_path, IMAGE_2712, SBR5_CONF, True))
    assert main(["-fr", "-k", "example-private.pem"]) == 0
    assert (tmp_path / "bootcode5.bin").read_bytes() == \
        (golden / "2712-2026-08-12.update-fr.bootcode5.bin").read_bytes()
    assert (tmp_path / "pieeprom.bin").read_bytes() == (golden / "2712-2026-08-12.update-f.pieeprom.bin").read_bytes()
    out = capsys.readouterr().out
    assert out.startswith("SIGN_RECOVERY: 1\nSigning recovery.original.bin as bootcode5.bin\n")


def test_unsigned_synthetic(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src.bin").write_bytes(build_image())
    (tmp_path / "my.conf").write_bytes(b"[all]\nBOOT_ORDER=0xf1\n")
    (tmp_path / "out.img.bin").write_bytes(b"stale")
    assert main(["-i", "src.bin", "-c", "my.conf", "-o", "out.img.bin"]) == 0
    assert capsys.readouterr().out == "new-image: out.img.bin\nsource-image: src.bin\nconfig: my.conf\n"
    image = img.EepromImage((tmp_path / "out.img.bin").read_bytes())
    assert image.config == b"[all]\nBOOT_ORDER=0xf1\n"
    assert (tmp_path / "out.img.sig").read_text().splitlines()[1].startswith("ts: ")


def test_signed_synthetic_ab_with_firmware(tmp_path, monkeypatch, key_files, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIGN_FIRMWARE", "1")
    data = bytearray(build_image(size=2 * 1024 * 1024, ab=True, last_pad_to=img.PARTITION_END,
                                 bootcode=b"\x10" * 2000, bootsys=b"\x20" * 3000))
    (tmp_path / "pieeprom.original.bin").write_bytes(bytes(data))
    (tmp_path / "boot.conf").write_bytes(b"[all]\nSIGNED_BOOT=1\n")
    (tmp_path / "recovery.original.bin").write_bytes(b"\x30" * 1000)
    assert main(["-r", "-k", str(key_files["private"])]) == 0
    out = img.EepromImage((tmp_path / "pieeprom.bin").read_bytes())
    assert out.get_file("bootcode.bin")[:2000] == b"\x10" * 2000
    assert out.get_file("bootsys")[:3000] == b"\x20" * 3000
    assert signature_blocks_2712(out.get_file("bootsys"))[0].keynum == 16
    assert len((tmp_path / "bootcode5.bin").read_bytes()) == 1000 + 532
    assert "rsa2048: " in out.get_file("bootconf.sig").decode()


def test_errors(tmp_path, monkeypatch, key_files, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([]) == 3
    assert "source image" in capsys.readouterr().err
    (tmp_path / "pieeprom.original.bin").write_bytes(build_image())
    assert main([]) == 3
    assert "config file" in capsys.readouterr().err
    (tmp_path / "boot.conf").write_bytes(b"[all]\n")
    assert main(["-k", "missing.pem"]) == 3
    assert main(["-k", ""]) == 2
    assert main(["-k", str(key_files["small"])]) == 1
    assert "2048" in capsys.readouterr().err
    assert main(["-H", "definitely-not-a-wrapper-xyz", "-p", str(key_files["public"])]) == 3
    assert main(["-H", sys.executable]) == 2
    capsys.readouterr()
    assert main(["-z"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: update-pieeprom [-c CONF]") and "update-pieeprom: error:" in err
    assert not (tmp_path / "pieeprom.bin").exists()
    assert main(["-h"]) == 0
    assert capsys.readouterr().out.startswith("usage: update-pieeprom")


def _failing_wrapper(tmp_path: Path) -> Path:
    script = tmp_path / "broken-hsm"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.exit(3)\n")
    script.chmod(0o755)
    return script


def test_failing_run_keeps_previous_outputs(tmp_path, monkeypatch, key_files, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    # -f applies to BCM2712 images only: a 2 MiB A/B image.
    (tmp_path / "pieeprom.original.bin").write_bytes(
        build_image(size=2 * 1024 * 1024, ab=True, last_pad_to=img.PARTITION_END))
    (tmp_path / "boot.conf").write_bytes(b"[all]\nBOOT_ORDER=0xf41\n")
    (tmp_path / "recovery.original.bin").write_bytes(b"\x30" * 1000)
    assert main(["-f", "-k", str(key_files["private"])]) == 0
    names = ("pieeprom.bin", "pieeprom.sig", "bootcode5.bin", "pieeprom.signed_boot.bin")
    before = {name: (tmp_path / name).read_bytes() for name in names}
    capsys.readouterr()
    (tmp_path / "boot.conf").write_bytes(b"[all]\nBOOT_ORDER=0x1\n")
    failing = [
        ["-f", "-k", str(key_files["small"])],                              # bad key
        ["-f", "-H", str(_failing_wrapper(tmp_path)), "-p", str(key_files["public"])],  # HSM fails
        ["-f", "-r", "-k", str(key_files["public"])],                       # public key cannot sign
        ["-k", str(key_files["private"]), "-c", "missing.conf"],
    ]
    for argv in failing:
        assert main(argv) != 0, argv
        err = capsys.readouterr().err
        assert err.startswith("update-pieeprom: error: ") and err.count("\n") == 1, err
        assert {name: (tmp_path / name).read_bytes() for name in names} == before, argv
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_output_named_like_its_sig_is_refused(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pieeprom.original.bin").write_bytes(build_image())
    (tmp_path / "boot.conf").write_bytes(b"[all]\n")
    (tmp_path / "out.sig").write_bytes(b"keep me")
    assert main(["-o", "out.sig"]) == 2
    assert "out.sig" in capsys.readouterr().err
    assert (tmp_path / "out.sig").read_bytes() == b"keep me"


@pytest.mark.parametrize("target", ["outdir", "newdir/", ""])
def test_output_directory_or_empty_is_refused(tmp_path, monkeypatch, capsys, target: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pieeprom.original.bin").write_bytes(build_image())
    (tmp_path / "boot.conf").write_bytes(b"[all]\n")
    (tmp_path / "outdir").mkdir()
    assert main(["-o", target]) == 2
    err = capsys.readouterr().err
    assert err.startswith("update-pieeprom: error: ") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boot.conf", "outdir", "pieeprom.original.bin"]
    assert list((tmp_path / "outdir").iterdir()) == []


def test_failed_image_replace_rolls_back_sig(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pieeprom.original.bin").write_bytes(build_image())
    (tmp_path / "boot.conf").write_bytes(b"[all]\n")
    (tmp_path / "pieeprom.bin").write_bytes(b"old image")
    (tmp_path / "pieeprom.sig").write_bytes(b"old sig")
    real_replace = os.replace

    def replace(src, dst):
        if os.fspath(dst) == "pieeprom.bin":
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(common.os, "replace", replace)
    assert main([]) == 1
    assert "No space left" in capsys.readouterr().err
    assert (tmp_path / "pieeprom.bin").read_bytes() == b"old image"
    assert (tmp_path / "pieeprom.sig").read_bytes() == b"old sig"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boot.conf", "pieeprom.bin",
                                                          "pieeprom.original.bin", "pieeprom.sig"]


def test_write_files_atomically_removes_new_files_on_failure(tmp_path, monkeypatch) -> None:
    real_replace = os.replace

    def replace(src, dst):
        if os.fspath(dst).endswith("b.bin"):
            raise OSError(13, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(common.os, "replace", replace)
    with pytest.raises(common.ToolError, match="b.bin"):
        common.write_files_atomically([(str(tmp_path / "a.bin"), b"a"), (str(tmp_path / "b.bin"), b"b")])
    assert list(tmp_path.iterdir()) == []


def test_old_bootloader_refused_for_signing(tmp_path, monkeypatch, key_files, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pieeprom.original.bin").write_bytes(build_image(bootcode=b"BUILD_TIMESTAMP=1600000000\0"))
    (tmp_path / "boot.conf").write_bytes(b"[all]\n")
    assert main(["-k", str(key_files["private"])]) == 1
    assert "before secure-boot support" in capsys.readouterr().err


def test_sig_path_for() -> None:
    assert sig_path_for("pieeprom.bin") == "pieeprom.sig"
    assert sig_path_for("dir.x/image") == "dir.x/image.sig"
    assert sig_path_for("a.b.bin") == "a.b.sig"


def test_entry_point_subprocess(tmp_path) -> None:
    (tmp_path / "pieeprom.original.bin").write_bytes(build_image())
    (tmp_path / "boot.conf").write_bytes(b"[all]\n")
    result = subprocess.run([sys.executable, "-m", "rpiboot.eeprom.update_pieeprom_tool"], cwd=tmp_path,
                            capture_output=True, check=False, env={**os.environ, "SOURCE_DATE_EPOCH": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(b"config: boot.conf\n")
    assert (tmp_path / "pieeprom.sig").read_text().endswith("ts: 1\n")
