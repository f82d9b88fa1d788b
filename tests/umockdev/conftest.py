"""Real libusb against virtual Raspberry Pis behind emulated usbfs (umockdev).

Each test runs ``rpiboot-virtual`` (which re-runs the host runner under ``umockdev-wrapper
/usr/bin/python3``) around the installed ``rpiboot`` CLI and checks the runner's JSON report of
what every virtual board received. Missing prerequisites skip these tests, except when
``CI=true``, where they fail.
"""

from __future__ import annotations

import ctypes.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import pytest
from umockdev_support import SIZES, Runner, VirtualRun, blob, rpiboot_command, unavailable

from rpiboot.simulator import umockdev_cli


@pytest.fixture(scope="session")
def umockdev_tools() -> tuple[str, str]:
    try:
        return umockdev_cli.check()
    except umockdev_cli.Unavailable as error:
        unavailable(str(error))


@pytest.fixture
def boot_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "boot"
    directory.mkdir()
    for name in SIZES:
        (directory / name).write_bytes(blob(name))
    return directory


@pytest.fixture(params=["system", "bundled"])
def libusb(request: pytest.FixtureRequest) -> str:
    """Which libusb the CLI loads: Debian's (udev build, hot-plug works under umockdev) or
    libusb-package's (netlink build, no hot-plug events under umockdev)."""
    if request.param == "system" and not ctypes.util.find_library("usb-1.0"):
        unavailable("no system libusb-1.0 (apt-get install libusb-1.0-0)")
    if request.param == "bundled":
        try:
            import libusb_package
            if not libusb_package.get_library_path():
                raise ImportError("no bundled library")
        except ImportError as error:
            unavailable(f"libusb-package has no bundled libusb ({error})")
    return str(request.param)


@pytest.fixture
def run_virtual(umockdev_tools: tuple[str, str], tmp_path: Path, libusb: str) -> Runner:
    """run_virtual(boards, *rpiboot_args, timeout=30) -> VirtualRun"""
    counter = itertools.count()

    def run(boards: Sequence[dict[str, Any]], *rpiboot_args: str,
            timeout: float = 30) -> VirtualRun:
        number = next(counter)
        scenario = tmp_path / f"scenario{number}.json"
        report = tmp_path / f"report{number}.json"
        scenario.write_text(json.dumps({"pis": list(boards)}))
        libusb_args = ["--libusb", "system"] if libusb == "system" else []
        command = [sys.executable, "-m", "rpiboot.simulator.umockdev_cli",
                   "--scenario", str(scenario), "--report", str(report),
                   "--command-timeout", str(timeout), "--",
                   *rpiboot_command(), *libusb_args, "--reenumerate-timeout", "2",
                   *rpiboot_args]
        env = dict(os.environ)
        env.pop("RPIBOOT_LIBUSB", None)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 30,
                              env=env)
        assert report.exists(), f"no report written\n{done.stdout}\n{done.stderr}"
        result = VirtualRun(done.returncode, done.stdout, done.stderr,
                            json.loads(report.read_text()))
        bridge = result.report["bridge"]
        assert not bridge["errors"], result.describe()
        assert not bridge["unhandled_ioctls"], result.describe()
        return result

    return run


