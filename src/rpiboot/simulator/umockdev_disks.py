"""The mass-storage gadget's disks behind umockdev: block devices under the gadget's sysfs path.

For each disk (layout and identity in :mod:`rpiboot.simulator.virtual_disk`) the testbed gets the
interface, the SCSI device (``vendor``, ``model``, ``rev``) and the block device (``N: sdX``,
``size`` in 512-byte sectors, ``ro``, ``removable``, ``dev``). umockdev then shows ``/dev/sdX``
as a block device backed by ``<testbed>/dev/sdX``; that file is replaced by a symbolic link to
the disk's backing file, so what a command under the wrapper writes to ``/dev/sdX`` lands in the
backing file. umockdev's preload tells block from character devices by the sticky bit of the
file behind the node, so the backing file carries it while attached (its mode is restored on
removal). The block ioctls (BLKGETSIZE64...) are not answered: sizes come from sysfs or lseek.
Unlike a real block device, opening ``/dev/sdX`` with O_TRUNC (a shell's ``>``) truncates the
backing file: write with ``dd conv=notrunc`` or open without O_TRUNC.

Standard library only (plus the testbed object handed in): runs under the system Python.
"""

from __future__ import annotations

import os
import stat
import threading
from typing import Any, Sequence

from .virtual_disk import HostAllocator, HostDisk, VirtualDisk


class DiskRecords:
    """Adds and removes gadget disks in a testbed; names allocated per bus (the testbed)."""

    def __init__(self, root_dir: str):
        self.root_dir = root_dir
        self.allocator = HostAllocator()
        self._lock = threading.Lock()
        self._added: dict[str, list[tuple[HostDisk, list[str], int]]] = {}

    def add(self, testbed: Any, usb_syspath: str, port_path: str,
            disks: Sequence[VirtualDisk]) -> list[HostDisk]:
        """Call from the bus thread, after the gadget's USB device was added."""
        entries = self.allocator.allocate(port_path, disks)
        added = []
        for entry in entries:
            entry.disk.create()
            syspaths = self._add_one(testbed, usb_syspath, port_path, entry)
            mode = os.stat(entry.disk.path).st_mode
            os.chmod(entry.disk.path, stat.S_IMODE(mode) | stat.S_ISVTX)
            node = os.path.join(self.root_dir, "dev", entry.name)
            if os.path.lexists(node):
                os.unlink(node)
            os.symlink(os.path.abspath(entry.disk.path), node)
            added.append((entry, syspaths, stat.S_IMODE(mode)))
        with self._lock:
            self._added[port_path] = added
        return entries

    def remove(self, testbed: Any, port_path: str) -> None:
        """Remove the disks of the gadget at ``port_path`` (nothing if it had none)."""
        self.allocator.release(port_path)
        with self._lock:
            added = self._added.pop(port_path, [])
        for entry, syspaths, mode in added:
            for syspath in reversed(syspaths):
                testbed.remove_device(syspath)
            node = os.path.join(self.root_dir, "dev", entry.name)
            if os.path.islink(node):
                os.unlink(node)
            try:
                os.chmod(entry.disk.path, mode)
            except OSError:
                pass

    def _add_one(self, testbed: Any, usb_syspath: str, port_path: str,
                 entry: HostDisk) -> list[str]:
        interface = f"{usb_syspath}/{port_path}:1.{entry.interface}"
        scsi = f"{usb_syspath}/{entry.scsi_path(port_path)}"
        block = f"{scsi}/block/{entry.name}"
        major, _, minor = entry.dev.partition(":")
        records = [
            (interface, ["E: SUBSYSTEM=usb", "E: DEVTYPE=usb_interface",
                         "E: DRIVER=usb-storage", "A: bInterfaceClass=08\\n",
                         "A: bInterfaceSubClass=06\\n", "A: bInterfaceProtocol=50\\n",
                         f"A: bInterfaceNumber={entry.interface:02x}\\n"]),
            (scsi, ["E: SUBSYSTEM=scsi", "E: DEVTYPE=scsi_device", "E: DRIVER=sd"]
             + [f"A: {key}={_escape(value)}\\n" for key, value in
                entry.scsi_attributes().items()]),
            (block, [f"N: {entry.name}", "E: SUBSYSTEM=block", "E: DEVTYPE=disk",
                     f"E: DEVNAME=/dev/{entry.name}", f"E: MAJOR={major}", f"E: MINOR={minor}"]
             + [f"A: {key}={value}\\n" for key, value in entry.block_attributes().items()]),
        ]
        for syspath, lines in records:
            text = "\n".join([f"P: {syspath[len('/sys'):]}", *lines]) + "\n"
            if not testbed.add_from_string(text):
                raise RuntimeError(f"umockdev refused {syspath}")
        device_link = os.path.join(self.root_dir, block.lstrip("/"), "device")
        if not os.path.lexists(device_link):
            os.symlink("../..", device_link)
        return [interface, scsi, block]


def _escape(value: str) -> str:
    """umockdev record values: a backslash starts an escape."""
    return value.replace("\\", "\\\\")
