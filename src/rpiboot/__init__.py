"""rpiboot: boot Raspberry Pis over USB (a Python replacement for usbboot's rpiboot).

The public API is :func:`boot` with :class:`BootOptions`; importing this package stays light
(no USB library is loaded until a run starts), so the simulator can be used on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import boot
    from .events import Event
    from .options import BootOptions

__all__ = ["BootOptions", "Event", "boot", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "boot":
        from .api import boot
        return boot
    if name == "BootOptions":
        from .options import BootOptions
        return BootOptions
    if name == "Event":
        from .events import Event
        return Event
    raise AttributeError(name)
