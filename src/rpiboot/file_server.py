"""The file-server stage: answer a device's requests until it says it is done.

Requests are parsed by :mod:`rpiboot.protocol`; files come from :mod:`rpiboot.file_source`;
replies go out through a :class:`~rpiboot.link.Link`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import protocol
from .errors import ProtocolError, StalledError, TransferError
from .events import event
from .file_source import ResolvedFile, refusal_reason
from .link import Link, progress_reporter
from .metadata import MetadataRecord
from .transport import DeviceGone, TransferTimeout, UsbError

if TYPE_CHECKING:
    from .session import DeviceSession


class FileServer:
    """The file-server loop of one enumeration."""

    def __init__(self, session: DeviceSession, link: Link):
        self.session = session
        self.link = link
        self.options = session.options
        self.files = session.boot_files()
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
        self.session.complete()

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
                                   progress_reporter(self.session.emit, port, name, found.size,
                                                     began))
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
