"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``): any-resolution crops, unpadding and
image-newline tokens on top of the LLaVA-1.5 module tree.

One image becomes views: the whole image resized to the tower's input (view 0) and the
crops of a high-resolution canvas (views 1..), whose size is the configured pinpoint that
fits the image best; the image is resized into the canvas and centred, with padding
around it. The vision sites hold every view's patches (padding patches have empty
boxes); in the LLM the base view's tokens come first, then the canvas's tokens with the
padding rows or columns cut off (unpadding) and a newline token after each row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from interp.adapters.base import TokenPositions, first_tensor, register_adapter
from interp.adapters.llava import LlavaAdapter
from interp.errors import InterventionError, UnsupportedModelError
from interp.layout import TokenLayout
from interp.sites import parse_site

__all__ = ["LlavaNextAdapter"]


@dataclass(frozen=True)
class _Canvas:
    """Where a square ``size`` px image lands on the high-resolution canvas."""

    size: int
    height: int  # canvas, px
    width: int
    side: int  # the image's side on the canvas, px
    pad_y: int
    pad_x: int

    @property
    def scale(self) -> float:
        return self.side / self.size


@register_adapter
class LlavaNextAdapter(LlavaAdapter):
    family = "LLaVA-NeXT"
    model_types = ("llava_next",)
    hub_ids = (
        "llava-hf/llava-v1.6-mistral-7b-hf",
        "llava-hf/llava-v1.6-vicuna-7b-hf",
        "llava-hf/llava-v1.6-34b-hf",
    )

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        config = model.config
        if config.vision_feature_select_strategy != "default":
            raise UnsupportedModelError(
                f"LLaVA-NeXT with vision_feature_select_strategy="
                f"{config.vision_feature_select_strategy!r} is not supported (its checkpoints "
                f"use 'default'); load one that does or register an adapter for it"
            )
        self._pinpoints = [tuple(int(v) for v in p) for p in config.image_grid_pinpoints]
        self._canvas = lru_cache(maxsize=8)(self._make_canvas)

    # ----- geometry ----------------------------------------------------------------------
    def _make_canvas(self, size: int) -> _Canvas:
        from transformers.image_processing_utils import select_best_resolution

        height, width = (int(v) for v in select_best_resolution((size, size), self._pinpoints))
        # the processor resizes to fit (rounding up) and centres the image (pad below/right
        # gets the odd pixel)
        side = min(height, width)
        return _Canvas(size, height, width, side, (height - side) // 2, (width - side) // 2)

    def _views(self, size: int) -> tuple[int, int]:
        """(rows, cols) of crops on the canvas."""
        canvas = self._canvas(size)
        return canvas.height // self._image_size, canvas.width // self._image_size

    def _canvas_layout(self, size: int) -> TokenLayout:
        """Every canvas patch, crop by crop (row-major), each crop row-major."""
        canvas, g, p = self._canvas(size), self.patch_grid[0], self._patch
        parts = []
        n_rows, n_cols = self._views(size)
        for k in range(n_rows * n_cols):
            i, j = divmod(k, n_cols)
            crop = TokenLayout.regular(g, g, size, crop=k + 1)
            r, c = crop.grid[:, 0] + i * g, crop.grid[:, 1] + j * g  # canvas patch (row, col)
            canvas_box = np.stack([r * p, c * p, (r + 1) * p, (c + 1) * p], axis=1)
            shift = np.array([canvas.pad_y, canvas.pad_x] * 2)
            box = np.clip((canvas_box - shift) / canvas.scale, 0, size)  # padding: empty
            parts.append(TokenLayout(box.astype(np.float32), crop.crops, crop.grid))
        return TokenLayout.concat(parts)

    def _unpadded(self, size: int) -> tuple[slice, slice]:
        """Canvas patch rows and cols the model keeps (transformers' ``unpad_image``)."""
        n_rows, n_cols = self._views(size)
        height, width = n_rows * self.patch_grid[0], n_cols * self.patch_grid[1]  # patches
        if width / height < 1:  # the square image is wider than the canvas: rows padded
            new = int(round(size * (width / size), 7))
            pad = (height - new) // 2
            return slice(pad, height - pad), slice(0, width)
        new = int(round(size * (height / size), 7))
        pad = (width - new) // 2
        return slice(0, height), slice(pad, width - pad)

    def token_layout(self, site: str, image_size: int) -> TokenLayout:
        stage = parse_site(self.check_site(site)).stage
        g = self.patch_grid[0]
        base = TokenLayout.regular(g, g, image_size, crop=0)
        canvas = self._canvas_layout(image_size)
        n_views = 1 + int(np.prod(self._views(image_size)))
        if stage == "vision":
            return TokenLayout.concat([base, canvas], extra=self.vision_extra * n_views)
        if stage == "projector":
            return TokenLayout.concat([base, canvas])
        rows, cols = self._unpadded(image_size)
        n_rows, n_cols = self._views(image_size)
        canvas_rc = self._canvas_rc(canvas, n_cols)  # (tokens, 2) canvas (row, col)
        order = np.lexsort((canvas_rc[:, 1], canvas_rc[:, 0]))  # canvas row-major
        keep = [
            t
            for t in order
            if rows.start <= canvas_rc[t, 0] < rows.stop
            and cols.start <= canvas_rc[t, 1] < cols.stop
        ]
        kept_rows = rows.stop - rows.start
        return TokenLayout.concat(
            [base, canvas.take(np.array(keep))], extra=("newline",) * kept_rows
        )

    def _canvas_rc(self, canvas: TokenLayout, n_cols: int) -> np.ndarray:
        """(row, col) on the whole canvas of each token of ``canvas`` (crops ``n_cols``
        across)."""
        g = self.patch_grid[0]
        i, j = np.divmod(canvas.crops.astype(np.int64) - 1, n_cols)
        return np.stack([canvas.grid[:, 0] + i * g, canvas.grid[:, 1] + j * g], axis=1)

    def check_image_size(self, size: int) -> None:
        super().check_image_size(size)
        self._canvas(size)  # fails early on a size no pinpoint fits

    # ----- tokens ------------------------------------------------------------------------
    @staticmethod
    def _size_of(inputs: dict[str, torch.Tensor]) -> int:
        sizes = inputs["image_sizes"]  # (batch, 2) (height, width)
        if not bool((sizes == sizes[0]).all()) or int(sizes[0, 0]) != int(sizes[0, 1]):
            raise InterventionError(
                f"every image of a batch must be the same square size, got {sizes.tolist()}"
            )
        return int(sizes[0, 0])

    def _newline_mask(self, size: int) -> np.ndarray:
        """Over one image's run of image tokens in the LLM: True at the newline tokens."""
        g = self.patch_grid[0]
        rows, cols = self._unpadded(size)
        row = np.zeros(cols.stop - cols.start + 1, dtype=bool)
        row[-1] = True
        return np.concatenate([np.zeros(g * g, dtype=bool), np.tile(row, rows.stop - rows.start)])

    def token_positions(self, inputs: dict[str, torch.Tensor]) -> TokenPositions:
        newline = torch.as_tensor(self._newline_mask(self._size_of(inputs)))
        positions = self.image_positions(inputs["input_ids"], len(newline))
        return TokenPositions(positions[:, ~newline], positions[:, newline])

    def image_token_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise InterventionError(
            "LLaVA-NeXT image-token positions depend on the image size: use "
            "token_positions(inputs) with the processor's outputs"
        )

    def select(self, site: str, value: Any, positions: TokenPositions) -> torch.Tensor:
        hidden = first_tensor(value)
        stage = parse_site(site).stage
        if stage == "vision":  # (batch * views, 1 + patches, d)
            return self.per_image(hidden[:, self.vision_prefix_tokens :], positions)
        if stage == "projector":  # (batch * views, patches, d)
            return self.per_image(hidden, positions)
        return self.select_lm(hidden, positions)  # (batch, tokens, d)

    def select_extra(
        self, site: str, value: Any, positions: TokenPositions | None
    ) -> torch.Tensor | None:
        stage = parse_site(site).stage
        if stage == "vision":  # one CLS per view
            prefix = self.vision_prefix_tokens
            hidden = first_tensor(value)
            return self.per_image(hidden[:, :prefix], positions) if prefix else None
        if stage == "projector":
            return None
        return super().select_extra(site, value, positions)
