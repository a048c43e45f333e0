"""LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP-style tower, MLP projector, decoder LM."""

from __future__ import annotations

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
from interp.sites import parse_site

__all__ = ["LlavaAdapter"]


@register_adapter
class LlavaAdapter(Adapter):
    family = "LLaVA-1.5"
    model_types = ("llava",)
    hub_ids = ("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf")

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        config = model.config
        self._vision_layers = find_module(model, "vision_tower") + "." + "encoder.layers"
        if self._vision_layers not in dict(model.named_modules()):
            self._vision_layers = find_module(model, "encoder.layers")
        self._projector = find_module(model, "multi_modal_projector")
        self._lm = find_module(model, "language_model")
        self._lm_layers = self._lm + ".layers"
        if self._lm_layers not in dict(model.named_modules()):  # transformers 4.x < 4.52
            self._lm_layers = find_module(model, "language_model.model.layers")
        modules = dict(model.named_modules())
        self._n_vision = len(modules[self._vision_layers])
        self._n_lm = len(modules[self._lm_layers])
        vision = config.vision_config
        self._patch = int(vision.patch_size)
        self._image_size = int(vision.image_size)
        self._image_token_id = int(
            getattr(config, "image_token_id", None) or config.image_token_index
        )
        # With the "full" strategy the first image token carries the CLS token, not a patch.
        strategy = getattr(config, "vision_feature_select_strategy", "default")
        self._prefix = 1 if strategy == "full" else 0

    @property
    def n_vision_layers(self) -> int:
        return self._n_vision

    @property
    def n_lm_layers(self) -> int:
        return self._n_lm

    @property
    def patch_grid(self) -> tuple[int, int]:
        side = self._image_size // self._patch
        return side, side

    @property
    def native_image_size(self) -> int:
        return self._image_size

    @property
    def attention_implementation(self) -> str:
        text = self.model.config.text_config
        return str(getattr(text, "_attn_implementation", None) or "eager")

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

    def lm_input_path(self) -> str:
        return self._lm

    def module_path(self, site: str) -> str:
        parsed = parse_site(self.check_site(site))
        if parsed.stage == "vision":
            return f"{self._vision_layers}.{parsed.layer}"
        if parsed.stage == "projector":
            return self._projector
        return f"{self._lm_layers}.{parsed.layer}"

    def attention_path(self, lm_layer: int) -> str:
        layer = f"{self._lm_layers}.{lm_layer}"
        return layer + "." + find_module(dict(self.model.named_modules())[layer], "self_attn")

    def default_prompt(self, question: str) -> str:
        if getattr(self.processor, "chat_template", None):
            conversation = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
            ]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return f"{self.prompt_image_token}\n{question}"

    def build_inputs(self, images: np.ndarray, prompt: str) -> dict[str, torch.Tensor]:
        self.check_prompt(prompt)
        batch = self.processor(
            images=list(images), text=[prompt] * len(images), return_tensors="pt"
        )
        return {k: v for k, v in batch.items() if k != "labels"}  # no loss to compute

    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids == self._image_token_id  # (batch, seq)

    def token_positions(self, inputs: dict[str, torch.Tensor]) -> TokenPositions:
        positions = self._all_image_positions(inputs["input_ids"])  # (batch, image tokens)
        return TokenPositions(positions[:, self._prefix :], positions[:, : self._prefix])

    def image_token_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._all_image_positions(input_ids)[:, self._prefix :]  # (batch, tokens)

    def _all_image_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_image = self.image_token_mask(input_ids)  # (batch, seq)
        counts = is_image.sum(1)
        expected = self.n_image_tokens
        if not bool((counts == expected).all()):
            raise InterventionError(
                f"expected {expected} image tokens per sequence, found {counts.tolist()}; "
                f"the prompt must hold the processor's image token exactly once"
            )
        return is_image.nonzero()[:, 1].reshape(len(input_ids), expected)

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
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        return hidden[rows, positions.patch.to(hidden.device)]  # (batch, tokens, d)
