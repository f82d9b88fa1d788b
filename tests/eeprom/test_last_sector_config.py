"""A file section that ends in the image's reserved last 4 KiB (issue 12).

Seven 2711 releases (rpi-eeprom firmware-2711/old/stable, 2024-04-17 ... 2024-12-07)
keep bootconf.txt in the last 4 KiB sector before the reserved block.  Upstream sizes a file as n+20 bytes (it
takes n+24), so it writes a 4073-4076 byte config there with its last bytes in
the reserved block; nothing else lives there.  Checked by hand against upstream
rpi-eeprom-config on pieeprom-2024-12-07.bin: byte-identical outputs for 4072,
4073 and 4076 bytes.  The synthetic image below has the same layout.
"""

from __future__ import annotations

import struct

import pytest

from rpiboot.eeprom import image as img
from rpiboot.eeprom.common import ToolError
from rpiboot.eeprom.config_tool import main as config_main

from eeprom_helpers import SECTOR, build_image

SIZE = 512 * 1024
RESERVED = SIZE - SECTOR
CONF_OFFSET = RESERVED - SECTOR


def last_sector_image() -> bytes:
    # bootcode slot, pubkey.bin and bootconf.sig one sector each, bootconf.txt last.
    data = build_image(bootcode_slot=CONF_OFFSET - 2 * SECTOR)
    assert img.EepromImage(data).find_file(img.BOOTCONF_TXT).offset == CONF_OFFSET
    return data


def config_of(size: int) -> bytes:
    return b"[all]\n" + b"#" * (size - 7) + b"\n"


@pytest.mark.parametrize("size", [4072, 4073, 4075, 4076])
def test_config_reaching_into_reserved_block_is_written_like_upstream(size: int) -> None:
    before = last_sector_image()
    image = img.EepromImage(before)
    config = config_of(size)
    image.update_file(img.BOOTCONF_TXT, config)
    after = image.to_bytes()
    assert img.EepromImage(after).config == config
    magic, length = struct.unpack_from(">LL", after, CONF_OFFSET)
    assert (magic, length) == (img.FILE_MAGIC, size + 16)
    end = CONF_OFFSET + img.FILE_DATA_OFFSET + size
    assert after[:CONF_OFFSET] == before[:CONF_OFFSET]
    # Up to 4 data bytes in the reserved block, then 0xff to the 8-byte boundary, the rest untouched.
    assert end - RESERVED <= 4
    aligned = img.align8(end)
    assert after[end:aligned] == b"\xff" * (aligned - end)
    assert after[aligned:] == before[aligned:]


def test_config_tool_accepts_4076_bytes_in_last_sector(tmp_path) -> None:
    src = tmp_path / "pieeprom.bin"
    src.write_bytes(last_sector_image())
    conf = tmp_path / "boot.conf"
    conf.write_bytes(config_of(4076))
    out = tmp_path / "new.bin"
    assert config_main(["-c", str(conf), "-o", str(out), str(src)]) == 0
    assert img.EepromImage(out.read_bytes()).config == config_of(4076)


def test_config_tool_refuses_4077_bytes(tmp_path, capsys) -> None:
    src = tmp_path / "pieeprom.bin"
    src.write_bytes(last_sector_image())
    conf = tmp_path / "boot.conf"
    conf.write_bytes(config_of(4077))
    assert config_main(["-c", str(conf), "-o", str(tmp_path / "new.bin"), str(src)]) == 1
    assert "too large" in capsys.readouterr().err


@pytest.mark.parametrize("size", [4073, 4076])
def test_real_following_section_keeps_the_strict_check(size: int) -> None:
    # bootconf.sig has one sector and bootconf.txt follows it: n+24 must fit.
    image = img.EepromImage(last_sector_image())
    with pytest.raises(ToolError, match="too large"):
        image.update_file(img.BOOTCONF_SIG, b"x" * size)
    image.update_file(img.BOOTCONF_SIG, b"x" * 4072)


def test_ab_partition_end_keeps_the_strict_check() -> None:
    # In an A/B image the end of partition A is followed by partition B, not by the
    # reserved block: bootconf.txt in the last sector of A must fit with n+24 bytes.
    bootsys_slot = img.PARTITION_END - 2 * SECTOR - img.READ_ONLY_SIZE   # then updatetime, bootconf.txt
    image = img.EepromImage(build_image(size=2 * 1024 * 1024, ab=True, files={}, bootsys_slot=bootsys_slot))
    slot = image.find_file(img.BOOTCONF_TXT, img.READ_ONLY_SIZE, img.PARTITION_END)
    assert slot.offset == img.PARTITION_END - SECTOR and not slot.next_is_reserved_block
    image.update_file(img.BOOTCONF_TXT, config_of(4072))
    with pytest.raises(ToolError, match="too large"):
        image.update_file(img.BOOTCONF_TXT, config_of(4073))
