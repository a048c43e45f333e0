"""Interventions on the visual tokens, one registered class per kind of condition
(:mod:`interp.conditions`): patch shuffling, attention knockout in a window of LM layers,
token dropping, a site's tokens replaced (their mean over the data set, zeros, or their
reconstruction by a sparse autoencoder), tokens from a partner image at a site.

Each intervention yields :class:`~interp.models.tracing.Action` s that the capture engine runs
inside the same nnsight trace as the recordings, so nothing stays attached afterwards.
Some need more than the batch's processor inputs: the object maps of its images
(:class:`BatchContext`, ``drop:on_object:K``) or the whole data set
(:meth:`Intervention.prepare`, ``mean:SITE``, ``patch:SITE``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from interp.adapters import Adapter
from interp.adapters.base import TokenPositions
from interp.conditions import CONDITIONS, DROP_POLICIES, Condition, parse_condition
from interp.errors import CacheError, ConfigError, InterventionError
from interp.layout import PADDING, box_label_map, image_hw
from interp.models.tracing import Action
from interp.sites import parse_site
from interp.sources import ImageSet

__all__ = [
    "BatchContext",
    "DropTokens",
    "Intervention",
    "MeanAblation",
    "PatchFromPair",
    "SaeReconstruction",
    "SiteReplacement",
    "ZeroAblation",
    "ShufflePatches",
    "LayerWindowMask",
    "LowerLayerMask",
    "CONDITIONS",
    "check_conditions",
    "make_intervention",
    "knockout_mask",
    "prepare",
    "register_intervention",
]

_REGISTRY: dict[str, type[Intervention]] = {}


def register_intervention(cls: type[Intervention]) -> type[Intervention]:
    """Class decorator: make ``cls`` the intervention of conditions of kind ``cls.kind``."""
    _REGISTRY[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class BatchContext:
    """What an intervention may need to know of a batch beyond its processor inputs, in
    the batch's order: ``object_maps``, one ``(H_i, W_i)`` int map per image (object
    index per pixel, -1 background); ``indices``, each image's index in the data set;
    ``prompt``, the batch's prompt (one, or one per image)."""

    object_maps: Sequence[np.ndarray] | None = None
    indices: np.ndarray | None = None
    prompt: str | Sequence[str] | None = None


class Intervention(ABC):
    """Something done to the forward pass, named by its experimental condition."""

    kind: ClassVar[str]  # the condition kind it implements (interp.conditions)

    def prepare(self, loaded: Any, data: ImageSet, prompt: str, batch_size: int = 32) -> None:
        """Fit what the intervention needs from the whole data set ``data`` before any
        batch runs (most kinds need nothing)."""
        return None

    def check(self, adapter: Adapter, sizes: Sequence[tuple[int, int]]) -> None:
        """Refuse, before any work, what this model cannot do or what would be
        meaningless on images of these ``sizes`` (most kinds fit any model)."""
        return None

    @classmethod
    @abstractmethod
    def from_condition(cls, condition: Condition, seed: int) -> Intervention:
        """The intervention a parsed condition names (``seed``: the run's)."""

    @property
    @abstractmethod
    def condition(self) -> str:
        """Its condition name, as the cache and the tables write it."""

    @abstractmethod
    def actions(
        self,
        adapter: Adapter,
        inputs: dict[str, torch.Tensor],
        context: BatchContext | None = None,
    ) -> list[Action]:
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

    def actions(
        self,
        adapter: Adapter,
        inputs: dict[str, torch.Tensor],
        context: BatchContext | None = None,
    ) -> list[Action]:
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


def knockout_mask(
    incoming: torch.Tensor | None, keys: torch.Tensor, queries: torch.Tensor | None = None
) -> torch.Tensor:
    """An attention mask like ``incoming`` in which no query attends to the ``keys``
    ``(batch, seq)`` bool (the image tokens); with ``queries`` ``(batch, seq)`` bool, only
    those queries lose them.

    Each position may still attend to itself, so no row is left empty. ``incoming`` is
    the layer's own mask: None (causal, no padding), boolean (True = attend) or additive
    float (0 = attend); the result has the same kind.
    """
    batch, seq = keys.shape
    device = keys.device
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
    blocked = keys[:, None, None, :] & ~eye  # (batch, 1, q, k)
    if queries is not None:
        blocked = blocked & queries[:, None, :, None]
    allowed = allowed & ~blocked
    if incoming is not None and incoming.dtype != torch.bool:
        return torch.zeros_like(incoming).masked_fill(~allowed, torch.finfo(incoming.dtype).min)
    return allowed


def knockout_action(
    adapter: Adapter,
    layer: int,
    keys: Callable[[], torch.Tensor],
    queries: torch.Tensor | None = None,
) -> Action:
    """The action that makes the attention of LM ``layer`` ignore the keys ``keys()``
    returns (``(batch, seq)`` bool; read when the layer runs, so an earlier edit of the
    same pass may decide them)."""

    def knock(inputs: tuple[tuple, dict]) -> tuple[tuple, dict]:
        args, kwargs = inputs
        if "attention_mask" not in kwargs:
            raise InterventionError(
                "the attention module was not given attention_mask as a keyword; "
                "this family's adapter must provide its own knockout"
            )
        incoming = kwargs["attention_mask"]
        cut = keys()
        device = incoming.device if incoming is not None else cut.device
        chosen = None if queries is None else queries.to(device)
        mask = knockout_mask(incoming, cut.to(device), chosen)
        return args, {**kwargs, "attention_mask": mask}

    return Action(adapter.attention_path(layer), "inputs", edit=knock)


_KNOCKOUT_IMPLEMENTATIONS: tuple[str, ...] = ("eager", "sdpa")


def check_knockout(adapter: Adapter, inputs: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """The batch's image tokens ``(batch, seq)`` bool, once the model is known to take an
    attention knockout (an attention implementation that reads the mask, an LLM)."""
    implementation = adapter.attention_implementation
    if implementation not in _KNOCKOUT_IMPLEMENTATIONS:
        raise InterventionError(
            f"attention knockout needs attn_implementation in {_KNOCKOUT_IMPLEMENTATIONS}, "
            f"this model uses {implementation!r}; load it with attn_implementation='sdpa'"
        )
    if inputs is None or "input_ids" not in inputs:
        raise InterventionError(f"a {adapter.family} encoder has no image tokens to mask")
    return adapter.image_token_mask(inputs["input_ids"])  # (batch, seq)


class AttentionKnockout(Intervention):
    """In some LM layers (:meth:`layers`), no position (or, with ``text_only``, no text
    position) attends to the image tokens (each still attends to itself)."""

    text_only: bool = False

    @abstractmethod
    def layers(self, adapter: Adapter) -> list[int]: ...

    def actions(
        self,
        adapter: Adapter,
        inputs: dict[str, torch.Tensor],
        context: BatchContext | None = None,
    ) -> list[Action]:
        image_keys = check_knockout(adapter, inputs)
        queries = ~image_keys if self.text_only else None
        return [
            knockout_action(adapter, i, lambda: image_keys, queries) for i in self.layers(adapter)
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

    def __init__(self, first: int, last: int, *, text_only: bool = False) -> None:
        if not 0 <= first <= last:
            raise ConfigError(f"mask layers must satisfy 0 <= first <= last, got {first}-{last}")
        self.first, self.last = first, last
        self.text_only = text_only

    @classmethod
    def from_condition(cls, condition: Condition, seed: int) -> LayerWindowMask:
        window, _, text = str(condition.argument).partition(":")
        first, last = (int(v) for v in window.split("-"))
        return cls(first, last, text_only=bool(text))

    @property
    def condition(self) -> str:
        return f"mask:{self.first}-{self.last}" + (":text" if self.text_only else "")

    def layers(self, adapter: Adapter) -> list[int]:
        if self.last >= adapter.n_lm_layers:
            raise InterventionError(
                f"{self.condition} reaches LM layer {self.last}, but this {adapter.family} "
                f"model has layers 0 to {adapter.n_lm_layers - 1}"
            )
        return list(range(self.first, self.last + 1))

    def check(self, adapter: Adapter, sizes: Sequence[tuple[int, int]]) -> None:
        self.layers(adapter)

    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        return {"layers": self.layers(adapter), "text_only": self.text_only}


@register_intervention
class DropTokens(Intervention):
    """Only ``k`` image tokens stay in the LLM's input: ``drop:POLICY:K``.

    The others (patch tokens not chosen, and the image tokens that carry no patch: CLS,
    newlines) are removed: in every LM layer no position attends to them (each still
    attends to itself, and its own hidden states stay in the cache, meaningless), which
    equals running the LLM on the shortened sequence with the kept tokens at their
    original positions (a test checks it). Which ``k`` patch tokens stay:

    - ``random``: one seeded random set of token positions, the same for every image;
    - ``on_object`` / ``off_object``: per image, tokens over an object (over the
      background) first, in a seeded random order, then the others (the batch's
      :class:`BatchContext` gives the object maps);
    - ``norm``: per image, the tokens whose LLM input embedding has the largest norm.

    Padding tokens (over no pixel of the image) are the last choice of every policy but
    ``random``. A layout with fewer than ``k`` patch tokens keeps them all.
    """

    kind = "drop"

    def __init__(self, policy: str, k: int, seed: int = 0) -> None:
        if policy not in DROP_POLICIES:
            raise ConfigError(f"policy must be one of {DROP_POLICIES}, got {policy!r}")
        if k < 1:
            raise ConfigError(f"k (image tokens kept) must be at least 1, got {k}")
        self.policy, self.k, self.seed = policy, k, seed

    @classmethod
    def from_condition(cls, condition: Condition, seed: int) -> DropTokens:
        policy, k = str(condition.argument).split(":")
        return cls(policy, int(k), seed=seed)

    @property
    def condition(self) -> str:
        return f"drop:{self.policy}:{self.k}"

    def check(self, adapter: Adapter, sizes: Sequence[tuple[int, int]]) -> None:
        most = max(len(adapter.token_layout("lm.0", size)) for size in sizes)
        if self.k >= most:
            raise ConfigError(
                f"{self.condition} keeps {self.k} image tokens, but this {adapter.family} "
                f"model gives the images at most {most}: nothing would be dropped and it "
                f"would equal the baseline; choose K below {most}"
            )

    def _priority(self, n_tokens: int, batch: int) -> torch.Tensor:
        """``(batch, n_tokens)`` seeded random priorities in [0, 1)."""
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand(n_tokens, generator=generator).expand(batch, n_tokens)

    def _labels(self, adapter: Adapter, context: BatchContext | None, batch: int) -> torch.Tensor:
        """``(batch, tokens)`` object index under each patch token (-1 background, -2
        padding), from the batch's object maps."""
        if context is None or context.object_maps is None:
            raise InterventionError(
                f"{self.condition} needs the object maps of the batch's images; pass "
                f"context=BatchContext(object_maps=...) (extraction and answer scoring do)"
            )
        rows = []
        for object_map in context.object_maps:
            layout = adapter.token_layout("lm.0", image_hw(object_map.shape))
            rows.append(box_label_map(np.asarray(object_map), layout.boxes)[0])
        if len(rows) != batch:
            raise InterventionError(
                f"{self.condition}: {len(rows)} object maps for a batch of {batch} images"
            )
        return torch.as_tensor(np.stack(rows).astype(np.int64))

    def kept(
        self,
        adapter: Adapter,
        positions: TokenPositions,
        context: BatchContext | None,
        embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(batch, tokens)`` bool: the patch tokens kept (``embeds``: the LLM's input,
        ``(batch, seq, d)``, for ``norm``)."""
        batch, n_tokens = positions.patch.shape
        score = self._priority(n_tokens, batch).clone()  # higher = kept first
        if self.policy in ("on_object", "off_object"):
            labels = self._labels(adapter, context, batch)
            wanted = labels >= 0 if self.policy == "on_object" else labels == -1
            score = score + 2.0 * wanted - 4.0 * (labels == PADDING)
        elif self.policy == "norm":
            assert embeds is not None
            rows = torch.arange(batch, device=embeds.device)[:, None]
            norms = embeds[rows, positions.patch.to(embeds.device)].float().norm(dim=-1)
            score = norms.cpu()
            if context is not None and context.object_maps is not None:
                score = score.masked_fill(self._labels(adapter, context, batch) == PADDING, -1)
        order = score.argsort(dim=1, descending=True, stable=True)
        keep = torch.zeros(batch, n_tokens, dtype=torch.bool)
        keep.scatter_(1, order[:, : self.k], True)
        return keep

    def actions(
        self,
        adapter: Adapter,
        inputs: dict[str, torch.Tensor],
        context: BatchContext | None = None,
    ) -> list[Action]:
        image_keys = check_knockout(adapter, inputs)  # (batch, seq)
        positions = adapter.token_positions(inputs)
        assert positions is not None
        state: dict[str, torch.Tensor] = {}

        def removed(embeds: torch.Tensor | None = None) -> torch.Tensor:
            keep = self.kept(adapter, positions, context, embeds)  # (batch, tokens)
            cut = image_keys.clone()
            rows = torch.arange(len(cut), device=cut.device)[:, None]
            cut[rows, positions.patch.to(cut.device)] = ~keep.to(cut.device)
            return cut  # (batch, seq): image tokens not kept

        actions = []
        if self.policy == "norm":  # decided on the LLM's input, as the pass reaches it

            def look(value: tuple[tuple, dict]) -> tuple[tuple, dict]:
                embeds = value[1].get("inputs_embeds")
                if embeds is None:
                    raise InterventionError(
                        "the language model was not given inputs_embeds as a keyword; "
                        f"{self.condition} cannot rank the image tokens by norm"
                    )
                state["cut"] = removed(embeds)
                return value

            actions.append(Action(adapter.lm_input_path(), "inputs", edit=look))
        else:
            state["cut"] = removed()
        layers = range(adapter.n_lm_layers)
        return actions + [knockout_action(adapter, i, lambda: state["cut"]) for i in layers]

    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": self.policy, "k": self.k, "seed": self.seed}
        if self.policy == "random":
            n = len(adapter.token_layout("lm.0", image_size))
            keep = self._priority(n, 1)[0].argsort(descending=True, stable=True)[: self.k]
            out["kept_tokens"] = sorted(keep.tolist())
        return out


class SiteReplacement(Intervention):
    """Every image token at ``site`` replaced by what :meth:`replaced` makes of the
    site's tokens ``(batch, tokens, d)``; the condition is ``<kind>:SITE``."""

    def __init__(self, site: str) -> None:
        self.site = parse_site(site).name

    def check(self, adapter: Adapter, sizes: Sequence[tuple[int, int]]) -> None:
        adapter.check_site(self.site)

    @classmethod
    def from_condition(cls, condition: Condition, seed: int) -> SiteReplacement:
        return cls(str(condition.argument))

    @property
    def condition(self) -> str:
        return f"{self.kind}:{self.site}"

    @abstractmethod
    def replaced(self, site: str, found: torch.Tensor) -> torch.Tensor:
        """The tokens that take the place of ``found`` ``(batch, tokens, d)``."""

    def actions(
        self,
        adapter: Adapter,
        inputs: dict[str, torch.Tensor],
        context: BatchContext | None = None,
    ) -> list[Action]:
        site = adapter.check_site(self.site)
        positions = adapter.token_positions(inputs)

        def replace(value: Any) -> Any:
            found = adapter.select(site, value, positions)  # (batch, tokens, d)
            return adapter.write_tokens(site, value, positions, self.replaced(site, found))

        return [Action(adapter.module_path(site), "output", edit=replace)]

    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        return {"site": self.site}


@register_intervention
class MeanAblation(SiteReplacement):
    """Every image token at ``site`` replaced by that token position's mean over the data
    set: ``mean:SITE``. :meth:`prepare` computes the means (a baseline pass over the data
    set's images at ``site``); every image must give the site the same number of tokens.
    """

    kind = "mean"

    def __init__(self, site: str, mean: torch.Tensor | None = None) -> None:
        super().__init__(site)
        self.mean = mean  # (tokens, d)
        self.n_images = 0

    def prepare(self, loaded: Any, data: ImageSet, prompt: str, batch_size: int = 32) -> None:
        from interp.models.tracing import capture_tokens

        total, count = None, 0
        for images in data.batches(batch_size):
            acts = capture_tokens(loaded, images, [self.site], prompt=prompt, extra=False)
            found = acts.acts[self.site].double()  # (batch, tokens, d)
            if total is not None and found.shape[1:] != total.shape:
                raise InterventionError(
                    f"{self.condition} needs every image to give {self.site} the same number "
                    f"of tokens, found {total.shape[0]} and {found.shape[1]}; use images of "
                    f"one size"
                )
            total = found.sum(0) if total is None else total + found.sum(0)
            count += len(found)
        if total is None:
            raise InterventionError(f"{self.condition} needs at least one image to average")
        self.mean, self.n_images = (total / count).float(), count

    def replaced(self, site: str, found: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            raise InterventionError(
                f"{self.condition} has no means yet; call prepare(loaded, data, prompt) "
                f"with the data set first"
            )
        if found.shape[1:] != self.mean.shape:
            raise InterventionError(
                f"{self.condition}: this batch gives {site} {tuple(found.shape[1:])} "
                f"tokens x width, the means were taken over {tuple(self.mean.shape)}"
            )
        return self.mean.to(found.device, found.dtype).expand_as(found)

    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        return {"site": self.site, "n_images": self.n_images}


@register_intervention
class ZeroAblation(SiteReplacement):
    """Every image token at ``site`` set to zero: ``zero:SITE``."""

    kind = "zero"

    def replaced(self, site: str, found: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(found)


@register_intervention
class SaeReconstruction(SiteReplacement):
    """Every image token at ``site`` replaced by its reconstruction by a sparse
    autoencoder (the folder ``path``, SAELens's files): ``sae:SITE:PATH``. What the model
    does from ``site`` on then rests on what the SAE keeps; its answers beside the
    baseline's, ``mean:SITE``'s and the zero-ablation's say how much that is."""

    kind = "sae"

    def __init__(self, site: str, path: str) -> None:
        super().__init__(site)
        self.path = str(path)
        self._sae: Any = None

    @property
    def sae(self) -> Any:
        """The autoencoder, loaded on first use."""
        if self._sae is None:
            from interp.models.sae import load_sae

            try:
                self._sae = load_sae(self.path)
            except CacheError as err:
                raise InterventionError(f"{self.condition}: {err}") from err
        return self._sae

    def check(self, adapter: Adapter, sizes: Sequence[tuple[int, int]]) -> None:
        super().check(adapter, sizes)
        hook = self.sae.metadata.get("hook_name")
        if hook not in (None, self.site):
            raise InterventionError(
                f"{self.condition}: the SAE was trained at {hook!r}, not {self.site!r}; "
                f"name its own site"
            )

    @classmethod
    def from_condition(cls, condition: Condition, seed: int) -> SaeReconstruction:
        site, _, path = str(condition.argument).partition(":")
        return cls(site, path)

    @property
    def condition(self) -> str:
        return f"sae:{self.site}:{self.path}"

    def replaced(self, site: str, found: torch.Tensor) -> torch.Tensor:
        sae = self.sae
        if found.shape[-1] != sae.d_in:
            raise InterventionError(
                f"{self.condition}: the SAE reads tokens of width {sae.d_in}, {site} of this "
                f"model has width {found.shape[-1]}; train one on this model's cache (interp "
                f"sae train)"
            )
        with torch.no_grad():
            model = sae.to(found.device)
            flat = found.reshape(-1, found.shape[-1]).float()  # (batch * tokens, d)
            return model(flat).reshape(found.shape).to(found.dtype)

    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        return {
            "site": self.site,
            "path": self.path,
            "architecture": self.sae.architecture,
            "d_sae": self.sae.d_sae,
        }


@register_intervention
class PatchFromPair(Intervention):
    """Every image's patch tokens at ``site`` replaced by those of its partner in the
    data set (the partner's own baseline activations): ``patch:SITE``. Partners are a
    seeded random pairing of the images of each size (a derangement: no image is its own
    partner where its size has two or more), recorded in the cache. What the model does
    from ``site`` on then comes from the partner's image there, and from the image itself
    wherever the text read it below ``site``; the activation patching of one clean /
    corrupted pair is :mod:`interp.experiments.patching`."""

    kind = "patch"

    def __init__(self, site: str, seed: int = 0) -> None:
        self.site = parse_site(site).name
        self.seed = seed
        self.partners: np.ndarray | None = None  # (n,) the partner of each image
        self._source: tuple[Any, ImageSet, str] | None = None

    def check(self, adapter: Adapter, sizes: Sequence[tuple[int, int]]) -> None:
        adapter.check_site(self.site)

    @classmethod
    def from_condition(cls, condition: Condition, seed: int) -> PatchFromPair:
        return cls(str(condition.argument), seed=seed)

    @property
    def condition(self) -> str:
        return f"patch:{self.site}"

    def prepare(self, loaded: Any, data: ImageSet, prompt: str, batch_size: int = 32) -> None:
        rng = np.random.default_rng([self.seed, 7])
        partners = np.arange(len(data))
        sizes = data.sizes
        for size in data.distinct_sizes:
            group = np.flatnonzero((sizes == np.asarray(size)).all(1))
            order = rng.permutation(group)
            partners[order] = np.roll(order, -1)  # each takes the next one's tokens
        self.partners = partners
        self._source = (loaded, data, prompt)

    def actions(
        self,
        adapter: Adapter,
        inputs: dict[str, torch.Tensor],
        context: BatchContext | None = None,
    ) -> list[Action]:
        from interp.models.tracing import capture_tokens

        if self.partners is None or self._source is None:
            raise InterventionError(
                f"{self.condition} has no pairing yet; call prepare(loaded, data, prompt) "
                f"with the data set first"
            )
        if context is None or context.indices is None:
            raise InterventionError(
                f"{self.condition} needs each image's index in the data set; pass "
                f"context=BatchContext(indices=...) (extraction and answer scoring do)"
            )
        loaded, data, prompt = self._source
        site = adapter.check_site(self.site)
        partners = self.partners[np.asarray(context.indices)]
        prompt = context.prompt if context.prompt is not None else prompt
        donated = capture_tokens(loaded, data.crops(partners), [site], prompt=prompt, extra=False)
        tokens = donated.acts[site]  # (batch, tokens, d)
        positions = adapter.token_positions(inputs)

        def replace(value: Any) -> Any:
            return adapter.write_tokens(site, value, positions, tokens)

        return [Action(adapter.module_path(site), "output", edit=replace)]

    def describe(self, adapter: Adapter, image_size: int | tuple[int, int]) -> dict[str, Any]:
        partners = [] if self.partners is None else self.partners.tolist()
        return {"site": self.site, "seed": self.seed, "partners": partners}


def prepare(
    interventions: dict[str, Intervention | None],
    loaded: Any,
    data: ImageSet,
    prompt: str,
    batch_size: int,
) -> None:
    """Let each intervention fit what it needs from the whole set (``mean:SITE``,
    ``patch:SITE``); None stands for the baseline."""
    for intervention in interventions.values():
        if intervention is not None:
            intervention.prepare(loaded, data, prompt, batch_size)


def check_conditions(
    conditions: Sequence[str], adapter: Adapter, sizes: Sequence[tuple[int, int]]
) -> list[str]:
    """The canonical names of ``conditions``, each checked against the model and the
    images' ``sizes`` before any work: a kind the family cannot run, a layer window
    beyond its depth, a site it lacks, a drop that would keep every token."""
    names = [parse_condition(c).name for c in conditions]
    unsupported = [c for c in names if parse_condition(c).kind not in adapter.condition_kinds]
    if unsupported:
        raise ConfigError(
            f"a {adapter.family} model supports the conditions {list(adapter.condition_kinds)}"
            f", not {unsupported}; leave conditions out to run the ones it runs by default, "
            f"{list(adapter.conditions)}"
        )
    for name in names:
        intervention = make_intervention(name)
        if intervention is not None:
            intervention.check(adapter, sizes)
    return names


def make_intervention(condition: str, *, seed: int = 0) -> Intervention | None:
    """The intervention of a condition name (None for ``baseline``), through the registry
    of kinds; ``seed`` seeds those whose name does not."""
    parsed = parse_condition(condition)
    if parsed.kind == "baseline":
        return None
    return _REGISTRY[parsed.kind].from_condition(parsed, seed)
