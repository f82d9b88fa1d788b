"""Disk images for the customise tests: a FAT boot partition (made by mkfs.fat or by the
project's own FAT writer) inside an MBR or GPT partition table, read back with mtools."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from rpiboot.eeprom.fat_image import build_fat_image

SECTOR = 512
START = 8192                     # first partition at 4 MiB, as Raspberry Pi OS images
PI_CMDLINE = (b"console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 "
              b"fsck.repair=yes rootwait quiet splash plymouth.ignore-serial-consoles\n")
PI_CONFIG = b"# For more options and information see the documentation\ndtparam=audio=on\n"
SIZES = {12: 2 << 20, 16: 24 << 20, 32: 40 << 20}


def need_tools(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            pytest.skip(f"{name} not installed (dosfstools / mtools)")


@dataclass
class Disk:
    path: Path
    offset: int
    size: int

    def mtype(self, name: str) -> bytes:
        return subprocess.run(["mtype", "-i", f"{self.path}@@{self.offset}", f"::{name}"],
                              check=True, capture_output=True).stdout

    def mdir(self) -> str:
        return subprocess.run(["mdir", "-i", f"{self.path}@@{self.offset}", "::"], check=True,
                              capture_output=True, text=True).stdout

    def mcopy(self, name: str, data: bytes, tmp: Path) -> None:
        src = tmp / f"mcopy-src-{uuid.uuid4().hex}"
        src.write_bytes(data)
        subprocess.run(["mcopy", "-i", f"{self.path}@@{self.offset}", str(src), f"::{name}"],
                       check=True, capture_output=True)
        src.unlink()

    def partition_bytes(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)

    def fsck(self, tmp: Path) -> str:
        """fsck.fat -n on a copy of the partition; fails the test unless it is clean."""
        part = tmp / f"fsck-{uuid.uuid4().hex}.img"
        part.write_bytes(self.partition_bytes())
        result = subprocess.run(["fsck.fat", "-n", str(part)], capture_output=True, text=True)
        part.unlink()
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def mbr(entries: list[tuple[int, int, int]]) -> bytes:
    """A DOS partition table: entries of (type, first LBA, sectors)."""
    sector = bytearray(SECTOR)
    struct.pack_into("<I", sector, 440, 0x1234ABCD)
    for i, (kind, first, count) in enumerate(entries):
        struct.pack_into("<B3sB3sII", sector, 446 + 16 * i, 0, b"\xfe\xff\xff", kind,
                         b"\xfe\xff\xff", first, count)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def gpt(first: int, count: int, type_guid: str, disk_sectors: int) -> bytes:
    """Protective MBR, GPT header and a 128-entry table with one partition (no CRCs)."""
    header = bytearray(SECTOR)
    header[:8] = b"EFI PART"
    struct.pack_into("<IIIIQQQQ16sQII", header, 8, 0x10000, 92, 0, 0, 1, disk_sectors - 1, 34,
                     disk_sectors - 34, uuid.uuid4().bytes_le, 2, 128, 128)
    table = bytearray(128 * 128)
    struct.pack_into("<16s16sQQ", table, 0, uuid.UUID(type_guid).bytes_le, uuid.uuid4().bytes_le,
                     first, first + count - 1)
    return mbr([(0xEE, 1, disk_sectors - 1)]) + bytes(header) + bytes(table)


def embed(disk_path: Path, table: bytes, partition: bytes | None, offset: int, size: int) -> None:
    with open(disk_path, "wb") as f:
        f.truncate(offset + size + 1024 * 1024)
        f.write(table)
        if partition is not None:
            f.seek(offset)
            f.write(partition)


def mkfs_partition(tmp: Path, fat_type: int, size: int | None = None, *extra: str) -> bytes:
    need_tools("mkfs.fat")
    size = size or SIZES[fat_type]
    part = tmp / f"part-{uuid.uuid4().hex}.img"
    with open(part, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.fat", "-F", str(fat_type), "-s", "1", "-n", "BOOTFS", *extra, str(part)],
                   check=True, capture_output=True)
    data = part.read_bytes()
    part.unlink()
    return data


def pi_disk(tmp: Path, *, fat_type: int = 32, files: dict[str, bytes] | None = None,
            table: str = "mbr", partition: bytes | None = None, name: str = "disk.img") -> Disk:
    """A Raspberry Pi OS-like disk: boot partition with cmdline.txt and config.txt, then root."""
    need_tools("mcopy", "mtype", "mdir")
    partition = partition if partition is not None else mkfs_partition(tmp, fat_type)
    size = len(partition)
    sectors = size // SECTOR
    path = tmp / name
    if table == "gpt":
        total = START + sectors + 4096
        head = gpt(START, sectors, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", total)
    else:
        head = mbr([(0x0C if fat_type == 32 else 0x0E, START, sectors),
                    (0x83, START + sectors, 2048)])
    embed(path, head, partition, START * SECTOR, size)
    disk = Disk(path, START * SECTOR, size)
    wanted = {"cmdline.txt": PI_CMDLINE, "config.txt": PI_CONFIG} if files is None else files
    for file_name, data in wanted.items():
        disk.mcopy(file_name, data, tmp)
    return disk


def fat_image_partition(tmp: Path, files: dict[str, bytes], size: int, fat_type: int) -> bytes:
    """A partition made by the project's own FAT writer (rpiboot.eeprom.fat_image)."""
    src = tmp / f"src-{uuid.uuid4().hex}"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    out = tmp / f"fat-{uuid.uuid4().hex}.img"
    build_fat_image(src, out, size_bytes=size, fat_type=fat_type, label="BOOTFS", timestamp=0)
    data = out.read_bytes()
    out.unlink()
    return data


def open_rw(disk: Disk) -> int:
    return os.open(disk.path, os.O_RDWR)
