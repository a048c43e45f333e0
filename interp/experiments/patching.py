"""Activation patching on the patch grid: which image tokens, at which depth, carry what
the model answers with.

For a pair of images (clean, corrupted) and a question whose answer differs between
them, the *margin* is the logit of the clean answer minus that of the corrupted one at
the next-token position. The corrupted image is run with the clean activation restored
at one token (or a group of tokens) of one site, and the share of the clean margin that
comes back is that token's score: ``restored = (patched - corrupted) / (clean -
corrupted)``, 1 where the token alone carries the difference.

- :func:`patch_margins`: exact patching, one forward pass per token (batched: many
  patched copies of the corrupted image in one pass);
- :func:`attribution_margins`: attribution patching, a first-order estimate of the same
  from one forward and one backward pass of the corrupted image, ``(clean - corrupted)
  . d margin / d activation`` at each token: the fast option for large models.

Restoring every image token at the projector restores the clean run exactly (a test
checks it). At an LM site, restoring every image token restores only what flows through
the image positions from there on: text positions after the image have already read
the corrupted image in the layers below.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.adapters import Adapter
from interp.errors import ConfigError
from interp.experiments.answers import answer_token_ids
from interp.layout import image_hw
from interp.models.loading import LoadedModel
from interp.models.tracing import Action, capture_tokens, check_images
from interp.names import as_names
from interp.sites import sort_sites

__all__ = [
    "PATCH_COLUMNS",
    "PatchPair",
    "PatchTokens",
    "attribution_margins",
    "patch_margins",
]

PATCH_COLUMNS: tuple[str, ...] = (
    "pair",
    "method",
    "site",
    "token",
    "crop",
    "row",
    "col",
    "y0",
    "x0",
    "y1",
    "x1",
    "restored",
    "margin",
    "clean_margin",
    "corrupt_margin",
)


@dataclass(frozen=True)
class PatchPair:
    """Two images of one size and a question: ``answer`` is right for ``clean``,
    ``wrong`` for ``corrupt`` (the margin's two ends)."""

    clean: np.ndarray  # (H, W, 3) uint8
    corrupt: np.ndarray  # (H, W, 3) uint8
    question: str
    answer: str
    wrong: str
    name: str = "pair"

    def __post_init__(self) -> None:
        check_images(self.clean[None] if isinstance(self.clean, np.ndarray) else self.clean)
        check_images(self.corrupt[None] if isinstance(self.corrupt, np.ndarray) else self.corrupt)
        if self.clean.shape != self.corrupt.shape:
            raise ConfigError(
                f"the clean and corrupted images must have one size, got "
                f"{self.clean.shape} and {self.corrupt.shape}; resize one of them"
            )
        if self.answer == self.wrong:
            raise ConfigError(
                f"answer and wrong must differ (the margin is between them), both {self.answer!r}"
            )


class PatchTokens:
    """At ``site``, the patch tokens ``chosen`` ``(batch, tokens)`` bool take the values
    ``source`` ``(tokens, d)``; the others keep their own. (Not a condition: a tool of
    :func:`patch_margins`, run through the capture engine like any intervention.)"""

    def __init__(self, site: str, source: torch.Tensor, chosen: torch.Tensor) -> None:
        self.site, self.source, self.chosen = site, source, chosen

    def actions(
        self, adapter: Adapter, inputs: dict[str, torch.Tensor], context: Any = None
    ) -> list[Action]:
        site = adapter.check_site(self.site)
        positions = adapter.token_positions(inputs)

        def restore(value: Any) -> Any:
            found = adapter.select(site, value, positions)  # (batch, tokens, d)
            chosen = self.chosen.to(found.device)[..., None]  # (batch, tokens, 1)
            source = self.source.to(found.device, found.dtype)[None]  # (1, tokens, d)
            return adapter.write_tokens(site, value, positions, torch.where(chosen, source, found))

        return [Action(adapter.module_path(site), "output", edit=restore)]


def _setup(
    loaded: LoadedModel, pair: PatchPair, sites: str | Sequence[str]
) -> tuple[list[str], str, tuple[int, int]]:
    adapter = loaded.adapter
    if not adapter.has_language_model:
        raise ConfigError(f"a {adapter.family} encoder gives no answers to patch")
    names = sort_sites([adapter.check_site(s) for s in as_names(sites, "sites") or ()])
    if not names:
        raise ConfigError("sites must name at least one site to patch, e.g. projector")
    ids = answer_token_ids(loaded.processor.tokenizer, [pair.answer, pair.wrong])
    return names, adapter.default_prompt(pair.question), (ids[pair.answer], ids[pair.wrong])


def _margin(logits: torch.Tensor, ids: tuple[int, int]) -> torch.Tensor:
    """``(batch,)`` logit of the clean answer minus the corrupted one's."""
    return (logits[:, ids[0]] - logits[:, ids[1]]).double()


def _rows(
    loaded: LoadedModel,
    pair: PatchPair,
    method: str,
    site: str,
    groups: list[np.ndarray],
    margins: np.ndarray,
    clean: float,
    corrupt: float,
) -> list[dict]:
    """One row per group (its first token's place on the grid)."""
    layout = loaded.adapter.token_layout(site, image_hw(pair.clean.shape[:2]))
    span = clean - corrupt
    out = []
    for group, margin in zip(groups, margins, strict=True):
        t = int(group[0])
        y0, x0, y1, x1 = (float(v) for v in layout.boxes[t])
        out.append(
            {
                "pair": pair.name, "method": method, "site": site,
                "token": t if len(group) == 1 else -len(group),
                "crop": int(layout.crops[t]), "row": int(layout.grid[t, 0]),
                "col": int(layout.grid[t, 1]), "y0": y0, "x0": x0, "y1": y1, "x1": x1,
                "restored": float(margin - corrupt) / span if span else float("nan"),
                "margin": float(margin), "clean_margin": clean, "corrupt_margin": corrupt,
            }
        )  # fmt: skip
    return out


def _check_span(pair: PatchPair, clean: float, corrupt: float) -> None:
    """The clean and corrupted margins must differ: the share restored is relative to
    their difference."""
    span = clean - corrupt
    if not math.isfinite(span) or abs(span) < 1e-6:
        raise ConfigError(
            f"{pair.name}: the clean and the corrupted image give the same margin "
            f"({clean:.4g} vs {corrupt:.4g}), so there is nothing to restore; the pair must "
            f"differ in what the question asks (are the images the same?)"
        )


def patch_margins(
    loaded: LoadedModel,
    pair: PatchPair,
    sites: str | Sequence[str],
    *,
    groups: Sequence[Sequence[int]] | None = None,
    batch_size: int = 64,
    every: bool = False,
) -> pd.DataFrame:
    """Exact activation patching: for every site and every token (or each of ``groups``,
    lists of token indices of the site's layout), the corrupted image with the clean
    activation restored there. One row per site and token or group (columns
    :data:`PATCH_COLUMNS`; a group's ``token`` is minus its size, its place its first
    token's). With ``every``, each site also has every one of its tokens restored at
    once (how much of the answer flows through the site's image tokens)."""
    names, prompt, ids = _setup(loaded, pair, sites)
    clean = capture_tokens(loaded, pair.clean[None], names, prompt=prompt, logits=True)
    corrupt = capture_tokens(loaded, pair.corrupt[None], [], prompt=prompt, logits=True)
    clean_margin = float(_margin(clean.logits, ids)[0])
    corrupt_margin = float(_margin(corrupt.logits, ids)[0])
    _check_span(pair, clean_margin, corrupt_margin)
    rows: list[dict] = []
    for site in names:
        n_tokens = clean.acts[site].shape[1]
        chosen_groups = [np.asarray(g, dtype=np.int64) for g in groups or []] or [
            np.array([t]) for t in range(n_tokens)
        ]
        if every:
            chosen_groups.append(np.arange(n_tokens))
        for group in chosen_groups:
            if len(group) == 0 or group.min() < 0 or group.max() >= n_tokens:
                raise ConfigError(
                    f"groups must hold token indices 0 to {n_tokens - 1} of {site}, got "
                    f"{group.tolist()}"
                )
        margins = []
        for start in range(0, len(chosen_groups), batch_size):
            chunk = chosen_groups[start : start + batch_size]
            chosen = torch.zeros(len(chunk), n_tokens, dtype=torch.bool)
            for row, group in enumerate(chunk):
                chosen[row, torch.as_tensor(group)] = True
            images = np.repeat(pair.corrupt[None], len(chunk), axis=0)  # (chunk, H, W, 3)
            patched = capture_tokens(
                loaded,
                images,
                [],
                prompt=prompt,
                intervention=PatchTokens(site, clean.acts[site][0], chosen),
                logits=True,
            )
            margins.append(_margin(patched.logits, ids).numpy())
        rows += _rows(
            loaded, pair, "exact", site, chosen_groups, np.concatenate(margins),
            clean_margin, corrupt_margin,
        )  # fmt: skip
    return pd.DataFrame(rows, columns=list(PATCH_COLUMNS))


@contextmanager
def _kept_outputs(
    model: torch.nn.Module, paths: dict[str, str], first: str
) -> Iterator[dict[str, Any]]:
    """Forward hooks keeping each module's output under its site (the module of site
    ``first``, the earliest, gives a fresh leaf that requires grad, so every later
    output is differentiable whether or not the weights are); removed on exit."""
    kept: dict[str, Any] = {}
    modules = dict(model.named_modules())

    def hook(site: str):
        def keep(_module, _args, output):
            if site != first:
                kept[site] = output
                return None
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            leaf = tensor.detach().requires_grad_(True)
            kept[site] = (leaf, *output[1:]) if isinstance(output, tuple) else leaf
            return kept[site]

        return keep

    handles = [modules[path].register_forward_hook(hook(site)) for site, path in paths.items()]
    try:
        yield kept
    finally:
        for handle in handles:
            handle.remove()


def attribution_margins(
    loaded: LoadedModel, pair: PatchPair, sites: str | Sequence[str]
) -> pd.DataFrame:
    """Attribution patching: each token's first-order estimate of what exact patching
    restores, ``(clean - corrupted) . d margin / d activation`` (summed over the width),
    from one forward and one backward pass of the corrupted image (plain torch hooks,
    removed on exit). Rows as :func:`patch_margins`', ``method`` ``attribution``."""
    names, prompt, ids = _setup(loaded, pair, sites)
    adapter = loaded.adapter
    clean = capture_tokens(loaded, pair.clean[None], names, prompt=prompt, logits=True)
    clean_margin = float(_margin(clean.logits, ids)[0])
    inputs = loaded.move_inputs(adapter.build_inputs(pair.corrupt[None], prompt))
    positions = adapter.token_positions(inputs)
    paths = {site: adapter.module_path(site) for site in names}
    with torch.enable_grad(), _kept_outputs(loaded.model, paths, names[0]) as kept:
        logits = loaded.model(**inputs).logits[:, -1].float()  # (1, vocab): one image
        margin = _margin(logits, ids)[0]  # a scalar with a graph
        _check_span(pair, clean_margin, float(margin.detach()))
        outputs = [kept[site] for site in names]
        tensors = [o[0] if isinstance(o, (tuple, list)) else o for o in outputs]
        grads = torch.autograd.grad(margin, tensors, allow_unused=True)
    rows: list[dict] = []
    for site, tensor, grad in zip(names, tensors, grads, strict=True):
        if grad is None:
            raise ConfigError(f"the answer does not depend on {site} in this model")
        found = adapter.select(site, tensor.detach(), positions)[0].float().cpu()  # (tokens, d)
        slope = adapter.select(site, grad, positions)[0].float().cpu()  # (tokens, d)
        estimate = ((clean.acts[site][0] - found) * slope).sum(-1).double()  # (tokens,)
        groups = [np.array([t]) for t in range(len(estimate))]
        rows += _rows(
            loaded, pair, "attribution", site, groups,
            (float(margin.detach()) + estimate).numpy(), clean_margin, float(margin.detach()),
        )  # fmt: skip
    return pd.DataFrame(rows, columns=list(PATCH_COLUMNS))
