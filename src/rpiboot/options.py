"""Settings of one run, shared by the command line and the Python API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class BootOptions:
    directory: Path | None = None
    """Boot directory (-d); None picks the default directory for each chip."""
    overlay: bool = False
    """-o: prefer DIR/<usb-path>/NAME."""
    loop: bool = False
    """-l: keep serving devices that arrive."""
    signed: bool = False
    """-s: the directory holds bootsig.bin; BCM2835/7 get bootcode.sig in the boot message."""
    port_number: int | None = None
    port_path: str | None = None
    serial: str | None = None
    metadata: bool = False
    """-j: record OTP metadata the device reports."""
    metadata_dir: Path | None = None
    """-j DIR: where DIR/<serial>.json goes; None prints the JSON on stdout."""
    verbose: int = 0

    poll_interval: float = 0.01
    """Seconds between bus scans when hot-plug gives no news (-m, in microseconds)."""
    timeout: float | None = None
    """Give up when no device has arrived (or, with -l, nothing has happened) for this long."""
    run_timeout: float | None = None
    """Stop the whole run after this long."""

    # Upstream sleeps a fixed second at each of these points; evidence from other hosts
    # (node-raspberrypi-usbboot) shows the ROM needs none, so they default to zero.
    open_delay: float = 0.0
    return_code_delay: float = 0.0
    close_delay: float = 0.0

    retry_delay: float = 0.05
    retries: int = 5
    reenumerate_timeout: float = 10.0
    """How long a device may take to come back after the second stage was accepted."""
    stall_timeout: float = 60.0
    """How long a file server may stay silent before it is declared stalled."""
    follow: float | None = None
    """--follow: after the file server is done, wait this long for the device to reappear at
    its port path as its final USB function (e.g. the mass-storage gadget); None: don't."""
    sysfs_root: Path = Path("/sys")
    """Where --follow looks for block devices (Linux); injectable for tests."""
    follow_settle: float = 3.0
    """How long --follow waits for a block device after the final function appeared."""
    hint_after: float | None = None
    """Seconds without any board before the jumper / power-button hint is shown (None: the
    manager's HINT_AFTER, 5 s)."""
    control_timeout: float = 1.0
    bulk_timeout: float = 5.0
    read_timeout: float = 20.0
    chunk_size: int = 256 * 1024
