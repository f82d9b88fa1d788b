"""Reporters: turn engine events into lines for people and scripts, or JSON for programs."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, TextIO

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


class PlainReporter:
    """Upstream rpiboot's lines, which existing scripts parse, plus clear error lines.

    Device lines carry no port prefix so that upstream patterns keep matching; ``-v`` adds the
    port path and details on lines of their own.
    """

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
        data, port = item.data, item.port
        kind = item.kind
        detail = self.verbose >= 1
        if kind == "waiting":
            return [data["message"], ""], []
        if kind == "device_arrived":
            return ([f"Found {data['chip']} at {port} ({data['stage']} stage, "
                     f"address {data['address']})"] if detail else []), []
        if kind == "stage_started":
            return (["Sending bootcode.bin"] if data["stage"] == "rom"
                    else ["Second stage boot server"]), []
        if kind == "file_loaded":
            return [self._loaded_line(data)], []
        if kind == "second_stage_sent":
            if data["return_code"] == 0:
                return ["Successful read 4 bytes "], []
            return [f"Failed : 0x{data['return_code'] & 0xFFFFFFFF:x}"], []
        if kind == "file_served":
            return [f"File read: {data['name']}"] + (
                [f"{port}: sent {data['size']} bytes in {data['seconds']:.3f} s"]
                if self.verbose >= 2 else []), []
        if kind == "file_missing":
            return [f"Cannot open file {data['name']}"], []
        if kind == "file_refused":
            return [f"Refusing request for {data['name']!r}: {data['reason']}"], []
        if kind == "metadata_written":
            return [f"Created metadata file: {data['path']}"], []
        if kind == "metadata_json":
            return [data["json"].rstrip("\n")], []
        if kind == "stage_done":
            return ["Second stage boot server done"], []
        if kind == "device_failed":
            return [], [f"rpiboot: error: {port}: {data['message']}"]
        if kind == "notice":
            return ([f"{port}: {data['message']}" if port else data["message"]]
                    if detail or not port else []), []
        if kind == "file_requested" and detail:
            return [f"{port}: Received message {data['command']}: {data['name']}"], []
        if kind == "metadata" and detail:
            return [f"{port}: metadata {data['key']} = {data['value']}"], []
        if kind == "device_ignored":
            return [f"{port}: ignored ({data['reason']})"], []
        if kind == "device_followed":
            blocks = "".join(f" /dev/{name}" for name in data["block_devices"])
            return [f"{port}: now {data['usb_id']}{blocks}"], []
        if kind == "summary":
            return self._summary(data), []
        return [], []

    @staticmethod
    def _loaded_line(data: dict[str, object]) -> str:
        if data["source"] == "archive_overlay":
            return f"Loading bootfiles.bin overlay: {data['origin']}"
        return f"Loading: {data['origin']}"

    def _summary(self, data: dict[str, object]) -> list[str]:
        devices = data["devices"]
        assert isinstance(devices, list)
        if not devices or (len(devices) == 1 and not self.verbose):
            return []
        lines = ["", "Summary:"]
        for device in devices:
            lines.append(
                f"  {device['port']:<12} {device['chip']:<8} serial {device['serial'] or '-':<12}"
                f" {'+'.join(device['stages']):<10} {device['files']:>3} files "
                f"{device['bytes']:>10} bytes {device['seconds']:>7.3f} s  {device['result']}"
                + (f" ({device['error']})" if device["error"] else "")
                + _final_text(device.get("final")))
        return lines


def _final_text(final: object) -> str:
    if not isinstance(final, dict):
        return ""
    return f" -> {final['usb_id']}" + "".join(f" /dev/{name}" for name in
                                             final.get("block_devices", []))


class JsonReporter:
    """One JSON object per line on stdout for every event (``--json``)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self._writer = _Writer()

    def __call__(self, item: Event) -> None:
        line = json.dumps(item.to_dict(), ensure_ascii=True, separators=(",", ":"))
        self._writer.write_lines(self.stream, [line])
