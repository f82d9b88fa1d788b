"""Boards that reach the write step together share one decompression of the image.

Batching rule (docs/provision.md): the first board to reach the write step opens a batch and
waits up to ``gather`` seconds (``--gather``, default 3) for others; the batch starts as soon as
every board in progress that has not written yet has joined, or when the window ends. A board
that reaches the write step while a batch is writing opens the next batch (its own
decompression; batches may overlap). Inside a batch the image is decompressed once and every
chunk goes to every board's writer; a board whose writer fails (device gone, I/O error) is
detached and fails alone, the others go on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import Interrupted

if TYPE_CHECKING:
    from .board import BoardWorker
    from .pipeline import RunContext


@dataclass
class _Batch:
    opened: float
    number: int
    members: list["BoardWorker"] = field(default_factory=list)
    started: bool = False
    shared: Any = None
    error: Exception | None = None
    """Opening the image failed: every board of the batch fails with it."""


class WriteBatcher:
    def __init__(self, context: "RunContext"):
        self.context = context
        self._lock = threading.Condition()
        self._gathering: _Batch | None = None
        self._batches = 0

    def write(self, worker: "BoardWorker") -> tuple[Any, dict[str, int]]:
        """Write the image to ``worker``'s disk (blocks); returns provio's WriteResult and
        which batch it was (``batch``: its number in this run, ``boards``: how many shared it)."""
        batch = self._join(worker)
        if batch.error is not None:
            raise batch.error
        from .fanout_write import write_batch_member
        result = write_batch_member(self.context, worker, batch.shared)
        return result, {"batch": batch.number, "boards": len(batch.members)}

    def _join(self, worker: "BoardWorker") -> Any:
        with self._lock:
            batch = self._gathering
            if batch is None:
                self._batches += 1
                batch = self._gathering = _Batch(opened=time.monotonic(), number=self._batches)
            batch.members.append(worker)
            self._lock.notify_all()
            deadline = batch.opened + self.context.options.gather
            while not batch.started:
                if self.context.stop.is_set():
                    batch.members.remove(worker)
                    raise Interrupted("interrupted before writing")
                if self._everyone_here(batch) or time.monotonic() >= deadline:
                    self._start(batch)
                    break
                self._lock.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            return batch

    def _everyone_here(self, batch: _Batch) -> bool:
        """Every board in progress that could still write has joined this batch."""
        return self.context.boards_before_write() <= 0

    def _start(self, batch: _Batch) -> None:
        from .fanout_write import SharedSource
        batch.started = True
        self._gathering = None
        try:
            batch.shared = SharedSource(self.context, len(batch.members))
        except Exception as error:  # noqa: BLE001 - handed to every member
            batch.error = error
        self._lock.notify_all()
