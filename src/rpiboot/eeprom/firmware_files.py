"""Finding and checking Raspberry Pi firmware files (recovery.bin, pieeprom-*.bin) in checkouts.

Where they live (upstream facts):

* rpi-eeprom: ``firmware-2711/latest/recovery.bin``, ``firmware-2711/latest/pieeprom-DATE.bin``
  (and ``firmware-2712/...``); its ``imager/`` scripts look one directory up from ``imager/``;
* usbboot: ``firmware/2711/recovery.bin`` and ``firmware/2712/recovery.bin`` (symlinks into its
  ``rpi-eeprom`` submodule, so they dangle in a clone made without ``--recurse-submodules``),
  and the submodule itself at ``rpi-eeprom/``.

A symlink checked out as a plain file (git with ``core.symlinks=false``, some zip downloads)
holds its target path as a few bytes of text; such a "firmware" file is refused with that
explanation.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .common import EXIT_MISSING_INPUT, ToolError, read_file
from .signing import has_signature_block_2711, signature_blocks_2712

CHIPS = ("2711", "2712")
# Real recovery.bin / bootcode files are tens of KiB; a link stored as text is a short path.
_MIN_FIRMWARE_BYTES = 1024
_PIEEPROM_NAME = re.compile(r"pieeprom-(\d{4}-\d{2}-\d{2})\.bin")


def checkout_candidates(checkout: Path, chip: str, name: str) -> list[Path]:
    """Where ``name`` (recovery.bin) for ``chip`` may be in a usbboot or rpi-eeprom checkout."""
    return [
        checkout / f"firmware-{chip}" / "latest" / name,                 # rpi-eeprom
        checkout.parent / f"firmware-{chip}" / "latest" / name,          # rpi-eeprom/imager
        checkout / "firmware" / chip / name,                             # usbboot
        checkout / "rpi-eeprom" / f"firmware-{chip}" / "latest" / name,  # usbboot's submodule
    ]


def find_in_checkout(checkout: Path, chip: str, name: str, what: str, option: str) -> Path:
    """The first candidate that exists; a clear error naming what was tried otherwise."""
    candidates = checkout_candidates(checkout, chip, name)
    for path in candidates:
        if path.is_symlink() and not path.exists():
            raise ToolError(f"{path} is a symlink to '{os.readlink(path)}', which does not exist: "
                            "the usbboot checkout lacks its rpi-eeprom submodule (run "
                            "'git submodule update --init' in it, or clone with --recurse-submodules)",
                            EXIT_MISSING_INPUT)
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates[:1] + candidates[2:3])
    raise ToolError(f"no BCM{chip} {what} found in '{checkout}' (looked for {tried} and the like); "
                    f"give it with {option}, or run in a usbboot or rpi-eeprom checkout (--checkout DIR)",
                    EXIT_MISSING_INPUT)


def newest_pieeprom(checkout: Path, chip: str) -> Path:
    """The pieeprom-DATE.bin with the latest date in the checkout's firmware-CHIP/latest."""
    for base in (checkout, checkout.parent, checkout / "rpi-eeprom"):
        directory = base / f"firmware-{chip}" / "latest"
        found = sorted(p for p in directory.glob("pieeprom-*.bin") if _PIEEPROM_NAME.fullmatch(p.name))
        if found:
            return found[-1]
    if _submodule_missing(checkout):
        raise ToolError(f"'{checkout}' is a usbboot checkout without its rpi-eeprom submodule, "
                        "where the EEPROM images are: run 'git submodule update --init' in it "
                        "(or clone with --recurse-submodules), or give the image with -i",
                        EXIT_MISSING_INPUT)
    raise ToolError(f"no firmware-{chip}/latest/pieeprom-*.bin found in '{checkout}'; give the image "
                    "with -i, or run in an rpi-eeprom checkout (--checkout DIR)", EXIT_MISSING_INPUT)


def _submodule_missing(checkout: Path) -> bool:
    """usbboot's rpi-eeprom submodule directory is there but empty (not checked out)."""
    submodule = checkout / "rpi-eeprom"
    try:
        return submodule.is_dir() and not any(submodule.iterdir())
    except OSError:
        return False


def read_firmware(path: Path, what: str) -> bytes:
    """Read a firmware file, refusing a symlink that was checked out as a short text file."""
    if path.is_symlink() and not path.exists():
        raise ToolError(f"{what} '{path}' is a dangling symlink (to '{os.readlink(path)}'); "
                        "in a usbboot checkout run 'git submodule update --init'", EXIT_MISSING_INPUT)
    data = read_file(path, what)
    problem = not_firmware(data)
    if problem:
        raise ToolError(f"{what} '{path}' {problem}")
    return data


def not_firmware(data: bytes) -> str | None:
    """Why ``data`` cannot be a firmware file (too short, e.g. a symlink checked out as a plain
    file holding its target's path), or None."""
    if len(data) >= _MIN_FIRMWARE_BYTES:
        return None
    text = data.decode("ascii", "replace").strip()
    hint = (f"; it holds the text '{text}', a symlink checked out as a file "
            "(enable symlinks in git, or clone on a file system that has them)"
            if text.isprintable() and "/" in text else "")
    return f"is only {len(data)} bytes, not firmware{hint}"


def recovery_chip(data: bytes) -> str | None:
    """'2711' or '2712' when the signature trailer says which chip a recovery.bin is for."""
    is_2711 = has_signature_block_2711(data)
    is_2712 = bool(signature_blocks_2712(data))
    if is_2711 and not is_2712:
        return "2711"
    if is_2712 and not is_2711:
        return "2712"
    return None


def check_recovery_chip(data: bytes, path: Path, chip: str) -> None:
    found = recovery_chip(data)
    if found is not None and found != chip:
        raise ToolError(f"'{path}' is a BCM{found} recovery.bin; this image needs the BCM{chip} one "
                        f"(firmware-{chip}/latest/recovery.bin)")


def image_chip(data: bytes) -> str:
    """BCM2711 images are 512 KiB, BCM2712 images 2 MiB."""
    return "2712" if len(data) == 2 * 1024 * 1024 else "2711"
