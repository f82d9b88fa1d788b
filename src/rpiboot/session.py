"""One device's journey from boot ROM to done: a session that spans its USB enumerations.

A session is keyed by USB port path, which stays the same while the device re-enumerates between
stages. :meth:`DeviceSession.run_stage` serves one enumeration (the ROM or a file server) over a
:class:`~rpiboot.transport.DeviceHandle`; the wire format and request parsing live in
:mod:`rpiboot.protocol`.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import protocol
from .errors import (BootDirectoryError, DeviceGoneError, ExitCode, PermissionDeniedError,
                     ProtocolError, RefusedError, RpibootError, StalledError, TransferError)
from .events import EventSink, event
from .file_server import FileServer, LeftBeforeAsking
from .file_source import BootFiles, find_default_directory
from .link import Link, close_quietly, progress_reporter
from .options import BootOptions
from .targets import Target
from .transport import (AccessDenied, DeviceGone, DeviceHandle, DeviceInfo, DeviceRef,
                        TransferTimeout, UsbError)
from .udev import access_hint

ROM_SERIAL_INDEXES = (0, 3)


class State(enum.Enum):
    ROM = "rom"
    AWAITING_SERVER = "awaiting_server"
    RETRYING = "retrying"
    """A transient failure; waiting (``--reenumerate-timeout``) for the board to come back."""
    SERVING = "serving"
    DONE = "done"
    FAILED = "failed"


RETRYABLE = (DeviceGoneError, StalledError, TransferError)
"""Failures a board can recover from by coming back at its port (a glitch, a reset)."""


class Cancelled(Exception):
    """Raised inside a worker whose session the run has already ended (not an error of its
    own: the session already carries the reason)."""


def stage_of(info: DeviceInfo) -> str:
    return "rom" if info.serial_index in ROM_SERIAL_INDEXES else "server"


@dataclass
class DeviceSession:
    port: str
    target: Target
    options: BootOptions
    emit: EventSink
    state: State = State.ROM
    serial: str | None = None
    stages: list[str] = field(default_factory=list)
    files_served: int = 0
    bytes_sent: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    left_rom_at: float | None = None
    """When the device last left the bus expecting to come back (second stage accepted, a
    file server that left before asking, a retry)."""
    retry_error: RpibootError | None = None
    """While RETRYING or AWAITING_SERVER after a glitch: the failure reported if the board does
    not come back."""
    attempts: int = 1
    error: RpibootError | None = None
    warning: RpibootError | None = None
    """Something the device did that the run's exit status reports although it completed."""
    directory: Path | None = None
    final: dict[str, object] | None = None
    """--follow: the USB function the device became (vendor/product, block devices)."""
    board: dict[str, object] | None = None
    """The board its OTP metadata describes (:mod:`rpiboot.board_info`), when it sent some."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when the run gives up on this device; its worker stops at the next request or chunk."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def terminal(self) -> bool:
        return self.state in (State.DONE, State.FAILED)

    @property
    def waiting(self) -> bool:
        """The board left the bus and is expected back at the same port."""
        return self.state in (State.AWAITING_SERVER, State.RETRYING)

    def expire(self, limit: float) -> None:
        """Called by the manager: the board did not come back within ``limit`` seconds."""
        if self.retry_error is not None:
            self.fail(type(self.retry_error)(f"{self.retry_error} (it did not come back "
                                             f"within {limit:g} s)"))
        else:
            self.fail(DeviceGoneError(f"device did not come back within {limit:g} s after "
                                      f"accepting the second stage"))

    def fail(self, error: RpibootError, *, after_done: bool = False) -> None:
        """End the session as failed, unless it has already ended: the first outcome stands
        (a worker may finish after the run has timed it out, and must not overturn that).
        ``after_done`` lets --follow fail a device whose file server had finished."""
        if not self._end(State.FAILED, error, after_done=after_done):
            return
        self.emit(event("device_failed", self.port, code=error.code, message=str(error),
                        exit_code=int(error.exit_code)))

    def complete(self) -> None:
        if not self._end(State.DONE, None):
            return
        self.emit(event("stage_done", self.port, stage="server"))
        details = {key: value for key, value in self.summary().items() if key != "port"}
        self.emit(event("device_done", self.port, **details))

    def warn(self, warning: RpibootError) -> None:
        self.warning = self.warning or warning

    @property
    def exit_code(self) -> ExitCode:
        if self.state is State.DONE:
            return self.warning.exit_code if self.warning else ExitCode.OK
        return self.error.exit_code if self.error else ExitCode.TRANSFER

    def cancel(self, error: RpibootError) -> None:
        """Give up on the device from another thread (run time-out, Ctrl-C)."""
        self.cancelled.set()
        self.fail(error)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("the run gave up on this device")

    def _end(self, state: State, error: RpibootError | None, *, after_done: bool = False) -> bool:
        with self._lock:
            if self.state is State.FAILED or (self.state is State.DONE and not after_done):
                return False
            if state is State.DONE and self.cancelled.is_set():
                return False
            self.state, self.error, self.finished = state, error, time.monotonic()
            return True

    def _begin_stage(self, stage: str) -> bool:
        """Enter a new stage; False if the run has already given up on the device."""
        with self._lock:
            if self.cancelled.is_set() or self.state is State.FAILED:
                return False
            self.stages.append(stage)
            self.state = State.ROM if stage == "rom" else State.SERVING
            return True

    def summary(self) -> dict[str, object]:
        end = self.finished if self.finished is not None else time.monotonic()
        return {"port": self.port, "chip": self.target.name, "serial": self.serial,
                "stages": list(self.stages), "files": self.files_served,
                "bytes": self.bytes_sent, "seconds": round(end - self.started, 3),
                "result": "ok" if self.state is State.DONE else
                ("failed" if self.state is State.FAILED else self.state.value),
                "error": None if self.error is None else self.error.code,
                "warning": None if self.warning is None else self.warning.code,
                "final": self.final, "board": self.board}

    # --- one enumeration --------------------------------------------------------------------

    def run_stage(self, ref: DeviceRef) -> None:
        """Serve one enumeration. Errors end the session as FAILED; nothing propagates."""
        stage = stage_of(ref.info)
        if not self._begin_stage(stage):
            return
        try:
            files = self.boot_files()  # a missing boot directory fails before the device is opened
            handle = self._open(ref)
            try:
                link = Link.for_device(handle, ref.info, self.options, self.check_cancelled,
                                       self._count_sent)
                if stage == "rom":
                    self._boot_rom(link, files)
                else:
                    self.serial = handle.read_string(ref.info.serial_index) or self.serial
                    FileServer(self, link, files).serve()
            finally:
                close_quietly(handle)
            time.sleep(self.options.close_delay)
        except Cancelled:
            pass  # already failed by whoever cancelled
        except LeftBeforeAsking:
            self._await_return(DeviceGoneError("the file server left the bus before asking "
                                               "for anything"), State.AWAITING_SERVER)
        except RpibootError as error:
            self._fail_or_retry(error)
        except DeviceGone as error:
            self._fail_or_retry(DeviceGoneError(f"device left the bus: {error}"))
        except TransferTimeout as error:
            self._fail_or_retry(StalledError(f"device stopped answering: {error}"))
        except UsbError as error:
            self._fail_or_retry(TransferError(f"USB transfer failed: {error}"))
        except Exception as error:  # a bug must end this device's session, not the whole run
            self.fail(RpibootError(f"internal error: {type(error).__name__}: {error}"))

    def _count_sent(self, count: int) -> None:
        with self._lock:
            self.bytes_sent += count

    def _fail_or_retry(self, error: RpibootError) -> None:
        """A transient failure with attempts left waits for the board to come back at its port
        (upstream retries a board that resets; ``--retries`` bounds it here)."""
        if not isinstance(error, RETRYABLE) or self.attempts >= self.options.retries:
            self.fail(error)
            return
        self.attempts += 1
        if self._await_return(error, State.RETRYING):
            self.emit(event("device_retrying", self.port, code=error.code, message=str(error),
                            attempt=self.attempts, attempts=self.options.retries,
                            wait=self.options.reenumerate_timeout))

    def _await_return(self, error: RpibootError, state: State) -> bool:
        with self._lock:
            if self.terminal or self.cancelled.is_set():
                return False
            self.state, self.retry_error = state, error
            self.left_rom_at = time.monotonic()
            return True

    def boot_files(self) -> BootFiles:
        if self.directory is None:
            if self.options.directory is not None:
                self.directory = self.options.directory
            else:
                self.directory = find_default_directory(self.target)
                self.emit(event("notice", self.port,
                                message=f"Directory not specified - using {self.directory}"))
        overlay = self.port if self.options.overlay else None
        return BootFiles(self.directory, self.target, overlay_path=overlay)

    def _open(self, ref: DeviceRef) -> DeviceHandle:
        time.sleep(self.options.open_delay)
        attempt = 1
        while True:
            try:
                return ref.open()
            except AccessDenied:
                raise PermissionDeniedError(
                    f"Permission to access USB device {self.port} denied: "
                    f"{access_hint()}") from None
            except DeviceGone:
                raise
            except UsbError as error:
                if attempt >= self.options.retries:
                    raise TransferError(f"cannot open device {self.port} after {attempt} "
                                        f"attempts: {error}") from None
            attempt += 1
            time.sleep(self.options.retry_delay)

    def _boot_rom(self, link: Link, files: BootFiles) -> None:
        name = self.target.second_stage
        second_stage = files.resolve(name)
        if second_stage is None:
            raise BootDirectoryError(
                f"Failed to open second stage bootloader ({name}) for {self.target.name} in "
                f"'{self.directory}'")
        if second_stage.size > protocol.MAX_SECOND_STAGE:
            raise BootDirectoryError(
                f"second stage {second_stage.origin} is {second_stage.size} bytes; the boot "
                f"message can announce at most {protocol.MAX_SECOND_STAGE} (2 GiB - 1)")
        signature = self._rom_signature(files)
        self.emit(event("file_loaded", self.port, name=name, origin=second_stage.origin,
                        source=second_stage.kind, size=second_stage.size))
        self.emit(event("stage_started", self.port, stage="rom", chip=self.target.name,
                        file=name))
        began = time.monotonic()
        message = protocol.boot_message(second_stage.size, signature)
        link.write(len(message), [message], counted=False)
        try:
            sent = link.write(second_stage.size, second_stage.chunks(self.options.chunk_size),
                              progress_reporter(self.emit, self.port, name,
                                                second_stage.size, began))
        except OSError as error:
            raise BootDirectoryError(f"cannot read {second_stage.origin}: {error}") from None
        time.sleep(self.options.return_code_delay)
        raw = link.read(protocol.RETURN_CODE_SIZE, self.options.read_timeout)
        if len(raw) != protocol.RETURN_CODE_SIZE:
            raise ProtocolError(f"the boot ROM answered with a {len(raw)}-byte return code "
                                f"instead of {protocol.RETURN_CODE_SIZE} bytes")
        code = protocol.parse_return_code(raw)
        self.emit(event("second_stage_sent", self.port, name=name, size=sent,
                        return_code=code, seconds=round(time.monotonic() - began, 6)))
        if code != 0:
            raise RefusedError(f"device refused the second stage {name}: return code "
                               f"{code & 0xFFFFFFFF:#x}")
        with self._lock:
            if not self.terminal:
                self.state, self.left_rom_at = State.AWAITING_SERVER, time.monotonic()
                self.retry_error = None

    def _rom_signature(self, files: BootFiles) -> bytes:
        if not (self.options.signed and self.target.rom_signature_from_file):
            return b""
        found = files.resolve("bootcode.sig")
        data = found.read()[:protocol.SIGNATURE_SIZE] if found else b""
        if len(data) != protocol.SIGNATURE_SIZE:
            raise BootDirectoryError(f"Unable to open 'bootcode.sig' (20 bytes) in "
                                     f"'{self.directory}', needed by -s for {self.target.name}")
        return data
