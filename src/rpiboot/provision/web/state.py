"""What the station dashboard shows, built from the provisioning events (docs/provision.md).

:class:`StationState` is plain data behind a lock: the pipeline's event sink calls
:meth:`StationState.apply` from any thread, the web server reads :meth:`StationState.snapshot`.
Every change bumps :attr:`StationState.version`, which the live stream watches. Values come from
events whose strings may come from a device: they are kept as text here and only ever reach the
page as JSON data rendered with ``textContent`` (never as HTML).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

MAX_TEXT = 300
"""Longest string kept from an event (a hostile board can send long serials or messages)."""
FINISHED_EVENTS = frozenset({"board_done", "board_failed", "board_skipped"})


@dataclass
class PortCard:
    port: str
    chip: str = ""
    serial: str = ""
    step: str = ""
    state: str = "active"
    """active (a board is being provisioned), ok, failed, skipped."""
    bytes: int = 0
    total: int | None = None
    rate: float = 0.0
    eta: float | None = None
    code: str = ""
    message: str = ""
    unit: int | None = None
    board: str = ""
    started: float = 0.0
    updated: float = 0.0


@dataclass
class _Totals:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failures: Counter[str] = field(default_factory=Counter)


class StationState:
    """The station as the dashboard shows it: one card per USB port and the run's totals."""

    def __init__(self, station: str = "", profile: str = ""):
        self.station = _text(station)
        self.profile = _text(profile)
        self.version = 0
        self.started = time.time()
        self.listening = True
        self._ports: dict[str, PortCard] = {}
        self._totals = _Totals()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def apply(self, event: Mapping[str, Any]) -> None:
        """Take one provisioning event (the ``--json`` object)."""
        kind = event.get("event")
        if not isinstance(kind, str):
            return
        with self._lock:
            if self._apply(kind, event):
                self.version += 1
                self._changed.notify_all()

    def wait_for_change(self, version: int, timeout: float) -> int:
        """Block until the version differs from ``version`` or ``timeout`` passes."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != version, timeout)
            return self.version

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            cards = sorted(self._ports.values(), key=lambda card: _port_key(card.port))
            active = sum(card.state == "active" for card in cards)
            return {
                "station": self.station, "profile": self.profile, "version": self.version,
                "started": self.started, "listening": self.listening,
                "ports": [asdict(card) for card in cards],
                "run": {"ok": self._totals.ok, "failed": self._totals.failed,
                        "skipped": self._totals.skipped, "active": active,
                        "failures": dict(self._totals.failures.most_common())},
            }

    # --- event handling ---------------------------------------------------------------------

    def _apply(self, kind: str, event: Mapping[str, Any]) -> bool:
        if kind == "start":
            self.station = self.station or _text(event.get("station"))
            self.profile = self.profile or _text(event.get("profile"))
            return True
        if kind == "summary":
            self.listening = False
            return True
        port = _text(event.get("port"))
        if not port:
            return False
        now = _number(event.get("time")) or time.time()
        if kind == "board_arrived":
            self._ports[port] = PortCard(port, chip=_text(event.get("chip")), started=now,
                                         updated=now)
            return True
        card = self._ports.get(port)
        if card is None:
            card = self._ports[port] = PortCard(port, started=now)
        card.updated = now
        self._update_card(card, kind, event)
        return True

    def _update_card(self, card: PortCard, kind: str, event: Mapping[str, Any]) -> None:
        card.chip = _text(event.get("chip")) or card.chip
        card.serial = _text(event.get("serial")) or card.serial
        if kind == "step_started":
            card.step = _text(event.get("step"))
            card.bytes, card.total, card.rate, card.eta = 0, None, 0.0, None
        elif kind == "step_progress":
            card.step = _text(event.get("step")) or card.step
            card.bytes = _integer(event.get("bytes")) or 0
            card.total = _integer(event.get("total"))
            card.rate = _number(event.get("rate")) or 0.0
            card.eta = _number(event.get("eta"))
        elif kind in FINISHED_EVENTS:
            self._finish_card(card, kind, event)

    def _finish_card(self, card: PortCard, kind: str, event: Mapping[str, Any]) -> None:
        if card.state != "active":
            return  # one board, one outcome: a repeated final event must not count twice
        card.eta = None
        if kind == "board_done":
            card.state, card.step = "ok", "done"
            card.unit = _integer(event.get("unit"))
            card.board = _describe_board(event.get("board"))
            written = _integer(event.get("bytes_written"))
            if written is not None:
                card.bytes = written
            self._totals.ok += 1
        elif kind == "board_skipped":
            card.state, card.message = "skipped", _text(event.get("reason"))
            self._totals.skipped += 1
        else:
            card.state = "failed"
            card.step = _text(event.get("step")) or card.step
            card.code = _text(event.get("code")) or "error"
            card.message = _text(event.get("message"))
            self._totals.failed += 1
            self._totals.failures[card.code] += 1


def _describe_board(board: Any) -> str:
    if not isinstance(board, Mapping):
        return ""
    parts = [_text(board.get("model")), _text(board.get("revision"))]
    memory = _integer(board.get("memory_mb"))
    if memory:
        parts.append(f"{memory // 1024} GB" if memory >= 1024 else f"{memory} MB")
    return " ".join(part for part in parts if part and part != "unknown")


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_TEXT]


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def _port_key(port: str) -> tuple[int, ...] | tuple[float]:
    """1-1.10 after 1-1.9: port paths sort by their numbers."""
    try:
        return tuple(int(part) for part in port.replace("-", ".").split("."))
    except ValueError:
        return (float("inf"),)
