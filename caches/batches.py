"""Decoded batches of a data source, in order, optionally from worker processes that
decode (and preprocess) the next batches while the model runs on this one
(``torch.utils.data``)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from interp.errors import InterpError
from interp.sources import ImageSet

__all__ = ["Batch", "decoded_batches"]

# start, pixels (b, H, W, 3), maps (b, H, W), what ``prepare`` made of them (or None)
Batch = tuple[int, np.ndarray, np.ndarray, Any]
Prepare = Callable[[int, np.ndarray], Any]


class _Batches(Dataset):
    """Batch ``k``: the images from ``starts[k]``, decoded, with their object maps and
    what ``prepare(start, pixels)`` makes of them."""

    def __init__(
        self,
        data: ImageSet,
        starts: list[int],
        batch_size: int,
        stop: int,
        prepare: Prepare | None,
    ) -> None:
        self.data, self.starts, self.batch_size, self.stop = data, starts, batch_size, stop
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, k: int) -> Batch | InterpError:
        start = self.starts[k]
        indices = np.arange(start, min(self.stop, start + self.batch_size))
        try:
            pixels = self.data.pixels(indices)  # (b, H, W, 3)
            prepared = self.prepare(start, pixels) if self.prepare is not None else None
            return start, pixels, self.data.maps(indices), prepared
        except InterpError as err:  # handed back whole, not as a worker's traceback text
            return err


def _as_is(item: Batch | InterpError) -> Batch | InterpError:
    return item


def decoded_batches(
    data: ImageSet,
    first: int,
    batch_size: int,
    workers: int = 0,
    stop: int | None = None,
    prepare: Prepare | None = None,
) -> Iterator[Batch]:
    """``(start, pixels, maps, prepared)`` of every batch from image ``first`` to ``stop``
    (default: the last), in order, ``prepared`` being ``prepare(start, pixels)`` (e.g. the
    processor's inputs; None without ``prepare``); ``workers`` processes decode and
    prepare ahead (0: here, when asked for). Workers started otherwise than by ``fork``
    would receive ``prepare`` pickled (with whatever it holds: a model), so there it runs
    here, on each batch as it arrives."""
    stop = len(data) if stop is None else stop
    starts = list(range(first, stop, batch_size))
    forked = workers > 0 and multiprocessing.get_start_method() == "fork"
    remote = prepare if workers == 0 or forked else None
    batches = _Batches(data, starts, batch_size, stop, remote)
    if workers == 0:
        items: Iterator = (batches[k] for k in range(len(batches)))
    else:
        items = iter(DataLoader(batches, batch_size=None, num_workers=workers, collate_fn=_as_is))
    for item in items:
        if isinstance(item, InterpError):
            raise item
        if prepare is not None and remote is None:
            start, pixels, maps, _ = item
            item = (start, pixels, maps, prepare(start, pixels))
        yield item
