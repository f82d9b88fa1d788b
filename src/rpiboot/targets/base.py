"""What the host needs to know about one chip's USB boot ROM."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    product_id: int
    second_stage: str
    """File the ROM is sent: bootcode.bin, bootcode4.bin or bootcode5.bin."""
    file_prefix: str
    """Sub-directory of a boot directory (and of bootfiles.bin) searched first for this chip."""
    rom_signature_from_file: bool
    """True where `-s` sends bootcode.sig in the boot message; later chips sign differently."""
    sends_metadata: bool
    """True where recovery.bin can report OTP metadata that `-j` records."""
    default_directory: str
    """Boot directory used when the user gives none."""

    @property
    def label(self) -> str:
        return f"{self.name} ({self.product_id:04x})"
