#!/usr/bin/env bash
# Install everything the test suite needs, then run it. Used by CI (.ci/run) and by people.
# Debian packages: umockdev + PyGObject (real libusb against virtual devices), libusb,
# dosfstools + mtools (independent readers of the FAT images we build), postgresql (the tests
# start a throwaway cluster of their own for the shared ledger; see tests/postgres_support.py).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(umockdev gir1.2-umockdev-1.0 python3-gi libusb-1.0-0 dosfstools mtools postgresql)

# xz-utils, zstd, bmap-tools: the provisioning tests also read what the real xz, zstd and
# bmaptool commands write (those tests skip without them).
APT_PACKAGES+=(xz-utils zstd bmap-tools)
# chromium + chromium-driver: the station dashboard is tested in Debian's headless Chromium
# (driven through Selenium with the driver's path given: no browser is downloaded).
APT_PACKAGES+=(chromium chromium-driver)

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
# The [line] extra: psycopg for the PostgreSQL ledger tests.
PY=$(bash scripts/venv.sh test,line)
exec "$PY" -m pytest -q "$@"
