"""FanOut: one pass over the source, every consumer gets every chunk, bounded memory, a failed
consumer detached without stopping the others."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpiboot.provision.fan_out import FanOut, fan_out
from rpiboot.provision.image_source import ImageError, open_image
from rpiboot.provision.verify import VerifyError, verify_ranges
from rpiboot.provision import fan_out as fan_out_module
from rpiboot.provision.writer import WriteError, write_image

from provision_images import compress, truncate_to, write_image_file


def _numbered(count: int, reads: list[int] | None = None) -> Iterator[bytes]:
    for number in range(count):
        if reads is not None:
            reads.append(number)
        yield number.to_bytes(4, "big") * 1024


def test_every_consumer_gets_every_chunk_in_order_from_one_pass() -> None:
    reads: list[int] = []
    results = fan_out(_numbered(50, reads), [lambda feed: [c[:4] for c in feed]] * 4)
    expected = [n.to_bytes(4, "big") for n in range(50)]
    assert results == [expected] * 4
    assert reads == list(range(50))


def test_chunks_are_shared_not_copied() -> None:
    source = [b"a" * 100, b"b" * 100]
    results = fan_out(iter(source), [list, list])
    assert all(got is orig for result in results for got, orig in zip(result, source))


def test_the_slowest_consumer_sets_the_pace_and_memory_stays_bounded() -> None:
    fan = FanOut(_numbered(40), depth=3)
    fast, slow = fan.attach(), fan.attach()
    ahead: list[int] = []
    seen_fast: list[bytes] = []

    def slow_reader() -> None:
        for count, _chunk in enumerate(slow, 1):
            ahead.append(fan.produced - count)
            ahead.append(len(fan._chunks))
            time.sleep(0.002)

    threads = [threading.Thread(target=lambda: seen_fast.extend(fast)),
               threading.Thread(target=slow_reader)]
    for thread in threads:
        thread.start()
    fan.run()
    for thread in threads:
        thread.join()
    assert len(seen_fast) == 40
    assert max(ahead) <= 3


def test_a_failing_consumer_is_detached_and_the_others_finish() -> None:
    def fails_at_ten(feed) -> int:
        for count, _chunk in enumerate(feed):
            if count == 10:
                raise WriteError("disk gone", code="device_gone")
        return count

    def count(feed) -> int:
        return sum(1 for _ in feed)

    results = fan_out(_numbered(100), [count, fails_at_ten, count], depth=2)
    assert results[0] == 100 and results[2] == 100
    assert isinstance(results[1], WriteError) and results[1].code == "device_gone"


def test_source_stops_when_every_consumer_gave_up() -> None:
    reads: list[int] = []
    results = fan_out(_numbered(1000, reads), [lambda feed: next(feed)] * 3, depth=2)
    assert len(results) == 3 and len(reads) < 10


def test_a_closed_feed_unblocks_a_stuck_producer() -> None:
    fan = FanOut(_numbered(30), depth=2)
    live, stuck = fan.attach(), fan.attach()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(live))
    reader.start()
    threading.Timer(0.05, stuck.close).start()  # what a watchdog does to a hung writer
    fan.run()
    reader.join()
    assert len(got) == 30


def test_corrupt_image_fails_every_consumer(tmp_path: Path) -> None:
    raw = write_image_file(tmp_path, 400_000)
    path = compress(raw, "gz")
    truncate_to(path, 0.7)
    source = open_image(path, chunk_size=64 << 10)
    results = fan_out(source.chunks(), [lambda feed: sum(map(len, feed))] * 3)
    assert all(isinstance(r, ImageError) and r.code == "image_corrupt" for r in results)
    assert source.sha256 is None


def test_attach_after_start_is_refused() -> None:
    fan = FanOut(iter([b"x"]))
    fan.attach()
    fan.run()
    with pytest.raises(RuntimeError):
        fan.attach()


def test_four_disks_from_one_xz_decompression(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    raw = write_image_file(tmp_path, 1_000_000)
    source = open_image(compress(raw, "xz"), chunk_size=64 << 10)
    disks = [tmp_path / f"disk{n}" for n in range(4)]
    for disk in disks:
        disk.write_bytes(bytes(1 << 20))

    def writer_for(disk: Path):
        def write(feed):
            fd = os.open(disk, os.O_WRONLY)
            try:
                return write_image(feed, fd, disk_size=1 << 20, image_size=source.size,
                                   hash_image=False, block_size=64 << 10)
            finally:
                os.close(fd)
        return write

    hashed: list[int] = []

    def counting(data):  # type: ignore[no-untyped-def]
        hashed.append(len(data))
        return hashlib.sha256(data)

    monkeypatch.setattr(fan_out_module, "hashlib", SimpleNamespace(sha256=counting))
    results = fan_out(source.chunks(), [writer_for(d) for d in disks])
    monkeypatch.undo()
    assert sum(hashed) == 1_000_000  # each range hashed once for the four disks
    image = raw.read_bytes()
    assert all(d.read_bytes()[:len(image)] == image for d in disks)
    assert all(r.bytes_written == len(image) for r in results)
    assert source.sha256 is not None and all(r.image_sha256 is None for r in results)
    assert all(verify_ranges(d, r.ranges).ok for d, r in zip(disks, results))
    with open(disks[2], "r+b") as handle:
        handle.seek(700_000)
        handle.write(b"\x00" if image[700_000] else b"\x01")
    with pytest.raises(VerifyError) as caught:
        verify_ranges(disks[2], results[2].ranges)
    assert caught.value.result.first_mismatch == 655360


def test_a_disk_that_vanishes_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three disks written from one stream; the second goes away (EIO) after 256 KiB: it fails
    with device_gone, the other two hold the whole image and verify."""
    import errno

    from rpiboot.provision import writer as writer_module

    raw = write_image_file(tmp_path, 1_000_000, seed=5)
    source = open_image(compress(raw, "zst"), chunk_size=64 << 10)
    disks = [tmp_path / f"disk{n}" for n in range(3)]
    fds = [os.open(disk, os.O_RDWR | os.O_CREAT) for disk in disks]
    real = os.pwrite

    def pwrite(fd: int, data, offset: int) -> int:
        if fd == fds[1] and offset >= 256 << 10:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, data, offset)

    monkeypatch.setattr(writer_module.os, "pwrite", pwrite)
    try:
        results = fan_out(source.chunks(), [
            lambda feed, fd=fd: write_image(feed, fd, disk_size=2 << 20, image_size=source.size,
                                            hash_image=False, block_size=64 << 10)
            for fd in fds])
    finally:
        for fd in fds:
            os.close(fd)
    assert isinstance(results[1], WriteError) and results[1].code == "device_gone"
    image = raw.read_bytes()
    for index in (0, 2):
        assert disks[index].read_bytes() == image
        assert verify_ranges(disks[index], results[index].ranges).ok
    assert source.sha256 == hashlib.sha256(image).hexdigest()


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), max_size=40), consumers=st.integers(1, 5),
       depth=st.integers(1, 4))
def test_every_consumer_sees_exactly_the_stream(sizes: list[int], consumers: int,
                                                depth: int) -> None:
    chunks = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    results = fan_out(iter(chunks), [lambda feed: b"".join(feed)] * consumers, depth=depth)
    assert results == [b"".join(chunks)] * consumers
