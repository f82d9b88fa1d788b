"""The virtual Raspberry Pi: a device-side model of the USB boot stages.

It has no dependency beyond the standard library so that it can also run under the system Python
that drives umockdev (see :mod:`rpiboot.simulator.umockdev_bridge`).
"""

from .script import Request, done, empty_done, load, metadata
from .virtual_disk import VirtualDisk
from .virtual_pi import FinalStage, RomStage, ServerStage, VirtualPi, typical_pi

__all__ = ["FinalStage", "Request", "RomStage", "ServerStage", "VirtualDisk", "VirtualPi", "done",
           "empty_done", "load", "metadata", "typical_pi"]
