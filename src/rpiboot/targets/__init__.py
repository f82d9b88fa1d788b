"""Per-chip knowledge: one small module per Broadcom SoC that has a USB boot ROM."""

from __future__ import annotations

from .base import Target
from .bcm2835 import BCM2835
from .bcm2837 import BCM2837
from .bcm2711 import BCM2711
from .bcm2712 import BCM2712

BROADCOM_VENDOR_ID = 0x0A5C

ALL_TARGETS: tuple[Target, ...] = (BCM2835, BCM2837, BCM2711, BCM2712)

_BY_PRODUCT = {target.product_id: target for target in ALL_TARGETS}


def target_for(vendor_id: int, product_id: int) -> Target | None:
    """The chip behind a USB vendor/product pair, or None if it is not a Pi in boot mode."""
    if vendor_id != BROADCOM_VENDOR_ID:
        return None
    return _BY_PRODUCT.get(product_id)


__all__ = ["ALL_TARGETS", "BROADCOM_VENDOR_ID", "Target", "target_for",
           "BCM2835", "BCM2837", "BCM2711", "BCM2712"]
