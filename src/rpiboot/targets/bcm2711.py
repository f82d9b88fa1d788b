"""BCM2711: Compute Module 4, Raspberry Pi 4 and 400. The ROM uses iSerialNumber index 3."""

from .base import Target

BCM2711 = Target(
    name="BCM2711",
    product_id=0x2711,
    second_stage="bootcode4.bin",
    file_prefix="2711",
    rom_signature_from_file=False,
    sends_metadata=True,
    default_directory="mass-storage-gadget64",
)
