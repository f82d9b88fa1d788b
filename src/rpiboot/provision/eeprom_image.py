"""The bootloader EEPROM step's files: the profile's recovery directory with a pieeprom.bin
built from its ``boot_conf`` (signed with ``key`` when given, as update-pieeprom does), in a
private temporary directory. The user's files are only ever read.

Built once per run (every board gets the same image); the ledger records its sha256 and config.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..eeprom import image as eeprom_image
from ..eeprom.common import ToolError
from ..eeprom.signing import make_sig_file, sig_timestamp
from ..eeprom.update_pieeprom_tool import Options, build_eeprom, load_keys
from .errors import EepromError
from .profile import EepromSection

IMAGE_NAME, SIG_NAME = "pieeprom.bin", "pieeprom.sig"


@dataclass(frozen=True)
class EepromBuild:
    directory: Path
    """The private recovery directory to boot the board with."""
    sha256: str
    """Of the pieeprom.bin served to the board."""
    config: str
    """The bootloader configuration stored in it."""
    signed: bool

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def build_recovery(section: EepromSection) -> EepromBuild:
    """Copy the recovery directory and build pieeprom.bin/.sig into the copy."""
    config = _read(section.boot_conf, "[eeprom] boot_conf")
    if len(config) > eeprom_image.MAX_FILE_SIZE:
        raise EepromError(f"[eeprom] boot_conf '{section.boot_conf}' is too large "
                          f"({len(config)} bytes)")
    source = _read(section.image, "[eeprom] image")
    options = Options(config=str(section.boot_conf), src_image=str(section.image),
                      dst_image=IMAGE_NAME, pem_file=str(section.key or ""),
                      public_pem_file=str(section.key or ""), hsm_wrapper="",
                      sign_firmware=False, sign_recovery=False)
    try:
        # The tool's functions narrate on stdout for its command line; not for ours.
        with contextlib.redirect_stdout(io.StringIO()):
            keys = load_keys(options)
            built = build_eeprom(options, keys, section.image.name, source, config)
    except (ToolError, ValueError) as error:
        raise EepromError(f"[eeprom]: cannot build the bootloader image: {error}") from None
    directory = Path(tempfile.mkdtemp(prefix="rpiboot-provision-eeprom-"))
    try:
        _copy_tree(section.recovery, directory)
        (directory / IMAGE_NAME).write_bytes(built)
        (directory / SIG_NAME).write_text(make_sig_file(built, sig_timestamp()))
    except OSError as error:
        shutil.rmtree(directory, ignore_errors=True)
        raise EepromError(f"[eeprom]: cannot prepare the recovery files: {error}") from None
    return EepromBuild(directory, hashlib.sha256(built).hexdigest(),
                       config.decode("utf-8", errors="replace"), section.key is not None)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise EepromError(f"{what}: cannot read '{path}': {error.strerror}") from None


def _copy_tree(source: Path, destination: Path) -> None:
    """Regular files only (links are followed), so the copy holds no link back to the user's."""
    for root, _dirs, names in os.walk(source):
        relative = Path(root).relative_to(source)
        (destination / relative).mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in names:
            path = Path(root) / name
            if path.is_file():
                shutil.copyfile(path, destination / relative / name)
