"""rpi-secure-boot-check: check a secure-boot-recovery(5) directory before it changes a board for good.

  rpi-secure-boot-check DIR [-k KEY.pem] [--boot-image boot.img]

Checks what the ROM, recovery.bin and the bootloader will check (see
rpiboot.eeprom.secure_boot_check): pieeprom.sig against pieeprom.bin, the public key inside
pieeprom.bin against KEY (and prints the hash OTP will hold), the signed configuration,
SIGNED_BOOT=1, the irreversible actions config.txt asks for, on BCM2712 the counter-signed
firmware and bootcode5.bin, and with --boot-image the boot.sig beside the OS image.  Each
problem is one line naming the file and the command that fixes it.

Exit codes (as every EEPROM tool, see rpiboot.eeprom.common): 0 everything holds (warnings may
be printed), 1 at least one problem, 2 usage error, 3 DIR, KEY or the boot image missing or
unreadable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .common import ToolError, run_tool
from .secure_boot_check import INFO, OK, PROBLEM, WARNING, Inputs, Report, check_directory

PROG = "rpi-secure-boot-check"
LABELS = {OK: "ok      ", INFO: "note    ", WARNING: "WARNING ", PROBLEM: "PROBLEM "}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Check a usbboot secure-boot-recovery / secure-boot-recovery5 directory as the "
                    "boot ROM and bootloader will, before 'rpiboot -d DIR' programs a board's OTP.")
    parser.add_argument("directory", type=Path, metavar="DIR")
    parser.add_argument("-k", "--key", metavar="KEY.pem",
                        help="the RSA-2048 key (private or public PEM) the boards are to be locked to")
    parser.add_argument("--boot-image", type=Path, metavar="boot.img",
                        help="also check this OS boot image and the boot.sig beside it")
    return parser


def render(report: Report) -> str:
    lines = [f"{report.directory}: BCM{report.chip} secure-boot directory"]
    if report.otp_key_hash is not None:
        lines.append(f"customer key hash (OTP CUSTOMER_KEY_HASH once programmed): {report.otp_key_hash}")
    for finding in report.findings:
        line = f"{LABELS[finding.level]}{finding.file}: {finding.message}"
        if finding.fix and finding.level in (PROBLEM, WARNING):
            line += f"; fix: {finding.fix}"
        lines.append(line)
    if report.irreversible:
        lines.append("irreversible actions config.txt asks for (they cannot be undone):")
        lines += [f"  {action}" if action.startswith(" ") else f"- {action}" for action in report.irreversible]
    else:
        lines.append("config.txt asks for no irreversible action")
    problems, warnings = len(report.problems), len(report.warnings)
    verdict = "ready" if not problems else "NOT ready"
    lines.append(f"{verdict}: {problems} problem(s), {warnings} warning(s)")
    return "\n".join(lines) + "\n"


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    report = check_directory(Inputs(args.directory, args.key, args.boot_image))
    sys.stdout.write(render(report))
    if report.problems:
        raise ToolError(f"{len(report.problems)} problem(s) in {args.directory}: fix them before "
                        f"'rpiboot -d {args.directory}'")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
