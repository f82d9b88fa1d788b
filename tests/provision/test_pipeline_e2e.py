"""rpiboot-provision end to end, in-process: virtual boards on a VirtualBus whose mass-storage
gadget disks appear in a private sysfs / dev tree, the real engine, provio's writer and verify,
custom's customisation and the SQLite ledger."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from rpiboot.eeprom import image as eeprom_image
from rpiboot.provision import cli
from rpiboot.provision.errors import ExitCode
from rpiboot.provision.ledger import open_ledger
from rpiboot.simulator import VirtualDisk
from rpiboot.simulator.in_process import VirtualBus

from provision_support import (board, compress, make_bmap, make_boot_dirs, os_image,
                               run_virtual, write_profile)

MiB = 1 << 20


@pytest.fixture
def line(tmp_path):
    gadget, recovery = make_boot_dirs(tmp_path)
    image = os_image(tmp_path / "os.img", 3 * MiB)
    return tmp_path, image


def profile(tmp: Path, image: str = "os.img.xz", extra: str = "", name: str = "p.toml") -> Path:
    return write_profile(tmp / name, f'[boot]\ndirectory = "gadget"\n[os]\nimage = "{image}"\n'
                                     + extra)


def disk_bytes(path: Path) -> bytes:
    return path.read_bytes()


def export(tmp: Path) -> list[dict]:
    ledger = open_ledger(tmp / "ledger.sqlite")
    try:
        return ledger.export()
    finally:
        ledger.close()


def assert_clean(run) -> None:
    assert run.error is None, run.error
    assert run.schema_problems() == []


def test_four_boards_at_once_with_xz_share_one_decompression(line):
    tmp, image = line
    compress(tmp / "os.img", "xz")
    pis = [board("2711", port, f"1000000{port}", tmp / f"disk{port}.img", 8 * MiB)
           for port in range(1, 5)]
    run = run_virtual(tmp, profile(tmp), pis)
    assert_clean(run)
    assert run.outcome.exit_code == ExitCode.OK
    for port in range(1, 5):
        data = disk_bytes(tmp / f"disk{port}.img")
        assert data[:len(image)] == image
        assert data[len(image):] == bytes(len(data) - len(image))  # nothing past the image
    writes = [e["details"] for e in run.kinds("step_done") if e["step"] == "write"]
    assert [(w["batch"], w["boards"]) for w in writes] == [(1, 4)] * 4
    assert len(run.kinds("board_arrived")) == 4
    records = export(tmp)
    digest = hashlib.sha256(image).hexdigest()
    assert sorted(r["serial"] for r in records) == [f"1000000{p}" for p in range(1, 5)]
    for record in records:
        assert (record["result"], record["image_sha256"], record["bytes_written"],
                record["verified"]) == ("ok", digest, len(image), True)
        steps = [s["step"] for s in record["steps"]]
        assert steps == ["boot", "claim", "storage", "write", "verify", "record"]


def test_write_progress_per_board_has_bytes_rate_and_eta(tmp_path):
    make_boot_dirs(tmp_path)
    image = os_image(tmp_path / "os.img", 9 * MiB)
    pis = [board("2711", port, f"9r0g000{port}", tmp_path / f"p{port}.img", 16 * MiB)
           for port in (1, 2)]
    run = run_virtual(tmp_path, profile(tmp_path, "os.img"), pis)
    assert_clean(run)
    for port in ("1-1", "1-2"):
        progress = [e for e in run.kinds("step_progress")
                    if e["step"] == "write" and e["port"] == port]
        assert progress, port
        assert [e["bytes"] for e in progress] == sorted(e["bytes"] for e in progress)
        last = progress[-1]
        assert (last["bytes"], last["total"]) == (len(image), len(image))
        assert last["rate"] > 0 and last["eta"] is not None and last["eta"] >= 0


def test_eeprom_then_reentry_at_the_same_port_then_write(line):
    tmp, image = line
    recovery_before = {p.name: p.read_bytes() for p in (tmp / "recovery").iterdir()}
    extra = '[eeprom]\nrecovery = "recovery"\nboot_conf = "boot.conf"\n'
    pi = board("2711", 3, "abcdef02", tmp / "disk.img", 8 * MiB, eeprom=True,
               meta={"MAC_ADDR": "d8:3a:dd:10:20:30", "BOOT_ROM": "0000c8b0"})
    run = run_virtual(tmp, profile(tmp, "os.img", extra), [pi])
    assert_clean(run)
    assert run.outcome.exit_code == ExitCode.OK
    assert len(run.kinds("board_arrived")) == 1  # the re-entry is not a new board
    steps = [e["step"] for e in run.kinds("step_done")]
    assert steps == ["eeprom", "claim", "boot", "storage", "write", "verify", "record"]
    served = pi.files()["pieeprom.bin"]
    assert eeprom_image.EepromImage(served).get_file(eeprom_image.BOOTCONF_TXT) == \
        (tmp / "boot.conf").read_bytes()
    recovery_config = [r.data for r in pi.received if r.kind == "file" and r.stage == 1
                       and r.name == "config.txt"]
    assert recovery_config == [b"uart_2ndstage=1\n# added by rpiboot-provision: come back for "
                               b"the next step\nrecovery_reboot=1\n"]
    assert pi.files()["config.txt"] == (tmp / "gadget" / "config.txt").read_bytes()
    assert disk_bytes(tmp / "disk.img")[:len(image)] == image
    assert {p.name: p.read_bytes() for p in (tmp / "recovery").iterdir()} == recovery_before
    record = export(tmp)[0]
    assert record["eeprom_sha256"] == hashlib.sha256(served).hexdigest()
    assert record["mac"] == "d8:3a:dd:10:20:30"
    assert record["otp"]["BOOT_ROM"] == "0000c8b0"
    assert pi.violations == []


def test_eeprom_key_signs_the_boot_config_and_the_users_files_stay_untouched(line):
    """[eeprom] key: the bootloader image carries bootconf.sig and the public key, as
    update-pieeprom -k does; it is built in a private directory (the user's files unchanged)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from rpiboot.provision.eeprom_image import build_recovery
    from rpiboot.provision.profile import load_profile
    tmp, _image = line
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    before = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
    section = load_profile(profile(tmp, "os.img", '[eeprom]\nrecovery = "recovery"\n'
                                                  'boot_conf = "boot.conf"\nkey = "key.pem"\n'
                                   )).eeprom
    build = build_recovery(section)
    try:
        assert build.signed and not build.directory.is_relative_to(tmp)
        built = eeprom_image.EepromImage((build.directory / "pieeprom.bin").read_bytes())
        assert built.get_file(eeprom_image.BOOTCONF_TXT) == (tmp / "boot.conf").read_bytes()
        signature = built.get_file(eeprom_image.BOOTCONF_SIG)
        assert hashlib.sha256((tmp / "boot.conf").read_bytes()).hexdigest() in \
            signature.decode("ascii", "replace")
        public = key.public_key().public_numbers()
        assert public.n.to_bytes(256, "little") in built.get_file(eeprom_image.PUBKEY_BIN)
    finally:
        build.remove()
    assert not build.directory.exists()
    assert {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file() and p.name != "p.toml"} \
        == {p: d for p, d in before.items() if p.name != "p.toml"}


def test_customisation_is_on_the_disk_read_back_with_mtools(tmp_path):
    pytest.importorskip("rpiboot.provision.customise")
    from customise_support import pi_disk
    make_boot_dirs(tmp_path)
    disk = pi_disk(tmp_path, name="os.img")
    compress(disk.path, "gz")
    extra = ('[customise]\nhostname = "cm4-{serial}"\nuser = "op"\n'
             'password_hash = "$6$salt$0HpLgJ1Bm0oQ1ZBq5Xo2K5eK5u7w9t2b1bY3qk5d0fR2Zx8zq9m1r3H'
             'eW5pQ8nV4yL6jT2sA0cD1fG3hJ5kL7."\n'
             'ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx op@line"]\n'
             'timezone = "Europe/London"\ninit = "cloud-init"\n')
    pi = board("2712", 1, "cafe0001", tmp_path / "target.img", 64 * MiB)
    run = run_virtual(tmp_path, profile(tmp_path, "os.img.gz", extra), [pi])
    assert_clean(run)
    assert run.outcome.exit_code == ExitCode.OK, run.outcome.boards[0].message
    user_data = subprocess.run(["mtype", "-i", f"{tmp_path / 'target.img'}@@{disk.offset}",
                                "::user-data"], check=True, capture_output=True).stdout.decode()
    assert "cm4-cafe0001" in user_data
    assert "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx op@line" in user_data
    done = next(e for e in run.kinds("step_done") if e["step"] == "customise")
    assert done["details"]["init"] == "cloud-init" and done["details"]["verified_bytes"] > 0


def test_already_provisioned_board_is_skipped_unless_reprovision(line):
    tmp, image = line
    first = run_virtual(tmp, profile(tmp, "os.img"),
                        [board("2711", 1, "5eed0001", tmp / "a.img", 8 * MiB)])
    assert first.outcome.exit_code == ExitCode.OK
    again = run_virtual(tmp, profile(tmp, "os.img"),
                        [board("2711", 1, "5eed0001", tmp / "b.img", 8 * MiB)])
    assert again.outcome.exit_code == ExitCode.OK
    assert [e["serial"] for e in again.kinds("board_skipped")] == ["5eed0001"]
    assert disk_bytes(tmp / "b.img") == bytes(8 * MiB)
    forced = run_virtual(tmp, profile(tmp, "os.img"),
                         [board("2711", 1, "5eed0001", tmp / "c.img", 8 * MiB)],
                         reprovision=True)
    assert forced.outcome.exit_code == ExitCode.OK and not forced.kinds("board_skipped")
    assert disk_bytes(tmp / "c.img")[:len(image)] == image
    results = [r["result"] for r in export(tmp)]
    assert results == ["ok", "skipped", "ok"]


def corrupt(path: Path, kind: str) -> None:
    data = bytearray(path.read_bytes())
    if kind == "flip":
        data[len(data) // 2] ^= 0xFF
    elif kind == "crc":  # gzip trailer: CRC32 then size
        data[-8] ^= 0xFF
    elif kind == "truncate":
        del data[len(data) * 2 // 3:]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("suffix, damage", [("xz", "flip"), ("gz", "crc"), ("xz", "truncate"),
                                            ("gz", "truncate")])
def test_corrupt_image_fails_every_board_and_records_it(line, suffix, damage):
    tmp, _image = line
    packed = compress(tmp / "os.img", suffix)
    corrupt(packed, damage)
    pis = [board("2711", port, f"bad{port}", tmp / f"d{port}.img", 8 * MiB) for port in (1, 2)]
    run = run_virtual(tmp, profile(tmp, packed.name), pis)
    if run.error is not None:  # found by the pre-run checks: nothing touched
        assert getattr(run.error, "code", "") == "image_corrupt"
        assert all(not pi.received for pi in pis)
        return
    assert_clean(run)
    assert run.outcome.exit_code == ExitCode.BOARD_FAILED
    assert {e["code"] for e in run.kinds("board_failed")} == {"image_corrupt"}
    assert {r["result"] for r in export(tmp)} == {"image_corrupt"}
    assert not any(r["verified"] for r in export(tmp))


def test_zip_with_two_images_bad_bmap_and_small_disk_are_refused(line, capsys):
    tmp, image = line
    with zipfile.ZipFile(tmp / "two.zip", "w") as archive:
        archive.writestr("a.img", image)
        archive.writestr("b.img", image)
    assert cli.main(["check", str(profile(tmp, "two.zip"))]) == ExitCode.PROFILE
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "rpiboot-provision: error:" in error
    os_image(tmp / "double.img", len(image) * 2, seed="double")  # a bmap for another size
    (tmp / "os.img.bmap").write_bytes(make_bmap(tmp / "double.img"))
    bad_bmap = profile(tmp, "os.img", 'bmap = "os.img.bmap"\n', "b.toml")
    assert cli.main(["check", str(bad_bmap)]) == ExitCode.PROFILE
    assert f"bmap describes an image of {2 * len(image)} bytes" in capsys.readouterr().err
    (tmp / "garbage.bmap").write_text("<bmap version='9.9'/>")
    assert cli.main(["check", str(profile(tmp, "os.img", 'bmap = "garbage.bmap"\n',
                                          "g.toml"))]) == ExitCode.PROFILE
    assert "bmap" in capsys.readouterr().err
    small = board("2711", 1, "sma11", tmp / "small.img", 2 * MiB)
    run = run_virtual(tmp, profile(tmp, "os.img"), [small])
    assert run.outcome.exit_code == ExitCode.BOARD_FAILED
    assert run.kinds("board_failed")[0]["code"] == "image_too_large"
    assert disk_bytes(tmp / "small.img") == bytes(2 * MiB)  # refused before a byte


def test_board_vanishing_mid_write_fails_alone(line, monkeypatch):
    tmp, image = line
    pis = [board("2711", port, f"van{port}", tmp / f"v{port}.img", 8 * MiB) for port in (1, 2, 3)]
    victim = pis[1]
    victim_file = os.path.realpath(tmp / "v2.img")
    real_pwrite = os.pwrite
    written = {"n": 0}

    def pwrite(fd, data, offset):  # the kernel's answer once the USB disk is gone
        if os.path.realpath(f"/proc/self/fd/{fd}") == victim_file:
            written["n"] += len(data)
            if written["n"] > MiB:
                victim.unplug()
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    run = run_virtual(tmp, profile(tmp, "os.img"), pis)
    assert_clean(run)
    assert run.outcome.exit_code == ExitCode.BOARD_FAILED
    failed = run.kinds("board_failed")
    assert [(e["port"], e["code"]) for e in failed] == [("1-2", "device_gone")]
    for name in ("v1.img", "v3.img"):
        assert disk_bytes(tmp / name)[:len(image)] == image
    assert {r["serial"]: r["result"] for r in export(tmp)} == \
        {"van1": "ok", "van2": "device_gone", "van3": "ok"}


def test_a_disk_that_stores_wrong_bytes_fails_verify_alone(line, monkeypatch):
    """A disk that accepts the write but keeps different bytes: verify reads it back past the
    page cache, the board fails with verify_mismatch and its record says not verified."""
    tmp, image = line
    pis = [board("2711", port, f"ver{port}", tmp / f"w{port}.img", 8 * MiB) for port in (1, 2)]
    bad_file = os.path.realpath(tmp / "w2.img")
    real_pwrite = os.pwrite

    def pwrite(fd, data, offset):  # type: ignore[no-untyped-def]
        if offset == 0 and os.path.realpath(f"/proc/self/fd/{fd}") == bad_file:
            damaged = bytearray(data)
            damaged[100] ^= 0xFF
            return real_pwrite(fd, bytes(damaged), offset)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    run = run_virtual(tmp, profile(tmp, "os.img"), pis)
    assert_clean(run)
    assert run.outcome.exit_code == ExitCode.BOARD_FAILED
    assert [(e["port"], e["code"], e["step"]) for e in run.kinds("board_failed")] == \
        [("1-2", "verify_mismatch", "verify")]
    records = {r["serial"]: r for r in export(tmp)}
    assert (records["ver2"]["result"], records["ver2"]["verified"]) == ("verify_mismatch", False)
    assert (records["ver1"]["result"], records["ver1"]["verified"]) == ("ok", True)


def test_two_boards_reporting_one_serial_on_one_station_are_not_both_written(line):
    """The ledger's claim stops two stations; two ports of one station reporting the same
    serial (a cloned or faulty board) must not both be provisioned either."""
    tmp, image = line
    pis = [board("2711", port, "c10ned01", tmp / f"c{port}.img", 8 * MiB) for port in (1, 2)]
    run = run_virtual(tmp, profile(tmp, "os.img"), pis)
    assert_clean(run)
    assert run.outcome.exit_code == ExitCode.BOARD_FAILED
    (failed,) = run.kinds("board_failed")
    assert (failed["code"], failed["step"]) == ("claimed_elsewhere", "claim")
    assert "same serial" in failed["message"]
    written = [disk_bytes(tmp / f"c{port}.img")[:len(image)] == image for port in (1, 2)]
    assert sorted(written) == [False, True]
    loser = tmp / f"c{written.index(False) + 1}.img"
    assert disk_bytes(loser) == bytes(8 * MiB)
    assert sorted(r["result"] for r in export(tmp)) == ["claimed_elsewhere", "ok"]


def test_unwritable_ledger_refuses_to_start(line, capsys):
    tmp, _image = line
    (tmp / "ledger-dir").mkdir()
    pi = board("2711", 1, "1edger", tmp / "l.img", 8 * MiB)
    run = run_virtual(tmp, profile(tmp, "os.img"), [pi], ledger=tmp / "ledger-dir")
    assert getattr(run.error, "code", None) == "ledger_unavailable"
    assert pi.received == [] and not (tmp / "l.img").exists()  # no board was touched
    status = cli.main(["run", str(profile(tmp, "os.img")), "--ledger", str(tmp / "ledger-dir"),
                       "--plain", "--timeout", "1"])
    assert status == ExitCode.LEDGER
    assert "ledger" in capsys.readouterr().err


def test_only_the_chosen_disk_of_the_board_is_written(line):
    tmp, image = line
    (tmp / "dev").mkdir(exist_ok=True)
    decoy = tmp / "decoy.img"
    decoy.write_bytes(bytes(8 * MiB))
    os.symlink(decoy, tmp / "dev" / "sdz")  # a disk of the host, not below any board's port
    disks = [VirtualDisk(tmp / "emmc.img", 8 * MiB, device="mmcblk0"),
             VirtualDisk(tmp / "nvme.img", 16 * MiB, device="nvme0n1")]
    read_only = [VirtualDisk(tmp / "ro.img", 8 * MiB, read_only=True, device="nvme0n1")]
    nvme = profile(tmp, "os.img", 'storage = "nvme0n1"\n')
    run = run_virtual(tmp, nvme, [board("2712", 1, "d15c0001", tmp / "x", 0, disks=disks),
                                  board("2712", 2, "d15c0002", tmp / "x", 0, disks=read_only)])
    assert_clean(run)
    results = {b.serial: b.result for b in run.outcome.boards}
    assert results["d15c0001"] == "ok"
    assert results["d15c0002"] != "ok"
    assert disk_bytes(tmp / "nvme.img")[:len(image)] == image
    assert disk_bytes(tmp / "emmc.img") == bytes(8 * MiB)
    assert disk_bytes(tmp / "ro.img") == bytes(8 * MiB)
    assert disk_bytes(decoy) == bytes(8 * MiB)


def test_a_mounted_disk_is_never_written(line):
    tmp, _image = line
    pi = board("2711", 1, "m0unted", tmp / "m.img", 8 * MiB)
    # Every sd major/minor a virtual disk can get is "mounted" on this pretend host.
    (tmp / "mountinfo").write_text("".join(
        f"{n} 1 {major}:{minor} / /mnt{n} rw - ext4 /dev/x rw\n"
        for n, (major, minor) in enumerate((m, k) for m in (8, 240) for k in range(0, 256, 16))))
    run = run_virtual(tmp, profile(tmp, "os.img"), [pi])
    assert_clean(run)
    assert run.outcome.boards[0].result == "target_unsafe"
    assert disk_bytes(tmp / "m.img") == bytes(8 * MiB)


def test_interrupt_marks_boards_in_progress_interrupted(line):
    tmp, _image = line
    big = os_image(tmp / "big.img", 24 * MiB, seed="big")
    assert big
    pis = [board("2711", port, f"int{port}", tmp / f"i{port}.img", 32 * MiB) for port in (1, 2)]
    holder = {}

    def on_ready(pipeline):
        holder["pipeline"] = pipeline

    from rpiboot.provision import api
    real = api.provision

    def provision(*args, **kwargs):
        kwargs["on_ready"] = on_ready
        user = kwargs["on_event"]

        def on_event(item):
            user(item)
            if item.kind == "step_progress" and item.data["step"] == "write":
                holder["pipeline"].interrupt()
        kwargs["on_event"] = on_event
        return real(*args, **kwargs)

    import provision_support
    original = provision_support.provision
    provision_support.provision = provision
    try:
        run = run_virtual(tmp, profile(tmp, "big.img"), pis)
    finally:
        provision_support.provision = original
    assert_clean(run)
    assert run.outcome.exit_code == ExitCode.INTERRUPTED
    assert {r["result"] for r in export(tmp)} == {"interrupted"}
    assert json.loads(json.dumps(run.kinds("summary")[0]))["exit_code"] == 130


def role_dirs(tmp: Path) -> None:
    """Boot directories the simulator's firmware roles accept: the gadget loads boot.img only
    with boot_ramdisk=1, as upstream's mass-storage-gadget64/config.txt sets it."""
    (tmp / "gadget" / "config.txt").write_bytes(b"[all]\nboot_ramdisk=1\n")


def test_role_based_board_flashes_the_built_eeprom_and_comes_back(line):
    from rpiboot.simulator.firmware_roles import virtual_board
    tmp, image = line
    role_dirs(tmp)
    pi = virtual_board("2711", (4,), ["recovery", "mass-storage-gadget"],
                       disks=[VirtualDisk(tmp / "r.img", 8 * MiB)])
    extra = '[eeprom]\nrecovery = "recovery"\nboot_conf = "boot.conf"\n'
    run = run_virtual(tmp, profile(tmp, "os.img", extra), [pi])
    assert_clean(run)
    assert run.outcome.exit_code == ExitCode.OK, run.outcome.boards[0].message
    assert pi.board.refusals == [] and pi.violations == []
    record = export(tmp)[0]
    assert pi.board.eeprom_sha256 == record["eeprom_sha256"]  # the board holds our image
    assert record["otp"]["EEPROM_UPDATE"] == "success" and record["mac"].startswith("d8:3a:dd")
    assert record["revision"] == "c03141"
    assert record["board"]["model"] == "Compute Module 4"  # decoded by the engine from the OTP
    (done,) = run.kinds("board_done")
    assert done["board"]["revision_code"] == "c03141"
    assert disk_bytes(tmp / "r.img")[:len(image)] == image


def test_recovery_that_does_not_reboot_fails_the_board_cleanly(line):
    from rpiboot.simulator.firmware_roles import virtual_board
    tmp, _image = line
    role_dirs(tmp)
    (tmp / "recovery" / "config.txt").write_bytes(b"recovery_reboot=0\n")  # the user's choice
    pi = virtual_board("2711", (5,), ["recovery", "mass-storage-gadget"],
                       disks=[VirtualDisk(tmp / "n.img", 8 * MiB)])
    extra = '[eeprom]\nrecovery = "recovery"\nboot_conf = "boot.conf"\n'
    run = run_virtual(tmp, profile(tmp, "os.img", extra), [pi], reentry_timeout=1.0)
    assert_clean(run)
    (failed,) = run.kinds("board_failed")
    assert (failed["step"], failed["code"]) == ("boot", "board_gone")
    assert "recovery_reboot" in failed["message"]
    assert export(tmp)[0]["result"] == "board_gone"
    assert not (tmp / "n.img").exists() or disk_bytes(tmp / "n.img") == bytes(8 * MiB)


def test_bmap_for_another_image_fails_the_boards_and_a_matching_one_writes(line):
    tmp, image = line
    other = tmp / "other.img"
    os_image(other, len(image), seed="another image of the same size")
    for source, name in ((other, "wrong.bmap"), (tmp / "os.img", "right.bmap")):
        (tmp / name).write_bytes(make_bmap(source))
    wrong = profile(tmp, "os.img", 'bmap = "wrong.bmap"\n', "w.toml")
    run = run_virtual(tmp, wrong, [board("2711", 1, "b3a9", tmp / "w.img", 8 * MiB)])
    assert_clean(run)
    assert [e["code"] for e in run.kinds("board_failed")] == ["bmap_mismatch"]
    right = profile(tmp, "os.img", 'bmap = "right.bmap"\n', "r.toml")
    run = run_virtual(tmp, right, [board("2711", 2, "b3a8", tmp / "r.img", 8 * MiB)])
    assert run.outcome.exit_code == ExitCode.OK
    assert disk_bytes(tmp / "r.img")[:len(image)] == image


def test_a_hostile_serial_never_becomes_a_hostname(tmp_path):
    from customise_support import pi_disk
    make_boot_dirs(tmp_path)
    pi_disk(tmp_path, name="os.img")
    extra = '[customise]\nhostname = "cm4-{serial}"\ninit = "cloud-init"\n'
    pi = board("2711", 1, "x\ny;rm -rf /", tmp_path / "h.img", 64 * MiB)
    run = run_virtual(tmp_path, profile(tmp_path, "os.img", extra), [pi])
    assert_clean(run)
    (failed,) = run.kinds("board_failed")
    # Refused as soon as the serial is known, before the disk is written (not after a write).
    assert (failed["step"], failed["code"]) == ("claim", "customise_invalid")
    assert disk_bytes(tmp_path / "h.img") == bytes(64 * MiB)
    assert export(tmp_path)[0]["serial"] == "x\ny;rm -rf /"  # recorded as the board sent it


def test_boards_in_progress_are_waited_for_within_the_gather_window(line):
    """A board that arrived with the others but boots more slowly joins their batch."""
    tmp, image = line
    fast = board("2711", 1, "9a7e0001", tmp / "g1.img", 8 * MiB)
    slow = board("2711", 2, "9a7e0002", tmp / "g2.img", 8 * MiB, reenumerate_delay=0.6)
    run = run_virtual(tmp, profile(tmp, "os.img"), [fast, slow], gather=3.0)
    assert_clean(run)
    writes = [(e["details"]["batch"], e["details"]["boards"])
              for e in run.kinds("step_done") if e["step"] == "write"]
    assert writes == [(1, 2), (1, 2)]
    for name in ("g1.img", "g2.img"):
        assert disk_bytes(tmp / name)[:len(image)] == image


def test_a_board_arriving_after_the_write_began_gets_the_next_batch(line):
    tmp, image = line
    first = board("2711", 1, "9a7e0003", tmp / "g3.img", 8 * MiB)
    later = board("2711", 2, "9a7e0004", tmp / "g4.img", 8 * MiB)
    run = run_virtual(tmp, profile(tmp, "os.img"), [first], later=[(1.0, later)], gather=3.0)
    assert_clean(run)
    writes = sorted((e["details"]["batch"], e["details"]["boards"])
                    for e in run.kinds("step_done") if e["step"] == "write")
    assert writes == [(1, 1), (2, 1)]  # nobody waits for a board that has not arrived
    for name in ("g3.img", "g4.img"):
        assert disk_bytes(tmp / name)[:len(image)] == image


def test_no_permission_on_the_disk_is_status_7_with_a_hint(line, monkeypatch):
    tmp, _image = line
    real_access = os.access
    dev = str(tmp / "dev")
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path).startswith(dev)
                        else real_access(path, mode, **kw))  # as a user without rights would
    run = run_virtual(tmp, profile(tmp, "os.img"), [board("2711", 1, "pe7", tmp / "p.img",
                                                          8 * MiB)])
    assert run.outcome.exit_code == ExitCode.PERMISSION
    (failed,) = run.kinds("board_failed")
    assert failed["code"] == "permission" and "udev rule" in failed["message"]
    assert disk_bytes(tmp / "p.img") == bytes(8 * MiB)


@pytest.mark.parametrize("filters", [{"port_path": "1-2"}, {"port_number": 2}])
def test_port_filters_choose_the_board(line, filters):
    tmp, image = line
    pis = [board("2711", n, f"f11e{n}", tmp / f"f{n}.img", 8 * MiB) for n in (1, 2, 3)]
    run = run_virtual(tmp, profile(tmp, "os.img"), pis, count=1, **filters)
    assert_clean(run)
    assert [(b.port, b.result) for b in run.outcome.boards] == [("1-2", "ok")]
    assert disk_bytes(tmp / "f2.img")[:len(image)] == image
    assert pis[0].received == [] and pis[2].received == []  # never touched


def test_loop_serves_a_board_swapped_in_at_the_same_port(line):
    tmp, image = line
    first = board("2711", 1, "5a0p0001", tmp / "s1.img", 8 * MiB)
    second = board("2711", 1, "5a0p0002", tmp / "s2.img", 8 * MiB)
    run = run_virtual(tmp, profile(tmp, "os.img"), [first],
                      later=[(1.0, lambda bus: first.unplug()), (1.3, second)],
                      loop=True, count=2)
    assert_clean(run)
    assert [(b.port, b.serial, b.result) for b in run.outcome.boards] == \
        [("1-1", "5a0p0001", "ok"), ("1-1", "5a0p0002", "ok")]
    assert disk_bytes(tmp / "s2.img")[:len(image)] == image


def test_a_skipped_board_left_in_usb_boot_mode_is_not_served_again(line):
    tmp, _image = line
    extra = '[eeprom]\nrecovery = "recovery"\nboot_conf = "boot.conf"\n'
    once = run_virtual(tmp, profile(tmp, "os.img", extra),
                       [board("2711", 1, "5k1p0001", tmp / "k1.img", 8 * MiB, eeprom=True)])
    assert once.outcome.exit_code == ExitCode.OK
    # The same board again: after its EEPROM step it is skipped, and comes back to the ROM
    # (nRPIBOOT fitted), where it stays. A loop must not take that for a new board.
    again = board("2711", 1, "5k1p0001", tmp / "k2.img", 8 * MiB, eeprom=True)
    run = run_virtual(tmp, profile(tmp, "os.img", extra), [again], loop=True, count=None,
                      timeout=1.0)
    assert_clean(run)
    assert run.outcome.exit_code == ExitCode.OK
    assert [b.result for b in run.outcome.boards] == ["skipped"]
    assert len(run.kinds("board_arrived")) == 1


def test_board_info_from_the_engine_reaches_events_and_ledger(line, monkeypatch):
    """Where the engine decodes the board from its OTP (model, memory...), the pipeline passes
    it on; simulated here by adding it to what the boot step returns."""
    import dataclasses
    from rpiboot.provision import board as board_module
    tmp, _image = line
    info = {"model": "Compute Module 4", "revision": "1.1", "memory_mb": 4096}
    real = board_module.boot_at_port
    monkeypatch.setattr(board_module, "boot_at_port",
                        lambda request: dataclasses.replace(real(request), board=info))
    run = run_virtual(tmp, profile(tmp, "os.img"), [board("2711", 1, "1nf0", tmp / "i.img",
                                                          8 * MiB)])
    assert_clean(run)
    (done,) = run.kinds("board_done")
    assert done["board"] == info and done["record"] == 1
    assert export(tmp)[0]["board"] == info


class LaggingBus(VirtualBus):
    """A bus whose listing keeps an enumeration for a while after it left (as a lagging libusb
    device list or sysfs does): opening it then fails as a departed device does."""

    LAG = 0.5

    def __init__(self, *args, **kwargs):
        self.departed: dict[int, tuple[float, object]] = {}
        super().__init__(*args, **kwargs)

    def detach(self, pi, function):
        ref = self._present.get(id(function))
        if ref is not None:
            self.departed[id(function)] = (time.monotonic() + self.LAG, ref)
        super().detach(pi, function)

    def devices(self):
        now = time.monotonic()
        stale = [ref for until, ref in self.departed.values() if until > now]
        return list(super().devices()) + stale


def test_a_stale_listing_of_the_recovery_stage_is_not_the_board_coming_back(line):
    tmp, image = line
    extra = '[eeprom]\nrecovery = "recovery"\nboot_conf = "boot.conf"\n'
    pi = board("2711", 1, "1a99ed01", tmp / "lag.img", 8 * MiB, eeprom=True)
    run = run_virtual(tmp, profile(tmp, "os.img", extra), [pi], bus_class=LaggingBus)
    assert_clean(run)
    assert run.outcome.exit_code == ExitCode.OK, run.outcome.boards[0].message
    assert len(run.kinds("board_arrived")) == 1 and pi.violations == []
    assert disk_bytes(tmp / "lag.img")[:len(image)] == image


def test_ledger_failing_after_the_ok_record_does_not_turn_the_board_into_a_failure(
        line, monkeypatch):
    """The board's "ok" is committed by finish_board; if the row for the "record" step then
    fails (connection lost at that moment), the outcome must agree with the ledger: ok."""
    from rpiboot.provision.ledger import LedgerError
    from rpiboot.provision.ledger.base import Ledger
    tmp, image = line
    real = Ledger.record_step
    failed = []

    def record_step(self, board_id, step, **kwargs):  # type: ignore[no-untyped-def]
        if step == "record" and not failed:
            failed.append(step)
            raise LedgerError("connection lost")
        return real(self, board_id, step, **kwargs)

    monkeypatch.setattr(Ledger, "record_step", record_step)
    run = run_virtual(tmp, profile(tmp, "os.img"),
                      [board("2711", 1, "rec00001", tmp / "r1.img", 8 * MiB)])
    assert_clean(run)
    assert failed
    assert run.kinds("board_failed") == []
    assert run.outcome.exit_code == 0
    [record] = export(tmp)
    assert record["result"] == "ok"
    assert [s["step"] for s in record["steps"]][-1] == "record"  # retried once reconnected


def test_a_write_cut_short_by_a_corrupt_image_records_the_bytes_it_did_write(tmp_path):
    """gzip's CRC is checked at the end: whole chunks reach the disk before the damage shows.
    The failure record must say the disk was changed, not "0 bytes written"."""
    make_boot_dirs(tmp_path)
    image = os_image(tmp_path / "os.img", 9 * MiB)  # three 4 MiB chunks
    packed = compress(tmp_path / "os.img", "gz")
    corrupt(packed, "crc")
    run = run_virtual(tmp_path, profile(tmp_path, packed.name),
                      [board("2711", 1, "part0001", tmp_path / "d1.img", 16 * MiB)])
    assert_clean(run)
    [record] = export(tmp_path)
    assert record["result"] == "image_corrupt" and record["verified"] is False
    on_disk = disk_bytes(tmp_path / "d1.img")
    assert record["bytes_written"] >= 4 * MiB
    assert on_disk[:record["bytes_written"]] == image[:record["bytes_written"]]
