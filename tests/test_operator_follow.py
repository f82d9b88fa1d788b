"""--follow: watch the port until the device reappears as its final USB function."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from rpiboot import cli
from rpiboot.errors import ExitCode
from rpiboot.follow import block_devices
from rpiboot.simulator import FinalStage, typical_pi
from rpiboot.simulator.in_process import VirtualBus

from operator_support import DEMO_DIR, run


def _gadget_pi(ports=(1,), **options):
    pi = typical_pi("2711", ports, **options)
    pi.stages.append(FinalStage(vendor_id=0x0525, product_id=0xA4A5))
    return pi


def _fake_sysfs(root: Path, port: str, blocks: tuple[str, ...] = ("sda",)) -> Path:
    device = root / "devices" / "pci0000:00" / "usb1" / port
    scsi = device / f"{port}:1.0" / "host0" / "target0:0:0" / "0:0:0:0"
    scsi.mkdir(parents=True)
    for name in blocks:
        (scsi / "block" / name / f"{name}1").mkdir(parents=True)
    # loops of symbolic links, as sysfs has, must not be followed
    (scsi / "subsystem").symlink_to(root / "devices")
    links = root / "bus" / "usb" / "devices"
    links.mkdir(parents=True, exist_ok=True)
    (links / port).symlink_to(os.path.relpath(device, links))
    return scsi


def test_followed_without_sysfs(tmp_path: Path) -> None:
    result, events = run([_gadget_pi()], follow=2.0, sysfs_root=tmp_path / "nosys")
    assert result.exit_code == ExitCode.OK
    (followed,) = events.of("device_followed")
    assert followed.port == "1-1"
    assert followed.data["usb_id"] == "0525:a4a5" and followed.data["block_devices"] == []
    summary = events.of("summary")[0].data["devices"][0]
    assert summary["final"]["usb_id"] == "0525:a4a5" and summary["result"] == "ok"
    kinds = events.kinds()
    assert kinds.index("device_done") < kinds.index("device_followed") < kinds.index("summary")


def test_followed_with_block_device(tmp_path: Path) -> None:
    _fake_sysfs(tmp_path, "1-1", ("sda", "sdb"))
    result, events = run([_gadget_pi()], follow=2.0, sysfs_root=tmp_path)
    assert result.exit_code == ExitCode.OK
    assert events.of("device_followed")[0].data["block_devices"] == ["sda", "sdb"]


def test_waits_for_a_block_device_that_appears_late(tmp_path: Path) -> None:
    scsi = _fake_sysfs(tmp_path, "1-2", ())
    timer = threading.Timer(0.3, lambda: (scsi / "block" / "sdc").mkdir(parents=True))
    timer.start()
    result, events = run([_gadget_pi((2,))], follow=3.0, follow_settle=2.0,
                         sysfs_root=tmp_path)
    timer.join()
    assert events.of("device_followed")[0].data["block_devices"] == ["sdc"]


def test_no_block_device_settles_after_a_while(tmp_path: Path) -> None:
    _fake_sysfs(tmp_path, "1-1", ())
    began = time.monotonic()
    result, events = run([_gadget_pi()], follow=3.0, follow_settle=0.2, sysfs_root=tmp_path)
    assert time.monotonic() - began < 2.0
    assert result.exit_code == ExitCode.OK
    assert events.of("device_followed")[0].data["block_devices"] == []


def test_follow_timeout_fails_with_its_own_code(tmp_path: Path) -> None:
    began = time.monotonic()
    result, events = run([typical_pi("2712", (1,))], follow=0.3, sysfs_root=tmp_path)
    assert time.monotonic() - began < 2.0
    assert result.exit_code == ExitCode.TRANSFER
    (failed,) = events.of("device_failed")
    assert failed.data["code"] == "follow_timeout" and "0.3 s" in failed.data["message"]
    assert events.of("summary")[0].data["devices"][0]["error"] == "follow_timeout"


def test_late_final_function_within_the_follow_time(tmp_path: Path) -> None:
    pi = _gadget_pi(reenumerate_delay=0.3)
    result, events = run([pi], follow=2.0, sysfs_root=tmp_path)
    assert result.exit_code == ExitCode.OK
    assert events.of("device_followed")[0].data["seconds"] >= 0.25


def test_run_timeout_before_the_final_function(tmp_path: Path) -> None:
    result, events = run([typical_pi("2711", (1,))], follow=30.0, run_timeout=0.5,
                         sysfs_root=tmp_path)
    (failed,) = events.of("device_failed")
    assert failed.data["code"] == "follow_timeout"
    assert "run time limit" in failed.data["message"]


def test_several_devices_are_followed_independently(tmp_path: Path) -> None:
    pis = [_gadget_pi((1,)), _gadget_pi((2,)), typical_pi("2835", (3,))]
    result, events = run(pis, follow=0.5, sysfs_root=tmp_path)
    assert {item.port for item in events.of("device_followed")} == {"1-1", "1-2"}
    assert [item.port for item in events.of("device_failed")] == ["1-3"]
    assert result.exit_code == ExitCode.TRANSFER


def test_without_follow_nothing_waits(tmp_path: Path) -> None:
    result, events = run([typical_pi("2711", (1,))])
    assert result.exit_code == ExitCode.OK
    assert not events.of("device_followed")


def test_cli_follow_lines(capsys) -> None:
    code = cli.main(["--plain", "-d", str(DEMO_DIR), "--follow", "2", "--timeout", "2"],
                    transport=VirtualBus([_gadget_pi()]))
    assert code == 0
    out = capsys.readouterr().out
    assert "Second stage boot server done" in out
    assert "1-1: now 0525:a4a5" in out


def test_block_devices_of_missing_port(tmp_path: Path) -> None:
    assert block_devices(tmp_path, "9-9") == []
