"""write_image and verify_ranges: sizes, bmaps, vanishing disks, read-back."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpiboot.provision import writer as writer_module
from rpiboot.provision.bmap import BmapError, parse_bmap
from rpiboot.provision.image_source import open_image
from rpiboot.provision.verify import VerifyError, verify_ranges
from rpiboot.provision.writer import ImageTooLargeError, WriteError, write_image

from provision_images import compress, image_bytes
from test_provision_bmap import bmap_xml

BLOCK = 4096


def _disk(tmp_path: Path, size: int, fill: bytes = b"\xee") -> Path:
    path = tmp_path / "disk.bin"
    path.write_bytes(fill * size)
    return path


def _write(disk: Path, chunks, **options):
    fd = os.open(disk, os.O_WRONLY)
    try:
        return write_image(chunks, fd, disk_size=disk.stat().st_size, **options)
    finally:
        os.close(fd)


def test_whole_image_written_hashed_and_verified(tmp_path: Path) -> None:
    image = image_bytes(200_003)
    disk = _disk(tmp_path, 256 << 10)
    calls = []
    result = _write(disk, [image[i:i + 10_000] for i in range(0, len(image), 10_000)],
                    image_size=len(image), block_size=16 * BLOCK,
                    progress=lambda done, total: calls.append((done, total)))
    assert disk.read_bytes()[:len(image)] == image
    assert disk.read_bytes()[len(image):] == b"\xee" * ((256 << 10) - len(image))
    assert result.bytes_written == result.image_size == len(image)
    assert result.image_sha256 == hashlib.sha256(image).hexdigest()
    assert [r.offset for r in result.ranges] == list(range(0, len(image), 16 * BLOCK))
    assert calls[-1] == (len(image), len(image)) and len(calls) == len(result.ranges)
    verified = verify_ranges(disk, result.ranges)
    assert verified.ok and verified.bytes_read == len(image) and verified.first_mismatch is None


def test_image_larger_than_disk_is_refused_before_a_byte(tmp_path: Path) -> None:
    disk = _disk(tmp_path, 8192)
    with pytest.raises(ImageTooLargeError) as caught:
        _write(disk, iter([b"x" * 8193]), image_size=8193)
    assert caught.value.code == "image_too_large" and "nothing was written" in str(caught.value)
    assert disk.read_bytes() == b"\xee" * 8192


def test_unknown_size_stops_at_the_end_of_the_disk(tmp_path: Path) -> None:
    disk = _disk(tmp_path, 3 * BLOCK)
    with pytest.raises(ImageTooLargeError, match="end of the disk"):
        _write(disk, iter([b"x" * BLOCK] * 4), image_size=None, block_size=BLOCK)
    assert disk.read_bytes() == b"x" * 3 * BLOCK  # and the file did not grow


def test_image_of_exactly_the_disk_size_fits(tmp_path: Path) -> None:
    disk = _disk(tmp_path, 3 * BLOCK)
    _write(disk, iter([b"y" * 3 * BLOCK]), image_size=None, block_size=BLOCK)
    assert disk.read_bytes() == b"y" * 3 * BLOCK


def _bmapped_image() -> tuple[bytes, list[tuple[int, int]]]:
    image = image_bytes(40 * BLOCK + 100, seed=7)
    return image, [(0, 2), (10, 10), (17, 30), (39, 40)]


def test_bmap_writes_only_mapped_ranges_and_checks_them(tmp_path: Path) -> None:
    image, ranges = _bmapped_image()
    bmap = parse_bmap(bmap_xml(image, ranges))
    disk = _disk(tmp_path, 64 * BLOCK)
    result = _write(disk, [image], image_size=len(image), bmap=bmap, block_size=8 * BLOCK)
    written = disk.read_bytes()
    for block in range(41):
        start, end = block * BLOCK, min((block + 1) * BLOCK, len(image))
        mapped = any(a <= block <= b for a, b in ranges)
        assert (written[start:end] == image[start:end]) if mapped else \
            written[start:end] == b"\xee" * (end - start)
    assert result.bytes_written == bmap.mapped_size
    assert result.image_sha256 == hashlib.sha256(image).hexdigest()
    assert verify_ranges(disk, result.ranges).ok


def test_bmap_checksum_mismatch_fails_the_write(tmp_path: Path) -> None:
    image, ranges = _bmapped_image()
    bmap = parse_bmap(bmap_xml(image, ranges))
    damaged = bytearray(image)
    damaged[18 * BLOCK + 5] ^= 1
    with pytest.raises(BmapError, match="bytes 69632-126975") as caught:
        _write(_disk(tmp_path, 64 * BLOCK), [bytes(damaged)], image_size=len(image), bmap=bmap)
    assert caught.value.code == "bmap_mismatch"


def test_bmap_for_another_image_size_is_refused_before_writing(tmp_path: Path) -> None:
    image, ranges = _bmapped_image()
    bmap = parse_bmap(bmap_xml(image, ranges))
    disk = _disk(tmp_path, 64 * BLOCK)
    with pytest.raises(BmapError) as caught:
        _write(disk, [image + b"!"], image_size=len(image) + 1, bmap=bmap)
    assert caught.value.code == "bmap_mismatch"
    assert disk.read_bytes() == b"\xee" * 64 * BLOCK


def test_bmap_with_stream_of_unknown_size_that_is_too_long(tmp_path: Path) -> None:
    image, ranges = _bmapped_image()
    bmap = parse_bmap(bmap_xml(image, ranges))
    with pytest.raises(BmapError, match="longer than"):
        _write(_disk(tmp_path, 64 * BLOCK), [image + bytes(BLOCK)], image_size=None, bmap=bmap)


def test_bmap_larger_than_disk_is_refused(tmp_path: Path) -> None:
    image, ranges = _bmapped_image()
    bmap = parse_bmap(bmap_xml(image, ranges))
    with pytest.raises(ImageTooLargeError):
        _write(_disk(tmp_path, 16 * BLOCK), [image], image_size=None, bmap=bmap)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_bmap_write_at_any_chunking(tmp_path_factory: pytest.TempPathFactory,
                                   data: st.DataObject) -> None:
    blocks = data.draw(st.integers(1, 24))
    image = image_bytes(blocks * BLOCK - data.draw(st.integers(0, BLOCK - 1)), seed=blocks)
    cuts = sorted(data.draw(st.sets(st.integers(0, blocks - 1), max_size=10)))
    ranges = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    bmap = parse_bmap(bmap_xml(image, ranges))
    piece = data.draw(st.integers(1, 3 * BLOCK))
    block_size = BLOCK * data.draw(st.integers(1, 5))
    disk = _disk(tmp_path_factory.mktemp("d"), blocks * BLOCK)
    result = _write(disk, [image[i:i + piece] for i in range(0, len(image), piece)],
                    image_size=len(image), bmap=bmap, block_size=block_size)
    expected = bytearray(b"\xee" * (blocks * BLOCK))
    for start, end, _ in bmap.byte_ranges():
        expected[start:end] = image[start:end]
    assert disk.read_bytes() == bytes(expected)
    assert sum(r.length for r in result.ranges) == bmap.mapped_size
    assert verify_ranges(disk, result.ranges).ok


@pytest.mark.skipif(shutil.which("bmaptool") is None, reason="bmaptool not installed")
def test_real_bmaptool_bmap_with_a_compressed_image(tmp_path: Path) -> None:
    from rpiboot.provision.bmap import load_bmap

    raw = tmp_path / "sparse.img"
    with open(raw, "wb") as handle:
        handle.truncate(4 << 20)
        handle.seek(BLOCK * 5)
        handle.write(image_bytes(50_000, seed=3))
        handle.seek(3 << 20)
        handle.write(b"end" * 1000)
    subprocess.run(["bmaptool", "create", "-o", str(tmp_path / "s.bmap"), str(raw)], check=True,
                   capture_output=True)
    source = open_image(compress(raw, "xz"), chunk_size=64 << 10)
    disk = _disk(tmp_path, 5 << 20, b"\x00")
    bmap = load_bmap(tmp_path / "s.bmap")
    result = _write(disk, source.chunks(), image_size=source.size, bmap=bmap)
    assert disk.read_bytes()[:4 << 20] == raw.read_bytes()
    assert result.bytes_written == bmap.mapped_size < 4 << 20
    assert result.image_sha256 == source.sha256


@pytest.mark.parametrize("number,code", [(errno.EIO, "device_gone"), (errno.ENODEV, "device_gone"),
                                         (errno.ENXIO, "device_gone"),
                                         (errno.ENOSPC, "write_failed")])
def test_disk_failing_mid_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, number: int,
                                code: str) -> None:
    real = os.pwrite
    written = []

    def failing(fd: int, data, offset: int) -> int:
        if offset >= 2 * BLOCK:
            raise OSError(number, os.strerror(number))
        written.append(offset)
        return real(fd, data, offset)

    monkeypatch.setattr(writer_module.os, "pwrite", failing)
    with pytest.raises(WriteError) as caught:
        _write(_disk(tmp_path, 8 * BLOCK), iter([b"z" * 8 * BLOCK]), image_size=8 * BLOCK,
               block_size=BLOCK)
    assert caught.value.code == code and f"at byte {2 * BLOCK}" in str(caught.value)
    assert written == [0, BLOCK]


def test_short_writes_are_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pwrite
    monkeypatch.setattr(writer_module.os, "pwrite",
                        lambda fd, data, offset: real(fd, data[:1000], offset))
    disk = _disk(tmp_path, 4 * BLOCK)
    image = image_bytes(3 * BLOCK + 5)
    _write(disk, [image], image_size=len(image))
    assert disk.read_bytes()[:len(image)] == image


def test_vanished_at_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer_module.os, "fsync", gone)
    with pytest.raises(WriteError, match="while flushing") as caught:
        _write(_disk(tmp_path, BLOCK), [b"a" * 100], image_size=100)
    assert caught.value.code == "device_gone"


def test_verify_names_the_first_bad_range(tmp_path: Path) -> None:
    image = image_bytes(10 * BLOCK)
    disk = _disk(tmp_path, 10 * BLOCK)
    result = _write(disk, [image], image_size=len(image), block_size=2 * BLOCK)
    with open(disk, "r+b") as handle:
        for offset in (7 * BLOCK + 3, 5 * BLOCK + 1):
            handle.seek(offset)
            handle.write(b"\x00" if image[offset] else b"\x01")
    with pytest.raises(VerifyError) as caught:
        verify_ranges(disk, result.ranges)
    error = caught.value
    assert error.code == "verify_mismatch" and error.result is not None
    assert error.result.first_mismatch == 4 * BLOCK and not error.result.ok
    assert f"offset {4 * BLOCK}" in str(error)


def test_verify_of_unaligned_ranges_and_by_fd(tmp_path: Path) -> None:
    data = image_bytes(3 * BLOCK)
    disk = tmp_path / "d.bin"
    disk.write_bytes(data)
    ranges = [(5, 100, hashlib.sha256(data[5:105]).hexdigest()),
              (BLOCK - 1, BLOCK + 2, hashlib.sha256(data[BLOCK - 1:2 * BLOCK + 1]).hexdigest()),
              (3 * BLOCK - 7, 7, hashlib.sha256(data[-7:]).hexdigest())]
    fd = os.open(disk, os.O_RDWR)
    try:
        result = verify_ranges(fd, ranges)
    finally:
        os.close(fd)
    assert result.ok and result.bytes_read == 109 + BLOCK
    assert result.method in ("O_DIRECT", "fadvise")


def test_verify_past_the_end_of_the_disk(tmp_path: Path) -> None:
    disk = tmp_path / "short.bin"
    disk.write_bytes(b"q" * BLOCK)
    with pytest.raises(VerifyError) as caught:
        verify_ranges(disk, [(0, 2 * BLOCK, "0" * 64)])
    assert caught.value.code == "verify_failed"


def test_verify_falls_back_where_o_direct_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from rpiboot.provision import verify as verify_module

    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(verify_module.os, "open", no_direct)
    disk = tmp_path / "d.bin"
    disk.write_bytes(b"v" * BLOCK)
    result = verify_ranges(disk, [(0, BLOCK, hashlib.sha256(b"v" * BLOCK).hexdigest())])
    assert result.ok and result.method == "fadvise"


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no tmpfs at /dev/shm")
def test_verify_on_tmpfs(tmp_path: Path) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile(dir="/dev/shm") as handle:
        handle.write(b"t" * BLOCK)
        handle.flush()
        result = verify_ranges(handle.name, [(0, BLOCK, hashlib.sha256(b"t" * BLOCK).hexdigest())])
    assert result.ok and result.method in ("O_DIRECT", "fadvise")
