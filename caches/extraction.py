"""Stimuli -> model -> cache: capture every site under every condition, batch by batch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from caches.schema import BASELINE
from caches.writer import CacheWriter, SiteValues
from interp.capture import capture_tokens
from interp.errors import ConfigError
from interp.interventions import CONDITIONS, Intervention, make_intervention
from interp.loading import LoadedModel
from interp.sites import sort_sites
from interp.stimuli import Stimuli

__all__ = ["extract", "DEFAULT_QUESTION", "toolkit_version"]

DEFAULT_QUESTION = "Describe the image."


def toolkit_version() -> str:
    try:
        return version("vlm-interp")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def extract(
    loaded: LoadedModel,
    stimuli: Stimuli,
    path: str | os.PathLike,
    *,
    sites: Sequence[str] | None = None,
    conditions: Sequence[str] | None = None,
    prompt: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``path`` (HDF5) with the activations of ``stimuli`` at ``sites``.

    ``conditions`` default to all the model's family supports (baseline first).
    Holds at most one batch of activations in memory. An unfinished ``<path>.partial``
    made with the same settings is resumed; the cache appears at ``path`` only when done.

    Stimuli of mixed sizes give a layout per image, so every site is stored ragged (flat
    tokens plus per-image offsets); each batch runs one forward pass per size in it.
    """
    adapter = loaded.adapter
    for side in stimuli.spec.sizes:
        adapter.check_image_size(side)
    sites = sort_sites([adapter.check_site(s) for s in (sites or adapter.sites())])
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    conditions = list(dict.fromkeys([BASELINE, *(conditions or adapter.conditions)]))
    unsupported = [c for c in conditions if c in CONDITIONS and c not in adapter.conditions]
    if unsupported:
        raise ConfigError(
            f"a {adapter.family} model supports the conditions {list(adapter.conditions)}, "
            f"not {unsupported}; leave --conditions out to run all it supports"
        )
    interventions = {c: make_intervention(c, seed=seed) for c in conditions}
    prompt = prompt if prompt is not None else adapter.default_prompt(DEFAULT_QUESTION)
    sides = stimuli.spec.sizes
    by_side = {side: {site: adapter.token_layout(site, side) for site in sites} for side in sides}
    sizes = stimuli.sizes  # (n,) side of each image
    if len(sides) == 1:
        layouts = by_side[sides[0]]
    else:  # one layout per image: ragged
        layouts = {site: [by_side[int(side)][site] for side in sizes] for site in sites}
    attrs = {
        "toolkit_version": toolkit_version(),
        "model": loaded.source,
        "model_family": adapter.family,
        "prompt": prompt,
        "stimuli": stimuli.spec.to_dict(),
        "sites": sites,
        "conditions": conditions,
        "patch_grid": list(adapter.patch_grid),
        "vision_tokens": (
            "acts/ holds the patch tokens of each site (layout/<site>); tokens that carry no "
            "patch (CLS, registers, newlines) are in extra/<condition>/<site>"
        ),
    }
    with CacheWriter(path, attrs, overwrite=overwrite) as writer:
        writer.write_static(
            stimuli.images,
            stimuli.object_map,
            stimuli.labels,
            stimuli.label_classes,
            layouts,
            stimuli.object_labels(),
            sizes,
        )
        for condition, intervention in interventions.items():
            if intervention is None:
                continue
            described = {str(side): intervention.describe(adapter, side) for side in sides}
            writer.describe_condition(
                condition,
                described[str(sides[0])] if len(sides) == 1 else {"by_image_size": described},
            )
        n = len(stimuli)
        bar = tqdm(total=n, initial=writer.n_written, unit="img", disable=not progress)
        with bar:
            for start in range(writer.n_written, n, batch_size):
                stop = min(n, start + batch_size)
                acts, extra = {}, {}
                for condition, intervention in interventions.items():
                    acts[condition], extra[condition] = _capture_batch(
                        loaded, stimuli, start, sizes[start:stop], sites, prompt, intervention
                    )
                writer.write_batch(start, acts, extra)
                bar.update(stop - start)
        return writer.finalize()


def _capture_batch(
    loaded: LoadedModel,
    stimuli: Stimuli,
    start: int,
    sizes: np.ndarray,
    sites: list[str],
    prompt: str,
    intervention: Intervention | None,
) -> tuple[dict[str, SiteValues], dict[str, SiteValues]]:
    """The images from ``start`` on, of sides ``sizes`` (one per image), captured at
    ``sites``, one forward pass per image size: ``site -> (batch, tokens, d)`` (one size)
    or one ``(tokens_i, d)`` per image."""
    if len(stimuli.spec.sizes) == 1:
        images = stimuli.images[start : start + len(sizes)]  # (batch, H, W, 3)
        captured = capture_tokens(loaded, images, sites, prompt=prompt, intervention=intervention)
        return captured.acts, captured.extra
    acts: dict[str, list] = {site: [None] * len(sizes) for site in sites}
    extra: dict[str, list] = {}
    for side in np.unique(sizes):
        members = np.flatnonzero(sizes == side)
        images = stimuli.images[start + members, :side, :side]  # (group, side, side, 3)
        captured = capture_tokens(loaded, images, sites, prompt=prompt, intervention=intervention)
        for tree, found in ((acts, captured.acts), (extra, captured.extra)):
            for site, values in found.items():
                slots = tree.setdefault(site, [None] * len(sizes))
                for j, i in enumerate(members):
                    slots[i] = values[j]
    for site, slots in extra.items():  # a size whose images carry no extra token of a site
        width = next(v for v in slots if v is not None).shape[-1]
        extra[site] = [torch.zeros(0, width) if v is None else v for v in slots]
    return acts, extra
