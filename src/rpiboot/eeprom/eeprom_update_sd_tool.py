"""make-eeprom-update-sd: an SD card image that updates a Pi 4 / Pi 5 bootloader EEPROM.

  make-eeprom-update-sd [-i PIEEPROM.BIN | --chip 2711|2712] [-c BOOT.CONF] [-k KEY.pem]
                        [--recovery RECOVERY.BIN] [--checkout DIR] [--vl805 VL805.BIN]
                        [--uart] [-o OUTPUT.zip|OUTPUT.img]

For boards that cannot be updated over USB (a Pi 4B, Pi 400 or Pi 5 without rpiboot), the same
kind of card as Raspberry Pi Imager's "Bootloader" entries, which rpi-eeprom's
``imager/make-release`` and ``make-recovery-images`` build: the SD layout of
:mod:`rpiboot.eeprom.sd_card` holding

* ``recovery.bin`` for the chip (the ROM runs it from the card; it flashes the EEPROM),
* ``pieeprom.bin``: the EEPROM image with the given boot.conf (built like update-pieeprom does,
  signed with ``-k`` for secure boot testing),
* ``pieeprom.sig``: its sha256, ``ts:`` and ``target-soc:`` lines (``rpi-eeprom-digest -c CHIP``),
* ``README.txt``: what the card does;
* with ``--vl805`` (BCM2711 only): ``vl805.bin`` and ``vl805.sig`` (its sha256), for Pi 4 boards
  whose USB controller firmware has its own EEPROM;
* with ``--uart``: a ``config.txt`` with ``uart_2ndstage=1`` (recovery.bin logs to the UART).
  Upstream's cards carry no config.txt.

The EEPROM image is ``-i``, or the newest ``firmware-CHIP/latest/pieeprom-DATE.bin`` of an
rpi-eeprom checkout (``--checkout``, default the current directory) with ``--chip``; without
``-c`` its own configuration is kept.  Boards with secure boot locked in OTP ignore recovery.bin
on SD cards: update those over USB (usbboot's secure-boot-recovery directories).

Exit codes (as every EEPROM tool, see rpiboot.eeprom.common): 0 written, 1 error, 2 usage error,
3 a missing or unreadable input.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Sequence

from .common import EXIT_USAGE, ToolError, read_file, run_tool
from .firmware_files import (check_recovery_chip, find_in_checkout, image_chip, newest_pieeprom,
                             read_firmware)
from .image import MAX_FILE_SIZE, EepromImage
from .sd_card import write_disk_image_file, write_zipped_disk_image
from .signing import make_sig_file, sig_timestamp
from .update_pieeprom_tool import Options, build_eeprom, load_keys

PROG = "make-eeprom-update-sd"
BOARDS = {"2711": "Raspberry Pi 4 / Pi 400 / CM4", "2712": "Raspberry Pi 5 / Pi 500 / CM5"}

README = """\
Bootloader EEPROM update card for {boards} (BCM{chip}), made by make-eeprom-update-sd.

Power the board off, insert this card, power on and wait at least 10 seconds. The
ROM runs recovery.bin from the card, which writes pieeprom.bin to the bootloader
EEPROM. The green LED blinking quickly and steadily means success; another
pattern is an error code. With a display attached the screen turns green on
success, red on failure. Then remove the card; reformat it to use it again.

Bootloader configuration written:
{config}"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build an SD card image (zip) that updates the bootloader EEPROM of a Raspberry "
                    "Pi 4 or Pi 5 to the given image and configuration, like Raspberry Pi Imager's "
                    "bootloader entries.")
    parser.add_argument("-i", "--image", type=Path, help="EEPROM image (pieeprom-DATE.bin) to start from")
    parser.add_argument("--chip", choices=("2711", "2712"),
                        help="without -i: take the newest image for this chip from the checkout")
    parser.add_argument("-c", "--config", type=Path, help="bootloader configuration (boot.conf) to store")
    parser.add_argument("-k", "--key", help="RSA-2048 private key: sign the configuration (secure boot)")
    parser.add_argument("--recovery", type=Path, metavar="PATH", help="recovery.bin for the chip")
    parser.add_argument("--checkout", type=Path, default=Path("."), metavar="DIR",
                        help="usbboot or rpi-eeprom checkout to take files from (default: current directory)")
    parser.add_argument("--vl805", type=Path, metavar="PATH",
                        help="BCM2711 only: VL805 USB controller firmware to flash as well")
    parser.add_argument("--uart", action="store_true",
                        help="add config.txt with uart_2ndstage=1 (recovery.bin logs to the UART)")
    parser.add_argument("-o", "--output", type=Path,
                        help="zip to write (default images-CHIP/eeprom-update-CHIP.zip); "
                             "a name ending in .img writes the raw disk image")
    return parser


def source_image(args: argparse.Namespace) -> Path:
    if args.image is not None:
        return args.image
    if args.chip is None:
        raise ToolError("give the EEPROM image (-i pieeprom.bin) or the chip to take the newest "
                        "image for from an rpi-eeprom checkout (--chip 2711|2712)", EXIT_USAGE)
    return newest_pieeprom(args.checkout, args.chip)


def eeprom_image(args: argparse.Namespace, image_path: Path) -> tuple[bytes, bytes]:
    """(new EEPROM image, its configuration), built the way update-pieeprom builds it."""
    src = read_file(image_path, "EEPROM image")
    config_path = args.config
    if config_path is None:
        return src, EepromImage(src, str(image_path)).config
    config = read_file(config_path, "config file")
    if len(config) > MAX_FILE_SIZE:
        raise ToolError(f"config file '{config_path}' is too large ({len(config)} bytes; "
                        f"at most {MAX_FILE_SIZE})")
    opts = Options(str(config_path), str(image_path), "pieeprom.bin", args.key or "", args.key or "",
                   "", False, False)
    return build_eeprom(opts, load_keys(opts), str(image_path), src, config), config


def card_files(args: argparse.Namespace, chip: str, eeprom: bytes, config: bytes) -> dict[str, bytes]:
    recovery_path = args.recovery or find_in_checkout(args.checkout, chip, "recovery.bin",
                                                      "recovery.bin", "--recovery PATH")
    recovery = read_firmware(recovery_path, "recovery.bin")
    check_recovery_chip(recovery, recovery_path, chip)
    files = {
        "recovery.bin": recovery,
        "pieeprom.bin": eeprom,
        "pieeprom.sig": make_sig_file(eeprom, sig_timestamp(), chip).encode(),
        "README.txt": README.format(boards=BOARDS[chip], chip=chip,
                                    config=config.decode("utf-8", "replace")).encode(),
    }
    if args.vl805 is not None:
        vl805 = read_firmware(args.vl805, "VL805 firmware")
        files["vl805.bin"] = vl805
        files["vl805.sig"] = (hashlib.sha256(vl805).hexdigest() + "\n").encode()
    if args.uart:
        files["config.txt"] = b"uart_2ndstage=1\n"
    return files


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.image is not None and args.chip is not None:
        raise ToolError("-i and --chip do not go together: the chip is read from the image", EXIT_USAGE)
    if args.output is not None and args.output.suffix not in (".zip", ".img"):
        raise ToolError(f"the output '{args.output}' must end in .zip (zipped image) or .img (raw image)",
                        EXIT_USAGE)
    image_path = source_image(args)
    eeprom, config = eeprom_image(args, image_path)
    chip = image_chip(eeprom)
    if args.vl805 is not None and chip != "2711":
        raise ToolError("--vl805 is for BCM2711 (Pi 4) images only", EXIT_USAGE)
    files = card_files(args, chip, eeprom, config)
    output = args.output or Path(f"images-{chip}") / f"eeprom-update-{chip}.zip"
    if output.suffix == ".img":
        write_disk_image_file(files, output)
    else:
        write_zipped_disk_image(files, output, output.with_suffix(".img").name)
    print(f"BCM{chip} EEPROM update card from {image_path}: {', '.join(sorted(files))}")
    print(f"Wrote {output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
