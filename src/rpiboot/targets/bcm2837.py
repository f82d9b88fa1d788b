"""BCM2836/BCM2837: Compute Module 3/3+, 3A+, Zero 2 W. Some ROMs enumerate with two interfaces."""

from .base import Target

BCM2837 = Target(
    name="BCM2837",
    product_id=0x2764,
    second_stage="bootcode.bin",
    file_prefix="2710",
    rom_signature_from_file=True,
    sends_metadata=False,
    default_directory="msd",
)
