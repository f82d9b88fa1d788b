"""``--follow``: after the file server is done, watch the device's port path until it comes back
as its final USB function (for example the mass-storage gadget) and report what it became.

The device manager calls :meth:`Follower.scan` with every device on the bus at each scan; a
session being followed keeps the run busy. Outcomes (docs/events.md):

* the final function appeared: a ``device_followed`` event (vendor:product and, on Linux, the
  block devices found below ``/sys/bus/usb/devices/<port>``);
* it did not appear within ``--follow SECONDS``: the session fails with code ``follow_timeout``
  (exit status 5).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .errors import FollowTimeoutError
from .events import EventSink, event
from .options import BootOptions
from .session import DeviceSession, State
from .targets import target_for
from .transport import DeviceRef

DEFAULT_FOLLOW_SECONDS = 60.0


def block_devices(sysfs_root: Path, port_path: str) -> list[str]:
    """Names of the block devices (``sda``...) below the USB device at ``port_path`` in sysfs."""
    return sorted(block_device_dirs(sysfs_root, port_path))


def block_device_dirs(sysfs_root: Path, port_path: str) -> dict[str, Path]:
    """The sysfs directory of each block device below the USB device at ``port_path``, by name.

    Walks the real device directory without following symbolic links (sysfs is full of loops).
    """
    device = Path(sysfs_root) / "bus" / "usb" / "devices" / port_path
    try:
        start = device.resolve(strict=True)
    except OSError:
        return {}
    found: dict[str, Path] = {}
    for directory, subdirectories, _files in os.walk(start, followlinks=False):
        if os.path.basename(directory) == "block":
            for name in subdirectories:
                found.setdefault(name, Path(directory) / name)
            subdirectories.clear()
    return found


@dataclass
class _Watch:
    session: DeviceSession
    deadline: float
    seen_at: float | None = None
    vendor_id: int = 0
    product_id: int = 0
    finished: bool = False


class Follower:
    def __init__(self, options: BootOptions, emit: EventSink):
        self.options = options
        self.emit = emit
        self.seconds = DEFAULT_FOLLOW_SECONDS if options.follow is None else options.follow
        self._watches: dict[int, _Watch] = {}

    def pending(self, sessions: Iterable[DeviceSession]) -> bool:
        """True while some session waits for its final function (keeps the run going)."""
        return (any(not watch.finished for watch in self._watches.values())
                or any(s.state is State.DONE and id(s) not in self._watches for s in sessions))

    def abandon(self, sessions: Iterable[DeviceSession], reason: str) -> None:
        """The run ends (run time limit, interrupt): unfollowed devices fail."""
        for session in sessions:
            watch = self._watches.get(id(session))
            if session.state is State.DONE and (watch is None or not watch.finished):
                if watch is not None:
                    watch.finished = True
                else:
                    self._watches[id(session)] = _Watch(session, 0.0, finished=True)
                session.fail(FollowTimeoutError(
                    f"device had not reappeared as its final USB function at {session.port} "
                    f"when the run ended: {reason}"), after_done=True)

    def scan(self, refs: Sequence[DeviceRef], sessions: Iterable[DeviceSession]) -> None:
        now = time.monotonic()
        for session in sessions:
            if session.state is State.DONE and id(session) not in self._watches:
                self._watches[id(session)] = _Watch(
                    session, (session.finished or now) + self.seconds)
        for watch in self._watches.values():
            if not watch.finished:
                self._check(watch, refs, now)

    def _check(self, watch: _Watch, refs: Sequence[DeviceRef], now: float) -> None:
        session = watch.session
        if session.state is not State.DONE:  # failed or serving again (-l): not ours any more
            watch.finished = True
            return
        if watch.seen_at is None:
            final = next((ref for ref in refs if ref.info.port_path == session.port
                          and target_for(ref.info.vendor_id, ref.info.product_id) is None),
                         None)
            if final is None:
                if now >= watch.deadline:
                    watch.finished = True
                    session.fail(FollowTimeoutError(
                        f"device did not reappear as its final USB function at {session.port} "
                        f"within {self.seconds:g} s (--follow)"), after_done=True)
                return
            watch.seen_at = now
            watch.vendor_id, watch.product_id = final.info.vendor_id, final.info.product_id
        blocks = block_devices(self.options.sysfs_root, session.port)
        usb_dir = Path(self.options.sysfs_root) / "bus" / "usb" / "devices" / session.port
        settled = (blocks or not usb_dir.exists()
                   or now - watch.seen_at >= self.options.follow_settle
                   or now >= watch.deadline)
        if not settled:
            return
        watch.finished = True
        final_info = {"vendor_id": watch.vendor_id, "product_id": watch.product_id,
                      "usb_id": f"{watch.vendor_id:04x}:{watch.product_id:04x}",
                      "block_devices": blocks}
        session.final = final_info
        started = session.finished if session.finished is not None else now
        self.emit(event("device_followed", session.port, **final_info,
                        seconds=round(now - started, 6)))
