"""BCM2835: Raspberry Pi 1A+, Zero, Compute Module 1."""

from .base import Target

BCM2835 = Target(
    name="BCM2835",
    product_id=0x2763,
    second_stage="bootcode.bin",
    file_prefix="2710",
    rom_signature_from_file=True,
    sends_metadata=False,
    default_directory="msd",
)
