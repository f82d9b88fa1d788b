"""One board's way through the profile's steps, on the worker thread that owns its USB port.

eeprom (optional) -> boot -> storage -> claim -> write -> verify (optional) -> customise
(optional, verifies its own writes) -> record. Every step is recorded in the ledger (steps run
before the board's serial is known are recorded as soon as the board has a ledger entry), and
every step emits ``step_started`` / ``step_done`` events. The first failure ends the board: it
is recorded with the failure's code and the remaining steps are not run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..events import Event, event
from .boot_step import BootRequest, boot_at_port
from .errors import AlreadyDone, BootStepError, Interrupted, ProvisionError, exit_code_for

if TYPE_CHECKING:
    from .pipeline import RunContext


class StorageError(ProvisionError):
    code = "no_disk"


class NoSerialError(ProvisionError):
    code = "no_serial"


class DiskPermissionError(ProvisionError):
    code = "permission"


class EepromNotFlashed(ProvisionError):
    """recovery.bin reported that it did not write our image (EEPROM_UPDATE / EEPROM_HASH)."""
    code = "eeprom_failed"


@dataclass
class StepRecord:
    step: str
    result: str
    started: float
    finished: float
    details: dict[str, Any]


@dataclass
class Board:
    """What is known about one board; the summary line and the ledger record come from it."""

    port: str
    chip: str
    serial: str | None = None
    board_id: int | None = None
    unit: int | None = None
    step: str | None = None
    result: str = "in_progress"
    message: str | None = None
    disk: Any = None
    """The BlockDevice the board became (provio's block_device.BlockDevice)."""
    bytes_written: int = 0
    verified: bool = False
    image_sha256: str | None = None
    write_ranges: list[tuple[int, int, str]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    pool: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] | None = None
    """Model, revision, memory... decoded from the OTP metadata by the engine, when known."""
    """The identity-pool entry the board took (``{pool.COLUMN}``)."""
    started: float = field(default_factory=time.time)
    finished: float | None = None
    steps: list[StepRecord] = field(default_factory=list)
    recorded_steps: int = 0

    @property
    def seconds(self) -> float:
        return round((self.finished or time.time()) - self.started, 3)

    def summary(self) -> dict[str, Any]:
        return {"port": self.port, "serial": self.serial, "chip": self.chip,
                "result": self.result, "step": self.step if self.result != "ok" else None,
                "message": self.message, "unit": self.unit,
                "disk": None if self.disk is None else str(self.disk.path),
                "bytes_written": self.bytes_written, "verified": self.verified,
                "seconds": self.seconds}


def _check_flashed(metadata: dict[str, str], sha256: str) -> None:
    """When recovery.bin reports the outcome (its metadata, on by default), believe it."""
    update = metadata.get("EEPROM_UPDATE")
    if update is not None and update != "success":
        raise EepromNotFlashed(f"the recovery firmware reports EEPROM_UPDATE={update!r}: the "
                               f"bootloader was not written (a signature or secure-boot key "
                               f"the board refuses?)")
    reported = metadata.get("EEPROM_HASH", "").lower()
    if reported and reported.strip("0") and reported != sha256:
        raise EepromNotFlashed(f"the board's EEPROM holds sha256 {reported[:16]}..., not the "
                               f"image built for this run ({sha256[:16]}...)")


class BoardWorker:
    def __init__(self, context: "RunContext", board: Board):
        self.context = context
        self.board = board
        self.exclude: set[tuple[int, int, int]] = set()
        self.claimed = False

    # --- the whole board ----------------------------------------------------------------------

    def run(self) -> None:
        board, context = self.board, self.context
        context.emit(event("board_arrived", board.port, chip=board.chip))
        try:
            self._steps()
        except AlreadyDone as skip:
            self._end("skipped", str(skip))
            context.emit(event("board_skipped", board.port, serial=board.serial,
                               reason=str(skip)))
        except ProvisionError as error:
            if context.stop.is_set() and not isinstance(error, Interrupted):
                error = Interrupted(f"interrupted during {board.step}: {error}")
            self._fail(error)
        except Exception as error:  # a bug ends this board, never the others
            self._fail(ProvisionError(f"internal error: {type(error).__name__}: {error}"))

    def _steps(self) -> None:
        profile = self.context.profile
        if profile.eeprom is not None:
            self._step("eeprom", self._eeprom)
            self._claim_once()
        self._step("boot", self._boot)
        self._claim_once()
        self._step("storage", self._storage)
        self._step("write", self._write)
        if profile.os.verify:
            self._step("verify", self._verify)
        if profile.customise:
            self._step("customise", self._customise)
        self._step("record", self._record)
        self._announce_done()

    def _step(self, name: str, action: Callable[[], dict[str, Any]]) -> None:
        board, context = self.board, self.context
        if context.stop.is_set():
            raise Interrupted(f"interrupted before {name}")
        board.step = name
        context.emit(event("step_started", board.port, step=name, serial=board.serial))
        started = time.time()
        try:
            details = action()
        except ProvisionError as error:
            try:
                self._log_step(StepRecord(name, error.code, started, time.time(),
                                          {"message": str(error)}))
            except ProvisionError:
                pass  # the ledger is failing too: the board's final record retries the step
            raise
        finished = time.time()
        self._log_step(StepRecord(name, "ok", started, finished, details))
        context.emit(event("step_done", board.port, step=name,
                           seconds=round(finished - started, 3), details=details))

    def _log_step(self, record: StepRecord) -> None:
        self.board.steps.append(record)
        try:
            self.context.book.flush_steps(self.board)
        except ProvisionError:
            if self.board.result != "ok":
                raise
            # The board's "ok" is already committed: a lost step row must not turn it into a
            # failure the ledger contradicts. One retry (the ledger reconnects), then let it go.
            try:
                self.context.book.flush_steps(self.board)
            except ProvisionError:
                pass

    # --- steps --------------------------------------------------------------------------------

    def _eeprom(self) -> dict[str, Any]:
        build = self.context.eeprom
        assert build is not None
        outcome = boot_at_port(self._boot_request(build.directory, follow=None))
        self._learn(outcome)
        _check_flashed(outcome.metadata, build.sha256)
        return {"eeprom_sha256": build.sha256, "signed": build.signed,
                "update": outcome.metadata.get("EEPROM_UPDATE"),
                "metadata_keys": sorted(outcome.metadata)}

    def _boot(self) -> dict[str, Any]:
        context = self.context
        try:
            outcome = boot_at_port(self._boot_request(context.profile.boot_directory,
                                                      follow=context.options.follow_seconds))
        except BootStepError as error:
            if error.code == "board_gone" and context.profile.eeprom is not None:
                error.args = (f"{error}; after the EEPROM step the board must come back to USB "
                              f"boot mode: keep nRPIBOOT fitted, and recovery.bin reboots only "
                              f"with recovery_reboot=1 in the recovery config.txt",)
            raise
        self._learn(outcome)
        return {"block_devices": outcome.block_devices, "bytes_sent": outcome.bytes_sent}

    def _boot_request(self, directory: Any, follow: float | None) -> BootRequest:
        context = self.context
        return BootRequest(context.watcher, self.board.port, directory, context.stop,
                           self.exclude, timeout=context.options.reentry_timeout,
                           follow=follow, sysfs_root=context.options.sysfs_root,
                           step_timeout=context.options.boot_timeout,
                           on_event=self._engine_event)

    def _engine_event(self, item: Event) -> None:
        """The engine's progress through a large boot file is the step's progress."""
        if item.kind != "file_progress":
            return
        data = item.data
        sent, size, seconds = data.get("sent"), data.get("size"), data.get("seconds")
        if isinstance(sent, int) and isinstance(size, int) and isinstance(seconds, (int, float)):
            rate = sent / seconds if seconds > 0 else 0.0
            eta = round((size - sent) / rate, 1) if rate > 0 else None
            self.context.emit(event("step_progress", self.board.port, step=self.board.step,
                                    bytes=sent, total=size, rate=round(rate, 1), eta=eta))

    def _learn(self, outcome: Any) -> None:
        board = self.board
        if outcome.serial and not board.serial:
            board.serial = outcome.serial
        board.metadata.update(outcome.metadata)
        if outcome.board:
            board.info = dict(outcome.board)

    def _claim_once(self) -> None:
        if not self.claimed:
            if not self.board.serial:
                raise NoSerialError("the board did not report a serial number")
            self.claimed = True
            self._step("claim", self._claim)

    def _claim(self) -> dict[str, Any]:
        details = self.context.book.claim(self.board)
        if self.context.profile.customise:
            # This board's values ({serial}, {mac}, {unit}, {pool.*}) are known now: a value the
            # settings refuse fails the board before a byte of its disk is written.
            from .first_boot_settings import validate_settings
            validate_settings(self.context.book.settings_for(self.board))
        return details

    def _storage(self) -> dict[str, Any]:
        from .block_device import check_safe_to_write, select_disk
        context, board = self.context, self.board
        options = context.options
        disks = self._settled_disks()
        if not disks:
            raise StorageError(f"the board became no block device below {board.port}")
        disk = select_disk(disks, context.profile.os.storage)
        check_safe_to_write(disk, sysfs_root=options.sysfs_root,
                            mountinfo=options.mountinfo, swaps=options.swaps)
        if not os.access(disk.path, os.R_OK | os.W_OK):
            raise DiskPermissionError(
                f"no permission to write {disk.path}: run as root, or add a udev rule giving "
                f"your group the disks of USB-booted Raspberry Pis (or join the 'disk' group)")
        board.disk = disk
        context.book.update(board, disk=disk.name)
        return {"disk": str(disk.path), "size": disk.size, "vendor": disk.vendor.strip(),
                "model": disk.model.strip(), "candidates": [d.name for d in disks]}

    def _settled_disks(self) -> list[Any]:
        """The disks below the port once their list has stopped changing for ``disk_settle``
        seconds (a gadget with eMMC and NVMe may show one a moment before the other; writing
        whichever came first would make the choice a race), within ``disk_wait`` seconds."""
        from .block_device import disks_below_port
        options, port = self.context.options, self.board.port
        deadline = time.monotonic() + options.disk_wait
        disks = disks_below_port(port, sysfs_root=options.sysfs_root, dev_root=options.dev_root)
        while time.monotonic() < deadline and not self.context.stop.is_set():
            time.sleep(options.disk_settle)
            again = disks_below_port(port, sysfs_root=options.sysfs_root,
                                     dev_root=options.dev_root)
            if again and [d.name for d in again] == [d.name for d in disks]:
                return again
            disks = again
        return disks

    def _write(self) -> dict[str, Any]:
        board = self.board
        try:
            result, batch = self.context.writer.write(self)
        except ProvisionError as error:
            self._record_partial_write(getattr(error, "bytes_written", 0))
            raise
        board.bytes_written = result.bytes_written
        board.image_sha256 = result.image_sha256
        board.write_ranges = list(result.ranges)
        self.context.book.update(board, image_sha256=result.image_sha256,
                                 bytes_written=result.bytes_written)
        return {"bytes_written": result.bytes_written, "image_sha256": result.image_sha256,
                **batch}

    def _record_partial_write(self, written: int) -> None:
        """A failed write that had changed the disk says so in the record (not 0 bytes)."""
        if written:
            self.board.bytes_written = written
            try:
                self.context.book.update(self.board, bytes_written=written)
            except ProvisionError:
                pass  # the write's own failure is the one to report

    def progress(self, step: str, started: float) -> Callable[[int, int | None], None]:
        """A progress callback emitting ``step_progress`` at most every 0.25 s."""
        last = [0.0]

        def report(done: int, total: int | None) -> None:
            if self.context.stop.is_set():
                raise Interrupted(f"interrupted during {step}")
            now = time.monotonic()
            if now - last[0] < 0.25 and (total is None or done < total):
                return
            last[0] = now
            rate = done / max(now - started, 1e-6)
            eta = None if total is None or rate <= 0 else round((total - done) / rate, 1)
            self.context.emit(event("step_progress", self.board.port, step=step, bytes=done,
                                    total=total, rate=round(rate, 1), eta=eta))
        return report

    def _verify(self) -> dict[str, Any]:
        from .verify import VerifyError, verify_ranges
        board = self.board
        result = verify_ranges(str(board.disk.path), board.write_ranges,
                               progress=self.progress("verify", time.monotonic()))
        if not result.ok:
            raise VerifyError(f"read-back differs from the image at byte "
                              f"{result.first_mismatch} of {board.disk.path}")
        board.verified = True
        self.context.book.update(board, verified=True)
        return {"method": result.method, "bytes_read": result.bytes_read}

    def _customise(self) -> dict[str, Any]:
        from .customise import customise_disk
        from .verify import VerifyError, verify_ranges
        board, context = self.board, self.context
        settings = context.book.settings_for(board)
        fd = self.open_disk(read_too=True)
        try:
            result = customise_disk(fd, settings)
            os.fsync(fd)
        finally:
            os.close(fd)
        check = verify_ranges(str(board.disk.path), list(result.writes))
        if not check.ok:
            raise VerifyError(f"customisation read back differs at byte {check.first_mismatch}")
        return {"init": result.init, "files": list(result.files),
                "verified_bytes": check.bytes_read}

    def _record(self) -> dict[str, Any]:
        board = self.board
        board.finished = time.time()
        self.context.book.finish(board, result="ok")
        board.result = "ok"
        return {"record": board.board_id}

    def _announce_done(self) -> None:
        board = self.board
        self.context.emit(event("board_done", board.port, serial=board.serial, chip=board.chip,
                                unit=board.unit,
                                disk=None if board.disk is None else str(board.disk.path),
                                bytes_written=board.bytes_written, verified=board.verified,
                                seconds=board.seconds, board=board.info,
                                record=board.board_id))

    # --- the disk -----------------------------------------------------------------------------

    def open_disk(self, *, read_too: bool = False) -> int:
        from .block_device import open_for_writing
        options = self.context.options
        # Checked again right before opening: the disk must still be this board's.
        return open_for_writing(self.board.disk, sysfs_root=options.sysfs_root,
                                mountinfo=options.mountinfo, swaps=options.swaps,
                                read_too=read_too)

    # --- endings ------------------------------------------------------------------------------

    def _fail(self, error: ProvisionError) -> None:
        board = self.board
        self._end(error.code, str(error))
        self.context.emit(event("board_failed", board.port, serial=board.serial,
                                step=board.step or "boot", code=error.code,
                                message=str(error),
                                exit_code=int(exit_code_for(error.code, board=True))))

    def _end(self, result: str, message: str) -> None:
        board = self.board
        board.result, board.message, board.finished = result, message, time.time()
        self.context.book.finish(board, result=result, error=message)
