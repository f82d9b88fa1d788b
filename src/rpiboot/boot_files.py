"""``rpiboot --fetch-boot-files [DIR]``: usbboot's boot directories, downloaded and checked.

Upstream's ``rpiboot`` has the msd firmware built in, so plain ``rpiboot`` works out of the box.
This package ships no firmware; instead it downloads the boot directories of a pinned usbboot
commit (``boot_files.tsv`` beside this module: every file with its repository, commit, path, size
and sha256; symbolic links in usbboot, including those into its rpi-eeprom submodule, are already
followed there, so each file is downloaded from where its bytes really are):

- ``mass-storage-gadget64``: plain ``rpiboot``'s directory for BCM2711/BCM2712 (eMMC/NVMe as a USB
  drive);
- ``msd``: plain ``rpiboot``'s directory for BCM2835/BCM2837;
- ``recovery`` and ``recovery5``: the bootloader EEPROM update for BCM2711 / BCM2712 (after the
  download ``pieeprom.bin`` and ``pieeprom.sig`` are made from ``pieeprom.original.bin`` and
  ``boot.conf`` with ``update-pieeprom``, as usbboot's ``update-pieeprom.sh`` does).

The secure-boot directories are not fetched: they need the user's own keys and signed images.
``mass-storage-gadget64/boot.img`` is pinned by its git blob id, not a sha256: the file was not
available when the list was made (``scripts/pin_boot_files.py`` regenerates the list).

Files go to the user data directory (``RPIBOOT_DATA_DIR`` overrides it), where plain ``rpiboot``
looks first. Each directory is downloaded into a staging directory and moved into place file by
file only once every file of the run matched its digest.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Callable, TextIO

from .download import PinnedFile, Progress, fetch_all, read_manifest, verify_all
from .errors import DownloadError

DIRECTORIES = ("mass-storage-gadget64", "msd", "recovery", "recovery5")
DATA_DIR_VARIABLE = "RPIBOOT_DATA_DIR"
STAGING = ".rpiboot-fetch"
EEPROM_DIRECTORIES = ("recovery", "recovery5")


def user_data_dir() -> Path:
    """Where fetched boot directories live: ``RPIBOOT_DATA_DIR``, else the platform's user data
    directory for rpiboot (``~/.local/share/rpiboot`` on Linux)."""
    override = os.environ.get(DATA_DIR_VARIABLE)
    if override:
        return Path(override)
    import platformdirs
    return platformdirs.user_data_path("rpiboot", appauthor=False)


def user_data_dirs() -> list[Path]:
    """Where plain rpiboot looks for fetched boot directories: :func:`user_data_dir`, and under
    ``sudo`` also the invoking user's (sudo resets HOME, so `rpiboot --fetch-boot-files` then
    `sudo rpiboot` still finds the files)."""
    own = user_data_dir()
    places = [own]
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and hasattr(os, "geteuid") and os.geteuid() == 0 and \
            DATA_DIR_VARIABLE not in os.environ:
        try:
            relative = own.relative_to(Path.home())
        except (ValueError, RuntimeError):
            return places
        home = Path(os.path.expanduser(f"~{sudo_user}"))
        if home.is_absolute() and home / relative != own:
            places.append(home / relative)
    return places


def pinned_files() -> list[PinnedFile]:
    with resources.as_file(resources.files(__package__) / "boot_files.tsv") as path:
        return read_manifest(path)


def fetch_boot_files(destination: Path | None = None, *, base: str | None = None,
                     progress: Progress | None = None,
                     say: Callable[[str], None] = print) -> Path:
    """Download every pinned boot directory into ``destination`` (default: the user data
    directory); returns the directory. Raises :class:`~rpiboot.download.DownloadError`."""
    root = destination if destination is not None else user_data_dir()
    wanted = [pinned for pinned in pinned_files() if pinned.file.split("/")[0] in DIRECTORIES]
    missing = set(verify_all(wanted, root))
    try:
        _install([pinned for pinned in wanted if pinned.file in missing], root, base, progress)
    except OSError as error:
        raise DownloadError(f"cannot write the boot files into {root}: {error}") from None
    for name in DIRECTORIES:
        fetched = any(file.startswith(name + "/") for file in missing)
        say(f"{root / name}: {'downloaded' if fetched else 'up to date'}")
    for name in EEPROM_DIRECTORIES:
        _make_pieeprom(root / name, say)
    return root


def _install(files: list[PinnedFile], root: Path, base: str | None,
             progress: Progress | None) -> None:
    """Download into the staging directory; move into place only once every file matched."""
    staging = root / STAGING
    fetch_all(files, staging, base=base, progress=progress)
    for pinned in files:
        target = root.joinpath(*pinned.file.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging.joinpath(*pinned.file.split("/")), target)
    shutil.rmtree(staging, ignore_errors=True)


def _make_pieeprom(directory: Path, say: Callable[[str], None]) -> None:
    """pieeprom.bin/.sig from pieeprom.original.bin and boot.conf, unless they are newer."""
    image, config = directory / "pieeprom.bin", directory / "boot.conf"
    original = directory / "pieeprom.original.bin"
    if not (original.is_file() and config.is_file()):
        return
    if image.is_file() and image.stat().st_mtime >= max(original.stat().st_mtime,
                                                         config.stat().st_mtime):
        return
    from .eeprom.update_pieeprom_tool import main as update_pieeprom
    with contextlib.redirect_stdout(io.StringIO()):  # its report is not ours to print
        code = update_pieeprom(["-c", str(config), "-i", str(original), "-o", str(image)])
    if code != 0:
        say(f"{directory}: update-pieeprom failed (status {code}); run it in that directory")


def text_progress(stream: TextIO | None = None) -> Progress:
    """Progress for people: a line rewritten in place on a terminal, one line per file else."""
    out = stream or sys.stderr
    live = bool(getattr(out, "isatty", lambda: False)())

    def report(pinned: PinnedFile, have: int, total: int | None) -> None:
        of = f" of {total / 1e6:.1f} MB" if total else ""
        if live:
            out.write(f"\r{pinned.file}: {have / 1e6:.1f} MB{of}\x1b[K")
            if total is not None and have >= total:
                out.write("\n")
        elif total is not None and have >= total:
            out.write(f"{pinned.file}: {have} bytes\n")
        out.flush()

    return report
