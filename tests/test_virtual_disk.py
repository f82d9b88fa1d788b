"""The mass-storage gadget's disks, in-process: sysfs tree, /dev nodes, --follow, several boots."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from rpiboot.api import boot
from rpiboot.errors import ExitCode
from rpiboot.follow import block_devices
from rpiboot.simulator import FinalStage, RomStage, ServerStage, VirtualPi, done, load
from rpiboot.simulator.in_process import VirtualBus
from rpiboot.simulator.virtual_disk import (HostAllocator, VirtualDisk, inquiry_strings,
                                            sd_name)

from operator_support import Collector, fast_options

MiB = 1 << 20


def _disks(tmp_path: Path, *sizes: int) -> list[VirtualDisk]:
    return [VirtualDisk(tmp_path / f"disk{i}.img", size) for i, size in enumerate(sizes)]


def _gadget_only(tmp_path: Path, disks: list[VirtualDisk], port=(3,)) -> tuple[VirtualPi,
                                                                              VirtualBus]:
    pi = VirtualPi("2711", port, stages=[FinalStage(serial="5eed0001", serial_index=3,
                                                    disks=disks)])
    bus = VirtualBus([pi], sysfs_root=tmp_path / "sys", dev_root=tmp_path / "dev")
    return pi, bus


def test_sysfs_tree_below_the_port(tmp_path: Path) -> None:
    disks = _disks(tmp_path, 4 * MiB, 2 * MiB)
    disks[1].read_only = True
    pi, _bus = _gadget_only(tmp_path, disks)
    sys_root = tmp_path / "sys"
    device = (sys_root / "bus" / "usb" / "devices" / "1-3").resolve(strict=True)
    assert device.is_relative_to(sys_root / "devices")
    assert (device / "idVendor").read_text() == "0a5c\n"
    assert (device / "idProduct").read_text() == "0104\n"
    # one mass-storage function (interface) per disk, each its own SCSI host with LUN 0
    first = device / "1-3:1.0" / "host0" / "target0:0:0" / "0:0:0:0"
    second = device / "1-3:1.1" / "host1" / "target1:0:0" / "1:0:0:0"
    assert (first / "block" / "sda" / "size").read_text() == f"{4 * MiB // 512}\n"
    assert (first / "block" / "sda" / "ro").read_text() == "0\n"
    assert (first / "block" / "sda" / "removable").read_text() == "1\n"
    assert (first / "block" / "sda" / "dev").read_text().strip().endswith(":0")
    assert (second / "block" / "sdb" / "ro").read_text() == "1\n"
    assert (first / "block" / "sda" / "device" / "vendor").read_text() == "mmcblk0 \n"
    assert (second / "vendor").read_text() == "nvme0n1 \n"
    assert (second / "model").read_text() == " " * 16 + "\n"
    assert (sys_root / "block" / "sda").resolve() == (first / "block" / "sda").resolve()
    assert block_devices(sys_root, "1-3") == ["sda", "sdb"]
    assert all(d.path.stat().st_size == d.size for d in disks)


def test_dev_node_writes_land_in_the_backing_file(tmp_path: Path) -> None:
    disks = _disks(tmp_path, 1 * MiB)
    _gadget_only(tmp_path, disks)
    fd = os.open(tmp_path / "dev" / "sda", os.O_RDWR)
    try:
        assert os.lseek(fd, 0, os.SEEK_END) == MiB
        os.pwrite(fd, b"written through /dev/sda", 4096)
    finally:
        os.close(fd)
    expected = bytearray(MiB)
    expected[4096:4096 + 24] = b"written through /dev/sda"
    assert disks[0].path.read_bytes() == expected
    assert disks[0].sha256() == hashlib.sha256(expected).hexdigest()


def test_everything_removed_when_the_gadget_leaves(tmp_path: Path) -> None:
    disks = _disks(tmp_path, MiB, MiB)
    pi, _bus = _gadget_only(tmp_path, disks)
    assert sorted(os.listdir(tmp_path / "dev")) == ["sda", "sdb"]
    pi.unplug()
    assert os.listdir(tmp_path / "dev") == []
    assert not (tmp_path / "sys" / "bus" / "usb" / "devices" / "1-3").exists()
    assert not os.path.lexists(tmp_path / "sys" / "block" / "sda")
    assert block_devices(tmp_path / "sys", "1-3") == []
    assert all(d.path.exists() for d in disks)  # the backing files stay


def test_names_and_hosts_allocated_per_bus(tmp_path: Path) -> None:
    one = VirtualPi("2711", (1,), stages=[FinalStage(disks=_disks(tmp_path / "a", MiB))])
    two = VirtualPi("2712", (2,), stages=[FinalStage(disks=_disks(tmp_path / "b", MiB, MiB))])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    VirtualBus([one, two], sysfs_root=tmp_path / "sys", dev_root=tmp_path / "dev")
    assert block_devices(tmp_path / "sys", "1-1") == ["sda"]
    assert block_devices(tmp_path / "sys", "1-2") == ["sdb", "sdc"]
    one.unplug()
    three = VirtualPi("2711", (4,), stages=[FinalStage(disks=_disks(tmp_path / "a", MiB))])
    bus = VirtualBus(sysfs_root=tmp_path / "sys2", dev_root=tmp_path / "dev2")
    bus.plug_in(three)
    assert block_devices(tmp_path / "sys2", "1-4") == ["sda"]


def test_major_minor_avoids_devices_mounted_on_this_host(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw\n")
    entries = HostAllocator(mountinfo).allocate("1-1", _disks(tmp_path, MiB, MiB))
    assert [e.dev for e in entries] == ["240:0", "8:16"]
    assert [e.name for e in entries] == ["sda", "sdb"]


def test_disk_validation_and_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 512"):
        VirtualDisk(tmp_path / "x", 1000)
    with pytest.raises(ValueError, match="lun"):
        VirtualDisk(tmp_path / "x", 512, lun=9)
    assert [sd_name(i) for i in (0, 25, 26, 27)] == ["sda", "sdz", "sdaa", "sdab"]
    assert inquiry_strings("mmcblk0") == ("mmcblk0 ", " " * 16, "    ")


def _boot_with_follow(tmp_path: Path, pi: VirtualPi, **options) -> tuple[ExitCode, Collector]:
    events = Collector()
    bus = VirtualBus([pi], sysfs_root=tmp_path / "sys", dev_root=tmp_path / "dev")
    result = boot(fast_options(sysfs_root=tmp_path / "sys", follow=3.0, **options),
                  on_event=events, transport=bus)
    return result.exit_code, events


def test_follow_names_the_gadget_disks(tmp_path: Path) -> None:
    disks = _disks(tmp_path, MiB, 2 * MiB)
    pi = VirtualPi("2711", (3,), stages=[
        RomStage(serial_index=3), ServerStage(load("config.txt") + load("boot.img") + [done()]),
        FinalStage(serial="0123abcd", serial_index=3, disks=disks)])
    code, events = _boot_with_follow(tmp_path, pi)
    assert code == ExitCode.OK
    (followed,) = events.of("device_followed")
    assert followed.data["usb_id"] == "0a5c:0104"
    assert followed.data["block_devices"] == ["sda", "sdb"]


def test_board_that_boots_twice_at_the_same_port(tmp_path: Path) -> None:
    """ROM -> recovery firmware -> ROM again (nRPIBOOT jumper fitted) -> gadget firmware ->
    mass-storage gadget with its disk, all at port 1-3."""
    disks = _disks(tmp_path, MiB)
    pi = VirtualPi("2711", (3,), stages=[
        RomStage(serial_index=3), ServerStage(load("config.txt") + [done()], serial="aa"),
        RomStage(serial_index=3), ServerStage(load("boot.img") + [done()], serial="aa"),
        FinalStage(serial="aa", serial_index=3, disks=disks)])
    boot_dir = tmp_path / "boot"
    boot_dir.mkdir()
    for name in ("bootcode4.bin", "config.txt", "boot.img"):
        (boot_dir / name).write_bytes(name.encode() * 100)
    code, events = _boot_with_follow(tmp_path, pi, loop=True, timeout=None, run_timeout=1.5,
                                     directory=boot_dir)
    assert pi.violations == []
    assert pi.stage_index == 4
    assert [r.kind for r in pi.received].count("second_stage") == 2
    assert [r.name for r in pi.received if r.kind == "file" and r.value] == ["config.txt",
                                                                            "boot.img"]
    assert block_devices(tmp_path / "sys", "1-3") == ["sda"]
    assert events.of("device_followed")
