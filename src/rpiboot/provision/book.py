"""The pipeline's side of the ledger: one lock around it (boards record from their own threads),
board records that begin once the serial is known, claims, unit numbers and pool entries.

A ledger failure during a board fails that board with ``ledger_unavailable``; the run goes on
(issue 10: losing the connection fails the board cleanly, a finished record is never lost).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .. import __version__
from .errors import AlreadyDone, ProvisionError
from .profile import Profile

if TYPE_CHECKING:
    from .board import Board
    from .eeprom_image import EepromBuild

MAC_KEYS = ("MAC_ADDR", "MAC_ADDRESS")
"""OTP metadata keys recovery.bin reports the Ethernet MAC under (MAC_ADDR in usbboot's docs)."""
REVISION_KEY = "USER_BOARDREV"


def board_mac(metadata: dict[str, str]) -> str:
    return next((metadata[key] for key in MAC_KEYS if metadata.get(key)), "")


class LedgerWriteError(ProvisionError):
    code = "ledger_unavailable"


class PoolColumnError(ProvisionError):
    code = "pool_invalid"


class LedgerBook:
    def __init__(self, ledger: Any, profile: Profile, *, host: str, station: str,
                 reprovision: bool = False, eeprom: "EepromBuild | None" = None):
        self.ledger = ledger
        self.profile = profile
        self.host = host
        self.station = station
        self.reprovision = reprovision
        self.eeprom = eeprom
        self._lock = threading.Lock()
        self.open_boards: set[int] = set()
        self._serials_here: dict[str, str] = {}
        """Serial -> port of this run's boards in progress: the ledger's claim is per station,
        so two boards of one station reporting the same serial are told apart here."""

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        from .ledger import LedgerError
        with self._lock:
            try:
                return getattr(self.ledger, method)(*args, **kwargs)
            except ProvisionError as error:
                if isinstance(error, LedgerError):
                    raise LedgerWriteError(f"ledger: {what}: {error}") from None
                raise

    # --- a board's record ---------------------------------------------------------------------

    def claim(self, board: "Board") -> dict[str, Any]:
        """Begin the board's record and claim its serial; raises AlreadyDone for a board
        provisioned before with this profile (without --reprovision)."""
        from .ledger import AlreadyProvisionedError, ClaimedElsewhereError
        profile = self.profile
        with self._lock:
            other = self._serials_here.setdefault(board.serial or "", board.port)
        if other != board.port:
            raise ClaimedElsewhereError(
                f"board {ascii(board.serial)} is already being provisioned at port {other} of "
                "this station (two boards report the same serial)")
        try:
            self._call("claim", "claim", board.serial, profile.profile_id,
                       reprovision=self.reprovision)
        except AlreadyProvisionedError as error:
            raise AlreadyDone(str(error)) from None
        self._begin(board)
        details: dict[str, Any] = {"record": board.board_id}
        fields = profile.template_fields
        if "unit" in fields:
            board.unit = self._call("unit number", "next_unit", board.board_id)
            details["unit"] = board.unit
        if profile.pool_columns:
            entry = self._call("pool", "take_pool_entry", board.board_id, profile.pool)
            missing = sorted(profile.pool_columns - set(entry))
            if missing:
                raise PoolColumnError(f"pool '{profile.pool}' has no column {missing[0]!r} "
                                      f"(the profile uses {{pool.{missing[0]}}})")
            board.pool = dict(entry)
            details["pool"] = sorted(entry)
        return details

    def _begin(self, board: "Board") -> None:
        if board.board_id is not None:
            return
        board.board_id = self._call(
            "begin", "begin_board", port=board.port, chip=board.chip, serial=board.serial,
            profile_name=self.profile.name, profile_id=self.profile.profile_id,
            host=self.host, tool_version=__version__, started=board.started)
        assert board.board_id is not None
        self.open_boards.add(board.board_id)
        fields: dict[str, Any] = {}
        if board.metadata:
            fields["otp"] = dict(board.metadata)
            if board_mac(board.metadata):
                fields["mac"] = board_mac(board.metadata)
            if board.metadata.get(REVISION_KEY):
                fields["revision"] = board.metadata[REVISION_KEY]
        if board.info:
            fields["board"] = board.info
        if self.eeprom is not None:
            fields.update(eeprom_sha256=self.eeprom.sha256, eeprom_config=self.eeprom.config)
        if fields:
            self.update(board, **fields)
        self.flush_steps(board)

    def flush_steps(self, board: "Board") -> None:
        if board.board_id is None:
            return
        while board.recorded_steps < len(board.steps):
            step = board.steps[board.recorded_steps]
            self._call("step", "record_step", board.board_id, step.step, result=step.result,
                       started=step.started, finished=step.finished, details=step.details)
            board.recorded_steps += 1

    def update(self, board: "Board", /, **fields: Any) -> None:
        """Set facts about the board (``fields`` may include ``board``: the decoded board)."""
        if board.board_id is not None:
            fields.pop("disk", None)
            if fields:
                self._call("update", "update_board", board.board_id, **fields)

    def finish(self, board: "Board", *, result: str, error: str | None = None) -> None:
        """The board's final record, in one transaction. A board that failed before its serial
        was known still gets a record (serial unknown)."""
        with self._lock:
            if self._serials_here.get(board.serial or "") == board.port:
                del self._serials_here[board.serial or ""]
        try:
            if board.board_id is None:
                self._begin(board)
            self.flush_steps(board)
            assert board.board_id is not None
            self._call("finish", "finish_board", board.board_id, result=result, error=error)
            self.open_boards.discard(board.board_id)
        except ProvisionError as failure:
            if result == "ok":
                raise
            board.message = f"{error}; and the ledger failed: {failure}"

    def mark_interrupted(self) -> None:
        with self._lock:
            boards = sorted(self.open_boards)
        if boards:
            self._call("interrupted", "mark_interrupted", boards)

    # --- settings -----------------------------------------------------------------------------

    def settings_for(self, board: "Board") -> Any:
        """The customisation settings with this board's values in the templates."""
        from .customise import Settings
        values: dict[str, Any] = {"serial": board.serial or "", "chip": board.chip,
                                  "mac": board_mac(board.metadata)}
        if board.unit is not None:
            values["unit"] = board.unit
        for column, value in board.pool.items():
            values[f"pool.{column}"] = value
        return Settings(**self.profile.settings_values(values))
