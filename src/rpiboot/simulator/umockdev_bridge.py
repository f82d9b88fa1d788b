"""Virtual Raspberry Pis behind emulated Linux usbfs, for real libusb (umockdev).

Runs only under Debian's ``/usr/bin/python3`` (PyGObject + the UMockdev typelib) inside
``umockdev-wrapper``; see :mod:`rpiboot.simulator.umockdev_host` for the runner. Standard library
plus ``gi`` only: never import the project's USB or UI dependencies here.

Arrangement:

* Each enumeration of a :class:`~rpiboot.simulator.virtual_pi.VirtualPi` gets a sysfs device at
  its port path (``.../usb1/1-3``, ``.../usb1/1-1/1-1.4``) with a fresh device number, and a node
  ``/dev/bus/usb/BBB/DDD`` whose ioctls are answered by :class:`_Node`. Root hubs (1d6b:0002) and
  intermediate hubs are created on demand so libusb can compute port paths.
* :meth:`UmockdevBus.attach` / :meth:`UmockdevBus.detach` are called by the VirtualPi from any
  thread, including from inside an ioctl handler (re-enumeration). They only queue work; one
  bus thread applies it to the testbed, in order.
* A mass-storage gadget's disks become block devices below its USB device, each ``/dev/sdX``
  backed by the disk's own file (:mod:`rpiboot.simulator.umockdev_disks`).
* ioctl handlers run in umockdev's own worker thread. URBs complete at once (they are queued for
  REAPURBNDELAY), except when the device never answers: then the URB stays pending until libusb
  discards it.
"""

from __future__ import annotations

import errno
import gc
import os
import queue
import shutil
import struct
import sys
import threading
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402

from .umockdev_disks import DiskRecords  # noqa: E402
from .virtual_pi import (DeviceError, FinalStage, Gone, NoAnswer, Stall, UsbFunction,  # noqa: E402
                         VirtualPi)

# usbdevfs ioctl numbers (LP64 Linux: x86-64, aarch64).
SETCONFIGURATION = 0x80045505
GETDRIVER = 0x41045508
SUBMITURB = 0x8038550A
DISCARDURB = 0x550B
REAPURB = 0x4008550C
REAPURBNDELAY = 0x4008550D
CLAIMINTERFACE = 0x8004550F
RELEASEINTERFACE = 0x80045510
IOCTL = 0xC0105512
RESET = 0x5514
CLEAR_HALT = 0x80045515
GET_CAPABILITIES = 0x8004551A
DISCONNECT_CLAIM = 0x8108551B
GET_SPEED = 0x551F

# ZERO_PACKET | BULK_CONTINUATION | NO_PACKET_SIZE_LIM | BULK_SCATTER_GATHER |
# REAP_AFTER_DISCONNECT: libusb then submits each bulk transfer as a single URB.
CAPABILITIES = 0x01 | 0x02 | 0x04 | 0x08 | 0x10
USB_SPEED_HIGH = 3
URB_SIZE = 56
URB_TYPE_CONTROL, URB_TYPE_BULK = 2, 3

SYSFS_ROOT = "/devices/platform/rpiboot-virtual-hcd"


@dataclass
class _Urb:
    data: Any
    """The UMockdev.IoctlData of the client's struct usbdevfs_urb."""
    address: int
    status: int = 0
    actual: int = 0


@dataclass
class _ClientState:
    completed: deque[_Urb] = field(default_factory=deque)
    pending: dict[int, _Urb] = field(default_factory=dict)


class _Node:
    """One enumeration's device node and the ioctl handler behind it."""

    def __init__(self, bus: "UmockdevBus", pi: VirtualPi, function: UsbFunction, devnum: int):
        self.bus = bus
        self.pi = pi
        self.function = function
        self.busnum = pi.bus_number
        self.devnum = devnum
        self.port_path = pi.port_path
        self.devnode = f"/dev/bus/usb/{self.busnum:03d}/{devnum:03d}"
        self.gone = False
        self.clients: dict[Any, _ClientState] = {}
        self.handler = UMockdev.IoctlBase()
        self.handler.connect("handle-ioctl", self._on_ioctl)

    @property
    def syspath(self) -> str:
        return self.bus.syspath(self.port_path)

    # --- dispatch -----------------------------------------------------------------------------

    def _on_ioctl(self, _handler: Any, client: Any) -> bool:
        request = client.get_request()
        handler = self._HANDLERS.get(request)
        if handler is None:
            self.bus.note_unhandled(request)
            client.complete(-1, errno.ENOTTY)
            return True
        try:
            result, error = handler(self, client)
        except Exception:  # an escaped exception would end as a silent ENOTTY
            self.bus.record_error(f"{self.devnode} ioctl {request:#x}:\n{traceback.format_exc()}")
            result, error = -1, errno.EIO
        client.complete(result, error)  # exactly once: umockdev asserts on a second call
        return True

    def _state(self, client: Any) -> _ClientState:
        state = self.clients.get(client)
        if state is None:
            state = self.clients[client] = _ClientState()
        return state

    def _simple(self, client: Any, result: int = 0) -> tuple[int, int]:
        return (-1, errno.ENODEV) if self.gone else (result, 0)

    # --- handlers: each returns (ioctl result, errno) -----------------------------------------

    def _capabilities(self, client: Any) -> tuple[int, int]:
        client.get_arg().resolve(0, 4).update(0, list(struct.pack("<I", CAPABILITIES)))
        return self._simple(client)

    def _claim(self, client: Any) -> tuple[int, int]:
        interface = struct.unpack("<I", bytes(client.get_arg().resolve(0, 4).retrieve()))[0]
        try:
            self.function.claim(interface)
        except Gone:
            return -1, errno.ENODEV
        except DeviceError:
            return -1, errno.ENOENT
        return 0, 0

    def _no_driver(self, client: Any) -> tuple[int, int]:
        return -1, errno.ENODEV if self.gone else errno.ENODATA

    def _speed(self, client: Any) -> tuple[int, int]:
        return self._simple(client, USB_SPEED_HIGH)

    def _submit(self, client: Any) -> tuple[int, int]:
        if self.gone:
            return -1, errno.ENODEV
        arg = client.get_arg()
        address = struct.unpack("<Q", bytes(arg.retrieve())[:8])[0]
        urb_data = arg.resolve(0, URB_SIZE)
        header = bytes(urb_data.retrieve())
        kind, endpoint = header[0], header[1]
        length = struct.unpack_from("<i", header, 24)[0]
        buffer = urb_data.resolve(16, length) if length > 0 else None
        urb = _Urb(urb_data, address)
        try:
            if kind == URB_TYPE_CONTROL:
                self._control(urb, buffer)
            elif kind == URB_TYPE_BULK and not endpoint & 0x80:
                payload = bytes(buffer.retrieve()) if buffer is not None else b""
                urb.actual = self.function.bulk_out(endpoint, payload)
            else:
                raise Stall(f"unsupported URB type {kind} endpoint {endpoint:#x}")
        except Gone:
            return -1, errno.ENODEV
        except NoAnswer:
            self._state(client).pending[address] = urb  # until libusb's timeout discards it
            return 0, 0
        except Stall:
            urb.status, urb.actual = -errno.EPIPE, 0
        self._state(client).completed.append(urb)
        return 0, 0

    def _control(self, urb: _Urb, buffer: Any) -> None:
        raw = bytes(buffer.retrieve()) if buffer is not None else b""
        if len(raw) < 8:
            raise Stall("control URB without a setup packet")
        request_type, request, value, index, length = struct.unpack_from("<BBHHH", raw)
        if request_type & 0x80:
            reply = self.function.control_in(request_type, request, value, index, length)
            reply = reply[:length]
            if reply:
                buffer.update(8, list(reply))
            urb.actual = len(reply)
        else:
            self.function.control_out(request_type, request, value, index, raw[8:8 + length])
            urb.actual = length

    def _reap(self, client: Any) -> tuple[int, int]:
        """REAPURB and REAPURBNDELAY alike: nothing to reap is EAGAIN (libusb only polls)."""
        state = self._state(client)
        if not state.completed:
            return -1, errno.ENODEV if self.gone else errno.EAGAIN
        urb = state.completed.popleft()
        urb.data.update(4, list(struct.pack("<i", urb.status)))
        urb.data.update(28, list(struct.pack("<i", urb.actual)))
        client.get_arg().resolve(0, 8).set_ptr(0, urb.data)
        return 0, 0

    def _discard(self, client: Any) -> tuple[int, int]:
        address = struct.unpack("<Q", bytes(client.get_arg().retrieve())[:8])[0]
        state = self._state(client)
        urb = state.pending.pop(address, None)
        if urb is None:
            return -1, errno.EINVAL  # already completed: what libusb expects then
        urb.status, urb.actual = -errno.ENOENT, 0
        state.completed.append(urb)
        return 0, 0

    _HANDLERS: dict[int, Callable[["_Node", Any], tuple[int, int]]] = {
        GET_CAPABILITIES: _capabilities,
        CLAIMINTERFACE: _claim,
        DISCONNECT_CLAIM: _claim,
        RELEASEINTERFACE: _simple,
        SETCONFIGURATION: _simple,
        RESET: _simple,
        CLEAR_HALT: _simple,
        GETDRIVER: _no_driver,
        IOCTL: _no_driver,
        GET_SPEED: _speed,
        SUBMITURB: _submit,
        REAPURB: _reap,
        REAPURBNDELAY: _reap,
        DISCARDURB: _discard,
    }


def _hub_descriptors(vendor_id: int, product_id: int) -> bytes:
    device = struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, 9, 0, 1, 64, vendor_id, product_id,
                         0x0600, 0, 0, 0, 1)
    interface = struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 1, 9, 0, 0, 0)
    endpoint = struct.pack("<BBBBHB", 7, 5, 0x81, 0x03, 4, 12)
    body = interface + endpoint
    config = struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), 1, 1, 0, 0xE0, 0) + body
    return device + config


def _record(syspath: str, devnode: str, busnum: int, devnum: int, descriptors: bytes) -> str:
    return (f"P: {syspath}\n"
            f"N: {devnode[len('/dev/'):]}\n"
            "E: SUBSYSTEM=usb\n"
            "E: DEVTYPE=usb_device\n"
            f"E: BUSNUM={busnum:03d}\n"
            f"E: DEVNUM={devnum:03d}\n"
            f"E: DEVNAME={devnode}\n"
            f"A: busnum={busnum}\\n\n"
            f"A: devnum={devnum}\\n\n"
            "A: speed=480\\n\n"
            "A: bConfigurationValue=1\\n\n"
            f"H: descriptors={descriptors.hex()}\n")


class UmockdevBus:
    """A BusListener that presents virtual Pis to libusb through a umockdev testbed.

    Create it inside ``umockdev-wrapper``; call :meth:`close` when done.
    """

    def __init__(self, testbed: Any = None):
        self._owns_testbed = testbed is None
        self.testbed: Any = testbed if testbed is not None else UMockdev.Testbed.new()
        self._root_dir: str = self.testbed.get_root_dir()
        self.closed = False
        self.errors: list[str] = []
        self.unhandled: list[str] = []
        self.enumerations: list[dict[str, Any]] = []
        self.pis: list[VirtualPi] = []
        self._lock = threading.Lock()
        self._nodes: dict[int, _Node] = {}
        self._devnodes: dict[str, _Node] = {}
        self._in_use: set[tuple[int, int]] = set()
        self._next_devnum: dict[int, int] = {}
        self._hubs: set[str] = set()
        self.disks = DiskRecords(self._root_dir)
        self._work: "queue.Queue[tuple[str, Any] | None]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="umockdev-bus", daemon=True)
        self._thread.start()

    @property
    def root_dir(self) -> str:
        return self._root_dir

    def child_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a process that must see the testbed (GLib's setenv is not visible
        in os.environ)."""
        return dict(os.environ if base is None else base, UMOCKDEV_DIR=self.root_dir)

    def plug_in(self, pi: VirtualPi) -> VirtualPi:
        """Plug a board in; does nothing once the bus is closed (e.g. a late-arrival timer
        that fired during shutdown)."""
        with self._lock:
            if self.closed:
                return pi
            self.pis.append(pi)
        pi.plug_in(self)
        return pi

    # --- BusListener --------------------------------------------------------------------------

    def attach(self, pi: VirtualPi, function: UsbFunction) -> None:
        with self._lock:
            if self.closed:
                return
            node = _Node(self, pi, function, self._allocate(pi.bus_number))
            self._nodes[id(function)] = node
            self._work.put(("add", node))

    def detach(self, pi: VirtualPi, function: UsbFunction) -> None:
        with self._lock:
            node = self._nodes.pop(id(function), None)
            if node is None:
                return
            node.gone = True
            if not self.closed:
                self._work.put(("remove", node))

    # --- control ------------------------------------------------------------------------------

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until every queued attach/detach has reached the testbed. False (and an entry
        in :attr:`errors`) if that took longer than ``timeout``."""
        if not self._thread.is_alive():
            return True
        done = threading.Event()
        self._work.put(("mark", done))
        if done.wait(timeout):
            return True
        self.record_error(f"bus settle: queued attach/detach not applied within {timeout} s")
        return False

    def close(self) -> None:
        """Unplug every board, stop the bus thread and get rid of the testbed. Idempotent.

        Boards plugged in, attached or detached after this are ignored. Timeouts are recorded
        in :attr:`errors`. The testbed directory belongs to umockdev, which removes it when the
        Testbed is finalized: dropping our (last) reference finalizes it, and only a directory
        still present after that is removed here. If something else still holds the Testbed,
        or it was passed in, the directory is left for umockdev (removing it first makes
        umockdev abort with "cannot remove")."""
        with self._lock:
            if self.closed:
                return
            pis = list(self.pis)
        for pi in pis:
            pi.unplug()
        self.settle(10)
        with self._lock:
            self.closed = True
            self._work.put(None)
        self._thread.join(10)
        if self._thread.is_alive():
            self.record_error("bus close: the bus thread did not stop within 10 s")
            return  # it may still touch the testbed: leave the testbed to umockdev
        self._release_testbed()

    def _release_testbed(self) -> None:
        testbed, self.testbed = self.testbed, None
        if testbed is None or not self._owns_testbed:
            return  # the caller's testbed: the caller finalizes it
        finalized = getattr(testbed, "__grefcount__", 1) <= 1 and sys.getrefcount(testbed) <= 2
        del testbed
        if finalized:
            gc.collect()
            # umockdev removes its directory when it finalizes the Testbed; remove only leftovers
            if os.path.isdir(self.root_dir):
                shutil.rmtree(self.root_dir, ignore_errors=True)

    def record_error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def note_unhandled(self, request: int) -> None:
        text = f"{request:#x}"
        with self._lock:
            if text not in self.unhandled:
                self.unhandled.append(text)

    def syspath(self, port_path: str) -> str:
        bus, _, ports = port_path.partition("-")
        parts = ports.split(".")
        chain = [f"{bus}-" + ".".join(parts[:i + 1]) for i in range(len(parts))]
        return "/sys" + "/".join([SYSFS_ROOT, f"usb{bus}", *chain])

    # --- internals ----------------------------------------------------------------------------

    def _allocate(self, busnum: int) -> int:
        """Device numbers 2..127 in turn, skipping those in use, as the kernel hands them out
        (1 is the root hub). Call with the lock held."""
        for _ in range(126):
            devnum = self._next_devnum.get(busnum, 2)
            self._next_devnum[busnum] = devnum + 1 if devnum < 127 else 2
            if (busnum, devnum) not in self._in_use:
                self._in_use.add((busnum, devnum))
                return devnum
        raise RuntimeError(f"bus {busnum} has no free device number")

    def _release(self, node: _Node) -> None:
        with self._lock:
            self._in_use.discard((node.busnum, node.devnum))

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            action, target = item
            try:
                if action == "add":
                    self._add(target)
                elif action == "remove":
                    self._remove(target)
                else:
                    target.set()
            except Exception:
                self.record_error(f"bus {action}:\n{traceback.format_exc()}")

    def _add(self, node: _Node) -> None:
        if node.gone:
            self._release(node)
            return  # left again before it was ever shown
        self._ensure_hubs(node.busnum, node.port_path)
        previous = self._devnodes.get(node.devnode)
        if previous is not None:
            self.testbed.detach_ioctl(node.devnode)
        self._devnodes[node.devnode] = node
        self.testbed.attach_ioctl(node.devnode, node.handler)
        stage = node.pi.stages[node.function.stage_index]
        if isinstance(stage, FinalStage) and stage.disks:
            # before the USB device itself, so a host that sees the gadget sees all its disks
            # (a real host adds them asynchronously, after usb-storage's delay_use)
            self.disks.add(self.testbed, node.syspath, node.port_path, stage.disks)
        descriptors = node.function.device_descriptor() + node.function.config_descriptor()
        text = _record(node.syspath[len("/sys"):], node.devnode, node.busnum, node.devnum,
                       descriptors)
        if not self.testbed.add_from_string(text):
            raise RuntimeError(f"umockdev refused device {node.syspath}")
        self._apply_open_error(node)
        self.enumerations.append({"port": node.port_path, "devnum": node.devnum,
                                  "vendor_id": node.function.vendor_id,
                                  "product_id": node.function.product_id,
                                  "stage": node.function.stage_index})

    def _remove(self, node: _Node) -> None:
        self.disks.remove(self.testbed, node.port_path)
        if self._devnodes.get(node.devnode) is node:
            self.testbed.remove_device(node.syspath)
        self._release(node)

    def _ensure_hubs(self, busnum: int, port_path: str) -> None:
        parts = port_path.partition("-")[2].split(".")
        names = [f"usb{busnum}"] + [f"{busnum}-" + ".".join(parts[:i]) for i in
                                    range(1, len(parts))]
        for depth, name in enumerate(names):
            if name in self._hubs:
                continue
            if depth == 0:
                syspath, devnum = f"/sys{SYSFS_ROOT}/usb{busnum}", 1
            else:
                syspath = self.syspath(name)
                with self._lock:
                    devnum = self._allocate(busnum)
            product = 0x0002 if depth == 0 else 0x5411
            vendor = 0x1D6B if depth == 0 else 0x0BDA
            devnode = f"/dev/bus/usb/{busnum:03d}/{devnum:03d}"
            text = _record(syspath[len("/sys"):], devnode, busnum, devnum,
                           _hub_descriptors(vendor, product))
            if not self.testbed.add_from_string(text):
                raise RuntimeError(f"umockdev refused hub {syspath}")
            self._hubs.add(name)

    def _apply_open_error(self, node: _Node) -> None:
        """Make open() of the node fail the way a real host can: EACCES through permissions
        (effective only for a process without CAP_DAC_OVERRIDE), or EISDIR (an I/O error)."""
        mode = node.pi.open_error
        if not mode:
            return
        path = self.root_dir + node.devnode
        if mode == "access":
            os.chmod(path, 0)
        else:
            os.unlink(path)
            os.mkdir(path)
