"""Check a usbboot secure-boot-recovery(5) directory before it programs a board's OTP for good.

What the boot ROM, recovery.bin and the bootloader check, from usbboot's secure-boot-recovery
READMEs and config.txt files, rpi-eeprom-config and update-pieeprom.sh (facts, not code):

* ``pieeprom.sig`` holds the sha256 of ``pieeprom.bin``; recovery.bin refuses a mismatch;
* ``pieeprom.bin`` carries ``pubkey.bin`` (its sha256 is what ``program_pubkey=1`` writes to OTP
  as CUSTOMER_KEY_HASH) and ``bootconf.sig`` (sha256 + RSA-2048 signature of ``bootconf.txt``,
  checked with that key);
* BCM2712: the ROM of a board with a key in OTP only runs second stages counter-signed with it
  (key number 16): ``bootcode.bin`` and ``bootsys`` inside ``pieeprom.bin`` (``update-pieeprom
  -f``) and ``bootcode5.bin`` (``-f -r``).  A board with no key in OTP yet refuses a
  counter-signed ``bootcode5.bin`` (usbboot's secure-boot-recovery5 README);
* ``config.txt`` here configures recovery.bin: ``program_pubkey``, ``revoke_devkey``,
  ``program_jtag_lock`` and ``program_rpiboot_gpio`` change the chip for ever;
  ``program_jtag_lock`` has no effect unless the key hash is programmed; recovery.bin from
  2025-05-16 on also revokes the development key when it programs the key on BCM2711;
* an OS ``boot.img`` needs a ``boot.sig`` (sha256 + RSA-2048 signature) made with the same key;
  ``SIGNED_BOOT=1`` in the bootloader configuration makes the bootloader require it.

Assumed (not documented upstream): a board that reaches this directory without
``program_pubkey`` is already locked to the key, so on BCM2712 ``bootcode5.bin`` must then be
counter-signed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import image as img
from .common import EXIT_MISSING_INPUT, ToolError
from .firmware_files import not_firmware
from .signing import (PUBKEY_BIN_LEN, SIGNATURE_LEN, RsaKey, key_hash, load_rsa_key, pubkey_bin,
                      public_key_from_bin, sig_file_signature, signature_blocks_2712, verify_pkcs1v15)

SUPPORTED_RPIBOOT_GPIOS = ("2", "4", "5", "6", "7", "8")
OK, INFO, WARNING, PROBLEM = "ok", "info", "warning", "problem"
NOT_COUNTERSIGNED = "is not counter-signed with a customer key"


@dataclass(frozen=True)
class Finding:
    level: str
    file: str
    message: str
    fix: str = ""


@dataclass
class Report:
    directory: Path
    chip: str
    key_source: str
    pubkey: bytes | None = None            # pubkey.bin checked against: from -k, else the image's
    signing_key: str = ""                  # -k when it is a private key (for the fix commands)
    embedded_pubkey: bytes | None = None   # pubkey.bin inside pieeprom.bin: what OTP will get
    findings: list[Finding] = field(default_factory=list)
    irreversible: list[str] = field(default_factory=list)

    @property
    def key_hash(self) -> str | None:
        return key_hash(self.pubkey) if self.pubkey is not None else None

    @property
    def otp_key_hash(self) -> str | None:
        """What program_pubkey=1 writes: the hash of the key inside pieeprom.bin (else -k's)."""
        return key_hash(self.embedded_pubkey) if self.embedded_pubkey else self.key_hash

    @property
    def key(self) -> RsaKey | None:
        return public_key_from_bin(self.pubkey) if self.pubkey is not None else None

    def add(self, level: str, file: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(level, file, message, fix))

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == PROBLEM]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]


@dataclass
class Inputs:
    directory: Path
    key_path: str | None = None
    boot_image: Path | None = None


def check_directory(inputs: Inputs) -> Report:
    """Run every check; missing DIR / key / boot image raise ToolError (exit 3)."""
    directory = inputs.directory
    if not directory.is_dir():
        raise ToolError(f"directory '{directory}' not found", EXIT_MISSING_INPUT)
    if inputs.boot_image is not None and not inputs.boot_image.is_file():
        raise ToolError(f"boot image '{inputs.boot_image}' not found", EXIT_MISSING_INPUT)
    key = load_rsa_key(inputs.key_path) if inputs.key_path else None
    chip = _detect_chip(directory)
    signing_key = (inputs.key_path or "") if key is not None and is_private_key(key) else ""
    report = Report(directory, chip, inputs.key_path or "",
                    pubkey_bin(key) if key is not None else None, signing_key=signing_key)
    _check_sources(report)
    eeprom = _check_pieeprom(report)
    if eeprom is not None:
        _check_config_signature(report, eeprom)
        _check_boot_conf(report, eeprom)
    config = _check_config_txt(report)
    program_pubkey = config.get("program_pubkey", "0") not in ("", "0")
    if chip == "2712":
        if eeprom is not None and report.pubkey is not None:
            _check_firmware_2712(report, eeprom)
        _check_bootcode5(report, program_pubkey)
    else:
        _check_bootcode4(report)
    if inputs.boot_image is not None:
        _check_boot_image(report, inputs.boot_image)
    return report


# -- helpers ----------------------------------------------------------------


def is_private_key(key: RsaKey) -> bool:
    from cryptography.hazmat.primitives.asymmetric import rsa
    return isinstance(key, rsa.RSAPrivateKey)


def _fix_update(report: Report, firmware: bool = False, recovery: bool = False) -> str:
    flags = "-f -r " if recovery else "-f " if firmware or report.chip == "2712" else ""
    return f"cd {report.directory} && update-pieeprom {flags}-k {report.signing_key or 'PRIVATE_KEY.pem'}"


def _detect_chip(directory: Path) -> str:
    for name in ("pieeprom.bin", "pieeprom.original.bin"):
        path = directory / name
        if path.is_file():
            return "2712" if path.stat().st_size == 2 * 1024 * 1024 else "2711"
    # lexists: in a clone without the rpi-eeprom submodule these are dangling links.
    if any(os.path.lexists(directory / name) for name in ("bootcode5.bin", "recovery.original.bin")):
        return "2712"
    return "2711"


def _check_sources(report: Report) -> None:
    """The inputs update-pieeprom builds from, when they are links into a missing submodule."""
    for name in ("pieeprom.original.bin", "recovery.original.bin"):
        path = report.directory / name
        if path.is_symlink() and not path.exists():
            report.add(PROBLEM, name, f"is a symlink to '{os.readlink(path)}', which does not exist "
                       "(usbboot cloned without its rpi-eeprom submodule)",
                       "git submodule update --init (in the usbboot checkout), then "
                       + _fix_update(report))


def _read(report: Report, name: str, fix: str) -> bytes | None:
    path = report.directory / name
    if path.is_symlink() and not path.exists():
        report.add(PROBLEM, name, f"is a symlink to '{os.readlink(path)}', which does not exist",
                   "git submodule update --init (in the usbboot checkout)")
        return None
    try:
        return path.read_bytes()
    except FileNotFoundError:
        report.add(PROBLEM, name, "is missing", fix)
    except OSError as err:
        report.add(PROBLEM, name, f"cannot be read: {err.strerror or err}", fix)
    return None


def sig_file_sha256(text: str) -> str:
    """The sha256 a .sig file claims: its first line."""
    lines = text.splitlines()
    return lines[0].strip().lower() if lines else ""


def _sig_matches(report: Report, sig_name: str, sig_text: str, data: bytes, data_name: str,
                 key: RsaKey | None, fix: str) -> None:
    if sig_file_sha256(sig_text) != hashlib.sha256(data).hexdigest():
        report.add(PROBLEM, sig_name, f"its sha256 is not that of {data_name}", fix)
        return
    if key is None:
        report.add(OK, sig_name, f"sha256 matches {data_name}")
        return
    signature = sig_file_signature(sig_text)
    if signature is None:
        report.add(PROBLEM, sig_name, f"has no rsa2048 signature of {data_name}", fix)
    elif not verify_pkcs1v15(key, data, signature):
        report.add(PROBLEM, sig_name, f"its rsa2048 signature of {data_name} does not verify with the key", fix)
    else:
        report.add(OK, sig_name, f"sha256 and rsa2048 signature match {data_name}")


# -- pieeprom.bin -----------------------------------------------------------


def _check_pieeprom(report: Report) -> img.EepromImage | None:
    fix = _fix_update(report)
    data = _read(report, "pieeprom.bin", fix)
    sig = _read(report, "pieeprom.sig", fix)
    if data is None:
        return None
    if sig is not None:
        _sig_matches(report, "pieeprom.sig", sig.decode("utf-8", "replace"), data, "pieeprom.bin", None, fix)
    try:
        eeprom = img.EepromImage(data, "pieeprom.bin")
        embedded = eeprom.get_file(img.PUBKEY_BIN)[:PUBKEY_BIN_LEN]
    except ToolError as err:
        report.add(PROBLEM, "pieeprom.bin", str(err).removeprefix("pieeprom.bin: "), fix)
        return None
    if len(embedded) < PUBKEY_BIN_LEN or embedded.strip(b"\0") == b"" or embedded.strip(b"\xff") == b"":
        report.add(PROBLEM, "pieeprom.bin", "holds no public key (pubkey.bin is empty): it was not "
                   "built for secure boot", fix)
        return eeprom
    embedded_hash = key_hash(embedded)
    report.embedded_pubkey = embedded
    if report.pubkey is None:
        report.pubkey = embedded
        report.add(INFO, "pieeprom.bin", "no key given (-k): checking against the public key the image "
                   "holds; pass -k KEY.pem to be sure it is yours")
    elif embedded != report.pubkey:
        report.add(PROBLEM, "pieeprom.bin", f"holds a different public key (hash {embedded_hash}) "
                   f"than {report.key_source} ({report.key_hash})", fix)
    else:
        report.add(OK, "pieeprom.bin", f"holds the public key of {report.key_source}")
    return eeprom


def embedded_key(eeprom: img.EepromImage) -> RsaKey | None:
    try:
        return public_key_from_bin(eeprom.get_file(img.PUBKEY_BIN)[:PUBKEY_BIN_LEN], "pubkey.bin")
    except ToolError:
        return None


def _check_config_signature(report: Report, eeprom: img.EepromImage) -> None:
    fix = _fix_update(report)
    key = embedded_key(eeprom)
    if key is None:
        return   # already reported: the image holds no usable key
    try:
        sig_text = eeprom.get_file(img.BOOTCONF_SIG).decode("utf-8", "replace")
    except ToolError:
        report.add(PROBLEM, "pieeprom.bin", "has no bootconf.sig section", fix)
        return
    _sig_matches(report, "pieeprom.bin (bootconf.sig)", sig_text, eeprom.config,
                 "its bootconf.txt", key, fix)


def config_value(config: bytes, name: str) -> str | None:
    """The last value of name=... outside comments (sections are not evaluated)."""
    value = None
    for raw in config.decode("utf-8", "replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        key, sep, rest = line.partition("=")
        if sep and key.strip() == name:
            # Printed back to the terminal: no control characters.
            value = "".join(c if c.isprintable() else "?" for c in rest.strip())
    return value


def _check_boot_conf(report: Report, eeprom: img.EepromImage) -> None:
    embedded = eeprom.config
    boot_conf = report.directory / "boot.conf"
    if boot_conf.is_file() and boot_conf.read_bytes() != embedded:
        report.add(PROBLEM, "boot.conf", "differs from the configuration inside pieeprom.bin "
                   "(edited after the image was built)", _fix_update(report))
    if config_value(embedded, "SIGNED_BOOT") != "1":
        report.add(WARNING, "boot.conf", "does not set SIGNED_BOOT=1: the bootloader is not told to "
                   "require a signed boot.img; only a board with the key in OTP insists on one",
                   "add SIGNED_BOOT=1 to boot.conf, then " + _fix_update(report))
    else:
        report.add(OK, "boot.conf", "sets SIGNED_BOOT=1")


# -- config.txt -------------------------------------------------------------


def _check_config_txt(report: Report) -> dict[str, str]:
    data = _read(report, "config.txt", "copy config.txt from usbboot's secure-boot-recovery directory")
    if data is None:
        return {}
    values = {name: value for name in ("program_pubkey", "revoke_devkey", "program_jtag_lock",
                                       "program_rpiboot_gpio")
              if (value := config_value(data, name)) is not None}
    enabled = {name: value for name, value in values.items() if value not in ("", "0")}
    chip = f"BCM{report.chip}"
    if "program_pubkey" in enabled:
        # recovery.bin writes the hash of the key in pieeprom.bin, not necessarily -k's.
        otp_hash = key_hash(report.embedded_pubkey) if report.embedded_pubkey else None
        report.irreversible.append(
            f"program_pubkey={enabled['program_pubkey']}: writes the key hash "
            f"{otp_hash or '(unknown: pieeprom.bin holds no key)'} (the key inside pieeprom.bin) "
            f"to the {chip} OTP; from then on the board boots only firmware, configuration and OS "
            "images signed with that key")
        if report.chip == "2711":
            report.irreversible.append("  (recovery.bin 2025-05-16 and newer also revokes the development "
                                       "key, as revoke_devkey=1 does)")
    if "revoke_devkey" in enabled:
        report.irreversible.append(f"revoke_devkey={enabled['revoke_devkey']}: revokes the development "
                                   f"key in the {chip} OTP")
    if "program_jtag_lock" in enabled:
        report.irreversible.append(f"program_jtag_lock={enabled['program_jtag_lock']}: disables "
                                   "VideoCore JTAG for good")
        if "program_pubkey" not in enabled:
            report.add(WARNING, "config.txt", "program_jtag_lock has no effect unless the key hash is "
                       "programmed (program_pubkey=1) now or earlier")
    if "program_rpiboot_gpio" in enabled:
        _check_rpiboot_gpio(report, enabled["program_rpiboot_gpio"])
    return values


def _check_rpiboot_gpio(report: Report, gpio: str) -> None:
    report.irreversible.append(f"program_rpiboot_gpio={gpio}: GPIO {gpio} pulled low at power-on "
                               "starts rpiboot mode, for good (Pi 4B / Pi 400)")
    if gpio not in SUPPORTED_RPIBOOT_GPIOS:
        report.add(PROBLEM, "config.txt", f"program_rpiboot_gpio={gpio} is not one of "
                   f"{', '.join(SUPPORTED_RPIBOOT_GPIOS)}", "choose one of those BCM GPIO numbers")
    if report.chip != "2711":
        report.add(WARNING, "config.txt", "program_rpiboot_gpio is documented for BCM2711 boards "
                   "(Pi 4B / Pi 400) only")


# -- second stages ----------------------------------------------------------


def countersignature_problem(data: bytes, expected_pubkey: bytes) -> str | None:
    """Why ``data`` is not counter-signed (key 16) with expected_pubkey, or None when it is."""
    blocks = signature_blocks_2712(data)
    if not blocks or blocks[0].sig_type != "customer":
        return NOT_COUNTERSIGNED
    block = blocks[0]
    if block.pubkey != expected_pubkey:
        return f"is counter-signed with another key (hash {key_hash(block.pubkey)})"
    signed = data[:len(data) - SIGNATURE_LEN - PUBKEY_BIN_LEN]
    if not verify_pkcs1v15(public_key_from_bin(block.pubkey), signed, block.signature):
        return "has a customer signature that does not verify"
    return None


def _check_firmware_2712(report: Report, eeprom: img.EepromImage) -> None:
    assert report.pubkey is not None
    names = [img.BOOTCODE_BIN] + ([img.BOOTSYS_BIN] if eeprom.is_ab else [])
    for name in names:
        problem = countersignature_problem(eeprom.get_file(name), report.pubkey)
        where = f"pieeprom.bin ({name})"
        if problem is None:
            report.add(OK, where, "counter-signed with the key")
        else:
            report.add(PROBLEM, where, f"{problem}: a board with the key in OTP will not run it",
                       _fix_update(report, firmware=True))


def _read_second_stage(report: Report, name: str, fix: str) -> bytes | None:
    data = _read(report, name, fix)
    problem = not_firmware(data) if data is not None else None
    if problem:
        report.add(PROBLEM, name, problem, fix)
        return None
    return data


def _check_bootcode5(report: Report, program_pubkey: bool) -> None:
    data = _read_second_stage(report, "bootcode5.bin", _fix_update(report, firmware=True))
    if data is None or report.pubkey is None:
        return
    problem = countersignature_problem(data, report.pubkey)
    if problem is None:
        if program_pubkey:
            report.add(WARNING, "bootcode5.bin", "is counter-signed: a board with no key in OTP yet "
                       "refuses it, so this directory only suits boards already locked to the key",
                       f"for a first provisioning: cd {report.directory} && update-pieeprom -f "
                       f"-k {report.signing_key or 'PRIVATE_KEY.pem'} (without -r)")
        else:
            report.add(OK, "bootcode5.bin", "counter-signed with the key")
    elif problem == NOT_COUNTERSIGNED and program_pubkey:
        report.add(OK, "bootcode5.bin", "not counter-signed: right for boards with no key in OTP yet")
    elif problem == NOT_COUNTERSIGNED:
        report.add(PROBLEM, "bootcode5.bin", "is not counter-signed and config.txt does not program "
                   "the key, so this is for boards already locked, whose ROM refuses it",
                   _fix_update(report, recovery=True))
    else:
        report.add(PROBLEM, "bootcode5.bin", problem, _fix_update(report, recovery=True))


def _check_bootcode4(report: Report) -> None:
    _read_second_stage(report, "bootcode4.bin", "copy the BCM2711 recovery.bin here as bootcode4.bin "
          "(usbboot: ln -s ../firmware/2711/recovery.bin bootcode4.bin)")


# -- OS boot image ----------------------------------------------------------


def _check_boot_image(report: Report, boot_image: Path) -> None:
    sig_path = boot_image.with_suffix(".sig")
    fix = f"rpi-eeprom-digest -k {report.signing_key or 'PRIVATE_KEY.pem'} -i {boot_image} -o {sig_path}"
    try:
        sig_text = sig_path.read_text("utf-8", "replace")
    except OSError:
        report.add(PROBLEM, str(sig_path), "is missing: the bootloader will not load the boot image", fix)
        return
    key = report.key
    if key is None:
        report.add(PROBLEM, str(boot_image), "cannot be checked without a key (-k, or a pieeprom.bin "
                   "holding one)", fix)
        return
    _sig_matches(report, str(sig_path), sig_text, boot_image.read_bytes(), str(boot_image), key, fix)
