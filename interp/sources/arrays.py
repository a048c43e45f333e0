"""Images already in memory (numpy arrays): a data source for a notebook's own pictures,
with labels and object maps where there are any."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from interp.errors import ConfigError
from interp.sources.base import ImageSet

__all__ = ["ArrayImages"]


class ArrayImages(ImageSet):
    """``images``: ``(n, H, W, 3)`` uint8, or a list of ``(H_i, W_i, 3)`` uint8 arrays;
    ``object_maps`` likewise ``(n, H, W)`` (object index per pixel, -1 background;
    default: no objects); ``labels``: attribute -> ``(n,)`` values (numbers; with
    ``classes``, class indices into ``classes[attribute]``)."""

    def __init__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        *,
        object_maps: np.ndarray | Sequence[np.ndarray] | None = None,
        labels: dict[str, np.ndarray] | None = None,
        classes: dict[str, tuple[str, ...]] | None = None,
        name: str = "arrays",
    ) -> None:
        arrays = [np.asarray(image) for image in images]
        for image in arrays:
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise ConfigError(
                    f"images must be (H, W, 3) uint8 arrays, got {image.shape} {image.dtype}"
                )
        if not arrays:
            raise ConfigError("images must hold at least one image")
        self._sizes = np.array([image.shape[:2] for image in arrays], dtype=np.int64)
        height, width = self._sizes.max(0)
        self._pixels = np.zeros((len(arrays), height, width, 3), dtype=np.uint8)
        self._maps = np.full((len(arrays), height, width), -1, dtype=np.int8)
        for i, image in enumerate(arrays):
            self._pixels[i, : image.shape[0], : image.shape[1]] = image
        for i, found in enumerate(object_maps if object_maps is not None else []):
            found = np.asarray(found)
            if found.shape != arrays[i].shape[:2]:
                raise ConfigError(
                    f"object map {i} has shape {found.shape}, its image {arrays[i].shape[:2]}"
                )
            self._maps[i, : found.shape[0], : found.shape[1]] = found
        self.labels = {k: np.asarray(v) for k, v in (labels or {}).items()}
        for attribute, values in self.labels.items():
            if len(values) != len(arrays):
                raise ConfigError(
                    f"labels[{attribute!r}] has {len(values)} values for {len(arrays)} images"
                )
        self._classes = dict(classes or {})
        self._name = name

    def __len__(self) -> int:
        return len(self._pixels)

    @property
    def sizes(self) -> np.ndarray:
        return self._sizes

    def pixels(self, indices: np.ndarray) -> np.ndarray:
        return self._pixels[indices]

    def maps(self, indices: np.ndarray) -> np.ndarray:
        return self._maps[indices]

    @property
    def label_classes(self) -> dict[str, tuple[str, ...]]:
        return self._classes

    def object_labels(self) -> dict[str, np.ndarray]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"source": "arrays", "name": self._name, "n_images": len(self)}
