"""Ablations of the visual tokens: patch shuffling and attention knockout in a window of
LM layers, one registered class per kind of condition (:mod:`interp.conditions`).

Each intervention yields :class:`~interp.tracing.Action` s that the capture engine runs
inside the same nnsight trace as the recordings, so nothing stays attached afterwards.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from interp.adapters import Adapter
from interp.conditions import CONDITIONS, Condition, parse_condition
from interp.errors import ConfigError, InterventionError
from interp.tracing import Action

__all__ = [
    "Intervention",
    "ShufflePatches",
    "LayerWindowMask",
    "LowerLayerMask",
    "CONDITIONS",
    "make_intervention",
    "knockout_mask",
    "register_intervention",
]

_REGISTRY: dict[str, type[Intervention]] = {}


def register_intervention(cls: type[Intervention]) -> type[Intervention]:
    """Class decorator: make ``cls`` the intervention of conditions of kind ``cls.kind``."""
    _REGISTRY[cls.kind] = cls
    return cls


class Intervention(ABC):
    """Something done to the forward pass, named by its experimental condition."""

    kind: ClassVar[str]  # the condition kind it implements (interp.conditions)

    @classmethod
    @abstractmethod
    def from_condition(cls, condition: Condition, seed: int) -> Intervention:
        """The intervention a parsed condition names (``seed``: the run's)."""

    @property
    @abstractmethod
    def condition(self) -> str:
        """Its condition name, as the cache and the tables write it."""

    @abstractmethod
    def actions(self, adapter: Adapter, inputs: dict[str, torch.Tensor]) -> list[Action]:
        """What to do to the forward pass of one batch (its processor ``inputs``)."""

    @abstractmethod
    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        """Parameters to record beside the activations (JSON-serialisable)."""


@register_intervention
class ShufflePatches(Intervention):
    """Permute the patch tokens entering the LLM by one seeded random permutation.

    The permutation moves the image embeddings among the patch-token positions of the
    LLM's input (``inputs_embeds``); positions, and tokens that carry no patch (CLS,
    newlines), stay where they are. Everything before the LLM is untouched.
    """

    kind = "shuffle"

    def __init__(self, seed: int = 0, *, named: bool = False) -> None:
        self.seed = seed
        self.named = named  # whether its name carries the seed (shuffle:SEED)

    @classmethod
    def from_condition(cls, condition: Condition, seed: int) -> ShufflePatches:
        if condition.argument is None:
            return cls(seed=seed)
        return cls(seed=int(condition.argument), named=True)

    @property
    def condition(self) -> str:
        return f"shuffle:{self.seed}" if self.named else "shuffle"

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


class AttentionKnockout(Intervention):
    """In some LM layers (:meth:`layers`), no position attends to the image tokens (each
    still attends to itself)."""

    _IMPLEMENTATIONS: ClassVar[tuple[str, ...]] = ("eager", "sdpa")

    @abstractmethod
    def layers(self, adapter: Adapter) -> list[int]: ...

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


@register_intervention
class LowerLayerMask(AttentionKnockout):
    """In the LM layers below ``fraction`` of depth (at least one), no position attends
    to image tokens: ``lower_mask``."""

    kind = "lower_mask"

    def __init__(self, fraction: float = 0.25) -> None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"lower-mask fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction

    @classmethod
    def from_condition(cls, condition: Condition, seed: int) -> LowerLayerMask:
        return cls()

    @property
    def condition(self) -> str:
        return "lower_mask"

    def layers(self, adapter: Adapter) -> list[int]:
        return list(range(max(1, math.floor(self.fraction * adapter.n_lm_layers))))

    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        return {"fraction": self.fraction, "layers": self.layers(adapter)}


@register_intervention
class LayerWindowMask(AttentionKnockout):
    """In LM layers ``first`` to ``last`` (inclusive), no position attends to image tokens:
    ``mask:A-B``."""

    kind = "mask"

    def __init__(self, first: int, last: int) -> None:
        if not 0 <= first <= last:
            raise ConfigError(f"mask layers must satisfy 0 <= first <= last, got {first}-{last}")
        self.first, self.last = first, last

    @classmethod
    def from_condition(cls, condition: Condition, seed: int) -> LayerWindowMask:
        first, last = (int(v) for v in str(condition.argument).split("-"))
        return cls(first, last)

    @property
    def condition(self) -> str:
        return f"mask:{self.first}-{self.last}"

    def layers(self, adapter: Adapter) -> list[int]:
        if self.last >= adapter.n_lm_layers:
            raise InterventionError(
                f"{self.condition} reaches LM layer {self.last}, but this {adapter.family} "
                f"model has layers 0 to {adapter.n_lm_layers - 1}"
            )
        return list(range(self.first, self.last + 1))

    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        return {"layers": self.layers(adapter)}


def make_intervention(condition: str, *, seed: int = 0) -> Intervention | None:
    """The intervention of a condition name (None for ``baseline``), through the registry
    of kinds; ``seed`` seeds those whose name does not."""
    parsed = parse_condition(condition)
    if parsed.kind == "baseline":
        return None
    return _REGISTRY[parsed.kind].from_condition(parsed, seed)
