"""Read back what the writer wrote, bypassing the page cache, and compare the sha256 of each
range with the one recorded while writing.

The disk is read with O_DIRECT through page-aligned buffers (an anonymous mmap), so the data
comes from the device, not from the copy the kernel still holds from the write. Where O_DIRECT is
refused (tmpfs, some FUSE file systems), the file is synced and its cached pages dropped with
posix_fadvise(POSIX_FADV_DONTNEED) before reading; the result names the method used.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .errors import ProvisionError

_ALIGN = 4096
_BUFFER = 4 << 20
Progress = Callable[[int, "int | None"], None]
Range = Sequence  # (offset, length, sha256) - writer.WrittenRange or a plain tuple


class VerifyError(ProvisionError):
    """What was read back differs from what was written (``verify_mismatch``), or the disk could
    not be read back (``verify_failed``)."""

    code = "verify_mismatch"

    def __init__(self, message: str, code: str | None = None,
                 result: "VerifyResult | None" = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.result = result


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    method: str
    """"O_DIRECT" or "fadvise"."""
    first_mismatch: int | None
    """Disk offset of the first range that differs (None when all match)."""
    bytes_read: int
    seconds: float = 0.0


def verify_ranges(path_or_fd: Path | str | int, ranges: Iterable[Range], *,
                  progress: Progress | None = None) -> VerifyResult:
    """Read every (offset, length, sha256) range back and compare; returns the result when all
    match, raises :class:`VerifyError` (with ``.result``) naming the first range that differs."""
    wanted = sorted((int(r[0]), int(r[1]), str(r[2])) for r in ranges)
    total = sum(length for _, length, _ in wanted)
    started = time.monotonic()
    fd, method = _open_uncached(path_or_fd)
    try:
        reader = _Reader(fd, method)
        done = 0
        for offset, length, expected in wanted:
            actual = reader.sha256(offset, length)
            done += length
            if actual != expected:
                result = VerifyResult(False, reader.method, offset, done,
                                      time.monotonic() - started)
                raise VerifyError(f"read-back differs from what was written in the {length} "
                                  f"bytes at offset {offset} (verified with {reader.method})",
                                  result=result)
            if progress is not None:
                progress(done, total)
        return VerifyResult(True, reader.method, None, done, time.monotonic() - started)
    finally:
        os.close(fd)


def _open_uncached(path_or_fd: Path | str | int) -> tuple[int, str]:
    """A new read-only descriptor, with O_DIRECT when the file system allows it."""
    path = f"/proc/self/fd/{path_or_fd}" if isinstance(path_or_fd, int) else os.fspath(path_or_fd)
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC | direct), "O_DIRECT"
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise _unreadable(error) from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise _unreadable(error) from None
    _drop_cache(fd)
    return fd, "fadvise"


def _drop_cache(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:
        pass  # a read-only descriptor of some files cannot be synced; the writer already did
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


class _Reader:
    """Reads aligned spans into a page-aligned buffer and hashes the wanted bytes."""

    def __init__(self, fd: int, method: str):
        self.fd = fd
        self.method = method
        self.buffer = mmap.mmap(-1, _BUFFER)

    def sha256(self, offset: int, length: int) -> str:
        digest = hashlib.sha256()
        position, end = offset, offset + length
        while position < end:
            start = position - position % _ALIGN
            span = min(_BUFFER, -(-(end - start) // _ALIGN) * _ALIGN)
            got = self._read(start, span)
            usable = min(got, end - start)
            if usable <= position - start:
                raise VerifyError(f"the disk ends before byte {end} while reading back",
                                  code="verify_failed")
            with memoryview(self.buffer) as view:
                digest.update(view[position - start:usable])
            position = start + usable
        return digest.hexdigest()

    def _read(self, offset: int, length: int) -> int:
        with memoryview(self.buffer) as view:
            target = view[:length]
            try:
                return os.preadv(self.fd, [target], offset)
            except OSError as error:
                if error.errno == errno.EINVAL and self.method == "O_DIRECT":
                    self._fall_back()
                    return os.preadv(self.fd, [target], offset)
                raise _unreadable(error) from None
            finally:
                target.release()

    def _fall_back(self) -> None:
        """O_DIRECT was accepted at open but reads are refused: reopen without it."""
        fd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        os.dup2(fd, self.fd)
        os.close(fd)
        _drop_cache(self.fd)
        self.method = "fadvise"


def _unreadable(error: OSError) -> VerifyError:
    return VerifyError(f"cannot read the disk back: {error.strerror or error}",
                       code="verify_failed")
