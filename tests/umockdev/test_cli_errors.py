"""rpiboot-virtual's own failures: one line on stderr and a documented exit status, no traceback.

The checks run before umockdev does, so most of these tests need no umockdev; those that do are
marked ``umockdev`` and use the ``umockdev_tools`` fixture.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rpiboot.simulator import umockdev_cli, umockdev_host


def _virtual(*arguments: str, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rpiboot.simulator.umockdev_cli", *arguments],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("rpiboot-virtual: "), done.stderr
    return lines[0]


def test_missing_wrapper_is_125_with_install_hint(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # an empty directory: no umockdev-wrapper
    done = _virtual("--pi", "2711:1-3", "--", sys.executable, "-c", "pass", env=env)
    assert done.returncode == umockdev_cli.EXIT_FAILED == 125
    line = _one_line(done)
    assert "umockdev-wrapper not found" in line and "apt-get install umockdev" in line


def test_missing_command_is_127() -> None:
    done = _virtual("--pi", "2711:1-3", "--", "/nonexistent/command", "arg")
    assert done.returncode == 127
    assert "/nonexistent/command: command not found" in _one_line(done)


def test_command_that_is_not_executable_is_126(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    done = _virtual("--pi", "2711:1-3", "--", str(script))
    assert done.returncode == 126 and "cannot execute" in _one_line(done)


@pytest.mark.parametrize("where", ["directory", "missing-parent"])
def test_unwritable_report_is_a_usage_error(tmp_path: Path, where: str) -> None:
    report = tmp_path if where == "directory" else tmp_path / "no" / "such" / "report.json"
    done = _virtual("--pi", "2711:1-3", "--report", str(report), "--", sys.executable, "-c",
                    "pass")
    assert done.returncode == 2
    assert f"cannot write report {report}" in _one_line(done)
    assert not (tmp_path / "no").exists()


def test_report_check_leaves_no_file_behind(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    umockdev_host.check_report_path(str(report))
    assert not report.exists()
    report.write_text("kept")
    umockdev_host.check_report_path(str(report))
    assert report.read_text() == "kept"


@pytest.mark.parametrize("scenario, words", [
    ([{"chip": "2711"}], "top level must be an object"),
    ({"pis": {"chip": "2711"}}, '"pis" must be a list'),
    ({"pis": ["2711"]}, "a board must be a JSON object"),
    ({"pi": []}, "unknown top-level field(s) 'pi'"),
    ({"pis": [{"chip": "2711", "port": "1-3", "arrive": "soon"}]}, "arrive='soon'"),
    ({"pis": [{"chip": "2711", "port": "1-3", "reenumerate_delay": -1}]}, "reenumerate_delay=-1"),
    ({"pis": [{"chip": "2711", "port": "1-3", "stall_at": 1.5}]}, "stall_at=1.5"),
    ({"pis": [{"chip": "2711", "port": "1-3", "return_code": True}]}, "return_code=True"),
    ({"pis": [{"chip": "2711", "port": "1-3", "open_error": "maybe"}]}, "open_error='maybe'"),
    ({"pis": [{"chip": "2711", "port": "1-3", "files": "config.txt"}]}, "files='config.txt'"),
    ({"pis": [{"chip": "2711", "port": "1-3", "two_interfaces": "yes"}]}, "two_interfaces='yes'"),
    ({"pis": [{"chip": "2711", "port": "1-x"}]}, "bad USB port path"),
    ({"pis": [{"chip": "2711", "port": "1-3", "colour": "red"}]}, "unknown field(s) 'colour'"),
    ({"pis": [{"chip": "9999", "port": "1-3"}]}, "chip='9999'"),
    ({"pis": [{"chip": "2711"}]}, "no port"),
    ({"pis": [{"port": "1-3"}]}, "chip=None"),
])
def test_bad_scenario_is_a_usage_error(tmp_path: Path, scenario: object, words: str) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    done = _virtual("--scenario", str(path), "--", sys.executable, "-c", "pass")
    assert done.returncode == 2
    line = _one_line(done)
    assert str(path) in line and words in line


def test_scenario_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    path.write_text("{pis: ")
    done = _virtual("--scenario", str(path), "--", sys.executable, "-c", "pass")
    assert done.returncode == 2 and "not valid JSON" in _one_line(done)


@pytest.mark.parametrize("option, words", [
    ("arrive=soon", "arrive='soon'"), ("stall-at=x", "stall-at='x'"),
    ("open-error=maybe", "open_error='maybe'"), ("open-error=", "open_error=''"),
    ("colour=red", "unknown board option 'colour'")])
def test_bad_board_option_is_a_usage_error(option: str, words: str) -> None:
    done = _virtual("--pi", f"2711:1-3,{option}", "--", sys.executable, "-c", "pass")
    assert done.returncode == 2 and words in _one_line(done)


@pytest.mark.parametrize("value", ["access", "io"])
def test_open_error_accepts_access_and_io(value: str) -> None:
    spec = umockdev_host.parse_pi_option(f"2711:1-3,open-error={value}", 0)
    assert spec["open_error"] == value


def test_host_runner_checks_before_it_needs_umockdev(tmp_path: Path, capsys) -> None:
    """The runner itself (run outside the wrapper here) reports the same errors first."""
    assert umockdev_host.main(["--pi", "2711:1-3", "--", "/nonexistent"]) == 127
    assert umockdev_host.main(["--pi", "2711:1-3", "--report", str(tmp_path), "--",
                               "true"]) == 2
    assert umockdev_host.main(["--pi", "2711:1-3,open-error=x", "--", "true"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("umockdev_host: ") for line in lines)


@pytest.mark.umockdev
def test_sigterm_reaches_the_command_and_cleans_up(umockdev_tools: tuple[str, str],
                                                   tmp_path: Path) -> None:
    marker = tmp_path / "started"
    report = tmp_path / "report.json"
    command = [sys.executable, "-c", textwrap.dedent(f"""
        import os, pathlib, time
        pathlib.Path({str(marker)!r}).write_text(str(os.getpid()))
        time.sleep(120)""")]
    env = dict(os.environ, TMPDIR=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-m", "rpiboot.simulator.umockdev_cli",
                                "--pi", "2711:1-3", "--report", str(report), "-q", "--",
                                *command], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not marker.exists() or not marker.read_text():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    pid = int(marker.read_text())
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 128 + signal.SIGTERM, process.stderr.read()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the command under test is gone too
    assert json.loads(report.read_text())["exit_code"] == 128 + signal.SIGTERM
    leftovers = [p.name for p in tmp_path.iterdir()
                 if p.name.startswith(("rpiboot-virtual-", "umockdev."))]
    assert leftovers == []


@pytest.mark.umockdev
def test_bus_close_is_idempotent_and_ignores_late_boards(umockdev_tools: tuple[str, str],
                                                         tmp_path: Path) -> None:
    wrapper, python = umockdev_tools
    source = Path(umockdev_cli.__file__).resolve().parent.parent.parent
    script = textwrap.dedent("""
        import os, sys, time
        from rpiboot.simulator.umockdev_bridge import UmockdevBus
        from rpiboot.simulator.virtual_pi import VirtualPi
        bus = UmockdevBus()
        root = bus.root_dir
        bus.plug_in(VirtualPi("2711", (3,), 1))
        assert bus.settle(10)
        bus.close()
        started = time.monotonic()
        bus.close()
        assert time.monotonic() - started < 1, "second close waited"
        late = VirtualPi("2712", (4,), 1)
        bus.plug_in(late)
        assert late not in bus.pis and not bus.errors, bus.errors
        assert not os.path.exists(root), root
        print("ok")
        """)
    env = dict(os.environ, PYTHONPATH=str(source))
    done = subprocess.run([wrapper, python, "-c", script], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_help_is_argparse_help() -> None:
    done = _virtual("--help")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("usage: rpiboot-virtual ")
    assert "options:" in done.stdout and "--pi CHIP:PORT" in done.stdout
    assert "role=R" in done.stdout and "exit status" in done.stdout
    assert "``" not in done.stdout and ":mod:" not in done.stdout  # not a raw docstring


def test_nothing_given_is_a_usage_error() -> None:
    done = _virtual()
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("usage: rpiboot-virtual")
    assert "no boards and no command" in done.stderr


@pytest.mark.parametrize("arguments, words", [
    (["--pi", "2711"], "give the board's USB port path, e.g. --pi 2711:1-3"),
    (["--pi", "2711:"], "give the board's USB port path"),
    ([], "no boards: give --pi CHIP:PORT"),
    (["--scenario", "/nonexistent/missing.json"],
     "scenario /nonexistent/missing.json: No such file or directory"),
    (["--pi", "2711:1-3", "--pi", "2712:1-3"],
     "two boards on the same USB port 1-3 at the same time"),
    (["--pi", "2711:1-3,arrive=1", "--pi", "2712:1-3,arrive=1.0"], "same USB port 1-3"),
    (["--pi", "2711:1-3,role=recovery5"], "role recovery5 is for BCM2712, not BCM2711"),
    (["--pi", "2711:1-3,role=flash-all"], "unknown role 'flash-all'"),
    (["--pi", "2711:1-3,role=recovery,files=a.bin"], "drop files"),
    (["--pi", "2711:1-3,otp-key-hash=abc"], "otp_key needs a role"),
    (["--pi", "2712:1-3,role=secure-boot,otp-key=/nonexistent/key.pem"],
     "No such file or directory"),
    (["--pi", "2711:1-3,disk=12345"], "positive multiple of 512"),
    (["--pi", "2711:1-3,disk=lots"], "expected bytes or a size like 64M"),
])
def test_bad_boards_are_one_line_usage_errors(arguments: list[str], words: str) -> None:
    done = _virtual(*arguments, "--", sys.executable, "-c", "pass")
    assert done.returncode == 2, done.stderr
    line = _one_line(done)
    assert words in line and "[Errno" not in line, line


def test_same_port_twice_across_scenario_and_pi(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"pis": [{"chip": "2711", "port": "1-1.4"}]}))
    done = _virtual("--scenario", str(path), "--pi", "2712:1-1.4", "--", "true")
    assert done.returncode == 2 and "same USB port 1-1.4" in _one_line(done)


@pytest.mark.umockdev
def test_a_later_board_at_a_busy_port_replaces_the_first(umockdev_tools: tuple[str, str],
                                                         tmp_path: Path) -> None:
    """The first board is still in its ROM when the second arrives at its port: the first is
    pulled out, no umockdev crash ("already exists")."""
    report = tmp_path / "report.json"
    done = _virtual("--pi", "2711:1-3", "--pi", "2712:1-3,arrive=0.4", "--report",
                    str(report), "--", sys.executable, "-c", "import time; time.sleep(1.2)")
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    assert result["bridge"]["errors"] == []
    enumerations = result["bridge"]["enumerations"]
    assert [(e["port"], e["product_id"]) for e in enumerations] == [("1-3", 0x2711),
                                                                    ("1-3", 0x2712)]
    assert "already exists" not in done.stderr
