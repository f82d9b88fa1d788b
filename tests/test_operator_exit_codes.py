"""Exit statuses: usage errors, each failure class, and several devices (the worst wins)."""

from __future__ import annotations

import json
import sys

import pytest

from rpiboot import cli
from rpiboot.errors import ExitCode, worst
from rpiboot.simulator import RomStage, typical_pi
from rpiboot.simulator.in_process import VirtualBus
from rpiboot.udev import access_hint

from operator_support import DEMO_DIR

FAST = ["--plain", "-d", str(DEMO_DIR), "--retry-delay", "0.01", "--retries", "2",
        "--stall-timeout", "0.5", "--reenumerate-timeout", "1", "--timeout", "2",
        "--run-timeout", "10"]


@pytest.mark.parametrize("argv", [["--bogus"], ["-o"], ["-3", "-p", "1-1"], ["-m", "0"],
                                  ["--timeout", "-1"], ["--timeout", "soon"],
                                  ["--list", "--udev-rule"], ["--follow=-2"],
                                  ["--retries", "0"], ["-120"]])
def test_usage_errors_are_one_line_and_status_2(argv: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == ExitCode.USAGE == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("rpiboot: error: ")


def test_boot_directory_missing_is_3(tmp_path, capsys) -> None:
    assert cli.main(["-d", str(tmp_path / "none"), "--plain"]) == ExitCode.BOOT_DIRECTORY == 3
    assert "rpiboot: error:" in capsys.readouterr().err


def test_no_device_within_timeout_is_4(capsys) -> None:
    code = cli.main(FAST[:3] + ["--timeout", "0.2"], transport=VirtualBus([]))
    assert code == ExitCode.NO_DEVICE == 4


def test_run_timeout_without_device_is_4() -> None:
    assert cli.main(FAST[:3] + ["--run-timeout", "0.2"], transport=VirtualBus([])) == 4


def test_libusb_not_loadable_is_8(tmp_path, capsys) -> None:
    (tmp_path / "bootcode.bin").write_bytes(b"second stage")  # a boot directory is checked first
    code = cli.main(["--plain", "-d", str(tmp_path),
                     "--libusb", str(tmp_path / "libusb-missing.so")])
    assert code == ExitCode.USB_UNAVAILABLE == 8
    err = capsys.readouterr().err
    assert "cannot load libusb" in err and "install" in err


def test_interrupted_is_130() -> None:
    class Interrupting(VirtualBus):
        def devices(self):  # type: ignore[override]
            raise KeyboardInterrupt

    assert cli.main(FAST, transport=Interrupting([])) == ExitCode.INTERRUPTED == 130


def _refused(ports):
    pi = typical_pi("2712", ports)
    pi.stages[0] = RomStage(return_code=1)
    return pi


@pytest.mark.parametrize("make, status", [
    (lambda: typical_pi("2711", (1,)), 0),
    (lambda: _refused((1,)), 6),
    (lambda: typical_pi("2711", (1,), open_error="access"), 7),
    (lambda: typical_pi("2711", (1,), open_error="busy"), 5),
])
def test_single_device_outcomes(make, status, capsys) -> None:
    assert cli.main(FAST, transport=VirtualBus([make()])) == status


def test_permission_error_points_to_the_udev_rule(capsys) -> None:
    pi = typical_pi("2711", (1,), open_error="access")
    assert cli.main(FAST, transport=VirtualBus([pi])) == ExitCode.PERMISSION
    err = capsys.readouterr().err
    # the hint for the platform the test runs on, in full
    assert "rpiboot: error: 1-1: " in err and access_hint(sys.platform) in err
    if sys.platform.startswith("linux"):
        assert "rpiboot --udev-rule' to see a udev rule" in err  # 'rpiboot' or its full path


def test_several_devices_worst_wins_and_summary_names_each(capsys) -> None:
    pis = [typical_pi("2711", (1,), serial="aaaa1111"), _refused((2,)),
           typical_pi("2835", (3,), open_error="access"), typical_pi("2712", (4,))]
    code = cli.main(FAST, transport=VirtualBus(pis))
    assert code == ExitCode.PERMISSION
    out, err = capsys.readouterr()
    summary = out[out.index("Summary:"):].splitlines()[1:]
    assert len(summary) == 4
    for port, result in (("1-1", "ok"), ("1-2", "failed (refused)"),
                         ("1-3", "failed (permission)"), ("1-4", "ok")):
        line = next(line for line in summary if line.split()[0] == port)
        assert line.endswith(result)
    assert "aaaa1111" in out
    assert err.count("rpiboot: error: ") == 2


def test_several_devices_json_summary(capsys) -> None:
    pis = [typical_pi("2711", (1,)), _refused((2,))]
    assert cli.main(FAST + ["--json"], transport=VirtualBus(pis)) == ExitCode.REFUSED
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["exit_code"] == 6
    assert {(d["port"], d["result"], d["error"]) for d in summary["devices"]} == {
        ("1-1", "ok", None), ("1-2", "failed", "refused")}


def test_single_device_summary_only_with_verbose(capsys) -> None:
    assert cli.main(FAST, transport=VirtualBus([typical_pi("2711", (1,))])) == 0
    assert "Summary:" not in capsys.readouterr().out
    assert cli.main(FAST + ["-v"], transport=VirtualBus([typical_pi("2711", (1,))])) == 0
    assert "Summary:" in capsys.readouterr().out


def test_severity_order() -> None:
    assert worst([ExitCode.OK, ExitCode.TRANSFER, ExitCode.REFUSED]) == ExitCode.REFUSED
    assert worst([ExitCode.NO_DEVICE, ExitCode.TRANSFER]) == ExitCode.TRANSFER
    assert worst([]) == ExitCode.OK
