#!/usr/bin/env bash
# Install everything the test suite needs, then run it. Used by CI (.ci/run) and by people.
# Debian packages: umockdev + PyGObject (real libusb against virtual devices), libusb,
# dosfstools + mtools (independent readers of the FAT images we build).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(umockdev gir1.2-umockdev-1.0 python3-gi libusb-1.0-0 dosfstools mtools)

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "Installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The project and its test dependencies go into a virtual environment (scripts/venv.sh: .venv, or
# the active one), never into the system's Python (PEP 668 on Debian / Raspberry Pi OS).
PY=$(bash scripts/venv.sh test)
exec "$PY" -m pytest -q "$@"
