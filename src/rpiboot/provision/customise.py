"""Write first-boot settings into the boot partition of a freshly written disk.

``customise_disk(fd, settings)`` finds the disk's first FAT partition (the
Raspberry Pi OS boot partition, mounted at /boot/firmware on the board),
chooses the first-boot mechanism, writes its files and the kernel command
line change, and returns every byte range it wrote so verify can read them
back. Nothing is mounted and nothing needs root; the same code edits an
image file or a block device. All checks (settings, partition table, file
system, free space) happen before the first byte is written.

Which mechanism (``Settings.init`` None):

* ``cloud-init`` when the boot partition already holds ``user-data``,
  ``meta-data`` or ``network-config``: Raspberry Pi OS images built with
  cloud-init (Trixie) ship these files there;
* otherwise ``firstrun`` when it holds ``cmdline.txt`` (Bookworm and older);
* otherwise CustomiseError: set ``init`` explicitly.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

from ..eeprom.fat_image import fold_name
from .fat_volume import FatEditError, FatVolume
from .first_boot_files import cloud_init_files, cmdline_tokens, firstrun_script
from .first_boot_settings import INIT_MECHANISMS, CustomiseError, Settings, validate_settings
from .partitions import Partition, PartitionTableError, disk_size, read_exact, read_partitions
from .password_hash import hash_password
from .staged_disk import DiskIOError, StagedDisk, WrittenRange

__all__ = ["Settings", "CustomiseError", "CustomiseResult", "customise_disk", "detect_init",
           "find_boot_partition", "hash_password", "INIT_MECHANISMS", "WrittenRange"]

CLOUD_INIT_MARKERS = ("user-data", "meta-data", "network-config")
# Kernel command line words a previous customisation may have left behind.
_MECHANISM_WORDS = ("ds=nocloud", "systemd.run=", "systemd.run_success_action=",
                    "systemd.unit=kernel-command-line.target")


@dataclass
class CustomiseResult:
    init: str                                  # "cloud-init" | "firstrun" | "none" (nothing to do)
    files: list[str] = field(default_factory=list)
    writes: list[WrittenRange] = field(default_factory=list)   # (offset, length, sha256)
    partition_offset: int = 0


def customise_disk(fd: int, settings: Settings, *, instance_id: str | None = None) -> CustomiseResult:
    """Write ``settings`` into the boot partition of the disk open (read-write) on ``fd``."""
    checked = validate_settings(settings)
    try:
        return _customise(fd, checked, instance_id or f"rpiboot-{uuid.uuid4().hex}")
    except (FatEditError, PartitionTableError, DiskIOError) as exc:
        raise CustomiseError(f"customise: {exc}") from exc
    except OSError as exc:
        raise CustomiseError(f"customise: disk I/O failed: {exc.strerror or exc}") from exc


def _customise(fd: int, s: Settings, instance_id: str) -> CustomiseResult:
    disk = StagedDisk(fd)
    partition = find_boot_partition(fd)
    volume = FatVolume(disk, partition.offset, partition.size)
    if s.is_empty():
        return CustomiseResult("none", partition_offset=partition.offset)
    init = s.init or detect_init(volume)
    cmdline = volume.read_file("cmdline.txt")
    if init == "firstrun":
        if cmdline is None:
            raise CustomiseError("customise: firstrun needs cmdline.txt on the boot partition, "
                                 "and there is none")
        files = {"firstrun.sh": firstrun_script(s)}
    else:
        files = cloud_init_files(s, instance_id)
    if cmdline is not None:
        files["cmdline.txt"] = edit_cmdline(cmdline, cmdline_tokens(s, init, instance_id))
    for name, data in files.items():
        volume.write_file(name, data)
    volume.flush()
    writes = disk.commit()
    return CustomiseResult(init, sorted(files), writes, partition.offset)


def find_boot_partition(fd: int) -> Partition:
    """The first partition holding a FAT file system (or the whole disk, if it is one)."""
    parts = read_partitions(fd)
    for part in parts:
        if part.may_be_fat and _looks_like_fat(read_exact(fd, 512, part.offset)):
            return part
    if not parts and _looks_like_fat(read_exact(fd, 512, 0)):
        return Partition(0, 0, disk_size(fd), "superfloppy", True)
    found = ", ".join(f"{p.index}: {p.kind}" for p in parts) or "no partition table"
    raise CustomiseError(f"customise: no FAT boot partition on the disk ({found})")


def _looks_like_fat(boot: bytes) -> bool:
    bytes_per_sector = int.from_bytes(boot[11:13], "little")
    return (boot[510:512] == b"\x55\xaa" and boot[0] in (0xEB, 0xE9)
            and bytes_per_sector in (512, 1024, 2048, 4096) and boot[13] != 0)


def detect_init(volume: FatVolume) -> str:
    """Choose the mechanism from the boot partition's files (rule in the module docstring)."""
    names = {fold_name(entry.name) for entry in volume.entries()}
    if any(fold_name(marker) in names for marker in CLOUD_INIT_MARKERS):
        return "cloud-init"
    if fold_name("cmdline.txt") in names:
        return "firstrun"
    raise CustomiseError(
        "customise: cannot tell which first-boot mechanism the image uses (no cloud-init files "
        "and no cmdline.txt on the boot partition); set init = \"cloud-init\" or \"firstrun\"",
        "customise_invalid")


def edit_cmdline(old: bytes, tokens: list[str]) -> bytes:
    """cmdline.txt as one line: earlier first-boot words removed, ``tokens`` appended."""
    text = old.decode("latin-1")
    replaced = {token.partition("=")[0] + "=" for token in tokens if "=" in token}
    words = [w for w in text.split()
             if not w.startswith(_MECHANISM_WORDS) and not w.startswith(tuple(replaced))]
    line = " ".join(words + tokens)
    return (line + ("\n" if text.endswith("\n") else "")).encode("latin-1")


def customise_path(path: str | os.PathLike[str], settings: Settings, **kwargs: str) -> CustomiseResult:
    """customise_disk on an image file or device given by path."""
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CustomiseError(f"customise: cannot open {path}: {exc.strerror or exc}") from exc
    try:
        return customise_disk(fd, settings, **kwargs)
    finally:
        os.close(fd)
