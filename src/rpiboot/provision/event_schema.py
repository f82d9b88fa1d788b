"""The ``rpiboot-provision --json`` event stream, as data (documented in docs/provision.md).

The conventions are ``rpiboot --json``'s (:mod:`rpiboot.event_schema`): one JSON object per line
with ``event`` (the kind) and ``time`` (Unix seconds); board events have ``port`` (the USB port
path). Fields are only ever added, never renamed or removed. Types: ``str``, ``int``,
``number``, ``bool``, ``list``, ``dict``, with ``?`` for "or null"; fields in
:data:`OPTIONAL_FIELDS` may be absent.
"""

from __future__ import annotations

from typing import Any

from ..event_schema import _check_fields, _TYPE_WORDS

COMMON = {"event": "str", "time": "number"}

STEPS = ("eeprom", "boot", "storage", "claim", "write", "verify", "customise", "record")
"""Step names, in the order a board goes through them (each optional but boot and write)."""

BOARD_SUMMARY = {
    "port": "str", "serial": "str?", "chip": "str?", "result": "str", "step": "str?",
    "message": "str?", "unit": "int?", "disk": "str?", "bytes_written": "int",
    "verified": "bool", "seconds": "number",
}
"""One board in ``summary.boards``: ``result`` is ``ok``, ``skipped`` or the failure code."""

EVENT_SCHEMA: dict[str, dict[str, str]] = {
    "start": {"version": "str", "profile": "str", "profile_id": "str", "station": "str",
              "ledger": "str"},
    "waiting": {"message": "str"},
    "board_arrived": {"port": "str", "chip": "str"},
    "step_started": {"port": "str", "step": "str", "serial": "str?"},
    "step_progress": {"port": "str", "step": "str", "bytes": "int", "total": "int?",
                      "rate": "number", "eta": "number?"},
    "step_done": {"port": "str", "step": "str", "seconds": "number", "details": "dict"},
    "board_skipped": {"port": "str", "serial": "str?", "reason": "str"},
    "board_done": {"port": "str", "serial": "str?", "chip": "str", "unit": "int?",
                   "disk": "str?", "bytes_written": "int", "verified": "bool",
                   "seconds": "number", "board": "dict?", "record": "int?"},
    "board_failed": {"port": "str", "serial": "str?", "step": "str", "code": "str",
                     "message": "str", "exit_code": "int"},
    "notice": {"port": "str", "message": "str"},
    "error": {"code": "str", "message": "str", "exit_code": "int"},
    "summary": {"boards": "list", "exit_code": "int"},
}

OPTIONAL_FIELDS: dict[str, set[str]] = {
    "step_started": {"serial"},
    "notice": {"port"},
}
"""Fields that some events of a kind leave out. In ``board_done``, ``board`` is what the engine
decoded from the OTP metadata (model, revision, memory_mb...; null when unknown) and ``record``
the board's id in the ledger."""


def validate(item: dict[str, Any]) -> list[str]:
    """Problems with one event object as ``--json`` prints it; empty when it is valid."""
    kind = item.get("event")
    if not isinstance(kind, str) or kind not in EVENT_SCHEMA:
        return [f"unknown event kind {kind!r}"]
    problems = _check_fields(kind, item, {**COMMON, **EVENT_SCHEMA[kind]},
                             OPTIONAL_FIELDS.get(kind, set()))
    step = item.get("step")
    if "step" in EVENT_SCHEMA[kind] and step is not None and step not in STEPS:
        problems.append(f"{kind}: unknown step {step!r}")
    if kind == "summary" and isinstance(item.get("boards"), list):
        for index, board in enumerate(item["boards"]):
            if not isinstance(board, dict):
                problems.append(f"summary.boards[{index}] is not an object")
                continue
            problems += _check_fields(f"summary.boards[{index}]", board, BOARD_SUMMARY, set())
    return problems


def markdown_table() -> str:
    """docs/provision.md's table of event kinds, generated from :data:`EVENT_SCHEMA`."""
    rows = ["| event | fields |", "|---|---|"]
    for kind, fields in EVENT_SCHEMA.items():
        optional = OPTIONAL_FIELDS.get(kind, set())
        described = []
        for name, type_name in fields.items():
            words = _TYPE_WORDS[type_name.rstrip("?")]
            words += " or null" if type_name.endswith("?") else ""
            words += " (optional)" if name in optional else ""
            described.append(f"`{name}` {words}")
        rows.append(f"| `{kind}` | {', '.join(described)} |")
    return "\n".join(rows)
