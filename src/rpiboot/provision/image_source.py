"""OS images as a stream of decompressed chunks: raw, xz, gzip, bzip2, zstd, or a zip holding one
image, recognised by their first bytes (not by the file name). Nothing is decompressed to a
temporary file; memory stays at a few chunks whatever the image size.

:class:`ImageSource` gives one pass over the decompressed image in chunks of exactly
``chunk_size`` bytes (the last one shorter) and the image's sha256 once the pass is complete.
Every way a file can be damaged (bad CRC, truncated, trailing garbage, a size that does not match
its own index) ends in :class:`ImageError` with a one-line message.

The size of the decompressed image is known up front for raw files and zip members (stored in
the directory), for xz (from the index at the end of each stream) and for zstd when every frame
records its content size; gzip and bzip2 do not record it (gzip's ISIZE is modulo 4 GiB).
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Generator, Iterable, Iterator, Protocol

from .errors import ProvisionError
from .fan_out import FanOut, Feed, fan_out

__all__ = ["FORMATS", "FanOut", "Feed", "ImageError", "ImageInfo", "ImageSource", "check_image",
           "detect_format", "exact_chunks", "fan_out", "open_image"]

DEFAULT_CHUNK_SIZE = 4 << 20
_READ_SIZE = 1 << 20
_MAGIC = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b", "gz"),
    (b"BZh", "bz2"),
    (b"\x28\xb5\x2f\xfd", "zst"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
)
FORMATS = ("raw", "xz", "gz", "bz2", "zst", "zip")
_COMPRESSED_SUFFIXES = {".xz": "xz", ".gz": "gz", ".bz2": "bz2", ".zst": "zst", ".zip": "zip"}


class ImageError(ProvisionError):
    """The image cannot be used: code ``image_corrupt``, ``image_unsupported`` or
    ``image_unreadable``."""

    code = "image_corrupt"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    format: str
    """One of FORMATS."""
    size: int | None
    """Decompressed size when known without decompressing."""
    member: str | None = None
    """The image's name inside a zip."""


def detect_format(head: bytes) -> str:
    """The container format from the first bytes of a file ("raw" when none is recognised)."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "raw"


def check_image(path: Path | str) -> ImageInfo:
    """The cheap checks ``check`` makes: readable, format, one image in a zip, structure of a
    zstd file, size when known, and that the first decompressed bytes are not compressed again
    (an ``.img.xz.gz``). Corrupt data further in is found while writing."""
    info = _inspect(Path(path))
    if info.format != "raw":
        first = ImageSource(info, 4096).chunks()
        try:
            next(first, b"")
        finally:
            first.close()
    return info


def _inspect(path: Path) -> ImageInfo:
    try:
        with open(path, "rb") as handle:
            file_size = os.fstat(handle.fileno()).st_size
            if file_size == 0:
                raise ImageError(f"{path.name}: the image file is empty")
            form = detect_format(handle.read(8))
            named = _COMPRESSED_SUFFIXES.get(path.suffix.lower())
            if named is not None and form == "raw":
                # e.g. an HTML error page saved as .img.xz: never write it to a board as raw
                raise ImageError(f"{path.name}: named .{named} but is not {named} data "
                                 "(a failed or truncated download?)")
            if form == "zip":
                member = _zip_member(handle, path)
                return ImageInfo(path, form, member.file_size, member.filename)
            size: int | None = None
            if form == "raw":
                size = file_size
            elif form == "xz":
                size = _xz_size(handle, file_size)
                if size is None:  # every complete xz file ends in an index and a footer
                    raise ImageError(f"{path.name}: corrupt xz data (truncated or damaged: no "
                                     "valid index at the end of the file)")
            elif form == "zst":
                size = _zstd_size(handle, file_size, path)
            return ImageInfo(path, form, size)
    except OSError as error:
        raise ImageError(f"{path}: {error.strerror or error}", code="image_unreadable") from None


def open_image(path: Path | str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> "ImageSource":
    """Check ``path`` (see :func:`check_image`) and return its stream."""
    if chunk_size <= 0 or chunk_size % 4096:
        raise ValueError("chunk_size must be a positive multiple of 4096")
    return ImageSource(check_image(path), chunk_size)


class ImageSource:
    """One image, decompressed as a stream. Each call of :meth:`chunks` is a new pass."""

    def __init__(self, info: ImageInfo, chunk_size: int = DEFAULT_CHUNK_SIZE):
        self.info = info
        self.path = info.path
        self.format = info.format
        self.size = info.size
        self.chunk_size = chunk_size
        self.sha256: str | None = None
        """sha256 of the decompressed image; set when a pass of :meth:`chunks` completes."""
        self.bytes_read = 0
        """Decompressed bytes delivered so far in the current pass."""

    def chunks(self) -> Generator[bytes, None, None]:
        """The decompressed image in chunks of ``chunk_size`` bytes (the last may be shorter)."""
        self.sha256, self.bytes_read = None, 0
        digest = hashlib.sha256()
        try:
            with open(self.path, "rb") as handle:
                for chunk in exact_chunks(self._pieces(handle), self.chunk_size):
                    if self.bytes_read == 0:
                        self._refuse_nested(chunk)
                    digest.update(chunk)
                    self.bytes_read += len(chunk)
                    if self.size is not None and self.bytes_read > self.size:
                        raise ImageError(f"{self.path.name}: more data than the {self.size} bytes "
                                         "its header declares")
                    yield chunk
        except ImageError:
            raise
        except OSError as error:
            raise ImageError(f"{self.path.name}: {_reason(error)}",
                             code="image_corrupt" if _is_corruption(error)
                             else "image_unreadable") from None
        except (lzma.LZMAError, zlib.error, EOFError, zipfile.BadZipFile, ValueError) as error:
            raise ImageError(f"{self.path.name}: corrupt {self.format} data ({error})") from None
        if self.bytes_read == 0:
            raise ImageError(f"{self.path.name}: the image is empty once decompressed")
        if self.size is not None and self.bytes_read != self.size:
            raise ImageError(f"{self.path.name}: {self.bytes_read} bytes of data, but its header "
                             f"declares {self.size}")
        self.sha256 = digest.hexdigest()

    def _refuse_nested(self, first: bytes) -> None:
        inner = detect_format(first[:8])
        if self.format != "raw" and inner != "raw":
            raise ImageError(f"{self.path.name}: the {self.format} file holds {inner} data, not "
                             "a disk image; decompress it to one level first",
                             code="image_unsupported")

    def _pieces(self, handle: BinaryIO) -> Iterator[bytes]:
        limit = self.chunk_size
        if self.format == "raw":
            return iter(lambda: handle.read(limit), b"")
        if self.format == "xz":
            return _streams(handle, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), limit)
        if self.format == "gz":
            return _streams(handle, _GzipMember, limit)
        if self.format == "bz2":
            return _streams(handle, bz2.BZ2Decompressor, limit)
        if self.format == "zst":
            return _zstd_pieces(handle, limit)
        return _zip_pieces(handle, self.path, limit)


def exact_chunks(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Regroup ``pieces`` into chunks of exactly ``size`` bytes (the last may be shorter);
    pieces that already have that size pass through without a copy."""
    pending = bytearray()
    for piece in pieces:
        if not pending and len(piece) == size:
            yield piece
            continue
        pending += piece
        while len(pending) >= size:
            with memoryview(pending) as view:
                chunk = bytes(view[:size])
            del pending[:size]
            yield chunk
    if pending:
        yield bytes(pending)


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _GzipMember:
    """zlib's gzip decoder with the interface of lzma's and bz2's decompressors."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(wbits=31)

    @property
    def eof(self) -> bool:
        return self._zlib.eof

    @property
    def needs_input(self) -> bool:
        return not self._zlib.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        return self._zlib.unused_data

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        tail = self._zlib.unconsumed_tail
        return self._zlib.decompress(tail + data if tail else data, max(max_length, 0))


def _streams(handle: BinaryIO, new: Callable[[], _Decompressor], limit: int) -> Iterator[bytes]:
    """Decompress concatenated streams (as ``xz``/``gzip``/``bzip2`` write and read them); zero
    padding between or after streams is allowed, anything else must be another valid stream."""
    pending = b""
    while True:
        decompressor = new()
        while not decompressor.eof:
            data = b""
            if decompressor.needs_input:
                data, pending = pending or handle.read(_READ_SIZE), b""
                if not data:
                    raise EOFError("the file is truncated")
            output = decompressor.decompress(data, limit)
            if output:
                yield output
        pending = decompressor.unused_data
        while not (pending := pending.lstrip(b"\0")):
            pending = handle.read(_READ_SIZE)
            if not pending:
                return


def _zstd_pieces(handle: BinaryIO, limit: int) -> Iterator[bytes]:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(handle, read_size=_READ_SIZE,
                                                        read_across_frames=True,
                                                        closefd=False)
    try:
        while piece := reader.read(limit):
            yield piece
    except zstandard.ZstdError as error:
        raise ValueError(str(error)) from None


def _zip_member(handle: BinaryIO, path: Path) -> zipfile.ZipInfo:
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, EOFError) as error:
        raise ImageError(f"{path.name}: not a readable zip file ({error})") from None
    members = [m for m in archive.infolist()
               if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
    if len(members) != 1:
        names = ", ".join(m.filename for m in members[:5]) + (", ..." if len(members) > 5 else "")
        found = f"{len(members)} files ({names})" if members else "no file"
        raise ImageError(f"{path.name}: the zip holds {found}; exactly one image expected",
                         code="image_unsupported")
    member = members[0]
    if member.flag_bits & 0x1:
        raise ImageError(f"{path.name}: {member.filename} is encrypted", code="image_unsupported")
    if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                    zipfile.ZIP_LZMA):
        raise ImageError(f"{path.name}: {member.filename} uses zip compression method "
                         f"{member.compress_type}, which is not supported",
                         code="image_unsupported")
    return member


def _zip_pieces(handle: BinaryIO, path: Path, limit: int) -> Iterator[bytes]:
    member = _zip_member(handle, path)
    with zipfile.ZipFile(handle).open(member) as stream:
        while piece := stream.read(limit):
            yield piece


def _xz_size(handle: BinaryIO, file_size: int) -> int | None:
    """Sum of the uncompressed sizes in the index of every stream, walking back from the end;
    None when the file's tail is not a well-formed xz footer and index (a damaged file)."""
    position, total = file_size, 0
    while position > 0:
        while position >= 4 and _read_at(handle, position - 4, 4) == b"\0\0\0\0":
            position -= 4
        footer = _read_at(handle, position - 12, 12) if position >= 24 else b""
        if len(footer) != 12 or footer[10:] != b"YZ" or \
                zlib.crc32(footer[4:10]) != struct.unpack_from("<I", footer)[0]:
            return None
        index_size = (struct.unpack_from("<I", footer, 4)[0] + 1) * 4
        index_start = position - 12 - index_size
        parsed = _xz_index(_read_at(handle, index_start, index_size)) if index_start >= 12 \
            else None
        if parsed is None:
            return None
        uncompressed, blocks = parsed
        stream_start = index_start - blocks - 12
        if stream_start < 0 or _read_at(handle, stream_start, 6) != b"\xfd7zXZ\x00":
            return None
        total += uncompressed
        position = stream_start
    return total


def _xz_index(index: bytes) -> tuple[int, int] | None:
    """(total uncompressed size, total padded block size) from one xz index."""
    if len(index) < 8 or index[0] != 0 or \
            zlib.crc32(index[:-4]) != struct.unpack_from("<I", index, len(index) - 4)[0]:
        return None
    offset = 1
    values = []
    try:
        count, offset = _varint(index, offset)
        for _ in range(2 * count):
            value, offset = _varint(index, offset)
            values.append(value)
    except IndexError:
        return None
    uncompressed = sum(values[1::2])
    blocks = sum((unpadded + 3) & ~3 for unpadded in values[0::2])
    return uncompressed, blocks


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 63, 7):
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
    raise IndexError("xz varint too long")


_ZSTD_MAGIC = 0xFD2FB528


def _zstd_size(handle: BinaryIO, file_size: int, path: Path) -> int | None:
    """Walk the frames and block headers of a zstd file (no decompression): a truncated file is
    an error here, because zstandard's stream reader would end quietly at the cut. Returns the
    sum of the frames' content sizes, or None when some frame does not record it."""
    position = 0
    total: int | None = 0
    while position < file_size:
        header = _read_at(handle, position, 18)
        if len(header) < 8:
            raise ImageError(f"{path.name}: zstd data is truncated")
        magic = struct.unpack_from("<I", header)[0]
        if magic & 0xFFFFFFF0 == 0x184D2A50:
            position += 8 + struct.unpack_from("<I", header, 4)[0]
            continue
        if magic != _ZSTD_MAGIC:
            raise ImageError(f"{path.name}: not a zstd frame at byte {position}")
        content, header_length, checksum = _zstd_frame_header(header)
        position = _zstd_skip_blocks(handle, position + header_length, path) + 4 * checksum
        total = None if total is None or content is None else total + content
    if position > file_size:
        raise ImageError(f"{path.name}: zstd data is truncated")
    return total


def _zstd_frame_header(header: bytes) -> tuple[int | None, int, bool]:
    descriptor = header[4]
    size_flag, single_segment = descriptor >> 6, bool(descriptor & 0x20)
    checksum, dictionary_flag = bool(descriptor & 0x04), descriptor & 0x03
    offset = 5 + (not single_segment) + (0, 1, 2, 4)[dictionary_flag]
    size_length = (1 if single_segment else 0, 2, 4, 8)[size_flag]
    if size_length == 0:
        return None, offset, checksum
    content = int.from_bytes(header[offset:offset + size_length], "little")
    return content + (256 if size_length == 2 else 0), offset + size_length, checksum


def _zstd_skip_blocks(handle: BinaryIO, position: int, path: Path) -> int:
    while True:
        raw = _read_at(handle, position, 3)
        if len(raw) < 3:
            raise ImageError(f"{path.name}: zstd data is truncated")
        block = int.from_bytes(raw, "little")
        kind, size = (block >> 1) & 3, block >> 3
        if kind == 3:
            raise ImageError(f"{path.name}: corrupt zstd block header at byte {position}")
        position += 3 + (1 if kind == 1 else size)
        if block & 1:
            return position


def _read_at(handle: BinaryIO, position: int, length: int) -> bytes:
    handle.seek(position)
    return handle.read(length)


def _is_corruption(error: OSError) -> bool:
    # bz2 reports a bad CRC or a broken stream as OSError("Invalid data stream")
    return error.errno is None


def _reason(error: OSError) -> str:
    return error.strerror or (f"corrupt data ({error})" if _is_corruption(error) else str(error))
