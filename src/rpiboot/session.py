"""One device's journey from boot ROM to done: a session that spans its USB enumerations.

A session is keyed by USB port path, which stays the same while the device re-enumerates between
stages. :meth:`DeviceSession.run_stage` serves one enumeration (the ROM or a file server) over a
:class:`~rpiboot.transport.DeviceHandle`; the wire format and request parsing live in
:mod:`rpiboot.protocol`.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from . import protocol
from .errors import (BootDirectoryError, DeviceGoneError, PermissionDeniedError, ProtocolError,
                     RefusedError, RpibootError, StalledError, TransferError)
from .events import EventSink, event
from .file_source import BootFiles, ResolvedFile, find_default_directory, refusal_reason
from .metadata import MetadataRecord
from .options import BootOptions
from .targets import Target
from .transport import (AccessDenied, DeviceGone, DeviceHandle, DeviceInfo, DeviceRef,
                        TransferTimeout, UsbError)

ROM_SERIAL_INDEXES = (0, 3)


class State(enum.Enum):
    ROM = "rom"
    AWAITING_SERVER = "awaiting_server"
    SERVING = "serving"
    DONE = "done"
    FAILED = "failed"


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
    error: RpibootError | None = None
    directory: Path | None = None
    final: dict[str, object] | None = None
    """--follow: the USB function the device became (vendor/product, block devices)."""

    @property
    def terminal(self) -> bool:
        return self.state in (State.DONE, State.FAILED)

    def fail(self, error: RpibootError) -> None:
        if self.state is State.FAILED:
            return  # the first failure stands (a worker may end after the run timed it out)
        self.state, self.error, self.finished = State.FAILED, error, time.monotonic()
        self.emit(event("device_failed", self.port, code=error.code, message=str(error),
                        exit_code=int(error.exit_code)))

    def summary(self) -> dict[str, object]:
        end = self.finished if self.finished is not None else time.monotonic()
        return {"port": self.port, "chip": self.target.name, "serial": self.serial,
                "stages": list(self.stages), "files": self.files_served,
                "bytes": self.bytes_sent, "seconds": round(end - self.started, 3),
                "result": "ok" if self.state is State.DONE else
                ("failed" if self.state is State.FAILED else self.state.value),
                "error": None if self.error is None else self.error.code,
                "final": self.final}

    # --- one enumeration --------------------------------------------------------------------

    def run_stage(self, ref: DeviceRef) -> None:
        """Serve one enumeration. Errors end the session as FAILED; nothing propagates."""
        stage = stage_of(ref.info)
        self.stages.append(stage)
        self.state = State.ROM if stage == "rom" else State.SERVING
        try:
            self._files()  # a missing boot directory fails before the device is touched
            handle = self._open(ref)
            try:
                link = Link.for_device(handle, ref.info, self.options)
                if stage == "rom":
                    self._boot_rom(link)
                else:
                    self.serial = handle.read_string(ref.info.serial_index) or self.serial
                    _FileServer(self, link).serve()
            finally:
                _close(handle)
            time.sleep(self.options.close_delay)
        except RpibootError as error:
            self.fail(error)
        except DeviceGone as error:
            self.fail(DeviceGoneError(f"device left the bus: {error}"))
        except TransferTimeout as error:
            self.fail(StalledError(f"device stopped answering: {error}"))
        except UsbError as error:
            self.fail(TransferError(f"USB transfer failed: {error}"))
        except Exception as error:  # a bug must end this device's session, not the whole run
            self.fail(RpibootError(f"internal error: {type(error).__name__}: {error}"))

    def _files(self) -> BootFiles:
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
        attempts = max(1, self.options.retries)
        for attempt in range(attempts):
            try:
                return ref.open()
            except AccessDenied:
                from .udev import access_hint
                raise PermissionDeniedError(
                    f"Permission to access USB device {self.port} denied: "
                    f"{access_hint()}") from None
            except DeviceGone:
                raise
            except UsbError as error:
                if attempt == attempts - 1:
                    raise TransferError(f"cannot open device {self.port}: {error}") from None
                time.sleep(self.options.retry_delay)
        raise AssertionError("unreachable")

    def _boot_rom(self, link: Link) -> None:
        files = self._files()
        name = self.target.second_stage
        second_stage = files.resolve(name)
        if second_stage is None:
            raise BootDirectoryError(
                f"Failed to open second stage bootloader ({name}) for {self.target.name} in "
                f"'{self.directory}'")
        signature = self._rom_signature(files)
        self.emit(event("file_loaded", self.port, name=name, origin=second_stage.origin,
                        source=second_stage.kind, size=second_stage.size))
        self.emit(event("stage_started", self.port, stage="rom", chip=self.target.name,
                        file=name))
        began = time.monotonic()
        message = protocol.boot_message(second_stage.size, signature)
        link.write(len(message), [message])
        sent = link.write(second_stage.size, second_stage.chunks(self.options.chunk_size),
                          _progress_reporter(self, name, second_stage.size, began))
        self.bytes_sent += sent
        time.sleep(self.options.return_code_delay)
        code = protocol.parse_return_code(
            link.read(protocol.RETURN_CODE_SIZE, self.options.read_timeout))
        self.emit(event("second_stage_sent", self.port, name=name, size=sent,
                        return_code=code, seconds=round(time.monotonic() - began, 6)))
        if code != 0:
            raise RefusedError(f"device refused the second stage {name}: return code "
                               f"{code & 0xFFFFFFFF:#x}")
        self.state, self.left_rom_at = State.AWAITING_SERVER, time.monotonic()

    def _rom_signature(self, files: BootFiles) -> bytes:
        if not (self.options.signed and self.target.rom_signature_from_file):
            return b""
        found = files.resolve("bootcode.sig")
        data = found.read()[:protocol.SIGNATURE_SIZE] if found else b""
        if len(data) != protocol.SIGNATURE_SIZE:
            raise BootDirectoryError(f"Unable to open 'bootcode.sig' (20 bytes) in "
                                     f"'{self.directory}', needed by -s for {self.target.name}")
        return data


class _FileServer:
    """The file-server loop of one enumeration."""

    def __init__(self, session: DeviceSession, link: Link):
        self.session = session
        self.link = link
        self.options = session.options
        self.files = session._files()
        self.metadata = MetadataRecord()
        self.pending: ResolvedFile | None = None
        self.requests = 0

    def serve(self) -> None:
        port = self.session.port
        self.session.emit(event("stage_started", port, stage="server",
                                chip=self.session.target.name, serial=self.session.serial))
        while True:
            raw = self._next_message()
            if raw is None:
                self.session.emit(event("notice", port, message="device left the bus without "
                                        "a Done message; treating the stage as finished"))
                break
            self.requests += 1
            if self._handle(protocol.parse_file_message(raw)):
                break
        self._finish_metadata()
        session = self.session
        session.state, session.finished = State.DONE, time.monotonic()
        session.emit(event("stage_done", port, stage="server"))
        details = {key: value for key, value in session.summary().items() if key != "port"}
        session.emit(event("device_done", port, **details))

    def _next_message(self) -> bytes | None:
        """The next request, or None when the device left while idle (as upstream, that ends
        the stage)."""
        deadline = time.monotonic() + self.options.stall_timeout
        failures = 0
        while True:
            try:
                return self.link.read(protocol.FILE_MESSAGE_SIZE,
                                      min(self.options.read_timeout, self.options.stall_timeout))
            except DeviceGone:
                return None
            except TransferTimeout:
                if time.monotonic() >= deadline:
                    raise StalledError(f"device sent no request for "
                                       f"{self.options.stall_timeout:g} s") from None
            except UsbError as error:
                failures += 1
                if failures > self.options.retries:
                    raise TransferError(f"reading the next request failed {failures} times: "
                                        f"{error}") from None
                time.sleep(self.options.retry_delay)

    def _handle(self, request: protocol.FileServerEvent) -> bool:
        """Answer one request; True when the stage is over."""
        port = self.session.port
        if isinstance(request, protocol.Done):
            if request.acknowledge:
                self.link.reply_empty()
            return True
        if isinstance(request, protocol.Metadata):
            self._record_metadata(request)
            self.link.reply_empty()
        elif isinstance(request, protocol.GetFileSize):
            self._get_file_size(request.name)
        elif isinstance(request, protocol.ReadFile):
            self._read_file(request.name)
        else:
            self.session.emit(event("file_refused", port, name=None, reason=request.reason))
            if request.fatal:
                raise ProtocolError(f"device sent an invalid request: {request.reason}")
            if request.reply:
                self.link.reply_empty()
        return False

    def _get_file_size(self, name: str) -> None:
        port = self.session.port
        self.session.emit(event("file_requested", port, command="GetFileSize", name=name))
        reason = refusal_reason(name)
        if reason is not None:
            self.session.emit(event("file_refused", port, name=name, reason=reason))
        self.pending = None if reason else self.files.resolve(name)
        if self.pending is not None and self.pending.size > protocol.MAX_LENGTH:
            reason = "is 4 GiB or larger: the protocol's 32-bit length cannot announce it"
            self.session.emit(event("file_refused", port, name=name, reason=reason))
            self.pending = None
        if self.pending is None:
            self.link.reply_empty()
            if reason is None:
                self.session.emit(event("file_missing", port, name=name))
            return
        found = self.pending
        self.session.emit(event("file_loaded", port, name=name, origin=found.origin,
                                source=found.kind, size=found.size))
        self.link.reply_size(found.size)

    def _read_file(self, name: str) -> None:
        port = self.session.port
        self.session.emit(event("file_requested", port, command="ReadFile", name=name))
        found, self.pending = self.pending, None
        if found is None or found.name != name:
            # Upstream serves only the file its GetFileSize opened; anything else gets nothing.
            self.link.reply_empty()
            return
        began = time.monotonic()
        try:
            sent = self.link.write(found.size, found.chunks(self.options.chunk_size),
                                   _progress_reporter(self.session, name, found.size, began))
        except OSError as error:
            raise TransferError(f"cannot read {found.origin}: {error}") from None
        self.session.files_served += 1
        self.session.bytes_sent += sent
        self.session.emit(event("file_served", port, name=name, size=sent,
                                seconds=round(time.monotonic() - began, 6)))

    def _record_metadata(self, request: protocol.Metadata) -> None:
        if not self.session.target.sends_metadata:
            return
        self.metadata.add(request.key, request.value)
        self.session.emit(event("metadata", self.session.port, key=request.key,
                                value=self.metadata.values.get(request.key, request.value)))

    def _finish_metadata(self) -> None:
        for problem in self.metadata.problems:
            self.session.emit(event("notice", self.session.port, message=problem))
        if not (self.options.metadata and self.metadata):
            return
        port = self.session.port
        if self.options.metadata_dir is None:
            self.session.emit(event("metadata_json", port, json=self.metadata.to_json()))
            return
        try:
            path = self.metadata.write(self.options.metadata_dir, self.session.serial or port)
        except OSError as error:
            self.session.emit(event("notice", port, message=f"Failed to create metadata file "
                                    f"in {self.options.metadata_dir}: {error}; writing to "
                                    f"stdout instead"))
            self.session.emit(event("metadata_json", port, json=self.metadata.to_json()))
            return
        self.session.emit(event("metadata_written", port, path=str(path)))


@dataclass
class Link:
    """The protocol primitives over one opened enumeration (protocol.md, "Primitives")."""

    handle: DeviceHandle
    endpoint: int
    options: BootOptions

    @classmethod
    def for_device(cls, handle: DeviceHandle, info: DeviceInfo, options: BootOptions) -> "Link":
        # Some BCM2837 ROMs present mass storage first: the vendor interface is then 1, OUT 3.
        interface, endpoint = (0, 1) if info.num_interfaces == 1 else (1, 3)
        handle.claim_interface(interface)
        return cls(handle, endpoint, options)

    def write(self, length: int, chunks: Iterable[bytes],
              progress: Callable[[int], None] | None = None) -> int:
        """Announce ``length`` bytes with a control OUT, then send them by bulk OUT.

        ``progress`` is called with the bytes sent so far after every bulk transfer."""
        self.handle.vendor_out(*protocol.split_length(length), self.options.control_timeout)
        sent = 0
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                accepted = self.handle.bulk_out(self.endpoint, view, self.options.bulk_timeout)
                if accepted <= 0:
                    raise TransferError(f"device accepted no data after {sent} of {length} bytes")
                sent += accepted
                view = view[accepted:]
                if progress is not None:
                    progress(sent)
        if sent != length:
            raise TransferError(f"sent {sent} of {length} bytes")
        return sent

    def reply_size(self, size: int) -> None:
        """GetFileSize's answer: the size in wValue/wIndex, no data stage, no bulk."""
        self.handle.vendor_out(*protocol.split_length(size), self.options.control_timeout)

    def reply_empty(self) -> None:
        """The zero-length reply: missing file, metadata acknowledgement, empty name."""
        self.handle.vendor_out(0, 0, self.options.control_timeout)

    def read(self, length: int, timeout: float) -> bytes:
        return bytes(self.handle.vendor_in(*protocol.split_length(length), length, timeout))


PROGRESS_INTERVAL = 0.1
"""Seconds between ``file_progress`` events for one transfer."""


def _progress_reporter(session: DeviceSession, name: str, size: int,
                       began: float) -> Callable[[int], None]:
    """Emits ``file_progress`` at most every PROGRESS_INTERVAL (none for quick transfers;
    ``file_served`` / ``second_stage_sent`` mark the end)."""
    last = [began]

    def report(sent: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL:
            last[0] = now
            session.emit(event("file_progress", session.port, name=name, sent=sent, size=size,
                               seconds=round(now - began, 6)))

    return report


def _close(handle: DeviceHandle) -> None:
    try:
        handle.close()
    except UsbError:
        pass
