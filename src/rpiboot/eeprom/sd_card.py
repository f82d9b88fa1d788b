"""SD card images in the layout of rpi-eeprom's imager/ scripts, without root or external tools.

The layout every Raspberry Pi Imager bootloader / OTP image uses (facts from rpi-eeprom's
``imager/make-recovery-images`` and ``imager/make-pi4-rpiboot-gpio-sd``):

* a 258 MiB disk image with an MBR partition table, disk identifier 0x0a7b5ac5;
* one partition, type 0x0c (FAT32 LBA), starting at sector 2048, 524288 sectors (256 MiB);
* formatted FAT32 with one sector per cluster (``mkfs.fat -F 32 -s 1``: 2 FATs, 32 reserved
  sectors), the files in its root directory;
* the image zipped alone, ``NAME.img`` inside ``NAME.zip``.

The FAT file system comes from :mod:`rpiboot.eeprom.fat_image`; like upstream (which formats a
separate file and copies it in with dd) its boot sector counts no hidden sectors.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import time
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping

from .common import ToolError
from .fat_image import FatImageError, plan_fat_image, write_fat_image

SECTOR = 512
DISK_BYTES = 258 * 1024 * 1024
DISK_IDENTIFIER = 0x0A7B5AC5
PARTITION_START = 2048
PARTITION_SECTORS = 524288
PARTITION_TYPE_FAT32_LBA = 0x0C

# Zip dates start in 1980.
_ZIP_EPOCH = 315532800

# CHS fields for an MBR entry, with the usual 255 heads / 63 sectors geometry.
_HEADS, _SECTORS_PER_TRACK = 255, 63


def _chs(lba: int) -> bytes:
    cylinder, rest = divmod(lba, _HEADS * _SECTORS_PER_TRACK)
    if cylinder > 1023:
        return b"\xfe\xff\xff"
    head, sector = divmod(rest, _SECTORS_PER_TRACK)
    return bytes((head, ((cylinder >> 2) & 0xC0) | (sector + 1), cylinder & 0xFF))


def master_boot_record() -> bytes:
    """Sector 0: no boot code, the disk identifier and the one FAT32 partition."""
    mbr = bytearray(SECTOR)
    struct.pack_into("<I", mbr, 440, DISK_IDENTIFIER)
    last = PARTITION_START + PARTITION_SECTORS - 1
    entry = (b"\x00" + _chs(PARTITION_START) + bytes((PARTITION_TYPE_FAT32_LBA,)) + _chs(last)
             + struct.pack("<II", PARTITION_START, PARTITION_SECTORS))
    mbr[446:446 + 16] = entry
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


class _Window:
    """A file seen from an offset on: lets the FAT writer write a partition in place."""

    def __init__(self, out: BinaryIO, offset: int) -> None:
        self._out, self._offset = out, offset

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        assert whence == os.SEEK_SET
        return self._out.seek(self._offset + position) - self._offset

    def write(self, data: bytes) -> int:
        return self._out.write(data)

    def truncate(self, size: int) -> int:
        # The disk is already at its full size; the partition never shrinks it.
        return size

    def flush(self) -> None:
        self._out.flush()


def write_disk_image(files: Mapping[str, bytes], out: BinaryIO, *, timestamp: int | None = None) -> None:
    """Write the whole 258 MiB disk image (sparse where the file system allows) to ``out``."""
    with tempfile.TemporaryDirectory(prefix="rpi-sd-") as tmp:
        source = Path(tmp)
        for name, data in files.items():
            (source / name).write_bytes(data)
        stamp = timestamp if timestamp is not None else _default_timestamp()
        try:
            plan = plan_fat_image(source, size_bytes=PARTITION_SECTORS * SECTOR, label="",
                                  fat_type=32, sectors_per_cluster=1, num_fats=2,
                                  timestamp=stamp, volume_id=stamp)
        except FatImageError as err:
            raise ToolError(f"cannot lay out the SD card's FAT file system: {err}") from None
        out.seek(0)
        out.truncate(DISK_BYTES)
        out.write(master_boot_record())
        write_fat_image(plan, _Window(out, PARTITION_START * SECTOR))  # type: ignore[arg-type]
        out.flush()


def _default_timestamp() -> int:
    """SOURCE_DATE_EPOCH when set (reproducible images), else now."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if value.isdigit():
        return int(value)
    return int(time.time())


def write_disk_image_file(files: Mapping[str, bytes], path: Path) -> None:
    """Build the raw disk image at ``path`` (sparse), atomically."""
    with _staged(path) as temps:
        image_tmp = _temp_beside(path, ".img", temps)
        with open(image_tmp, "r+b") as out:
            write_disk_image(files, out)
        os.chmod(image_tmp, 0o666 & ~_umask())
        os.replace(image_tmp, path)


@contextlib.contextmanager
def _staged(path: Path) -> Iterator[list[str]]:
    """Temporary files beside ``path`` (the list the body fills), removed whatever happens;
    an OSError is the tool's one-line error naming ``path``."""
    _make_parent(path)
    temps: list[str] = []
    try:
        yield temps
    except OSError as err:
        raise ToolError(f"cannot write '{path}': {err.strerror or err}") from None
    finally:
        for name in temps:
            with contextlib.suppress(OSError):
                os.unlink(name)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ToolError(f"cannot create '{path.parent}': {err.strerror or err}") from None
    if path.is_dir():
        raise ToolError(f"'{path}' is a directory")


def write_zipped_disk_image(files: Mapping[str, bytes], zip_path: Path, image_name: str) -> None:
    """Build the disk image and store it as ``image_name`` alone in ``zip_path``, atomically."""
    with _staged(zip_path) as temps:
        image_tmp = _temp_beside(zip_path, ".img", temps)
        stamp = _default_timestamp()
        with open(image_tmp, "r+b") as out:
            write_disk_image(files, out, timestamp=stamp)
        mode = 0o666 & ~_umask()
        zip_tmp = _temp_beside(zip_path, ".zip", temps)
        _zip_one(image_tmp, zip_tmp, image_name, stamp, mode)
        os.chmod(zip_tmp, mode)
        os.replace(zip_tmp, zip_path)


def _zip_one(source: str, zip_name: str, name: str, stamp: int, mode: int) -> None:
    """Deflate one file into a new zip; its date is ``stamp`` so equal inputs give equal zips."""
    info = zipfile.ZipInfo(name, date_time=time.gmtime(max(stamp, _ZIP_EPOCH))[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100000 | mode) << 16     # a regular file with this mode
    info.file_size = os.path.getsize(source)         # < 4 GiB: no zip64 records needed
    with zipfile.ZipFile(zip_name, "w") as archive, open(source, "rb") as src, \
            archive.open(info, "w") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_beside(path: Path, suffix: str, temps: list[str]) -> str:
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    temps.append(name)
    return name
