"""bmap files: parsing (versions 1.x and 2.x), validation, and bmaptool's own output."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpiboot.provision.bmap import BmapError, load_bmap, parse_bmap

BLOCK = 4096


def bmap_xml(image: bytes, ranges: list[tuple[int, int]], *, version: str = "2.0",
             checksum: str | None = "sha256", block: int = BLOCK, file_checksum: bool = True,
             image_size: int | None = None, mapped: int | None = None) -> bytes:
    """A bmap as bmaptool writes it (hand-made: the tests must not depend on bmaptool)."""
    size = len(image) if image_size is None else image_size
    count = -(-size // block)
    attribute = "chksum" if checksum else ""
    if version.startswith("1.") and version != "1.4":
        attribute = "sha1" if version == "1.3" else ""
        checksum = "sha1" if version == "1.3" else None
    lines = ['<?xml version="1.0" ?>', f'<bmap version="{version}">',
             f"  <ImageSize> {size} </ImageSize>", f"  <BlockSize> {block} </BlockSize>",
             f"  <BlocksCount> {count} </BlocksCount>",
             f"  <MappedBlocksCount> {sum(b - a + 1 for a, b in ranges) if mapped is None else mapped} "
             "</MappedBlocksCount>"]
    field = None
    if attribute == "chksum":
        lines.append(f"  <ChecksumType> {checksum} </ChecksumType>")
        field = "BmapFileChecksum"
    elif attribute == "sha1":
        field = "BmapFileSHA1"
    digest_length = len(hashlib.new(checksum).hexdigest()) if checksum else 0
    if field and file_checksum:
        lines.append(f"  <{field}> {'0' * digest_length} </{field}>")
    lines.append("  <BlockMap>")
    for first, last in ranges:
        text = f"{first}-{last}" if last != first else f"{first}"
        if attribute:
            digest = hashlib.new(checksum, image[first * block:(last + 1) * block]).hexdigest()
            lines.append(f'    <Range {attribute}="{digest}"> {text} </Range>')
        else:
            lines.append(f"    <Range> {text} </Range>")
    lines += ["  </BlockMap>", "</bmap>", ""]
    data = "\n".join(lines).encode()
    if field and file_checksum:
        own = hashlib.new(checksum, data).hexdigest()
        data = data.replace(b"0" * digest_length, own.encode(), 1)
    return data


IMAGE = bytes(range(256)) * 16 * 10 + b"tail"  # 10 blocks and 4 bytes


@pytest.mark.parametrize("version,kind", [("2.0", "sha256"), ("1.4", "sha256"), ("2.0", "sha1"),
                                          ("1.3", "sha1"), ("1.2", None)])
def test_versions_and_checksum_types(version: str, kind: str | None) -> None:
    bmap = parse_bmap(bmap_xml(IMAGE, [(0, 1), (4, 4), (9, 10)], version=version,
                               checksum=kind or "sha256"))
    assert bmap.checksum_type == kind
    assert bmap.image_size == len(IMAGE) and bmap.blocks_count == 11
    assert [(r.first, r.last) for r in bmap.ranges] == [(0, 1), (4, 4), (9, 10)]
    assert bmap.byte_ranges()[-1][:2] == (9 * BLOCK, len(IMAGE))
    assert bmap.mapped_size == 3 * BLOCK + BLOCK + 4
    if kind:
        assert bmap.ranges[0].checksum == hashlib.new(kind, IMAGE[:2 * BLOCK]).hexdigest()


def test_edited_bmap_fails_its_own_checksum() -> None:
    data = bmap_xml(IMAGE, [(0, 1), (4, 4)])
    with pytest.raises(BmapError, match="changed or damaged") as caught:
        parse_bmap(data.replace(b"> 4 <", b"> 5 <"))
    assert caught.value.code == "bmap_invalid"


@pytest.mark.parametrize("mutation,message", [
    (dict(mapped=7), "MappedBlocksCount"),
    (dict(image_size=len(IMAGE) + BLOCK * 3), "do not make an image"),
    (dict(block=1000), "multiple of 512"),
    (dict(version="3.0"), "not supported"),
    (dict(checksum="md5"), "not supported"),
])
def test_inconsistent_bmaps_are_refused(mutation: dict, message: str) -> None:
    image_size = mutation.pop("image_size", None)
    data = bmap_xml(IMAGE, [(0, 1)], file_checksum=False, **mutation)
    if image_size is not None:
        data = data.replace(f"<ImageSize> {len(IMAGE)} ".encode(), f"<ImageSize> {image_size} "
                            .encode())
    with pytest.raises(BmapError, match=message) as caught:
        parse_bmap(data, name="x.bmap")
    assert caught.value.code == "bmap_invalid" and str(caught.value).startswith("x.bmap: ")


@pytest.mark.parametrize("ranges", [[(4, 2)], [(0, 3), (3, 5)], [(5, 6), (1, 2)], [(9, 11)]])
def test_bad_ranges_are_refused(ranges: list[tuple[int, int]]) -> None:
    data = bmap_xml(IMAGE + bytes(BLOCK), ranges, file_checksum=False, checksum="sha256")
    data = data.replace(f"<ImageSize> {len(IMAGE) + BLOCK} ".encode(),
                        f"<ImageSize> {len(IMAGE)} ".encode()).replace(
        b"<BlocksCount> 12 ", b"<BlocksCount> 11 ")
    with pytest.raises(BmapError):
        parse_bmap(data)


@pytest.mark.parametrize("text", [b"", b"<notbmap/>", b"<bmap version='2.0'>",
                                  b'<!DOCTYPE x [<!ENTITY a "aaaa">]><bmap version="2.0"/>',
                                  b'<bmap version="2.0"><ImageSize>x</ImageSize></bmap>'])
def test_garbage_is_a_one_line_error(text: bytes) -> None:
    with pytest.raises(BmapError) as caught:
        parse_bmap(text)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BmapError) as caught:
        load_bmap(tmp_path / "nope.bmap")
    assert caught.value.code == "bmap_invalid"


def test_check_image_size() -> None:
    bmap = parse_bmap(bmap_xml(IMAGE, [(0, 1)]))
    bmap.check_image_size(None)
    bmap.check_image_size(len(IMAGE))
    with pytest.raises(BmapError) as caught:
        bmap.check_image_size(len(IMAGE) + 1)
    assert caught.value.code == "bmap_mismatch"


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_sorted_disjoint_ranges_round_trip(data: st.DataObject) -> None:
    blocks = data.draw(st.integers(1, 40))
    image = bytes(data.draw(st.integers(0, 255)) for _ in range(8)) * (blocks * BLOCK // 8)
    cuts = sorted(data.draw(st.sets(st.integers(0, blocks - 1), max_size=12)))
    ranges = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    bmap = parse_bmap(bmap_xml(image, ranges))
    assert [(r.first, r.last) for r in bmap.ranges] == ranges
    assert bmap.mapped_size == sum(b - a + 1 for a, b in ranges) * BLOCK


@pytest.mark.skipif(shutil.which("bmaptool") is None, reason="bmaptool not installed")
def test_bmaptool_create_output_is_read(tmp_path: Path) -> None:
    image = tmp_path / "sparse.img"
    with open(image, "wb") as handle:
        handle.truncate(8 << 20)
        handle.seek(BLOCK * 3)
        handle.write(b"x" * 10000)
        handle.seek((6 << 20) + 100)
        handle.write(b"y" * 5000)
        handle.truncate((8 << 20) - 300)
    bmap_path = tmp_path / "sparse.bmap"
    subprocess.run(["bmaptool", "create", "-o", str(bmap_path), str(image)], check=True,
                   capture_output=True)
    bmap = load_bmap(bmap_path)
    assert bmap.image_size == (8 << 20) - 300 and bmap.checksum_type == "sha256"
    data = image.read_bytes()
    for start, end, checksum in bmap.byte_ranges():
        assert hashlib.sha256(data[start:end]).hexdigest() == checksum
    covered = b"".join(data[s:e] for s, e, _ in bmap.byte_ranges())
    assert covered.count(b"x") == 10000 and covered.count(b"y") == 5000
