"""The RPIBOOT wire protocol, without I/O.

Everything here turns bytes into events and decisions into replies; nothing touches USB. The
session (:mod:`rpiboot.session`) carries the replies out over a transport, so the same logic runs
against libusb, the virtual Raspberry Pi and unit tests. See docs/protocol.md for the facts.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

VENDOR_OUT = 0x40
VENDOR_IN = 0xC0
BOOT_MESSAGE_SIZE = 24
SIGNATURE_SIZE = 20
RETURN_CODE_SIZE = 4
NAME_FIELD_SIZE = 256
FILE_MESSAGE_SIZE = 4 + NAME_FIELD_SIZE
MAX_LENGTH = 0xFFFF_FFFF
MAX_SECOND_STAGE = 0x7FFF_FFFF
"""The boot message announces the second stage as a signed 32-bit length."""


class Command(enum.IntEnum):
    GET_FILE_SIZE = 0
    READ_FILE = 1
    DONE = 2


def split_length(length: int) -> tuple[int, int]:
    """A length as the (wValue, wIndex) pair that announces it in a control request."""
    if not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"length {length} does not fit the protocol's 32 bits")
    return length & 0xFFFF, length >> 16


def join_length(value: int, index: int) -> int:
    return (index << 16) | value


def boot_message(second_stage_size: int, signature: bytes = b"") -> bytes:
    """The 24-byte message the ROM expects before the second stage."""
    if len(signature) not in (0, SIGNATURE_SIZE):
        raise ValueError(f"a boot signature is {SIGNATURE_SIZE} bytes, not {len(signature)}")
    return struct.pack("<i20s", second_stage_size, signature)


def parse_return_code(raw: bytes) -> int:
    """The ROM's verdict on the second stage: 0 means accepted."""
    if len(raw) != RETURN_CODE_SIZE:
        raise ValueError(f"return code is {RETURN_CODE_SIZE} bytes, got {len(raw)}")
    return struct.unpack("<i", raw)[0]


# --- File-server events -------------------------------------------------------------------------

@dataclass(frozen=True)
class GetFileSize:
    name: str


@dataclass(frozen=True)
class ReadFile:
    name: str


@dataclass(frozen=True)
class Metadata:
    key: str
    value: str | None
    """None when the message carried a key but no value (upstream records nothing then)."""


@dataclass(frozen=True)
class Done:
    acknowledge: bool
    """True for the empty-name form, which wants a zero-length reply; command 2 wants none."""


@dataclass(frozen=True)
class BadRequest:
    """A request this host will not serve. ``reply`` says whether a zero-length reply is due."""

    command: int
    reason: str
    reply: bool
    fatal: bool = False


FileServerEvent = GetFileSize | ReadFile | Metadata | Done | BadRequest


def parse_file_message(raw: bytes) -> FileServerEvent:
    """Classify one 260-byte message from a file-server stage. Device input is untrusted."""
    if len(raw) < FILE_MESSAGE_SIZE:
        return BadRequest(-1, f"short message ({len(raw)} bytes)", reply=False, fatal=True)
    command = struct.unpack_from("<i", raw)[0]
    field = raw[4:FILE_MESSAGE_SIZE]
    end = field.find(b"\0")
    if end == 0:
        return Done(acknowledge=True)
    if command == Command.DONE:
        # As upstream: command 2 ends the stage whatever its name holds (even no terminator).
        return Done(acknowledge=False)
    known = command in (Command.GET_FILE_SIZE, Command.READ_FILE)
    if end < 0:
        return BadRequest(command, "file name is not NUL-terminated", reply=known,
                          fatal=not known)
    name_bytes = field[:end]
    if name_bytes.startswith(b"*"):
        return _metadata(name_bytes[1:])
    if not known:
        return BadRequest(command, f"unknown command {command}", reply=False, fatal=True)
    try:
        name = name_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return BadRequest(command, "file name is not valid UTF-8", reply=True)
    return GetFileSize(name) if command == Command.GET_FILE_SIZE else ReadFile(name)


def _metadata(body: bytes) -> Metadata:
    # Upstream splits on '*' and skips empty pieces: key is the first piece, value the second.
    pieces = [piece for piece in body.decode("utf-8", errors="replace").split("*") if piece]
    key = pieces[0] if pieces else ""
    value = pieces[1] if len(pieces) > 1 else None
    return Metadata(key, value)


def encode_file_message(command: int, name: bytes | str) -> bytes:
    """The device's side of a request (used by the virtual Pi and tests)."""
    raw_name = name.encode() if isinstance(name, str) else name
    if len(raw_name) > NAME_FIELD_SIZE:
        raise ValueError("file name longer than the message field")
    return struct.pack("<i", command) + raw_name.ljust(NAME_FIELD_SIZE, b"\0")
