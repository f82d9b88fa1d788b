"""Raspberry Pi bootloader EEPROM image format (BCM2711 and BCM2712).

An image is a chain of sections, each starting on an 8-byte boundary with a
big-endian header ``magic:u32, length:u32`` followed by ``length`` bytes:

* offset 0: the second-stage bootloader (``bootcode.bin``), magic MAGIC;
* "file" sections (FILE_MAGIC) hold modifiable files. Their payload is a
  12-byte NUL-padded file name, 4 reserved bytes, then the file data, so a
  file of n bytes has ``length = n + 16`` and occupies ``n + 24`` bytes;
* padding sections (PAD_MAGIC) fill the rest of an erase block with 0xff;
* other magics matching MAGIC_MASK are opaque firmware blobs.

The chain ends at a word of 0x00000000 or 0xffffffff.  BCM2712 "AB" images
(those with a ``bootsys`` file) have a 64 KiB read-only area followed by a
988 KiB partition; modifiable files are only looked up inside the partition
window, exactly like upstream ``rpi-eeprom-config``.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .common import ToolError

VALID_IMAGE_SIZES = (512 * 1024, 2 * 1024 * 1024)

MAGIC = 0x55AAF00F
PAD_MAGIC = 0x55AAFEEF
MAGIC_MASK = 0xFFFFF00F
FILE_MAGIC = 0x55AAF11F

SECTION_HDR_LEN = 8
FILENAME_LEN = 12
FILE_RESERVED_LEN = 4
FILE_DATA_OFFSET = SECTION_HDR_LEN + FILENAME_LEN + FILE_RESERVED_LEN  # 24
FILE_LENGTH_OVERHEAD = FILENAME_LEN + FILE_RESERVED_LEN  # 16

ERASE_ALIGN_SIZE = 4096
# Upstream limit for config-like files (bootconf.txt, bootconf.sig, ...).
MAX_FILE_SIZE = ERASE_ALIGN_SIZE - 20
# Upstream sizes a file section as n+20 bytes; it really takes n+24.  Where the
# section is followed only by the reserved last erase block of the image (the
# bootloader's scratch page, no section lives there) upstream writes files whose
# last 4 bytes land in that block, and so do we, byte for byte.  Before a real
# section (or the end of an A/B partition) the real footprint must fit.
UPSTREAM_FOOTPRINT_SLACK = FILE_DATA_OFFSET - 20

READ_ONLY_SIZE = 64 * 1024
PARTITION_SIZE = 988 * 1024
PARTITION_END = READ_ONLY_SIZE + PARTITION_SIZE
# Non-AB images must keep the first 128 KiB for bootcode.bin.
BOOTCODE_RESERVED = 128 * 1024

BOOTCONF_TXT = "bootconf.txt"
BOOTCONF_SIG = "bootconf.sig"
PUBKEY_BIN = "pubkey.bin"
CACERT_DER = "cacert.der"
BOOTCODE_BIN = "bootcode.bin"
BOOTSYS_BIN = "bootsys"
UPDATE_TIME_FILENAME = "updatetime"

# Offset of the file name of the first partition section in an AB image.
AB_BOOTSYS_NAME_OFFSET = READ_ONLY_SIZE + SECTION_HDR_LEN


class Section(NamedTuple):
    magic: int
    offset: int
    length: int
    filename: str = ""

    @property
    def end(self) -> int:
        return self.offset + SECTION_HDR_LEN + self.length


class FileSlot(NamedTuple):
    """Where a file section lives and how far it may grow."""

    offset: int
    length: int
    is_last: bool
    next_offset: int
    next_is_reserved_block: bool = False   # next_offset is the image's reserved last 4 KiB


def align8(value: int) -> int:
    return (value + 7) & ~7


class EepromImage:
    """In-memory EEPROM image that can be queried and edited."""

    def __init__(self, data: bytes, name: str = "image") -> None:
        if len(data) not in VALID_IMAGE_SIZES:
            raise ToolError(
                f"{name}: expected image size {' or '.join(map(str, VALID_IMAGE_SIZES))} bytes, "
                f"got {len(data)} bytes")
        self.name = name
        self._bytes = bytearray(data)
        self.sections = parse_sections(self._bytes, name)
        self.is_ab = any(s.filename == BOOTSYS_BIN for s in self.sections)

    @property
    def size(self) -> int:
        return len(self._bytes)

    def to_bytes(self) -> bytes:
        return bytes(self._bytes)

    # -- lookup -----------------------------------------------------------

    def find_file(self, filename: str, start: int | None = None,
                  end: int | None = None) -> FileSlot | None:
        """Find the first file section named filename with offset in [start, end)."""
        for index, section in enumerate(self.sections):
            in_window = ((start is None or section.offset >= start)
                         and (end is None or section.offset < end))
            if in_window and section.magic == FILE_MAGIC and section.filename == filename:
                reserved = self.size - ERASE_ALIGN_SIZE
                default_next = reserved if end is None else min(reserved, end)
                next_offset = self._next_data_section(index, -1)
                return FileSlot(section.offset, section.length,
                                index == len(self.sections) - 1,
                                default_next if next_offset < 0 else next_offset,
                                next_offset < 0 and default_next == reserved)
        return None

    def _next_data_section(self, index: int, default: int) -> int:
        """Offset of the first non-padding section after sections[index]."""
        for section in self.sections[index + 1:]:
            if section.magic != PAD_MAGIC:
                return section.offset
        return default

    def get_file(self, filename: str) -> bytes:
        if filename == BOOTCODE_BIN:
            section = self._bootcode_section()
            return bytes(self._bytes[SECTION_HDR_LEN:SECTION_HDR_LEN + section.length])
        slot = self.find_file(filename)
        if slot is None:
            raise ToolError(f"{self.name}: file '{filename}' not found in image")
        start = slot.offset + FILE_DATA_OFFSET
        return bytes(self._bytes[start:start + slot.length - FILE_LENGTH_OVERHEAD])

    @property
    def config(self) -> bytes:
        return self.get_file(BOOTCONF_TXT)

    def extractable_files(self) -> list[tuple[str, bytes]]:
        """(name, content) in image order, as written by ``rpi-eeprom-config -x``.

        Like upstream, a name that occurs twice (``updatetime`` in AB images)
        yields the content of its first occurrence each time.
        """
        files: list[tuple[str, bytes]] = []
        for section in self.sections:
            if section.magic == MAGIC and section.offset == 0:
                files.append((BOOTCODE_BIN, self.get_file(BOOTCODE_BIN)))
            elif section.magic == FILE_MAGIC:
                files.append((section.filename, self.get_file(section.filename)))
        return files

    def _bootcode_section(self) -> Section:
        if not self.sections or self.sections[0].magic != MAGIC:
            raise ToolError(f"{self.name}: no bootcode section at offset 0")
        return self.sections[0]

    # -- editing ----------------------------------------------------------

    def update_file(self, filename: str, data: bytes) -> None:
        """Replace a modifiable file inside the partition window."""
        if filename == BOOTCODE_BIN:
            self.update_bootcode(data)
            return
        slot = self.find_file(filename, READ_ONLY_SIZE, PARTITION_END)
        if slot is None:
            raise ToolError(f"{self.name}: update target '{filename}' not found in image")
        footprint = FILE_DATA_OFFSET + len(data)
        limit = self.size - ERASE_ALIGN_SIZE
        if slot.offset + footprint - UPSTREAM_FOOTPRINT_SLACK > limit:
            raise ToolError(
                f"no space available for {filename}: needs {footprint} bytes, "
                f"{limit + UPSTREAM_FOOTPRINT_SLACK - slot.offset} available")
        slack = UPSTREAM_FOOTPRINT_SLACK if slot.next_is_reserved_block else 0
        if slot.offset + footprint - slack > slot.next_offset:
            raise ToolError(
                f"{filename} ({len(data)} bytes) is too large: the section needs {footprint} bytes "
                f"but only {slot.next_offset - slot.offset} are available before the next section")
        struct.pack_into(">L", self._bytes, slot.offset + 4, len(data) + FILE_LENGTH_OVERHEAD)
        start = slot.offset + FILE_DATA_OFFSET
        self._bytes[start:start + len(data)] = data
        self._pad(start + len(data), slot.next_offset, slot.is_last)

    def update_bootcode(self, data: bytes) -> None:
        """Replace the second-stage bootloader at offset 0."""
        self._bootcode_section()
        next_offset = self._next_data_section(0, -1)
        if next_offset < 0:
            raise ToolError(f"{self.name}: bootcode.bin is not followed by another section; cannot replace it")
        if not self.is_ab and next_offset < BOOTCODE_RESERVED:
            raise ToolError(f"{self.name}: bootcode.bin cannot be replaced: this image does not keep the "
                            "first 128K free for it")
        footprint = SECTION_HDR_LEN + len(data)
        if footprint > next_offset:
            raise ToolError(
                f"bootcode.bin ({len(data)} bytes) is too large: the section needs {footprint} bytes "
                f"but only {next_offset} are available before the next section")
        struct.pack_into(">L", self._bytes, 4, len(data))
        self._bytes[SECTION_HDR_LEN:SECTION_HDR_LEN + len(data)] = data
        self._pad(SECTION_HDR_LEN + len(data), next_offset, False)

    def _pad(self, pad_start: int, next_offset: int, is_last: bool) -> None:
        """Erase (0xff) from pad_start to next_offset, adding a pad header if it fits."""
        aligned = align8(pad_start)
        self._bytes[pad_start:aligned] = b"\xff" * (aligned - pad_start)
        pad_start = aligned
        pad_bytes = next_offset - pad_start
        # The final file (bootconf.txt in practice) gets no padding section header.
        if pad_bytes >= SECTION_HDR_LEN and not is_last:
            pad_bytes -= SECTION_HDR_LEN
            struct.pack_into(">LL", self._bytes, pad_start, PAD_MAGIC, pad_bytes)
            pad_start += SECTION_HDR_LEN
        if pad_bytes > 0:
            self._bytes[pad_start:pad_start + pad_bytes] = b"\xff" * pad_bytes

    def set_timestamp(self, timestamp: int) -> None:
        """Set the self-update timestamp (``~ts`` then ``ts``, little-endian)."""
        if not 0 <= timestamp <= 0xFFFFFFFF:
            raise ToolError(f"timestamp {timestamp} does not fit in 32 bits")
        words = struct.pack("<LL", ~timestamp & 0xFFFFFFFF, timestamp)
        slot = self.find_file(UPDATE_TIME_FILENAME, 0, READ_ONLY_SIZE)
        if slot is None:
            # No updatetime file: upstream uses the last 8 bytes of the image.
            self._bytes[-8:] = words
            return
        self._write_file_prefix(slot, words)
        slot = self.find_file(UPDATE_TIME_FILENAME, READ_ONLY_SIZE, PARTITION_END)
        if slot is None:
            raise ToolError(f"{self.name}: the image has no {UPDATE_TIME_FILENAME} file to hold the timestamp")
        self._write_file_prefix(slot, words)

    def _write_file_prefix(self, slot: FileSlot, data: bytes) -> None:
        start = slot.offset + FILE_DATA_OFFSET
        self._bytes[start:start + len(data)] = data


def parse_sections(data: bytes | bytearray, name: str = "image") -> list[Section]:
    """Walk the section chain from offset 0 until an erased/zero word."""
    sections: list[Section] = []
    offset = 0
    size = len(data)
    while offset + SECTION_HDR_LEN <= size:
        magic, length = struct.unpack_from(">LL", data, offset)
        if magic in (0, 0xFFFFFFFF):
            break
        if magic & MAGIC_MASK != MAGIC:
            raise ToolError(f"{name}: EEPROM is corrupted: bad section magic 0x{magic:08x} "
                            f"at offset 0x{offset:x}")
        if offset + SECTION_HDR_LEN + length > size:
            raise ToolError(f"{name}: EEPROM is corrupted: section at offset 0x{offset:x} "
                            f"(length {length}) extends past the end of the image")
        filename = ""
        if magic == FILE_MAGIC:
            filename = _decode_filename(data, offset, name)
        sections.append(Section(magic, offset, length, filename))
        offset = align8(offset + SECTION_HDR_LEN + length)
    return sections


def _decode_filename(data: bytes | bytearray, offset: int, name: str) -> str:
    raw = bytes(data[offset + SECTION_HDR_LEN:offset + SECTION_HDR_LEN + FILENAME_LEN])
    try:
        return raw.decode("utf-8").replace("\0", "")
    except UnicodeDecodeError:
        raise ToolError(f"{name}: EEPROM is corrupted: bad file name at offset 0x{offset:x}") from None


def is_ab_capable(data: bytes) -> bool:
    """The update-pieeprom.sh test: is ``bootsys`` the first partition file?"""
    raw = data[AB_BOOTSYS_NAME_OFFSET:AB_BOOTSYS_NAME_OFFSET + 8]
    return raw.split(b"\0")[0] == BOOTSYS_BIN.encode()


def build_file_section(filename: str, data: bytes) -> bytes:
    """Serialise one file section (header, name, reserved, data), unpadded."""
    name = filename.encode("utf-8")
    if len(name) > FILENAME_LEN:
        raise ValueError(f"file name {filename!r} longer than {FILENAME_LEN} bytes")
    header = struct.pack(">LL", FILE_MAGIC, len(data) + FILE_LENGTH_OVERHEAD)
    return header + name.ljust(FILENAME_LEN, b"\0") + b"\0" * FILE_RESERVED_LEN + data
