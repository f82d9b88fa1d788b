"""The device manager: finds Raspberry Pis in boot mode and serves them all at once.

Each enumeration is served on its own thread by the :class:`~rpiboot.session.DeviceSession` of
its USB port path, so several devices progress at the same time and a device keeps its session
while it re-enumerates between stages. The manager wakes on hot-plug events where the transport
has them and re-scans every poll interval regardless (hot-plug events are known to go missing).
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .errors import (ExitCode, NoDeviceError, RpibootError,
                     StalledError, worst)
from .events import Event, EventSink, event
from .follow import Follower
from .options import BootOptions
from .session import DeviceSession, State, stage_of
from .stop_signals import interruption
from .targets import Target, target_for
from .transport import AccessDenied, DeviceRef, Transport, UsbError, read_serial_number

SEEN_RETENTION = 2.0
"""Seconds an enumeration that left the bus stays known (a new one gets a new address)."""
JOIN_GRACE = 2.0
"""Seconds the end of a run waits for workers still inside a transfer."""
WAITING_LINE = "Waiting for BCM2835/6/7/2711/2712..."
JUMPER_HINT = (
    "No Raspberry Pi in USB boot mode yet. Compute Modules: fit the nRPIBOOT / EMMC-DISABLE "
    "jumper before connecting power and USB. Pi 5 / Pi 500: hold the power button while "
    "connecting power. Pi 4 / Pi 400: needs a bootloader set up for USB device boot (a GPIO, "
    "see rpi-eeprom). More help: https://rpltd.co/rpiboot")
"""Shown once when no board has arrived after HINT_AFTER (``BootOptions.hint_after``) seconds."""
HINT_AFTER = 5.0


@dataclass
class RunResult:
    sessions: list[DeviceSession] = field(default_factory=list)
    error: RpibootError | None = None
    """A failure of the run as a whole (no device arrived, interrupted...)."""
    final_exit_code: ExitCode | None = None
    """Fixed when the run ends, so a worker finishing late cannot change the verdict."""
    ignored: dict[str, dict[str, str]] = field(default_factory=dict)
    """Boards a filter (port, -p, -i) skipped, by port: chip and reason."""

    @property
    def exit_code(self) -> ExitCode:
        if self.final_exit_code is not None:
            return self.final_exit_code
        codes = [session.exit_code for session in self.sessions]
        if self.error is not None:
            codes.append(self.error.exit_code)
        return worst(codes)


class DeviceManager:
    def __init__(self, transport: Transport, options: BootOptions, emit: EventSink):
        self.transport = transport
        self.options = options
        self.emit = emit
        self.result = RunResult()
        self._by_port: dict[str, DeviceSession] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._seen: dict[tuple[object, ...], float] = {}
        """Enumerations already served or ignored, with when they were last listed."""
        self._started = time.monotonic()
        self._last_activity = self._started
        self._scan_finishing = False
        self._emit_lock = threading.Lock()
        self._ended = False
        """Set once the summary is due: a worker left behind must not report after it."""
        self._follower = Follower(options, self._emit_while_running) \
            if options.follow is not None else None
        self._hinted = False

    def run(self) -> RunResult:
        self.emit(event("waiting", message=WAITING_LINE))
        try:
            while not self._should_stop():
                self._scan()
                self._expire_waiting_sessions()
                self._hint_if_nothing_arrived()
                self.transport.wait_for_change(self.options.poll_interval)
        except KeyboardInterrupt as stop:
            self.result.error = interruption(stop)
            self._abandon_in_flight(
                functools.partial(interruption, stop, "interrupted before it finished"))
        self._join_workers()
        self.result.final_exit_code = self.result.exit_code
        with self._emit_lock:
            self._ended = True
        self.emit(event("summary", devices=[s.summary() for s in self.result.sessions],
                        ignored=[{"port": port, **seen} for port, seen in
                                 self.result.ignored.items()],
                        exit_code=int(self.result.final_exit_code)))
        return self.result

    def _emit_while_running(self, item: Event) -> None:
        """The sink for workers: the summary is the last event, whatever finishes late."""
        with self._emit_lock:
            if not self._ended:
                self.emit(item)

    def workers_alive(self) -> bool:
        """True while a worker still holds a device (the transport must stay open)."""
        return any(worker.is_alive() for worker in self._workers.values())

    # --- discovery --------------------------------------------------------------------------

    def _scan(self) -> None:
        try:
            refs = self.transport.devices()
        except UsbError as error:
            self.emit(event("notice", message=f"listing USB devices failed: {error}"))
            return
        now = time.monotonic()
        # Decided once per scan: devices listed together are all taken, however fast one of
        # them finishes (or fails) while the others are being started.
        self._scan_finishing = self._finishing()
        for ref in refs:
            target = target_for(ref.info.vendor_id, ref.info.product_id)
            if target is None:
                continue
            key = ref.info.enumeration_key
            if key in self._seen:
                self._seen[key] = now
            elif self._consider(ref, target):
                self._seen[key] = now
        # A departed enumeration is forgotten only after a while: a stale listing (another
        # libusb context, a lagging sysfs) must not make it look new again.
        self._seen = {key: last for key, last in self._seen.items()
                      if now - last < SEEN_RETENTION}
        if self._follower is not None:
            self._follower.scan(refs, self.result.sessions)

    def _consider(self, ref: DeviceRef, target: Target) -> bool:
        """Start serving an enumeration; False to look at it again on the next scan."""
        port = ref.info.port_path
        worker = self._workers.get(port)
        if worker is not None and worker.is_alive():
            return False
        session = self._by_port.get(port)
        continuing = session is not None and (
            session.waiting
            or (self.options.loop and session.state is State.DONE
                and stage_of(ref.info) == "server"))
        if not continuing:
            try:
                reason = self._filter_out(ref)
            except _LookAgain:
                return False
            if reason is not None:
                self.result.ignored[port] = {"chip": target.name, "reason": reason}
                self.emit(event("device_ignored", port, chip=target.name, reason=reason))
                return True
            if self._scan_finishing:
                return True
            session = DeviceSession(port, target, self.options, self._emit_while_running)
        assert session is not None
        self._start(session, ref)
        return True

    def _filter_out(self, ref: DeviceRef) -> str | None:
        info, options = ref.info, self.options
        if options.port_number is not None and info.port_number != options.port_number:
            return f"port {info.port_number} is not {options.port_number}"
        if options.port_path is not None and info.port_path != options.port_path:
            return f"path {info.port_path} is not {options.port_path}"
        if options.serial is not None:
            try:
                serial = read_serial_number(ref)
            except AccessDenied:
                return None  # cannot tell: serve it, so the permission error is reported
            except UsbError as error:
                raise _LookAgain(str(error)) from None
            if serial != options.serial:
                return f"serial number {serial!r} is not {options.serial!r}"
        return None

    def _start(self, session: DeviceSession, ref: DeviceRef) -> None:
        port = session.port
        if self._by_port.get(port) is not session:
            self._by_port[port] = session
            self.result.sessions.append(session)
        self.emit(event("device_arrived", port, chip=session.target.name,
                        stage=stage_of(ref.info), serial_index=ref.info.serial_index,
                        bus=ref.info.bus, address=ref.info.address, speed=ref.info.speed,
                        interfaces=ref.info.num_interfaces))
        worker = threading.Thread(target=session.run_stage, args=(ref,), daemon=True,
                                  name=f"rpiboot-{port}")
        self._workers[port] = worker
        self._last_activity = time.monotonic()
        worker.start()

    # --- ending -----------------------------------------------------------------------------

    def _busy(self) -> bool:
        return (any(worker.is_alive() for worker in self._workers.values())
                or any(s.waiting for s in self.result.sessions)
                or (self._follower is not None and self._follower.pending(self.result.sessions)))

    def _finishing(self) -> bool:
        """Without -l, no new device is taken once one has finished, as upstream."""
        return not self.options.loop and any(s.terminal for s in self.result.sessions)

    def _should_stop(self) -> bool:
        now = time.monotonic()
        if self._busy():
            self._last_activity = now
        elif self._finishing():
            return True
        options = self.options
        if options.run_timeout is not None and now - self._started >= options.run_timeout:
            self._time_out(f"run time limit of {options.run_timeout:g} s reached")
            return True
        if options.timeout is not None and not self._busy() and \
                now - self._last_activity >= options.timeout:
            if not self.result.sessions:
                self.result.error = NoDeviceError(self._nothing_served(
                    f"no Raspberry Pi in USB boot mode appeared within {options.timeout:g} s"))
            return True
        return False

    def _nothing_served(self, otherwise: str) -> str:
        """Why the run served nobody: every board seen was filtered out, or none came."""
        if not self.result.ignored:
            return otherwise
        boards = "; ".join(f"{port} ({seen['chip']}): {seen['reason']}"
                           for port, seen in self.result.ignored.items())
        return (f"no device was served: every Raspberry Pi seen was filtered out by -p, -i or "
                f"the port number: {boards}")

    def _hint_if_nothing_arrived(self) -> None:
        if self._hinted or self.result.sessions or self.result.ignored:
            return
        after = self.options.hint_after
        if time.monotonic() - self._started >= (HINT_AFTER if after is None else after):
            self._hinted = True
            self.emit(event("notice", message=JUMPER_HINT))

    def _time_out(self, reason: str) -> None:
        if not self.result.sessions:
            self.result.error = NoDeviceError(self._nothing_served(f"{reason}; no device "
                                                                   f"appeared"))
        self._abandon_in_flight(lambda: StalledError(f"unfinished: {reason}"))

    def _abandon_in_flight(self, make_error: Callable[[], RpibootError]) -> None:
        if self._follower is not None:
            self._follower.abandon(self.result.sessions, str(make_error()))
        for session in self.result.sessions:
            if not session.terminal:
                session.cancel(make_error())

    def _expire_waiting_sessions(self) -> None:
        limit = self.options.reenumerate_timeout
        for session in self.result.sessions:
            if session.waiting and session.left_rom_at is not None \
                    and time.monotonic() - session.left_rom_at > limit:
                session.expire(limit)

    def _join_workers(self) -> None:
        """Wait for workers, within one deadline. A cancelled worker stops at its next
        transfer; one stuck inside a transfer is left behind (its session has already failed,
        and the verdict is frozen) rather than holding up the exit."""
        deadline = time.monotonic() + JOIN_GRACE
        try:
            for worker in self._workers.values():
                worker.join(timeout=max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting, still report


class _LookAgain(Exception):
    """The enumeration could not be examined now; try it on the next scan."""
