"""Qwen2-VL (``Qwen2VLForConditionalGeneration``): a dynamic patch grid, vision blocks
without a batch dimension, a merger of 2x2 patches, M-RoPE positions in the LLM.

The processor resizes each image to a multiple of ``patch x merge`` px (``smart_resize``)
and orders its patches merge window by merge window (within a window row-major), so the
vision blocks see ``(images x patches, d)`` in that order; the merger turns each window
into one token, row-major over the merged grid, and those are the image tokens of the LLM.
An image of any size is stretched to the resized shape, so each token's box is its share
of the whole image; the synthetic stimuli must come out of ``smart_resize`` unchanged, so
that every patch is whole stimulus pixels.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from interp.adapters.base import TokenPositions, first_tensor, register_adapter
from interp.adapters.decoder import DecoderVLMAdapter
from interp.errors import ConfigError, InterventionError
from interp.layout import TokenLayout, image_hw
from interp.models.geometry import View, size_field
from interp.sites import parse_site

__all__ = ["Qwen2VLAdapter"]


@register_adapter
class Qwen2VLAdapter(DecoderVLMAdapter):
    family = "Qwen2-VL"
    one_input_shape = False
    model_types = ("qwen2_vl",)
    hub_ids = ("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct")
    vision_layer_suffixes: ClassVar[tuple[str, ...]] = ("visual.blocks",)
    projector_suffixes: ClassVar[tuple[str, ...]] = ("visual.merger",)
    lm_suffixes: ClassVar[tuple[str, ...]] = ("language_model",)

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        vision = model.config.vision_config
        self._patch = int(vision.patch_size)
        self._merge = int(vision.spatial_merge_size)

    @property
    def native_image_size(self) -> int:
        """No fixed input size; 8 merged tokens a side (224 px for the hub checkpoints)."""
        return 8 * self._patch * self._merge

    @property
    def patch_grid(self) -> tuple[int, int]:
        side = self.native_image_size // self._patch
        return side, side

    @property
    def vision_prefix_tokens(self) -> int:
        return 0

    # ----- geometry --------------------------------------------------------------------
    def _resized(self, size: int | tuple[int, int]) -> tuple[int, int]:
        """(height, width) px the processor resizes an image of ``size`` to (a multiple of
        ``patch x merge`` each way, the pixel count within the processor's bounds)."""
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        height, width = image_hw(size)
        ip = self.image_processor
        bounds = getattr(ip, "size", None)
        low = getattr(ip, "min_pixels", None) or size_field(bounds, "shortest_edge")
        high = getattr(ip, "max_pixels", None) or size_field(bounds, "longest_edge")
        factor = self._patch * self._merge
        resized = smart_resize(height, width, factor=factor, min_pixels=low, max_pixels=high)
        return int(resized[0]), int(resized[1])

    def input_view(self, size: tuple[int, int]) -> View:
        return View.whole(size).resize(*self._resized(size))

    def check_image_size(self, size: int) -> None:
        resized = self._resized(size)
        if resized != (size, size):
            step = self._patch * self._merge
            raise ConfigError(
                f"image size {size} px would be resized to {resized[0]}x{resized[1]} by the "
                f"processor, so patches would not be whole stimulus pixels; use a multiple of "
                f"{step} within the processor's pixel bounds, e.g. {self.native_image_size}"
            )

    def token_layout(self, site: str, image_size: int | tuple[int, int]) -> TokenLayout:
        stage = parse_site(self.check_site(site)).stage
        size = image_hw(image_size)  # the whole image, stretched to the resized shape
        height, width = self._resized(size)
        rows, cols, m = height // self._patch, width // self._patch, self._merge
        if stage != "vision":  # one token per merge window, row-major
            return TokenLayout.regular(rows // m, cols // m, size)
        # window (I, J), then (a, b) inside it -> patch (I*m + a, J*m + b)
        big_r, big_c, a, b = np.meshgrid(
            np.arange(rows // m), np.arange(cols // m), np.arange(m), np.arange(m), indexing="ij"
        )
        r, c = (big_r * m + a).ravel(), (big_c * m + b).ravel()
        flat = TokenLayout.regular(rows, cols, size)
        return flat.take(r * cols + c)

    # ----- inputs ----------------------------------------------------------------------
    def plain_prompt(self, question: str) -> str:
        tokenizer = self.processor.tokenizer
        start = getattr(tokenizer, "vision_start_token", None) or "<|vision_start|>"
        end = getattr(tokenizer, "vision_end_token", None) or "<|vision_end|>"
        return f"{start}{self.prompt_image_token}{end}{question}"

    def token_positions(self, inputs: dict[str, torch.Tensor]) -> TokenPositions:
        grid = inputs["image_grid_thw"]  # (images, 3): frames, patch rows, patch cols
        if not bool((grid == grid[0]).all()):
            raise InterventionError(f"every image of a batch must be the same size, got {grid}")
        positions = self.image_positions(inputs["input_ids"], int(grid[0].prod()) // self._merge**2)
        return TokenPositions(positions, positions[:, :0], self.vision_order(grid))

    def vision_order(self, grid_thw: torch.Tensor) -> torch.Tensor | None:
        """Rows of the vision blocks' sequence in the processor's order (None: as they are)."""
        return None

    def select(self, site: str, value: Any, positions: TokenPositions) -> torch.Tensor:
        hidden = first_tensor(value)
        if parse_site(site).stage == "lm":
            return self.select_lm(hidden, positions)  # (batch, tokens, d)
        order = positions.vision_order  # (images x tokens, d): no batch dimension
        if order is not None:  # back from the blocks' order, a merge unit at a time
            hidden = hidden.reshape(order.numel(), -1, hidden.shape[-1])[order.to(hidden.device)]
        return self.per_image(hidden, positions)
