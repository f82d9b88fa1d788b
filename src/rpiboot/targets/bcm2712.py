"""BCM2712: Raspberry Pi 5, Compute Module 5, Pi 500."""

from .base import Target

BCM2712 = Target(
    name="BCM2712",
    product_id=0x2712,
    second_stage="bootcode5.bin",
    file_prefix="2712",
    rom_signature_from_file=False,
    sends_metadata=True,
    default_directory="mass-storage-gadget64",
)
