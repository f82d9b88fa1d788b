"""Reporters: turn engine events into lines for people and scripts, or JSON for programs."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, Callable, TextIO

from .board_info import describe
from .events import Event

_KEPT_AS_IS = frozenset({"json"})
"""Fields already escaped for output (the metadata JSON), laid out over several lines."""


def printable(text: str) -> str:
    """Text made safe for a terminal or a line-based log: control and other non-printing
    characters (which a device could use to forge lines or move the cursor) become escapes."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
                   for char in text)


def _printable_value(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [_printable_value(item) for item in value]
    if isinstance(value, dict):
        return {key: item if key in _KEPT_AS_IS else _printable_value(item)
                for key, item in value.items()}
    return value


def for_display(item: Event) -> Event:
    """The event with every string that may come from a device made printable."""
    return Event(item.kind, item.port, _printable_value(item.data), item.time)


class _Writer:
    """Writes whole lines from any thread; a closed pipe silences output but never the boot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False

    def write_lines(self, stream: TextIO, lines: list[str]) -> None:
        if not lines or self._closed:
            return
        with self._lock:
            try:
                stream.write("".join(line + "\n" for line in lines))
                stream.flush()
            except (BrokenPipeError, ValueError):
                self._closed = True


# --- Message text shared by the text reporters (plain lines and the live view) ------------------

def notice_lines(port: str | None, message: str, verbose: int) -> list[str]:
    """A notice about the run is always shown; one about a device only with ``-v``."""
    if not port:
        return [message]
    return [f"{port}: {message}"] if verbose else []


def banner(version: str) -> str:
    """The first line of a run, as upstream's version line begins."""
    return f"RPIBOOT: pkg-version {version} (rpiboot for Python)"


def ignored_line(port: str | None, reason: str) -> str:
    return f"{port}: ignored ({reason})"


def metadata_line(port: str | None, key: str, value: object) -> str:
    return f"{port}: metadata {key} = {value}"


def metadata_json_text(document: str) -> str:
    """The metadata JSON document as printed (several lines, no trailing newline)."""
    return document.rstrip("\n")


def failure_line(port: str | None, message: str) -> str:
    return f"rpiboot: error: {port}: {message}"


def board_line(port: str | None, board: object) -> list[str]:
    """The board a device's OTP metadata describes (nothing when it sent none): plain lines
    show it with ``-v``, the live view always."""
    text = describe(board) if isinstance(board, dict) else ""
    return [f"{port}: board {text}"] if text else []


def conflict_line(port: str | None, data: dict[str, Any]) -> str:
    return (f"rpiboot: warning: {port}: serial {data['serial']!r} already has a different "
            f"record in {data['existing']}; kept it, this one is {data['path']}")


def stderr_lines(item: Event) -> list[str]:
    """The lines every reporter, --json included, also writes to stderr for an event."""
    if item.kind == "device_failed":
        return [failure_line(item.port, item.data["message"])]
    if item.kind == "metadata_conflict":
        return [conflict_line(item.port, item.data)]
    if item.kind == "demo_result":
        return demo_lines(item.data)
    return []


def demo_lines(data: dict[str, Any]) -> list[str]:
    return ["", *data["problems"], data["message"]]


def retry_line(port: str | None, data: dict[str, Any]) -> str:
    return (f"{port}: {data['message']}; waiting up to {data['wait']:g} s for it to come back "
            f"(attempt {data['attempt']} of {data['attempts']})")


def block_device_paths(names: list[str]) -> list[str]:
    return [f"/dev/{name}" for name in names]


def final_text(final: object, arrow: str = "->") -> str:
    """``--follow``: what a device became, appended to its summary line (empty if unknown)."""
    if not isinstance(final, dict) or not final:
        return ""
    return " ".join([f" {arrow} {final['usb_id']}",
                     *block_device_paths(final.get("block_devices", []))])


# --- Upstream's plain lines ---------------------------------------------------------------------

class PlainReporter:
    """Upstream rpiboot's lines, which existing scripts parse, plus clear error lines.

    Device lines carry no port prefix so that upstream patterns keep matching; ``-v`` adds the
    port path and details on lines of their own.
    """

    _TEMPLATES = {
        "file_missing": "Cannot open file {name}",
        "file_refused": "Refusing request for {name!r}: {reason}",
        "metadata_written": "Created metadata file: {path}",
        "stage_done": "Second stage boot server done",
    }
    """Kinds whose line is a fixed template of the event's fields."""

    def __init__(self, verbose: int = 0, stream: TextIO | None = None,
                 errors: TextIO | None = None):
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.errors = errors or sys.stderr
        self._writer = _Writer()

    def __call__(self, item: Event) -> None:
        lines, error_lines = self._format(for_display(item))
        self._writer.write_lines(self.stream, lines)
        self._writer.write_lines(self.errors, error_lines)

    def _format(self, item: Event) -> tuple[list[str], list[str]]:
        """(stdout lines, stderr lines) for one event."""
        errors = stderr_lines(item)
        if errors:
            return [], errors
        template = self._TEMPLATES.get(item.kind)
        formatter = self._FORMATTERS.get(item.kind)
        if template is not None:
            return [template.format(**item.data)], []
        return (formatter(self, item) if formatter is not None else []), []

    def _start(self, item: Event) -> list[str]:
        return [banner(item.data["version"]), ""]

    def _waiting(self, item: Event) -> list[str]:
        return [item.data["message"], ""]

    def _device_arrived(self, item: Event) -> list[str]:
        data = item.data
        return [f"Found {data['chip']} at {item.port} ({data['stage']} stage, "
                f"address {data['address']})"] if self.verbose else []

    def _stage_started(self, item: Event) -> list[str]:
        return ["Sending bootcode.bin" if item.data["stage"] == "rom"
                else "Second stage boot server"]

    def _file_loaded(self, item: Event) -> list[str]:
        source, origin = item.data["source"], item.data["origin"]
        if source == "archive_overlay":
            return [f"Loading bootfiles.bin overlay: {origin}"]
        if source == "archive":
            # Upstream prints nothing for archive members, and "Loading:" lines carry paths.
            return [f"{item.port}: loading {origin}"] if self.verbose else []
        return [f"Loading: {origin}"]

    def _second_stage_sent(self, item: Event) -> list[str]:
        code = item.data["return_code"]
        return ["Successful read 4 bytes "] if code == 0 else [f"Failed : 0x{code & 0xFFFFFFFF:x}"]

    def _file_requested(self, item: Event) -> list[str]:
        data = item.data
        return ([f"{item.port}: Received message {data['command']}: {data['name']}"]
                if self.verbose else [])

    def _file_served(self, item: Event) -> list[str]:
        data = item.data
        lines = [f"File read: {data['name']}"]
        if self.verbose >= 2:
            lines.append(f"{item.port}: sent {data['size']} bytes in {data['seconds']:.3f} s")
        return lines

    def _metadata(self, item: Event) -> list[str]:
        return ([metadata_line(item.port, item.data["key"], item.data["value"])]
                if self.verbose else [])

    def _metadata_json(self, item: Event) -> list[str]:
        return [metadata_json_text(item.data["json"])]

    def _notice(self, item: Event) -> list[str]:
        return notice_lines(item.port, item.data["message"], self.verbose)

    def _device_retrying(self, item: Event) -> list[str]:
        return [retry_line(item.port, item.data)]

    def _device_ignored(self, item: Event) -> list[str]:
        return [ignored_line(item.port, item.data["reason"])]

    def _device_done(self, item: Event) -> list[str]:
        return board_line(item.port, item.data.get("board")) if self.verbose else []

    def _device_followed(self, item: Event) -> list[str]:
        return [" ".join([f"{item.port}: now {item.data['usb_id']}",
                          *block_device_paths(item.data["block_devices"])])]

    def _summary(self, item: Event) -> list[str]:
        devices = item.data["devices"]
        if not devices or (len(devices) == 1 and not self.verbose):
            return []
        return ["", "Summary:"] + [_summary_line(device) for device in devices]

    _FORMATTERS: dict[str, Callable[[PlainReporter, Event], list[str]]] = {
        "start": _start, "waiting": _waiting, "device_arrived": _device_arrived, "stage_started": _stage_started,
        "file_loaded": _file_loaded, "second_stage_sent": _second_stage_sent,
        "file_requested": _file_requested, "file_served": _file_served, "metadata": _metadata,
        "metadata_json": _metadata_json, "notice": _notice, "device_retrying": _device_retrying,
        "device_ignored": _device_ignored, "device_followed": _device_followed,
        "device_done": _device_done, "summary": _summary,
    }


def _summary_line(device: dict[str, Any]) -> str:
    return (f"  {device['port']:<12} {device['chip']:<8} serial {device['serial'] or '-':<12}"
            f" {'+'.join(device['stages']):<10} {device['files']:>3} files "
            f"{device['bytes']:>10} bytes {device['seconds']:>7.3f} s  {device['result']}"
            + (f" ({device['error']})" if device["error"] else "")
            + final_text(device.get("final"))
            + (f"  [{describe(device['board'])}]" if device.get("board") else ""))


class JsonReporter:
    """One JSON object per line on stdout for every event (``--json``); device failures and
    warnings are also written to stderr as text, as without --json."""

    def __init__(self, stream: TextIO | None = None, errors: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.errors = errors or sys.stderr
        self._writer = _Writer()

    def __call__(self, item: Event) -> None:
        line = json.dumps(item.to_dict(), ensure_ascii=True, separators=(",", ":"))
        self._writer.write_lines(self.stream, [line])
        self._writer.write_lines(self.errors, stderr_lines(for_display(item)))
