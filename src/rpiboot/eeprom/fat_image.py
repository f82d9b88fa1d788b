"""Dependency-free FAT12/FAT16/FAT32 image writer (and a small checking reader).

Builds a "superfloppy" FAT file system image (no partition table, like
``mkfs.fat`` run on a plain file) from a directory tree.  Features:

* FAT12, FAT16 and FAT32, chosen from the cluster count as the FAT
  specification requires (or forced with ``fat_type``);
* sub-directories, VFAT long file names (LFN) with unique 8.3 short names
  (``NAME~N.EXT`` tails) and the NT lower-case flags for plain 8.3 names;
* automatic sizing in the style of usbboot's ``rpi-make-boot-image``
  (exact cluster count of contents + FAT + root directory, rounded up to KiB,
  plus ``overhead_kib`` of slack);
* reproducible output: all timestamps and the volume id come from
  ``SOURCE_DATE_EPOCH`` when it is set (or from explicit arguments);
  without it timestamps are the source files' mtimes and the volume id is a
  CRC of the tree listing, so identical input gives identical bytes;
* file contents are streamed from disk into the image with seeks, only the
  FAT and directory tables are held in memory.

``read_fat_image`` is an independent, strict reader used to check images.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import tempfile
import time
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable, Iterator

__all__ = [
    "FatImageError",
    "SourceError",
    "ImageTooSmallError",
    "FatParameterError",
    "FatPlan",
    "FatContents",
    "plan_fat_image",
    "write_fat_image",
    "build_fat_image",
    "read_fat_image",
]


class FatImageError(Exception):
    """Base class for all errors raised by this module."""


class SourceError(FatImageError):
    """The source tree cannot be represented (missing, unreadable, bad names)."""


class ImageTooSmallError(FatImageError):
    """The contents do not fit into the requested image size."""


class FatParameterError(FatImageError):
    """Invalid file system parameters (sector size, FAT type, label, ...)."""


_MIN_CLUSTERS = {12: 1, 16: 4085, 32: 65525}
_MAX_CLUSTERS = {12: 4084, 16: 65524, 32: 0x0FFFFFF5}
_EOC = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}
_SHORT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~")
_LFN_FORBIDDEN = frozenset('"*/:<>?\\|\x7f') | {chr(c) for c in range(32)}
_ATTR_DIR, _ATTR_ARCHIVE, _ATTR_VOLUME, _ATTR_LFN = 0x10, 0x20, 0x08, 0x0F
_DIR_ENTRY = 32
_MAX_DIR_ENTRIES = 65536
_COPY_CHUNK = 1 << 20
# int 18h (boot failed, try next device) followed by "jmp $".
_BOOT_STUB = b"\xcd\x18\xeb\xfe"


@dataclass
class _Node:
    name: str
    path: Path
    is_dir: bool
    size: int = 0
    mtime: int = 0
    children: list[_Node] = field(default_factory=list)
    short: bytes = b""
    case_flags: int = 0
    needs_lfn: bool = False
    first_cluster: int = 0
    n_clusters: int = 0


@dataclass
class _Layout:
    fat_type: int
    sector_size: int
    sectors_per_cluster: int
    reserved_sectors: int
    num_fats: int
    root_entries: int
    fat_sectors: int
    total_sectors: int
    clusters: int

    @property
    def root_dir_sectors(self) -> int:
        return -(-self.root_entries * _DIR_ENTRY // self.sector_size)

    @property
    def first_data_sector(self) -> int:
        return self.reserved_sectors + self.num_fats * self.fat_sectors + self.root_dir_sectors

    @property
    def cluster_bytes(self) -> int:
        return self.sector_size * self.sectors_per_cluster

    def cluster_offset(self, cluster: int) -> int:
        sector = self.first_data_sector + (cluster - 2) * self.sectors_per_cluster
        return sector * self.sector_size


@dataclass
class FatPlan:
    """Everything needed to write an image: scanned tree plus geometry."""

    root: _Node
    layout: _Layout
    label: bytes
    volume_id: int
    timestamp: int | None
    used_clusters: int

    @property
    def fat_type(self) -> int:
        return self.layout.fat_type

    @property
    def size_bytes(self) -> int:
        return self.layout.total_sectors * self.layout.sector_size

    def label_or_noname(self) -> bytes:
        return self.label if self.label.strip() else b"NO NAME    "


# --------------------------------------------------------------------------
# Names


def _fold(name: str) -> str:
    # Simple per-character upper-casing, as FAT compares long names.
    return "".join(u if len(u := c.upper()) == 1 else c for c in name)


def _check_long_name(name: str, where: Path) -> None:
    bad = sorted({c for c in name if c in _LFN_FORBIDDEN or "\ud800" <= c <= "\udfff"})
    if bad:
        raise SourceError(f"file name not representable on FAT: {where} (bad characters {bad!r})")
    if name.endswith((".", " ")):
        raise SourceError(f"file name ends with '.' or space, not allowed on FAT: {where}")
    if len(name.encode("utf-16-le")) // 2 > 255:
        raise SourceError(f"file name longer than 255 UTF-16 units: {where}")


def _plain_short_name(name: str, *, mixed_case_ok: bool) -> tuple[bytes, int] | None:
    """Short name for a name already in 8.3 form, else None."""
    base, dot, ext = name.partition(".")
    if "." in ext or not 1 <= len(base) <= 8 or len(ext) > 3 or (dot and not ext):
        return None
    if not all(c.isascii() and c.upper() in _SHORT_CHARS for c in base + ext):
        return None
    flags = 0
    for part, bit in ((base, 0x08), (ext, 0x10)):
        if part != part.upper():
            if part != part.lower() and not mixed_case_ok:
                return None
            flags |= bit
    short = (base.upper().ljust(8) + ext.upper().ljust(3)).encode("ascii")
    return short, flags


def _lossy_basis(name: str) -> tuple[str, str]:
    stripped = name.replace(" ", "").lstrip(".")
    base, dot, ext = stripped.rpartition(".")
    if not dot:
        base, ext = stripped, ""

    def convert(part: str) -> str:
        return "".join(c.upper() if c.isascii() and c.upper() in _SHORT_CHARS else "_"
                       for c in part.replace(".", ""))

    return convert(base) or "_", convert(ext)[:3]


def _assign_short_names(nodes: list[_Node], directory: Path) -> None:
    seen: dict[str, str] = {}
    for node in nodes:
        _check_long_name(node.name, node.path)
        other = seen.setdefault(_fold(node.name), node.name)
        if other != node.name:
            raise SourceError(
                f"names differ only in case, FAT cannot hold both: {directory / other} and {node.path}")
    used: set[bytes] = set()
    pending: list[_Node] = []
    for node in nodes:
        plain = _plain_short_name(node.name, mixed_case_ok=False)
        if plain is None:
            pending.append(node)
        else:
            node.short, node.case_flags = plain
            used.add(node.short)
    for node in pending:
        node.needs_lfn = True
        mixed = _plain_short_name(node.name, mixed_case_ok=True)
        if mixed is not None and mixed[0] not in used:
            node.short = mixed[0]
        else:
            node.short = _numeric_tail(*_lossy_basis(node.name), used, node.path)
        used.add(node.short)


def _numeric_tail(base: str, ext: str, used: set[bytes], where: Path) -> bytes:
    for n in range(1, 1_000_000):
        tail = f"~{n}"
        short = (base[: 8 - len(tail)] + tail).ljust(8) + ext.ljust(3)
        encoded = short.encode("ascii")
        if encoded not in used:
            return encoded
    raise SourceError(f"too many similar names for 8.3 aliases near {where}")


def _lfn_checksum(short: bytes) -> int:
    total = 0
    for byte in short:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def _lfn_count(node: _Node) -> int:
    return -(-len(node.name.encode("utf-16-le")) // 26) if node.needs_lfn else 0


def _lfn_entries(name: str, short: bytes) -> list[bytes]:
    units = name.encode("utf-16-le")
    count = -(-len(units) // 26)
    if len(units) % 26:
        units += b"\0\0"
    units = units.ljust(count * 26, b"\xff")
    checksum = _lfn_checksum(short)
    entries = []
    for i in range(count):
        part = units[i * 26:(i + 1) * 26]
        seq = (i + 1) | (0x40 if i == count - 1 else 0)
        entries.append(struct.pack("<B10sBBB12sH4s", seq, part[:10], _ATTR_LFN, 0,
                                   checksum, part[10:22], 0, part[22:]))
    return entries[::-1]


# --------------------------------------------------------------------------
# Scanning


Include = Callable[[PurePosixPath], bool]


def _scan(directory: Path, rel: PurePosixPath, include: Include | None,
          ancestors: frozenset[tuple[int, int]]) -> list[_Node]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise SourceError(f"cannot read directory {directory}: {exc.strerror}") from exc
    nodes = []
    for entry in entries:
        relpath = rel / entry.name
        if include is not None and not include(relpath):
            continue
        path = Path(entry.path)
        try:
            st = entry.stat()
        except OSError as exc:
            raise SourceError(f"cannot stat {path}: {exc.strerror}") from exc
        mtime = int(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                raise SourceError(f"directory loop (symlink) at {path}")
            node = _Node(entry.name, path, True, mtime=mtime)
            node.children = _scan(path, relpath, include, ancestors | {key})
        elif stat.S_ISREG(st.st_mode):
            if st.st_size > 0xFFFFFFFF:
                raise SourceError(f"file larger than 4 GiB - 1 cannot be stored on FAT: {path}")
            node = _Node(entry.name, path, False, size=st.st_size, mtime=mtime)
        else:
            raise SourceError(f"unsupported file type (not a regular file or directory): {path}")
        nodes.append(node)
    _assign_short_names(nodes, directory)
    return nodes


def _walk(node: _Node) -> Iterator[_Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


# --------------------------------------------------------------------------
# Geometry


def _dir_entries(node: _Node, *, is_root: bool, has_label: bool) -> int:
    own = (1 if has_label else 0) if is_root else 2
    return own + sum(1 + _lfn_count(c) for c in node.children)


def _needed_clusters(root: _Node, fat_type: int, cluster_bytes: int, has_label: bool) -> int:
    total = 0
    for node in _walk(root):
        if node.is_dir:
            is_root = node is root
            if is_root and fat_type != 32:
                continue
            entries = _dir_entries(node, is_root=is_root, has_label=has_label)
            total += max(1, -(-entries * _DIR_ENTRY // cluster_bytes))
        else:
            total += -(-node.size // cluster_bytes)
    return total


def _fat_bytes(fat_type: int, entries: int) -> int:
    return (entries * 3 + 1) // 2 if fat_type == 12 else entries * fat_type // 8


def _layout(total: int, fat_type: int, ss: int, spc: int, num_fats: int,
            root_entries: int, reserved: int | None = None) -> _Layout:
    if reserved is None:
        reserved = 32 if fat_type == 32 else 1
    root_entries = 0 if fat_type == 32 else root_entries
    avail = total - reserved - (-(-root_entries * _DIR_ENTRY // ss))
    fat_sectors = 0
    while True:
        clusters = max(0, (avail - num_fats * fat_sectors) // spc)
        need = -(-_fat_bytes(fat_type, clusters + 2) // ss)
        if need <= fat_sectors:
            break
        fat_sectors = need
    return _Layout(fat_type, ss, spc, reserved, num_fats, root_entries, fat_sectors, total, clusters)


def _pad_to_max(lay: _Layout) -> _Layout:
    """Grow the reserved area until the cluster count fits the FAT type."""
    while lay.clusters > _MAX_CLUSTERS[lay.fat_type]:
        extra = (lay.clusters - _MAX_CLUSTERS[lay.fat_type]) * lay.sectors_per_cluster
        if lay.reserved_sectors + extra > 0xFFFF:
            raise FatParameterError(f"image too large for FAT{lay.fat_type}")
        lay = _layout(lay.total_sectors, lay.fat_type, lay.sector_size, lay.sectors_per_cluster,
                      lay.num_fats, lay.root_entries, lay.reserved_sectors + extra)
    return lay


def _choose_layout(total: int, fat_type: int | None, ss: int, spc: int, num_fats: int,
                   root_entries: int) -> _Layout | None:
    """Layout for ``total`` sectors, or None if too few clusters for the type."""
    if fat_type is not None:
        lay = _layout(total, fat_type, ss, spc, num_fats, root_entries)
        if lay.clusters < _MIN_CLUSTERS[fat_type]:
            return None
        if lay.clusters > _MAX_CLUSTERS[fat_type]:
            raise FatParameterError(
                f"too many clusters ({lay.clusters}) for FAT{fat_type}; "
                "use a larger cluster size or another FAT type")
        return lay
    candidates = [_layout(total, t, ss, spc, num_fats, root_entries) for t in (12, 16, 32)]
    for i, lay in enumerate(candidates):
        if lay.clusters < _MIN_CLUSTERS[lay.fat_type]:
            return None if i == 0 else _pad_to_max(candidates[i - 1])
        if lay.clusters <= _MAX_CLUSTERS[lay.fat_type]:
            return lay
    raise FatParameterError("image too large for FAT32 with this cluster size")


def _validate_params(ss: int, spc: int, num_fats: int, fat_type: int | None,
                     root_entries: int) -> None:
    if ss not in (512, 1024, 2048, 4096):
        raise FatParameterError(f"sector size must be 512, 1024, 2048 or 4096, not {ss}")
    if spc not in (1, 2, 4, 8, 16, 32, 64, 128) or ss * spc > 65536:
        raise FatParameterError(f"invalid sectors per cluster: {spc}")
    if num_fats not in (1, 2):
        raise FatParameterError(f"number of FATs must be 1 or 2, not {num_fats}")
    if fat_type not in (None, 12, 16, 32):
        raise FatParameterError(f"FAT type must be 12, 16 or 32, not {fat_type}")
    if not 0 < root_entries <= 65535 - 15:
        raise FatParameterError(f"invalid number of root directory entries: {root_entries}")


def _encode_label(label: str) -> bytes:
    text = label.upper()
    if len(text) > 11 or not all(c == " " or (c.isascii() and c in _SHORT_CHARS) for c in text):
        raise FatParameterError(f"invalid volume label {label!r} (max 11 8.3 characters)")
    return text.ljust(11).encode("ascii")


def _source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise FatParameterError(f"SOURCE_DATE_EPOCH is not an integer: {value!r}") from None


def plan_fat_image(source_dir: Path, *, size_bytes: int | None = None, label: str = "BOOT",
                   fat_type: int | None = None, sector_size: int = 512,
                   sectors_per_cluster: int = 1, root_dir_entries: int = 256,
                   num_fats: int = 1, overhead_kib: int = 16,
                   include: Include | None = None, timestamp: int | None = None,
                   volume_id: int | None = None) -> FatPlan:
    """Scan ``source_dir`` and compute the image geometry, without writing.

    ``size_bytes`` None means size automatically; otherwise it is rounded down
    to whole sectors.  ``include`` is called with each path relative to the
    source (PurePosixPath) and may return False to leave it out.
    """
    _validate_params(sector_size, sectors_per_cluster, num_fats, fat_type, root_dir_entries)
    label_bytes = _encode_label(label)
    has_label = label_bytes.strip() != b""
    if timestamp is None:
        timestamp = _source_date_epoch()
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise SourceError(f"source directory not found: {source_dir}")
    root = _Node("", source_dir, True, mtime=int(source_dir.stat().st_mtime))
    root.children = _scan(source_dir, PurePosixPath(), include, frozenset())

    per_sector = sector_size // _DIR_ENTRY
    root_needed = _dir_entries(root, is_root=True, has_label=has_label)
    root_entries = -(-max(root_dir_entries, root_needed) // per_sector) * per_sector
    for node in _walk(root):
        if node.is_dir and _dir_entries(node, is_root=node is root, has_label=has_label) > _MAX_DIR_ENTRIES:
            raise SourceError(f"too many entries for one FAT directory: {node.path}")

    args = (fat_type, sector_size, sectors_per_cluster, num_fats, root_entries)
    cluster_bytes = sector_size * sectors_per_cluster
    lay: _Layout | None
    if size_bytes is None:
        lay = _auto_layout(root, args, overhead_kib, has_label)
    else:
        total = size_bytes // sector_size
        lay = _choose_layout(total, *args) if total > 0 else None
        if lay is None:
            raise ImageTooSmallError(
                f"image size {size_bytes} bytes is too small for a FAT{fat_type or ''} file system")
        need = _needed_clusters(root, lay.fat_type, cluster_bytes, has_label)
        if need > lay.clusters:
            raise ImageTooSmallError(
                f"contents need {need * cluster_bytes} bytes of data clusters but an image of "
                f"{size_bytes} bytes only has {lay.clusters * cluster_bytes}")
    used = _allocate(root, lay, has_label)
    if volume_id is None:
        volume_id = timestamp if timestamp is not None else _tree_crc(root)
    return FatPlan(root, lay, label_bytes, volume_id & 0xFFFFFFFF, timestamp, used)


def _auto_layout(root: _Node, args: tuple, overhead_kib: int, has_label: bool) -> _Layout:
    """Upstream-style estimate (contents + FAT + root dir, KiB-rounded, plus slack)."""
    fat_type, ss, spc, num_fats, root_entries = args
    cluster_bytes = ss * spc
    guess = fat_type
    if guess is None:
        need16 = _needed_clusters(root, 16, cluster_bytes, has_label)
        guess = 32 if need16 > 65526 else 16 if need16 > 4085 else 12
    total = _estimate_sectors(root, guess, args, overhead_kib, has_label)
    for _ in range(10_000):
        lay = _choose_layout(total, *args)
        if lay is None:
            total += max(1, _MIN_CLUSTERS[fat_type or 12] // 8) * spc
            continue
        if lay.fat_type != guess:
            # The slack pushed us into another FAT type: re-estimate for it.
            guess = lay.fat_type
            total = max(total, _estimate_sectors(root, guess, args, overhead_kib, has_label))
            continue
        shortfall = _needed_clusters(root, lay.fat_type, cluster_bytes, has_label) - lay.clusters
        if shortfall <= 0:
            return lay
        total += shortfall * spc + max(1, 1024 // ss)
    raise FatParameterError("could not find a FAT geometry for these contents")


def _estimate_sectors(root: _Node, fat_type: int, args: tuple, overhead_kib: int,
                      has_label: bool) -> int:
    _, ss, spc, num_fats, root_entries = args
    need = _needed_clusters(root, fat_type, ss * spc, has_label)
    meta = _layout(1, fat_type, ss, spc, num_fats, root_entries)
    fat_sectors = -(-_fat_bytes(fat_type, need + 2) // ss)
    estimate = (meta.reserved_sectors + meta.root_dir_sectors + num_fats * fat_sectors) * ss
    estimate += need * ss * spc
    kib = -(-estimate // 1024) + max(0, overhead_kib)
    return -(-kib * 1024 // ss)


def _allocate(root: _Node, lay: _Layout, has_label: bool) -> int:
    next_cluster = 2
    for node in _walk(root):
        if node is root and lay.fat_type != 32:
            continue
        if node.is_dir:
            entries = _dir_entries(node, is_root=node is root, has_label=has_label)
            count = max(1, -(-entries * _DIR_ENTRY // lay.cluster_bytes))
        else:
            count = -(-node.size // lay.cluster_bytes)
        if count:
            node.first_cluster, node.n_clusters = next_cluster, count
            next_cluster += count
    return next_cluster - 2


def _tree_crc(root: _Node) -> int:
    crc = 0
    for node in _walk(root):
        crc = zlib.crc32(f"{node.path.relative_to(root.path)}\0{node.size}\0{node.mtime}\n"
                         .encode("utf-8", "surrogateescape"), crc)
    return crc


# --------------------------------------------------------------------------
# Writing


def _dos_datetime(ts: int) -> tuple[int, int, int]:
    """(date, time, create-time hundredths) in UTC, clamped to the FAT range."""
    lo, hi = 315532800, 4354819198  # 1980-01-01 .. 2107-12-31 23:59:58
    t = time.gmtime(min(max(ts, lo), hi))
    date = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    clock = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    return date, clock, (t.tm_sec % 2) * 100


def _dirent(short: bytes, attr: int, flags: int, cluster: int, size: int, ts: int) -> bytes:
    date, clock, hundredths = _dos_datetime(ts)
    return struct.pack("<11sBBBHHHHHHHI", short, attr, flags, hundredths, clock, date, date,
                       cluster >> 16, clock, date, cluster & 0xFFFF, size)


def _dir_table(plan: FatPlan, node: _Node, parent: _Node | None) -> bytes:
    out = bytearray()
    stamp = plan.timestamp
    if parent is None:
        if plan.label.strip():
            out += _dirent(plan.label, _ATTR_VOLUME, 0, 0, 0, stamp if stamp is not None else 0)
    else:
        ts = stamp if stamp is not None else node.mtime
        out += _dirent(b".".ljust(11), _ATTR_DIR, 0, node.first_cluster, 0, ts)
        parent_cluster = 0 if parent is plan.root else parent.first_cluster
        pts = stamp if stamp is not None else parent.mtime
        out += _dirent(b"..".ljust(11), _ATTR_DIR, 0, parent_cluster, 0, pts)
    for child in node.children:
        if child.needs_lfn:
            out += b"".join(_lfn_entries(child.name, child.short))
        attr = _ATTR_DIR if child.is_dir else _ATTR_ARCHIVE
        size = 0 if child.is_dir else child.size
        ts = stamp if stamp is not None else child.mtime
        out += _dirent(child.short, attr, child.case_flags, child.first_cluster, size, ts)
    return bytes(out)


def _boot_sector(plan: FatPlan) -> bytes:
    lay = plan.layout
    fat32 = lay.fat_type == 32
    sector = bytearray(lay.sector_size)
    total16 = lay.total_sectors if lay.total_sectors < 0x10000 and not fat32 else 0
    total32 = 0 if total16 else lay.total_sectors
    jump = b"\xeb\x58\x90" if fat32 else b"\xeb\x3c\x90"
    # Geometry 1 head / 1 sector per track, as upstream passes "-g 1/1".
    struct.pack_into("<3s8sHBHBHHBHHHII", sector, 0, jump, b"MSWIN4.1", lay.sector_size,
                     lay.sectors_per_cluster, lay.reserved_sectors, lay.num_fats,
                     lay.root_entries, total16, 0xF8, 0 if fat32 else lay.fat_sectors,
                     1, 1, 0, total32)
    fs_type = f"FAT{lay.fat_type}".ljust(8).encode("ascii")
    if fat32:
        struct.pack_into("<IHHIHH12sBBBI11s8s", sector, 36, lay.fat_sectors, 0, 0, 2, 1, 6,
                         bytes(12), 0x80, 0, 0x29, plan.volume_id, plan.label_or_noname(), fs_type)
        sector[90:90 + len(_BOOT_STUB)] = _BOOT_STUB
    else:
        struct.pack_into("<BBBI11s8s", sector, 36, 0x80, 0, 0x29, plan.volume_id,
                         plan.label_or_noname(), fs_type)
        sector[62:62 + len(_BOOT_STUB)] = _BOOT_STUB
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _fsinfo_sector(plan: FatPlan) -> bytes:
    lay = plan.layout
    sector = bytearray(lay.sector_size)
    free = lay.clusters - plan.used_clusters
    next_free = plan.used_clusters + 2 if free else 0xFFFFFFFF
    struct.pack_into("<I", sector, 0, 0x41615252)
    struct.pack_into("<III", sector, 484, 0x61417272, free, next_free)
    struct.pack_into("<I", sector, 508, 0xAA550000)
    return bytes(sector)


def _fat_table(plan: FatPlan) -> bytes:
    """Encoded FAT up to the last used cluster; the rest of the FAT is zero."""
    lay = plan.layout
    eoc = _EOC[lay.fat_type]
    fat = array("L", [0]) * (plan.used_clusters + 2)
    fat[0], fat[1] = (eoc & ~0xFF) | 0xF8, eoc
    for node in _walk(plan.root):
        if node.n_clusters:
            start, end = node.first_cluster, node.first_cluster + node.n_clusters
            fat[start:end - 1] = array("L", range(start + 1, end))
            fat[end - 1] = eoc
    if lay.fat_type == 12:
        if len(fat) % 2:
            fat.append(0)
        out = bytearray()
        for a, b in zip(fat[0::2], fat[1::2]):
            out += bytes((a & 0xFF, (a >> 8) | ((b & 0xF) << 4), b >> 4))
        return bytes(out)
    return struct.pack(f"<{len(fat)}{'H' if lay.fat_type == 16 else 'I'}", *fat)


def _copy_file(node: _Node, out: BinaryIO, offset: int) -> None:
    """Copy a source file into the image.

    Only errors reading the source become SourceError; an OSError from
    ``out`` (for example a full disk) propagates unchanged so the caller can
    report it as an output problem.
    """
    out.seek(offset)
    remaining = node.size
    try:
        src = open(node.path, "rb")
    except OSError as exc:
        raise SourceError(f"cannot read {node.path}: {exc.strerror or exc}") from exc
    with src:
        while remaining:
            chunk = _read_source(src, node, min(_COPY_CHUNK, remaining))
            if not chunk:
                raise SourceError(f"file shrank while building the image: {node.path}")
            out.write(chunk)
            remaining -= len(chunk)
        if _read_source(src, node, 1):
            raise SourceError(f"file grew while building the image: {node.path}")


def _read_source(src: BinaryIO, node: _Node, size: int) -> bytes:
    try:
        return src.read(size)
    except OSError as exc:
        raise SourceError(f"cannot read {node.path}: {exc.strerror or exc}") from exc


def write_fat_image(plan: FatPlan, out: BinaryIO) -> None:
    """Write the planned image into the seekable binary file ``out``."""
    lay = plan.layout
    ss = lay.sector_size
    out.seek(0)
    out.truncate(plan.size_bytes)
    boot = _boot_sector(plan)
    out.write(boot)
    if lay.fat_type == 32:
        fsinfo = _fsinfo_sector(plan)
        out.write(fsinfo)
        out.seek(6 * ss)
        out.write(boot + fsinfo)
    fat = _fat_table(plan)
    for i in range(lay.num_fats):
        out.seek((lay.reserved_sectors + i * lay.fat_sectors) * ss)
        out.write(fat)
    for node, parent in _dirs_with_parents(plan.root, None):
        table = _dir_table(plan, node, parent)
        if parent is None and lay.fat_type != 32:
            out.seek((lay.reserved_sectors + lay.num_fats * lay.fat_sectors) * ss)
        else:
            out.seek(lay.cluster_offset(node.first_cluster))
        out.write(table)
        for child in node.children:
            if not child.is_dir and child.size:
                _copy_file(child, out, lay.cluster_offset(child.first_cluster))
    out.flush()


def _dirs_with_parents(node: _Node, parent: _Node | None) -> Iterator[tuple[_Node, _Node | None]]:
    yield node, parent
    for child in node.children:
        if child.is_dir:
            yield from _dirs_with_parents(child, node)


def build_fat_image(source_dir: Path, output: Path, *, size_bytes: int | None = None,
                    label: str = "BOOT", fat_type: int | None = None,
                    **options: Any) -> FatPlan:
    """Build a FAT image of ``source_dir`` at ``output`` atomically.

    The image goes to a temporary file next to ``output`` which replaces it
    only when complete.  Extra keyword ``options`` are those of
    :func:`plan_fat_image`.  Returns the plan (geometry, FAT type, size).
    """
    plan = plan_fat_image(source_dir, size_bytes=size_bytes, label=label, fat_type=fat_type,
                          **options)
    output = Path(output)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    try:
        with os.fdopen(fd, "w+b") as out:
            write_fat_image(plan, out)
            os.fsync(out.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return plan


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------
# Reader (strict; used to verify images without external tools)


@dataclass
class FatContents:
    """What :func:`read_fat_image` found in an image."""

    fat_type: int
    label: str | None
    volume_id: int
    files: dict[str, bytes]
    dirs: set[str]
    short_names: dict[str, str]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        if len(data) < 512 or data[510:512] != b"\x55\xaa":
            raise FatImageError("no boot sector signature")
        (ss, spc, rsvd, nfats, root_entries, total16, _media, fat16_size,
         ) = struct.unpack_from("<HBHBHHBH", data, 11)
        total32, fat32_size, self.root_cluster = struct.unpack_from("<II4xI", data, 32)
        self.ss, self.spc = ss, spc
        total = total16 or total32
        fat_size = fat16_size or fat32_size
        if total * ss > len(data):
            raise FatImageError("image file shorter than the file system")
        self.fat_start = rsvd * ss
        self.root_start = (rsvd + nfats * fat_size) * ss
        self.root_len = root_entries * 32
        self.data_start = self.root_start + -(-self.root_len // ss) * ss
        self.clusters = (total - self.data_start // ss) // spc
        self.fat_type = 12 if self.clusters < 4085 else 16 if self.clusters < 65525 else 32
        if (fat16_size == 0) != (self.fat_type == 32):
            raise FatImageError("BPB FAT size fields disagree with the cluster count")
        if _fat_bytes(self.fat_type, self.clusters + 2) > fat_size * ss:
            raise FatImageError("FAT too small for the cluster count")
        label_at = 71 if self.fat_type == 32 else 43
        self.volume_id = struct.unpack_from("<I", data, label_at - 4)[0]
        self.used: set[int] = set()

    def fat(self, n: int) -> int:
        if self.fat_type == 12:
            word = struct.unpack_from("<H", self.data, self.fat_start + n * 3 // 2)[0]
            return word >> 4 if n & 1 else word & 0xFFF
        if self.fat_type == 16:
            return struct.unpack_from("<H", self.data, self.fat_start + 2 * n)[0]
        return struct.unpack_from("<I", self.data, self.fat_start + 4 * n)[0] & 0x0FFFFFFF

    def chain(self, start: int) -> list[int]:
        out = []
        cluster = start
        eoc_min = {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFFF8}[self.fat_type]
        while cluster < eoc_min:
            if not 2 <= cluster < self.clusters + 2:
                raise FatImageError(f"cluster {cluster} out of range in chain from {start}")
            if cluster in self.used:
                raise FatImageError(f"cluster {cluster} cross-linked or looped")
            self.used.add(cluster)
            out.append(cluster)
            cluster = self.fat(cluster)
        return out

    def cluster_data(self, chain: list[int]) -> bytes:
        size = self.ss * self.spc
        return b"".join(self.data[self.data_start + (c - 2) * size:self.data_start + (c - 1) * size]
                        for c in chain)


def _short_to_str(raw: bytes, flags: int) -> str:
    base, ext = raw[:8].decode("ascii").rstrip(), raw[8:].decode("ascii").rstrip()
    if flags & 0x08:
        base = base.lower()
    if flags & 0x10:
        ext = ext.lower()
    return f"{base}.{ext}" if ext else base


def _parse_dir(reader: _Reader, table: bytes, path: str, contents: FatContents,
               own_cluster: int | None, parent_cluster: int) -> None:
    lfn_parts: dict[int, bytes] = {}
    lfn_sum = lfn_total = None
    names: set[str] = set()
    shorts: set[bytes] = set()
    for off in range(0, len(table), 32):
        entry = table[off:off + 32]
        if entry[0] == 0:
            break
        if entry[0] == 0xE5:
            lfn_parts, lfn_total = {}, None
            continue
        attr = entry[11]
        if attr == _ATTR_LFN:
            seq = entry[0]
            if seq & 0x40:
                lfn_parts, lfn_total, lfn_sum = {}, seq & 0x1F, entry[13]
            elif lfn_total is None or entry[13] != lfn_sum:
                raise FatImageError(f"orphan LFN entry in {path or '/'}")
            lfn_parts[seq & 0x1F] = entry[1:11] + entry[14:26] + entry[28:32]
            continue
        raw, flags = entry[:11], entry[12]
        hi, lo, size = struct.unpack_from("<H4xHI", entry, 20)
        cluster = (hi << 16) | lo
        if attr & _ATTR_VOLUME:
            if path or contents.label is not None:
                raise FatImageError("unexpected volume label entry")
            contents.label = raw.decode("ascii").rstrip()
            continue
        if raw in (b".".ljust(11), b"..".ljust(11)):
            expect = own_cluster if raw == b".".ljust(11) else parent_cluster
            if own_cluster is None or cluster != expect:
                raise FatImageError(f"bad '{raw.strip().decode()}' entry in {path or '/'}")
            continue
        name = _short_to_str(raw, flags)
        if lfn_total is not None:
            if lfn_sum != _lfn_checksum(raw) or sorted(lfn_parts) != list(range(1, lfn_total + 1)):
                raise FatImageError(f"LFN checksum/sequence mismatch for {name} in {path or '/'}")
            units = b"".join(lfn_parts[i] for i in range(1, lfn_total + 1))
            end = next((i for i in range(0, len(units), 2) if units[i:i + 2] == b"\0\0"), len(units))
            name = units[:end].decode("utf-16-le")
        lfn_parts, lfn_total = {}, None
        if raw in shorts or _fold(name) in names:
            raise FatImageError(f"duplicate name {name!r} in {path or '/'}")
        shorts.add(raw)
        names.add(_fold(name))
        full = f"{path}/{name}" if path else name
        contents.short_names[full] = _short_to_str(raw, 0)
        chain = reader.chain(cluster) if cluster else []
        if attr & _ATTR_DIR:
            contents.dirs.add(full)
            if not chain:
                raise FatImageError(f"directory without clusters: {full}")
            _parse_dir(reader, reader.cluster_data(chain), full, contents, cluster, own_cluster or 0)
        else:
            if len(chain) != -(-size // (reader.ss * reader.spc)):
                raise FatImageError(f"chain length does not match size for {full}")
            contents.files[full] = reader.cluster_data(chain)[:size]


def read_fat_image(image: Path) -> FatContents:
    """Read a whole FAT image into memory and check its consistency.

    Returns every file's bytes and every directory, keyed by '/'-joined long
    names.  Raises FatImageError on any structural problem: bad BPB, cluster
    count/FAT size mismatch, broken or cross-linked chains, LFN checksum or
    sequence errors, duplicate names, lost (allocated but unreferenced)
    clusters, wrong FSInfo free count.
    """
    reader = _Reader(Path(image).read_bytes())
    contents = FatContents(reader.fat_type, None, reader.volume_id, {}, set(), {})
    if reader.fat_type == 32:
        chain = reader.chain(reader.root_cluster)
        _parse_dir(reader, reader.cluster_data(chain), "", contents, None, 0)
    else:
        table = reader.data[reader.root_start:reader.root_start + reader.root_len]
        _parse_dir(reader, table, "", contents, None, 0)
    allocated = {n for n in range(2, reader.clusters + 2) if reader.fat(n)}
    if allocated != reader.used:
        raise FatImageError(f"lost clusters: {sorted(allocated - reader.used)[:10]}")
    if reader.fat_type == 32:
        fsinfo_sector = struct.unpack_from("<H", reader.data, 48)[0]
        free = struct.unpack_from("<I", reader.data, fsinfo_sector * reader.ss + 488)[0]
        if free not in (0xFFFFFFFF, reader.clusters - len(reader.used)):
            raise FatImageError("FSInfo free cluster count is wrong")
    return contents


# --------------------------------------------------------------------------
# Public name and entry encodings, shared with rpiboot.provision.fat_volume
# (which edits FAT file systems inside disk images).


def short_name_for(name: str, used: set[bytes]) -> tuple[bytes, int, bool]:
    """(11-byte short name, NT case flags, needs LFN entries) for a new entry.

    ``used`` holds the directory's existing short names; the result is not
    added to it.  Raises SourceError for names FAT cannot hold.
    """
    check_long_name(name, Path(name))
    plain = _plain_short_name(name, mixed_case_ok=False)
    if plain is not None and plain[0] not in used:
        return plain[0], plain[1], False
    mixed = _plain_short_name(name, mixed_case_ok=True)
    if mixed is not None and mixed[0] not in used:
        return mixed[0], 0, True
    return _numeric_tail(*_lossy_basis(name), used, Path(name)), 0, True


check_long_name = _check_long_name
fold_name = _fold
lfn_checksum = _lfn_checksum
lfn_entries = _lfn_entries
dirent = _dirent
dos_datetime = _dos_datetime
short_to_str = _short_to_str
