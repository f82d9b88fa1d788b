"""Test images for the provisioning write path, built with the standard library (and zstandard).

Images mix random data, zeros and text, so compressors and bmaps have something to work with and
a misplaced byte is always visible.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import random
import zipfile
from pathlib import Path

import zstandard


def image_bytes(size: int, seed: int = 1) -> bytes:
    """``size`` bytes: random 4 KiB blocks, zero blocks and a tail that is not block-aligned."""
    rng = random.Random(seed)
    blocks = []
    for index in range(-(-size // 4096)):
        kind = rng.random()
        if kind < 0.4:
            blocks.append(rng.randbytes(4096))
        elif kind < 0.7:
            blocks.append(bytes(4096))
        else:
            blocks.append((f"block {index} ".encode() * 512)[:4096])
    return b"".join(blocks)[:size]


def write_image_file(directory: Path, size: int, seed: int = 1, name: str = "os.img") -> Path:
    path = directory / name
    path.write_bytes(image_bytes(size, seed))
    return path


def compress(raw: Path, form: str, directory: Path | None = None) -> Path:
    """``raw`` compressed as ``form`` ("xz", "gz", "bz2", "zst", "zip") next to it."""
    data = raw.read_bytes()
    target = (directory or raw.parent) / f"{raw.name}.{form}"
    if form == "xz":
        target.write_bytes(lzma.compress(data, preset=0))
    elif form == "gz":
        target.write_bytes(gzip.compress(data, compresslevel=1))
    elif form == "bz2":
        target.write_bytes(bz2.compress(data, compresslevel=1))
    elif form == "zst":
        target.write_bytes(zstandard.ZstdCompressor(write_checksum=True,
                                                    write_content_size=True).compress(data))
    elif form == "zip":
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(raw.name, data)
    else:
        raise ValueError(form)
    return target


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte in place (offset may be negative: from the end)."""
    with open(path, "r+b") as handle:
        handle.seek(offset, os.SEEK_SET if offset >= 0 else os.SEEK_END)
        position = handle.tell()
        value = handle.read(1)[0]
        handle.seek(position)
        handle.write(bytes([value ^ 0xFF]))


def truncate_to(path: Path, fraction: float) -> None:
    size = path.stat().st_size
    os.truncate(path, int(size * fraction))
