"""rpi-eeprom-config: read, extract and rewrite Raspberry Pi bootloader EEPROM images.

Exit codes: 0 success, 1 error (bad image, file too large, bad key, ...),
2 usage error, 3 missing or unreadable input (see common.py).  Errors are one line on stderr:
``rpi-eeprom-config: error: ...``.

Differences from upstream (on purpose): --apply and reading the live config
of the running Pi need Raspberry Pi OS tools and are not supported; --edit
works on an explicit image file and requires --out; a file that does not
fit its section is refused instead of overwriting the next section;
--bootsys on its own writes the image (upstream printed the config);
--digest/--pubkey without --config are refused (upstream ignored them).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from . import image as img
from .common import ToolError, atomic_write, read_file, run_tool, write_files_atomically, write_stdout
from .signing import load_rsa_key, pubkey_bin

PROG = "rpi-eeprom-config"

DESCRIPTION = """\
Show, extract or change what is stored in a Raspberry Pi 4 / Pi 5 bootloader
EEPROM image file.

  rpi-eeprom-config pieeprom.bin [--out boot.conf]
      print (or save) the bootloader configuration of an EEPROM image
  rpi-eeprom-config --config boot.conf --out new.bin pieeprom.bin
      write a new image with a replaced configuration
  rpi-eeprom-config --config boot.conf --digest boot.sig --pubkey key.pem --out new.bin pieeprom.bin
      secure boot: also store the config signature (from rpi-eeprom-digest)
      and the RSA public key (a PEM public or private key; only N and e are stored)
  rpi-eeprom-config -x pieeprom.bin
      extract every file of the image into the current directory
  EDITOR=vi rpi-eeprom-config --edit --out new.bin pieeprom.bin
      edit the configuration of an image file in $EDITOR
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-a", "--apply", help="not supported (needs a Raspberry Pi running rpi-eeprom-update)")
    parser.add_argument("-c", "--config", help="bootloader configuration file to store")
    parser.add_argument("-e", "--edit", action="store_true", help="edit the config of EEPROM in $EDITOR")
    parser.add_argument("-o", "--out", help="output file (image, or config when only reading)")
    parser.add_argument("-d", "--digest", help="signed boot: .sig file for the config (from rpi-eeprom-digest)")
    parser.add_argument("-p", "--pubkey", help="signed boot: RSA-2048 public (or private) PEM key to store")
    parser.add_argument("-x", "--extract", action="store_true", help="extract all files into the current directory")
    parser.add_argument("-b", "--bootcode", help="2712 signed boot: customer signed bootcode.bin to store")
    parser.add_argument("-s", "--bootsys", help="2712 signed boot: customer signed bootsys to store")
    parser.add_argument("-t", "--timestamp", help="set the self-update timestamp of the image")
    parser.add_argument("--cacertder", help="CA certificate (DER) to store")
    parser.add_argument("--debug", action="store_true", help="accepted for compatibility")
    parser.add_argument("eeprom", nargs="?", help="EEPROM image file")
    return parser


def load_image(path: str) -> img.EepromImage:
    return img.EepromImage(read_file(path, "EEPROM image"), path)


def apply_changes(image: img.EepromImage, args: argparse.Namespace) -> None:
    """Apply the edits in upstream order: timestamp, bootcode, bootsys, cacert, config."""
    if args.timestamp is not None:
        image.set_timestamp(parse_timestamp(args.timestamp))
    if args.bootcode is not None:
        image.update_bootcode(read_file(args.bootcode, "bootcode file"))
    if args.bootsys is not None:
        image.update_file(img.BOOTSYS_BIN, read_file(args.bootsys, "bootsys file"))
    if args.cacertder is not None:
        image.update_file(img.CACERT_DER, read_small_file(args.cacertder, "CA certificate"))
    if args.config is not None:
        image.update_file(img.BOOTCONF_TXT, read_small_file(args.config, "config file"))
        if args.digest is not None:
            image.update_file(img.BOOTCONF_SIG, read_small_file(args.digest, "digest file"))
        if args.pubkey is not None:
            image.update_file(img.PUBKEY_BIN, pubkey_bin(load_rsa_key(args.pubkey)))


def read_small_file(path: str, what: str) -> bytes:
    data = read_file(path, what)
    if len(data) > img.MAX_FILE_SIZE:
        raise ToolError(f"{what} '{path}' is too large ({len(data)} bytes); "
                        f"the maximum size is {img.MAX_FILE_SIZE} bytes")
    return data


def parse_timestamp(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ToolError(f"invalid timestamp '{text}'") from None


def has_changes(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.config, args.timestamp, args.bootcode,
                                       args.bootsys, args.cacertder))


def emit(data: bytes, out: str | None) -> None:
    if out is not None:
        atomic_write(out, data)
    else:
        write_stdout(data)


def extract(image: img.EepromImage) -> None:
    """Write every file of the image to the current directory, all or nothing."""
    files = image.extractable_files()
    for name, _data in files:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ToolError(f"refusing to extract unsafe file name '{name}'")
        if os.path.isdir(name):
            raise ToolError(f"cannot extract '{name}': a directory of that name exists")
    # A repeated name (updatetime in A/B images) carries the same content each time.
    unique = dict(files)
    write_files_atomically(list(unique.items()))


def edit(image: img.EepromImage, out: str) -> None:
    import shlex
    import subprocess
    import tempfile
    from pathlib import Path
    editor = os.environ.get("EDITOR", "nano")
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "boot.conf"
        conf.write_bytes(image.config)
        try:
            command = shlex.split(editor)
        except ValueError as err:
            raise ToolError(f"cannot parse $EDITOR '{editor}': {err}") from None
        if not command:
            raise ToolError("$EDITOR is set but empty")
        try:
            code = subprocess.call(command + [str(conf)])
        except OSError as err:
            raise ToolError(f"cannot run editor '{editor}': {err.strerror or err}") from None
        if code != 0:
            raise ToolError(f"editor '{editor}' failed (exit code {code}); the image was not changed")
        new_config = conf.read_bytes()
    if len(new_config.splitlines()) < 2:
        raise ToolError("the edited config has fewer than two lines; the image was not changed")
    if len(new_config) > img.MAX_FILE_SIZE:
        raise ToolError(f"edited config is too large ({len(new_config)} bytes)")
    image.update_file(img.BOOTCONF_TXT, new_config)
    atomic_write(out, image.to_bytes())


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.apply is not None:
        raise ToolError("--apply is not supported: it needs rpi-eeprom-update on a Raspberry Pi")
    if args.eeprom is None:
        raise ToolError("no EEPROM image given (reading the running Pi's config is not supported)", 2)
    if (args.digest is not None or args.pubkey is not None) and args.config is None:
        raise ToolError("--digest and --pubkey must be used together with --config", 2)
    image = load_image(args.eeprom)
    if args.edit:
        if args.out is None:
            raise ToolError("--edit needs --out for the new image", 2)
        edit(image, args.out)
    elif args.extract:
        extract(image)
    elif has_changes(args):
        apply_changes(image, args)
        emit(image.to_bytes(), args.out)
    else:
        emit(image.config, args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
