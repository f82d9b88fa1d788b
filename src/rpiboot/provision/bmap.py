"""Block maps in bmaptool's XML format: which blocks of an image hold data, with checksums.

Facts taken from bmap-tools (the format is not otherwise specified):

* root element ``<bmap version="X.Y">``; major versions 1 and 2 are read here;
* ``ImageSize`` (bytes), ``BlockSize`` (bytes), ``BlocksCount`` (= ImageSize / BlockSize rounded
  up), ``MappedBlocksCount`` (blocks inside the ranges);
* ``<BlockMap>`` holds ``<Range>`` elements whose text is ``first-last`` or ``first`` (block
  numbers, inclusive);
* checksums: none before 1.3; in 1.3 a ``sha1`` attribute on each range and ``BmapFileSHA1``;
  from 1.4 (which is the same format as 2.0) ``<ChecksumType>`` names the hash, each range has a
  ``chksum`` attribute and ``BmapFileChecksum`` holds the hash of the bmap file itself computed
  with that field's value replaced by as many "0" characters;
* a range's checksum covers the image bytes of its blocks, the last block cut at ImageSize.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

from .errors import ProvisionError

_HASHES = {"sha256": 64, "sha1": 40}
_RANGE = re.compile(r"\s*(\d{1,19})\s*(?:-\s*(\d{1,19})\s*)?")
_MAX_BMAP_BYTES = 64 << 20


class BmapError(ProvisionError):
    """``bmap_invalid``: the file is not a usable bmap; ``bmap_mismatch``: it does not describe
    this image (size or a range's checksum)."""

    code = "bmap_mismatch"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


@dataclass(frozen=True)
class BmapRange:
    first: int
    """First block, inclusive."""
    last: int
    """Last block, inclusive."""
    checksum: str | None
    """Lower-case hex digest of the range's bytes, None in formats without checksums."""


@dataclass(frozen=True)
class Bmap:
    version: str
    image_size: int
    block_size: int
    blocks_count: int
    mapped_blocks_count: int
    checksum_type: str | None
    """"sha256", "sha1" or None (format 1.0-1.2)."""
    ranges: tuple[BmapRange, ...]

    def byte_ranges(self) -> list[tuple[int, int, str | None]]:
        """(start, end, checksum) in bytes, end exclusive and cut at the image size."""
        return [(r.first * self.block_size,
                 min((r.last + 1) * self.block_size, self.image_size), r.checksum)
                for r in self.ranges]

    @property
    def mapped_size(self) -> int:
        """Bytes inside the mapped ranges (what a bmap write writes)."""
        return sum(end - start for start, end, _ in self.byte_ranges())

    def check_image_size(self, image_size: int | None) -> None:
        """Raise ``bmap_mismatch`` unless the bmap was made for an image of ``image_size``."""
        if image_size is not None and image_size != self.image_size:
            raise BmapError(f"the bmap describes an image of {self.image_size} bytes, the image "
                            f"has {image_size}")


def load_bmap(path: Path | str) -> Bmap:
    """Read and validate a bmap file (raises :class:`BmapError`, code ``bmap_invalid``)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_BMAP_BYTES + 1)
    except OSError as error:
        raise BmapError(f"{path}: {error.strerror or error}", code="bmap_invalid") from None
    if len(data) > _MAX_BMAP_BYTES:
        raise BmapError(f"{path.name}: too large for a bmap file", code="bmap_invalid")
    return parse_bmap(data, name=path.name)


def parse_bmap(data: bytes, *, name: str = "bmap") -> Bmap:
    """Parse and validate the bytes of a bmap file."""
    try:
        return _parse(data)
    except BmapError as error:
        raise BmapError(f"{name}: {error}", code=error.code) from None


def _parse(data: bytes) -> Bmap:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise _invalid("document type declarations are not allowed")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise _invalid(f"not valid XML ({error})") from None
    if root.tag != "bmap":
        raise _invalid(f"the root element is <{root.tag}>, not <bmap>")
    version = (root.get("version") or "").strip()
    major, minor = _version(version)
    checksum_type, attribute, file_field = _checksum_scheme(root, major, minor)
    bmap = Bmap(version=version, image_size=_number(root, "ImageSize"),
                block_size=_number(root, "BlockSize"), blocks_count=_number(root, "BlocksCount"),
                mapped_blocks_count=_number(root, "MappedBlocksCount"),
                checksum_type=checksum_type, ranges=_ranges(root, attribute, checksum_type))
    _check_consistent(bmap)
    if file_field is not None and checksum_type is not None:
        _check_file_checksum(data, root, file_field, checksum_type)
    return bmap


def _version(version: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)", version)
    if match is None:
        raise _invalid(f"bmap version {version!r} is not understood")
    major, minor = int(match.group(1)), int(match.group(2))
    if major not in (1, 2):
        raise _invalid(f"bmap format version {version} is not supported (1.x and 2.x are)")
    return major, minor


def _checksum_scheme(root: ElementTree.Element, major: int,
                     minor: int) -> tuple[str | None, str | None, str | None]:
    """(checksum type, Range attribute, field holding the bmap file's own checksum)."""
    if major == 2 or (major == 1 and minor >= 4):
        kind = _text(root, "ChecksumType").lower()
        if kind not in _HASHES:
            raise _invalid(f"checksum type {kind!r} is not supported (sha256 and sha1 are)")
        return kind, "chksum", "BmapFileChecksum"
    if minor == 3:
        return "sha1", "sha1", "BmapFileSHA1"
    return None, None, None


def _ranges(root: ElementTree.Element, attribute: str | None,
            checksum_type: str | None) -> tuple[BmapRange, ...]:
    block_map = root.find("BlockMap")
    if block_map is None:
        raise _invalid("no <BlockMap> element")
    ranges = []
    for element in block_map.findall("Range"):
        match = _RANGE.fullmatch(element.text or "")
        if match is None:
            raise _invalid(f"bad block range {element.text!r}")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        checksum = element.get(attribute) if attribute else None
        if checksum is not None:
            checksum = checksum.strip().lower()
            if checksum_type is None or not re.fullmatch(f"[0-9a-f]{{{_HASHES[checksum_type]}}}",
                                                         checksum):
                raise _invalid(f"bad {checksum_type} checksum on range {first}-{last}")
        ranges.append(BmapRange(first, last, checksum))
    return tuple(ranges)


def _check_consistent(bmap: Bmap) -> None:
    if bmap.block_size <= 0 or bmap.block_size % 512:
        raise _invalid(f"block size {bmap.block_size} is not a positive multiple of 512")
    if bmap.blocks_count != -(-bmap.image_size // bmap.block_size):
        raise _invalid(f"{bmap.blocks_count} blocks of {bmap.block_size} bytes do not make an "
                       f"image of {bmap.image_size} bytes")
    previous = -1
    for r in bmap.ranges:
        if r.first > r.last or r.first <= previous or r.last >= bmap.blocks_count:
            raise _invalid(f"block range {r.first}-{r.last} is out of order, overlapping or "
                           f"past the last block ({bmap.blocks_count - 1})")
        previous = r.last
    mapped = sum(r.last - r.first + 1 for r in bmap.ranges)
    if mapped != bmap.mapped_blocks_count:
        raise _invalid(f"the ranges hold {mapped} blocks, MappedBlocksCount says "
                       f"{bmap.mapped_blocks_count}")


def _check_file_checksum(data: bytes, root: ElementTree.Element, field: str, kind: str) -> None:
    element = root.find(field)
    if element is None:
        return
    expected = (element.text or "").strip().lower()
    if len(expected) != _HASHES[kind] or expected.encode() not in data.lower():
        raise _invalid(f"bad {field}")
    position = data.lower().index(expected.encode())
    blanked = data[:position] + b"0" * len(expected) + data[position + len(expected):]
    if hashlib.new(kind, blanked).hexdigest() != expected:
        raise _invalid(f"{field} does not match the file: it was changed or damaged")


def _number(root: ElementTree.Element, tag: str) -> int:
    text = _text(root, tag)
    if not text.isdigit() or len(text) > 19:
        raise _invalid(f"<{tag}> is not a number: {text!r}")
    return int(text)


def _text(root: ElementTree.Element, tag: str) -> str:
    element = root.find(tag)
    if element is None:
        raise _invalid(f"no <{tag}> element")
    return (element.text or "").strip()


def _invalid(message: str) -> BmapError:
    return BmapError(message, code="bmap_invalid")
