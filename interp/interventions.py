"""Ablations of the visual tokens: patch shuffling and lower-layer attention knockout.

Each intervention yields :class:`~interp.tracing.Action` s that the capture engine runs
inside the same nnsight trace as the recordings, so nothing stays attached afterwards.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from interp.adapters import Adapter
from interp.errors import ConfigError, InterventionError
from interp.tracing import Action

__all__ = [
    "Intervention",
    "ShufflePatches",
    "LowerLayerMask",
    "CONDITIONS",
    "make_intervention",
    "knockout_mask",
]


class Intervention(ABC):
    """Something done to the forward pass, named by its experimental condition."""

    condition: ClassVar[str]

    @abstractmethod
    def actions(self, adapter: Adapter, inputs: dict[str, torch.Tensor]) -> list[Action]:
        """What to do to the forward pass of one batch (its processor ``inputs``)."""

    @abstractmethod
    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        """Parameters to record beside the activations (JSON-serialisable)."""


class ShufflePatches(Intervention):
    """Permute the patch tokens entering the LLM by one seeded random permutation.

    The permutation moves the image embeddings among the patch-token positions of the
    LLM's input (``inputs_embeds``); positions, and tokens that carry no patch (CLS,
    newlines), stay where they are. Everything before the LLM is untouched.
    """

    condition = "shuffle"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def permutation(self, n_tokens: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randperm(n_tokens, generator=generator)

    def actions(self, adapter: Adapter, inputs: dict[str, torch.Tensor]) -> list[Action]:
        positions = adapter.token_positions(inputs)
        if positions is None:
            raise InterventionError(f"a {adapter.family} model has no LLM input to shuffle")
        patch = positions.patch  # (batch, tokens)
        perm = self.permutation(patch.shape[1])

        def shuffle(value: tuple[tuple, dict]) -> tuple[tuple, dict]:
            args, kwargs = value
            embeds = kwargs.get("inputs_embeds")
            if embeds is None:
                raise InterventionError(
                    "the language model was not given inputs_embeds as a keyword; this "
                    "family's adapter must provide its own shuffle"
                )
            where = patch.to(embeds.device)
            rows = torch.arange(len(embeds), device=embeds.device)[:, None]
            out = embeds.clone()  # (batch, seq, d)
            out[rows, where] = embeds[rows, where[:, perm.to(embeds.device)]]
            return args, {**kwargs, "inputs_embeds": out}

        return [Action(adapter.lm_input_path(), "inputs", edit=shuffle)]

    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        n = len(adapter.token_layout("lm.0", image_size))
        return {"seed": self.seed, "permutation": self.permutation(n).tolist()}


def knockout_mask(incoming: torch.Tensor | None, image_keys: torch.Tensor) -> torch.Tensor:
    """An attention mask like ``incoming`` in which no query attends to an image key.

    ``image_keys`` is ``(batch, seq)`` bool. Each position may still attend to itself, so
    no row is left empty. ``incoming`` is the layer's own mask: None (causal, no padding),
    boolean (True = attend) or additive float (0 = attend); the result has the same kind.
    """
    batch, seq = image_keys.shape
    device = image_keys.device
    if incoming is None:
        allowed = torch.ones(seq, seq, dtype=torch.bool, device=device).tril()
        allowed = allowed[None, None].expand(batch, 1, seq, seq)  # (batch, 1, q, k)
    elif incoming.dtype == torch.bool:
        allowed = incoming
    else:
        allowed = incoming == 0
    if allowed.shape[-1] != seq or allowed.shape[-2] != seq:
        raise InterventionError(
            f"attention knockout expects a square (query = key = {seq}) mask from a single "
            f"forward pass without a KV cache, found shape {tuple(allowed.shape)}"
        )
    eye = torch.eye(seq, dtype=torch.bool, device=device)
    blocked = image_keys[:, None, None, :] & ~eye  # (batch, 1, q, k)
    allowed = allowed & ~blocked
    if incoming is not None and incoming.dtype != torch.bool:
        return torch.zeros_like(incoming).masked_fill(~allowed, torch.finfo(incoming.dtype).min)
    return allowed


class LowerLayerMask(Intervention):
    """In the LM layers below ``fraction`` of depth, no position attends to image tokens."""

    condition = "lower_mask"
    _IMPLEMENTATIONS: ClassVar[tuple[str, ...]] = ("eager", "sdpa")

    def __init__(self, fraction: float = 0.25) -> None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"lower-mask fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction

    def layers(self, adapter: Adapter) -> list[int]:
        return list(range(max(1, math.floor(self.fraction * adapter.n_lm_layers))))

    def actions(self, adapter: Adapter, inputs: dict[str, torch.Tensor]) -> list[Action]:
        implementation = adapter.attention_implementation
        if implementation not in self._IMPLEMENTATIONS:
            raise InterventionError(
                f"attention knockout needs attn_implementation in {self._IMPLEMENTATIONS}, "
                f"this model uses {implementation!r}; load it with attn_implementation='sdpa'"
            )
        if inputs is None or "input_ids" not in inputs:
            raise InterventionError(f"a {adapter.family} encoder has no image tokens to mask")
        image_keys = adapter.image_token_mask(inputs["input_ids"])  # (batch, seq)

        def knock(inputs: tuple[tuple, dict]) -> tuple[tuple, dict]:
            args, kwargs = inputs
            if "attention_mask" not in kwargs:
                raise InterventionError(
                    "the attention module was not given attention_mask as a keyword; "
                    "this family's adapter must provide its own knockout"
                )
            incoming = kwargs["attention_mask"]
            device = incoming.device if incoming is not None else image_keys.device
            mask = knockout_mask(incoming, image_keys.to(device))
            return args, {**kwargs, "attention_mask": mask}

        return [
            Action(adapter.attention_path(i), "inputs", edit=knock) for i in self.layers(adapter)
        ]

    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        return {"fraction": self.fraction, "layers": self.layers(adapter)}


CONDITIONS: tuple[str, ...] = ("baseline", ShufflePatches.condition, LowerLayerMask.condition)


def make_intervention(condition: str, *, seed: int = 0) -> Intervention | None:
    """The intervention of a named condition (None for ``baseline``)."""
    if condition == "baseline":
        return None
    if condition == ShufflePatches.condition:
        return ShufflePatches(seed=seed)
    if condition == LowerLayerMask.condition:
        return LowerLayerMask()
    raise ConfigError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")
