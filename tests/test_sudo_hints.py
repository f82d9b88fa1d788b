"""The commands rpiboot's hints print must work for a virtual environment, pipx or uv install,
where `rpiboot` is not on sudo's fixed PATH (Debian's secure_path) and maybe not on the user's."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rpiboot import udev


def fake_program(directory: Path) -> Path:
    directory.mkdir(parents=True)
    program = directory / "rpiboot"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return program


def test_venv_program_not_on_any_path_is_named_in_full(tmp_path: Path) -> None:
    program = fake_program(tmp_path / "venv" / "bin")
    assert udev.own_command(argv0=str(program), search_path="/usr/bin") == str(program)
    assert udev.own_command(sudo=True, argv0=str(program)) == str(program)


def test_activated_venv_plain_name_but_full_path_for_sudo(tmp_path: Path) -> None:
    program = fake_program(tmp_path / "with space" / "bin")
    assert udev.own_command(argv0=str(program), search_path=str(program.parent)) == "rpiboot"
    assert udev.own_command(sudo=True, argv0=str(program)) == shlex.quote(str(program))


def test_python_dash_m_gives_that_python(tmp_path: Path) -> None:
    main = tmp_path / "rpiboot" / "__main__.py"
    assert udev.own_command(sudo=True, argv0=str(main)) == f"{sys.executable} -m rpiboot"


def test_access_hint_and_install_error_name_a_command_sudo_can_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program = fake_program(tmp_path / "venv" / "bin")
    monkeypatch.setattr(sys, "argv", [str(program)])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert f"'sudo {program} --install-udev-rule'" in udev.access_hint("linux")
    assert f"run '{program} --udev-rule'" in udev.access_hint("linux")


def test_printed_install_command_runs_with_sudos_path() -> None:
    """The installed entry point prints its own absolute path, and that command works with
    nothing but sudo's secure_path in the environment (as `sudo CMD` would run it)."""
    program = Path(sys.executable).parent / "rpiboot"
    if not program.is_file():
        pytest.skip(f"no installed rpiboot beside {sys.executable}")
    env = {"PATH": udev.SUDO_SECURE_PATH, "HOME": os.environ.get("HOME", "/")}
    shown = subprocess.run([str(program), "--udev-rule"], capture_output=True, text=True,
                           env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    hint = next(line for line in shown.stderr.splitlines() if line.startswith("# Install:"))
    command = shlex.split(hint.removeprefix("# Install:").split("|")[0])
    on_secure_path = any((Path(d) / "rpiboot").exists()
                         for d in udev.SUDO_SECURE_PATH.split(":"))
    if not on_secure_path:
        assert command[0] == str(program)
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0 and again.stdout == shown.stdout
