"""Which patches and which depths carry an answer, by gradients and by noise.

- :func:`integrated_gradients`: the answer's logit attributed to each image token of a
  site (the projector's output first: the image as the LM sees it) or to the pixels,
  summed per patch, along a straight path from a stated baseline image (black, the image's
  mean colour, or the image blurred) in ``steps`` midpoint steps. Its completeness check
  (the attributions sum to the logit's change from the baseline to the image) is
  returned with every run.
- :func:`causal_tracing`: the image tokens entering the LM (the projector's output)
  noised with Gaussian noise of ``noise`` standard deviations of those tokens, then one
  site x token window restored from the clean run at a time; the share of the clean
  answer's probability that comes back.

Attribution patching and exact patching of a clean / corrupted pair are in
:mod:`interp.experiments.patching`; all of them share :data:`ATTRIBUTION_COLUMNS`.
Gradients are taken with plain forward hooks, removed on exit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.adapters import Adapter
from interp.errors import ConfigError
from interp.layout import TokenLayout, image_hw
from interp.models.loading import LoadedModel
from interp.models.tracing import Action, capture_tokens, check_images
from interp.sites import parse_site, sort_sites

__all__ = [
    "ATTRIBUTION_COLUMNS",
    "BASELINES",
    "Completeness",
    "baseline_image",
    "causal_tracing",
    "integrated_gradients",
]

BASELINES = ("black", "mean", "blur")
ATTRIBUTION_COLUMNS: tuple[str, ...] = (
    "pair", "method", "site", "token", "crop", "row", "col", "y0", "x0", "y1", "x1",
    "value", "output", "clean", "corrupted",
)  # fmt: skip
# value: the token's attribution (integrated gradients: logit units; tracing and
# patching: the share restored); output: what the method's forward pass gave for that
# token (tracing: the probability restored; patching: the margin), clean / corrupted: the
# two ends (integrated gradients: the logit at the image and at the baseline).


def baseline_image(image: np.ndarray, kind: str, *, blur_radius: float | None = None) -> np.ndarray:
    """The baseline of integrated gradients for ``image`` ``(H, W, 3)`` uint8: ``black``
    (zeros), ``mean`` (every pixel the image's mean colour) or ``blur`` (a Gaussian blur of
    radius ``blur_radius``, default a tenth of the shorter side)."""
    from PIL import Image, ImageFilter

    if kind == "black":
        return np.zeros_like(image)
    if kind == "mean":
        colour = image.reshape(-1, 3).mean(0).round().astype(np.uint8)
        return np.broadcast_to(colour, image.shape).copy()
    if kind == "blur":
        radius = blur_radius if blur_radius is not None else min(image.shape[:2]) / 10
        blurred = Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius))
        return np.asarray(blurred, dtype=np.uint8)
    raise ConfigError(f"baseline must be one of {', '.join(BASELINES)}, got {kind!r}")


@dataclass(frozen=True)
class Completeness:
    """Integrated gradients' check: the attributions' ``total`` against ``difference``,
    the answer's logit at the image (``at_image``) minus at the baseline
    (``at_baseline``); ``relative_error`` = |total - difference| / |difference|."""

    site: str
    total: float
    at_image: float
    at_baseline: float
    steps: int

    @property
    def difference(self) -> float:
        return self.at_image - self.at_baseline

    @property
    def relative_error(self) -> float:
        span = abs(self.difference)
        return abs(self.total - self.difference) / span if span else float("nan")


def _answer_id(loaded: LoadedModel, answer: str) -> int:
    from interp.experiments.answers import answer_token_ids

    return answer_token_ids(loaded.processor.tokenizer, [answer])[answer]


def _rows(
    name: str,
    method: str,
    site: str,
    layout: TokenLayout,
    tokens: Sequence[int],
    values: Sequence[float],
    outputs: Sequence[float],
    clean: float,
    corrupted: float,
) -> list[dict]:
    rows = []
    for t, value, output in zip(tokens, values, outputs, strict=True):
        y0, x0, y1, x1 = (float(v) for v in layout.boxes[t])
        rows.append(
            {
                "pair": name, "method": method, "site": site, "token": int(t),
                "crop": int(layout.crops[t]), "row": int(layout.grid[t, 0]),
                "col": int(layout.grid[t, 1]), "y0": y0, "x0": x0, "y1": y1, "x1": x1,
                "value": float(value), "output": float(output), "clean": clean,
                "corrupted": corrupted,
            }
        )  # fmt: skip
    return rows


@contextmanager
def _replaced_tokens(
    loaded: LoadedModel, site: str, positions: Any, tokens: torch.Tensor
) -> Iterator[None]:
    """A forward hook on ``site``'s module writing ``tokens`` ``(batch, tokens, d)`` over
    its patch tokens (differentiably); removed on exit."""
    adapter = loaded.adapter
    module = loaded.model.get_submodule(adapter.module_path(site))

    def write(_module, _args, output):
        return adapter.write_tokens(site, output, positions, tokens)

    handle = module.register_forward_hook(write)
    try:
        yield
    finally:
        handle.remove()


def _path_integral(
    loaded: LoadedModel,
    image: np.ndarray,
    prompt: str,
    x: torch.Tensor,
    b: torch.Tensor,
    steps: int,
    batch_size: int,
    logits_of: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, float, float]:
    """The straight path from ``b`` to ``x`` (same shape): the answer's logit
    ``logits_of(inputs, path)`` ``(chunk,)`` for ``chunk`` copies of ``image``'s inputs
    and points on the path ``(chunk, *x.shape)``, differentiated at ``steps`` midpoints,
    ``batch_size`` per pass. Returns the integrated gradients ``(x - b) * mean gradient``
    (float32, ``x``'s shape), and the logit at ``b`` and at ``x`` (the two ends, evaluated
    in the same passes)."""
    adapter = loaded.adapter
    alphas = torch.cat([(torch.arange(steps) + 0.5) / steps, torch.tensor([0.0, 1.0])])
    total = torch.zeros_like(x, dtype=torch.float32)  # summed gradients
    ends: list[float] = []
    for start in range(0, len(alphas), batch_size):
        chunk = alphas[start : start + batch_size]
        copies = np.repeat(image[None], len(chunk), 0)
        inputs = loaded.move_inputs(adapter.build_inputs(copies, prompt))
        scale = chunk.to(x.device, x.dtype).reshape(-1, *([1] * x.ndim))
        path = (b + scale * (x - b)).detach().requires_grad_(True)  # (chunk, *x.shape)
        with torch.enable_grad():
            logits = logits_of(inputs, path)  # (chunk,)
            (grad,) = torch.autograd.grad(logits.sum(), [path])
        inner = (chunk > 0) & (chunk < 1)  # the Riemann points, not the two ends
        total += grad[inner.to(grad.device)].float().sum(0)
        ends += logits[~inner.to(logits.device)].detach().float().tolist()
    at_baseline, at_x = ends
    return (x - b).float() * total / steps, at_baseline, at_x


def integrated_gradients(
    loaded: LoadedModel,
    image: np.ndarray,
    question: str,
    answer: str,
    *,
    site: str = "projector",
    baseline: str = "black",
    steps: int = 32,
    batch_size: int = 16,
    name: str = "image",
    blur_radius: float | None = None,
) -> tuple[pd.DataFrame, Completeness]:
    """Integrated gradients of the logit of ``answer`` (its first token) after
    ``question`` about ``image`` ``(H, W, 3)`` uint8, to each image token of ``site`` (its
    tokens interpolated from the baseline image's to the image's), or with ``site``
    ``"pixels"`` to the model's input pixels, summed over channels and over each patch of
    the vision grid (rows at site ``vision.0``). Midpoint Riemann sum of ``steps`` steps,
    ``batch_size`` of them per forward pass. Returns the rows (:data:`ATTRIBUTION_COLUMNS`,
    ``method`` ``integrated_gradients``) and the completeness check."""
    check_images(image[None])
    adapter = loaded.adapter
    if not adapter.has_language_model:
        raise ConfigError(f"a {adapter.family} encoder has no answer's logit to attribute")
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    answer_id = _answer_id(loaded, answer)
    prompt = adapter.default_prompt(question)
    base = baseline_image(image, baseline, blur_radius=blur_radius)
    if site == "pixels":
        return _pixel_gradients(loaded, image, base, prompt, answer_id, steps, batch_size, name)
    site = adapter.check_site(site)
    at_image = capture_tokens(loaded, image[None], [site], prompt=prompt).acts[site][0]
    at_base = capture_tokens(loaded, base[None], [site], prompt=prompt).acts[site][0]
    parameter = next(loaded.model.parameters())
    x = at_image.to(parameter.device, parameter.dtype)  # (tokens, d)
    b = at_base.to(parameter.device, parameter.dtype)

    def through_site(inputs: dict[str, torch.Tensor], path: torch.Tensor) -> torch.Tensor:
        positions = adapter.token_positions(inputs)  # path: (chunk, tokens, d)
        with _replaced_tokens(loaded, site, positions, path):
            return _last_logits(loaded, inputs)[:, answer_id]

    found, at_baseline, at_x = _path_integral(
        loaded, image, prompt, x, b, steps, batch_size, through_site
    )
    attribution = found.sum(-1).cpu().numpy()  # (tokens,)
    layout = adapter.token_layout(site, image_hw(image.shape[:2]))
    rows = _rows(name, "integrated_gradients", site, layout, range(len(attribution)),
                 attribution, [np.nan] * len(attribution), at_x, at_baseline)  # fmt: skip
    check = Completeness(site, float(attribution.sum()), at_x, at_baseline, steps)
    return pd.DataFrame(rows, columns=list(ATTRIBUTION_COLUMNS)), check


def _last_logits(loaded: LoadedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(batch, vocab)`` logits after each prompt (one prompt, no padding: the last
    position), with the graph."""
    return loaded.model(**inputs).logits[:, -1].float()


def _pixel_gradients(
    loaded: LoadedModel,
    image: np.ndarray,
    base: np.ndarray,
    prompt: str,
    answer_id: int,
    steps: int,
    batch_size: int,
    name: str,
) -> tuple[pd.DataFrame, Completeness]:
    """Integrated gradients to the processor's pixels ``(3, H, W)``, summed per patch of
    the one regular grid of site ``vision.0`` (a family whose model input is one image)."""
    adapter = loaded.adapter
    layout = adapter.token_layout("vision.0", image_hw(image.shape[:2]))
    x = loaded.move_inputs(adapter.build_inputs(image[None], prompt))["pixel_values"]
    b = loaded.move_inputs(adapter.build_inputs(base[None], prompt))["pixel_values"]
    rows_, cols_ = int(layout.grid[:, 0].max()) + 1, int(layout.grid[:, 1].max()) + 1
    if (
        x.ndim != 4
        or (layout.crops != 0).any()
        or len(layout) != rows_ * cols_
        or (x.shape[-2] % rows_ or x.shape[-1] % cols_)
    ):
        raise ConfigError(
            f"integrated gradients to the pixels need one image in, cut into one grid of "
            f"patches; a {adapter.family} model takes {tuple(x.shape)} pixel values "
            f"(crops, tiles or flattened patches): attribute a site's tokens instead "
            f"(site='projector')"
        )
    x, b = x[0], b[0]  # (3, H, W)

    def through_pixels(inputs: dict[str, torch.Tensor], path: torch.Tensor) -> torch.Tensor:
        return _last_logits(loaded, {**inputs, "pixel_values": path})[:, answer_id]

    found, at_baseline, at_x = _path_integral(
        loaded, image, prompt, x, b, steps, batch_size, through_pixels
    )
    per_pixel = found.sum(0).cpu()  # (H, W)
    height, width = per_pixel.shape
    per_patch = per_pixel.reshape(rows_, height // rows_, cols_, width // cols_).sum((1, 3))
    attribution = per_patch[layout.grid[:, 0], layout.grid[:, 1]].numpy()  # (tokens,)
    rows = _rows(name, "integrated_gradients", "pixels", layout, range(len(attribution)),
                 attribution, [np.nan] * len(attribution), at_x, at_baseline)  # fmt: skip
    check = Completeness("pixels", float(per_pixel.sum()), at_x, at_baseline, steps)
    return pd.DataFrame(rows, columns=list(ATTRIBUTION_COLUMNS)), check


class _NoisedAndRestored:
    """The image tokens entering the LM plus ``noise`` ``(tokens, d)``; then, at
    ``site``, the tokens ``chosen`` ``(batch, tokens)`` take the clean run's ``source``
    ``(tokens, d)`` (site ``projector``: after the noise, so restoring removes it)."""

    def __init__(self, noise: torch.Tensor, site: str | None, source: Any, chosen: Any) -> None:
        self.noise, self.site, self.source, self.chosen = noise, site, source, chosen

    def actions(
        self, adapter: Adapter, inputs: dict[str, torch.Tensor], context: Any = None
    ) -> list[Action]:
        from interp.experiments.patching import PatchTokens

        positions = adapter.token_positions(inputs)

        def noised(value: Any) -> Any:
            found = adapter.select("projector", value, positions)  # (batch, tokens, d)
            noise = self.noise.to(found.device, found.dtype)[None]
            return adapter.write_tokens("projector", value, positions, found + noise)

        actions = [Action(adapter.module_path("projector"), "output", edit=noised)]
        if self.site is not None:
            restore = PatchTokens(self.site, self.source, self.chosen)
            actions += restore.actions(adapter, inputs, context)
        return actions


def _windows(layout: TokenLayout, window: int) -> list[np.ndarray]:
    """Each token's window: the tokens of its crop within ``window // 2`` rows and
    columns of it on the patch grid (``window`` 1: the token alone)."""
    half = window // 2
    out = []
    for t in range(len(layout)):
        same = layout.crops == layout.crops[t]
        near = (np.abs(layout.grid - layout.grid[t]) <= half).all(1)
        out.append(np.flatnonzero(same & near))
    return out


def causal_tracing(
    loaded: LoadedModel,
    image: np.ndarray,
    question: str,
    answer: str,
    sites: Sequence[str] | None = None,
    *,
    noise: float = 3.0,
    samples: int = 3,
    window: int = 1,
    seed: int = 0,
    batch_size: int = 64,
    name: str = "image",
) -> pd.DataFrame:
    """Causal tracing on the patch grid: the image tokens entering the LM (the
    projector's output) get Gaussian noise of ``noise`` times the standard deviation of
    those tokens' values (this image's; ``samples`` seeded draws); then, for each of
    ``sites`` (default the projector and every LM layer) and each token, the clean run's
    tokens in the token's ``window`` (``window`` x ``window`` cells of its crop's grid)
    are restored. ``value``: the share of the clean answer's probability brought back,
    ``(restored - noised) / (clean - noised)``, averaged over the draws' probabilities;
    ``output`` the restored probability, ``clean`` and ``corrupted`` (noised) its ends."""
    check_images(image[None])
    adapter = loaded.adapter
    if not adapter.has_language_model:
        raise ConfigError(f"a {adapter.family} encoder gives no answer to trace")
    if noise < 0 or samples < 1 or window < 1:
        raise ConfigError(
            f"noise must be >= 0, samples and window >= 1; got {noise}, {samples}, {window}"
        )
    names = sort_sites([adapter.check_site(s) for s in sites or ["projector", *_lm_sites(adapter)]])
    early = [s for s in names if parse_site(s).stage == "vision"]
    if early:
        raise ConfigError(
            f"causal tracing noises the projector's output, so restoring {early} (before "
            f"it) cannot undo it; trace the projector and LM layers"
        )
    answer_id = _answer_id(loaded, answer)
    prompt = adapter.default_prompt(question)
    clean = capture_tokens(loaded, image[None], list(dict.fromkeys(["projector", *names])),
                           prompt=prompt, logits=True)  # fmt: skip
    p_clean = float(torch.softmax(clean.logits.double(), -1)[0, answer_id])
    embeddings = clean.acts["projector"][0]  # (tokens, d)
    scale = noise * float(embeddings.float().std())
    draws = [
        torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(seed + k)) * scale
        for k in range(samples)
    ]  # each (tokens, d)

    def probability(intervention: Any, copies: int) -> np.ndarray:
        found = capture_tokens(loaded, np.repeat(image[None], copies, 0), [], prompt=prompt,
                               intervention=intervention, logits=True).logits  # fmt: skip
        return torch.softmax(found.double(), -1)[:, answer_id].numpy()  # (copies,)

    p_noised = float(np.mean([probability(_NoisedAndRestored(d, None, None, None), 1)[0]
                              for d in draws]))  # fmt: skip
    span = p_clean - p_noised
    if noise > 0 and span < 0.05:
        warnings.warn(
            f"causal tracing of {name!r}: the noise hardly lowers the answer's probability "
            f"(clean {p_clean:.3g}, noised {p_noised:.3g}), so the shares restored are "
            f"unstable or meaningless; an answer carried by the image tokens' places rather "
            f"than their values (left/right, top/bottom) is not noised away: use patching, "
            f"or more noise",
            stacklevel=2,
        )
    rows: list[dict] = []
    for site in names:
        layout = adapter.token_layout(site, image_hw(image.shape[:2]))
        windows = _windows(layout, window)
        source = clean.acts[site][0]  # (tokens, d)
        restored = np.zeros(len(windows))
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            chosen = torch.zeros(len(chunk), len(layout), dtype=torch.bool)
            for row, members in enumerate(chunk):
                chosen[row, torch.as_tensor(members)] = True
            for draw in draws:
                intervention = _NoisedAndRestored(draw, site, source, chosen)
                restored[start : start + len(chunk)] += probability(intervention, len(chunk))
        restored /= samples
        shares = (restored - p_noised) / span if span else np.full(len(restored), np.nan)
        rows += _rows(name, "causal_tracing", site, layout, range(len(layout)), shares,
                      restored, p_clean, p_noised)  # fmt: skip
    return pd.DataFrame(rows, columns=list(ATTRIBUTION_COLUMNS))


def _lm_sites(adapter: Adapter) -> list[str]:
    return [f"lm.{i}" for i in range(adapter.n_lm_layers)]
