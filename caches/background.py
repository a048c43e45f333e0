"""Writing batches from a background thread, so the model never waits on HDF5.

The capture of batch ``k + 1`` runs while batch ``k`` is written; at most ``depth``
batches wait in between (a bounded queue: memory stays flat). The writer thread writes
batches in order through the same :class:`caches.writer.CacheWriter`, so the file on
disk is always a resumable prefix. An error in the thread is raised in the caller's
thread at its next hand-over (or on leaving), and a caller that stops (an error, Ctrl-C)
lets the thread finish the batches already handed over, then joins it before the file
closes.
"""

from __future__ import annotations

import queue
import threading
from types import TracebackType
from typing import Any

from caches.writer import CacheWriter

__all__ = ["BackgroundWriter"]

_DONE = object()


class BackgroundWriter:
    """``put(start, acts, extra, pixels=, maps=)`` hands a batch to a thread that calls
    ``writer.write_batch`` with it; a context manager (the thread lives inside it)."""

    def __init__(self, writer: CacheWriter, depth: int = 2) -> None:
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cache-writer", daemon=True)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue  # drain without writing past a failed batch
            args, kwargs = item
            try:
                self.writer.write_batch(*args, **kwargs)
            except BaseException as err:  # surfaced in the caller's thread
                self._error = err

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, *args: Any, **kwargs: Any) -> None:
        """Hand one batch over (waits while ``depth`` batches are pending); raises the
        error of an earlier batch's write, if any."""
        self._raise()
        while True:
            try:
                self._queue.put((args, kwargs), timeout=0.1)
                return
            except queue.Full:
                self._raise()
                if not self._thread.is_alive():
                    raise RuntimeError("the cache writer thread stopped") from None

    def __enter__(self) -> BackgroundWriter:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._queue.put(_DONE)  # after the batches already handed over
        self._thread.join()
        if kind is None:
            self._raise()
