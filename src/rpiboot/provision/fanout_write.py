"""One decompression of the image feeding every board of a write batch (see :mod:`.batch`).

A producer thread decompresses the image once through provio's :class:`~.fan_out.FanOut`;
each board's own worker thread writes its feed to its disk. A board whose writer fails is
detached and the others go on; a corrupt image fails every board of the batch (each with
``image_corrupt``). The image's sha256 is taken once, from the source, and the sha256 of each
written range once for the batch.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator

from .errors import Interrupted

if TYPE_CHECKING:
    from .board import BoardWorker
    from .pipeline import RunContext


class SharedSource:
    def __init__(self, context: "RunContext", consumers: int):
        from .fan_out import FanOut
        from .image_source import open_image
        from .writer import SharedDigests
        self.context = context
        self.digests = SharedDigests()
        """Each written range is hashed once for the whole batch (verify needs the hashes)."""
        self.source = open_image(context.profile.os.image)
        self._fan = FanOut(self._chunks())
        self._feeds = [self._fan.attach() for _ in range(consumers)]
        self._next = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._fan.run, daemon=True, name="provision-decompress").start()

    def _chunks(self) -> Iterator[bytes]:
        for chunk in self.source.chunks():
            if self.context.stop.is_set():
                raise Interrupted("interrupted while writing")
            yield chunk

    @property
    def size(self) -> int | None:
        return self.source.size

    def consumer(self) -> tuple[int, Any]:
        """A slot and its feed of chunks; call :meth:`detach` with the slot when done."""
        with self._lock:
            slot = self._next
            self._next += 1
        return slot, self._feeds[slot]

    def detach(self, slot: int) -> None:
        self._feeds[slot].close()


def write_batch_member(context: "RunContext", worker: "BoardWorker",
                       shared: SharedSource) -> Any:
    """Write the shared image to ``worker``'s disk; the worker's own thread runs this."""
    from .writer import write_image
    slot, feed = shared.consumer()
    try:
        fd = worker.open_disk()
        try:
            result = write_image(feed, fd, disk_size=worker.board.disk.size,
                                 image_size=shared.size, bmap=context.bmap, hash_image=False,
                                 digests=shared.digests,
                                 progress=worker.progress("write", time.monotonic()))
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        shared.detach(slot)
    result.image_sha256 = shared.source.sha256
    return result
