"""Boot one board at its port through the engine's public API, and say what it became.

Used by the eeprom step (the recovery firmware built for this run) and the boot step (the
mass-storage gadget, followed to its block devices).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..api import boot
from ..errors import RpibootError
from ..events import Event
from ..options import BootOptions
from .bus import BusWatcher, PortView, served_key
from .errors import BootStepError, Interrupted


@dataclass
class BootOutcome:
    serial: str | None
    chip: str
    metadata: dict[str, str] = field(default_factory=dict)
    """OTP metadata the firmware reported (recovery.bin), untrusted strings."""
    block_devices: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    board: dict[str, Any] | None = None
    """The board decoded from its OTP metadata, where the engine reports it (summary "board")."""


@dataclass
class BootRequest:
    watcher: BusWatcher
    port: str
    directory: Path | None
    stop: threading.Event
    exclude: set[tuple[int, int, int]]
    """Enumerations served by earlier steps of the board; this step adds the ones it serves."""
    timeout: float
    """How long the board may take to (re)appear at its port."""
    follow: float | None = None
    """Wait this long for the final USB function (mass-storage gadget); None: don't."""
    sysfs_root: Path = Path("/sys")
    step_timeout: float | None = None
    on_event: Callable[[Event], None] | None = None


def boot_at_port(request: BootRequest) -> BootOutcome:
    """Serve the board at ``request.port`` until its file server is done (and, with follow,
    until it reappears as its final function). Raises :class:`BootStepError`."""
    view = PortView(request.watcher, request.port, request.stop, request.exclude)
    metadata: dict[str, str] = {}
    served: set[tuple[int, int, int]] = set()

    def collect(item: Event) -> None:
        if item.kind == "metadata" and isinstance(item.data.get("key"), str):
            metadata[item.data["key"]] = str(item.data.get("value"))
        if item.kind == "device_arrived":
            served.add(served_key(item.data["bus"], item.data["address"],
                                  item.data["serial_index"]))
        if request.on_event is not None:
            request.on_event(item)

    options = BootOptions(directory=request.directory, port_path=request.port,
                          timeout=request.timeout, run_timeout=request.step_timeout,
                          follow=request.follow, sysfs_root=request.sysfs_root)
    try:
        result = boot(options, on_event=collect, transport=view)
    except RpibootError as error:
        raise BootStepError(str(error), error.code) from None
    finally:
        request.exclude.update(served)
    if request.stop.is_set():
        raise Interrupted("interrupted while booting")
    session = result.sessions[0] if result.sessions else None
    if session is None:
        message = str(result.error) if result.error else "the board did not appear"
        raise BootStepError(f"{message} at {request.port}",
                            "board_gone" if result.error is None else _code(result.error))
    failure = session.error or result.error
    if failure is not None:
        raise BootStepError(str(failure), _code(failure))
    final: dict[str, Any] = session.final or {}
    blocks = [name for name in final.get("block_devices", []) if isinstance(name, str)]
    board = session.summary().get("board")
    return BootOutcome(serial=session.serial, chip=session.target.name, metadata=metadata,
                       block_devices=blocks, bytes_sent=session.bytes_sent,
                       board=board if isinstance(board, dict) else None)


def _code(error: RpibootError) -> str:
    return "board_gone" if error.code == "no_device" else error.code
