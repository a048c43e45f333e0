"""Shared behaviour of vision encoders used on their own (no projector, no LLM).

Their sites are ``vision.<i>`` only and they support the baseline condition only. The
CLS and register tokens are cut off at every site (counted in ``vision_prefix_tokens``),
so stored tokens are exactly the patch grid, row-major.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from interp.adapters.base import Adapter, find_first_module, first_tensor
from interp.errors import ConfigError, InterventionError
from interp.sites import parse_site

__all__ = ["VisionEncoderAdapter"]


class VisionEncoderAdapter(Adapter):
    """Base of the encoder families; subclasses set the class attributes below."""

    auto_class = "AutoModel"
    processor_class = "AutoImageProcessor"
    conditions = ("baseline",)
    condition_kinds = ("baseline", "mean", "zero", "patch", "sae")
    has_language_model = False
    pixel_tower = True
    # Module-name suffixes tried, in order, to find the encoder's layer list.
    layer_suffixes: ClassVar[tuple[str, ...]] = ("vision_model.encoder.layers", "encoder.layers")

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        self._layers = find_first_module(model, self.layer_suffixes)
        self._n = len(dict(model.named_modules())[self._layers])
        self.vision_config = getattr(model.config, "vision_config", model.config)

    # ----- structure -------------------------------------------------------------------
    @property
    def n_vision_layers(self) -> int:
        return self._n

    @property
    def n_lm_layers(self) -> int:
        return 0

    @property
    def native_image_size(self) -> int:
        return int(self.vision_config.image_size)

    @property
    def patch_grid(self) -> tuple[int, int]:
        side = self.native_image_size // int(self.vision_config.patch_size)
        return side, side

    @property
    def attention_implementation(self) -> str:
        return str(getattr(self.vision_config, "_attn_implementation", None) or "eager")

    def module_path(self, site: str) -> str:
        return f"{self._layers}.{parse_site(self.check_site(site)).layer}"

    def attention_path(self, lm_layer: int) -> str:
        raise InterventionError(f"a {self.family} encoder has no language model to intervene on")

    # ----- inputs ----------------------------------------------------------------------
    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make the processor emit exactly the native size: the
        shorter side resized to it and the centre cropped (a square image is seen whole)."""
        side = self.native_image_size
        return {
            "size": {"shortest_edge": side},
            "do_center_crop": True,
            "crop_size": {"height": side, "width": side},
        }

    def default_prompt(self, question: str) -> str:
        return ""  # an encoder takes no text

    def check_prompt(self, prompt: str) -> None:
        if prompt:
            raise ConfigError(f"a {self.family} encoder takes no prompt, got {prompt!r}")

    def build_inputs(self, images: np.ndarray, prompt: str) -> dict[str, torch.Tensor]:
        self.check_prompt(prompt)
        out = self.image_processor(list(images), return_tensors="pt", **self.processor_kwargs())
        return {"pixel_values": out["pixel_values"]}  # (batch, 3, H, W)

    def token_positions(self, inputs: dict[str, torch.Tensor]) -> None:
        return None

    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise InterventionError(f"a {self.family} encoder has no image tokens in a text sequence")

    def image_token_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise InterventionError(f"a {self.family} encoder has no image tokens in a text sequence")

    def select(self, site: str, value: Any, positions: torch.Tensor | None) -> torch.Tensor:
        hidden = first_tensor(value)  # (batch, prefix + patches, d)
        n_patches = self.patch_grid[0] * self.patch_grid[1]
        return hidden[:, hidden.shape[1] - n_patches :]
