"""Firmware roles in-process: boards whose requests depend on the boot directory they get."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from rpiboot.api import boot
from rpiboot.eeprom import image as img
from rpiboot.errors import ExitCode
from rpiboot.follow import block_devices
from rpiboot.simulator import VirtualDisk
from rpiboot.simulator.firmware_roles import role_report, virtual_board
from rpiboot.simulator.in_process import VirtualBus
from rpiboot.simulator.signatures import pubkey_bin, pubkey_from_pem

from operator_support import Collector, fast_options


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pubkey(key: rsa.RSAPrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return pubkey_bin(numbers.n, numbers.e)


def _sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _sig(data: bytes, key: rsa.RSAPrivateKey | None = None) -> bytes:
    text = f"{hashlib.sha256(data).hexdigest()}\nts: 1700000000\n"
    if key is not None:
        text += f"rsa2048: {_sign(key, data).hex()}\n"
    return text.encode()


def _eeprom(pubkey: bytes = b"\0" * 264, conf_signer: rsa.RSAPrivateKey | None = None) -> bytes:
    """A minimal 512 KiB EEPROM image: bootcode, pubkey.bin, bootconf.txt and, with
    ``conf_signer``, bootconf.sig (as update-pieeprom -k makes it)."""
    conf = b"[all]\nBOOT_UART=1\n"
    sections = [("pubkey.bin", pubkey), (img.BOOTCONF_TXT, conf)]
    if conf_signer is not None:
        sections.append((img.BOOTCONF_SIG, _sig(conf, conf_signer)))
    out = bytearray(struct.pack(">LL", img.MAGIC, 1000) + b"\x11" * 1000)
    for name, data in sections:
        out += b"\xff" * (img.align8(len(out)) - len(out))
        out += img.build_file_section(name, data)
    out += b"\xff" * (512 * 1024 - len(out))
    return bytes(out)


def _countersigned(key: rsa.RSAPrivateKey) -> bytes:
    """A bootcode5.bin whose outermost block is a customer (key number 16) signature."""
    payload = b"bootcode5 " * 100 + struct.pack("<III", 1000, 16, 0)
    return payload + _sign(key, payload) + _pubkey(key)


def _directory(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _boot(bus: VirtualBus, directory: Path, **options) -> tuple[ExitCode, Collector]:
    events = Collector()
    result = boot(fast_options(directory=directory, **options), on_event=events,
                  transport=bus)
    return result.exit_code, events


def _files(pi, stage: int | None = None) -> list[str]:
    return [r.name for r in pi.received if r.kind == "file" and r.value
            and (stage is None or r.stage == stage)]


def _acked(pi) -> dict[str, str]:
    pairs = [r.name[1:].split("*", 1) for r in pi.received if r.kind == "ack"
             and r.name.startswith("*")]
    return dict(pairs)


def _recovery_dir(root: Path, config: bytes = b"", image: bytes | None = None,
                  sig: bytes | None = None) -> Path:
    image = _eeprom() if image is None else image
    files = {"bootcode4.bin": b"recovery.bin " * 50, "bootcode5.bin": b"recovery5 " * 50,
             "config.txt": config, "pieeprom.bin": image,
             "pieeprom.sig": _sig(image) if sig is None else sig}
    return _directory(root, files)


def test_recovery_flashes_a_matching_image_and_stops(tmp_path: Path) -> None:
    directory = _recovery_dir(tmp_path / "recovery", b"uart_2ndstage=1\n")
    pi = virtual_board("2711", (3,), ["recovery"])
    code, _ = _boot(VirtualBus([pi]), directory)
    assert code == ExitCode.OK and pi.violations == []
    assert _files(pi) == ["config.txt", "pieeprom.sig", "pieeprom.bin"]
    image = (directory / "pieeprom.bin").read_bytes()
    assert pi.board.eeprom_sha256 == hashlib.sha256(image).hexdigest()
    assert _acked(pi)["EEPROM_UPDATE"] == "success"
    assert _acked(pi)["EEPROM_HASH"] == pi.board.eeprom_sha256
    assert "SECURE_BOOT_PROVISION" not in _acked(pi)      # no program_pubkey=1
    assert pi.halted  # no recovery_reboot=1: recovery.bin stops
    assert role_report(pi)["stages"][0]["never_received"] == []


def test_recovery_refuses_an_image_whose_sig_does_not_match(tmp_path: Path) -> None:
    directory = _recovery_dir(tmp_path / "r", sig=_sig(b"another image"))
    pi = virtual_board("2711", (3,), ["recovery"])
    _boot(VirtualBus([pi]), directory)
    assert pi.board.eeprom_sha256 is None
    assert _acked(pi)["EEPROM_UPDATE"] == "failed"
    assert "does not match" in pi.board.refusals[0]


def test_recovery_metadata_off_and_missing_image_reported(tmp_path: Path) -> None:
    directory = _recovery_dir(tmp_path / "r", b"recovery_metadata=0\n")
    (directory / "pieeprom.bin").unlink()
    pi = virtual_board("2712", (2,), ["recovery5"])
    code, _ = _boot(VirtualBus([pi]), directory)
    assert code == ExitCode.OK
    assert _acked(pi) == {}
    assert role_report(pi)["stages"][0]["never_received"] == ["pieeprom.bin"]
    assert any("nothing flashed" in text for text in pi.board.events)


def test_eeprom_then_reentry_then_gadget_with_disk(tmp_path: Path) -> None:
    """What the provisioning pipeline does: recovery (recovery_reboot=1), the ROM again at the
    same port, then mass-storage-gadget64 and the disk below the port."""
    recovery = _recovery_dir(tmp_path / "recovery", b"recovery_reboot=1\n")
    gadget = _directory(tmp_path / "msg", {"bootcode4.bin": b"bootloader " * 80,
                                           "config.txt": b"boot_ramdisk=1\n",
                                           "boot.img": b"FAT ramdisk " * 500})
    disk = VirtualDisk(tmp_path / "emmc.img", 1 << 20)
    pi = virtual_board("2711", (3,), ["recovery", "mass-storage-gadget"], disks=[disk])
    bus = VirtualBus([pi], sysfs_root=tmp_path / "sys", dev_root=tmp_path / "dev")
    assert _boot(bus, recovery)[0] == ExitCode.OK
    assert not pi.halted and pi.stage_index == 2  # back in the ROM
    code, events = _boot(bus, gadget, follow=3.0, sysfs_root=tmp_path / "sys")
    assert code == ExitCode.OK and pi.violations == []
    assert _files(pi, 3) == ["config.txt", "boot.img"]
    assert events.of("device_followed")[0].data["block_devices"] == ["sda"]
    assert block_devices(tmp_path / "sys", "1-3") == ["sda"]


def test_gadget_without_boot_ramdisk_never_becomes_the_gadget(tmp_path: Path) -> None:
    directory = _directory(tmp_path / "d", {"bootcode4.bin": b"b" * 100, "config.txt": b"# none\n",
                                            "boot.img": b"ramdisk"})
    pi = virtual_board("2711", (3,), ["mass-storage-gadget"])
    _boot(VirtualBus([pi]), directory)
    assert pi.halted and "boot.img" not in _files(pi)
    assert role_report(pi)["stages"][0]["never_received"] == ["boot.img"]
    assert role_report(pi)["stages"][0]["never_requested"] == ["boot.img"]


def _secure_dir(root: Path, key: rsa.RSAPrivateKey | None, signed_with=None) -> Path:
    ramdisk = b"signed ramdisk " * 300
    files = {"bootcode4.bin": b"b" * 100, "config.txt": b"boot_ramdisk=1\n",
             "boot.img": ramdisk}
    if signed_with is not None:
        files["boot.sig"] = _sig(ramdisk, signed_with)
    return _directory(root, files)


@pytest.mark.parametrize("signer", ["right", "wrong", "unsigned"])
def test_secure_board_checks_boot_img(tmp_path: Path, key: rsa.RSAPrivateKey,
                                      signer: str) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed_with = {"right": key, "wrong": other, "unsigned": None}[signer]
    directory = _secure_dir(tmp_path / "d", key, signed_with)
    pubkey = _pubkey(key)
    pi = virtual_board("2711", (3,), ["secure-boot"], eeprom_pubkey=pubkey,
                       otp_key_hash=hashlib.sha256(pubkey).hexdigest())
    _boot(VirtualBus([pi]), directory)
    if signer == "right":
        assert not pi.halted and pi.stage_index == 2 and pi.board.refusals == []
    else:
        assert pi.halted and "boot.img" in pi.board.refusals[0]


def test_2712_rom_refuses_bootcode5_not_countersigned(tmp_path: Path,
                                                      key: rsa.RSAPrivateKey) -> None:
    pubkey = _pubkey(key)
    payload = b"bootcode5 " * 100 + struct.pack("<III", 1000, 0, 0)
    signed = payload + _sign(key, payload) + pubkey
    for name, bootcode, accepted in (("plain", b"bootcode5 " * 100, False),
                                     ("signed", signed, True)):
        directory = _secure_dir(tmp_path / name, key, key)
        (directory / "bootcode5.bin").write_bytes(bootcode)
        pi = virtual_board("2712", (2,), ["secure-boot"], eeprom_pubkey=pubkey,
                           otp_key_hash=hashlib.sha256(pubkey).hexdigest())
        code, _ = _boot(VirtualBus([pi]), directory)
        assert (code == ExitCode.OK) is accepted, name
        assert bool(pi.board.refusals) is not accepted


@pytest.mark.parametrize("role", ["recovery5", "mass-storage-gadget", "secure-boot"])
def test_2712_rom_without_key_refuses_a_countersigned_bootcode5(tmp_path: Path,
                                                                key: rsa.RSAPrivateKey,
                                                                role: str) -> None:
    """usbboot's secure-boot-recovery5 and mass-storage-gadget64 READMEs: a counter-signed
    recovery.bin / firmware fails on a Pi 5 without secure boot (the ROM checks it against a
    zero key hash)."""
    directory = _secure_dir(tmp_path / "d", key, key)
    _directory(directory, {"bootcode5.bin": _countersigned(key),
                           "pieeprom.bin": _eeprom(), "pieeprom.sig": _sig(_eeprom())})
    pi = virtual_board("2712", (2,), [role])
    code, _ = _boot(VirtualBus([pi]), directory)
    assert code != ExitCode.OK
    assert pi.board.refusals and "bootcode5.bin" in pi.board.refusals[0]


def test_2712_locked_board_refuses_a_plain_recovery(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    """Once the key is in OTP, recovery.bin (bootcode5.bin) must be counter-signed too."""
    pubkey = _pubkey(key)
    image = _eeprom(pubkey, conf_signer=key)
    directory = _recovery_dir(tmp_path / "r", b"", image)          # bootcode5.bin not signed
    pi = virtual_board("2712", (2,), ["recovery5"], eeprom_pubkey=pubkey,
                       otp_key_hash=hashlib.sha256(pubkey).hexdigest())
    code, _ = _boot(VirtualBus([pi]), directory)
    assert code != ExitCode.OK and pi.board.eeprom_sha256 is None
    assert "bootcode5.bin" in pi.board.refusals[0]


def test_program_pubkey_secures_later_boots(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    pubkey = _pubkey(key)
    image = _eeprom(pubkey, conf_signer=key)
    recovery = _recovery_dir(tmp_path / "r", b"program_pubkey=1\nrecovery_reboot=1\n", image)
    unsigned = _secure_dir(tmp_path / "msg", key, None)
    payload = b"bootcode5 " * 100 + struct.pack("<III", 1000, 0, 0)
    (unsigned / "bootcode5.bin").write_bytes(payload + _sign(key, payload) + pubkey)
    pi = virtual_board("2712", (2,), ["recovery5", "secure-boot"])
    bus = VirtualBus([pi])
    _boot(bus, recovery)
    assert pi.board.otp.customer_key_hash == hashlib.sha256(pubkey).hexdigest()
    # usbboot's secure-boot-recovery README shows this key in the metadata of a provisioning
    assert _acked(pi)["SECURE_BOOT_PROVISION"] == "success"
    assert pi.board.eeprom_pubkey == pubkey and pi.board.refusals == []
    _boot(bus, unsigned)
    assert pi.halted and _files(pi, 3) == ["config.txt", "boot.img"]
    assert pi.board.refusals == ["boot.img: unsigned (no boot.sig with an rsa2048 signature)"]


@pytest.mark.parametrize("chip, role", [("2711", "recovery"), ("2712", "recovery5")])
def test_locked_board_takes_an_update_built_like_upstream(tmp_path: Path, key: rsa.RSAPrivateKey,
                                                          chip: str, role: str) -> None:
    """usbboot's update-pieeprom.sh writes pieeprom.sig as a plain digest (no rsa2048 line);
    what a board with the key in OTP needs is its key in the image and bootconf.sig signed
    with it (secure-boot-recovery README)."""
    pubkey = _pubkey(key)
    image = _eeprom(pubkey, conf_signer=key)
    directory = _recovery_dir(tmp_path / "r", b"", image)   # pieeprom.sig: sha256 + ts only
    (directory / "bootcode5.bin").write_bytes(_countersigned(key))  # update-pieeprom -f -r
    pi = virtual_board(chip, (3,), [role], eeprom_pubkey=pubkey,
                       otp_key_hash=hashlib.sha256(pubkey).hexdigest())
    _boot(VirtualBus([pi]), directory)
    assert pi.board.refusals == [] and _acked(pi)["EEPROM_UPDATE"] == "success"


def test_update_pieeprom_intermediates_are_not_reported_untested(tmp_path: Path,
                                                                 key: rsa.RSAPrivateKey) -> None:
    """update-pieeprom -f leaves pieeprom.signed_boot.bin beside pieeprom.bin (usbboot ignores
    *signed_boot* in git): a build input, not a file the board should ask for."""
    from rpiboot.simulator.board_spec import directory_warnings
    pubkey = _pubkey(key)
    image = _eeprom(pubkey, conf_signer=key)
    directory = _recovery_dir(tmp_path / "r", b"", image)
    _directory(directory, {"bootcode5.bin": _countersigned(key),
                           "pieeprom.signed_boot.bin": image, "pieeprom.original.bin": image})
    pi = virtual_board("2712", (3,), ["recovery5"], eeprom_pubkey=pubkey,
                       otp_key_hash=hashlib.sha256(pubkey).hexdigest())
    _boot(VirtualBus([pi]), directory)
    assert pi.board.refusals == [] and directory_warnings(pi, directory) == []


@pytest.mark.parametrize("case", ["config signed with another key", "config unsigned",
                                  "another key in the image"])
def test_locked_board_refuses_an_update_its_key_did_not_sign(tmp_path: Path,
                                                             key: rsa.RSAPrivateKey,
                                                             case: str) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    image = {"config signed with another key": _eeprom(_pubkey(key), conf_signer=other),
             "config unsigned": _eeprom(_pubkey(key)),
             "another key in the image": _eeprom(_pubkey(other), conf_signer=other)}[case]
    directory = _recovery_dir(tmp_path / "r", b"", image)
    pi = virtual_board("2711", (3,), ["recovery"], eeprom_pubkey=_pubkey(key),
                       otp_key_hash=hashlib.sha256(_pubkey(key)).hexdigest())
    _boot(VirtualBus([pi]), directory)
    assert _acked(pi)["EEPROM_UPDATE"] == "failed" and pi.board.eeprom_sha256 is None
    assert pi.board.refusals and "secure boot" in pi.board.refusals[0]


def test_program_pubkey_needs_a_config_signed_with_the_image_key(tmp_path: Path,
                                                                 key: rsa.RSAPrivateKey) -> None:
    """recovery.bin verifies bootconf.sig with the image's key before it writes OTP (the UART
    log in usbboot's secure-boot-recovery README)."""
    image = _eeprom(_pubkey(key))                                # no bootconf.sig
    directory = _recovery_dir(tmp_path / "r", b"program_pubkey=1\n", image)
    pi = virtual_board("2711", (3,), ["recovery"])
    _boot(VirtualBus([pi]), directory)
    assert pi.board.otp.customer_key_hash is None
    assert any("program_pubkey=1" in text for text in pi.board.refusals), pi.board.refusals
    assert _acked(pi)["SECURE_BOOT_PROVISION"] == "failed"


def test_pem_keys_read_without_cryptography(key: rsa.RSAPrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization

    for pem in (key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo),
                key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())):
        assert pubkey_from_pem(pem) == _pubkey(key)


def test_unknown_role_and_wrong_chip() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        virtual_board("2711", (1,), ["flash-everything"])
    with pytest.raises(ValueError, match="BCM2712"):
        virtual_board("2711", (1,), ["recovery5"])


@pytest.mark.parametrize("chip, second, files", [
    ("2837", "bootcode.bin", ["start.elf"]),
    ("2711", "bootcode4.bin", ["config.txt", "start4.elf"]),
])
def test_msd_ends_as_mass_storage(tmp_path: Path, chip: str, second: str,
                                  files: list[str]) -> None:
    directory = _directory(tmp_path / "msd", {second: b"msd " * 100, "config.txt": b"# msd\n",
                                              "start.elf": b"s" * 500, "start4.elf": b"4" * 500})
    disk = VirtualDisk(tmp_path / "sd.img", 1 << 20)
    pi = virtual_board(chip, (4,), ["msd"], disks=[disk])
    bus = VirtualBus([pi], sysfs_root=tmp_path / "sys", dev_root=tmp_path / "dev")
    code, events = _boot(bus, directory, follow=3.0, sysfs_root=tmp_path / "sys")
    assert code == ExitCode.OK and _files(pi) == files
    assert events.of("device_followed")[0].data["block_devices"] == ["sda"]
    with pytest.raises(ValueError, match="not BCM2712"):
        virtual_board("2712", (4,), ["msd"])


def test_board_spec_with_role_and_otp_key(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization

    from rpiboot.simulator.board_spec import build_pi, parse_pi_option

    pem = tmp_path / "key.pem"
    pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    spec = parse_pi_option(f"2712:1-1.4,role=secure-boot,otp-key={pem},disk=1M", 0)
    pi = build_pi(spec, 0, str(tmp_path))
    assert pi.port_path == "1-1.4" and pi.chip == "2712"
    assert pi.board.otp.customer_key_hash == hashlib.sha256(_pubkey(key)).hexdigest()
    assert pi.board.eeprom_pubkey == _pubkey(key)
    assert [type(s).__name__ for s in pi.stages] == ["RomStage", "ServerStage", "FinalStage"]
    assert pi.stages[-1].disks[0].size == 1 << 20
