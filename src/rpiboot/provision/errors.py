class ProvisionError(Exception):
    """A failure with a stable machine-readable code (the ledger's result, the events' code)."""
    code = "error"
