"""CLIP vision encoders (``CLIPVisionModel``, or the vision half of ``CLIPModel``)."""

from __future__ import annotations

from interp.adapters.base import register_adapter
from interp.adapters.encoder import VisionEncoderAdapter

__all__ = ["ClipAdapter"]


@register_adapter
class ClipAdapter(VisionEncoderAdapter):
    family = "CLIP"
    model_types = ("clip_vision_model", "clip")
    hub_ids = ("openai/clip-vit-large-patch14", "openai/clip-vit-large-patch14-336")

    @property
    def vision_prefix_tokens(self) -> int:
        return 1  # CLS
