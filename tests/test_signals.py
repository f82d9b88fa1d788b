"""Issue 12, "Signals and the end of a run": SIGTERM and SIGHUP end a run as Ctrl-C does (in-flight
boards marked interrupted, summary and error line, exit 128 + signal), checked on a real
subprocess; and the summary counts every byte that was sent, also after an interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpiboot.errors import ExitCode
from rpiboot.simulator import typical_pi

from engine_support import REPO_ROOT, HandleProxy, WrappingBus, fast_options, run_boot

# A run with one board that asks for config.txt, then never asks again (in flight for ever).
CHILD = """
import sys
from rpiboot import cli
from rpiboot.simulator import RomStage, ServerStage, VirtualPi
from rpiboot.simulator.in_process import VirtualBus
from rpiboot.simulator.script import done, load
pi = VirtualPi("2711", (1,), stages=[RomStage(serial_index=3),
               ServerStage(load("config.txt") + [done()], stall_at_request=2)])
sys.exit(cli.main(sys.argv[1:], transport=VirtualBus([pi])))
"""


def _start(directory: Path, *argv: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-c", CHILD, "-d", str(directory), *argv,
                             "--stall-timeout", "60", "--run-timeout", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)


def _wait_for_line(child: subprocess.Popen[str], needle: str, lines: list[str]) -> None:
    assert child.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return
    child.kill()
    raise AssertionError(f"{needle!r} never came: {lines}")


@pytest.mark.parametrize("number, status, code", [
    (signal.SIGTERM, 143, "terminated"), (signal.SIGHUP, 129, "hangup"),
    (signal.SIGINT, 130, "interrupted")])
def test_stop_signal_ends_the_run_with_a_summary(boot_dir: Path, number: int, status: int,
                                                 code: str) -> None:
    child = _start(boot_dir, "--json")
    lines: list[str] = []
    _wait_for_line(child, '"file_served"', lines)
    child.send_signal(number)
    out, err = child.communicate(timeout=30)
    assert child.returncode == status, err
    events = [json.loads(line) for line in lines + out.splitlines()]
    assert "Traceback" not in err
    [failed] = [e for e in events if e["event"] == "device_failed"]
    assert failed["code"] == code and failed["exit_code"] == status
    [summary] = [e for e in events if e["event"] == "summary"]
    assert summary["exit_code"] == status
    assert summary["devices"][0]["result"] == "failed"
    assert summary["devices"][0]["files"] == 1
    errors = [e for e in events if e["event"] == "error"]
    assert errors and errors[0]["code"] == code
    assert f"rpiboot: error: interrupted ({signal.Signals(number).name})" in err


def test_sigterm_in_plain_mode_prints_the_summary(boot_dir: Path) -> None:
    child = _start(boot_dir, "--plain", "-v")
    lines: list[str] = []
    _wait_for_line(child, "File read: config.txt", lines)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 143
    assert "Summary:" in out and "failed (terminated)" in out
    assert "rpiboot: error: interrupted (SIGTERM)" in err


class _SlowBus(WrappingBus):
    """Bulk transfers are slow, and the main thread gets Ctrl-C after the third one."""

    def __init__(self, pis):  # type: ignore[no-untyped-def]
        super().__init__(pis)
        self.accepted = 0
        self.transfers = 0

    def wrap_handle(self, info, handle):  # type: ignore[no-untyped-def]
        bus = self

        class Slow(HandleProxy):
            def bulk_out(self, endpoint, data, timeout):  # type: ignore[no-untyped-def]
                time.sleep(0.02)
                accepted = self._handle.bulk_out(endpoint, data, timeout)
                if len(data) != 24:  # the boot message is not file data
                    bus.accepted += accepted
                bus.transfers += 1
                if bus.transfers == 6:
                    os.kill(os.getpid(), signal.SIGINT)
                return accepted

        return Slow(info, handle)


def test_summary_after_ctrl_c_counts_every_byte_sent(boot_dir: Path) -> None:
    (boot_dir / "kernel8.img").write_bytes(os.urandom(512 * 200))
    pi = typical_pi("2711", files=("kernel8.img",))
    bus = _SlowBus([pi])
    run = run_boot([pi], fast_options(boot_dir, chunk_size=512, stall_timeout=30.0), bus=bus)
    assert run.exit_code == ExitCode.INTERRUPTED
    [summary] = run.events.of("summary")
    device = summary.data["devices"][0]
    assert device["error"] == "interrupted"
    assert 0 < bus.accepted < 7000 + 512 * 200
    assert device["bytes"] == bus.accepted


def test_an_ignored_sighup_stays_ignored(boot_dir: Path) -> None:
    """nohup rpiboot -l: the hang-up nohup ignores must not end the run."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    child = subprocess.Popen(
        [sys.executable, "-c", "import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
         + CHILD, "-d", str(boot_dir), "--json", "--stall-timeout", "60", "--run-timeout", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        stdin=subprocess.DEVNULL)
    lines: list[str] = []
    _wait_for_line(child, '"file_served"', lines)
    child.send_signal(signal.SIGHUP)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 5, err  # the run time limit ended it, not the hang-up
    assert "hangup" not in out + err
