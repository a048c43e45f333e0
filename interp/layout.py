"""Where each stored token of a site comes from: its crop, its patch, its pixels.

Families differ in how an image becomes tokens: one fixed grid (LLaVA-1.5, the encoders),
a base view plus high-resolution crops (LLaVA-NeXT), merged or pooled patches. A
:class:`TokenLayout` describes the patch-carrying tokens of one site in one common
currency, the box of stimulus pixels each token sees, so labels (which object is under
a token) and pixel targets are computed the same way for every family. Tokens that carry
no patch (CLS, registers, image-newline tokens) are stored apart and only named here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from interp.errors import ConfigError

__all__ = ["TokenLayout", "box_label_map", "image_hw", "EXTRA_KINDS", "PADDING", "ImageSize"]

# Kinds of the non-patch tokens a site may carry (stored apart from the patch tokens).
EXTRA_KINDS: tuple[str, ...] = ("cls", "register", "newline")
# The object label of a token that sees no pixel of the image (processor padding).
PADDING = -2

ImageSize = tuple[int, int]  # (height, width) in pixels


def image_hw(size: int | Sequence[int] | np.ndarray) -> ImageSize:
    """``(height, width)`` of an image size given as a side (a square) or a pair."""
    if isinstance(size, (int, np.integer)):
        side = int(size)
        return side, side
    values = [int(v) for v in np.asarray(size).reshape(-1)]
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise ConfigError(f"an image size is a side or (height, width), got {size!r}")
    return values[0], values[1]


@dataclass(frozen=True)
class TokenLayout:
    """The patch tokens of one site, in stored order, and the kinds of its extra tokens.

    ``boxes`` ``(tokens, 4)`` float32 ``(y0, x0, y1, x1)``: the pixels of the original
    image a token's patch covers (half-open, through the processor's resize, crop and
    padding; an empty box, ``y1 <= y0`` or ``x1 <= x0``, is a token that sees only
    padding); ``crops`` ``(tokens,)`` int16: which view of the image the
    token belongs to (0: the whole image, k > 0: crop/tile k); ``grid`` ``(tokens, 2)``
    int32: (row, col) of the patch in its crop's patch grid. ``extra`` names each
    non-patch token kept apart, in stored order (see :data:`EXTRA_KINDS`).
    """

    boxes: np.ndarray
    crops: np.ndarray
    grid: np.ndarray
    extra: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.shape != (n, 4) or self.crops.shape != (n,) or self.grid.shape != (n, 2):
            raise ConfigError(
                f"layout arrays disagree: boxes {self.boxes.shape}, crops {self.crops.shape}, "
                f"grid {self.grid.shape}; expected (T, 4), (T,), (T, 2)"
            )
        unknown = sorted(set(self.extra) - set(EXTRA_KINDS))
        if unknown:
            raise ConfigError(f"unknown extra token kinds {unknown}; known: {EXTRA_KINDS}")

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def padding(self) -> np.ndarray:
        """``(tokens,)`` bool: the tokens that see no pixel of the image (empty boxes)."""
        return (self.boxes[:, 2] <= self.boxes[:, 0]) | (self.boxes[:, 3] <= self.boxes[:, 1])

    @classmethod
    def regular(
        cls,
        rows: int,
        cols: int,
        image_size: int | Sequence[int],
        *,
        crop: int = 0,
        region: Sequence[float] | None = None,
        extra: Sequence[str] = (),
    ) -> TokenLayout:
        """A ``rows x cols`` grid, row-major, tiling ``region`` ``(y0, x0, y1, x1)`` in the
        image's pixels (default: the whole image of ``image_size``, a side or ``(height,
        width)``). A region reaching beyond the image (a processor's padding) gives boxes
        clipped to it, empty where a token sees only padding."""
        height, width = image_hw(image_size)
        y0, x0, y1, x1 = region if region is not None else (0.0, 0.0, height, width)
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        r, c = r.ravel(), c.ravel()
        h, w = (y1 - y0) / rows, (x1 - x0) / cols
        boxes = np.stack([y0 + r * h, x0 + c * w, y0 + (r + 1) * h, x0 + (c + 1) * w], axis=1)
        boxes = np.clip(boxes, 0, [height, width, height, width])  # (tokens, 4)
        return cls(
            boxes=boxes.astype(np.float32),
            crops=np.full(len(r), crop, dtype=np.int16),
            grid=np.stack([r, c], axis=1).astype(np.int32),
            extra=tuple(extra),
        )

    @classmethod
    def concat(cls, parts: Sequence[TokenLayout], extra: Sequence[str] = ()) -> TokenLayout:
        """The parts' tokens one after another; ``extra`` replaces their extra kinds."""
        return cls(
            boxes=np.concatenate([p.boxes for p in parts]),
            crops=np.concatenate([p.crops for p in parts]),
            grid=np.concatenate([p.grid for p in parts]),
            extra=tuple(extra),
        )

    def take(self, index: np.ndarray) -> TokenLayout:
        """The tokens at ``index`` (same extra kinds)."""
        return TokenLayout(self.boxes[index], self.crops[index], self.grid[index], self.extra)

    def tiling(
        self, image_size: int | Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
        """The finest set of same-sized boxes of whole pixels that tiles the image (a side
        or ``(height, width)``) exactly, as ``(token index, (row, col) in that tiling,
        (rows, cols))``; None if there is none.

        For a single grid this is every token; with a base view and crops (LLaVA-NeXT) it
        is the crop tokens, which see the image at the higher resolution.
        """
        height, width = image_hw(image_size)
        for index, cells, shape, region in self._grids(height, width):
            box_h, box_w = region[2] / shape[0], region[3] / shape[1]
            whole = region == (0.0, 0.0, float(height), float(width))
            if whole and box_h == int(box_h) and box_w == int(box_w):
                return index, cells, shape
        return None

    def cover(
        self, image_size: int | Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[float, float, float, float]] | None:
        """The set of same-sized boxes laid as a full ``rows x cols`` grid over a rectangle
        ``region`` ``(y0, x0, y1, x1)`` of the image that covers most of it (the whole image
        first; then the finest grid), as ``(token index, (row, col) in the grid, (rows,
        cols), region)``; None if no set of boxes makes such a grid. Unlike
        :meth:`tiling`, boxes may be fractional pixels (a processor that resized the image)
        and the region may leave part of the image out (a centre crop)."""
        height, width = image_hw(image_size)
        found = list(self._grids(height, width))
        if not found:
            return None

        def rank(grid: tuple) -> tuple[float, float]:
            y0, x0, y1, x1 = grid[3]
            covered = (y1 - y0) * (x1 - x0) / (height * width)
            return -round(covered, 4), (y1 - y0) * (x1 - x0) / len(grid[0])

        return min(found, key=rank)

    def _grids(self, height: int, width: int):
        """Every full regular grid of same-sized boxes (crop tokens before base-view ones;
        finest first): ``(index, cells, (rows, cols), region)``."""
        sizes = np.round(self.boxes[:, 2:] - self.boxes[:, :2], 4)  # (tokens, 2)
        by_size = Counter(map(tuple, sizes.tolist()))
        for h, w in sorted(by_size, key=lambda hw: hw[0] * hw[1]):
            if h <= 0 or w <= 0:
                continue
            same = (sizes == (h, w)).all(1)
            for subset in (same & (self.crops > 0), same & (self.crops == 0)):  # crops first
                index = np.flatnonzero(subset)
                if not len(index):
                    continue
                y0, x0 = self.boxes[index, :2].min(0).tolist()
                y1, x1 = self.boxes[index, 2:].max(0).tolist()
                rows, cols = round((y1 - y0) / h), round((x1 - x0) / w)
                cells = np.round((self.boxes[index, :2] - (y0, x0)) / (h, w)).astype(np.int64)
                regular = np.allclose(self.boxes[index, :2], (y0, x0) + cells * (h, w), atol=1e-3)
                distinct = len({tuple(x) for x in cells.tolist()}) == len(index)
                if regular and distinct and len(index) == rows * cols:
                    region = (float(y0), float(x0), float(y1), float(x1))
                    if np.allclose(region, (0, 0, height, width), atol=1e-3):
                        region = (0.0, 0.0, float(height), float(width))
                    yield index, cells.astype(np.int32), (rows, cols), region


def box_label_map(object_map: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Which object covers each box: ``(n, H, W)`` object indices (-1 background) and
    ``(tokens, 4)`` boxes -> ``(n, tokens)`` int8, the object covering the most of a box's
    pixels (ties: the lower index), -1 if none touches it, :data:`PADDING` (-2) for an
    empty box (a token that sees only the processor's padding).

    A pixel belongs to a box when its centre lies inside. Counts come from per-object
    integral images, so any boxes (overlapping, of mixed sizes) cost the same.
    """
    maps = object_map[None] if object_map.ndim == 2 else object_map  # (n, H, W)
    n, height, width = maps.shape
    # Half-open pixel index ranges whose centres (i + 0.5) fall in [y0, y1).
    lo = np.ceil(boxes[:, :2] - 0.5).astype(np.int64)
    hi = np.ceil(boxes[:, 2:] - 0.5).astype(np.int64)
    if (lo < 0).any() or (hi[:, 0] > height).any() or (hi[:, 1] > width).any():
        raise ConfigError(
            f"token boxes reach outside the {height}x{width} px images; the layout was made "
            f"for another image size"
        )
    n_objects = int(maps.max()) + 1 if maps.size else 0
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])  # (tokens,)
    out = np.full((n, len(boxes)), -1, dtype=np.int8)
    out[:, empty] = PADDING
    if n_objects <= 0:
        return out
    counts = np.empty((n, len(boxes), n_objects), dtype=np.int64)
    for k in range(n_objects):
        integral = np.zeros((n, height + 1, width + 1), dtype=np.int64)
        integral[:, 1:, 1:] = (maps == k).cumsum(1).cumsum(2)
        counts[..., k] = (
            integral[:, hi[:, 0], hi[:, 1]]
            - integral[:, lo[:, 0], hi[:, 1]]
            - integral[:, hi[:, 0], lo[:, 1]]
            + integral[:, lo[:, 0], lo[:, 1]]
        )
    best = counts.argmax(-1)
    out = np.where(counts.max(-1) > 0, best, -1).astype(np.int8)
    out[:, empty] = PADDING
    return out
