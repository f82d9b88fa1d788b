"""make-pi4-rpiboot-gpio-sd: the SD card image that picks a Pi 4B / Pi 400 header GPIO for rpiboot.

  make-pi4-rpiboot-gpio-sd [--recovery RECOVERY.BIN | --checkout DIR] [-o DIR] [--yes] [--img] GPIO

Same output as rpi-eeprom's ``imager/make-pi4-rpiboot-gpio-sd``: ``images-2711/
pi4-program-rpiboot-gpioGPIO.zip`` holding ``pi4-program-rpiboot-gpioGPIO.img`` (the SD layout
of :mod:`rpiboot.eeprom.sd_card`) with ``recovery.bin`` (BCM2711) and a ``config.txt`` of
``uart_2ndstage=1``, ``recovery_wait=1`` and ``program_rpiboot_gpio=GPIO``.  Booting a Pi 4B /
Pi 400 from that card programs its OTP for good: from then on that GPIO pulled low at power-on
puts the board in rpiboot mode.  GPIO is a BCM number (2, 4, 5, 6, 7 or 8), not a header pin.

Differences from upstream: pure Python, no sfdisk / mkfs.fat / mtools / zip / root; recovery.bin
comes from ``--recovery``, or a usbboot or rpi-eeprom checkout (current directory by default,
``--checkout DIR``); a BCM2712 recovery.bin or a symlink checked out as text is refused; the
permanent-change warning is printed and, when stdin is a terminal, must be confirmed (``--yes``
skips the question); the zip is written atomically; ``--img`` writes the raw disk image instead
(for dd, or for writing it with rpiboot's mass-storage gadget).

Exit codes (as every EEPROM tool, see rpiboot.eeprom.common): 0 written, 1 error or the question
was not answered yes (nothing written), 2 usage error (a GPIO that cannot be used), 3 recovery.bin
missing or unreadable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from .common import EXIT_USAGE, ToolError, run_tool
from .firmware_files import check_recovery_chip, find_in_checkout, read_firmware
from .sd_card import write_disk_image_file, write_zipped_disk_image

PROG = "make-pi4-rpiboot-gpio-sd"
CHIP = "2711"
SUPPORTED_GPIOS = (2, 4, 5, 6, 7, 8)
DEFAULT_OUTPUT_DIR = "images-2711"

WARNING = """\
WARNING: the SD card image made here PERMANENTLY changes every Raspberry Pi 4B / Pi 400 it boots:
its OTP is programmed so that GPIO {gpio} (BCM numbering; header pin {pin}) pulled low at power-on
starts rpiboot mode. This cannot be undone or changed later, ever. Keep the card labelled."""

# BCM GPIO -> physical pin on the 40-pin header, for the warning only.
HEADER_PIN = {2: 3, 4: 7, 5: 29, 6: 31, 7: 26, 8: 24}

Ask = Callable[[str], str]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build an SD card image that programs the OTP of a Raspberry Pi 4B / Pi 400 so "
                    "that a header GPIO pulled low at power-on selects rpiboot mode. PERMANENT.")
    parser.add_argument("gpio", metavar="GPIO",
                        help=f"BCM GPIO number: one of {', '.join(map(str, SUPPORTED_GPIOS))}")
    parser.add_argument("--recovery", type=Path, metavar="PATH",
                        help="the BCM2711 recovery.bin to put on the card")
    parser.add_argument("--checkout", type=Path, default=Path("."), metavar="DIR",
                        help="usbboot or rpi-eeprom checkout to take recovery.bin from "
                             "(default: the current directory)")
    parser.add_argument("-o", "--output-dir", type=Path, default=Path(DEFAULT_OUTPUT_DIR), metavar="DIR",
                        help=f"directory for the zip (default {DEFAULT_OUTPUT_DIR})")
    parser.add_argument("-y", "--yes", action="store_true",
                        help="do not ask for confirmation on a terminal")
    parser.add_argument("--img", action="store_true",
                        help="write the raw disk image (NAME.img) instead of the zip")
    return parser


def parse_gpio(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) not in SUPPORTED_GPIOS:
        raise ToolError(f"GPIO {text!r} is not supported: choose one of "
                        f"{', '.join(map(str, SUPPORTED_GPIOS))} (BCM numbers, not header pins)",
                        EXIT_USAGE)
    return int(text)


def config_txt(gpio: int) -> bytes:
    return f"uart_2ndstage=1\nrecovery_wait=1\nprogram_rpiboot_gpio={gpio}\n".encode()


def image_name(gpio: int) -> str:
    return f"pi4-program-rpiboot-gpio{gpio}"


def confirm(gpio: int, yes: bool, ask: Ask | None) -> None:
    """Print the warning; on a terminal (ask given) require 'yes' unless --yes."""
    sys.stderr.write(WARNING.format(gpio=gpio, pin=HEADER_PIN[gpio]) + "\n")
    if yes or ask is None:
        return
    try:
        answer = ask("Type 'yes' to build the image: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() != "yes":
        raise ToolError("not confirmed; nothing was written")


def terminal_prompt() -> Ask | None:
    """A question on stderr, beside the warning, answered on stdin, when both are terminals
    (stdout may be a log); else None (no question asked)."""
    if sys.stdin.isatty() and sys.stderr.isatty():
        return _ask_on_stderr
    return None


def _ask_on_stderr(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


def load_recovery(args: argparse.Namespace) -> tuple[Path, bytes]:
    path = args.recovery or find_in_checkout(args.checkout, CHIP, "recovery.bin", "recovery.bin",
                                             "--recovery PATH")
    data = read_firmware(path, "recovery.bin")
    check_recovery_chip(data, path, CHIP)
    return path, data


def build(gpio: int, recovery: bytes, output_dir: Path, raw: bool = False) -> Path:
    name = image_name(gpio)
    files = {"recovery.bin": recovery, "config.txt": config_txt(gpio)}
    if raw:
        path = output_dir / f"{name}.img"
        write_disk_image_file(files, path)
    else:
        path = output_dir / f"{name}.zip"
        write_zipped_disk_image(files, path, f"{name}.img")
    return path


def _main(argv: Sequence[str] | None, ask: Ask | None) -> int:
    args = build_parser().parse_args(argv)
    gpio = parse_gpio(args.gpio)
    recovery_path, recovery = load_recovery(args)
    confirm(gpio, args.yes, ask)
    print(f"recovery.bin: {recovery_path}")
    sys.stdout.write("config.txt:\n" + config_txt(gpio).decode())
    path = build(gpio, recovery, args.output_dir, args.img)
    print(f"Wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None, ask: Ask | None = None) -> int:
    """Entry point; ``ask`` replaces the terminal question (tests), default: a terminal prompt."""
    prompt = ask if ask is not None else terminal_prompt()
    return run_tool(PROG, lambda a: _main(a, prompt), argv)


if __name__ == "__main__":
    sys.exit(main())
