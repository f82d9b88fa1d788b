"""One decompression of the image feeding every board of a write batch (see :mod:`.batch`).

A producer thread reads the image source once and hands each chunk to every board still
writing, through a small bounded queue per board (memory stays at a few chunks per board; the
slowest board sets the pace, it never corrupts the others). A board whose writer fails is
detached at once and the others go on.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator

from .errors import Interrupted, ProvisionError

if TYPE_CHECKING:
    from .board import BoardWorker
    from .pipeline import RunContext

QUEUE_CHUNKS = 4
_END = object()


class SharedSource:
    def __init__(self, context: "RunContext", consumers: int):
        from .image_source import open_image
        self.context = context
        self.source = open_image(context.profile.os.image)
        self._queues = [queue.Queue(maxsize=QUEUE_CHUNKS) for _ in range(consumers)]
        self._attached = [True] * consumers
        self._next = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._produce, daemon=True,
                                        name="provision-decompress")
        self._thread.start()

    @property
    def size(self) -> int | None:
        return self.source.size

    def consumer(self) -> tuple[int, Iterator[bytes]]:
        """A slot and its chunks; call :meth:`detach` with the slot when done."""
        with self._lock:
            slot = self._next
            self._next += 1
        return slot, self._consume(slot)

    def _consume(self, slot: int) -> Iterator[bytes]:
        feed = self._queues[slot]
        try:
            while True:
                item = feed.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.detach(slot)

    def detach(self, slot: int) -> None:
        self._attached[slot] = False
        feed = self._queues[slot]
        while True:  # unblock a producer waiting on this queue
            try:
                feed.get_nowait()
            except queue.Empty:
                return

    def _produce(self) -> None:
        try:
            for chunk in self.source.chunks():
                if self.context.stop.is_set():
                    raise Interrupted("interrupted while writing")
                if not any(self._attached):
                    return
                for slot, feed in enumerate(self._queues):
                    self._put(slot, feed, chunk)
            final: Any = _END
        except ProvisionError as error:
            final = error
        except Exception as error:  # a bug in decompression fails the batch's boards
            final = ProvisionError(f"internal error while decompressing: {error!r}")
        for slot, feed in enumerate(self._queues):
            self._put(slot, feed, final)

    def _put(self, slot: int, feed: "queue.Queue[Any]", item: Any) -> None:
        while self._attached[slot]:
            try:
                feed.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.context.stop.is_set() and item is not _END \
                        and not isinstance(item, BaseException):
                    return


def write_batch_member(context: "RunContext", members: list["BoardWorker"],
                       worker: "BoardWorker", shared: SharedSource) -> Any:
    """Write the shared image to ``worker``'s disk; the worker's own thread runs this."""
    from .writer import write_image
    slot, chunks = shared.consumer()
    try:
        fd = worker.open_disk()
    except BaseException:
        shared.detach(slot)
        raise
    try:
        result = write_image(chunks, fd, disk_size=worker.board.disk.size,
                             image_size=shared.size, bmap=context.bmap,
                             progress=worker.progress("write", time.monotonic()))
        os.fsync(fd)
        return result
    finally:
        shared.detach(slot)
        os.close(fd)
