"""The protocol's primitives over one opened enumeration (protocol.md, "Primitives").

write = control OUT announcing a length, then bulk OUT; the size reply and the zero-length reply
are control OUTs without data; reads are vendor control INs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

from . import protocol
from .errors import TransferError
from .events import EventSink, event
from .options import BootOptions
from .transport import DeviceHandle, DeviceInfo, UsbError


@dataclass
class Link:
    """A claimed vendor interface and the endpoint its data goes to."""

    handle: DeviceHandle
    endpoint: int
    options: BootOptions
    check_cancelled: Callable[[], None] = lambda: None
    """Raises when the run has given up on the device; called between transfers."""
    count_sent: Callable[[int], None] = lambda _count: None
    """Told every byte of data the device accepted, as it is accepted (so an interrupted
    transfer is counted as far as it went)."""

    @classmethod
    def for_device(cls, handle: DeviceHandle, info: DeviceInfo, options: BootOptions,
                   check_cancelled: Callable[[], None] = lambda: None,
                   count_sent: Callable[[int], None] = lambda _count: None) -> "Link":
        # Some BCM2837 ROMs present mass storage first: the vendor interface is then 1, OUT 3.
        interface, endpoint = (0, 1) if info.num_interfaces == 1 else (1, 3)
        handle.claim_interface(interface)
        return cls(handle, endpoint, options, check_cancelled, count_sent)

    def write(self, length: int, chunks: Iterable[bytes],
              progress: Callable[[int], None] | None = None, *, counted: bool = True) -> int:
        """Announce ``length`` bytes with a control OUT, then send them by bulk OUT.

        ``progress`` is called with the bytes sent so far after every bulk transfer; unless
        ``counted`` is False (the boot message), each accepted byte is reported to
        ``count_sent``."""
        self.handle.vendor_out(*protocol.split_length(length), self.options.control_timeout)
        sent = 0
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                self.check_cancelled()
                accepted = self.handle.bulk_out(self.endpoint, view, self.options.bulk_timeout)
                if accepted <= 0:
                    raise TransferError(f"device accepted no data after {sent} of {length} bytes")
                sent += accepted
                if counted:
                    self.count_sent(accepted)
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
        self.check_cancelled()
        return bytes(self.handle.vendor_in(*protocol.split_length(length), length, timeout))


PROGRESS_INTERVAL = 0.1
"""Seconds between ``file_progress`` events for one transfer."""


def progress_reporter(emit: EventSink, port: str, name: str, size: int,
                      began: float) -> Callable[[int], None]:
    """Emits ``file_progress`` at most every PROGRESS_INTERVAL (none for quick transfers;
    ``file_served`` / ``second_stage_sent`` mark the end)."""
    last = [began]

    def report(sent: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL:
            last[0] = now
            emit(event("file_progress", port, name=name, sent=sent, size=size,
                       seconds=round(now - began, 6)))

    return report


def close_quietly(handle: DeviceHandle) -> None:
    try:
        handle.close()
    except UsbError:
        pass
