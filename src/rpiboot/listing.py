"""``rpiboot --list``: the Raspberry Pis currently in USB boot mode, without booting them.

Works over the :class:`~rpiboot.transport.Transport` interface. The only thing sent to a device
is a GET_DESCRIPTOR request for its serial-number string (file-server stages; boot ROMs have
none), which does not disturb the boot protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from .output import printable
from .session import stage_of
from .targets import target_for
from .transport import AccessDenied, Transport, UsbError, read_serial_number


@dataclass(frozen=True)
class ListedDevice:
    port: str
    chip: str
    stage: str
    """``rom`` (waiting for the second stage) or ``server`` (a file server asking for files)."""
    vendor_id: int
    product_id: int
    bus: int
    address: int
    speed: str
    serial: str | None
    """None when the device has no serial string (most boot ROMs; the BCM2711's has one) or
    it could not be read."""
    serial_problem: str | None = None
    """Why the serial could not be read (``permission``, ``error``), else None."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_devices(transport: Transport, *, read_serials: bool = True) -> list[ListedDevice]:
    """Every Raspberry Pi in USB boot mode on the bus, sorted by port path."""
    found = []
    for ref in transport.devices():
        info = ref.info
        target = target_for(info.vendor_id, info.product_id)
        if target is None:
            continue
        stage = stage_of(info)
        serial, problem = None, None
        # File servers have a serial string, and so does the BCM2711 ROM (index 3): the value
        # -i selects by. Other ROMs have none (index 0).
        if read_serials and info.serial_index:
            serial, problem = _read_serial(ref)
        found.append(ListedDevice(info.port_path, target.name, stage, info.vendor_id,
                                  info.product_id, info.bus, info.address, info.speed, serial,
                                  problem))
    return sorted(found, key=lambda device: (_port_key(device.port), device.address))


def _read_serial(ref: Any) -> tuple[str | None, str | None]:
    try:
        return read_serial_number(ref), None
    except AccessDenied:
        return None, "permission"
    except UsbError:
        return None, "error"


def _port_key(port: str) -> tuple[int, ...]:
    return tuple(int(part) for part in port.replace("-", ".").split(".") if part.isdigit())


def format_table(devices: Sequence[ListedDevice]) -> list[str]:
    """Lines for people."""
    if not devices:
        return ["No Raspberry Pi in USB boot mode found."]
    rows = [("PORT", "CHIP", "STAGE", "USB ID", "SPEED", "SERIAL")]
    for device in devices:
        serial = printable(device.serial) if device.serial else (
            f"({device.serial_problem})" if device.serial_problem else "-")
        rows.append((device.port, device.chip, device.stage,
                     f"{device.vendor_id:04x}:{device.product_id:04x}", device.speed, serial))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]
    if any(device.serial_problem == "permission" for device in devices):
        from .udev import own_command
        lines.append("Some serial numbers could not be read: permission denied; run "
                     f"'{own_command()} --udev-rule' to see how to allow access.")
    return lines
