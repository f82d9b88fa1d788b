"""The schema of the ``--json`` event stream (one JSON object per line), as data.

docs/events.md documents the same fields in prose; tests check that every event a run emits
validates against :data:`EVENT_SCHEMA`. Every object has ``event`` (the kind, a string) and
``time`` (Unix time in seconds, a number); device events also have ``port`` (the USB port path,
e.g. ``1-1.3``). Fields are only ever added, never renamed or removed, within a major version.

Types: ``str``, ``int``, ``number`` (int or float), ``bool``, ``list``, ``dict``; a ``?`` suffix
allows null (docs/events.md: string, integer, number, boolean, array, object; "or null"). A field
in :data:`OPTIONAL_FIELDS` may be left out instead, which is not the same as null.
"""

from __future__ import annotations

from typing import Any

COMMON = {"event": "str", "time": "number"}

DEVICE_SUMMARY = {
    "port": "str", "chip": "str", "serial": "str?", "stages": "list", "files": "int",
    "bytes": "int", "seconds": "number", "result": "str", "error": "str?", "final": "dict?",
    "warning": "str?", "board": "dict?",
}
"""One device in ``summary.devices`` (and the fields of ``device_done``, without ``port``)."""

EVENT_SCHEMA: dict[str, dict[str, str]] = {
    # the run
    "start": {"version": "str", "directory": "str?"},
    "waiting": {"message": "str"},
    "summary": {"devices": "list", "ignored": "list", "exit_code": "int"},
    "error": {"code": "str", "message": "str", "exit_code": "int"},
    "notice": {"port": "str", "message": "str"},
    "demo_result": {"ok": "bool", "problems": "list", "exit_code": "int", "message": "str"},
    # one device
    "device_arrived": {"port": "str", "chip": "str", "stage": "str", "serial_index": "int",
                       "bus": "int", "address": "int", "speed": "str", "interfaces": "int"},
    "device_ignored": {"port": "str", "chip": "str", "reason": "str"},
    "stage_started": {"port": "str", "stage": "str", "chip": "str", "file": "str",
                      "serial": "str?"},
    "file_loaded": {"port": "str", "name": "str", "origin": "str", "source": "str",
                    "size": "int"},
    "file_progress": {"port": "str", "name": "str", "sent": "int", "size": "int",
                      "seconds": "number"},
    "second_stage_sent": {"port": "str", "name": "str", "size": "int", "return_code": "int",
                          "seconds": "number"},
    "file_requested": {"port": "str", "command": "str", "name": "str"},
    "file_served": {"port": "str", "name": "str", "size": "int", "seconds": "number"},
    "file_missing": {"port": "str", "name": "str"},
    "file_refused": {"port": "str", "name": "str?", "reason": "str"},
    "metadata": {"port": "str", "key": "str", "value": "str"},
    "metadata_json": {"port": "str", "json": "str"},
    "metadata_written": {"port": "str", "path": "str"},
    "metadata_conflict": {"port": "str", "serial": "str?", "path": "str", "existing": "str"},
    "stage_done": {"port": "str", "stage": "str"},
    "device_done": {k: v for k, v in DEVICE_SUMMARY.items()},
    "device_failed": {"port": "str", "code": "str", "message": "str", "exit_code": "int"},
    "device_retrying": {"port": "str", "code": "str", "message": "str", "attempt": "int",
                        "attempts": "int", "wait": "number"},
    "device_followed": {"port": "str", "vendor_id": "int", "product_id": "int",
                        "usb_id": "str", "block_devices": "list", "seconds": "number"},
    # rpiboot --list --json
    "device_listed": {"port": "str", "chip": "str", "stage": "str", "vendor_id": "int",
                      "product_id": "int", "bus": "int", "address": "int", "speed": "str",
                      "serial": "str?", "serial_problem": "str?"},
}

OPTIONAL_FIELDS: dict[str, set[str]] = {
    "stage_started": {"file", "serial"},  # file: rom stage only; serial: server stage only
    "notice": {"port"},
}
"""Fields that some events of a kind leave out; all other listed fields are always present."""

ERROR_CODES = {
    "usage": 2, "boot_directory": 3, "no_device": 4, "transfer": 5, "device_gone": 5,
    "stalled": 5, "protocol": 5, "follow_timeout": 5, "refused": 6, "permission": 7,
    "usb_unavailable": 8, "duplicate_serial": 9, "interrupted": 130, "terminated": 143,
    "hangup": 129, "error": 5, "download": 3,
}
"""Every stable ``code`` of ``error`` / ``device_failed`` / summary ``error`` and its exit status."""

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "number": (int, float), "bool": (bool,), "list": (list,),
    "dict": (dict,),
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind.endswith("?"):
        if value is None:
            return True
        kind = kind[:-1]
    if isinstance(value, bool) and kind != "bool":
        return False
    return isinstance(value, _TYPES[kind])


def _check_fields(where: str, item: dict[str, Any], fields: dict[str, str],
                  optional: set[str]) -> list[str]:
    problems = []
    for name, kind in fields.items():
        if name not in item:
            if name not in optional:
                problems.append(f"{where}: missing field {name!r}")
        elif not _type_ok(item[name], kind):
            problems.append(f"{where}: field {name!r} = {item[name]!r} is not {kind}")
    for name in item:
        if name not in fields and name not in COMMON:
            problems.append(f"{where}: undocumented field {name!r}")
    return problems


def validate(item: dict[str, Any]) -> list[str]:
    """Problems with one event object (as ``--json`` prints it); empty when it is valid."""
    kind = item.get("event")
    if not isinstance(kind, str) or kind not in EVENT_SCHEMA:
        return [f"unknown event kind {kind!r}"]
    fields = EVENT_SCHEMA[kind]
    problems = _check_fields(kind, item, {**COMMON, **fields}, OPTIONAL_FIELDS.get(kind, set()))
    if kind == "summary" and isinstance(item.get("devices"), list):
        for index, device in enumerate(item["devices"]):
            if not isinstance(device, dict):
                problems.append(f"summary.devices[{index}] is not an object")
                continue
            problems += _check_fields(f"summary.devices[{index}]", device, DEVICE_SUMMARY,
                                      set())
    for name in ("code", "error", "warning"):
        code = item.get(name)
        if kind in ("error", "device_failed", "device_done") and isinstance(code, str) \
                and code not in ERROR_CODES:
            problems.append(f"{kind}: undocumented code {code!r}")
    return problems


_TYPE_WORDS = {"str": "string", "int": "integer", "number": "number", "list": "array",
               "dict": "object", "bool": "boolean"}


def markdown_table() -> str:
    """The README's table of event kinds and fields, generated from :data:`EVENT_SCHEMA`."""
    rows = ["| event | `port` | fields |", "|---|---|---|"]
    for kind, fields in EVENT_SCHEMA.items():
        optional = OPTIONAL_FIELDS.get(kind, set())
        described = []
        for name, type_name in fields.items():
            if name == "port":
                continue
            words = _TYPE_WORDS[type_name.rstrip("?")]
            words += " or null" if type_name.endswith("?") else ""
            words += " (optional)" if name in optional else ""
            described.append(f"`{name}` {words}")
        port = "" if "port" not in fields else ("optional" if "port" in optional else "yes")
        rows.append(f"| `{kind}` | {port} | {', '.join(described)} |")
    return "\n".join(rows)
