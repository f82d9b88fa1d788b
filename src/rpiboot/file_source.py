"""Where the files a device asks for come from: the boot directory, overlays and bootfiles.bin.

The lookup order is upstream's (usbboot main.c, check_file):

1. With ``bootfiles.bin`` in the boot directory: DIR/<chip>/NAME, else the archive member
   <chip>/NAME (matched case-insensitively);
2. with an overlay (``-o``): DIR/<usb-path>/NAME, never for bootcode*.bin;
3. DIR/<chip>/NAME, then DIR/NAME.

Names come from the device and are untrusted: see :func:`refusal_reason`. Files are streamed.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import BootDirectoryError
from .targets import ALL_TARGETS, Target

ARCHIVE_NAME = "bootfiles.bin"
SECOND_STAGE_NAMES = frozenset(target.second_stage for target in ALL_TARGETS)
CHUNK_SIZE = 256 * 1024


@dataclass(frozen=True)
class ResolvedFile:
    name: str
    origin: str
    """Where it was found, as shown to the user (a path, or archive:member)."""
    kind: str
    """``file``, ``archive_overlay`` (DIR/<chip>/NAME beside bootfiles.bin) or ``archive``."""
    size: int
    _open: Callable[[], BinaryIO]

    def open(self) -> "OpenFile":
        """Open it now and keep it open: what is sent later is what this size describes, even
        if the file is replaced meanwhile (upstream keeps its FILE* the same way)."""
        stream = self._open()
        size = os.fstat(stream.fileno()).st_size if self.kind != "archive" else self.size
        return OpenFile(self, size, stream)

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The contents, exactly ``size`` bytes, a chunk at a time."""
        with self.open() as opened:
            yield from opened.chunks(chunk_size)

    def read(self) -> bytes:
        return b"".join(self.chunks())


class OpenFile:
    """A resolved file held open between a device's GetFileSize and its ReadFile."""

    def __init__(self, resolved: ResolvedFile, size: int, stream: BinaryIO):
        self.resolved = resolved
        self.name = resolved.name
        self.size = size
        self._stream = stream

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        remaining = self.size
        while remaining > 0:
            chunk = self._stream.read(min(chunk_size, remaining))
            if not chunk:
                raise OSError(f"{self.resolved.origin} is shorter than its {self.size} bytes")
            remaining -= len(chunk)
            yield chunk

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "OpenFile":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def refusal_reason(name: str) -> str | None:
    """Why a device-supplied name must not be looked up, or None if it is acceptable."""
    if ".." in name:
        return "contains '..'"
    if name.startswith("/") or "\\" in name:
        return "is absolute or contains a backslash"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return "contains control characters"
    if os.name == "nt" and ":" in name:
        return "contains a drive separator"
    return None


def names_a_directory(name: str) -> bool:
    """'config.txt/' and 'config.txt/.' can only name directories: upstream's fopen fails on
    them, so they are missing (pathlib would quietly drop the trailing part)."""
    return name.endswith("/") or name.endswith("/.") or name in ("", ".")


class BootFiles:
    """The file resolver for one device: a boot directory seen through one chip's eyes."""

    def __init__(self, directory: Path, target: Target, *, overlay_path: str | None = None):
        self.directory = directory
        self.target = target
        self.overlay_path = overlay_path
        archive = directory / ARCHIVE_NAME
        self.archive = archive if archive.is_file() else None

    def resolve(self, name: str) -> ResolvedFile | None:
        """The file a device asked for, or None if it is missing or refused."""
        if refusal_reason(name) is not None or names_a_directory(name):
            return None
        prefix = self.target.file_prefix
        if self.archive is not None:
            found = _plain_file(self.directory / prefix / name, name, "archive_overlay")
            found = found or _archive_member(self.archive, f"{prefix}/{name}", name)
            if found:
                return found
        if self.overlay_path and name not in SECOND_STAGE_NAMES:
            found = _plain_file(self.directory / self.overlay_path / name, name, "file")
            if found:
                return found
        return (_plain_file(self.directory / prefix / name, name, "file")
                or _plain_file(self.directory / name, name, "file"))


def _plain_file(path: Path, name: str, kind: str) -> ResolvedFile | None:
    try:
        # As upstream's fopen: a file that cannot be opened is missing, not a failure later.
        if not path.is_file() or not os.access(path, os.R_OK):
            return None
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    refuse_link_text(path)
    return ResolvedFile(name, str(path), kind, size, lambda: open(path, "rb"))


def _archive_member(archive: Path, member: str, name: str) -> ResolvedFile | None:
    stat = archive.stat()
    entry = _archive_index(str(archive), stat.st_mtime_ns, stat.st_size).get(member.lower())
    if entry is None:
        return None
    offset, size = entry

    def open_member() -> BinaryIO:
        stream = open(archive, "rb")
        stream.seek(offset)
        return stream

    return ResolvedFile(name, f"{archive}:{member}", "archive", size, open_member)


@functools.lru_cache(maxsize=8)
def _archive_index(path: str, _mtime_ns: int, _size: int) -> dict[str, tuple[int, int]]:
    """Member name (lower case) -> (data offset, size), read once per archive version."""
    index: dict[str, tuple[int, int]] = {}
    try:
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                if member.isfile():
                    index.setdefault(member.name.lower(), (member.offset_data, member.size))
    except (tarfile.TarError, OSError) as error:
        raise BootDirectoryError(f"{path} is not a readable tar archive: {error}") from None
    return index


# --- Choosing and checking the boot directory ---------------------------------------------------

INSTALL_PREFIXES = (Path(sys.prefix), Path("/usr/local"), Path("/usr"), Path("/opt/homebrew"))


def default_directory_candidates(target: Target) -> list[Path]:
    """Where to look when no -d is given: the user data directory (``rpiboot
    --fetch-boot-files``), <prefix>/share/rpiboot/<dir>, then ./<dir>."""
    from .boot_files import user_data_dirs
    seen: list[Path] = [place / target.default_directory for place in user_data_dirs()]
    for prefix in INSTALL_PREFIXES:
        candidate = prefix / "share" / "rpiboot" / target.default_directory
        if candidate not in seen:
            seen.append(candidate)
    seen.append(Path(target.default_directory))
    return seen


def find_default_directory(target: Target) -> Path:
    for candidate in default_directory_candidates(target):
        if _has_second_stage(candidate, target):
            return candidate
    tried = ", ".join(str(path) for path in default_directory_candidates(target))
    raise BootDirectoryError(
        f"no boot directory given and none found for {target.name} (tried {tried}); {WAY_OUT}")


WAY_OUT = ("run 'rpiboot --fetch-boot-files' to download usbboot's boot directories, or give "
           "-d DIR (a usbboot checkout's mass-storage-gadget64, msd, recovery, ...)")


def check_default_directories() -> None:
    """Without -d: refuse to wait for a board when no chip has a default directory installed."""
    if any(_has_second_stage(candidate, target) for target in ALL_TARGETS
           for candidate in default_directory_candidates(target)):
        return
    names = sorted({target.default_directory for target in ALL_TARGETS})
    raise BootDirectoryError(
        f"no boot directory given (-d) and no {' or '.join(names)} directory installed (looked "
        f"in {default_directory_candidates(ALL_TARGETS[0])[0].parent}, "
        f"<prefix>/share/rpiboot and the current directory); {WAY_OUT}")


def _has_second_stage(directory: Path, target: Target) -> bool:
    try:
        return BootFiles(directory, target).resolve(target.second_stage) is not None
    except BootDirectoryError:
        return False


# --- The two ways a usbboot checkout is commonly broken ------------------------------------------

USBBOOT_CLONE = ("git clone --depth=1 --recurse-submodules --shallow-submodules "
                 "https://github.com/raspberrypi/usbboot")
_LINK_TEXT = re.compile(rb"(?:\.{1,2}/|/)[^\s\x00]{1,1000}")
"""What a symbolic link checked out as a plain file holds: a path, with no newline (as git
writes it)."""
_LINK_TEXT_MAX = 1024


def link_text(path: Path) -> str | None:
    """The path a small plain file holds when it is a symbolic link checked out as a file (git
    with core.symlinks=false, an archive or copy that drops links), else None."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _LINK_TEXT_MAX:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return data.decode("utf-8", "replace") if _LINK_TEXT.fullmatch(data) else None


def refuse_link_text(path: Path) -> None:
    """Never send a board a file that is only the text of a symbolic link."""
    target = link_text(path)
    if target is None:
        return
    raise BootDirectoryError(
        f"'{path}' is a {len(target.encode())}-byte text file holding the path '{target}': a "
        f"symbolic link checked out as a plain file (git with core.symlinks=false, or a copy that "
        f"drops links); refused, it is not a boot file. Clone usbboot where links work "
        f"({USBBOOT_CLONE}) or put the file it names in its place")


def _dangling_links(directory: Path) -> list[tuple[Path, str]]:
    """(link, where it finally points) for every broken symbolic link in DIR and its chip
    sub-directories."""
    found = []
    for place in (directory, *(directory / sub for sub in ("2710", "2711", "2712"))):
        try:
            entries = sorted(place.iterdir()) if place.is_dir() else []
        except OSError:
            continue
        found += [(entry, os.path.realpath(entry)) for entry in entries
                  if entry.is_symlink() and not entry.exists()]
    return found


def _broken_checkout_error(directory: Path) -> BootDirectoryError | None:
    dangling = _dangling_links(directory)
    if not dangling:
        return None
    link, target = dangling[0]
    submodule = "rpi-eeprom" in Path(target).parts
    why = ("it points into usbboot's rpi-eeprom submodule, which was not checked out (run 'git "
           "submodule update --init --depth=1' in the checkout, or clone with "
           "--recurse-submodules --shallow-submodules)" if submodule else
           f"the file it names is missing (a full checkout: {USBBOOT_CLONE})")
    others = f" ({len(dangling) - 1} more broken link(s))" if len(dangling) > 1 else ""
    return BootDirectoryError(f"'{link}' is a broken symbolic link to '{target}'{others}: {why}")


def check_boot_directory(directory: Path, *, signed: bool = False) -> None:
    """Refuse a directory that cannot boot anything, before waiting for devices."""
    if not directory.exists():
        raise BootDirectoryError(f"boot directory '{directory}' does not exist")
    if not directory.is_dir():
        raise BootDirectoryError(f"'{directory}' is not a directory")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise BootDirectoryError(f"boot directory '{directory}' is not readable")
    refuse_link_text(directory / ARCHIVE_NAME)
    if (directory / ARCHIVE_NAME).is_file():
        _archive_index.cache_clear()
        stat = (directory / ARCHIVE_NAME).stat()
        _archive_index(str(directory / ARCHIVE_NAME), stat.st_mtime_ns, stat.st_size)
    elif not any(BootFiles(directory, target).resolve(target.second_stage)
                 for target in ALL_TARGETS):
        broken = _broken_checkout_error(directory)
        if broken is not None:
            raise broken
        raise BootDirectoryError(
            f"No 'bootcode' files found in '{directory}' (need bootfiles.bin, bootcode.bin, "
            f"bootcode4.bin or bootcode5.bin, at the top or in a 2710/2711/2712 sub-directory)")
    if signed and not any((place / "bootsig.bin").is_file()
                          for place in (directory, directory / "2710")):
        raise BootDirectoryError(f"Unable to open 'bootsig.bin' from {directory} (needed by -s)")
