"""A virtual Raspberry Pi in USB boot mode, modelled as the host sees it.

A board goes through stages, each a separate USB enumeration at the same port path: the boot ROM
(receives the second stage), one or more file servers (ask the host for files and send
metadata), and optionally a final function (such as the mass-storage gadget). The model checks
that the host follows the protocol, records everything it receives, and reports protocol
violations in :attr:`VirtualPi.violations` instead of raising, so tests can assert on them.

Boards built from firmware roles (recovery, mass-storage-gadget, secure-boot...: requests that
depend on the files received, a virtual OTP, several boots at one port) come from
:func:`rpiboot.simulator.firmware_roles.virtual_board`; the gadget's disks are
:class:`rpiboot.simulator.virtual_disk.VirtualDisk`.

Bus back-ends (the in-process bus, the umockdev bridge) implement :class:`BusListener`.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

from . import descriptors
from .script import DONE, GET_FILE_SIZE, READ_FILE, Request, done, load, metadata
from .virtual_disk import (GADGET_MANUFACTURER, GADGET_PRODUCT, GADGET_PRODUCT_ID,
                           GADGET_VENDOR_ID, VirtualDisk)

BROADCOM = 0x0A5C
PRODUCT_IDS = {"2835": 0x2763, "2837": 0x2764, "2711": 0x2711, "2712": 0x2712}
SECOND_STAGE = {"2835": "bootcode.bin", "2837": "bootcode.bin", "2711": "bootcode4.bin",
                "2712": "bootcode5.bin"}
VENDOR_OUT, VENDOR_IN = 0x40, 0xC0
STANDARD_IN, GET_DESCRIPTOR = 0x80, 6


class DeviceError(Exception):
    """Raised into the bus back-end, which maps it to its own error reporting."""


class Gone(DeviceError):
    """The enumeration has left the bus."""


class Stall(DeviceError):
    """The device stalls the request (the host sees a pipe error)."""


class NoAnswer(DeviceError):
    """The device never answers: the host's transfer times out."""


class BusListener(Protocol):
    def attach(self, pi: "VirtualPi", function: "UsbFunction") -> None: ...

    def detach(self, pi: "VirtualPi", function: "UsbFunction") -> None: ...


@dataclass
class RomStage:
    serial_index: int = 0
    return_code: int = 0
    num_interfaces: int = 1
    serial: str | None = None
    """Serial string for the ROM enumeration; unknown on real ROMs, so none by default."""
    check: Callable[[bytes], int] | None = None
    """Decides the return code from the second stage received (firmware roles); overrides
    ``return_code``."""
    return_code_size: int = 4
    """Fault knob: bytes the ROM answers the return-code read with (a faulty ROM: fewer)."""


@dataclass
class ServerStage:
    requests: Sequence[Request]
    serial: str = "0123abcd"
    serial_index: int = 4
    stall_at_request: int | None = None
    """Index of the request read that the device never answers."""
    role: Any = None
    """A :class:`~rpiboot.simulator.firmware_roles.Role`: requests come from it (depending on
    what the host sent) instead of ``requests``."""
    leave_at_request: int | None = None
    """Fault knob: at this request read the device drops off the bus and re-enumerates as the
    next stage (a file server that glitches before asking for anything)."""


@dataclass
class FinalStage:
    """The board's last USB function, by default the mass-storage gadget (identity and disk
    layout as upstream's mass-storage-gadget64 presents them: see :mod:`.virtual_disk`)."""

    vendor_id: int = GADGET_VENDOR_ID
    product_id: int = GADGET_PRODUCT_ID
    serial: str = ""
    serial_index: int = 0
    disks: Sequence[VirtualDisk] = ()
    """The gadget's disks; bus back-ends that model sysfs show them as block devices."""


Stage = RomStage | ServerStage | FinalStage


@dataclass
class Received:
    """One thing the host sent, in order."""

    stage: int
    kind: str
    """boot_message, second_stage, return_code_read, size, file, ack, request_read."""
    name: str = ""
    value: int = 0
    data: bytes = b""
    sha256: str = ""


class UsbFunction:
    """One enumeration: descriptors plus the endpoint-zero and bulk OUT behaviour."""

    def __init__(self, pi: "VirtualPi", stage_index: int, vendor_id: int, product_id: int,
                 serial_index: int, num_interfaces: int, strings: dict[int, str]):
        self.pi = pi
        self.stage_index = stage_index
        self.vendor_id = vendor_id
        self.product_id = product_id
        self.serial_index = serial_index
        self.num_interfaces = num_interfaces
        self.strings = strings
        self.alive = True
        self.bulk_endpoint = 0x01 if num_interfaces == 1 else 0x03
        self.vendor_interface = 0 if num_interfaces == 1 else 1

    @property
    def speed(self) -> int:
        return 480

    def device_descriptor(self) -> bytes:
        return descriptors.device_descriptor(self.vendor_id, self.product_id, self.serial_index)

    def config_descriptor(self) -> bytes:
        return descriptors.config_descriptor(self.num_interfaces)

    def string_descriptor(self, index: int) -> bytes | None:
        if index == 0:
            return descriptors.LANGUAGE_LIST
        text = self.strings.get(index)
        return None if text is None else descriptors.string_descriptor(text)

    def claim(self, interface: int) -> None:
        self._check_alive()
        if interface >= self.num_interfaces:
            raise Stall(f"no interface {interface}")

    def control_in(self, request_type: int, request: int, value: int, index: int,
                   length: int) -> bytes:
        self._check_alive()
        if request_type == STANDARD_IN and request == GET_DESCRIPTOR:
            return self._descriptor(value, length)
        if request_type != VENDOR_IN or request != 0:
            raise Stall(f"unexpected control IN {request_type:#x}/{request}")
        return self.pi.vendor_in(self, (index << 16) | value, length)

    def control_out(self, request_type: int, request: int, value: int, index: int,
                    data: bytes = b"") -> None:
        self._check_alive()
        if request_type != VENDOR_OUT or request != 0 or data:
            raise Stall(f"unexpected control OUT {request_type:#x}/{request}")
        self.pi.vendor_out(self, (index << 16) | value)

    def bulk_out(self, endpoint: int, data: bytes) -> int:
        self._check_alive()
        if endpoint & 0x7F != self.bulk_endpoint:
            raise Stall(f"bulk OUT to endpoint {endpoint:#x}, expected {self.bulk_endpoint:#x}")
        return self.pi.bulk_out(self, bytes(data))

    def _descriptor(self, value: int, length: int) -> bytes:
        kind, index = value >> 8, value & 0xFF
        if kind == 1:
            found: bytes | None = self.device_descriptor()
        elif kind == 2:
            found = self.config_descriptor()
        elif kind == 3:
            found = self.string_descriptor(index)
        else:
            found = None
        if found is None:
            raise Stall(f"no descriptor {value:#06x}")
        return found[:length]

    def _check_alive(self) -> None:
        if not self.alive:
            raise Gone("device has left the bus")


@dataclass
class _Transfer:
    """A write announced by a control OUT and still expecting bulk data."""

    expected: int
    purpose: str
    name: str = ""
    received: bytearray = field(default_factory=bytearray)
    # Bytes are kept only when ``keep`` (VirtualPi.keep_data): large transfers need no memory.
    keep: bool = True
    count: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


class VirtualPi:
    """One board. Thread-safe: a bus back-end may call it from any thread."""

    def __init__(self, chip: str, port_numbers: Sequence[int] = (1,), bus_number: int = 1,
                 stages: Sequence[Stage] | None = None, *, reenumerate_delay: float = 0.0,
                 unplug_after_bytes: int | None = None, keep_data: bool = True,
                 open_error: str | None = None, glitch_after_bytes: int | None = None,
                 glitch_count: int = 1):
        if chip not in PRODUCT_IDS:
            raise ValueError(f"unknown chip {chip!r}; choose from {', '.join(PRODUCT_IDS)}")
        self.chip = chip
        self.product_id = PRODUCT_IDS[chip]
        self.port_numbers = tuple(port_numbers)
        self.bus_number = bus_number
        self.stages: list[Stage] = list(stages) if stages is not None else [
            RomStage(serial_index=3 if chip == "2711" else 0),
            ServerStage(load("start.elf") + [done()])]
        self.reenumerate_delay = reenumerate_delay
        self.unplug_after_bytes = unplug_after_bytes
        self.keep_data = keep_data
        self.open_error = open_error
        self.glitch_after_bytes = glitch_after_bytes
        """Fault knob: after this many bulk bytes in a stage the board drops off the bus and
        comes back at the same port in the same stage (a reset), ``glitch_count`` times."""
        self.glitches_left = glitch_count if glitch_after_bytes is not None else 0
        self.received: list[Received] = []
        self.violations: list[str] = []
        self.stage_index = -1
        self.finished = threading.Event()
        """Set when the last stage has ended (or the board was unplugged)."""
        self.finished_at: float | None = None
        """time.monotonic() when ``finished`` was set."""
        self._lock = threading.RLock()
        self._bus: BusListener | None = None
        self._function: UsbFunction | None = None
        self._pending: _Transfer | None = None
        self._awaiting: Request | None = None
        self._request_cursor = 0
        self._request_reads = 0
        self._sizes: dict[bytes, int] = {}
        self._script: Iterator[Request] | None = None
        self.halted = False
        """The firmware stopped (e.g. recovery.bin without recovery_reboot=1): no later stage."""
        self._bulk_bytes = 0
        self._timer: threading.Timer | None = None

    # --- life cycle -------------------------------------------------------------------------

    @property
    def port_path(self) -> str:
        return f"{self.bus_number}-" + ".".join(map(str, self.port_numbers))

    @property
    def function(self) -> UsbFunction | None:
        return self._function

    def plug_in(self, bus: BusListener) -> None:
        with self._lock:
            self._bus = bus
            self._enter_stage(0)

    def unplug(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._leave_bus()
            self._mark_finished()

    def _mark_finished(self) -> None:
        if not self.finished.is_set():
            self.finished_at = time.monotonic()
            self.finished.set()

    def _enter_stage(self, index: int) -> None:
        self.stage_index = index
        if index >= len(self.stages):
            self._mark_finished()
            return
        self._pending, self._awaiting = None, None
        self._request_cursor, self._request_reads, self._bulk_bytes = 0, 0, 0
        stage = self.stages[index]
        self._script = None
        if isinstance(stage, ServerStage) and stage.role is not None:
            from .firmware_roles import StageView

            self._script = stage.role.requests(StageView(self, index))
        self._function = self._make_function(index, stage)
        assert self._bus is not None
        self._bus.attach(self, self._function)
        if isinstance(self.stages[index], FinalStage):
            self._mark_finished()

    def _make_function(self, index: int, stage: Stage) -> UsbFunction:
        strings = {1: "Broadcom", 2: "BCM2xxx Boot"}
        if isinstance(stage, RomStage):
            if stage.serial:
                strings[stage.serial_index] = stage.serial
            return UsbFunction(self, index, BROADCOM, self.product_id, stage.serial_index,
                               stage.num_interfaces, strings)
        if isinstance(stage, ServerStage):
            strings[stage.serial_index] = stage.serial
            return UsbFunction(self, index, BROADCOM, self.product_id, stage.serial_index, 1,
                               strings)
        strings = {1: GADGET_MANUFACTURER, 2: GADGET_PRODUCT}
        if stage.serial:
            strings[stage.serial_index] = stage.serial
        return UsbFunction(self, index, stage.vendor_id, stage.product_id, stage.serial_index, 1,
                           strings)

    def _leave_bus(self) -> None:
        function, self._function = self._function, None
        if function is not None:
            function.alive = False
            if self._bus is not None:
                self._bus.detach(self, function)

    def _next_stage(self) -> None:
        """Drop off the bus and come back as the next stage at the same port path."""
        self._leave_bus()
        following = self.stage_index + 1
        current = self.stages[self.stage_index]
        if isinstance(current, ServerStage) and current.role is not None and current.role.halts:
            self.halted = True
            self._mark_finished()
        elif following >= len(self.stages):
            self.stage_index = following
            self._mark_finished()
        elif self.reenumerate_delay > 0:
            self._timer = threading.Timer(self.reenumerate_delay, self._enter_later, (following,))
            self._timer.daemon = True
            self._timer.start()
        else:
            self._enter_stage(following)

    def _repeat_stage(self) -> None:
        """Leave the bus and come back in the stage just left, from its start."""
        self.stages.insert(self.stage_index + 1, self.stages[self.stage_index])
        self._next_stage()

    def _enter_later(self, index: int) -> None:
        with self._lock:
            self._enter_stage(index)

    # --- protocol, device side --------------------------------------------------------------

    def vendor_out(self, function: UsbFunction, length: int) -> None:
        with self._lock:
            self._check_current(function)
            if self._pending is not None:
                self._violation(f"new write announced with {self._pending.count} of "
                                f"{self._pending.expected} bytes still outstanding")
                self._pending = None
            stage = self.stages[self.stage_index]
            if isinstance(stage, RomStage):
                self._rom_announce(length)
            elif isinstance(stage, ServerStage):
                self._server_reply(length)
            else:
                raise Stall("final function takes no vendor requests")

    def vendor_in(self, function: UsbFunction, length: int, buffer_size: int) -> bytes:
        with self._lock:
            self._check_current(function)
            stage = self.stages[self.stage_index]
            if isinstance(stage, RomStage):
                return self._rom_return_code(stage, buffer_size)
            if isinstance(stage, ServerStage):
                return self._server_request(stage, buffer_size)
            raise Stall("final function takes no vendor requests")

    def bulk_out(self, function: UsbFunction, data: bytes) -> int:
        with self._lock:
            self._check_current(function)
            self._bulk_bytes += len(data)
            if self.unplug_after_bytes is not None and self._bulk_bytes > self.unplug_after_bytes:
                self.unplug()
                raise Gone("unplugged during a transfer")
            if self.glitches_left and self._bulk_bytes > (self.glitch_after_bytes or 0):
                self.glitches_left -= 1
                self._repeat_stage()
                raise Gone("dropped off the bus during a transfer (glitch)")
            transfer = self._pending
            if transfer is None:
                self._violation(f"{len(data)} bulk bytes with no write announced")
                raise Stall("unexpected bulk data")
            if transfer.count + len(data) > transfer.expected:
                self._violation(f"bulk data overruns the announced {transfer.expected} bytes")
                raise Stall("too much bulk data")
            transfer.count += len(data)
            transfer.digest.update(data)
            if transfer.keep:
                transfer.received += data
            if transfer.count == transfer.expected:
                self._pending = None
                self._complete(transfer)
            return len(data)

    def _check_current(self, function: UsbFunction) -> None:
        if function is not self._function or not function.alive:
            raise Gone("device has left the bus")

    def _violation(self, text: str) -> None:
        self.violations.append(f"stage {self.stage_index}: {text}")

    def _record(self, kind: str, name: str = "", value: int = 0, data: bytes = b"",
                sha256: str | None = None) -> None:
        # The boot message is always kept: the ROM checks the second stage against its length.
        keep = self.keep_data or kind == "boot_message"
        if sha256 is None:
            sha256 = hashlib.sha256(data).hexdigest() if data or kind in ("file",
                                                                          "second_stage") else ""
        self.received.append(Received(self.stage_index, kind, name, value,
                                      data if keep else b"", sha256))

    def _rom_announce(self, length: int) -> None:
        stage_records = [r for r in self.received if r.stage == self.stage_index]
        if not stage_records:
            if length != 24:
                self._violation(f"boot message announced as {length} bytes, expected 24")
            self._pending = _Transfer(length, "boot_message")
        elif len(stage_records) == 1:
            declared = struct.unpack_from("<i", stage_records[0].data.ljust(4, b"\0"))[0]
            if length != declared:
                self._violation(f"second stage announced as {length} bytes, boot message "
                                f"said {declared}")
            self._pending = _Transfer(length, "second_stage", keep=self.keep_data)
        else:
            self._violation("more writes than the ROM expects")
        if self._pending is not None and self._pending.expected == 0:
            self._violation("zero-length write in the ROM stage")
            self._pending = None

    def _rom_return_code(self, stage: RomStage, buffer_size: int) -> bytes:
        kinds = [r.kind for r in self.received if r.stage == self.stage_index]
        if kinds != ["boot_message", "second_stage"]:
            self._violation(f"return code read after {kinds}")
            raise Stall("return code not ready")
        self._record("return_code_read", value=buffer_size)
        code = stage.return_code if stage.check is None else stage.check(self.second_stage(
            self.stage_index))
        answer = struct.pack("<i", code)[:min(buffer_size, stage.return_code_size)]
        if code == 0:
            self._next_stage()
        return answer

    def _complete(self, transfer: _Transfer) -> None:
        if transfer.purpose in ("boot_message", "second_stage"):
            self._record(transfer.purpose, data=bytes(transfer.received),
                         value=transfer.expected, sha256=transfer.digest.hexdigest())
        else:
            self._record("file", transfer.name, transfer.expected, bytes(transfer.received),
                         sha256=transfer.digest.hexdigest())

    def _server_request(self, stage: ServerStage, buffer_size: int) -> bytes:
        if self._awaiting is not None and self._awaiting.command != DONE:
            self._violation(f"request read while the reply to {self._awaiting.text!r} is due")
        index = self._request_reads
        self._request_reads += 1
        if stage.leave_at_request is not None and index == stage.leave_at_request:
            self._next_stage()
            raise Gone("left the bus before its first answer (glitch)")
        if stage.stall_at_request is not None and index >= stage.stall_at_request:
            raise NoAnswer("device stopped answering")
        request = self._next_request(stage)
        if request is None:
            raise NoAnswer("script exhausted")
        self._awaiting = request
        self._record("request_read", request.text, request.command)
        message = struct.pack("<i", request.command) + request.name.ljust(256, b"\0")[:256]
        if request.command == DONE and request.name:
            self._awaiting = None
            self._next_stage()
        return message[:buffer_size]

    def _next_request(self, stage: ServerStage) -> Request | None:
        if self._script is not None:
            return next(self._script, None)
        while self._request_cursor < len(stage.requests):
            request = stage.requests[self._request_cursor]
            self._request_cursor += 1
            if request.only_if_found and self._sizes.get(request.name, 0) == 0:
                continue
            return request
        return None

    def _server_reply(self, length: int) -> None:
        request = self._awaiting
        if request is None:
            self._violation(f"reply ({length}) with no request outstanding")
            return
        self._awaiting = None
        if not request.name:
            self._ack(request, length)
            self._next_stage()
        elif request.name.startswith(b"*"):
            self._ack(request, length)
        elif request.command == GET_FILE_SIZE:
            self._sizes[request.name] = length
            self._record("size", request.text, length)
        elif request.command == READ_FILE:
            if length == 0:
                self._record("file", request.text, 0)
            else:
                self._pending = _Transfer(length, "file", request.text, keep=self.keep_data)
        else:
            self._violation(f"reply to unknown command {request.command}")

    def _ack(self, request: Request, length: int) -> None:
        if length != 0:
            self._violation(f"acknowledgement of {request.text!r} carried length {length}")
        self._record("ack", request.text, length)

    # --- conveniences for tests ---------------------------------------------------------------

    def files(self) -> dict[str, bytes]:
        """Every file the host sent in file-server stages, by requested name."""
        return {r.name: r.data for r in self.received if r.kind == "file" and r.value}

    def sizes(self) -> dict[str, int]:
        return {r.name: r.value for r in self.received if r.kind == "size"}

    def second_stage(self, stage: int | None = None) -> bytes:
        return next((r.data for r in self.received if r.kind == "second_stage"
                     and (stage is None or r.stage == stage)), b"")


def typical_pi(chip: str, port_numbers: Sequence[int] = (1,), *, serial: str = "0123abcd",
               files: Sequence[str] = ("config.txt", "start.elf"),
               meta: dict[str, str] | None = None, **options: object) -> VirtualPi:
    """A board with the usual two stages: the ROM, then a file server loading ``files``."""
    requests: list[Request] = []
    for name in files:
        requests += load(name)
    requests += [metadata(key, value) for key, value in (meta or {}).items()]
    requests.append(done())
    rom = RomStage(serial_index=3 if chip == "2711" else 0,
                   num_interfaces=2 if options.pop("two_interfaces", False) else 1)
    stages: list[Stage] = [rom, ServerStage(requests, serial=serial)]
    return VirtualPi(chip, port_numbers, stages=stages, **options)  # type: ignore[arg-type]
