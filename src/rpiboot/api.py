"""The Python API: boot devices from a program, with a callback for every event.

    import sys
from pathlib import Path
    from pathlib import Path
    from rpiboot import BootOptions, boot

    def on_event(event):              # called from the engine's threads
        if event.kind == "file_served":
            print(event.port, event.data["name"], event.data["size"])

    result = boot(BootOptions(directory=Path("recovery"), timeout=30), on_event=on_event)
    for device in result.sessions:
        print(device.summary())       # port, chip, serial, stages, files, bytes, result...
    sys.exit(result.exit_code)        # rpiboot.errors.ExitCode, as the command line's

Events are :class:`rpiboot.Event` objects (``kind``, ``port``, ``data``, ``time``);
``event.to_dict()`` is the object ``rpiboot --json`` prints, described in docs/events.md.
Without ``transport`` the real USB bus is used through libusb; pass a
:class:`rpiboot.simulator.in_process.VirtualBus` to boot virtual Raspberry Pis instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import __version__
from .errors import BootDirectoryError, UsbUnavailableError
from .events import Event, EventSink, event
from .file_source import check_boot_directory, check_default_directories
from .manager import DeviceManager, RunResult
from .options import BootOptions
from .transport import Transport, UsbUnavailable


def boot(options: BootOptions | None = None, *, on_event: EventSink | None = None,
         transport: Transport | None = None, libusb: str | None = None) -> RunResult:
    """Serve Raspberry Pis in USB boot mode until the run is over; returns what happened.

    ``options`` are the command line's settings (:class:`~rpiboot.options.BootOptions`; the
    defaults wait for one device with no time limit, so set ``timeout``/``run_timeout`` in
    programs). ``on_event`` is called with every :class:`~rpiboot.events.Event`, from the
    manager's and the devices' threads, possibly at the same time (keep it quick and
    thread-safe); an exception in it is reported once on stderr, later events are dropped and
    the boot goes on. ``transport`` replaces the USB bus
    (tests, the virtual Pi); ``libusb`` picks the libusb library as ``--libusb`` does.

    Returns a :class:`~rpiboot.manager.RunResult`: ``sessions`` (one per port, each with
    ``summary()`` and ``error``), ``error`` (a failure of the run as a whole, such as no device
    within the timeout) and ``exit_code``.

    Raises :class:`~rpiboot.errors.RpibootError` subclasses for problems found before any
    device is touched (boot directory, USB library); device failures are in the result.
    """
    options = options or BootOptions()
    emit = _guarded(on_event)
    if options.directory is not None:
        check_boot_directory(options.directory, signed=options.signed)
    else:
        check_default_directories()
    if options.metadata_dir is not None:
        _make_metadata_directory(options.metadata_dir)
    owned = transport is None
    if transport is None:
        transport = _open_libusb(libusb)
    manager = DeviceManager(transport, options, emit)
    try:
        emit(event("start", version=__version__,
                   directory=None if options.directory is None else str(options.directory)))
        return manager.run()
    finally:
        # A worker left inside a transfer still uses the transport; the process exit ends it.
        if owned and not manager.workers_alive():
            transport.close()


def _make_metadata_directory(directory: Path) -> None:
    """-j DIR: created (with its parents) when missing, as a user writing -j out/ expects."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BootDirectoryError(f"cannot create metadata directory '{directory}': "
                                 f"{error.strerror or error}") from None


def _guarded(callback: EventSink | None) -> EventSink:
    """A callback that raises must not take the devices down with it."""
    if callback is None:
        return lambda _event: None
    failed: list[Exception] = []

    def emit(item: Event) -> None:
        try:
            callback(item)
        except Exception as error:
            if not failed:
                failed.append(error)
                print(f"rpiboot: event callback failed ({error!r}); events are no longer "
                      f"delivered to it", file=sys.stderr)

    return lambda item: None if failed else emit(item)


def _open_libusb(library: str | None) -> Transport:
    from .libusb_transport import LibusbTransport
    try:
        return LibusbTransport(library)
    except UsbUnavailable as error:
        raise UsbUnavailableError(str(error)) from None
