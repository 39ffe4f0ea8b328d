"""Prefetching: the next batches (graphs included) are produced by a background thread while the
current training step runs (issue 15; ``data.prefetch``).

``Prefetcher(source, depth=k)`` iterates ``source`` in one daemon worker thread and hands its items
over through a queue of at most ``k`` finished items, so the worker is at most ``k`` items (plus the
one it is producing) ahead of the consumer. Order and values are the source's own: the worker only
runs the very same iterator earlier (deterministic, same batches in the same order as without
prefetch). The heavy parts of producing a day batch (numpy gathers, torch matmuls of the
correlation graph) release the GIL, so they overlap with the step in the main thread.

* An exception raised by the source in the worker is re-raised in the consumer's thread at the
  position it occurred (the items before it are delivered first), with the worker's traceback.
* ``close()`` (also called by ``with``, on exhaustion and on garbage collection) stops the worker
  and joins it: a consumer that stops early (``break``, ``KeyboardInterrupt``, an exception in the
  step) leaves no thread behind. The source iterator is closed in the worker's own thread (a
  generator cannot be closed from another thread while it runs).

Nothing here holds a reference from the worker back to the ``Prefetcher``: dropping the last
reference to it closes it.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()  # the source is exhausted
_POLL_S = 0.05  # how often a worker blocked on a full queue looks at the stop flag


class _Failure:
    """An exception of the worker, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _work(source: Iterable[object], out: queue.Queue[object], stop: threading.Event) -> None:
    """The worker: next item, put (waiting while the queue is full), until exhausted or stopped."""
    it = iter(source)
    try:
        while not stop.is_set():
            try:
                item: object = next(it)
            except StopIteration:
                item = _DONE
            except BaseException as exc:  # noqa: BLE001 - every failure goes to the consumer
                item = _Failure(exc)
            while not stop.is_set():
                try:
                    out.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if item is _DONE or isinstance(item, _Failure):
                return
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # in this thread: the generator ran here


class Prefetcher(Generic[T]):
    """Iterates ``source`` ``depth`` items ahead in a background thread (module docstring).

    Args:
        source: the iterable to run ahead (e.g. ``DayBatchLoader`` batches).
        depth: finished items held in the queue (>= 1).
        name: the worker thread's name (``threading.enumerate`` shows it).
    """

    def __init__(self, source: Iterable[T], *, depth: int = 1, name: str = "atft-prefetch") -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth} (0 = no prefetcher at all)")
        self._queue: queue.Queue[object] = queue.Queue(maxsize=int(depth))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=_work, args=(source, self._queue, self._stop), name=name,
                                        daemon=True)
        self._thread.start()

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc  # its __traceback__ is the worker's frames; this raise appends ours
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the worker and wait for it (it finishes the item it is producing first)."""
        self._finished = True
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()  # free a worker blocked on a full queue
            except queue.Empty:
                pass
            self._thread.join(timeout=_POLL_S)
        try:
            while True:
                self._queue.get_nowait()  # drop finished items now, not at garbage collection
        except queue.Empty:
            pass

    @property
    def alive(self) -> bool:
        """The worker thread is still running."""
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_finished", True):
            return
        if sys.is_finalizing():  # interpreter exit: daemon threads may be frozen, never wait for one
            self._stop.set()
            return
        self.close()


def prefetch(source: Iterable[T], depth: int) -> Iterator[T]:
    """``source`` itself when ``depth`` is 0 (prefetch off), else a ``Prefetcher`` of that depth."""
    if depth < 0:
        raise ValueError(f"prefetch depth must be >= 0, got {depth}")
    return iter(source) if depth == 0 else Prefetcher(source, depth=depth)


__all__ = ["Prefetcher", "prefetch"]
