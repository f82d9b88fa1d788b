"""One stream of chunks read once and fed to several consumers (writers) at the same time.

The producer (the caller of :meth:`FanOut.run`, typically decompressing an image) keeps at most
``depth`` chunks ahead of the slowest consumer; chunks are shared, never copied per consumer, so
memory stays at about ``depth + consumers`` chunks. A consumer that fails or gives up closes its
:class:`Feed` and is detached: the others carry on at their own pace. An error of the producer
(a corrupt image) is raised in every consumer still attached.

Typical use, one thread per writer::

    fan = FanOut(source.chunks())
    feeds = [fan.attach() for _ in disks]
    digests = SharedDigests()           # verify's checksums, computed once for all disks
    ... a thread per disk runs ``with feed: write_image(feed, fd, ..., hash_image=False,
    ...                                                  digests=digests)`` ...
    fan.run()                           # then source.sha256 is the image's sha256

or simply :func:`fan_out`, which does that and returns each consumer's result or exception.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")


class FanOut:
    def __init__(self, source: Iterable[bytes], *, depth: int = 4):
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._source = source
        self._depth = depth
        self._lock = threading.Condition()
        self._chunks: dict[int, bytes] = {}
        self._produced = 0
        self._finished = False
        self._error: BaseException | None = None
        self._feeds: list[Feed] = []
        self._started = False

    def attach(self) -> "Feed":
        """A new consumer; all consumers must be attached before :meth:`run`."""
        with self._lock:
            if self._started:
                raise RuntimeError("attach every consumer before the fan-out runs")
            feed = Feed(self)
            self._feeds.append(feed)
            return feed

    def run(self) -> None:
        """Read the source to its end (or until no consumer is left), feeding every consumer.

        An exception of the source is handed to the consumers, not raised here; the consumers'
        own outcome is what counts."""
        with self._lock:
            self._started = True
        iterator = iter(self._source)
        try:
            for chunk in iterator:
                if not self._publish(chunk):
                    break
        except BaseException as error:  # noqa: B902 - delivered to every consumer
            with self._lock:
                self._error = error
            if not isinstance(error, Exception):
                raise
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            with self._lock:
                self._finished = True
                self._lock.notify_all()

    @property
    def produced(self) -> int:
        """Chunks read from the source so far."""
        return self._produced

    def _publish(self, chunk: bytes) -> bool:
        with self._lock:
            while True:
                live = [feed for feed in self._feeds if not feed.closed]
                if not live:
                    return False
                if self._produced - min(feed.position for feed in live) < self._depth:
                    break
                self._lock.wait()
            self._chunks[self._produced] = chunk
            self._produced += 1
            self._lock.notify_all()
            return True

    def _next(self, feed: "Feed") -> bytes:
        with self._lock:
            while feed.position >= self._produced and not self._finished and not feed.closed:
                self._lock.wait()
            if feed.closed:
                raise StopIteration
            if feed.position < self._produced:
                chunk = self._chunks[feed.position]
                feed.position += 1
                self._forget_consumed()
                return chunk
            if self._error is not None:
                raise self._error
            raise StopIteration

    def _close(self, feed: "Feed") -> None:
        with self._lock:
            feed.closed = True
            self._forget_consumed()

    def _forget_consumed(self) -> None:
        live = [feed.position for feed in self._feeds if not feed.closed]
        oldest = min(live, default=self._produced)
        for number in [n for n in self._chunks if n < oldest]:
            del self._chunks[number]
        self._lock.notify_all()


class Feed:
    """One consumer's view of a :class:`FanOut`: an iterator of the chunks, in order."""

    def __init__(self, fan: FanOut):
        self._fan = fan
        self.position = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return self._fan._next(self)

    def close(self) -> None:
        """Detach: the fan-out no longer waits for this consumer (safe from any thread)."""
        self._fan._close(self)

    def __enter__(self) -> "Feed":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Outcome(Generic[T]):
    def __init__(self) -> None:
        self.value: T | BaseException | None = None


def fan_out(source: Iterable[bytes], consumers: Sequence[Callable[[Iterator[bytes]], T]], *,
            depth: int = 4) -> list[T | BaseException]:
    """Run each consumer in its own thread on its own feed of ``source`` (read once, in this
    thread); returns, in order, each consumer's return value or the exception it raised."""
    fan = FanOut(source, depth=depth)
    outcomes = [_Outcome[T]() for _ in consumers]
    threads = []
    for consumer, outcome in zip(consumers, outcomes):
        feed = fan.attach()
        threads.append(threading.Thread(target=_consume, args=(consumer, feed, outcome),
                                        name="fan-out writer", daemon=True))
    for thread in threads:
        thread.start()
    try:
        fan.run()
    finally:
        for thread in threads:
            thread.join()
    return [outcome.value for outcome in outcomes]  # type: ignore[misc]


def _consume(consumer: Callable[[Iterator[bytes]], T], feed: Feed, outcome: _Outcome[T]) -> None:
    with feed:
        try:
            outcome.value = consumer(feed)
        except BaseException as error:  # noqa: B902 - reported to the caller of fan_out
            outcome.value = error
