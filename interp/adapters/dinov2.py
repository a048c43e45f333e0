"""DINOv2 (``Dinov2Model``, ``Dinov2WithRegistersModel``): CLS, then registers, then patches.

DINOv2 interpolates its position embeddings, so its native size is the processor's crop
size (224 for the hub checkpoints), not the config's ``image_size`` (518).
"""

from __future__ import annotations

from typing import ClassVar

from interp.adapters.base import register_adapter
from interp.adapters.encoder import VisionEncoderAdapter

__all__ = ["Dinov2Adapter"]


@register_adapter
class Dinov2Adapter(VisionEncoderAdapter):
    family = "DINOv2"
    model_types = ("dinov2", "dinov2_with_registers")
    hub_ids = ("facebook/dinov2-large", "facebook/dinov2-with-registers-base")
    layer_suffixes: ClassVar[tuple[str, ...]] = ("encoder.layer",)

    @property
    def native_image_size(self) -> int:
        crop = getattr(self.image_processor, "crop_size", None) or {}
        return int(crop.get("height") or self.vision_config.image_size)

    @property
    def vision_prefix_tokens(self) -> int:
        return 1 + int(getattr(self.vision_config, "num_register_tokens", 0) or 0)
