"""Provisioning failures and the exit statuses of ``rpiboot-provision`` (docs/provision.md).

Every failure is a :class:`ProvisionError` with a stable ``code``: the ledger's ``result`` for a
board that failed, and the ``code`` of ``board_failed`` / ``error`` events. Helpers define their
own subclasses next to their code; :func:`exit_code_for` maps any code to an exit status.
"""

from __future__ import annotations

import enum


class ProvisionError(Exception):
    """A failure with a stable machine-readable code (the ledger's result, the events' code)."""
    code = "error"


class ExitCode(enum.IntEnum):
    """Exit statuses of rpiboot-provision. With several boards the worst outcome wins."""

    OK = 0
    """Every board that arrived was provisioned (or skipped as already provisioned)."""
    INTERNAL = 1
    """A bug: an unexpected exception (reported on one line)."""
    USAGE = 2
    PROFILE = 3
    """The profile or a file it names is unusable (check failed); nothing was touched."""
    NO_BOARD = 4
    """No board (or fewer than --count) arrived within --timeout."""
    BOARD_FAILED = 5
    """At least one board failed; the others are in the ledger as they ended."""
    PERMISSION = 7
    """USB devices or a block device could not be opened for lack of permission."""
    USB_UNAVAILABLE = 8
    LEDGER = 9
    """The ledger cannot be opened or written: refused to start (or the export failed)."""
    INTERRUPTED = 130
    """Ctrl-C or SIGTERM: boards in progress are marked interrupted in the ledger."""


_SEVERITY = [ExitCode.INTERNAL, ExitCode.USB_UNAVAILABLE, ExitCode.LEDGER, ExitCode.PROFILE,
             ExitCode.PERMISSION, ExitCode.INTERRUPTED, ExitCode.BOARD_FAILED,
             ExitCode.NO_BOARD, ExitCode.USAGE, ExitCode.OK]


def worst(codes: list[ExitCode]) -> ExitCode:
    return min(codes, key=_SEVERITY.index, default=ExitCode.OK)


RUN_CODES: dict[str, ExitCode] = {
    "usage": ExitCode.USAGE, "profile_invalid": ExitCode.PROFILE,
    "boot_directory": ExitCode.PROFILE, "image_corrupt": ExitCode.PROFILE,
    "image_unsupported": ExitCode.PROFILE, "bmap_invalid": ExitCode.PROFILE,
    "eeprom_invalid": ExitCode.PROFILE, "customise_invalid": ExitCode.PROFILE,
    "no_board": ExitCode.NO_BOARD, "permission": ExitCode.PERMISSION,
    "usb_unavailable": ExitCode.USB_UNAVAILABLE, "ledger_unavailable": ExitCode.LEDGER,
    "interrupted": ExitCode.INTERRUPTED, "internal": ExitCode.INTERNAL,
}
"""Codes of failures of the run as a whole (``error`` events); any other code found before
a board is touched (image, bmap, eeprom, customise values...) is a PROFILE problem."""


def exit_code_for(code: str, *, board: bool = False) -> ExitCode:
    """A board's failure is BOARD_FAILED whatever its code, except an interruption or a
    permission problem; a failure of the whole run maps through :data:`RUN_CODES`."""
    if board:
        if code in ("interrupted", "permission"):
            return RUN_CODES[code]
        return ExitCode.BOARD_FAILED
    return RUN_CODES.get(code, ExitCode.PROFILE)


class Interrupted(ProvisionError):
    code = "interrupted"


class NoBoardError(ProvisionError):
    code = "no_board"


class BootStepError(ProvisionError):
    """The engine could not boot the board (its code is the engine's, e.g. device_gone)."""

    def __init__(self, message: str, code: str = "boot_failed"):
        super().__init__(message)
        self.code = code


class EepromError(ProvisionError):
    code = "eeprom_invalid"


class AlreadyDone(ProvisionError):
    """Not a failure: the board was provisioned with this profile before (a skip)."""
    code = "already_provisioned"
