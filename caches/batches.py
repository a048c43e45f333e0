"""Decoded batches of a data source, in order, optionally from worker processes that
decode the next batches while the model runs on this one (``torch.utils.data``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset

from interp.errors import InterpError
from interp.sources import ImageSet

__all__ = ["Batch", "decoded_batches"]

Batch = tuple[int, np.ndarray, np.ndarray]  # start, pixels (b, H, W, 3), maps (b, H, W)


class _Batches(Dataset):
    """Batch ``k``: the images from ``starts[k]``, decoded, with their object maps."""

    def __init__(self, data: ImageSet, starts: list[int], batch_size: int, stop: int) -> None:
        self.data, self.starts, self.batch_size, self.stop = data, starts, batch_size, stop

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, k: int) -> Batch | InterpError:
        start = self.starts[k]
        indices = np.arange(start, min(self.stop, start + self.batch_size))
        try:
            return start, self.data.pixels(indices), self.data.maps(indices)
        except InterpError as err:  # handed back whole, not as a worker's traceback text
            return err


def _as_is(item: Batch | InterpError) -> Batch | InterpError:
    return item


def decoded_batches(
    data: ImageSet, first: int, batch_size: int, workers: int = 0, stop: int | None = None
) -> Iterator[Batch]:
    """``(start, pixels, maps)`` of every batch from image ``first`` to ``stop`` (default:
    the last), in order; ``workers`` processes decode ahead (0: decoded here, when asked
    for)."""
    stop = len(data) if stop is None else stop
    batches = _Batches(data, list(range(first, stop, batch_size)), batch_size, stop)
    if workers == 0:
        items: Iterator = (batches[k] for k in range(len(batches)))
    else:
        items = iter(DataLoader(batches, batch_size=None, num_workers=workers, collate_fn=_as_is))
    for item in items:
        if isinstance(item, InterpError):
            raise item
        yield item
