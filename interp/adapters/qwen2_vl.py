"""Qwen2-VL (``Qwen2VLForConditionalGeneration``): a dynamic patch grid, vision blocks
without a batch dimension, a merger of 2x2 patches, M-RoPE positions in the LLM.

The processor resizes each image to a multiple of ``patch x merge`` px (``smart_resize``)
and orders its patches merge window by merge window (within a window row-major), so the
vision blocks see ``(images x patches, d)`` in that order; the merger turns each window
into one token, row-major over the merged grid, and those are the image tokens of the LLM.
Stimuli must come out of ``smart_resize`` unchanged, so that every patch is whole.
"""

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
from interp.errors import ConfigError, InterventionError
from interp.layout import TokenLayout
from interp.sites import parse_site

__all__ = ["Qwen2VLAdapter"]


@register_adapter
class Qwen2VLAdapter(Adapter):
    family = "Qwen2-VL"
    model_types = ("qwen2_vl",)
    hub_ids = ("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct")

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        config = model.config
        self._blocks = find_module(model, "visual.blocks")
        self._merger = find_module(model, "visual.merger")
        self._lm = find_module(model, "language_model")
        self._lm_layers = self._lm + ".layers"
        modules = dict(model.named_modules())
        if self._lm_layers not in modules:  # transformers 4.x: language_model is the CausalLM
            self._lm_layers = find_module(model, "language_model.model.layers")
        self._n_vision = len(modules[self._blocks])
        self._n_lm = len(modules[self._lm_layers])
        vision = config.vision_config
        self._patch = int(vision.patch_size)
        self._merge = int(vision.spatial_merge_size)
        self._image_token_id = int(config.image_token_id)
        self.image_processor = getattr(processor, "image_processor", processor)

    # ----- structure -------------------------------------------------------------------
    @property
    def n_vision_layers(self) -> int:
        return self._n_vision

    @property
    def n_lm_layers(self) -> int:
        return self._n_lm

    @property
    def native_image_size(self) -> int:
        """No fixed input size; 8 merged tokens a side (224 px for the hub checkpoints)."""
        return 8 * self._patch * self._merge

    @property
    def patch_grid(self) -> tuple[int, int]:
        side = self.native_image_size // self._patch
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
            return f"{self._blocks}.{parsed.layer}"
        if parsed.stage == "projector":
            return self._merger
        return f"{self._lm_layers}.{parsed.layer}"

    def attention_path(self, lm_layer: int) -> str:
        return f"{self._lm_layers}.{lm_layer}.self_attn"

    def lm_input_path(self) -> str:
        return self._lm

    # ----- geometry --------------------------------------------------------------------
    def _resized(self, size: int) -> tuple[int, int]:
        """(height, width) px the processor resizes a square ``size`` px image to."""
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        ip = self.image_processor
        bounds = getattr(ip, "size", None) or {}
        low = getattr(ip, "min_pixels", None) or bounds.get("shortest_edge")
        high = getattr(ip, "max_pixels", None) or bounds.get("longest_edge")
        return tuple(
            smart_resize(
                size, size, factor=self._patch * self._merge, min_pixels=low, max_pixels=high
            )
        )

    def check_image_size(self, size: int) -> None:
        resized = self._resized(size)
        if resized != (size, size):
            step = self._patch * self._merge
            raise ConfigError(
                f"image size {size} px would be resized to {resized[0]}x{resized[1]} by the "
                f"processor, so patches would not be whole stimulus pixels; use a multiple of "
                f"{step} within the processor's pixel bounds, e.g. {self.native_image_size}"
            )

    def token_layout(self, site: str, image_size: int) -> TokenLayout:
        stage = parse_site(self.check_site(site)).stage
        height, width = self._resized(image_size)
        rows, cols, m = height // self._patch, width // self._patch, self._merge
        if stage != "vision":  # one token per merge window, row-major
            return TokenLayout.regular(rows // m, cols // m, image_size)
        # window (I, J), then (a, b) inside it -> patch (I*m + a, J*m + b)
        big_r, big_c, a, b = np.meshgrid(
            np.arange(rows // m), np.arange(cols // m), np.arange(m), np.arange(m), indexing="ij"
        )
        r, c = (big_r * m + a).ravel(), (big_c * m + b).ravel()
        flat = TokenLayout.regular(rows, cols, image_size)
        return flat.take(r * cols + c)

    # ----- inputs ----------------------------------------------------------------------
    def default_prompt(self, question: str) -> str:
        if getattr(self.processor, "chat_template", None):
            conversation = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
            ]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        tokenizer = self.processor.tokenizer
        start = getattr(tokenizer, "vision_start_token", None) or "<|vision_start|>"
        end = getattr(tokenizer, "vision_end_token", None) or "<|vision_end|>"
        return f"{start}{self.prompt_image_token}{end}{question}"

    def build_inputs(self, images: np.ndarray, prompt: str) -> dict[str, torch.Tensor]:
        self.check_prompt(prompt)
        batch = self.processor(
            images=list(images), text=[prompt] * len(images), return_tensors="pt"
        )
        return {k: v for k, v in batch.items() if k != "labels"}

    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids == self._image_token_id  # (batch, seq)

    def token_positions(self, inputs: dict[str, torch.Tensor]) -> TokenPositions:
        grid = inputs["image_grid_thw"]  # (images, 3): frames, patch rows, patch cols
        if not bool((grid == grid[0]).all()):
            raise InterventionError(f"every image of a batch must be the same size, got {grid}")
        expected = int(grid[0].prod()) // self._merge**2
        is_image = self.image_token_mask(inputs["input_ids"])  # (batch, seq)
        counts = is_image.sum(1)
        if not bool((counts == expected).all()):
            raise InterventionError(
                f"expected {expected} image tokens per sequence, found {counts.tolist()}; "
                f"the prompt must hold the processor's image token exactly once"
            )
        positions = is_image.nonzero()[:, 1].reshape(len(counts), expected)
        return TokenPositions(positions, positions[:, :0], self.vision_order(grid))

    def vision_order(self, grid_thw: torch.Tensor) -> torch.Tensor | None:
        """Rows of the vision blocks' sequence in the processor's order (None: as they are)."""
        return None

    def image_token_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_image = self.image_token_mask(input_ids)
        return is_image.nonzero()[:, 1].reshape(len(input_ids), -1)

    def select(self, site: str, value: Any, positions: TokenPositions) -> torch.Tensor:
        hidden = first_tensor(value)
        batch = positions.patch.shape[0]
        if parse_site(site).stage != "lm":  # (images x tokens, d): no batch dimension
            order = positions.vision_order
            if order is not None:  # back from the blocks' order, a merge unit at a time
                units = order.numel()
                hidden = hidden.reshape(units, -1, hidden.shape[-1])[order.to(hidden.device)]
            return hidden.reshape(batch, -1, hidden.shape[-1])
        rows = torch.arange(batch, device=hidden.device)[:, None]
        return hidden[rows, positions.patch.to(hidden.device)]  # (batch, tokens, d)
