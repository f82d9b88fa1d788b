#!/usr/bin/env bash
# First run: install rpiboot from this checkout into a virtual environment (.venv, see
# scripts/venv.sh; works on Debian / Raspberry Pi OS's own Python as in any venv) and boot the
# built-in virtual Raspberry Pis (`rpiboot --demo`), then provision four virtual boards end to end
# (`rpiboot-provision demo`: image written, verified, customised, recorded). Extra arguments go
# to `rpiboot --demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=$(bash scripts/venv.sh)
BIN=$(dirname "$PY")
status=0
"$BIN/rpiboot" --demo "$@" || status=$?
if [ "$status" -eq 0 ]; then
  echo >&2
  "$BIN/rpiboot-provision" demo || status=$?
fi
cat >&2 <<TEXT

rpiboot is installed in $BIN: run $BIN/rpiboot, $BIN/rpiboot-provision ...
(or 'source $BIN/activate' first).
To have rpiboot and the other commands on your PATH instead: pipx install . (or: uv tool install .)
TEXT
exit "$status"
