"""LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP-style tower, MLP projector, decoder LM."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from interp.adapters.base import TokenPositions, first_tensor, register_adapter
from interp.adapters.decoder import DecoderVLMAdapter
from interp.sites import parse_site

__all__ = ["LlavaAdapter"]


@register_adapter
class LlavaAdapter(DecoderVLMAdapter):
    family = "LLaVA-1.5"
    model_types = ("llava",)
    hub_ids = ("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf")
    vision_layer_suffixes: ClassVar[tuple[str, ...]] = (
        "vision_tower.encoder.layers",
        "encoder.layers",  # transformers 4.x: vision_tower.vision_model.encoder.layers
    )
    projector_suffixes: ClassVar[tuple[str, ...]] = ("multi_modal_projector",)
    lm_suffixes: ClassVar[tuple[str, ...]] = ("language_model",)
    pixel_tower: ClassVar[bool] = True  # a CLIP tower on (batch, 3, H, W) pixel_values

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        vision = model.config.vision_config
        self._patch = int(vision.patch_size)
        self._image_size = int(vision.image_size)
        # With the "full" strategy the first image token carries the CLS token, not a patch.
        strategy = getattr(model.config, "vision_feature_select_strategy", "default")
        self._prefix = 1 if strategy == "full" else 0

    @property
    def patch_grid(self) -> tuple[int, int]:
        side = self._image_size // self._patch
        return side, side

    @property
    def native_image_size(self) -> int:
        return self._image_size

    @property
    def vision_prefix_tokens(self) -> int:
        embeddings = dict(self.model.named_modules())[self._vision_layers.rsplit(".", 2)[0]]
        embeddings = getattr(embeddings, "embeddings", None)
        return int(getattr(embeddings, "class_embedding", None) is not None)

    @property
    def n_image_tokens(self) -> int:
        """Image tokens per image in the LLM sequence (CLS included)."""
        return self.patch_grid[0] * self.patch_grid[1] + self._prefix

    @property
    def image_extra(self) -> tuple[str, ...]:
        return ("cls",) * self._prefix

    def token_positions(self, inputs: dict[str, torch.Tensor]) -> TokenPositions:
        positions = self.image_positions(inputs["input_ids"], self.n_image_tokens)
        return TokenPositions(positions[:, self._prefix :], positions[:, : self._prefix])

    def image_token_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.image_positions(input_ids, self.n_image_tokens)[:, self._prefix :]

    def select_extra(
        self, site: str, value: Any, positions: TokenPositions | None
    ) -> torch.Tensor | None:
        if parse_site(site).stage == "projector":  # the CLS token leads ("full" strategy)
            return first_tensor(value)[:, : self._prefix] if self._prefix else None
        return super().select_extra(site, value, positions)

    def select(self, site: str, value: Any, positions: TokenPositions) -> torch.Tensor:
        hidden = first_tensor(value)
        stage = parse_site(site).stage
        if stage == "vision":  # (batch, prefix + patches, d): drop CLS / registers
            n_patches = self.patch_grid[0] * self.patch_grid[1]
            return hidden[:, hidden.shape[1] - n_patches :]
        if stage == "projector":  # (batch, image tokens, d)
            return hidden[:, self._prefix :]
        return self.select_lm(hidden, positions)  # (batch, tokens, d)
