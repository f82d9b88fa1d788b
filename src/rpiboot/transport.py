"""The USB transport interface the boot engine talks to.

Two implementations exist: :mod:`rpiboot.libusb_transport` (real devices through python-libusb1)
and :mod:`rpiboot.simulator.in_process` (the virtual Raspberry Pi, no USB stack at all). The engine
only ever uses what is declared here, so both run the very same protocol code.

All requests the RPIBOOT protocol needs are vendor requests with bRequest 0; the transport exposes
exactly those, plus bulk OUT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


class UsbError(Exception):
    """A USB operation failed."""


class DeviceGone(UsbError):
    """The device left the bus (unplugged, or re-enumerating)."""


class TransferTimeout(UsbError):
    """The device did not answer within the timeout."""


class AccessDenied(UsbError):
    """The operating system refused to open the device (permissions)."""


class TransferFailed(UsbError):
    """Any other failure: stall, protocol or I/O error."""


class UsbUnavailable(UsbError):
    """No USB library or back-end could be loaded."""


@dataclass(frozen=True)
class DeviceInfo:
    """What the host can learn about an enumeration without opening it."""

    vendor_id: int
    product_id: int
    serial_index: int
    """iSerialNumber: the string *index*, which tells the boot stage apart."""
    bus: int
    address: int
    port_numbers: tuple[int, ...]
    num_interfaces: int
    speed: str = "unknown"

    @property
    def port_path(self) -> str:
        """USB path as upstream prints it: bus, dash, ports joined by dots (``1-1.3.2``)."""
        if not self.port_numbers:
            return str(self.bus)
        return f"{self.bus}-" + ".".join(str(port) for port in self.port_numbers)

    @property
    def port_number(self) -> int:
        """The port on the parent hub (libusb_get_port_number), 0 for a root hub."""
        return self.port_numbers[-1] if self.port_numbers else 0

    @property
    def enumeration_key(self) -> tuple[object, ...]:
        """Identifies one enumeration: the same device re-enumerating gets a new key."""
        return (self.port_path, self.bus, self.address, self.vendor_id, self.product_id,
                self.serial_index)


class DeviceHandle(Protocol):
    """An opened enumeration."""

    def claim_interface(self, interface: int) -> None: ...

    def read_string(self, index: int) -> str | None:
        """The string descriptor at ``index`` as ASCII, or None if there is none."""

    def vendor_out(self, value: int, index: int, timeout: float) -> None:
        """Control OUT, bmRequestType 0x40, bRequest 0, no data stage."""

    def vendor_in(self, value: int, index: int, length: int, timeout: float) -> bytes:
        """Control IN, bmRequestType 0xC0, bRequest 0."""

    def bulk_out(self, endpoint: int, data: bytes | memoryview, timeout: float) -> int:
        """Bulk OUT; returns the number of bytes the device accepted."""

    def close(self) -> None: ...


class DeviceRef(Protocol):
    """One enumeration seen on the bus."""

    info: DeviceInfo

    def open(self) -> DeviceHandle: ...


class Transport(Protocol):
    """Enumerates devices and tells when the bus may have changed."""

    def devices(self) -> Sequence[DeviceRef]:
        """Every device currently on the bus (callers filter for Raspberry Pis)."""

    def wait_for_change(self, timeout: float) -> None:
        """Return after a hot-plug event, or after ``timeout`` seconds at the latest."""

    @property
    def has_hotplug(self) -> bool: ...

    def close(self) -> None: ...


def read_serial_number(ref: DeviceRef) -> str | None:
    """Open an enumeration just long enough to read its serial-number string (None if it has
    none). Raises the transport's errors, :class:`AccessDenied` among them."""
    if not ref.info.serial_index:
        return None
    handle = ref.open()
    try:
        return handle.read_string(ref.info.serial_index)
    finally:
        try:
            handle.close()
        except UsbError:
            pass
