"""scripts/venv.sh, the mechanism behind the README's two commands (scripts/install.sh and
scripts/test.sh): a virtual environment instead of the system's Python (PEP 668), with Debian's
python3-venv installed through apt-get where creating one fails. Here with a stand-in Python and
apt-get that record what they were asked (the real run takes a minute: see the README)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine_support import REPO_ROOT

if sys.platform == "win32":
    pytest.skip("shell scripts", allow_module_level=True)

BASE_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable

FAKE_PYTHON = """#!/bin/sh
# A Python whose venv module fails like Debian's without python3-venv until apt-get ran.
if [ "$1 $2" = "-m venv" ]; then
  if [ -f "$FAKE_DIR/apt-done" ]; then
    mkdir -p "$3/bin"
    printf '#!/bin/sh\\necho "venv-python $*" >> "%s/log"\\n' "$FAKE_DIR" > "$3/bin/python"
    chmod +x "$3/bin/python"
    exit 0
  fi
  mkdir -p "$3"
  echo "The virtual environment was not created successfully: ensurepip is not available." >&2
  exit 1
fi
exec "$BASE_PYTHON" "$@"
"""

FAKE_APT = """#!/bin/sh
echo "apt-get $*" >> "$FAKE_DIR/log"
[ "$1" = install ] && touch "$FAKE_DIR/apt-done"
exit 0
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "scripts" / "venv.sh", root / "scripts" / "venv.sh")
    return root


def run_venv_script(checkout: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "fake"
    fake.mkdir()
    python = executable(fake / "python3", FAKE_PYTHON)
    executable(fake / "apt-get", FAKE_APT)
    executable(fake / "id", "#!/bin/sh\necho 0\n")  # as root, as CI runs it: no sudo
    env = {"PATH": f"{fake}:/usr/bin:/bin", "FAKE_DIR": str(fake), "PYTHON": str(python),
           "BASE_PYTHON": BASE_PYTHON, "HOME": str(tmp_path)}
    return subprocess.run(["bash", str(checkout / "scripts" / "venv.sh"), *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(BASE_PYTHON == sys.executable and sys.prefix != sys.base_prefix,
                    reason="needs a Python outside a virtual environment")
def test_missing_venv_support_is_installed_then_the_package_goes_into_the_venv(
        checkout: Path, tmp_path: Path) -> None:
    done = run_venv_script(checkout, tmp_path, "test")
    assert done.returncode == 0, done.stderr
    venv_python = checkout / ".venv" / "bin" / "python"
    assert done.stdout.strip() == str(venv_python)
    log = (tmp_path / "fake" / "log").read_text().splitlines()
    version = subprocess.run([BASE_PYTHON, "-c",
                              "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert f"apt-get install -y -qq python{version}-venv" in log
    assert log[-1] == ("venv-python -m pip install -q --disable-pip-version-check -e .[test]")


def test_an_existing_venv_is_reused(checkout: Path, tmp_path: Path) -> None:
    (checkout / ".venv" / "bin").mkdir(parents=True)
    executable(checkout / ".venv" / "bin" / "python",
               '#!/bin/sh\necho "venv-python $*" >> "$FAKE_DIR/log"\n')
    done = run_venv_script(checkout, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(checkout / ".venv" / "bin" / "python")
    log = (tmp_path / "fake" / "log").read_text()
    assert "apt-get" not in log and log.endswith("-e .\n")


def test_readme_commands_use_the_scripts() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "bash scripts/install.sh" in readme and "bash scripts/test.sh" in readme
    assert "python3 -m pip install ." not in readme
    for name in ("install.sh", "test.sh"):
        assert "scripts/venv.sh" in (REPO_ROOT / "scripts" / name).read_text()
    assert os.access(REPO_ROOT / "scripts" / "venv.sh", os.R_OK)
