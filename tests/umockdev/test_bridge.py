"""The bridge seen through python-libusb1 directly, and the rpiboot-virtual entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from umockdev_support import IN_CI

from rpiboot.simulator import umockdev_cli

pytestmark = pytest.mark.umockdev
PROBE = Path(__file__).with_name("libusb_probe.py")


def _virtual(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rpiboot.simulator.umockdev_cli", *arguments],
                          capture_output=True, text=True, timeout=timeout)


def test_enumeration_descriptors_and_stall(umockdev_tools: tuple[str, str], libusb: str,
                                           tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = _virtual("--pi", "2711:1-3,rom-serial=feedf00d", "--pi", "2712:2-1.4.2",
                    "--report", str(report), "-q", "--", sys.executable, str(PROBE), libusb)
    assert done.returncode == 0, done.stderr
    devices = json.loads(done.stdout)["devices"]
    pis = {(d["bus"], tuple(d["ports"])): d for d in devices if d["vid"] == 0x0A5C}
    assert pis[(1, (3,))]["pid"] == 0x2711 and pis[(1, (3,))]["serial"] == "feedf00d"
    assert pis[(2, (1, 4, 2))]["pid"] == 0x2712 and pis[(2, (1, 4, 2))]["serial_index"] == 0
    for pi in pis.values():
        assert pi["manufacturer"] == "Broadcom"
        assert pi["speed"] == 3  # high speed
        assert pi["odd_request"] == "stall"
    hubs = [d for d in devices if d["vid"] == 0x1D6B]
    assert {d["bus"] for d in hubs} == {1, 2}
    assert not json.loads(report.read_text())["bridge"]["errors"]


def test_hotplug_events_with_system_libusb(umockdev_tools: tuple[str, str]) -> None:
    done = _virtual("--pi", "2711:1-3,arrive=0.5", "-q", "--", sys.executable, str(PROBE),
                    "system", "--hotplug", "1.5")
    assert done.returncode == 0, done.stderr
    assert "arrived 0a5c:2711" in json.loads(done.stdout)["events"]


def test_exit_status_and_report(umockdev_tools: tuple[str, str], tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = _virtual("--pi", "2835:1-1", "--report", str(report), "-q", "--",
                    sys.executable, "-c", "import sys; sys.exit(7)")
    assert done.returncode == 7
    data = json.loads(report.read_text())
    assert data["exit_code"] == 7 and data["pis"][0]["chip"] == "2835"
    assert data["pis"][0]["received"] == []


def test_bad_board_spec_is_a_usage_error(umockdev_tools: tuple[str, str]) -> None:
    done = _virtual("--pi", "2711:1-x", "--", "true")
    assert done.returncode == 2 and "bad USB port path" in done.stderr


def test_missing_python_gives_install_hint() -> None:
    done = _virtual("--python", "/nonexistent/python3", "--pi", "2711:1-3", "--", "true")
    assert done.returncode == 125  # rpiboot-virtual's own failure, not the command's status
    assert len(done.stderr.strip().splitlines()) == 1
    assert "apt-get install umockdev gir1.2-umockdev-1.0 python3-gi" in done.stderr


@pytest.mark.skipif(not IN_CI, reason="only CI must have umockdev installed")
def test_ci_has_umockdev() -> None:
    wrapper, python = umockdev_cli.check()
    assert os.access(wrapper, os.X_OK) and python
