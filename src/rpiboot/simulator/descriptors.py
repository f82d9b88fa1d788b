"""USB descriptors for the virtual Raspberry Pi's enumerations."""

from __future__ import annotations

import struct

VENDOR_CLASS = 0xFF
MASS_STORAGE_CLASS = 0x08


def device_descriptor(vendor_id: int, product_id: int, serial_index: int,
                      manufacturer_index: int = 1, product_index: int = 2,
                      bcd_device: int = 0x0000) -> bytes:
    return struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, 0, 0, 0, 64, vendor_id, product_id,
                       bcd_device, manufacturer_index, product_index, serial_index, 1)


def _endpoint(address: int) -> bytes:
    return struct.pack("<BBBBHB", 7, 5, address, 0x02, 512, 0)


def _interface(number: int, cls: int, endpoints: tuple[int, ...]) -> bytes:
    header = struct.pack("<BBBBBBBBB", 9, 4, number, 0, len(endpoints), cls, 0, 0, 0)
    return header + b"".join(_endpoint(address) for address in endpoints)


def config_descriptor(num_interfaces: int) -> bytes:
    """One vendor interface (OUT 0x01, IN 0x82) or, as some BCM2837 ROMs present, mass storage
    first and the vendor interface second (OUT 0x03, IN 0x84)."""
    if num_interfaces == 1:
        body = _interface(0, VENDOR_CLASS, (0x01, 0x82))
    else:
        body = (_interface(0, MASS_STORAGE_CLASS, (0x81, 0x02))
                + _interface(1, VENDOR_CLASS, (0x03, 0x84)))
    header = struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), num_interfaces, 1, 0, 0x80, 250)
    return header + body


def string_descriptor(text: str) -> bytes:
    encoded = text.encode("utf-16-le")
    return bytes([2 + len(encoded), 3]) + encoded


LANGUAGE_LIST = bytes([4, 3, 0x09, 0x04])
