"""The transport for real devices: python-libusb1 (``usb1``) over a libusb shared library.

Which libusb: ``--libusb PATH`` or ``RPIBOOT_LIBUSB`` (a file, or ``system``); by default the one
bundled with the ``libusb-package`` wheel, else the system's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
import time
import weakref
from typing import Any, Sequence

from .transport import (AccessDenied, DeviceGone, DeviceInfo, TransferFailed, TransferTimeout,
                        UsbError, UsbUnavailable)

FRESH_SCAN_INTERVAL = 0.05
"""Seconds between scans through a new libusb context when hot-plug has been silent."""
SPEEDS = {0: "unknown", 1: "low", 2: "full", 3: "high", 4: "super", 5: "super+"}


def _library_candidates(choice: str | None) -> list[str]:
    if choice and choice != "system":
        return [choice]
    system = ctypes.util.find_library("usb-1.0") or "libusb-1.0.so.0"
    if choice == "system":
        return [system]
    candidates = []
    try:
        import libusb_package
        bundled = libusb_package.get_library_path()
        if bundled:
            candidates.append(str(bundled))
    except Exception:  # a broken or absent wheel only means we fall back to the system one
        pass
    return candidates + [system]


def load_libusb(choice: str | None = None) -> str:
    """Load libusb for usb1 once per process; returns the path used."""
    try:
        import usb1
    except ImportError as error:
        raise UsbUnavailable(f"python-libusb1 is not installed ({error}); "
                             f"run: pip install libusb1 libusb-package") from None
    choice = choice or os.environ.get("RPIBOOT_LIBUSB") or None
    problems = []
    for candidate in _library_candidates(choice):
        try:
            library = ctypes.CDLL(candidate)
        except OSError as error:
            problems.append(f"{candidate}: {error}")
            continue
        if not usb1.loadLibrary(library):
            return "(already loaded)"
        return candidate
    from .udev import libusb_hint
    hint = libusb_hint()
    raise UsbUnavailable(f"cannot load libusb ({'; '.join(problems)}); {hint}")


class LibusbTransport:
    def __init__(self, library: str | None = None):
        self.library_path = load_libusb(library)
        import usb1
        self._usb1 = usb1
        try:
            self._context = usb1.USBContext()
            self._context.open()
        except usb1.USBError as error:
            raise UsbUnavailable(f"libusb could not start: {error}") from None
        self._main_lease = _ContextLease(self._context)
        self._fresh_lease: _ContextLease | None = None
        self._changed = threading.Event()
        self._hotplug_seen = False
        self._last_fresh_scan = time.monotonic()
        self._hotplug_handle = None
        if usb1.hasCapability(usb1.CAP_HAS_HOTPLUG):
            try:
                self._hotplug_handle = self._context.hotplugRegisterCallback(
                    self._on_hotplug, flags=0)
            except usb1.USBError:
                self._hotplug_handle = None

    @property
    def has_hotplug(self) -> bool:
        return self._hotplug_handle is not None

    def _on_hotplug(self, context: Any, device: Any, event: Any) -> bool:
        self._hotplug_seen = True
        self._changed.set()
        return False  # keep the callback registered

    def devices(self) -> Sequence["_LibusbRef"]:
        """The bus as it is now. libusb's device list only changes on hot-plug events, and
        those can go missing (netlink builds under umockdev get none; real hosts lose some), so
        every FRESH_SCAN_INTERVAL without news the bus is read through a new context. Devices
        keep their own context alive for as long as they (and handles opened from them) live."""
        now = time.monotonic()
        lease = self._main_lease
        if not self._hotplug_seen and now - self._last_fresh_scan >= FRESH_SCAN_INTERVAL:
            lease = self._renew_fresh_lease() or lease
            self._last_fresh_scan = now
        self._hotplug_seen = False
        try:
            found = lease.context.getDeviceList(skip_on_error=True)
        except self._usb1.USBError as error:
            raise _translate(error) from None
        return [ref for ref in (_LibusbRef.wrap(device, lease) for device in found) if ref]

    def _renew_fresh_lease(self) -> "_ContextLease | None":
        try:
            context = self._usb1.USBContext()
            context.open()
        except self._usb1.USBError:
            return None
        if self._fresh_lease is not None:
            self._fresh_lease.retire()
        self._fresh_lease = _ContextLease(context)
        return self._fresh_lease

    def wait_for_change(self, timeout: float) -> None:
        if self._hotplug_handle is None:
            time.sleep(timeout)
            return
        self._changed.clear()
        deadline = time.monotonic() + timeout
        while not self._changed.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                self._context.handleEventsTimeout(tv=remaining)
            except self._usb1.USBError:
                time.sleep(remaining)
                return

    def close(self) -> None:
        for lease in (self._fresh_lease, self._main_lease):
            if lease is not None:
                lease.retire()


class _ContextLease:
    """A libusb context shared by the devices listed through it. A retired context is closed
    once the last of its devices (and the handles opened from them) is gone, not before, so a
    worker still serving a device never loses it under its feet."""

    def __init__(self, context: Any):
        self.context = context
        self._users = 0
        self._retired = False
        self._lock = threading.Lock()

    def acquire(self, owner: object) -> None:
        with self._lock:
            self._users += 1
        weakref.finalize(owner, self._release)

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            closing = self._retired and self._users == 0
        if closing:
            self._close()

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            closing = self._users == 0
        if closing:
            self._close()

    def _close(self) -> None:
        try:
            self.context.close()
        except Exception:  # closing must never mask the run's own result
            pass


class _LibusbRef:
    def __init__(self, device: Any, info: DeviceInfo, lease: _ContextLease):
        self.device = device
        self.info = info
        lease.acquire(self)

    @classmethod
    def wrap(cls, device: Any, lease: _ContextLease) -> "_LibusbRef | None":
        try:
            interfaces = 1
            for configuration in device.iterConfigurations():
                interfaces = configuration.getNumInterfaces()
                break
            info = DeviceInfo(device.getVendorID(), device.getProductID(),
                              device.getSerialNumberDescriptor(), device.getBusNumber(),
                              device.getDeviceAddress(),
                              tuple(device.getPortNumberList() or ()), interfaces,
                              SPEEDS.get(device.getDeviceSpeed(), "unknown"))
        except Exception:  # a device that cannot even be described is not ours to serve
            return None
        return cls(device, info, lease)

    def open(self) -> "_LibusbHandle":
        import usb1
        try:
            return _LibusbHandle(self.device.open(), self)
        except usb1.USBError as error:
            raise _translate(error) from None


class _LibusbHandle:
    def __init__(self, handle: Any, ref: _LibusbRef):
        self._handle = handle
        self._ref = ref  # keeps the device's libusb context open while the handle lives

    def claim_interface(self, interface: int) -> None:
        self._call(self._handle.claimInterface, interface)

    def read_string(self, index: int) -> str | None:
        if index == 0:
            return None
        try:
            return self._handle.getASCIIStringDescriptor(index, errors="replace")
        except Exception:  # a missing string is normal for boot ROMs
            return None

    def vendor_out(self, value: int, index: int, timeout: float) -> None:
        self._call(self._handle.controlWrite, 0x40, 0, value, index, b"", _ms(timeout))

    def vendor_in(self, value: int, index: int, length: int, timeout: float) -> bytes:
        return bytes(self._call(self._handle.controlRead, 0xC0, 0, value, index, length,
                                _ms(timeout)))

    def bulk_out(self, endpoint: int, data: bytes | memoryview, timeout: float) -> int:
        return self._call(self._handle.bulkWrite, endpoint, data, _ms(timeout))

    def close(self) -> None:
        try:
            self._handle.close()
        except Exception:  # the device may already be gone
            pass

    @staticmethod
    def _call(operation: Any, *args: Any) -> Any:
        import usb1
        try:
            return operation(*args)
        except usb1.USBError as error:
            raise _translate(error) from None


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _translate(error: Exception) -> UsbError:
    import usb1
    if isinstance(error, usb1.USBErrorNoDevice):
        return DeviceGone(str(error))
    if isinstance(error, usb1.USBErrorAccess):
        return AccessDenied(str(error))
    if isinstance(error, usb1.USBErrorNotSupported) and sys.platform == "win32":
        # Windows reports a device without a WinUSB driver this way.
        return AccessDenied(f"{error} (no WinUSB driver bound to the device)")
    if isinstance(error, usb1.USBErrorTimeout):
        return TransferTimeout(str(error))
    return TransferFailed(str(error))  # pipe (stall), I/O, overflow, busy, ...
