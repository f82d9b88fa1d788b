"""Image source: format by magic bytes, streamed decompression, sha256, size, corrupt input."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpiboot.provision.image_source import (ImageError, check_image, detect_format,
                                             exact_chunks, open_image)

from provision_images import compress, flip_byte, image_bytes, truncate_to, write_image_file

FORMATS = ("xz", "gz", "bz2", "zst", "zip")
SIZE = 300_000 + 123
CHUNK = 64 << 10


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_file(tmp_path_factory.mktemp("image"), SIZE)


def _read_all(path: Path, chunk_size: int = CHUNK) -> tuple[bytes, object]:
    source = open_image(path, chunk_size=chunk_size)
    data = b"".join(source.chunks())
    return data, source


@pytest.mark.parametrize("form", ("raw",) + FORMATS)
def test_every_format_gives_the_image_and_its_sha256(raw: Path, tmp_path: Path,
                                                     form: str) -> None:
    path = raw if form == "raw" else compress(raw, form, tmp_path)
    data, source = _read_all(path)
    assert data == raw.read_bytes()
    assert source.format == form
    assert source.sha256 == hashlib.sha256(data).hexdigest()


def test_chunks_have_the_chunk_size_except_the_last(raw: Path, tmp_path: Path) -> None:
    sizes = [len(c) for c in open_image(compress(raw, "xz", tmp_path), chunk_size=CHUNK).chunks()]
    assert set(sizes[:-1]) == {CHUNK} and 0 < sizes[-1] <= CHUNK and sum(sizes) == SIZE


def test_format_is_found_by_content_not_name(raw: Path, tmp_path: Path) -> None:
    disguised = tmp_path / "image.img"
    shutil.copy(compress(raw, "gz", tmp_path), disguised)
    data, source = _read_all(disguised)
    assert source.format == "gz" and data == raw.read_bytes()


@pytest.mark.parametrize("suffix", (".xz", ".gz", ".bz2", ".zst", ".zip", ".XZ"))
def test_a_file_named_compressed_that_is_not_is_refused_not_written_raw(
        tmp_path: Path, suffix: str) -> None:
    page = tmp_path / f"raspios.img{suffix}"  # what a failed download leaves behind
    page.write_bytes(b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n" * 20)
    with pytest.raises(ImageError, match="not .* data") as caught:
        check_image(page)
    assert caught.value.code == "image_corrupt"


@pytest.mark.parametrize("form,size", [("raw", SIZE), ("xz", SIZE), ("zst", SIZE), ("zip", SIZE),
                                       ("gz", None), ("bz2", None)])
def test_size_known_up_front_where_the_format_records_it(raw: Path, tmp_path: Path, form: str,
                                                         size: int | None) -> None:
    path = raw if form == "raw" else compress(raw, form, tmp_path)
    assert check_image(path).size == size


def test_multi_stream_xz_and_gzip(raw: Path, tmp_path: Path) -> None:
    data = raw.read_bytes()
    for form in ("xz", "gz", "bz2"):
        single = compress(raw, form, tmp_path).read_bytes()
        double = tmp_path / f"double.{form}"
        double.write_bytes(single + single)
        got, source = _read_all(double)
        assert got == data + data, form
    assert check_image(tmp_path / "double.xz").size == 2 * SIZE


@pytest.mark.skipif(shutil.which("xz") is None, reason="xz command not installed")
def test_xz_command_output_with_several_blocks(raw: Path, tmp_path: Path) -> None:
    target = tmp_path / "cli.img.xz"
    with open(target, "wb") as out:
        subprocess.run(["xz", "-c", "-0", "--block-size=65536", "-T1", str(raw)], stdout=out,
                       check=True)
    assert check_image(target).size == SIZE
    assert _read_all(target)[0] == raw.read_bytes()


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd command not installed")
def test_zstd_command_output(raw: Path, tmp_path: Path) -> None:
    target = tmp_path / "cli.img.zst"
    subprocess.run(["zstd", "-q", "-1", str(raw), "-o", str(target)], check=True)
    assert check_image(target).size == SIZE
    assert _read_all(target)[0] == raw.read_bytes()


@pytest.mark.parametrize("form", FORMATS)
def test_truncated_file_is_an_image_error(raw: Path, tmp_path: Path, form: str) -> None:
    path = compress(raw, form, tmp_path)
    truncate_to(path, 0.6)
    with pytest.raises(ImageError) as caught:
        check_image(path)
        _read_all(path)
    assert caught.value.code == "image_corrupt"
    assert "\n" not in str(caught.value) and path.name in str(caught.value)


@pytest.mark.parametrize("form", ("xz", "zst"))
def test_a_truncated_file_is_found_by_check_before_any_board(raw: Path, tmp_path: Path,
                                                            form: str) -> None:
    """`check` (and the checks before a run) catch a truncated xz or zstd without
    decompressing it: their structure says where the file must end."""
    path = compress(raw, form, tmp_path)
    truncate_to(path, 0.6)
    with pytest.raises(ImageError, match="truncated") as caught:
        check_image(path)
    assert caught.value.code == "image_corrupt"


@pytest.mark.parametrize("form", FORMATS)
def test_flipped_byte_in_the_middle_is_an_image_error(raw: Path, tmp_path: Path,
                                                      form: str) -> None:
    path = compress(raw, form, tmp_path)
    flip_byte(path, path.stat().st_size // 2)
    with pytest.raises(ImageError) as caught:
        _read_all(path)
    assert caught.value.code == "image_corrupt"


@pytest.mark.parametrize("form,where", [("xz", -20), ("gz", -8), ("zst", -2)])
def test_bad_checksum_in_the_trailer_is_caught(raw: Path, tmp_path: Path, form: str,
                                               where: int) -> None:
    # the data decodes, only the stored CRC / checksum is wrong
    path = compress(raw, form, tmp_path)
    flip_byte(path, where)
    with pytest.raises(ImageError):
        check_image(path)
        _read_all(path)


def test_trailing_garbage_is_an_error_but_zero_padding_is_not(raw: Path, tmp_path: Path) -> None:
    path = compress(raw, "xz", tmp_path)
    padded = tmp_path / "padded.xz"
    padded.write_bytes(path.read_bytes() + bytes(8))
    assert _read_all(padded)[0] == raw.read_bytes()
    assert check_image(padded).size == SIZE
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(compress(raw, "gz", tmp_path).read_bytes() + b"junk")
    with pytest.raises(ImageError):
        _read_all(garbage)


def test_zip_with_two_images_is_refused(raw: Path, tmp_path: Path) -> None:
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.img", b"a" * 1000)
        archive.writestr("b.img", b"b" * 1000)
    with pytest.raises(ImageError) as caught:
        open_image(path)
    assert caught.value.code == "image_unsupported"
    assert "2 files (a.img, b.img)" in str(caught.value)


def test_zip_without_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("folder/", b"")
    with pytest.raises(ImageError, match="no file"):
        check_image(path)


def test_zip_with_macos_metadata_counts_one_image(raw: Path, tmp_path: Path) -> None:
    path = tmp_path / "mac.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("os.img", raw.read_bytes())
        archive.writestr("__MACOSX/._os.img", b"resource fork")
    info = check_image(path)
    assert info.member == "os.img" and info.size == SIZE


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as caught:
        check_image(tmp_path / "absent.img")
    assert caught.value.code == "image_unreadable"
    (tmp_path / "empty.img").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        check_image(tmp_path / "empty.img")


def test_image_that_grows_after_the_check_is_caught(raw: Path, tmp_path: Path) -> None:
    path = tmp_path / "growing.img"
    shutil.copy(raw, path)
    source = open_image(path, chunk_size=CHUNK)
    with open(path, "ab") as handle:
        handle.write(b"more")
    with pytest.raises(ImageError, match="declares"):
        b"".join(source.chunks())


@pytest.mark.parametrize("outer,inner", [("gz", "xz"), ("zip", "zst"), ("xz", "zip")])
def test_compressed_twice_is_refused(raw: Path, tmp_path: Path, outer: str, inner: str) -> None:
    twice = compress(compress(raw, inner, tmp_path), outer, tmp_path)
    with pytest.raises(ImageError, match=f"holds {inner} data") as caught:
        check_image(twice)
    assert caught.value.code == "image_unsupported"


def test_image_that_decompresses_to_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty once decompressed"):
        check_image(compress(empty, "gz", tmp_path))


def test_detect_format() -> None:
    assert detect_format(b"\xfd7zXZ\x00\x00") == "xz"
    assert detect_format(b"BZh91AY") == "bz2"
    assert detect_format(b"\x00" * 8) == "raw"


@settings(max_examples=60, deadline=None)
@given(pieces=st.lists(st.binary(max_size=40), max_size=30), size=st.integers(1, 50))
def test_exact_chunks_regroups_without_losing_a_byte(pieces: list[bytes], size: int) -> None:
    chunks = list(exact_chunks(pieces, size))
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(c) == size for c in chunks[:-1])
    assert not chunks or 0 < len(chunks[-1]) <= size


@settings(max_examples=15, deadline=None)
@given(size=st.integers(0, 3 * 4096 + 17), chunk_pages=st.integers(1, 3))
def test_chunk_boundaries_never_change_the_data(tmp_path_factory: pytest.TempPathFactory,
                                                size: int, chunk_pages: int) -> None:
    directory = tmp_path_factory.mktemp("boundaries")
    raw = directory / "x.img"
    raw.write_bytes(image_bytes(size, seed=size) or b"\x01")
    path = compress(raw, "xz", directory)
    data = b"".join(open_image(path, chunk_size=4096 * chunk_pages).chunks())
    assert data == raw.read_bytes()
