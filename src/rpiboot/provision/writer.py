"""Write an image stream to a disk: size checked before the first byte, large aligned writes,
only the mapped ranges when a bmap is given (their checksums checked on the way), a record of
every range written (offset, length, sha256) for :mod:`.verify`, and fsync at the end.

A disk that disappears under the write (EIO, ENODEV, ENXIO) is ``device_gone``; any other write
error is ``write_failed``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple

from .bmap import Bmap, BmapError
from .errors import ProvisionError
from .fan_out import SharedDigests
from .image_source import DEFAULT_CHUNK_SIZE, exact_chunks

Progress = Callable[[int, "int | None"], None]
_GONE = {errno.EIO, errno.ENODEV, errno.ENXIO, errno.ESHUTDOWN, errno.ENOMEDIUM}
DEFAULT_SYNC_EVERY = 256 << 20


class ImageTooLargeError(ProvisionError):
    """The image does not fit on the disk (refused before writing when the size is known)."""

    code = "image_too_large"


class WriteError(ProvisionError):
    """``write_failed``, or ``device_gone`` when the disk went away under the write."""

    code = "write_failed"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class WrittenRange(NamedTuple):
    offset: int
    length: int
    sha256: str


@dataclass
class WriteResult:
    bytes_written: int
    """Bytes written to the disk (the mapped bytes with a bmap)."""
    image_size: int
    """Bytes of image consumed from the stream."""
    image_sha256: str | None
    """sha256 of the whole image stream; None when ``hash_image=False``."""
    ranges: list[WrittenRange] = field(default_factory=list)
    """What :func:`~.verify.verify_ranges` reads back."""
    seconds: float = 0.0


def write_image(chunks: Iterable[bytes], fd: int, *, disk_size: int, image_size: int | None,
                bmap: Bmap | None = None, progress: Progress | None = None,
                hash_image: bool = True, block_size: int = DEFAULT_CHUNK_SIZE,
                sync_every: int | None = DEFAULT_SYNC_EVERY,
                digests: SharedDigests | None = None) -> WriteResult:
    """Write the image ``chunks`` to ``fd`` from offset 0.

    ``progress(bytes_written, total)`` is called after every block; ``total`` is the bytes this
    write will put on the disk when known (the image size, or the bmap's mapped size).
    ``hash_image=False`` skips the whole-image sha256 (a fan-out takes it from the source once).
    Every ``sync_every`` bytes the data is flushed to the disk, so progress and rate follow the
    disk rather than the page cache. The sha256 of each written range is shared between the
    writers of one fan-out (``chunks`` being a :class:`~.fan_out.Feed`), or with ``digests``.
    """
    _refuse_too_large(disk_size, image_size, bmap)
    total = bmap.mapped_size if bmap is not None else image_size
    plan = _RangePlan(bmap)
    shared = digests or getattr(chunks, "digests", None)
    writer = _Writer(fd, disk_size, progress, total, sync_every, shared or _OwnDigests())
    digest = hashlib.sha256() if hash_image else None
    started = time.monotonic()
    offset = 0
    try:
        for chunk in exact_chunks(chunks, block_size):
            if digest is not None:
                digest.update(chunk)
            for start, piece in plan.pieces(memoryview(chunk), offset):
                writer.write(piece, start)
            offset += len(chunk)
        plan.finish(offset)
        writer.flush()
    except ProvisionError as error:
        error.bytes_written = writer.written  # type: ignore[attr-defined]  # the disk changed
        raise
    return WriteResult(bytes_written=writer.written, image_size=offset,
                       image_sha256=digest.hexdigest() if digest is not None else None,
                       ranges=writer.ranges, seconds=time.monotonic() - started)


def _refuse_too_large(disk_size: int, image_size: int | None, bmap: Bmap | None) -> None:
    if bmap is not None:
        bmap.check_image_size(image_size)
        image_size = bmap.image_size
    if image_size is not None and image_size > disk_size:
        raise ImageTooLargeError(f"the image ({_size(image_size)}) is larger than the disk "
                                 f"({_size(disk_size)}); nothing was written")


class _RangePlan:
    """Which bytes of each chunk to write; checks the bmap's per-range checksums."""

    def __init__(self, bmap: Bmap | None):
        self.bmap = bmap
        self.ranges = bmap.byte_ranges() if bmap is not None else []
        self.index = 0
        self.hash = self._new_hash()

    def _new_hash(self) -> "hashlib._Hash | None":
        kind = self.bmap.checksum_type if self.bmap is not None else None
        return hashlib.new(kind) if kind else None

    def pieces(self, chunk: memoryview, offset: int) -> Iterator[tuple[int, memoryview]]:
        """(disk offset, bytes) of the parts of ``chunk`` (at ``offset``) to write, in order."""
        end = offset + len(chunk)
        if self.bmap is None:
            yield offset, chunk
            return
        if end > self.bmap.image_size:
            raise BmapError(f"the image is longer than the {self.bmap.image_size} bytes the "
                            "bmap describes")
        while self.index < len(self.ranges):
            first, last, checksum = self.ranges[self.index]
            if first >= end:
                return
            piece = chunk[max(first, offset) - offset:min(last, end) - offset]
            if self.hash is not None:
                self.hash.update(piece)
            yield max(first, offset), piece
            if last > end:
                return
            self._range_done(first, last, checksum)

    def _range_done(self, first: int, last: int, checksum: str | None) -> None:
        if self.hash is not None and checksum is not None and self.hash.hexdigest() != checksum:
            assert self.bmap is not None
            raise BmapError(f"bytes {first}-{last - 1} of the image do not match the bmap's "
                            f"{self.bmap.checksum_type} checksum")
        self.index += 1
        self.hash = self._new_hash()

    def finish(self, image_size: int) -> None:
        if self.bmap is not None and image_size != self.bmap.image_size:
            raise BmapError(f"the image has {image_size} bytes, the bmap describes "
                            f"{self.bmap.image_size}")


class _OwnDigests:
    def sha256(self, offset: int, data: memoryview) -> str:
        return hashlib.sha256(data).hexdigest()


class _Writer:
    def __init__(self, fd: int, disk_size: int, progress: Progress | None, total: int | None,
                 sync_every: int | None, digests: "SharedDigests | _OwnDigests"):
        self.digests = digests
        self.fd = fd
        self.disk_size = disk_size
        self.progress = progress
        self.total = total
        self.sync_every = sync_every
        self.written = 0
        self.unsynced = 0
        self.ranges: list[WrittenRange] = []

    def write(self, data: memoryview, offset: int) -> None:
        if offset + len(data) > self.disk_size:
            raise ImageTooLargeError(f"the image is larger than the disk ({_size(self.disk_size)}"
                                     f"); the write stopped at the end of the disk")
        done = 0
        while done < len(data):
            try:
                done += os.pwrite(self.fd, data[done:], offset + done)
            except OSError as error:
                raise _write_error(error, offset + done) from None
        self.ranges.append(WrittenRange(offset, len(data), self.digests.sha256(offset, data)))
        self.written += len(data)
        self.unsynced += len(data)
        if self.sync_every and self.unsynced >= self.sync_every:
            self._sync()
        if self.progress is not None:
            self.progress(self.written, self.total)

    def flush(self) -> None:
        self._sync()

    def _sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as error:
            if error.errno != errno.EINVAL:  # not syncable (a pipe in tests); nothing to flush
                raise _write_error(error, None) from None
        self.unsynced = 0


def _write_error(error: OSError, offset: int | None) -> WriteError:
    where = f" at byte {offset}" if offset is not None else " while flushing"
    if error.errno in _GONE:
        return WriteError(f"the disk went away{where} ({error.strerror})", code="device_gone")
    return WriteError(f"writing failed{where}: {error.strerror or error}")


def _size(value: int) -> str:
    return f"{value} bytes, {value / 1e9:.2f} GB"
