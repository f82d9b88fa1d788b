"""Shared constants and builders for the EEPROM tool tests (synthetic images)."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from rpiboot.eeprom import image as img

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = (REPO_ROOT / ".." / "shared").resolve()
FIXTURES = Path(os.environ.get("RPIBOOT_FIXTURES") or SHARED / "fixtures")

IMAGE_2711 = "rpi-eeprom/firmware-2711/pieeprom-2026-08-04.bin"
IMAGE_2712 = "rpi-eeprom/firmware-2712/pieeprom-2026-08-12.bin"
IMAGE_2712_OLD = "rpi-eeprom/firmware-2712/pieeprom-2024-01-05.bin"
RECOVERY_2712 = "rpi-eeprom/firmware-2712/recovery.bin"
RECOVERY_CONF = "usbboot/recovery/boot.conf"
SBR_CONF = "usbboot/secure-boot-recovery/boot.conf"
SBR5_CONF = "usbboot/secure-boot-recovery5/boot.conf"
PRIVATE_PEM = "usbboot/secure-boot-example/example-private.pem"
PUBLIC_PEM = "usbboot/secure-boot-example/example-public.pem"
BOOTFILES_TAR = "usbboot/firmware/bootfiles.bin"

GOLDEN_EPOCH = "1700000000"


def copy_into(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    dst = dst_dir / (name or src.name)
    shutil.copyfile(src, dst)
    return dst


# -- synthetic images -------------------------------------------------------

SECTOR = img.ERASE_ALIGN_SIZE


def pad_section(length_to_fill: int) -> bytes:
    """A padding section occupying exactly length_to_fill (>= 8) bytes."""
    return struct.pack(">LL", img.PAD_MAGIC, length_to_fill - 8) + b"\xff" * (length_to_fill - 8)


def _slot(filename: str, data: bytes, slot_size: int, last: bool) -> bytes:
    section = img.build_file_section(filename, data)
    section += b"\xff" * (img.align8(len(section)) - len(section))
    if last:
        return section
    return section + pad_section(slot_size - len(section))


def build_image(*, size: int = 512 * 1024, ab: bool = False, bootcode: bytes = b"\x11" * 1000,
                bootcode_slot: int = 128 * 1024, config: bytes = b"[all]\nBOOT_UART=1\n",
                files: dict[str, bytes] | None = None, bootsys: bytes = b"\x22" * 3000,
                bootsys_slot: int = 16 * 1024, last_pad_to: int | None = None) -> bytes:
    """A minimal valid EEPROM image.

    Non-AB: bootcode (padded to bootcode_slot), then one 4 KiB sector per file
    and bootconf.txt last.  AB (2 MiB only): bootcode + updatetime in the
    64 KiB read-only area, then bootsys, the files, and bootconf.txt padded
    to last_pad_to (if given).
    """
    files = dict(files if files is not None else {
        "pubkey.bin": b"\0" * 264, "bootconf.sig": b"0" * 64 + b"\n"})
    out = bytearray(struct.pack(">LL", img.MAGIC, len(bootcode)) + bootcode)
    out += b"\xff" * (img.align8(len(out)) - len(out))
    if ab:
        updatetime = _slot(img.UPDATE_TIME_FILENAME, b"\xff" * 8, 32, last=True)
        out += pad_section(img.READ_ONLY_SIZE - SECTOR - len(out))
        out += updatetime + pad_section(SECTOR - len(updatetime))
        out += _slot(img.BOOTSYS_BIN, bootsys, bootsys_slot, last=False)
        files = {img.UPDATE_TIME_FILENAME: b"\xff" * 8, **files}
    else:
        out += pad_section(bootcode_slot - len(out))
    for name, data in files.items():
        out += _slot(name, data, SECTOR, last=False)
    conf = _slot(img.BOOTCONF_TXT, config, 0, last=True)
    out += conf
    if last_pad_to is not None:
        out += pad_section(last_pad_to - len(out))
    out += b"\xff" * (size - len(out))
    assert len(out) == size
    return bytes(out)


def require_tool(name: str) -> str:
    """Path of an external checker (fsck.fat, mtools); skip if absent, but fail in CI."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        reason = f"{name} not installed (apt-get install dosfstools mtools)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; required when CI=true")
        pytest.skip(reason)
    return path
