"""The adapter contract and registry: one small adapter per model family.

An adapter resolves, from the model's own module tree and config, where each canonical
site lives, where the image tokens sit in the LLM sequence and which patch each one
carries. Everything downstream (capture, interventions, caches) talks to the adapter,
never to model-specific attribute names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from interp.errors import ConfigError, SiteError, UnsupportedModelError
from interp.sites import all_sites, parse_site

__all__ = [
    "Adapter",
    "adapter_class_for",
    "adapter_for",
    "find_module",
    "register_adapter",
    "registered_families",
]

_REGISTRY: dict[str, type[Adapter]] = {}


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make ``cls`` the adapter of every ``cls.model_types``."""
    for model_type in cls.model_types:
        _REGISTRY[model_type] = cls
    return cls


def registered_families() -> dict[str, str]:
    """``model_type -> family`` for every registered adapter."""
    return {model_type: cls.family for model_type, cls in sorted(_REGISTRY.items())}


def adapter_class_for(config: Any, what: str = "") -> type[Adapter]:
    """The registered adapter class for a model config, by its ``model_type``."""
    model_type = getattr(config, "model_type", None)
    cls = _REGISTRY.get(model_type or "")
    if cls is None:
        known = ", ".join(f"{t} ({f})" for t, f in registered_families().items())
        raise UnsupportedModelError(
            f"no adapter for model_type {model_type!r}{what}; supported: {known}. To add a "
            f"family, subclass interp.adapters.Adapter and decorate it with "
            f"@interp.adapters.register_adapter"
        )
    return cls


def adapter_for(model: nn.Module, processor: Any) -> Adapter:
    """The registered adapter for ``model``, chosen by its config's ``model_type``."""
    cls = adapter_class_for(getattr(model, "config", None), f" ({type(model).__name__})")
    return cls(model, processor)


def find_module(root: nn.Module, suffix: str) -> str:
    """Dotted path of the one module of ``root`` whose name is or ends with ``suffix``."""
    hits = [n for n, _ in root.named_modules() if n == suffix or n.endswith("." + suffix)]
    if len(hits) != 1:
        raise UnsupportedModelError(
            f"expected exactly one module named '*{suffix}' in {type(root).__name__}, "
            f"found {hits or 'none'}; this model's layout differs from its family's adapter"
        )
    return hits[0]


def first_tensor(value: Any) -> torch.Tensor:
    """Layer outputs are tensors (transformers 5) or tuples led by one (4.x)."""
    return value[0] if isinstance(value, (tuple, list)) else value


class Adapter(ABC):
    """Where the sites and image tokens of one model family are.

    Subclasses set ``family`` and ``model_types`` and implement the abstract members.
    """

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    hub_ids: ClassVar[tuple[str, ...]] = ()
    # The transformers auto class that loads this family.
    auto_class: ClassVar[str] = "AutoModelForImageTextToText"
    # Experimental conditions this family supports (see interp.interventions).
    conditions: ClassVar[tuple[str, ...]] = ("baseline", "shuffle", "lower_mask")
    # Whether the model has a projector and a language model (False: a vision encoder).
    has_language_model: ClassVar[bool] = True

    def __init__(self, model: nn.Module, processor: Any) -> None:
        self.model = model
        self.processor = processor

    # ----- structure -------------------------------------------------------------------
    @property
    @abstractmethod
    def n_vision_layers(self) -> int: ...

    @property
    @abstractmethod
    def n_lm_layers(self) -> int: ...

    @property
    @abstractmethod
    def patch_grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid one image is cut into."""

    @property
    @abstractmethod
    def native_image_size(self) -> int:
        """The side in pixels the vision encoder was built for."""

    @abstractmethod
    def module_path(self, site: str) -> str:
        """Dotted path (in ``model.named_modules()``) of the module whose output is ``site``."""

    @abstractmethod
    def attention_path(self, lm_layer: int) -> str:
        """Dotted path of the self-attention module of LM layer ``lm_layer``."""

    @property
    @abstractmethod
    def attention_implementation(self) -> str: ...

    @property
    @abstractmethod
    def vision_prefix_tokens(self) -> int:
        """Non-patch tokens (CLS, registers) the vision layers carry before the patches."""

    # ----- inputs ----------------------------------------------------------------------
    @abstractmethod
    def default_prompt(self, question: str) -> str:
        """The exact text given to the processor for one image and ``question``."""

    @abstractmethod
    def build_inputs(self, images: np.ndarray, prompt: str) -> dict[str, torch.Tensor]:
        """Processor outputs for a batch of uint8 images ``(batch, H, W, 3)``."""

    @abstractmethod
    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, seq)`` bool: every image token, patch-carrying or not."""

    @abstractmethod
    def image_token_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens)`` sequence positions of the patch-carrying image tokens,
        in the order of :meth:`token_grid`."""

    def token_positions(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Positions of the patch tokens in the LLM sequence (None without an LLM)."""
        return self.image_token_positions(inputs["input_ids"])

    @abstractmethod
    def select(self, site: str, value: Any, positions: torch.Tensor | None) -> torch.Tensor:
        """Cut a module output down to the patch tokens: ``(batch, tokens, d)``."""

    # ----- shared behaviour ------------------------------------------------------------
    def sites(self) -> list[str]:
        return all_sites(self.n_vision_layers, self.n_lm_layers, projector=self.has_language_model)

    def check_site(self, name: str) -> str:
        site = parse_site(name)
        if site.name not in self.sites():
            raise SiteError(
                f"unknown site {name!r} for this {self.family} model; valid sites: "
                f"{', '.join(self.sites())}"
            )
        return site.name

    def token_grid(self) -> np.ndarray:
        """``(tokens, 2)`` (row, col) in the patch grid of each captured token."""
        rows, cols = self.patch_grid
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        return np.stack([r.ravel(), c.ravel()], axis=1).astype(np.int32)

    def check_prompt(self, prompt: str) -> None:
        """The prompt must hold the processor's image token exactly once."""
        token = self.processor.image_token
        if prompt.count(token) != 1:
            raise ConfigError(
                f"the prompt must hold the image token {token!r} exactly once, found "
                f"{prompt.count(token)} in {prompt!r}; use adapter.default_prompt(question)"
            )

    def check_image_size(self, size: int) -> None:
        """Refuse sizes whose pixels do not tile the patch grid (labels would be inexact)."""
        rows, _ = self.patch_grid
        if size < rows or size % rows:
            raise ConfigError(
                f"image size {size} px does not tile this model's {rows}x{rows} patch grid "
                f"(native input {self.native_image_size} px); use --image-size "
                f"{self.native_image_size} or another multiple of {rows}"
            )
