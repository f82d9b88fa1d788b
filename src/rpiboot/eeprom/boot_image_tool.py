"""``rpi-make-boot-image``: build a FAT ``boot.img`` from a directory, optionally signed.

Pure-Python replacement for usbboot's ``tools/rpi-make-boot-image``; needs no
mkfs.fat, mtools, loop devices or root.

Options (as upstream, plus ``-k``)::

    -d SOURCE_DIR   directory whose contents go into the image (required)
    -o OUTPUT       image file to create (required)
    -a 32|64        kernel architecture: 32 drops kernel8.img, 64 drops
                    kernel7l.img from the top level (default 32, as upstream)
    -b BOARD        prune files not needed by BOARD (pi4, pi400, cm4)
    -k KEY          RSA-2048 private key (PEM): also write the
                    rpi-eeprom-digest style signature OUTPUT minus suffix + ".sig"

Environment (as upstream): IMAGE_SIZE (KiB, 0 = automatic), SECTOR_SIZE,
SECTORS_PER_CLUSTER, ROOT_DIR_ENTRIES, FAT_SIZE (12/16/32), FAT_OVERHEAD
(KiB of slack added to the automatic size), SOURCE_DATE_EPOCH (timestamps,
volume id and the signature's ``ts:``).

Like upstream, top-level entries whose names start with "." are not copied.

Exit codes:
    0  success
    2  usage error: bad/missing/empty option or invalid environment value
    3  missing or unreadable input (source directory, a file in it, the key
       file), or a source name FAT cannot store
    4  contents do not fit the requested size, or impossible FAT parameters
    5  output cannot be written, e.g. -o names a directory (nothing is left behind)
    6  the signing key is not an RSA-2048 private key
(0, 2 and 3 mean the same in every EEPROM tool: see rpiboot.eeprom.common.)
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

from rpiboot.eeprom.common import EXIT_MISSING_INPUT, ToolError
from rpiboot.eeprom.signing import load_private_key, sig_text
from rpiboot.eeprom.fat_image import (
    FatParameterError,
    FatPlan,
    ImageTooSmallError,
    SourceError,
    plan_fat_image,
    write_fat_image,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

PROG = "rpi-make-boot-image"
EXIT_USAGE, EXIT_SOURCE, EXIT_SIZE, EXIT_OUTPUT, EXIT_KEY = 2, 3, 4, 5, 6
LARGE_IMAGE_KIB = 20 * 1024

# Top-level files of older boards that pi4/pi400/cm4 images do not need.
_PI4_PRUNE = (
    "kernel.img", "kernel7.img", "bootcode.bin",
    "start.elf", "fixup.dat", "start_cd.elf", "fixup_cd.dat", "start_db.elf", "fixup_db.dat",
    "start_x.elf", "fixup_x.dat", "start4cd.elf", "fixup4cd.dat", "start4db.elf",
    "fixup4db.dat", "start4x.elf", "fixup4x.dat", "bcm2708*", "bcm2709*", "bcm2710*",
    "kernel_2712.img", "initramfs_2712",
)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see -h)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Create a FAT boot image (boot.img) from a directory.",
                     epilog="Environment: IMAGE_SIZE (KiB), SECTOR_SIZE, SECTORS_PER_CLUSTER, "
                            "ROOT_DIR_ENTRIES, FAT_SIZE, FAT_OVERHEAD, SOURCE_DATE_EPOCH.")
    parser.add_argument("-a", dest="arch", choices=("32", "64"), default="32",
                        help="kernel word size to keep: 32 drops kernel8.img, 64 drops kernel7l.img (default 32)")
    parser.add_argument("-b", dest="board", default="",
                        help="leave out top-level files BOARD does not use (pi4, pi400 or cm4)")
    parser.add_argument("-d", dest="source", type=Path, required=True,
                        help="source directory; its contents become the image root")
    parser.add_argument("-o", dest="output", required=True,
                        help="image file to create")
    parser.add_argument("-k", dest="key", type=Path,
                        help="RSA-2048 private key (PEM) to sign the image, writes <output>.sig")
    return parser


def _pruned_names(board: str, arch: str) -> tuple[str, ...]:
    names: list[str] = []
    if board in ("pi4", "pi400", "cm4"):
        names += _PI4_PRUNE
    names.append("kernel8.img" if arch == "32" else "kernel7l.img")
    if board == "pi400":
        names += ("start4x.elf", "fixup4x.dat")
    return tuple(names)


def _include_filter(board: str, arch: str) -> Callable[[PurePosixPath], bool]:
    pruned = _pruned_names(board, arch)

    def include(rel: PurePosixPath) -> bool:
        if len(rel.parts) != 1:
            return True
        name = rel.name
        # Upstream copies "$dir"/* which skips top-level dot files.
        return not name.startswith(".") and not any(fnmatch.fnmatchcase(name, p) for p in pruned)

    return include


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise _UsageError(f"environment variable {name} must be an integer, not {value!r}") from None


def _load_key(path: Path) -> rsa.RSAPrivateKey:
    """The same key loading (PEM or DER, RSA-2048, private) as the other tools."""
    try:
        return load_private_key(str(path))
    except ToolError as exc:
        if exc.exit_code == EXIT_MISSING_INPUT:
            raise SourceError(str(exc)) from None
        raise _KeyError(str(exc)) from None


def _check_output(name: str) -> Path:
    """Refuse an -o that cannot name an image file before any work is done."""
    if not name:
        raise _UsageError("the output file name (-o) is empty")
    output = Path(name)
    if name.endswith(("/", os.sep)) or output.is_dir():
        raise _OutputError(f"output {name} is a directory; -o needs a file name")
    return output


class _KeyError(Exception):
    pass


class _OutputError(Exception):
    pass


def _signature_text(image: Path, key: rsa.RSAPrivateKey, timestamp: int) -> str:
    """rpi-eeprom-digest .sig body; the image is hashed as a stream, not read whole."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils
    digest = hashlib.sha256()
    with open(image, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    sig = key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    return sig_text(digest.hexdigest(), str(timestamp), rsa_hex=sig.hex())


def _sig_path(output: Path) -> Path:
    sig = output.with_suffix(".sig") if output.suffix else output.with_name(output.name + ".sig")
    return sig if sig != output else output.with_name(output.name + ".sig")


def _temp_in(directory: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    return Path(tmp)


def _run(args: argparse.Namespace) -> int:
    size_kib = _env_int("IMAGE_SIZE", 0)
    options: dict[str, Any] = dict(
        sector_size=_env_int("SECTOR_SIZE", 512),
        sectors_per_cluster=_env_int("SECTORS_PER_CLUSTER", 1),
        root_dir_entries=_env_int("ROOT_DIR_ENTRIES", 256),
        fat_type=_env_int("FAT_SIZE", None),
        overhead_kib=_env_int("FAT_OVERHEAD", 16),
    )
    epoch = _env_int("SOURCE_DATE_EPOCH", None)
    output = _check_output(args.output)
    if not args.source.is_dir():
        raise SourceError(f"source directory not found: {args.source}")
    key = _load_key(args.key) if args.key else None
    sig_path = _sig_path(output) if key is not None else None
    if sig_path is not None and sig_path.is_dir():
        raise _OutputError(f"signature file {sig_path} is a directory")

    plan = plan_fat_image(args.source, size_bytes=size_kib * 1024 if size_kib else None,
                          label="BOOT", include=_include_filter(args.board, args.arch),
                          timestamp=epoch, **options)
    kib = -(-plan.size_bytes // 1024)
    print(f"Using IMAGE_SIZE of {kib} (FAT{plan.fat_type})")
    if kib > LARGE_IMAGE_KIB:
        print(f"Warning: the image is larger than {LARGE_IMAGE_KIB} KiB; consider leaving out files "
              "that are not needed.")
    _write_outputs(plan, output, key, sig_path, epoch)
    print(f"Created image {output}")
    if sig_path is not None:
        print(f"Signed image {output} -> {sig_path}")
    return 0


def _write_outputs(plan: FatPlan, output: Path, key: rsa.RSAPrivateKey | None,
                   sig_path: Path | None, epoch: int | None) -> None:
    """Write image (and .sig) to temp files beside them, then os.replace both."""
    temps: list[Path] = []
    finals = [output] if sig_path is None else [output, sig_path]
    try:
        _write_temps(plan, output, key, sig_path, epoch, temps)
        for tmp, final in zip(temps, finals):
            os.replace(tmp, final)
        temps.clear()
    except OSError as exc:
        raise _OutputError(f"cannot write {output}: {exc.strerror or exc}") from exc
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _write_temps(plan: FatPlan, output: Path, key: rsa.RSAPrivateKey | None,
                 sig_path: Path | None, epoch: int | None, temps: list[Path]) -> None:
    img_tmp = _temp_in(output.parent, output.name)
    temps.append(img_tmp)
    with open(img_tmp, "r+b") as out:
        write_fat_image(plan, out)
        os.fsync(out.fileno())
    if key is not None and sig_path is not None:
        sig_tmp = _temp_in(sig_path.parent, sig_path.name)
        temps.append(sig_tmp)
        ts = epoch if epoch is not None else int(time.time())
        sig_tmp.write_text(_signature_text(img_tmp, key, ts), encoding="ascii")
    mode = 0o666 & ~_umask()
    for tmp in temps:
        os.chmod(tmp, mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rpi-make-boot-image``; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
        return _run(args)
    except SystemExit as exc:  # -h
        return exc.code if isinstance(exc.code, int) else 0
    except _UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SourceError as exc:
        return _fail(str(exc), EXIT_SOURCE)
    except (ImageTooSmallError, FatParameterError) as exc:
        return _fail(str(exc), EXIT_SIZE)
    except _KeyError as exc:
        return _fail(str(exc), EXIT_KEY)
    except _OutputError as exc:
        return _fail(str(exc), EXIT_OUTPUT)
    except OSError as exc:
        return _fail(f"I/O error: {exc}", EXIT_OUTPUT)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
