"""Shared behaviour of VLMs whose image tokens are spliced into a decoder LLM's input.

A family names, in class attributes, the module-name suffixes of its vision layers, its
projector and its language model (tried in order, so one adapter serves transformers 4.57
and 5, whose trees differ); this base resolves them, counts layers, finds the image tokens
in the sequence, builds prompts and inputs, and cuts ``lm.*`` outputs down to the image
tokens. Families override what differs: the token layout, how vision and projector
outputs become ``(batch, tokens, d)``, the processor's call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from interp.adapters.base import Adapter, TokenPositions, find_first_module, first_tensor
from interp.errors import ConfigError, InterventionError
from interp.sites import parse_site

__all__ = ["DecoderVLMAdapter"]


class DecoderVLMAdapter(Adapter):
    """Base of the VLM families; subclasses set the suffixes and the abstract members."""

    vision_layer_suffixes: ClassVar[tuple[str, ...]]
    projector_suffixes: ClassVar[tuple[str, ...]]
    lm_suffixes: ClassVar[tuple[str, ...]]  # the decoder model whose ``layers`` are lm.*

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        self._vision_layers = find_first_module(model, self.vision_layer_suffixes)
        self._projector = find_first_module(model, self.projector_suffixes)
        self._lm = find_first_module(model, self.lm_suffixes)
        self._lm_layers = find_first_module(
            model, (f"{self._lm}.layers", f"{self._lm}.model.layers")
        )
        modules = dict(model.named_modules())
        self._n_vision = len(modules[self._vision_layers])
        self._n_lm = len(modules[self._lm_layers])
        config = model.config
        self._image_token_id = int(
            getattr(config, "image_token_id", None) or config.image_token_index
        )

    # ----- structure -------------------------------------------------------------------
    @property
    def n_vision_layers(self) -> int:
        return self._n_vision

    @property
    def n_lm_layers(self) -> int:
        return self._n_lm

    @property
    def attention_implementation(self) -> str:
        text = self.model.config.get_text_config()
        return str(getattr(text, "_attn_implementation", None) or "eager")

    def module_path(self, site: str) -> str:
        parsed = parse_site(self.check_site(site))
        if parsed.stage == "vision":
            return f"{self._vision_layers}.{parsed.layer}"
        if parsed.stage == "projector":
            return self._projector
        return f"{self._lm_layers}.{parsed.layer}"

    def attention_path(self, lm_layer: int) -> str:
        layer = f"{self._lm_layers}.{lm_layer}"  # searched inside the layer only
        module = self.model.get_submodule(layer)
        return f"{layer}.{find_first_module(module, ('self_attn',))}"

    def lm_input_path(self) -> str:
        return self._lm

    # ----- inputs ----------------------------------------------------------------------
    def plain_prompt(self, question: str) -> str:
        """The prompt of a model saved without a chat template."""
        return f"{self.prompt_image_token}\n{question}"

    def default_prompt(self, question: str) -> str:
        if getattr(self.processor, "chat_template", None):
            conversation = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
            ]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return self.plain_prompt(question)

    def processor_images(self, images: np.ndarray) -> list:
        """The ``images`` argument of the processor for a batch, one image per sample."""
        return list(images)

    def build_inputs(
        self, images: np.ndarray, prompt: str | Sequence[str]
    ) -> dict[str, torch.Tensor]:
        prompts = [prompt] * len(images) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(images):
            raise ConfigError(
                f"prompt must be one text or one per image, got {len(prompts)} prompts for "
                f"{len(images)} images"
            )
        for text in dict.fromkeys(prompts):
            self.check_prompt(text)
        different = len(set(prompts)) > 1  # then of different lengths: padded
        batch = self.processor(
            images=self.processor_images(images),
            text=prompts,
            return_tensors="pt",
            **({"padding": True} if different else {}),
            **self.processor_kwargs(),
        )
        return {k: v for k, v in batch.items() if k != "labels"}  # no loss to compute

    # ----- tokens ----------------------------------------------------------------------
    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids == self._image_token_id  # (batch, seq)

    def image_positions(self, input_ids: torch.Tensor, expected: int) -> torch.Tensor:
        """``(batch, expected)`` sequence positions of every image token, checked."""
        is_image = self.image_token_mask(input_ids)  # (batch, seq)
        counts = is_image.sum(1)
        if not bool((counts == expected).all()):
            raise InterventionError(
                f"expected {expected} image tokens per sequence, found {counts.tolist()}; "
                f"the prompt must hold the processor's image token exactly once"
            )
        return is_image.nonzero()[:, 1].reshape(len(input_ids), expected)

    def image_token_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.image_token_mask(input_ids).nonzero()[:, 1].reshape(len(input_ids), -1)

    def select_lm(self, value: Any, positions: TokenPositions) -> torch.Tensor:
        """An ``lm.*`` output ``(batch, seq, d)`` at the patch tokens: ``(batch, tokens, d)``."""
        hidden = first_tensor(value)
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        return hidden[rows, positions.patch.to(hidden.device)]

    @staticmethod
    def per_image(hidden: torch.Tensor, positions: TokenPositions) -> torch.Tensor:
        """``(batch x views, tokens, d)`` or ``(batch x tokens, d)`` -> ``(batch, ..., d)``."""
        return hidden.reshape(positions.patch.shape[0], -1, hidden.shape[-1])
