"""SigLIP vision encoders (``SiglipVisionModel``, or the vision half of ``SiglipModel``)."""

from __future__ import annotations

from typing import Any

from interp.adapters.base import register_adapter
from interp.adapters.encoder import VisionEncoderAdapter

__all__ = ["SiglipAdapter"]


@register_adapter
class SiglipAdapter(VisionEncoderAdapter):
    family = "SigLIP"
    model_types = ("siglip_vision_model", "siglip")
    hub_ids = ("google/siglip-so400m-patch14-384", "google/siglip-base-patch16-224")

    @property
    def vision_prefix_tokens(self) -> int:
        return 0  # no CLS: SigLIP pools with an attention head

    def processor_kwargs(self) -> dict[str, Any]:
        side = self.native_image_size
        return {"size": {"height": side, "width": side}}
