"""What the OTP metadata of a board says in plain words: model, revision, memory, maker, processor
and the secure-boot state.

recovery.bin (BCM2711) and recovery5 (BCM2712) report OTP rows as metadata key/value pairs (``-j``
writes them unchanged). This module decodes the ones usbboot's README points to:

- ``USER_BOARDREV``: the board revision code. Only new-style codes (bit 23 set) are decoded, with
  the bit fields of Raspberry Pi's documentation ("Raspberry Pi revision codes"):
  ``NOQuuuWuFMMMCCCCPPPPTTTTTTTTRRRR`` - R revision (shown as ``1.R``), T type, P processor,
  C manufacturer, M memory size. ``c03141`` is a Compute Module 4, rev 1.1, 4 GB, Sony UK, BCM2711.
- ``CUSTOMER_KEY_HASH``: the sha256 of the customer's secure-boot public key held in OTP; all
  zeros means no key has been programmed.
- ``JTAG_LOCKED``: ``1`` when JTAG has been locked (``program_jtag_lock``).
- ``BOARD_ATTR``: assumed to be OTP row 33, "board revision extended", since usbboot's README
  sends readers to the board-revision documentation for it; on a Compute Module 4 bit 30 set means
  no wireless module and bit 31 set means no eMMC (Lite). Every model: also kept as the raw
  value (``board_attr``; a Pi 400 holds its keyboard country code in bits 0-7).
- ``ADVANCED_BOOT``: always kept as the raw value. Raspberry Pi's OTP documentation describes
  row 66 (ETH_CLK and LAN_RUN GPIOs and their enables) for the chips before BCM2711 only ("not
  BCM2711"; BCM2712 has its advanced boot mode in another row with other fields), so those fields
  are added only when the revision code names a BCM2835/2836/2837. What BCM2711 and BCM2712
  recovery firmware put in this key is not documented.

Every value comes from the device and is untrusted: anything that is not what the documentation
describes decodes to ``"unknown"`` (or None), never to an exception.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

UNKNOWN = "unknown"

MODELS = {
    0x00: "A", 0x01: "B", 0x02: "A+", 0x03: "B+", 0x04: "2B", 0x05: "Alpha (early prototype)",
    0x06: "Compute Module 1", 0x08: "3B", 0x09: "Zero", 0x0A: "Compute Module 3",
    0x0C: "Zero W", 0x0D: "3B+", 0x0E: "3A+", 0x10: "Compute Module 3+", 0x11: "4B",
    0x12: "Zero 2 W", 0x13: "400", 0x14: "Compute Module 4", 0x15: "Compute Module 4S",
    0x17: "5", 0x18: "Compute Module 5", 0x19: "500", 0x1A: "Compute Module 5 Lite",
    0x1B: "Compute Module 0",
}
MEMORY_MB = {0: 256, 1: 512, 2: 1024, 3: 2048, 4: 4096, 5: 8192, 6: 16384}
MANUFACTURERS = {0: "Sony UK", 1: "Egoman", 2: "Embest", 3: "Sony Japan", 4: "Embest",
                 5: "Stadium"}
PROCESSORS = {0: "BCM2835", 1: "BCM2836", 2: "BCM2837", 3: "BCM2711", 4: "BCM2712"}

_HEX = re.compile(r"(?:0[xX])?([0-9a-fA-F]{1,8})")
_KEY_HASH = re.compile(r"[0-9a-fA-F]{64}")
_CM4 = 0x14


@dataclass(frozen=True)
class BoardInfo:
    """The decoded board; :meth:`to_dict` is the ``board`` object of ``device_done``."""

    model: str = UNKNOWN
    revision: str = UNKNOWN
    memory_mb: int | None = None
    manufacturer: str = UNKNOWN
    processor: str = UNKNOWN
    secure_boot_key_programmed: bool | None = None
    """None when the device did not report CUSTOMER_KEY_HASH (or sent something else)."""
    revision_code: str | None = None
    jtag_locked: bool | None = None
    wireless: bool | None = None
    emmc: bool | None = None
    board_attr: str | None = None
    """BOARD_ATTR as 8 hex digits (None when not reported or not hex)."""
    advanced_boot: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decode_board(metadata: Mapping[str, str]) -> BoardInfo | None:
    """The board described by a device's metadata, or None when it reported none of the keys
    decoded here."""
    keys = ("USER_BOARDREV", "CUSTOMER_KEY_HASH", "JTAG_LOCKED", "BOARD_ATTR", "ADVANCED_BOOT")
    if not any(key in metadata for key in keys):
        return None
    code = _hex_value(metadata.get("USER_BOARDREV"))
    fields = decode_revision_code(code) if code is not None else {}
    board_type = (code >> 4) & 0xFF if code is not None and _is_new_style(code) else None
    board_attr = _hex_value(metadata.get("BOARD_ATTR"))
    return BoardInfo(
        **fields,
        secure_boot_key_programmed=_key_programmed(metadata.get("CUSTOMER_KEY_HASH")),
        revision_code=None if code is None else f"{code:06x}",
        jtag_locked=_flag(metadata.get("JTAG_LOCKED")),
        **_board_attributes(board_attr, board_type),
        board_attr=None if board_attr is None else f"{board_attr:08x}",
        advanced_boot=_advanced_boot(_hex_value(metadata.get("ADVANCED_BOOT")),
                                     fields.get("processor")),
    )


def decode_revision_code(code: int) -> dict[str, Any]:
    """model, revision, memory_mb, manufacturer, processor of a revision code; fields that are
    not new-style or not in the documented tables are "unknown" (memory_mb None)."""
    if not _is_new_style(code):
        return {}
    return {
        "model": MODELS.get((code >> 4) & 0xFF, UNKNOWN),
        "revision": f"1.{code & 0xF}",
        "memory_mb": MEMORY_MB.get((code >> 20) & 0x7),
        "manufacturer": MANUFACTURERS.get((code >> 16) & 0xF, UNKNOWN),
        "processor": PROCESSORS.get((code >> 12) & 0xF, UNKNOWN),
    }


def describe(board: Mapping[str, Any] | None) -> str:
    """One line for people: 'Compute Module 4 rev 1.1, 4 GB, Sony UK, BCM2711, no secure-boot
    key'. Takes the ``board`` object of an event; its strings come from the tables above (the
    reporters make every event string printable anyway)."""
    if not isinstance(board, Mapping):
        return ""
    parts = [f"{_text(board.get('model'))} rev {_text(board.get('revision'))}",
             _memory_text(board.get("memory_mb")), _text(board.get("manufacturer")),
             _text(board.get("processor"))]
    for name, yes, no in (("wireless", "wireless", "no wireless"), ("emmc", "eMMC", "no eMMC")):
        if isinstance(board.get(name), bool):
            parts.append(yes if board[name] else no)
    key = board.get("secure_boot_key_programmed")
    if isinstance(key, bool):
        parts.append("secure-boot key programmed" if key else "no secure-boot key")
    if board.get("jtag_locked") is True:
        parts.append("JTAG locked")
    return ", ".join(parts)


def _is_new_style(code: int) -> bool:
    return bool(code & (1 << 23))


def _hex_value(text: object) -> int | None:
    if not isinstance(text, str):
        return None
    match = _HEX.fullmatch(text.strip())
    return int(match.group(1), 16) if match else None


def _key_programmed(text: object) -> bool | None:
    if not isinstance(text, str) or not _KEY_HASH.fullmatch(text.strip()):
        return None
    return int(text, 16) != 0


def _flag(text: object) -> bool | None:
    value = text.strip() if isinstance(text, str) else None
    return {"0": False, "1": True}.get(value or "")


def _board_attributes(value: int | None, board_type: int | None) -> dict[str, Any]:
    if value is None or board_type != _CM4:
        return {}
    return {"wireless": not value & (1 << 30), "emmc": not value & (1 << 31)}


_ROW_66_PROCESSORS = ("BCM2835", "BCM2836", "BCM2837")


def _advanced_boot(value: int | None, processor: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if processor not in _ROW_66_PROCESSORS:
        return {"raw": f"{value:08x}"}
    return {"raw": f"{value:08x}",
            "eth_clk_gpio": value & 0x7F, "eth_clk_enabled": bool(value & 0x80),
            "lan_run_gpio": (value >> 8) & 0x7F, "lan_run_enabled": bool(value & 0x8000)}


def _memory_text(memory_mb: object) -> str:
    if not isinstance(memory_mb, int) or isinstance(memory_mb, bool) or memory_mb <= 0:
        return f"{UNKNOWN} memory"
    return f"{memory_mb // 1024} GB" if memory_mb >= 1024 else f"{memory_mb} MB"


def _text(value: object) -> str:
    return value if isinstance(value, str) and value else UNKNOWN
