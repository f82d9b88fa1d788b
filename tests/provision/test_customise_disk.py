"""customise_disk end to end: a Raspberry Pi OS-like disk image, customised, read back with mtools."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from customise_support import PI_CMDLINE, START, Disk, embed, mbr, need_tools, open_rw, pi_disk

from rpiboot.provision.customise import (CustomiseError, Settings, customise_disk, customise_path,
                                         hash_password)
from rpiboot.provision.errors import ProvisionError
from rpiboot.provision.fat_volume import FatVolume
from rpiboot.provision.staged_disk import StagedDisk

yaml = pytest.importorskip("yaml")

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOQ3b3Vb0l9rQhpxT0c7QbhpLk2l4lT0sT5iRr8t0wq op@bench"


def settings(**overrides: object) -> Settings:
    values: dict = dict(hostname="cm4-1a2b3c4d", user="operator",
                        password_hash=hash_password("pw", salt="abcdefgh"),
                        ssh_authorized_keys=[KEY], wifi_ssid="Factory", wifi_password="line-one-pass",
                        wifi_country="DE", timezone="Europe/Berlin", keyboard_layout="de",
                        locale="de_DE.UTF-8")
    values.update(overrides)
    return Settings(**values)


def run(disk, s: Settings, **kwargs: str):
    fd = open_rw(disk)
    try:
        return customise_disk(fd, s, **kwargs)
    finally:
        os.close(fd)


def test_trixie_image_gets_cloud_init_files(tmp_path: Path) -> None:
    need_tools("fsck.fat")
    disk = pi_disk(tmp_path, files={"cmdline.txt": PI_CMDLINE, "config.txt": b"x\n",
                                    "user-data": b"#cloud-config\n# examples\n", "meta-data": b""})
    result = run(disk, settings(), instance_id="rpiboot-test-1")
    assert result.init == "cloud-init"
    assert result.files == ["cmdline.txt", "meta-data", "network-config", "user-data"]
    assert result.partition_offset == START * 512
    user_data = yaml.safe_load(disk.mtype("user-data"))
    assert user_data["hostname"] == "cm4-1a2b3c4d"
    assert user_data["user"]["ssh_authorized_keys"] == [KEY]
    assert yaml.safe_load(disk.mtype("meta-data")) == {"instance-id": "rpiboot-test-1"}
    net = yaml.safe_load(disk.mtype("network-config"))
    assert "Factory" in net["network"]["wifis"]["wlan0"]["access-points"]
    cmdline = disk.mtype("cmdline.txt")
    assert cmdline == PI_CMDLINE.rstrip() + b" cfg80211.ieee80211_regdom=DE ds=nocloud;i=rpiboot-test-1\n"
    assert "firstrun" not in disk.mdir()
    disk.fsck(tmp_path)
    _check_writes(disk, result.writes)


def test_bookworm_image_gets_firstrun(tmp_path: Path) -> None:
    need_tools("fsck.fat")
    disk = pi_disk(tmp_path, fat_type=16)
    result = run(disk, settings())
    assert result.init == "firstrun" and result.files == ["cmdline.txt", "firstrun.sh"]
    script = disk.mtype("firstrun.sh").decode()
    assert script.startswith("#!/bin/sh\n") and "set_hostname cm4-1a2b3c4d" in script
    assert disk.mtype("cmdline.txt") == PI_CMDLINE.rstrip() + (
        b" cfg80211.ieee80211_regdom=DE systemd.run=/boot/firstrun.sh "
        b"systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n")
    assert "user-data" not in disk.mdir()
    disk.fsck(tmp_path)
    _check_writes(disk, result.writes)


@pytest.mark.parametrize("init", ["cloud-init", "firstrun"])
def test_profile_choice_overrides_detection(tmp_path: Path, init: str) -> None:
    files = {"cmdline.txt": PI_CMDLINE}
    if init == "firstrun":
        files["user-data"] = b"#cloud-config\n"
    disk = pi_disk(tmp_path, files=files)
    result = run(disk, settings(init=init))
    assert result.init == init
    assert ("firstrun.sh" in result.files) == (init == "firstrun")


def test_customising_twice_replaces_rather_than_piles_up(tmp_path: Path) -> None:
    need_tools("fsck.fat")
    disk = pi_disk(tmp_path, fat_type=12)
    run(disk, settings(hostname="first"))
    run(disk, settings(hostname="second", wifi_country="FR"))
    assert "set_hostname second" in disk.mtype("firstrun.sh").decode()
    cmdline = disk.mtype("cmdline.txt").decode()
    assert cmdline.count("systemd.run=") == 1 and cmdline.count("regdom=") == 1
    assert "regdom=FR" in cmdline
    disk.fsck(tmp_path)


def test_invalid_settings_touch_nothing(tmp_path: Path) -> None:
    disk = pi_disk(tmp_path, fat_type=12)
    before = disk.sha256()
    with pytest.raises(CustomiseError) as info:
        run(disk, settings(hostname="bad_host"))
    assert info.value.code == "customise_invalid" and isinstance(info.value, ProvisionError)
    assert disk.sha256() == before


def test_nearly_full_boot_partition_is_a_clear_error(tmp_path: Path) -> None:
    disk: Disk = pi_disk(tmp_path, fat_type=12)
    fd = open_rw(disk)
    volume = FatVolume(StagedDisk(fd), disk.offset, disk.size)
    free = volume.free_clusters() * volume.cluster_bytes
    os.close(fd)
    disk.mcopy("kernel8.img", b"k" * (free - 2048), tmp_path)
    before = disk.sha256()
    with pytest.raises(CustomiseError, match=r"boot partition full: \d+ bytes needed, \d+ free") as info:
        run(disk, settings())
    assert info.value.code == "customise_failed"
    assert disk.sha256() == before


def test_no_fat_partition_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ext4-only.img"
    embed(path, mbr([(0x83, START, 4096)]), None, START * 512, 4096 * 512)
    with pytest.raises(CustomiseError, match="no FAT boot partition"):
        customise_path(path, settings())
    with pytest.raises(CustomiseError, match="cannot open"):
        customise_path(tmp_path / "missing.img", settings())


def test_unknown_image_needs_an_explicit_mechanism(tmp_path: Path) -> None:
    disk = pi_disk(tmp_path, files={"config.txt": b"x\n"})
    with pytest.raises(CustomiseError, match="set init"):
        run(disk, settings())
    with pytest.raises(CustomiseError, match="firstrun needs cmdline.txt"):
        run(disk, settings(init="firstrun"))
    result = run(disk, settings(init="cloud-init"))
    assert "cmdline.txt" not in result.files and "user-data" in result.files


def test_nothing_to_customise_writes_nothing(tmp_path: Path) -> None:
    disk = pi_disk(tmp_path, fat_type=12)
    before = disk.sha256()
    result = run(disk, Settings())
    assert result.init == "none" and result.files == [] and result.writes == []
    assert disk.sha256() == before


def _check_writes(disk, writes) -> None:
    data = disk.path.read_bytes()
    assert writes
    for offset, length, sha in writes:
        assert hashlib.sha256(data[offset:offset + length]).hexdigest() == sha
        assert disk.offset <= offset and offset + length <= disk.offset + disk.size
