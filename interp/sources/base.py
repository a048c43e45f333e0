"""What every data source gives the extraction: images by index, labels, object maps.

A source is an :class:`ImageSet`. Its labels and per-object labels are small and held in
memory; its pixels and object maps are produced for the images asked for
(:meth:`ImageSet.pixels`, :meth:`ImageSet.maps`), so a folder of images is decoded a
batch at a time. Every image has its own height and width; a set is laid on one canvas
(the largest height by the largest width), every image in its top-left corner.

Sources are registered (:func:`register_source`) and :func:`open_source` picks the one
that recognises a path, as adapters are picked from a model's config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from interp.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ImageSet", "Question", "register_source", "registered_sources", "open_source"]


@dataclass(frozen=True)
class Question:
    """A question about image ``image`` of a set, with its right ``answer`` among
    ``options`` (the candidate answers of its ``kind``, scored for the margin);
    ``attribute``, the label a probe reads for the same fact (None if none)."""

    image: int
    kind: str
    question: str
    answer: str
    options: tuple[str, ...]
    attribute: str | None = None


class ImageSet(ABC):
    """Images with labels, indexed ``0..len - 1``.

    ``labels`` maps an attribute to ``(n,)`` values: int64 class indices for a
    categorical attribute (named by ``label_classes``; -1 = missing), float for a numeric
    one (NaN = missing). ``object_labels()`` gives every object's class per per-object
    attribute, ``(n, max objects)``, -1 where an image has fewer objects; object ``k`` is
    ``k`` in the object maps (-1 = no object)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def sizes(self) -> np.ndarray:
        """``(n, 2)`` int64 ``(height, width)`` in px of each image."""

    @property
    def distinct_sizes(self) -> tuple[tuple[int, int], ...]:
        """The ``(height, width)`` sizes of the set, in order of first appearance."""
        return tuple(dict.fromkeys((int(h), int(w)) for h, w in self.sizes.tolist()))

    @property
    def canvas(self) -> tuple[int, int]:
        """``(height, width)`` every image is padded to: the largest of each."""
        sizes = self.sizes.reshape(-1, 2)
        return int(sizes[:, 0].max(initial=0)), int(sizes[:, 1].max(initial=0))

    @abstractmethod
    def pixels(self, indices: np.ndarray) -> np.ndarray:
        """``(k, *canvas, 3)`` uint8 images ``indices``, each at the top left."""

    @abstractmethod
    def maps(self, indices: np.ndarray) -> np.ndarray:
        """``(k, *canvas)`` int8 object index under each pixel, -1 = none."""

    labels: dict[str, np.ndarray]  # attribute -> (n,) (an attribute or a property)

    @property
    @abstractmethod
    def label_classes(self) -> dict[str, tuple[str, ...]]: ...

    @abstractmethod
    def object_labels(self) -> dict[str, np.ndarray]: ...

    def crops(self, indices: Sequence[int] | np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Images ``indices`` without their padding: ``(k, H, W, 3)`` uint8 where they are
        of one size, a list of ``(H_i, W_i, 3)`` otherwise (as a capture takes them)."""
        indices = np.asarray(indices, dtype=np.int64)
        sizes = self.sizes[indices]  # (k, 2)
        pixels = self.pixels(indices)  # (k, *canvas, 3)
        crops = [pixels[j, :h, :w] for j, (h, w) in enumerate(sizes.tolist())]
        return np.stack(crops) if len({tuple(x) for x in sizes.tolist()}) == 1 else crops

    def batches(self, batch_size: int) -> Iterator[np.ndarray | list[np.ndarray]]:
        """The set's images, ``batch_size`` at a time, without their padding."""
        for start in range(0, len(self), batch_size):
            yield self.crops(np.arange(start, min(len(self), start + batch_size)))

    def crop_maps(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """The object maps of images ``indices`` without their padding, ``(H_i, W_i)``."""
        indices = np.asarray(indices, dtype=np.int64)
        maps = self.maps(indices)  # (k, *canvas)
        return [maps[j, :h, :w] for j, (h, w) in enumerate(self.sizes[indices].tolist())]

    def questions(self) -> list[Question]:
        """The set's questions with their answers (none unless the source has them)."""
        return []

    def pairs(self) -> pd.DataFrame | None:
        """The image pairs the source defines (``i, j`` and, optionally, ``pattern``; MMVP
        pairs its images two by two), or None."""
        return None

    def names(self) -> list[str]:
        """What to call each image in a table: its file where it has one, else its index."""
        return [str(i) for i in range(len(self))]

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Where the data came from, JSON-able (recorded in the cache; a resume must find
        the same)."""


_SOURCES: list[type[SourceOpener]] = []


class SourceOpener(ABC):
    """How one kind of data is recognised at a path and opened as an :class:`ImageSet`."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def recognises(cls, path: Path) -> bool: ...

    @classmethod
    @abstractmethod
    def open(cls, path: Path, **options: Any) -> ImageSet: ...


def register_source(cls: type[SourceOpener]) -> type[SourceOpener]:
    """Class decorator: make :func:`open_source` try ``cls``."""
    _SOURCES.append(cls)
    return cls


def registered_sources() -> list[str]:
    return [cls.name for cls in _SOURCES]


def open_source(path: str | Path, **options: Any) -> ImageSet:
    """The data at ``path`` through the first registered source that recognises it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(
            f"data path {str(path)!r} does not exist; pass a folder holding labels.csv, "
            f"labels.jsonl or labels.parquet, or such a table's own path"
        )
    for cls in _SOURCES:
        if cls.recognises(path):
            return cls.open(path, **options)
    raise ConfigError(
        f"no data source recognises {str(path)!r}; expected a folder holding labels.csv, "
        f"labels.jsonl or labels.parquet (with an 'image' column), or such a table's path "
        f"(sources: {', '.join(registered_sources())})"
    )
