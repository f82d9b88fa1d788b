"""OTP metadata that recovery.bin reports (``-j``): decoding, escaping and safe file names."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

DUID_KEY = "FACTORY_UUID"
_C_HEX = re.compile(r"\s*(?P<sign>[+-]?)(?:0[xX](?=[0-9a-fA-F]))?(?P<digits>[0-9a-fA-F]*)")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_SERIAL_FILE_NAME = 64
_VERBATIM = re.compile(r"[A-Za-z0-9]{1,%d}" % MAX_SERIAL_FILE_NAME)


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
    serial never contains '-').
    """
    if _VERBATIM.fullmatch(serial):
        return serial
    cleaned = _UNSAFE.sub("_", serial).lstrip(".")[:MAX_SERIAL_FILE_NAME]
    digest = hashlib.sha256(serial.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{cleaned or 'device'}-{digest}"


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

    def write(self, directory: Path, serial: str) -> Path:
        """Write DIR/<serial>.json atomically; returns the path written."""
        path = directory / f"{safe_file_stem(serial)}.json"
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".rpiboot-", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(self.to_json())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path
