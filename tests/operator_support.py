"""Shared helpers for the tests/test_operator_*.py files (operator's view: CLI, output, events)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import rpiboot.demo
from rpiboot.api import boot
from rpiboot.events import Event
from rpiboot.manager import RunResult
from rpiboot.options import BootOptions
from rpiboot.simulator.in_process import VirtualBus

DEMO_DIR = Path(rpiboot.demo.__file__).parent / "boot"


def fast_options(**changes: Any) -> BootOptions:
    """Options for quick virtual runs: short timeouts everywhere."""
    base = BootOptions(directory=DEMO_DIR, timeout=2.0, run_timeout=10.0, retry_delay=0.01,
                       retries=2, reenumerate_timeout=1.0, stall_timeout=0.3, read_timeout=0.3,
                       control_timeout=0.2, bulk_timeout=0.2, poll_interval=0.005)
    return dataclasses.replace(base, **changes)


class Collector:
    """An event sink that keeps everything (thread-safe)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, item: Event) -> None:
        with self._lock:
            self.events.append(item)

    def kinds(self) -> list[str]:
        return [item.kind for item in self.events]

    def of(self, kind: str) -> list[Event]:
        return [item for item in self.events if item.kind == kind]


def run(pis: list, **changes: Any) -> tuple[RunResult, Collector]:
    events = Collector()
    result = boot(fast_options(**changes), on_event=events, transport=VirtualBus(pis))
    return result, events
