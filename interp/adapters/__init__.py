"""Model-family adapters: one registered class per family, one file per family."""

from interp.adapters import clip as _clip  # noqa: F401  (each import registers a family)
from interp.adapters import dinov2 as _dinov2  # noqa: F401
from interp.adapters import gemma3 as _gemma3  # noqa: F401
from interp.adapters import idefics3 as _idefics3  # noqa: F401
from interp.adapters import llava as _llava  # noqa: F401
from interp.adapters import llava_next as _llava_next  # noqa: F401
from interp.adapters import paligemma as _paligemma  # noqa: F401
from interp.adapters import qwen2_5_vl as _qwen2_5_vl  # noqa: F401
from interp.adapters import qwen2_vl as _qwen2_vl  # noqa: F401
from interp.adapters import siglip as _siglip  # noqa: F401
from interp.adapters.base import (
    Adapter,
    TokenPositions,
    adapter_class_for,
    adapter_for,
    find_first_module,
    find_module,
    register_adapter,
    registered_families,
)
from interp.adapters.decoder import DecoderVLMAdapter
from interp.adapters.encoder import VisionEncoderAdapter

__all__ = [
    "Adapter",
    "DecoderVLMAdapter",
    "TokenPositions",
    "VisionEncoderAdapter",
    "adapter_class_for",
    "adapter_for",
    "find_first_module",
    "find_module",
    "register_adapter",
    "registered_families",
]
