"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``): any-resolution crops, unpadding and
image-newline tokens on top of the LLaVA-1.5 module tree.

One image becomes views: the whole image resized to the tower's input (view 0) and the
crops of a high-resolution canvas (views 1..), whose size is the configured pinpoint that
fits the image best; the image is resized into the canvas keeping its aspect ratio and
centred, with padding around it. The vision sites hold every view's patches (padding
patches have empty boxes); in the LLM the base view's tokens come first, then the
canvas's tokens with the padding rows or columns cut off (unpadding) and a newline token
after each row.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from interp.adapters.base import TokenPositions, first_tensor, register_adapter
from interp.adapters.llava import LlavaAdapter
from interp.errors import InterventionError, UnsupportedModelError
from interp.layout import TokenLayout, image_hw
from interp.models.geometry import View
from interp.sites import parse_site

__all__ = ["LlavaNextAdapter"]


@register_adapter
class LlavaNextAdapter(LlavaAdapter):
    family = "LLaVA-NeXT"
    one_input_shape = False
    pixel_tower = False  # pixel_values hold each image's crops: (batch, crops, 3, H, W)
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
    def _make_canvas(self, size: tuple[int, int]) -> View:
        """The high-resolution canvas of an image of ``size`` ``(height, width)``: the
        pinpoint that fits it best, the image resized into it keeping its aspect ratio
        (rounding up) and centred, padding around (the odd pixel below / right)."""
        from transformers.image_processing_utils import select_best_resolution

        height, width = size
        target_h, target_w = (int(v) for v in select_best_resolution(size, self._pinpoints))
        scale_h, scale_w = target_h / height, target_w / width
        if scale_w < scale_h:
            new_h, new_w = min(math.ceil(height * scale_w), target_h), target_w
        else:
            new_h, new_w = target_h, min(math.ceil(width * scale_h), target_w)
        top, left = (target_h - new_h) // 2, (target_w - new_w) // 2
        return View.whole(size).resize(new_h, new_w).window(-top, -left, target_h, target_w)

    def _views(self, size: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of crops on the canvas."""
        canvas = self._canvas(size)
        return canvas.shape[0] // self._image_size, canvas.shape[1] // self._image_size

    def _canvas_layout(self, size: tuple[int, int]) -> TokenLayout:
        """Every canvas patch, crop by crop (row-major), each crop row-major; a patch of
        padding has an empty box."""
        g = self.patch_grid[0]
        crops = self._canvas(size).tiles(*self._views(size))
        return TokenLayout.concat(
            [
                TokenLayout.regular(g, g, size, crop=k + 1, region=crop.region)
                for k, crop in enumerate(crops)
            ]
        )

    def _unpadded(self, size: tuple[int, int]) -> tuple[slice, slice]:
        """Canvas patch rows and cols the model keeps (transformers' ``unpad_image``)."""
        height, width = size
        n_rows, n_cols = self._views(size)
        rows, cols = n_rows * self.patch_grid[0], n_cols * self.patch_grid[1]  # patches
        if width / height > cols / rows:  # wider than the canvas: rows of padding
            new = int(round(height * (cols / width), 7))
            pad = (rows - new) // 2
            return slice(pad, rows - pad), slice(0, cols)
        new = int(round(width * (rows / height), 7))
        pad = (cols - new) // 2
        return slice(0, rows), slice(pad, cols - pad)

    def token_layout(self, site: str, image_size: int | tuple[int, int]) -> TokenLayout:
        stage = parse_site(self.check_site(site)).stage
        size = image_hw(image_size)
        g = self.patch_grid[0]
        base = TokenLayout.regular(g, g, size, crop=0)  # the whole image, stretched
        canvas = self._canvas_layout(size)
        n_views = 1 + int(np.prod(self._views(size)))
        if stage == "vision":
            return TokenLayout.concat([base, canvas], extra=self.vision_extra * n_views)
        if stage == "projector":
            return TokenLayout.concat([base, canvas])
        rows, cols = self._unpadded(size)
        n_rows, n_cols = self._views(size)
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
        self._canvas((size, size))  # fails early on a size no pinpoint fits

    # ----- tokens ------------------------------------------------------------------------
    @staticmethod
    def _size_of(inputs: dict[str, torch.Tensor]) -> tuple[int, int]:
        sizes = inputs["image_sizes"]  # (batch, 2) (height, width)
        if not bool((sizes == sizes[0]).all()):
            raise InterventionError(
                f"every image of a batch must be the same size, got {sizes.tolist()}"
            )
        return int(sizes[0, 0]), int(sizes[0, 1])

    def _newline_mask(self, size: tuple[int, int]) -> np.ndarray:
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
