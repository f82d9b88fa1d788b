"""OTP metadata that recovery.bin reports (``-j``): decoding, escaping and safe file names."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

DUID_KEY = "FACTORY_UUID"
_C_HEX = re.compile(r"\s*(?P<sign>[+-]?)(?:0[xX](?=[0-9a-fA-F]))?(?P<digits>[0-9a-fA-F]*)")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_SERIAL_FILE_NAME = 64
_VERBATIM = re.compile(r"[A-Za-z0-9]{1,%d}" % MAX_SERIAL_FILE_NAME)
WINDOWS_DEVICE_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{kind}{digit}" for kind in ("COM", "LPT") for digit in "0123456789¹²³"])
"""Names Windows reserves whatever the extension (CON.json is the console)."""


def decode_c40_duid(encoded: str) -> str | None:
    """FACTORY_UUID: 32-bit hex words joined by '_', each two C40 half-words (low half first)
    of three characters 0-9A-Z. None if a character is outside that alphabet."""
    values: list[int] = []
    for word_text in filter(None, encoded.split("_")):
        word = _hex_word(word_text)
        if word == 0:
            break
        values += _c40_half_word(word & 0xFFFF)
        if word >> 16:
            values += _c40_half_word(word >> 16)
    characters = [_c40_char(value) for value in values]
    if any(char is None for char in characters):
        return None
    return "".join(characters)  # type: ignore[arg-type]


def _hex_word(text: str) -> int:
    """A hex number read the way C's strtoul(text, NULL, 16) reads it, kept to 32 bits."""
    match = _C_HEX.match(text)
    if not match or not match.group("digits"):
        return 0
    value = min(int(match.group("digits"), 16), 2**64 - 1)
    if match.group("sign") == "-":
        value = -value % 2**64
    return value & 0xFFFF_FFFF


def _c40_half_word(half: int) -> list[int]:
    first = int((half - 1) / 1600)  # C division truncates towards zero
    half -= first * 1600
    second = int((half - 1) / 40)
    half -= second * 40
    return [first, second, half - 1]


def _c40_char(value: int) -> str | None:
    if 4 <= value <= 13:
        return chr(ord("0") + value - 4)
    if 14 <= value <= 39:
        return chr(ord("A") + value - 14)
    return None


def safe_file_stem(serial: str) -> str:
    """A file name stem for a device-supplied serial number that cannot leave its directory.

    Ordinary serials (letters and digits only) are kept as they are; anything else is reduced to
    [A-Za-z0-9._-] and given '-' and a short hash of the original, so two hostile serials never
    collide, and no serial can be chosen to equal the name another one was mapped to (a kept
    serial never contains '-'). No stem starts with '-' or '.' (a command-line option, a hidden
    file) or is a Windows device name (CON, NUL, COM1...).
    """
    if _VERBATIM.fullmatch(serial) and not _is_device_name(serial):
        return serial
    cleaned = _UNSAFE.sub("_", serial).lstrip("._-")[:MAX_SERIAL_FILE_NAME]
    if _is_device_name(cleaned):
        cleaned = "_" + cleaned
    digest = hashlib.sha256(serial.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{cleaned or 'device'}-{digest}"


def _is_device_name(stem: str) -> bool:
    return stem.split(".")[0].upper() in WINDOWS_DEVICE_NAMES


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else by the
    set-and-restore dance."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class MetadataRecord:
    """Key/value pairs one device reported, in arrival order."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.problems: list[str] = []

    def add(self, key: str, value: str | None) -> str | None:
        """Record a pair; returns the value stored (FACTORY_UUID decoded), or None if the pair
        was rejected (the reason is in :attr:`problems`)."""
        if not key or value is None:
            self.problems.append(f"metadata {key!r} without a value ignored")
            return None
        if key == DUID_KEY:
            decoded = decode_c40_duid(value)
            if decoded is None:
                self.problems.append(f"Failed to decode a FACTORY_UUID: invalid input {value!r}")
                return None
            value = decoded
        self.values[key] = value
        return value

    def __bool__(self) -> bool:
        return bool(self.values)

    def to_json(self) -> str:
        """The object, laid out as upstream lays it out, but always valid JSON."""
        lines = [f"\t{json.dumps(key)}: {json.dumps(value)}" for key, value in self.values.items()]
        return "{\n" + ",\n".join(lines) + "\n}\n"

    def write(self, directory: Path, serial: str) -> WrittenMetadata:
        """Write DIR/<serial>.json atomically, readable as the umask allows (0644 under 022).

        A file of that name with other contents (another board with the same serial, an
        impostor) is never replaced: this record goes to DIR/<serial>-2.json (-3, ...) and the
        result says which record it collided with."""
        stem = safe_file_stem(serial)
        document = self.to_json()
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".rpiboot-", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                os.fchmod(stream.fileno(), 0o666 & ~current_umask())
                stream.write(document)
            return _place(Path(temporary), directory, stem, document)
        finally:
            Path(temporary).unlink(missing_ok=True)


@dataclass(frozen=True)
class WrittenMetadata:
    path: Path
    conflict: Path | None = None
    """The existing record with the same serial and other contents, kept as it was."""


MAX_DUPLICATES = 1000


def _place(temporary: Path, directory: Path, stem: str, document: str) -> WrittenMetadata:
    """Link the finished file under its name without ever replacing another record (link
    fails if the name exists, so two writers cannot both win)."""
    first = directory / f"{stem}.json"
    for number in range(1, MAX_DUPLICATES + 1):
        path = first if number == 1 else directory / f"{stem}-{number}.json"
        try:
            _link_exclusive(temporary, path, document)
            return WrittenMetadata(path, None if number == 1 else first)
        except FileExistsError:
            if _same_contents(path, document):
                os.replace(temporary, path)  # the same record again: nothing is lost
                return WrittenMetadata(path, None if number == 1 else first)
    raise OSError(f"{MAX_DUPLICATES} records for serial {stem!r} already in {directory}")


def _link_exclusive(temporary: Path, path: Path, document: str) -> None:
    """Give the finished file its name; FileExistsError if the name is taken."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (FAT, some network file systems): create exclusively instead.
        mode = temporary.stat().st_mode & 0o777
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(document)


def _same_contents(path: Path, document: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == document
    except (OSError, UnicodeDecodeError):
        return False
