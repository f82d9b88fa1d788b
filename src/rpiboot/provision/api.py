"""The Python API of rpiboot-provision: what ``rpiboot-provision run`` does, from a program.

    from rpiboot.provision.api import provision
    from rpiboot.provision.pipeline import RunOptions

    outcome = provision("line.toml", RunOptions(count=4, timeout=120), on_event=print)
    for board in outcome.boards:
        print(board.summary())            # port, serial, result, bytes_written, verified...
    raise SystemExit(outcome.exit_code)  # rpiboot.provision.errors.ExitCode

``transport`` replaces the USB bus (e.g. a :class:`rpiboot.simulator.in_process.VirtualBus`);
``ledger`` is a path, a ``postgresql://`` URL or None for the profile's (else the default)
ledger. Problems found before any board is touched raise :class:`ProvisionError` subclasses
(profile, image, ledger...); board failures are in the outcome. ``on_event`` receives the events
documented in docs/provision.md, from several threads.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable

from ..events import Event, EventSink, event
from ..transport import Transport
from .book import LedgerBook
from .bus import BusWatcher
from .errors import ExitCode
from .pipeline import Pipeline, RunContext, RunOptions, RunOutcome, start_event, summary_event
from .preflight import Preflight, ledger_target_text, preflight
from .profile import Profile, load_profile


def provision(profile: str | Path | Profile, options: RunOptions | None = None, *,
              on_event: EventSink | None = None, transport: Transport | None = None,
              ledger: str | Path | None = None, libusb: str | None = None,
              on_ready: Callable[[Pipeline], None] | None = None) -> RunOutcome:
    """Run the profile until the run is over; returns every board's outcome.

    ``on_ready`` is called with the pipeline just before it starts waiting for boards (the CLI
    uses it to hand SIGTERM to :meth:`Pipeline.interrupt`)."""
    from .ledger import open_ledger
    options = options or RunOptions()
    emit = on_event or (lambda _item: None)
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    checked = preflight(profile, keep_eeprom=True)
    try:
        target = ledger if ledger is not None else profile.ledger
        station = options.station or socket.gethostname()
        book_ledger = open_ledger(target, station=station)
        try:
            return _run(profile, checked, options, emit, transport, book_ledger, station,
                        ledger_target_text(target), libusb, on_ready)
        finally:
            book_ledger.close()
    finally:
        checked.close()


def open_usb(library: str | None) -> Transport:
    """The real USB bus through libusb (``library`` as ``rpiboot --libusb``)."""
    from ..errors import UsbUnavailableError
    from ..libusb_transport import LibusbTransport
    from ..transport import UsbUnavailable
    try:
        return LibusbTransport(library)
    except UsbUnavailable as error:
        raise UsbUnavailableError(str(error)) from None


def _run(profile: Profile, checked: Preflight, options: RunOptions,
         emit: Callable[[Event], None], transport: Transport | None, ledger: Any, station: str,
         ledger_text: str, libusb: str | None,
         on_ready: Callable[[Pipeline], None] | None) -> RunOutcome:
    owned = transport is None
    if transport is None:
        transport = open_usb(libusb)
    try:
        book = LedgerBook(ledger, profile, host=socket.gethostname(), station=station,
                          reprovision=options.reprovision, eeprom=checked.eeprom)
        context = RunContext(profile=profile, options=options, book=book,
                             watcher=BusWatcher(transport), emit=emit, eeprom=checked.eeprom,
                             bmap=checked.bmap)
        emit(start_event(profile, station, ledger_text))
        pipeline = Pipeline(context)
        if on_ready is not None:
            on_ready(pipeline)
        outcome = pipeline.run()
        if outcome.error is not None:
            emit(event("error", code="no_board", message=outcome.error,
                       exit_code=int(ExitCode.NO_BOARD)))
        emit(summary_event(outcome))
        return outcome
    finally:
        if owned:
            transport.close()
