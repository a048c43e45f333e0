"""Idefics3 and SmolVLM (``Idefics3ForConditionalGeneration``,
``SmolVLMForConditionalGeneration``): image splitting into tiles plus a global view, a
pixel-shuffle connector, a Llama-style decoder.

The processor resizes the image, cuts it into ``max_image_size`` tiles (row-major) and
appends the whole image, downscaled, as a last view; every view is one image for the
vision tower. The connector's pixel shuffle folds each ``s x s`` block of patches into one
token (``s = scale_factor``), row-major over the folded grid, and the LLM gets each view's
tokens in the same order (tiles, then the global view), between text tags.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch

from interp.adapters.base import TokenPositions, first_tensor, register_adapter
from interp.adapters.decoder import DecoderVLMAdapter
from interp.layout import TokenLayout, image_hw
from interp.models.geometry import View
from interp.sites import parse_site

__all__ = ["Idefics3Adapter"]


@register_adapter
class Idefics3Adapter(DecoderVLMAdapter):
    family = "Idefics3 / SmolVLM"
    one_input_shape = False
    model_types = ("idefics3", "smolvlm")
    hub_ids = (
        "HuggingFaceM4/Idefics3-8B-Llama3",
        "HuggingFaceTB/SmolVLM-Instruct",
        "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
    )
    vision_layer_suffixes: ClassVar[tuple[str, ...]] = ("vision_model.encoder.layers",)
    projector_suffixes: ClassVar[tuple[str, ...]] = ("connector",)
    lm_suffixes: ClassVar[tuple[str, ...]] = ("text_model",)

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        vision = model.config.vision_config
        self._patch = int(vision.patch_size)
        self._tile = int(vision.image_size)
        self._scale = int(model.config.scale_factor)
        self._views = lru_cache(maxsize=8)(self._count_views)

    @property
    def native_image_size(self) -> int:
        return self._tile

    @property
    def patch_grid(self) -> tuple[int, int]:
        side = self._tile // self._patch
        return side, side

    @property
    def vision_prefix_tokens(self) -> int:
        return 0

    # ----- geometry --------------------------------------------------------------------
    def _count_views(self, size: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of tiles for an image of ``size`` ``(height, width)`` (0, 0: the
        global view only), read off the processor's own output for a blank image."""
        blank = np.zeros((*size, 3), dtype=np.uint8)
        out = self.image_processor([[blank]], return_tensors="pt", return_row_col_info=True)
        rows, cols = int(out["rows"][0][0]), int(out["cols"][0][0])
        return rows, cols

    def views(self, size: tuple[int, int]) -> list[View]:
        """The tiles (row-major) and then the global view of an image of ``size``: the
        processor stretches the image to whole tiles (``rows x cols`` of them) and the
        global view to one tile, so each shows its share of the whole image."""
        rows, cols = self._views(size)
        whole = View.whole(size)
        tiles = whole.resize(rows * self._tile, cols * self._tile).tiles(rows, cols) if rows else []
        return [*tiles, whole.resize(self._tile, self._tile)]

    def token_layout(self, site: str, image_size: int | tuple[int, int]) -> TokenLayout:
        stage = parse_site(self.check_site(site)).stage
        side = self.patch_grid[0] // (1 if stage == "vision" else self._scale)
        size = image_hw(image_size)
        views = self.views(size)
        crops = [*range(1, len(views)), 0]  # tiles are crops 1.., the global view 0
        return TokenLayout.concat(
            [
                TokenLayout.regular(side, side, size, crop=crop, region=view.region)
                for crop, view in zip(crops, views, strict=True)
            ]
        )

    # ----- inputs ----------------------------------------------------------------------
    def plain_prompt(self, question: str) -> str:
        return f"{self.prompt_image_token}{question}"

    def processor_images(self, images: np.ndarray) -> list:
        return [[image] for image in images]  # a list of images per sample

    def token_positions(self, inputs: dict[str, torch.Tensor]) -> TokenPositions:
        views = inputs["pixel_values"].shape[1]  # (batch, views, 3, H, W)
        expected = views * (self.patch_grid[0] // self._scale) ** 2
        positions = self.image_positions(inputs["input_ids"], expected)
        return TokenPositions(positions, positions[:, :0])

    def select(self, site: str, value: Any, positions: TokenPositions) -> torch.Tensor:
        hidden = first_tensor(value)
        if parse_site(site).stage == "lm":
            return self.select_lm(hidden, positions)  # (batch, tokens, d)
        return self.per_image(hidden, positions)  # from (batch x views, tokens, d)
