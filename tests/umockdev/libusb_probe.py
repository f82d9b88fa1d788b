"""Run under rpiboot-virtual: describe what python-libusb1 sees, as one JSON line on stdout.

usage: libusb_probe.py system|bundled [--hotplug SECONDS]
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import time
from typing import Any

import usb1


def load(choice: str) -> None:
    if choice == "bundled":
        import libusb_package
        path = str(libusb_package.get_library_path())
    else:
        path = ctypes.util.find_library("usb-1.0") or "libusb-1.0.so.0"
    usb1.loadLibrary(ctypes.CDLL(path))


def describe(device: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "vid": device.getVendorID(), "pid": device.getProductID(),
        "bus": device.getBusNumber(), "address": device.getDeviceAddress(),
        "ports": list(device.getPortNumberList() or []), "speed": device.getDeviceSpeed(),
        "serial_index": device.getSerialNumberDescriptor()}
    if entry["vid"] != 0x0A5C:
        return entry
    handle = device.open()
    try:
        entry["manufacturer"] = handle.getManufacturer()
        try:
            entry["serial"] = handle.getSerialNumber() if entry["serial_index"] else None
        except usb1.USBErrorPipe:
            entry["serial"] = None  # index without a string, as on real ROMs
        handle.claimInterface(0)
        try:
            handle.controlRead(0xC0, 5, 0, 0, 4, 500)
            entry["odd_request"] = "answered"
        except usb1.USBErrorPipe:
            entry["odd_request"] = "stall"
        handle.releaseInterface(0)
    finally:
        handle.close()
    return entry


def hotplug(context: Any, seconds: float) -> list[str]:
    events: list[str] = []

    def callback(_context: Any, device: Any, event: int) -> bool:
        kind = "arrived" if event == usb1.HOTPLUG_EVENT_DEVICE_ARRIVED else "left"
        events.append(f"{kind} {device.getVendorID():04x}:{device.getProductID():04x}")
        return False

    context.hotplugRegisterCallback(callback, flags=0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        context.handleEventsTimeout(tv=0.1)
    return events


def main() -> None:
    load(sys.argv[1])
    with usb1.USBContext() as context:
        result: dict[str, Any] = {}
        if "--hotplug" in sys.argv:
            result["events"] = hotplug(context, float(sys.argv[sys.argv.index("--hotplug") + 1]))
        result["devices"] = [describe(d) for d in context.getDeviceList(skip_on_error=True)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
