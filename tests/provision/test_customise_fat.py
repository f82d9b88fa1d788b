"""FAT editing inside disk images (rpiboot.provision.fat_volume / partitions / staged_disk),
checked against mtools and fsck.fat, and against the project's strict FAT reader."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
from customise_support import (PI_CMDLINE, START, Disk, embed, fat_image_partition, gpt, mbr,
                               mkfs_partition, need_tools, open_rw, pi_disk)

from rpiboot.eeprom.fat_image import read_fat_image
from rpiboot.provision.customise import find_boot_partition
from rpiboot.provision.fat_volume import FatEditError, FatVolume
from rpiboot.provision.partitions import PartitionTableError
from rpiboot.provision.staged_disk import StagedDisk, WrittenRange


def edit(disk: Disk, files: dict[str, bytes]) -> list[WrittenRange]:
    fd = open_rw(disk)
    try:
        staged = StagedDisk(fd)
        part = find_boot_partition(fd)
        assert part.offset == disk.offset
        volume = FatVolume(staged, part.offset, part.size)
        for name, data in files.items():
            volume.write_file(name, data)
        volume.flush()
        return staged.commit()
    finally:
        os.close(fd)


def strict_read(disk: Disk, tmp_path: Path) -> dict[str, bytes]:
    part = tmp_path / "strict.img"
    part.write_bytes(disk.partition_bytes())
    return read_fat_image(part).files


@pytest.mark.parametrize("fat_type", [12, 16, 32])
def test_replace_and_create_on_mkfs_fat(tmp_path: Path, fat_type: int) -> None:
    need_tools("fsck.fat")
    disk = pi_disk(tmp_path, fat_type=fat_type)
    longer = PI_CMDLINE.rstrip() + b" systemd.run=/boot/firstrun.sh\n"
    big = bytes(range(256)) * 40                  # 10 KiB: a multi-cluster chain
    edit(disk, {"cmdline.txt": longer, "user-data": b"#cloud-config\n", "big.bin": big,
                "A Long Name with spaces.txt": b"lfn", "MixedCase.Txt": b"mixed"})
    assert disk.mtype("cmdline.txt") == longer
    assert disk.mtype("user-data") == b"#cloud-config\n"
    assert disk.mtype("big.bin") == big
    assert disk.mtype("A Long Name with spaces.txt") == b"lfn"
    assert disk.mtype("MixedCase.Txt") == b"mixed"
    listing = disk.mdir()
    assert "A Long Name with spaces.txt" in listing and "user-data" in listing
    disk.fsck(tmp_path)
    files = strict_read(disk, tmp_path)
    assert files["config.txt"].startswith(b"# For more options")
    assert files["A Long Name with spaces.txt"] == b"lfn"


@pytest.mark.parametrize("fat_type", [12, 16, 32])
def test_shrinking_and_growing_a_file_leaves_no_lost_clusters(tmp_path: Path, fat_type: int) -> None:
    need_tools("fsck.fat")
    disk = pi_disk(tmp_path, fat_type=fat_type)
    for size in (9000, 100, 0, 20000, 1):
        edit(disk, {"cmdline.txt": b"x" * size})
        assert disk.mtype("cmdline.txt") == b"x" * size
        disk.fsck(tmp_path)
        strict_read(disk, tmp_path)               # raises on lost clusters or a wrong FSInfo


def test_project_fat_writer_image_with_one_fat(tmp_path: Path) -> None:
    need_tools("fsck.fat")
    partition = fat_image_partition(tmp_path, {"cmdline.txt": PI_CMDLINE, "start4.elf": b"e" * 3000},
                                    size=8 << 20, fat_type=16)
    disk = pi_disk(tmp_path, fat_type=16, partition=partition, files={})
    edit(disk, {"cmdline.txt": b"new\n", "network-config": b"network:\n"})
    assert disk.mtype("cmdline.txt") == b"new\n"
    assert disk.mtype("network-config") == b"network:\n"
    assert disk.mtype("start4.elf") == b"e" * 3000
    disk.fsck(tmp_path)
    assert strict_read(disk, tmp_path)["network-config"] == b"network:\n"


def test_fat32_root_directory_grows_past_one_cluster(tmp_path: Path) -> None:
    need_tools("fsck.fat")
    disk = pi_disk(tmp_path, fat_type=32)          # 512-byte clusters: 16 entries each
    names = {f"settings file number {i:02d}.conf": f"{i}\n".encode() for i in range(30)}
    edit(disk, names)
    listing = disk.mdir()
    for name, data in names.items():
        assert name in listing
        assert disk.mtype(name) == data
    disk.fsck(tmp_path)
    assert strict_read(disk, tmp_path).keys() >= names.keys()


def test_fat32_fsinfo_free_count_follows_the_fat(tmp_path: Path) -> None:
    disk = pi_disk(tmp_path, fat_type=32)
    edit(disk, {"big.bin": b"b" * 50_000})
    boot = disk.partition_bytes()
    fsinfo = struct.unpack_from("<H", boot, 48)[0] * 512
    free = struct.unpack_from("<I", boot, fsinfo + 488)[0]
    fd = open_rw(disk)
    try:
        volume = FatVolume(StagedDisk(fd), disk.offset, disk.size)
        assert free == volume.free_clusters()
        assert volume.clusters - free == 1 + 1 + 1 + 98   # root, cmdline, config, 50 000 bytes
    finally:
        os.close(fd)


def test_writes_are_recorded_and_cover_every_changed_byte(tmp_path: Path) -> None:
    disk = pi_disk(tmp_path, fat_type=16)
    before = disk.path.read_bytes()
    ranges = edit(disk, {"cmdline.txt": b"changed\n", "meta-data": b"instance-id: x\n"})
    after = disk.path.read_bytes()
    assert ranges and all(r.offset % 512 == 0 and r.length % 512 == 0 for r in ranges)
    for r in ranges:
        assert hashlib.sha256(after[r.offset:r.offset + r.length]).hexdigest() == r.sha256
    changed = [i for block in range(0, len(after), 4096)
               if before[block:block + 4096] != after[block:block + 4096]
               for i in range(block, block + 4096) if before[i] != after[i]]
    assert changed
    assert all(any(r.offset <= i < r.offset + r.length for r in ranges) for i in changed)
    assert ranges == sorted(ranges) and all(a.offset + a.length < b.offset
                                            for a, b in zip(ranges, ranges[1:]))


def test_full_filesystem_is_refused_and_nothing_written(tmp_path: Path) -> None:
    disk = pi_disk(tmp_path, fat_type=12)
    free = _free_bytes(disk)
    disk.mcopy("filler.bin", b"f" * (free - 1024), tmp_path)
    before = disk.sha256()
    with pytest.raises(FatEditError, match="boot partition full"):
        edit(disk, {"small.txt": b"ok", "user-data": b"u" * 8192})
    assert disk.sha256() == before


def test_full_fixed_root_directory_is_refused(tmp_path: Path) -> None:
    partition = mkfs_partition(tmp_path, 12, None, "-r", "16")
    disk = pi_disk(tmp_path, fat_type=12, partition=partition,
                   files={f"f{i}.txt": b"." for i in range(15)})   # label + 15 files = 16 slots
    before = disk.sha256()
    with pytest.raises(FatEditError, match="root directory is full"):
        edit(disk, {"new.txt": b"new"})
    assert disk.sha256() == before
    edit(disk, {"f3.txt": b"replacing needs no new slot"})
    assert disk.mtype("f3.txt") == b"replacing needs no new slot"


def test_gpt_disk(tmp_path: Path) -> None:
    disk = pi_disk(tmp_path, fat_type=16, table="gpt")
    edit(disk, {"user-data": b"#cloud-config\n"})
    assert disk.mtype("user-data") == b"#cloud-config\n"


def test_superfloppy_without_partition_table(tmp_path: Path) -> None:
    need_tools("mtype", "mcopy")
    path = tmp_path / "floppy.img"
    path.write_bytes(mkfs_partition(tmp_path, 12))
    disk = Disk(path, 0, path.stat().st_size)
    edit(disk, {"cmdline.txt": b"root=/dev/mmcblk0p2\n"})
    assert disk.mtype("cmdline.txt") == b"root=/dev/mmcblk0p2\n"


def test_no_fat_partition(tmp_path: Path) -> None:
    path = tmp_path / "linux-only.img"
    embed(path, mbr([(0x83, START, 4096)]), b"\0" * 4096 * 512, START * 512, 4096 * 512)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(Exception, match="no FAT boot partition.*0x83"):
            find_boot_partition(fd)
    finally:
        os.close(fd)


def test_fat_typed_partition_that_is_not_fat(tmp_path: Path) -> None:
    path = tmp_path / "blank.img"
    embed(path, mbr([(0x0C, START, 4096)]), None, START * 512, 4096 * 512)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(Exception, match="no FAT boot partition"):
            find_boot_partition(fd)
    finally:
        os.close(fd)


def test_partition_beyond_the_end_of_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "short.img"
    embed(path, mbr([(0x0C, START, 1 << 24)]), None, START * 512, 4096 * 512)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(PartitionTableError, match="beyond the end"):
            find_boot_partition(fd)
    finally:
        os.close(fd)


def test_gpt_with_a_broken_header(tmp_path: Path) -> None:
    path = tmp_path / "badgpt.img"
    table = bytearray(gpt(START, 4096, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", START + 8192))
    table[512:520] = b"NOT PART"
    embed(path, bytes(table), None, START * 512, 4096 * 512)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(PartitionTableError, match="no GPT header"):
            find_boot_partition(fd)
    finally:
        os.close(fd)


def test_staged_disk_reads_see_staged_writes_and_nothing_reaches_disk_before_commit(
        tmp_path: Path) -> None:
    path = tmp_path / "plain.bin"
    path.write_bytes(bytes(4096))
    fd = os.open(path, os.O_RDWR)
    try:
        staged = StagedDisk(fd)
        staged.write(700, b"hello")
        staged.write(1020, b"across-a-block-edge")
        assert staged.read(698, 9) == b"\0\0hello\0\0"
        assert staged.read(1020, 19) == b"across-a-block-edge"
        assert path.read_bytes() == bytes(4096)
        ranges = staged.commit()
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[700:705] == b"hello" and data[1020:1039] == b"across-a-block-edge"
    assert [(r.offset, r.length) for r in ranges] == [(512, 1024)]


def _free_bytes(disk: Disk) -> int:
    fd = open_rw(disk)
    try:
        volume = FatVolume(StagedDisk(fd), disk.offset, disk.size)
        return volume.free_clusters() * volume.cluster_bytes
    finally:
        os.close(fd)
