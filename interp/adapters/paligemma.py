"""PaliGemma (``PaliGemmaForConditionalGeneration``): SigLIP tower, linear projector, Gemma.

The module tree is LLaVA-1.5's (``vision_tower``, ``multi_modal_projector``,
``language_model``); SigLIP has no CLS token, the image tokens lead the sequence and the
prefix (image + prompt) is attended bidirectionally. The processor builds the sequence
itself, so the prompt is the image token followed by the question.
"""

from __future__ import annotations

from interp.adapters.base import register_adapter
from interp.adapters.llava import LlavaAdapter

__all__ = ["PaliGemmaAdapter"]


@register_adapter
class PaliGemmaAdapter(LlavaAdapter):
    family = "PaliGemma"
    model_types = ("paligemma",)
    hub_ids = ("google/paligemma-3b-pt-224", "google/paligemma2-3b-pt-224")

    def plain_prompt(self, question: str) -> str:
        return f"{self.prompt_image_token}{question}"
