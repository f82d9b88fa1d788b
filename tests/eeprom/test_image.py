"""EEPROM image format: parsing, editing, round trips (synthetic and real images)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpiboot.eeprom import image as img
from rpiboot.eeprom.common import ToolError

from eeprom_helpers import IMAGE_2711, IMAGE_2712, IMAGE_2712_OLD, SECTOR, build_image

MIB2 = 2 * 1024 * 1024


def test_synthetic_image_parses() -> None:
    image = img.EepromImage(build_image())
    assert image.config == b"[all]\nBOOT_UART=1\n"
    assert not image.is_ab
    assert image.get_file("pubkey.bin") == b"\0" * 264
    assert [name for name, _ in image.extractable_files()] == [
        "bootcode.bin", "pubkey.bin", "bootconf.sig", "bootconf.txt"]


def test_synthetic_ab_image_parses() -> None:
    data = build_image(size=MIB2, ab=True, last_pad_to=img.PARTITION_END)
    image = img.EepromImage(data)
    assert image.is_ab and img.is_ab_capable(data)
    assert image.get_file("bootsys") == b"\x22" * 3000
    assert image.get_file("bootcode.bin") == b"\x11" * 1000


@pytest.mark.parametrize("size", [0, 1000, 512 * 1024 - 8, 1024 * 1024])
def test_wrong_size_rejected(size: int) -> None:
    with pytest.raises(ToolError, match="expected image size"):
        img.EepromImage(b"\xff" * size)


def test_corrupt_magic_rejected() -> None:
    data = bytearray(build_image())
    struct.pack_into(">L", data, 128 * 1024, 0x12345678)
    with pytest.raises(ToolError, match="corrupted"):
        img.EepromImage(bytes(data))


def test_section_past_end_rejected() -> None:
    data = bytearray(build_image())
    struct.pack_into(">L", data, 4, len(data))
    with pytest.raises(ToolError, match="corrupted"):
        img.EepromImage(bytes(data))


def _chain_is_consistent(image: img.EepromImage) -> None:
    reparsed = img.parse_sections(image.to_bytes())
    assert reparsed == image.__class__(image.to_bytes()).sections
    for section in reparsed:
        assert section.offset % 8 == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=st.binary(max_size=SECTOR - img.FILE_DATA_OFFSET),
       ab=st.booleans())
def test_config_round_trip(config: bytes, ab: bool) -> None:
    data = build_image(size=MIB2 if ab else 512 * 1024, ab=ab,
                       last_pad_to=img.PARTITION_END if ab else None)
    image = img.EepromImage(data)
    before = {name: content for name, content in image.extractable_files() if name != "bootconf.txt"}
    image.update_file(img.BOOTCONF_TXT, config)
    out = image.to_bytes()
    assert len(out) == len(data)
    again = img.EepromImage(out)
    assert again.config == config
    after = {name: content for name, content in again.extractable_files() if name != "bootconf.txt"}
    assert after == before
    _chain_is_consistent(again)
    # Restoring the original config gives the original image back.
    again.update_file(img.BOOTCONF_TXT, b"[all]\nBOOT_UART=1\n")
    assert again.to_bytes() == data


@settings(max_examples=30, deadline=None)
@given(size=st.integers(min_value=0, max_value=SECTOR - img.FILE_DATA_OFFSET))
def test_middle_file_round_trip_keeps_neighbours(size: int) -> None:
    data = build_image()
    image = img.EepromImage(data)
    image.update_file("bootconf.sig", b"s" * size)
    again = img.EepromImage(image.to_bytes())
    assert again.get_file("bootconf.sig") == b"s" * size
    assert again.get_file("pubkey.bin") == b"\0" * 264
    assert again.config == b"[all]\nBOOT_UART=1\n"
    assert [s.offset for s in again.sections if s.magic == img.FILE_MAGIC] == \
        [s.offset for s in image.sections if s.magic == img.FILE_MAGIC]


@pytest.mark.parametrize("extra", [1, 2, 3, 4])
def test_file_larger_than_its_section_is_refused(extra: int) -> None:
    # Upstream only checked n + 20 bytes; the section really takes n + 24.
    image = img.EepromImage(build_image())
    fits = SECTOR - img.FILE_DATA_OFFSET
    image.update_file("bootconf.sig", b"x" * fits)
    with pytest.raises(ToolError, match="too large"):
        image.update_file("bootconf.sig", b"x" * (fits + extra))


def test_missing_target_refused() -> None:
    image = img.EepromImage(build_image())
    with pytest.raises(ToolError, match="not found"):
        image.update_file("cacert.der", b"123")


def test_set_timestamp_non_ab_uses_image_tail() -> None:
    image = img.EepromImage(build_image())
    image.set_timestamp(0x12345678)
    assert image.to_bytes()[-8:] == struct.pack("<LL", ~0x12345678 & 0xFFFFFFFF, 0x12345678)


def test_set_timestamp_ab_sets_both_copies() -> None:
    image = img.EepromImage(build_image(size=MIB2, ab=True))
    image.set_timestamp(1700000000)
    words = struct.pack("<LL", ~1700000000 & 0xFFFFFFFF, 1700000000)
    slots = [s for s in image.sections if s.filename == img.UPDATE_TIME_FILENAME]
    assert len(slots) == 2
    for slot in slots:
        start = slot.offset + img.FILE_DATA_OFFSET
        assert image.to_bytes()[start:start + 8] == words


def test_set_timestamp_out_of_range() -> None:
    with pytest.raises(ToolError):
        img.EepromImage(build_image()).set_timestamp(1 << 32)


def test_update_bootcode_ab() -> None:
    image = img.EepromImage(build_image(size=MIB2, ab=True))
    image.update_bootcode(b"\x33" * 5000)
    again = img.EepromImage(image.to_bytes())
    assert again.get_file("bootcode.bin") == b"\x33" * 5000
    assert again.sections[1].magic == img.PAD_MAGIC


def test_update_bootcode_too_large_refused() -> None:
    image = img.EepromImage(build_image(size=MIB2, ab=True))
    with pytest.raises(ToolError, match="too large"):
        image.update_bootcode(b"\x33" * (img.READ_ONLY_SIZE))


def test_update_bootcode_non_ab_needs_128k() -> None:
    image = img.EepromImage(build_image(bootcode_slot=96 * 1024))
    with pytest.raises(ToolError, match="128K"):
        image.update_bootcode(b"\x33" * 100)


def test_unsafe_name_helpers() -> None:
    with pytest.raises(ValueError):
        img.build_file_section("a-very-long-name.txt", b"")


@pytest.mark.parametrize("name,ab", [(IMAGE_2711, False), (IMAGE_2712, True), (IMAGE_2712_OLD, False)])
def test_real_images_parse(upstream, name: str, ab: bool) -> None:
    data = (upstream / name).read_bytes()
    image = img.EepromImage(data, name)
    assert image.is_ab == ab == img.is_ab_capable(data)
    assert image.config.startswith(b"[all]")
    # Writing the same config back must not change a byte.
    image.update_file(img.BOOTCONF_TXT, image.config)
    assert image.to_bytes() == data


def test_real_image_configs_match_golden(upstream, golden) -> None:
    for name, gold in ((IMAGE_2711, "2711-2026-08-04.bootconf.txt"),
                       (IMAGE_2712, "2712-2026-08-12.bootconf.txt")):
        assert img.EepromImage((upstream / name).read_bytes()).config == (golden / gold).read_bytes()
