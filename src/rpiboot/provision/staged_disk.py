"""Edits to a disk staged in memory, written in one go and recorded for verify.

Reads go through to the file descriptor (``os.pread``) with the staged
blocks laid over them; ``write`` only stages. ``commit`` writes every staged
512-byte block, merged into contiguous ranges, fsyncs, and returns each
range's offset, length and sha256, so a verify step can read them back.
Nothing reaches the disk before ``commit``: an edit that fails half-way
leaves the disk untouched.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

from .errors import ProvisionError

BLOCK = 512


class DiskIOError(ProvisionError):
    """Reading or writing the disk failed."""

    code = "customise_failed"


class WrittenRange(NamedTuple):
    offset: int
    length: int
    sha256: str


class StagedDisk:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._staged: dict[int, bytes] = {}

    def read(self, offset: int, length: int) -> bytes:
        try:
            data = bytearray(os.pread(self.fd, length, offset))
        except OSError as exc:
            raise DiskIOError(f"cannot read the disk at offset {offset}: {exc.strerror or exc}") from exc
        if len(data) != length:
            raise DiskIOError(f"short read at offset {offset}: disk or image truncated")
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        if self._staged and length:
            indices = (range(first, last + 1) if last - first < len(self._staged)
                       else [i for i in self._staged if first <= i <= last])
            for index in indices:
                block = self._staged.get(index)
                if block is not None:
                    _lay_over(data, offset, index * BLOCK, block)
        return bytes(data)

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        for index in range(offset // BLOCK, -(-end // BLOCK)):
            start = index * BLOCK
            if offset <= start and start + BLOCK <= end:
                self._staged[index] = bytes(data[start - offset:start - offset + BLOCK])
                continue
            block = bytearray(self.read(start, BLOCK))
            lo, hi = max(offset, start), min(end, start + BLOCK)
            block[lo - start:hi - start] = data[lo - offset:hi - offset]
            self._staged[index] = bytes(block)

    @property
    def pending(self) -> int:
        """Bytes staged and not yet written."""
        return len(self._staged) * BLOCK

    def commit(self) -> list[WrittenRange]:
        ranges = []
        for first, blocks in _runs(self._staged):
            data = b"".join(blocks)
            self._pwrite_all(first * BLOCK, data)
            ranges.append(WrittenRange(first * BLOCK, len(data), hashlib.sha256(data).hexdigest()))
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise DiskIOError(f"cannot flush the disk: {exc.strerror or exc}") from exc
        self._staged.clear()
        return ranges

    def _pwrite_all(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                done = os.pwrite(self.fd, view, offset)
            except OSError as exc:
                raise DiskIOError(
                    f"cannot write the disk at offset {offset}: {exc.strerror or exc}") from exc
            if done <= 0:
                raise DiskIOError(f"the disk accepted no bytes at offset {offset}")
            view, offset = view[done:], offset + done


def _lay_over(data: bytearray, data_offset: int, block_offset: int, block: bytes) -> None:
    lo = max(data_offset, block_offset)
    hi = min(data_offset + len(data), block_offset + len(block))
    data[lo - data_offset:hi - data_offset] = block[lo - block_offset:hi - block_offset]


def _runs(staged: dict[int, bytes]) -> list[tuple[int, list[bytes]]]:
    runs: list[tuple[int, list[bytes]]] = []
    for index in sorted(staged):
        if runs and runs[-1][0] + len(runs[-1][1]) == index:
            runs[-1][1].append(staged[index])
        else:
            runs.append((index, [staged[index]]))
    return runs
