"""The adapter contract and registry: one small adapter per model family.

An adapter resolves, from the model's own module tree and config, where each canonical
site lives, where the image tokens sit in the LLM sequence and which patch each one
carries. Everything downstream (capture, interventions, caches) talks to the adapter,
never to model-specific attribute names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from interp.errors import ConfigError, SiteError, UnsupportedModelError
from interp.layout import ImageSize, TokenLayout, image_hw
from interp.models.geometry import View, single_view
from interp.sites import all_sites, parse_site

__all__ = [
    "Adapter",
    "TokenPositions",
    "adapter_class_for",
    "adapter_for",
    "find_first_module",
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


def find_first_module(root: nn.Module, suffixes: tuple[str, ...]) -> str:
    """Dotted path of the module named by the first of ``suffixes`` that names exactly one
    (a family's tree differs between transformers releases)."""
    names = [n for n, _ in root.named_modules()]
    for suffix in suffixes:
        hits = [n for n in names if n == suffix or n.endswith("." + suffix)]
        if len(hits) == 1:
            return hits[0]
    raise UnsupportedModelError(
        f"expected exactly one module named '*{suffixes[0]}'"
        + (f" (or {', '.join(suffixes[1:])})" if len(suffixes) > 1 else "")
        + f" in {type(root).__name__}; this model's layout differs from its family's adapter"
    )


def first_tensor(value: Any) -> torch.Tensor:
    """Layer outputs are tensors (transformers 5) or tuples led by one (4.x)."""
    return value[0] if isinstance(value, (tuple, list)) else value


@dataclass(frozen=True)
class TokenPositions:
    """Where one batch's image tokens sit in the LLM sequence.

    ``patch`` ``(batch, tokens)``: the patch-carrying tokens, in the order of the ``lm.*``
    layout; ``extra`` ``(batch, k)``: the image tokens that carry no patch (CLS, newline),
    in the order of that layout's ``extra`` kinds. ``vision_order``, where a family's vision
    blocks work on a permuted sequence (Qwen2.5-VL's attention windows): the indices that
    put their rows back in the processor's order.
    """

    patch: torch.Tensor
    extra: torch.Tensor
    vision_order: torch.Tensor | None = None


class Adapter(ABC):
    """Where the sites and image tokens of one model family are.

    Subclasses set ``family`` and ``model_types`` and implement the abstract members.
    """

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    hub_ids: ClassVar[tuple[str, ...]] = ()
    # The transformers auto class that loads this family.
    auto_class: ClassVar[str] = "AutoModelForImageTextToText"
    # The transformers auto class that loads its processor (an encoder needs only the
    # image processor, even where its checkpoint also has a tokenizer: CLIPModel).
    processor_class: ClassVar[str] = "AutoProcessor"
    # The conditions a run of this family uses when none are named, and the kinds of
    # condition it supports (interp.conditions, interp.experiments.interventions).
    conditions: ClassVar[tuple[str, ...]] = ("baseline", "shuffle", "lower_mask")
    condition_kinds: ClassVar[tuple[str, ...]] = (
        "baseline",
        "shuffle",
        "lower_mask",
        "mask",
        "drop",
        "mean",
        "zero",
        "patch",
        "sae",
    )
    # Whether the model has a projector and a language model (False: a vision encoder).
    has_language_model: ClassVar[bool] = True
    # How a cache stores this family's activations unless told otherwise: float16 halves
    # the disk; a family whose activations exceed float16's range (|x| > 65504) says
    # float32.
    store_dtype: ClassVar[str] = "float16"
    # Whether every image, of any size, becomes model inputs of one shape (one view
    # resized or cropped to the native size), so images of mixed sizes share a batch.
    one_input_shape: ClassVar[bool] = True
    # Whether the vision transformer (above the vision.* layers) takes the processor's
    # pixel_values alone, so it embeds images on its own (interp.experiments.embeddings).
    pixel_tower: ClassVar[bool] = False

    def __init__(self, model: nn.Module, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self.image_processor = getattr(processor, "image_processor", processor)

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
    def batch_key(self, size: ImageSize) -> ImageSize | None:
        """Images whose keys are equal share a forward pass. A family whose model input
        has one shape whatever the image's (one view, resized and cropped to the native
        size) takes images of any sizes together (None); one whose token count follows
        the image (tiles, canvases, dynamic resolution) takes one size at a time."""
        return None if self.one_input_shape else tuple(size)

    def batch_groups(self, sizes: np.ndarray | Sequence[Sequence[int]]) -> list[list[int]]:
        """Indices into ``sizes`` ``(n, 2)`` (height, width), grouped into the forward
        passes :meth:`batch_key` allows, in order of first appearance."""
        groups: dict = {}
        for i, (height, width) in enumerate(np.asarray(sizes).tolist()):
            groups.setdefault(self.batch_key((int(height), int(width))), []).append(i)
        return list(groups.values())

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every processor call (they override its saved settings)."""
        return {}

    @abstractmethod
    def default_prompt(self, question: str) -> str:
        """The exact text given to the processor for one image and ``question``."""

    @abstractmethod
    def build_inputs(
        self, images: np.ndarray, prompt: str | Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Processor outputs for a batch of uint8 images ``(batch, H, W, 3)`` and one
        prompt for all, or one per image (padded)."""

    @abstractmethod
    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, seq)`` bool: every image token, patch-carrying or not."""

    @abstractmethod
    def image_token_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens)`` sequence positions of the patch-carrying image tokens,
        in the order of the ``lm.*`` :meth:`token_layout`."""

    def token_positions(self, inputs: dict[str, torch.Tensor]) -> TokenPositions | None:
        """Positions of the image tokens in the LLM sequence (None without an LLM)."""
        patch = self.image_token_positions(inputs["input_ids"])
        return TokenPositions(patch, patch[:, :0])

    @abstractmethod
    def select(self, site: str, value: Any, positions: TokenPositions | None) -> torch.Tensor:
        """Cut a module output down to the patch tokens: ``(batch, tokens, d)``, in the
        order of :meth:`token_layout`."""

    def select_extra(
        self, site: str, value: Any, positions: TokenPositions | None
    ) -> torch.Tensor | None:
        """The tokens of a module output that carry no patch, ``(batch, k, d)`` in the
        order of the layout's ``extra`` kinds; None where there are none."""
        hidden = first_tensor(value)
        stage = parse_site(site).stage
        if stage == "vision":  # (batch, prefix + patches, d): CLS / registers lead
            prefix = len(self.vision_extra)
            return hidden[:, :prefix] if prefix else None
        if positions is None or positions.extra.shape[1] == 0:
            return None
        if stage == "projector":
            raise NotImplementedError(f"{type(self).__name__} must cut projector extras")
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        return hidden[rows, positions.extra.to(hidden.device)]  # (batch, k, d)

    def write_tokens(
        self, site: str, value: Any, positions: TokenPositions | None, tokens: torch.Tensor
    ) -> Any:
        """``value`` (a module output of ``site``) with the patch tokens :meth:`select`
        cuts from it replaced by ``tokens`` ``(batch, tokens, d)``; the rest unchanged.

        Every family's :meth:`select` is a gather (slices, reshapes, index lists), so
        selecting from a tensor of flat element indices says where each selected value
        lives: one inverse for every family."""
        hidden = first_tensor(value)
        index = torch.arange(hidden.numel(), device=hidden.device).reshape(hidden.shape)
        where = self.select(site, index, positions).reshape(-1)  # flat element indices
        if where.numel() != tokens.numel():
            raise ConfigError(
                f"tokens for {site} must have the shape select gives, "
                f"{tuple(self.select(site, index, positions).shape)}, got {tuple(tokens.shape)}"
            )
        out = hidden.reshape(-1).clone()
        out[where] = tokens.reshape(-1).to(out.device, out.dtype)
        out = out.reshape(hidden.shape)
        if isinstance(value, tuple):
            return (out, *value[1:])
        if isinstance(value, list):
            return [out, *value[1:]]
        return out

    # ----- token layout ----------------------------------------------------------------
    @property
    def vision_extra(self) -> tuple[str, ...]:
        """Kinds of the non-patch tokens leading the vision layers' outputs."""
        prefix = self.vision_prefix_tokens
        return ("cls",) + ("register",) * (prefix - 1) if prefix else ()

    def token_layout(self, site: str, image_size: int | tuple[int, int]) -> TokenLayout:
        """Where the stored tokens of ``site`` come from, for an image of ``image_size``
        (a side, or ``(height, width)``): each token's box in the original image's pixels,
        through the processor's resize, crop and padding. The default: one patch grid over
        the one model input (:meth:`input_view`) at every site."""
        rows, cols = self.patch_grid
        stage = parse_site(self.check_site(site)).stage
        extra = self.vision_extra if stage == "vision" else self.image_extra
        size = image_hw(image_size)
        region = self.input_view(size).region
        return TokenLayout.regular(rows, cols, size, region=region, extra=extra)

    def input_view(self, size: ImageSize) -> View:
        """The part of an image of ``size`` ``(height, width)`` that its one model input
        shows, from the processor's own settings (resize, pad to square, centre crop) and
        :meth:`processor_kwargs`."""
        return single_view(self.image_processor, self.processor_kwargs(), size)

    @property
    def image_extra(self) -> tuple[str, ...]:
        """Kinds of the image tokens in the LLM sequence that carry no patch."""
        return ()

    def lm_input_path(self) -> str:
        """Dotted path of the language model whose ``inputs_embeds`` hold the image tokens."""
        raise UnsupportedModelError(f"a {self.family} model has no language model")

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

    @property
    def prompt_image_token(self) -> str:
        """The text that stands for the image in a prompt (the processor expands it)."""
        return str(self.processor.image_token)

    def check_prompt(self, prompt: str) -> None:
        """The prompt must hold the processor's image token exactly once."""
        token = self.prompt_image_token
        if prompt.count(token) != 1:
            raise ConfigError(
                f"the prompt must hold the image token {token!r} exactly once, found "
                f"{prompt.count(token)} in {prompt!r}; use adapter.default_prompt(question)"
            )

    def check_image_size(self, size: int) -> None:
        """Refuse stimulus sides whose pixels do not tile the patch grid (the synthetic
        stimuli are drawn so that every patch is whole stimulus pixels; images of any
        size from data are placed by the processor's geometry instead)."""
        rows, _ = self.patch_grid
        if size < rows or size % rows:
            raise ConfigError(
                f"image size {size} px does not tile this model's {rows}x{rows} patch grid "
                f"(native input {self.native_image_size} px); use image_size="
                f"{self.native_image_size} or another multiple of {rows}"
            )
