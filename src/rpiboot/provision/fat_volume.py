"""Edit the root directory of a FAT12/16/32 file system inside a disk image.

Built for one job: put a few small files into a Raspberry Pi OS boot
partition without mounting it (no root). The volume reads and stages its
writes through a :class:`StagedDisk`, so nothing is written until the
caller commits, and a failure (file system full, root directory full, a
damaged table) leaves the disk as it was. Names, long-name entries and
directory entries are encoded by the project's FAT writer
(:mod:`rpiboot.eeprom.fat_image`).
"""

from __future__ import annotations

import struct
import time
from array import array
from dataclasses import dataclass

from ..eeprom import fat_image
from .errors import ProvisionError
from .staged_disk import BLOCK, StagedDisk

_ATTR_LFN, _ATTR_VOLUME, _ATTR_DIR, _ATTR_ARCHIVE = 0x0F, 0x08, 0x10, 0x20
_SLOT = 32
_EOC = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}
_FSINFO_SIGS = ((0, 0x41615252), (484, 0x61417272), (508, 0xAA550000))


class FatEditError(ProvisionError):
    """The FAT file system cannot be read or the edit does not fit."""

    code = "customise_failed"


@dataclass(frozen=True)
class DirEntry:
    name: str          # the long name when there is one, else the 8.3 name
    short: bytes       # 11 bytes, space padded
    attr: int
    cluster: int
    size: int
    slot: int          # index of the 8.3 entry in the directory

    @property
    def is_dir(self) -> bool:
        return bool(self.attr & _ATTR_DIR)


class FatVolume:
    def __init__(self, disk: StagedDisk, offset: int, size: int) -> None:
        self.disk, self.offset = disk, offset
        boot = disk.read(offset, 512)
        self._parse_bpb(boot, size)
        fat_offset = offset + self.reserved * self.ss
        self.fat = bytearray(disk.read(fat_offset, self.fat_sectors * self.ss))
        self._fat_saved = bytes(self.fat)
        self._load_root()

    # ---- geometry -------------------------------------------------------

    def _parse_bpb(self, boot: bytes, partition_size: int) -> None:
        ss, spc, reserved, nfats, root_entries, total16, _media, fat16 = struct.unpack_from(
            "<HBHBHHBH", boot, 11)
        total32, fat32, _flags, _ver, root_cluster, fsinfo = struct.unpack_from("<IIHHIH", boot, 32)
        if (boot[510:512] != b"\x55\xaa" or ss not in (512, 1024, 2048, 4096)
                or spc == 0 or spc & (spc - 1) or reserved == 0 or nfats not in (1, 2)):
            raise FatEditError("not a FAT file system (bad boot sector)")
        total, fat_sectors = total16 or total32, fat16 or fat32
        root_sectors = -(-root_entries * _SLOT // ss)
        first_data = reserved + nfats * fat_sectors + root_sectors
        if fat_sectors == 0 or total <= first_data or total * ss > partition_size:
            raise FatEditError("FAT boot sector describes a file system that does not fit its partition")
        self.ss, self.spc, self.reserved, self.nfats = ss, spc, reserved, nfats
        self.fat_sectors, self.root_entries = fat_sectors, root_entries
        self.clusters = (total - first_data) // spc
        self.fat_type = 12 if self.clusters < 4085 else 16 if self.clusters < 65525 else 32
        if (self.fat_type == 32) != (fat16 == 0 and root_entries == 0):
            raise FatEditError("FAT boot sector fields disagree with the cluster count")
        entries = self.clusters + 2
        fat_bytes = (entries * 3 + 1) // 2 if self.fat_type == 12 else entries * self.fat_type // 8
        if fat_bytes > fat_sectors * ss:
            raise FatEditError("FAT table too small for the cluster count")
        self.root_cluster = root_cluster if self.fat_type == 32 else 0
        self.fsinfo_sector = fsinfo if self.fat_type == 32 else 0
        self.root_offset = self.offset + (reserved + nfats * fat_sectors) * ss
        self.data_offset = self.offset + first_data * ss
        self.cluster_bytes = ss * spc

    def cluster_offset(self, cluster: int) -> int:
        return self.data_offset + (cluster - 2) * self.cluster_bytes

    # ---- FAT ------------------------------------------------------------

    def get(self, n: int) -> int:
        if self.fat_type == 12:
            word = struct.unpack_from("<H", self.fat, n * 3 // 2)[0]
            return word >> 4 if n & 1 else word & 0xFFF
        if self.fat_type == 16:
            return struct.unpack_from("<H", self.fat, 2 * n)[0]
        return struct.unpack_from("<I", self.fat, 4 * n)[0] & 0x0FFFFFFF

    def _set(self, n: int, value: int) -> None:
        if self.fat_type == 12:
            at = n * 3 // 2
            word = struct.unpack_from("<H", self.fat, at)[0]
            word = (word & 0x000F) | (value << 4) if n & 1 else (word & 0xF000) | value
            struct.pack_into("<H", self.fat, at, word)
        elif self.fat_type == 16:
            struct.pack_into("<H", self.fat, 2 * n, value)
        else:
            old = struct.unpack_from("<I", self.fat, 4 * n)[0]
            struct.pack_into("<I", self.fat, 4 * n, (old & 0xF0000000) | value)

    def chain(self, start: int) -> list[int]:
        out: list[int] = []
        cluster = start
        while 2 <= cluster < self.clusters + 2:
            if len(out) > self.clusters:
                raise FatEditError(f"cluster chain from {start} loops")
            out.append(cluster)
            cluster = self.get(cluster)
        if cluster < _EOC[self.fat_type] - 7:
            raise FatEditError(f"cluster chain from {start} is broken at cluster {cluster}")
        return out

    def free_clusters(self) -> int:
        if self.fat_type == 32:
            entries = array("I", self.fat[8:(self.clusters + 2) * 4])
            return sum(1 for value in entries if not value & 0x0FFFFFFF)
        return sum(1 for n in range(2, self.clusters + 2) if self.get(n) == 0)

    def _allocate(self, count: int) -> list[int]:
        found: list[int] = []
        for n in range(2, self.clusters + 2):
            if len(found) == count:
                break
            if self.get(n) == 0:
                found.append(n)
        if len(found) < count:
            free = self.free_clusters() * self.cluster_bytes
            raise FatEditError(
                f"boot partition full: {count * self.cluster_bytes} more bytes needed, {free} free")
        return found

    def _link(self, clusters: list[int]) -> None:
        for this, following in zip(clusters, clusters[1:]):
            self._set(this, following)
        if clusters:
            self._set(clusters[-1], _EOC[self.fat_type])

    # ---- root directory ------------------------------------------------

    def _load_root(self) -> None:
        if self.fat_type == 32:
            self.root_chain = self.chain(self.root_cluster)
            self.root = bytearray(b"".join(
                self.disk.read(self.cluster_offset(c), self.cluster_bytes) for c in self.root_chain))
        else:
            self.root_chain = []
            self.root = bytearray(self.disk.read(self.root_offset, self.root_entries * _SLOT))
        self._root_saved = bytes(self.root)

    def _root_disk_offset(self, at: int) -> int:
        if self.fat_type != 32:
            return self.root_offset + at
        cluster = self.root_chain[at // self.cluster_bytes]
        return self.cluster_offset(cluster) + at % self.cluster_bytes

    def entries(self) -> list[DirEntry]:
        """The root directory's files and directories (no volume label, no deleted entries)."""
        out: list[DirEntry] = []
        parts: dict[int, bytes] = {}
        lfn_sum = -1
        for slot in range(len(self.root) // _SLOT):
            raw = bytes(self.root[slot * _SLOT:(slot + 1) * _SLOT])
            if raw[0] == 0:
                break
            if raw[0] == 0xE5:
                parts = {}
                continue
            if raw[11] == _ATTR_LFN:
                if raw[0] & 0x40:
                    parts, lfn_sum = {}, raw[13]
                if raw[13] == lfn_sum:
                    parts[raw[0] & 0x1F] = raw[1:11] + raw[14:26] + raw[28:32]
                continue
            if not raw[11] & _ATTR_VOLUME:
                out.append(self._entry(raw, slot, parts, lfn_sum))
            parts = {}
        return out

    @staticmethod
    def _entry(raw: bytes, slot: int, parts: dict[int, bytes], lfn_sum: int) -> DirEntry:
        short = raw[:11]
        name = _short_text(short, raw[12])
        if parts and lfn_sum == fat_image.lfn_checksum(short) and sorted(parts) == list(
                range(1, len(parts) + 1)):
            units = b"".join(parts[i] for i in sorted(parts))
            end = next((i for i in range(0, len(units), 2) if units[i:i + 2] == b"\0\0"), len(units))
            name = units[:end].decode("utf-16-le", "replace")
        hi, lo, size = struct.unpack_from("<H4xHI", raw, 20)
        return DirEntry(name, short, raw[11], (hi << 16) | lo, size, slot)

    def find(self, name: str) -> DirEntry | None:
        key = fat_image.fold_name(name)
        for entry in self.entries():
            short = _short_text(entry.short, 0)
            if key in (fat_image.fold_name(entry.name), fat_image.fold_name(short)):
                return entry
        return None

    # ---- files ------------------------------------------------------------

    def read_file(self, name: str) -> bytes | None:
        entry = self.find(name)
        if entry is None or entry.is_dir:
            return None
        chain = self.chain(entry.cluster) if entry.cluster else []
        if len(chain) * self.cluster_bytes < entry.size:
            raise FatEditError(f"{entry.name}: cluster chain shorter than the file size")
        data = b"".join(self.disk.read(self.cluster_offset(c), self.cluster_bytes) for c in chain)
        return data[:entry.size]

    def write_file(self, name: str, data: bytes, *, mtime: float | None = None) -> None:
        """Replace a root-directory file's contents, or create the file. Staged, not written."""
        stamp = int(time.time() if mtime is None else mtime)
        entry = self.find(name)
        if entry is not None and entry.attr & (_ATTR_DIR | _ATTR_VOLUME):
            raise FatEditError(f"{name} exists on the boot partition and is not a file")
        old = self.chain(entry.cluster) if entry is not None and entry.cluster else []
        need = -(-len(data) // self.cluster_bytes)
        if need > len(old):
            clusters = old + self._allocate(need - len(old))
        else:
            clusters = old[:need]
            for cluster in old[need:]:
                self._set(cluster, 0)
        self._link(clusters)
        for i, cluster in enumerate(clusters):
            piece = data[i * self.cluster_bytes:(i + 1) * self.cluster_bytes]
            self.disk.write(self.cluster_offset(cluster), piece.ljust(self.cluster_bytes, b"\0"))
        first = clusters[0] if clusters else 0
        if entry is None:
            self._add_entry(name, first, len(data), stamp)
        else:
            self._update_entry(entry.slot, first, len(data), stamp)

    def _update_entry(self, slot: int, cluster: int, size: int, stamp: int) -> None:
        date, clock, _ = fat_image.dos_datetime(stamp)
        at = slot * _SLOT
        self.root[at + 11] |= _ATTR_ARCHIVE
        struct.pack_into("<HHHHHI", self.root, at + 18, date, cluster >> 16, clock, date,
                         cluster & 0xFFFF, size)

    def _add_entry(self, name: str, cluster: int, size: int, stamp: int) -> None:
        used = {entry.short for entry in self.entries()}
        try:
            short, flags, needs_lfn = fat_image.short_name_for(name, used)
        except fat_image.FatImageError as exc:
            raise FatEditError(str(exc)) from exc
        slots = fat_image.lfn_entries(name, short) if needs_lfn else []
        slots.append(fat_image.dirent(short, _ATTR_ARCHIVE, flags, cluster, size, stamp))
        at = self._free_slots(len(slots))
        self.root[at * _SLOT:(at + len(slots)) * _SLOT] = b"".join(slots)

    def _free_slots(self, count: int) -> int:
        """Index of ``count`` consecutive free slots, growing a FAT32 root if needed."""
        total = len(self.root) // _SLOT
        run = 0
        for slot in range(total):
            first_byte = self.root[slot * _SLOT]
            if first_byte == 0:
                return self._claim_tail(slot - run, count)
            run = run + 1 if first_byte == 0xE5 else 0
            if run == count:
                return slot - count + 1
        return self._claim_tail(total - run, count)

    def _claim_tail(self, start: int, count: int) -> int:
        """Use slots from ``start`` on (free up to the end marker and beyond)."""
        need_bytes = (start + count + 1) * _SLOT - len(self.root)
        if need_bytes > 0 and self.fat_type != 32:
            if need_bytes > _SLOT:
                raise FatEditError("the boot partition's root directory is full")
            need_bytes = 0
        if need_bytes > 0:
            extra = self._allocate(-(-need_bytes // self.cluster_bytes))
            self.root_chain += extra
            self._link(self.root_chain)
            self.root += bytes(len(extra) * self.cluster_bytes)
        end = (start + count) * _SLOT
        if end < len(self.root):
            self.root[end] = 0
        return start

    # ---- staging ------------------------------------------------------------

    def flush(self) -> None:
        """Stage the changed FAT blocks (every copy), root directory and FSInfo."""
        fat_base = self.offset + self.reserved * self.ss
        for copy in range(self.nfats):
            base = fat_base + copy * self.fat_sectors * self.ss
            _stage_changes(self.disk, self._fat_saved, self.fat, lambda at, b=base: b + at)
        if self.fat_type == 32 and len(self._root_saved) < len(self.root):
            self._root_saved += b"\xff" * (len(self.root) - len(self._root_saved))
        _stage_changes(self.disk, self._root_saved, self.root, self._root_disk_offset)
        if self.fat_type == 32 and self.fat != self._fat_saved:
            self._update_fsinfo()
        self._fat_saved, self._root_saved = bytes(self.fat), bytes(self.root)

    def _update_fsinfo(self) -> None:
        if not 0 < self.fsinfo_sector < self.reserved:
            return
        at = self.offset + self.fsinfo_sector * self.ss
        sector = bytearray(self.disk.read(at, 512))
        if any(struct.unpack_from("<I", sector, off)[0] != sig for off, sig in _FSINFO_SIGS):
            return
        struct.pack_into("<II", sector, 488, self.free_clusters(), 0xFFFFFFFF)
        self.disk.write(at, bytes(sector))


def _stage_changes(disk: StagedDisk, old: bytes | bytearray, new: bytes | bytearray,
                   locate) -> None:
    """Stage the 512-byte blocks of ``new`` that differ from ``old``."""
    for at in range(0, len(new), BLOCK):
        if new[at:at + BLOCK] != old[at:at + BLOCK]:
            disk.write(locate(at), bytes(new[at:at + BLOCK]))


def _short_text(short: bytes, case_flags: int) -> str:
    """An 8.3 name as text; bytes outside ASCII (OEM code pages) become '?'."""
    return fat_image.short_to_str(short.decode("latin-1").encode("ascii", "replace"), case_flags)
