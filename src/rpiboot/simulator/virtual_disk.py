"""The mass-storage gadget's disks: backing files, and the sysfs and /dev entries a Linux host
shows for them (used in-process by :class:`~rpiboot.simulator.in_process.VirtualBus` and behind
umockdev by :mod:`rpiboot.simulator.umockdev_bridge`).

What is known from upstream. usbboot's ``mass-storage-gadget64`` boots a buildroot initramfs
(raspberrypi/buildroot, branch mass-storage-gadget64) whose ``configure-gadgets`` script sets up
a configfs gadget: USB id 0a5c:0104, manufacturer "Raspberry Pi", product "Raspberry Pi
multi-function USB device", serial number taken from /proc/cpuinfo. It creates one
``mass_storage`` function per block device present, in the order mmcblk0 (eMMC, or the SD card
on boards without eMMC), nvme0n1, sda, sdb, sdc, sdd, each with only ``lun.0`` (ro=0, cdrom=0,
nofua=0, ``removable`` left at the kernel's default of 1) and ``inquiry_string`` set to the
device's name; a CDC ACM serial function comes last. The kernel's f_mass_storage stores the
inquiry string padded to 28 characters, so the host reads SCSI vendor = the name padded to 8
characters ("mmcblk0 "), a blank 16-character model and a blank revision. On the host, usb-storage
gives each mass-storage interface its own SCSI host, so a disk sits at
``<port>:1.<interface>/host<H>/target<H>:0:0/<H>:0:0:<lun>/block/sdX`` with sd's major 8 and
16 minors per disk.

How that is known: the script was read through a third-party copy that cites it, plus notes of
someone who inspected the pinned boot.img; boot.img itself was not inspected here. Assumed:
mass-storage interfaces are numbered 0..n-1 in the order the functions were linked (the ACM
interfaces after them); the host allocates SCSI host numbers and sd names lowest-free first (the
kernel's ida allocators do so); Linux's sysfs ``vendor``/``model`` attributes show the raw padded
strings. The older ``msd`` firmware (start.elf acting as a USB drive on BCM2835/2837) is not
documented upstream; it is modelled with the same identity.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

SECTOR = 512
GADGET_VENDOR_ID, GADGET_PRODUCT_ID = 0x0A5C, 0x0104
GADGET_MANUFACTURER = "Raspberry Pi"
GADGET_PRODUCT = "Raspberry Pi multi-function USB device"
GADGET_DEVICE_ORDER = ("mmcblk0", "nvme0n1", "sda", "sdb", "sdc", "sdd")
SD_MAJOR = 8
LOCAL_MAJOR = 240
"""Linux reserves majors 240-254 for local use: taken when major 8 is mounted on this host."""
HCD_PATH = "devices/platform/rpiboot-virtual-hcd"


@dataclass
class VirtualDisk:
    """One disk the gadget exports; its bytes live in a plain backing file."""

    path: Path
    """Backing file; created sparse with ``size`` bytes if missing."""
    size: int
    """Bytes, a positive multiple of 512."""
    read_only: bool = False
    lun: int | None = None
    """SCSI LUN; None means 0 (upstream gives every disk its own function with only lun.0)."""
    device: str | None = None
    """The name on the Pi, which is also the SCSI vendor string the host sees; None means the
    upstream order by position: mmcblk0, nvme0n1, sda..."""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0 \
                or self.size % SECTOR:
            raise ValueError(f"disk size {self.size!r}: expected a positive multiple of 512")
        if self.lun is not None and (isinstance(self.lun, bool) or not isinstance(self.lun, int)
                                     or not 0 <= self.lun <= 7):
            raise ValueError(f"disk lun {self.lun!r}: expected 0..7")
        if self.device is not None and (not isinstance(self.device, str)
                                        or not self.device.isalnum() or len(self.device) > 28):
            raise ValueError(f"disk device {self.device!r}: expected a short name like mmcblk0")

    def create(self) -> None:
        """Create the backing file (sparse) unless it exists already."""
        try:
            with open(self.path, "xb") as handle:
                handle.truncate(self.size)
        except FileExistsError:
            pass

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def inquiry_strings(device: str) -> tuple[str, str, str]:
    """(vendor, model, revision) as the host reads them for a LUN whose inquiry string is
    ``device`` (f_mass_storage pads it to 28 characters: 8 + 16 + 4)."""
    padded = device.ljust(28)[:28]
    return padded[:8], padded[8:24], padded[24:28]


@dataclass(frozen=True)
class HostDisk:
    """One disk of the gadget as the host presents it."""

    disk: VirtualDisk
    name: str
    """Block device name on the host: sda, sdb..."""
    index: int
    """sd index (sda = 0), which also gives the minor numbers."""
    host: int
    interface: int
    lun: int
    dev: str
    """MAJ:MIN"""
    device: str
    """The name on the Pi (SCSI vendor)."""

    def scsi_path(self, port_path: str) -> str:
        """Path of the SCSI device directory below the USB device directory."""
        h = self.host
        return f"{port_path}:1.{self.interface}/host{h}/target{h}:0:0/{h}:0:0:{self.lun}"

    def block_attributes(self) -> dict[str, str]:
        return {"size": str(self.disk.size // SECTOR), "ro": "1" if self.disk.read_only else "0",
                "removable": "1", "dev": self.dev}

    def scsi_attributes(self) -> dict[str, str]:
        vendor, model, revision = inquiry_strings(self.device)
        return {"vendor": vendor, "model": model, "rev": revision, "type": "0"}


def sd_name(index: int) -> str:
    """sda, ..., sdz, sdaa, ... as the sd driver names its disks."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("a") + remainder) + letters
    return "sd" + letters


def mounted_devices(mountinfo: Path = Path("/proc/self/mountinfo")) -> set[tuple[int, int]]:
    """(major, minor) of every mounted filesystem on this host."""
    found: set[tuple[int, int]] = set()
    try:
        text = mountinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 2 and ":" in fields[2]:
            major, _, minor = fields[2].partition(":")
            if major.isdigit() and minor.isdigit():
                found.add((int(major), int(minor)))
    return found


class HostAllocator:
    """Names, SCSI host numbers and device numbers for gadget disks on one virtual host.

    MAJ:MIN follows sd (8, 16 per disk) unless a device in that range is mounted on the machine
    running the simulator: then a local-use major, so the disk can never be mistaken for (or
    checked against) a real mounted disk."""

    def __init__(self, mountinfo: Path = Path("/proc/self/mountinfo")):
        self._lock = threading.Lock()
        self._names: set[int] = set()
        self._hosts: set[int] = set()
        self._by_port: dict[str, list[HostDisk]] = {}
        self._mounted = mounted_devices(mountinfo)

    def allocate(self, port_path: str, disks: Sequence[VirtualDisk]) -> list[HostDisk]:
        with self._lock:
            self._release(port_path)
            result = [self._one(disk, position) for position, disk in enumerate(disks)]
            self._by_port[port_path] = result
            return result

    def release(self, port_path: str) -> list[HostDisk]:
        with self._lock:
            return self._release(port_path)

    def _release(self, port_path: str) -> list[HostDisk]:
        gone = self._by_port.pop(port_path, [])
        for entry in gone:
            self._names.discard(entry.index)
            self._hosts.discard(entry.host)
        return gone

    def _one(self, disk: VirtualDisk, position: int) -> HostDisk:
        index = _lowest_free(self._names)
        host = _lowest_free(self._hosts)
        device = disk.device or (GADGET_DEVICE_ORDER[position] if position <
                                 len(GADGET_DEVICE_ORDER) else f"disk{position}")
        return HostDisk(disk, sd_name(index), index, host, position,
                        disk.lun or 0, self._dev(index), device)

    def _dev(self, index: int) -> str:
        minor = 16 * index
        taken = any(major == SD_MAJOR and minor <= m < minor + 16 for major, m in self._mounted)
        return f"{LOCAL_MAJOR if taken or index >= 16 else SD_MAJOR}:{minor % 4096}"


def _lowest_free(used: set[int]) -> int:
    number = 0
    while number in used:
        number += 1
    used.add(number)
    return number


def usb_device_dir(port_path: str) -> str:
    """The device directory of the USB device at ``port_path`` below the sysfs root:
    ``devices/platform/rpiboot-virtual-hcd/usb1/1-1/1-1.4`` for 1-1.4."""
    bus, _, ports = port_path.partition("-")
    parts = ports.split(".")
    chain = [f"{bus}-" + ".".join(parts[:i + 1]) for i in range(len(parts))]
    return "/".join([HCD_PATH, f"usb{bus}", *chain])


class SysfsGadget:
    """Materialises gadget disks in a directory laid out like /sys, with nodes in a directory
    standing in for /dev (symbolic links to the backing files). In-process only."""

    def __init__(self, sysfs_root: Path, dev_root: Path,
                 mountinfo: Path = Path("/proc/self/mountinfo")):
        self.sysfs_root = Path(sysfs_root)
        self.dev_root = Path(dev_root)
        self.allocator = HostAllocator(mountinfo)
        self._lock = threading.Lock()

    def add(self, port_path: str, usb_ids: tuple[int, int], serial: str,
            disks: Sequence[VirtualDisk]) -> list[HostDisk]:
        entries = self.allocator.allocate(port_path, disks)
        with self._lock:
            device_dir = self.sysfs_root / usb_device_dir(port_path)
            device_dir.mkdir(parents=True, exist_ok=True)
            _write_attributes(device_dir, {"idVendor": f"{usb_ids[0]:04x}",
                                           "idProduct": f"{usb_ids[1]:04x}",
                                           "manufacturer": GADGET_MANUFACTURER,
                                           "product": GADGET_PRODUCT, "serial": serial})
            _link(self.sysfs_root / "bus" / "usb" / "devices" / port_path, device_dir)
            for entry in entries:
                entry.disk.create()
                self._add_disk(device_dir, port_path, entry)
        return entries

    def remove(self, port_path: str) -> None:
        entries = self.allocator.release(port_path)
        if not entries:
            return
        with self._lock:
            for entry in entries:
                for link in (self.dev_root / entry.name, self.sysfs_root / "block" / entry.name,
                             self.sysfs_root / "class" / "block" / entry.name,
                             self.sysfs_root / "dev" / "block" / entry.dev):
                    if link.is_symlink():
                        link.unlink()
            usb_link = self.sysfs_root / "bus" / "usb" / "devices" / port_path
            if usb_link.is_symlink():
                usb_link.unlink()
            shutil.rmtree(self.sysfs_root / usb_device_dir(port_path), ignore_errors=True)

    def _add_disk(self, device_dir: Path, port_path: str, entry: HostDisk) -> None:
        interface = device_dir / f"{port_path}:1.{entry.interface}"
        interface.mkdir(exist_ok=True)
        _write_attributes(interface, {"bInterfaceClass": "08", "bInterfaceSubClass": "06",
                                      "bInterfaceProtocol": "50",
                                      "bInterfaceNumber": f"{entry.interface:02x}"})
        scsi = device_dir / entry.scsi_path(port_path)
        block = scsi / "block" / entry.name
        block.mkdir(parents=True, exist_ok=True)
        _write_attributes(scsi, entry.scsi_attributes())
        _write_attributes(block, entry.block_attributes())
        (block / "holders").mkdir(exist_ok=True)
        _link(block / "device", scsi)
        for link in (self.sysfs_root / "block" / entry.name,
                     self.sysfs_root / "class" / "block" / entry.name,
                     self.sysfs_root / "dev" / "block" / entry.dev):
            _link(link, block)
        self.dev_root.mkdir(parents=True, exist_ok=True)
        node = self.dev_root / entry.name
        if node.is_symlink():
            node.unlink()
        os.symlink(entry.disk.path.resolve(), node)


def _write_attributes(directory: Path, attributes: dict[str, str]) -> None:
    for name, value in attributes.items():
        (directory / name).write_text(value + "\n", encoding="utf-8")


def _link(link: Path, target: Path) -> None:
    """A relative symbolic link, as sysfs has them."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    os.symlink(os.path.relpath(target, link.parent), link)


def describe(disks: Iterable[VirtualDisk]) -> list[dict[str, object]]:
    """Each disk's backing file, size and SHA-256 (for reports)."""
    return [{"file": str(disk.path), "size": disk.size, "read_only": disk.read_only,
             "sha256": disk.sha256() if disk.path.exists() else None} for disk in disks]


DISK_KEYS = {"size", "file", "read_only", "device", "lun"}
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: object) -> int:
    """Bytes from an integer or a string like ``64M``, ``2G``, ``4096`` (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if not isinstance(text, str):
        raise ValueError(f"size {text!r}: expected bytes or a size like 64M")
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    number = value[:-1] if unit else value
    if not number.isdigit():
        raise ValueError(f"size {text!r}: expected bytes or a size like 64M")
    return int(number) * _UNITS[unit]


def check_disk_spec(spec: object, where: str) -> dict[str, object]:
    """One disk of a scenario (``{"size": "64M", "file": ..., "read_only": false}``), checked
    and normalised (``size`` in bytes); ValueError names the field."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a disk must be an object with a size")
    unknown = sorted(set(spec) - DISK_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown disk field(s) {', '.join(map(repr, unknown))}")
    if "size" not in spec:
        raise ValueError(f"{where}: a disk needs a size")
    checked = dict(spec, size=parse_size(spec["size"]))
    if checked.get("file") is not None and not (isinstance(checked["file"], str)
                                                and checked["file"]):
        raise ValueError(f"{where}: file={checked['file']!r}: expected a path")
    if not isinstance(checked.get("read_only", False), bool):
        raise ValueError(f"{where}: read_only={checked['read_only']!r}: expected true or false")
    VirtualDisk(Path(str(checked.get("file") or "x")), checked["size"],  # type: ignore[arg-type]
                lun=checked.get("lun"), device=checked.get("device"))  # type: ignore[arg-type]
    return checked
