"""Gemma 3 (``Gemma3ForConditionalGeneration``): SigLIP tower, an average-pooling projector,
Gemma 3 decoder.

The projector pools the tower's ``P x P`` patch grid into ``sqrt(mm_tokens_per_image)``
tokens a side, so the vision sites and the LLM sites have different layouts: a vision
token sees one patch, a projector/LLM token the block of patches it pools. The processor
wraps the image's soft tokens in begin/end-of-image tokens; the prompt holds the
begin-of-image token. Pan-and-scan crops are turned off (one view of the stimulus).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from interp.adapters.base import first_tensor, register_adapter
from interp.adapters.llava import LlavaAdapter
from interp.layout import TokenLayout, image_hw
from interp.sites import parse_site

__all__ = ["Gemma3Adapter"]


@register_adapter
class Gemma3Adapter(LlavaAdapter):
    family = "Gemma 3"
    model_types = ("gemma3",)
    hub_ids = ("google/gemma-3-4b-it", "google/gemma-3-12b-it", "google/gemma-3-27b-it")
    # Gemma 3's residual stream has outliers beyond float16's range (the reason its
    # checkpoints ship in bfloat16), so its caches keep float32.
    store_dtype = "float32"

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        self._side = math.isqrt(int(model.config.mm_tokens_per_image))

    @property
    def prompt_image_token(self) -> str:
        """The begin-of-image token (transformers 5 calls it the processor's image token;
        4.x names the soft token so)."""
        return str(getattr(self.processor, "boi_token", None) or self.processor.image_token)

    @property
    def n_image_tokens(self) -> int:
        return self._side * self._side

    def token_layout(self, site: str, image_size: int | tuple[int, int]) -> TokenLayout:
        if parse_site(self.check_site(site)).stage == "vision":
            return super().token_layout(site, image_size)
        size = image_hw(image_size)
        region = self.input_view(size).region
        return TokenLayout.regular(self._side, self._side, size, region=region)

    def check_image_size(self, size: int) -> None:
        super().check_image_size(size)  # the patch grid tiles, so the pooled grid does too

    def processor_images(self, images: np.ndarray) -> list:
        return [[image] for image in images]  # a list of images per sample

    def processor_kwargs(self) -> dict[str, Any]:
        return {"do_pan_and_scan": False}

    def select(self, site: str, value: Any, positions: Any) -> torch.Tensor:
        if parse_site(site).stage == "projector":  # (batch, pooled tokens, d)
            return first_tensor(value)
        return super().select(site, value, positions)
