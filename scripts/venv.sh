#!/usr/bin/env bash
# Install this checkout (with optional extras, e.g. "test") into a Python virtual environment and
# print that environment's python. Used by scripts/install.sh and scripts/test.sh.
#
#   PY=$(bash scripts/venv.sh [EXTRAS])
#
# - Already inside a virtual environment (an activated venv, or PYTHON pointing at one): use it.
# - Otherwise create .venv in the checkout (RPIBOOT_VENV=DIR for another place) with $PYTHON
#   (default python3). Debian and Raspberry Pi OS mark their Python as externally managed
#   (PEP 668: `pip install .` is refused there) and ship venv's pip bootstrap separately: when
#   creating the environment fails for that reason, python3-venv is installed with apt-get
#   (through sudo when not root) and the environment is created again.
# Progress goes to stderr; stdout is only the python's path.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
VENV="${RPIBOOT_VENV:-.venv}"

say() { echo "$@" >&2; }

is_venv() {
  "$1" -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)' 2>/dev/null
}

install_venv_support() {
  command -v apt-get >/dev/null || return 1
  local version sudo=""
  version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "Installing Debian's venv support (python3-venv, python${version}-venv) with apt-get"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "python${version}-venv" >&2 \
    || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >&2
}

create_venv() {
  "$PYTHON" -m venv "$VENV" >/dev/null 2>&1 && return 0
  rm -rf "$VENV"
  install_venv_support || true
  if ! "$PYTHON" -m venv "$VENV" >&2; then
    rm -rf "$VENV"
    say "error: cannot create a virtual environment with $PYTHON (on Debian: sudo apt-get install python3-venv)"
    exit 1
  fi
}

if is_venv "$PYTHON"; then
  VENV_PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')
else
  [ -x "$VENV/bin/python" ] || create_venv
  VENV_PYTHON="$(cd "$VENV" && pwd)/bin/python"
fi
say "Installing rpiboot${EXTRAS:+[$EXTRAS]} into $(dirname "$(dirname "$VENV_PYTHON")")"
"$VENV_PYTHON" -m pip install -q --disable-pip-version-check -e ".${EXTRAS:+[$EXTRAS]}" >&2
echo "$VENV_PYTHON"
