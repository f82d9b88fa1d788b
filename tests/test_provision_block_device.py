"""Block devices below a USB port: discovery, [os] storage selection, and every refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rpiboot.provision.block_device import (BlockDevice, TargetError, UnsafeTargetError,
                                             check_safe_to_write, disks_below_port,
                                             open_for_writing, select_disk, validate_storage)

MOUNTINFO = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n"


class FakeHost:
    """A directory laid out like /sys (with sysfs' symbolic link loops) and one like /dev."""

    def __init__(self, root: Path):
        self.sys = root / "sys"
        self.dev = root / "dev"
        self.dev.mkdir(parents=True)
        self.mountinfo = root / "mountinfo"
        self.mountinfo.write_text(MOUNTINFO)
        self.swaps = root / "swaps"
        self.swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n")
        self._hosts = 0

    def usb_device(self, port: str, parent: Path | None = None) -> Path:
        base = parent if parent is not None else self.sys / "devices" / "pci0000:00" / "usb1"
        device = base / port
        device.mkdir(parents=True, exist_ok=True)
        (device / "subsystem").symlink_to(self.sys / "devices")  # a loop if followed
        links = self.sys / "bus" / "usb" / "devices"
        links.mkdir(parents=True, exist_ok=True)
        (links / port).symlink_to(os.path.relpath(device, links))
        return device

    def disk(self, device: Path, name: str, *, sectors: int = 2048, ro: bool = False,
             lun: int = 0, vendor: str = "mmcblk0 ", dev: str | None = None,
             partitions: tuple[str, ...] = ()) -> Path:
        host = self._hosts
        self._hosts += 1
        scsi = device / f"{device.name}:1.0" / f"host{host}" / f"target{host}:0:0" / \
            f"{host}:0:0:{lun}"
        block = scsi / "block" / name
        block.mkdir(parents=True)
        (scsi / "vendor").write_text(vendor + "\n")
        (scsi / "model").write_text(" " * 16 + "\n")
        (block / "device").symlink_to(os.path.relpath(scsi, block))
        index = ord(name[-1]) - ord("a")
        number = dev or f"8:{16 * index}"
        for key, value in {"size": sectors, "ro": int(ro), "removable": 1, "dev": number}.items():
            (block / key).write_text(f"{value}\n")
        (block / "holders").mkdir()
        major, minor = number.split(":")
        for count, partition in enumerate(partitions, 1):
            (block / partition).mkdir()
            (block / partition / "dev").write_text(f"{major}:{int(minor) + count}\n")
        backing = self.dev.parent / f"{name}.backing"
        backing.write_bytes(bytes(sectors * 512))
        (self.dev / name).symlink_to(backing)
        return block

    def disks(self, port: str) -> list[BlockDevice]:
        return disks_below_port(port, sysfs_root=self.sys, dev_root=self.dev)

    def check(self, disk: BlockDevice) -> None:
        check_safe_to_write(disk, sysfs_root=self.sys, mountinfo=self.mountinfo,
                            swaps=self.swaps)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


def test_disks_below_the_port_with_their_attributes(host: FakeHost) -> None:
    device = host.usb_device("1-1")
    host.disk(device, "sdb", sectors=4096, vendor="nvme0n1 ", lun=0)
    host.disk(device, "sda", sectors=2048, vendor="mmcblk0 ", ro=True)
    sda, sdb = host.disks("1-1")
    assert (sda.name, sda.size, sda.read_only, sda.dev, sda.lun, sda.vendor) == \
        ("sda", 2048 * 512, True, "8:0", 0, "mmcblk0")
    assert sda.path == host.dev / "sda" and sda.port == "1-1" and sda.model == ""
    assert (sdb.name, sdb.size, sdb.vendor, sdb.read_only) == ("sdb", 4096 * 512, "nvme0n1", False)


def test_disks_of_other_ports_and_of_devices_behind_the_port_are_not_included(
        host: FakeHost) -> None:
    mine = host.usb_device("1-1")
    host.disk(mine, "sda")
    host.disk(host.usb_device("1-2"), "sdb")
    host.disk(host.usb_device("1-1.3", parent=mine), "sdc")
    assert [d.name for d in host.disks("1-1")] == ["sda"]
    assert [d.name for d in host.disks("1-1.3")] == ["sdc"]
    assert host.disks("1-4") == []


def test_port_must_look_like_a_port(host: FakeHost) -> None:
    with pytest.raises(TargetError):
        host.disks("../../etc")


def test_size_from_the_node_when_sysfs_says_zero(host: FakeHost) -> None:
    block = host.disk(host.usb_device("1-1"), "sda", sectors=64)
    (block / "size").write_text("0\n")
    assert host.disks("1-1")[0].size == 64 * 512


def test_odd_names_are_ignored(host: FakeHost) -> None:
    device = host.usb_device("1-1")
    host.disk(device, "sda")
    odd = device / "1-1:1.0" / "host0" / "target0:0:0" / "0:0:0:0" / "block" / "cciss!c0d0"
    odd.mkdir()
    assert [d.name for d in host.disks("1-1")] == ["sda"]


def test_untrusted_vendor_strings_are_sanitised(host: FakeHost) -> None:
    device = host.usb_device("1-1")
    host.disk(device, "sda", vendor="\x1b[31mevil\x07\n")
    assert host.disks("1-1")[0].vendor == "[31mevil"


def _two_disks(host: FakeHost) -> list[BlockDevice]:
    device = host.usb_device("1-1")
    host.disk(device, "sda", sectors=1000, vendor="mmcblk0 ")
    host.disk(device, "sdb", sectors=3000, vendor="nvme0n1 ", lun=1)
    return host.disks("1-1")


@pytest.mark.parametrize("storage,name", [("mmcblk0", "sda"), ("NVME0N1", "sdb"),
                                          ("lun:1", "sdb"), ("largest", "sdb"), ("emmc", "sda"),
                                          ("nvme", "sdb")])
def test_select_by_storage(host: FakeHost, storage: str, name: str) -> None:
    assert select_disk(_two_disks(host), storage).name == name


def test_several_disks_and_no_choice_is_ambiguous(host: FakeHost) -> None:
    with pytest.raises(TargetError) as caught:
        select_disk(_two_disks(host), None)
    assert caught.value.code == "storage_ambiguous"
    assert "sda (mmcblk0" in str(caught.value) and "sdb (nvme0n1" in str(caught.value)


def test_one_disk_needs_no_choice_and_none_is_an_error(host: FakeHost) -> None:
    disks = _two_disks(host)
    assert select_disk(disks[:1], None).name == "sda"
    with pytest.raises(TargetError) as caught:
        select_disk([], None)
    assert caught.value.code == "storage_not_found"
    with pytest.raises(TargetError, match="no disk matches"):
        select_disk(disks, "sdz")


def test_largest_of_equal_sizes_is_ambiguous(host: FakeHost) -> None:
    device = host.usb_device("1-1")
    host.disk(device, "sda")
    host.disk(device, "sdb")
    with pytest.raises(TargetError) as caught:
        select_disk(host.disks("1-1"), "largest")
    assert caught.value.code == "storage_ambiguous"


@pytest.mark.parametrize("storage", ["lun:x", "../sda", "a b", "", "lun:"])
def test_invalid_storage_syntax(storage: str) -> None:
    with pytest.raises(TargetError) as caught:
        validate_storage(storage)
    assert caught.value.code == "storage_invalid"


def test_a_clean_disk_is_safe_and_opens_for_writing(host: FakeHost) -> None:
    host.disk(host.usb_device("1-1"), "sda", partitions=("sda1", "sda2"))
    (disk,) = host.disks("1-1")
    host.check(disk)
    fd = open_for_writing(disk, sysfs_root=host.sys, mountinfo=host.mountinfo, swaps=host.swaps)
    try:
        os.write(fd, b"hello")
    finally:
        os.close(fd)
    assert (host.dev.parent / "sda.backing").read_bytes()[:5] == b"hello"


@pytest.mark.parametrize("mounted", ["8:0", "8:2"])
def test_mounted_disk_or_partition_is_refused(host: FakeHost, mounted: str) -> None:
    host.disk(host.usb_device("1-1"), "sda", partitions=("sda1", "sda2"))
    host.mountinfo.write_text(MOUNTINFO + f"40 22 {mounted} / /media/x rw - vfat /dev/x rw\n")
    (disk,) = host.disks("1-1")
    with pytest.raises(UnsafeTargetError, match=f"mounted.*{mounted}") as caught:
        open_for_writing(disk, sysfs_root=host.sys, mountinfo=host.mountinfo, swaps=host.swaps)
    assert caught.value.code == "target_unsafe"
    assert (host.dev.parent / "sda.backing").read_bytes() == bytes(2048 * 512)


def test_swap_partition_is_refused(host: FakeHost) -> None:
    host.disk(host.usb_device("1-1"), "sda", partitions=("sda1",))
    host.swaps.write_text("Filename Type Size Used Priority\n/dev/sda1 partition 100 0 -2\n")
    with pytest.raises(UnsafeTargetError, match="swap"):
        host.check(host.disks("1-1")[0])


def test_disk_held_by_device_mapper_is_refused(host: FakeHost) -> None:
    block = host.disk(host.usb_device("1-1"), "sda")
    (block / "holders" / "dm-0").mkdir()
    with pytest.raises(UnsafeTargetError, match="held by dm-0"):
        host.check(host.disks("1-1")[0])


def test_read_only_and_empty_disks_are_refused(host: FakeHost) -> None:
    device = host.usb_device("1-1")
    host.disk(device, "sda", ro=True)
    empty = host.disk(device, "sdb", sectors=0, vendor="nvme0n1 ")
    (host.dev / "sdb").unlink()
    sda, sdb = host.disks("1-1")
    with pytest.raises(UnsafeTargetError, match="read-only"):
        host.check(sda)
    assert empty.exists() and sdb.size == 0
    with pytest.raises(UnsafeTargetError, match="size 0"):
        host.check(sdb)


def test_disk_that_moved_or_left_the_port_is_refused(host: FakeHost) -> None:
    device = host.usb_device("1-1")
    block = host.disk(device, "sda")
    (disk,) = host.disks("1-1")
    (block / "dev").write_text("8:32\n")  # a different disk now carries the name
    with pytest.raises(UnsafeTargetError, match="no longer"):
        host.check(disk)
    forged = BlockDevice(name="sda", path=host.dev / "sda", size=disk.size, read_only=False,
                         dev="8:32", lun=0, vendor="", model="", port="1-2")
    with pytest.raises(UnsafeTargetError, match="no longer"):
        host.check(forged)


@pytest.mark.parametrize("name,path", [("..", "dev/.."), ("sda", "dev/sdb"),
                                       ("sda/../sdb", "dev/sda/../sdb")])
def test_names_outside_dev_root_are_refused(host: FakeHost, tmp_path: Path, name: str,
                                            path: str) -> None:
    host.disk(host.usb_device("1-1"), "sda")
    forged = BlockDevice(name=name, path=tmp_path / path, size=512, read_only=False, dev="8:0",
                         lun=0, vendor="", model="", port="1-1")
    with pytest.raises(UnsafeTargetError, match="odd block device name|no longer"):
        host.check(forged)


def test_unreadable_mountinfo_refuses_rather_than_guesses(host: FakeHost) -> None:
    host.disk(host.usb_device("1-1"), "sda")
    host.mountinfo.unlink()
    with pytest.raises(UnsafeTargetError, match="cannot read"):
        host.check(host.disks("1-1")[0])


def test_a_node_that_is_neither_file_nor_block_device_is_refused(host: FakeHost) -> None:
    host.disk(host.usb_device("1-1"), "sda")
    (host.dev / "sda").unlink()
    (host.dev / "sda").symlink_to("/dev/null")
    (disk,) = host.disks("1-1")
    with pytest.raises(UnsafeTargetError, match="neither"):
        open_for_writing(disk, sysfs_root=host.sys, mountinfo=host.mountinfo, swaps=host.swaps)


def test_the_simulators_gadget_disks(tmp_path: Path) -> None:
    """The in-process simulator's sysfs tree (its layout follows upstream's gadget) is read as
    a real host's would be: one disk per interface, LUN 0 each, the Pi's name as vendor."""
    from rpiboot.simulator.virtual_disk import SysfsGadget, VirtualDisk

    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    gadget = SysfsGadget(tmp_path / "sys", tmp_path / "dev", mountinfo=mountinfo)
    disks = [VirtualDisk(tmp_path / "emmc.bin", 1 << 20),
             VirtualDisk(tmp_path / "nvme.bin", 4 << 20)]
    gadget.add("1-1.2", (0x0A5C, 0x0104), "c0ffee", disks)
    found = disks_below_port("1-1.2", sysfs_root=tmp_path / "sys", dev_root=tmp_path / "dev")
    assert [(d.vendor, d.lun, d.size) for d in found] == [("mmcblk0", 0, 1 << 20),
                                                          ("nvme0n1", 0, 4 << 20)]
    chosen = select_disk(found, "nvme0n1")
    fd = open_for_writing(chosen, sysfs_root=tmp_path / "sys", mountinfo=mountinfo,
                          swaps=tmp_path / "no-swaps")
    try:
        os.pwrite(fd, b"written", 4096)
    finally:
        os.close(fd)
    assert (tmp_path / "nvme.bin").read_bytes()[4096:4103] == b"written"
    gadget.remove("1-1.2")
    with pytest.raises(UnsafeTargetError, match="no longer"):
        check_safe_to_write(chosen, sysfs_root=tmp_path / "sys", mountinfo=mountinfo,
                            swaps=tmp_path / "no-swaps")
