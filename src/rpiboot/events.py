"""Everything the engine reports, as data.

One :class:`Event` per step; reporters (:mod:`rpiboot.output`) turn them into text, a live view or
JSON lines, and the Python API hands them to a callback. The ``kind`` values and their fields are
a stable, documented interface (README, "Events").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

EventSink = Callable[["Event"], None]


@dataclass(frozen=True)
class Event:
    kind: str
    port: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"event": self.kind, "time": round(self.time, 6)}
        if self.port is not None:
            result["port"] = self.port
        result.update(self.data)
        return result


def event(kind: str, port: str | None = None, **data: Any) -> Event:
    return Event(kind, port, data)
