"""rpi-secure-boot-check on directories built with the project's own tools (generated keys,
synthetic images) and, where ../shared is present, on upstream's example key and golden images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rpiboot.eeprom import image as img
from rpiboot.eeprom.digest_tool import main as digest_main
from rpiboot.eeprom.secure_boot_check_tool import main
from rpiboot.eeprom.signing import key_hash, key_signer, pubkey_bin, sign_bootcode_2712
from rpiboot.eeprom.update_pieeprom_tool import main as update_main

from eeprom_helpers import PRIVATE_PEM, PUBLIC_PEM, SBR5_CONF, SBR_CONF, build_image

MIB = 1024 * 1024
CONFIG_TXT = "uart_2ndstage=1\n{pubkey}# comment: program_jtag_lock=1 stays off\n"


@pytest.fixture(scope="module")
def rpi_key() -> rsa.RSAPrivateKey:
    """Stands in for Raspberry Pi's own signing key (keynum 0) on the synthetic firmware."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _rpi_signed(payload: bytes, rpi_key: rsa.RSAPrivateKey) -> bytes:
    return sign_bootcode_2712(payload, key_signer(rpi_key), pubkey_bin(rpi_key), keynum=0, version=1)


def make_2712_dir(tmp: Path, key_file: Path, rpi_key: rsa.RSAPrivateKey, monkeypatch, *,
                  flags: tuple[str, ...] = ("-f",), program_pubkey: bool = True,
                  boot_conf: bytes = b"[all]\nBOOT_UART=1\nSIGNED_BOOT=1\n") -> Path:
    """A secure-boot-recovery5 directory made the way its README says, with update-pieeprom."""
    directory = tmp / "secure-boot-recovery5"
    directory.mkdir()
    image = build_image(size=2 * MIB, ab=True, last_pad_to=img.PARTITION_END,
                        bootcode=_rpi_signed(b"\x10" * 2000, rpi_key),
                        bootsys=_rpi_signed(b"\x20" * 3000, rpi_key), bootsys_slot=32 * 1024)
    (directory / "pieeprom.original.bin").write_bytes(image)
    (directory / "recovery.original.bin").write_bytes(_rpi_signed(b"\x30" * 5000, rpi_key))
    (directory / "boot.conf").write_bytes(boot_conf)
    (directory / "config.txt").write_text(CONFIG_TXT.format(pubkey="program_pubkey=1\n" if program_pubkey else ""))
    monkeypatch.chdir(directory)
    assert update_main([*flags, "-k", str(key_file)]) == 0
    monkeypatch.chdir(tmp)
    return directory


def make_2711_dir(tmp: Path, key_file: Path, monkeypatch) -> Path:
    directory = tmp / "secure-boot-recovery"
    directory.mkdir()
    (directory / "pieeprom.original.bin").write_bytes(build_image())
    (directory / "boot.conf").write_bytes(b"[all]\nSIGNED_BOOT=1\n")
    (directory / "config.txt").write_text("uart_2ndstage=1\nprogram_pubkey=1\n")
    (directory / "bootcode4.bin").write_bytes(b"\x44" * 4000)
    monkeypatch.chdir(directory)
    assert update_main(["-k", str(key_file)]) == 0
    monkeypatch.chdir(tmp)
    return directory


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def problem_lines(out: str) -> list[str]:
    lines = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    for line in lines:
        assert "; fix: " in line, line
    return lines


def test_2712_first_provisioning_is_ready(tmp_path, monkeypatch, key_files, rpi_key, capsys) -> None:
    directory = make_2712_dir(tmp_path, key_files["private"], rpi_key, monkeypatch)
    code, out, err = run(capsys, str(directory), "-k", str(key_files["public"]))
    assert code == 0, out + err
    assert problem_lines(out) == [] and err == ""
    expected_hash = key_hash(pubkey_bin(rsa_public(key_files["public"])))
    assert f"customer key hash (OTP CUSTOMER_KEY_HASH once programmed): {expected_hash}" in out
    assert "ok      pieeprom.bin (bootcode.bin): counter-signed with the key" in out
    assert "ok      pieeprom.bin (bootsys): counter-signed with the key" in out
    assert "ok      bootcode5.bin: not counter-signed" in out
    assert f"- program_pubkey=1: writes the key hash {expected_hash}" in out
    assert "program_jtag_lock" not in out.split("irreversible actions")[1]
    assert out.rstrip().endswith("ready: 0 problem(s), 0 warning(s)")


def rsa_public(path: Path) -> rsa.RSAPublicKey:
    return serialization.load_pem_public_key(path.read_bytes())  # type: ignore[return-value]


def test_wrong_key_is_a_problem(tmp_path, monkeypatch, key_files, rpi_key, capsys) -> None:
    directory = make_2712_dir(tmp_path, key_files["private"], rpi_key, monkeypatch)
    other = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), tmp_path / "other.pem")
    code, out, err = run(capsys, str(directory), "-k", str(other))
    assert code == 1
    problems = problem_lines(out)
    assert any(line.startswith("PROBLEM pieeprom.bin: holds a different public key") and
               f"update-pieeprom -f -k {other}" in line for line in problems), problems
    assert err.startswith("rpi-secure-boot-check: error: ") and err.count("\n") == 1


def test_program_pubkey_names_the_hash_recovery_will_write(tmp_path, monkeypatch, key_files,
                                                           capsys) -> None:
    """recovery.bin writes the hash of the key inside pieeprom.bin, whatever -k says."""
    directory = make_2711_dir(tmp_path, key_files["private"], monkeypatch)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = _pem(other_key, tmp_path / "other.pem")
    code, out, _ = run(capsys, str(directory), "-k", str(other))
    assert code == 1
    (action,) = [line for line in out.splitlines() if line.startswith("- program_pubkey=1")]
    embedded = key_hash(pubkey_bin(rsa_public(key_files["public"])))
    assert f"writes the key hash {embedded} " in action, action
    assert key_hash(pubkey_bin(other_key)) not in action
    (header,) = [line for line in out.splitlines() if line.startswith("customer key hash")]
    assert header.endswith(embedded), header


def test_without_key_uses_the_embedded_one(tmp_path, monkeypatch, key_files, rpi_key, capsys) -> None:
    directory = make_2712_dir(tmp_path, key_files["private"], rpi_key, monkeypatch)
    code, out, _ = run(capsys, str(directory))
    assert code == 0
    assert "no key given (-k)" in out
    assert key_hash(pubkey_bin(rsa_public(key_files["public"]))) in out


@pytest.mark.parametrize("damage,file,words", [
    ("sig", "pieeprom.sig", "its sha256 is not that of pieeprom.bin"),
    ("conf", "boot.conf", "differs from the configuration inside pieeprom.bin"),
    ("bootcode5", "bootcode5.bin", "is missing"),
    ("image", "pieeprom.bin", "is missing"),
])
def test_damaged_directory(tmp_path, monkeypatch, key_files, rpi_key, capsys, damage, file, words) -> None:
    directory = make_2712_dir(tmp_path, key_files["private"], rpi_key, monkeypatch)
    if damage == "sig":
        (directory / "pieeprom.sig").write_text("0" * 64 + "\nts: 1\n")
    elif damage == "conf":
        (directory / "boot.conf").write_bytes(b"[all]\nBOOT_UART=0\nSIGNED_BOOT=1\n")
    elif damage == "bootcode5":
        (directory / "bootcode5.bin").unlink()
    else:
        (directory / "pieeprom.bin").unlink()
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]))
    assert code == 1
    assert any(line.startswith(f"PROBLEM {file}: {words}") and "update-pieeprom -f -k" in line
               for line in problem_lines(out)), out


def test_unsigned_firmware_on_2712(tmp_path, monkeypatch, key_files, rpi_key, capsys) -> None:
    directory = make_2712_dir(tmp_path, key_files["private"], rpi_key, monkeypatch, flags=())
    (directory / "bootcode5.bin").write_bytes((directory / "recovery.original.bin").read_bytes())
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]))
    assert code == 1
    problems = problem_lines(out)
    assert any("PROBLEM pieeprom.bin (bootcode.bin): is not counter-signed" in p for p in problems)
    assert any("PROBLEM pieeprom.bin (bootsys): is not counter-signed" in p for p in problems)


def test_countersigned_recovery_for_locked_boards(tmp_path, monkeypatch, key_files, rpi_key, capsys) -> None:
    locked = make_2712_dir(tmp_path, key_files["private"], rpi_key, monkeypatch, flags=("-f", "-r"),
                           program_pubkey=False)
    code, out, _ = run(capsys, str(locked), "-k", str(key_files["private"]))
    assert code == 0, out
    assert "ok      bootcode5.bin: counter-signed with the key" in out
    assert "config.txt asks for no irreversible action" in out
    # The same counter-signed bootcode5.bin with program_pubkey=1: fresh boards refuse it.
    (locked / "config.txt").write_text("program_pubkey=1\n")
    code, out, _ = run(capsys, str(locked), "-k", str(key_files["private"]))
    assert code == 0
    assert "WARNING bootcode5.bin: is counter-signed: a board with no key in OTP yet refuses it" in out


def test_unsigned_recovery_for_locked_boards_is_a_problem(tmp_path, monkeypatch, key_files, rpi_key,
                                                         capsys) -> None:
    directory = make_2712_dir(tmp_path, key_files["private"], rpi_key, monkeypatch, program_pubkey=False)
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]))
    assert code == 1
    assert any(p.startswith("PROBLEM bootcode5.bin: is not counter-signed") and "update-pieeprom -f -r -k" in p
               for p in problem_lines(out))


def test_recovery_signed_with_another_key(tmp_path, monkeypatch, key_files, rpi_key, capsys) -> None:
    directory = make_2712_dir(tmp_path, key_files["private"], rpi_key, monkeypatch, program_pubkey=False)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed = sign_bootcode_2712((directory / "recovery.original.bin").read_bytes(), key_signer(other),
                                pubkey_bin(other), keynum=16)
    (directory / "bootcode5.bin").write_bytes(signed)
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]))
    assert code == 1
    assert "PROBLEM bootcode5.bin: is counter-signed with another key" in out


def test_signed_boot_not_set_is_a_warning(tmp_path, monkeypatch, key_files, rpi_key, capsys) -> None:
    directory = make_2712_dir(tmp_path, key_files["private"], rpi_key, monkeypatch,
                              boot_conf=b"[all]\nBOOT_UART=1\n# SIGNED_BOOT=1\n")
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]))
    assert code == 0
    assert "WARNING boot.conf: does not set SIGNED_BOOT=1" in out


def test_irreversible_actions_listed(tmp_path, monkeypatch, key_files, capsys) -> None:
    directory = make_2711_dir(tmp_path, key_files["private"], monkeypatch)
    (directory / "config.txt").write_text("program_pubkey=1\nrevoke_devkey=1\nprogram_jtag_lock=1\n"
                                          "program_rpiboot_gpio=6\n#program_rpiboot_gpio=8\n")
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]))
    assert code == 0, out
    listed = [line for line in out.split("cannot be undone):\n")[1].splitlines() if line.startswith("- ")]
    assert [line.split(":")[0] for line in listed] == [
        "- program_pubkey=1", "- revoke_devkey=1", "- program_jtag_lock=1", "- program_rpiboot_gpio=6"]
    (directory / "config.txt").write_text("program_rpiboot_gpio=3\nprogram_jtag_lock=1\n")
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]))
    assert code == 1
    assert "PROBLEM config.txt: program_rpiboot_gpio=3 is not one of 2, 4, 5, 6, 7, 8" in out
    assert "WARNING config.txt: program_jtag_lock has no effect" in out


def test_2711_directory(tmp_path, monkeypatch, key_files, capsys) -> None:
    directory = make_2711_dir(tmp_path, key_files["private"], monkeypatch)
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]))
    assert code == 0, out
    assert "BCM2711 secure-boot directory" in out and "(recovery.bin 2025-05-16 and newer" in out
    (directory / "bootcode4.bin").unlink()
    (directory / "bootcode4.bin").symlink_to("../firmware/2711/recovery.bin")
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]))
    assert code == 1
    assert "PROBLEM bootcode4.bin: is a symlink to '../firmware/2711/recovery.bin', which does not exist" in out


@pytest.mark.parametrize("chip", ["2711", "2712"])
def test_second_stage_checked_out_as_link_text_is_a_problem(tmp_path, monkeypatch, key_files,
                                                            rpi_key, capsys, chip) -> None:
    """A clone without symlink support leaves bootcode4.bin / recovery.original.bin as the text
    of the link: no ROM runs that, so the directory is not ready."""
    if chip == "2711":
        directory = make_2711_dir(tmp_path, key_files["private"], monkeypatch)
        name, link = "bootcode4.bin", b"../firmware/2711/recovery.bin"
    else:
        directory = make_2712_dir(tmp_path, key_files["private"], rpi_key, monkeypatch)
        name, link = "bootcode5.bin", b"../firmware/2712/recovery.bin"
    (directory / name).write_bytes(link)
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]))
    assert code == 1, out
    (line,) = [line for line in problem_lines(out) if line.startswith(f"PROBLEM {name}:")]
    assert "symlink checked out as a file" in line and link.decode() in line


def test_2712_clone_without_submodule_is_named(tmp_path, capsys) -> None:
    """secure-boot-recovery5 from a usbboot clone made without --recurse-submodules: its
    pieeprom.original.bin and recovery.original.bin are dangling links. Still a BCM2712
    directory, and the links are named with the way out."""
    directory = tmp_path / "secure-boot-recovery5"
    directory.mkdir()
    (directory / "boot.conf").write_bytes(b"[all]\nSIGNED_BOOT=1\n")
    (directory / "config.txt").write_text("uart_2ndstage=1\n")
    (directory / "pieeprom.original.bin").symlink_to("../firmware/2712/pieeprom.bin")
    (directory / "recovery.original.bin").symlink_to("../firmware/2712/recovery.bin")
    code, out, _ = run(capsys, str(directory))
    assert code == 1
    assert "BCM2712 secure-boot directory" in out and "bootcode4.bin" not in out
    problems = problem_lines(out)
    for name in ("pieeprom.original.bin", "recovery.original.bin"):
        assert any(line.startswith(f"PROBLEM {name}: is a symlink to") and "submodule" in line
                   for line in problems), problems


def test_unsigned_image_is_a_problem(tmp_path, monkeypatch, key_files, capsys) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "pieeprom.original.bin").write_bytes(build_image())
    (directory / "boot.conf").write_bytes(b"[all]\n")
    monkeypatch.chdir(directory)
    assert update_main([]) == 0                 # no -k: unsigned, empty pubkey.bin
    (directory / "config.txt").write_text("program_pubkey=1\n")
    (directory / "bootcode4.bin").write_bytes(b"\x44" * 4000)
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]))
    assert code == 1
    assert "PROBLEM pieeprom.bin: holds no public key" in out


def test_boot_image(tmp_path, monkeypatch, key_files, rpi_key, capsys) -> None:
    directory = make_2712_dir(tmp_path, key_files["private"], rpi_key, monkeypatch)
    boot = tmp_path / "os" / "boot.img"
    boot.parent.mkdir()
    boot.write_bytes(b"FAT image stand-in" * 1000)
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]), "--boot-image", str(boot))
    assert code == 1
    assert f"PROBLEM {boot.with_suffix('.sig')}: is missing" in out
    assert f"rpi-eeprom-digest -k {key_files['private']} -i {boot}" in out
    assert digest_main(["-k", str(key_files["private"]), "-i", str(boot), "-o", str(boot.with_suffix(".sig"))]) == 0
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]), "--boot-image", str(boot))
    assert code == 0, out
    assert "sha256 and rsa2048 signature match" in out
    other = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), tmp_path / "o.pem")
    assert digest_main(["-k", str(other), "-i", str(boot), "-o", str(boot.with_suffix(".sig"))]) == 0
    code, out, _ = run(capsys, str(directory), "-k", str(key_files["private"]), "--boot-image", str(boot))
    assert code == 1
    assert "rsa2048 signature of" in out and "does not verify with the key" in out


def test_missing_inputs_exit_3(tmp_path, key_files, capsys) -> None:
    assert run(capsys, str(tmp_path / "none"))[0] == 3
    assert run(capsys, str(tmp_path), "-k", str(tmp_path / "none.pem"))[0] == 3
    code, _, err = run(capsys, str(tmp_path), "--boot-image", str(tmp_path / "boot.img"))
    assert code == 3 and err.count("\n") == 1
    assert run(capsys)[0] == 2


# -- upstream example key and golden images (skipped without ../shared) ----


def test_upstream_2712_example(upstream, golden, tmp_path, capsys) -> None:
    directory = tmp_path / "secure-boot-recovery5"
    directory.mkdir()
    shutil.copyfile(upstream / SBR5_CONF, directory / "boot.conf")
    shutil.copyfile(golden / "2712-2026-08-12.update-f.pieeprom.bin", directory / "pieeprom.bin")
    shutil.copyfile(golden / "2712-2026-08-12.update-f.pieeprom.sig", directory / "pieeprom.sig")
    shutil.copyfile(upstream / "rpi-eeprom/firmware-2712/recovery.bin", directory / "bootcode5.bin")
    config = (upstream / "usbboot/secure-boot-recovery5/config.txt").read_text()
    (directory / "config.txt").write_text(config.replace("#program_pubkey=1", "program_pubkey=1"))
    code, out, _ = run(capsys, str(directory), "-k", str(upstream / PUBLIC_PEM))
    assert code == 0, out
    # The hash usbboot's secure-boot-recovery5 README shows for the example key.
    assert "8251a63a2edee9d8f710d63e9da5d639064929ce15a2238986a189ac6fcd3cee" in out
    assert "WARNING boot.conf: does not set SIGNED_BOOT=1" in out     # upstream's own boot.conf
    # -fr output: the counter-signed recovery.bin golden file.
    shutil.copyfile(golden / "2712-2026-08-12.update-fr.bootcode5.bin", directory / "bootcode5.bin")
    code, out, _ = run(capsys, str(directory), "-k", str(upstream / PUBLIC_PEM))
    assert "WARNING bootcode5.bin: is counter-signed" in out


def test_upstream_2711_example(upstream, golden, tmp_path, capsys) -> None:
    directory = tmp_path / "secure-boot-recovery"
    directory.mkdir()
    shutil.copyfile(upstream / SBR_CONF, directory / "boot.conf")
    shutil.copyfile(golden / "2711-2026-08-04.update.pieeprom.bin", directory / "pieeprom.bin")
    shutil.copyfile(golden / "2711-2026-08-04.update.pieeprom.sig", directory / "pieeprom.sig")
    shutil.copyfile(upstream / "rpi-eeprom/firmware-2711/recovery.bin", directory / "bootcode4.bin")
    shutil.copyfile(upstream / "usbboot/secure-boot-recovery/config.txt", directory / "config.txt")
    code, out, _ = run(capsys, str(directory), "-k", str(upstream / PRIVATE_PEM))
    assert code == 0, out
    assert "8251a63a2edee9d8f710d63e9da5d639064929ce15a2238986a189ac6fcd3cee" in out
    assert "config.txt asks for no irreversible action" in out
    # Upstream's 2711 image is not valid for a 2712 directory check and vice versa: a
    # pieeprom.sig of another image is caught.
    shutil.copyfile(golden / "2712-2026-08-12.update-f.pieeprom.sig", directory / "pieeprom.sig")
    code, out, _ = run(capsys, str(directory), "-k", str(upstream / PRIVATE_PEM))
    assert code == 1 and "PROBLEM pieeprom.sig: its sha256 is not that of pieeprom.bin" in out


def test_corrupt_image_and_control_characters(tmp_path, capsys) -> None:
    (tmp_path / "pieeprom.bin").write_bytes(b"\x12" * 1000)
    (tmp_path / "pieeprom.sig").write_text("not a digest\n")
    (tmp_path / "config.txt").write_text("program_rpiboot_gpio=\x1b[31m6\n")
    code, out, err = run(capsys, str(tmp_path))
    assert code == 1 and "\x1b" not in out + err
    problems = problem_lines(out)
    assert "PROBLEM pieeprom.bin: expected image size 524288 or 2097152 bytes, got 1000 bytes" in out
    assert "PROBLEM config.txt: program_rpiboot_gpio=?[31m6 is not one of 2, 4, 5, 6, 7, 8" in out
    assert len(problems) == 4   # the .sig, the image, the GPIO, no bootcode4.bin
