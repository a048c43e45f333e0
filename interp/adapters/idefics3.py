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
from typing import Any

import numpy as np
import torch

from interp.adapters.base import (
    Adapter,
    TokenPositions,
    find_module,
    first_tensor,
    register_adapter,
)
from interp.errors import InterventionError
from interp.layout import TokenLayout
from interp.sites import parse_site

__all__ = ["Idefics3Adapter"]


@register_adapter
class Idefics3Adapter(Adapter):
    family = "Idefics3 / SmolVLM"
    model_types = ("idefics3", "smolvlm")
    hub_ids = (
        "HuggingFaceM4/Idefics3-8B-Llama3",
        "HuggingFaceTB/SmolVLM-Instruct",
        "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
    )

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        config = model.config
        self._vision_layers = find_module(model, "vision_model.encoder.layers")
        self._connector = find_module(model, "connector")
        self._lm = find_module(model, "text_model")
        self._lm_layers = self._lm + ".layers"
        modules = dict(model.named_modules())
        self._n_vision = len(modules[self._vision_layers])
        self._n_lm = len(modules[self._lm_layers])
        vision = config.vision_config
        self._patch = int(vision.patch_size)
        self._tile = int(vision.image_size)
        self._scale = int(config.scale_factor)
        self._image_token_id = int(config.image_token_id)
        self.image_processor = getattr(processor, "image_processor", processor)
        self._views = lru_cache(maxsize=8)(self._count_views)

    # ----- structure -------------------------------------------------------------------
    @property
    def n_vision_layers(self) -> int:
        return self._n_vision

    @property
    def n_lm_layers(self) -> int:
        return self._n_lm

    @property
    def native_image_size(self) -> int:
        return self._tile

    @property
    def patch_grid(self) -> tuple[int, int]:
        side = self._tile // self._patch
        return side, side

    @property
    def attention_implementation(self) -> str:
        text = self.model.config.get_text_config()
        return str(getattr(text, "_attn_implementation", None) or "eager")

    @property
    def vision_prefix_tokens(self) -> int:
        return 0

    def module_path(self, site: str) -> str:
        parsed = parse_site(self.check_site(site))
        if parsed.stage == "vision":
            return f"{self._vision_layers}.{parsed.layer}"
        if parsed.stage == "projector":
            return self._connector
        return f"{self._lm_layers}.{parsed.layer}"

    def attention_path(self, lm_layer: int) -> str:
        return f"{self._lm_layers}.{lm_layer}.self_attn"

    def lm_input_path(self) -> str:
        return self._lm

    # ----- geometry --------------------------------------------------------------------
    def _count_views(self, size: int) -> tuple[int, int]:
        """(rows, cols) of tiles for a square ``size`` px image (0, 0: the global view
        only), read off the processor's own output for a blank image."""
        blank = np.zeros((size, size, 3), dtype=np.uint8)
        out = self.image_processor([[blank]], return_tensors="pt", return_row_col_info=True)
        rows, cols = int(out["rows"][0][0]), int(out["cols"][0][0])
        return rows, cols

    def token_layout(self, site: str, image_size: int) -> TokenLayout:
        stage = parse_site(self.check_site(site)).stage
        side = self.patch_grid[0] // (1 if stage == "vision" else self._scale)
        rows, cols = self._views(image_size)
        step_y, step_x = image_size / max(rows, 1), image_size / max(cols, 1)
        tiles = [
            TokenLayout.regular(
                side, side, image_size, crop=1 + i * cols + j,
                region=(i * step_y, j * step_x, (i + 1) * step_y, (j + 1) * step_x),
            )
            for i in range(rows)
            for j in range(cols)
        ]  # fmt: skip
        return TokenLayout.concat([*tiles, TokenLayout.regular(side, side, image_size)])

    # ----- inputs ----------------------------------------------------------------------
    def default_prompt(self, question: str) -> str:
        if getattr(self.processor, "chat_template", None):
            conversation = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
            ]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return f"{self.prompt_image_token}{question}"

    def build_inputs(self, images: np.ndarray, prompt: str) -> dict[str, torch.Tensor]:
        self.check_prompt(prompt)
        batch = self.processor(
            images=[[image] for image in images], text=[prompt] * len(images), return_tensors="pt"
        )
        return {k: v for k, v in batch.items() if k != "labels"}

    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids == self._image_token_id  # (batch, seq)

    def token_positions(self, inputs: dict[str, torch.Tensor]) -> TokenPositions:
        is_image = self.image_token_mask(inputs["input_ids"])  # (batch, seq)
        counts = is_image.sum(1)
        views = inputs["pixel_values"].shape[1]  # (batch, views, 3, H, W)
        expected = views * (self.patch_grid[0] // self._scale) ** 2
        if not bool((counts == expected).all()):
            raise InterventionError(
                f"expected {expected} image tokens per sequence ({views} views), found "
                f"{counts.tolist()}; the prompt must hold the processor's image token once"
            )
        positions = is_image.nonzero()[:, 1].reshape(len(counts), expected)
        return TokenPositions(positions, positions[:, :0])

    def image_token_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.image_token_mask(input_ids).nonzero()[:, 1].reshape(len(input_ids), -1)

    def select(self, site: str, value: Any, positions: TokenPositions) -> torch.Tensor:
        hidden = first_tensor(value)
        batch = positions.patch.shape[0]
        if parse_site(site).stage != "lm":  # (batch x views, tokens, d)
            return hidden.reshape(batch, -1, hidden.shape[-1])
        rows = torch.arange(batch, device=hidden.device)[:, None]
        return hidden[rows, positions.patch.to(hidden.device)]  # (batch, tokens, d)
