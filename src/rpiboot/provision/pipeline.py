"""The provisioning run: find boards in USB boot mode and take each through the profile.

The main thread lists the bus (:class:`~rpiboot.provision.bus.BusWatcher`) and starts one
worker per USB port for each new board: a boot-ROM enumeration at a port no worker owns. The
worker owns that port until the board is finished, so the board coming back to the boot ROM
after the EEPROM step is the next step of the same board, not a new board. Boards reaching
the write step together share one decompression (:mod:`~rpiboot.provision.batch`).

The run ends after ``count`` boards, or (without ``loop``) when the boards that arrived are
done and no new one has come, or after ``timeout`` seconds without a board; Ctrl-C / SIGTERM set
:attr:`RunContext.stop`: boards in progress fail as ``interrupted`` (so marked in the ledger).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..events import EventSink, event
from ..session import stage_of
from ..targets import target_for
from ..transport import AccessDenied, DeviceRef, UsbError, read_serial_number
from .batch import WriteBatcher
from .board import Board, BoardWorker
from .book import LedgerBook
from .bus import BusWatcher
from .eeprom_image import EepromBuild
from .errors import ExitCode, exit_code_for, worst
from .profile import Profile

BEFORE_WRITE = (None, "eeprom", "boot", "claim", "storage")
WAITING_LINE = "Waiting for boards in USB boot mode..."


@dataclass
class RunOptions:
    count: int | None = None
    """Stop after this many boards (ok, failed or skipped)."""
    loop: bool = False
    """-l: keep serving boards until interrupted (or --count)."""
    timeout: float | None = None
    """Give up when no board has arrived for this long while idle."""
    port_number: int | None = None
    port_path: str | None = None
    serial: str | None = None
    reprovision: bool = False
    station: str = ""
    gather: float = 3.0
    """Seconds a board that reached the write step waits for others to share the image's
    decompression (less when every board in progress has joined)."""
    follow_seconds: float = 60.0
    reentry_timeout: float = 30.0
    """How long a board may take to come back at its port between steps."""
    boot_timeout: float | None = 300.0
    disk_settle: float = 0.5
    """The gadget's disk list must stay the same this long before one is chosen."""
    disk_wait: float = 10.0
    """How long the disk list may take to settle (and a disk to appear) after the gadget."""
    poll_interval: float = 0.02
    sysfs_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    mountinfo: Path = Path("/proc/self/mountinfo")
    swaps: Path = Path("/proc/swaps")


@dataclass
class RunContext:
    profile: Profile
    options: RunOptions
    book: LedgerBook
    watcher: BusWatcher
    emit: EventSink
    eeprom: EepromBuild | None
    writer: WriteBatcher = field(init=False)
    bmap: Any = None
    """The profile's bmap (provio's Bmap), loaded once by the pre-run checks."""
    stop: threading.Event = field(default_factory=threading.Event)
    boards: list[Board] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.writer = WriteBatcher(self)

    def boards_before_write(self) -> int:
        """Boards in progress that have not reached the write step (they may still join)."""
        return sum(1 for board in list(self.boards)
                   if board.result == "in_progress" and board.step in BEFORE_WRITE)


@dataclass
class RunOutcome:
    boards: list[Board]
    exit_code: ExitCode
    error: str | None = None


class Pipeline:
    def __init__(self, context: RunContext):
        self.context = context
        self.boards: list[Board] = context.boards
        self._workers: dict[str, threading.Thread] = {}
        self._seen: set[tuple[object, ...]] = set()
        self._retired: set[str] = set()
        """Ports whose board has finished: a new board is taken there only after the port
        was seen empty (the operator swapped the board), so a finished board that stays in
        USB boot mode (skipped, failed, jumper still fitted) is never served twice."""
        self._started = time.monotonic()
        self._last_activity = self._started
        self._interrupted = False

    def run(self) -> RunOutcome:
        context = self.context
        context.emit(event("waiting", message=WAITING_LINE))
        error = None
        try:
            while True:
                self._scan()
                error = self._should_stop()
                if error is not False:
                    break
                context.watcher.transport.wait_for_change(context.options.poll_interval)
        except KeyboardInterrupt:
            self.interrupt()
            error = None
        self._join()
        if self._interrupted:
            context.book.mark_interrupted()
        return self._outcome(error if isinstance(error, str) else None)

    def interrupt(self) -> None:
        """Ctrl-C / SIGTERM: every board in progress stops at its next step or chunk."""
        self._interrupted = True
        self.context.stop.set()

    # --- discovery ----------------------------------------------------------------------------

    def _scan(self) -> None:
        try:
            refs = self.context.watcher.refresh()
        except UsbError as error:
            self.context.emit(event("notice", message=f"listing USB devices failed: {error}"))
            return
        for port, worker in list(self._workers.items()):
            if not worker.is_alive():
                self._retired.add(port)
                del self._workers[port]
        occupied = {ref.info.port_path for ref in refs}
        self._retired &= occupied
        for ref in refs:
            key = ref.info.enumeration_key
            if key in self._seen:
                continue
            target = target_for(ref.info.vendor_id, ref.info.product_id)
            if target is None or stage_of(ref.info) != "rom":
                continue
            port = ref.info.port_path
            if port in self._workers:
                continue  # the board at this port, between two of its steps
            if port in self._retired:
                continue
            if not self._taking_boards() or not self._wanted(ref):
                self._seen.add(key)
                continue
            self._seen.add(key)
            self._start(Board(port=port, chip=target.name))

    def _wanted(self, ref: DeviceRef) -> bool:
        options = self.context.options
        if options.port_number is not None and ref.info.port_number != options.port_number:
            return False
        if options.port_path is not None and ref.info.port_path != options.port_path:
            return False
        if options.serial is not None:
            try:
                return read_serial_number(ref) == options.serial
            except AccessDenied:
                return True  # the boot step reports the permission problem
            except UsbError:
                return False
        return True

    def _taking_boards(self) -> bool:
        options = self.context.options
        if self.context.stop.is_set():
            return False
        if options.count is not None:
            return len(self.boards) < options.count
        if options.loop:
            return True
        # Like rpiboot without -l: boards are taken until the first one has finished.
        return not any(board.finished for board in self.boards)

    def _start(self, board: Board) -> None:
        self.boards.append(board)
        worker = BoardWorker(self.context, board)
        thread = threading.Thread(target=worker.run, name=f"provision-{board.port}",
                                  daemon=True)
        self._workers[board.port] = thread
        self._last_activity = time.monotonic()
        thread.start()

    # --- ending -------------------------------------------------------------------------------

    def _busy(self) -> bool:
        return any(worker.is_alive() for worker in self._workers.values())

    def _should_stop(self) -> str | None | bool:
        """False to go on; None to stop normally; a message to stop with no_board."""
        options, now = self.context.options, time.monotonic()
        if self._busy():
            self._last_activity = now
            return False
        if self.context.stop.is_set():
            return None
        if options.count is not None and len(self.boards) >= options.count:
            return None
        if options.count is None and not options.loop and self.boards:
            return None
        if options.timeout is not None and now - self._last_activity >= options.timeout:
            if options.count is not None:
                return (f"{len(self.boards)} of {options.count} boards arrived within "
                        f"{options.timeout:g} s")
            return None if self.boards else \
                f"no board in USB boot mode appeared within {options.timeout:g} s"
        return False

    def _join(self) -> None:
        for worker in self._workers.values():
            while worker.is_alive():
                try:
                    worker.join(timeout=0.2)
                except KeyboardInterrupt:
                    self.interrupt()

    def _outcome(self, error: str | None) -> RunOutcome:
        codes = [ExitCode.OK if board.result in ("ok", "skipped")
                 else exit_code_for(board.result, board=True) for board in self.boards]
        if error is not None:
            codes.append(ExitCode.NO_BOARD)
        if self._interrupted:
            codes.append(ExitCode.INTERRUPTED)
        return RunOutcome(self.boards, worst(codes), error)


def summary_event(outcome: RunOutcome) -> Any:
    return event("summary", boards=[board.summary() for board in outcome.boards],
                 exit_code=int(outcome.exit_code))


def start_event(profile: Profile, station: str, ledger: str) -> Any:
    return event("start", version=__version__, profile=str(profile.path),
                 profile_id=profile.profile_id, station=station, ledger=ledger)

