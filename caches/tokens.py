"""One site's patch tokens for every image, flat: the in-memory form of a cached site.

A dense site (every image with the same token count) and a ragged one (counts vary, e.g.
LLaVA-NeXT or Qwen2-VL on images of mixed sizes) look the same here: ``values`` holds
every token, image after image, and ``offsets`` says where each image starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caches.finite import any_nonfinite
from interp.errors import CacheError

__all__ = ["SiteTokens"]


@dataclass(frozen=True)
class SiteTokens:
    """``values`` ``(tokens, d)`` float32 (or float16, as stored); ``offsets`` ``(n + 1,)``
    int64: image ``i``'s tokens are ``values[offsets[i]:offsets[i + 1]]``, in the order
    of its layout."""

    values: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        offsets = self.offsets
        if (
            offsets.ndim != 1
            or len(offsets) < 1
            or offsets[0] != 0
            or offsets[-1] != len(self.values)
            or (np.diff(offsets) < 0).any()
        ):
            raise CacheError(
                f"token offsets must rise from 0 to the {len(self.values)} tokens, found "
                f"{offsets[:3].tolist()}...{offsets[-2:].tolist()}"
            )

    @classmethod
    def from_dense(cls, acts: np.ndarray) -> SiteTokens:
        """From ``(n, tokens, d)`` (no copy)."""
        n, tokens, d = acts.shape
        return cls(acts.reshape(n * tokens, d), np.arange(n + 1, dtype=np.int64) * tokens)

    @property
    def n_images(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        """``(n,)`` tokens per image."""
        return np.diff(self.offsets)

    @property
    def image_of(self) -> np.ndarray:
        """``(tokens,)`` the image each token belongs to."""
        return np.repeat(np.arange(self.n_images), self.counts)

    @property
    def ragged(self) -> bool:
        """Whether images have different token counts."""
        counts = self.counts
        return bool(len(counts) and (counts != counts[0]).any())

    def check_finite(self, where: str) -> SiteTokens:
        """``self`` if every value is finite, else a CacheError naming ``where`` (e.g. the
        site and condition), how many values are not, and the first image holding one
        (one pass over the bits, at the speed of memory, where all are finite)."""
        if not any_nonfinite(self.values):
            return self
        finite = np.isfinite(self.values)
        bad = int(finite.size - finite.sum())
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        image = int(np.searchsorted(self.offsets, row, side="right")) - 1
        raise CacheError(
            f"{where} holds {bad} of {finite.size} values that are not finite (NaN or inf), "
            f"first in image {image}; a probe on them would report a meaningless score. "
            f"Extract again from a model whose activations are finite, in float32 storage "
            f"where they exceed float16 (store_dtype='float32')"
        )

    def image(self, index: int) -> np.ndarray:
        """``(tokens_i, d)`` the tokens of image ``index``."""
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    def dense(self) -> np.ndarray:
        """``(n, tokens, d)`` view; a CacheError where images have different counts."""
        if self.ragged:
            raise CacheError(
                f"images have between {self.counts.min()} and {self.counts.max()} tokens; a "
                f"dense (n, tokens, d) array needs equal counts: work on values and offsets"
            )
        tokens = int(self.counts[0]) if self.n_images else 0
        return self.values.reshape(self.n_images, tokens, self.values.shape[-1])
