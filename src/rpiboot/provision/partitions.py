"""Find the partitions of a disk image: MBR (as Raspberry Pi OS uses) and GPT.

Everything is read with ``os.pread`` on a file descriptor, so the same code
works on a plain image file and on a block device. Nothing here writes.
"""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass

from .errors import ProvisionError

SECTOR = 512
# MBR partition types that hold a FAT file system (0xEF: EFI system partition).
MBR_FAT_TYPES = frozenset({0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E, 0xEF})
_MBR_PROTECTIVE = 0xEE
_MBR_EXTENDED = frozenset({0x05, 0x0F, 0x85})
GPT_FAT_TYPES = frozenset({
    uuid.UUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"),  # Microsoft basic data
    uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),  # EFI system partition
})
_GPT_MAX_ENTRIES = 1024


class PartitionTableError(ProvisionError):
    """The disk's partition table cannot be read or makes no sense."""

    code = "customise_failed"


@dataclass(frozen=True)
class Partition:
    index: int            # 1-based, as Linux numbers them (sda1, ...)
    offset: int           # bytes from the start of the disk
    size: int             # bytes
    kind: str             # "mbr:0x0c" or "gpt:<type uuid>"
    may_be_fat: bool      # the table's type says FAT / basic data / ESP


def read_exact(fd: int, length: int, offset: int) -> bytes:
    """pread that fails clearly on a short read (a truncated image or device)."""
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise PartitionTableError(
            f"short read: wanted {length} bytes at offset {offset}, got {len(data)} "
            "(disk or image truncated?)")
    return data


def disk_size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)


def read_partitions(fd: int) -> list[Partition]:
    """The disk's primary MBR partitions, or its GPT partitions behind a protective MBR.

    Returns [] when sector 0 carries no partition table signature.
    """
    mbr = read_exact(fd, SECTOR, 0)
    if mbr[510:512] != b"\x55\xaa":
        return []
    entries = _mbr_entries(mbr)
    if any(kind == _MBR_PROTECTIVE for kind, _, _ in entries):
        return _gpt_partitions(fd)
    size = disk_size(fd)
    parts = []
    for index, (kind, first, count) in enumerate(entries, start=1):
        if kind == 0 or count == 0 or kind in _MBR_EXTENDED:
            continue
        offset, length = first * SECTOR, count * SECTOR
        if offset + length > size:
            raise PartitionTableError(
                f"partition {index} ends at byte {offset + length}, beyond the end of the disk ({size})")
        parts.append(Partition(index, offset, length, f"mbr:0x{kind:02x}", kind in MBR_FAT_TYPES))
    return parts


def _mbr_entries(mbr: bytes) -> list[tuple[int, int, int]]:
    out = []
    for i in range(4):
        kind, first, count = struct.unpack_from("<4xB3xII", mbr, 446 + 16 * i)
        out.append((kind, first, count))
    return out


def _gpt_partitions(fd: int) -> list[Partition]:
    header = read_exact(fd, 92, SECTOR)
    if header[:8] != b"EFI PART":
        raise PartitionTableError("protective MBR but no GPT header at LBA 1")
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    if not 128 <= entry_size <= 4096 or entry_size % 8 or count > _GPT_MAX_ENTRIES:
        raise PartitionTableError(f"implausible GPT entry table ({count} entries of {entry_size} bytes)")
    table = read_exact(fd, count * entry_size, entries_lba * SECTOR)
    size = disk_size(fd)
    parts = []
    for i in range(count):
        entry = table[i * entry_size:(i + 1) * entry_size]
        type_guid = uuid.UUID(bytes_le=entry[:16])
        if type_guid.int == 0:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        if last < first or (last + 1) * SECTOR > size:
            raise PartitionTableError(f"GPT partition {i + 1} has an impossible extent")
        parts.append(Partition(i + 1, first * SECTOR, (last - first + 1) * SECTOR,
                               f"gpt:{type_guid}", type_guid in GPT_FAT_TYPES))
    return parts
