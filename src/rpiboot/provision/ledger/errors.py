"""Failures of the ledger, each with the stable code that becomes a board's result."""

from __future__ import annotations

from ..errors import ProvisionError


class LedgerError(ProvisionError):
    """The ledger cannot be opened, read or written (connection lost, file unwritable...)."""

    code = "ledger_unavailable"


class AlreadyProvisionedError(ProvisionError):
    """The board has an ``ok`` record with the same profile id (use reprovision to redo it)."""

    code = "already_provisioned"


class ClaimedElsewhereError(ProvisionError):
    """Another station (or another run) holds an unexpired claim on this serial."""

    code = "claimed_elsewhere"


class PoolExhaustedError(ProvisionError):
    """The identity pool has no free entry left."""

    code = "pool_exhausted"


class PoolImportError(ProvisionError):
    """A pool file or its rows are not valid; nothing was imported."""

    code = "pool_invalid"
