"""The virtual bus: virtual Raspberry Pis behind the engine's transport interface, in-process.

No USB stack is involved. Attach and detach notify waiters the way hot-plug would. Given a
``sysfs_root`` and a ``dev_root``, the bus also shows the mass-storage gadget's disks the way a
Linux host does (see :class:`~rpiboot.simulator.virtual_disk.SysfsGadget`) while the gadget is
attached.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..transport import (AccessDenied, DeviceGone, DeviceInfo, TransferFailed, TransferTimeout,
                         UsbError)
from .virtual_disk import SysfsGadget
from .virtual_pi import DeviceError, FinalStage, Gone, NoAnswer, Stall, UsbFunction, VirtualPi


class VirtualBus:
    """Implements both :class:`rpiboot.transport.Transport` and the simulator's BusListener."""

    def __init__(self, pis: Sequence[VirtualPi] = (), *, hotplug: bool = True,
                 sysfs_root: Path | None = None, dev_root: Path | None = None):
        self._changed = threading.Condition()
        self.sysfs: SysfsGadget | None = (SysfsGadget(sysfs_root, dev_root)
                                          if sysfs_root is not None and dev_root is not None
                                          else None)
        self._present: dict[int, _VirtualRef] = {}
        self._next_address = 2
        self.hotplug = hotplug
        self.pis: list[VirtualPi] = []
        for pi in pis:
            self.plug_in(pi)

    def plug_in(self, pi: VirtualPi) -> VirtualPi:
        self.pis.append(pi)
        pi.plug_in(self)
        return pi

    # --- BusListener ------------------------------------------------------------------------

    def attach(self, pi: VirtualPi, function: UsbFunction) -> None:
        stage = pi.stages[function.stage_index]
        if self.sysfs is not None and isinstance(stage, FinalStage) and stage.disks:
            self.sysfs.add(pi.port_path, (function.vendor_id, function.product_id),
                           stage.serial, stage.disks)
        with self._changed:
            address = self._next_address
            self._next_address = self._next_address % 127 + 1
            info = DeviceInfo(function.vendor_id, function.product_id, function.serial_index,
                              pi.bus_number, address, pi.port_numbers, function.num_interfaces,
                              "high")
            self._present[id(function)] = _VirtualRef(info, function, pi)
            self._changed.notify_all()

    def detach(self, pi: VirtualPi, function: UsbFunction) -> None:
        if self.sysfs is not None:
            self.sysfs.remove(pi.port_path)
        with self._changed:
            self._present.pop(id(function), None)
            self._changed.notify_all()

    # --- Transport --------------------------------------------------------------------------

    def devices(self) -> Sequence["_VirtualRef"]:
        with self._changed:
            return list(self._present.values())

    def wait_for_change(self, timeout: float) -> None:
        if not self.hotplug:
            time.sleep(timeout)
            return
        with self._changed:
            self._changed.wait(timeout)

    @property
    def has_hotplug(self) -> bool:
        return self.hotplug

    def close(self) -> None:
        pass


@dataclass
class _VirtualRef:
    info: DeviceInfo
    function: UsbFunction
    pi: VirtualPi

    def open(self) -> "_VirtualHandle":
        if not self.function.alive:
            raise DeviceGone("device has left the bus")
        if self.pi.open_error == "access":
            raise AccessDenied("permission denied")
        if self.pi.open_error:
            raise TransferFailed(self.pi.open_error)
        return _VirtualHandle(self.function)


class _VirtualHandle:
    def __init__(self, function: UsbFunction):
        self._function = function

    def claim_interface(self, interface: int) -> None:
        _call(0, self._function.claim, interface)

    def read_string(self, index: int) -> str | None:
        if index == 0:
            return None
        raw = self._function.string_descriptor(index)
        return None if raw is None else raw[2:].decode("utf-16-le", errors="replace")

    def vendor_out(self, value: int, index: int, timeout: float) -> None:
        _call(timeout, self._function.control_out, 0x40, 0, value, index)

    def vendor_in(self, value: int, index: int, length: int, timeout: float) -> bytes:
        return _call(timeout, self._function.control_in, 0xC0, 0, value, index, length)

    def bulk_out(self, endpoint: int, data: bytes | memoryview, timeout: float) -> int:
        return _call(timeout, self._function.bulk_out, endpoint, bytes(data))

    def close(self) -> None:
        pass


def _call(timeout: float, operation, *args):  # type: ignore[no-untyped-def]
    try:
        return operation(*args)
    except Gone as error:
        raise DeviceGone(str(error)) from None
    except NoAnswer as error:
        time.sleep(timeout)  # the host waits out its timeout, as it would on a real bus
        raise TransferTimeout(str(error)) from None
    except Stall as error:
        raise TransferFailed(f"pipe error: {error}") from None
    except DeviceError as error:
        raise UsbError(str(error)) from None
