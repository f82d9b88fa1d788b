"""The disks a board became: find them below its USB port, pick one, refuse anything unsafe.

A board running the mass-storage gadget shows up as one or more SCSI disks below its USB device
in sysfs. Which disk gets written is decided here, never by anything the device sends: the disk
must sit below that port (not below another USB device, e.g. a hub's child), must not be mounted,
used as swap or held by another driver (device-mapper, md), must be writable, non-empty, and its
node must be the plain name in ``dev_root`` whose device number is the one sysfs gives.

``[os] storage`` (see :func:`select_disk`) chooses among several disks:

* ``"mmcblk0"``, ``"nvme0n1"``, ``"sda"``...: the disk's name on the Pi. mass-storage-gadget64
  sets each LUN's SCSI inquiry string to that name, so the host sees it as the vendor string.
  ``"emmc"`` is short for mmcblk0 (the eMMC, or the SD card on boards without eMMC) and
  ``"nvme"`` for nvme0n1.
* ``"lun:N"``: the SCSI logical unit number N.
* ``"largest"``: the largest disk (refused when two are equally large).
* absent: the only disk; several disks and no choice is an error that lists them.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..follow import block_device_dirs
from .errors import ProvisionError

SECTOR = 512
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_PORT = re.compile(r"\d{1,3}-\d{1,3}(\.\d{1,3}){0,6}")
_SCSI_ADDRESS = re.compile(r"\d+:\d+:\d+:(\d+)")
_DEV = re.compile(r"\d{1,4}:\d{1,7}")
_LUN_SPEC = re.compile(r"lun:(\d{1,3})")
ALIASES = {"emmc": "mmcblk0", "nvme": "nvme0n1"}


class TargetError(ProvisionError):
    """No disk, or no single disk, matches ``[os] storage``."""

    code = "storage_not_found"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class UnsafeTargetError(ProvisionError):
    """The chosen disk must not be written (mounted, read-only, not below the port...)."""

    code = "target_unsafe"


@dataclass(frozen=True)
class BlockDevice:
    name: str
    """Kernel name on this host ("sda"); validated: no "/", no "..", nothing odd."""
    path: Path
    """dev_root / name."""
    size: int
    """Bytes: sysfs ``size`` * 512; when sysfs says 0 or nothing, lseek(SEEK_END) on the node."""
    read_only: bool
    dev: str
    """"MAJ:MIN" from sysfs."""
    lun: int | None
    """From the SCSI address H:C:T:L of the disk's parent directory."""
    vendor: str
    """SCSI vendor, printable and stripped; "" if absent (mass-storage-gadget64: the Pi's name
    for the disk, e.g. "mmcblk0")."""
    model: str
    removable: bool = False
    port: str = ""
    """The USB port path the disk was found below."""
    sysfs_dir: Path | None = None

    def describe(self) -> str:
        """One short human phrase: "sda (mmcblk0, 8.0 GB, lun 0)"."""
        label = " ".join(part for part in (self.vendor, self.model) if part) or "no name"
        lun = "" if self.lun is None else f", lun {self.lun}"
        return f"{self.name} ({label}, {self.size / 1e9:.1f} GB{lun})"


def disks_below_port(port: str, *, sysfs_root: Path = Path("/sys"),
                     dev_root: Path = Path("/dev")) -> list[BlockDevice]:
    """Every whole disk below the USB device at ``port``, sorted by name.

    Disks below another USB device inside that directory (a hub's children) are not included;
    neither are names that could not be a plain file name in ``dev_root``.
    """
    if not _PORT.fullmatch(port):
        raise TargetError(f"{port!r} is not a USB port path", code="storage_invalid")
    found = []
    for name, directory in sorted(block_device_dirs(Path(sysfs_root), port).items()):
        if _NAME.fullmatch(name) and _directly_below(directory, port):
            found.append(_read_disk(name, directory, port, Path(dev_root)))
    return found


def validate_storage(storage: str | None) -> None:
    """Check the syntax of ``[os] storage`` (for ``check``, before any board arrives)."""
    if storage is None or storage == "largest" or _LUN_SPEC.fullmatch(storage):
        return
    if not _NAME.fullmatch(storage):
        raise TargetError(f"[os] storage = {storage!r}: expected a disk name on the Pi such as "
                          "\"mmcblk0\" or \"nvme0n1\", \"lun:N\" or \"largest\"",
                          code="storage_invalid")


def select_disk(disks: Sequence[BlockDevice], storage: str | None) -> BlockDevice:
    """The one disk ``storage`` names among ``disks`` (module docstring for the syntax)."""
    validate_storage(storage)
    if not disks:
        raise TargetError("the board shows no disk below its USB port")
    if storage is None:
        chosen = list(disks)
    elif storage == "largest":
        biggest = max(disk.size for disk in disks)
        chosen = [disk for disk in disks if disk.size == biggest]
    elif (lun := _LUN_SPEC.fullmatch(storage)) is not None:
        chosen = [disk for disk in disks if disk.lun == int(lun.group(1))]
    else:
        wanted = ALIASES.get(storage.lower(), storage).lower()
        chosen = [disk for disk in disks if disk.vendor.lower() == wanted]
    if len(chosen) == 1:
        return chosen[0]
    listing = "; ".join(disk.describe() for disk in disks)
    if not chosen:
        raise TargetError(f"no disk matches [os] storage = {storage!r}; the board has: {listing}")
    raise TargetError(f"{len(chosen)} disks match [os] storage = {storage!r} ({listing}); "
                      "choose one, e.g. storage = \"mmcblk0\" or \"lun:0\"",
                      code="storage_ambiguous")


def check_safe_to_write(disk: BlockDevice, *, sysfs_root: Path = Path("/sys"),
                        mountinfo: Path = Path("/proc/self/mountinfo"),
                        swaps: Path = Path("/proc/swaps")) -> None:
    """Raise :class:`UnsafeTargetError` unless ``disk`` (as :func:`disks_below_port` made it)
    may be written now.

    Reads sysfs again: the disk must still be below its port with the same device number.
    """
    _check_name(disk)
    now = {found.name: found for found in
           disks_below_port(disk.port, sysfs_root=sysfs_root, dev_root=disk.path.parent)}
    current = now.get(disk.name)
    if current is None or current.dev != disk.dev:
        raise UnsafeTargetError(f"{disk.name} is no longer a disk below USB port {disk.port}")
    if not _DEV.fullmatch(current.dev):
        raise UnsafeTargetError(f"{disk.name} has no valid device number in sysfs")
    if current.read_only:
        raise UnsafeTargetError(f"{disk.name} is read-only")
    if current.size <= 0:
        raise UnsafeTargetError(f"{disk.name} has size 0 (no medium?)")
    directory = current.sysfs_dir
    assert directory is not None
    devs, names = _disk_and_partitions(disk.name, disk.dev, directory)
    if mounted := devs & mounted_devices(mountinfo):
        raise UnsafeTargetError(f"{disk.name} is mounted (device {', '.join(sorted(mounted))})")
    if swapped := names & swap_devices(swaps):
        raise UnsafeTargetError(f"{disk.name} is in use as swap ({', '.join(sorted(swapped))})")
    if holders := _holders(directory, names):
        raise UnsafeTargetError(f"{disk.name} is held by {', '.join(holders)}")


def open_for_writing(disk: BlockDevice, *, sysfs_root: Path = Path("/sys"),
                     mountinfo: Path = Path("/proc/self/mountinfo"),
                     swaps: Path = Path("/proc/swaps"), read_too: bool = False) -> int:
    """Check ``disk`` again, then open it for writing (``read_too``: reading as well, for
    customisation); returns the file descriptor.

    Block devices are opened with O_EXCL, so the kernel refuses (EBUSY) one that is mounted or
    claimed meanwhile; the open node must be the device sysfs names (or, in tests and behind
    umockdev, a regular file).
    """
    check_safe_to_write(disk, sysfs_root=sysfs_root, mountinfo=mountinfo, swaps=swaps)
    flags = (os.O_RDWR if read_too else os.O_WRONLY) | os.O_CLOEXEC
    try:
        is_block = stat.S_ISBLK(os.stat(disk.path).st_mode)
        fd = os.open(disk.path, flags | (os.O_EXCL if is_block else 0))
    except OSError as error:
        raise UnsafeTargetError(f"cannot open {disk.path} for writing: "
                                f"{error.strerror or error}") from None
    try:
        _check_node(fd, disk)
    except BaseException:
        os.close(fd)
        raise
    return fd


def mounted_devices(mountinfo: Path = Path("/proc/self/mountinfo")) -> set[str]:
    """"MAJ:MIN" of every mounted filesystem (third field of each mountinfo line)."""
    try:
        text = Path(mountinfo).read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise UnsafeTargetError(f"cannot read {mountinfo} to check for mounts: "
                                f"{error.strerror or error}") from None
    return {fields[2] for fields in map(str.split, text.splitlines())
            if len(fields) > 2 and _DEV.fullmatch(fields[2])}


def swap_devices(swaps: Path = Path("/proc/swaps")) -> set[str]:
    """Kernel names of the block devices in use as swap (absent file: none)."""
    try:
        lines = Path(swaps).read_text(encoding="utf-8", errors="replace").splitlines()[1:]
    except FileNotFoundError:
        return set()
    except OSError as error:
        raise UnsafeTargetError(f"cannot read {swaps}: {error.strerror or error}") from None
    return {os.path.basename(line.split()[0]) for line in lines if line.strip()}


def _directly_below(directory: Path, port: str) -> bool:
    """True unless another USB device (e.g. ``1-1.2`` inside ``1-1``) sits in between."""
    parts = directory.parts
    try:
        start = len(parts) - 1 - parts[::-1].index(port)
    except ValueError:
        return False
    return not any(_PORT.fullmatch(part) for part in parts[start + 1:])


def _read_disk(name: str, directory: Path, port: str, dev_root: Path) -> BlockDevice:
    scsi = directory.parent.parent
    address = _SCSI_ADDRESS.fullmatch(scsi.name)
    size = _int_attribute(directory / "size") * SECTOR
    path = dev_root / name
    if size == 0:
        size = _node_size(path)
    return BlockDevice(
        name=name, path=path, size=size,
        read_only=_int_attribute(directory / "ro") != 0,
        dev=_text_attribute(directory / "dev"),
        lun=int(address.group(1)) if address else None,
        vendor=_text_attribute(scsi / "vendor"), model=_text_attribute(scsi / "model"),
        removable=_int_attribute(directory / "removable") != 0,
        port=port, sysfs_dir=directory)


def _disk_and_partitions(name: str, dev: str, directory: Path) -> tuple[set[str], set[str]]:
    devs, names = {dev}, {name}
    try:
        children = list(directory.iterdir())
    except OSError:
        children = []
    for child in children:
        if child.name.startswith(name) and not child.is_symlink() and (child / "dev").exists():
            devs.add(_text_attribute(child / "dev"))
            names.add(child.name)
    return devs, names


def _holders(directory: Path, names: set[str]) -> list[str]:
    held = []
    for name in sorted(names):
        base = directory if name == directory.name else directory / name
        try:
            held += sorted(entry.name for entry in (base / "holders").iterdir())
        except OSError:
            pass
    return held


def _check_name(disk: BlockDevice) -> None:
    if not _NAME.fullmatch(disk.name) or disk.path.name != disk.name:
        raise UnsafeTargetError(f"refusing the odd block device name {disk.name!r}")


def _check_node(fd: int, disk: BlockDevice) -> None:
    info = os.fstat(fd)
    if stat.S_ISBLK(info.st_mode):
        major, minor = (int(part) for part in disk.dev.split(":"))
        if (os.major(info.st_rdev), os.minor(info.st_rdev)) != (major, minor):
            raise UnsafeTargetError(f"{disk.path} is device {os.major(info.st_rdev)}:"
                                    f"{os.minor(info.st_rdev)}, sysfs says {disk.dev}")
    elif not stat.S_ISREG(info.st_mode):
        raise UnsafeTargetError(f"{disk.path} is neither a block device nor a file")


def _node_size(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        return 0
    finally:
        os.close(fd)


def _text_attribute(path: Path) -> str:
    try:
        raw = path.read_bytes()[:256]
    except OSError:
        return ""
    return "".join(c for c in raw.decode("ascii", "replace") if c.isprintable()).strip()


def _int_attribute(path: Path) -> int:
    text = _text_attribute(path)
    return int(text) if text.isdigit() else 0
