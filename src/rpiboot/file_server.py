"""The file-server stage: answer a device's requests until it says it is done.

Requests are parsed by :mod:`rpiboot.protocol`; files come from :mod:`rpiboot.file_source`;
replies go out through a :class:`~rpiboot.link.Link`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import protocol
from .errors import DuplicateSerialWarning, ProtocolError, StalledError, TransferError
from .events import event
from .file_source import BootFiles, OpenFile, refusal_reason
from .link import Link, progress_reporter
from .board_info import decode_board
from .metadata import MetadataRecord
from .transport import DeviceGone, TransferTimeout, UsbError

if TYPE_CHECKING:
    from .session import DeviceSession


class LeftBeforeAsking(Exception):
    """A file server left the bus before sending a single request: not a finished stage
    (a glitching board that comes back at once must still be served)."""


class FileServer:
    """The file-server loop of one enumeration."""

    def __init__(self, session: DeviceSession, link: Link, files: BootFiles):
        self.session = session
        self.link = link
        self.options = session.options
        self.files = files
        self.metadata = MetadataRecord()
        self.pending: OpenFile | None = None
        self.asked = False
        """Whether the device sent any request in this enumeration."""
        """The file the last GetFileSize opened, kept for the ReadFile that follows."""

    def serve(self) -> None:
        port = self.session.port
        self.session.emit(event("stage_started", port, stage="server",
                                chip=self.session.target.name, serial=self.session.serial))
        try:
            self._serve_requests()
        finally:
            self._drop_pending()
        self._finish_metadata()
        self.session.complete()

    def _serve_requests(self) -> None:
        while True:
            raw = self._next_message()
            if raw is None and not self.asked:
                raise LeftBeforeAsking()
            if raw is None:
                self.session.emit(event("notice", self.session.port, message="device left the "
                                        "bus without a Done message; treating the stage as "
                                        "finished"))
                return
            self.asked = True
            if self._handle(protocol.parse_file_message(raw)):
                return

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
                if failures >= self.options.retries:
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
            if request.command in (protocol.Command.GET_FILE_SIZE, protocol.Command.READ_FILE):
                self._drop_pending()  # as upstream, whose GetFileSize/ReadFile closes its file
            self.session.emit(event("file_refused", port, name=None, reason=request.reason))
            if request.fatal:
                raise ProtocolError(f"device sent an invalid request: {request.reason}")
            if request.reply:
                self.link.reply_empty()
        return False

    def _get_file_size(self, name: str) -> None:
        port = self.session.port
        self.session.emit(event("file_requested", port, command="GetFileSize", name=name))
        self._drop_pending()
        reason = refusal_reason(name)
        opened = None if reason else self._open(name)
        if opened is not None and opened.size > protocol.MAX_LENGTH:
            opened.close()
            opened, reason = None, "is 4 GiB or larger: the protocol's 32-bit length cannot " \
                                   "announce it"
        if reason is not None:
            self.session.emit(event("file_refused", port, name=name, reason=reason))
        if opened is None:
            self.link.reply_empty()
            if reason is None:
                self.session.emit(event("file_missing", port, name=name))
            return
        self.pending = opened
        self.session.emit(event("file_loaded", port, name=name, origin=opened.resolved.origin,
                                source=opened.resolved.kind, size=opened.size))
        self.link.reply_size(opened.size)

    def _open(self, name: str) -> OpenFile | None:
        found = self.files.resolve(name)
        if found is None:
            return None
        try:
            return found.open()
        except OSError:
            return None  # vanished or unreadable since the lookup: missing, as for upstream

    def _read_file(self, name: str) -> None:
        port = self.session.port
        self.session.emit(event("file_requested", port, command="ReadFile", name=name))
        opened, self.pending = self.pending, None
        if opened is None or opened.name != name:
            # Upstream serves only the file its GetFileSize opened; anything else gets nothing.
            if opened is not None:
                opened.close()
            self.link.reply_empty()
            return
        with opened:
            began = time.monotonic()
            try:
                sent = self.link.write(opened.size, opened.chunks(self.options.chunk_size),
                                       progress_reporter(self.session.emit, port, name,
                                                         opened.size, began))
            except OSError as error:
                raise TransferError(f"cannot read {opened.resolved.origin}: {error}") from None
        self.session.files_served += 1
        self.session.emit(event("file_served", port, name=name, size=sent,
                                seconds=round(time.monotonic() - began, 6)))

    def _drop_pending(self) -> None:
        if self.pending is not None:
            self.pending.close()
            self.pending = None

    def _record_metadata(self, request: protocol.Metadata) -> None:
        if not self.session.target.sends_metadata:
            return
        stored = self.metadata.add(request.key, request.value)
        if stored is not None:
            self.session.emit(event("metadata", self.session.port, key=request.key,
                                    value=stored))

    def _finish_metadata(self) -> None:
        for problem in self.metadata.problems:
            self.session.emit(event("notice", self.session.port, message=problem))
        board = decode_board(self.metadata.values)
        if board is not None:
            self.session.board = board.to_dict()
        if not (self.options.metadata and self.metadata):
            return
        port = self.session.port
        if self.options.metadata_dir is None:
            self.session.emit(event("metadata_json", port, json=self.metadata.to_json()))
            return
        try:
            written = self.metadata.write(self.options.metadata_dir, self.session.serial or port)
        except OSError as error:
            self.session.emit(event("notice", port, message=f"Failed to create metadata file "
                                    f"in {self.options.metadata_dir}: {error}; writing to "
                                    f"stdout instead"))
            self.session.emit(event("metadata_json", port, json=self.metadata.to_json()))
            return
        if written.conflict is not None:
            self.session.warn(DuplicateSerialWarning(
                f"another device with serial {self.session.serial!r} has a different record "
                f"in {written.conflict}; kept it and wrote this one to {written.path}"))
            self.session.emit(event("metadata_conflict", port, serial=self.session.serial,
                                    path=str(written.path), existing=str(written.conflict)))
        self.session.emit(event("metadata_written", port, path=str(written.path)))
