"""One view of the USB bus for the whole run, and a per-port window on it for each board.

Only the pipeline's main thread lists the bus (``Transport.devices`` and ``wait_for_change`` are
not meant to be called from several threads at once); it publishes each listing here. Every
board's boot step runs the engine (:func:`rpiboot.api.boot`) on a :class:`PortView`: a
transport that shows only that board's USB port, hides the enumerations an earlier step of the
same board already served (a lingering listing must not look like the board coming back), and
interrupts the engine's run when the pipeline stops (Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import threading
from typing import Sequence

from ..transport import DeviceRef, Transport


class BusWatcher:
    def __init__(self, transport: Transport):
        self.transport = transport
        self._refs: list[DeviceRef] = []
        self._changed = threading.Condition()

    def refresh(self) -> list[DeviceRef]:
        """List the bus (main thread only) and wake every port view."""
        refs = list(self.transport.devices())
        with self._changed:
            self._refs = refs
            self._changed.notify_all()
        return refs

    def snapshot(self) -> list[DeviceRef]:
        with self._changed:
            return list(self._refs)

    def wait(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)


def served_key(bus: int, address: int, serial_index: int) -> tuple[int, int, int]:
    """How one enumeration is recognised again (the engine's device_arrived has these)."""
    return (bus, address, serial_index)


class PortView:
    """A :class:`~rpiboot.transport.Transport` showing one USB port of a :class:`BusWatcher`."""

    def __init__(self, watcher: BusWatcher, port: str, stop: threading.Event,
                 exclude: set[tuple[int, int, int]]):
        self.watcher = watcher
        self.port = port
        self.stop = stop
        self.exclude = exclude
        """Enumerations (bus, address, serial index) that earlier steps served."""

    def devices(self) -> Sequence[DeviceRef]:
        return [ref for ref in self.watcher.snapshot()
                if ref.info.port_path == self.port and served_key(ref.info.bus,
                                                                  ref.info.address,
                                                                  ref.info.serial_index)
                not in self.exclude]

    def wait_for_change(self, timeout: float) -> None:
        # The engine's run loop treats KeyboardInterrupt as "interrupted": its sessions are
        # cancelled and it returns a result, which is exactly what a stopping pipeline needs.
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.watcher.wait(timeout)
        if self.stop.is_set():
            raise KeyboardInterrupt

    @property
    def has_hotplug(self) -> bool:
        return True

    def close(self) -> None:
        """The real transport belongs to the pipeline."""
